//! `[cors]`: the preflight answers and CORS headers, like API Gateway's CORS settings.

use std::time::Duration;

use http::{HeaderValue, Uri};
use toml::Spanned;

use super::diags::Diags;
use crate::config::RawCors;
use crate::cors::Cors;

/// `[cors]`, when the file has one.
pub(super) fn compile(d: &mut Diags<'_>, raw: Option<&Spanned<RawCors>>) -> Option<Cors> {
    let c = raw?.get_ref();
    let list = |d: &mut Diags<'_>,
                v: &Option<Spanned<Vec<Spanned<String>>>>,
                key: &str,
                default: &[&str]|
     -> Option<HeaderValue> {
        let items: Vec<String> = match v {
            Some(list) => list.get_ref().iter().map(|s| s.get_ref().clone()).collect(),
            None => default.iter().map(|s| (*s).to_owned()).collect(),
        };
        if items.is_empty() {
            return None;
        }
        HeaderValue::try_from(items.join(", "))
            .map_err(|_| {
                d.err(
                    v.as_ref().map_or(0..0, Spanned::span),
                    key,
                    "not valid in a header",
                )
            })
            .ok()
    };
    let allow_origins: Vec<String> = c
        .allow_origins
        .get_ref()
        .iter()
        .map(|s| s.get_ref().clone())
        .collect();
    for origin in c.allow_origins.get_ref() {
        let o = origin.get_ref();
        let ok = o == "*"
            || ((o.starts_with("https://") || o.starts_with("http://"))
                && !o.ends_with('/')
                && o.parse::<Uri>().is_ok());
        if !ok {
            d.err(
                origin.span(),
                "cors.allow_origins",
                format!("{o:?} is not an origin like https://app.example.com (or \"*\")"),
            );
        }
    }
    let allow_credentials = c.allow_credentials.as_ref().is_some_and(|b| *b.get_ref());
    if allow_credentials && allow_origins.iter().any(|o| o == "*") {
        d.err(
            c.allow_origins.span(),
            "cors.allow_origins",
            "\"*\" cannot be combined with allow_credentials = true",
        );
    }
    let max_age = d.duration(&c.max_age, "cors.max_age", Duration::from_secs(600));
    Some(Cors {
        allow_origins,
        allow_methods: list(
            d,
            &c.allow_methods,
            "cors.allow_methods",
            &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
        )?,
        allow_headers: list(
            d,
            &c.allow_headers,
            "cors.allow_headers",
            &["authorization", "content-type"],
        )?,
        expose_headers: list(d, &c.expose_headers, "cors.expose_headers", &[]),
        max_age: HeaderValue::from(max_age.as_secs()),
        allow_credentials,
    })
}

//! `[[routes]]`: the route table, matched in file order, and each route's requirements.

use std::collections::HashSet;
use std::sync::Arc;

use http::{HeaderName, Method};
use toml::Spanned;

use super::diags::{Diags, strings};
use super::issuers::Issuers;
use super::upstream::{DEFAULT_UPSTREAM, Upstreams};
use crate::authz::{ClaimMatcher, Requirements};
use crate::config::{ClaimValues, RawRoute};
use crate::headers;
use crate::routes::{PathOptions, Pattern, Router};
use crate::settings::{AuthMode, Route};

/// Every `[[routes]]` table, in file order; routes that need tokens need `[[issuers]]`.
pub(super) fn compile(
    d: &mut Diags<'_>,
    raw: &[Spanned<RawRoute>],
    issuers: &Issuers,
    paths: PathOptions,
    upstreams: &Upstreams,
) -> Router<Route> {
    let mut routes = Router::new();
    if raw.is_empty() {
        d.err(0..0, "routes", "no [[routes]]: every request would be 404");
    }
    for (i, raw_route) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        if let Some((pattern, methods, route)) = route(
            d,
            &key,
            raw_route.get_ref(),
            &issuers.names,
            paths,
            upstreams,
        ) {
            if matches!(route.auth, AuthMode::Jwt | AuthMode::Optional) && !issuers.any {
                d.err(
                    raw_route.span(),
                    format!("{key}.auth"),
                    "needs tokens but no [[issuers]] are configured",
                );
            }
            routes.push(pattern, methods, route);
        }
    }
    routes
}

/// One `[[routes]]` table: its pattern, methods and compiled route.
fn route(
    d: &mut Diags<'_>,
    key: &str,
    r: &RawRoute,
    issuer_names: &HashSet<Arc<str>>,
    paths: PathOptions,
    upstreams: &Upstreams,
) -> Option<(Pattern, Option<Vec<Method>>, Route)> {
    let errors_before = d.count();
    let pattern = match Pattern::parse(r.path.get_ref(), paths) {
        Ok(p) => Some(p),
        Err(reason) => {
            d.err(
                r.path.span(),
                format!("{key}.path"),
                format!("{:?} {reason}", r.path.get_ref()),
            );
            None
        }
    };
    let methods = r.methods.as_ref().map(|list| {
        list.get_ref()
            .iter()
            .filter_map(|m| {
                let text = m.get_ref();
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase()) {
                    Method::from_bytes(text.as_bytes()).ok()
                } else {
                    d.err(
                        m.span(),
                        format!("{key}.methods"),
                        format!("{text:?} is not an upper-case method name"),
                    );
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let auth = match r.auth.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
        None | Some(("jwt", _)) => AuthMode::Jwt,
        Some(("optional", _)) => AuthMode::Optional,
        Some(("none", _)) => AuthMode::None,
        Some(("login", _)) => AuthMode::Login,
        Some((other, span)) => {
            d.err(
                span,
                format!("{key}.auth"),
                format!("{other:?} must be jwt, optional, none or login"),
            );
            AuthMode::Jwt
        }
    };
    let words = |d: &mut Diags<'_>,
                 list: &Option<Spanned<Vec<Spanned<String>>>>,
                 field: &str|
     -> Vec<String> {
        strings(list)
            .into_iter()
            .filter_map(|s| {
                let text = s.get_ref();
                if text.is_empty()
                    || text
                        .chars()
                        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
                {
                    d.err(
                        s.span(),
                        format!("{key}.{field}"),
                        format!("{text:?} must be one word without quotes"),
                    );
                    None
                } else {
                    Some(text.clone())
                }
            })
            .collect()
    };
    let scopes_any = words(d, &r.scopes_any, "scopes_any");
    let scopes_all = words(d, &r.scopes_all, "scopes_all");
    let groups_any = words(d, &r.groups_any, "groups_any");
    let token_use = d.token_use(&r.token_use, &format!("{key}.token_use"));
    let issuers = r.issuers.as_ref().map(|list| {
        list.get_ref()
            .iter()
            .filter_map(|n| match issuer_names.get(n.get_ref().as_str()) {
                Some(name) => Some(Arc::clone(name)),
                None => {
                    d.err(
                        n.span(),
                        format!("{key}.issuers"),
                        format!("no issuer is named {:?}", n.get_ref()),
                    );
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let claims: Vec<ClaimMatcher> = r
        .claims
        .as_ref()
        .map(|m| {
            m.get_ref()
                .iter()
                .map(|(name, values)| ClaimMatcher {
                    name: name.clone(),
                    values: match values.get_ref() {
                        ClaimValues::One(v) => vec![v.clone()],
                        ClaimValues::Any(v) => v.clone(),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    for (name, values) in r.claims.iter().flat_map(|m| m.get_ref().iter()) {
        if matches!(values.get_ref(), ClaimValues::Any(v) if v.is_empty()) {
            d.err(
                values.span(),
                format!("{key}.claims.{name}"),
                "lists no accepted value",
            );
        }
    }
    let required_scope = {
        let mut all: Vec<&str> = scopes_any
            .iter()
            .chain(&scopes_all)
            .map(String::as_str)
            .collect();
        all.dedup();
        (!all.is_empty()).then(|| all.join(" "))
    };
    let requirements = Requirements {
        scopes_any,
        scopes_all,
        groups_any,
        token_use,
        issuers,
        claims,
        required_scope,
    };
    if auth == AuthMode::Login
        && (requirements.token_use.is_some() || requirements.issuers.is_some())
    {
        d.err(r.path.span(), key, "token_use and issuers do not apply to auth = \"login\" (the session's ID token decides)");
    }
    if auth == AuthMode::None && !requirements.is_empty() {
        d.err(r.path.span(), key, "requirements (scopes, groups, token_use, issuers, claims) have no effect with auth = \"none\"");
    }
    let upstream = upstream(d, key, r, upstreams);
    let name: Arc<str> = r.name.as_ref().map_or_else(
        || r.path.get_ref().as_str().into(),
        |n| n.get_ref().as_str().into(),
    );
    if d.count() > errors_before {
        return None;
    }
    let preflight_forward = match r
        .preflight
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None => false,
        Some(("forward", _)) => true,
        Some((other, span)) => {
            d.err(
                span,
                format!("{key}.preflight"),
                format!("{other:?}: the only value is \"forward\""),
            );
            false
        }
    };
    let mut keep_override_headers = Vec::new();
    for header in strings(&r.keep_override_headers) {
        let name = HeaderName::from_bytes(header.get_ref().to_ascii_lowercase().as_bytes());
        if let Some(name) = name
            .ok()
            .filter(|n| headers::OVERRIDE_HEADERS.contains(&n.as_str()))
        {
            keep_override_headers.push(name);
        } else {
            d.err(
                header.span(),
                format!("{key}.keep_override_headers"),
                format!(
                    "{:?} is not an override header (one of {})",
                    header.get_ref(),
                    headers::OVERRIDE_HEADERS.join(", ")
                ),
            );
        }
    }
    Some((
        pattern?,
        methods,
        Route {
            name,
            auth,
            requirements,
            preflight_forward,
            keep_override_headers,
            upstream,
        },
    ))
}

/// The index of the route's upstream: the one it names, else `default`. With no upstream at
/// all, that one error (reported by the upstream tables) is enough.
fn upstream(d: &mut Diags<'_>, key: &str, r: &RawRoute, upstreams: &Upstreams) -> usize {
    if upstreams.names.is_empty() {
        return 0;
    }
    match &r.upstream {
        Some(name) => upstreams.index(name.get_ref()).unwrap_or_else(|| {
            d.err(
                name.span(),
                format!("{key}.upstream"),
                format!("no upstream is named {:?}", name.get_ref()),
            );
            0
        }),
        None => upstreams.index(DEFAULT_UPSTREAM).unwrap_or_else(|| {
            d.err(
                r.path.span(),
                format!("{key}.upstream"),
                format!("missing: this route needs upstream = \"…\" (no upstream is named {DEFAULT_UPSTREAM:?})"),
            );
            0
        }),
    }
}

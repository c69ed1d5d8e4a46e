//! `[upstream]`: where allowed requests go, and how jwtgate connects there.

use std::time::Duration;

use http::Uri;
use toml::Spanned;

use super::diags::Diags;
use crate::config::RawUpstream;
use crate::settings::UpstreamSettings;
use crate::tls::UpstreamTls;

/// Default `[upstream].connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `[upstream].response_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `[upstream].pool_idle_timeout`.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default `[upstream].pool_max_idle`.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;

/// `[upstream]`, which every config needs.
pub(super) fn compile(
    d: &mut Diags<'_>,
    raw: Option<&Spanned<RawUpstream>>,
) -> Option<UpstreamSettings> {
    match raw {
        None => {
            d.err(
                0..0,
                "upstream",
                "missing [upstream] table with url = \"http://host:port\"",
            );
            None
        }
        Some(u) => settings(d, u.get_ref()),
    }
}

fn settings(d: &mut Diags<'_>, u: &RawUpstream) -> Option<UpstreamSettings> {
    let text = u.url.get_ref();
    let uri: Uri = match text.parse() {
        Ok(uri) => uri,
        Err(_) => {
            d.err(
                u.url.span(),
                "upstream.url",
                format!("{text:?} is not a URL"),
            );
            return None;
        }
    };
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            d.err(
                u.url.span(),
                "upstream.url",
                format!("{text:?} must start with http:// or https://"),
            );
            return None;
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        d.err(
            u.url.span(),
            "upstream.url",
            format!("{text:?} has no host"),
        );
        return None;
    };
    if uri.query().is_some() {
        d.err(u.url.span(), "upstream.url", "must not have a query string");
    }
    let origin = Uri::builder()
        .scheme(if https { "https" } else { "http" })
        .authority(authority)
        .path_and_query("/")
        .build()
        .ok()?;
    let file =
        |d: &mut Diags<'_>, v: &Option<Spanned<String>>, key: &str| -> Option<std::path::PathBuf> {
            let v = v.as_ref()?;
            let path = std::path::PathBuf::from(v.get_ref());
            if !path.is_file() {
                d.err(
                    v.span(),
                    key,
                    format!("{} is not a readable file", path.display()),
                );
            }
            Some(path)
        };
    let ca_file = file(d, &u.ca_file, "upstream.ca_file");
    let client_cert = match (
        file(d, &u.client_cert_file, "upstream.client_cert_file"),
        file(d, &u.client_key_file, "upstream.client_key_file"),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            d.err(
                u.url.span(),
                "upstream.client_cert_file",
                "client_cert_file and client_key_file go together",
            );
            None
        }
    };
    if !https && (ca_file.is_some() || client_cert.is_some()) {
        d.err(
            u.url.span(),
            "upstream.url",
            "ca_file and client certificates need an https:// upstream",
        );
    }
    let tls = https.then_some(UpstreamTls {
        ca_file,
        client_cert,
    });
    let http2 = u.http2.as_ref().is_some_and(|h| *h.get_ref());
    if let Some(tls) = &tls {
        if let Err(e) = crate::tls::client_config(tls) {
            d.err(u.url.span(), "upstream", e);
        }
    }
    Some(UpstreamSettings {
        http2,
        tls,
        origin,
        path_prefix: uri.path().trim_end_matches('/').to_owned(),
        connect_timeout: d.duration(
            &u.connect_timeout,
            "upstream.connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
        ),
        response_timeout: d.duration(
            &u.response_timeout,
            "upstream.response_timeout",
            DEFAULT_RESPONSE_TIMEOUT,
        ),
        pool_idle_timeout: d.duration(
            &u.pool_idle_timeout,
            "upstream.pool_idle_timeout",
            DEFAULT_POOL_IDLE_TIMEOUT,
        ),
        pool_max_idle: d.bounded(
            &u.pool_max_idle,
            "upstream.pool_max_idle",
            0..100_001,
            DEFAULT_POOL_MAX_IDLE,
        ),
    })
}

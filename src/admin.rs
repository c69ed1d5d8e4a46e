//! The admin listener: `/healthz` (the process answers), `/readyz` (every issuer has keys),
//! `/metrics` (Prometheus text format), `/alb-keys/{kid}` (the `x-amzn-oidc-data` public key).
//! Keep it off the public network.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};

use crate::Shared;
use crate::proxy::ProxyBody;

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(body.into())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Answers one admin request.
pub fn handle<B>(shared: &Shared, req: &Request<B>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            r#"{"message":"Method Not Allowed"}"#,
        );
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "application/json", r#"{"status":"ok"}"#),
        "/readyz" => {
            let snapshot = shared.snapshot.load();
            let issuers = snapshot.issuers.readiness();
            let draining = shared.draining.load(std::sync::atomic::Ordering::Relaxed);
            let ready = !draining && issuers.iter().all(|(_, ok)| *ok);
            // Keys sorted, as ever: serde_json keeps insertion order in this build (a feature
            // the Cedar engine turns on), so the order is spelled out here.
            let issuers: std::collections::BTreeMap<String, bool> = issuers
                .iter()
                .map(|(name, ok)| (name.to_string(), *ok))
                .collect();
            let body = serde_json::json!({
                "issuers": issuers,
                "status": if draining { "shutting down" } else if ready { "ready" } else { "not ready" },
            });
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", body.to_string())
        }
        "/metrics" => {
            for authorizer in &shared.snapshot.load().authorizers {
                shared.metrics.authorizer_cache_entries(
                    &authorizer.settings.name,
                    authorizer.cache_entries(),
                );
            }
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                shared.metrics.render(shared.token_cache.entry_count()),
            )
        }
        path => {
            // The x-amzn-oidc-data public key, as PEM, like ALB's public-keys endpoint.
            let snapshot = shared.snapshot.load();
            // Any provider's key (each may have its own `alb_key_file`).
            let signer = path
                .strip_prefix("/alb-keys/")
                .and_then(|kid| snapshot.logins.iter().find(|l| l.alb_signer().kid() == kid));
            match signer {
                Some(login) => reply(
                    StatusCode::OK,
                    "application/x-pem-file",
                    login.alb_signer().public_pem().to_owned(),
                ),
                _ => reply(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    r#"{"message":"Not Found"}"#,
                ),
            }
        }
    }
}

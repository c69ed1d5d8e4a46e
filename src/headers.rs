//! Header hygiene: hop-by-hop headers (RFC 9110 §7.6.1), the client's copies of identity headers
//! (always stripped, on every route), claim headers, `X-Forwarded-*` and `x-request-id`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use serde_json::{Map, Value};

/// Token-list matching lives with the HTTP/1.1 codec; re-exported for the header rules here.
pub use crate::http1::lists;

/// Headers ALB sets for browser-login routes; never accepted from clients.
pub const ALB_IDENTITY_HEADERS: [&str; 3] = [
    "x-amzn-oidc-accesstoken",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-data",
];

/// Forwarding headers, believed only from trusted proxies.
fn is_forwarding(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "forwarded"
            | "x-real-ip"
    )
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that apply to one connection only, never forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "http2-settings"
            | "proxy-connection"
            | "keep-alive"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
    )
}

/// The request id header, kept when the client sent a sane one, generated otherwise.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the upstream receives, compiled from `[headers]` and `[server].trusted_proxies`.
#[derive(Debug, Default)]
pub struct HeaderPlan {
    /// Header name and the claim it carries.
    pub claims: Vec<(HeaderName, String)>,
    /// Header carrying the whole verified payload (base64url JSON).
    pub claims_json: Option<HeaderName>,
    /// Pass `Authorization` upstream.
    pub forward_authorization: bool,
    /// Every identity header: removed from each client request before anything is added.
    pub identity: Vec<HeaderName>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl HeaderPlan {
    /// Removes hop-by-hop headers (and those the client listed in `Connection`) and every
    /// identity header. An upgrade request keeps `Upgrade` and gets `Connection: upgrade`.
    pub fn strip_inbound(&self, headers: &mut HeaderMap, peer: IpAddr) {
        let upgrade = upgrade_requested(headers).then(|| HeaderValue::from_static("websocket"));
        let te_trailers = headers.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
        strip_hop_by_hop(headers);
        // One pass over the names the client sent (usually a handful), rather than a hashed
        // lookup per name that might be there.
        let untrusted = !self.is_trusted(peer);
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                self.identity.contains(name)
                    || (!self.forward_authorization && *name == header::AUTHORIZATION)
                    || (untrusted && is_forwarding(name))
            })
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
        if let Some(protocol) = upgrade {
            headers.insert(header::UPGRADE, protocol);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }

    /// Adds the configured claim headers (and the all-claims header) of a verified token.
    /// `payload_b64` is the token's own payload segment; `None` encodes `claims` when needed.
    pub fn inject_claims(
        &self,
        headers: &mut HeaderMap,
        claims: &Map<String, Value>,
        payload_b64: Option<&str>,
    ) {
        for (name, claim) in &self.claims {
            let Some(value) = claims.get(claim) else {
                continue;
            };
            match HeaderValue::try_from(render_claim(value)) {
                Ok(v) => {
                    headers.insert(name.clone(), v);
                }
                Err(_) => {
                    tracing::debug!(header = %name, "claim value is not a valid header value; not sent")
                }
            }
        }
        if let Some(name) = &self.claims_json {
            use base64::Engine;
            let encoded = match payload_b64 {
                Some(p) => HeaderValue::from_str(p),
                None => {
                    let json = Value::Object(claims.clone()).to_string();
                    HeaderValue::try_from(
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json),
                    )
                }
            };
            if let Ok(v) = encoded {
                headers.insert(name.clone(), v);
            }
        }
    }

    /// Sets `X-Forwarded-For/-Proto/-Host`: appended to a trusted proxy's values, replacing
    /// anything else.
    /// `peer` is the client address as header text (made once per connection).
    pub fn add_forwarded(
        &self,
        headers: &mut HeaderMap,
        peer: &HeaderValue,
        proto: &'static str,
        host: Option<HeaderValue>,
    ) {
        let value = match headers.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
            Some(prior) if !prior.is_empty() => {
                let mut joined = Vec::with_capacity(prior.len() + 2 + peer.len());
                joined.extend_from_slice(prior);
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(peer.as_bytes());
                HeaderValue::from_bytes(&joined).ok()
            }
            _ => Some(peer.clone()),
        };
        if let Some(v) = value {
            headers.insert(X_FORWARDED_FOR, v);
        }
        if !headers.contains_key(X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if !headers.contains_key(X_FORWARDED_HOST) {
            if let Some(host) = host {
                headers.insert(X_FORWARDED_HOST, host);
            }
        }
    }

    /// `scheme://host` the client used: from a trusted proxy's `X-Forwarded-Proto/-Host`, else
    /// from the connection and the `Host` header (or the h2 authority).
    pub fn external_base(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
        peer: IpAddr,
        proto: &'static str,
    ) -> Option<String> {
        let forwarded = |name: HeaderName| {
            self.is_trusted(peer)
                .then(|| headers.get(name).and_then(|v| v.to_str().ok()))
                .flatten()
                .map(|v| v.split(',').next().unwrap_or("").trim())
                .filter(|v| !v.is_empty())
        };
        let scheme = match forwarded(X_FORWARDED_PROTO) {
            Some("https") => "https",
            Some("http") => "http",
            _ => proto,
        };
        let host = forwarded(X_FORWARDED_HOST)
            .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
            .or(authority)?;
        let valid = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
            });
        valid.then(|| format!("{scheme}://{host}"))
    }

    /// Whether `peer` is a trusted proxy (its forwarding headers are believed).
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

/// Whether the client asks for a protocol upgrade (e.g. WebSocket).
///
/// Only WebSocket upgrades are passed on. Any other protocol (notably `h2c`) would turn the
/// connection into a tunnel whose later requests jwtgate never sees: its `Upgrade` header is
/// dropped like every other hop-by-hop header and the request is served normally.
pub fn upgrade_requested(headers: &HeaderMap) -> bool {
    let websocket = headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
    });
    websocket && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| lists(v.as_bytes(), token.as_bytes()))
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none (HTTP/1.1 keeps connections alive by default).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    // The usual tokens, `keep-alive` and `close`, name no header beyond the hop-by-hop ones.
    let listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok());
    doomed.extend(listed);
    for name in doomed {
        headers.remove(name);
    }
}

/// Strings as is, arrays joined by `,` (elements rendered the same way), the rest compact JSON.
pub fn render_claim(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// A client address as header text, made once per connection (`X-Forwarded-For`).
pub fn peer_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The client's `x-request-id` when it is 1–128 visible ASCII characters, else a new UUID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let id = uuid::Uuid::new_v4();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_render_as_documented() {
        assert_eq!(render_claim(&json!("abc")), "abc");
        assert_eq!(render_claim(&json!(["admins", "users"])), "admins,users");
        assert_eq!(render_claim(&json!(true)), "true");
        assert_eq!(render_claim(&json!({"a":1})), r#"{"a":1}"#);
    }

    #[test]
    fn identity_hop_by_hop_and_untrusted_forwarding_headers_are_stripped() {
        let plan = HeaderPlan {
            identity: vec![HeaderName::from_static("x-user-sub")],
            forward_authorization: true,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        h.insert("x-user-sub", "evil".parse().unwrap());
        h.append("x-user-sub", "evil too".parse().unwrap());
        h.insert("connection", "keep-alive, x-custom".parse().unwrap());
        h.insert("x-custom", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.insert("forwarded", "for=1.2.3.4".parse().unwrap());
        h.insert("x-real-ip", "1.2.3.4".parse().unwrap());
        h.insert("x-forwarded-port", "443".parse().unwrap());
        h.insert("authorization", "Bearer t".parse().unwrap());
        plan.strip_inbound(&mut h, "192.0.2.1".parse().unwrap());
        for name in ["forwarded", "x-real-ip", "x-forwarded-port"] {
            assert!(h.get(name).is_none(), "{name} from an untrusted peer");
        }
        assert!(h.get("x-user-sub").is_none());
        assert!(h.get("x-custom").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("x-forwarded-for").is_none(), "untrusted peer");
        assert!(h.get("authorization").is_some());
        plan.add_forwarded(
            &mut h,
            &peer_value("192.0.2.1".parse().unwrap()),
            "http",
            None,
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");

        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        plan.strip_inbound(&mut h, "10.1.2.3".parse().unwrap());
        plan.add_forwarded(
            &mut h,
            &peer_value("10.1.2.3".parse().unwrap()),
            "http",
            None,
        );
        assert_eq!(
            h["x-forwarded-for"], "1.2.3.4, 10.1.2.3",
            "trusted proxy: appended"
        );
    }

    #[test]
    fn only_websocket_upgrades_survive_stripping() {
        let plan = HeaderPlan::default();
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade, HTTP2-Settings".parse().unwrap());
        h.insert("upgrade", "h2c".parse().unwrap());
        h.insert("http2-settings", "AAMAAABkAAQAAP__".parse().unwrap());
        assert!(!upgrade_requested(&h));
        plan.strip_inbound(&mut h, "127.0.0.1".parse().unwrap());
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn upgrade_survives_stripping() {
        let plan = HeaderPlan::default();
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        plan.strip_inbound(&mut h, "127.0.0.1".parse().unwrap());
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, "abc-123".parse().unwrap());
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, "has space".parse().unwrap());
        assert_eq!(request_id(&h).len(), 36);
    }
}

//! Header hygiene: hop-by-hop headers (RFC 9110 §7.6.1), the client's copies of identity headers
//! (always stripped, on every route), claim headers, `X-Forwarded-*` and `x-request-id`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};
use ipnet::IpNet;
use serde_json::{Map, Value};

/// Token-list matching lives with the HTTP/1.1 codec; re-exported for the header rules here.
use crate::http1;
pub use crate::http1::lists;

/// Headers ALB sets for browser-login routes; never accepted from clients.
pub const ALB_IDENTITY_HEADERS: [&str; 3] = [
    "x-amzn-oidc-accesstoken",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-data",
];

/// Forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`), believed only from trusted
/// proxies. Every `X-Forwarded-` name counts: frameworks read `-Prefix`, `-Uri`, `-Path`, … too.
fn is_forwarding(name: &str) -> bool {
    name.starts_with("x-forwarded-") || name == "forwarded" || name == "x-real-ip"
}

/// Headers that make a framework act on another path or method than the request line's
/// (IIS, Symfony and Laravel route by `X-Original-URL`/`X-Rewrite-URL`; Express, Spring and
/// Rails let `X-HTTP-Method-Override` and its kin turn a POST into a DELETE; nginx's forward-auth
/// passes the original request in `X-Original-URI`/`-Method`). jwtgate authorised the request
/// line, so these are removed unless a route keeps one (`keep_override_headers`).
pub const OVERRIDE_HEADERS: [&str; 7] = [
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

fn is_override(name: &str) -> bool {
    OVERRIDE_HEADERS.contains(&name)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that apply to one connection only, never forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str())
}

fn is_hop_by_hop_name(name: &str) -> bool {
    matches!(
        name,
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

/// Whether jwtgate sets, strips or reads a header of this (lower-case, dashed) name whatever
/// the configuration: forwarding, override and hop-by-hop headers, ALB's identity headers,
/// `Host`, `Authorization`, `Cookie`, … A configured header (a route's `capture_headers`) may
/// not be one of them.
pub fn manages(name: &str) -> bool {
    is_forwarding(name)
        || is_override(name)
        || is_hop_by_hop_name(name)
        || ALB_IDENTITY_HEADERS.contains(&name)
        || matches!(
            name,
            "host"
                | "authorization"
                | "cookie"
                | "content-length"
                | "trailer"
                | "x-request-id"
                | "traceparent"
                | "tracestate"
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
    /// Pass client header names containing `_` (`[headers] underscores = "keep"`), except
    /// look-alikes of headers jwtgate manages or interprets and of headers the request has.
    /// Default false: dropped, as nginx does (`underscores_in_headers off`).
    pub keep_underscores: bool,
}

impl HeaderPlan {
    /// Removes every client header the upstream must not take from the client: hop-by-hop
    /// headers (and those listed in `Connection`), identity headers, forwarding headers from an
    /// untrusted peer, override headers (except those in `keep`), `Trailer` (client trailers
    /// are never forwarded), and names with `_` (see [`HeaderPlan::keep_underscores`]). The one
    /// place that decides which client headers pass, for every route, protocol and server path.
    /// An upgrade request keeps `Upgrade` and gets `Connection: upgrade`.
    pub fn strip_inbound(&self, headers: &mut HeaderMap, peer: IpAddr, keep: &[HeaderName]) {
        let upgrade = upgrade_requested(headers).then(|| HeaderValue::from_static("websocket"));
        let te_trailers = headers
            .get_all(header::TE)
            .iter()
            .any(|v| lists(v.as_bytes(), b"trailers"));
        strip_hop_by_hop(headers);
        // One pass over the names the client sent (usually a handful), rather than a hashed
        // lookup per name that might be there.
        let untrusted = !self.is_trusted(peer);
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| !self.admits(name, untrusted, keep, headers))
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

    /// Whether a client header `name` (hop-by-hop ones already gone) may reach the upstream.
    fn admits(
        &self,
        name: &HeaderName,
        untrusted: bool,
        keep: &[HeaderName],
        headers: &HeaderMap,
    ) -> bool {
        let text = name.as_str();
        if text.contains('_') {
            // CGI-style servers (WSGI, Rack, PHP-FPM) read `X_User_Sub` and `X-User-Sub` as the
            // same variable, so an underscore name is a look-alike of its dashed spelling.
            if !self.keep_underscores {
                return false;
            }
            let dashed = text.replace('_', "-");
            return !(self.interprets(&dashed) || headers.contains_key(dashed.as_str()));
        }
        if self.identity.contains(name) || *name == header::TRAILER {
            return false;
        }
        if *name == header::AUTHORIZATION {
            return self.forward_authorization;
        }
        if is_override(text) {
            return keep.contains(name);
        }
        !(untrusted && is_forwarding(text))
    }

    /// Whether jwtgate manages or interprets a header of this (lower-case, dashed) name: a
    /// client's look-alike of it never passes.
    fn interprets(&self, name: &str) -> bool {
        self.identity.iter().any(|n| n.as_str() == name) || manages(name)
    }

    /// Adds the configured claim headers (and the all-claims header) of a verified token.
    /// `payload_b64` is the token's own payload segment; `None` encodes the claims when needed.
    /// `claims` is called only when a header needs the claim map (a token's map is built on
    /// first use, and a plan without claim headers never needs it).
    pub fn inject_claims<'c>(
        &self,
        headers: &mut HeaderMap,
        claims: impl FnOnce() -> &'c Map<String, Value>,
        payload_b64: Option<&str>,
    ) {
        let needed =
            !self.claims.is_empty() || (self.claims_json.is_some() && payload_b64.is_none());
        let claims = needed.then(claims);
        for (name, claim) in &self.claims {
            let Some(value) = claims.and_then(|c| c.get(claim)) else {
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
            let encoded = match (payload_b64, claims) {
                (Some(p), _) => HeaderValue::from_str(p),
                (None, Some(claims)) => {
                    let json = Value::Object(claims.clone()).to_string();
                    HeaderValue::try_from(
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json),
                    )
                }
                (None, None) => return,
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
    /// from the connection and the request's host (see [`request_host`]).
    pub fn external_base(
        &self,
        headers: &HeaderMap,
        host: Option<&HeaderValue>,
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
        let host = forwarded(X_FORWARDED_HOST).or_else(|| host?.to_str().ok())?;
        valid_host(host.as_bytes()).then(|| format!("{scheme}://{host}"))
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

/// Why a request's host cannot be used (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    #[error("HTTP/1.1 request without Host")]
    Missing,
    /// More than one `Host` field.
    #[error("more than one Host field")]
    Repeated,
    /// A `Host` or target authority that is not `host[:port]`.
    #[error("invalid Host")]
    Invalid,
}

/// The host a request names, the same on every server path: the target's authority when it
/// has one (an absolute-form target, RFC 9112 §3.2.2; HTTP/2's `:authority`, which wins over
/// `host`, RFC 9113 §8.3.1), else its one `Host` field. An HTTP/1.1 request must carry exactly
/// one valid `Host`; an HTTP/1.0 or HTTP/2 request may name none (`Ok(None)`).
pub fn request_host(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, HostError> {
    let mut fields = headers.get_all(header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(HostError::Repeated);
    }
    if field.is_some_and(|f| !valid_host(f.as_bytes())) {
        return Err(HostError::Invalid);
    }
    if field.is_none() && version == Version::HTTP_11 {
        return Err(HostError::Missing);
    }
    match uri.authority() {
        Some(authority) if valid_host(authority.as_str().as_bytes()) => {
            HeaderValue::from_str(authority.as_str())
                .map(Some)
                .map_err(|_| HostError::Invalid)
        }
        Some(_) => Err(HostError::Invalid),
        None => Ok(field.cloned()),
    }
}

/// Whether `value` is `host[:port]` (RFC 3986 authority without user info): a bracketed IPv6
/// literal or a name of letters, digits, `-`, `.`, `_`, `~`, and an optional port of 1–5 digits.
/// Nothing that could carry a path (`/`), user info (`@`) or an escape.
pub fn valid_host(value: &[u8]) -> bool {
    const MAX: usize = 255 + 6;
    if value.len() > MAX {
        return false;
    }
    let port = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&c| c == b']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.'))
        {
            return false;
        }
        &rest[end + 1..]
    } else {
        let cut = value.iter().position(|&c| c == b':').unwrap_or(value.len());
        let name = &value[..cut];
        if name.is_empty()
            || !name
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
        {
            return false;
        }
        &value[cut..]
    };
    match port {
        [] => true,
        [b':', digits @ ..] => {
            (1..=5).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

/// Whether the client asks for a protocol upgrade (e.g. WebSocket).
///
/// Only WebSocket upgrades are passed on. Any other protocol (notably `h2c`) would turn the
/// connection into a tunnel whose later requests jwtgate never sees: its `Upgrade` header is
/// dropped like every other hop-by-hop header and the request is served normally.
pub fn upgrade_requested(headers: &HeaderMap) -> bool {
    let field_lists = |name, token: &[u8]| {
        headers
            .get_all(name)
            .iter()
            .any(|v| lists(v.as_bytes(), token))
    };
    field_lists(header::UPGRADE, b"websocket") && field_lists(header::CONNECTION, b"upgrade")
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
        .flat_map(|v| http1::elements(v.as_bytes()))
        .filter(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close"))
        .filter_map(|t| HeaderName::from_bytes(t).ok());
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
    fn the_claim_map_is_asked_for_only_when_a_header_needs_it() {
        let claims = json!({"sub": "u1", "tier": "gold"});
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        let asked = std::cell::Cell::new(0);
        let get = || {
            asked.set(asked.get() + 1);
            &claims
        };
        let mut h = HeaderMap::new();
        HeaderPlan::default().inject_claims(&mut h, get, Some("cGF5bG9hZA"));
        let json_only = HeaderPlan {
            claims_json: Some(HeaderName::from_static("x-claims")),
            ..Default::default()
        };
        json_only.inject_claims(&mut h, get, Some("cGF5bG9hZA"));
        assert_eq!(asked.get(), 0, "the token's own payload needs no map");
        assert_eq!(h["x-claims"], "cGF5bG9hZA");
        json_only.inject_claims(&mut h, get, None);
        assert_eq!(
            asked.get(),
            1,
            "a session's claims are encoded from the map"
        );
        let tier = HeaderPlan {
            claims: vec![(HeaderName::from_static("x-tier"), "tier".into())],
            ..Default::default()
        };
        tier.inject_claims(&mut h, get, Some("cGF5bG9hZA"));
        assert_eq!(asked.get(), 2);
        assert_eq!(h["x-tier"], "gold");
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
        plan.strip_inbound(&mut h, "192.0.2.1".parse().unwrap(), &[]);
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
        plan.strip_inbound(&mut h, "10.1.2.3".parse().unwrap(), &[]);
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

    fn plan(keep_underscores: bool) -> HeaderPlan {
        HeaderPlan {
            identity: vec![
                HeaderName::from_static("x-user-sub"),
                HeaderName::from_static("x-amzn-oidc-identity"),
            ],
            forward_authorization: true,
            keep_underscores,
            ..Default::default()
        }
    }

    fn stripped(plan: &HeaderPlan, fields: &[(&str, &str)], keep: &[HeaderName]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        plan.strip_inbound(&mut h, "192.0.2.1".parse().unwrap(), keep);
        let mut names: Vec<String> = h.keys().map(|n| n.as_str().to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn underscore_names_are_dropped_by_default_and_look_alikes_always() {
        let fields = [
            ("X_User_Sub", "evil"),
            ("x_amzn_oidc_identity", "evil"),
            ("x_forwarded_for", "1.2.3.4"),
            ("x_request_id", "evil"),
            ("transfer_encoding", "chunked"),
            ("content_length", "5"),
            ("x_http_method_override", "DELETE"),
            ("accept", "*/*"),
            ("x-app_flag", "1"),
            ("x-dup", "a"),
            ("x_dup", "b"),
        ];
        assert_eq!(stripped(&plan(false), &fields, &[]), ["accept", "x-dup"]);
        // Kept on request, except look-alikes of what jwtgate manages or interprets and of
        // headers the request already has.
        assert_eq!(
            stripped(&plan(true), &fields, &[]),
            ["accept", "x-app_flag", "x-dup"]
        );
    }

    #[test]
    fn override_headers_and_trailer_are_stripped_unless_the_route_keeps_them() {
        let fields = [
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-original-uri", "/admin"),
            ("x-original-method", "DELETE"),
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("trailer", "x-user-sub"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-uri", "/admin"),
            ("accept", "*/*"),
        ];
        assert_eq!(stripped(&plan(false), &fields, &[]), ["accept"]);
        let keep = [HeaderName::from_static("x-http-method-override")];
        assert_eq!(
            stripped(&plan(false), &fields, &keep),
            ["accept", "x-http-method-override"]
        );
    }

    #[test]
    fn the_request_host_follows_rfc_9112_and_9113() {
        let h = |fields: &[&str]| {
            let mut h = HeaderMap::new();
            for v in fields {
                h.append(header::HOST, v.parse().unwrap());
            }
            h
        };
        let origin: Uri = "/x".parse().unwrap();
        let absolute: Uri = "http://a.example/x".parse().unwrap();
        let v11 = Version::HTTP_11;
        assert_eq!(
            request_host(v11, &origin, &h(&["gw:8080"]))
                .unwrap()
                .unwrap(),
            "gw:8080"
        );
        assert_eq!(request_host(v11, &origin, &h(&[])), Err(HostError::Missing));
        assert_eq!(
            request_host(v11, &origin, &h(&["a", "a"])),
            Err(HostError::Repeated)
        );
        for bad in [
            "gw/admin/x",
            "user@gw",
            "",
            "gw:",
            "gw:123456",
            "gw:80:80",
            "g w",
            "[::1",
            "[zz]",
            "gw%2f",
        ] {
            assert_eq!(
                request_host(v11, &origin, &h(&[bad])),
                Err(HostError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(
            request_host(v11, &origin, &h(&["[::1]:8080"]))
                .unwrap()
                .unwrap(),
            "[::1]:8080"
        );
        // The absolute-form authority replaces Host; HTTP/1.1 still needs a Host field.
        assert_eq!(
            request_host(v11, &absolute, &h(&["b.example"]))
                .unwrap()
                .unwrap(),
            "a.example"
        );
        assert_eq!(
            request_host(v11, &absolute, &h(&[])),
            Err(HostError::Missing)
        );
        // HTTP/2: :authority wins over host; neither is fine; HTTP/1.0 may omit Host.
        let v2 = Version::HTTP_2;
        assert_eq!(
            request_host(v2, &absolute, &h(&["b.example"]))
                .unwrap()
                .unwrap(),
            "a.example"
        );
        assert_eq!(request_host(v2, &origin, &h(&[])), Ok(None));
        assert_eq!(request_host(Version::HTTP_10, &origin, &h(&[])), Ok(None));
    }

    #[test]
    fn only_websocket_upgrades_survive_stripping() {
        let plan = HeaderPlan::default();
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade, HTTP2-Settings".parse().unwrap());
        h.insert("upgrade", "h2c".parse().unwrap());
        h.insert("http2-settings", "AAMAAABkAAQAAP__".parse().unwrap());
        assert!(!upgrade_requested(&h));
        plan.strip_inbound(&mut h, "127.0.0.1".parse().unwrap(), &[]);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn upgrade_survives_stripping() {
        let plan = HeaderPlan::default();
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        plan.strip_inbound(&mut h, "127.0.0.1".parse().unwrap(), &[]);
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

//! What the upstream may trust: look-alike spellings of managed headers, override headers and
//! `Host` (RFC 9112 §3.2, RFC 9113 §8.3.1), tried over raw sockets on HTTP/1.1 (both server
//! paths: the bodiless fast path and hyper's) and HTTP/2, against an upstream that records the
//! exact bytes it receives.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::recorder::Recorder;
use common::*;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jwtgate::dev::issuer::DevIssuer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a request reaches jwtgate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    /// HTTP/1.1 on a fresh connection: the bodiless fast path serves it.
    FastPath,
    /// HTTP/1.1 on a connection a request with a body already moved to hyper's server.
    Hyper,
    /// HTTP/2 with prior knowledge.
    H2,
}

const ALL: [Via; 3] = [Via::FastPath, Via::Hyper, Via::H2];

struct Setup {
    issuer: DevIssuer,
    upstream: Recorder,
    proxy: TestProxy,
}

const EXTRA_ROUTES: &str = r#"
[[routes]]
name = "legacy"
path = "/legacy/**"
auth = "none"
keep_override_headers = ["X-HTTP-Method-Override"]
"#;

async fn setup(headers_extra: &str) -> Setup {
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let upstream = Recorder::start().await;
    let mut toml = config(&issuer, &upstream.url(), "", EXTRA_ROUTES);
    toml.push_str(headers_extra);
    let proxy = TestProxy::start_ready(&toml).await;
    Setup {
        issuer,
        upstream,
        proxy,
    }
}

impl Setup {
    fn alice(&self) -> String {
        self.issuer
            .sign(&self.issuer.access_token(user("alice").unwrap()))
    }

    /// Sends `GET target` with `fields` (names and values as the client spells them; `Host`
    /// only if listed) and returns the status and what the upstream received for it.
    async fn send(&self, via: Via, target: &str, fields: &[(&str, &str)]) -> (u16, Option<String>) {
        self.upstream.take();
        let status = match via {
            Via::FastPath | Via::Hyper => h1(self.proxy.addr, via, target, fields).await,
            Via::H2 => h2(self.proxy.addr, target, fields).await,
        };
        let mut seen = self.upstream.take();
        if via == Via::Hyper {
            // The request that moved the connection to hyper.
            assert!(seen.first().is_some_and(|r| r.starts_with("POST /health ")));
            seen.remove(0);
        }
        assert!(seen.len() <= 1, "{seen:?}");
        (status, seen.pop())
    }
}

/// Reads one response (head and Content-Length body); its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return head.split_whitespace().nth(1).unwrap().parse().unwrap();
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn h1(addr: SocketAddr, via: Via, target: &str, fields: &[(&str, &str)]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    if via == Via::Hyper {
        let warm = "POST /health HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\n\r\nx";
        stream.write_all(warm.as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut stream).await, 200);
    }
    let mut head = format!("GET {target} HTTP/1.1\r\n");
    for (name, value) in fields {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

async fn h2(addr: SocketAddr, target: &str, fields: &[(&str, &str)]) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(target).body(Empty::<Bytes>::new()).unwrap();
    for (name, value) in fields {
        req.headers_mut().append(
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

/// The request line and header fields the upstream received, lower-cased names.
fn names(request: &str) -> Vec<String> {
    request
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(':').next().unwrap().to_ascii_lowercase())
        .collect()
}

fn field<'a>(request: &'a str, name: &str) -> Option<&'a str> {
    request
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

#[tokio::test]
async fn look_alikes_of_managed_headers_never_reach_the_upstream() {
    let s = setup("").await;
    let alice = s.alice();
    let bearer = format!("Bearer {alice}");
    let look_alikes = [
        ("X_User_Sub", "evil"),
        ("x_amzn_oidc_identity", "evil"),
        ("X_AMZN_OIDC_DATA", "evil"),
        ("x_jwt_claims", "evil"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("x_request_id", "evil"),
        ("x-user_sub", "evil"),
        ("x-user-sub", "evil"),
        ("x-app_setting", "dropped-too"),
    ];
    for via in ALL {
        for (target, token) in [
            ("/health", None),
            ("/public/x", None),
            ("/orders/1", Some(&bearer)),
        ] {
            let mut fields = vec![("Host", "gw")];
            fields.extend(token.map(|t| ("Authorization", t.as_str())));
            fields.extend(look_alikes);
            let (status, seen) = s.send(via, target, &fields).await;
            assert_eq!(status, 200, "{via:?} {target}");
            let seen = seen.unwrap();
            assert!(!seen.contains("evil"), "{via:?} {target}: {seen}");
            assert!(!seen.contains("dropped-too"), "{via:?} {target}: {seen}");
            assert!(!seen.contains("6.6.6.6"), "{via:?} {target}: {seen}");
            assert!(
                names(&seen).iter().all(|n| !n.contains('_')),
                "{via:?} {target}: {seen}"
            );
            if token.is_some() {
                let sub = user("alice").unwrap().sub;
                assert_eq!(field(&seen, "x-user-sub"), Some(sub), "{via:?}");
            }
        }
    }
}

#[tokio::test]
async fn underscores_can_be_kept_but_never_for_look_alikes() {
    let s = setup("underscores = \"keep\"\n").await;
    for via in ALL {
        let fields = [
            ("Host", "gw"),
            ("x-app_setting", "kept"),
            ("X_User_Sub", "evil"),
            ("x_forwarded_host", "evil"),
            ("Content_Length", "evil"),
            ("x-dup", "kept"),
            ("x_dup", "evil"),
        ];
        let (status, seen) = s.send(via, "/public/x", &fields).await;
        assert_eq!(status, 200, "{via:?}");
        let seen = seen.unwrap();
        assert_eq!(
            field(&seen, "x-app_setting"),
            Some("kept"),
            "{via:?}: {seen}"
        );
        assert_eq!(field(&seen, "x-dup"), Some("kept"), "{via:?}: {seen}");
        assert!(!seen.contains("evil"), "{via:?}: {seen}");
    }
}

#[tokio::test]
async fn override_headers_are_stripped_unless_the_route_keeps_one() {
    let s = setup("").await;
    let overrides = [
        ("X-Original-URL", "/admin/x"),
        ("X-Rewrite-URL", "/admin/x"),
        ("X-Original-URI", "/admin/x"),
        ("X-Original-Method", "DELETE"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Forwarded-Prefix", "/admin"),
        ("Trailer", "x-user-sub"),
    ];
    for via in ALL {
        let mut fields = vec![("Host", "gw")];
        fields.extend(overrides);
        let (status, seen) = s.send(via, "/public/x", &fields).await;
        assert_eq!(status, 200);
        let seen = seen.unwrap();
        for (name, _) in overrides {
            assert_eq!(field(&seen, name), None, "{via:?} {name}: {seen}");
        }
        // The legacy route keeps the one override header it asked for, and only that one.
        let (status, seen) = s.send(via, "/legacy/x", &fields).await;
        assert_eq!(status, 200);
        let seen = seen.unwrap();
        assert_eq!(field(&seen, "x-http-method-override"), Some("DELETE"));
        for (name, _) in overrides
            .iter()
            .filter(|(n, _)| *n != "X-HTTP-Method-Override")
        {
            assert_eq!(field(&seen, name), None, "{via:?} {name}: {seen}");
        }
    }
}

#[tokio::test]
async fn missing_repeated_or_invalid_host_is_400_and_never_forwarded() {
    let s = setup("").await;
    let cases: [&[(&str, &str)]; 6] = [
        &[],
        &[("Host", "gw"), ("Host", "gw")],
        &[("Host", "gw"), ("Host", "other")],
        &[("Host", "gw/admin/x")],
        &[("Host", "user@gw")],
        &[("Host", "gw:99999999")],
    ];
    for via in [Via::FastPath, Via::Hyper] {
        for fields in cases {
            let (status, seen) = s.send(via, "/health", fields).await;
            assert_eq!(status, 400, "{via:?} {fields:?}");
            assert!(seen.is_none(), "{via:?} {fields:?}: forwarded");
        }
    }
    // HTTP/2: repeated or invalid host fields too.
    for fields in &cases[1..] {
        let (status, seen) = s.send(Via::H2, "http://gw/health", fields).await;
        assert_eq!(status, 400, "h2 {fields:?}");
        assert!(seen.is_none());
    }
    let metrics = s.proxy.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("jwtgate_rejections_total") && l.contains(r#"reason="bad_host""#)
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_target_authority_wins_over_host() {
    let s = setup("").await;
    // Absolute form on HTTP/1.1 (hyper's path: the fast path takes origin form only).
    let (status, seen) = s
        .send(
            Via::FastPath,
            "http://a.example/health",
            &[("Host", "b.example")],
        )
        .await;
    assert_eq!(status, 200);
    let seen = seen.unwrap();
    assert_eq!(field(&seen, "host"), Some("a.example"), "{seen}");
    assert_eq!(
        field(&seen, "x-forwarded-host"),
        Some("a.example"),
        "{seen}"
    );
    assert!(seen.starts_with("GET /health HTTP/1.1\r\n"), "{seen}");
    // HTTP/2: :authority wins over a conflicting host field.
    let (status, seen) = s
        .send(Via::H2, "http://a.example/health", &[("host", "b.example")])
        .await;
    assert_eq!(status, 200);
    let seen = seen.unwrap();
    assert_eq!(field(&seen, "host"), Some("a.example"), "{seen}");
    assert!(!seen.contains("b.example"), "{seen}");
    // One valid Host on either HTTP/1.1 path is passed on as sent.
    for via in [Via::FastPath, Via::Hyper] {
        let (status, seen) = s.send(via, "/health", &[("Host", "gw:8443")]).await;
        assert_eq!(status, 200);
        assert_eq!(field(&seen.unwrap(), "host"), Some("gw:8443"));
    }
}

#[tokio::test]
async fn an_http_1_0_request_without_host_gets_the_upstream_host() {
    let s = setup("").await;
    let answer = raw_exchange(s.proxy.addr, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    let seen = s.upstream.take().pop().unwrap();
    assert_eq!(
        field(&seen, "host"),
        Some(s.upstream.addr.to_string().as_str()),
        "{seen}"
    );
}

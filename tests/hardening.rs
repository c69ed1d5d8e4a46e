//! Hostile requests and upstream answers, through the real binary over raw sockets on HTTP/1.1
//! (both server paths: the bodiless fast path and hyper's) and HTTP/2, against an upstream that
//! records the exact bytes it receives: look-alike spellings of managed headers, override
//! headers, `Host` (RFC 9112 §3.2, RFC 9113 §8.3.1), response framing (RFC 9112 §6.3), broken
//! client bodies, path parameters (`;`) and scope parsing (RFC 6749 §3.3).

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::binary::BinaryProxy;
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
    proxy: BinaryProxy,
}

const EXTRA_ROUTES: &str = r#"
[[routes]]
name = "legacy"
path = "/legacy/**"
auth = "none"
keep_override_headers = ["X-HTTP-Method-Override"]
"#;

async fn setup(headers_extra: &str) -> Setup {
    setup_with(Recorder::start().await, headers_extra).await
}

async fn setup_with(upstream: Recorder, headers_extra: &str) -> Setup {
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let mut toml = config(&issuer, &upstream.url(), "", EXTRA_ROUTES);
    toml.push_str(headers_extra);
    let proxy = BinaryProxy::start(&toml).await;
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

/// An HTTP/2 connection (prior knowledge) to `addr`, driven in the background.
async fn h2_sender<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

async fn h2(addr: SocketAddr, target: &str, fields: &[(&str, &str)]) -> u16 {
    let mut sender = h2_sender(addr).await;
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
async fn a_refused_host_closes_the_connection() {
    let s = setup("").await;
    for via in [Via::FastPath, Via::Hyper] {
        let mut stream = TcpStream::connect(s.proxy.addr).await.unwrap();
        if via == Via::Hyper {
            let warm = "POST /health HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\n\r\nx";
            stream.write_all(warm.as_bytes()).await.unwrap();
            assert_eq!(read_response(&mut stream).await, 200);
        }
        // A second request waits behind the refused one: it must never be served.
        let two = "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET /health HTTP/1.1\r\nHost: gw\r\n\r\n";
        stream.write_all(two.as_bytes()).await.unwrap();
        let mut rest = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_string(&mut rest),
        )
        .await
        .expect("the connection stays open")
        .unwrap();
        assert!(rest.starts_with("HTTP/1.1 400"), "{via:?}: {rest}");
        assert_eq!(rest.matches("HTTP/1.1").count(), 1, "{via:?}: {rest}");
        assert!(
            rest.to_ascii_lowercase().contains("connection: close"),
            "{via:?}: {rest}"
        );
    }
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

/// Sends raw `request` (which should ask to close) and reads to the end: status, lower-cased
/// head, and the body with any chunked framing removed.
async fn exchange_to_end(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let answer = raw_exchange(addr, request).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let head = head.to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = if head.contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    (status, head, body)
}

/// An upstream that answers `/public/clte` with both Content-Length (stale) and chunked
/// Transfer-Encoding, `/public/switch` with a 101 nobody asked for, anything else `200 ok`.
async fn lying_upstream() -> Recorder {
    Recorder::answering(|request| {
        let target = request.split_whitespace().nth(1).unwrap_or("");
        match target {
            "/public/clte" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n".to_vec(),
            "/public/switch" => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        }
    })
    .await
}

/// The same request bodiless (the fast path and the bodiless exchange), with a body (hyper's
/// server and client), and over HTTP/2: status, head, body.
async fn three_ways(s: &Setup, path: &str) -> Vec<(&'static str, u16, String, String)> {
    let addr = s.proxy.addr;
    let get = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    let post = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    let (a, b) = (
        exchange_to_end(addr, get.as_bytes()).await,
        exchange_to_end(addr, post.as_bytes()).await,
    );
    let mut sender = h2_sender(addr).await;
    let req = Request::get(format!("http://gw{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let head = format!("{:?}", res.headers()).to_ascii_lowercase();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    vec![
        ("bodiless", a.0, a.1, a.2),
        ("with a body", b.0, b.1, b.2),
        (
            "h2",
            status,
            head,
            String::from_utf8_lossy(&body).into_owned(),
        ),
    ]
}

#[tokio::test]
async fn transfer_encoding_wins_over_a_stale_content_length_on_every_path() {
    let s = setup_with(lying_upstream().await, "").await;
    for (how, status, head, body) in three_ways(&s, "/public/clte").await {
        assert_eq!(status, 200, "{how}");
        assert_eq!(
            body, "0123456789",
            "{how}: the whole decoded body, not 5 bytes"
        );
        assert!(
            !head.contains("content-length: 5"),
            "{how}: stale length relayed: {head}"
        );
        assert!(!head.contains(r#""content-length": "5""#), "{how}: {head}");
    }
}

#[tokio::test]
async fn an_unsolicited_101_is_a_502_on_every_path() {
    let s = setup_with(lying_upstream().await, "").await;
    for (how, status, _, _) in three_ways(&s, "/public/switch").await {
        assert_eq!(status, 502, "{how}");
    }
}

#[tokio::test]
async fn a_broken_client_body_is_400_not_an_upstream_failure() {
    let s = setup("").await;
    let bad_chunk = "POST /public/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let (status, _, _) = exchange_to_end(s.proxy.addr, bad_chunk.as_bytes()).await;
    assert_eq!(status, 400);
    // A body cut short of its Content-Length: the client stops sending and half-closes.
    let mut stream = TcpStream::connect(s.proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let metrics = s.proxy.metrics().await;
    let line = |reason: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with("jwtgate_rejections_total") && l.contains(reason))
    };
    assert!(line(r#"reason="bad_request_body""#), "{metrics}");
    assert!(!line(r#"reason="upstream_unreachable""#), "{metrics}");
}

#[tokio::test]
async fn path_parameters_are_refused_by_default_on_every_path() {
    let s = setup("").await;
    for via in ALL {
        for target in [
            "/public/..;/admin/x",
            "/public/..%3B/admin/x",
            "/health;x",
            "/public/%3b",
        ] {
            let (status, seen) = s.send(via, target, &[("Host", "gw")]).await;
            assert_eq!(status, 400, "{via:?} {target}");
            assert!(seen.is_none(), "{via:?} {target}: forwarded");
        }
    }
}

#[tokio::test]
async fn only_a_space_separates_scopes() {
    let s = setup("").await;
    let mut claims = s.issuer.access_token(user("alice").unwrap());
    claims["scope"] = serde_json::json!("orders/read\torders/admin");
    let tab = format!("Bearer {}", s.issuer.sign(&claims));
    claims["scope"] = serde_json::json!("openid  orders/read");
    let spaces = format!("Bearer {}", s.issuer.sign(&claims));
    for via in ALL {
        let (status, seen) = s
            .send(via, "/orders/1", &[("Host", "gw"), ("Authorization", &tab)])
            .await;
        assert_eq!(status, 403, "{via:?}: a tab is not a separator");
        assert!(seen.is_none());
        let (status, _) = s
            .send(
                via,
                "/orders/1",
                &[("Host", "gw"), ("Authorization", &spaces)],
            )
            .await;
        assert_eq!(status, 200, "{via:?}: repeated spaces separate");
    }
}

#[tokio::test]
async fn client_trailers_never_reach_the_upstream() {
    let s = setup("").await;
    let chunked = "POST /public/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nTrailer: x-user-sub\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-user-sub: evil\r\nX_User_Sub: evil\r\n\r\n";
    let (status, _, _) = exchange_to_end(s.proxy.addr, chunked.as_bytes()).await;
    assert_eq!(status, 200);
    let seen = s.upstream.take().pop().unwrap();
    assert!(seen.contains("hello"), "{seen}");
    assert!(!seen.contains("evil"), "{seen}");
    assert_eq!(field(&seen, "trailer"), None, "{seen}");

    // HTTP/2: a trailers frame after the data.
    let mut sender = h2_sender(s.proxy.addr).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-user-sub", HeaderValue::from_static("evil"));
    let frames = futures_util::stream::iter([
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(b"hello"))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ]);
    let req = Request::post("http://gw/public/x")
        .header("trailer", "x-user-sub")
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = s.upstream.take().pop().unwrap();
    assert!(seen.contains("hello"), "{seen}");
    assert!(!seen.contains("evil"), "{seen}");
}

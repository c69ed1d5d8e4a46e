//! The proxy itself: bodies stream both ways in constant memory, WebSocket upgrades, upstream
//! failures, path normalisation, HTTP limits, h2c, hop-by-hop headers, request ids and pooling.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, Version};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

/// Safety bound for anything that waits on the network.
const SAFETY: Duration = Duration::from_secs(10);

const MIB: u64 = 1024 * 1024;
const HUNDRED_MIB: u64 = 100 * MIB;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A field of /proc/self/status, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

/// Resets the peak RSS (`VmHWM`) to the current RSS where the kernel allows it (Linux ≥ 4.0),
/// then returns the peak.
fn reset_peak_rss_kib() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    proc_status_kib("VmHWM")
}

/// Sends raw bytes and returns everything the server answered until it closed the connection
/// (or the safety bound). Write and read errors (a reset after an early answer) end the exchange.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(SAFETY, async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw HTTP/1.1 response: status, head and body.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

fn parse_raw(text: &str) -> Raw {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Raw {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// `GET {target}` over a raw connection, so no client library touches the path.
async fn raw_get(addr: SocketAddr, target: &str, token: Option<&str>) -> Raw {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
    parse_raw(&exchange(addr, request.as_bytes()).await)
}

/// An upstream recording the version and headers it received, answering with `headers`.
struct RecordingUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(Version, String, HeaderMap)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingUpstream {
    async fn start(response_headers: &'static [(&'static str, &'static str)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = jwtgate::dev::spawn_server(listener, move |req: Request<_>| {
            let log = Arc::clone(&log);
            async move {
                log.lock().unwrap().push((
                    req.version(),
                    req.uri().to_string(),
                    req.headers().clone(),
                ));
                let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                for (name, value) in response_headers {
                    response
                        .headers_mut()
                        .append(*name, http::HeaderValue::from_static(value));
                }
                response
            }
        });
        RecordingUpstream { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn last(&self) -> (Version, String, HeaderMap) {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

/// A proxy with the standard routes in front of `upstream`, with the given issuer.
async fn proxy_for(issuer: &jwtgate::dev::issuer::DevIssuer, upstream: &str) -> TestProxy {
    TestProxy::start_ready(&config(issuer, upstream, "", "")).await
}

fn access(issuer: &jwtgate::dev::issuer::DevIssuer, name: &str) -> String {
    issuer.sign(&issuer.access_token(user(name).unwrap()))
}

// ---------------------------------------------------------------------------------------------
// 1. Bodies stream in constant memory

/// The standard environment with `[upstream] response_timeout` replaced: the 2 s of
/// `common::config` counts the time to send the request body too (see
/// `slow_client_upload_is_not_a_gateway_timeout`), which a loaded machine can exceed.
async fn env_with_response_timeout(timeout: &str) -> Env {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let upstream = jwtgate::dev::echo::EchoUpstream::start().await.unwrap();
    let toml = config(&issuer, &upstream.url(), "", "").replace(
        "response_timeout = \"2s\"",
        &format!("response_timeout = \"{timeout}\""),
    );
    let proxy = TestProxy::start_ready(&toml).await;
    Env {
        issuer,
        upstream,
        proxy,
        http: client(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_megabyte_bodies_stream_both_ways_in_constant_memory() {
    let env = env_with_response_timeout("120s").await;
    let token = env.access("alice");
    let limit_kib = 64 * 1024;

    // Request body: 100 chunks of 1 MiB, each generated when the client asks for it.
    let before = reset_peak_rss_kib();
    // (`Iterator::map` is lazy: a chunk exists only from when it is polled until it is sent.)
    let chunks = futures_util::stream::iter(
        (0..HUNDRED_MIB / MIB)
            .map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'u'; MIB as usize])))),
    );
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    // POST /orders/** needs orders/read and orders/write: alice has both.
    let req = Request::post(env.proxy.url("/orders/upload"))
        .header("authorization", format!("Bearer {token}"))
        .body(StreamBody::new(chunks))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .expect("upload within the safety bound")
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    let got = env.upstream.last().unwrap();
    assert_eq!(got.method, "POST");
    assert_eq!(got.body_bytes, HUNDRED_MIB);
    let after = proc_status_kib("VmHWM");
    assert!(
        after.saturating_sub(before) < limit_kib,
        "peak RSS grew by {} KiB while streaming a 100 MiB request body",
        after - before
    );

    // Response body: 100 MiB generated by the echo, consumed chunk by chunk.
    let before = reset_peak_rss_kib();
    let mut res = env
        .get(
            &format!("/orders/download?bytes={HUNDRED_MIB}"),
            Some(&token),
        )
        .await;
    assert_eq!(res.status(), 200);
    let mut total = 0u64;
    while let Some(chunk) = tokio::time::timeout(SAFETY, res.chunk())
        .await
        .expect("a chunk within the safety bound")
        .unwrap()
    {
        assert!(chunk.iter().all(|&b| b == b'x'));
        total += chunk.len() as u64;
    }
    assert_eq!(total, HUNDRED_MIB);
    let after = proc_status_kib("VmHWM");
    assert!(
        after.saturating_sub(before) < limit_kib,
        "peak RSS grew by {} KiB while streaming a 100 MiB response body",
        after - before
    );
}

/// `response_timeout` is documented as the time "until the response head arrives"; the proxy
/// starts the clock before the request body is sent, so a client that uploads for longer than
/// the timeout gets a 504 blaming the upstream, although the upstream answers at once.
#[tokio::test]
async fn slow_client_upload_is_not_a_gateway_timeout() {
    let env = Env::start().await; // response_timeout = "2s"
    // Six 1 KiB chunks, 500 ms apart: the body takes ~3 s; the echo answers as soon as it ends.
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 6 {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b's'; 1024]))),
            i + 1,
        ))
    });
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(env.proxy.url("/orders/slow-upload"))
        .header("authorization", format!("Bearer {}", env.access("alice")))
        .body(StreamBody::new(Box::pin(chunks)))
        .unwrap();
    let res = tokio::time::timeout(SAFETY, client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "a slow client upload to a responsive upstream was answered {}",
        res.status()
    );
    assert_eq!(env.upstream.last().unwrap().body_bytes, 6 * 1024);
}

// ---------------------------------------------------------------------------------------------
// 2. WebSocket

/// What the WebSocket echo server saw: TCP connections accepted, handshake request headers.
#[derive(Default)]
struct WsSeen {
    accepted: AtomicUsize,
    headers: Mutex<Option<HeaderMap>>,
}

/// A WebSocket echo server.
async fn websocket_echo() -> (SocketAddr, Arc<WsSeen>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(WsSeen::default());
    let log = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            log.accepted.fetch_add(1, Ordering::SeqCst);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)] // the Err type is tungstenite's
                let record =
                    move |req: &tungstenite::handshake::server::Request,
                          res: tungstenite::handshake::server::Response| {
                        *log.headers.lock().unwrap() = Some(req.headers().clone());
                        Ok(res)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen, task)
}

#[tokio::test]
async fn websocket_upgrade_round_trips_after_auth() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let (ws_addr, seen, ws_task) = websocket_echo().await;
    let proxy = proxy_for(&issuer, &format!("http://{ws_addr}")).await;
    let url = format!("ws://{}/orders/ws", proxy.addr);

    // Without a token: 401, and the upstream never sees a connection.
    let err = tokio::time::timeout(SAFETY, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .unwrap()
        .expect_err("an upgrade without a token must fail");
    match err {
        tungstenite::Error::Http(response) => assert_eq!(response.status(), 401),
        other => panic!("expected an HTTP 401, got {other:?}"),
    }
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 0);

    // With a valid token: upgraded end to end.
    let mut request = url.as_str().into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        format!("Bearer {}", access(&issuer, "alice"))
            .parse()
            .unwrap(),
    );
    headers.insert("x-user-sub", "evil".parse().unwrap());
    headers.insert("x-amzn-oidc-identity", "evil".parse().unwrap());
    let (mut ws, response) =
        tokio::time::timeout(SAFETY, tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    let echoed = tokio::time::timeout(SAFETY, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("hello"));
    ws.send(Message::text("second")).await.unwrap();
    let echoed = tokio::time::timeout(SAFETY, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("second"));
    let _ = ws.close(None).await;
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
    // The handshake went through the normal header plan: verified claims in, spoofs out.
    let headers = seen.headers.lock().unwrap().clone().unwrap();
    assert_eq!(headers["x-user-sub"], alice().sub);
    assert_eq!(headers["x-username"], "alice");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(headers.contains_key("x-request-id"));
    assert!(headers.get("x-amzn-oidc-identity").is_none());
    ws_task.abort();
}

/// An upstream that accepts any `Upgrade` with a 101 and records the request head and every
/// byte that arrives on the connection after it.
async fn upgrading_upstream() -> (
    SocketAddr,
    Arc<Mutex<(String, Vec<u8>)>>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new((String::new(), Vec::new())));
    let log = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let protocol = head
                    .lines()
                    .find_map(|l| l.strip_prefix("upgrade:"))
                    .map(|p| p.trim().to_owned());
                log.lock().unwrap().0 = head;
                let Some(protocol) = protocol else {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    return;
                };
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    log.lock().unwrap().1.extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (addr, seen, task)
}

/// h2c smuggling: after an `Upgrade: h2c` the client speaks HTTP/2 straight to the upstream
/// through the tunnel, and every request on it bypasses jwtgate's per-route checks (here bob,
/// allowed on /orders, would reach /admin). A reverse proxy must not forward `Upgrade: h2c`.
#[tokio::test]
async fn h2c_upgrade_is_not_tunnelled_to_the_upstream() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let (up_addr, seen, up_task) = upgrading_upstream().await;
    let proxy = proxy_for(&issuer, &format!("http://{up_addr}")).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "GET /orders/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Connection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        access(&issuer, "bob")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(SAFETY, async {
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
    })
    .await
    .unwrap();
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 101") {
        // Show what the tunnel allows: a request jwtgate never sees.
        let _ = stream
            .write_all(b"GET /admin/secret HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        for _ in 0..100 {
            if !seen.lock().unwrap().1.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (up_head, tunnelled) = seen.lock().unwrap().clone();
    let up_head: String = up_head
        .lines()
        .filter(|l| !l.starts_with("authorization:"))
        .collect::<Vec<_>>()
        .join("\n");
    up_task.abort();
    assert!(
        !up_head.contains("upgrade: h2c"),
        "the upstream was asked to switch to h2c:\n{up_head}\nclient got:\n{head}\n\
         bytes tunnelled past jwtgate: {:?}",
        String::from_utf8_lossy(&tunnelled)
    );
    assert!(!head.starts_with("HTTP/1.1 101"), "{head}");
}

// ---------------------------------------------------------------------------------------------
// 3. Upstream failures

#[tokio::test]
async fn closed_upstream_port_is_502_json() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = proxy_for(&issuer, &format!("http://{closed}")).await;
    let http = client();
    for (path, token) in [
        ("/health", None),
        ("/orders/1", Some(access(&issuer, "alice"))),
    ] {
        let mut req = http.get(proxy.url(path));
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 502, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.text().await.unwrap(), r#"{"message":"Bad Gateway"}"#);
    }
}

#[tokio::test]
async fn slow_upstream_is_504_json() {
    let env = Env::start().await;
    // common::config sets response_timeout = "2s".
    let res = env
        .get("/orders/1?sleep_ms=3000", Some(&env.access("alice")))
        .await;
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"message":"Gateway Timeout"}"#
    );
    // A fast request on the same proxy still works.
    assert_eq!(env.get("/health", None).await.status(), 200);
}

/// A request body that breaks off on its way upstream is the client's fault: a 400 counted as
/// `bad_request_body`, not a 502 blaming the upstream.
#[tokio::test]
async fn a_broken_request_body_is_a_400_not_a_502() {
    let env = Env::start().await;
    // A chunk whose data is not followed by CRLF.
    let res = parse_raw(
        &exchange(
            env.proxy.addr,
            b"POST /health HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhelloXX\r\n0\r\n\r\n",
        )
        .await,
    );
    assert_eq!(res.status, 400, "{}", res.head);
    assert_eq!(res.body, r#"{"message":"Bad Request"}"#);
    // A body cut short of its Content-Length: the client closes its side.
    let mut stream = TcpStream::connect(env.proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let (answer, _) = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let metrics = env.proxy.metrics().await;
    let counted = |reason: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("jwtgate_rejections_total{") && l.contains(reason))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert_eq!(counted(r#"reason="bad_request_body""#), 2, "{metrics}");
    assert_eq!(counted(r#"reason="upstream_unreachable""#), 0, "{metrics}");
}

// ---------------------------------------------------------------------------------------------
// 4. Path normalisation

#[tokio::test]
async fn routes_match_the_normalised_path_and_forward_that_same_path() {
    let env = Env::start().await;
    let (alice, bob) = (env.access("alice"), env.access("bob"));
    let addr = env.proxy.addr;

    // Dot segments, escaped unreserved characters and repeated slashes are resolved first:
    // bob reaches /orders, but not /admin however the path is spelled.
    for target in [
        "/orders/../admin/x",
        "/orders/./../admin/x",
        "/%61dmin/x",
        "/%61%64%6D%69%6E/x",
        "/orders/%2e%2e/admin",
        "/orders/%2E%2E/admin",
        "/orders/.%2e/admin",
        "//admin//x",
        "/orders/1/../../admin",
        "/../../admin/x",
    ] {
        let res = raw_get(addr, target, Some(&bob)).await;
        assert_eq!(res.status, 403, "{target}: bob is not an admin");
        assert_eq!(res.body, r#"{"message":"Forbidden"}"#, "{target}");
    }
    assert_eq!(env.upstream.hits(), 0, "nothing reached the upstream");

    // What the upstream gets is the normalised path the route was matched on.
    let mut forwarded = 0;
    for (target, token, expected) in [
        ("/orders/../admin/x", &alice, "/admin/x"),
        ("/%61dmin/x", &alice, "/admin/x"),
        ("/orders/%2e%2e/admin", &alice, "/admin"),
        ("//orders///1", &bob, "/orders/1"),
        ("/orders/./1/", &bob, "/orders/1/"),
        ("/orders/a%20b", &bob, "/orders/a%20b"),
        ("/orders/a%3fb", &bob, "/orders/a%3Fb"),
    ] {
        let res = raw_get(addr, target, Some(token)).await;
        assert_eq!(res.status, 200, "{target}: {}", res.body);
        forwarded += 1;
        assert_eq!(env.upstream.hits(), forwarded);
        assert_eq!(env.upstream.last().unwrap().uri, expected, "{target}");
    }

    // Query strings are forwarded untouched (not normalised, not re-encoded).
    let query = "a=%2F&b=/../x&c=%zz&d=..%2f..&e=%61&&f";
    let res = raw_get(addr, &format!("/orders/1?{query}"), Some(&bob)).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        env.upstream.last().unwrap().uri,
        format!("/orders/1?{query}")
    );
    let res = raw_get(addr, &format!("/./orders//1?{query}"), Some(&bob)).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        env.upstream.last().unwrap().uri,
        format!("/orders/1?{query}")
    );
}

#[tokio::test]
async fn ambiguous_or_malformed_paths_are_400_and_never_forwarded() {
    let env = Env::start().await;
    let alice = env.access("alice");
    for target in [
        "/orders%2F1",
        "/orders%2f1",
        "/orders/%2F../admin",
        "/orders/%5C1",
        "/orders/%5c..%5cadmin",
        "/orders/%00",
        "/orders/1%00.json",
        "/orders/%zz",
        "/orders/%2",
        "/orders/%",
        "/orders/%G0",
    ] {
        for token in [Some(alice.as_str()), None] {
            let res = raw_get(env.proxy.addr, target, token).await;
            assert_eq!(res.status, 400, "{target}");
            assert!(
                res.head.contains("content-type: application/json"),
                "{target}"
            );
            assert_eq!(res.body, r#"{"message":"Bad Request"}"#, "{target}");
        }
    }
    assert_eq!(env.upstream.hits(), 0);
}

/// A raw `\` never reaches jwtgate's normaliser: hyper's URI parser refuses it first and answers
/// a bare 400 (no JSON body). What matters is the 400 and that nothing is forwarded.
#[tokio::test]
async fn raw_backslash_in_path_is_400_and_never_forwarded() {
    let env = Env::start().await;
    let alice = env.access("alice");
    for target in ["/orders\\1", "/orders\\..\\admin", "\\admin"] {
        let res = raw_get(env.proxy.addr, target, Some(&alice)).await;
        assert_eq!(res.status, 400, "{target}");
    }
    assert_eq!(env.upstream.hits(), 0);
}

/// The ways a request reaches the pipeline: the HTTP/1.1 fast path (no body), hyper's HTTP/1.1
/// server (a request with a body) and HTTP/2.
#[derive(Debug, Clone, Copy)]
enum Via {
    FastPath,
    Hyper,
    H2,
}

const EVERY_WAY: [Via; 3] = [Via::FastPath, Via::Hyper, Via::H2];

/// Sends `target` exactly as written (no client library normalises it) and returns the status
/// and body.
async fn send_via(via: Via, addr: SocketAddr, target: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    match via {
        Via::FastPath => {
            let res = raw_get(addr, target, token).await;
            (res.status, res.body)
        }
        Via::Hyper => {
            let request = format!(
                "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 1\r\n\
                 Connection: close\r\n\r\nx"
            );
            let res = parse_raw(&exchange(addr, request.as_bytes()).await);
            (res.status, res.body)
        }
        Via::H2 => {
            use http_body_util::BodyExt;
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let mut req = Request::get(format!("http://{addr}{target}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            if let Some(t) = token {
                req.headers_mut().insert(
                    "authorization",
                    http::HeaderValue::try_from(format!("Bearer {t}")).unwrap(),
                );
            }
            let res = tokio::time::timeout(SAFETY, sender.send_request(req))
                .await
                .unwrap()
                .unwrap();
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    }
}

/// `;` starts path parameters for Tomcat and Spring, which drop them before resolving `..`:
/// `/public/..;/admin/x` is `/admin/x` to them. By default jwtgate refuses any `;` (raw or
/// encoded), on every way in, and nothing reaches the upstream.
#[tokio::test]
async fn semicolons_in_paths_are_400_by_default_and_never_forwarded() {
    let env = Env::start().await;
    let alice = env.access("alice");
    for via in EVERY_WAY {
        for target in [
            "/public/..;/admin/x",
            "/public/..;x=1/admin/x",
            "/public/.;/x",
            "/public/..%3B/admin/x",
            "/public/..%3b/admin/x",
            "/public/%2e%2e%3B/admin/x",
            "/admin;x/y",
            "/public/x;jsessionid=1",
            "/public/x%3By",
        ] {
            for token in [Some(alice.as_str()), None] {
                let (status, body) = send_via(via, env.proxy.addr, target, token).await;
                assert_eq!(status, 400, "{via:?} {target}");
                assert_eq!(body, r#"{"message":"Bad Request"}"#, "{via:?} {target}");
            }
        }
    }
    assert_eq!(env.upstream.hits(), 0);
    // A `;` in the query is not the path's business.
    let (status, _) = send_via(Via::FastPath, env.proxy.addr, "/public/x?a=1;b=2", None).await;
    assert_eq!(status, 200);
    assert_eq!(env.upstream.last().unwrap().uri, "/public/x?a=1;b=2");
}

/// With `[paths] semicolons = "allow"`, a segment named `.` or `..` before its parameters is a
/// dot-segment: `/public/..;/admin/x` is routed as `/admin/x` (the admin route's token is
/// needed) and the upstream receives `/admin/x`. Other segments keep their parameters, and
/// routes match on the part before them. An encoded `;` stays refused.
#[tokio::test]
async fn allowed_semicolons_route_and_forward_what_the_upstream_would_resolve() {
    let env = Env::start_with("", "[paths]\nsemicolons = \"allow\"\n").await;
    let (alice, bob) = (env.access("alice"), env.access("bob"));
    let addr = env.proxy.addr;
    for via in EVERY_WAY {
        for target in [
            "/public/..;/admin/x",
            "/public/..;x=1/admin/x",
            "/public/%2E%2E;/admin/x",
            "/public/.%2e;v/admin/x",
            "/;x/admin/x",
        ] {
            let hits = env.upstream.hits();
            let (status, _) = send_via(via, addr, target, None).await;
            assert_eq!(
                status, 401,
                "{via:?} {target}: the admin route needs a token"
            );
            let (status, _) = send_via(via, addr, target, Some(&bob)).await;
            assert_eq!(status, 403, "{via:?} {target}: bob is not an admin");
            assert_eq!(env.upstream.hits(), hits, "{via:?} {target}");
            let (status, body) = send_via(via, addr, target, Some(&alice)).await;
            assert_eq!(status, 200, "{via:?} {target}: {body}");
            assert_eq!(env.upstream.hits(), hits + 1);
            assert_eq!(
                env.upstream.last().unwrap().uri,
                "/admin/x",
                "{via:?} {target}"
            );
        }
        // Parameters of an ordinary segment are kept, and do not hide the segment's name.
        let (status, _) = send_via(via, addr, "/admin;x/y", Some(&bob)).await;
        assert_eq!(status, 403, "{via:?}: /admin;x is /admin");
        for (target, token, expected) in [
            ("/admin;x/y", Some(&alice), "/admin;x/y"),
            ("/admin;a=1;b=2/y%3f", Some(&alice), "/admin;a=1;b=2/y%3F"),
            ("/public/a;b/c", None, "/public/a;b/c"),
            ("/public/.;x/y", None, "/public/y"),
            ("/public/a/b/..;", None, "/public/a/"),
        ] {
            let (status, body) = send_via(via, addr, target, token.map(String::as_str)).await;
            assert_eq!(status, 200, "{via:?} {target}: {body}");
            assert_eq!(
                env.upstream.last().unwrap().uri,
                expected,
                "{via:?} {target}"
            );
        }
        let hits = env.upstream.hits();
        for target in [
            "/public/..%3B/admin/x",
            "/public/..%3bv/admin/x",
            "/admin%3Bx/y",
        ] {
            let (status, body) = send_via(via, addr, target, Some(&alice)).await;
            assert_eq!(status, 400, "{via:?} {target}");
            assert_eq!(body, r#"{"message":"Bad Request"}"#, "{via:?} {target}");
        }
        assert_eq!(env.upstream.hits(), hits);
    }
}

/// `[paths] case_insensitive = true`: `/ADMIN/x` names the admin resource on IIS and other
/// case-insensitive upstreams, so it must need the admin route's token. The upstream gets the
/// client's spelling.
#[tokio::test]
async fn case_insensitive_routes_are_an_option() {
    let catch_all = "[[routes]]\nname = \"rest\"\npath = \"/**\"\nauth = \"none\"\n";
    let env = Env::start_with("", catch_all).await;
    let addr = env.proxy.addr;
    // Off (the default): literal segments compare exactly; /ADMIN/x is another resource.
    for via in EVERY_WAY {
        let (status, _) = send_via(via, addr, "/ADMIN/x", None).await;
        assert_eq!(status, 200, "{via:?}");
        assert_eq!(env.upstream.last().unwrap().uri, "/ADMIN/x");
    }

    let on = format!("{catch_all}\n[paths]\ncase_insensitive = true\nsemicolons = \"allow\"\n");
    let env = Env::start_with("", &on).await;
    let (alice, bob) = (env.access("alice"), env.access("bob"));
    let addr = env.proxy.addr;
    for via in EVERY_WAY {
        for target in ["/ADMIN/x", "/Admin/x", "/%41dmin/x", "/public/..;/aDmIn/x"] {
            let hits = env.upstream.hits();
            let (status, _) = send_via(via, addr, target, None).await;
            assert_eq!(status, 401, "{via:?} {target}");
            let (status, _) = send_via(via, addr, target, Some(&bob)).await;
            assert_eq!(status, 403, "{via:?} {target}");
            assert_eq!(env.upstream.hits(), hits, "{via:?} {target}");
        }
        for (target, token, expected) in [
            ("/ADMIN/x", &alice, "/ADMIN/x"),
            ("/public/..;/aDmIn/x", &alice, "/aDmIn/x"),
            ("/ORDERS/7", &alice, "/ORDERS/7"),
            ("/Items/1/DETAIL", &bob, "/Items/1/DETAIL"),
        ] {
            let (status, body) = send_via(via, addr, target, Some(token)).await;
            assert_eq!(status, 200, "{via:?} {target}: {body}");
            assert_eq!(
                env.upstream.last().unwrap().uri,
                expected,
                "{via:?} {target}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. HTTP limits

#[tokio::test]
async fn oversized_request_head_is_431_and_never_forwarded() {
    let env = Env::start().await;
    let big = "a".repeat(20 * 1024);
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nx-big: {big}\r\nConnection: close\r\n\r\n"
    );
    let res = parse_raw(&exchange(env.proxy.addr, request.as_bytes()).await);
    assert_eq!(res.status, 431);
    // Just under the limit is fine.
    let ok = "a".repeat(12 * 1024);
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nx-big: {ok}\r\nConnection: close\r\n\r\n"
    );
    let res = parse_raw(&exchange(env.proxy.addr, request.as_bytes()).await);
    assert_eq!(res.status, 200);
    assert_eq!(env.upstream.hits(), 1, "only the request under the limit");
    assert_eq!(
        env.upstream.last().unwrap().headers["x-big"].len(),
        ok.len()
    );
}

/// `common::config` with `[server] header_read_timeout = "1s"`.
async fn env_with_header_timeout() -> (
    jwtgate::dev::issuer::DevIssuer,
    jwtgate::dev::echo::EchoUpstream,
    TestProxy,
) {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let upstream = jwtgate::dev::echo::EchoUpstream::start().await.unwrap();
    let toml = format!(
        "[server]\nheader_read_timeout = \"1s\"\n{}",
        config(&issuer, &upstream.url(), "", "")
    );
    let proxy = TestProxy::start_ready(&toml).await;
    assert_eq!(
        proxy
            .shared
            .snapshot
            .load()
            .config
            .limits
            .header_read_timeout,
        Duration::from_secs(1)
    );
    (issuer, upstream, proxy)
}

/// Reads until EOF, an error or the safety bound; returns what was read and whether the
/// connection ended (rather than the bound expiring).
async fn read_until_closed(stream: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let ended = tokio::time::timeout(SAFETY, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), ended)
}

fn closed_or_408(answer: &str) -> bool {
    answer.is_empty() || answer.starts_with("HTTP/1.1 408")
}

#[tokio::test]
async fn slowloris_half_head_is_cut_off_by_the_header_read_timeout() {
    let (_issuer, upstream, proxy) = env_with_header_timeout().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1")
        .await
        .unwrap();
    let (answer, ended) = read_until_closed(&mut stream).await;
    assert!(ended, "the connection was still open after {SAFETY:?}");
    assert!(closed_or_408(&answer), "{answer:?}");
    assert_eq!(upstream.hits(), 0);

    // An idle keep-alive connection is bounded the same way.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (answer, ended) = read_until_closed(&mut stream).await;
    assert!(ended, "the idle keep-alive connection was still open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn silent_connection_is_cut_off_by_the_header_read_timeout() {
    let (_issuer, _upstream, proxy) = env_with_header_timeout().await;
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let (answer, ended) = read_until_closed(&mut silent).await;
    assert!(
        ended,
        "a connection that sent nothing was still open after {SAFETY:?} (header_read_timeout = 1s)"
    );
    assert!(closed_or_408(&answer), "{answer:?}");
}

#[tokio::test]
async fn stalled_h2_preface_is_cut_off_by_the_header_read_timeout() {
    let (_issuer, _upstream, proxy) = env_with_header_timeout().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let (answer, ended) = read_until_closed(&mut stream).await;
    assert!(
        ended,
        "a stalled h2 preface was still open after {SAFETY:?} (header_read_timeout = 1s)"
    );
    assert!(answer.is_empty(), "{answer:?}");
}

#[tokio::test]
async fn idle_h2c_connection_is_closed() {
    let (_issuer, _upstream, proxy) = env_with_header_timeout().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The client preface and an empty SETTINGS frame, then nothing.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let (_, ended) = read_until_closed(&mut stream).await;
    assert!(
        ended,
        "an idle h2c connection was still open after {SAFETY:?} (header_read_timeout = 1s)"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. h2c with prior knowledge

#[tokio::test]
async fn h2c_prior_knowledge_is_served_and_forwarded_over_http1() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let upstream = RecordingUpstream::start(&[]).await;
    let proxy = proxy_for(&issuer, &upstream.url()).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    let res = h2
        .get(proxy.url("/orders/7?q=1"))
        .bearer_auth(access(&issuer, "alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(res.text().await.unwrap(), "ok");
    let (version, uri, headers) = upstream.last();
    assert_eq!(version, Version::HTTP_11, "the upstream leg is HTTP/1.1");
    assert_eq!(uri, "/orders/7?q=1");
    assert_eq!(headers["x-user-sub"], alice().sub);
    assert_eq!(headers["x-username"], "alice");
    let authority = proxy.addr.to_string();
    assert_eq!(headers["host"], authority.as_str());
    assert_eq!(headers["x-forwarded-host"], authority.as_str());
    assert_eq!(headers["x-forwarded-proto"], "http");

    let res = h2.get(proxy.url("/orders/7")).send().await.unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), 401);
    assert_eq!(www_authenticate(&res), r#"Bearer realm="jwtgate""#);
    assert_eq!(res.text().await.unwrap(), r#"{"message":"Unauthorized"}"#);
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 7. Hop-by-hop headers

#[tokio::test]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let env = Env::start().await;
    let request = format!(
        "GET /orders/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Connection: x-secret, close\r\nx-secret: 1\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\nProxy-Connection: keep-alive\r\n\
         TE: trailers\r\nx-kept: yes\r\n\r\n",
        env.access("alice")
    );
    let res = parse_raw(&exchange(env.proxy.addr, request.as_bytes()).await);
    assert_eq!(res.status, 200);
    let got = env.upstream.last().unwrap();
    for name in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            got.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    for value in got.headers.get_all("connection") {
        let value = value.to_str().unwrap().to_ascii_lowercase();
        assert!(!value.contains("x-secret"), "connection: {value}");
    }
    assert_eq!(got.headers["te"], "trailers", "TE: trailers is kept");
    assert_eq!(got.headers["x-kept"], "yes");
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_passed_back() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let upstream = RecordingUpstream::start(&[
        ("connection", "x-up-secret"),
        ("x-up-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("x-normal", "yes"),
    ])
    .await;
    let proxy = proxy_for(&issuer, &upstream.url()).await;
    let request = format!(
        "GET /orders/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        access(&issuer, "alice")
    );
    let res = parse_raw(&exchange(proxy.addr, request.as_bytes()).await);
    assert_eq!(res.status, 200);
    assert_eq!(res.body, "ok");
    assert!(res.head.contains("\r\nx-normal: yes"), "{}", res.head);
    for needle in ["x-up-secret", "keep-alive", "proxy-connection"] {
        assert!(
            !res.head.contains(needle),
            "{needle} passed back:\n{}",
            res.head
        );
    }
}

/// Request trailers are never forwarded, over HTTP/1.1 (chunked) or HTTP/2: they arrive after
/// every header rule has run, so a trailer could otherwise set an identity header. Declared in
/// `Trailer`, which is what would make hyper's client send them on.
#[tokio::test]
async fn request_trailers_never_reach_the_upstream() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let (addr, _, _, seen) = raw_upstream_seen(|_| {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        (answer.to_vec(), false)
    })
    .await;
    let proxy = proxy_for(&issuer, &format!("http://{addr}")).await;
    let token = access(&issuer, "alice");

    let request = format!(
        "POST /orders/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\nTrailer: x-user-sub\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n0\r\nx-user-sub: evil\r\n\r\n"
    );
    let res = parse_raw(&exchange(proxy.addr, request.as_bytes()).await);
    assert_eq!(res.status, 200, "HTTP/1.1: {}", res.head);

    let h2 = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-user-sub", "evil".parse().unwrap());
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ]);
    let req = Request::post(proxy.url("/orders/1"))
        .header("authorization", format!("Bearer {token}"))
        .header("trailer", "x-user-sub")
        .body(StreamBody::new(frames))
        .unwrap();
    let res = tokio::time::timeout(SAFETY, h2.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), 200, "HTTP/2");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let sub = format!("\r\nx-user-sub: {}\r\n", alice().sub).to_ascii_lowercase();
    for (request, what) in seen.iter().zip(["HTTP/1.1", "HTTP/2"]) {
        let text = String::from_utf8_lossy(request).to_ascii_lowercase();
        assert!(text.contains(&sub), "{what}: the verified identity\n{text}");
        assert!(
            !text.contains("evil"),
            "{what}: the trailer got through\n{text}"
        );
        assert!(
            text.ends_with("\r\n5\r\nhello\r\n0\r\n\r\n"),
            "{what}\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. x-request-id

#[tokio::test]
async fn request_id_is_kept_when_sane_and_generated_otherwise() {
    let env = Env::start().await;
    let token = env.access("alice");
    let res = env
        .http
        .get(env.proxy.url("/orders/1"))
        .bearer_auth(&token)
        .header("x-request-id", "abc-123_XYZ.7")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "abc-123_XYZ.7");
    assert_eq!(
        env.upstream.last().unwrap().headers["x-request-id"],
        "abc-123_XYZ.7"
    );

    let generated = |res: &reqwest::Response| {
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 36, "{id}");
        uuid::Uuid::parse_str(&id).unwrap();
        id
    };
    // None sent: a UUID, the same upstream and in the response.
    let res = env.get("/orders/1", Some(&token)).await;
    let id = generated(&res);
    assert_eq!(env.upstream.last().unwrap().headers["x-request-id"], id);
    // Each request gets its own.
    let other = generated(&env.get("/orders/1", Some(&token)).await);
    assert_ne!(id, other);
    // Not sane (spaces, too long): replaced.
    for bad in ["has space".to_owned(), "a".repeat(129)] {
        let res = env
            .http
            .get(env.proxy.url("/orders/1"))
            .bearer_auth(&token)
            .header("x-request-id", bad.as_str())
            .send()
            .await
            .unwrap();
        let id = generated(&res);
        assert_eq!(env.upstream.last().unwrap().headers["x-request-id"], id);
    }
    // Refusals carry one too.
    let res = env.get("/orders/1", None).await;
    assert_eq!(res.status(), 401);
    generated(&res);
}

// ---------------------------------------------------------------------------------------------
// 9. Keep-alive pooling

#[tokio::test]
async fn fifty_sequential_requests_on_pooled_connections() {
    let env = Env::start().await;
    let token = env.access("bob");
    for i in 0..50 {
        let res = env.get(&format!("/orders/{i}"), Some(&token)).await;
        assert_eq!(res.status(), 200, "request {i}");
        res.bytes().await.unwrap();
    }
    assert_eq!(env.upstream.hits(), 50);
    let uris: Vec<String> = env.upstream.received().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris[49], "/orders/49");
}

/// An HTTP/1.1 upstream on a raw socket that counts its connections; with `close_after_each`
/// it closes every connection after one response without saying so (no `Connection: close`),
/// like a server whose keep-alive timeout is shorter than the proxy's pool timeout.
/// Returns its address and the counts of connections opened and closed by the proxy.
async fn counting_upstream(
    close_after_each: bool,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    raw_upstream(move |_| {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        (answer.to_vec(), close_after_each)
    })
    .await
}

/// An HTTP/1.1 upstream on a raw socket: it reads one request at a time and writes
/// `answer(n)` for the n-th request (counted over all connections), then closes the connection
/// if the answer says so. Returns its address and the counts of connections opened and of
/// connections the proxy closed.
async fn raw_upstream(
    answer: impl Fn(usize) -> (Vec<u8>, bool) + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (addr, opened, closed, _) = raw_upstream_seen(answer).await;
    (addr, opened, closed)
}

/// [`raw_upstream`], also returning every request exactly as it arrived (head and body bytes).
async fn raw_upstream_seen(
    answer: impl Fn(usize) -> (Vec<u8>, bool) + Send + Sync + 'static,
) -> (
    SocketAddr,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (opened, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (count, closes, log) = (Arc::clone(&opened), Arc::clone(&closed), Arc::clone(&seen));
    let answer = Arc::new(answer);
    let requests = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (closes, answer, requests, log) = (
                Arc::clone(&closes),
                Arc::clone(&answer),
                Arc::clone(&requests),
                Arc::clone(&log),
            );
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(end) = request_end(&buf) {
                            break end;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                closes.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    log.lock().unwrap().push(buf.drain(..end).collect());
                    let (bytes, close) = answer(requests.fetch_add(1, Ordering::SeqCst));
                    if stream.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, opened, closed, seen)
}

/// Where the request at the start of `buf` ends (its head, and its body framed by
/// `Content-Length` or chunked with any trailers); `None` until it has all arrived.
fn request_end(buf: &[u8]) -> Option<usize> {
    let line_end = |from: usize| {
        buf.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i)
    };
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    if field("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        let mut at = head_end;
        loop {
            let end = line_end(at)?;
            let line = String::from_utf8_lossy(&buf[at..end]);
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            at = end + 2;
            if size == 0 {
                break;
            }
            at += size + 2;
        }
        // Trailer fields, then an empty line.
        loop {
            let end = line_end(at)?;
            if end == at {
                return Some(end + 2);
            }
            at = end + 2;
        }
    }
    let length: usize = field("content-length").map_or(0, |n| n.parse().unwrap());
    (buf.len() >= head_end + length).then_some(head_end + length)
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let (addr, opened, closed) = counting_upstream(false).await;
    let toml = config(&issuer, &format!("http://{addr}"), "", "")
        .replace("[upstream]\n", "[upstream]\npool_idle_timeout = \"1s\"\n");
    let proxy = TestProxy::start_ready(&toml).await;
    let http = client();
    for i in 0..20 {
        let res = http.get(proxy.url("/health")).send().await.unwrap();
        assert_eq!(res.status(), 200, "request {i}");
        assert_eq!(res.text().await.unwrap(), "ok");
    }
    assert_eq!(opened.load(Ordering::SeqCst), 1, "one pooled connection");
    // Idle past pool_idle_timeout with no request to notice: closed anyway.
    let deadline = tokio::time::Instant::now() + SAFETY;
    while closed.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle connection never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn upstream_framings_are_relayed_and_only_clean_ends_keep_the_connection() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    // (upstream answer, closes after it)
    let script: Vec<(&'static [u8], bool)> = vec![
        // 0: chunked, with an extension and a trailer
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
            false,
        ),
        // 1: no content
        (b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n", false),
        // 2: an interim 103 before the response
        (
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
            false,
        ),
        // 3: a HEAD response: a length, no body
        (b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", false),
        // 4: bytes after the declared length: relayed up to the length, connection dropped
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\nsmuggled", false),
        // 5: delimited by the close
        (b"HTTP/1.1 200 OK\r\n\r\nuntil close", true),
        // 6: conflicting lengths: 502, connection dropped
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok", false),
        // 7: fine again
        (b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast", false),
    ];
    let (addr, opened, _) = raw_upstream(move |n| {
        let (bytes, close) = script[n.min(7)];
        (bytes.to_vec(), close)
    })
    .await;
    let proxy = proxy_for(&issuer, &format!("http://{addr}")).await;
    let http = client();
    let get = |path: &'static str| http.get(proxy.url(path)).send();

    let res = get("/health").await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked")
    );
    assert_eq!(res.text().await.unwrap(), "hello world");
    let res = get("/health").await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["x-a"], "1");
    let res = get("/health").await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("link").is_none(),
        "interim headers are not merged"
    );
    assert_eq!(res.text().await.unwrap(), "hi");
    let res = http.head(proxy.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "9");
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "clean ends keep the connection"
    );

    let res = get("/health").await.unwrap();
    assert_eq!(res.text().await.unwrap(), "ok");
    let res = get("/health").await.unwrap();
    assert_eq!(
        res.text().await.unwrap(),
        "until close",
        "not the smuggled bytes"
    );
    assert_eq!(
        opened.load(Ordering::SeqCst),
        2,
        "extra bytes: connection dropped"
    );
    let res = get("/health").await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(
        opened.load(Ordering::SeqCst),
        3,
        "a close-delimited body ends the connection"
    );
    let res = get("/health").await.unwrap();
    assert_eq!(res.text().await.unwrap(), "last");
    assert_eq!(
        opened.load(Ordering::SeqCst),
        4,
        "a refused response ends the connection"
    );
}

/// RFC 9112 §6.3: Transfer-Encoding wins over Content-Length, and the received length must be
/// removed before the response is relayed: left in, it would cut the body at 5 bytes (or end
/// the connection silently). The same on both upstream paths: a bodiless GET (the exchange) and
/// a POST with a body (hyper's client). Neither connection is used again.
#[tokio::test]
async fn a_length_beside_chunked_is_dropped_on_both_upstream_paths() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let (addr, opened, _) = raw_upstream(|_| {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n\
            5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        (answer.to_vec(), false)
    })
    .await;
    let proxy = proxy_for(&issuer, &format!("http://{addr}")).await;
    let http = client();
    for (i, post) in [false, false, true, true].into_iter().enumerate() {
        let res = if post {
            http.post(proxy.url("/health")).body("data").send().await
        } else {
            http.get(proxy.url("/health")).send().await
        }
        .unwrap();
        let what = if post {
            "POST with a body"
        } else {
            "bodiless GET"
        };
        assert_eq!(res.status(), 200, "{what}");
        assert!(
            res.headers().get("content-length").is_none(),
            "{what}: stale length relayed: {:?}",
            res.headers()
        );
        assert_eq!(res.text().await.unwrap(), "hello world", "{what}");
        assert_eq!(
            opened.load(Ordering::SeqCst),
            i + 1,
            "{what}: the connection is not reused"
        );
    }
}

/// Interim (1xx) responses count against the response head's size limit like the head they
/// precede: an upstream answering with endless `100 Continue`s gets a 502 once they pass it,
/// instead of being read until the response timeout. A few of them are fine.
#[tokio::test]
async fn interim_responses_count_against_the_head_limit() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let (addr, _, _) = raw_upstream(|n| {
        // 3000 interim heads: 75 000 bytes, over the 64 KiB a response head may take.
        let mut answer = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(if n == 0 { 3000 } else { 10 });
        answer.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        (answer, true)
    })
    .await;
    let proxy = proxy_for(&issuer, &format!("http://{addr}")).await;
    let http = client();
    let res = http.get(proxy.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 502, "endless interim responses");
    let res = http.get(proxy.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200, "a few interim responses");
    assert_eq!(res.text().await.unwrap(), "ok");
}

/// A Transfer-Encoding whose final coding is not chunked delimits the body by the close (RFC
/// 9112 §6.3), its Content-Length removed; Transfer-Encoding in an HTTP/1.0 response is faulty
/// framing (§6.1), a 502. The same on both upstream paths.
#[tokio::test]
async fn other_transfer_codings_are_framed_alike_on_both_upstream_paths() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let (addr, opened, _) = raw_upstream(|n| {
        let answer: &[u8] = if n % 2 == 0 {
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: identity\r\n\r\nuntil close"
        } else {
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        };
        (answer.to_vec(), true)
    })
    .await;
    let proxy = proxy_for(&issuer, &format!("http://{addr}")).await;
    let http = client();
    for post in [false, true] {
        let send = || {
            if post {
                http.post(proxy.url("/health")).body("data").send()
            } else {
                http.get(proxy.url("/health")).send()
            }
        };
        let what = if post {
            "POST with a body"
        } else {
            "bodiless GET"
        };
        let res = send().await.unwrap();
        assert_eq!(res.status(), 200, "{what}");
        assert!(res.headers().get("content-length").is_none(), "{what}");
        assert_eq!(res.text().await.unwrap(), "until close", "{what}");
        assert_eq!(send().await.unwrap().status(), 502, "{what}: HTTP/1.0");
    }
    assert_eq!(opened.load(Ordering::SeqCst), 4);
}

/// A 101 to a request that asked no upgrade is a 502 on both upstream paths, never relayed.
#[tokio::test]
async fn an_unsolicited_101_is_a_502_on_both_upstream_paths() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let (addr, _, _) = raw_upstream(|_| {
        let answer = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
        (answer.to_vec(), true)
    })
    .await;
    let proxy = proxy_for(&issuer, &format!("http://{addr}")).await;
    for request in [
        &b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
        b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndata",
    ] {
        let res = parse_raw(&exchange(proxy.addr, request).await);
        let what = String::from_utf8_lossy(&request[..4]);
        assert_eq!(res.status, 502, "{what}: {}", res.head);
        assert_eq!(res.body, r#"{"message":"Bad Gateway"}"#, "{what}");
    }
}

#[tokio::test]
async fn connections_the_upstream_closed_while_idle_are_not_reused() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let (addr, opened, _) = counting_upstream(true).await;
    let proxy = proxy_for(&issuer, &format!("http://{addr}")).await;
    let http = client();
    for i in 0..10 {
        let res = http.get(proxy.url("/health")).send().await.unwrap();
        assert_eq!(res.status(), 200, "request {i}");
        assert_eq!(res.text().await.unwrap(), "ok");
        // Idle long enough for the close to arrive: a pooled connection found closed is
        // replaced, never used for a request that then fails.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(opened.load(Ordering::SeqCst), 10);
}

/// The same for requests with a body, which hyper's client sends: its connections wait in the
/// same pool as the bodiless exchange's.
#[tokio::test]
async fn connections_the_upstream_closed_while_idle_are_not_reused_for_bodies_either() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    let (addr, opened, _) = counting_upstream(true).await;
    let proxy = proxy_for(&issuer, &format!("http://{addr}")).await;
    let http = client();
    for i in 0..6 {
        let res = if i % 2 == 0 {
            http.post(proxy.url("/health")).body("data").send().await
        } else {
            http.get(proxy.url("/health")).send().await
        }
        .unwrap();
        assert_eq!(res.status(), 200, "request {i}");
        assert_eq!(res.text().await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(opened.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_connection_closed_under_a_request_retries_it_only_if_idempotent() {
    let issuer = jwtgate::dev::issuer::DevIssuer::start("us-east-1_TEST")
        .await
        .unwrap();
    // The upstream's keep-alive timeout fires just as the second request on a connection
    // arrives: it closes without a byte of answer.
    let (addr, opened, _) = raw_upstream(|n| match n % 2 {
        0 => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        _ => (Vec::new(), true),
    })
    .await;
    let proxy = proxy_for(&issuer, &format!("http://{addr}")).await;
    let http = client();
    for i in 0..3 {
        let res = http.get(proxy.url("/health")).send().await.unwrap();
        assert_eq!(
            res.status(),
            200,
            "GET {i} is sent again on a new connection"
        );
        assert_eq!(res.text().await.unwrap(), "ok");
    }
    let res = http.post(proxy.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 502, "a POST is never replayed");
    assert_eq!(opened.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn shutdown_reports_not_ready_and_keeps_serving_for_the_delay() {
    let env = Env::start_with("", "[server]\nshutdown_delay = \"2s\"\n").await;
    let admin = env.proxy.admin_url("/readyz");
    assert_eq!(reqwest::get(&admin).await.unwrap().status(), 200);
    let url = env.proxy.url("/orders/1");
    let token = env.access("alice");
    let stopping = tokio::spawn(async move { env.proxy.stop().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = reqwest::get(&admin).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready once shutdown starts");
    assert!(ready.text().await.unwrap().contains("shutting down"));
    let res = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 200, "still serving during the shutdown delay");
    stopping.await.unwrap();
    assert!(
        client().get(&url).send().await.is_err(),
        "closed after the delay and the drain"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. The HTTP/1.1 fast path, and the move to hyper

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_a_body_moves_the_connection_to_hyper() {
    let env = Env::start().await;
    let mut stream = TcpStream::connect(env.proxy.addr).await.unwrap();
    // Everything in one write: the fast path serves the first three from its buffer, hands
    // the POST (a body) and every byte after it to hyper, which serves the rest.
    let requests = concat!(
        "GET /health?i=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /orders/1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "HEAD /health?i=2 HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /health?i=3 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "GET /health?i=4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    stream.write_all(requests.as_bytes()).await.unwrap();
    let (answer, ended) = read_until_closed(&mut stream).await;
    assert!(ended, "Connection: close was honoured");
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "401", "200", "200", "200"], "{answer}");
    let lower = answer.to_ascii_lowercase();
    let unauthorized = &lower[lower.find("http/1.1 401").unwrap()..];
    let head = &unauthorized[..unauthorized.find("\r\n\r\n").unwrap()];
    assert!(head.contains("\r\ndate: "), "own answers are dated: {head}");
    assert!(head.contains("\r\ncontent-length: "), "{head}");
    assert!(head.contains("\r\nwww-authenticate: bearer"), "{head}");
    let seen: Vec<(String, String, u64)> = env
        .upstream
        .received()
        .into_iter()
        .map(|r| (r.method, r.uri, r.body_bytes))
        .collect();
    let expected = [
        ("GET", "/health?i=1", 0),
        ("HEAD", "/health?i=2", 0),
        ("POST", "/health?i=3", 5),
        ("GET", "/health?i=4", 0),
    ];
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    for ((method, uri, body), (m, u, b)) in seen.iter().zip(expected) {
        assert_eq!((method.as_str(), uri.as_str(), *body), (m, u, b));
    }
}

#[tokio::test]
async fn a_request_cut_short_in_its_head_is_not_forwarded_and_the_connection_closes() {
    let env = Env::start().await;
    let mut stream = TcpStream::connect(env.proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /health HTTP/1.1\r\nHo")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let (answer, ended) = read_until_closed(&mut stream).await;
    assert!(ended);
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{answer}");
    assert_eq!(env.upstream.hits(), 1);
}

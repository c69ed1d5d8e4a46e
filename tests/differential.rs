//! The HTTP/1.1 fast path and hyper's server must treat a request the same way. Each generated
//! request head is sent twice over raw TCP: (a) on a fresh connection, where the fast path
//! serves it, and (b) after a request with a 1-byte body on the same connection, which moves
//! that connection to hyper. The client must get the same status, and a raw-socket upstream
//! the same request bytes (after masking what is new per request), or neither a request.
//!
//! `cargo test --test differential survey -- --ignored --nocapture` runs more cases and prints
//! every difference instead of stopping at the first.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use jwtgate::dev::issuer::DevIssuer;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Safety bound for anything that waits on the network.
const SAFETY: Duration = Duration::from_secs(5);
/// The request that moves connection (b) to hyper; the upstream's copy of it is not compared.
const PRIME: &[u8] = b"POST /public/prime HTTP/1.1\r\nHost: prime\r\nContent-Length: 1\r\n\r\nx";
const PRIME_LINE: &[u8] = b"POST /public/prime ";

// ---------------------------------------------------------------------------------------------
// The upstream: a raw socket that records every request's exact bytes, in order.

struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of the first field `name` in a head (case-insensitive name).
fn field<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|b| *b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// Reads one message (head and body) from `buf` + `stream`; `None` when the stream ends first.
/// A body is framed by `Content-Length` or chunked; `bodiless` says there is none whatever the
/// head (a response to HEAD).
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    bodiless: bool,
) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 8192];
    let mut fill = async |buf: &mut Vec<u8>| match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    };
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(buf).await {
            return None;
        }
    };
    let head = &buf[..head_end];
    let chunked = field(head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().windows(7).any(|w| w == b"chunked"));
    let end = if bodiless {
        head_end
    } else if chunked {
        loop {
            if let Some(i) = find(&buf[head_end..], b"0\r\n\r\n") {
                break head_end + i + 5;
            }
            if !fill(buf).await {
                return None;
            }
        }
    } else {
        let length: usize = field(head, "content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            if !fill(buf).await {
                return None;
            }
        }
        head_end + length
    };
    Some(buf.drain(..end).collect())
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(request) = read_message(&mut stream, &mut buf, false).await {
                        log.lock().unwrap().push(request);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawUpstream { addr, seen, task }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Requests recorded since `mark`, without the priming request.
    fn since(&self, mark: usize) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap()[mark..]
            .iter()
            .filter(|r| !r.starts_with(PRIME_LINE))
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Generated request heads

#[derive(Debug, Clone)]
struct Head {
    method: String,
    target: String,
    /// `None`: no `Host`; otherwise one field per value.
    host: Vec<Vec<u8>>,
    fields: Vec<(String, Vec<u8>)>,
    connection: Option<String>,
    content_length_zero: bool,
    /// 0: none, 1: a valid access token, 2: garbage bearer, 3: another scheme.
    auth: u8,
}

impl Head {
    fn render(&self, token: &str) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        let mut put = |name: &str, value: &[u8]| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        for host in &self.host {
            put("Host", host);
        }
        match self.auth {
            1 => put("Authorization", format!("Bearer {token}").as_bytes()),
            2 => put("Authorization", b"Bearer not.a.token"),
            3 => put("Authorization", b"Basic YWxpY2U6ZGVtbw=="),
            _ => {}
        }
        for (name, value) in &self.fields {
            put(name, value);
        }
        if let Some(c) = &self.connection {
            put("Connection", c.as_bytes());
        }
        if self.content_length_zero {
            put("Content-Length", b"0");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("GET"),
        2 => Just("HEAD"),
        2 => Just("POST"),
        1 => Just("PUT"),
        1 => Just("DELETE"),
        1 => Just("OPTIONS"),
        1 => Just("PATCH"),
        1 => Just("TRACE"),
        1 => Just("CONNECT"),
        1 => Just("PROPFIND"),
        1 => Just("M-SEARCH"),
        1 => Just("get"),
        1 => Just("X_CUSTOM"),
    ]
    .prop_map(str::to_owned)
}

fn target() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        3 => Just("public"),
        3 => Just("api"),
        1 => Just("x"),
        1 => Just("."),
        1 => Just(".."),
        1 => Just("%2e%2e"),
        1 => Just("%2E"),
        1 => Just(""),
        1 => Just("a;b=c"),
        1 => Just(";"),
        1 => Just("x%20y"),
        1 => Just("%41%7e"),
        1 => Just("%2F"),
        1 => Just("%5c"),
        1 => Just("%zz"),
        1 => Just("%C3%A9"),
        1 => Just("~u"),
    ];
    let query = prop_oneof![
        4 => Just(""),
        1 => Just("?a=1"),
        1 => Just("?a=1&b=%2F&c=../d"),
        1 => Just("?"),
        1 => Just("?x=%zz;y"),
    ];
    let path = (prop::collection::vec(segment, 1..5), query)
        .prop_map(|(segments, query)| format!("/{}{query}", segments.join("/")));
    prop_oneof![
        12 => path.clone(),
        1 => path.clone().prop_map(|p| format!("http://example.com{p}")),
        1 => path.prop_map(|p| format!("//{}", p.trim_start_matches('/'))),
        1 => Just("*".to_owned()),
    ]
}

fn host() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let one = prop_oneof![
        6 => Just(&b"example.com"[..]),
        2 => Just(&b"example.com:8080"[..]),
        1 => Just(&b""[..]),
        1 => Just(&b"[::1]:80"[..]),
        1 => Just(&b"user@example.com"[..]),
        1 => Just(&b"ex_ample.com"[..]),
        1 => Just(&b"EXAMPLE.COM."[..]),
        1 => Just(&b"a b"[..]),
        1 => Just(&b"h\xe9st"[..]),
    ]
    .prop_map(<[u8]>::to_vec);
    prop_oneof![
        6 => one.clone().prop_map(|h| vec![h]),
        2 => Just(Vec::new()),
        1 => (one.clone(), one).prop_map(|(a, b)| vec![a, b]),
    ]
}

fn fields() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        Just("X-Custom"),
        Just("x_custom"),
        Just("X-User-Sub"),
        Just("x-user-sub"),
        Just("X_User_Sub"),
        Just("x-USER-sub"),
        Just("Accept"),
        Just("User-Agent"),
        Just("Cookie"),
        Just("X-Request-Id"),
        Just("traceparent"),
        Just("X-Forwarded-For"),
        Just("X-Forwarded-Host"),
        Just("Forwarded"),
        Just("Via"),
        Just("Keep-Alive"),
        Just("Proxy-Connection"),
        Just("TE"),
        Just("Upgrade"),
    ]
    .prop_map(str::to_owned);
    let value = prop_oneof![
        3 => Just(&b"1"[..]),
        1 => Just(&b"a b, c"[..]),
        1 => Just(&b""[..]),
        1 => Just(&b"caf\xe9"[..]),
        1 => Just(&b"x\x80\xffy"[..]),
        1 => Just(&b"a\tb"[..]),
        1 => Just(&b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"[..]),
        1 => Just(&b"trailers"[..]),
        1 => Just(&b"203.0.113.7"[..]),
    ]
    .prop_map(<[u8]>::to_vec);
    prop::collection::vec((name, value), 0..6)
}

fn connection() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some("keep-alive")),
        1 => Just(Some("close")),
        1 => Just(Some("X-Custom")),
        1 => Just(Some("keep-alive, X-User-Sub")),
        1 => Just(Some("x_custom, Keep-Alive")),
        1 => Just(Some("Upgrade")),
    ]
    .prop_map(|c| c.map(str::to_owned))
}

fn head() -> impl Strategy<Value = Head> {
    (
        method(),
        target(),
        host(),
        fields(),
        connection(),
        any::<bool>(),
        0u8..4,
    )
        .prop_map(
            |(method, target, host, fields, connection, content_length_zero, auth)| Head {
                method,
                target,
                host,
                fields,
                connection,
                content_length_zero,
                auth,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Sending a head both ways

/// What one way produced: the client's status (0 when the connection closed without an
/// answer) and the upstream's requests, masked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    upstream: Vec<String>,
}

struct Rig {
    _issuer: DevIssuer,
    upstream: RawUpstream,
    proxy: TestProxy,
    token: String,
}

impl Rig {
    async fn start() -> Rig {
        let issuer = DevIssuer::start("us-east-1_DIFF").await.unwrap();
        let upstream = RawUpstream::start().await;
        let toml = format!(
            r#"
[upstream]
url = "http://{upstream}"
response_timeout = "5s"

[[issuers]]
name = "dev"
issuer = "{iss}"
jwks_uri = "{jwks}"
audiences = ["{DEMO_CLIENT_ID}"]

[[routes]]
name = "public"
path = "/public/**"
auth = "none"

[[routes]]
name = "api"
path = "/api/**"

[headers]
claims = {{ "x-user-sub" = "sub" }}
"#,
            upstream = upstream.addr,
            iss = issuer.issuer(),
            jwks = issuer.jwks_uri(),
        );
        let proxy = TestProxy::start_ready(&toml).await;
        let token = issuer.sign(&issuer.access_token(user("alice").unwrap()));
        Rig {
            _issuer: issuer,
            upstream,
            proxy,
            token,
        }
    }

    /// Sends `request` on a fresh connection, after `PRIME` when `via_hyper`.
    async fn send(&self, request: &[u8], head_request: bool, via_hyper: bool) -> Seen {
        let mark = self.upstream.count();
        let status = tokio::time::timeout(SAFETY, async {
            let mut stream = TcpStream::connect(self.proxy.addr).await.unwrap();
            let mut buf = Vec::new();
            if via_hyper {
                stream.write_all(PRIME).await.unwrap();
                let primed = read_message(&mut stream, &mut buf, false).await;
                assert!(
                    primed
                        .as_deref()
                        .is_some_and(|r| r.starts_with(b"HTTP/1.1 200 ")),
                    "priming request: {:?}",
                    primed.map(|r| String::from_utf8_lossy(&r).into_owned())
                );
            }
            if stream.write_all(request).await.is_err() {
                return 0;
            }
            match read_message(&mut stream, &mut buf, head_request).await {
                Some(answer) => std::str::from_utf8(&answer[9..12])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1),
                None => 0,
            }
        })
        .await
        .unwrap_or(2);
        let upstream = self
            .upstream
            .since(mark)
            .iter()
            .map(|r| mask(r, request))
            .collect();
        Seen { status, upstream }
    }

    async fn both(&self, head: &Head) -> (Vec<u8>, Seen, Seen) {
        let request = head.render(&self.token);
        let head_request = head.method == "HEAD";
        let fast = self.send(&request, head_request, false).await;
        let hyper = self.send(&request, head_request, true).await;
        (request, fast, hyper)
    }
}

/// The upstream request as text, with `traceparent` (a new span each time) and a generated
/// `x-request-id` (one the client did not send) masked.
fn mask(upstream: &[u8], sent: &[u8]) -> String {
    let sent_id = field(sent, "x-request-id");
    let mut out = Vec::with_capacity(upstream.len());
    for line in upstream.split_inclusive(|b| *b == b'\n') {
        let name_end = line.iter().position(|b| *b == b':');
        let name = name_end.map(|i| &line[..i]);
        let masked = match name {
            Some(n) if n.eq_ignore_ascii_case(b"traceparent") => true,
            Some(n) if n.eq_ignore_ascii_case(b"x-request-id") => {
                let value = line[name_end.unwrap_or(0) + 1..].trim_ascii();
                sent_id != Some(value)
            }
            _ => false,
        };
        if masked {
            out.extend_from_slice(&line[..name_end.unwrap_or(0)]);
            out.extend_from_slice(b": <masked>\r\n");
        } else {
            out.extend_from_slice(line);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        // A failing case is shrunk and reported; it is not written next to the sources.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        max_shrink_iters: 256,
        ..ProptestConfig::with_cases(cases)
    }
}

#[test]
fn fast_path_and_hyper_forward_the_same_request() {
    let rt = runtime();
    let rig = rt.block_on(Rig::start());
    let mut runner = TestRunner::new(config(96));
    let (forwarded, refused) = (Cell::new(0), Cell::new(0));
    let result = runner.run(&head(), |head| {
        let (request, fast, hyper) = rt.block_on(rig.both(&head));
        let counter = if fast.upstream.is_empty() {
            &refused
        } else {
            &forwarded
        };
        counter.set(counter.get() + 1);
        prop_assert_eq!(
            &fast,
            &hyper,
            "request:\n{}",
            String::from_utf8_lossy(&request)
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Not vacuous: some cases reached the upstream and some did not.
    assert!(
        forwarded.get() > 0 && refused.get() > 0,
        "forwarded {}, refused {}",
        forwarded.get(),
        refused.get()
    );
}

/// Runs many cases and prints each distinct difference (by the pair of statuses and whether
/// the upstream saw a request), with one example request and both upstream dumps.
#[test]
#[ignore = "a survey for people: run with --ignored --nocapture"]
fn survey() {
    let cases: u32 = std::env::var("SURVEY_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let rt = runtime();
    let rig = rt.block_on(Rig::start());
    let mut runner = TestRunner::new(config(cases));
    let mut classes: BTreeMap<String, (usize, Vec<u8>, Seen, Seen)> = BTreeMap::new();
    let mut outcomes: BTreeMap<(u16, usize), usize> = BTreeMap::new();
    for _ in 0..cases {
        let head = head().new_tree(&mut runner).unwrap().current();
        let (request, fast, hyper) = rt.block_on(rig.both(&head));
        *outcomes
            .entry((fast.status, fast.upstream.len()))
            .or_default() += 1;
        if fast != hyper {
            let class = format!(
                "fast {} ({} upstream) / hyper {} ({} upstream){}",
                fast.status,
                fast.upstream.len(),
                hyper.status,
                hyper.upstream.len(),
                if fast.upstream.len() == hyper.upstream.len() && fast.status == hyper.status {
                    " bytes differ"
                } else {
                    ""
                }
            );
            classes
                .entry(class)
                .or_insert_with(|| (0, request, fast, hyper))
                .0 += 1;
        }
    }
    println!("{cases} cases; (status, requests forwarded) on the fast path: {outcomes:?}");
    println!("{} classes of difference", classes.len());
    for (class, (count, request, fast, hyper)) in &classes {
        println!(
            "== {class}: {count} case(s); e.g.\n{}",
            String::from_utf8_lossy(request)
        );
        println!("-- fast path upstream: {:#?}", fast.upstream);
        println!("-- hyper upstream: {:#?}\n", hyper.upstream);
    }
}

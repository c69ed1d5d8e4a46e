//! W3C trace context to the upstream, sampling, and OTLP/HTTP span export: JSON to a receiver
//! in this test, protobuf to a receiver decoding it with the official Python bindings
//! (`tests/interop/otlp_receiver.py`, in the venv `scripts/test` prepares), and a collector that
//! never answers. Environment variables are passed as maps (`compile_with_env`), never set on
//! the test process.

#![allow(clippy::unwrap_used)] // tests panic on purpose
#![cfg(feature = "otlp")]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use jwtgate::compile::compile_with_env;
use jwtgate::dev::echo::EchoUpstream;
use jwtgate::{Listeners, Shared, serve};
use serde_json::Value;
use std::io::BufRead as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Polls `f` until it returns `Some`, at most 10 s (a bound against hanging, not a timing
/// assertion).
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(t) = f() {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

/// An OTLP/HTTP JSON receiver: records every `POST /v1/traces` body.
async fn json_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let log = Arc::clone(&received);
    // The server task runs detached until the test's runtime ends.
    jwtgate::dev::spawn_server(
        listener,
        move |req: http::Request<hyper::body::Incoming>| {
            let log = Arc::clone(&log);
            async move {
                let ok = req.method() == http::Method::POST && req.uri().path() == "/v1/traces";
                let json = req.headers()["content-type"] == "application/json";
                let body = req.into_body().collect().await.unwrap().to_bytes();
                if ok && json {
                    log.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                }
                jwtgate::dev::json_response(http::StatusCode::OK, &serde_json::json!({}))
            }
        },
    );
    (url, received)
}

fn json_spans(received: &Mutex<Vec<Value>>) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|batch| {
            batch["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// `tests/interop/otlp_receiver.py`: decodes protobuf with the official Python bindings and
/// prints one JSON line per export request. Killed (by its PID) on drop.
struct PythonReceiver {
    child: std::process::Child,
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

impl PythonReceiver {
    async fn start() -> PythonReceiver {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("JWTGATE_TEST_PYTHON").map_or_else(
            || root.join("target/interop-venv/bin/python"),
            PathBuf::from,
        );
        let mut child = std::process::Command::new(&python)
            .arg(root.join("tests/interop/otlp_receiver.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} with opentelemetry-proto is needed (scripts/test installs it): {e}",
                    python.display()
                )
            });
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let log = Arc::clone(&received);
        let (port_tx, port_rx) = oneshot::channel::<Option<u64>>();
        // A thread reads the receiver's output: the port first, then one line per request.
        std::thread::spawn(move || {
            let port = lines
                .next()
                .and_then(Result::ok)
                .and_then(|l| serde_json::from_str::<Value>(&l).ok())
                .and_then(|v| v["port"].as_u64());
            let _ = port_tx.send(port);
            for line in lines.map_while(Result::ok) {
                log.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        let port = port_rx.await.unwrap().unwrap_or_else(|| {
            panic!("the receiver did not start: is opentelemetry-proto installed in the venv?")
        });
        PythonReceiver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            received,
        }
    }

    /// Every export request so far.
    fn requests(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits for `n` spans; returns them with their resource attributes.
    async fn spans(&self, n: usize) -> Vec<(Value, Value)> {
        eventually(&format!("{n} spans at the Python receiver"), || {
            let spans: Vec<(Value, Value)> = self
                .requests()
                .iter()
                .inspect(|r| assert!(r.get("error").is_none(), "undecodable: {r}"))
                .flat_map(|r| r["scope_spans"].as_array().cloned().unwrap_or_default())
                .flat_map(|ss| {
                    let resource = ss["resource"].clone();
                    ss["spans"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |s| (s, resource.clone()))
                })
                .collect();
            (spans.len() >= n).then_some(spans)
        })
        .await
    }
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy with anonymous routes in front of an echo upstream, its config compiled with the
/// environment `vars`.
struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    upstream: EchoUpstream,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Proxy {
    async fn start(extra: &str, vars: &[(&str, &str)]) -> Proxy {
        let upstream = EchoUpstream::start().await.unwrap();
        let toml = format!(
            "[upstream]\nurl = \"{}\"\n\n[[routes]]\nname = \"open\"\npath = \"/open/*\"\nauth = \"none\"\n\n{extra}",
            upstream.url()
        );
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut config = compile_with_env("otlp.toml", &toml, |k| vars.get(k).cloned()).unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.listen = proxy.local_addr().unwrap();
        config.admin_listen = admin.local_addr().unwrap();
        let addr = config.listen;
        let shared = Shared::new(config).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(
            Arc::clone(&shared),
            Listeners {
                proxy,
                admin,
                tls: None,
            },
            async {
                let _ = stopped.await;
            },
        ));
        Proxy {
            shared,
            addr,
            upstream,
            http: client(),
            _stop: stop,
        }
    }

    /// GETs `path`, with a client `traceparent` if given; returns the status and the
    /// `traceparent` the upstream received.
    async fn get(&self, path: &str, traceparent: Option<&str>) -> (u16, String) {
        let mut req = self.http.get(format!("http://{}{path}", self.addr));
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        let status = req.send().await.unwrap().status().as_u16();
        let upstream = self.upstream.last().unwrap().headers["traceparent"]
            .to_str()
            .unwrap()
            .to_owned();
        (status, upstream)
    }

    fn accepted(&self) -> u64 {
        self.shared.exporter.load().as_ref().unwrap().accepted()
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

#[tokio::test]
async fn traces_continue_upstream_and_spans_reach_a_json_collector() {
    let (collector, received) = json_receiver().await;
    let env = Env::start_with(
        "",
        &format!(
            "[tracing]\notlp_endpoint = \"{collector}\"\nprotocol = \"http/json\"\nservice_name = \"gateway-test\"\n"
        ),
    )
    .await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let res = env
        .http
        .get(env.proxy.url("/orders/1"))
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .bearer_auth(env.access("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let upstream = env.upstream.last().unwrap().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = upstream.split('-').collect();
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], client_trace, "same trace");
    assert_ne!(
        parts[2], client_span,
        "jwtgate's span is the upstream's parent"
    );
    assert_eq!(parts[3], "01");
    let jwtgate_span = parts[2].to_owned();

    // Without a traceparent, a trace starts at jwtgate.
    env.get("/orders/2", Some(&env.access("bob"))).await;
    let fresh = env.upstream.last().unwrap().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(fresh.split('-').nth(1).unwrap(), client_trace);
    env.get("/orders/3", None).await;

    let spans = eventually("3 spans at the JSON receiver", || {
        let spans = json_spans(&received);
        (spans.len() >= 3).then_some(spans)
    })
    .await;
    assert_eq!(spans.len(), 3, "{spans:?}");
    let batch = received.lock().unwrap()[0].clone();
    assert_eq!(
        batch["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
        "gateway-test"
    );
    let first = spans.iter().find(|s| s["traceId"] == client_trace).unwrap();
    assert_eq!(first["spanId"], jwtgate_span.as_str());
    assert_eq!(first["parentSpanId"], client_span);
    assert_eq!(first["name"], "GET /orders/**");
    assert_eq!(first["kind"], 2);
    let attrs = first["attributes"].as_array().unwrap();
    let attr = |k: &str| attrs.iter().find(|a| a["key"] == k).unwrap()["value"].clone();
    assert_eq!(attr("jwtgate.decision")["stringValue"], "allow");
    assert_eq!(attr("jwtgate.route")["stringValue"], "orders");
    assert_eq!(attr("http.response.status_code")["intValue"], "200");
    let refused = spans
        .iter()
        .find(|s| {
            s["attributes"].as_array().unwrap().iter().any(|a| {
                a["key"] == "jwtgate.reason" && a["value"]["stringValue"] == "missing_token"
            })
        })
        .unwrap();
    assert!(refused.get("parentSpanId").is_none());
}

#[tokio::test]
async fn protobuf_spans_decode_with_the_official_bindings_and_carry_http_semconv() {
    let collector = PythonReceiver::start().await;
    let env = Env::start_with(
        "",
        &format!(
            "[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"gateway-proto\"\n",
            collector.url
        ),
    )
    .await;
    let client_trace = "0af7651916cd43dd8448eb211c80319c";
    let client_span = "b7ad6b7169203331";
    let res = env
        .http
        .get(env.proxy.url("/orders/%61b/../42?token=secret"))
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .header("tracestate", "vendor=1")
        .header("user-agent", "semconv-test/1.0")
        .bearer_auth(env.access("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(env.get("/orders/7", None).await.status(), 401);
    assert_eq!(env.get("/nowhere", None).await.status(), 404);

    let spans = collector.spans(3).await;
    let request = &collector.requests()[0];
    assert_eq!(request["path"], "/v1/traces");
    assert_eq!(request["headers"]["content-type"], "application/x-protobuf");
    let (ok, resource) = spans
        .iter()
        .find(|(s, _)| s["trace_id"] == client_trace)
        .unwrap();
    assert_eq!(resource["service.name"], "gateway-proto");
    assert_eq!(ok["parent_span_id"], client_span);
    assert_eq!(ok["trace_state"], "vendor=1");
    assert_eq!(ok["name"], "GET /orders/**");
    assert_eq!(ok["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(ok["flags"], 0x301, "sampled, remote parent");
    assert!(ok["end_time_unix_nano"].as_u64() >= ok["start_time_unix_nano"].as_u64());
    assert_eq!(attr(ok, "http.request.method"), "GET");
    assert_eq!(attr(ok, "http.response.status_code"), 200);
    assert_eq!(attr(ok, "url.path"), "/orders/42", "normalised, no query");
    assert_eq!(attr(ok, "url.scheme"), "http");
    assert_eq!(attr(ok, "server.address"), "127.0.0.1");
    assert_eq!(
        attr(ok, "server.port"),
        u64::from(env.proxy.addr.port()),
        "from Host"
    );
    assert_eq!(attr(ok, "client.address"), "127.0.0.1");
    assert_eq!(attr(ok, "user_agent.original"), "semconv-test/1.0");
    assert_eq!(attr(ok, "http.route"), "/orders/**");
    assert_eq!(attr(ok, "network.protocol.version"), "1.1");
    assert_eq!(attr(ok, "jwtgate.route"), "orders");
    assert_eq!(attr(ok, "jwtgate.decision"), "allow");
    assert!(attr(ok, "error.type").is_null());
    assert_eq!(ok["status"]["code"], 0);
    assert!(!ok.to_string().contains("secret"), "never the query");

    let (refused, _) = spans
        .iter()
        .find(|(s, _)| s["attributes"]["http.response.status_code"] == 401)
        .unwrap();
    assert_eq!(attr(refused, "error.type"), "missing_token");
    assert_eq!(attr(refused, "jwtgate.reason"), "missing_token");
    assert_eq!(attr(refused, "jwtgate.decision"), "deny");
    assert_eq!(refused["parent_span_id"], "");
    let (unmatched, _) = spans
        .iter()
        .find(|(s, _)| s["attributes"]["http.response.status_code"] == 404)
        .unwrap();
    assert_eq!(unmatched["name"], "GET", "no route, no http.route");
    assert!(attr(unmatched, "http.route").is_null());
    assert_eq!(attr(unmatched, "jwtgate.route"), "_unmatched");
}

#[tokio::test]
async fn the_environment_configures_export_and_its_headers_reach_the_collector() {
    let collector = PythonReceiver::start().await;
    let proxy = Proxy::start(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20s3cret,x-tenant=acme",
            ),
            ("OTEL_SERVICE_NAME", "from-env"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test,team=a%2Cb",
            ),
        ],
    )
    .await;
    assert_eq!(proxy.get("/open/x", None).await.0, 200);
    let spans = collector.spans(1).await;
    let headers = &collector.requests()[0]["headers"];
    assert_eq!(headers["authorization"], "Bearer s3cret");
    assert_eq!(headers["x-tenant"], "acme");
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let (span, resource) = &spans[0];
    assert_eq!(resource["service.name"], "from-env");
    assert_eq!(resource["deployment.environment"], "test");
    assert_eq!(resource["team"], "a,b");
    assert_eq!(span["name"], "GET /open/*");
}

#[tokio::test]
async fn always_off_exports_nothing_and_sends_unsampled_upstream() {
    let (collector, received) = json_receiver().await;
    let proxy = Proxy::start(
        "",
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &format!("{collector}/v1/traces"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
    )
    .await;
    let (status, upstream) = proxy.get("/open/a", None).await;
    assert_eq!(status, 200);
    assert!(upstream.ends_with("-00"), "{upstream}");
    let sampled_client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, upstream) = proxy.get("/open/b", Some(sampled_client)).await;
    assert!(upstream.ends_with("-00"), "always_off ignores the client");
    // The span is handed over before the response is sent: none was.
    assert_eq!(proxy.accepted(), 0);
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn parent_based_sampling_follows_the_client_flag() {
    let (collector, received) = json_receiver().await;
    let proxy = Proxy::start(
        &format!("[tracing]\notlp_endpoint = \"{collector}\"\nprotocol = \"http/json\"\n"),
        &[],
    )
    .await;
    let unsampled = "00-11111111111111111111111111111111-00f067aa0ba902b7-00";
    let sampled = "00-22222222222222222222222222222222-00f067aa0ba902b7-01";
    let (_, upstream) = proxy.get("/open/a", Some(unsampled)).await;
    assert!(upstream.ends_with("-00"), "{upstream}");
    let (_, upstream) = proxy.get("/open/b", Some(sampled)).await;
    assert!(upstream.ends_with("-01"), "{upstream}");
    // A new trace (no client decision): parentbased_always_on samples it.
    let (_, upstream) = proxy.get("/open/c", None).await;
    assert!(upstream.ends_with("-01"), "{upstream}");
    assert_eq!(proxy.accepted(), 2);
    let spans = eventually("2 spans", || {
        let spans = json_spans(&received);
        (spans.len() >= 2).then_some(spans)
    })
    .await;
    assert!(
        spans
            .iter()
            .all(|s| s["traceId"] != "11111111111111111111111111111111")
    );
    assert!(
        spans
            .iter()
            .any(|s| s["traceId"] == "22222222222222222222222222222222")
    );
}

#[tokio::test]
async fn the_ratio_sampler_decides_from_the_trace_id_and_overrides_the_client() {
    let (collector, _received) = json_receiver().await;
    let proxy = Proxy::start(
        "[tracing]\nsampler = \"traceidratio\"\nsampler_ratio = 0.5\n",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)],
    )
    .await;
    // Low 8 bytes below 2^63: in the sampled half; above: not, whatever the client said.
    let low = "00-ffffffffffffffff0000000000000001-00f067aa0ba902b7-00";
    let high = "00-0000000000000000ff00000000000001-00f067aa0ba902b7-01";
    for _ in 0..3 {
        assert!(proxy.get("/open/a", Some(low)).await.1.ends_with("-01"));
        assert!(proxy.get("/open/a", Some(high)).await.1.ends_with("-00"));
    }
    assert_eq!(proxy.accepted(), 3);
}

#[tokio::test]
async fn a_collector_that_never_answers_never_slows_requests() {
    // Accepts connections and holds them open without reading or answering.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&connections);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let proxy = Proxy::start(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
            // One span per export request, which then waits (up to 10 minutes) for an answer;
            // two more fit in the queue, every later one is dropped.
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "600000"),
        ],
    )
    .await;
    assert_eq!(proxy.get("/open/first", None).await.0, 200);
    eventually("the export request reaches the silent collector", || {
        (connections.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    for i in 0..50 {
        assert_eq!(proxy.get(&format!("/open/{i}"), None).await.0, 200);
    }
    let exporter = proxy.shared.exporter.load_full().unwrap();
    assert!(exporter.accepted() <= 3, "{}", exporter.accepted());
    assert!(exporter.dropped() >= 48, "{}", exporter.dropped());
}

#[tokio::test]
async fn a_reload_that_changes_export_settings_starts_a_new_exporter() {
    let proxy = Proxy::start("[tracing]\notlp_endpoint = \"http://127.0.0.1:9\"\n", &[]).await;
    let first = proxy.shared.exporter.load_full().unwrap();
    assert_eq!(first.settings().url, "http://127.0.0.1:9/v1/traces");
    let reload = |toml: &str| {
        let text = format!(
            "[upstream]\nurl = \"{}\"\n[[routes]]\npath = \"/**\"\nauth = \"none\"\n{toml}",
            proxy.upstream.url()
        );
        let config = compile_with_env("otlp.toml", &text, |_| None).unwrap();
        proxy.shared.install(config).unwrap();
    };
    reload("[tracing]\notlp_endpoint = \"http://127.0.0.1:9\"\nsampler = \"always_off\"\n");
    let same = proxy.shared.exporter.load_full().unwrap();
    assert!(
        Arc::ptr_eq(&first, &same),
        "same export settings, same exporter"
    );
    reload("[tracing]\notlp_endpoint = \"http://127.0.0.1:10\"\n");
    let second = proxy.shared.exporter.load_full().unwrap();
    assert_eq!(second.settings().url, "http://127.0.0.1:10/v1/traces");
    reload("");
    assert!(proxy.shared.exporter.load().is_none());
}

#[tokio::test]
async fn shutdown_sends_the_queued_spans_without_waiting_for_the_schedule() {
    let (collector, received) = json_receiver().await;
    let proxy = Proxy::start(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            // Batches would wait an hour.
            ("OTEL_BSP_SCHEDULE_DELAY", "3600000"),
        ],
    )
    .await;
    for path in ["/open/a", "/open/b"] {
        assert_eq!(proxy.get(path, None).await.0, 200);
    }
    let exporter = proxy.shared.exporter.load_full().unwrap();
    assert!(received.lock().unwrap().is_empty());
    exporter.shutdown(Duration::from_secs(30)).await;
    assert_eq!(json_spans(&received).len(), 2);
}

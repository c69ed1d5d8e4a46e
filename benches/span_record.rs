//! What recording one request's span costs on the request path, jwtgate's way and the
//! OpenTelemetry SDK's way, for the same request and the same attributes:
//!
//! - `jwtgate`: parse `traceparent` and sample, write the upstream `traceparent`, take the
//!   request's facts, find the route's pattern, queue a `SpanRecord` (attributes are named and
//!   encoded later, by the export task).
//! - `jwtgate_unsampled`: the same request under `always_off` (and what every request costs
//!   when export is off).
//! - `sdk`: `opentelemetry_sdk` 0.33 with its `BatchSpanProcessor` (a no-op exporter): extract
//!   the context, start a SERVER span with the HTTP semantic-convention attributes (which must
//!   be built on the request path), inject `traceparent`, end the span.
//!
//! `cargo bench --bench span_record` prints the median wall time per span over rounds of 4,000
//! spans (each round's exporter is fresh, so its queue never fills). For instruction counts,
//! `SPAN_BENCH=jwtgate SPAN_BENCH_ITERS=4000 valgrind --tool=callgrind
//! --toggle-collect='*record_*' target/release/deps/span_record-…` counts only the recording
//! functions; twice the iterations, minus once, over 4,000 gives the per-span count.
//! `cargo test --benches` runs each once.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Request};
use jwtgate::routes::{PathOptions, Pattern, Router};
use jwtgate::trace::{
    ExportSettings, Exporter, Protocol, Ratio, RequestFacts, Sampler, SamplerKind, SpanRecord,
    TraceContext,
};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

const ROUND: usize = 4000;

fn request() -> Request<()> {
    Request::builder()
        .method(Method::GET)
        .uri("/orders/1234/items?page=2")
        .header("host", "api.example.com")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1.0")
        .header("accept", "application/json")
        .header("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("x-request-id", "3f2a9c1e-bench")
        .body(())
        .unwrap()
}

fn routes() -> (Router<Arc<str>>, Arc<str>) {
    let mut router = Router::new();
    let mut matched = None;
    for (i, path) in [
        "/health",
        "/admin/**",
        "/users/*",
        "/me",
        "/public/**",
        "/orders/**",
    ]
    .iter()
    .enumerate()
    {
        let name: Arc<str> = Arc::from(format!("route{i}"));
        if *path == "/orders/**" {
            matched = Some(Arc::clone(&name));
        }
        router.push(
            Pattern::parse(path, PathOptions::default()).unwrap(),
            None,
            name,
        );
    }
    (router, matched.unwrap())
}

struct Jwtgate {
    req: Request<()>,
    routes: Router<Arc<str>>,
    route: Arc<str>,
    peer: SocketAddr,
    request_id: HeaderValue,
}

/// The request path's share of tracing in `proxy::handle`, nothing else.
#[inline(never)]
fn record_jwtgate(j: &Jwtgate, sampler: &Sampler, exporter: &Exporter) {
    let context = TraceContext::from_headers(j.req.headers(), sampler);
    let facts = RequestFacts::capture(true, &context, &j.req);
    black_box(context.traceparent());
    if let Some(request) = facts {
        let route_pattern = j
            .routes
            .iter()
            .find(|(_, _, r)| Arc::ptr_eq(r, &j.route))
            .map(|(pattern, _, _)| Box::from(pattern.as_str()));
        exporter.export(SpanRecord {
            context,
            end: request.end(),
            request,
            method: j.req.method().clone(),
            status: 200,
            route: Arc::clone(&j.route),
            route_pattern,
            upstream: None,
            decision: "allow",
            reason: "",
            scheme: "http",
            peer: j.peer,
            peer_trusted: false,
            request_id: j.request_id.clone(),
        });
    }
}

fn exporter() -> Exporter {
    Exporter::start(&ExportSettings {
        url: "http://127.0.0.1:9/v1/traces".into(),
        protocol: Protocol::HttpProtobuf,
        headers: Vec::new(),
        resource: vec![("service.name".into(), "bench".into())],
        max_queue: ROUND * 2,
        max_batch: 512,
        schedule_delay: Duration::from_secs(3600),
        timeout: Duration::from_secs(1),
    })
    .unwrap()
}

#[derive(Debug)]
struct NoExport;

impl SpanExporter for NoExport {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Upstream(Option<HeaderValue>);

impl Injector for Upstream {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = HeaderValue::try_from(value).ok();
        }
    }
}

fn provider() -> SdkTracerProvider {
    let processor = BatchSpanProcessor::builder(NoExport)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(ROUND * 2)
                .with_scheduled_delay(Duration::from_secs(3600))
                .build(),
        )
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build()
}

/// The same span through the SDK: every attribute is made on the request path.
#[inline(never)]
fn record_sdk(j: &Jwtgate, tracer: &SdkTracer, propagator: &TraceContextPropagator) {
    let parent = propagator.extract(&Headers(j.req.headers()));
    let start = SystemTime::now();
    let headers = j.req.headers();
    let pattern = j
        .routes
        .iter()
        .find(|(_, _, r)| Arc::ptr_eq(r, &j.route))
        .map(|(pattern, _, _)| pattern.as_str().to_owned())
        .unwrap_or_default();
    let method = j.req.method().as_str().to_owned();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new(
            "url.path",
            jwtgate::routes::normalize(j.req.uri().path(), PathOptions::default())
                .unwrap_or_default(),
        ),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("client.address", j.peer.ip().to_string()),
        KeyValue::new("network.peer.address", j.peer.ip().to_string()),
        KeyValue::new("network.peer.port", i64::from(j.peer.port())),
        KeyValue::new("network.protocol.version", "1.1"),
        KeyValue::new("http.route", pattern.clone()),
        KeyValue::new("jwtgate.route", j.route.to_string()),
        KeyValue::new(
            "jwtgate.request_id",
            j.request_id.to_str().unwrap_or_default().to_owned(),
        ),
    ];
    if let Some(host) = headers.get("host").and_then(|v| v.to_str().ok()) {
        attributes.push(KeyValue::new("server.address", host.to_owned()));
    }
    if let Some(ua) = headers.get("user-agent").and_then(|v| v.to_str().ok()) {
        attributes.push(KeyValue::new("user_agent.original", ua.to_owned()));
    }
    let span = tracer
        .span_builder(format!("{method} {pattern}"))
        .with_kind(SpanKind::Server)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);
    let mut upstream = Upstream(None);
    propagator.inject_context(&cx, &mut upstream);
    black_box(upstream.0);
    // The response is in.
    let span = cx.span();
    span.set_attribute(KeyValue::new("http.response.status_code", 200));
    span.set_attribute(KeyValue::new("jwtgate.decision", "allow"));
    span.set_status(Status::Unset);
    span.end();
}

/// Nanoseconds per span over one round, or nothing printed (the counting and smoke modes).
fn round(which: &str, iters: usize) -> f64 {
    let (routes, route) = routes();
    let j = Jwtgate {
        req: request(),
        routes,
        route,
        peer: "192.0.2.7:53211".parse().unwrap(),
        request_id: HeaderValue::from_static("3f2a9c1e-bench"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let elapsed = match which {
        "jwtgate" | "jwtgate_unsampled" => {
            let exporter = exporter();
            let sampler = Sampler {
                kind: if which == "jwtgate" {
                    SamplerKind::ParentBasedAlwaysOn
                } else {
                    SamplerKind::AlwaysOff
                },
                ratio: Ratio::ONE,
            };
            let t = Instant::now();
            for _ in 0..iters {
                record_jwtgate(&j, &sampler, &exporter);
            }
            let elapsed = t.elapsed();
            assert_eq!(exporter.dropped(), 0);
            elapsed
        }
        _ => {
            let provider = provider();
            let tracer = provider.tracer("jwtgate");
            let propagator = TraceContextPropagator::new();
            let t = Instant::now();
            for _ in 0..iters {
                record_sdk(&j, &tracer, &propagator);
            }
            let elapsed = t.elapsed();
            let _ = provider.shutdown();
            elapsed
        }
    };
    #[allow(clippy::cast_precision_loss)]
    let per_span = elapsed.as_nanos() as f64 / iters as f64;
    per_span
}

fn main() {
    const WHICH: [&str; 3] = ["jwtgate", "jwtgate_unsampled", "sdk"];
    if let Ok(which) = std::env::var("SPAN_BENCH") {
        let iters = std::env::var("SPAN_BENCH_ITERS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(ROUND);
        round(&which, iters);
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        for which in WHICH {
            round(which, 10);
        }
        return;
    }
    for which in WHICH {
        let mut samples: Vec<f64> = (0..30).map(|_| round(which, ROUND)).collect();
        samples.sort_by(f64::total_cmp);
        println!(
            "{which:>18}: {:>7.0} ns per span (median of 30 rounds of {ROUND}; min {:.0})",
            samples[samples.len() / 2],
            samples[0]
        );
    }
}

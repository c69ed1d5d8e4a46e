//! W3C Trace Context, sampling and OpenTelemetry export.
//!
//! Every forwarded request carries a `traceparent` naming jwtgate's own span as the parent: the
//! client's trace is continued when it sent a valid `traceparent`, a new one starts otherwise.
//! The sampler (OpenTelemetry's six standard ones) decides the `sampled` flag sent upstream.
//! With the `otlp` cargo feature (on by default) and an endpoint from `[tracing]` or the
//! `OTEL_EXPORTER_OTLP_*` environment variables, each sampled request's SERVER span is exported
//! to an OpenTelemetry collector over OTLP/HTTP (protobuf or JSON), in batches, from a bounded
//! queue: a slow or absent collector costs dropped spans, never request latency.
//!
//! The request path does as little as it can: the sampling decision is a comparison on the trace
//! id, an unsampled request allocates nothing, and a sampled one moves a [`SpanRecord`] (cheap
//! clones of what the request already holds) into the queue. Attributes are named, the path
//! normalised and the batch encoded by the export task.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

/// The trace position of one request.
#[derive(Debug, Clone, Copy)]
pub struct TraceContext {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// jwtgate's span for this request.
    pub span_id: [u8; 8],
    /// The client's span, when it sent a `traceparent`.
    pub parent_id: Option<[u8; 8]>,
    /// The sampler's decision: sent upstream as the `sampled` flag; only sampled spans are
    /// exported.
    pub sampled: bool,
}

/// Lowercase hex to bytes; `None` for any other character, or for all zeros (an invalid id).
fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    (out != [0u8; N]).then_some(out)
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

#[cfg_attr(not(any(test, feature = "otlp")), allow(dead_code))]
fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    write_hex(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Random, never all-zero ids. Every bit is random (a v4 UUID fixes six of them, two of which
/// fall in the bytes the ratio sampler reads).
fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    loop {
        rand::fill(&mut out[..]);
        if out != [0u8; N] {
            return out;
        }
    }
}

impl TraceContext {
    /// Continues the client's trace (a valid version-00 `traceparent`) or starts a new one, and
    /// asks `sampler` whether this request is sampled.
    pub fn from_headers(headers: &HeaderMap, sampler: &Sampler) -> Self {
        let parsed = headers.get(TRACEPARENT).and_then(|v| {
            // Version 00 is exactly `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
            let v = v.as_bytes().trim_ascii();
            if v.len() != 55 || !v.starts_with(b"00-") || v[35] != b'-' || v[52] != b'-' {
                return None;
            }
            let flags = hex::<1>(&v[53..]).map_or(0, |f| f[0]);
            Some((hex::<16>(&v[3..35])?, hex::<8>(&v[36..52])?, flags & 1 == 1))
        });
        match parsed {
            Some((trace_id, parent, parent_sampled)) => TraceContext {
                trace_id,
                span_id: random(),
                parent_id: Some(parent),
                sampled: sampler.should_sample(&trace_id, Some(parent_sampled)),
            },
            None => {
                let trace_id = random();
                TraceContext {
                    trace_id,
                    span_id: random(),
                    parent_id: None,
                    sampled: sampler.should_sample(&trace_id, None),
                }
            }
        }
    }

    /// The `traceparent` for the upstream: same trace, jwtgate's span as parent.
    pub fn traceparent(&self) -> HeaderValue {
        // `00-<32 hex>-<16 hex>-0<0|1>`, written in place: this runs on every request.
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&self.trace_id, &mut out[3..35]);
        write_hex(&self.span_id, &mut out[36..52]);
        out[54] = if self.sampled { b'1' } else { b'0' };
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| {
            HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00")
        })
    }
}

/// OpenTelemetry's standard samplers (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// A share of traces, decided from the trace id (the client's flag is ignored).
    TraceIdRatio,
    /// The client's decision when it sent one; every new trace otherwise (the default).
    ParentBasedAlwaysOn,
    /// The client's decision when it sent one; no new trace otherwise.
    ParentBasedAlwaysOff,
    /// The client's decision when it sent one; a share of new traces otherwise.
    ParentBasedTraceIdRatio,
}

impl SamplerKind {
    /// Every sampler with its `OTEL_TRACES_SAMPLER` name.
    pub const ALL: [(&'static str, SamplerKind); 6] = [
        ("always_on", SamplerKind::AlwaysOn),
        ("always_off", SamplerKind::AlwaysOff),
        ("traceidratio", SamplerKind::TraceIdRatio),
        ("parentbased_always_on", SamplerKind::ParentBasedAlwaysOn),
        ("parentbased_always_off", SamplerKind::ParentBasedAlwaysOff),
        (
            "parentbased_traceidratio",
            SamplerKind::ParentBasedTraceIdRatio,
        ),
    ];

    /// The kind named `name` (`always_on`, …), if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, kind)| *kind)
    }

    /// The `OTEL_TRACES_SAMPLER` name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("parentbased_always_on", |(n, _)| n)
    }
}

/// A sampling ratio with its threshold on the trace id: a trace is sampled when the last 8
/// bytes of its id, read as a big-endian `u64`, are below `ratio × 2^64` (every trace at 1.0).
/// This is the rule of OpenTelemetry's Go and Java SDKs, so a trace passing through them and
/// jwtgate with the same ratio gets the same decision everywhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    ratio: f64,
    bound: u64,
}

impl Ratio {
    /// Every trace.
    pub const ONE: Ratio = Ratio {
        ratio: 1.0,
        bound: u64::MAX,
    };

    /// `ratio` if it is a number from 0 to 1.
    pub fn new(ratio: f64) -> Option<Ratio> {
        if !(0.0..=1.0).contains(&ratio) {
            return None;
        }
        // 2^64 as f64 is exact; the cast saturates, and 1.0 is handled by `samples`.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let bound = (ratio * 18_446_744_073_709_551_616.0) as u64;
        Some(Ratio { ratio, bound })
    }

    /// The ratio, 0 to 1.
    pub fn get(self) -> f64 {
        self.ratio
    }

    /// Whether the trace `trace_id` is in the sampled share.
    pub fn samples(self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        self.ratio >= 1.0 || u64::from_be_bytes(low) < self.bound
    }
}

/// A sampler: its kind, and the ratio the ratio kinds use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Which sampler.
    pub kind: SamplerKind,
    /// Used by `traceidratio` and `parentbased_traceidratio`.
    pub ratio: Ratio,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            kind: SamplerKind::ParentBasedAlwaysOn,
            ratio: Ratio::ONE,
        }
    }
}

impl Sampler {
    /// The decision for a request in trace `trace_id`; `parent_sampled` is the client's
    /// `sampled` flag when it sent a valid `traceparent`.
    #[inline]
    pub fn should_sample(&self, trace_id: &[u8; 16], parent_sampled: Option<bool>) -> bool {
        match (self.kind, parent_sampled) {
            (SamplerKind::AlwaysOn, _) => true,
            (SamplerKind::AlwaysOff, _) => false,
            (SamplerKind::TraceIdRatio, _) => self.ratio.samples(trace_id),
            (
                SamplerKind::ParentBasedAlwaysOn
                | SamplerKind::ParentBasedAlwaysOff
                | SamplerKind::ParentBasedTraceIdRatio,
                Some(parent),
            ) => parent,
            (SamplerKind::ParentBasedAlwaysOn, None) => true,
            (SamplerKind::ParentBasedAlwaysOff, None) => false,
            (SamplerKind::ParentBasedTraceIdRatio, None) => self.ratio.samples(trace_id),
        }
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SamplerKind::TraceIdRatio | SamplerKind::ParentBasedTraceIdRatio => {
                write!(f, "{} {}", self.kind.as_str(), self.ratio.get())
            }
            kind => f.write_str(kind.as_str()),
        }
    }
}

/// The OTLP/HTTP encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`: binary protobuf (the OpenTelemetry default).
    HttpProtobuf,
    /// `http/json`: the protocol's JSON encoding.
    HttpJson,
}

impl Protocol {
    /// Every supported protocol with its `OTEL_EXPORTER_OTLP_PROTOCOL` name.
    pub const ALL: [(&'static str, Protocol); 2] = [
        ("http/protobuf", Protocol::HttpProtobuf),
        ("http/json", Protocol::HttpJson),
    ];

    /// The protocol named `name`, if supported.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// The `OTEL_EXPORTER_OTLP_PROTOCOL` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }

    /// The request's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "application/x-protobuf",
            Protocol::HttpJson => "application/json",
        }
    }
}

/// Default most spans waiting for export (`OTEL_BSP_MAX_QUEUE_SIZE`).
pub const DEFAULT_MAX_QUEUE: usize = 8192;
/// Default most spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
pub const DEFAULT_MAX_BATCH: usize = 512;
/// Default longest a span waits before its batch is sent (`OTEL_BSP_SCHEDULE_DELAY`).
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_secs(1);
/// Default timeout of one export request (`OTEL_EXPORTER_OTLP_TIMEOUT`).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how spans are exported: `[tracing]` and the environment, merged.
#[derive(Clone, PartialEq)]
pub struct ExportSettings {
    /// The full traces URL (`http://collector:4318/v1/traces`).
    pub url: String,
    /// The encoding.
    pub protocol: Protocol,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`): often credentials, never logged.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Resource attributes, `service.name` first.
    pub resource: Vec<(String, String)>,
    /// Most spans waiting; more are dropped.
    pub max_queue: usize,
    /// Most spans per export request.
    pub max_batch: usize,
    /// Longest a span waits before its batch is sent.
    pub schedule_delay: Duration,
    /// Timeout of one export request.
    pub timeout: Duration,
}

impl fmt::Debug for ExportSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are credentials: names only.
        let headers: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ExportSettings")
            .field("url", &self.url)
            .field("protocol", &self.protocol)
            .field("headers", &headers)
            .field("resource", &self.resource)
            .field("max_queue", &self.max_queue)
            .field("max_batch", &self.max_batch)
            .field("schedule_delay", &self.schedule_delay)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What the OpenTelemetry environment variables say. Each field is `None` (or empty) when its
/// variable is unset, empty or unusable; every unusable value adds a warning (the spec's rule:
/// warn and ignore it).
#[derive(Debug, Default)]
pub struct OtelEnv {
    /// `OTEL_SDK_DISABLED=true`: no export, whatever else is set.
    pub sdk_disabled: bool,
    /// The full traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended.
    pub traces_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, percent-decoded, in order.
    pub resource_attributes: Vec<(String, String)>,
    /// `OTEL_TRACES_SAMPLER`.
    pub sampler: Option<SamplerKind>,
    /// `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler_ratio: Option<Ratio>,
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub protocol: Option<Protocol>,
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` if set, else `OTEL_EXPORTER_OTLP_HEADERS`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`.
    pub max_queue: Option<usize>,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
    pub max_batch: Option<usize>,
    /// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds).
    pub schedule_delay: Option<Duration>,
    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds).
    pub timeout: Option<Duration>,
    /// One line per value ignored (never a header value).
    pub warnings: Vec<String>,
}

/// Decodes `%XX` escapes; `None` for a malformed one.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes.get(i + 1..i + 3)?;
            if !pair.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A `key1=value1,key2=value2` list (W3C Baggage without properties, as the spec says), values
/// percent-decoded. Bad entries are skipped with a warning that names the entry by key or
/// position, never by value.
fn key_values(var: &str, text: &str, warnings: &mut Vec<String>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((key, value)) = entry.split_once('=') else {
            warnings.push(format!("{var}: entry {} is not key=value; skipped", i + 1));
            continue;
        };
        let key = key.trim();
        if key.is_empty() {
            warnings.push(format!("{var}: entry {} has no key; skipped", i + 1));
            continue;
        }
        match percent_decode(value.trim()) {
            Some(value) => out.push((key.to_owned(), value)),
            None => warnings.push(format!(
                "{var}: the value of {key:?} has a bad %-escape; skipped"
            )),
        }
    }
    out
}

/// Reads the OpenTelemetry environment variables through `lookup` (the process environment in
/// production, a map in tests). An empty value counts as unset, as the spec says.
pub fn read_env(lookup: impl Fn(&str) -> Option<String>) -> OtelEnv {
    let get = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut env = OtelEnv::default();
    let w = &mut env.warnings;

    if let Some(v) = get("OTEL_SDK_DISABLED") {
        match v.to_ascii_lowercase().as_str() {
            "true" => env.sdk_disabled = true,
            "false" => {}
            _ => w.push(format!(
                "OTEL_SDK_DISABLED={v:?} is not true or false; ignored"
            )),
        }
    }

    let http_url = |var: &str, url: &str, w: &mut Vec<String>| {
        let ok = url::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            w.push(format!("{var}={url:?} is not an http(s) URL; ignored"));
        }
        ok
    };
    env.traces_endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .filter(|url| http_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url, w))
        .or_else(|| {
            get("OTEL_EXPORTER_OTLP_ENDPOINT")
                .filter(|url| http_url("OTEL_EXPORTER_OTLP_ENDPOINT", url, w))
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        });

    env.service_name = get("OTEL_SERVICE_NAME");
    if let Some(text) = get("OTEL_RESOURCE_ATTRIBUTES") {
        for (key, value) in key_values("OTEL_RESOURCE_ATTRIBUTES", &text, w) {
            match String::from_utf8(value) {
                Ok(value) => env.resource_attributes.push((key, value)),
                Err(_) => w.push(format!(
                    "OTEL_RESOURCE_ATTRIBUTES: the value of {key:?} is not UTF-8; skipped"
                )),
            }
        }
    }

    if let Some(name) = get("OTEL_TRACES_SAMPLER") {
        env.sampler = SamplerKind::parse(&name.to_ascii_lowercase());
        if env.sampler.is_none() {
            let names: Vec<&str> = SamplerKind::ALL.iter().map(|(n, _)| *n).collect();
            w.push(format!(
                "OTEL_TRACES_SAMPLER={name:?} is not one of {}; using parentbased_always_on",
                names.join(", ")
            ));
        }
    }
    if let Some(arg) = get("OTEL_TRACES_SAMPLER_ARG") {
        env.sampler_ratio = arg.parse::<f64>().ok().and_then(Ratio::new);
        if env.sampler_ratio.is_none() {
            w.push(format!(
                "OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio from 0 to 1; using 1.0"
            ));
        }
    }

    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(name) = get(var) {
            match Protocol::parse(&name) {
                Some(p) => {
                    env.protocol = Some(p);
                    break;
                }
                None => w.push(format!(
                    "{var}={name:?}: jwtgate exports over http/protobuf or http/json; ignored"
                )),
            }
        }
    }

    let headers_var = [
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ]
    .into_iter()
    .find_map(|var| get(var).map(|text| (var, text)));
    if let Some((var, text)) = headers_var {
        for (key, value) in key_values(var, &text, w) {
            let name = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes());
            let value = HeaderValue::from_bytes(&value);
            match (name, value) {
                (Ok(name), Ok(mut value)) => {
                    value.set_sensitive(true);
                    env.headers.push((name, value));
                }
                _ => w.push(format!(
                    "{var}: {key:?} is not a valid header name and value; skipped"
                )),
            }
        }
    }

    let mut number = |var: &str, min: u64| -> Option<u64> {
        let text = get(var)?;
        let n = text.parse::<u64>().ok().filter(|n| *n >= min);
        if n.is_none() {
            w.push(format!(
                "{var}={text:?} is not a whole number of at least {min}; ignored"
            ));
        }
        n
    };
    env.max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE", 1).and_then(|n| usize::try_from(n).ok());
    env.max_batch =
        number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1).and_then(|n| usize::try_from(n).ok());
    env.schedule_delay = number("OTEL_BSP_SCHEDULE_DELAY", 1).map(Duration::from_millis);
    env.timeout = number("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 1)
        .or_else(|| number("OTEL_EXPORTER_OTLP_TIMEOUT", 1))
        .map(Duration::from_millis);
    env
}

/// What a sampled request's span needs from the request itself, taken before the pipeline
/// consumes it. Clones of values the request already holds (reference counts, no copies).
#[derive(Debug)]
#[cfg_attr(not(feature = "otlp"), allow(dead_code))] // read by the exporter
pub struct RequestFacts {
    start: SystemTime,
    started: Instant,
    uri: Uri,
    version: Version,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
}

impl RequestFacts {
    /// The facts of `req` when its span will be exported (`exporting` and sampled); `None`,
    /// without touching the request, otherwise.
    #[inline]
    pub fn capture<B>(exporting: bool, trace: &TraceContext, req: &Request<B>) -> Option<Self> {
        if !(exporting && trace.sampled) {
            return None;
        }
        let headers = req.headers();
        Some(RequestFacts {
            start: SystemTime::now(),
            started: Instant::now(),
            uri: req.uri().clone(),
            version: req.version(),
            host: headers.get(http::header::HOST).cloned(),
            user_agent: headers.get(http::header::USER_AGENT).cloned(),
            forwarded_for: headers.get(X_FORWARDED_FOR).cloned(),
            tracestate: headers.get(TRACESTATE).cloned(),
        })
    }

    /// When the request ended: its start plus the monotonic time since.
    pub fn end(&self) -> SystemTime {
        self.start + self.started.elapsed()
    }
}

/// One finished, sampled request, as queued for export.
#[derive(Debug)]
pub struct SpanRecord {
    /// Where it sits in the trace.
    pub context: TraceContext,
    /// What the request said.
    pub request: RequestFacts,
    /// When it ended.
    pub end: SystemTime,
    /// HTTP method (the request's, before any CORS preflight mapping).
    pub method: Method,
    /// Response status.
    pub status: u16,
    /// jwtgate's route name (`jwtgate.route`).
    pub route: Arc<str>,
    /// The route's path pattern (`http.route`), when a configured route matched.
    pub route_pattern: Option<Box<str>>,
    /// The configured name of the upstream the request was sent to (`jwtgate.upstream`), when
    /// one was contacted.
    pub upstream: Option<Arc<str>>,
    /// `allow`, `deny` or `error` (`jwtgate.decision`).
    pub decision: &'static str,
    /// Refusal reason, if any (`jwtgate.reason`, and `error.type`).
    pub reason: &'static str,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The connection's peer.
    pub peer: SocketAddr,
    /// The peer is a trusted proxy: its `X-Forwarded-For` names the client.
    pub peer_trusted: bool,
    /// `x-request-id`.
    pub request_id: HeaderValue,
}

#[cfg(feature = "otlp")]
pub use otlp::Exporter;

#[cfg(feature = "otlp")]
mod otlp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message as _;
    use serde_json::{Value, json};
    use tokio::sync::{Notify, mpsc};
    use tokio::task::JoinHandle;

    use super::{ExportSettings, Protocol, SpanRecord, to_hex};

    /// `SpanKind.SPAN_KIND_SERVER`.
    const KIND_SERVER: i32 = 2;
    /// `Status.STATUS_CODE_ERROR`.
    const STATUS_ERROR: i32 = 2;
    /// `SpanFlags`: the context's is-remote bit is known.
    const FLAG_HAS_IS_REMOTE: u32 = 0x100;
    /// `SpanFlags`: the parent is remote (the client).
    const FLAG_IS_REMOTE: u32 = 0x200;

    /// Sends spans to an OTLP/HTTP collector from a background task.
    pub struct Exporter {
        queue: mpsc::Sender<SpanRecord>,
        settings: ExportSettings,
        accepted: AtomicU64,
        dropped: Arc<AtomicU64>,
        stop: Arc<Notify>,
        task: Mutex<Option<JoinHandle<()>>>,
    }

    impl std::fmt::Debug for Exporter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Exporter")
                .field("settings", &self.settings)
                .finish_non_exhaustive()
        }
    }

    impl Exporter {
        /// Starts the export task. Must run inside a tokio runtime. The task ends, after
        /// sending what it holds, when the exporter is dropped.
        pub fn start(settings: &ExportSettings) -> Result<Self, String> {
            let http = reqwest::Client::builder()
                .timeout(settings.timeout)
                .build()
                .map_err(|e| e.to_string())?;
            let mut headers = http::HeaderMap::new();
            for (name, value) in &settings.headers {
                headers.append(name.clone(), value.clone());
            }
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(settings.protocol.content_type()),
            );
            let (queue, spans) = mpsc::channel::<SpanRecord>(settings.max_queue.max(1));
            let dropped = Arc::new(AtomicU64::new(0));
            let task = Task {
                http,
                headers,
                url: settings.url.clone(),
                protocol: settings.protocol,
                resource: Resource {
                    attributes: settings
                        .resource
                        .iter()
                        .map(|(k, v)| kv(k, Any::StringValue(v.clone())))
                        .collect(),
                    ..Default::default()
                },
                max_batch: settings.max_batch.max(1),
                delay: settings.schedule_delay,
                dropped: Arc::clone(&dropped),
            };
            let stop = Arc::new(Notify::new());
            let task = tokio::spawn(task.run(spans, Arc::clone(&stop)));
            Ok(Exporter {
                queue,
                settings: settings.clone(),
                accepted: AtomicU64::new(0),
                dropped,
                stop,
                task: Mutex::new(Some(task)),
            })
        }

        /// Sends what is queued and stops the export task, waiting for it at most `within`
        /// (at shutdown: spans queued after this are not sent).
        pub async fn shutdown(&self, within: Duration) {
            self.stop.notify_one();
            let task = self.task.lock().ok().and_then(|mut task| task.take());
            if let Some(task) = task {
                if tokio::time::timeout(within, task).await.is_err() {
                    tracing::warn!("OTLP export did not finish in {within:?}; spans lost");
                }
            }
        }

        /// Queues a span; drops it when the queue is full (counted, and reported in the log by
        /// the export task).
        pub fn export(&self, span: SpanRecord) {
            if self.queue.try_send(span).is_ok() {
                self.accepted.fetch_add(1, Ordering::Relaxed);
            } else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }

        /// The settings it was started with.
        pub fn settings(&self) -> &ExportSettings {
            &self.settings
        }

        /// Spans queued so far.
        pub fn accepted(&self) -> u64 {
            self.accepted.load(Ordering::Relaxed)
        }

        /// Spans dropped so far because the queue was full.
        pub fn dropped(&self) -> u64 {
            self.dropped.load(Ordering::Relaxed)
        }
    }

    struct Task {
        http: reqwest::Client,
        headers: http::HeaderMap,
        url: String,
        protocol: Protocol,
        resource: Resource,
        max_batch: usize,
        delay: Duration,
        dropped: Arc<AtomicU64>,
    }

    impl Task {
        async fn run(self, mut spans: mpsc::Receiver<SpanRecord>, stop: Arc<Notify>) {
            let mut batch = Vec::with_capacity(self.max_batch.min(4096));
            let mut reported = 0;
            let mut stopping = false;
            loop {
                let deadline = tokio::time::sleep(self.delay);
                tokio::pin!(deadline);
                let mut open = true;
                while batch.len() < self.max_batch {
                    tokio::select! {
                        span = spans.recv() => match span {
                            Some(span) => batch.push(span),
                            None => { open = false; break; }
                        },
                        // Shutdown: take no more spans, send those queued without waiting.
                        () = stop.notified(), if !stopping => {
                            stopping = true;
                            spans.close();
                        }
                        () = &mut deadline, if !stopping => break,
                    }
                }
                let dropped = self.dropped.load(Ordering::Relaxed);
                if dropped != reported {
                    tracing::warn!(
                        dropped = dropped - reported,
                        "OTLP export queue full; spans dropped"
                    );
                    reported = dropped;
                }
                if !batch.is_empty() {
                    self.send(&batch).await;
                    batch.clear();
                }
                if !open {
                    return;
                }
            }
        }

        async fn send(&self, batch: &[SpanRecord]) {
            let request = encode(&self.resource, batch);
            let body = match self.protocol {
                Protocol::HttpProtobuf => request.encode_to_vec(),
                Protocol::HttpJson => json_request(&request).to_string().into_bytes(),
            };
            let sent = self
                .http
                .post(&self.url)
                .headers(self.headers.clone())
                .body(body)
                .send()
                .await;
            match sent {
                Ok(res) if res.status().is_success() => {}
                Ok(res) => tracing::warn!(
                    status = res.status().as_u16(),
                    spans = batch.len(),
                    "OTLP export refused"
                ),
                Err(e) => tracing::warn!(spans = batch.len(), "OTLP export failed: {e}"),
            }
        }
    }

    fn kv(key: &str, value: Any) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn text(key: &str, value: impl Into<String>) -> KeyValue {
        kv(key, Any::StringValue(value.into()))
    }

    fn nanos(t: SystemTime) -> u64 {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The methods HTTP semantic conventions name; any other is `_OTHER`.
    const KNOWN_METHODS: [&str; 10] = [
        "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE",
    ];

    /// `host[:port]` of a `Host` value or authority: the name (brackets kept off an IPv6
    /// literal) and the port, if any.
    pub(super) fn split_host(authority: &str) -> (&str, Option<u16>) {
        if let Some(rest) = authority.strip_prefix('[') {
            return match rest.split_once(']') {
                Some((ip, tail)) => (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
                None => (authority, None),
            };
        }
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
            _ => (authority, None),
        }
    }

    /// The SERVER span of one request, with HTTP semantic-convention attributes.
    pub(super) fn span(s: &SpanRecord) -> Span {
        let r = &s.request;
        let method = s.method.as_str();
        let known = KNOWN_METHODS.contains(&method);
        let mut attributes = Vec::with_capacity(20);
        attributes.push(text(
            "http.request.method",
            if known { method } else { "_OTHER" },
        ));
        if !known {
            attributes.push(text("http.request.method_original", method));
        }
        attributes.push(kv(
            "http.response.status_code",
            Any::IntValue(i64::from(s.status)),
        ));
        // The normalised path, as routed and forwarded; never the query. A path jwtgate
        // refused as unusable has none. (Semicolons allowed here: a request refused for one
        // still gets its path recorded.)
        let options = crate::routes::PathOptions {
            semicolons: crate::routes::Semicolons::Allow,
            case_insensitive: false,
        };
        if let Ok(path) = crate::routes::normalize(r.uri.path(), options) {
            attributes.push(text("url.path", path));
        }
        attributes.push(text("url.scheme", s.scheme));
        let authority = r
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                r.host
                    .as_ref()
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        if let Some(authority) = authority {
            let (host, port) = split_host(&authority);
            if !host.is_empty() {
                attributes.push(text("server.address", host));
                if let Some(port) = port {
                    attributes.push(kv("server.port", Any::IntValue(i64::from(port))));
                }
            }
        }
        let forwarded_client = s
            .peer_trusted
            .then(|| r.forwarded_for.as_ref().and_then(|v| v.to_str().ok()))
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let peer_ip = s.peer.ip().to_string();
        attributes.push(text(
            "client.address",
            forwarded_client.map_or_else(|| peer_ip.clone(), str::to_owned),
        ));
        attributes.push(text("network.peer.address", peer_ip));
        attributes.push(kv(
            "network.peer.port",
            Any::IntValue(i64::from(s.peer.port())),
        ));
        let version = match r.version {
            http::Version::HTTP_09 => "0.9",
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_3 => "3",
            _ => "1.1",
        };
        attributes.push(text("network.protocol.version", version));
        if let Some(ua) = &r.user_agent {
            attributes.push(text(
                "user_agent.original",
                String::from_utf8_lossy(ua.as_bytes()),
            ));
        }
        if let Some(pattern) = &s.route_pattern {
            attributes.push(text("http.route", &**pattern));
        }
        let server_error = s.status >= 500;
        if !s.reason.is_empty() {
            attributes.push(text("error.type", s.reason));
        } else if server_error {
            attributes.push(text("error.type", s.status.to_string()));
        }
        attributes.push(text("jwtgate.route", &*s.route));
        if let Some(upstream) = &s.upstream {
            attributes.push(text("jwtgate.upstream", &**upstream));
        }
        attributes.push(text("jwtgate.decision", s.decision));
        if !s.reason.is_empty() {
            attributes.push(text("jwtgate.reason", s.reason));
        }
        attributes.push(text(
            "jwtgate.request_id",
            String::from_utf8_lossy(s.request_id.as_bytes()),
        ));

        let name_method = if known { method } else { "HTTP" };
        let name = match &s.route_pattern {
            Some(pattern) => format!("{name_method} {pattern}"),
            None => name_method.to_owned(),
        };
        let remote = if s.context.parent_id.is_some() {
            FLAG_IS_REMOTE
        } else {
            0
        };
        Span {
            trace_id: s.context.trace_id.to_vec(),
            span_id: s.context.span_id.to_vec(),
            trace_state: r
                .tracestate
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            parent_span_id: s.context.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            flags: u32::from(s.context.sampled) | FLAG_HAS_IS_REMOTE | remote,
            name,
            kind: KIND_SERVER,
            start_time_unix_nano: nanos(r.start),
            end_time_unix_nano: nanos(s.end),
            attributes,
            status: Some(Status {
                message: String::new(),
                code: if server_error { STATUS_ERROR } else { 0 },
            }),
            ..Default::default()
        }
    }

    /// One `ExportTraceServiceRequest` for a batch.
    pub(super) fn encode(resource: &Resource, spans: &[SpanRecord]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "jwtgate".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    spans: spans.iter().map(span).collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn json_value(value: Option<&AnyValue>) -> Value {
        match value.and_then(|v| v.value.as_ref()) {
            Some(Any::StringValue(s)) => json!({ "stringValue": s }),
            Some(Any::IntValue(i)) => json!({ "intValue": i.to_string() }),
            Some(Any::BoolValue(b)) => json!({ "boolValue": b }),
            Some(Any::DoubleValue(d)) => json!({ "doubleValue": d }),
            _ => json!({}),
        }
    }

    fn json_attributes(attributes: &[KeyValue]) -> Value {
        attributes
            .iter()
            .map(|a| json!({ "key": a.key, "value": json_value(a.value.as_ref()) }))
            .collect()
    }

    fn json_span(s: &Span) -> Value {
        let mut span = json!({
            "traceId": to_hex(&s.trace_id),
            "spanId": to_hex(&s.span_id),
            "flags": s.flags,
            "name": s.name,
            "kind": s.kind,
            "startTimeUnixNano": s.start_time_unix_nano.to_string(),
            "endTimeUnixNano": s.end_time_unix_nano.to_string(),
            "attributes": json_attributes(&s.attributes),
            "status": { "code": s.status.as_ref().map_or(0, |st| st.code) },
        });
        if !s.parent_span_id.is_empty() {
            span["parentSpanId"] = json!(to_hex(&s.parent_span_id));
        }
        if !s.trace_state.is_empty() {
            span["traceState"] = json!(s.trace_state);
        }
        span
    }

    /// The request in OTLP's JSON encoding (hex ids, 64-bit integers as strings, enums as
    /// numbers, lowerCamelCase names).
    pub(super) fn json_request(request: &ExportTraceServiceRequest) -> Value {
        let resource_spans: Vec<Value> = request
            .resource_spans
            .iter()
            .map(|rs| {
                let scope_spans: Vec<Value> = rs
                    .scope_spans
                    .iter()
                    .map(|ss| {
                        let scope = ss.scope.as_ref();
                        json!({
                            "scope": {
                                "name": scope.map(|s| s.name.as_str()).unwrap_or_default(),
                                "version": scope.map(|s| s.version.as_str()).unwrap_or_default(),
                            },
                            "spans": ss.spans.iter().map(json_span).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({
                    "resource": {
                        "attributes": json_attributes(
                            rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default()
                        ),
                    },
                    "scopeSpans": scope_spans,
                })
            })
            .collect();
        json!({ "resourceSpans": resource_spans })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with(headers: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn sampler(kind: SamplerKind, ratio: f64) -> Sampler {
        Sampler {
            kind,
            ratio: Ratio::new(ratio).unwrap(),
        }
    }

    #[test]
    fn a_valid_traceparent_is_continued_and_an_invalid_one_replaced() {
        let mut h = with(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let ctx = TraceContext::from_headers(&h, &Sampler::default());
        assert_eq!(to_hex(&ctx.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ctx.parent_id.map(|p| to_hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        let out = ctx.traceparent();
        let out = out.to_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert!(
            !out.contains("00f067aa0ba902b7"),
            "our own span is the parent upstream"
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            h.insert("traceparent", HeaderValue::from_static(bad));
            let ctx = TraceContext::from_headers(&h, &Sampler::default());
            assert!(ctx.parent_id.is_none(), "{bad}");
        }
    }

    #[test]
    fn new_trace_ids_are_random_in_every_bit_the_ratio_sampler_reads() {
        // A v4 UUID would pin the top bits of byte 8 to 0b10, and a 0.5 ratio would then
        // sample nothing.
        let (mut seen_low, mut seen_high) = (false, false);
        for _ in 0..200 {
            let ctx = TraceContext::from_headers(&HeaderMap::new(), &Sampler::default());
            match ctx.trace_id[8] >> 6 {
                0b00 | 0b01 => seen_low = true,
                _ => seen_high = true,
            }
        }
        assert!(seen_low && seen_high);
    }

    fn id(low: u64) -> [u8; 16] {
        let mut id = [0xabu8; 16];
        id[8..].copy_from_slice(&low.to_be_bytes());
        id
    }

    #[test]
    fn the_ratio_compares_the_low_eight_bytes_with_ratio_times_two_to_the_64() {
        let half = sampler(SamplerKind::TraceIdRatio, 0.5);
        assert!(half.should_sample(&id(0), None));
        assert!(half.should_sample(&id(0x7fff_ffff_ffff_ffff), None));
        assert!(!half.should_sample(&id(0x8000_0000_0000_0000), None));
        assert!(!half.should_sample(&id(u64::MAX), None));
        let all = sampler(SamplerKind::TraceIdRatio, 1.0);
        assert!(all.should_sample(&id(u64::MAX), None));
        let none = sampler(SamplerKind::TraceIdRatio, 0.0);
        assert!(!none.should_sample(&id(0), None));
        // The high bytes do not matter.
        let mut other = id(0x7fff_ffff_ffff_ffff);
        other[..8].copy_from_slice(&[0; 8]);
        assert!(half.should_sample(&other, None));
        assert!(Ratio::new(1.5).is_none() && Ratio::new(-0.1).is_none());
        assert!(Ratio::new(f64::NAN).is_none());
    }

    #[test]
    fn a_ratio_of_one_half_samples_about_half_of_many_traces_the_same_way_each_time() {
        let half = sampler(SamplerKind::TraceIdRatio, 0.5);
        let ids: Vec<[u8; 16]> = (0..20_000).map(|_| random::<16>()).collect();
        let sampled = ids.iter().filter(|id| half.should_sample(id, None)).count();
        assert!((9_000..=11_000).contains(&sampled), "{sampled} of 20000");
        for id in &ids[..1000] {
            assert_eq!(
                half.should_sample(id, None),
                half.should_sample(id, Some(false)),
                "deterministic, and traceidratio ignores the parent"
            );
        }
        // The same through the request path: a new trace's traceparent carries the decision.
        let ratio = sampler(SamplerKind::ParentBasedTraceIdRatio, 0.5);
        let flags: Vec<bool> = (0..2_000)
            .map(|_| TraceContext::from_headers(&HeaderMap::new(), &ratio))
            .map(|ctx| {
                assert_eq!(ctx.sampled, ratio.ratio.samples(&ctx.trace_id));
                ctx.traceparent().to_str().unwrap().ends_with("-01")
            })
            .collect();
        let on = flags.iter().filter(|f| **f).count();
        assert!((800..=1_200).contains(&on), "{on} of 2000");
    }

    #[test]
    fn samplers_follow_the_client_only_when_parent_based() {
        let cases = [
            (SamplerKind::AlwaysOn, [true, true, true]),
            (SamplerKind::AlwaysOff, [false, false, false]),
            (SamplerKind::ParentBasedAlwaysOn, [true, true, false]),
            (SamplerKind::ParentBasedAlwaysOff, [false, true, false]),
            // The ratio (0) decides roots only.
            (SamplerKind::ParentBasedTraceIdRatio, [false, true, false]),
            (SamplerKind::TraceIdRatio, [false, false, false]),
        ];
        for (kind, [root, parent_on, parent_off]) in cases {
            let s = sampler(kind, 0.0);
            assert_eq!(s.should_sample(&id(1), None), root, "{kind:?} root");
            assert_eq!(s.should_sample(&id(1), Some(true)), parent_on, "{kind:?}");
            assert_eq!(s.should_sample(&id(1), Some(false)), parent_off, "{kind:?}");
        }
        // And in the traceparent sent upstream.
        let off = with(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]);
        let ctx = TraceContext::from_headers(&off, &Sampler::default());
        assert!(!ctx.sampled);
        assert!(ctx.traceparent().to_str().unwrap().ends_with("-00"));
        let on = with(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let ctx = TraceContext::from_headers(&on, &sampler(SamplerKind::AlwaysOff, 1.0));
        assert!(ctx.traceparent().to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn an_unsampled_request_captures_nothing() {
        let req = Request::builder()
            .uri("/a?b")
            .header("user-agent", "t")
            .body(())
            .unwrap();
        let ctx = TraceContext::from_headers(req.headers(), &sampler(SamplerKind::AlwaysOff, 1.0));
        assert!(RequestFacts::capture(true, &ctx, &req).is_none());
        let ctx = TraceContext::from_headers(req.headers(), &Sampler::default());
        assert!(RequestFacts::capture(false, &ctx, &req).is_none());
        let facts = RequestFacts::capture(true, &ctx, &req).unwrap();
        assert_eq!(facts.user_agent.unwrap(), "t");
    }

    fn env(vars: &[(&str, &str)]) -> OtelEnv {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        read_env(|k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_means_nothing_read() {
        let e = env(&[]);
        assert!(!e.sdk_disabled);
        assert!(e.traces_endpoint.is_none() && e.service_name.is_none());
        assert!(e.sampler.is_none() && e.sampler_ratio.is_none() && e.protocol.is_none());
        assert!(e.headers.is_empty() && e.resource_attributes.is_empty());
        assert!(e.warnings.is_empty());
        // Empty values count as unset.
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_TRACES_SAMPLER", " "),
        ]);
        assert!(e.traces_endpoint.is_none() && e.sampler.is_none() && e.warnings.is_empty());
    }

    #[test]
    fn endpoints_base_gets_v1_traces_and_the_traces_endpoint_is_used_as_is() {
        let e = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]);
        assert_eq!(
            e.traces_endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        let e = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c.example/otlp/")]);
        assert_eq!(
            e.traces_endpoint.as_deref(),
            Some("https://c.example/otlp/v1/traces")
        );
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:9999/custom",
            ),
        ]);
        assert_eq!(
            e.traces_endpoint.as_deref(),
            Some("http://other:9999/custom")
        );
        let e = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
        assert!(e.traces_endpoint.is_none());
        assert!(e.warnings[0].contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
    }

    #[test]
    fn service_name_and_resource_attributes_percent_decoded_bad_entries_skipped() {
        let e = env(&[
            ("OTEL_SERVICE_NAME", "gateway"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod, team=a%20b%2Cc,broken,=x,bad=%zz,k2=v=w,",
            ),
        ]);
        assert_eq!(e.service_name.as_deref(), Some("gateway"));
        assert_eq!(
            e.resource_attributes,
            vec![
                ("deployment.environment".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "a b,c".to_owned()),
                ("k2".to_owned(), "v=w".to_owned()),
            ]
        );
        assert_eq!(e.warnings.len(), 3, "{:?}", e.warnings);
    }

    #[test]
    fn samplers_and_their_ratio() {
        for (name, kind) in SamplerKind::ALL {
            assert_eq!(env(&[("OTEL_TRACES_SAMPLER", name)]).sampler, Some(kind));
        }
        let e = env(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]);
        assert_eq!(e.sampler, Some(SamplerKind::ParentBasedTraceIdRatio));
        assert_eq!(e.sampler_ratio.map(Ratio::get), Some(0.25));
        // Unknown values are warned about and ignored, as the spec says.
        let e = env(&[
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ]);
        assert!(e.sampler.is_none() && e.sampler_ratio.is_none());
        assert_eq!(e.warnings.len(), 2);
        assert!(e.warnings[0].contains("jaeger_remote") && e.warnings[0].contains("always_on"));
    }

    #[test]
    fn protocol_traces_variable_first_grpc_refused() {
        assert_eq!(env(&[]).protocol, None);
        let e = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert_eq!(e.protocol, Some(Protocol::HttpJson));
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(e.protocol, Some(Protocol::HttpProtobuf));
        let e = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert_eq!(e.protocol, None);
        assert!(e.warnings[0].contains("grpc"));
    }

    #[test]
    fn headers_are_decoded_kept_secret_and_the_traces_variable_wins_whole() {
        let e = env(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20s3cret,x-team=a,bad name=zz-secret-zz",
        )]);
        let names: Vec<&str> = e.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["authorization", "x-team"]);
        assert_eq!(e.headers[0].1, "Bearer s3cret");
        assert!(e.headers[0].1.is_sensitive());
        assert_eq!(e.warnings.len(), 1);
        let logged = format!("{:?}", e.warnings);
        assert!(!logged.contains("zz-secret-zz") && !logged.contains("s3cret"));
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "c=3"),
        ]);
        let names: Vec<&str> = e.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["c"]);
        let settings = ExportSettings {
            url: "http://c/v1/traces".into(),
            protocol: Protocol::HttpProtobuf,
            headers: e.headers,
            resource: Vec::new(),
            max_queue: 1,
            max_batch: 1,
            schedule_delay: DEFAULT_SCHEDULE_DELAY,
            timeout: DEFAULT_EXPORT_TIMEOUT,
        };
        let debug = format!("{settings:?}");
        assert!(debug.contains("\"c\"") && !debug.contains('3'), "{debug}");
    }

    #[test]
    fn sdk_disabled_and_batch_settings() {
        assert!(env(&[("OTEL_SDK_DISABLED", "TRUE")]).sdk_disabled);
        assert!(!env(&[("OTEL_SDK_DISABLED", "false")]).sdk_disabled);
        let e = env(&[("OTEL_SDK_DISABLED", "yes")]);
        assert!(!e.sdk_disabled && e.warnings.len() == 1);
        let e = env(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "500"),
        ]);
        assert_eq!(e.max_queue, Some(4));
        assert_eq!(e.max_batch, Some(2));
        assert_eq!(e.schedule_delay, Some(Duration::from_millis(250)));
        assert_eq!(e.timeout, Some(Duration::from_millis(500)));
        let e = env(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]);
        assert!(e.max_queue.is_none() && e.warnings.len() == 1);
    }

    #[cfg(feature = "otlp")]
    fn record(method: Method, status: u16, reason: &'static str) -> SpanRecord {
        let req = Request::builder()
            .method(method.clone())
            .uri("/orders/%61b/../1?secret=x")
            .header("host", "api.example.com:8443")
            .header("user-agent", "curl/8")
            .header("x-forwarded-for", "203.0.113.9, 10.0.0.1")
            .body(())
            .unwrap();
        let context = TraceContext::from_headers(req.headers(), &Sampler::default());
        let request = RequestFacts::capture(true, &context, &req).unwrap();
        SpanRecord {
            end: request.end(),
            context,
            request,
            method,
            status,
            route: Arc::from("orders"),
            route_pattern: Some("/orders/**".into()),
            upstream: reason.is_empty().then(|| Arc::from("orders-svc")),
            decision: if reason.is_empty() { "allow" } else { "deny" },
            reason,
            scheme: "https",
            peer: "10.0.0.1:5555".parse().unwrap(),
            peer_trusted: true,
            request_id: HeaderValue::from_static("req-1"),
        }
    }

    #[cfg(feature = "otlp")]
    fn attrs(span: &opentelemetry_proto::tonic::trace::v1::Span) -> HashMap<String, String> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        span.attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Any::StringValue(s)) => s.clone(),
                    Some(Any::IntValue(i)) => i.to_string(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn the_server_span_carries_http_semantic_conventions() {
        let span = otlp::span(&record(Method::GET, 200, ""));
        assert_eq!(span.name, "GET /orders/**");
        assert_eq!(span.kind, 2);
        assert_eq!(span.status.as_ref().unwrap().code, 0);
        let a = attrs(&span);
        assert_eq!(a["http.request.method"], "GET");
        assert_eq!(a["http.response.status_code"], "200");
        assert_eq!(a["url.path"], "/orders/1", "normalised, without the query");
        assert_eq!(a["url.scheme"], "https");
        assert_eq!(a["server.address"], "api.example.com");
        assert_eq!(a["server.port"], "8443");
        assert_eq!(a["client.address"], "203.0.113.9", "from a trusted proxy");
        assert_eq!(a["network.peer.address"], "10.0.0.1");
        assert_eq!(a["network.protocol.version"], "1.1");
        assert_eq!(a["user_agent.original"], "curl/8");
        assert_eq!(a["http.route"], "/orders/**");
        assert_eq!(a["jwtgate.route"], "orders");
        assert_eq!(a["jwtgate.upstream"], "orders-svc");
        assert_eq!(a["jwtgate.decision"], "allow");
        assert_eq!(a["jwtgate.request_id"], "req-1");
        assert!(!a.contains_key("error.type") && !a.contains_key("jwtgate.reason"));
        assert!(!a.values().any(|v| v.contains("secret")));

        let refused = otlp::span(&record(Method::GET, 401, "missing_token"));
        let a = attrs(&refused);
        assert_eq!(a["error.type"], "missing_token");
        assert_eq!(a["jwtgate.reason"], "missing_token");
        assert!(!a.contains_key("jwtgate.upstream"), "no upstream contacted");
        assert_eq!(
            refused.status.as_ref().unwrap().code,
            0,
            "4xx is no server error"
        );

        let mut failed = record(Method::POST, 502, "");
        failed.peer_trusted = false;
        let failed = otlp::span(&failed);
        let a = attrs(&failed);
        assert_eq!(a["error.type"], "502");
        assert_eq!(a["client.address"], "10.0.0.1", "untrusted peer: no XFF");
        assert_eq!(failed.status.as_ref().unwrap().code, 2);

        let mut odd = record(Method::from_bytes(b"PURGE").unwrap(), 404, "no_route");
        odd.route_pattern = None;
        let odd = otlp::span(&odd);
        assert_eq!(odd.name, "HTTP");
        let a = attrs(&odd);
        assert_eq!(a["http.request.method"], "_OTHER");
        assert_eq!(a["http.request.method_original"], "PURGE");
        assert!(!a.contains_key("http.route"));
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn hosts_split_into_address_and_port() {
        assert_eq!(otlp::split_host("a.example"), ("a.example", None));
        assert_eq!(otlp::split_host("a.example:80"), ("a.example", Some(80)));
        assert_eq!(otlp::split_host("[::1]:8080"), ("::1", Some(8080)));
        assert_eq!(otlp::split_host("[::1]"), ("::1", None));
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn json_and_protobuf_encode_the_same_request() {
        use prost::Message as _;
        let resource = opentelemetry_proto::tonic::resource::v1::Resource::default();
        let request = otlp::encode(&resource, &[record(Method::GET, 200, "")]);
        let bytes = request.encode_to_vec();
        let decoded =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                &bytes[..],
            )
            .unwrap();
        assert_eq!(decoded, request);
        let json = otlp::json_request(&request);
        let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        let proto = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span["traceId"], to_hex(&proto.trace_id));
        assert_eq!(span["name"], "GET /orders/**");
        assert_eq!(span["kind"], 2);
        assert_eq!(
            span["startTimeUnixNano"],
            proto.start_time_unix_nano.to_string()
        );
        assert_eq!(span["flags"], 0x101);
        let status = span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "http.response.status_code")
            .unwrap();
        assert_eq!(status["value"]["intValue"], "200");
    }
}

//! W3C Trace Context and OpenTelemetry export.
//!
//! Every forwarded request carries a `traceparent` naming jwtgate's own span as the parent: the
//! client's trace is continued when it sent a valid `traceparent`, a new one starts otherwise.
//! With the `otlp` cargo feature (on by default) and `[tracing] otlp_endpoint`, each request's
//! span is exported to an OpenTelemetry collector over OTLP/HTTP (JSON encoding), in batches, from
//! a bounded queue: a slow or absent collector costs dropped spans, never request latency.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};

/// The trace position of one request.
#[derive(Debug, Clone, Copy)]
pub struct TraceContext {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// jwtgate's span for this request.
    pub span_id: [u8; 8],
    /// The client's span, when it sent a `traceparent`.
    pub parent_id: Option<[u8; 8]>,
    /// The sampled flag.
    pub sampled: bool,
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    write_hex(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Random, never all-zero ids. Every bit is random (a v4 UUID fixes six of them, two of which
/// fall in the bytes a trace-id ratio sampler reads).
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
    /// Continues the client's trace (a valid version-00 `traceparent`) or starts a new one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let parsed = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let mut parts = v.trim().split('-');
                let (version, trace, parent, flags) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                if version != "00" || parts.next().is_some() {
                    return None;
                }
                let flags = hex::<1>(flags).map_or(0, |f| f[0]);
                Some((hex::<16>(trace)?, hex::<8>(parent)?, flags & 1 == 1))
            });
        match parsed {
            Some((trace_id, parent, sampled)) => TraceContext {
                trace_id,
                span_id: random(),
                parent_id: Some(parent),
                sampled,
            },
            None => TraceContext {
                trace_id: random(),
                span_id: random(),
                parent_id: None,
                sampled: true,
            },
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

/// One finished request, as exported.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Where it sits in the trace.
    pub context: TraceContext,
    /// Route name (the span is named `jwtgate <route>`).
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Response status.
    pub status: u16,
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    /// Refusal reason, if any.
    pub reason: &'static str,
    /// Start and end.
    pub start: SystemTime,
    /// End.
    pub end: SystemTime,
}

#[cfg(feature = "otlp")]
pub use otlp::Exporter;

#[cfg(feature = "otlp")]
mod otlp {
    use std::time::{Duration, SystemTime};

    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    use super::{SpanRecord, to_hex};

    /// Spans waiting for export; more are dropped (and counted in the log).
    const QUEUE: usize = 8192;
    /// Spans per export request.
    const BATCH: usize = 512;
    /// Longest a span waits before its batch is sent.
    const FLUSH_EVERY: Duration = Duration::from_secs(1);

    /// Sends spans to an OTLP/HTTP collector.
    pub struct Exporter {
        queue: mpsc::Sender<SpanRecord>,
    }

    impl Exporter {
        /// Starts the export task for `endpoint` (`http://collector:4318`). Must run inside a
        /// tokio runtime.
        pub fn start(endpoint: &str, service_name: &str) -> Result<Self, String> {
            let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())?;
            let (queue, mut spans) = mpsc::channel::<SpanRecord>(QUEUE);
            let service = service_name.to_owned();
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(BATCH);
                loop {
                    let deadline = tokio::time::sleep(FLUSH_EVERY);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            span = spans.recv() => match span {
                                Some(span) => {
                                    batch.push(span);
                                    if batch.len() >= BATCH { break; }
                                }
                                None => return,
                            },
                            () = &mut deadline => break,
                        }
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    let body = encode(&service, &batch);
                    batch.clear();
                    match http.post(&url).json(&body).send().await {
                        Ok(res) if res.status().is_success() => {}
                        Ok(res) => {
                            tracing::warn!(status = res.status().as_u16(), "OTLP export refused")
                        }
                        Err(e) => tracing::warn!("OTLP export failed: {e}"),
                    }
                }
            });
            Ok(Exporter { queue })
        }

        /// Queues a span; drops it when the queue is full.
        pub fn export(&self, span: SpanRecord) {
            if self.queue.try_send(span).is_err() {
                tracing::debug!("OTLP queue full; span dropped");
            }
        }
    }

    fn nanos(t: SystemTime) -> String {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_string()
    }

    fn attr(key: &str, value: Value) -> Value {
        json!({ "key": key, "value": value })
    }

    /// An OTLP `ExportTraceServiceRequest` in the protocol's JSON encoding.
    pub(super) fn encode(service: &str, spans: &[SpanRecord]) -> Value {
        let spans: Vec<Value> = spans
            .iter()
            .map(|s| {
                let mut span = json!({
                    "traceId": to_hex(&s.context.trace_id),
                    "spanId": to_hex(&s.context.span_id),
                    "name": format!("jwtgate {}", s.route),
                    "kind": 2,
                    "startTimeUnixNano": nanos(s.start),
                    "endTimeUnixNano": nanos(s.end),
                    "attributes": [
                        attr("http.request.method", json!({ "stringValue": s.method })),
                        attr("http.response.status_code", json!({ "intValue": s.status.to_string() })),
                        attr("jwtgate.route", json!({ "stringValue": s.route })),
                        attr("jwtgate.decision", json!({ "stringValue": s.decision })),
                        attr("jwtgate.reason", json!({ "stringValue": s.reason })),
                    ],
                    "status": { "code": if s.status >= 500 { 2 } else { 0 } },
                });
                if let Some(parent) = s.context.parent_id {
                    span["parentSpanId"] = json!(to_hex(&parent));
                }
                span
            })
            .collect();
        json!({
            "resourceSpans": [{
                "resource": { "attributes": [attr("service.name", json!({ "stringValue": service }))] },
                "scopeSpans": [{
                    "scope": { "name": "jwtgate", "version": env!("CARGO_PKG_VERSION") },
                    "spans": spans,
                }],
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_and_an_invalid_one_replaced() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let ctx = TraceContext::from_headers(&h);
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
            "garbage",
        ] {
            h.insert("traceparent", HeaderValue::from_static(bad));
            let ctx = TraceContext::from_headers(&h);
            assert!(ctx.parent_id.is_none(), "{bad}");
        }
    }

    #[test]
    fn new_trace_ids_are_random_in_every_bit_a_ratio_sampler_reads() {
        // A v4 UUID pins the top bits of byte 8 to 0b10: a ratio of 0.5 on the low 8 bytes
        // would then sample nothing.
        let (mut seen_low, mut seen_high) = (false, false);
        for _ in 0..200 {
            let ctx = TraceContext::from_headers(&HeaderMap::new());
            match ctx.trace_id[8] >> 6 {
                0b00 | 0b01 => seen_low = true,
                _ => seen_high = true,
            }
        }
        assert!(seen_low && seen_high);
    }
}

//! The HTTP/1.1 fast path: bodiless requests served without hyper's server.
//!
//! Nearly every request through an auth proxy is a small HTTP/1.1 request without a body on a
//! keep-alive connection. For those, hyper's general machinery (its dispatcher, body channels
//! and write queue) costs more than the proxying. This loop reads their heads with httparse
//! (hyper's parser), runs them through the same pipeline as every other request
//! ([`proxy::handle`]) and writes the answers itself.
//!
//! The first request it would have to interpret beyond that (one with a body, `Expect`, an
//! upgrade, `TE: trailers`, HTTP/1.0, a target not in origin form, more fields than it parses,
//! or a head that does not parse at all; or the HTTP/2 preface) is handed to hyper together
//! with every byte read so far, and hyper serves the rest of the connection. So the loop never
//! frames a request body and never answers a syntax error: those stay hyper's.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::Shared;
use crate::compile::Limits;
use crate::headers::{self, FieldSpans};
use crate::proxy::{self, ConnInfo, ProxyBody};
use crate::upstream::ClientBody;

/// Most header fields the fast path parses; a request with more goes to hyper, which applies
/// `max_headers`.
const MAX_FIELDS: usize = 128;
/// Bytes asked of the socket per read.
const READ_SIZE: usize = 8 * 1024;
/// A first body frame up to this size is sent in the same write as the head.
const COALESCE: usize = 16 * 1024;
/// Time allowed to close a connection cleanly.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How the fast path left a connection.
pub enum Ended<I> {
    /// Closed (by the client, a timeout, shutdown, or an error).
    Closed,
    /// For hyper to serve, starting with these bytes already read.
    Handoff(I, Bytes),
}

/// What the loop serves a connection with.
pub struct FastPath<'a> {
    /// The live configuration and state.
    pub shared: &'a Arc<Shared>,
    /// The client connection.
    pub conn: &'a ConnInfo,
    /// Head size, field count and head read timeout.
    pub limits: &'a Limits,
}

/// Serves `io` until it closes or needs hyper. `shutdown` turning true ends the connection
/// after the request in flight (at once if it is idle).
pub async fn serve<I>(mut io: I, fast: FastPath<'_>, shutdown: watch::Receiver<bool>) -> Ended<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut reader = HeadReader {
        buf: BytesMut::with_capacity(READ_SIZE),
        spans: Spans::default(),
        timer: HeadTimer::new(fast.limits.header_read_timeout),
        shutdown,
    };
    let mut out = Vec::with_capacity(1024);
    loop {
        let (req, close) = match reader.next(&mut io, fast.limits).await {
            Next::Request(req, close) => (req, close),
            Next::Handoff => return Ended::Handoff(io, reader.buf.freeze()),
            Next::Close => return Ended::Closed,
        };
        let head_request = req.method() == Method::HEAD;
        let response = proxy::handle(Arc::clone(fast.shared), fast.conn.clone(), req).await;
        let close = close || *reader.shutdown.borrow();
        let written = write_response(&mut io, &mut out, response, head_request, close).await;
        if written.is_err() || close {
            // Bounded: a TLS close_notify waits on a client that may not be reading.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, io.shutdown()).await;
            return Ended::Closed;
        }
    }
}

/// What came next on the connection.
// Moved once per request and taken apart at once: boxing would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// A request for the fast path, and whether the client asked to close after it.
    Request(Request<ClientBody>, bool),
    Handoff,
    Close,
}

/// The head read timeout, armed lazily: each head moves the deadline, but the timer is only
/// reset when it fires before the deadline, so a busy connection does not register a timer per
/// request.
struct HeadTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: std::time::Duration,
    deadline: tokio::time::Instant,
}

impl HeadTimer {
    fn new(timeout: std::time::Duration) -> Self {
        let deadline = tokio::time::Instant::now() + timeout;
        HeadTimer {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            deadline,
        }
    }

    /// Starts the time allowed for the next head.
    fn restart(&mut self) {
        self.deadline = tokio::time::Instant::now() + self.timeout;
    }

    /// Resolves once the deadline has passed.
    async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            if tokio::time::Instant::now() >= self.deadline {
                return;
            }
            self.sleep.as_mut().reset(self.deadline);
        }
    }
}

/// What a connection keeps between request heads.
struct HeadReader {
    /// Bytes read and not yet parsed.
    buf: BytesMut,
    spans: Spans,
    timer: HeadTimer,
    shutdown: watch::Receiver<bool>,
}

impl HeadReader {
    /// Reads until a complete request head is buffered, within the head read timeout (which
    /// also bounds an idle keep-alive connection, as hyper's does).
    async fn next<I: AsyncRead + Unpin>(&mut self, io: &mut I, limits: &Limits) -> Next {
        self.timer.restart();
        loop {
            if !self.buf.is_empty() {
                match parse(&mut self.buf, limits.max_headers, &mut self.spans) {
                    Parsed::Request(req, close) => return Next::Request(req, close),
                    Parsed::Other => return Next::Handoff,
                    // Over the limit: hyper reads on and answers 431.
                    Parsed::Partial if self.buf.len() >= limits.max_header_bytes => {
                        return Next::Handoff;
                    }
                    Parsed::Partial => {}
                }
            }
            self.buf.reserve(READ_SIZE);
            let idle = self.buf.is_empty();
            let read = tokio::select! {
                read = io.read_buf(&mut self.buf) => read,
                () = self.timer.expired() => return Next::Close,
                _ = self.shutdown.changed(), if idle => return Next::Close,
            };
            match read {
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            }
        }
    }
}

// Moved once per request and taken apart at once: boxing would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A complete head the fast path serves (its bytes are gone from the buffer).
    Request(Request<ClientBody>, bool),
    /// The head is not complete yet.
    Partial,
    /// Anything else: hyper's.
    Other,
}

/// Where the parts of a request head lie in the buffer (see [`FieldSpans`]).
#[derive(Default)]
struct Spans {
    method: Range<usize>,
    target: Range<usize>,
    fields: FieldSpans,
    /// The client asked to close after this request.
    close: bool,
}

/// Parses a request head at the start of `buf`.
fn parse(buf: &mut BytesMut, max_headers: usize, spans: &mut Spans) -> Parsed {
    let len = {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let mut head = httparse::Request::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_request_with_uninit_headers(&mut head, buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Other,
        };
        let (Some(method), Some(target), Some(1)) = (head.method, head.path, head.version) else {
            return Parsed::Other;
        };
        if !target.starts_with('/') || method == "CONNECT" || head.headers.len() > max_headers {
            return Parsed::Other;
        }
        spans.method = headers::span(buf, method.as_bytes());
        spans.target = headers::span(buf, target.as_bytes());
        spans.fields.clear();
        spans.close = false;
        let mut lengths = 0;
        for field in head.headers.iter() {
            let name = field.name;
            let value = field.value;
            let served = if name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                value.trim_ascii() == b"0"
            } else if name.eq_ignore_ascii_case("connection") {
                spans.close |= headers::lists(value, b"close");
                !headers::lists(value, b"upgrade")
            } else if name.eq_ignore_ascii_case("te") {
                !headers::lists(value, b"trailers")
            } else {
                !(name.eq_ignore_ascii_case("transfer-encoding")
                    || name.eq_ignore_ascii_case("expect")
                    || name.eq_ignore_ascii_case("upgrade"))
            };
            if !served || lengths > 1 {
                return Parsed::Other;
            }
            spans.fields.push(buf, name.as_bytes(), value);
        }
        len
    };
    let head = buf.split_to(len).freeze();
    match build(&head, spans) {
        Some(req) => Parsed::Request(req, spans.close),
        None => {
            // Not something `http` accepts: hyper sees the same bytes and answers.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::Other
        }
    }
}

/// The request the spans describe, sharing `head`'s bytes.
fn build(head: &Bytes, spans: &Spans) -> Option<Request<ClientBody>> {
    let method = Method::from_bytes(&head[spans.method.clone()]).ok()?;
    let uri = Uri::from_maybe_shared(head.slice(spans.target.clone())).ok()?;
    // Room for what the pipeline adds (forwarding, identity, trace and request id headers).
    let headers = spans.fields.build(head, 8)?;
    let mut req = Request::new(ClientBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// How the response body is framed on the wire.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Writes `response`. An error (the client went away, or the body failed mid-way) leaves the
/// response incomplete: the connection must close so the client sees it cut short.
async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    response: Response<ProxyBody>,
    head_request: bool,
    close: bool,
) -> io::Result<()> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // 1xx, 204 and 304 have no body; 1xx and 204 no length either (RFC 9110 §8.6).
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut declared = None;
    let mut dated = false;
    for (name, value) in &parts.headers {
        // The loop frames the body and manages the connection itself.
        if name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        if name == CONTENT_LENGTH {
            let length = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            // None for 1xx and 204; an unreadable one is dropped and the body framed anew.
            if status.is_informational() || status == StatusCode::NO_CONTENT || length.is_none() {
                continue;
            }
            declared = length;
        }
        dated |= name == DATE;
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        with_date(|date| put_field(out, b"date", date));
    }
    let framing = if bodiless || head_request {
        Framing::None
    } else if let Some(n) = declared {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        put_field(out, b"content-length", n.to_string().as_bytes());
        Framing::Length(n)
    } else {
        put_field(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    if close {
        put_field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");

    let (mut left, chunked) = match framing {
        Framing::None => {
            io.write_all(out).await?;
            return io.flush().await;
        }
        Framing::Length(n) => (n, false),
        Framing::Chunked => (u64::MAX, true),
    };
    // The head waits in `out` for the first piece of body, so small responses take one write.
    let mut head_pending = true;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: only for clients that asked, which hyper serves
        };
        if data.is_empty() {
            continue;
        }
        if !chunked {
            left = left
                .checked_sub(data.len() as u64)
                .ok_or_else(|| io::Error::other("body longer than its Content-Length"))?;
        }
        if chunked {
            if !head_pending {
                out.clear();
            }
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
            io.write_all(out).await?;
        } else if head_pending && data.len() <= COALESCE {
            out.extend_from_slice(&data);
            io.write_all(out).await?;
        } else {
            if head_pending {
                io.write_all(out).await?;
            }
            io.write_all(&data).await?;
        }
        head_pending = false;
    }
    if chunked {
        if !head_pending {
            out.clear();
        }
        out.extend_from_slice(b"0\r\n\r\n");
        io.write_all(out).await?;
    } else if left != 0 {
        return Err(io::Error::other("body shorter than its Content-Length"));
    } else if head_pending {
        io.write_all(out).await?;
    }
    io.flush().await
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Calls `f` with the current `Date` value, formatted once a second per thread.
fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes())
    })
}

/// A connection with bytes already read in front of it: hyper reads those first.
pub struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    /// `io`, whose next bytes are `prefix`.
    pub fn new(prefix: Bytes, io: I) -> Self {
        Prefixed { prefix, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(text);
        (parse(&mut buf, 100, &mut Spans::default()), buf)
    }

    #[test]
    fn simple_bodiless_requests_are_served_and_leave_the_next_one_buffered() {
        let (result, rest) = parsed(
            "GET /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: keep-alive, close\r\n\r\nGET /next",
        );
        let Parsed::Request(req, close) = result else {
            panic!("not served")
        };
        assert!(close);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.headers()["host"], "x");
        assert_eq!(req.headers().len(), 3);
        assert_eq!(&rest[..], b"GET /next");
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nHost: x\r\n").0,
            Parsed::Partial
        ));
    }

    #[test]
    fn anything_else_goes_to_hyper_with_its_bytes() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://example.com/ HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
        ] {
            let (result, rest) = parsed(text);
            assert!(matches!(result, Parsed::Other), "{text:?}");
            assert_eq!(&rest[..], text.as_bytes(), "the bytes stay for hyper");
        }
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "x: y\r\n".repeat(101));
        assert!(matches!(parsed(&many).0, Parsed::Other));
    }

    #[tokio::test]
    async fn prefixed_reads_its_prefix_first() {
        let mut io = Prefixed::new(Bytes::from_static(b"abc"), &b"def"[..]);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "abcdef");
    }
}

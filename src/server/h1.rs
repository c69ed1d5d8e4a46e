//! The HTTP/1.1 fast path: bodiless requests served without hyper's server.
//!
//! Nearly every request through an auth proxy is a small HTTP/1.1 request without a body on a
//! keep-alive connection. For those, hyper's general machinery (its dispatcher, body channels
//! and write queue) costs more than the proxying. This loop reads their heads with httparse
//! (hyper's parser, through [`http1::parse_request`]), runs them through the same pipeline as
//! every other request ([`proxy::handle`]) and writes the answers itself (heads by
//! [`http1::encode_response_head`]).
//!
//! The first request it would have to interpret beyond that (one with a body, `Expect`, an
//! upgrade, `TE: trailers`, HTTP/1.0, a target not in origin form, more fields than it parses,
//! or a head that does not parse at all; or the HTTP/2 preface) is handed to hyper together
//! with every byte read so far, and hyper serves the rest of the connection. So the loop never
//! frames a request body and never answers a syntax error: those stay hyper's.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::Shared;
use crate::http1::{self, Outgoing, ParsedRequest, RequestSpans};
use crate::proxy::{self, ConnInfo, ProxyBody};
use crate::server::ClientBody;
use crate::settings::Limits;

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
        spans: RequestSpans::default(),
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
        // jwtgate's own answer may ask to close (a request whose framing or host it refused).
        let close = close
            || *reader.shutdown.borrow()
            || response
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| http1::lists(v.as_bytes(), b"close"));
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
    spans: RequestSpans,
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
                match http1::parse_request(
                    &mut self.buf,
                    limits.max_headers,
                    limits.max_header_bytes,
                    &mut self.spans,
                ) {
                    ParsedRequest::Request(req, close) => {
                        return Next::Request(req.map(|()| ClientBody::Empty), close);
                    }
                    ParsedRequest::Other => return Next::Handoff,
                    // Over the limit: hyper reads on and answers 431.
                    ParsedRequest::Partial if self.buf.len() >= limits.max_header_bytes => {
                        return Next::Handoff;
                    }
                    ParsedRequest::Partial => {}
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
    out.clear();
    let framing = http1::encode_response_head(
        out,
        &parts,
        body.size_hint().exact(),
        head_request,
        close,
        |out| with_date(|date| http1::put_field(out, b"date", date)),
    );
    let (mut left, chunked) = match framing {
        Outgoing::None => {
            io.write_all(out).await?;
            return io.flush().await;
        }
        Outgoing::Length(n) => (n, false),
        Outgoing::Chunked => (u64::MAX, true),
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
            http1::put_chunk_size(out, data.len());
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

    #[tokio::test]
    async fn prefixed_reads_its_prefix_first() {
        let mut io = Prefixed::new(Bytes::from_static(b"abc"), &b"def"[..]);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "abcdef");
    }
}

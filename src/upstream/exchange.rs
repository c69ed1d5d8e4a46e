//! HTTP/1.1 exchanges without a connection task, for requests without a body (the hot path).
//!
//! hyper's client runs every connection as a task of its own and hands it each request, and
//! each piece of the response body, over channels: for a bodiless request that costs more than
//! the exchange itself. Here the requesting task writes the request head and reads the response
//! head, and whoever polls the response body reads it from the socket. Requests with a body,
//! upgrades and HTTP/2 stay on hyper's client.
//!
//! The response is framed strictly by RFC 9112 §6.3 ([`http1::parse_response`], the same rules
//! hyper's client applies on the other path). A connection goes back to the pool only when its
//! response ended exactly where its framing said, with no byte after it and nothing asking to
//! close: a misread boundary on a pooled connection would hand one client's response to the next.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::Response;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::Io;
use super::pool::{Idle, Pool};
use super::retry::Failure;
use crate::http1::{self, Decoded, FieldSpans, Framing};

/// Most bytes a response head (with any 1xx heads before it) may take.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Bytes asked of the socket per read.
const READ_SIZE: usize = 16 * 1024;

/// An upstream connection the pool holds between exchanges.
pub struct Conn {
    /// Boxed: a TLS stream is large, and the body that holds the connection moves around.
    io: Box<TokioIo<Io>>,
    /// The read buffer, kept between exchanges so its allocation is reused.
    buf: BytesMut,
    /// Where the response head's fields lie in `buf` (its list reused likewise).
    fields: FieldSpans,
}

impl Conn {
    /// A freshly opened connection.
    pub fn new(io: Io) -> Self {
        Conn {
            io: Box::new(TokioIo::new(io)),
            buf: BytesMut::new(),
            fields: FieldSpans::default(),
        }
    }

    /// The connection's local address (tests tell connections apart by it).
    #[cfg(test)]
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self.io.inner() {
            hyper_rustls::MaybeHttpsStream::Http(tcp) => tcp.inner().local_addr(),
            hyper_rustls::MaybeHttpsStream::Https(tls) => {
                tls.inner().get_ref().0.inner().inner().local_addr()
            }
        }
    }

    /// Whether the upstream closed it (or sent something unasked) while it sat idle. Reads
    /// without waiting: an open, quiet connection has nothing to read.
    pub fn closed_while_idle(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut buf)
            .is_ready()
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Reading or writing the connection failed.
    #[error("upstream connection failed: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before the response was complete.
    #[error("upstream closed the connection mid-response")]
    Closed,
    /// The response head is larger than jwtgate accepts, or breaks HTTP/1.1's syntax or
    /// framing rules.
    #[error("upstream response: {0}")]
    Response(#[from] http1::Error),
}

/// A failed exchange: the error, and how far it got (for [`super::retry::decide`]).
pub struct Failed {
    /// What went wrong.
    pub error: ExchangeError,
    /// [`Failure::NoResponse`] when not one byte of response came back, else
    /// [`Failure::Partial`].
    pub failure: Failure,
}

/// Writes `head` on `conn` and reads the response head. The body is read as it is polled, and
/// the connection rejoins `pool` once the body ended cleanly.
pub async fn exchange(
    mut conn: Conn,
    head: &[u8],
    head_request: bool,
    pool: &Arc<Pool>,
) -> Result<Response<ResponseBody>, Failed> {
    let mut buf = std::mem::take(&mut conn.buf);
    // Bytes of interim (1xx) heads read and dropped: part of the answer, and of its limit.
    let mut interim = 0;
    let fail = |error: ExchangeError, received: usize| Failed {
        failure: if received == 0 {
            Failure::NoResponse
        } else {
            Failure::Partial
        },
        error,
    };
    if let Err(e) = conn.io.write_all(head).await {
        return Err(fail(e.into(), buf.len()));
    }
    loop {
        let before = buf.len();
        let parsed = http1::parse_response(&mut buf, &mut conn.fields, head_request);
        let parsed = parsed.map_err(|e| fail(e.into(), interim + before))?;
        if let Some(head) = parsed {
            let body = ResponseBody {
                conn: Some(conn),
                buf,
                framing: head.framing,
                keep_alive: head.keep_alive,
                pool: Arc::clone(pool),
            };
            let mut response = head.response.map(|()| body);
            response.body_mut().finish_if_empty();
            return Ok(response);
        }
        interim += before - buf.len();
        let received = interim + buf.len();
        if received >= MAX_HEAD_BYTES {
            return Err(fail(http1::Error::HeadTooLarge.into(), received));
        }
        let room = MAX_HEAD_BYTES - received;
        match read_more(&mut conn.io, &mut buf, room).await {
            Ok(0) => return Err(fail(ExchangeError::Closed, received)),
            Ok(_) => {}
            Err(e) => return Err(fail(e.into(), interim + buf.len())),
        }
    }
}

/// Reads at most `limit` more bytes into `buf` (`read_buf` alone fills all the spare capacity,
/// which may be far more than was reserved).
async fn read_more(io: &mut TokioIo<Io>, buf: &mut BytesMut, limit: usize) -> io::Result<usize> {
    let limit = READ_SIZE.min(limit);
    buf.reserve(limit);
    io.take(limit as u64).read_buf(buf).await
}

/// A response body read straight from its upstream connection.
pub struct ResponseBody {
    /// The connection, until the body ended or failed.
    conn: Option<Conn>,
    /// Bytes read and not yet passed on.
    buf: BytesMut,
    framing: Framing,
    /// The response's framing and headers allow reusing the connection.
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl ResponseBody {
    /// Ends a body that has no bytes at all now, so the connection is pooled at once.
    fn finish_if_empty(&mut self) {
        if self.framing == Framing::Length(0) {
            self.finish();
        }
    }

    /// The body was read to its end: the connection rejoins the pool if nothing suggests the
    /// upstream and jwtgate disagree about where the response ended.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(mut conn) = self.conn.take() {
            if self.keep_alive && self.buf.is_empty() {
                conn.buf = std::mem::take(&mut self.buf);
                self.pool.put_back(Idle::Exchange(conn));
            }
        }
    }

    /// Reads more into the buffer: `Ok(false)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: u64) -> Poll<Result<bool, ExchangeError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        let want = usize::try_from(want)
            .unwrap_or(READ_SIZE)
            .clamp(1, READ_SIZE);
        let start = self.buf.len();
        self.buf.resize(start + want, 0);
        let mut read = ReadBuf::new(&mut self.buf[start..]);
        let polled = Pin::new(&mut conn.io).poll_read(cx, &mut read);
        let filled = read.filled().len();
        self.buf.truncate(start + filled);
        ready!(polled)?;
        Poll::Ready(Ok(filled > 0))
    }

    /// Gives up on the body: the connection closes, its state unknown.
    fn fail(&mut self, error: ExchangeError) -> ExchangeError {
        self.framing = Framing::Done;
        self.conn = None;
        error
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = &mut *self;
        loop {
            let want = match &mut this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !this.buf.is_empty() {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(this.buf.len());
                        *left -= take as u64;
                        let data = this.buf.split_to(take).freeze();
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    *left
                }
                Framing::UntilClose => {
                    if !this.buf.is_empty() {
                        let data = this.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    READ_SIZE as u64
                }
                Framing::Chunked(state) => match state.decode(&mut this.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        // The last frame: nothing may poll again.
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => READ_SIZE as u64,
                    Err(e) => return Poll::Ready(Some(Err(this.fail(e.into())))),
                },
            };
            match ready!(this.poll_fill(cx, want)) {
                Ok(true) => {}
                Ok(false) if this.framing == Framing::UntilClose => {
                    this.framing = Framing::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(false) => return Poll::Ready(Some(Err(this.fail(ExchangeError::Closed)))),
                Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

//! HTTP/1.1 exchanges without a connection task, for requests without a body (the hot path).
//!
//! hyper's client runs every connection as a task of its own and hands it each request, and
//! each piece of the response body, over channels: for a bodiless request that costs more than
//! the exchange itself. Here the requesting task writes the request head and reads the response
//! head, and whoever polls the response body reads it from the socket. Requests with a body,
//! upgrades and HTTP/2 stay on hyper's client.
//!
//! The response is framed strictly by RFC 9112 §6.3 (httparse reads the head, as in hyper). A
//! connection goes back to the pool only when its response ended exactly where its framing said,
//! with no byte after it and nothing asking to close: a misread boundary on a pooled connection
//! would hand one client's response to the next.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::{Io, Pool};
use crate::headers::{self, FieldSpans};

/// Most bytes a response head (with any 1xx heads before it) may take.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one response head, or in the trailers.
pub const MAX_HEADERS: usize = 128;
/// Most bytes of a chunk-size line (size and extensions) or of the trailer block.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Bytes asked of the socket per read.
const READ_SIZE: usize = 16 * 1024;

/// An upstream connection the pool holds between exchanges.
pub struct Conn {
    /// Boxed: a TLS stream is large, and the body that holds the connection moves around.
    io: Box<TokioIo<Io>>,
    /// When it was opened or last went idle.
    pub since: Instant,
    /// Whether it has carried an exchange already (a failure on it may be a stale connection).
    reused: bool,
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
            since: Instant::now(),
            reused: false,
            buf: BytesMut::new(),
            fields: FieldSpans::default(),
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
    /// The response head is larger than jwtgate accepts.
    #[error("upstream response head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields")]
    HeadTooLarge,
    /// The response breaks HTTP/1.1's syntax or framing rules.
    #[error("malformed upstream response: {0}")]
    Malformed(&'static str),
}

/// A failed exchange, and whether it may be sent again on a new connection: the connection had
/// been pooled and gave not one byte of response (the upstream had closed it meanwhile).
pub struct Failed {
    /// What went wrong.
    pub error: ExchangeError,
    /// Safe to retry, if the method is idempotent.
    pub stale: bool,
}

/// The request head for `parts`, as written on the wire. `default_host` is sent when the client
/// sent no `Host` (an HTTP/1.0 client): HTTP/1.1 requires one.
pub fn encode_head(parts: &http::request::Parts, default_host: &str) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let size = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>();
    let mut head = Vec::with_capacity(size + target.len() + default_host.len() + 32);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(HOST) {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(default_host.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // `http` guarantees names are tokens and values hold no CR, LF or NUL: nothing a client
    // sent can end a line here.
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
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
    let reused = conn.reused;
    let fail = |error: ExchangeError, buf: &BytesMut| Failed {
        stale: reused && buf.is_empty(),
        error,
    };
    if let Err(e) = conn.io.write_all(head).await {
        return Err(fail(e.into(), &buf));
    }
    loop {
        let parsed = parse_head(&mut buf, &mut conn.fields, head_request);
        if let Some(parsed) = parsed.map_err(|e| fail(e, &buf))? {
            let (response, framing, keep_alive) = parsed;
            let body = ResponseBody {
                conn: Some(conn),
                buf,
                framing,
                keep_alive,
                pool: Arc::clone(pool),
            };
            let mut response = response.map(|()| body);
            response.body_mut().finish_if_empty();
            return Ok(response);
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(fail(ExchangeError::HeadTooLarge, &buf));
        }
        let room = MAX_HEAD_BYTES - buf.len();
        match read_more(&mut conn.io, &mut buf, room).await {
            Ok(0) => return Err(fail(ExchangeError::Closed, &buf)),
            Ok(_) => {}
            Err(e) => return Err(fail(e.into(), &buf)),
        }
    }
}

async fn read_more(io: &mut TokioIo<Io>, buf: &mut BytesMut, limit: usize) -> io::Result<usize> {
    buf.reserve(READ_SIZE.min(limit));
    io.read_buf(buf).await
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Bytes left of a `Content-Length` body (0 for bodiless responses).
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes the connection.
    UntilClose,
    /// Read to the end.
    Done,
}

type Head = (Response<()>, Framing, bool);

/// Parses one response head from `buf`, skipping interim (1xx) responses. `Ok(None)`: more
/// bytes needed. On success the head's bytes are gone from `buf` (the header values share
/// them); the rest is body. `Connection: keep-alive` and `Keep-Alive` are left out on the way
/// (hop-by-hop, and nearly every response has them); other hop-by-hop fields stay for the
/// proxy's stripping.
fn parse_head(
    buf: &mut BytesMut,
    spans: &mut FieldSpans,
    head_request: bool,
) -> Result<Option<Head>, ExchangeError> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // Uninitialised: the parser writes only the fields it finds.
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ExchangeError::HeadTooLarge),
            Err(_) => return Err(ExchangeError::Malformed("response head")),
        };
        let code = parsed.code.unwrap_or_default();
        let status =
            StatusCode::from_u16(code).map_err(|_| ExchangeError::Malformed("status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(ExchangeError::Malformed(
                "101 to a request that asked no upgrade",
            ));
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: interim, the final response follows.
            buf.advance(len);
            continue;
        }
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let mut close = false;
        spans.clear();
        for field in parsed.headers.iter() {
            let name = field.name;
            if name.eq_ignore_ascii_case("connection") {
                close |= headers::lists(field.value, b"close");
                let only_usual = field.value.split(|b| *b == b',').all(|t| {
                    let t = t.trim_ascii();
                    t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")
                });
                if only_usual {
                    continue;
                }
            } else if name.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            spans.push(buf, name.as_bytes(), field.value);
        }
        let head = buf.split_to(len).freeze();
        let headers = spans
            .build(&head, 0)
            .ok_or(ExchangeError::Malformed("header field"))?;
        let (framing, mut keep_alive) = framing(status, head_request, &headers)?;
        keep_alive &= version == Version::HTTP_11 && !close;
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some((response, framing, keep_alive)));
    }
}

/// The body's framing, and whether the framing lets the connection be reused.
fn framing(
    status: StatusCode,
    head_request: bool,
    headers: &HeaderMap,
) -> Result<(Framing, bool), ExchangeError> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), true));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // Chunked only when it is the final coding; otherwise the body runs to the close. A
        // Content-Length beside it is ignored, and the connection not trusted again.
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        let chunked = last.is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
        let keep_alive = chunked && !headers.contains_key(CONTENT_LENGTH);
        let framing = if chunked {
            Framing::Chunked(Chunked::Size)
        } else {
            Framing::UntilClose
        };
        return Ok((framing, keep_alive));
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        // Repeated or comma-joined copies are accepted only when they agree.
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let n = parse_decimal(part).ok_or(ExchangeError::Malformed("Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ExchangeError::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), true),
        None => (Framing::UntilClose, false),
    })
}

/// A plain decimal (digits only, no sign), at most 18 digits so it cannot overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    /// The trailers were passed on: the body has ended.
    Ended,
}

/// What the chunked decoder made of the buffered bytes.
#[derive(Debug)]
enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    NeedMore,
}

impl Chunked {
    /// Decodes the next piece from `buf`, consuming what it used.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ExchangeError> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line_end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&buf[..line_end])?;
                    buf.advance(line_end + 2);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ExchangeError::Malformed("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let decoded = trailers(buf)?;
                    if let Decoded::Trailers(_) = decoded {
                        *self = Chunked::Ended;
                    }
                    return Ok(decoded);
                }
                Chunked::Ended => return Ok(Decoded::End),
            }
        }
    }
}

/// The trailer section after the last chunk: fields, then an empty line.
fn trailers(buf: &mut BytesMut) -> Result<Decoded, ExchangeError> {
    if buf.len() < 2 {
        return Ok(Decoded::NeedMore);
    }
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Ok(Decoded::End);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let len = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, _))) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILER_BYTES => {
            return Ok(Decoded::NeedMore);
        }
        Ok(httparse::Status::Partial) | Err(_) => {
            return Err(ExchangeError::Malformed("chunked trailers"));
        }
    };
    let mut headers = HeaderMap::new();
    for field in fields.iter().take_while(|f| !f.name.is_empty()) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) {
            headers.append(name, value);
        }
    }
    buf.advance(len);
    Ok(Decoded::Trailers(headers))
}

/// The offset of the first CRLF in `buf`; an error if a bare CR or LF comes first or no CRLF
/// appears within `limit` bytes.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, ExchangeError> {
    match buf
        .iter()
        .take(limit)
        .position(|b| *b == b'\r' || *b == b'\n')
    {
        Some(i) if buf[i] == b'\n' => Err(ExchangeError::Malformed("bare LF in chunked body")),
        Some(i) if i + 1 == buf.len() => Ok(None),
        Some(i) if buf[i + 1] == b'\n' => Ok(Some(i)),
        Some(_) => Err(ExchangeError::Malformed("bare CR in chunked body")),
        None if buf.len() >= limit => Err(ExchangeError::Malformed("chunk-size line too long")),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]`: hex digits, then optionally whitespace and `;extensions`
/// (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, ExchangeError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 15 || !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(ExchangeError::Malformed("chunk size"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, d| {
        n * 16 + u64::from((*d as char).to_digit(16).unwrap_or_default())
    }))
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
                conn.since = Instant::now();
                conn.reused = true;
                conn.buf = std::mem::take(&mut self.buf);
                self.pool.give_back_direct(conn);
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
                    Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, head_request: bool) -> Result<Option<Head>, ExchangeError> {
        parse_head(
            &mut BytesMut::from(text),
            &mut FieldSpans::default(),
            head_request,
        )
    }

    fn framed(text: &str) -> (Framing, bool) {
        let (_, framing, keep_alive) = head(text, false).unwrap().unwrap();
        (framing, keep_alive)
    }

    /// Decodes `wire` fed in pieces of `step` bytes: the data, the trailers, and whether it ended.
    fn decode_chunked(
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, HeaderMap, bool), ExchangeError> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), HeaderMap::new());
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match state.decode(&mut buf)? {
                    Decoded::Data(d) => data.extend_from_slice(&d),
                    Decoded::Trailers(t) => trailers = t,
                    Decoded::End => return Ok((data, trailers, buf.is_empty())),
                    Decoded::NeedMore => break,
                }
            }
        }
        Ok((data, trailers, false))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5, 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
            (Framing::Chunked(Chunked::Size), true)
        );
        // Transfer-Encoding wins over Content-Length, and the connection is not reused.
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"),
            (Framing::Chunked(Chunked::Size), false)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\n\r\n"),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framed("HTTP/1.1 204 No Content\r\n\r\n"),
            (Framing::Length(0), true)
        );
        assert_eq!(
            framed("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"),
            (Framing::Length(0), true)
        );
        let (_, f, _) = head("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(f, Framing::Length(0), "a HEAD response has no body");
        assert!(!framed("HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\n").1);
        assert!(!framed("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").1);
    }

    #[test]
    fn usual_connection_fields_are_left_out_and_others_kept_for_stripping() {
        let text = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n";
        let (response, _, keep_alive) = head(text, false).unwrap().unwrap();
        assert!(keep_alive);
        let names: Vec<&str> = response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-a", "content-length"]);
        let text =
            "HTTP/1.1 200 OK\r\nConnection: x-hop, close\r\nx-hop: 1\r\ncontent-length: 0\r\n\r\n";
        let (response, _, keep_alive) = head(text, false).unwrap().unwrap();
        assert!(!keep_alive);
        assert_eq!(response.headers()["connection"], "x-hop, close");
    }

    #[test]
    fn ambiguous_or_broken_heads_are_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
            "HTP/1.1 200 OK\r\n\r\n",
        ] {
            assert!(head(text, false).is_err(), "{text:?}");
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "x: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(
            head(&many, false),
            Err(ExchangeError::HeadTooLarge)
        ));
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nhi",
        );
        let (response, framing, _) = parse_head(&mut buf, &mut FieldSpans::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-a"], "1");
        assert!(!response.headers().contains_key("link"));
        assert_eq!(framing, Framing::Length(2));
        assert_eq!(&buf[..], b"hi");
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-le", false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5;name=value\r\nhello\r\n1 \r\n,\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n";
        for step in 1..=wire.len() {
            let (data, trailers, clean) = decode_chunked(wire, step).unwrap();
            assert_eq!(data, b"hello, world", "step {step}");
            assert_eq!(trailers["x-sum"], "42");
            assert!(clean);
        }
        let (data, trailers, _) = decode_chunked(b"A\r\n0123456789\r\n0\r\n\r\n", 3).unwrap();
        assert_eq!(data, b"0123456789");
        assert!(trailers.is_empty());
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for wire in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\rhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"5x\r\nhello\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
        ] {
            assert!(
                decode_chunked(wire, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long_line = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(decode_chunked(long_line.as_bytes(), 64).is_err());
        let long_trailers = format!("0\r\n{}", "x-t: y\r\n".repeat(MAX_TRAILER_BYTES / 8 + 1));
        assert!(decode_chunked(long_trailers.as_bytes(), 512).is_err());
    }

    #[test]
    fn request_heads_carry_the_parts_and_a_host() {
        let req = http::Request::get("/a/b?c=d")
            .header("x-one", "1")
            .header("x-one", "2")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let head = String::from_utf8(encode_head(&parts, "up:8080")).unwrap();
        assert_eq!(
            head,
            "GET /a/b?c=d HTTP/1.1\r\nhost: up:8080\r\nx-one: 1\r\nx-one: 2\r\n\r\n"
        );
        let req = http::Request::delete("/")
            .header("host", "h")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        assert_eq!(
            encode_head(&parts, "up"),
            b"DELETE / HTTP/1.1\r\nhost: h\r\n\r\n"
        );
    }
}

//! Request heads: parsed for the server fast path, encoded for the upstream exchange.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::header::HOST;
use http::{Method, Request, Uri, Version};

use super::{FieldSpans, MAX_FIELDS, content_length, lists, put_field, span};

/// What [`parse_request`] found at the start of the buffer.
// Moved once per request and taken apart at once: boxing would allocate per request.
#[allow(clippy::large_enum_variant)]
pub enum ParsedRequest {
    /// A complete bodiless HTTP/1.1 request head (its bytes are gone from the buffer), and
    /// whether the client asked to close after it.
    Request(Request<()>, bool),
    /// The head is not complete yet.
    Partial,
    /// Anything else, for hyper to read from the same bytes (left in the buffer).
    Other,
}

/// Where the parts of a request head lie in the buffer (see [`FieldSpans`]); kept per
/// connection so its field list is allocated once.
#[derive(Debug, Default)]
pub struct RequestSpans {
    method: Range<usize>,
    target: Range<usize>,
    fields: FieldSpans,
    /// The client asked to close after this request.
    close: bool,
}

/// Parses a request head at the start of `buf`, for a server that serves only the simplest
/// requests itself: HTTP/1.1, a target in origin form, not `CONNECT`, at most `max_headers`
/// fields (and [`MAX_FIELDS`]) in at most `max_head_bytes`, no body (no `Transfer-Encoding`, at
/// most one `Content-Length`, and that one 0), no `Expect`, no upgrade, no `TE: trailers`.
/// Everything else, and every head that does not parse, is [`ParsedRequest::Other`] (a head over
/// the size limit included, whether or not it arrived in one read: hyper answers it 431).
pub fn parse_request(
    buf: &mut BytesMut,
    max_headers: usize,
    max_head_bytes: usize,
    spans: &mut RequestSpans,
) -> ParsedRequest {
    let len = {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let mut head = httparse::Request::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_request_with_uninit_headers(&mut head, buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) if len <= max_head_bytes => len,
            Ok(httparse::Status::Complete(_)) => return ParsedRequest::Other,
            Ok(httparse::Status::Partial) => return ParsedRequest::Partial,
            Err(_) => return ParsedRequest::Other,
        };
        let (Some(method), Some(target), Some(1)) = (head.method, head.path, head.version) else {
            return ParsedRequest::Other;
        };
        if !target.starts_with('/') || method == "CONNECT" || head.headers.len() > max_headers {
            return ParsedRequest::Other;
        }
        spans.method = span(buf, method.as_bytes());
        spans.target = span(buf, target.as_bytes());
        spans.fields.clear();
        spans.close = false;
        let mut lengths = 0;
        for field in head.headers.iter() {
            let name = field.name;
            let value = field.value;
            let served = if name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                content_length(value) == Ok(0)
            } else if name.eq_ignore_ascii_case("connection") {
                spans.close |= lists(value, b"close");
                !lists(value, b"upgrade")
            } else if name.eq_ignore_ascii_case("te") {
                !lists(value, b"trailers")
            } else {
                !(name.eq_ignore_ascii_case("transfer-encoding")
                    || name.eq_ignore_ascii_case("expect")
                    || name.eq_ignore_ascii_case("upgrade"))
            };
            // A repeated Content-Length goes to hyper even when the copies agree.
            if !served || lengths > 1 {
                return ParsedRequest::Other;
            }
            spans.fields.push(buf, name.as_bytes(), value);
        }
        len
    };
    let head = buf.split_to(len).freeze();
    match build(&head, spans) {
        Some(req) => ParsedRequest::Request(req, spans.close),
        None => {
            // Not something `http` accepts: hyper sees the same bytes and answers.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            ParsedRequest::Other
        }
    }
}

/// The request the spans describe, sharing `head`'s bytes.
fn build(head: &Bytes, spans: &RequestSpans) -> Option<Request<()>> {
    let method = Method::from_bytes(&head[spans.method.clone()]).ok()?;
    let uri = Uri::from_maybe_shared(head.slice(spans.target.clone())).ok()?;
    // Room for what the pipeline adds (forwarding, identity, trace and request id headers).
    let headers = spans.fields.build(head, 8)?;
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// The request head for `parts`, as written on the wire. `default_host` is sent when the client
/// sent no `Host` (an HTTP/1.0 client): HTTP/1.1 requires one.
pub fn encode_request_head(parts: &http::request::Parts, default_host: &str) -> Vec<u8> {
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
        put_field(&mut head, b"host", default_host.as_bytes());
    }
    // `http` guarantees names are tokens and values hold no CR, LF or NUL: nothing a client
    // sent can end a line here.
    for (name, value) in &parts.headers {
        put_field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (ParsedRequest, BytesMut) {
        let mut buf = BytesMut::from(text);
        (
            parse_request(&mut buf, 100, 16 * 1024, &mut RequestSpans::default()),
            buf,
        )
    }

    #[test]
    fn simple_bodiless_requests_are_served_and_leave_the_next_one_buffered() {
        let (result, rest) = parsed(
            "GET /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: keep-alive, close\r\n\r\nGET /next",
        );
        let ParsedRequest::Request(req, close) = result else {
            panic!("not served")
        };
        assert!(close);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.headers()["host"], "x");
        assert_eq!(req.headers().len(), 3);
        assert_eq!(&rest[..], b"GET /next");
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nHost: x\r\n").0,
            ParsedRequest::Partial
        ));
        // The one Content-Length parser: a list of zeros is a zero.
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nContent-Length: 0, 00\r\n\r\n").0,
            ParsedRequest::Request(_, false)
        ));
    }

    #[test]
    fn anything_else_goes_to_hyper_with_its_bytes() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 0, 1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: +0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: \r\n\r\n",
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
            assert!(matches!(result, ParsedRequest::Other), "{text:?}");
            assert_eq!(&rest[..], text.as_bytes(), "the bytes stay for hyper");
        }
        // A complete head over the byte limit, in one read: hyper's (it answers 431).
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(16 * 1024));
        let (result, rest) = parsed(&big);
        assert!(matches!(result, ParsedRequest::Other));
        assert_eq!(&rest[..], big.as_bytes());
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "x: y\r\n".repeat(101));
        assert!(matches!(parsed(&many).0, ParsedRequest::Other));
    }

    #[test]
    fn request_heads_carry_the_parts_and_a_host() {
        let req = http::Request::get("/a/b?c=d")
            .header("x-one", "1")
            .header("x-one", "2")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let head = String::from_utf8(encode_request_head(&parts, "up:8080")).unwrap();
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
            encode_request_head(&parts, "up"),
            b"DELETE / HTTP/1.1\r\nhost: h\r\n\r\n"
        );
    }
}

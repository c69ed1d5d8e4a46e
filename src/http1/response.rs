//! Response heads: parsed for the upstream exchange (with the body's framing), encoded for the
//! server fast path.

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Version};

use super::{
    Chunked, Error, FieldSpans, MAX_FIELDS, bodiless, chunked_is_final, content_length_all,
    drop_length_beside_encoding, lengthless, lists, lists_only, put_decimal, put_field,
};

/// How a received response body is delimited (RFC 9112 §6.3), and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Bytes left of a `Content-Length` body (0 for bodiless responses).
    Length(u64),
    /// A chunked body, and where its decoder stands.
    Chunked(Chunked),
    /// Until the upstream closes the connection.
    UntilClose,
    /// Read to the end.
    Done,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version and headers (sharing the head's bytes); the body is read separately.
    pub response: Response<()>,
    /// How the body is delimited.
    pub framing: Framing,
    /// The version, framing and `Connection` allow reusing the connection after the body.
    pub keep_alive: bool,
}

/// Parses one response head from `buf`, skipping interim (1xx) responses. `Ok(None)`: more
/// bytes needed. On success the head's bytes are gone from `buf` (the header values share
/// them); the rest is body. `Connection: keep-alive` and `Keep-Alive` are left out on the way
/// (hop-by-hop, and nearly every response has them); other hop-by-hop fields stay for the
/// proxy's stripping. A `101 Switching Protocols` is refused: it is read for a request that
/// asked no upgrade.
pub fn parse_response(
    buf: &mut BytesMut,
    spans: &mut FieldSpans,
    head_request: bool,
) -> Result<Option<ResponseHead>, Error> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // Uninitialised: the parser writes only the fields it finds.
        let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
            Err(_) => return Err(Error::Malformed("response head")),
        };
        let code = parsed.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Malformed("101 to a request that asked no upgrade"));
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
                close |= lists(field.value, b"close");
                if lists_only(field.value, &[b"keep-alive", b"close"]) {
                    continue;
                }
            } else if name.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            spans.push(buf, name.as_bytes(), field.value);
        }
        let head = buf.split_to(len).freeze();
        let mut headers = spans
            .build(&head, 0)
            .ok_or(Error::Malformed("header field"))?;
        let (framing, keep_alive) = framing(status, version, head_request, &mut headers)?;
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(ResponseHead {
            response,
            framing,
            keep_alive: keep_alive && version == Version::HTTP_11 && !close,
        }));
    }
}

/// The body's framing (RFC 9112 §6.3), and whether the framing lets the connection be reused.
/// hyper's client frames the responses it reads the same way; [`drop_length_beside_encoding`]
/// and [`chunked_is_final`] are the rules both paths share.
///
/// | response | body | connection reused |
/// |---|---|---|
/// | to HEAD; 1xx; 204; 304 | none | yes |
/// | `Transfer-Encoding`, `chunked` last (HTTP/1.1) | chunked; any `Content-Length` removed | only without a `Content-Length` |
/// | `Transfer-Encoding`, `chunked` not last (HTTP/1.1) | until the close; any `Content-Length` removed | no |
/// | `Transfer-Encoding` in HTTP/1.0 | refused (RFC 9112 §6.1: faulty framing) | no |
/// | `Content-Length` (copies that agree) | that many bytes | yes |
/// | conflicting or malformed `Content-Length` | refused | no |
/// | neither | until the close | no |
fn framing(
    status: StatusCode,
    version: Version,
    head_request: bool,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), Error> {
    // Removed whatever the status: relayed, a stale length would contradict the encoding.
    let conflicted = drop_length_beside_encoding(headers);
    if bodiless(status, head_request) {
        return Ok((Framing::Length(0), !conflicted));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(Error::Malformed(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        // Chunked only when it is the final coding; otherwise the body runs to the close.
        return Ok(if chunked_is_final(headers) {
            (Framing::Chunked(Chunked::Size), !conflicted)
        } else {
            (Framing::UntilClose, false)
        });
    }
    let values = headers.get_all(CONTENT_LENGTH).iter();
    Ok(
        match content_length_all(values.map(HeaderValue::as_bytes))? {
            Some(n) => (Framing::Length(n), true),
            None => (Framing::UntilClose, false),
        },
    )
}

/// How a response body goes on the wire, as [`encode_response_head`] declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked: each piece behind [`super::put_chunk_size`], then `0\r\n\r\n`.
    Chunked,
}

/// Writes the head of a response to a client (appending to `out`) and returns how its body
/// must follow. The writer frames the body and manages the connection itself, so
/// `Transfer-Encoding` and `Connection` fields are left out; `Content-Length` is kept when
/// every copy agrees (never for 1xx and 204), and otherwise the body is framed by `body_size`
/// (its exact size, if known) or chunked. `add_date` writes a `Date` field when there is none;
/// `close` adds `Connection: close`.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    head: &http::response::Parts,
    body_size: Option<u64>,
    head_request: bool,
    close: bool,
    add_date: impl FnOnce(&mut Vec<u8>),
) -> Outgoing {
    let status = head.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // None for 1xx and 204; an unreadable or conflicting one is dropped and the body framed
    // anew.
    let declared = if lengthless(status) {
        None
    } else {
        let values = head.headers.get_all(CONTENT_LENGTH).iter();
        content_length_all(values.map(HeaderValue::as_bytes))
            .ok()
            .flatten()
    };
    let mut dated = false;
    for (name, value) in &head.headers {
        if name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        if name == CONTENT_LENGTH && declared.is_none() {
            continue;
        }
        dated |= name == DATE;
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        add_date(out);
    }
    let outgoing = if bodiless(status, head_request) {
        Outgoing::None
    } else if let Some(n) = declared {
        Outgoing::Length(n)
    } else if let Some(n) = body_size {
        out.extend_from_slice(b"content-length: ");
        put_decimal(out, n);
        out.extend_from_slice(b"\r\n");
        Outgoing::Length(n)
    } else {
        put_field(out, b"transfer-encoding", b"chunked");
        Outgoing::Chunked
    };
    if close {
        put_field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    outgoing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, head_request: bool) -> Result<Option<ResponseHead>, Error> {
        parse_response(
            &mut BytesMut::from(text),
            &mut FieldSpans::default(),
            head_request,
        )
    }

    fn framed(text: &str) -> (Framing, bool) {
        let head = head(text, false).unwrap().unwrap();
        (head.framing, head.keep_alive)
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
        let f = head("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap()
            .framing;
        assert_eq!(f, Framing::Length(0), "a HEAD response has no body");
        assert!(!framed("HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\n").1);
        assert!(!framed("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").1);
    }

    #[test]
    fn a_length_beside_an_encoding_is_removed_before_relaying() {
        for (text, framing) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked(Chunked::Size),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                Framing::Chunked(Chunked::Size),
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip\r\n\r\n",
                Framing::UntilClose,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Length(0),
            ),
        ] {
            let head = head(text, false).unwrap().unwrap();
            assert_eq!(head.framing, framing, "{text:?}");
            assert!(!head.keep_alive, "{text:?}: not trusted again");
            let headers = head.response.headers();
            assert!(!headers.contains_key(CONTENT_LENGTH), "{text:?}");
            assert!(
                headers.contains_key(TRANSFER_ENCODING),
                "stripped later as hop-by-hop"
            );
        }
    }

    #[test]
    fn usual_connection_fields_are_left_out_and_others_kept_for_stripping() {
        let text = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n";
        let head1 = head(text, false).unwrap().unwrap();
        assert!(head1.keep_alive);
        let names: Vec<&str> = head1
            .response
            .headers()
            .keys()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(names, ["x-a", "content-length"]);
        let text =
            "HTTP/1.1 200 OK\r\nConnection: x-hop, close\r\nx-hop: 1\r\ncontent-length: 0\r\n\r\n";
        let head2 = head(text, false).unwrap().unwrap();
        assert!(!head2.keep_alive);
        assert_eq!(head2.response.headers()["connection"], "x-hop, close");
    }

    #[test]
    fn ambiguous_or_broken_heads_are_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
            "HTP/1.1 200 OK\r\n\r\n",
        ] {
            assert!(head(text, false).is_err(), "{text:?}");
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "x: y\r\n".repeat(MAX_FIELDS + 1)
        );
        assert!(matches!(head(&many, false), Err(Error::HeadTooLarge)));
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nhi",
        );
        let head1 = parse_response(&mut buf, &mut FieldSpans::default(), false)
            .unwrap()
            .unwrap();
        let response = head1.response;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-a"], "1");
        assert!(!response.headers().contains_key("link"));
        assert_eq!(head1.framing, Framing::Length(2));
        assert_eq!(&buf[..], b"hi");
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-le", false)
                .unwrap()
                .is_none()
        );
    }

    /// The head `encode_response_head` writes for `response`, with a fixed date.
    fn encoded(
        response: http::response::Builder,
        body_size: Option<u64>,
        head_request: bool,
        close: bool,
    ) -> (String, Outgoing) {
        let (parts, ()) = response.body(()).unwrap().into_parts();
        let mut out = Vec::new();
        let outgoing =
            encode_response_head(&mut out, &parts, body_size, head_request, close, |out| {
                put_field(out, b"date", b"D")
            });
        (String::from_utf8(out).unwrap(), outgoing)
    }

    #[test]
    fn response_heads_declare_the_framing_the_writer_follows() {
        let ok = || Response::builder().status(200);
        assert_eq!(
            encoded(ok().header("x-a", "1"), Some(2), false, false),
            (
                "HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: D\r\ncontent-length: 2\r\n\r\n".into(),
                Outgoing::Length(2)
            )
        );
        assert_eq!(
            encoded(ok().header("date", "X"), None, false, true),
            (
                "HTTP/1.1 200 OK\r\ndate: X\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                    .into(),
                Outgoing::Chunked
            )
        );
        // The declared length wins over the size hint; hop-by-hop framing fields are not
        // copied.
        assert_eq!(
            encoded(
                ok().header("content-length", "5")
                    .header("transfer-encoding", "chunked")
                    .header("connection", "keep-alive"),
                None,
                false,
                false
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: D\r\n\r\n".into(),
                Outgoing::Length(5)
            )
        );
        // Conflicting or unreadable lengths are dropped and the body framed anew.
        for bad in ["5, 6", "+5", "x"] {
            assert_eq!(
                encoded(ok().header("content-length", bad), Some(3), false, false),
                (
                    "HTTP/1.1 200 OK\r\ndate: D\r\ncontent-length: 3\r\n\r\n".into(),
                    Outgoing::Length(3)
                ),
                "{bad}"
            );
        }
        // HEAD and 304 keep their length but send no body; 204 has neither.
        assert_eq!(
            encoded(ok().header("content-length", "9"), Some(0), true, false),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ndate: D\r\n\r\n".into(),
                Outgoing::None
            )
        );
        assert_eq!(
            encoded(
                Response::builder()
                    .status(304)
                    .header("content-length", "9"),
                None,
                false,
                false
            ),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\ndate: D\r\n\r\n".into(),
                Outgoing::None
            )
        );
        assert_eq!(
            encoded(
                Response::builder()
                    .status(204)
                    .header("content-length", "0"),
                Some(0),
                false,
                false
            ),
            (
                "HTTP/1.1 204 No Content\r\ndate: D\r\n\r\n".into(),
                Outgoing::None
            )
        );
        // A status without a canonical reason keeps an empty reason phrase.
        assert_eq!(
            encoded(Response::builder().status(599), Some(0), false, false).0,
            "HTTP/1.1 599 \r\ndate: D\r\ncontent-length: 0\r\n\r\n"
        );
    }
}

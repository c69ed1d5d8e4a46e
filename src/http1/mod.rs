//! The HTTP/1.1 wire codec shared by the server fast path and the upstream exchange.
//!
//! Everything here works on bytes in memory and never touches a socket: head parsing (with
//! httparse, hyper's parser, in place: the parsed fields share the buffer), framing (RFC 9112
//! §6.3), Content-Length, token lists, chunked decoding, and head encoding. The I/O loops live in
//! [`crate::server`] (requests in, responses out) and [`crate::upstream`] (requests out,
//! responses in); both read this one set of rules, so the two paths cannot drift apart.
//!
//! Nothing here allocates per message beyond what a head needs (the header map built over the
//! frozen head, and the request head written upstream): the field lists are reused, numbers are
//! formatted on the stack.

mod chunked;
mod request;
mod response;

use std::ops::Range;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

pub use chunked::{Chunked, Decoded, MAX_CHUNK_LINE, MAX_TRAILER_BYTES, put_chunk_size};
pub use request::{ParsedRequest, RequestSpans, encode_request_head, parse_request};
pub use response::{Framing, Outgoing, ResponseHead, encode_response_head, parse_response};

/// Most header fields parsed in one head (or one trailer section). The server fast path hands a
/// request with more to hyper, which applies `max_headers`; an upstream response with more is
/// refused.
pub const MAX_FIELDS: usize = 128;

/// Why bytes could not be read as HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A head over the field limit (or over the byte limit its reader applies).
    #[error("head over {MAX_FIELDS} fields or its size limit")]
    HeadTooLarge,
    /// The bytes break HTTP/1.1's syntax or framing rules; the text says which.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Whether a comma-separated field value lists `token` (ASCII case-insensitive).
pub fn lists(value: &[u8], token: &[u8]) -> bool {
    elements(value).any(|t| t.eq_ignore_ascii_case(token))
}

/// Whether every element of a comma-separated field value is one of `tokens` (ASCII
/// case-insensitive).
pub fn lists_only(value: &[u8], tokens: &[&[u8]]) -> bool {
    elements(value).all(|t| tokens.iter().any(|k| t.eq_ignore_ascii_case(k)))
}

/// The elements of a comma-separated list (RFC 9110 §5.6.1), without the optional whitespace
/// around them.
pub fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(trim_ows)
}

/// `bytes` without leading and trailing SP and HTAB (RFC 9110 §5.6.3 OWS).
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// One `Content-Length` field value (RFC 9110 §8.6): decimal digits only (no sign, no
/// whitespace inside), at most `u64::MAX`. A list of identical values (`5, 5`: a field repeated
/// and joined by an intermediary) is that value, as in hyper; differing values, an empty value
/// or an empty element are refused.
pub fn content_length(value: &[u8]) -> Result<u64, Error> {
    let mut length = None;
    for element in elements(value) {
        let n = decimal(element).ok_or(Error::Malformed("Content-Length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(Error::Malformed("conflicting Content-Length"));
        }
        length = Some(n);
    }
    length.ok_or(Error::Malformed("Content-Length"))
}

/// The length every `Content-Length` field of a message agrees on; `None` without one.
pub fn content_length_all<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u64>, Error> {
    let mut length = None;
    for value in values {
        let n = content_length(value)?;
        if length.is_some_and(|l| l != n) {
            return Err(Error::Malformed("conflicting Content-Length"));
        }
        length = Some(n);
    }
    Ok(length)
}

/// Decimal digits as a number; `None` for anything else, or on overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether a response with `status` to a request (HEAD or not) has no body whatever its
/// headers say (RFC 9110 §6.4.1): 1xx, 204, 304, and any response to HEAD.
pub fn bodiless(status: StatusCode, head_request: bool) -> bool {
    head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Whether a response with `status` carries no `Content-Length` at all (RFC 9110 §8.6): 1xx and
/// 204. (A 304 or a response to HEAD may send the length the body would have.)
pub fn lengthless(status: StatusCode) -> bool {
    status.is_informational() || status == StatusCode::NO_CONTENT
}

/// Whether `chunked` is the final transfer coding (the last element of the last
/// `Transfer-Encoding` field), the one case where the coding frames the body.
pub fn chunked_is_final(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|b| *b == b',').next())
        .is_some_and(|c| trim_ows(c).eq_ignore_ascii_case(b"chunked"))
}

/// RFC 9112 §6.3: when a response has both `Transfer-Encoding` and `Content-Length`, the
/// encoding frames the body and the length must be removed before the message is relayed (it
/// would cut the body short downstream). Returns whether a length was removed: such a response
/// may be an attempt at response splitting, and its connection is not trusted again.
pub fn drop_length_beside_encoding(headers: &mut HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING) && headers.remove(CONTENT_LENGTH).is_some()
}

/// Writes a header field line.
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in decimal.
pub fn put_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Where the fields of a head parsed in place (httparse) lie in its buffer. The parsed slices
/// borrow the buffer, so the fields are noted as offsets; once the head is cut out of the buffer
/// and frozen, [`FieldSpans::build`] makes a header map that shares its bytes. Kept across heads
/// so the list is allocated once per connection.
#[derive(Debug, Default)]
pub struct FieldSpans {
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl FieldSpans {
    /// Forgets the previous head's fields.
    pub fn clear(&mut self) {
        self.fields.clear();
    }

    /// Notes a field whose `name` and `value` are slices of `buf`.
    pub fn push(&mut self, buf: &[u8], name: &[u8], value: &[u8]) {
        self.fields.push((span(buf, name), span(buf, value)));
    }

    /// The fields as a header map sharing `head`'s bytes, with room for `extra` more; `None` if
    /// a name or value is not one `http` accepts.
    pub fn build(&self, head: &Bytes, extra: usize) -> Option<HeaderMap> {
        let mut headers = HeaderMap::with_capacity(self.fields.len() + extra);
        for (name, value) in &self.fields {
            let name = HeaderName::from_bytes(&head[name.clone()]).ok()?;
            let value = HeaderValue::from_maybe_shared(head.slice(value.clone())).ok()?;
            headers.append(name, value);
        }
        Some(headers)
    }
}

/// Where `part`, a slice of `buf`, lies in it.
pub fn span(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only_and_lists_must_agree() {
        assert_eq!(content_length(b"0"), Ok(0));
        assert_eq!(content_length(b"1"), Ok(1));
        assert_eq!(content_length(b"007"), Ok(7));
        assert_eq!(content_length(b"1,1"), Ok(1));
        assert_eq!(content_length(b"5, 5 ,5"), Ok(5));
        // Whitespace around the value or an element is list syntax (OWS), not part of the
        // number; httparse strips it from field values anyway.
        assert_eq!(content_length(b" 1"), Ok(1));
        assert_eq!(content_length(b"1\t"), Ok(1));
        assert_eq!(
            content_length(b"18446744073709551615"),
            Ok(u64::MAX),
            "the largest u64"
        );
        for refused in [
            &b"1,2"[..],
            b"+1",
            b"-1",
            b"0x5",
            b"1 1",
            b"1.0",
            b"",
            b" ",
            b",",
            b"1,",
            b",1",
            b"1,,1",
            b"18446744073709551616",
            b"99999999999999999999",
            b"1\x0c",
        ] {
            assert!(
                content_length(refused).is_err(),
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
        assert_eq!(content_length_all([&b"5"[..], b"5, 5"]), Ok(Some(5)));
        assert_eq!(content_length_all(std::iter::empty()), Ok(None));
        assert!(content_length_all([&b"5"[..], b"6"]).is_err());
        assert!(content_length_all([&b"5"[..], b"x"]).is_err());
    }

    #[test]
    fn token_lists_match_whole_elements() {
        assert!(lists(b"keep-alive, Close", b"close"));
        assert!(lists(b"close", b"close"));
        assert!(!lists(b"closed", b"close"));
        assert!(!lists(b"", b"close"));
        assert!(lists_only(b"keep-alive, close", &[b"keep-alive", b"close"]));
        assert!(!lists_only(
            b"keep-alive, x-hop",
            &[b"keep-alive", b"close"]
        ));
    }

    #[test]
    fn chunked_counts_only_as_the_final_coding() {
        let headers = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            h
        };
        assert!(chunked_is_final(&headers(&["chunked"])));
        assert!(chunked_is_final(&headers(&["gzip, Chunked "])));
        assert!(chunked_is_final(&headers(&["gzip", "chunked"])));
        assert!(!chunked_is_final(&headers(&["chunked", "gzip"])));
        assert!(!chunked_is_final(&headers(&["chunked, gzip"])));
        assert!(!chunked_is_final(&headers(&[])));

        let mut h = headers(&["chunked"]);
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(drop_length_beside_encoding(&mut h));
        assert!(!h.contains_key(CONTENT_LENGTH));
        assert!(!drop_length_beside_encoding(&mut h));
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(!drop_length_beside_encoding(&mut h));
        assert_eq!(
            h[CONTENT_LENGTH], "5",
            "without an encoding the length stays"
        );
    }

    #[test]
    fn bodiless_statuses() {
        for (status, head, none, no_length) in [
            (100, false, true, true),
            (200, false, false, false),
            (200, true, true, false),
            (204, false, true, true),
            (304, false, true, false),
            (404, false, false, false),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(bodiless(status, head), none, "{status} head={head}");
            assert_eq!(lengthless(status), no_length, "{status}");
        }
    }

    #[test]
    fn decimals_are_written_without_formatting() {
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = b"x".to_vec();
            put_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}

//! The chunked transfer coding (RFC 9112 §7.1): a decoder that takes whatever bytes have
//! arrived, and the chunk-size line for encoding.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{Error, MAX_FIELDS};

/// Most bytes of a chunk-size line (size and extensions).
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most bytes of the trailer section.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    /// The trailer section was read (and any fields passed on): the body has ended.
    Ended,
}

/// What the chunked decoder made of the buffered bytes.
#[derive(Debug)]
pub enum Decoded {
    /// A piece of a chunk's data.
    Data(Bytes),
    /// The trailer fields (the body ends with them).
    Trailers(HeaderMap),
    /// The body ended (with no trailer fields).
    End,
    /// The buffer holds no complete piece: read more.
    NeedMore,
}

impl Chunked {
    /// Decodes the next piece from `buf`, consuming what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
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
                        return Err(Error::Malformed("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let decoded = trailers(buf)?;
                    // With trailer fields or without, the body has ended: what follows is not
                    // the body's, and must never be read as another trailer section.
                    if !matches!(decoded, Decoded::NeedMore) {
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
fn trailers(buf: &mut BytesMut) -> Result<Decoded, Error> {
    if buf.len() < 2 {
        return Ok(Decoded::NeedMore);
    }
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Ok(Decoded::End);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    // The limit holds however the section arrived: whole in one read, or a piece at a time.
    let len = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, _))) if len <= MAX_TRAILER_BYTES => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILER_BYTES => {
            return Ok(Decoded::NeedMore);
        }
        Ok(_) | Err(_) => {
            return Err(Error::Malformed("chunked trailers"));
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
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, Error> {
    match buf
        .iter()
        .take(limit)
        .position(|b| *b == b'\r' || *b == b'\n')
    {
        Some(i) if buf[i] == b'\n' => Err(Error::Malformed("bare LF in chunked body")),
        Some(i) if i + 1 == buf.len() => Ok(None),
        Some(i) if buf[i + 1] == b'\n' => Ok(Some(i)),
        Some(_) => Err(Error::Malformed("bare CR in chunked body")),
        None if buf.len() >= limit => Err(Error::Malformed("chunk-size line too long")),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]`: hex digits, then optionally whitespace and `;extensions`
/// (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 15 || !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(Error::Malformed("chunk size"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, d| {
        n * 16 + u64::from((*d as char).to_digit(16).unwrap_or_default())
    }))
}

/// Writes the chunk-size line for a chunk of `len` bytes: lower-case hex, then CRLF.
pub fn put_chunk_size(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes: the data, the trailers, and whether it ended.
    fn decode_chunked(wire: &[u8], step: usize) -> Result<(Vec<u8>, HeaderMap, bool), Error> {
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
    fn chunked_bodies_end_where_their_last_chunk_says_at_every_boundary() {
        // Bytes after the end stay in the buffer (the connection is then not reused).
        let wire = b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
        let body_len = wire.len() - b"HTTP/1.1 200 OK\r\n".len();
        for step in 1..=wire.len() {
            let mut state = Chunked::Size;
            let mut buf = BytesMut::new();
            let mut data = Vec::new();
            let mut fed = 0;
            let ended_at = 'feed: loop {
                let piece = &wire[fed..(fed + step).min(wire.len())];
                fed += piece.len();
                buf.extend_from_slice(piece);
                loop {
                    match state.decode(&mut buf).unwrap() {
                        Decoded::Data(d) => data.extend_from_slice(&d),
                        Decoded::Trailers(_) => panic!("no trailers were sent"),
                        Decoded::End => break 'feed fed - buf.len(),
                        Decoded::NeedMore if fed < wire.len() => break,
                        Decoded::NeedMore => panic!("step {step}: never ended"),
                    }
                }
            };
            assert_eq!(data, b"abc", "step {step}");
            assert_eq!(ended_at, body_len, "step {step}");
        }
    }

    #[test]
    fn an_ended_body_stays_ended_whatever_follows() {
        for wire in [
            &b"0\r\n\r\n"[..],
            b"0\r\n\r\nx-late: 1\r\n\r\n",
            b"0\r\n\r\n\r\n",
            b"0\r\nx-t: 1\r\n\r\n\r\n",
        ] {
            let mut state = Chunked::Size;
            let mut buf = BytesMut::from(wire);
            let first = state.decode(&mut buf).unwrap();
            assert!(matches!(first, Decoded::End | Decoded::Trailers(_)));
            let left = buf.clone();
            for _ in 0..2 {
                assert!(
                    matches!(state.decode(&mut buf), Ok(Decoded::End)),
                    "{wire:?}"
                );
                assert_eq!(buf, left, "nothing is read after the end");
            }
        }
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
    fn the_trailer_limit_holds_whatever_the_read_boundaries() {
        // A section of exactly the limit (its empty line included) ends the body; one byte more
        // is refused, whether it arrives a piece at a time or complete in one read.
        let section = |len: usize| {
            let value = "v".repeat(len - "x-t: \r\n\r\n".len());
            format!("1\r\na\r\n0\r\nx-t: {value}\r\n\r\n")
        };
        let at_limit = section(MAX_TRAILER_BYTES);
        let over = section(MAX_TRAILER_BYTES + 1);
        for step in [100, 700, at_limit.len(), over.len()] {
            let (data, trailers, clean) = decode_chunked(at_limit.as_bytes(), step).unwrap();
            assert_eq!((&data[..], trailers.len(), clean), (&b"a"[..], 1, true));
            assert!(
                decode_chunked(over.as_bytes(), step).is_err(),
                "step {step}"
            );
        }
    }

    #[test]
    fn chunk_size_lines_are_lower_case_hex() {
        for len in [0, 1, 9, 10, 15, 16, 255, 16 * 1024, usize::MAX] {
            let mut out = Vec::new();
            put_chunk_size(&mut out, len);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{len:x}\r\n"));
        }
    }
}

//! The checks behind the fuzz targets (`fuzz/`) and their regression replay
//! (`tests/fuzz_regressions.rs`): one function per target, taking the raw input and panicking
//! when a property fails. Both the fuzzer and `cargo test` call these, so a property is written
//! once. Not part of the API.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::BytesMut;
use futures_util::FutureExt as _;
use http::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderValue};

use crate::compile::{DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, compile};
use crate::http1::{
    self, Chunked, Decoded, FieldSpans, Framing, MAX_FIELDS, MAX_TRAILER_BYTES, ParsedRequest,
    RequestSpans,
};
use crate::login::cookies::{self, CookieAttrs, CookieKeys};
use crate::login::session::{Session, Sessions, Store};
use crate::metrics::Metrics;
use crate::proxy;
use crate::routes::{self, PathOptions, Semicolons};
use crate::token::{self, Issuers, MAX_TOKEN_BYTES, TokenCache, TokenError};

/// A target's check: returns when the input is fine, panics when a property fails.
pub type Check = fn(&[u8]);

/// Every target, by the name of its fuzz target and of its `fuzz/regressions/` folder.
pub const TARGETS: &[(&str, Check)] = &[
    ("path_normalize", path_normalize),
    ("jwt_parse", jwt_parse),
    ("session_cookie", session_cookie),
    ("forward_auth_uri", forward_auth_uri),
    ("config_check", config_check),
    ("request_head", request_head),
    ("response_head", response_head),
    ("chunked_body", chunked_body),
    ("content_length", content_length),
];

/// Both ways jwtgate can be told to read paths: the defaults, and every option on.
const PATH_OPTIONS: [PathOptions; 2] = [
    PathOptions {
        semicolons: Semicolons::Reject,
        case_insensitive: false,
    },
    PathOptions {
        semicolons: Semicolons::Allow,
        case_insensitive: true,
    },
];

/// The properties of a path normalised with `options`.
fn assert_normal_form(input: &str, out: &str, options: PathOptions) {
    assert!(out.starts_with('/'), "{input:?} -> {out:?}: not absolute");
    assert!(!out.contains("//"), "{input:?} -> {out:?}: empty segment");
    assert!(!out.contains('\\'), "{input:?} -> {out:?}: backslash");
    for dots in ["/./", "/../"] {
        assert!(!out.contains(dots), "{input:?} -> {out:?}: dot segment");
    }
    assert!(
        !out.ends_with("/.") && !out.ends_with("/.."),
        "{input:?} -> {out:?}: final dot segment"
    );
    if options.semicolons == Semicolons::Allow {
        // A segment's name is its part before `;`: never empty, `.` or `..` once normalised.
        for segment in out.split('/').skip(1).filter(|s| s.contains(';')) {
            let name = segment.split(';').next().unwrap_or("");
            assert!(
                !matches!(name, "" | "." | ".."),
                "{input:?} -> {out:?}: dot or empty segment name"
            );
        }
    }
    assert_eq!(
        routes::normalize(out, options).as_deref(),
        Ok(out),
        "{input:?} -> {out:?}: normalising again changes it"
    );
}

/// `routes::normalize` on any UTF-8: its output is in normal form and normalising is idempotent.
pub fn path_normalize(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for options in PATH_OPTIONS {
        if let Ok(out) = routes::normalize(raw, options) {
            assert_normal_form(raw, &out, options);
        }
    }
}

/// The forward-auth original URI (`X-Forwarded-Uri` / `X-Original-URI`): split at the first `?`,
/// the path normalised. The path is in normal form and the query is passed on untouched.
pub fn forward_auth_uri(data: &[u8]) {
    let Ok(uri) = std::str::from_utf8(data) else {
        return;
    };
    for options in PATH_OPTIONS {
        let Ok((path, query)) = proxy::original_target(uri, options) else {
            continue;
        };
        assert_normal_form(uri, &path, options);
        let before_fragment = uri.split('#').next().unwrap_or_default();
        assert_eq!(
            query,
            before_fragment.split_once('?').map(|(_, q)| q),
            "{uri:?}: query"
        );
        assert!(!path.contains('#'), "{uri:?}: fragment in the path");
    }
}

/// A bearer token through the parse step that runs before any key is looked at (split, header
/// and payload decode, `crit`, the `alg` family, the claim types), by way of
/// [`token::verify`] with no issuers configured: nothing can verify, so every outcome is a
/// refusal, and one that gets past parsing is `UnknownIssuer`. No network, no keys. Input
/// that is a valid header value goes through `Authorization` extraction first.
pub fn jwt_parse(data: &[u8]) {
    let mut tokens: Vec<String> = Vec::new();
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        if let Ok(Some(t)) = token::bearer(&headers) {
            tokens.push(t.to_owned());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        tokens.push(text.to_owned());
    }
    for t in &tokens {
        match verify_unconfigured(t) {
            Ok(()) => panic!("{t:?}: verified with no issuers configured"),
            Err(TokenError::Malformed(why)) if t.len() > MAX_TOKEN_BYTES => {
                assert_eq!(why, "token too large", "{} bytes", t.len());
            }
            Err(
                TokenError::Malformed(_)
                | TokenError::CriticalHeader
                | TokenError::AlgorithmNotAllowed
                | TokenError::MissingExp
                | TokenError::UnknownIssuer,
            ) => {}
            Err(e) => panic!("{t:?}: refused for {e:?} before any key was consulted"),
        }
    }
}

/// [`token::verify`] with no issuers configured: how far a token gets before a key is needed
/// (`UnknownIssuer` when it parsed, with known claim types, and passed `crit` and `alg`).
pub fn verify_unconfigured(token: &str) -> Result<(), TokenError> {
    static STATE: OnceLock<(Issuers, TokenCache, Metrics)> = OnceLock::new();
    let (issuers, cache, metrics) =
        STATE.get_or_init(|| (Issuers::default(), TokenCache::new(1 << 20), Metrics::new()));
    token::verify(issuers, cache, metrics, token, token::unix_now())
        .now_or_never()
        .expect("with no issuers, verification never waits") // ok: a fuzz check; a panic is the finding
        .map(drop)
}

/// The session cookie's base name in [`session_cookie`] (ALB's default).
pub const SESSION_COOKIE: &str = "AWSELBAuthSessionCookie";
/// The key [`session_cookie`] opens with. Fuzz inputs never contain a value it sealed.
pub const SESSION_KEY: [u8; 32] = [0x5e; 32];

/// Reads the session the `Cookie` header values carry, as a sign-in route does (cookie store:
/// shard reassembly, then AES-GCM open with [`SESSION_KEY`], then the session JSON).
pub fn open_session(cookie_values: &[HeaderValue], now: i64) -> Option<Session> {
    static SESSIONS: OnceLock<Sessions> = OnceLock::new();
    let sessions = SESSIONS.get_or_init(|| Sessions {
        cookie_name: SESSION_COOKIE.to_owned(),
        purpose: SESSION_COOKIE.to_owned(),
        namespace: String::new(),
        keys: CookieKeys::new(&[SESSION_KEY]),
        attrs: CookieAttrs { secure: true },
        store: Store::Cookie,
    });
    let mut headers = HeaderMap::new();
    for v in cookie_values {
        headers.append(COOKIE, v.clone());
    }
    sessions
        .load(&headers, now)
        .now_or_never()
        .expect("the cookie store never waits") // ok: a fuzz check; a panic is the finding
        .expect("the cookie store never fails") // ok: as above
}

/// Most `Cookie` fields [`session_cookie`] reads: the server's default `max_headers`. (More
/// only slow the fuzzer: `HeaderMap::remove` is quadratic in a field's values when debug
/// assertions are on, as they are in fuzz builds.)
const MAX_COOKIE_FIELDS: usize = 100;

/// `Cookie` header values (one per line of the input) through the session reader: no panic, no
/// session (the input holds nothing sealed with [`SESSION_KEY`]), and once jwtgate's own
/// cookies are stripped for the upstream, no session shard is left.
pub fn session_cookie(data: &[u8]) {
    let values: Vec<HeaderValue> = data
        .split(|b| *b == b'\n')
        .take(MAX_COOKIE_FIELDS)
        .filter_map(|line| HeaderValue::from_bytes(line).ok())
        .collect();
    let session = open_session(&values, token::unix_now());
    assert!(
        session.is_none(),
        "a session from unsealed input: {session:?}"
    );
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(COOKIE, v);
    }
    let _ = cookies::shards_sent(&headers, SESSION_COOKIE);
    cookies::strip_own(&mut headers, SESSION_COOKIE, &[]);
    assert!(
        cookies::read_sharded(&headers, SESSION_COOKIE).is_none(),
        "a shard survived stripping: {headers:?}"
    );
    assert!(cookies::shards_sent(&headers, SESSION_COOKIE).is_empty());
}

/// A config text through the compile step of `jwtgate check`: no panic, and every error is one
/// line shaped `fuzz.toml:LINE:COL: …` with a position inside the text.
pub fn config_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match compile("fuzz.toml", text) {
        Ok(config) => {
            let _ = config.describe();
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without a message");
            let lines = text.split('\n').count();
            for e in &errors.0 {
                assert!(!e.contains('\n'), "error spans lines: {e:?}");
                let rest = e
                    .strip_prefix("fuzz.toml:")
                    .unwrap_or_else(|| panic!("no file: {e:?}"));
                let mut parts = rest.splitn(3, ':');
                let line: usize = parts
                    .next()
                    .and_then(|l| l.parse().ok())
                    .unwrap_or_else(|| panic!("no line: {e:?}"));
                let col: usize = parts
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or_else(|| panic!("no column: {e:?}"));
                let message = parts.next().unwrap_or_else(|| panic!("no message: {e:?}"));
                assert!((1..=lines).contains(&line), "line out of the text: {e:?}");
                assert!(col >= 1, "column 0: {e:?}");
                assert!(
                    message.starts_with(' ') && message.len() > 1,
                    "no message: {e:?}"
                );
            }
        }
    }
}

// The HTTP/1.1 codec (`http1`): every parser that reads bytes from a client or an upstream.

/// Header fields by lower-case name, each name's values in the order they came. (`HeaderMap`
/// groups a name's values together; the order between different names carries no meaning.)
type Fields = BTreeMap<String, Vec<Vec<u8>>>;

fn wire_fields(fields: &[httparse::Header<'_>]) -> Fields {
    let mut out = Fields::new();
    for f in fields {
        out.entry(f.name.to_ascii_lowercase())
            .or_default()
            .push(f.value.to_vec());
    }
    out
}

fn map_fields(headers: &HeaderMap) -> Fields {
    let mut out = Fields::new();
    for (name, value) in headers {
        out.entry(name.as_str().to_owned())
            .or_default()
            .push(value.as_bytes().to_vec());
    }
    out
}

/// Up to 512 bytes of an input, for a failure message (a regression file holds all of it).
fn excerpt(bytes: &[u8]) -> String {
    match bytes.get(..512) {
        Some(start) if bytes.len() > 512 => {
            format!(
                "{}… ({} bytes)",
                String::from_utf8_lossy(start),
                bytes.len()
            )
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// `bytes` without the spaces and tabs around it.
fn trim_sp_tab(bytes: &[u8]) -> &[u8] {
    let inner = |b: &u8| *b != b' ' && *b != b'\t';
    let start = bytes.iter().position(inner).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(inner).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Whether a comma-separated field value names `token` (any case).
fn names(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|e| trim_sp_tab(e).eq_ignore_ascii_case(token.as_bytes()))
}

/// The reference for one `Content-Length` value: comma-separated elements, each decimal digits
/// (spaces and tabs around them allowed) and all the same number, which fits a `u64`.
fn reference_length(value: &[u8]) -> Option<u64> {
    let mut agreed = None;
    for element in value.split(|b| *b == b',') {
        let digits = trim_sp_tab(element);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let first = digits
            .iter()
            .position(|d| *d != b'0')
            .unwrap_or(digits.len());
        let significant = &digits[first..];
        if significant.len() > 20 {
            return None;
        }
        let n = significant
            .iter()
            .fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
        let n = u64::try_from(n).ok()?;
        if agreed.is_some_and(|a| a != n) {
            return None;
        }
        agreed = Some(n);
    }
    agreed
}

/// The reference for all of a message's `Content-Length` values: `None` if one is malformed or
/// two disagree, `Some(None)` without any.
fn reference_length_all(values: &[&[u8]]) -> Option<Option<u64>> {
    let mut agreed = None;
    for value in values {
        let n = reference_length(value)?;
        if agreed.is_some_and(|a| a != n) {
            return None;
        }
        agreed = Some(n);
    }
    Some(agreed)
}

/// `Content-Length` field values (the whole input as one value, and its lines as the values of
/// one message): [`http1::content_length`] and [`http1::content_length_all`] agree with a
/// reference written from RFC 9110 §8.6, and never overflow.
pub fn content_length(data: &[u8]) {
    assert_eq!(
        http1::content_length(data).ok(),
        reference_length(data),
        "{:?}",
        excerpt(data)
    );
    let values: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    assert_eq!(
        http1::content_length_all(values.iter().copied()).ok(),
        reference_length_all(&values),
        "{:?}",
        excerpt(data)
    );
}

/// The `Host` the request check encodes with when the client sent none.
const DEFAULT_HOST: &str = "upstream.test";

/// Bytes a client sent on a fresh connection, through the fast path's head parsing as
/// `server::h1` runs it (the default `max_headers`; request after request while it serves
/// them). Handed to hyper (or incomplete), the buffer holds exactly the bytes it was given.
/// Served, the head taken is a complete head at the start of the input and the rest stays
/// buffered; the request asks nothing beyond a plain bodiless exchange; and its upstream head
/// ([`http1::encode_request_head`]) has no line break inside a field and parses back to the
/// same method, target and fields.
pub fn request_head(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut spans = RequestSpans::default();
    let mut at = 0;
    // As `server::h1` does: parse while bytes are buffered.
    while !buf.is_empty() {
        let rest = &data[at..];
        match http1::parse_request(
            &mut buf,
            DEFAULT_MAX_HEADERS,
            DEFAULT_MAX_HEADER_BYTES,
            &mut spans,
        ) {
            ParsedRequest::Request(req, close) => {
                assert!(buf.len() < rest.len(), "served without taking a byte");
                let used = rest.len() - buf.len();
                assert_eq!(&buf[..], &rest[used..], "the bytes after the head changed");
                check_served(&rest[..used], req, close);
                at += used;
            }
            outcome @ (ParsedRequest::Partial | ParsedRequest::Other) => {
                assert_eq!(&buf[..], rest, "handed over without every byte");
                if let ParsedRequest::Partial = outcome {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
                    let status = httparse::Request::new(&mut fields).parse(rest);
                    assert_eq!(status, Ok(httparse::Status::Partial), "incomplete?");
                }
                // `server::h1` hands a partial head over to hyper past `max_header_bytes`, and
                // otherwise reads on: either way these bytes are all there is.
                return;
            }
        }
    }
}

/// A request the fast path serves, parsed from `head` (the bytes it took).
fn check_served(head: &[u8], req: http::Request<()>, close: bool) {
    let text = excerpt(head);
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut wire = httparse::Request::new(&mut fields);
    assert_eq!(
        wire.parse(head),
        Ok(httparse::Status::Complete(head.len())),
        "{text:?}: served, but not exactly one complete head"
    );
    let (Some(method), Some(target)) = (wire.method, wire.path) else {
        panic!("{text:?}: a complete head without a request line")
    };
    assert_eq!(wire.version, Some(1), "{text:?}: served, not HTTP/1.1");
    assert!(target.starts_with('/'), "{text:?}: not origin form");
    assert_ne!(method, "CONNECT", "{text:?}");
    assert!(
        wire.headers.len() <= DEFAULT_MAX_HEADERS,
        "{text:?}: fields"
    );
    let sent = wire_fields(wire.headers);
    let all = |name: &str| sent.get(name).map_or(&[][..], Vec::as_slice);
    for name in ["transfer-encoding", "expect", "upgrade"] {
        assert!(all(name).is_empty(), "{text:?}: served with {name}");
    }
    let lengths = all("content-length");
    assert!(lengths.len() <= 1, "{text:?}: served with two lengths");
    if let Some(length) = lengths.first() {
        assert_eq!(reference_length(length), Some(0), "{text:?}: a body");
    }
    let connection = all("connection");
    assert!(
        !connection.iter().any(|v| names(v, "upgrade")),
        "{text:?}: served an upgrade"
    );
    assert!(
        !all("te").iter().any(|v| names(v, "trailers")),
        "{text:?}: served with TE: trailers"
    );
    assert_eq!(
        close,
        connection.iter().any(|v| names(v, "close")),
        "{text:?}: close"
    );

    let (parts, ()) = req.into_parts();
    let encoded = http1::encode_request_head(&parts, DEFAULT_HOST);
    let shown = excerpt(&encoded);
    let line_ends = encoded.windows(2).filter(|w| w == b"\r\n").count();
    for byte in [b'\r', b'\n'] {
        assert_eq!(
            encoded.iter().filter(|b| **b == byte).count(),
            line_ends,
            "{text:?} -> {shown:?}: a CR or LF inside a line"
        );
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS + 1];
    let mut again = httparse::Request::new(&mut fields);
    assert_eq!(
        again.parse(&encoded),
        Ok(httparse::Status::Complete(encoded.len())),
        "{text:?} -> {shown:?}: not one complete head"
    );
    assert_eq!(again.method, Some(method), "{text:?} -> {shown:?}");
    // A fragment is not part of a request target (RFC 9112 §3.2); `http`'s `Uri`, and so
    // hyper, drop one: the request is routed and forwarded without it.
    let sent_target = target.split('#').next();
    assert_eq!(again.path, sent_target, "{text:?} -> {shown:?}: target");
    assert_eq!(again.version, Some(1));
    let mut expected = sent;
    expected
        .entry("host".to_owned())
        .or_insert_with(|| vec![DEFAULT_HOST.as_bytes().to_vec()]);
    assert_eq!(
        wire_fields(again.headers),
        expected,
        "{text:?} -> {shown:?}: fields"
    );
}

/// How the reference frames a response body.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the reference makes of a response.
#[derive(Debug)]
enum Expected {
    /// The head is not complete; the interim heads before this offset are read and gone.
    More(usize),
    /// Not a response to relay.
    Refused,
    /// The final head ends at `end`.
    Head {
        status: u16,
        http10: bool,
        end: usize,
        body: Body,
        keep_alive: bool,
        /// The fields as sent.
        fields: Fields,
    },
}

/// The reference for [`http1::parse_response`], written from RFC 9112 §6.3 and the function's
/// documentation (httparse reads each head, as in the codec).
fn expected_response(data: &[u8], head_request: bool) -> Expected {
    let mut at = 0;
    loop {
        if at == data.len() {
            return Expected::More(at);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut head = httparse::Response::new(&mut fields);
        let len = match head.parse(&data[at..]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Expected::More(at),
            Err(_) => return Expected::Refused,
        };
        let status = head.code.unwrap_or_default();
        match status {
            // Not a status code; an upgrade nobody asked for.
            0..=99 | 101 => return Expected::Refused,
            100..=199 => {
                at += len;
                continue;
            }
            _ => {}
        }
        let http10 = head.version == Some(0);
        let values = |name: &str| -> Vec<&[u8]> {
            head.headers
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case(name))
                .map(|f| f.value)
                .collect()
        };
        let encodings = values("transfer-encoding");
        let lengths = values("content-length");
        let close = values("connection").iter().any(|v| names(v, "close"));
        let conflicted = !encodings.is_empty() && !lengths.is_empty();
        let (body, definite) = if head_request || status == 204 || status == 304 {
            (Body::Length(0), true)
        } else if let Some(last) = encodings.last() {
            if http10 {
                return Expected::Refused;
            }
            let final_coding = last.split(|b| *b == b',').next_back().unwrap_or_default();
            if trim_sp_tab(final_coding).eq_ignore_ascii_case(b"chunked") {
                (Body::Chunked, true)
            } else {
                (Body::UntilClose, false)
            }
        } else {
            match reference_length_all(&lengths) {
                Some(Some(n)) => (Body::Length(n), true),
                Some(None) => (Body::UntilClose, false),
                None => return Expected::Refused,
            }
        };
        return Expected::Head {
            status,
            http10,
            end: at + len,
            body,
            keep_alive: definite && !conflicted && !http10 && !close,
            fields: wire_fields(head.headers),
        };
    }
}

/// Arbitrary bytes as an upstream's answer to a GET and to a HEAD, through
/// [`http1::parse_response`]: the outcome is the reference's (RFC 9112 §6.3: interim heads
/// skipped, an unasked 101 refused; 204, 304 and HEAD bodiless; `Transfer-Encoding` over
/// `Content-Length`, which is removed; conflicting lengths refused; keep-alive only with a
/// definite framing and nothing asking to close), the bytes after the head are left for the
/// body, the buffer never grows, and reading the answer in pieces (as the exchange does) gives
/// the same outcome.
pub fn response_head(data: &[u8]) {
    for head_request in [false, true] {
        response_head_to(data, head_request);
    }
}

/// A response head, its framing and what stays buffered, for comparing two readings.
type ReadHead = Option<(http::StatusCode, Framing, bool, Fields, Vec<u8>)>;

fn response_head_to(data: &[u8], head_request: bool) {
    let shown = excerpt(data);
    let mut buf = BytesMut::from(data);
    let mut spans = FieldSpans::default();
    let result = http1::parse_response(&mut buf, &mut spans, head_request);
    assert!(
        data.ends_with(&buf),
        "{shown:?}: the buffer is not what is left of the input"
    );
    let read: Result<ReadHead, http1::Error> = match (result, expected_response(data, head_request))
    {
        (Err(e), Expected::Refused) => Err(e),
        (Ok(None), Expected::More(at)) => {
            assert_eq!(&buf[..], &data[at..], "{shown:?}: consumed");
            Ok(None)
        }
        (
            Ok(Some(head)),
            Expected::Head {
                status,
                http10,
                end,
                body,
                keep_alive,
                fields,
            },
        ) => {
            let why = format!("{shown:?} (HEAD: {head_request})");
            let response = &head.response;
            assert_eq!(response.status(), status, "{why}");
            assert!(!response.status().is_informational(), "{why}");
            assert_eq!(
                response.version() == http::Version::HTTP_10,
                http10,
                "{why}"
            );
            assert_eq!(&buf[..], &data[end..], "{why}: the body's bytes");
            let framed = match head.framing {
                Framing::Length(n) => Body::Length(n),
                Framing::Chunked(Chunked::Size) => Body::Chunked,
                Framing::UntilClose => Body::UntilClose,
                other => panic!("{why}: framing {other:?}"),
            };
            assert_eq!(framed, body, "{why}: framing");
            if head_request || status == 204 || status == 304 {
                assert_eq!(head.framing, Framing::Length(0), "{why}: bodiless");
            }
            assert!(
                !head.keep_alive || matches!(framed, Body::Length(_) | Body::Chunked),
                "{why}: keep-alive without a definite framing"
            );
            assert_eq!(head.keep_alive, keep_alive, "{why}: keep-alive");
            let mut relayed = map_fields(response.headers());
            let encoded = fields.contains_key("transfer-encoding");
            if encoded {
                assert!(
                    !relayed.contains_key("content-length"),
                    "{why}: a length beside an encoding"
                );
                assert!(
                    !head.keep_alive || !fields.contains_key("content-length"),
                    "{why}: trusted after a length beside an encoding"
                );
            }
            assert!(!relayed.contains_key("keep-alive"), "{why}");
            // A `Connection` field naming other fields stays, for the proxy to strip them.
            let connection = relayed.remove("connection").unwrap_or_default();
            let mut sent = fields.clone();
            for value in sent.remove("connection").unwrap_or_default() {
                let named = value.split(|b| *b == b',').map(trim_sp_tab).any(|t| {
                    !t.is_empty()
                        && !t.eq_ignore_ascii_case(b"close")
                        && !t.eq_ignore_ascii_case(b"keep-alive")
                });
                assert!(
                    !named || connection.contains(&value),
                    "{why}: Connection: {:?} dropped",
                    String::from_utf8_lossy(&value)
                );
            }
            sent.remove("keep-alive");
            if encoded {
                sent.remove("content-length");
            }
            assert_eq!(relayed, sent, "{why}: fields");
            Ok(Some((
                response.status(),
                head.framing,
                head.keep_alive,
                map_fields(response.headers()),
                buf.to_vec(),
            )))
        }
        (result, expected) => {
            panic!("{shown:?} (HEAD: {head_request}): {result:?}, expected {expected:?}")
        }
    };

    // As the exchange reads it: what has arrived so far, then more.
    let step = 1 + data.iter().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(*b))
    }) % 64;
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let in_pieces = loop {
        let next = (fed + step).min(data.len());
        buf.extend_from_slice(&data[fed..next]);
        fed = next;
        match http1::parse_response(&mut buf, &mut spans, head_request) {
            Ok(Some(head)) => {
                let mut left = buf.to_vec();
                left.extend_from_slice(&data[fed..]);
                let fields = map_fields(head.response.headers());
                let status = head.response.status();
                break Ok(Some((status, head.framing, head.keep_alive, fields, left)));
            }
            Ok(None) if fed == data.len() => break Ok(None),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
    };
    assert_eq!(
        in_pieces.is_ok(),
        read.is_ok(),
        "{shown:?} (HEAD: {head_request}), in pieces of {step}: {in_pieces:?} / {read:?}"
    );
    if let (Ok(a), Ok(b)) = (&in_pieces, &read) {
        assert_eq!(
            a, b,
            "{shown:?} (HEAD: {head_request}): in pieces of {step}"
        );
    }
}

/// How one feeding of a chunked body went.
#[derive(Debug, PartialEq, Eq)]
struct Decoding {
    data: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
    /// Input bytes consumed up to the end of the last data piece.
    data_end: usize,
    stop: Stop,
}

/// Where a chunked decoding stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// The body ended after this many input bytes.
    Ended(usize),
    /// The decoder refused the body.
    Failed,
    /// The input ran out first.
    NeedMore,
}

/// Feeds `body` to a chunked decoder in reads of the given sizes (the rest at once when they
/// run out), decoding all it can after each read, as the exchange does.
fn decode_in_reads(body: &[u8], mut reads: impl Iterator<Item = usize>) -> Decoding {
    let mut state = Chunked::Size;
    let mut buf = BytesMut::new();
    let mut out = Decoding {
        data: Vec::new(),
        trailers: Vec::new(),
        data_end: 0,
        stop: Stop::NeedMore,
    };
    let mut fed = 0;
    while fed < body.len() {
        let next = (fed + reads.next().unwrap_or(body.len()).max(1)).min(body.len());
        buf.extend_from_slice(&body[fed..next]);
        fed = next;
        loop {
            match state.decode(&mut buf) {
                Ok(Decoded::Data(piece)) => {
                    assert!(!piece.is_empty(), "an empty data piece");
                    out.data.extend_from_slice(&piece);
                    out.data_end = fed - buf.len();
                }
                Ok(decoded @ (Decoded::Trailers(_) | Decoded::End)) => {
                    if let Decoded::Trailers(fields) = decoded {
                        out.trailers = fields
                            .iter()
                            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                            .collect();
                    }
                    let left = buf.len();
                    let after = state.decode(&mut buf);
                    assert!(
                        matches!(after, Ok(Decoded::End)) && buf.len() == left,
                        "after the end, the decoder read on: {after:?}"
                    );
                    out.stop = Stop::Ended(fed - buf.len());
                    return out;
                }
                Ok(Decoded::NeedMore) => break,
                Err(_) => {
                    out.stop = Stop::Failed;
                    return out;
                }
            }
        }
    }
    out
}

/// Arbitrary bytes as a chunked body, split at read boundaries the input's first bytes choose
/// (the first byte: how many reads are chosen, up to 15; each next byte: a read's size, 1 to
/// 256; the rest is the body). Fed whole, a byte at a time and in the chosen reads, the decoder
/// gives the same data, trailers and outcome (ended where, refused, or waiting for more); never
/// more data than input; a trailer section over [`MAX_TRAILER_BYTES`] never ends a body; and
/// once ended, the decoder stays ended.
pub fn chunked_body(data: &[u8]) {
    let count = data.first().map_or(0, |n| usize::from(n % 16));
    let sizes = data.get(1..).unwrap_or_default();
    let (sizes, body) = sizes.split_at(count.min(sizes.len()));
    let chosen = sizes.iter().map(|s| usize::from(*s) + 1);
    let shown = excerpt(body);

    let whole = decode_in_reads(body, std::iter::empty());
    assert!(
        whole.data.len() <= body.len(),
        "{shown:?}: more out than in"
    );
    let one_by_one = decode_in_reads(body, std::iter::repeat(1));
    assert_eq!(one_by_one, whole, "{shown:?}: a byte at a time");
    let in_reads = decode_in_reads(body, chosen);
    assert_eq!(in_reads, whole, "{shown:?}: in reads of {sizes:?}");

    if let Stop::Ended(end) = whole.stop {
        assert!(end <= body.len());
        // The trailer section starts after the last-chunk line (after the last data's CRLF).
        let last_chunk = if whole.data.is_empty() {
            0
        } else {
            whole.data_end + 2
        };
        let line = body[last_chunk..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("{shown:?}: ended without a last-chunk line"));
        let section = end - (last_chunk + line + 2);
        assert!(
            section <= MAX_TRAILER_BYTES,
            "{shown:?}: a trailer section of {section} bytes"
        );
    }
}

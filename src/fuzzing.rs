//! The checks behind the fuzz targets (`fuzz/`) and their regression replay
//! (`tests/fuzz_regressions.rs`): one function per target, taking the raw input and panicking
//! when a property fails. Both the fuzzer and `cargo test` call these, so a property is written
//! once. Not part of the API.

use std::sync::OnceLock;

use futures_util::FutureExt as _;
use http::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderValue};

use crate::compile::compile;
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
        .expect("with no issuers, verification never waits")
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
        .expect("the cookie store never waits")
        .expect("the cookie store never fails")
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

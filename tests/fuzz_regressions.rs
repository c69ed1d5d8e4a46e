//! Replays every input under `fuzz/regressions/<target>/` through the same check the fuzz target
//! runs (`jwtgate::fuzzing`), so CI keeps every input that ever mattered without the fuzzer.

#![allow(clippy::unwrap_used)] // tests panic on purpose

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use bytes::BytesMut;
use http::HeaderValue;
use jwtgate::fuzzing::{self, SESSION_COOKIE, SESSION_KEY, TARGETS};
use jwtgate::http1::{self, Chunked, Decoded, FieldSpans, Framing, ParsedRequest, RequestSpans};
use jwtgate::login::cookies::CookieKeys;
use jwtgate::login::session::Session;
use jwtgate::token::TokenError;

fn regressions() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(regressions().join(target))
        .unwrap_or_else(|e| panic!("fuzz/regressions/{target}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_regression_input_passes_its_check() {
    let mut failed = Vec::new();
    let mut replayed = 0;
    for (target, check) in TARGETS {
        let files = inputs(target);
        assert!(!files.is_empty(), "fuzz/regressions/{target} is empty");
        for file in files {
            let data = std::fs::read(&file).unwrap();
            replayed += 1;
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failed.push(format!(
                    "{target}/{}",
                    file.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    assert!(failed.is_empty(), "failing inputs: {failed:?}");
    assert!(replayed >= TARGETS.len());
}

#[test]
fn every_regression_folder_is_a_target() {
    for entry in std::fs::read_dir(regressions()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/regressions/{name} has no target"
        );
    }
}

// The checks are only worth their silence if they reach the code they claim to: these feed
// each one an input that must get all the way through.

#[test]
fn the_session_check_opens_a_cookie_sealed_with_its_key() {
    let session = Session {
        id: "id".into(),
        sub: "sub".into(),
        claims: serde_json::Map::new(),
        user_info: serde_json::Map::new(),
        access_token: "at".into(),
        refresh_token: None,
        id_token: None,
        access_expires_at: 4_000_000_000,
        expires_at: 4_000_000_000,
    };
    let sealed = CookieKeys::new(&[SESSION_KEY])
        .seal(SESSION_COOKIE, &serde_json::to_vec(&session).unwrap())
        .unwrap();
    let (a, b) = sealed.split_at(sealed.len() / 2);
    let values = [
        HeaderValue::try_from(format!("x=1; {SESSION_COOKIE}-1={b}")).unwrap(),
        HeaderValue::try_from(format!("{SESSION_COOKIE}-0={a}")).unwrap(),
    ];
    let opened = fuzzing::open_session(&values, 1_000).expect("two shards reassembled and opened");
    assert_eq!(opened.sub, "sub");
    assert!(
        fuzzing::open_session(&values, 4_000_000_000).is_none(),
        "expired inside the seal"
    );
    // The fuzz check itself refuses this input: it would be a session from outside.
    let input = format!(
        "{}\n{}",
        values[0].to_str().unwrap(),
        values[1].to_str().unwrap()
    );
    assert!(catch_unwind(|| fuzzing::session_cookie(input.as_bytes())).is_err());
}

#[test]
fn the_jwt_check_parses_a_well_formed_token_up_to_the_issuer_lookup() {
    let token = std::fs::read_to_string(regressions().join("jwt_parse/access_rs256.jwt")).unwrap();
    assert_eq!(
        fuzzing::verify_unconfigured(token.trim()),
        Err(TokenError::UnknownIssuer)
    );
    let too_large = "a".repeat(jwtgate::token::MAX_TOKEN_BYTES + 1);
    assert_eq!(
        fuzzing::verify_unconfigured(&too_large),
        Err(TokenError::Malformed("token too large"))
    );
}

#[test]
fn the_config_check_compiles_the_demo_config() {
    let demo = std::fs::read_to_string(regressions().join("config_check/demo.toml")).unwrap();
    jwtgate::compile::compile("demo.toml", &demo).expect("the demo config compiles");
}

#[test]
fn the_request_check_sees_requests_served_and_handed_over() {
    let parse = |file: &str| {
        let data = std::fs::read(regressions().join("request_head").join(file)).unwrap();
        let mut buf = BytesMut::from(&data[..]);
        let mut spans = RequestSpans::default();
        let mut served = 0;
        while let ParsedRequest::Request(..) =
            http1::parse_request(&mut buf, 100, 64 * 1024, &mut spans)
        {
            served += 1;
        }
        (served, buf.len())
    };
    assert_eq!(parse("pipelined.http"), (3, 0), "three requests served");
    assert_eq!(parse("browser.http"), (1, 0));
    assert_eq!(
        parse("fragment.http"),
        (1, 0),
        "served without its fragment"
    );
    let post = std::fs::metadata(regressions().join("request_head/post_body.http")).unwrap();
    assert_eq!(
        parse("post_body.http"),
        (0, post.len() as usize),
        "to hyper"
    );
}

#[test]
fn the_response_check_sees_every_framing() {
    for (file, framing) in [
        ("ok_length.http", Framing::Length(12)),
        ("early_hints.http", Framing::Length(2)),
        ("chunked.http", Framing::Chunked(Chunked::Size)),
        ("te_and_length.http", Framing::Chunked(Chunked::Size)),
        ("te_gzip_only.http", Framing::UntilClose),
        ("not_modified.http", Framing::Length(0)),
    ] {
        let data = std::fs::read(regressions().join("response_head").join(file)).unwrap();
        let head = http1::parse_response(
            &mut BytesMut::from(&data[..]),
            &mut FieldSpans::default(),
            false,
        )
        .unwrap()
        .unwrap_or_else(|| panic!("{file}: incomplete"));
        assert_eq!(head.framing, framing, "{file}");
    }
}

#[test]
fn the_chunked_check_decodes_bodies_to_their_end() {
    let data = std::fs::read(regressions().join("chunked_body/extensions_trailers.bin")).unwrap();
    // The first byte chooses two read sizes, the next two are those sizes.
    let mut buf = BytesMut::from(&data[3..]);
    let (mut state, mut body) = (Chunked::Size, Vec::new());
    let trailers = loop {
        match state.decode(&mut buf).unwrap() {
            Decoded::Data(d) => body.extend_from_slice(&d),
            Decoded::Trailers(t) => break t,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(body, b"hello, world");
    assert_eq!(trailers["x-sum"], "42");
}

#[test]
fn the_content_length_check_reaches_both_ends_of_the_range() {
    let read = |file: &str| std::fs::read(regressions().join("content_length").join(file)).unwrap();
    assert_eq!(http1::content_length(&read("u64_max.txt")), Ok(u64::MAX));
    assert!(http1::content_length(&read("u64_max_plus_one.txt")).is_err());
    assert_eq!(http1::content_length(&read("many_zeros.txt")), Ok(1));
}

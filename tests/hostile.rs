//! Hostile tokens and headers: each gets a 401 with a short reason, none reaches the upstream,
//! and none makes jwtgate fetch anything it was not configured to fetch.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

fn b64(v: &Value) -> String {
    B64.encode(v.to_string())
}

/// Replaces the signature segment.
fn with_signature(token: &str, signature: &[u8]) -> String {
    let cut = token.rfind('.').unwrap();
    format!("{}.{}", &token[..cut], B64.encode(signature))
}

async fn refused(env: &Env, name: &str, token: &str, description: &str) {
    let res = env.get("/orders/1", Some(token)).await;
    assert_eq!(res.status(), 401, "{name}");
    let challenge = www_authenticate(&res);
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{name}: {challenge}"
    );
    assert!(
        challenge.contains(description),
        "{name}: expected {description:?} in {challenge}"
    );
    assert_eq!(res.text().await.unwrap(), r#"{"message":"Unauthorized"}"#);
}

#[tokio::test]
async fn forged_algorithms_are_refused() {
    let env = Env::start().await;
    let kid = env.issuer.default_kid();
    let claims = env.access_claims("alice");
    let unsigned = format!("{}.{}", b64(&json!({"alg":"none","kid":kid})), b64(&claims));
    refused(
        &env,
        "alg none, empty signature",
        &format!("{unsigned}."),
        "signing algorithm not allowed",
    )
    .await;
    refused(
        &env,
        "alg none, no signature segment",
        &unsigned,
        "not a JWS compact token",
    )
    .await;
    let unsigned = format!("{}.{}", b64(&json!({"alg":"NONE","kid":kid})), b64(&claims));
    refused(
        &env,
        "alg NONE",
        &format!("{unsigned}."),
        "signing algorithm not allowed",
    )
    .await;

    // HS256 "signed" with the RSA public key: the classic key-confusion attack.
    let public = env.issuer.key(&kid).unwrap();
    let jwk_n = public.jwk()["n"].as_str().unwrap().to_owned();
    for secret in [
        public.public_bytes(),
        jwk_n.into_bytes(),
        public.jwk().to_string().into_bytes(),
    ] {
        let input = format!(
            "{}.{}",
            b64(&json!({"alg":"HS256","kid":kid,"typ":"JWT"})),
            b64(&claims)
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        let token = format!("{input}.{}", B64.encode(tag.as_ref()));
        refused(
            &env,
            "HS256 with the public key",
            &token,
            "signing algorithm not allowed",
        )
        .await;
    }
    // RS256 header on a token whose kid names an EC key.
    env.issuer.add_key(Algorithm::ES256, "ec", false);
    let ec = env.issuer.key("ec").unwrap();
    let token = sign_with(&ec, &json!({"alg":"RS256","kid":"ec"}), &claims);
    refused(
        &env,
        "alg does not fit the key",
        &token,
        "algorithm does not match the key",
    )
    .await;
    // PS256 with an RSA key published as RS256 only.
    let rsa = env.issuer.key(&kid).unwrap();
    let token = sign_with(&rsa, &json!({"alg":"PS256","kid":kid}), &claims);
    refused(
        &env,
        "PS256 with an RS256 key",
        &token,
        "algorithm does not match the key",
    )
    .await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn a_cached_token_vouches_for_no_other_signature() {
    let env = Env::start().await;
    let good = env.access("alice");
    // Verified twice, a token is cached; the third request is answered from the cache.
    for _ in 0..3 {
        assert_eq!(env.get("/orders/1", Some(&good)).await.status(), 200);
    }
    let hits = env.upstream.hits();
    let mut sig = B64.decode(good.rsplit('.').next().unwrap()).unwrap();
    sig[10] ^= 0x40;
    refused(
        &env,
        "the cached token's header and payload with another signature",
        &with_signature(&good, &sig),
        "invalid signature",
    )
    .await;
    assert_eq!(env.upstream.hits(), hits);
    assert_eq!(env.get("/orders/1", Some(&good)).await.status(), 200);
}

#[tokio::test]
async fn broken_signatures_are_refused() {
    let env = Env::start().await;
    let good = env.access("alice");
    let sig = B64.decode(good.rsplit('.').next().unwrap()).unwrap();
    refused(
        &env,
        "truncated signature",
        &with_signature(&good, &sig[..sig.len() - 1]),
        "invalid signature",
    )
    .await;
    refused(
        &env,
        "empty signature",
        &with_signature(&good, &[]),
        "invalid signature",
    )
    .await;
    for bit in [0, 7, 100, sig.len() * 8 - 1] {
        let mut flipped = sig.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        refused(
            &env,
            "bit-flipped signature",
            &with_signature(&good, &flipped),
            "invalid signature",
        )
        .await;
    }
    // A changed payload under the original signature.
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["cognito:groups"] = json!(["admins", "superusers"]);
    let payload = b64(&claims);
    parts[1] = &payload;
    refused(
        &env,
        "tampered payload",
        &parts.join("."),
        "invalid signature",
    )
    .await;
    // ECDSA: all-zero signature (r = s = 0, "psychic signatures") and a DER signature.
    env.issuer.add_key(Algorithm::ES256, "ec", true);
    let ec_token = env.access("alice");
    assert_eq!(
        env.get("/orders/1", Some(&ec_token)).await.status(),
        200,
        "genuine ES256 first"
    );
    refused(
        &env,
        "ES256 zero signature",
        &with_signature(&ec_token, &[0u8; 64]),
        "invalid signature",
    )
    .await;
    refused(
        &env,
        "ES256 short signature",
        &with_signature(&ec_token, &[1u8; 32]),
        "invalid signature",
    )
    .await;
    let der = {
        let raw = B64.decode(ec_token.rsplit('.').next().unwrap()).unwrap();
        let int = |b: &[u8]| {
            let mut v = b.to_vec();
            if v[0] & 0x80 != 0 {
                v.insert(0, 0);
            }
            let mut out = vec![0x02, v.len() as u8];
            out.extend(v);
            out
        };
        let (r, s) = (int(&raw[..32]), int(&raw[32..]));
        let mut out = vec![0x30, (r.len() + s.len()) as u8];
        out.extend(r);
        out.extend(s);
        out
    };
    refused(
        &env,
        "ES256 DER signature",
        &with_signature(&ec_token, &der),
        "invalid signature",
    )
    .await;
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let env = Env::start_with("", "[server]\nmax_header_bytes = 131072\n").await;
    let kid = env.issuer.default_kid();
    let key = env.issuer.key(&kid).unwrap();
    let claims = env.access_claims("alice");
    let header = json!({"alg":"RS256","kid":kid});
    let sign_raw = |payload: &[u8]| {
        let input = format!("{}.{}", b64(&header), B64.encode(payload));
        format!("{input}.{}", B64.encode(key.sign(input.as_bytes())))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "abc.def.ghi".into(), "malformed token"),
        ("one segment", "abc".into(), "not a JWS compact token"),
        (
            "JWE (five segments)",
            "a.b.c.d.e".into(),
            "not a JWS compact token",
        ),
        (
            "non-JSON payload, validly signed",
            sign_raw(b"not json at all"),
            "payload is not a JSON object",
        ),
        (
            "JSON array payload",
            sign_raw(b"[1,2,3]"),
            "payload is not a JSON object",
        ),
        (
            "exp as a string",
            sign_raw(
                json!({"iss": env.issuer.issuer(), "exp": "tomorrow", "client_id": DEMO_CLIENT_ID})
                    .to_string()
                    .as_bytes(),
            ),
            "exp is not a number",
        ),
        (
            "padding in segments",
            format!("{}=", env.access("alice")),
            "signature is not base64url",
        ),
        (
            "standard base64 alphabet",
            env.access("alice").replace('-', "+").replace('_', "/"),
            "malformed token",
        ),
        (
            "critical header",
            sign_with(
                &key,
                &json!({"alg":"RS256","kid":kid,"crit":["exp"],"exp":1}),
                &claims,
            ),
            "unsupported critical header",
        ),
        (
            "oversized token (40 KB of claims)",
            {
                let mut big = claims.clone();
                big["padding"] = json!("x".repeat(40_000));
                env.issuer.sign(&big)
            },
            "token too large",
        ),
    ];
    for (name, token, description) in cases {
        refused(&env, name, &token, description).await;
    }
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn embedded_keys_and_key_urls_in_the_header_are_ignored() {
    let env = Env::start().await;
    // The attacker's own key, advertised in the token header three ways.
    let attacker = jwtgate::dev::issuer::SigningKey::generate(Algorithm::RS256, "attacker");
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}/jwks.json", trap.local_addr().unwrap());
    let header = json!({"alg":"RS256","kid":"attacker","jwk": attacker.jwk(),"jku": trap_url,"x5u": trap_url});
    let token = sign_with(&attacker, &header, &env.access_claims("alice"));
    refused(&env, "jwk/jku/x5u header", &token, "unknown signing key").await;
    // Same kid as the real key, signed by the attacker.
    let real_kid = env.issuer.default_kid();
    let header = json!({"alg":"RS256","kid":real_kid,"jwk": attacker.jwk(),"jku": trap_url});
    let token = sign_with(&attacker, &header, &env.access_claims("alice"));
    refused(
        &env,
        "real kid, attacker signature",
        &token,
        "invalid signature",
    )
    .await;
    // Nothing ever connected to the URL in the header.
    let accepted = tokio::time::timeout(std::time::Duration::from_millis(200), trap.accept()).await;
    assert!(
        accepted.is_err(),
        "jwtgate fetched a URL named by the token"
    );
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn hostile_authorization_headers() {
    let env = Env::start().await;
    let token = env.access("alice");
    let send = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap() };
    // Two Authorization headers: ambiguous, refused.
    let res = send(
        env.http
            .get(env.proxy.url("/orders/1"))
            .header("authorization", format!("Bearer {token}"))
            .header("authorization", "Bearer other"),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert!(www_authenticate(&res).contains("more than one Authorization header"));
    // Another scheme is no bearer token at all.
    let res = send(
        env.http
            .get(env.proxy.url("/orders/1"))
            .basic_auth("alice", Some("pw")),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(www_authenticate(&res), r#"Bearer realm="jwtgate""#);
    // Non-ASCII bytes in the header.
    let raw = format!(
        "GET /orders/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \u{e9}{token}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(env.proxy.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(env.upstream.hits(), 0);
}

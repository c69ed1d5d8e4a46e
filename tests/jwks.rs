//! Key handling against a live issuer: rotation without restart, the unknown-kid refetch limit,
//! an issuer that goes down (before and after start), revocation, discovery.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use jwtgate::dev::echo::EchoUpstream;
use jwtgate::dev::issuer::DevIssuer;
use serde_json::json;

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn a_key_rotated_in_at_the_issuer_is_accepted_without_restart() {
    let env = Env::start().await;
    assert_eq!(
        env.get("/orders/1", Some(&env.access("alice")))
            .await
            .status(),
        200
    );
    let fetches = env.issuer.jwks_fetches();
    env.issuer.add_key(Algorithm::RS256, "rsa-rotated", true);
    let token = env.access("alice");
    assert_eq!(env.get("/orders/1", Some(&token)).await.status(), 200);
    assert_eq!(
        env.issuer.jwks_fetches(),
        fetches + 1,
        "one refetch for the new kid"
    );
    // Other algorithms the issuer allows rotate in the same way.
    env.issuer.add_key(Algorithm::ES256, "ec-rotated", true);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let res = env.get("/orders/1", Some(&env.access("bob"))).await;
    // Within 10 s of the previous unknown-kid fetch the refetch is refused (rate limit) ...
    assert_eq!(res.status(), 401);
    assert!(www_authenticate(&res).contains("unknown signing key"));
}

#[tokio::test]
async fn unknown_kid_floods_cause_at_most_one_fetch_per_window() {
    let env = Env::start().await;
    let before = env.issuer.jwks_fetches();
    let key = env.issuer.key(&env.issuer.default_kid()).unwrap();
    let claims = env.access_claims("alice");
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            sign_with(
                &key,
                &json!({"alg":"RS256","kid":format!("random-{i}-{}", uuid::Uuid::new_v4())}),
                &claims,
            )
        })
        .collect();
    let mut statuses = Vec::new();
    for chunk in tokens.chunks(50) {
        let batch = chunk.iter().map(|t| env.get("/orders/1", Some(t)));
        for res in futures_util::future::join_all(batch).await {
            statuses.push(res.status().as_u16());
        }
    }
    assert!(
        statuses.iter().all(|s| *s == 401),
        "every unknown kid is refused"
    );
    let fetched = env.issuer.jwks_fetches() - before;
    assert!(
        fetched <= 1,
        "1000 unknown kids caused {fetched} key set fetches"
    );
    let m = env.proxy.metrics().await;
    assert!(
        m.contains("jwtgate_jwks_refetch_suppressed_total{issuer=\"dev\"}"),
        "{m}"
    );
    assert!(
        m.contains(r#"jwtgate_auth_failures_total{reason="unknown_kid",route="orders"} 1000"#),
        "{m}"
    );
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn issuer_down_with_keys_cached_keeps_serving() {
    let env = Env::start().await;
    env.issuer.set_down(true);
    // A token never seen before (not in the verified-token cache) still verifies.
    assert_eq!(
        env.get("/orders/1", Some(&env.access("bob")))
            .await
            .status(),
        200
    );
    // An unknown kid is refused (401, not 503: the issuer's keys are known).
    env.issuer.add_key(Algorithm::RS256, "while-down", true);
    assert_eq!(
        env.get("/orders/1", Some(&env.access("bob")))
            .await
            .status(),
        401
    );
    let ready = reqwest::get(env.proxy.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "keys are still loaded");
    let m = env.proxy.metrics().await;
    assert!(
        m.contains(r#"jwtgate_jwks_fetches_total{issuer="dev",result="http_status"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn issuer_down_at_start_is_503_then_recovers() {
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let upstream = EchoUpstream::start().await.unwrap();
    issuer.set_down(true);
    let proxy = TestProxy::start(&config(&issuer, &upstream.url(), "", "")).await;
    let http = client();
    eventually("a failed first fetch", async || issuer.jwks_fetches() >= 1).await;
    let ready = http.get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.text().await.unwrap(),
        r#"{"issuers":{"dev":false},"status":"not ready"}"#
    );
    let token = issuer.sign(&issuer.access_token(alice()));
    let res = http
        .get(proxy.url("/orders/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "the token may be good: not a 401");
    assert_eq!(res.headers()["retry-after"], "5");
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"message":"Service Unavailable"}"#
    );
    // Anonymous routes do not depend on keys.
    assert_eq!(
        http.get(proxy.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    issuer.set_down(false);
    eventually("recovery", async || {
        http.get(proxy.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    let res = http
        .get(proxy.url("/orders/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn a_key_withdrawn_by_the_issuer_stops_verifying_cached_tokens() {
    let env = Env::start_with(r#"refresh_interval = "1s""#, "").await;
    env.issuer.add_key(Algorithm::RS256, "soon-revoked", true);
    let token = env.access("alice");
    assert_eq!(env.get("/orders/1", Some(&token)).await.status(), 200);
    assert_eq!(
        env.get("/orders/1", Some(&token)).await.status(),
        200,
        "now cached"
    );
    env.issuer.remove_key("soon-revoked");
    let fetches = env.issuer.jwks_fetches();
    eventually("a background refresh", async || {
        env.issuer.jwks_fetches() >= fetches + 2
    })
    .await;
    let res = env.get("/orders/1", Some(&token)).await;
    assert_eq!(res.status(), 401);
    assert!(www_authenticate(&res).contains("unknown signing key"));
}

#[tokio::test]
async fn every_supported_algorithm_verifies() {
    let env = Env::start().await;
    for (alg, kid) in [
        (Algorithm::PS256, "ps"),
        (Algorithm::ES256, "es256"),
        (Algorithm::ES384, "es384"),
        (Algorithm::EdDSA, "ed"),
        (Algorithm::RS256, "rs"),
    ] {
        env.issuer.add_key(alg, kid, false);
    }
    // One refetch picks all of them up.
    let claims = env.access_claims("alice");
    for kid in ["ps", "es256", "es384", "ed", "rs"] {
        let key = env.issuer.key(kid).unwrap();
        let token = sign_with(
            &key,
            &json!({"alg": format!("{:?}", key.alg), "kid": kid}),
            &claims,
        );
        let res = env.get("/orders/1", Some(&token)).await;
        assert_eq!(res.status(), 200, "{kid}: {}", www_authenticate(&res));
    }
    assert_eq!(env.upstream.hits(), 5);
}

#[tokio::test]
async fn algorithms_outside_the_allow_list_are_refused_even_with_a_published_key() {
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let upstream = EchoUpstream::start().await.unwrap();
    issuer.add_key(Algorithm::ES256, "ec", false);
    let toml = format!(
        r#"
[upstream]
url = "{}"
[[issuers]]
name = "rs-only"
issuer = "{}"
jwks_uri = "{}"
audiences = ["{DEMO_CLIENT_ID}"]
[[routes]]
path = "/**"
"#,
        upstream.url(),
        issuer.issuer(),
        issuer.jwks_uri()
    );
    let proxy = TestProxy::start_ready(&toml).await;
    let key = issuer.key("ec").unwrap();
    let token = sign_with(
        &key,
        &json!({"alg":"ES256","kid":"ec"}),
        &issuer.access_token(alice()),
    );
    let res = client()
        .get(proxy.url("/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(www_authenticate(&res).contains("signing algorithm not allowed"));
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn keys_are_found_through_openid_discovery() {
    let issuer = DevIssuer::start("us-east-1_DISC").await.unwrap();
    let upstream = EchoUpstream::start().await.unwrap();
    let toml = |iss: &str| {
        format!(
            r#"
[upstream]
url = "{}"
[[issuers]]
name = "disc"
issuer = "{iss}"
audiences = ["{DEMO_CLIENT_ID}"]
[[routes]]
path = "/**"
"#,
            upstream.url()
        )
    };
    let proxy = TestProxy::start_ready(&toml(issuer.issuer())).await;
    let token = issuer.sign(&issuer.access_token(alice()));
    let res = client()
        .get(proxy.url("/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // A discovery document naming another issuer is refused: no keys, not ready.
    let wrong = format!("{}/", issuer.issuer());
    let proxy = TestProxy::start(&toml(&wrong)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = reqwest::get(proxy.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let m = proxy.metrics().await;
    assert!(
        m.contains(r#"jwtgate_jwks_fetches_total{issuer="disc",result="http_status"}"#)
            || m.contains(r#"result="invalid""#),
        "{m}"
    );
}

#[tokio::test]
async fn unconfigured_issuers_cost_no_network_call() {
    let env = Env::start().await;
    let before = env.issuer.jwks_fetches();
    let mut claims = env.access_claims("alice");
    claims["iss"] = json!("https://attacker.example/pool");
    for i in 0..20 {
        let key = env.issuer.key(&env.issuer.default_kid()).unwrap();
        let token = sign_with(&key, &json!({"alg":"RS256","kid":format!("k{i}")}), &claims);
        assert_eq!(env.get("/orders/1", Some(&token)).await.status(), 401);
    }
    assert_eq!(env.issuer.jwks_fetches(), before);
}

#[tokio::test]
async fn twenty_reloads_under_load_fail_no_request() {
    let env = Env::start().await;
    let toml = config(&env.issuer, &env.upstream.url(), "", "");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (http, url, token, stop) = (
            env.http.clone(),
            env.proxy.url("/orders/1"),
            env.access("alice"),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(res) if res.status() == 200 => ok += 1,
                    Ok(res) => failed.push(res.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    for i in 0..20 {
        // Alternate between two different but valid configs (an extra route every other time).
        let text = if i % 2 == 0 {
            format!("{toml}\n[[routes]]\npath = \"/extra-{i}\"\nauth = \"none\"\n")
        } else {
            toml.clone()
        };
        let config = jwtgate::compile::compile("reload.toml", &text).unwrap();
        env.proxy.shared.install(config).unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        let (ok, failed) = client.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during reloads: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 20, "the load ran throughout ({total} requests)");
    assert_eq!(
        env.issuer.jwks_fetches(),
        1,
        "the issuer's keys survived every reload"
    );
}

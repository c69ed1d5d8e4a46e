//! CORS like API Gateway's: preflights answered without a token, CORS headers on every answer
//! (jwtgate's 401 included) for allowed origins, or preflights passed to the upstream.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use common::*;

const CORS: &str = r#"
[[routes]]
name = "legacy"
path = "/legacy/**"
preflight = "forward"

[cors]
allow_origins = ["https://app.example"]
allow_headers = ["authorization", "content-type", "x-trace"]
expose_headers = ["x-request-id"]
max_age = "5m"
allow_credentials = true
"#;

fn preflight(env: &Env, path: &str, origin: &str) -> reqwest::RequestBuilder {
    env.http
        .request(reqwest::Method::OPTIONS, env.proxy.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
}

#[tokio::test]
async fn preflights_are_answered_without_a_token_and_answers_carry_cors_headers() {
    let env = Env::start_with("", CORS).await;
    let res = preflight(&env, "/orders/1", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(
        h["access-control-allow-methods"],
        "GET, POST, PUT, PATCH, DELETE, HEAD"
    );
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, content-type, x-trace"
    );
    assert_eq!(h["access-control-max-age"], "300");
    assert_eq!(h["access-control-allow-credentials"], "true");
    // Other origins get no CORS headers: the browser refuses.
    let res = preflight(&env, "/orders/1", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert_eq!(env.upstream.hits(), 0, "preflights answered by jwtgate");

    // The refusal itself is readable by the page.
    let res = env
        .http
        .get(env.proxy.url("/orders/1"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        res.headers()["access-control-expose-headers"],
        "x-request-id"
    );
    let res = env
        .http
        .get(env.proxy.url("/orders/1"))
        .header("origin", "https://app.example")
        .bearer_auth(env.access("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(res.headers().get_all("vary").iter().any(|v| v == "Origin"));
    let res = env
        .http
        .get(env.proxy.url("/orders/1"))
        .header("origin", "https://evil.example")
        .bearer_auth(env.access("alice"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn routes_can_pass_preflights_to_the_upstream() {
    let env = Env::start_with("", CORS).await;
    let res = preflight(&env, "/legacy/x", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the echo upstream answered");
    let got = env.upstream.last().unwrap();
    assert_eq!(got.method, "OPTIONS");
    assert!(got.headers.get("x-user-sub").is_none());
    // A plain OPTIONS (not a preflight) still needs a token.
    let res = env
        .http
        .request(reqwest::Method::OPTIONS, env.proxy.url("/legacy/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn without_cors_settings_a_preflight_is_an_ordinary_request() {
    let env = Env::start().await;
    let res = preflight(&env, "/orders/1", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

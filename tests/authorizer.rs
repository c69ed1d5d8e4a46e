//! The status matrix of bearer routes: what is allowed, what is 401, 403 or 404, and what the
//! upstream receives.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn valid_access_token_reaches_upstream_with_claim_headers() {
    let env = Env::start().await;
    let res = env.get("/orders/42?x=1", Some(&env.access("alice"))).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let got = env.upstream.last().unwrap();
    assert_eq!(got.uri, "/orders/42?x=1");
    assert_eq!(got.headers["x-user-sub"], alice().sub);
    assert_eq!(
        got.headers["x-user-groups"], "admins,users",
        "arrays are joined by ','"
    );
    assert_eq!(got.headers["x-username"], "alice");
    assert_eq!(got.headers["x-scope"], alice().scope);
    assert_eq!(got.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got.headers["x-forwarded-proto"], "http");
    assert!(
        got.headers.contains_key("authorization"),
        "forwarded by default"
    );
    // The all-claims header is the verified payload, base64url JSON.
    use base64::Engine;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(got.headers["x-jwt-claims"].as_bytes())
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(claims["username"], "alice");
}

#[tokio::test]
async fn missing_token_is_401_without_error_code() {
    let env = Env::start().await;
    let res = env.get("/orders/42", None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(www_authenticate(&res), r#"Bearer realm="jwtgate""#);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.text().await.unwrap(), r#"{"message":"Unauthorized"}"#);
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn each_validation_failure_is_401_invalid_token() {
    let env = Env::start().await;
    let now = jwtgate::token::unix_now();
    let base = env.access_claims("alice");
    let with = |patch: serde_json::Value| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        env.issuer.sign(&c)
    };
    let cases = [
        ("expired", with(json!({"exp": now - 120})), "token expired"),
        ("expired within leeway is fine", String::new(), ""),
        (
            "not yet valid",
            with(json!({"nbf": now + 3600})),
            "token not yet valid",
        ),
        (
            "issued in the future",
            with(json!({"iat": now + 3600})),
            "token not yet valid",
        ),
        ("no exp", with(json!({"exp": null})), "missing exp claim"),
        (
            "wrong issuer",
            with(json!({"iss": "https://evil.example/us-east-1_TEST"})),
            "untrusted issuer",
        ),
        (
            "issuer with trailing slash",
            with(json!({"iss": format!("{}/", env.issuer.issuer())})),
            "untrusted issuer",
        ),
        (
            "wrong client_id",
            with(json!({"client_id": "someone-else"})),
            "audience not allowed",
        ),
        (
            "aud present and wrong, client_id right",
            with(json!({"aud": "someone-else"})),
            "audience not allowed",
        ),
        (
            "no aud, no client_id",
            with(json!({"client_id": null})),
            "audience not allowed",
        ),
    ];
    for (name, token, description) in cases {
        if token.is_empty() {
            continue;
        }
        let res = env.get("/orders/1", Some(&token)).await;
        assert_eq!(res.status(), 401, "{name}");
        let challenge = www_authenticate(&res);
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{name}: {challenge}"
        );
        assert!(
            challenge.contains(&format!(r#"error_description="{description}""#)),
            "{name}: {challenge}"
        );
        assert_eq!(
            res.text().await.unwrap(),
            r#"{"message":"Unauthorized"}"#,
            "{name}"
        );
    }
    // Inside the 60 s leeway an expired token still passes.
    let res = env
        .get("/orders/1", Some(&with(json!({"exp": now - 30}))))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        env.upstream.hits(),
        1,
        "only the in-leeway request got through"
    );
}

#[tokio::test]
async fn wrong_token_use_is_401_not_403() {
    let env = Env::start().await;
    // An ID token where the route wants an access token: the client needs another token.
    let res = env.get("/orders/1", Some(&env.id("alice"))).await;
    assert_eq!(res.status(), 401);
    assert!(www_authenticate(&res).contains(r#"error_description="wrong token_use""#));
    // And the other way round.
    let res = env.get("/me", Some(&env.access("alice"))).await;
    assert_eq!(res.status(), 401);
    let res = env.get("/me", Some(&env.id("alice"))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn scope_group_and_claim_failures_are_403() {
    let env = Env::start().await;
    // carol: no orders scope.
    let res = env.get("/orders/1", Some(&env.access("carol"))).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        www_authenticate(&res),
        r#"Bearer realm="jwtgate", error="insufficient_scope", scope="orders/read orders/admin""#
    );
    assert_eq!(res.text().await.unwrap(), r#"{"message":"Forbidden"}"#);
    // bob: orders/read but not orders/write (scopes_all on POST).
    let res = env
        .http
        .post(env.proxy.url("/orders/1"))
        .bearer_auth(env.access("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // alice has both.
    let res = env
        .http
        .post(env.proxy.url("/orders/1"))
        .bearer_auth(env.access("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // bob is not in admins; carol has no cognito:groups claim at all.
    for name in ["bob", "carol"] {
        let res = env.get("/admin/users", Some(&env.access(name))).await;
        assert_eq!(res.status(), 403, "{name}");
        assert_eq!(
            www_authenticate(&res),
            r#"Bearer realm="jwtgate", error="insufficient_scope""#
        );
    }
    assert_eq!(
        env.get("/admin/users", Some(&env.access("alice")))
            .await
            .status(),
        200
    );
    // Claim matchers: ID tokens carry email_verified=true and cognito:username.
    assert_eq!(
        env.get("/verified/x", Some(&env.id("bob"))).await.status(),
        200
    );
    assert_eq!(
        env.get("/verified/x", Some(&env.id("carol")))
            .await
            .status(),
        403
    );
    // Access tokens have no email_verified claim.
    assert_eq!(
        env.get("/verified/x", Some(&env.access("alice")))
            .await
            .status(),
        403
    );
    assert_eq!(env.upstream.hits(), 3);
}

#[tokio::test]
async fn scopes_compare_whole_words() {
    let env = Env::start().await;
    let mut claims = env.access_claims("carol");
    claims["scope"] = json!("orders/reader xorders/read orders/read/x");
    let res = env.get("/orders/1", Some(&env.issuer.sign(&claims))).await;
    assert_eq!(res.status(), 403);
    claims["scope"] = json!("openid orders/admin");
    assert_eq!(
        env.get("/orders/1", Some(&env.issuer.sign(&claims)))
            .await
            .status(),
        200
    );
    // `scp` as an array (other issuers) works too.
    claims.as_object_mut().unwrap().remove("scope");
    claims["scp"] = json!(["orders/read"]);
    assert_eq!(
        env.get("/orders/1", Some(&env.issuer.sign(&claims)))
            .await
            .status(),
        200
    );
}

/// RFC 6749 §3.3: scopes are separated by spaces (%x20) only. A tab inside the claim does not
/// split it, so `"api/read\tapi/admin"` grants neither scope.
#[tokio::test]
async fn only_a_space_separates_scopes() {
    let extra = r#"
[[routes]]
name = "scoped-admin"
path = "/scoped-admin/**"
scopes_any = ["api/admin"]

[[routes]]
name = "scoped-read"
path = "/scoped-read/**"
scopes_any = ["api/read"]
"#;
    let env = Env::start_with("", extra).await;
    let mut claims = env.access_claims("carol");
    for odd in [
        "api/read\tapi/admin",
        "api/read\napi/admin",
        "api/read\u{a0}api/admin",
    ] {
        claims["scope"] = json!(odd);
        let token = env.issuer.sign(&claims);
        for path in ["/scoped-admin/x", "/scoped-read/x"] {
            let res = env.get(path, Some(&token)).await;
            assert_eq!(res.status(), 403, "{odd:?} on {path}");
            assert!(www_authenticate(&res).contains("insufficient_scope"));
        }
    }
    // `scp` as a string follows the same rule.
    claims.as_object_mut().unwrap().remove("scope");
    claims["scp"] = json!("api/read\tapi/admin");
    let res = env
        .get("/scoped-read/x", Some(&env.issuer.sign(&claims)))
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(env.upstream.hits(), 0);
    // Spaces (repeated ones too) do separate.
    claims["scp"] = json!("  api/read   api/admin ");
    let token = env.issuer.sign(&claims);
    for path in ["/scoped-admin/x", "/scoped-read/x"] {
        assert_eq!(env.get(path, Some(&token)).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn unmatched_paths_are_404_and_methods_filter_routes() {
    let env = Env::start().await;
    let res = env.get("/nothing/here", Some(&env.access("alice"))).await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.text().await.unwrap(), r#"{"message":"Not Found"}"#);
    assert_eq!(
        env.get("/items/7/detail", Some(&env.access("carol")))
            .await
            .status(),
        200
    );
    assert_eq!(
        env.get("/items/7/other", Some(&env.access("carol")))
            .await
            .status(),
        404
    );
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn bearer_prefix_is_optional_like_api_gateway() {
    let env = Env::start().await;
    let res = env
        .http
        .get(env.proxy.url("/orders/1"))
        .header("authorization", env.access("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn optional_and_none_routes() {
    let env = Env::start().await;
    assert_eq!(env.get("/public/x", None).await.status(), 200);
    assert!(
        env.upstream
            .last()
            .unwrap()
            .headers
            .get("x-user-sub")
            .is_none()
    );
    assert_eq!(
        env.get("/public/x", Some(&env.access("bob")))
            .await
            .status(),
        200
    );
    assert_eq!(env.upstream.last().unwrap().headers["x-username"], "bob");
    // A bad token on an optional route is still refused.
    assert_eq!(
        env.get("/public/x", Some("abc.def.ghi")).await.status(),
        401
    );
    assert_eq!(env.get("/health", Some("garbage")).await.status(), 200);
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let env = Env::start().await;
    let spoof = |req: reqwest::RequestBuilder| {
        req.header("x-user-sub", "evil")
            .header("X-User-Groups", "admins")
            .header("x-jwt-claims", "e30")
            .header("x-amzn-oidc-identity", "evil")
            .header("x-amzn-oidc-data", "evil")
            .header("x-amzn-oidc-accesstoken", "evil")
            .header("x-forwarded-for", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
    };
    // Anonymous route: stripped, nothing added.
    let res = spoof(env.http.get(env.proxy.url("/health")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = env.upstream.last().unwrap();
    for h in [
        "x-user-sub",
        "x-user-groups",
        "x-jwt-claims",
        "x-amzn-oidc-identity",
        "x-amzn-oidc-data",
        "x-amzn-oidc-accesstoken",
        "forwarded",
    ] {
        assert!(
            got.headers.get(h).is_none(),
            "{h} leaked on an anonymous route"
        );
    }
    assert_eq!(
        got.headers["x-forwarded-for"], "127.0.0.1",
        "untrusted peers cannot set X-Forwarded-For"
    );
    // Authenticated route: replaced by the verified values.
    let res = spoof(
        env.http
            .get(env.proxy.url("/orders/1"))
            .bearer_auth(env.access("bob")),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let got = env.upstream.last().unwrap();
    assert_eq!(
        got.headers.get_all("x-user-sub").iter().collect::<Vec<_>>(),
        [user("bob").unwrap().sub]
    );
    assert_eq!(got.headers["x-user-groups"], "users");
    assert!(got.headers.get("x-amzn-oidc-identity").is_none());
    // Optional route without a token: stripped too.
    spoof(env.http.get(env.proxy.url("/public/x")))
        .send()
        .await
        .unwrap();
    assert!(
        env.upstream
            .last()
            .unwrap()
            .headers
            .get("x-user-sub")
            .is_none()
    );
}

#[tokio::test]
async fn metrics_count_requests_and_auth_failures_by_route_and_reason() {
    let env = Env::start().await;
    env.get("/orders/1", Some(&env.access("alice"))).await;
    env.get("/orders/1", None).await;
    env.get("/admin/x", Some(&env.access("bob"))).await;
    env.get("/nope", None).await;
    let m = env.proxy.metrics().await;
    assert!(
        m.contains(
            r#"jwtgate_requests_total{decision="allow",method="GET",route="orders",status="200"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"jwtgate_auth_failures_total{reason="missing_token",route="orders"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"jwtgate_auth_failures_total{reason="missing_group",route="admin"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"jwtgate_requests_total{decision="deny",method="GET",route="_unmatched",status="404"} 1"#), "{m}");
    assert!(
        m.contains(r#"jwtgate_jwks_fetches_total{issuer="dev",result="ok"} 1"#),
        "{m}"
    );
    assert!(m.contains("jwtgate_request_duration_seconds_bucket"), "{m}");
    assert!(!m.contains("/orders/1"), "raw paths never become labels");
}

#[tokio::test]
async fn repeat_tokens_hit_the_cache_and_still_expire() {
    let env = Env::start().await;
    let token = env.access("alice");
    for _ in 0..5 {
        assert_eq!(env.get("/orders/1", Some(&token)).await.status(), 200);
    }
    // Admitted on its second verification; the three requests after that are hits.
    let m = env.proxy.metrics().await;
    assert!(m.contains("jwtgate_token_cache_hits_total 3"), "{m}");
    assert!(m.contains("jwtgate_token_cache_misses_total 2"), "{m}");
    assert!(m.contains("jwtgate_token_cache_entries 1"), "{m}");
    // Tokens used once are verified, never cached.
    for n in 0..20 {
        let mut claims = env.access_claims("alice");
        claims["jti"] = json!(format!("one-off-{n}"));
        let one_off = env.issuer.sign(&claims);
        assert_eq!(env.get("/orders/1", Some(&one_off)).await.status(), 200);
    }
    let m = env.proxy.metrics().await;
    assert!(m.contains("jwtgate_token_cache_entries 1"), "{m}");
    // Expired tokens are refused every time (never cached as good).
    let mut claims = env.access_claims("alice");
    claims["exp"] = json!(jwtgate::token::unix_now() - 61);
    let expired = env.issuer.sign(&claims);
    assert_eq!(env.get("/orders/1", Some(&expired)).await.status(), 401);
    assert_eq!(env.get("/orders/1", Some(&expired)).await.status(), 401);
}

#[tokio::test]
async fn route_issuer_lists_limit_who_may_call() {
    let other = jwtgate::dev::issuer::DevIssuer::start("us-east-1_OTHER")
        .await
        .unwrap();
    let extra_issuer = format!(
        r#"
[[issuers]]
name = "other"
issuer = "{}"
jwks_uri = "{}"
audiences = ["{DEMO_CLIENT_ID}"]
"#,
        other.issuer(),
        other.jwks_uri()
    );
    let extra = r#"
[[routes]]
name = "dev-only"
path = "/dev-only"
issuers = ["dev"]
"#;
    let env = Env::start_with(&extra_issuer, extra).await;
    let theirs = other.sign(&other.access_token(alice()));
    // Both issuers are trusted in general ...
    assert_eq!(
        env.get("/items/1/detail", Some(&theirs)).await.status(),
        200
    );
    // ... a token's iss picks its issuer (a token signed by one issuer's key with the other's
    // iss fails the signature check) ...
    let mut forged = env.access_claims("alice");
    forged["iss"] = json!(other.issuer());
    assert_eq!(
        env.get("/items/1/detail", Some(&env.issuer.sign(&forged)))
            .await
            .status(),
        401
    );
    // ... and the route limit is 401 (the wrong token for this route, not a permission).
    let res = env.get("/dev-only", Some(&theirs)).await;
    assert_eq!(res.status(), 401);
    assert!(www_authenticate(&res).contains("untrusted issuer"));
    assert_eq!(
        env.get("/dev-only", Some(&env.access("alice")))
            .await
            .status(),
        200
    );
}

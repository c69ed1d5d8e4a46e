//! Tenant isolation through the real binary: a route's `{tenant}` capture bound to the token's
//! `custom:tenant` claim, the captured value sent upstream in a header the client cannot forge,
//! and per-route path rewriting, observed in the exact bytes the upstream receives. Requests go
//! over raw sockets so the request line reaches jwtgate as written (`..`, `%61`).

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use common::binary::BinaryProxy;
use common::recorder::Recorder;
use common::*;
use jwtgate::dev::issuer::DevIssuer;
use serde_json::json;

const TENANT_ROUTES: &str = r#"
[[routes]]
name = "tenants"
path = "/tenants/{tenant}/**"
claims = { "custom:tenant" = "{tenant}" }
capture_headers = { "X-Tenant-Id" = "tenant" }

[[routes]]
name = "orgs"
path = "/orgs/{org}/**"
claims = { "custom:tenant" = ["{org}", "admin"] }

[[routes]]
name = "shop"
path = "/shop/**"
auth = "none"
strip_prefix = "/shop"
add_prefix = "/v1"

[[routes]]
name = "people"
path = "/people/{person}"
auth = "none"
capture_headers = { "x-person" = "person" }

[forward_auth]
path = "/auth"
"#;

struct Setup {
    issuer: DevIssuer,
    upstream: Recorder,
    proxy: BinaryProxy,
}

/// The standard routes and these, behind an upstream URL with its own path prefix (`/base`).
async fn setup() -> Setup {
    setup_with("").await
}

/// [`setup`], with `extra` TOML (a `[paths]` table).
async fn setup_with(extra: &str) -> Setup {
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let upstream = Recorder::start().await;
    let toml = config(
        &issuer,
        &format!("{}/base", upstream.url()),
        "",
        &format!("{TENANT_ROUTES}{extra}"),
    );
    let proxy = BinaryProxy::start(&toml).await;
    Setup {
        issuer,
        upstream,
        proxy,
    }
}

impl Setup {
    /// Alice's access token with `custom:tenant` set to `tenant` (a string or an array).
    fn token(&self, tenant: serde_json::Value) -> String {
        let mut claims = self.issuer.access_token(user("alice").unwrap());
        claims["custom:tenant"] = tenant;
        self.issuer.sign(&claims)
    }

    /// Sends `GET target` as written, with `fields`; the status, the response head and what
    /// the upstream received (at most one request).
    async fn get(
        &self,
        target: &str,
        token: Option<&str>,
        fields: &[(&str, &str)],
    ) -> (u16, String, Option<String>) {
        self.upstream.take();
        let mut head = format!("GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n");
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in fields {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let answer = raw_exchange(self.proxy.addr, head.as_bytes()).await;
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no response to {target}: {answer:?}"));
        let response_head = answer.split("\r\n\r\n").next().unwrap().to_owned();
        let mut seen = self.upstream.take();
        assert!(seen.len() <= 1, "{seen:?}");
        (status, response_head, seen.pop())
    }
}

/// The request line the upstream received.
fn request_line(request: &str) -> &str {
    request.lines().next().unwrap()
}

/// Every value of header `name` in a request or response head.
fn fields<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

#[tokio::test]
async fn a_token_reaches_its_own_tenant_only_however_the_path_is_spelled() {
    let s = setup().await;
    let acme = s.token(json!("acme"));
    for (target, forwarded) in [
        ("/tenants/acme/x", "/base/tenants/acme/x"),
        ("/tenants/%61cme/x", "/base/tenants/acme/x"),
        ("/tenants/globex/../acme/x", "/base/tenants/acme/x"),
        (
            "/tenants/globex/%2e%2e/acme/x?q=1",
            "/base/tenants/acme/x?q=1",
        ),
        ("//tenants/./acme", "/base/tenants/acme"),
    ] {
        let (status, _, seen) = s.get(target, Some(&acme), &[]).await;
        assert_eq!(status, 200, "{target}");
        let seen = seen.unwrap();
        assert_eq!(
            request_line(&seen),
            format!("GET {forwarded} HTTP/1.1"),
            "{target}"
        );
        assert_eq!(fields(&seen, "x-tenant-id"), ["acme"], "{target}");
    }
    for target in [
        "/tenants/globex/x",
        "/tenants/acme/../globex/x",
        "/tenants/%67lobex/x",
        "/tenants/ACME/x",
        "/tenants/acme%20/x",
        "/tenants/%FF/x",
    ] {
        let (status, head, seen) = s.get(target, Some(&acme), &[]).await;
        assert_eq!(status, 403, "{target}");
        assert!(seen.is_none(), "{target} reached the upstream");
        assert_eq!(
            fields(&head, "www-authenticate"),
            [r#"Bearer realm="jwtgate", error="insufficient_scope""#]
        );
    }
    // No token, or one without the claim.
    assert_eq!(s.get("/tenants/acme/x", None, &[]).await.0, 401);
    let bare = s
        .issuer
        .sign(&s.issuer.access_token(user("alice").unwrap()));
    assert_eq!(s.get("/tenants/acme/x", Some(&bare), &[]).await.0, 403);
    let metrics = s.proxy.metrics().await;
    assert!(
        metrics
            .contains(r#"jwtgate_auth_failures_total{reason="claim_mismatch",route="tenants"} 7"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn claim_arrays_match_on_any_element_and_literals_still_count() {
    let s = setup().await;
    let two = s.token(json!(["globex", "acme"]));
    assert_eq!(s.get("/tenants/acme/x", Some(&two), &[]).await.0, 200);
    assert_eq!(s.get("/tenants/globex/x", Some(&two), &[]).await.0, 200);
    assert_eq!(s.get("/tenants/initech/x", Some(&two), &[]).await.0, 403);
    // `["{org}", "admin"]`: the captured value, or the literal one.
    assert_eq!(s.get("/orgs/acme/x", Some(&two), &[]).await.0, 200);
    assert_eq!(s.get("/orgs/initech/x", Some(&two), &[]).await.0, 403);
    let admin = s.token(json!("admin"));
    assert_eq!(s.get("/orgs/initech/x", Some(&admin), &[]).await.0, 200);
    assert_eq!(s.get("/tenants/initech/x", Some(&admin), &[]).await.0, 403);
    let number = s.token(json!(42));
    assert_eq!(s.get("/tenants/42/x", Some(&number), &[]).await.0, 200);
}

#[tokio::test]
async fn capture_headers_cannot_be_forged_by_the_client() {
    let s = setup().await;
    let acme = s.token(json!("acme"));
    let forged = [
        ("X-Tenant-Id", "globex"),
        ("x-tenant-id", "initech"),
        ("X_Tenant_Id", "globex"),
        ("x-person", "mallory"),
    ];
    let (status, _, seen) = s.get("/tenants/acme/x", Some(&acme), &forged).await;
    assert_eq!(status, 200);
    let seen = seen.unwrap();
    assert_eq!(fields(&seen, "x-tenant-id"), ["acme"], "{seen}");
    assert!(fields(&seen, "x_tenant_id").is_empty(), "{seen}");
    assert!(
        fields(&seen, "x-person").is_empty(),
        "another route's capture header is stripped too: {seen}"
    );
    // On a route that sets no capture header, and on an anonymous one, none passes.
    for target in ["/health", "/shop/x"] {
        let (status, _, seen) = s.get(target, None, &forged).await;
        assert_eq!(status, 200, "{target}");
        let seen = seen.unwrap();
        for (name, _) in forged {
            assert!(fields(&seen, name).is_empty(), "{target} {name}: {seen}");
        }
    }
}

#[tokio::test]
async fn a_captured_value_that_is_no_header_value_is_refused() {
    let s = setup().await;
    let (status, _, seen) = s.get("/people/a%20b", None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(fields(&seen.unwrap(), "x-person"), ["a b"]);
    let (status, _, seen) = s.get("/people/%C3%A9", None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        fields(&seen.unwrap(), "x-person"),
        ["é"],
        "sent as its UTF-8 bytes"
    );
    for target in [
        "/people/a%0Ab",
        "/people/a%0D%0AX-Evil:%201",
        "/people/%09",
        "/people/%20a",
        "/people/%7F",
        "/people/%FF",
    ] {
        let (status, _, seen) = s.get(target, None, &[]).await;
        assert_eq!(status, 400, "{target}");
        assert!(seen.is_none(), "{target} reached the upstream");
    }
    let metrics = s.proxy.metrics().await;
    assert!(
        metrics.contains(r#"jwtgate_rejections_total{reason="bad_capture",route="people"} 6"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn routes_strip_and_add_path_prefixes_and_keep_the_query() {
    let s = setup().await;
    for (target, forwarded) in [
        ("/shop/items?x=1&y=%2F", "/base/v1/items?x=1&y=%2F"),
        ("/shop/items/", "/base/v1/items/"),
        ("/shop", "/base/v1"),
        ("/shop/", "/base/v1/"),
        ("/shop/a/../b", "/base/v1/b"),
        ("/shop/%61", "/base/v1/a"),
        ("/shop?q", "/base/v1?q"),
    ] {
        let (status, _, seen) = s.get(target, None, &[]).await;
        assert_eq!(status, 200, "{target}");
        assert_eq!(
            request_line(&seen.unwrap()),
            format!("GET {forwarded} HTTP/1.1"),
            "{target}"
        );
    }
    // Routes without a rewrite are forwarded as before.
    let (_, _, seen) = s.get("/health?x", None, &[]).await;
    assert_eq!(request_line(&seen.unwrap()), "GET /base/health?x HTTP/1.1");
}

#[tokio::test]
async fn forward_auth_checks_captures_of_the_original_path() {
    let s = setup().await;
    let acme = s.token(json!("acme"));
    let (status, head, seen) = s.get("/auth/tenants/acme/x", Some(&acme), &[]).await;
    assert_eq!(status, 200);
    assert!(seen.is_none(), "forward-auth answers itself");
    assert_eq!(fields(&head, "x-tenant-id"), ["acme"], "{head}");
    let (status, _, _) = s
        .get("/auth/tenants/globex/../acme/x", Some(&acme), &[])
        .await;
    assert_eq!(status, 200);
    for target in ["/auth/tenants/globex/x", "/auth/tenants/acme/../globex/x"] {
        let (status, head, _) = s.get(target, Some(&acme), &[]).await;
        assert_eq!(status, 403, "{target}");
        assert!(fields(&head, "x-tenant-id").is_empty(), "{head}");
    }
}

#[tokio::test]
async fn parameters_and_case_insensitive_literals_never_fold_captured_values() {
    let s = setup_with("\n[paths]\nsemicolons = \"allow\"\ncase_insensitive = true\n").await;
    let acme = s.token(json!("acme"));
    for (target, forwarded) in [
        ("/TENANTS/acme/x", "/base/TENANTS/acme/x"),
        ("/tenants/acme;v=1/x", "/base/tenants/acme;v=1/x"),
        ("/tenants/globex/..;/acme/x", "/base/tenants/acme/x"),
    ] {
        let (status, _, seen) = s.get(target, Some(&acme), &[]).await;
        assert_eq!(status, 200, "{target}");
        let seen = seen.unwrap();
        assert_eq!(request_line(&seen), format!("GET {forwarded} HTTP/1.1"));
        assert_eq!(fields(&seen, "x-tenant-id"), ["acme"], "{target}");
    }
    for target in [
        "/tenants/ACME/x",
        "/tenants/Acme;v=1/x",
        "/tenants/acme/..;/globex/x",
        "/tenants/globex;acme/x",
    ] {
        let (status, _, seen) = s.get(target, Some(&acme), &[]).await;
        assert_eq!(status, 403, "{target}");
        assert!(seen.is_none(), "{target}");
    }
    // The strip drops the matched segment whatever its case and parameters.
    for (target, forwarded) in [
        ("/SHOP/items", "/base/v1/items"),
        ("/Shop;jsessionid=1/items;x?q=1", "/base/v1/items;x?q=1"),
    ] {
        let (status, _, seen) = s.get(target, None, &[]).await;
        assert_eq!(status, 200, "{target}");
        assert_eq!(
            request_line(&seen.unwrap()),
            format!("GET {forwarded} HTTP/1.1")
        );
    }
}

//! External authorizers through the real binary: API Gateway's Lambda-authorizer contract
//! (payload format 2.0; simple and IAM-policy answers) over HTTP and Envoy's HTTP ext_authz,
//! with decision caching. The authorizer is a local HTTP endpoint that records each call; the
//! upstream records what it receives.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;
#[path = "common/authorizer.rs"]
mod endpoint;

use std::time::Duration;

use common::binary::BinaryProxy;
use common::recorder::Recorder;
use common::*;
use endpoint::{AuthorizerEndpoint, Seen, Silent, json};
use jwtgate::dev::issuer::DevIssuer;
use serde_json::json;

/// `[[authorizers]]` and routes that use them, after the standard routes.
fn routes(authorizers: &str) -> String {
    format!(
        r#"
{authorizers}

[[routes]]
name = "pets"
path = "/pets/{{petId}}"
auth = "none"
authorizer = "lambda"

[[routes]]
name = "toys"
path = "/toys/**"
auth = "none"
authorizer = "lambda"

[[routes]]
name = "books"
path = "/books/{{bookId}}"
authorizer = "lambda"
"#
    )
}

/// A simple-response Lambda authorizer: allows the token `allow` (and `allow-pets` only on
/// the pets route), with a context.
fn simple(seen: &Seen) -> endpoint::Answer {
    let event = seen.event();
    let token = event["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    let route_key = event["routeKey"].as_str().unwrap_or_default();
    let allowed = token == "allow" || (token == "allow-pets" && route_key == "GET /pets/{petId}");
    json(json!({
        "isAuthorized": allowed,
        "context": { "tenantId": "t-42", "level": 3, "ok": true },
    }))
}

fn lambda_table(url: &str, extra: &str) -> String {
    format!(
        r#"
[[authorizers]]
name = "lambda"
type = "lambda"
url = "{url}"
identity_source = ["$request.header.Authorization"]
context_headers = {{ "x-tenant" = "tenantId", "x-level" = "level" }}
{extra}
"#
    )
}

struct Setup {
    issuer: DevIssuer,
    upstream: Recorder,
    proxy: BinaryProxy,
}

async fn setup(authorizers: &str) -> Setup {
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let upstream = Recorder::start().await;
    let proxy =
        BinaryProxy::start(&config(&issuer, &upstream.url(), "", &routes(authorizers))).await;
    Setup {
        issuer,
        upstream,
        proxy,
    }
}

impl Setup {
    async fn get(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut req = client().get(format!("http://{}{path}", self.proxy.addr));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        req.send().await.unwrap()
    }

    /// The value of one metric series line, 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        self.proxy
            .metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0.0)
    }
}

#[tokio::test]
async fn simple_allow_deny_and_context_headers() {
    let lambda = AuthorizerEndpoint::start(simple).await;
    let s = setup(&lambda_table(&lambda.url("/authorize"), "")).await;

    let res = client()
        .get(format!("http://{}/pets/7?x=1&x=2", s.proxy.addr))
        .header("authorization", "allow")
        .header("x-tenant", "forged")
        .header("cookie", "theme=dark; AWSELBAuthSessionCookie-0=secret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let upstream = s.upstream.take();
    assert_eq!(upstream.len(), 1);
    let head = upstream[0].to_ascii_lowercase();
    assert!(head.contains("x-tenant: t-42\r\n"), "{head}");
    assert!(head.contains("x-level: 3\r\n"), "{head}");
    assert!(
        !head.contains("forged"),
        "the client's copy is stripped: {head}"
    );

    // The event, as API Gateway's payload format 2.0 has it.
    let event = lambda.seen()[0].event();
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["type"], "REQUEST");
    assert_eq!(event["routeKey"], "GET /pets/{petId}");
    assert_eq!(
        event["routeArn"],
        "arn:aws:execute-api:local:000000000000:jwtgate/$default/GET/pets/7"
    );
    assert_eq!(event["identitySource"], json!(["allow"]));
    assert_eq!(event["rawPath"], "/pets/7");
    assert_eq!(event["rawQueryString"], "x=1&x=2");
    assert_eq!(event["queryStringParameters"], json!({"x": "1,2"}));
    assert_eq!(event["pathParameters"], json!({"petId": "7"}));
    assert_eq!(event["requestContext"]["http"]["method"], "GET");
    assert_eq!(event["requestContext"]["http"]["path"], "/pets/7");
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(event["requestContext"]["routeKey"], "GET /pets/{petId}");
    assert_eq!(event["requestContext"]["stage"], "$default");
    assert!(event["requestContext"]["timeEpoch"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(event["requestContext"]["requestId"].as_str().unwrap().len() > 8);
    assert!(
        event["requestContext"].get("authorizer").is_none(),
        "no JWT on this route"
    );
    // Cookies as API Gateway sends them, without jwtgate's own sign-in cookies (none are
    // configured here, so only the client's other cookies are checked).
    assert!(
        event["cookies"]
            .as_array()
            .unwrap()
            .contains(&json!("theme=dark"))
    );
    assert!(event["headers"].get("cookie").is_none());

    // Denied: 403 as API Gateway answers, the upstream never called.
    let res = s.get("/pets/8", Some("deny")).await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.text().await.unwrap(), r#"{"message":"Forbidden"}"#);
    assert!(s.upstream.take().is_empty());
    assert_eq!(
        s.metric(r#"jwtgate_authorizer_calls_total{authorizer="lambda",result="deny"}"#)
            .await,
        1.0
    );
    assert_eq!(
        s.metric(r#"jwtgate_auth_failures_total{reason="authorizer_denied",route="pets"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn missing_identity_source_is_401_without_a_call() {
    let lambda = AuthorizerEndpoint::start(simple).await;
    let s = setup(&lambda_table(&lambda.url("/"), "")).await;
    let res = s.get("/pets/1", None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.text().await.unwrap(), r#"{"message":"Unauthorized"}"#);
    // An empty value counts as missing, as in API Gateway.
    assert_eq!(s.get("/pets/1", Some("")).await.status(), 401);
    assert_eq!(lambda.calls(), 0);
    assert!(s.upstream.take().is_empty());
}

#[tokio::test]
async fn cache_hits_make_no_call_and_the_key_holds_the_route() {
    let lambda = AuthorizerEndpoint::start(simple).await;
    let s = setup(&lambda_table(&lambda.url("/"), "")).await;
    assert_eq!(s.get("/pets/1", Some("allow-pets")).await.status(), 200);
    assert_eq!(s.get("/pets/1", Some("allow-pets")).await.status(), 200);
    // Another path of the same route: the same key.
    assert_eq!(s.get("/pets/2", Some("allow-pets")).await.status(), 200);
    assert_eq!(lambda.calls(), 1, "cache hits make no call");
    // The allow for the pets route does not open the toys route: a call of its own, denied.
    assert_eq!(s.get("/toys/a/b", Some("allow-pets")).await.status(), 403);
    assert_eq!(lambda.calls(), 2);
    assert_eq!(lambda.seen()[1].event()["routeKey"], "GET /toys/{proxy+}");
    assert_eq!(
        lambda.seen()[1].event()["pathParameters"],
        json!({"proxy": "a/b"})
    );
    // Denials are cached too.
    assert_eq!(s.get("/toys/a/b", Some("allow-pets")).await.status(), 403);
    assert_eq!(lambda.calls(), 2);
    assert_eq!(
        s.metric(r#"jwtgate_authorizer_cache_total{authorizer="lambda",result="hit"}"#)
            .await,
        3.0
    );
    assert_eq!(
        s.metric(r#"jwtgate_authorizer_cache_entries{authorizer="lambda"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn cache_key_identity_reuses_a_decision_across_routes_as_api_gateway_does() {
    let lambda = AuthorizerEndpoint::start(simple).await;
    let s = setup(&lambda_table(&lambda.url("/"), "cache_key = \"identity\"")).await;
    assert_eq!(s.get("/pets/1", Some("allow-pets")).await.status(), 200);
    // API Gateway's documented footgun, kept as an explicit option.
    assert_eq!(s.get("/toys/x", Some("allow-pets")).await.status(), 200);
    assert_eq!(lambda.calls(), 1);
}

#[tokio::test]
async fn decisions_expire_after_ttl_and_never_outlive_the_jwt() {
    let lambda = AuthorizerEndpoint::start(simple).await;
    let s = setup(&lambda_table(&lambda.url("/"), "ttl = \"1s\"")).await;
    assert_eq!(s.get("/pets/1", Some("allow")).await.status(), 200);
    assert_eq!(s.get("/pets/1", Some("allow")).await.status(), 200);
    assert_eq!(lambda.calls(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.get("/pets/1", Some("allow")).await.status(), 200);
    assert_eq!(lambda.calls(), 2, "expired after ttl");

    // A JWT in the key that expires in a second: its decision goes with it, ttl or not.
    let lambda = AuthorizerEndpoint::start(|_| json(json!({"isAuthorized": true}))).await;
    let s = setup(&lambda_table(&lambda.url("/"), "")).await;
    let exp = jwtgate::token::unix_now() + 1;
    let token = format!(
        "Bearer e30.{}.c2ln",
        base64_url(json!({ "exp": exp }).to_string().as_bytes())
    );
    assert_eq!(s.get("/pets/1", Some(&token)).await.status(), 200);
    assert_eq!(s.get("/pets/1", Some(&token)).await.status(), 200);
    assert!(lambda.calls() <= 2);
    let before = lambda.calls();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(s.get("/pets/1", Some(&token)).await.status(), 200);
    assert_eq!(lambda.calls(), before + 1, "not served past the JWT's exp");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn fifty_concurrent_identical_requests_make_one_call() {
    let lambda = AuthorizerEndpoint::holding(simple).await;
    let s = setup(&lambda_table(&lambda.url("/"), "timeout = \"30s\"")).await;
    let addr = s.proxy.addr;
    let requests: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                client()
                    .get(format!("http://{addr}/pets/1"))
                    .header("authorization", "allow")
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    // Every request has missed the cache (and so waits on the one call) before it is answered.
    for _ in 0..400 {
        let misses = s
            .metric(r#"jwtgate_authorizer_cache_total{authorizer="lambda",result="miss"}"#)
            .await;
        if misses >= 50.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    lambda.release(50);
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(lambda.calls(), 1);
    assert_eq!(s.upstream.take().len(), 50);
}

#[tokio::test]
async fn iam_policy_allow_and_deny_by_route_arn_wildcards() {
    let arn = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod";
    let lambda = AuthorizerEndpoint::start(move |_| {
        json(json!({
            "principalId": "user-1",
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    { "Action": "execute-api:Invoke", "Effect": "Allow",
                      "Resource": [format!("{arn}/GET/pets/*"), format!("{arn}/*/toys/*")] },
                    { "Action": ["execute-api:*"], "Effect": "Deny",
                      "Resource": format!("{arn}/*/pets/secret") },
                ],
            },
            "context": { "tenantId": "t-iam" },
        }))
    })
    .await;
    let s = setup(&lambda_table(
        &lambda.url("/"),
        &format!("response = \"iam\"\napi_arn = \"{arn}\"\ncache_key = \"identity\""),
    ))
    .await;
    let res = s.get("/pets/1", Some("anyone")).await;
    assert_eq!(res.status(), 200);
    assert!(s.upstream.take()[0].contains("x-tenant: t-iam\r\n"));
    // The explicit Deny wins over the Allow.
    assert_eq!(s.get("/pets/secret", Some("anyone")).await.status(), 403);
    // POST is not allowed on pets; the cached policy (identity key) is evaluated per request.
    let res = client()
        .post(format!("http://{}/pets/1", s.proxy.addr))
        .header("authorization", "anyone")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(s.get("/toys/ball", Some("anyone")).await.status(), 200);
    assert_eq!(
        lambda.calls(),
        1,
        "one policy, evaluated against each routeArn"
    );
}

#[tokio::test]
async fn failures_fail_closed_with_500() {
    let silent = Silent::start().await;
    let garbage = AuthorizerEndpoint::start(|_| (200, vec![], b"<html>not json".to_vec())).await;
    let shape = AuthorizerEndpoint::start(|_| json(json!({"isAuthorized": "yes"}))).await;
    let huge = AuthorizerEndpoint::start(|_| {
        let context = "x".repeat(100 * 1024);
        json(json!({"isAuthorized": true, "context": {"pad": context}}))
    })
    .await;
    let status = AuthorizerEndpoint::start(|_| (502, vec![], b"{}".to_vec())).await;
    let bad_value = AuthorizerEndpoint::start(|_| {
        json(json!({"isAuthorized": true, "context": {"tenantId": "a\u{1}b"}}))
    })
    .await;
    let table = |name: &str, url: String, extra: &str| {
        format!(
            r#"
[[authorizers]]
name = "{name}"
type = "lambda"
url = "{url}"
identity_source = ["$request.header.Authorization"]
context_headers = {{ "x-tenant" = "tenantId" }}
timeout = "300ms"
{extra}

[[routes]]
path = "/fail/{name}"
auth = "none"
authorizer = "{name}"
"#
        )
    };
    let authorizers = [
        table("silent", format!("http://{}/", silent.addr), ""),
        table("garbage", garbage.url("/"), ""),
        table("shape", shape.url("/"), ""),
        table("huge", huge.url("/"), ""),
        table("status", status.url("/"), ""),
        table("badvalue", bad_value.url("/"), ""),
        table("refused", "http://127.0.0.1:9/".into(), ""),
    ]
    .join("\n");
    let s = setup(&format!(
        "{}\n{authorizers}",
        lambda_table("http://127.0.0.1:9/", "")
    ))
    .await;
    for (name, result) in [
        ("silent", "timeout"),
        ("garbage", "invalid"),
        ("shape", "invalid"),
        ("huge", "too_large"),
        ("status", "bad_status"),
        ("badvalue", "allow"),
        ("refused", "unreachable"),
    ] {
        let res = s.get(&format!("/fail/{name}"), Some("allow")).await;
        assert_eq!(res.status(), 500, "{name}");
        assert_eq!(
            res.text().await.unwrap(),
            r#"{"message":"Internal Server Error"}"#
        );
        assert_eq!(
            s.metric(&format!(
                r#"jwtgate_authorizer_calls_total{{authorizer="{name}",result="{result}"}}"#
            ))
            .await,
            1.0,
            "{name}"
        );
    }
    assert!(s.upstream.take().is_empty(), "never an allow");
    assert_eq!(
        s.metric(r#"jwtgate_rejections_total{reason="authorizer_failed",route="/fail/silent"}"#)
            .await,
        1.0
    );
    let log = s.proxy.log_with(&["authorizer call failed"]).await;
    assert!(log.contains("authorizer call failed"), "{log}");
}

#[tokio::test]
async fn a_verified_jwt_reaches_the_authorizer_as_api_gateway_fills_it() {
    let lambda = AuthorizerEndpoint::start(|_| json(json!({"isAuthorized": true}))).await;
    let s = setup(&lambda_table(&lambda.url("/"), "")).await;
    let token = s.issuer.sign(&s.issuer.access_token(alice()));
    let res = s.get("/books/9", Some(&format!("Bearer {token}"))).await;
    assert_eq!(res.status(), 200);
    let event = lambda.seen()[0].event();
    let jwt = &event["requestContext"]["authorizer"]["jwt"];
    assert_eq!(jwt["claims"]["sub"], s.issuer.access_token(alice())["sub"]);
    assert!(
        jwt["claims"]["exp"].is_string(),
        "claim values as strings: {jwt}"
    );
    assert!(jwt["scopes"].is_array(), "{jwt}");
    // Requirements come first: no token, no call.
    assert_eq!(s.get("/books/9", None).await.status(), 401);
    assert_eq!(lambda.calls(), 1);
}

#[tokio::test]
async fn hot_reload_replaces_an_authorizer_and_its_decisions() {
    let allow = AuthorizerEndpoint::start(|_| json(json!({"isAuthorized": true}))).await;
    let deny = AuthorizerEndpoint::start(|_| json(json!({"isAuthorized": false}))).await;
    let s = setup(&lambda_table(&allow.url("/"), "")).await;
    assert_eq!(s.get("/pets/1", Some("t")).await.status(), 200);
    s.proxy.rewrite_config(&config(
        &s.issuer,
        &s.upstream.url(),
        "",
        &routes(&lambda_table(&deny.url("/"), "")),
    ));
    let mut status = 200;
    for _ in 0..100 {
        status = s.get("/pets/1", Some("t")).await.status().as_u16();
        if status == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status, 403,
        "the old authorizer's cached allow is not served"
    );
    assert_eq!(allow.calls(), 1);
    assert_eq!(deny.calls(), 1);
}

#[tokio::test]
async fn ext_authz_allows_with_headers_and_relays_denials() {
    let service = AuthorizerEndpoint::start(|seen| {
        let auth = seen
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            seen.headers.get("x-other").is_none(),
            "only allowed headers"
        );
        assert!(seen.body.is_empty());
        match auth.as_deref() {
            Some("Bearer good") if seen.target.starts_with("/check/items/") => (
                200,
                vec![("x-user-id", "u-1".into()), ("x-secret", "no".into())],
                vec![],
            ),
            _ => (
                401,
                vec![
                    ("www-authenticate", "Bearer realm=\"opa\"".into()),
                    ("content-type", "text/plain".into()),
                    ("x-secret", "no".into()),
                ],
                b"denied by policy".to_vec(),
            ),
        }
    })
    .await;
    let authorizers = format!(
        r#"
[[authorizers]]
name = "lambda"
type = "lambda"
url = "http://127.0.0.1:9/"
identity_source = ["$request.header.Authorization"]

[[authorizers]]
name = "opa"
type = "ext_authz"
url = "{}"
ttl = "0s"
upstream_headers = ["x-user-id"]
client_headers = ["www-authenticate", "content-type"]

[[routes]]
path = "/items/{{id}}"
methods = ["DELETE"]
auth = "none"
authorizer = "opa"
"#,
        service.url("/check")
    );
    let s = setup(&authorizers).await;
    let res = client()
        .delete(format!("http://{}/items/5?force=1", s.proxy.addr))
        .header("authorization", "Bearer good")
        .header("x-other", "1")
        .header("x-user-id", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = service.seen();
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].target, "/check/items/5?force=1");
    let head = s.upstream.take()[0].to_ascii_lowercase();
    assert!(head.contains("x-user-id: u-1\r\n"), "{head}");
    assert!(
        !head.contains("forged") && !head.contains("x-secret"),
        "{head}"
    );

    let res = client()
        .delete(format!("http://{}/items/5", s.proxy.addr))
        .header("authorization", "Bearer bad")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"opa\"");
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert!(res.headers().get("x-secret").is_none());
    assert_eq!(res.text().await.unwrap(), "denied by policy");
    assert!(s.upstream.take().is_empty());

    // A service that cannot be reached: 403, Envoy's status_on_error default.
    drop(service);
    let res = client()
        .delete(format!("http://{}/items/5", s.proxy.addr))
        .header("authorization", "Bearer good")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn payload_format_1_0_event_and_policy() {
    let arn = "arn:aws:execute-api:eu-west-1:123456789012:api1/prod";
    let lambda = AuthorizerEndpoint::start(move |seen| {
        let event = seen.event();
        let effect = if event["headers"]["authorization"] == "good" {
            "Allow"
        } else {
            "Deny"
        };
        json(json!({
            "principalId": "p",
            "policyDocument": { "Version": "2012-10-17", "Statement": [
                { "Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"] }
            ]},
            "context": { "tenantId": "v1" },
        }))
    })
    .await;
    let s = setup(&lambda_table(
        &lambda.url("/"),
        &format!("payload_format = \"1.0\"\napi_arn = \"{arn}\""),
    ))
    .await;
    let res = client()
        .get(format!("http://{}/pets/3?a=1&a=2", s.proxy.addr))
        .header("authorization", "good")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(s.upstream.take()[0].contains("x-tenant: v1\r\n"));
    let event = lambda.seen()[0].event();
    assert_eq!(event["version"], "1.0");
    assert_eq!(event["type"], "REQUEST");
    assert_eq!(event["methodArn"], format!("{arn}/GET/pets/3"));
    assert_eq!(event["identitySource"], "good");
    assert_eq!(event["resource"], "/pets/{petId}");
    assert_eq!(event["path"], "/pets/3");
    assert_eq!(event["httpMethod"], "GET");
    assert_eq!(event["queryStringParameters"], json!({"a": "2"}));
    assert_eq!(
        event["multiValueQueryStringParameters"],
        json!({"a": ["1", "2"]})
    );
    assert_eq!(event["multiValueHeaders"]["authorization"], json!(["good"]));
    assert_eq!(event["pathParameters"], json!({"petId": "3"}));
    assert_eq!(event["requestContext"]["stage"], "prod");
    assert_eq!(event["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(s.get("/pets/3", Some("bad")).await.status(), 403);
}

#[tokio::test]
async fn forward_auth_asks_the_authorizer_about_the_original_request() {
    let lambda = AuthorizerEndpoint::start(simple).await;
    let s = setup(&format!(
        "{}\n[forward_auth]\npath = \"/auth\"\n",
        lambda_table(&lambda.url("/"), "")
    ))
    .await;
    // Envoy-style: the original path below the forward-auth prefix.
    let res = s.get("/auth/pets/3", Some("allow")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-tenant"], "t-42");
    let event = lambda.seen()[0].event();
    assert_eq!(event["routeKey"], "GET /pets/{petId}");
    assert_eq!(event["pathParameters"], json!({"petId": "3"}));
    assert_eq!(s.get("/auth/pets/3", Some("deny")).await.status(), 403);
    assert!(s.upstream.take().is_empty(), "forward-auth never forwards");
}

#[tokio::test]
async fn jwtgates_sign_in_cookies_never_reach_the_authorizer() {
    let lambda = AuthorizerEndpoint::start(simple).await;
    let dir = std::env::temp_dir().join(format!("jwtgate-authz-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let login = format!(
        r#"
[login]
issuer = "{}"
client_id = "{DEMO_CLIENT_ID}"
client_secret_file = "{}"
secure_cookies = false
logout_redirect = "http://127.0.0.1:1/signed-out"
"#,
        issuer.issuer(),
        secret.display()
    );
    let authorizers = lambda_table(&lambda.url("/"), "").replace(
        r#"identity_source = ["$request.header.Authorization"]"#,
        r#"identity_source = ["$request.header.Authorization", "$request.header.Cookie"]"#,
    );
    let upstream = Recorder::start().await;
    let proxy = BinaryProxy::start(&config(
        &issuer,
        &upstream.url(),
        "",
        &format!("{}\n{login}", routes(&authorizers)),
    ))
    .await;
    let res = client()
        .get(format!("http://{}/pets/1", proxy.addr))
        .header("authorization", "allow")
        .header(
            "cookie",
            "AWSELBAuthSessionCookie-0=session-secret; theme=dark",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = lambda.seen();
    let body = String::from_utf8_lossy(&seen[0].body).into_owned();
    assert!(!body.contains("session-secret"), "{body}");
    let event = seen[0].event();
    assert_eq!(event["cookies"], json!(["theme=dark"]));
    assert_eq!(event["identitySource"], json!(["allow", "theme=dark"]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Environment of a gateway credential chain that holds exactly these keys (or nothing): no
/// session token, profile, container or web-identity step, no instance metadata.
fn aws_env(
    keys: Option<(&'static str, &'static str)>,
) -> Vec<(&'static str, Option<&'static str>)> {
    let mut env = vec![
        ("AWS_SESSION_TOKEN", None),
        ("AWS_CREDENTIAL_EXPIRATION", None),
        ("AWS_PROFILE", None),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", None),
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", None),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", None),
        ("AWS_EC2_METADATA_DISABLED", Some("true")),
    ];
    env.push(("AWS_ACCESS_KEY_ID", keys.map(|k| k.0)));
    env.push(("AWS_SECRET_ACCESS_KEY", keys.map(|k| k.1)));
    env
}

/// `[[authorizers]]` delivered by the Lambda Invoke API to `endpoint`, one per function.
fn invoke_tables(endpoint: &str, functions: &[&str]) -> String {
    let mut toml = String::from("[[aws_credentials]]\nname = \"self\"\nsource = \"gateway\"\n");
    for f in functions {
        toml.push_str(&format!(
            r#"
[[authorizers]]
name = "{f}"
type = "lambda"
function = "{f}"
region = "us-east-1"
endpoint = "{endpoint}"
credentials = "self"
qualifier = "live"
identity_source = ["$request.header.Authorization"]
ttl = "0s"

[[routes]]
path = "/invoke/{f}"
auth = "none"
authorizer = "{f}"
"#
        ));
    }
    toml
}

/// Lambda's Invoke API as the tests need it: a function per path, answering as Lambda does.
fn lambda_api(seen: &Seen) -> endpoint::Answer {
    let function = seen
        .target
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|t| t.split('/').next())
        .unwrap_or_default();
    let error = |status: u16, kind: &str| {
        (
            status,
            vec![
                ("content-type", "application/json".into()),
                ("x-amzn-errortype", kind.into()),
            ],
            br#"{"message":"refused"}"#.to_vec(),
        )
    };
    match function {
        "ok" => simple(seen),
        "failing" => (
            200,
            vec![
                ("content-type", "application/json".into()),
                ("x-amz-function-error", "Unhandled".into()),
            ],
            br#"{"errorType":"Error","errorMessage":"boom","isAuthorized":true}"#.to_vec(),
        ),
        "throttled" => error(429, "TooManyRequestsException"),
        "denied" => error(403, "AccessDeniedException"),
        "missing" => error(404, "ResourceNotFoundException"),
        "moved" => (
            307,
            vec![(
                "location",
                "/2015-03-31/functions/ok/invocations?Qualifier=live".into(),
            )],
            Vec::new(),
        ),
        _ => error(400, "InvalidRequestContentException"),
    }
}

#[tokio::test]
async fn invoke_api_calls_are_signed_and_lambda_errors_fail_closed() {
    let lambda = AuthorizerEndpoint::start(lambda_api).await;
    let functions = ["ok", "failing", "throttled", "denied", "missing", "moved"];
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let upstream = Recorder::start().await;
    let toml = config(
        &issuer,
        &upstream.url(),
        "",
        &invoke_tables(&lambda.url(""), &functions),
    );
    let proxy = BinaryProxy::start_with_env(
        &toml,
        "warn",
        &aws_env(Some((
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ))),
    )
    .await;
    let s = Setup {
        issuer,
        upstream,
        proxy,
    };

    let res = s.get("/invoke/ok", Some("allow")).await;
    assert_eq!(res.status(), 200);
    let call = lambda.seen().pop().unwrap();
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.target,
        "/2015-03-31/functions/ok/invocations?Qualifier=live"
    );
    let auth = call.headers["authorization"].to_str().unwrap();
    assert!(
        auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"
        ) && auth.contains("/us-east-1/lambda/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="),
        "{auth}"
    );
    assert!(call.headers.contains_key("x-amz-date"));
    assert_eq!(call.event()["routeKey"], "GET /invoke/ok");
    assert_eq!(call.event()["headers"]["authorization"], "allow");
    assert!(s.get("/invoke/ok", Some("deny")).await.status() == 403);

    for (function, result) in [
        ("failing", "function_error"),
        ("throttled", "bad_status"),
        ("denied", "bad_status"),
        ("missing", "bad_status"),
        ("moved", "bad_status"),
    ] {
        let res = s.get(&format!("/invoke/{function}"), Some("allow")).await;
        assert_eq!(res.status(), 500, "{function}");
        assert_eq!(
            res.text().await.unwrap(),
            r#"{"message":"Internal Server Error"}"#
        );
        assert_eq!(
            s.metric(&format!(
                r#"jwtgate_authorizer_calls_total{{authorizer="{function}",result="{result}"}}"#
            ))
            .await,
            1.0,
            "{function}"
        );
    }
    // The redirect was not followed: one call per request, none to `ok` after the first two.
    assert_eq!(lambda.seen().len(), 2 + 5);
    assert_eq!(s.upstream.take().len(), 1, "only the allowed request");
    let log = s
        .proxy
        .log_with(&["the authorizer function failed", "TooManyRequestsException"])
        .await;
    assert!(log.contains("the authorizer function failed"), "{log}");
    assert!(log.contains("TooManyRequestsException"), "{log}");
    assert!(!log.contains("wJalrXUtnFEMI"), "no secret in the log");
}

#[tokio::test]
async fn invoke_api_without_credentials_fails_closed_without_a_call() {
    let lambda = AuthorizerEndpoint::start(lambda_api).await;
    let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
    let upstream = Recorder::start().await;
    let toml = config(
        &issuer,
        &upstream.url(),
        "",
        &invoke_tables(&lambda.url(""), &["ok"]),
    );
    let proxy = BinaryProxy::start_with_env(&toml, "warn", &aws_env(None)).await;
    let s = Setup {
        issuer,
        upstream,
        proxy,
    };
    let res = s.get("/invoke/ok", Some("allow")).await;
    assert_eq!(res.status(), 500);
    assert_eq!(
        s.metric(r#"jwtgate_authorizer_calls_total{authorizer="ok",result="credentials"}"#)
            .await,
        1.0
    );
    assert!(lambda.seen().is_empty(), "nothing unsigned is sent");
    assert!(s.upstream.take().is_empty());
    let log = s
        .proxy
        .log_with(&["no AWS credentials to invoke the function"])
        .await;
    assert!(
        log.contains("no AWS credentials to invoke the function"),
        "{log}"
    );
}

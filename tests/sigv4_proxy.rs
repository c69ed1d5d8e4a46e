//! What a signing route (`aws_sigv4`) sends upstream and answers, through the real binary: the
//! client's credentials and jwtgate's identity headers never reach AWS, the signature is
//! jwtgate's, a signed payload is bounded and hashed, and each way of not getting credentials
//! has its status. (The signatures themselves are checked against botocore and moto's S3 in
//! `tests/aws_signing.rs`; the signer against AWS's suite in `src/aws/signer.rs`.)

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::time::{Duration, SystemTime};

use common::binary::BinaryProxy;
use common::recorder::{Recorder, cognito_credentials};
use jwtgate::dev::issuer::DevIssuer;
use jwtgate::dev::users::{DEMO_CLIENT_ID, user};
use serde_json::Value;

const ACCESS_KEY: &str = "AKIDJWTGATETEST";
const SESSION_TOKEN: &str = "gateway-session-token";

/// jwtgate's own credentials from the environment (the gateway chain's first link), and
/// nothing else of the chain.
const GATEWAY_ENV: &[(&str, Option<&str>)] = &[
    ("AWS_ACCESS_KEY_ID", Some(ACCESS_KEY)),
    ("AWS_SECRET_ACCESS_KEY", Some("gateway-secret")),
    ("AWS_SESSION_TOKEN", Some(SESSION_TOKEN)),
    ("AWS_WEB_IDENTITY_TOKEN_FILE", None),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI", None),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", None),
    ("AWS_EC2_METADATA_DISABLED", Some("true")),
];

fn issuer_table(issuer: &DevIssuer) -> String {
    format!(
        r#"
[[issuers]]
name = "dev"
issuer = "{}"
jwks_uri = "{}"
audiences = ["{}"]
"#,
        issuer.issuer(),
        issuer.jwks_uri(),
        DEMO_CLIENT_ID
    )
}

/// jwtgate in front of `upstream_url`, signing with its own credentials (`[[aws_credentials]]`
/// "self") as `sigv4` says, with `rest` (routes, headers) after.
fn gateway_config(issuer: &DevIssuer, upstream_url: &str, sigv4: &str, rest: &str) -> String {
    format!(
        r#"
[upstream]
url = "{upstream_url}"
aws_sigv4 = {{ {sigv4}, credentials = "self" }}
{issuer}
[[aws_credentials]]
name = "self"
source = "gateway"
{rest}"#,
        issuer = issuer_table(issuer),
    )
}

/// The request's header `name` (lower case), if the recorded request has it.
fn header<'a>(request: &'a str, name: &str) -> Option<&'a str> {
    let head = request.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(request: &str) -> &str {
    request.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn access(issuer: &DevIssuer, name: &str) -> String {
    issuer.sign(&issuer.access_token(user(name).unwrap()))
}

fn id(issuer: &DevIssuer, name: &str) -> String {
    issuer.sign(&issuer.id_token(user(name).unwrap()))
}

/// A chunked request sent as raw bytes (no length given up front); the answer's status line.
async fn chunked(
    proxy: &BinaryProxy,
    method: &str,
    path: &str,
    token: &str,
    chunks: &[&str],
    headers: &[(&str, &str)],
) -> String {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: gateway.test\r\nauthorization: Bearer {token}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    for c in chunks {
        request.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
    }
    request.push_str("0\r\n\r\n");
    let answer = common::raw_exchange(proxy.addr, request.as_bytes()).await;
    answer.lines().next().unwrap_or_default().to_owned()
}

fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn aws_gets_jwtgates_signature_and_none_of_the_clients_credentials_or_identity() {
    let issuer = DevIssuer::start("us-east-1_SIGN").await.unwrap();
    let upstream = Recorder::start().await;
    let config = gateway_config(
        &issuer,
        &format!("{}/prefix", upstream.url()),
        r#"service = "execute-api", region = "eu-west-1", max_body = "1KB""#,
        r#"
[[routes]]
path = "/api/**"

[[routes]]
path = "/s3/**"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "self", forward_headers = ["x-amz-meta-*"] }

[[routes]]
path = "/plain/**"
aws_sigv4 = false

[headers]
claims = { "x-user-sub" = "sub" }
claims_json = "x-jwt-claims"
"#,
    );
    let proxy = BinaryProxy::start_with_env(&config, "warn", GATEWAY_ENV).await;
    let http = common::client();
    let token = access(&issuer, "alice");
    let url = |p: &str| format!("http://{}{p}", proxy.addr);

    let res = http
        .post(url("/api/orders?b=2&a=1"))
        .bearer_auth(&token)
        .header("x-amz-security-token", "forged-token")
        .header("x-amz-date", "20000101T000000Z")
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .header("x-amz-target", "Forged.Action")
        .header("x-user-sub", "forged-sub")
        .header("content-type", "application/json")
        .body(r#"{"item":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = upstream.take();
    let request = seen.last().unwrap();
    assert!(
        request.starts_with("POST /prefix/api/orders?b=2&a=1 HTTP/1.1\r\n"),
        "{request}"
    );
    let authorization = header(request, "authorization").unwrap();
    let day = httpdate::fmt_http_date(SystemTime::now());
    assert!(
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")),
        "the signature is jwtgate's, not the client's bearer token: {authorization}"
    );
    assert!(
        authorization.contains("/eu-west-1/execute-api/aws4_request, SignedHeaders="),
        "{authorization} ({day})"
    );
    assert!(
        !request.contains(&token),
        "the user's token never reaches AWS"
    );
    assert_eq!(
        header(request, "x-amz-security-token"),
        Some(SESSION_TOKEN),
        "the client's x-amz-security-token is replaced"
    );
    assert_ne!(header(request, "x-amz-date"), Some("20000101T000000Z"));
    assert_eq!(
        header(request, "x-amz-content-sha256"),
        None,
        "execute-api signs the body's hash without sending it"
    );
    assert_eq!(
        header(request, "x-amz-target"),
        None,
        "every client x-amz-* goes"
    );
    assert_eq!(header(request, "x-user-sub"), None, "no identity header");
    assert_eq!(header(request, "x-jwt-claims"), None, "no claims header");
    assert_eq!(
        header(request, "host"),
        Some(upstream.addr.to_string().as_str()),
        "Host is the signed authority"
    );
    assert_eq!(header(request, "content-length"), Some("10"));
    assert_eq!(body(request), r#"{"item":1}"#);

    // S3 streams: a chunked upload stays chunked, signed as UNSIGNED-PAYLOAD.
    let status = chunked(
        &proxy,
        "PUT",
        "/s3/bucket/key.txt",
        &token,
        &["part one, ", "part two"],
        &[
            ("x-amz-meta-author", "alice"),
            ("x-amz-acl", "public-read"),
            ("x-amz-security-token", "forged"),
        ],
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let seen = upstream.take();
    let request = seen.last().unwrap();
    assert_eq!(
        header(request, "x-amz-content-sha256"),
        Some("UNSIGNED-PAYLOAD")
    );
    assert!(
        header(request, "authorization")
            .unwrap()
            .contains("/us-east-1/s3/aws4_request"),
        "the route's own aws_sigv4 wins over the upstream's"
    );
    assert_eq!(header(request, "transfer-encoding"), Some("chunked"));
    assert_eq!(
        header(request, "x-amz-meta-author"),
        Some("alice"),
        "a listed forward_headers pattern passes"
    );
    assert!(
        header(request, "authorization")
            .unwrap()
            .contains("x-amz-meta-author"),
        "and is signed (S3 refuses unsigned x-amz-* headers)"
    );
    assert_eq!(
        header(request, "x-amz-acl"),
        None,
        "an unlisted one does not"
    );
    assert_eq!(
        header(request, "x-amz-security-token"),
        Some(SESSION_TOKEN),
        "SigV4's own headers are never the client's, whatever forward_headers says"
    );
    assert!(body(request).contains("part one, "));

    // A route that turns signing off is an ordinary route again.
    let res = http
        .get(url("/plain/x"))
        .bearer_auth(&token)
        .header("x-amz-date", "20000101T000000Z")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = upstream.take();
    let request = seen.last().unwrap();
    assert_eq!(
        header(request, "authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(
        header(request, "x-user-sub"),
        Some(user("alice").unwrap().sub)
    );
    assert_eq!(header(request, "x-amz-security-token"), None);
}

#[tokio::test]
async fn a_signed_payload_is_read_whole_up_to_max_body_and_no_further() {
    let issuer = DevIssuer::start("us-east-1_SIGN").await.unwrap();
    let upstream = Recorder::start().await;
    let config = gateway_config(
        &issuer,
        &upstream.url(),
        r#"service = "lambda", region = "us-east-1", max_body = "1KB""#,
        "[[routes]]\npath = \"/**\"\n",
    );
    let proxy = BinaryProxy::start_with_env(&config, "warn", GATEWAY_ENV).await;
    let http = common::client();
    let token = access(&issuer, "alice");
    let url = format!("http://{}/fn", proxy.addr);

    let exactly = "a".repeat(1000);
    let res = http
        .post(&url)
        .bearer_auth(&token)
        .body(exactly.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "max_body itself is allowed");
    assert_eq!(body(upstream.take().last().unwrap()), exactly);

    // Declared too large: refused before a byte is read.
    let res = http
        .post(&url)
        .bearer_auth(&token)
        .body("a".repeat(1001))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"message":"Request Entity Too Large"}"#
    );
    // Chunked, no length given: refused once it passes the bound.
    let part = "b".repeat(400);
    let status = chunked(
        &proxy,
        "POST",
        "/fn",
        &token,
        &[&part, &part, &part, &part],
        &[],
    )
    .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    assert!(
        upstream.take().is_empty(),
        "nothing too large went upstream"
    );
    // A chunked body within the bound is sent with its length (what was signed).
    let status = chunked(&proxy, "POST", "/fn", &token, &["small ", "chunks"], &[]).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let seen = upstream.take();
    let request = seen.last().unwrap();
    assert_eq!(header(request, "content-length"), Some("12"));
    assert_eq!(header(request, "transfer-encoding"), None);
    assert_eq!(body(request), "small chunks");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "jwtgate_rejections_total",
            &["reason=\"body_too_large\""]
        ),
        2
    );
}

/// A Cognito Identity stand-in: `answer(action, body)` gives status and JSON.
fn pool_config(issuer: &DevIssuer, upstream: &str, cognito: &str, guests: bool) -> String {
    format!(
        r#"
[upstream]
url = "{upstream}"
aws_sigv4 = {{ service = "s3", region = "us-east-1", credentials = "users" }}
{issuer}
[[aws_credentials]]
name = "users"
source = "identity_pool"
identity_pool_id = "us-east-1:0a1b2c3d-1234-5678-9abc-def012345678"
endpoint = "{cognito}"
guests = {guests}
timeout = "1s"

[[routes]]
path = "/files/**"
token_use = "id"

[[routes]]
path = "/public/**"
auth = "optional"
token_use = "id"
"#,
        issuer = issuer_table(issuer),
    )
}

#[tokio::test]
async fn identity_pools_get_the_id_token_and_guests_only_when_allowed() {
    let issuer = DevIssuer::start("us-east-1_POOL").await.unwrap();
    let upstream = Recorder::start().await;
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Value)>::new()));
    let seen = std::sync::Arc::clone(&calls);
    let cognito = Recorder::cognito_identity(move |action, body| {
        seen.lock().unwrap().push((action.to_owned(), body.clone()));
        match action {
            "GetId" if body.get("Logins").is_some() => {
                (200, r#"{"IdentityId":"us-east-1:user"}"#.into())
            }
            "GetId" => (200, r#"{"IdentityId":"us-east-1:guest"}"#.into()),
            "GetCredentialsForIdentity" if body["IdentityId"] == "us-east-1:guest" => {
                (200, cognito_credentials("ASIAGUEST"))
            }
            _ => (200, cognito_credentials("ASIAUSER")),
        }
    })
    .await;
    let proxy =
        BinaryProxy::start(&pool_config(&issuer, &upstream.url(), &cognito.url(), true)).await;
    let http = common::client();
    let url = |p: &str| format!("http://{}{p}", proxy.addr);

    let id_token = id(&issuer, "alice");
    let res = http
        .get(url("/files/a.txt"))
        .bearer_auth(&id_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let request = upstream.take().pop().unwrap();
    assert!(
        header(&request, "authorization")
            .unwrap()
            .contains("Credential=ASIAUSER/")
    );
    let recorded = calls.lock().unwrap().clone();
    // The issuer without `https://` (the dev issuer is http: kept whole).
    let provider = issuer.issuer().trim_start_matches("https://").to_owned();
    assert_eq!(recorded[0].0, "GetId");
    assert_eq!(
        recorded[0].1["Logins"][&provider], id_token,
        "Logins maps the issuer to the ID token: {:?}",
        recorded[0].1
    );
    assert_eq!(recorded[1].0, "GetCredentialsForIdentity");
    assert_eq!(recorded[1].1["Logins"][&provider], id_token);

    // An access token is not what identity pools take: refused before any AWS call.
    let res = http
        .get(url("/files/a.txt"))
        .bearer_auth(access(&issuer, "alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(calls.lock().unwrap().len(), 2);

    // No token on an optional route: the pool's unauthenticated identity.
    let res = http.get(url("/public/a.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let request = upstream.take().pop().unwrap();
    assert!(
        header(&request, "authorization")
            .unwrap()
            .contains("Credential=ASIAGUEST/")
    );
    let recorded = calls.lock().unwrap().clone();
    assert_eq!(recorded[2].0, "GetId");
    assert!(
        recorded[2].1.get("Logins").is_none(),
        "a guest sends no Logins"
    );

    // Without guests, the same request must authenticate.
    let no_guests = BinaryProxy::start(&pool_config(
        &issuer,
        &upstream.url(),
        &cognito.url(),
        false,
    ))
    .await;
    let res = http
        .get(format!("http://{}/public/a.txt", no_guests.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(common::www_authenticate(&res), r#"Bearer realm="jwtgate""#);
}

#[tokio::test]
async fn each_way_of_not_getting_credentials_has_its_answer() {
    let issuer = DevIssuer::start("us-east-1_FAIL").await.unwrap();
    let upstream = Recorder::start().await;
    let refusing = Recorder::cognito_identity(|_, _| {
        (
            400,
            r#"{"__type":"NotAuthorizedException","message":"Invalid login token. Token expired: 1 >= 0"}"#.into(),
        )
    })
    .await;
    let throttling = Recorder::cognito_identity(|_, _| {
        (
            400,
            r#"{"__type":"TooManyRequestsException","message":"Rate exceeded"}"#.into(),
        )
    })
    .await;
    let http = common::client();
    let token = id(&issuer, "alice");
    for (endpoint, status, what) in [
        (refusing.url(), 401, "Cognito refusing the token"),
        (throttling.url(), 503, "Cognito throttling"),
        ("http://127.0.0.1:1".to_owned(), 503, "Cognito unreachable"),
    ] {
        let proxy = BinaryProxy::start_logging(
            &pool_config(&issuer, &upstream.url(), &endpoint, false),
            "info",
        )
        .await;
        let res = http
            .get(format!("http://{}/files/a.txt", proxy.addr))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{what}");
        if status == 503 {
            assert!(res.headers().contains_key("retry-after"), "{what}");
        } else {
            assert!(
                common::www_authenticate(&res).contains("error=\"invalid_token\""),
                "{what}"
            );
        }
        let log = proxy.log_with(&["reason=\"aws_credentials\""]).await;
        assert!(!log.contains(&token), "{what}: the token is never logged");
        let metrics = proxy.metrics().await;
        assert_eq!(
            metric(
                &metrics,
                "jwtgate_aws_signing_failures_total",
                &["reason=\"credentials\"", "upstream=\"default\""]
            ),
            1,
            "{what}"
        );
    }
    assert!(upstream.take().is_empty(), "nothing unsigned went upstream");
}

#[tokio::test]
async fn a_refusal_from_an_aws_whose_clock_is_far_off_is_logged_as_clock_skew() {
    let issuer = DevIssuer::start("us-east-1_SKEW").await.unwrap();
    let upstream = Recorder::answering(|_| {
        let date = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
        let body = "<Error><Code>RequestTimeTooSkewed</Code></Error>";
        format!(
            "HTTP/1.1 403 Forbidden\r\ndate: {date}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await;
    let config = gateway_config(
        &issuer,
        &upstream.url(),
        r#"service = "s3", region = "us-east-1""#,
        "[[routes]]\npath = \"/**\"\n",
    );
    let proxy = BinaryProxy::start_with_env(&config, "info", GATEWAY_ENV).await;
    let res = common::client()
        .get(format!("http://{}/bucket/key", proxy.addr))
        .bearer_auth(access(&issuer, "alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "AWS's answer goes to the client as is");
    assert!(res.text().await.unwrap().contains("RequestTimeTooSkewed"));
    let log = proxy.log_with(&["check the clock"]).await;
    assert!(
        log.contains("skew_seconds=3600") || log.contains("skew_seconds=3599"),
        "{log}"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "jwtgate_aws_signing_failures_total",
            &["reason=\"clock_skew\""]
        ),
        1
    );
}

#[tokio::test]
async fn bodies_held_for_signing_share_one_bounded_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let issuer = DevIssuer::start("us-east-1_BUDGET").await.unwrap();
    let upstream = Recorder::start().await;
    let config = gateway_config(
        &issuer,
        &upstream.url(),
        r#"service = "lambda", region = "us-east-1", max_body = "1MB""#,
        "[[routes]]\npath = \"/**\"\n",
    );
    // The first lines of the config are in the [server] table BinaryProxy writes.
    let proxy = BinaryProxy::start_with_env(
        &format!("max_buffered_body_bytes = 2048\n{config}"),
        "warn",
        GATEWAY_ENV,
    )
    .await;
    let token = access(&issuer, "alice");
    let head = |len: usize| {
        format!(
            "POST /fn HTTP/1.1\r\nhost: gateway.test\r\nauthorization: Bearer {token}\r\ncontent-length: {len}\r\n\r\n"
        )
    };
    // A slow upload holds its 2 KiB of the 2 KiB budget while it is being read ...
    let mut slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(head(1500).as_bytes()).await.unwrap();
    slow.write_all(&[b'a'; 700]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... so another body that needs the budget is refused at once, not queued.
    let second = common::raw_exchange(
        proxy.addr,
        format!(
            "{}{}",
            head(1500).replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n"),
            "b".repeat(1500)
        )
        .as_bytes(),
    )
    .await;
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    assert!(
        second.to_ascii_lowercase().contains("retry-after: 5"),
        "{second}"
    );
    // The slow one completes, and gives its share back.
    slow.write_all(&[b'a'; 800]).await.unwrap();
    let mut answer = vec![0; 12];
    slow.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let third = common::raw_exchange(
        proxy.addr,
        format!(
            "{}{}",
            head(1500).replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n"),
            "c".repeat(1500)
        )
        .as_bytes(),
    )
    .await;
    assert!(third.starts_with("HTTP/1.1 200"), "{third}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "jwtgate_rejections_total",
            &["reason=\"body_buffers_full\""]
        ),
        1
    );
}

#[tokio::test]
async fn a_reload_turns_signing_on_and_off_and_keeps_cached_credentials() {
    let issuer = DevIssuer::start("us-east-1_RELOAD").await.unwrap();
    let upstream = Recorder::start().await;
    let signed = gateway_config(
        &issuer,
        &upstream.url(),
        r#"service = "s3", region = "us-east-1""#,
        "[[routes]]\npath = \"/files/**\"\n\n[[routes]]\npath = \"/other/**\"\n",
    );
    let proxy = BinaryProxy::start_with_env(&signed, "warn", GATEWAY_ENV).await;
    let http = common::client();
    let token = access(&issuer, "alice");
    let authorization = |path: &'static str| {
        let (http, token, upstream) = (&http, &token, &upstream);
        let url = format!("http://{}{path}", proxy.addr);
        async move {
            let res = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let request = upstream.take().pop().unwrap();
            header(&request, "authorization").unwrap().to_owned()
        }
    };
    assert!(
        authorization("/files/a")
            .await
            .starts_with("AWS4-HMAC-SHA256")
    );
    let calls = |metrics: &str| {
        metric(
            metrics,
            "jwtgate_aws_credential_calls_total",
            &["source=\"self\"", "result=\"ok\""],
        )
    };
    assert_eq!(calls(&proxy.metrics().await), 1);

    // A route of the same upstream turns signing off; the source is unchanged, so its
    // credentials stay cached: no new call after the reload.
    proxy.rewrite_config(&signed.replace(
        "path = \"/other/**\"\n",
        "path = \"/other/**\"\naws_sigv4 = false\n",
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if authorization("/other/a").await.starts_with("Bearer ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reloaded: {}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        authorization("/files/a")
            .await
            .starts_with("AWS4-HMAC-SHA256")
    );
    assert_eq!(
        calls(&proxy.metrics().await),
        1,
        "the unchanged source kept its cached credentials"
    );
}

#[tokio::test]
async fn an_http2_client_is_signed_for_the_upstreams_host() {
    let issuer = DevIssuer::start("us-east-1_H2").await.unwrap();
    let upstream = Recorder::start().await;
    let config = gateway_config(
        &issuer,
        &upstream.url(),
        r#"service = "execute-api", region = "us-east-1""#,
        "[[routes]]\npath = \"/**\"\n",
    );
    let proxy = BinaryProxy::start_with_env(&config, "warn", GATEWAY_ENV).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let res = h2
        .post(format!("http://{}/orders?x=1", proxy.addr))
        .bearer_auth(access(&issuer, "alice"))
        .body("h2 body")
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let request = upstream.take().pop().unwrap();
    assert_eq!(
        header(&request, "host"),
        Some(upstream.addr.to_string().as_str()),
        "the :authority the client used is not what was signed"
    );
    assert!(
        header(&request, "authorization")
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256")
    );
    assert_eq!(header(&request, "content-length"), Some("7"));
    assert_eq!(body(&request), "h2 body");
}

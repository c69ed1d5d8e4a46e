//! Requests signed with each user's own AWS credentials (issue 15), end to end through the real
//! binary: moto's S3 with IAM enforcement decides what each user may do
//! (`tests/interop/aws_s3.py`: per-user roles, a guest role, STS, a Cognito user pool and
//! identity pool, moto's request recorder), and an upstream that recomputes every signature with
//! botocore (`tests/interop/sigv4_verify_upstream.py`) checks what moto's stubs cannot (the
//! identity pool's keys, signed payloads of services other than S3, the headers sent).
//! moto and botocore run from target/interop-venv (`tests/interop/venv.sh`, which
//! `scripts/test` runs first).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Child;
use std::sync::{Mutex, OnceLock};

use common::binary::BinaryProxy;
use common::recorder::Recorder;
use serde_json::Value;

/// moto and the verifying upstream (`aws_s3.py`), one for the whole file: its start-up takes
/// seconds. Each test has its own jwtgate (its own credential cache) and tells its calls in
/// moto's recording apart by the user's token. The script serves until its stdin closes, which
/// is when this test process ends (the pipe is the handle that stops it).
struct S3Moto {
    _child: Mutex<Child>,
    info: Value,
    /// A copy of a moto-issued token the guests' gateway source hands STS (IRSA's file).
    irsa_token_file: PathBuf,
}

fn moto() -> &'static S3Moto {
    static MOTO: OnceLock<S3Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("aws-signing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let recording = dir.join("recording.jsonl");
        let (child, info) = common::interop::start_script(
            "aws_s3.py",
            &[
                ("MOTO_RECORDER_FILEPATH", recording.as_os_str()),
                ("MOTO_ENABLE_RECORDING", "true".as_ref()),
                ("AWS_S3_SCRATCH_DIR", dir.as_os_str()),
            ],
        );
        let irsa_token_file = dir.join("irsa-token");
        std::fs::write(
            &irsa_token_file,
            info["moto_tokens"]["bob"].as_str().unwrap(),
        )
        .unwrap();
        S3Moto {
            _child: Mutex::new(child),
            info,
            irsa_token_file,
        }
    })
}

impl S3Moto {
    fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap().to_owned()
    }

    /// A user's ID token with `cognito:preferred_role` (their group's role).
    fn token(&self, user: &str) -> String {
        self.info["tokens"][user].as_str().unwrap().to_owned()
    }

    /// A user's ID token exactly as moto issued it.
    fn moto_token(&self, user: &str) -> String {
        self.info["moto_tokens"][user].as_str().unwrap().to_owned()
    }

    /// Another ID token of alice's (her role), from its own sign-in: one per test, so that
    /// test's calls in moto's recording are its own.
    fn spare(&self, i: usize) -> String {
        self.info["spares"][i].as_str().unwrap().to_owned()
    }

    fn role(&self, name: &str) -> String {
        self.info["roles"][name].as_str().unwrap().to_owned()
    }

    /// The calls moto served whose form or JSON body holds `needle` (a user's token):
    /// (action, body as JSON).
    async fn calls_with(&self, needle: &str) -> Vec<(String, Value)> {
        common::interop::moto_recording(&self.s("url"))
            .await
            .into_iter()
            .filter(|(_, parsed)| parsed.to_string().contains(needle))
            .collect()
    }
}

/// Where the failure cases point: an STS that is down, an STS and a signed upstream that
/// answer as the test says.
struct Elsewhere {
    sts_down: String,
    sts_stand_in: String,
    upstream_stand_in: String,
}

impl Elsewhere {
    /// Nothing listens at any of them.
    fn nowhere() -> Elsewhere {
        Elsewhere {
            sts_down: closed_url(),
            sts_stand_in: closed_url(),
            upstream_stand_in: closed_url(),
        }
    }
}

/// jwtgate's config over moto: every route of the matrix, with the failure cases pointing at
/// `elsewhere`.
fn config(m: &S3Moto, elsewhere: &Elsewhere) -> String {
    let Elsewhere {
        sts_down,
        sts_stand_in,
        upstream_stand_in,
    } = elsewhere;
    let url = m.s("url");
    let verifier = m.s("verifier_url");
    let issuer = m.s("issuer");
    let pool = issuer.rsplit('/').next().unwrap();
    let client_id = m.s("client_id");
    let identity_pool_id = m.s("identity_pool_id");
    let bucket = m.s("bucket");
    let (alice, bob) = (m.role("alice"), m.role("bob"));
    format!(
        r#"
[[issuers]]
name = "moto"
issuer = "{issuer}"
jwks_uri = "{url}/{pool}/.well-known/jwks.json"
audiences = ["{client_id}"]

# Identity headers jwtgate adds on ordinary routes; never sent to a signed upstream.
[headers]
claims = {{ "x-user-sub" = "sub" }}
claims_json = "x-user-claims"

# Each user's role from their token's cognito:preferred_role; no fallback.
[[aws_credentials]]
name = "users"
source = "web_identity"
roles = ["{alice}", "{bob}"]
endpoint = "{url}/"
timeout = "30s"     # moto on a busy machine: slowness is not what is tested

# The guest role, through the IRSA environment the test gives the process.
[[aws_credentials]]
name = "guests"
source = "gateway"
endpoint = "{url}/"
timeout = "30s"

[[aws_credentials]]
name = "pool"
source = "identity_pool"
identity_pool_id = "{identity_pool_id}"
endpoint = "{url}/"
guests = true
timeout = "30s"

[[aws_credentials]]
name = "sts-down"
source = "web_identity"
roles = ["{alice}"]
endpoint = "{sts_down}/"

[[aws_credentials]]
name = "sts-stand-in"
source = "web_identity"
roles = ["{alice}"]
endpoint = "{sts_stand_in}/"

[[upstreams]]
name = "files"
url = "{url}/{bucket}"
aws_sigv4 = {{ service = "s3", region = "us-east-1", credentials = "users" }}

[[upstreams]]
name = "guest-files"
url = "{url}/{bucket}"
aws_sigv4 = {{ service = "s3", region = "us-east-1", credentials = "guests" }}

[[upstreams]]
name = "pool-files"
url = "{url}/{bucket}"
aws_sigv4 = {{ service = "s3", region = "us-east-1", credentials = "pool" }}

[[upstreams]]
name = "verify-s3-users"
url = "{verifier}/{bucket}"
aws_sigv4 = {{ service = "s3", region = "us-east-1", credentials = "users" }}

[[upstreams]]
name = "verify-s3-pool"
url = "{verifier}/{bucket}"
aws_sigv4 = {{ service = "s3", region = "us-east-1", credentials = "pool" }}

[[upstreams]]
name = "verify-api"
url = "{verifier}/prod"
aws_sigv4 = {{ service = "execute-api", region = "us-east-1", credentials = "pool", max_body = "1KB" }}

[[upstreams]]
name = "down"
url = "{url}/{bucket}"
aws_sigv4 = {{ service = "s3", region = "us-east-1", credentials = "sts-down" }}

[[upstreams]]
name = "sts-stand-in"
url = "{url}/{bucket}"
aws_sigv4 = {{ service = "s3", region = "us-east-1", credentials = "sts-stand-in" }}

[[upstreams]]
name = "upstream-stand-in"
url = "{upstream_stand_in}"
aws_sigv4 = {{ service = "s3", region = "us-east-1", credentials = "users" }}

[[routes]]
path = "/files/**"
upstream = "files"
strip_prefix = "/files"
token_use = "id"

[[routes]]
path = "/guest/**"
auth = "none"
upstream = "guest-files"
strip_prefix = "/guest"

[[routes]]
path = "/pool-files/**"
upstream = "pool-files"
strip_prefix = "/pool-files"
token_use = "id"

[[routes]]
path = "/verify/users/**"
upstream = "verify-s3-users"
strip_prefix = "/verify/users"
token_use = "id"

[[routes]]
path = "/verify/users-optional/**"
auth = "optional"
upstream = "verify-s3-users"
strip_prefix = "/verify/users-optional"
token_use = "id"

[[routes]]
path = "/verify/pool/**"
auth = "optional"
upstream = "verify-s3-pool"
strip_prefix = "/verify/pool"
token_use = "id"

[[routes]]
path = "/verify/plain/**"
upstream = "verify-s3-pool"
strip_prefix = "/verify/plain"
aws_sigv4 = false

[[routes]]
path = "/api/**"
upstream = "verify-api"
strip_prefix = "/api"
token_use = "id"

[[routes]]
path = "/down/**"
upstream = "down"
strip_prefix = "/down"
token_use = "id"

[[routes]]
path = "/sts-stand-in/**"
upstream = "sts-stand-in"
strip_prefix = "/sts-stand-in"
token_use = "id"

[[routes]]
path = "/upstream-stand-in/**"
upstream = "upstream-stand-in"
strip_prefix = "/upstream-stand-in"
token_use = "id"
"#
    )
}

/// jwtgate over moto with access lines in its log; the guests' source gets the guest role by
/// IRSA and nothing else from this environment.
async fn start(m: &S3Moto, elsewhere: &Elsewhere) -> BinaryProxy {
    let guest_role = m.role("guest");
    let token_file = m.irsa_token_file.display().to_string();
    BinaryProxy::start_with_env(
        &config(m, elsewhere),
        "info",
        &[
            ("AWS_ACCESS_KEY_ID", None),
            ("AWS_SECRET_ACCESS_KEY", None),
            ("AWS_SESSION_TOKEN", None),
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", None),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", None),
            ("AWS_EC2_METADATA_DISABLED", Some("true")),
            ("AWS_REGION", Some("us-east-1")),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", Some(&token_file)),
            ("AWS_ROLE_ARN", Some(&guest_role)),
            ("AWS_ROLE_SESSION_NAME", Some("jwtgate-guests")),
        ],
    )
    .await
}

/// An address nothing listens on (a port just released).
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A proxy whose failure cases point nowhere (tests that do not use them).
async fn proxy(m: &S3Moto) -> BinaryProxy {
    start(m, &Elsewhere::nowhere()).await
}

fn url(p: &BinaryProxy, path: &str) -> String {
    format!("http://{}{path}", p.addr)
}

async fn send(
    p: &BinaryProxy,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut req = common::client().request(method.parse().unwrap(), url(p, path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.body(body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.bytes().await.unwrap().to_vec())
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// A unique object name under `prefix`, so tests sharing moto's bucket never meet.
fn fresh(prefix: &str, name: &str) -> String {
    format!("{prefix}/{}-{name}", uuid::Uuid::new_v4())
}

fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn alice_writes_and_reads_her_prefix_byte_for_byte() {
    let m = moto();
    let p = proxy(m).await;
    let alice = m.spare(0);
    let body: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 256) as u8).collect();
    let key = fresh("alice", "blob.bin");
    let (status, answer) = send(
        &p,
        "PUT",
        &format!("/files/{key}"),
        Some(&alice),
        body.clone(),
    )
    .await;
    assert_eq!(
        status,
        200,
        "S3 accepts alice's signed PUT: {}",
        text(&answer)
    );
    let (status, got) = send(&p, "GET", &format!("/files/{key}"), Some(&alice), vec![]).await;
    assert_eq!(status, 200, "S3 accepts alice's signed GET: {}", text(&got));
    assert_eq!(got, body, "the object round-trips byte for byte");

    let res = common::client()
        .head(url(&p, &format!("/files/{key}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a signed HEAD");
    assert_eq!(
        res.headers()["content-length"],
        body.len().to_string().as_str()
    );

    // 3 MB stream through unsigned (UNSIGNED-PAYLOAD), not buffered to max_body.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let big_key = fresh("alice", "big.bin");
    let (status, answer) = send(
        &p,
        "PUT",
        &format!("/files/{big_key}"),
        Some(&alice),
        big.clone(),
    )
    .await;
    assert_eq!(status, 200, "{}", text(&answer));
    let (status, got) = send(
        &p,
        "GET",
        &format!("/files/{big_key}"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    assert!(got == big, "3 MB round-trip byte for byte");

    let (status, _) = send(
        &p,
        "DELETE",
        &format!("/files/{big_key}"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(status, 204, "a signed DELETE");
    let (status, answer) = send(
        &p,
        "GET",
        &format!("/files/{big_key}"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(status, 404, "S3's NoSuchKey passes through");
    assert!(
        text(&answer).contains("<Code>NoSuchKey</Code>"),
        "{}",
        text(&answer)
    );

    // A key with a space, UTF-8 and a `+`, percent-encoded as AWS's SDKs send it.
    let dir = uuid::Uuid::new_v4();
    let encoded = format!("alice/{dir}/a%20b%2B%C3%A9%E2%9C%93.txt");
    let decoded = format!("alice/{dir}/a b+é✓.txt");
    let (status, answer) = send(
        &p,
        "PUT",
        &format!("/files/{encoded}"),
        Some(&alice),
        b"odd key".to_vec(),
    )
    .await;
    assert_eq!(
        status,
        200,
        "the signature covers an encoded path: {}",
        text(&answer)
    );
    let (status, got) = send(
        &p,
        "GET",
        &format!("/files/{encoded}"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!((status, got.as_slice()), (200, b"odd key".as_slice()));

    // A query as a browser writes it (`/` unencoded): jwtgate sends it in AWS's canonical
    // encoding, as the SDKs do, so what moto receives is what was signed.
    let (status, listing) = send(
        &p,
        "GET",
        &format!("/files?prefix=alice/{dir}/&list-type=2&max-keys=10"),
        Some(&alice),
        vec![],
    )
    .await;
    let listing = text(&listing);
    assert_eq!(status, 200, "S3 accepts a signed list query: {listing}");
    assert!(
        listing.contains(&format!("<Key>{decoded}</Key>")),
        "S3 stored the key decoded once (space, +, UTF-8 kept): {listing}"
    );
    assert!(listing.contains("<KeyCount>1</KeyCount>"), "{listing}");

    // One STS call for alice in this proxy, with her token, her sub and the role she prefers.
    let calls = m.calls_with(&alice).await;
    let sts: Vec<_> = calls
        .iter()
        .filter(|(a, _)| a == "AssumeRoleWithWebIdentity")
        .collect();
    assert_eq!(
        sts.len(),
        1,
        "credentials are cached across requests: {calls:?}"
    );
    assert_eq!(sts[0].1["RoleArn"], m.role("alice").as_str());
    assert_eq!(
        sts[0].1["RoleSessionName"],
        common::token_claims(&alice)["sub"].as_str().unwrap()
    );
}

#[tokio::test]
async fn s3_refuses_each_user_the_other_users_prefix() {
    let m = moto();
    let p = proxy(m).await;
    let (alice, bob) = (m.token("alice"), m.token("bob"));
    for (who, token, own, other) in [
        ("alice", &alice, "alice", "bob"),
        ("bob", &bob, "bob", "alice"),
    ] {
        let (status, got) = send(
            &p,
            "GET",
            &format!("/files/{own}/seed.txt"),
            Some(token),
            vec![],
        )
        .await;
        assert_eq!(status, 200, "{who} reads her own seed: {}", text(&got));
        assert_eq!(text(&got), format!("seed of {own}/seed.txt\n"));

        let (status, body) = send(
            &p,
            "GET",
            &format!("/files/{other}/seed.txt"),
            Some(token),
            vec![],
        )
        .await;
        assert_eq!(status, 403, "S3 itself refuses {who} the other prefix");
        assert!(
            text(&body).contains("<Code>AccessDenied</Code>"),
            "S3's own AccessDenied answer passes through: {}",
            text(&body)
        );
        let key = fresh(other, "intruder.txt");
        let (status, body) = send(
            &p,
            "PUT",
            &format!("/files/{key}"),
            Some(token),
            b"x".to_vec(),
        )
        .await;
        assert_eq!(status, 403, "{who} may not write the other prefix either");
        assert!(text(&body).contains("AccessDenied"), "{}", text(&body));

        // Each user's own role: two users never share credentials.
        let calls = m.calls_with(token).await;
        let roles: Vec<&str> = calls
            .iter()
            .filter(|(a, _)| a == "AssumeRoleWithWebIdentity")
            .map(|(_, f)| f["RoleArn"].as_str().unwrap())
            .collect();
        assert_eq!(roles, [m.role(own)], "{who}'s STS calls");
    }
}

#[tokio::test]
async fn a_guest_reaches_only_the_guest_prefix() {
    let m = moto();
    let p = proxy(m).await;
    let (status, body) = send(&p, "GET", "/guest/public/hello.txt", None, vec![]).await;
    assert_eq!(status, 200, "the guest role reads public/: {}", text(&body));
    assert_eq!(text(&body), "seed of public/hello.txt\n");
    let (status, body) = send(&p, "GET", "/guest/alice/seed.txt", None, vec![]).await;
    assert_eq!(status, 403, "S3 refuses the guest role alice/");
    assert!(text(&body).contains("AccessDenied"), "{}", text(&body));
    let key = fresh("public", "guest-upload.txt");
    let (status, body) = send(&p, "PUT", &format!("/guest/{key}"), None, b"x".to_vec()).await;
    assert_eq!(status, 403, "the guest role may not write, even public/");
    assert!(text(&body).contains("AccessDenied"), "{}", text(&body));
    let calls = m.calls_with("jwtgate-guests").await;
    assert!(
        calls
            .iter()
            .any(|(a, f)| a == "AssumeRoleWithWebIdentity"
                && f["RoleArn"] == m.role("guest").as_str()),
        "the gateway source assumed the guest role by IRSA: {calls:?}"
    );
}

#[tokio::test]
async fn keys_s3_does_not_know_get_s3s_own_403() {
    // moto's identity pool hands out fixed keys its S3 does not know: S3's refusal of a wrong
    // credential reaches the client unchanged.
    let m = moto();
    let p = proxy(m).await;
    let token = m.moto_token("bob");
    let (status, body) = send(&p, "GET", "/pool-files/bob/seed.txt", Some(&token), vec![]).await;
    assert_eq!(status, 403, "S3 refuses keys it did not issue");
    assert!(
        text(&body).contains("<Code>InvalidAccessKeyId</Code>"),
        "S3's own answer passes through: {}",
        text(&body)
    );
}

#[tokio::test]
async fn a_role_outside_the_allowed_list_is_403_before_any_sts_call() {
    let m = moto();
    let p = proxy(m).await;
    let carol = m.token("carol");
    assert_eq!(
        common::token_claims(&carol)["cognito:preferred_role"],
        m.role("admins").as_str()
    );
    let (status, body) = send(&p, "GET", "/files/alice/seed.txt", Some(&carol), vec![]).await;
    assert_eq!(status, 403, "admins is not in `roles`: {}", text(&body));
    assert!(
        m.calls_with(&carol).await.is_empty(),
        "no AWS call for a role jwtgate refuses"
    );
}

#[tokio::test]
async fn a_token_of_another_issuer_is_401_before_any_aws_call() {
    let m = moto();
    let p = proxy(m).await;
    let forged = m.token("other_issuer");
    for path in ["/files/alice/seed.txt", "/verify/pool/x"] {
        let (status, _) = send(&p, "GET", path, Some(&forged), vec![]).await;
        assert_eq!(status, 401, "{path}: the token's issuer is not configured");
    }
    assert!(
        m.calls_with(&forged).await.is_empty(),
        "neither STS nor Cognito Identity saw the token"
    );
}

#[tokio::test]
async fn a_hundred_concurrent_requests_of_one_user_make_one_credential_call() {
    let m = moto();
    let p = proxy(m).await;
    // dave (alice's group, so her role) is used by this test only.
    let dave = m.token("dave");
    let client = common::client();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let req = client
                .get(url(&p, "/files/alice/seed.txt"))
                .bearer_auth(&dave);
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let calls = m.calls_with(&dave).await;
    assert!(
        calls.iter().all(|(a, _)| a == "AssumeRoleWithWebIdentity"),
        "{calls:?}"
    );
    assert_eq!(
        calls.len(),
        1,
        "moto's recorder: one AssumeRoleWithWebIdentity for 100 requests: {calls:?}"
    );
    let text = p.metrics().await;
    assert_eq!(
        metric(
            &text,
            "jwtgate_aws_credential_calls_total",
            &["source=\"users\""]
        ),
        1,
        "jwtgate counted one credential call: {text}"
    );
}

#[tokio::test]
async fn identity_pool_logins_carry_the_id_token_and_requests_verify_with_its_keys() {
    let m = moto();
    let p = proxy(m).await;
    let token = m.moto_token("alice");
    let (status, body) = send(
        &p,
        "GET",
        "/verify/pool/alice/x.txt?versionId=1",
        Some(&token),
        vec![],
    )
    .await;
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "botocore verifies the signature: {report}");
    assert_eq!(report["signature_ok"], true);
    assert_eq!(
        report["access_key"],
        m.s("identity_pool_access_key").as_str(),
        "signed with the identity pool's keys"
    );
    assert_eq!(
        report["session_token"],
        m.s("identity_pool_session_token").as_str()
    );
    assert_eq!(report["service"], "s3");
    assert_eq!(report["target"], "/files/alice/x.txt?versionId=1");
    assert_eq!(
        report["content_sha256"], "UNSIGNED-PAYLOAD",
        "S3 payloads stream unsigned"
    );

    let provider = m.s("issuer");
    let provider = provider.strip_prefix("https://").unwrap();
    let calls = m.calls_with(&token).await;
    let actions: Vec<&str> = calls.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["GetId", "GetCredentialsForIdentity"],
        "the enhanced flow, once"
    );
    for (action, body) in &calls {
        assert_eq!(
            body["Logins"],
            serde_json::json!({ provider: token }),
            "{action}: Logins maps the user pool to the ID token"
        );
    }
    assert_eq!(
        calls[0].1["IdentityPoolId"],
        m.s("identity_pool_id").as_str()
    );

    // No token on the optional route: the pool's guest identity (GetId without Logins).
    let (status, body) = send(&p, "GET", "/verify/pool/public/y.txt", None, vec![]).await;
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "a guest's request is signed too: {report}");
    assert_eq!(report["signature_ok"], true);
    assert_eq!(
        report["access_key"],
        m.s("identity_pool_access_key").as_str(),
        "with the pool's (guest) keys"
    );
}

#[tokio::test]
async fn the_clients_aws_headers_never_reach_the_upstream() {
    let m = moto();
    let p = proxy(m).await;
    let alice = m.spare(1);
    let forged = [
        ("x-amz-security-token", "client-forged-token"),
        ("x-amz-date", "19990101T000000Z"),
        (
            "x-amz-content-sha256",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("x-amz-meta-owner", "mallory"),
        ("x-amz-target", "forged"),
    ];
    let request = |path: &str| {
        let mut req = common::client().get(url(&p, path)).bearer_auth(&alice);
        for (n, v) in forged {
            req = req.header(n, v);
        }
        req
    };
    let res = request("/verify/users/alice/seed.txt")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let report: Value = res.json().await.unwrap();
    assert_eq!(
        status, 200,
        "botocore verifies alice's STS-signed request: {report}"
    );
    let headers = &report["headers"];
    let authorization = headers["authorization"].as_str().unwrap();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=ASIA"),
        "{authorization}"
    );
    assert!(
        !authorization.contains(&alice),
        "the bearer token never reaches AWS"
    );
    assert!(
        !report.to_string().contains(&alice),
        "the token is in no header: {report}"
    );
    assert_ne!(headers["x-amz-security-token"], "client-forged-token");
    assert_ne!(headers["x-amz-date"], "19990101T000000Z");
    assert_eq!(headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
    let signed: Vec<&str> = report["signed_headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        headers.get("traceparent").is_some() && !signed.contains(&"traceparent"),
        "the trace context is sent but not signed (botocore-based checks, such as moto's, leave \
         it out of the canonical request): {signed:?}"
    );
    assert!(
        headers.get("x-amz-meta-owner").is_none(),
        "client x-amz-* dropped: {headers}"
    );
    assert!(
        headers.get("x-amz-target").is_none(),
        "client x-amz-* dropped: {headers}"
    );
    assert!(
        headers.get("x-user-sub").is_none() && headers.get("x-user-claims").is_none(),
        "jwtgate's identity headers are not sent to AWS: {headers}"
    );
    assert_eq!(
        headers["host"],
        m.s("verifier_url").strip_prefix("http://").unwrap(),
        "Host is the upstream's authority"
    );
    // S3 itself would refuse a forged session token or date: the same request reaches it fine.
    let res = request("/files/alice/seed.txt").send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn a_signed_payload_is_hashed_and_verifies() {
    let m = moto();
    let p = proxy(m).await;
    let token = m.spare(2);
    let body = br#"{"name":"widget","price":3}"#.to_vec();
    let (status, answer) = send(
        &p,
        "POST",
        "/api/items?tag=a%20b",
        Some(&token),
        body.clone(),
    )
    .await;
    let report: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        status, 200,
        "botocore verifies the execute-api signature over the body: {report}"
    );
    assert_eq!(report["service"], "execute-api");
    assert_eq!(report["body_length"], body.len());
    assert_ne!(report["content_sha256"], "UNSIGNED-PAYLOAD", "{report}");
    if !report["content_sha256"].is_null() {
        assert_eq!(report["content_sha256"], report["body_sha256"]);
    }

    // Other services' rules: the path encoded twice in the canonical request; a query with
    // repeated and unsorted keys and encoded UTF-8; an empty body.
    for (method, target) in [
        (
            "PUT",
            "/api/items/a%20b/%E2%82%AC?z=1&a=2&a=1&%C3%A9=%E2%9C%93",
        ),
        ("DELETE", "/api/items/x~y_z.-"),
        ("GET", "/api/items"),
    ] {
        let (status, answer) = send(&p, method, target, Some(&token), vec![]).await;
        let report: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, 200, "{method} {target}: {report}");
        assert_eq!(
            report["target"].as_str(),
            target
                .strip_prefix("/api")
                .map(|t| format!("/prod{t}"))
                .as_deref()
        );
        assert_eq!(report["body_length"], 0);
    }

    // A query as a form or a browser writes it (`+` for a space, `/`, `:` as they are) is sent
    // as it was signed: in AWS's canonical encoding.
    let (status, answer) = send(
        &p,
        "GET",
        "/api/search?q=a+b&path=x/y:z",
        Some(&token),
        vec![],
    )
    .await;
    let report: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["target"].as_str(),
        Some("/prod/search?q=a%20b&path=x%2Fy%3Az")
    );

    // A chunked upload is buffered and hashed all the same.
    let chunked = format!(
        "POST /api/chunked HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         5\r\n{{\"a\":\r\n3\r\n17}}\r\n0\r\n\r\n",
        p.addr
    );
    let raw = common::raw_exchange(p.addr, chunked.as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("\"body_length\": 8"), "{raw}");
}

#[tokio::test]
async fn a_signed_payload_over_max_body_is_413() {
    let m = moto();
    let p = proxy(m).await;
    let token = m.spare(3);
    let (status, _) = send(&p, "POST", "/api/items", Some(&token), vec![b'x'; 4096]).await;
    assert_eq!(
        status, 413,
        "max_body = 1KB bounds what is buffered to hash"
    );
    let log = p.log_with(&["body_too_large"]).await;
    assert!(log.contains("body_too_large"), "{log}");
}

#[tokio::test]
async fn sts_unreachable_is_503_with_retry_after() {
    let m = moto();
    let p = proxy(m).await;
    let alice = m.spare(5);
    let res = common::client()
        .get(url(&p, "/down/alice/seed.txt"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(
        res.headers().contains_key("retry-after"),
        "{:?}",
        res.headers()
    );
    let text = p.metrics().await;
    assert_eq!(
        metric(
            &text,
            "jwtgate_aws_credential_calls_total",
            &["source=\"sts-down\"", "result=\"unavailable\""]
        ),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn sts_refusing_the_token_is_401_with_the_reason_logged() {
    let m = moto();
    // AWS's answer to a token it cannot verify (moto's STS never refuses one).
    let sts = Recorder::answering(|_| {
        let body = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
             <Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve \
             verification key from your identity provider</Message></Error>\
             <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>";
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await;
    let p = start(
        m,
        &Elsewhere {
            sts_stand_in: sts.url(),
            ..Elsewhere::nowhere()
        },
    )
    .await;
    let alice = m.spare(6);
    let res = common::client()
        .get(url(&p, "/sts-stand-in/alice/seed.txt"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        401,
        "STS refusing the token is the client's 401"
    );
    assert!(
        common::www_authenticate(&res).contains("error=\"invalid_token\""),
        "{:?}",
        res.headers()
    );
    let seen = sts.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].contains("Action=AssumeRoleWithWebIdentity"),
        "{}",
        seen[0]
    );
    let log = p.log_with(&["aws_credentials"]).await;
    assert!(
        log.contains("aws_credentials"),
        "the reason is logged: {log}"
    );
    assert!(!log.contains(&alice), "never the token: {log}");
    let text = p.metrics().await;
    assert!(
        metric(&text, "jwtgate_auth_failures_total", &["aws_credentials"]) >= 1,
        "{text}"
    );
}

#[tokio::test]
async fn a_route_with_aws_sigv4_false_is_unsigned() {
    let m = moto();
    let p = proxy(m).await;
    let token = m.spare(4);
    let (status, body) = send(&p, "GET", "/verify/plain/alice/x.txt", Some(&token), vec![]).await;
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 403, "the verifier saw no signature: {report}");
    assert_eq!(report["reason"], "no SigV4 Authorization header");
    let headers = report["headers"].as_object().unwrap();
    assert!(
        !headers.keys().any(|k| k.starts_with("x-amz-")),
        "nothing signed: {headers:?}"
    );
    assert!(
        !headers
            .get("authorization")
            .and_then(Value::as_str)
            .unwrap_or("")
            .starts_with("AWS4-HMAC-SHA256"),
        "{headers:?}"
    );
    assert_eq!(
        headers.get("authorization").and_then(Value::as_str),
        Some(format!("Bearer {token}").as_str()),
        "an unsigned route forwards as any route does"
    );
    assert_eq!(
        headers.get("x-user-sub").and_then(Value::as_str),
        common::token_claims(&token)["sub"].as_str(),
        "with jwtgate's identity headers"
    );
    assert!(
        m.calls_with(&token).await.is_empty(),
        "no credentials fetched for an unsigned route"
    );
}

#[tokio::test]
async fn a_403_with_a_distant_date_is_counted_as_clock_skew() {
    let m = moto();
    // An AWS endpoint whose clock is an hour behind answers as S3 does to a request it deems
    // too far from its time.
    let upstream = Recorder::answering(|_| {
        let body = "<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between \
             the request time and the current time is too large.</Message></Error>";
        format!(
            "HTTP/1.1 403 Forbidden\r\ndate: {}\r\ncontent-type: application/xml\r\n\
             content-length: {}\r\n\r\n{body}",
            httpdate::fmt_http_date(
                std::time::SystemTime::now() - std::time::Duration::from_secs(3600)
            ),
            body.len()
        )
        .into_bytes()
    })
    .await;
    let p = start(
        m,
        &Elsewhere {
            upstream_stand_in: upstream.url(),
            ..Elsewhere::nowhere()
        },
    )
    .await;
    let alice = m.spare(7);
    let (status, body) = send(
        &p,
        "GET",
        "/upstream-stand-in/alice/seed.txt",
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(status, 403, "AWS's answer passes through");
    assert!(
        text(&body).contains("RequestTimeTooSkewed"),
        "{}",
        text(&body)
    );
    let text = p.metrics().await;
    assert_eq!(
        metric(
            &text,
            "jwtgate_aws_signing_failures_total",
            &["upstream=\"upstream-stand-in\"", "reason=\"clock_skew\""]
        ),
        1,
        "{text}"
    );
}

/// An STS stand-in answering every call with `status` and `body`.
async fn sts_answering(status: &'static str, body: &'static str) -> Recorder {
    Recorder::answering(move |_| {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await
}

#[tokio::test]
async fn sts_throttling_is_503_and_garbage_is_502() {
    let m = moto();
    let alice = m.spare(5);
    let throttling = sts_answering(
        "400 Bad Request",
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender\
         </Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
         <RequestId>1</RequestId></ErrorResponse>",
    )
    .await;
    let garbage = sts_answering("200 OK", "<html>not STS</html>").await;
    for (sts, want, what) in [
        (&throttling, 503, "STS throttling"),
        (&garbage, 502, "an answer that is not STS's"),
    ] {
        let p = start(
            m,
            &Elsewhere {
                sts_stand_in: sts.url(),
                ..Elsewhere::nowhere()
            },
        )
        .await;
        let res = common::client()
            .get(url(&p, "/sts-stand-in/alice/seed.txt"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), want, "{what}");
        if want == 503 {
            assert!(
                res.headers().contains_key("retry-after"),
                "{what}: {:?}",
                res.headers()
            );
        }
        let text = p.metrics().await;
        assert_eq!(
            metric(
                &text,
                "jwtgate_aws_signing_failures_total",
                &["upstream=\"sts-stand-in\"", "reason=\"credentials\""]
            ),
            1,
            "{what}: {text}"
        );
    }
}

#[tokio::test]
async fn a_redirect_from_a_signed_upstream_goes_back_to_the_client() {
    let m = moto();
    let upstream = Recorder::answering(|_| {
        b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/elsewhere\r\n\
          content-length: 0\r\n\r\n"
            .to_vec()
    })
    .await;
    let p = start(
        m,
        &Elsewhere {
            upstream_stand_in: upstream.url(),
            ..Elsewhere::nowhere()
        },
    )
    .await;
    // Asked without following redirects, as a browser's fetch with `redirect: "manual"`.
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(url(&p, "/upstream-stand-in/alice/seed.txt"))
        .bearer_auth(m.spare(7))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 307, "the redirect goes back as is");
    assert_eq!(res.headers()["location"], "http://127.0.0.1:9/elsewhere");
    assert_eq!(upstream.take().len(), 1, "jwtgate did not follow it");
}

#[tokio::test]
async fn no_token_on_an_optional_route_of_a_web_identity_source_is_401() {
    let m = moto();
    let p = proxy(m).await;
    let res = common::client()
        .get(url(&p, "/verify/users-optional/public/hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        401,
        "STS has nothing to give a guest: {}",
        res.text().await.unwrap()
    );
}

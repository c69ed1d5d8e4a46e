//! AWS credentials per user (issue 15), against real components: moto's server (Cognito user
//! pool tokens, the identity-pool and STS APIs, its request recorder), AWS's SigV4 test suite
//! (in the unit tests) and botocore's signer. moto and botocore run from target/interop-venv
//! (`tests/interop/venv.sh`, which `scripts/test` runs first).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::recorder::{Recorder, cognito_credentials};
use jwtgate::aws::{
    AwsError, CredentialSource, DEFAULT_REFRESH_MARGIN, DEFAULT_TIMEOUT, Gateway, IdentityPool,
    Principal, SourceKind, SourceSettings, UserToken, WebIdentity,
};
use jwtgate::metrics::Metrics;
use serde_json::Value;

use common::interop::{script, venv_python};

/// moto's server with a user pool, two users' ID tokens, an identity pool and two roles
/// (`tests/interop/aws_moto.py`). Stopped by its PID on drop.
struct Moto {
    child: Child,
    url: String,
    issuer: String,
    identity_pool_id: String,
    tokens: Value,
    roles: Vec<String>,
    _recording: tempfile_dir::TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A directory under target/ removed on drop (no tempfile crate in the tree).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("{tag}-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Moto {
    /// Stops the server (by its PID); its URL then refuses connections.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn start() -> Moto {
        let dir = tempfile_dir::TempDir::new("moto");
        let recording = dir.path().join("recording.jsonl");
        let (child, v) = common::interop::start_script(
            "aws_moto.py",
            &[
                ("MOTO_RECORDER_FILEPATH", recording.as_os_str()),
                ("MOTO_ENABLE_RECORDING", "true".as_ref()),
            ],
        );
        Moto {
            child,
            url: v["url"].as_str().unwrap().to_owned(),
            issuer: v["issuer"].as_str().unwrap().to_owned(),
            identity_pool_id: v["identity_pool_id"].as_str().unwrap().to_owned(),
            tokens: v["tokens"].clone(),
            roles: v["roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect(),
            _recording: dir,
        }
    }

    fn token(&self, user: &str) -> String {
        self.tokens[user].as_str().unwrap().to_owned()
    }

    /// Forgets what was recorded so far.
    async fn reset_recording(&self) {
        let client = reqwest::Client::new();
        for path in ["reset-recording", "start-recording"] {
            let res = client
                .post(format!("{}/moto-api/recorder/{path}", self.url))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success());
        }
    }

    /// The requests moto served since the last reset: (action, JSON or form body).
    async fn recorded(&self) -> Vec<(String, Value)> {
        common::interop::moto_recording(&self.url).await
    }

    async fn count(&self, action: &str) -> usize {
        self.recorded()
            .await
            .iter()
            .filter(|(a, _)| a == action)
            .count()
    }
}

/// The parts of a token the proxy hands the source.
struct Who {
    token: String,
    issuer: String,
    subject: String,
    expires_at: u64,
    preferred_role: Option<String>,
}

impl Who {
    fn of(token: &str) -> Who {
        let c = common::token_claims(token);
        Who {
            token: token.to_owned(),
            issuer: c["iss"].as_str().unwrap().to_owned(),
            subject: c["sub"].as_str().unwrap().to_owned(),
            expires_at: c["exp"].as_u64().unwrap(),
            preferred_role: None,
        }
    }

    fn principal(&self) -> Principal<'_> {
        Principal::User(UserToken {
            token: &self.token,
            issuer: &self.issuer,
            subject: &self.subject,
            expires_at: self.expires_at,
            preferred_role: self.preferred_role.as_deref(),
        })
    }
}

fn settings(name: &str, kind: SourceKind) -> SourceSettings {
    SourceSettings {
        name: name.into(),
        kind,
        timeout: DEFAULT_TIMEOUT,
        refresh_margin: DEFAULT_REFRESH_MARGIN,
        cache_max_bytes: 1 << 20,
    }
}

fn identity_pool(moto: &Moto, guests: bool) -> SourceKind {
    SourceKind::IdentityPool(IdentityPool {
        identity_pool_id: moto.identity_pool_id.clone(),
        region: "us-east-1".into(),
        endpoint: format!("{}/", moto.url),
        guests,
    })
}

fn web_identity(endpoint: &str, role_arn: Option<&str>, roles: &[String]) -> SourceKind {
    SourceKind::WebIdentity(WebIdentity {
        role_arn: role_arn.map(str::to_owned),
        roles: roles.to_vec(),
        endpoint: format!("{endpoint}/"),
        duration: None,
    })
}

/// A wall clock the test moves.
#[derive(Clone)]
struct TestClock(Arc<Mutex<SystemTime>>);

impl TestClock {
    fn new() -> TestClock {
        TestClock(Arc::new(Mutex::new(SystemTime::now())))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    fn clock(&self) -> jwtgate::aws::Clock {
        let t = Arc::clone(&self.0);
        Arc::new(move || *t.lock().unwrap())
    }
}

fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn identity_pool_sends_the_id_token_in_logins() {
    let moto = Moto::start();
    moto.reset_recording().await;
    let source = CredentialSource::new(
        settings("users", identity_pool(&moto, false)),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let alice = Who::of(&moto.token("alice"));
    let creds = source.credentials(&alice.principal()).await.unwrap();
    // moto's identity pool answers fixed keys.
    assert_eq!(creds.access_key_id(), "TESTACCESSKEY12345");
    assert!(creds.session_token().is_some());
    assert!(creds.expires_at().is_some());

    let calls = moto.recorded().await;
    let actions: Vec<&str> = calls.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["GetId", "GetCredentialsForIdentity"]);
    let provider = moto.issuer.strip_prefix("https://").unwrap();
    let (_, get_id) = &calls[0];
    assert_eq!(get_id["IdentityPoolId"], moto.identity_pool_id.as_str());
    assert_eq!(
        get_id["Logins"],
        serde_json::json!({ provider: alice.token })
    );
    let (_, get_credentials) = &calls[1];
    assert_eq!(
        get_credentials["Logins"],
        serde_json::json!({ provider: alice.token })
    );
    let identity_id = get_credentials["IdentityId"].as_str().unwrap();
    assert!(identity_id.starts_with("us-east-1:"), "{identity_id}");
}

#[tokio::test]
async fn guests_get_the_unauthenticated_identity_only_when_allowed() {
    let moto = Moto::start();
    moto.reset_recording().await;
    let metrics = Arc::new(Metrics::new());
    let closed = CredentialSource::new(
        settings("closed", identity_pool(&moto, false)),
        Arc::clone(&metrics),
    )
    .unwrap();
    let e = closed.credentials(&Principal::Guest).await.unwrap_err();
    assert_eq!(e.status(), 403, "{e}");
    assert!(
        moto.recorded().await.is_empty(),
        "no call for a refused guest"
    );

    let open =
        CredentialSource::new(settings("open", identity_pool(&moto, true)), metrics).unwrap();
    open.credentials(&Principal::Guest).await.unwrap();
    open.credentials(&Principal::Guest).await.unwrap();
    let calls = moto.recorded().await;
    let actions: Vec<&str> = calls.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["GetId", "GetCredentialsForIdentity"],
        "the second is cached"
    );
    assert!(calls[0].1.get("Logins").is_none(), "{:?}", calls[0].1);
    assert!(calls[1].1.get("Logins").is_none(), "{:?}", calls[1].1);
}

#[tokio::test]
async fn a_hundred_concurrent_requests_of_one_user_make_one_call() {
    let moto = Moto::start();
    moto.reset_recording().await;
    let metrics = Arc::new(Metrics::new());
    let source = Arc::new(
        CredentialSource::new(
            settings("users", identity_pool(&moto, false)),
            Arc::clone(&metrics),
        )
        .unwrap(),
    );
    let token = moto.token("alice");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let source = Arc::clone(&source);
            let who = Who::of(&token);
            tokio::spawn(async move { source.credentials(&who.principal()).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(moto.count("GetId").await, 1);
    assert_eq!(moto.count("GetCredentialsForIdentity").await, 1);
    let text = metrics.render(0);
    let calls = "jwtgate_aws_credential_calls_total";
    assert_eq!(
        metric(&text, calls, &["source=\"users\"", "result=\"ok\""]),
        1,
        "{text}"
    );
    let cache = "jwtgate_aws_credential_cache_total";
    assert_eq!(metric(&text, cache, &["outcome=\"miss\""]), 1, "{text}");
    assert_eq!(metric(&text, cache, &["outcome=\"hit\""]), 99, "{text}");
    assert_eq!(source.cached_entries(), 1);
}

#[tokio::test]
async fn two_users_never_share_an_entry() {
    let moto = Moto::start();
    moto.reset_recording().await;
    let role = moto.roles[0].clone();
    let source = CredentialSource::new(
        settings("s3", web_identity(&moto.url, Some(&role), &[])),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let alice = Who::of(&moto.token("alice"));
    let bob = Who::of(&moto.token("bob"));
    let a = source.credentials(&alice.principal()).await.unwrap();
    let b = source.credentials(&bob.principal()).await.unwrap();
    // STS (moto) issues keys per call: each user has their own.
    assert_ne!(a.access_key_id(), b.access_key_id());
    assert_ne!(a.secret_access_key(), b.secret_access_key());
    assert_eq!(source.cached_entries(), 2);
    // Again: both from the cache, each their own.
    let a2 = source.credentials(&alice.principal()).await.unwrap();
    let b2 = source.credentials(&bob.principal()).await.unwrap();
    assert!(Arc::ptr_eq(&a, &a2) && Arc::ptr_eq(&b, &b2));

    let calls = moto.recorded().await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    for ((action, form), who) in calls.iter().zip([&alice, &bob]) {
        assert_eq!(action, "AssumeRoleWithWebIdentity");
        assert_eq!(form["RoleArn"], role.as_str());
        assert_eq!(form["RoleSessionName"], who.subject.as_str());
        assert_eq!(form["WebIdentityToken"], who.token.as_str());
    }
}

#[tokio::test]
async fn preferred_role_only_from_the_allowed_list() {
    let moto = Moto::start();
    moto.reset_recording().await;
    let (readers, writers) = (moto.roles[0].clone(), moto.roles[1].clone());
    let metrics = Arc::new(Metrics::new());
    let source = CredentialSource::new(
        settings(
            "roles",
            web_identity(&moto.url, Some(&readers), std::slice::from_ref(&writers)),
        ),
        Arc::clone(&metrics),
    )
    .unwrap();
    let mut alice = Who::of(&moto.token("alice"));
    alice.preferred_role = Some(writers.clone());
    source.credentials(&alice.principal()).await.unwrap();
    alice.preferred_role = Some("arn:aws:iam::123456789012:role/admins".into());
    source.credentials(&alice.principal()).await.unwrap();
    let roles: Vec<String> = moto
        .recorded()
        .await
        .iter()
        .map(|(_, f)| f["RoleArn"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        roles,
        [writers.clone(), readers],
        "a role outside the list falls back"
    );
    assert_eq!(source.cached_entries(), 2, "one entry per role");

    // Without a fixed role, a role outside the list is refused before any call.
    moto.reset_recording().await;
    let strict = CredentialSource::new(
        settings("strict", web_identity(&moto.url, None, &[writers])),
        metrics,
    )
    .unwrap();
    let e = strict.credentials(&alice.principal()).await.unwrap_err();
    assert_eq!(e.status(), 403, "{e}");
    assert!(moto.recorded().await.is_empty());
}

#[tokio::test]
async fn expiry_refreshes_and_the_identity_id_is_kept() {
    let moto = Moto::start();
    moto.reset_recording().await;
    let clock = TestClock::new();
    let source = CredentialSource::new(
        settings("users", identity_pool(&moto, false)),
        Arc::new(Metrics::new()),
    )
    .unwrap()
    .with_clock(clock.clock());
    let alice = Who::of(&moto.token("alice"));
    let first = source.credentials(&alice.principal()).await.unwrap();
    // moto's identity-pool credentials last 90 s: refreshed at the latest half-way.
    clock.advance(Duration::from_secs(10));
    let again = source.credentials(&alice.principal()).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    clock.advance(Duration::from_secs(50));
    let refreshed = source.credentials(&alice.principal()).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &refreshed));
    let calls = moto.recorded().await;
    let actions: Vec<&str> = calls.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "GetId",
            "GetCredentialsForIdentity",
            "GetCredentialsForIdentity"
        ],
        "the IdentityId is remembered"
    );
    assert_eq!(calls[1].1["IdentityId"], calls[2].1["IdentityId"]);
}

#[tokio::test]
async fn an_entry_ends_with_its_token() {
    let moto = Moto::start();
    moto.reset_recording().await;
    let clock = TestClock::new();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let source = CredentialSource::new(
        settings("s3", web_identity(&moto.url, Some(&moto.roles[0]), &[])),
        Arc::new(Metrics::new()),
    )
    .unwrap()
    .with_clock(clock.clock());
    let mut alice = Who::of(&moto.token("alice"));
    // STS credentials last an hour; this token only 30 s more.
    alice.expires_at = now + 30;
    source.credentials(&alice.principal()).await.unwrap();
    clock.advance(Duration::from_secs(31));
    let e = source.credentials(&alice.principal()).await.unwrap_err();
    assert_eq!(e.status(), 401, "an expired token gets nothing: {e}");
    // The user's next token: a new call, not the old token's entry.
    alice.expires_at = now + 3600;
    source.credentials(&alice.principal()).await.unwrap();
    assert_eq!(moto.count("AssumeRoleWithWebIdentity").await, 2);
}

#[tokio::test]
async fn unreachable_and_garbage_answers_are_errors_without_the_token() {
    let mut moto = Moto::start();
    let alice = Who::of(&moto.token("alice"));
    let metrics = Arc::new(Metrics::new());
    let clock = TestClock::new();
    let down = CredentialSource::new(
        settings("down", web_identity(&moto.url, Some(&moto.roles[0]), &[])),
        Arc::clone(&metrics),
    )
    .unwrap()
    .with_clock(clock.clock());
    down.credentials(&alice.principal()).await.unwrap();
    // STS goes away; the cached credentials serve until they are due for refresh.
    moto.stop();
    down.credentials(&alice.principal()).await.unwrap();
    clock.advance(Duration::from_secs(3400));
    let e = down.credentials(&alice.principal()).await.unwrap_err();
    assert!(matches!(e, AwsError::Unavailable { .. }), "{e:?}");
    assert_eq!(e.status(), 503);
    assert!(e.retry_after().is_some());
    assert_eq!(down.cached_entries(), 0, "failures are not cached");
    assert_eq!(
        metric(
            &metrics.render(0),
            "jwtgate_aws_credential_calls_total",
            &["source=\"down\"", "result=\"ok\""]
        ),
        1
    );

    let garbage = Recorder::answering(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\nnot json!"
            .to_vec()
    })
    .await;
    let mut pool = identity_pool(&moto, false);
    if let SourceKind::IdentityPool(p) = &mut pool {
        p.endpoint = garbage.url();
    }
    let bad = CredentialSource::new(settings("bad", pool), Arc::clone(&metrics)).unwrap();
    let e = bad.credentials(&alice.principal()).await.unwrap_err();
    assert!(matches!(e, AwsError::Malformed { .. }), "{e:?}");
    assert_eq!(e.status(), 502);
    let sts_garbage = CredentialSource::new(
        settings(
            "bad-sts",
            web_identity(&garbage.url(), Some(&moto.roles[0]), &[]),
        ),
        Arc::clone(&metrics),
    )
    .unwrap();
    let e2 = sts_garbage
        .credentials(&alice.principal())
        .await
        .unwrap_err();
    assert!(matches!(e2, AwsError::Malformed { .. }), "{e2:?}");

    // An answer far over the bound is refused, not buffered.
    let huge = Recorder::answering(|_| {
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n".to_vec();
        r.extend(std::iter::repeat_n(b'a', 1_000_000));
        r
    })
    .await;
    let big = CredentialSource::new(
        settings("big", web_identity(&huge.url(), Some(&moto.roles[0]), &[])),
        Arc::clone(&metrics),
    )
    .unwrap();
    let e3 = big.credentials(&alice.principal()).await.unwrap_err();
    assert!(matches!(e3, AwsError::Malformed { .. }), "{e3:?}");

    for e in [&e, &e2, &e3] {
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(&alice.token), "{text}");
        }
    }
    let text = metrics.render(0);
    let calls = "jwtgate_aws_credential_calls_total";
    assert_eq!(
        metric(&text, calls, &["source=\"down\"", "result=\"unavailable\""]),
        1
    );
    assert_eq!(
        metric(&text, calls, &["source=\"bad\"", "result=\"malformed\""]),
        1
    );
}

fn gateway_source(env: &[(&str, String)], sts: Option<String>) -> (CredentialSource, TestClock) {
    let map: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let clock = TestClock::new();
    let source = CredentialSource::new(
        settings("self", SourceKind::Gateway(Gateway { sts_endpoint: sts })),
        Arc::new(Metrics::new()),
    )
    .unwrap()
    .with_env(Arc::new(move |name| map.get(name).cloned()))
    .with_clock(clock.clock());
    (source, clock)
}

#[tokio::test]
async fn gateway_irsa_reads_the_token_file_and_assumes_the_role() {
    let moto = Moto::start();
    moto.reset_recording().await;
    let dir = tempfile_dir::TempDir::new("irsa");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{}\n", moto.token("bob"))).unwrap();
    let (source, _) = gateway_source(
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", file.display().to_string()),
            ("AWS_ROLE_ARN", moto.roles[1].clone()),
            ("AWS_ROLE_SESSION_NAME", "jwtgate-pod".into()),
        ],
        Some(format!("{}/", moto.url)),
    );
    let creds = source.credentials(&Principal::Guest).await.unwrap();
    assert!(creds.access_key_id().starts_with("ASIA"), "{creds:?}");
    let calls = moto.recorded().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1["RoleArn"], moto.roles[1].as_str());
    assert_eq!(calls[0].1["RoleSessionName"], "jwtgate-pod");
    assert_eq!(calls[0].1["WebIdentityToken"], moto.token("bob").as_str());
}

/// Credentials JSON as the container endpoint and IMDS write it, expiring in `secs`.
fn credentials_json(key: &str, secs: u64) -> String {
    let at = SystemTime::now() + Duration::from_secs(secs);
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        r#"{{"Code":"Success","AccessKeyId":"{key}","SecretAccessKey":"s3cr3t","Token":"tok","Expiration":"{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z"}}"#,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn http_json(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn gateway_container_endpoint_with_its_token_file_and_refresh() {
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&served);
    let endpoint = Recorder::answering(move |_| {
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        http_json(&credentials_json(&format!("ASIACONTAINER{n}"), 600))
    })
    .await;
    let dir = tempfile_dir::TempDir::new("pod-identity");
    let file = dir.path().join("token");
    std::fs::write(&file, "pod-identity-token\n").unwrap();
    let (source, clock) = gateway_source(
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/v1/credentials", endpoint.url()),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                file.display().to_string(),
            ),
        ],
        None,
    );
    let first = source.credentials(&Principal::Guest).await.unwrap();
    assert_eq!(first.access_key_id(), "ASIACONTAINER0");
    let seen = endpoint.take();
    assert_eq!(seen.len(), 1);
    let head = seen[0].to_ascii_lowercase();
    assert!(head.starts_with("get /v1/credentials "), "{head}");
    assert!(
        head.contains("\r\nauthorization: pod-identity-token\r\n"),
        "{head}"
    );
    // Ten minutes of credentials: refreshed five minutes before they expire.
    clock.advance(Duration::from_secs(200));
    assert_eq!(
        source
            .credentials(&Principal::Guest)
            .await
            .unwrap()
            .access_key_id(),
        "ASIACONTAINER0"
    );
    clock.advance(Duration::from_secs(150));
    assert_eq!(
        source
            .credentials(&Principal::Guest)
            .await
            .unwrap()
            .access_key_id(),
        "ASIACONTAINER1"
    );
}

#[tokio::test]
async fn gateway_imds_v2_uses_a_session_token() {
    let imds = Recorder::answering(|request| {
        let line = request.lines().next().unwrap_or("");
        let has_token = request
            .to_ascii_lowercase()
            .contains("\r\nx-aws-ec2-metadata-token: imds-session\r\n");
        if line.starts_with("PUT /latest/api/token ") {
            http_json("imds-session")
        } else if !has_token {
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_vec()
        } else if line.starts_with("GET /latest/meta-data/iam/security-credentials/ ") {
            http_json("instance-role")
        } else if line.starts_with("GET /latest/meta-data/iam/security-credentials/instance-role ")
        {
            http_json(&credentials_json("ASIAINSTANCE", 3600))
        } else {
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec()
        }
    })
    .await;
    let (source, _) = gateway_source(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url())], None);
    let creds = source.credentials(&Principal::Guest).await.unwrap();
    assert_eq!(creds.access_key_id(), "ASIAINSTANCE");
    let seen = imds.take();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen[0]
            .to_ascii_lowercase()
            .contains("x-aws-ec2-metadata-token-ttl-seconds: 21600")
    );
}

/// One request signed by jwtgate and by botocore.
struct SignCase {
    service: &'static str,
    method: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    unsigned: bool,
}

const SIGN_CASES: &[SignCase] = &[
    SignCase {
        service: "s3",
        method: "GET",
        target: "/photos/a%20b/k%C3%A9y.jpg?list-type=2&prefix=a%2Fb&delimiter=%2F",
        headers: &[
            ("authorization", "Bearer eyJclient.token.here"),
            ("x-amz-security-token", "client-forged"),
            ("x-amz-date", "19990101T000000Z"),
            ("accept", "image/*"),
        ],
        body: b"",
        unsigned: true,
    },
    SignCase {
        service: "s3",
        method: "PUT",
        target: "/photos/user-1/../raw//x.txt",
        headers: &[
            ("content-type", "text/plain"),
            ("content-length", "11"),
            ("x-note", "a   b  "),
        ],
        body: b"hello world",
        unsigned: false,
    },
    SignCase {
        service: "execute-api",
        method: "POST",
        target: "/prod/items/a%2Fb/./c/../d?x=1&x=0&y=%E2%82%AC&z",
        headers: &[
            ("content-type", "application/json"),
            ("x-amz-target", "forged"),
        ],
        body: br#"{"name":"widget"}"#,
        unsigned: false,
    },
    SignCase {
        service: "lambda",
        method: "GET",
        // Queries as AWS's SDKs write them (RFC 3986; botocore signs the query as written, the
        // aws-sigv4 crate and AWS's servers decode it first: a raw `+` would differ).
        target: "/?q=a%20b&r=~_.-&s=%2A&t=a%2Bb",
        headers: &[("accept", "application/json")],
        body: b"",
        unsigned: false,
    },
    SignCase {
        service: "es",
        method: "DELETE",
        target: "/index-1/_doc/%E2%9C%93",
        headers: &[],
        body: b"",
        unsigned: false,
    },
];

#[test]
fn signatures_match_botocore() {
    use aws_lc_rs::digest;
    use jwtgate::aws::{Credentials, Payload, Secret, SigningScope, sign};

    let time = jwtgate::aws::time::parse_rfc3339("2026-11-30T12:34:56Z").unwrap();
    let creds = Credentials::new(
        "ASIAJWTGATEEXAMPLE",
        Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        Some(Secret::new("IQoJb3JpZ2luX2VjEXAMPLE/session+token=")),
        None,
    );
    let mut ours = Vec::new();
    let mut inputs = Vec::new();
    for case in SIGN_CASES {
        let host = format!("{}.us-west-2.amazonaws.com", case.service);
        let mut builder = http::Request::builder()
            .method(case.method)
            .uri(case.target)
            .header("host", "jwtgate.example");
        for (n, v) in case.headers {
            builder = builder.header(*n, *v);
        }
        let (mut parts, ()) = builder.body(()).unwrap().into_parts();
        let hash: String = digest::digest(&digest::SHA256, case.body)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let payload = if case.unsigned {
            Payload::Unsigned
        } else {
            Payload::Sha256(&hash)
        };
        sign(
            &mut parts,
            &host.parse().unwrap(),
            &SigningScope::new(case.service, "us-west-2"),
            &creds,
            payload,
            time,
        )
        .unwrap();
        // botocore gets the request as jwtgate sends it, minus what the signer added.
        let added = [
            "authorization",
            "x-amz-date",
            "x-amz-security-token",
            "x-amz-content-sha256",
        ];
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .filter(|(n, _)| !added.contains(&n.as_str()))
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        inputs.push(serde_json::json!({
            "method": case.method,
            "url": format!("https://{host}{}", case.target),
            "headers": headers,
            "body_base64": STANDARD.encode(case.body),
            "service": case.service,
            "region": "us-west-2",
            "access_key": creds.access_key_id(),
            "secret_key": creds.secret_access_key().expose(),
            "token": creds.session_token().unwrap().expose(),
            "time": "20261130T123456Z",
            "unsigned_payload": case.unsigned,
        }));
        let get = |n: &str| parts.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        ours.push((
            get("authorization").unwrap(),
            get("x-amz-date"),
            get("x-amz-content-sha256"),
        ));
        assert!(
            !parts.headers.contains_key("x-amz-target"),
            "client x-amz-* removed"
        );
        assert_eq!(
            parts.headers["x-amz-security-token"],
            creds.session_token().unwrap().expose()
        );
    }
    let python = venv_python();
    let mut child = Command::new(&python)
        .arg(script("sigv4_botocore.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} with botocore is needed: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&inputs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "botocore script failed");
    let theirs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.len(), SIGN_CASES.len());
    for ((case, (auth, date, sha)), b) in SIGN_CASES.iter().zip(&ours).zip(&theirs) {
        assert_eq!(auth, &b["authorization"], "{} {}", case.method, case.target);
        assert_eq!(date.as_deref(), b["x-amz-date"].as_str());
        assert_eq!(
            sha.as_deref(),
            b["x-amz-content-sha256"].as_str(),
            "{}",
            case.target
        );
    }
}

/// A Cognito Identity stand-in for the answers moto's stub never gives: `answer(action, body)`.
#[tokio::test]
async fn a_deleted_identity_is_asked_for_again_once() {
    let get_ids = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ids = Arc::clone(&get_ids);
    let first_served = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = Arc::clone(&first_served);
    let cognito = Recorder::cognito_identity(move |action, body| match action {
        "GetId" => {
            let n = ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            (200, format!(r#"{{"IdentityId":"us-east-1:id-{n}"}}"#))
        }
        "GetCredentialsForIdentity" => match body["IdentityId"].as_str() {
            // id-1 works once, then is deleted.
            Some("us-east-1:id-1") if !served.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                (200, cognito_credentials("ASIAID1"))
            }
            Some("us-east-1:id-1") => (
                400,
                r#"{"__type":"ResourceNotFoundException","message":"Identity 'us-east-1:id-1' not found."}"#.into(),
            ),
            Some(_) => (200, cognito_credentials("ASIAID2")),
            None => (400, r#"{"__type":"InvalidParameterException"}"#.into()),
        },
        _ => (400, r#"{"__type":"UnknownOperationException"}"#.into()),
    })
    .await;
    let clock = TestClock::new();
    let source = CredentialSource::new(
        settings(
            "users",
            SourceKind::IdentityPool(IdentityPool {
                identity_pool_id: "us-east-1:0a1b2c3d-1234-5678-9abc-def012345678".into(),
                region: "us-east-1".into(),
                endpoint: cognito.url(),
                guests: false,
            }),
        ),
        Arc::new(Metrics::new()),
    )
    .unwrap()
    .with_clock(clock.clock());
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let who = Who {
        token: "header.payload.signature".into(),
        issuer: "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC".into(),
        subject: "alice".into(),
        expires_at: now + 7200,
        preferred_role: None,
    };
    let first = source.credentials(&who.principal()).await.unwrap();
    assert_eq!(first.access_key_id(), "ASIAID1");
    clock.advance(Duration::from_secs(3400));
    let second = source.credentials(&who.principal()).await.unwrap();
    assert_eq!(second.access_key_id(), "ASIAID2");
    assert_eq!(get_ids.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn cognito_refusals_become_401_or_403_without_the_token() {
    let token = "eyJraWQiOiJrIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
    let echoed = format!(
        r#"{{"__type":"NotAuthorizedException","message":"Invalid login token. Token {token} expired."}}"#
    );
    let cognito = Recorder::cognito_identity(move |action, body| match (action, body.get("Logins")) {
        ("GetId", Some(_)) => (400, echoed.clone()),
        ("GetId", None) => (
            400,
            r#"{"__type":"NotAuthorizedException","message":"Unauthenticated access is not supported for this identity pool."}"#.into(),
        ),
        _ => (500, "{}".into()),
    })
    .await;
    let source = CredentialSource::new(
        settings(
            "users",
            SourceKind::IdentityPool(IdentityPool {
                identity_pool_id: "us-east-1:0a1b2c3d-1234-5678-9abc-def012345678".into(),
                region: "us-east-1".into(),
                endpoint: cognito.url(),
                guests: true,
            }),
        ),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let who = Who {
        token: token.into(),
        issuer: "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC".into(),
        subject: "alice".into(),
        expires_at: now + 3600,
        preferred_role: None,
    };
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let e = source.credentials(&who.principal()).await.unwrap_err();
    drop(guard);
    let logged = logs.text();
    assert!(logged.contains("NotAuthorizedException"), "{logged}");
    assert!(logged.contains("source=users"), "{logged}");
    assert!(
        !logged.contains("eyJ"),
        "the token is never logged: {logged}"
    );
    assert_eq!(e.status(), 401, "{e}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains("eyJ"), "{text}");
        assert!(text.contains("NotAuthorizedException"), "{text}");
    }
    let e = source.credentials(&Principal::Guest).await.unwrap_err();
    assert_eq!(e.status(), 403, "a pool without guests refuses them: {e}");
}

/// Log output captured in memory (the test's own subscriber, on this thread).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

//! The real binary: `--version`, `--help`, `check` (good, bad, missing files, `JWTGATE_CONFIG`),
//! and `run` with readiness, graceful drain on SIGTERM and reload on SIGHUP.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use jwtgate::dev::echo::EchoUpstream;
use jwtgate::dev::issuer::DevIssuer;

/// Safety bound for anything that waits on the process or the network.
const SAFETY: Duration = Duration::from_secs(20);

const BIN: &str = env!("CARGO_BIN_EXE_jwtgate");

fn jwtgate() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("JWTGATE_CONFIG")
        .env_remove("JWTGATE_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn demo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml")
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "jwtgate-cli-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 1-based line and column of the first `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the file"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line, col)
}

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// A running `jwtgate run`, its stderr collected by a thread. Killed (by its PID) on drop.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Running {
    fn start(config: &Path, proxy: SocketAddr, admin: SocketAddr) -> Running {
        Running::start_with(config, proxy, admin, &[])
    }

    /// Starts `jwtgate [global_args] run --config config`.
    fn start_with(
        config: &Path,
        proxy: SocketAddr,
        admin: SocketAddr,
        global_args: &[&str],
    ) -> Running {
        let mut child = jwtgate()
            .args(global_args)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running {
            child,
            stderr,
            proxy,
            admin,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// Polls `/readyz` until 200.
    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + SAFETY;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("jwtgate exited with {status}:\n{}", self.stderr());
            }
            if let Ok(res) = http
                .get(format!("http://{}/readyz", self.admin))
                .send()
                .await
            {
                if res.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "never ready:\n{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the stderr contains `needle`.
    async fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + SAFETY;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "stderr never showed {needle:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + SAFETY;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "jwtgate did not exit:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A config for `jwtgate run`: the dev issuer, the echo upstream, fixed listen addresses.
fn run_config(
    issuer: &DevIssuer,
    upstream: &EchoUpstream,
    proxy: SocketAddr,
    admin: SocketAddr,
    health_auth: &str,
) -> String {
    format!(
        r#"[server]
listen = "{proxy}"
admin_listen = "{admin}"
drain_timeout = "15s"

[upstream]
url = "{upstream}"

[[issuers]]
name = "dev"
issuer = "{iss}"
jwks_uri = "{jwks}"
audiences = ["{DEMO_CLIENT_ID}"]

[[routes]]
path = "/health"
{health_auth}

[[routes]]
name = "orders"
path = "/orders/**"
scopes_any = ["orders/read"]
token_use = "access"

[headers]
claims = {{ "x-user-sub" = "sub" }}
"#,
        upstream = upstream.url(),
        iss = issuer.issuer(),
        jwks = issuer.jwks_uri(),
    )
}

async fn issuer_and_upstream() -> (DevIssuer, EchoUpstream) {
    (
        DevIssuer::start("us-east-1_CLI").await.unwrap(),
        EchoUpstream::start().await.unwrap(),
    )
}

fn token(issuer: &DevIssuer, name: &str) -> String {
    issuer.sign(&issuer.access_token(user(name).unwrap()))
}

// ---------------------------------------------------------------------------------------------
// --version, --help

#[test]
fn version_and_help() {
    let out = output(jwtgate().arg("--version"));
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "jwtgate 0.1.0");

    let out = output(jwtgate().args(["--worker-threads", "0", "check", "--config", "x.toml"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--worker-threads"),
        "{}",
        text(&out.stderr)
    );

    let out = output(jwtgate().arg("--help"));
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in ["run", "check", "demo", "authz"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help does not list {command}:\n{help}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// check

#[test]
fn check_prints_the_route_table_of_the_demo_config() {
    let config = demo_config();
    let out = output(jwtgate().arg("check").arg("--config").arg(&config));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("/admin/**"), "{stdout}");
    assert!(stdout.contains("groups_any=admins"), "{stdout}");
    assert!(stdout.contains("/orders/**"), "{stdout}");
    assert!(stdout.contains("scopes_any=orders/read"), "{stdout}");
    assert!(stdout.contains("/health"), "{stdout}");
    // The example Cedar policy store, validated against its schema.
    assert!(stdout.contains("token_use=id policy=default"), "{stdout}");
    assert!(
        stdout.contains("policies \"default\"  namespace=TenantApi  resource=TenantApi::Application::\"TenantApi\"  policies=3  schema=validated"),
        "{stdout}"
    );
}

#[test]
fn check_reads_jwtgate_config_from_the_environment() {
    let out = output(jwtgate().arg("check").env("JWTGATE_CONFIG", demo_config()));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("groups_any=admins"), "{stdout}");
}

/// Every `examples/*.toml` passes `jwtgate check` (with the secrets its `*_env` keys name), so
/// the examples the README points at cannot rot.
#[test]
fn check_accepts_every_example_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let check = |config: &Path| {
        let out = output(
            jwtgate()
                .arg("check")
                .arg("--config")
                .arg(config)
                .env("JWTGATE_CLIENT_SECRET", "example-client-secret")
                .env(
                    "JWTGATE_COOKIE_KEYS",
                    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
                ),
        );
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{}:\n{stdout}\n{}",
            config.display(),
            text(&out.stderr)
        );
        stdout
    };
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.sort();
    assert!(!configs.is_empty(), "no examples/*.toml");
    for config in &configs {
        check(config);
    }
    // The AWS example: its credential sources and signed upstream are in the summary.
    let stdout = check(&dir.join("aws-s3.toml"));
    assert!(
        stdout.contains("aws_credentials \"users\"  source=identity_pool"),
        "{stdout}"
    );
    assert!(
        stdout.contains("aws_credentials \"gateway\"  source=gateway"),
        "{stdout}"
    );
    // Routes inherit the bucket's signing; the admin route overrides it with the gateway's.
    assert!(
        stdout.contains(
            "token_use=id sigv4 service=s3 region=eu-west-1 credentials=users payload=unsigned forwards=x-amz-meta-*"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("groups_any=admins sigv4 service=s3 region=eu-west-1 credentials=gateway"),
        "{stdout}"
    );
}

const BAD: &str = r#"[server]
listen = "nowhere"

[upstream]
url = "ftp://x"

[[issuers]]
name = "bad"
issuer = "https://idp.example"
audiences = ["client"]
algorithms = ["RS256", "HS256"]

[[routes]]
path = "admin"
"#;

#[test]
fn check_reports_every_problem_with_file_line_col_and_key() {
    let dir = TempDir::new();
    let path = dir.write("bad.toml", BAD);
    let file = path.display().to_string();
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = [
        ("\"nowhere\"", "server.listen"),
        ("\"ftp://x\"", "upstream.url"),
        ("\"HS256\"", "issuers[0].algorithms"),
        ("\"admin\"", "routes[0].path"),
    ];
    for (value, key) in expected {
        let (line, col) = position(BAD, value);
        let prefix = format!("{file}:{line}:{col}: {key}: ");
        assert!(
            stderr.lines().any(|l| l.contains(&prefix)),
            "no line with {prefix:?} in:\n{stderr}"
        );
    }
    let problem_lines = stderr.lines().filter(|l| l.contains(&file)).count();
    assert_eq!(
        problem_lines,
        expected.len(),
        "one line per problem:\n{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
}

/// Editors and CI problem matchers read `^file:line:col:`; the first problem line carries a
/// `jwtgate: ` prefix, so they miss the first (often the only) error.
#[test]
fn check_problem_lines_start_with_the_file_name() {
    let dir = TempDir::new();
    let path = dir.write("bad.toml", BAD);
    let file = path.display().to_string();
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for line in stderr.lines().filter(|l| l.contains(&file)) {
        assert!(line.starts_with(&format!("{file}:")), "{line:?}");
    }
}

#[test]
fn check_points_at_unknown_keys_and_syntax_errors() {
    let dir = TempDir::new();
    let unknown = "[server]\nlisten = \"127.0.0.1:1\"\nlistn = 1\n";
    let path = dir.write("unknown.toml", unknown);
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let needle = format!("{}:3:1: toml: unknown field `listn`", path.display());
    assert!(stderr.contains(&needle), "{needle:?} not in:\n{stderr}");

    let syntax = "[upstream]\nurl = \"http://127.0.0.1:1\"\n\n[[routes]\npath = \"/\"\n";
    let path = dir.write("syntax.toml", syntax);
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let needle = format!("{}:4:", path.display());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&needle) && l.contains(": toml: ")),
        "{needle:?} not in:\n{stderr}"
    );
}

const BAD_HEADER_POLICY: &str = r#"
[upstream]
url = "http://127.0.0.1:1"

[[routes]]
path = "/legacy/**"
auth = "none"
keep_override_headers = ["X-HTTP-Method-Override", "x-user-sub"]

[headers]
underscores = "sometimes"
claims = { "x_forwarded_for" = "sub" }
"#;

#[test]
fn check_points_at_bad_header_policy_options() {
    let dir = TempDir::new();
    let path = dir.write("headers.toml", BAD_HEADER_POLICY);
    let file = path.display().to_string();
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for (value, key) in [
        ("\"x-user-sub\"", "routes[0].keep_override_headers"),
        ("\"sometimes\"", "headers.underscores"),
    ] {
        let (line, col) = position(BAD_HEADER_POLICY, value);
        let prefix = format!("{file}:{line}:{col}: {key}: ");
        assert!(stderr.contains(&prefix), "no {prefix:?} in:\n{stderr}");
    }
    // A look-alike of a managed header is managed too.
    assert!(
        stderr.contains("\"x_forwarded_for\" is managed by jwtgate"),
        "{stderr}"
    );

    let good = BAD_HEADER_POLICY
        .replace(", \"x-user-sub\"", "")
        .replace("sometimes", "keep")
        .replace("x_forwarded_for", "x-user-sub");
    let path = dir.write("good.toml", &good);
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("keeps x-http-method-override"), "{stdout}");
    assert!(stdout.contains("client headers with '_': kept"), "{stdout}");
}

const BAD_PATHS: &str = r#"[upstream]
url = "http://127.0.0.1:3000"

[[routes]]
path = "/public/**"
auth = "none"

[[routes]]
path = "/files/a;b"
auth = "none"

[paths]
semicolons = "strip"
case_insensitive = false
"#;

#[test]
fn check_reports_a_bad_paths_option_and_a_semicolon_pattern_with_file_line_col() {
    let dir = TempDir::new();
    let path = dir.write("paths.toml", BAD_PATHS);
    let file = path.display().to_string();
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let (line, col) = position(BAD_PATHS, "\"strip\"");
    let needle = format!("{file}:{line}:{col}: paths.semicolons: \"strip\" must be reject, allow");
    assert!(stderr.contains(&needle), "{needle:?} not in:\n{stderr}");
    let (line, col) = position(BAD_PATHS, "\"/files/a;b\"");
    let needle =
        format!("{file}:{line}:{col}: routes[1].path: \"/files/a;b\" must not contain ';'");
    assert!(stderr.contains(&needle), "{needle:?} not in:\n{stderr}");
    assert!(out.stdout.is_empty());

    // Fixed, `check` prints the options with the route table.
    let good = BAD_PATHS
        .replace("\"strip\"", "\"allow\"")
        .replace("/files/a;b", "/files/a")
        .replace("case_insensitive = false", "case_insensitive = true");
    let path = dir.write("paths-ok.toml", &good);
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("paths  semicolons=allow  case_insensitive=true"),
        "{stdout}"
    );
}

const BAD_CAPTURES: &str = r#"[upstream]
url = "http://127.0.0.1:3000/api"

[[issuers]]
name = "cognito"
user_pool_id = "us-east-1_AbC123"
audiences = ["client"]

[[routes]]
path = "/tenants/{tenant}/**"
claims = { "custom:tenant" = "{tenant_id}" }
capture_headers = { "x-forwarded-tenant" = "tenant" }

[[routes]]
path = "/orders/*/**"
auth = "none"
strip_prefix = "/orders/x"
add_prefix = "/v1/"
"#;

#[test]
fn check_points_at_bad_captures_and_rewrites_then_shows_them() {
    let dir = TempDir::new();
    let path = dir.write("captures.toml", BAD_CAPTURES);
    let file = path.display().to_string();
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for (needle, message) in [
        (
            "\"{tenant_id}\"",
            "routes[0].claims.custom:tenant: {tenant_id} is not captured by the route's path \"/tenants/{tenant}/**\"",
        ),
        (
            "{ \"x-forwarded-tenant\"",
            "routes[0].capture_headers.x-forwarded-tenant: \"x-forwarded-tenant\" is managed by jwtgate",
        ),
        (
            "\"/orders/x\"",
            "routes[1].strip_prefix: cannot apply to the route's pattern \"/orders/*/**\"",
        ),
        (
            "\"/v1/\"",
            "routes[1].add_prefix: \"/v1/\" must start with '/'",
        ),
    ] {
        let (line, col) = position(BAD_CAPTURES, needle);
        let needle = format!("{file}:{line}:{col}: {message}");
        assert!(stderr.contains(&needle), "{needle:?} not in:\n{stderr}");
    }
    assert!(out.stdout.is_empty());

    let good = BAD_CAPTURES
        .replace("{tenant_id}", "{tenant}")
        .replace("x-forwarded-tenant", "x-tenant-id")
        .replace("/orders/x", "/orders")
        .replace("/v1/", "/v1");
    let path = dir.write("captures-ok.toml", &good);
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("upstream \"default\"  url=http://127.0.0.1:3000/api"),
        "{stdout}"
    );
    assert!(stdout.contains("claim custom:tenant={tenant}"), "{stdout}");
    assert!(
        stdout.contains("captures tenant  header x-tenant-id={tenant}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/orders/*/** → strip /orders, add /v1"),
        "{stdout}"
    );
}

#[test]
fn check_on_a_missing_file_names_it() {
    let dir = TempDir::new();
    let path = dir.0.join("does-not-exist.toml");
    let out = output(jwtgate().arg("check").arg("--config").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()),
        "the message does not name the file:\n{stderr}"
    );
    assert!(stderr.contains("cannot read"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// run: start-up failures

#[test]
fn run_refuses_a_bad_config_with_file_line_col() {
    let dir = TempDir::new();
    let path = dir.write("bad.toml", BAD);
    let out = output(jwtgate().arg("run").arg("--config").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let (line, col) = position(BAD, "\"admin\"");
    let needle = format!("{}:{line}:{col}: routes[0].path: ", path.display());
    assert!(stderr.contains(&needle), "{needle:?} not in:\n{stderr}");
}

#[test]
fn run_on_a_busy_port_exits_1_naming_the_address() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let dir = TempDir::new();
    let path = dir.write(
        "busy.toml",
        &format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{}\"\n\n[upstream]\n\
             url = \"http://127.0.0.1:9\"\n\n[[routes]]\npath = \"/**\"\nauth = \"none\"\n",
            free_addr()
        ),
    );
    let out = output(jwtgate().arg("run").arg("--config").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    drop(busy);
}

// ---------------------------------------------------------------------------------------------
// run: readiness, SIGTERM drain

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_and_drains_in_flight_requests_on_sigterm() {
    // One worker thread: the smallest runtime serves and drains like any other.
    serves_and_drains(&["--worker-threads", "1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runtime_per_core_serves_and_drains_alike() {
    serves_and_drains(&["--runtime", "per-core", "--worker-threads", "3"]).await;
}

/// Serves, refuses, then drains a request in flight on SIGTERM, closes every listening socket
/// and exits 0, started with `global_args`.
async fn serves_and_drains(global_args: &[&str]) {
    let (issuer, upstream) = issuer_and_upstream().await;
    let (proxy, admin) = (free_addr(), free_addr());
    let dir = TempDir::new();
    let path = dir.write(
        "jwtgate.toml",
        &run_config(&issuer, &upstream, proxy, admin, "auth = \"none\""),
    );
    let mut jwtgate = Running::start_with(&path, proxy, admin, global_args);
    let http = client();
    jwtgate.wait_ready(&http).await;
    // New connections spread over every socket of the address (one per core): each serves.
    for _ in 0..12 {
        let fresh = client();
        let res = fresh.get(jwtgate.url("/health")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }

    let alice_token = token(&issuer, "alice");
    let res = http
        .get(jwtgate.url("/orders/1"))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.last().unwrap().headers["x-user-sub"], alice().sub);
    assert_eq!(
        http.get(jwtgate.url("/orders/1"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // A slow request is in flight (the proxy's gauge says so) when SIGTERM arrives.
    let slow = tokio::spawn({
        let http = client();
        let url = jwtgate.url("/orders/slow?sleep_ms=1500");
        let alice = alice_token.clone();
        async move {
            let res = http.get(url).bearer_auth(alice).send().await?;
            let status = res.status();
            let body = res.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
    });
    let deadline = Instant::now() + SAFETY;
    loop {
        let metrics = http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("\njwtgate_requests_in_flight 1\n") {
            break;
        }
        assert!(Instant::now() < deadline, "the slow request never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(jwtgate.pid(), "TERM");

    // New connections are refused once the listener is closed ...
    let deadline = Instant::now() + SAFETY;
    loop {
        match tokio::net::TcpStream::connect(proxy).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ... while the request in flight completes normally.
    let (status, body) = tokio::time::timeout(SAFETY, slow)
        .await
        .expect("the in-flight request finished")
        .unwrap()
        .expect("the in-flight request was not cut off");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/orders/slow?sleep_ms=1500"), "{body}");
    assert_eq!(upstream.last().unwrap().uri, "/orders/slow?sleep_ms=1500");

    let status = jwtgate.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", jwtgate.stderr());
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "nothing listens after exit"
    );
}

// ---------------------------------------------------------------------------------------------
// run: SIGHUP reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_is_refused() {
    let (issuer, upstream) = issuer_and_upstream().await;
    let (proxy, admin) = (free_addr(), free_addr());
    let dir = TempDir::new();
    let first = run_config(&issuer, &upstream, proxy, admin, "auth = \"none\"");
    let path = dir.write("jwtgate.toml", &first);
    let mut jwtgate = Running::start(&path, proxy, admin);
    let http = client();
    jwtgate.wait_ready(&http).await;
    let alice_token = token(&issuer, "alice");
    assert_eq!(
        http.get(jwtgate.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Second config: /health needs a token, and a new route appears.
    let second = format!(
        "{}\n[[routes]]\nname = \"new\"\npath = \"/new\"\nauth = \"none\"\n",
        run_config(&issuer, &upstream, proxy, admin, "")
    );
    std::fs::write(&path, &second).unwrap();
    assert_eq!(
        http.get(jwtgate.url("/new")).send().await.unwrap().status(),
        404
    );
    signal(jwtgate.pid(), "HUP");
    let deadline = Instant::now() + SAFETY;
    while http
        .get(jwtgate.url("/health"))
        .send()
        .await
        .unwrap()
        .status()
        != 401
    {
        assert!(
            Instant::now() < deadline,
            "the new config never took effect:\n{}",
            jwtgate.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        http.get(jwtgate.url("/new")).send().await.unwrap().status(),
        200
    );
    let with_token = http
        .get(jwtgate.url("/health"))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);

    // A broken file: refused with file:line:col, the second config keeps serving.
    let broken = second.replace("path = \"/new\"", "path = \"new\"");
    std::fs::write(&path, &broken).unwrap();
    signal(jwtgate.pid(), "HUP");
    let (line, col) = position(&broken, "\"new\"\nauth");
    let needle = format!("{}:{line}:{col}: routes[2].path: ", path.display());
    jwtgate.wait_stderr(&needle).await;
    assert!(jwtgate.stderr().contains("configuration refused"));
    assert_eq!(
        http.get(jwtgate.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(jwtgate.url("/new")).send().await.unwrap().status(),
        200
    );
    let res = http
        .get(jwtgate.url("/orders/1"))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        jwtgate.child.try_wait().unwrap(),
        None,
        "still running after the refused reload"
    );

    signal(jwtgate.pid(), "TERM");
    let status = jwtgate.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", jwtgate.stderr());
}

/// The design says "SIGHUP (and a changed file) reloads the config"; only SIGHUP does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_reloaded_without_sighup() {
    let (issuer, upstream) = issuer_and_upstream().await;
    let (proxy, admin) = (free_addr(), free_addr());
    let dir = TempDir::new();
    let path = dir.write(
        "jwtgate.toml",
        &run_config(&issuer, &upstream, proxy, admin, "auth = \"none\""),
    );
    let mut jwtgate = Running::start(&path, proxy, admin);
    let http = client();
    jwtgate.wait_ready(&http).await;
    assert_eq!(
        http.get(jwtgate.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    std::fs::write(&path, run_config(&issuer, &upstream, proxy, admin, "")).unwrap();
    let deadline = Instant::now() + SAFETY;
    while http
        .get(jwtgate.url("/health"))
        .send()
        .await
        .unwrap()
        .status()
        != 401
    {
        assert!(
            Instant::now() < deadline,
            "the changed file was not picked up within {SAFETY:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(jwtgate.pid(), "TERM");
    assert_eq!(jwtgate.wait_exit().await.code(), Some(0));
}

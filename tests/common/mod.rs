//! Shared test harness: the development issuer, the echo upstream and an in-process proxy, all
//! on 127.0.0.1:0.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub mod binary;
pub mod interop;
pub mod recorder;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jwtgate::compile::compile;
use jwtgate::dev::echo::EchoUpstream;
use jwtgate::dev::issuer::{DevIssuer, User};
use jwtgate::{Listeners, Shared, serve};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use jwtgate::dev::issuer::{DEMO_CLIENT_ID, sign_with, user};

/// A running proxy.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// Starts a proxy on `toml` (its `[server]` listen addresses are replaced by free ports).
    pub async fn start(toml: &str) -> TestProxy {
        let mut config = compile("test.toml", toml).unwrap_or_else(|e| panic!("test config:\n{e}"));
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.listen = proxy.local_addr().unwrap();
        config.admin_listen = admin.local_addr().unwrap();
        let (addr, admin_addr) = (config.listen, config.admin_listen);
        let shared = Shared::new(config).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            Arc::clone(&shared),
            Listeners {
                proxy,
                admin,
                tls: None,
            },
            async {
                let _ = stopped.await;
            },
        ));
        TestProxy {
            addr,
            admin: admin_addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts and waits until every issuer has keys.
    pub async fn start_ready(toml: &str) -> TestProxy {
        let proxy = Self::start(toml).await;
        proxy.wait_ready().await;
        proxy
    }

    pub async fn wait_ready(&self) {
        assert!(
            self.shared.wait_ready(Duration::from_secs(5)).await,
            "proxy never became ready"
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Stops accepting and drains.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub async fn metrics(&self) -> String {
        get_text(&self.admin_url("/metrics")).await
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The issuer, the echo upstream and a proxy in front of it.
pub struct Env {
    pub issuer: DevIssuer,
    pub upstream: EchoUpstream,
    pub proxy: TestProxy,
    pub http: reqwest::Client,
}

pub const ROUTES: &str = r#"
[[routes]]
path = "/health"
auth = "none"

[[routes]]
name = "admin"
path = "/admin/**"
groups_any = ["admins"]
token_use = "access"

[[routes]]
name = "orders-write"
path = "/orders/**"
methods = ["POST", "DELETE"]
scopes_all = ["orders/read", "orders/write"]
token_use = "access"

[[routes]]
name = "orders"
path = "/orders/**"
scopes_any = ["orders/read", "orders/admin"]
token_use = "access"

[[routes]]
name = "me"
path = "/me"
token_use = "id"

[[routes]]
name = "verified"
path = "/verified/*"
claims = { email_verified = "true", "cognito:username" = ["alice", "bob"] }

[[routes]]
name = "public"
path = "/public/**"
auth = "optional"

[[routes]]
name = "items"
path = "/items/*/detail"
"#;

/// The standard config: every route kind, claim headers, one issuer.
pub fn config(issuer: &DevIssuer, upstream: &str, extra_issuer: &str, extra: &str) -> String {
    format!(
        r#"
[upstream]
url = "{upstream}"
response_timeout = "2s"

[[issuers]]
name = "dev"
issuer = "{iss}"
jwks_uri = "{jwks}"
audiences = ["{DEMO_CLIENT_ID}"]
algorithms = ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
min_refetch_interval = "10s"
{extra_issuer}
{ROUTES}
{extra}
[headers]
claims = {{ "x-user-sub" = "sub", "x-user-groups" = "cognito:groups", "x-username" = "username", "x-scope" = "scope" }}
claims_json = "x-jwt-claims"
"#,
        iss = issuer.issuer(),
        jwks = issuer.jwks_uri(),
    )
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with("", "").await
    }

    /// Starts with extra TOML after the issuer table and after the routes.
    pub async fn start_with(extra_issuer: &str, extra: &str) -> Env {
        let issuer = DevIssuer::start("us-east-1_TEST").await.unwrap();
        let upstream = EchoUpstream::start().await.unwrap();
        let proxy =
            TestProxy::start_ready(&config(&issuer, &upstream.url(), extra_issuer, extra)).await;
        Env {
            issuer,
            upstream,
            proxy,
            http: client(),
        }
    }

    pub fn access(&self, name: &str) -> String {
        self.issuer
            .sign(&self.issuer.access_token(user(name).unwrap()))
    }

    pub fn id(&self, name: &str) -> String {
        self.issuer.sign(&self.issuer.id_token(user(name).unwrap()))
    }

    /// Access-token claims of `name`, to modify and sign.
    pub fn access_claims(&self, name: &str) -> Value {
        self.issuer.access_token(user(name).unwrap())
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.proxy.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
}

/// The body of `GET url` (the admin endpoints).
pub async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The claims of a token, read without checking anything.
pub fn token_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn www_authenticate(res: &reqwest::Response) -> String {
    res.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn alice() -> &'static User {
    user("alice").unwrap()
}

/// Sends raw bytes and returns what the server answered before closing (or within 5 s).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

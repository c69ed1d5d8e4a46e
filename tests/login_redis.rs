//! Sessions in Redis (a real `redis-server` started by the test): the cookie carries only an
//! id, large sessions work, logout revokes everywhere, and a Redis outage is a clear 503 with
//! recovery when it is back; providers sharing one Redis keep their sessions apart.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use jwtgate::dev::echo::EchoUpstream;
use jwtgate::dev::hosted_ui::{DEMO_CLIENT_SECRET, DEMO_PASSWORD};
use jwtgate::dev::issuer::DevIssuer;
use serde_json::json;

const COOKIE: &str = "AWSELBAuthSessionCookie";

/// A `redis-server` child on a free loopback port, without persistence; killed on drop.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed: scripts/test installs it");
        let redis = Redis { port, child };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {port}");
    }

    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Env {
    issuer: DevIssuer,
    upstream: EchoUpstream,
    proxy: TestProxy,
    http: reqwest::Client,
}

impl Env {
    async fn start(redis: &Redis) -> Env {
        Self::start_with(redis, "").await
    }

    /// With `extra` (more tables, routes before the config's own) after `[login]`; `@ISSUER@`,
    /// `@SECRET@` and `@REDIS@` in it stand for the issuer URL, the secret file and the Redis URL.
    async fn start_with(redis: &Redis, extra: &str) -> Env {
        let issuer = DevIssuer::start("us-east-1_REDIS").await.unwrap();
        let upstream = EchoUpstream::start().await.unwrap();
        let secret =
            std::env::temp_dir().join(format!("jwtgate-redis-secret-{}", uuid::Uuid::new_v4()));
        std::fs::write(&secret, DEMO_CLIENT_SECRET).unwrap();
        let toml = format!(
            r#"
[upstream]
url = "{}"
[login]
issuer = "{}"
client_id = "{DEMO_CLIENT_ID}"
client_secret_file = "{}"
secure_cookies = false
session_store = "redis"
redis_url = "redis://127.0.0.1:{}"
{}
[[routes]]
path = "/app/**"
auth = "login"
[[routes]]
path = "/**"
auth = "none"
"#,
            upstream.url(),
            issuer.issuer(),
            secret.display(),
            redis.port,
            extra
                .replace("@ISSUER@", issuer.issuer())
                .replace("@SECRET@", &secret.display().to_string())
                .replace("@REDIS@", &format!("redis://127.0.0.1:{}", redis.port)),
        );
        let proxy = TestProxy::start_ready(&toml).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap();
        Env {
            issuer,
            upstream,
            proxy,
            http,
        }
    }

    /// Signs in as `user`; returns the session cookie header value, or the status that stopped it.
    async fn sign_in(&self, user: &str) -> Result<String, u16> {
        self.sign_in_at(user, "/app/x").await
    }

    /// [`Env::sign_in`] starting at `path` (whose route's provider signs the user in).
    async fn sign_in_at(&self, user: &str, path: &str) -> Result<String, u16> {
        let res = self.http.get(self.proxy.url(path)).send().await.unwrap();
        if res.status() != 302 {
            return Err(res.status().as_u16());
        }
        let state_cookie = set_cookies(&res).join("; ");
        let authorize = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
        let q = |k: &str| {
            authorize
                .query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
                .unwrap()
        };
        let res = self
            .http
            .post(format!("{}/oauth2/login", self.issuer.issuer()))
            .form(&[
                ("username", user),
                ("password", DEMO_PASSWORD),
                ("redirect_uri", &q("redirect_uri")),
                ("state", &q("state")),
                ("nonce", &q("nonce")),
                ("code_challenge", &q("code_challenge")),
            ])
            .send()
            .await
            .unwrap();
        let callback = res.headers()["location"].to_str().unwrap().to_owned();
        let res = self
            .http
            .get(&callback)
            .header("cookie", state_cookie)
            .send()
            .await
            .unwrap();
        if res.status() != 302 {
            return Err(res.status().as_u16());
        }
        Ok(set_cookies(&res)
            .into_iter()
            .filter(|c| c.starts_with(COOKIE))
            .collect::<Vec<_>>()
            .join("; "))
    }

    async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.http
            .get(self.proxy.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    }
}

/// `name=value` of each non-expiring Set-Cookie.
fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .filter(|c| !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sessions_live_in_redis_and_the_cookie_holds_only_an_id() {
    let redis = Redis::start();
    let env = Env::start(&redis).await;
    // A session over ALB's 11 KB limit (ALB answers 500 for those).
    let mut big = serde_json::Map::new();
    big.insert("custom:profile".into(), json!("p".repeat(9_000)));
    env.issuer.hosted_ui().set_extra_id_claims(big);
    let cookie = env.sign_in("alice").await.unwrap();
    assert!(
        cookie.starts_with(&format!("{COOKIE}-0=")) && !cookie.contains(';'),
        "one shard: {cookie}"
    );
    assert!(cookie.len() < 80, "an opaque id, not the session: {cookie}");
    let res = env.get("/app/x", &cookie).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        env.upstream.last().unwrap().headers["x-amzn-oidc-identity"],
        alice().sub
    );
}

#[tokio::test]
async fn logout_revokes_the_session_everywhere() {
    let redis = Redis::start();
    let env = Env::start(&redis).await;
    let cookie = env.sign_in("bob").await.unwrap();
    assert_eq!(env.get("/app/x", &cookie).await.status(), 200);
    // Another device (or a stolen copy) holding the same cookie.
    let copy = cookie.clone();
    let res = env.get("/oauth2/sign_out", &cookie).await;
    assert_eq!(res.status(), 302);
    assert_eq!(
        env.get("/app/x", &copy).await.status(),
        302,
        "revoked server-side"
    );
}

#[tokio::test]
async fn a_redis_outage_is_a_clear_503_then_recovers() {
    let mut redis = Redis::start();
    let env = Env::start(&redis).await;
    let cookie = env.sign_in("alice").await.unwrap();
    assert_eq!(env.get("/app/x", &cookie).await.status(), 200);

    redis.stop();
    let res = env.get("/app/x", &cookie).await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"message":"Service Unavailable","reason":"session store unavailable"}"#
    );
    // Signing in needs the store too: the callback answers 503, never a panic or a 500.
    assert_eq!(env.sign_in("bob").await, Err(503));
    let hits = env.upstream.hits();

    let redis = Redis::start_on(redis.port);
    let mut recovered = None;
    for _ in 0..100 {
        if let Ok(cookie) = env.sign_in("alice").await {
            recovered = Some(cookie);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cookie = recovered.expect("signing in works again once Redis is back");
    assert_eq!(env.get("/app/x", &cookie).await.status(), 200);
    assert_eq!(env.upstream.hits(), hits + 1);
    drop(redis);
}

#[tokio::test]
async fn providers_sharing_one_redis_keep_their_sessions_apart() {
    let redis = Redis::start();
    let staff = format!(
        r#"
[[logins]]
name = "staff"
issuer = "@ISSUER@"
client_id = "{DEMO_CLIENT_ID}"
client_secret_file = "@SECRET@"
secure_cookies = false
session_store = "redis"
redis_url = "@REDIS@"

[[routes]]
path = "/staff/**"
auth = "login"
login = "staff"
"#
    );
    let env = Env::start_with(&redis, &staff).await;
    let customer = env.sign_in("alice").await.unwrap();
    let id = customer.split_once('=').unwrap().1.to_owned();
    assert_eq!(env.get("/app/x", &customer).await.status(), 200);
    let copied = format!("{COOKIE}.staff-0={id}");
    let res = env.get("/staff/x", &copied).await;
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(
        status, 302,
        "the customer's id opens nothing for staff: {body}"
    );

    let staff_cookie = env.sign_in_at("bob", "/staff/x").await.unwrap();
    assert!(
        staff_cookie.starts_with(&format!("{COOKIE}.staff-0=")),
        "{staff_cookie}"
    );
    assert_eq!(env.get("/staff/x", &staff_cookie).await.status(), 200);

    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("jwtgate:session:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("jwtgate:session:staff:")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.matches(':').count() == 2),
        "the default provider's keys as before: {keys:?}"
    );
    // Signing out of one provider revokes only its session.
    assert_eq!(env.get("/oauth2/sign_out", &customer).await.status(), 302);
    assert_eq!(env.get("/app/x", &customer).await.status(), 302);
    assert_eq!(env.get("/staff/x", &staff_cookie).await.status(), 200);
}

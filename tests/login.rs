//! Browser sign-in (`auth = "login"`) against the development issuer's hosted UI: the whole
//! flow, hostile callbacks and cookies, refresh single-flight, logout, x-amzn-oidc-data.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use common::*;
use jwtgate::dev::echo::EchoUpstream;
use jwtgate::dev::hosted_ui::{DEMO_CLIENT_SECRET, DEMO_PASSWORD};
use jwtgate::dev::issuer::DevIssuer;
use jwtgate::login::cookies::CookieKeys;
use serde_json::{Value, json};

const COOKIE: &str = "AWSELBAuthSessionCookie";

/// A cookie-keeping client that does not follow redirects, so every hop can be inspected.
#[derive(Clone)]
struct Browser {
    http: reqwest::Client,
    jar: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            jar: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, res: &reqwest::Response) {
        for set in res.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attrs) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        self.get_with(url, &[]).await
    }

    async fn get_with(&mut self, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.get(url).header("cookie", self.cookie_header());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        self.keep(&res);
        res
    }

    async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let res = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&res);
        res
    }
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn query_param(url: &str, name: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

struct LoginEnv {
    issuer: DevIssuer,
    upstream: EchoUpstream,
    proxy: TestProxy,
}

fn secret_file() -> String {
    let path = std::env::temp_dir().join(format!("jwtgate-test-secret-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, DEMO_CLIENT_SECRET).unwrap();
    path.display().to_string()
}

fn login_config(issuer: &DevIssuer, upstream: &str, extra_login: &str) -> String {
    format!(
        r#"
[upstream]
url = "{upstream}"

[login]
issuer = "{iss}"
client_id = "{DEMO_CLIENT_ID}"
client_secret_file = "{secret}"
scope = "openid email profile"
secure_cookies = false
logout_redirect = "http://127.0.0.1:1/signed-out"
{extra_login}

[[routes]]
name = "admin"
path = "/admin/**"
auth = "login"
groups_any = ["admins"]

[[routes]]
name = "app"
path = "/app/**"
auth = "login"

[[routes]]
name = "public"
path = "/**"
auth = "none"

[headers]
claims = {{ "x-user-email" = "email", "x-user-groups" = "cognito:groups" }}
"#,
        iss = issuer.issuer(),
        secret = secret_file(),
    )
}

impl LoginEnv {
    async fn start(extra_login: &str) -> Self {
        let issuer = DevIssuer::start("us-east-1_LOGIN").await.unwrap();
        let upstream = EchoUpstream::start().await.unwrap();
        let proxy =
            TestProxy::start_ready(&login_config(&issuer, &upstream.url(), extra_login)).await;
        LoginEnv {
            issuer,
            upstream,
            proxy,
        }
    }

    /// Walks the whole flow for `user` starting at `path`; returns the browser and the final answer.
    async fn sign_in(&self, user: &str, path: &str) -> (Browser, reqwest::Response) {
        let mut b = Browser::new();
        let res = b.get(&self.proxy.url(path)).await;
        assert_eq!(
            res.status(),
            302,
            "unauthenticated browsers are sent to sign in"
        );
        let authorize = location(&res);
        assert!(
            authorize.starts_with(&format!("{}/oauth2/authorize?", self.issuer.issuer())),
            "{authorize}"
        );
        let callback = self.submit_login(&mut b, &authorize, user, None).await;
        let res = b.get(&callback).await;
        assert_eq!(res.status(), 302, "callback: {}", res.text().await.unwrap());
        assert_eq!(location(&res), path, "back where the user started");
        let res = b.get(&self.proxy.url(path)).await;
        (b, res)
    }

    /// Posts the hosted UI's login form for the authorization URL; returns the callback URL.
    async fn submit_login(
        &self,
        b: &mut Browser,
        authorize: &str,
        user: &str,
        nonce: Option<&str>,
    ) -> String {
        let page = b.get(authorize).await;
        assert_eq!(page.status(), 200);
        let q = |k| query_param(authorize, k);
        let nonce = nonce.map_or_else(|| q("nonce"), str::to_owned);
        let res = b
            .post_form(
                &format!("{}/oauth2/login", self.issuer.issuer()),
                &[
                    ("username", user),
                    ("password", DEMO_PASSWORD),
                    ("redirect_uri", &q("redirect_uri")),
                    ("state", &q("state")),
                    ("nonce", &nonce),
                    ("code_challenge", &q("code_challenge")),
                    ("scope", &q("scope")),
                ],
            )
            .await;
        assert_eq!(res.status(), 302);
        let callback = location(&res);
        assert!(
            callback.starts_with(&self.proxy.url("/oauth2/idpresponse?")),
            "{callback}"
        );
        callback
    }
}

#[tokio::test]
async fn the_whole_flow_reaches_the_upstream_with_alb_headers() {
    let env = LoginEnv::start("").await;
    let (b, res) = env.sign_in("alice", "/app/hello?x=1").await;
    assert_eq!(res.status(), 200);
    let session_cookies: Vec<_> = b.jar.keys().filter(|k| k.starts_with(COOKIE)).collect();
    assert_eq!(session_cookies, [&format!("{COOKIE}-0")]);
    assert!(
        !b.jar.contains_key("jwtgate-login-state"),
        "the state cookie is cleared after the callback"
    );

    let got = env.upstream.last().unwrap();
    assert_eq!(got.uri, "/app/hello?x=1");
    let alice = alice();
    assert_eq!(got.headers["x-amzn-oidc-identity"], alice.sub);
    assert_eq!(got.headers["x-user-email"], alice.email);
    assert_eq!(got.headers["x-user-groups"], "admins,users");
    assert!(got.headers["x-amzn-oidc-accesstoken"].len() > 100);
    let cookie = got
        .headers
        .get("cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        !cookie.contains(COOKIE),
        "session cookies never reach the upstream: {cookie}"
    );

    // x-amzn-oidc-data: ALB format, verifiable with the PEM served on the admin listener.
    let data = got.headers["x-amzn-oidc-data"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = data.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p.len() % 4 == 0), "padded segments");
    let header: Value = serde_json::from_slice(&URL_SAFE.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["client"], DEMO_CLIENT_ID);
    assert_eq!(header["iss"], env.issuer.issuer());
    assert!(
        header["signer"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:elasticloadbalancing:")
    );
    let payload: Value = serde_json::from_slice(&URL_SAFE.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload["sub"], alice.sub);
    assert_eq!(payload["email"], alice.email);
    let kid = header["kid"].as_str().unwrap();
    let pem = reqwest::get(env.proxy.admin_url(&format!("/alb-keys/{kid}")))
        .await
        .unwrap();
    assert_eq!(pem.status(), 200, "kid {kid}");
    let pem = pem.text().await.unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(der).unwrap();
    let point = &der[der.len() - 65..];
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        point,
    );
    let signed = format!("{}.{}", parts[0], parts[1]);
    assert!(
        key.verify(signed.as_bytes(), &URL_SAFE.decode(parts[2]).unwrap())
            .is_ok()
    );
    assert_eq!(
        reqwest::get(env.proxy.admin_url("/alb-keys/unknown"))
            .await
            .unwrap()
            .status(),
        404
    );

    // The session keeps working without another sign-in.
    let mut b = b;
    assert_eq!(b.get(&env.proxy.url("/app/other")).await.status(), 200);
    let m = env.proxy.metrics().await;
    assert!(
        m.contains(r#"jwtgate_login_events_total{event="callback_ok",provider="default"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn signed_in_users_without_permission_get_403_not_a_redirect_loop() {
    let env = LoginEnv::start("").await;
    let (mut b, res) = env.sign_in("bob", "/app/x").await;
    assert_eq!(res.status(), 200);
    let res = b.get(&env.proxy.url("/admin/x")).await;
    assert_eq!(res.status(), 403);
    let (_, res) = env.sign_in("alice", "/admin/x").await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn api_clients_get_401_instead_of_a_redirect() {
    let env = LoginEnv::start("").await;
    let mut b = Browser::new();
    let res = b
        .get_with(
            &env.proxy.url("/app/api"),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.text().await.unwrap(), r#"{"message":"Unauthorized"}"#);
    let res = b
        .get_with(
            &env.proxy.url("/app/api"),
            &[("x-requested-with", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(res.status(), 401);
    let res = b
        .http
        .post(env.proxy.url("/app/api"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "a redirect would lose the POST body");
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn tampered_missing_or_replayed_state_is_refused() {
    let env = LoginEnv::start("").await;
    let mut b = Browser::new();
    let authorize = location(&b.get(&env.proxy.url("/app/x")).await);
    let callback = env.submit_login(&mut b, &authorize, "alice", None).await;
    // Tampered state.
    let tampered = callback.replace("state=", "state=x");
    let res = b.get(&tampered).await;
    assert_eq!(res.status(), 401);
    // Without the state cookie (another browser, e.g. a login CSRF attempt).
    let mut stranger = Browser::new();
    assert_eq!(stranger.get(&callback).await.status(), 401);
    // The genuine callback works once ...
    let res = b.get(&callback).await;
    assert_eq!(res.status(), 302);
    // ... and a replay is refused (the state was consumed).
    let res = b.get(&callback).await;
    assert_eq!(res.status(), 401);
    // Error from the IdP.
    let mut c = Browser::new();
    let authorize = location(&c.get(&env.proxy.url("/app/x")).await);
    let state = query_param(&authorize, "state");
    let res = c
        .get(&env.proxy.url(&format!(
            "/oauth2/idpresponse?error=access_denied&state={state}"
        )))
        .await;
    assert_eq!(res.status(), 401);
    let m = env.proxy.metrics().await;
    assert!(
        m.contains(r#"jwtgate_login_events_total{event="callback_failed",provider="default"} 4"#),
        "{m}"
    );
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn a_wrong_nonce_in_the_id_token_is_refused() {
    let env = LoginEnv::start("").await;
    let mut b = Browser::new();
    let authorize = location(&b.get(&env.proxy.url("/app/x")).await);
    let callback = env
        .submit_login(&mut b, &authorize, "alice", Some("someone-elses-nonce"))
        .await;
    let res = b.get(&callback).await;
    assert_eq!(res.status(), 401);
    assert!(!b.jar.keys().any(|k| k.starts_with(COOKIE)), "no session");
}

#[tokio::test]
async fn pending_logins_are_capped() {
    let env = LoginEnv::start("").await;
    let mut b = Browser::new();
    let mut states = Vec::new();
    for _ in 0..8 {
        let res = b.get(&env.proxy.url("/app/x")).await;
        states.push(query_param(&location(&res), "state"));
    }
    let state_cookie = &b.jar["jwtgate-login-state"];
    assert!(
        state_cookie.len() < 3000,
        "one bounded cookie, however many tabs: {}",
        state_cookie.len()
    );
    // The oldest logins were dropped, the newest still completes.
    let authorize = location(&b.get(&env.proxy.url("/app/y")).await);
    let callback = env.submit_login(&mut b, &authorize, "alice", None).await;
    assert_eq!(b.get(&callback).await.status(), 302);
}

#[tokio::test]
async fn broken_cookies_mean_a_fresh_sign_in_never_a_500() {
    let env = LoginEnv::start("").await;
    let (b, res) = env.sign_in("alice", "/app/x").await;
    assert_eq!(res.status(), 200);
    let shard = b.jar[&format!("{COOKIE}-0")].clone();
    let mut variants = Vec::new();
    // A bit flip.
    let mut flipped = shard.clone().into_bytes();
    flipped[40] = if flipped[40] == b'A' { b'B' } else { b'A' };
    variants.push(("bit-flipped shard", String::from_utf8(flipped).unwrap()));
    // Truncated.
    variants.push(("truncated shard", shard[..shard.len() / 2].to_owned()));
    // Sealed with a key jwtgate does not know.
    let foreign = CookieKeys::new(&[[9u8; 32]])
        .seal(COOKIE, br#"{"id":"x"}"#)
        .unwrap();
    variants.push(("unknown key", foreign));
    variants.push(("garbage", "%%%".to_owned()));
    for (name, value) in variants {
        let mut forged = b.clone();
        forged.jar.insert(format!("{COOKIE}-0"), value);
        let res = forged.get(&env.proxy.url("/app/x")).await;
        assert_eq!(res.status(), 302, "{name}: a fresh sign-in");
    }
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn large_sessions_are_sharded_and_a_missing_shard_means_sign_in() {
    let env = LoginEnv::start("").await;
    let mut big = serde_json::Map::new();
    big.insert("custom:profile".into(), json!("p".repeat(5000)));
    env.issuer.hosted_ui().set_extra_id_claims(big);
    let (b, res) = env.sign_in("alice", "/app/x").await;
    assert_eq!(res.status(), 200);
    let shards: Vec<_> = b
        .jar
        .keys()
        .filter(|k| k.starts_with(COOKIE))
        .cloned()
        .collect();
    assert_eq!(shards.len(), 3, "{shards:?}");
    assert!(b.jar.values().all(|v| v.len() <= 4000));
    let mut missing = b.clone();
    missing.jar.remove(&format!("{COOKIE}-1"));
    assert_eq!(missing.get(&env.proxy.url("/app/x")).await.status(), 302);
}

#[tokio::test]
async fn twenty_concurrent_requests_refresh_the_session_once() {
    let env = LoginEnv::start("").await;
    env.issuer.hosted_ui().set_access_ttl(1);
    let (b, res) = env.sign_in("alice", "/app/x").await;
    // The access token was already due for refresh on the first request after sign-in.
    assert_eq!(res.status(), 200);
    env.issuer.hosted_ui().set_access_ttl(3600);
    let before = env.issuer.hosted_ui().token_calls();
    // 20 requests at once, all carrying a session whose access token is due.
    let mut stale = b.clone();
    let requests = (0..20).map(|_| {
        let mut browser = stale.clone();
        let url = env.proxy.url("/app/concurrent");
        async move { browser.get(&url).await }
    });
    let responses = futures_util::future::join_all(requests).await;
    let after = env.issuer.hosted_ui().token_calls();
    for res in &responses {
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()
                .get_all("set-cookie")
                .iter()
                .any(|c| c.to_str().unwrap().starts_with(COOKIE)),
            "the refreshed session is re-issued"
        );
    }
    assert_eq!(
        after - before,
        1,
        "token endpoint calls for 20 concurrent requests"
    );
    // With the refreshed cookie, no further refresh.
    stale.keep(&responses[0]);
    assert_eq!(stale.get(&env.proxy.url("/app/x")).await.status(), 200);
    assert_eq!(env.issuer.hosted_ui().token_calls(), after);
    let m = env.proxy.metrics().await;
    assert!(
        m.contains("jwtgate_login_events_total{event=\"refresh_ok\",provider=\"default\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn a_failed_refresh_sends_the_user_to_sign_in_again() {
    let env = LoginEnv::start("").await;
    env.issuer.hosted_ui().set_access_ttl(1);
    let (mut b, _) = env.sign_in("bob", "/app/x").await;
    env.issuer.set_down(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let res = b.get(&env.proxy.url("/app/x")).await;
    assert_eq!(res.status(), 302, "refresh failed: sign in again");
    assert!(location(&res).contains("/oauth2/authorize?"));
}

#[tokio::test]
async fn expired_sessions_are_refused_from_inside_the_cookie() {
    let env = LoginEnv::start(r#"session_timeout = "1s""#).await;
    let (mut b, res) = env.sign_in("alice", "/app/x").await;
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The browser still sends the cookie (as a client ignoring Max-Age would): refused anyway.
    let res = b.get(&env.proxy.url("/app/x")).await;
    assert_eq!(res.status(), 302);
}

#[tokio::test]
async fn logout_clears_every_shard_and_goes_through_the_idp() {
    let env = LoginEnv::start("").await;
    let (mut b, _) = env.sign_in("alice", "/app/x").await;
    let res = b.get(&env.proxy.url("/oauth2/sign_out")).await;
    assert_eq!(res.status(), 302);
    let target = location(&res);
    assert!(
        target.starts_with(&format!(
            "{}/logout?client_id={DEMO_CLIENT_ID}",
            env.issuer.issuer()
        )),
        "{target}"
    );
    assert_eq!(
        query_param(&target, "post_logout_redirect_uri"),
        "http://127.0.0.1:1/signed-out"
    );
    let expired: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .filter(|c| c.contains("Max-Age=0"))
        .collect();
    assert!(
        expired
            .iter()
            .any(|c| c.starts_with(&format!("{COOKIE}-0="))),
        "{expired:?}"
    );
    assert!(!b.jar.keys().any(|k| k.starts_with(COOKIE)));
    let res = b.get(&env.proxy.url("/app/x")).await;
    assert_eq!(res.status(), 302, "signed out: sign in again");
}

#[tokio::test]
async fn redirects_after_sign_in_stay_on_this_origin() {
    let env = LoginEnv::start("").await;
    // `//evil.example/…` would be a protocol-relative URL in a Location header; the path is
    // normalised (slashes merged) before it becomes the return target.
    let mut b = Browser::new();
    let res = b.get(&env.proxy.url("/app//evil.example/x")).await;
    assert_eq!(res.status(), 302);
    let callback = env
        .submit_login(&mut b, &location(&res), "alice", None)
        .await;
    let res = b.get(&callback).await;
    assert_eq!(res.status(), 302);
    assert_eq!(location(&res), "/app/evil.example/x");
    // The raw form a browser would never send, straight over TCP.
    let answer = raw_exchange(
        env.proxy.addr,
        b"GET //evil.example/../app/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 302"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("location: //"),
        "{answer}"
    );
}

// ---------------------------------------------------------------------------------------------
// Several providers: `[login]` (customers, on /app/**) and `[[logins]]` "staff" (on /admin/**),
// each a development issuer of its own.

const STAFF_COOKIE: &str = "AWSELBAuthSessionCookie.staff";

struct TwoEnv {
    customers: DevIssuer,
    staff: DevIssuer,
    upstream: EchoUpstream,
    proxy: TestProxy,
}

impl TwoEnv {
    async fn start() -> Self {
        let customers = DevIssuer::start("us-east-1_CUSTOMERS").await.unwrap();
        let staff = DevIssuer::start("us-east-1_STAFF").await.unwrap();
        let upstream = EchoUpstream::start().await.unwrap();
        let config = format!(
            r#"
[upstream]
url = "{upstream}"

[login]
issuer = "{customers}"
client_id = "{DEMO_CLIENT_ID}"
client_secret_file = "{secret}"
scope = "openid email profile"
secure_cookies = false
logout_redirect = "http://127.0.0.1:1/customers-signed-out"

[[logins]]
name = "staff"
issuer = "{staff}"
client_id = "{DEMO_CLIENT_ID}"
client_secret_file = "{secret}"
scope = "openid email profile"
secure_cookies = false
logout_redirect = "http://127.0.0.1:1/staff-signed-out"

[[routes]]
name = "admin"
path = "/admin/**"
auth = "login"
login = "staff"
groups_any = ["admins"]

[[routes]]
name = "app"
path = "/app/**"
auth = "login"

[[routes]]
name = "public"
path = "/**"
auth = "none"

[forward_auth]
path = "/auth"
"#,
            upstream = upstream.url(),
            customers = customers.issuer(),
            staff = staff.issuer(),
            secret = secret_file(),
        );
        let proxy = TestProxy::start_ready(&config).await;
        TwoEnv {
            customers,
            staff,
            upstream,
            proxy,
        }
    }

    /// Signs `b` in at `issuer` starting from `path` (whose provider redirects there, with its
    /// own callback path); the browser ends back on `path`.
    async fn sign_in(
        &self,
        b: &mut Browser,
        issuer: &DevIssuer,
        callback_path: &str,
        path: &str,
    ) -> reqwest::Response {
        let res = b.get(&self.proxy.url(path)).await;
        assert_eq!(res.status(), 302, "{path}: sign in first");
        let authorize = location(&res);
        assert!(
            authorize.starts_with(&format!("{}/oauth2/authorize?", issuer.issuer())),
            "{path} goes to its own provider: {authorize}"
        );
        assert_eq!(
            query_param(&authorize, "redirect_uri"),
            self.proxy.url(callback_path)
        );
        let q = |k| query_param(&authorize, k);
        assert_eq!(b.get(&authorize).await.status(), 200);
        let res = b
            .post_form(
                &format!("{}/oauth2/login", issuer.issuer()),
                &[
                    ("username", "alice"),
                    ("password", DEMO_PASSWORD),
                    ("redirect_uri", &q("redirect_uri")),
                    ("state", &q("state")),
                    ("nonce", &q("nonce")),
                    ("code_challenge", &q("code_challenge")),
                    ("scope", &q("scope")),
                ],
            )
            .await;
        let callback = location(&res);
        assert!(
            callback.starts_with(&format!("{}?", self.proxy.url(callback_path))),
            "{callback}"
        );
        let res = b.get(&callback).await;
        assert_eq!(res.status(), 302, "callback: {}", res.text().await.unwrap());
        assert_eq!(location(&res), path);
        b.get(&self.proxy.url(path)).await
    }
}

#[tokio::test]
async fn a_session_of_one_provider_is_refused_on_another_providers_routes() {
    let env = TwoEnv::start().await;
    let mut b = Browser::new();
    let res = env
        .sign_in(&mut b, &env.customers, "/oauth2/idpresponse", "/app/x")
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(env.upstream.hits(), 1);

    // The customer session opens nothing on the staff routes: a sign-in at the staff IdP.
    let res = b.get(&env.proxy.url("/admin/x")).await;
    assert_eq!(res.status(), 302);
    assert!(
        location(&res).starts_with(&format!("{}/oauth2/authorize?", env.staff.issuer())),
        "{}",
        location(&res)
    );
    // Nor does the customer cookie's value under the staff cookie's name (bound to its provider).
    let mut copied = Browser::new();
    copied.jar.insert(
        format!("{STAFF_COOKIE}-0"),
        b.jar[&format!("{COOKIE}-0")].clone(),
    );
    let res = copied.get(&env.proxy.url("/admin/x")).await;
    assert_eq!(res.status(), 302, "a fresh sign-in, never a 500");
    assert!(location(&res).starts_with(env.staff.issuer()));
    assert_eq!(env.upstream.hits(), 1, "the staff upstream never saw it");
    // Forward-auth decides with the original route's provider.
    let res = b.get(&env.proxy.url("/auth/app/x")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-amzn-oidc-identity"], alice().sub);
    let res = b.get(&env.proxy.url("/auth/admin/x")).await;
    assert_eq!(res.status(), 302);
    assert!(location(&res).starts_with(env.staff.issuer()));

    // A login in flight at one provider does not complete at the other's callback.
    let mut c = Browser::new();
    let authorize = location(&c.get(&env.proxy.url("/app/y")).await);
    let state = query_param(&authorize, "state");
    let sealed = c.jar["jwtgate-login-state"].clone();
    c.jar.insert("jwtgate-login-state.staff".into(), sealed);
    let res = c
        .get(
            &env.proxy
                .url(&format!("/oauth2/idpresponse/staff?code=x&state={state}")),
        )
        .await;
    assert_eq!(res.status(), 401);

    let m = env.proxy.metrics().await;
    for line in [
        r#"jwtgate_login_events_total{event="callback_ok",provider="default"} 1"#,
        r#"jwtgate_login_events_total{event="callback_ok",provider="staff"} 0"#,
        r#"jwtgate_login_events_total{event="callback_failed",provider="staff"} 1"#,
        r#"jwtgate_login_events_total{event="redirect",provider="staff"} 3"#,
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in:\n{m}");
    }
}

#[tokio::test]
async fn logout_of_one_provider_leaves_the_other_signed_in() {
    let env = TwoEnv::start().await;
    let mut b = Browser::new();
    let res = env
        .sign_in(&mut b, &env.customers, "/oauth2/idpresponse", "/app/x")
        .await;
    assert_eq!(res.status(), 200);
    let res = env
        .sign_in(&mut b, &env.staff, "/oauth2/idpresponse/staff", "/admin/x")
        .await;
    assert_eq!(res.status(), 200);
    assert!(b.jar.contains_key(&format!("{COOKIE}-0")));
    assert!(b.jar.contains_key(&format!("{STAFF_COOKIE}-0")));

    // Both sessions and a cookie of the application's own: only the latter goes upstream.
    b.jar.insert("theme".into(), "dark".into());
    for path in ["/app/z", "/admin/z", "/public"] {
        assert_eq!(b.get(&env.proxy.url(path)).await.status(), 200, "{path}");
        let got = env.upstream.last().unwrap();
        assert_eq!(got.headers["cookie"], "theme=dark", "{path}");
    }
    let got = env.upstream.last().unwrap();
    assert!(
        got.headers.get("x-amzn-oidc-identity").is_none(),
        "public: anonymous"
    );

    // Signing out of the customer provider ends only that session, through its own IdP.
    let res = b.get(&env.proxy.url("/oauth2/sign_out")).await;
    assert_eq!(res.status(), 302);
    let target = location(&res);
    assert!(
        target.starts_with(&format!("{}/logout?", env.customers.issuer())),
        "{target}"
    );
    let cleared: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split('=').next().unwrap().to_owned())
        .collect();
    assert!(cleared.contains(&format!("{COOKIE}-0")), "{cleared:?}");
    assert!(
        !cleared.iter().any(|c| c.starts_with(STAFF_COOKIE)),
        "{cleared:?}"
    );
    assert_eq!(b.get(&env.proxy.url("/app/x")).await.status(), 302);
    assert_eq!(b.get(&env.proxy.url("/admin/x")).await.status(), 200);

    // The staff provider signs out at its own path and IdP.
    let res = b.get(&env.proxy.url("/oauth2/sign_out/staff")).await;
    assert_eq!(res.status(), 302);
    let target = location(&res);
    assert!(
        target.starts_with(&format!("{}/logout?", env.staff.issuer())),
        "{target}"
    );
    assert_eq!(
        query_param(&target, "post_logout_redirect_uri"),
        "http://127.0.0.1:1/staff-signed-out"
    );
    assert!(!b.jar.keys().any(|k| k.starts_with(STAFF_COOKIE)));
    let res = b.get(&env.proxy.url("/admin/x")).await;
    assert_eq!(res.status(), 302);
    assert!(location(&res).starts_with(env.staff.issuer()));
}

#[tokio::test]
async fn a_login_route_gets_aws_credentials_for_the_sessions_id_token() {
    let issuer = DevIssuer::start("us-east-1_LOGIN").await.unwrap();
    let upstream = EchoUpstream::start().await.unwrap();
    // A Cognito Identity stand-in: records each call's body, hands out fixed credentials.
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let seen = std::sync::Arc::clone(&calls);
    let cognito = common::recorder::Recorder::cognito_identity(move |action, body| {
        seen.lock().unwrap().push(body.clone());
        match action {
            "GetCredentialsForIdentity" => {
                (200, common::recorder::cognito_credentials("ASIASESSION"))
            }
            _ => (200, r#"{"IdentityId":"us-east-1:alice"}"#.into()),
        }
    })
    .await;
    let app = "[[routes]]\nname = \"app\"\npath = \"/app/**\"\nauth = \"login\"\n";
    let config = login_config(&issuer, &upstream.url(), "").replace(
        app,
        &format!(
            "{app}aws_sigv4 = {{ service = \"s3\", region = \"us-east-1\", credentials = \"users\" }}\n"
        ),
    ) + &format!(
        r#"
[[aws_credentials]]
name = "users"
source = "identity_pool"
identity_pool_id = "us-east-1:0a1b2c3d-1234-5678-9abc-def012345678"
endpoint = "{}"
"#,
        cognito.url()
    );
    let proxy = TestProxy::start_ready(&config).await;
    let env = LoginEnv {
        issuer,
        upstream,
        proxy,
    };
    let (mut browser, res) = env.sign_in("alice", "/app/files/report.pdf").await;
    assert_eq!(res.status(), 200);

    let got = env.upstream.last().unwrap();
    let authorization = got.headers["authorization"].to_str().unwrap();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=ASIASESSION/"),
        "{authorization}"
    );
    for identity in [
        "x-amzn-oidc-accesstoken",
        "x-amzn-oidc-data",
        "x-amzn-oidc-identity",
        "x-user-email",
    ] {
        assert!(
            !got.headers.contains_key(identity),
            "AWS gets no identity header: {identity}"
        );
    }
    // Both calls carried the session's ID token (not its access token) in Logins.
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "GetId, GetCredentialsForIdentity");
    for call in &calls {
        let logins = call["Logins"].as_object().unwrap();
        let token = logins[env.issuer.issuer()].as_str().unwrap();
        let claims = common::token_claims(token);
        assert_eq!(claims["token_use"], "id");
        assert_eq!(claims["sub"], alice().sub);
    }
    // Routes of the same provider that do not sign get the ALB headers as before.
    assert_eq!(browser.get(&env.proxy.url("/admin/x")).await.status(), 200);
    assert!(
        env.upstream
            .last()
            .unwrap()
            .headers
            .contains_key("x-amzn-oidc-data")
    );
}

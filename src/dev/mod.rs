//! Development parts: the issuer and echo upstream that `jwtgate demo` runs in one process with
//! the proxy, and that the integration tests use as their identity provider and upstream.

pub mod echo;
pub mod hosted_ui;
pub mod issuer;
pub mod users;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::compile::compile;
use crate::{Listeners, Shared, StartError, serve, server};

/// The demo configuration, also at `config/demo.toml`.
pub const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");
/// Where the demo issuer listens (its URL is in `config/demo.toml`).
pub const DEMO_ISSUER_ADDR: &str = "127.0.0.1:9000";
/// Where the demo echo upstream listens.
pub const DEMO_UPSTREAM_ADDR: &str = "127.0.0.1:9002";
/// The demo user pool id.
pub const DEMO_POOL_ID: &str = "us-east-1_DEMO";

/// Serves HTTP/1.1 and h2c on `listener`, one task per connection, until aborted.
pub fn spawn_server<F, Fut, B>(listener: TcpListener, handler: F) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn bind(addr: &'static str, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::DemoListen { what, addr, error })
}

/// `jwtgate demo`: the development issuer, an echo upstream and the proxy on
/// `config/demo.toml`, in one process, with copy-paste curl commands. Runs until SIGTERM/Ctrl-C.
pub async fn demo() -> Result<(), StartError> {
    let mut config = compile("config/demo.toml", DEMO_CONFIG)?;
    for login in &mut config.logins {
        login.client_secret = Some(crate::login::Redacted(
            hosted_ui::DEMO_CLIENT_SECRET.to_owned(),
        ));
    }
    let issuer = issuer::DevIssuer::start_on(bind(DEMO_ISSUER_ADDR, "issuer").await?, DEMO_POOL_ID)
        .map_err(StartError::Io)?;
    let upstream = echo::EchoUpstream::start_on(bind(DEMO_UPSTREAM_ADDR, "upstream").await?)
        .map_err(StartError::Io)?;
    if !config
        .issuers
        .iter()
        .any(|(p, _)| *p.issuer == *issuer.issuer())
    {
        return Err(StartError::DemoIssuer(issuer.issuer().to_string()));
    }
    let listeners = Listeners::bind(&config).await.map_err(StartError::Io)?;
    let proxy = config.listen;
    let admin = config.admin_listen;
    let shared = Shared::new(config)?;

    // Wait (briefly) for the keys, so the first curl already works.
    if !shared.wait_ready(Duration::from_secs(2)).await {
        tracing::warn!("the demo issuer's keys are not loaded yet; the first curls may answer 503");
    }
    let sign = |claims: Value| issuer.sign(&claims);
    let alice = issuer::user("alice")
        .copied()
        .ok_or(StartError::DemoUser("alice"))?;
    let bob = issuer::user("bob")
        .copied()
        .ok_or(StartError::DemoUser("bob"))?;
    let alice_access = sign(issuer.access_token(&alice));
    let bob_access = sign(issuer.access_token(&bob));
    let alice_id = sign(issuer.id_token(&alice));
    println!(
        r#"jwtgate demo is running (Ctrl-C to stop)
  proxy     http://{proxy}      routes: config/demo.toml (run `jwtgate check --config config/demo.toml`)
  admin     http://{admin}/metrics   /readyz   /healthz
  issuer    {iss}   users: alice (admins), bob (users), carol (no group)
  upstream  {up}   echoes the request it received, headers included

1) 200: alice's access token has scope orders/read; the echo shows the claim headers jwtgate added
   curl -i -H 'Authorization: Bearer {alice_access}' http://{proxy}/orders/42

2) 401: no token (WWW-Authenticate: Bearer realm="jwtgate")
   curl -i http://{proxy}/orders/42

3) 403: bob's token is valid, but bob is not in the admins group
   curl -i -H 'Authorization: Bearer {bob_access}' http://{proxy}/admin/users

4) 401 invalid_token: an ID token where the route wants an access token
   curl -i -H 'Authorization: Bearer {alice_id}' http://{proxy}/orders/42

Tokens last an hour. Fresh ones: curl -s '{iss}/dev/token?user=bob&kind=access' (kind=id for an ID token)

5) Browser sign-in like ALB's: open http://{proxy}/app/ and sign in as alice, bob or carol,
   password "{password}". The echo page shows the x-amzn-oidc-* headers jwtgate added.
   Sign out: http://{proxy}/oauth2/sign_out
"#,
        iss = issuer.issuer(),
        up = upstream.url(),
        password = hosted_ui::DEMO_PASSWORD,
    );
    serve(Arc::clone(&shared), listeners, server::shutdown_signal()).await;
    drop(upstream);
    drop(issuer);
    Ok(())
}

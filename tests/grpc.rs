//! gRPC through jwtgate over h2c both ways: a unary and a server-streaming call with trailers,
//! and `grpc-status` 16 / 7 for gRPC clients instead of HTTP 401 / 403 bodies. The gRPC peers
//! are plain hyper HTTP/2 endpoints speaking gRPC's wire format (length-prefixed messages,
//! `grpc-status` trailers), which is all a gRPC proxy sees of a call.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jwtgate::dev::issuer::DevIssuer;
use serde_json::json;
use tokio::net::TcpListener;

/// One length-prefixed gRPC message (uncompressed).
fn frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(message.len()).unwrap());
    buf.put_slice(message);
    buf.freeze()
}

/// Splits a body into its gRPC messages.
fn messages(mut body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push(String::from_utf8(body[5..5 + len].to_vec()).unwrap());
        body = &body[5 + len..];
    }
    out
}

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// A gRPC server on h2c: `/demo.Greeter/SayHello` (unary) and `/demo.Greeter/Count` (server
/// streaming: three messages), each ending with `grpc-status: 0` trailers.
async fn grpc_upstream() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = Arc::clone(&log);
                    async move {
                        log.lock().unwrap().push(req.headers().clone());
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let name = messages(&body).pop().unwrap_or_default();
                        let replies: Vec<String> = if path.ends_with("/Count") {
                            (1..=3).map(|i| format!("{name} {i}")).collect()
                        } else {
                            vec![format!("hello {name}")]
                        };
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        trailers.insert("grpc-message", HeaderValue::from_static("done"));
                        let frames = replies
                            .into_iter()
                            .map(|r| Ok::<_, Infallible>(Frame::data(frame(r.as_bytes()))))
                            .chain([Ok(Frame::trailers(trailers))]);
                        let mut response =
                            Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                        response
                            .headers_mut()
                            .insert("content-type", HeaderValue::from_static("application/grpc"));
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (url, seen)
}

struct Call {
    status: http::StatusCode,
    headers: HeaderMap,
    messages: Vec<String>,
    trailers: Option<HeaderMap>,
}

/// A gRPC call over h2c with prior knowledge.
async fn call(proxy: &TestProxy, method: &str, token: Option<&str>, name: &str) -> Call {
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::post(format!("http://{}/demo.Greeter/{method}", proxy.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame(name.as_bytes())))
        .unwrap();
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::try_from(format!("Bearer {t}")).unwrap(),
        );
    }
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Call {
        status: parts.status,
        headers: parts.headers,
        messages: messages(&collected.to_bytes()),
        trailers,
    }
}

async fn setup() -> (DevIssuer, TestProxy, Seen) {
    let issuer = DevIssuer::start("us-east-1_GRPC").await.unwrap();
    let (upstream, seen) = grpc_upstream().await;
    let toml = format!(
        r#"
[upstream]
url = "{upstream}"
http2 = true
[[issuers]]
name = "dev"
issuer = "{}"
jwks_uri = "{}"
audiences = ["{DEMO_CLIENT_ID}"]
[[routes]]
path = "/demo.Greeter/**"
scopes_any = ["greeter/call"]
token_use = "access"
[headers]
claims = {{ "x-user-sub" = "sub" }}
"#,
        issuer.issuer(),
        issuer.jwks_uri()
    );
    let proxy = TestProxy::start_ready(&toml).await;
    (issuer, proxy, seen)
}

fn token(issuer: &DevIssuer, scope: &str) -> String {
    let mut claims = issuer.access_token(alice());
    claims["scope"] = json!(scope);
    issuer.sign(&claims)
}

#[tokio::test]
async fn unary_and_server_streaming_calls_pass_with_their_trailers() {
    let (issuer, proxy, seen) = setup().await;
    let t = token(&issuer, "openid greeter/call");
    let unary = call(&proxy, "SayHello", Some(&t), "world").await;
    assert_eq!(unary.status, 200);
    assert_eq!(unary.messages, ["hello world"]);
    let trailers = unary.trailers.expect("trailers pass through");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
    assert_eq!(
        seen.lock().unwrap().last().unwrap()["x-user-sub"],
        alice().sub
    );

    let stream = call(&proxy, "Count", Some(&t), "tick").await;
    assert_eq!(stream.messages, ["tick 1", "tick 2", "tick 3"]);
    assert_eq!(stream.trailers.unwrap()["grpc-status"], "0");
}

#[tokio::test]
async fn grpc_clients_get_unauthenticated_and_permission_denied() {
    let (issuer, proxy, seen) = setup().await;
    let missing = call(&proxy, "SayHello", None, "x").await;
    assert_eq!(
        missing.status, 200,
        "gRPC carries the outcome in grpc-status"
    );
    assert_eq!(missing.headers["grpc-status"], "16", "UNAUTHENTICATED");
    assert_eq!(missing.headers["content-type"], "application/grpc");
    assert!(missing.messages.is_empty());

    let expired = {
        let mut claims = issuer.access_token(alice());
        claims["scope"] = json!("greeter/call");
        claims["exp"] = json!(jwtgate::token::unix_now() - 600);
        issuer.sign(&claims)
    };
    let res = call(&proxy, "SayHello", Some(&expired), "x").await;
    assert_eq!(res.headers["grpc-status"], "16");
    assert_eq!(
        res.headers["grpc-message"],
        "jwtgate: invalid token: token expired"
    );

    let denied = call(&proxy, "SayHello", Some(&token(&issuer, "openid")), "x").await;
    assert_eq!(denied.headers["grpc-status"], "7", "PERMISSION_DENIED");
    assert!(
        seen.lock().unwrap().is_empty(),
        "refused calls never reach the upstream"
    );
}

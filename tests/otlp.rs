//! W3C trace context to the upstream and OTLP/HTTP span export to a collector (a receiver the
//! test runs, which decodes what a collector would).

#![allow(clippy::unwrap_used)] // tests panic on purpose
#![cfg(feature = "otlp")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use serde_json::Value;

/// An OTLP/HTTP receiver: records every `POST /v1/traces` body.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let log = Arc::clone(&received);
    // The server task runs detached until the test's runtime ends.
    jwtgate::dev::spawn_server(
        listener,
        move |req: http::Request<hyper::body::Incoming>| {
            let log = Arc::clone(&log);
            async move {
                let ok = req.method() == http::Method::POST && req.uri().path() == "/v1/traces";
                let body = req.into_body().collect().await.unwrap().to_bytes();
                if ok {
                    log.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                }
                jwtgate::dev::json_response(http::StatusCode::OK, &serde_json::json!({}))
            }
        },
    );
    (url, received)
}

#[tokio::test]
async fn traces_continue_upstream_and_spans_reach_the_collector() {
    let (collector, received) = receiver().await;
    let env = Env::start_with(
        "",
        &format!("[tracing]\notlp_endpoint = \"{collector}\"\nservice_name = \"gateway-test\"\n"),
    )
    .await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let res = env
        .http
        .get(env.proxy.url("/orders/1"))
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .bearer_auth(env.access("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let upstream = env.upstream.last().unwrap().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = upstream.split('-').collect();
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], client_trace, "same trace");
    assert_ne!(
        parts[2], client_span,
        "jwtgate's span is the upstream's parent"
    );
    assert_eq!(parts[3], "01");
    let jwtgate_span = parts[2].to_owned();

    // Without a traceparent, a trace starts at jwtgate.
    env.get("/orders/2", Some(&env.access("bob"))).await;
    let fresh = env.upstream.last().unwrap().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(fresh.split('-').nth(1).unwrap(), client_trace);
    env.get("/orders/3", None).await;

    let mut spans = Vec::new();
    for _ in 0..60 {
        spans = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|batch| {
                batch["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        if spans.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(spans.len(), 3, "{spans:?}");
    let batch = received.lock().unwrap()[0].clone();
    assert_eq!(
        batch["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
        "gateway-test"
    );
    let first = spans.iter().find(|s| s["traceId"] == client_trace).unwrap();
    assert_eq!(first["spanId"], jwtgate_span.as_str());
    assert_eq!(first["parentSpanId"], client_span);
    assert_eq!(first["name"], "jwtgate orders");
    assert_eq!(first["kind"], 2);
    let attrs = first["attributes"].as_array().unwrap();
    let attr = |k: &str| attrs.iter().find(|a| a["key"] == k).unwrap()["value"].clone();
    assert_eq!(attr("jwtgate.decision")["stringValue"], "allow");
    assert_eq!(attr("http.response.status_code")["intValue"], "200");
    let refused = spans
        .iter()
        .find(|s| {
            s["attributes"].as_array().unwrap().iter().any(|a| {
                a["key"] == "jwtgate.reason" && a["value"]["stringValue"] == "missing_token"
            })
        })
        .unwrap();
    assert!(refused.get("parentSpanId").is_none());
}

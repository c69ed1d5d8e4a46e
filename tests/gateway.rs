//! jwtgate as a gateway in front of several services, through the real binary: routes reach
//! their own named upstream, a dead upstream fails only its own routes (and not `/readyz`), and
//! a reload moves a route to another upstream under load without failing a request. Upstreams
//! are recorders on loopback ports that log every request they receive.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::TestProxy;
use common::binary::BinaryProxy;
use common::recorder::Recorder;

/// `[[upstreams]]` tables, one per `(name, url)`, and one route per `(path prefix, upstream)`.
fn gateway(upstreams: &[(&str, &str)], routes: &[(&str, &str)]) -> String {
    let mut toml = String::new();
    for (name, url) in upstreams {
        toml.push_str(&format!(
            "[[upstreams]]\nname = \"{name}\"\nurl = \"{url}\"\nconnect_timeout = \"2s\"\nresponse_timeout = \"5s\"\n\n"
        ));
    }
    for (prefix, upstream) in routes {
        toml.push_str(&format!(
            "[[routes]]\nname = \"{upstream}-route\"\npath = \"{prefix}/**\"\nauth = \"none\"\nupstream = \"{upstream}\"\n\n"
        ));
    }
    toml
}

/// The request lines a recorder received since last asked (`GET /users/1 HTTP/1.1`).
fn lines(upstream: &Recorder) -> Vec<String> {
    upstream
        .take()
        .iter()
        .map(|r| r.lines().next().unwrap_or_default().to_owned())
        .collect()
}

async fn get(http: &reqwest::Client, proxy: &BinaryProxy, path: &str) -> (u16, String) {
    let res = http
        .get(format!("http://{}{path}", proxy.addr))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// A loopback address with nothing listening on it (a port that was free a moment ago).
fn dead_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until the process has installed `count` reloaded configurations in all.
async fn reloaded(proxy: &BinaryProxy, count: u32) {
    let line = format!("jwtgate_config_reloads_total{{result=\"ok\"}} {count}");
    for _ in 0..200 {
        let metrics = proxy.metrics().await;
        if metrics.lines().any(|l| l == line) {
            return;
        }
        assert!(
            !metrics.contains("jwtgate_config_reloads_total{result=\"refused\"} 1"),
            "reload refused: {}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never reloaded: {}", proxy.log());
}

#[tokio::test]
async fn each_route_reaches_its_own_upstream() {
    let (users, orders, billing) = (
        Recorder::start().await,
        Recorder::start().await,
        Recorder::start().await,
    );
    let proxy = BinaryProxy::start_logging(
        &gateway(
            &[
                ("users", &users.url()),
                ("orders", &orders.url()),
                ("billing", &billing.url()),
            ],
            &[
                ("/users", "users"),
                ("/orders", "orders"),
                ("/billing", "billing"),
            ],
        ),
        "info",
    )
    .await;
    let http = common::client();
    for path in [
        "/users/1",
        "/orders/2",
        "/billing/3",
        "/orders/4",
        "/nowhere",
    ] {
        let expected = if path == "/nowhere" { 404 } else { 200 };
        assert_eq!(get(&http, &proxy, path).await.0, expected, "{path}");
    }
    assert_eq!(lines(&users), ["GET /users/1 HTTP/1.1"]);
    assert_eq!(
        lines(&orders),
        ["GET /orders/2 HTTP/1.1", "GET /orders/4 HTTP/1.1"]
    );
    assert_eq!(lines(&billing), ["GET /billing/3 HTTP/1.1"]);
    let metrics = proxy.metrics().await;
    for line in [
        r#"jwtgate_upstream_requests_total{result="response",upstream="orders"} 2"#,
        r#"jwtgate_upstream_requests_total{result="response",upstream="users"} 1"#,
        r#"jwtgate_upstream_requests_total{result="unreachable",upstream="users"} 0"#,
        r#"jwtgate_upstream_duration_seconds_count{route="billing-route",upstream="billing"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
    // The access line names the upstream, and has none when no upstream was contacted. The log
    // is written in batches: wait for the last line.
    let access = |log: &str, route: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("jwtgate::access") && l.contains(&format!("route=\"{route}\" ")))
            .map(str::to_owned)
            .collect()
    };
    for _ in 0..200 {
        if !access(&proxy.log(), "_unmatched").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = proxy.log();
    let orders = access(&log, "orders-route");
    assert_eq!(orders.len(), 2, "{log}");
    assert!(
        orders.iter().all(|l| l.ends_with(" upstream=\"orders\"")),
        "{log}"
    );
    let unmatched = access(&log, "_unmatched");
    assert_eq!(unmatched.len(), 1, "{log}");
    assert!(!unmatched[0].contains("upstream="), "{log}");
}

#[tokio::test]
async fn a_dead_upstream_fails_only_its_routes_until_it_comes_back() {
    let (users, orders) = (Recorder::start().await, Recorder::start().await);
    let dead = dead_address();
    // Starting needs /readyz to answer 200: a dead upstream neither stops jwtgate from starting
    // nor takes it out of rotation.
    let proxy = BinaryProxy::start(&gateway(
        &[
            ("users", &users.url()),
            ("orders", &orders.url()),
            ("billing", &format!("http://{dead}")),
        ],
        &[
            ("/users", "users"),
            ("/orders", "orders"),
            ("/billing", "billing"),
        ],
    ))
    .await;
    let http = common::client();
    for _ in 0..3 {
        assert_eq!(
            get(&http, &proxy, "/billing/1").await,
            (502, r#"{"message":"Bad Gateway"}"#.to_owned())
        );
        assert_eq!(get(&http, &proxy, "/users/1").await.0, 200);
        assert_eq!(get(&http, &proxy, "/orders/1").await.0, 200);
    }
    let ready = http.get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = proxy.metrics().await;
    for line in [
        r#"jwtgate_upstream_requests_total{result="unreachable",upstream="billing"} 3"#,
        r#"jwtgate_upstream_requests_total{result="response",upstream="billing"} 0"#,
        r#"jwtgate_upstream_requests_total{result="response",upstream="users"} 3"#,
        r#"jwtgate_rejections_total{reason="upstream_unreachable",route="billing-route"} 3"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
    assert_eq!(lines(&users).len(), 3);

    // The service comes back on its port: its route answers again, without a reload.
    let billing = Recorder::start_on(dead).await;
    assert_eq!(
        get(&http, &proxy, "/billing/2").await,
        (200, "ok".to_owned())
    );
    assert_eq!(lines(&billing), ["GET /billing/2 HTTP/1.1"]);
}

#[tokio::test]
async fn a_reload_moves_a_route_under_load_without_a_failed_request() {
    let (a, b) = (Recorder::start().await, Recorder::start().await);
    let upstreams = [("a", a.url()), ("b", b.url())];
    let upstreams: Vec<(&str, &str)> = upstreams.iter().map(|(n, u)| (*n, u.as_str())).collect();
    let proxy = Arc::new(BinaryProxy::start(&gateway(&upstreams, &[("/orders", "a")])).await);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (proxy, stop) = (Arc::clone(&proxy), Arc::clone(&stop));
            tokio::spawn(async move {
                let http = common::client();
                let mut statuses = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/orders/{client}-{n}");
                    let status = match http
                        .get(format!("http://{}{path}", proxy.addr))
                        .send()
                        .await
                    {
                        Ok(res) => res.status().as_u16(),
                        Err(e) => panic!("{path}: {e}"),
                    };
                    statuses.push(status);
                    n += 1;
                }
                statuses
            })
        })
        .collect();

    // Load is flowing to A, then the route moves to B.
    let mut on_a = 0;
    for _ in 0..1000 {
        on_a += a.take().len();
        if on_a >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(on_a >= 20, "the load never reached A: {}", proxy.log());
    proxy.rewrite_config(&gateway(&upstreams, &[("/orders", "b")]));
    reloaded(&proxy, 1).await;
    // Keep the load on until B has served a good share of it.
    let mut on_b = 0;
    for _ in 0..1000 {
        on_b += b.take().len();
        if on_b >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    assert!(on_b >= 50, "the load never moved to B: {}", proxy.log());
    let mut total = 0;
    for client in clients {
        let statuses = client.await.unwrap();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        total += statuses.len();
    }
    assert!(total > 50, "{total}");

    // From now on every request lands on B.
    a.take();
    b.take();
    let http = common::client();
    assert_eq!(get(&http, &proxy, "/orders/after").await.0, 200);
    assert_eq!(lines(&b), ["GET /orders/after HTTP/1.1"]);
    assert!(lines(&a).is_empty());
}

#[tokio::test]
async fn a_reload_removes_an_upstream_and_adds_another() {
    let (users, orders, billing) = (
        Recorder::start().await,
        Recorder::start().await,
        Recorder::start().await,
    );
    let proxy = BinaryProxy::start(&gateway(
        &[("users", &users.url()), ("orders", &orders.url())],
        &[("/users", "users"), ("/orders", "orders")],
    ))
    .await;
    let http = common::client();
    assert_eq!(get(&http, &proxy, "/orders/1").await.0, 200);
    assert_eq!(lines(&orders), ["GET /orders/1 HTTP/1.1"]);

    // "orders" goes away; its paths now go to the new "billing", and /billing is new.
    proxy.rewrite_config(&gateway(
        &[("users", &users.url()), ("billing", &billing.url())],
        &[
            ("/users", "users"),
            ("/orders", "billing"),
            ("/billing", "billing"),
        ],
    ));
    reloaded(&proxy, 1).await;
    for path in ["/users/2", "/orders/2", "/billing/2"] {
        assert_eq!(get(&http, &proxy, path).await.0, 200, "{path}");
    }
    assert_eq!(lines(&users), ["GET /users/2 HTTP/1.1"]);
    assert_eq!(
        lines(&billing),
        ["GET /orders/2 HTTP/1.1", "GET /billing/2 HTTP/1.1"]
    );
    assert!(lines(&orders).is_empty());
    let metrics = proxy.metrics().await;
    let line = r#"jwtgate_upstream_requests_total{result="response",upstream="billing"} 2"#;
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} not in:\n{metrics}"
    );

    // A reload naming an upstream that does not exist is refused; the running config serves on.
    proxy.rewrite_config(&gateway(
        &[("users", &users.url())],
        &[("/users", "users"), ("/orders", "billing")],
    ));
    // The log is written in batches, a moment after the refusal is counted: wait for the line.
    let message = "routes[1].upstream: no upstream is named \"billing\"";
    for _ in 0..200 {
        if proxy.log().contains(message) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = proxy.log();
    assert!(log.contains(message), "{log}");
    let refused = r#"jwtgate_config_reloads_total{result="refused"} 1"#;
    assert!(proxy.metrics().await.lines().any(|l| l == refused));
    assert_eq!(get(&http, &proxy, "/orders/3").await.0, 200);
    assert_eq!(lines(&billing), ["GET /orders/3 HTTP/1.1"]);
}

/// In process, to see the clients themselves: a reload keeps the client (and its pool) of an
/// upstream whose settings did not change, and makes a new one for one that did.
#[tokio::test]
async fn a_reload_keeps_the_client_of_an_unchanged_upstream() {
    let (a, b) = (Recorder::start().await, Recorder::start().await);
    let config = |b_timeout: &str| {
        format!(
            "{}[[upstreams]]\nname = \"b\"\nurl = \"{}\"\nresponse_timeout = \"{b_timeout}\"\n\n[[routes]]\npath = \"/b/**\"\nauth = \"none\"\nupstream = \"b\"\n",
            gateway(&[("a", &a.url())], &[("/a", "a")]),
            b.url()
        )
    };
    let proxy = TestProxy::start(&config("5s")).await;
    let before = proxy.shared.snapshot.load_full();
    proxy
        .shared
        .install(jwtgate::compile::compile("t.toml", &config("6s")).unwrap())
        .unwrap();
    let after = proxy.shared.snapshot.load_full();
    assert_eq!(&*after.upstreams[0].settings.name, "a");
    assert!(Arc::ptr_eq(&before.upstreams[0], &after.upstreams[0]));
    assert!(!Arc::ptr_eq(&before.upstreams[1], &after.upstreams[1]));
    assert_eq!(
        after.upstreams[1].settings.response_timeout,
        Duration::from_secs(6)
    );
    let res = common::client()
        .get(proxy.url("/b/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(lines(&b), ["GET /b/1 HTTP/1.1"]);
}

/// `urls`: the addresses take turns; one that refuses connections is skipped (the request goes
/// to another address, so none fails), and gets its turn again once it listens.
#[tokio::test]
async fn several_addresses_take_turns_and_a_dead_one_is_skipped() {
    let (a, b) = (Recorder::start().await, Recorder::start().await);
    let (a_addr, dead) = (a.addr, dead_address());
    let proxy = BinaryProxy::start(&format!(
        "[[upstreams]]\nname = \"svc\"\nurls = [\"{}\", \"{}\", \"http://{dead}\"]\n\n[[routes]]\npath = \"/svc/**\"\nauth = \"none\"\nupstream = \"svc\"\n",
        a.url(),
        b.url()
    ))
    .await;
    let http = common::client();
    for i in 0..30 {
        assert_eq!(get(&http, &proxy, &format!("/svc/{i}")).await.0, 200);
    }
    let (on_a, on_b) = (lines(&a).len(), lines(&b).len());
    assert_eq!(on_a + on_b, 30);
    assert!(on_a >= 10 && on_b >= 10, "a {on_a}, b {on_b}");

    // A goes away, connections and all: B serves everything, and no request fails.
    drop(a);
    for i in 0..30 {
        assert_eq!(get(&http, &proxy, &format!("/svc/{i}")).await.0, 200);
    }
    assert_eq!(lines(&b).len(), 30);
    let metrics = proxy.metrics().await;
    let line = r#"jwtgate_upstream_requests_total{result="response",upstream="svc"} 60"#;
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} not in:\n{metrics}"
    );

    // A comes back on its port: once its ejection is over, it gets its turns again.
    let a = Recorder::start_on(a_addr).await;
    let mut back = false;
    for i in 0..400 {
        assert_eq!(get(&http, &proxy, &format!("/svc/back-{i}")).await.0, 200);
        if !a.take().is_empty() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "A never got a request again: {}", proxy.log());
}

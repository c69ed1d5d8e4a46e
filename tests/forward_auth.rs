//! Forward-auth: jwtgate decides for another proxy. Interop with Debian's nginx
//! (`auth_request` + `auth_request_set`), and the trust rules for `X-Forwarded-Uri`.

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// nginx in the foreground, single process, everything in a temp dir; killed on drop.
struct Nginx {
    port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(jwtgate: std::net::SocketAddr, upstream: &str) -> Nginx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("jwtgate-nginx-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let upstream = upstream.trim_start_matches("http://");
        let conf = format!(
            r#"
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /_jwtgate;
            auth_request_set $user_sub $upstream_http_x_user_sub;
            auth_request_set $user_groups $upstream_http_x_user_groups;
            proxy_set_header X-User-Sub $user_sub;
            proxy_set_header X-User-Groups $user_groups;
            proxy_pass http://{upstream};
        }}
        location = /_jwtgate {{
            internal;
            proxy_pass http://{jwtgate}/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
    }}
}}
"#,
            dir = dir.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian package nginx) must be installed: scripts/test installs it");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Nginx { port, child, dir };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default();
        panic!("nginx did not start: {log}");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TRUSTED: &str =
    "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[forward_auth]\npath = \"/auth\"\n";

#[tokio::test]
async fn nginx_auth_request_passes_claims_and_refusals() {
    let env = Env::start_with("", TRUSTED).await;
    let nginx = Nginx::start(env.proxy.addr, &env.upstream.url());
    let http = client();

    let res = http
        .get(nginx.url("/orders/7?x=1"))
        .bearer_auth(env.access("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = env.upstream.last().unwrap();
    assert_eq!(
        got.uri, "/orders/7?x=1",
        "nginx proxied the original request"
    );
    assert_eq!(
        got.headers["x-user-sub"],
        alice().sub,
        "claims reached nginx's upstream through auth_request_set"
    );
    assert_eq!(got.headers["x-user-groups"], "admins,users");

    let res = http.get(nginx.url("/orders/7")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        www_authenticate(&res),
        r#"Bearer realm="jwtgate""#,
        "nginx passes the challenge on"
    );
    let res = http
        .get(nginx.url("/admin/x"))
        .bearer_auth(env.access("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = http
        .get(nginx.url("/orders/7"))
        .bearer_auth("abc.def.ghi")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A client's own X-Original-URI is overwritten by nginx: it cannot pick an anonymous route.
    let res = http
        .get(nginx.url("/orders/7"))
        .header("x-original-uri", "/health")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        env.upstream.hits(),
        1,
        "only the allowed request reached the upstream"
    );
}

#[tokio::test]
async fn forwarded_uri_is_believed_only_from_trusted_proxies() {
    // No trusted proxies: the headers are ignored and the path below /auth names the request.
    let env = Env::start_with("", "[forward_auth]\npath = \"/auth\"\n").await;
    let spoof = |path: &str| {
        env.http
            .get(env.proxy.url(path))
            .header("x-forwarded-uri", "/health")
            .header("x-forwarded-method", "GET")
            .header("x-original-uri", "/health")
    };
    let res = spoof("/auth/admin/x").send().await.unwrap();
    assert_eq!(
        res.status(),
        401,
        "the spoofed /health was ignored; /admin/x needs a token"
    );
    let res = spoof("/auth").send().await.unwrap();
    assert_eq!(res.status(), 404, "no route for / in this config");
    // Envoy ext_authz style: the original path below the prefix.
    let res = env
        .http
        .get(env.proxy.url("/auth/orders/1"))
        .bearer_auth(env.access("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-user-sub"], user("bob").unwrap().sub);
    assert_eq!(
        env.upstream.hits(),
        0,
        "forward-auth answers; it never forwards"
    );

    // Trusted: Traefik's headers name the request.
    let env = Env::start_with("", TRUSTED).await;
    let res = env
        .http
        .get(env.proxy.url("/auth"))
        .header("x-forwarded-method", "POST")
        .header("x-forwarded-uri", "/orders/1")
        .bearer_auth(env.access("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        403,
        "POST /orders needs orders/write, which bob lacks"
    );
    let res = env
        .http
        .get(env.proxy.url("/auth"))
        .header("x-forwarded-uri", "/health")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-user-sub").is_none());
    let res = env
        .http
        .get(env.proxy.url("/auth"))
        .header("x-forwarded-uri", "/orders/%2F..")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        400,
        "the original URI is normalised like any request path"
    );
    // A fragment is not part of the path: `/admin#/../health` names /admin, as the upstream
    // behind the asking proxy reads it, not /health.
    let res = env
        .http
        .get(env.proxy.url("/auth"))
        .header("x-forwarded-uri", "/admin/x#/../../health")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        401,
        "decided as /admin/x, which needs a token"
    );
}

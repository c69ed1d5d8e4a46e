//! TLS: termination with ALPN h2, certificate reload, client certificates (mutual TLS), and
//! `https://` and h2c upstreams. Certificates are made by the test (rcgen).

#![allow(clippy::unwrap_used)] // tests panic on purpose

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jwtgate::compile::compile;
use jwtgate::dev::echo::EchoUpstream;
use jwtgate::dev::issuer::DevIssuer;
use jwtgate::{Listeners, Shared, serve, tls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;

/// A CA and certificates it signs, written to a temp dir.
struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("jwtgate-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "jwtgate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = cert.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        Pki {
            dir,
            ca: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// Writes `name.pem` and `name.key` for `localhost`; returns their paths.
    fn issue(&self, name: &str, common_name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct TlsProxy {
    port: u16,
    _issuer: DevIssuer,
    upstream: EchoUpstream,
    acceptor: Arc<tls::Acceptor>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

async fn tls_proxy(pki: &Pki, server_tls: &str) -> TlsProxy {
    let issuer = DevIssuer::start("us-east-1_TLS").await.unwrap();
    let upstream = EchoUpstream::start().await.unwrap();
    let toml = format!(
        "[server.tls]\n{server_tls}\n{}",
        config(&issuer, &upstream.url(), "", "")
    );
    let mut config = compile("tls.toml", &toml).unwrap_or_else(|e| panic!("{e}"));
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.listen = proxy.local_addr().unwrap();
    config.admin_listen = admin.local_addr().unwrap();
    let port = config.listen.port();
    let acceptor = tls::Acceptor::new(config.tls.as_ref().unwrap()).unwrap();
    tokio::spawn(Arc::clone(&acceptor).watch_every(Duration::from_millis(100)));
    let shared = Shared::new(config).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = Listeners {
        proxy,
        admin,
        tls: Some(Arc::clone(&acceptor)),
    };
    tokio::spawn(serve(Arc::clone(&shared), listeners, async {
        let _ = stopped.await;
    }));
    assert!(shared.wait_ready(Duration::from_secs(5)).await);
    let _ = pki;
    TlsProxy {
        port,
        _issuer: issuer,
        upstream,
        acceptor,
        _stop: stop,
    }
}

fn https_client(pki: &Pki, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()]);
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// The certificate the server presents, as DER.
async fn presented_certificate(port: u16, pki: &Pki) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn tls_termination_speaks_h2_and_http1_and_reloads_its_certificate() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "first");
    let proxy = tls_proxy(
        &pki,
        &format!("cert_file = {:?}\nkey_file = {:?}\n", p(&cert), p(&key)),
    )
    .await;
    let url = format!("https://localhost:{}/orders/1", proxy.port);
    let token = proxy._issuer.sign(&proxy._issuer.access_token(alice()));
    let res = https_client(&pki, None)
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), reqwest::Version::HTTP_2, "ALPN h2");
    let got = proxy.upstream.last().unwrap();
    assert_eq!(got.headers["x-forwarded-proto"], "https");
    let http1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let res = http1.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.version(), reqwest::Version::HTTP_11);

    // Rotate: new files in place; the next handshakes present the new certificate.
    let before = presented_certificate(proxy.port, &pki).await;
    let (new_cert, new_key) = pki.issue("rotated", "second");
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let expected = rustls::pki_types::CertificateDer::from_pem_file(&new_cert)
        .unwrap()
        .to_vec();
    let mut now = before.clone();
    for _ in 0..100 {
        now = presented_certificate(proxy.port, &pki).await;
        if now == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(now, before);
    assert_eq!(now, expected);
    // A broken pair is refused and the current certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(presented_certificate(proxy.port, &pki).await, expected);
    drop(proxy.acceptor);
}

#[tokio::test]
async fn client_certificates_are_required_when_configured() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "server");
    let (client_cert, client_key) = pki.issue("client", "client");
    let proxy = tls_proxy(
        &pki,
        &format!(
            "cert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n",
            p(&cert),
            p(&key),
            p(&pki.ca_file())
        ),
    )
    .await;
    let url = format!("https://localhost:{}/health", proxy.port);
    assert!(
        https_client(&pki, None).get(&url).send().await.is_err(),
        "no client certificate: refused"
    );
    let res = https_client(&pki, Some((&client_cert, &client_key)))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn bad_tls_files_are_config_errors() {
    let errors = compile(
        "x.toml",
        "[server.tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[[routes]]\npath = \"/**\"\nauth = \"none\"\n",
    )
    .unwrap_err()
    .0;
    assert!(
        errors[0].starts_with("x.toml:2:13: server.tls.cert_file: /nonexistent/cert.pem"),
        "{errors:?}"
    );
}

/// An HTTPS server answering every request with 200 "tls upstream".
async fn https_upstream(pki: &Pki) -> u16 {
    let (cert, key) = pki.issue("upstream", "upstream");
    let settings = tls::ServerTls {
        cert_file: cert,
        key_file: key,
        client_ca_file: None,
        client_cert_required: false,
    };
    let acceptor = tls::Acceptor::new(&settings).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = Arc::clone(&acceptor);
            tokio::spawn(async move {
                let Ok(stream) = acceptor.acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("tls upstream {:?}", req.version());
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_configured_ca() {
    let pki = Pki::new();
    let port = https_upstream(&pki).await;
    let issuer = DevIssuer::start("us-east-1_TLS").await.unwrap();
    let upstream_config = |extra: &str, http2: bool| {
        format!(
            "[upstream]\nurl = \"https://localhost:{port}\"\nhttp2 = {http2}\n{extra}\n[[routes]]\npath = \"/**\"\nauth = \"none\"\n"
        )
    };
    let proxy = TestProxy::start(&upstream_config(
        &format!("ca_file = {:?}", p(&pki.ca_file())),
        false,
    ))
    .await;
    let res = client().get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "tls upstream HTTP/1.1");
    let proxy = TestProxy::start(&upstream_config(
        &format!("ca_file = {:?}", p(&pki.ca_file())),
        true,
    ))
    .await;
    let res = client().get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(
        res.text().await.unwrap(),
        "tls upstream HTTP/2.0",
        "ALPN h2 to the upstream"
    );
    // The system roots do not know the test CA: the upstream is not trusted.
    let proxy = TestProxy::start(&upstream_config("", false)).await;
    let res = client().get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    drop(issuer);
}

#[tokio::test]
async fn h2c_upstreams_speak_http2_with_prior_knowledge() {
    let upstream = EchoUpstream::start().await.unwrap();
    let proxy = TestProxy::start(&format!(
        "[upstream]\nurl = \"{}\"\nhttp2 = true\n[[routes]]\npath = \"/**\"\nauth = \"none\"\n",
        upstream.url()
    ))
    .await;
    let res = client()
        .get(proxy.url("/h2"))
        .header("x-test", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = upstream.last().unwrap();
    assert_eq!(got.headers["x-test"], "1");
}

//! TLS with rustls: termination on the proxy listener (PEM certificate and key, reloaded when
//! the files change, ALPN h2 and http/1.1, optional client certificates), and the TLS client
//! configuration for `https://` upstreams (system roots or a CA bundle, optional client
//! certificate). rustls' defaults are kept: TLS 1.3 and 1.2 with forward-secret AEAD suites only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// How often certificate files are checked for changes.
pub const CERT_WATCH_INTERVAL: Duration = Duration::from_secs(10);

/// `[server.tls]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle that client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate (when `client_ca_file` is set).
    pub client_cert_required: bool,
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    CertifiedKey::from_der(certs(cert_file)?, key(key_file)?, &provider())
        .map_err(|e| format!("{} and {}: {e}", cert_file.display(), key_file.display()))
}

/// Serves the current certificate; swapped when the files change.
#[derive(Debug)]
struct Reloadable {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The listener's TLS: an acceptor and the certificate it serves.
pub struct Acceptor {
    /// Accepts TLS connections.
    pub acceptor: tokio_rustls::TlsAcceptor,
    certificate: Arc<Reloadable>,
    settings: ServerTls,
}

impl Acceptor {
    /// Loads the files and builds the server configuration.
    pub fn new(settings: &ServerTls) -> Result<Arc<Self>, String> {
        let certificate = Arc::new(Reloadable {
            current: ArcSwap::from_pointee(certified_key(&settings.cert_file, &settings.key_file)?),
        });
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &settings.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
                let verifier = if settings.client_cert_required {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| format!("{}: {e}", ca.display()))?,
                )
            }
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(Acceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificate,
            settings: settings.clone(),
        }))
    }

    /// Re-reads the certificate and key whenever either file changes (checked every
    /// [`CERT_WATCH_INTERVAL`]); a broken pair is refused (logged) and the current one stays.
    pub async fn watch(self: Arc<Self>) {
        self.watch_every(CERT_WATCH_INTERVAL).await;
    }

    /// [`Acceptor::watch`] with another period (tests).
    pub async fn watch_every(self: Arc<Self>, interval: Duration) {
        let fingerprint = |this: &Self| {
            let read = |p: &Path| std::fs::read(p).ok();
            (
                read(&this.settings.cert_file),
                read(&this.settings.key_file),
            )
        };
        let mut seen = fingerprint(&self);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = fingerprint(&self);
            if now == seen || now.0.is_none() || now.1.is_none() {
                continue;
            }
            seen = now;
            match certified_key(&self.settings.cert_file, &self.settings.key_file) {
                Ok(key) => {
                    self.certificate.current.store(Arc::new(key));
                    tracing::info!(cert = %self.settings.cert_file.display(), "TLS certificate reloaded");
                }
                Err(e) => tracing::error!("TLS certificate refused, the previous one stays: {e}"),
            }
        }
    }
}

/// `https://` upstream settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Extra trust anchors (PEM); without it, the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// The rustls client configuration for the upstream (the connector sets ALPN).
pub fn client_config(settings: &UpstreamTls) -> Result<rustls::ClientConfig, String> {
    let roots = match &settings.ca_file {
        Some(path) => roots(path)?,
        None => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system root certificates found; set upstream.ca_file".into());
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match &settings.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key_file)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_file)?)
            .map_err(|e| format!("{}: {e}", cert.display())),
    }
}

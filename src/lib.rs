//! jwtgate: API Gateway's JWT authorizer as a reverse proxy in front of any HTTP service.
//!
//! The request path lives in [`proxy`]; the pieces it calls are one module each: [`routes`]
//! (normalise and match), [`token`] (bearer validation), [`jwks`] (keys), [`authz`] (route
//! requirements), [`headers`] (what the upstream sees), [`error`] (what the client sees).
//! [`compile`] turns the TOML ([`config`]) into the [`Snapshot`] that one request reads.

pub mod admin;
pub mod authz;
pub mod compile;
pub mod config;
pub mod dev;
pub mod error;
pub mod headers;
pub mod jwks;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod server;
pub mod token;

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::compile::Config;
use crate::jwks::{KeyManager, KeySettings};
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::token::{Issuers, TokenCache};

/// Everything one request reads, swapped as a whole on reload: a request loads it once and
/// keeps that `Arc` to the end, so it never sees half of an old config and half of a new one.
pub struct Snapshot {
    /// The checked configuration.
    pub config: Config,
    /// Issuer policies with their live key stores.
    pub issuers: Issuers,
    /// The upstream client (its pool belongs to this config).
    pub upstream: Upstream,
}

/// State shared by every connection.
pub struct Shared {
    /// The live configuration.
    pub snapshot: ArcSwap<Snapshot>,
    /// Key stores; they survive reloads.
    pub keys: KeyManager,
    /// Verified tokens; they survive reloads (claims are re-checked against the live config).
    pub token_cache: TokenCache,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Builds the state and starts fetching keys. Must run inside a tokio runtime.
    pub fn new(config: Config) -> Result<Arc<Self>, reqwest::Error> {
        let metrics = Arc::new(Metrics::new());
        let keys = KeyManager::new(Arc::clone(&metrics))?;
        let token_cache = TokenCache::new(config.token_cache_bytes);
        let snapshot = bind(config, &keys);
        Ok(Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            keys,
            token_cache,
            metrics,
        }))
    }

    /// Installs a new configuration atomically. Listener addresses, limits and the token cache
    /// size are fixed at start; a change to them is logged and takes effect on restart.
    pub fn install(&self, config: Config) {
        let old = self.snapshot.load();
        if old.config.listen != config.listen || old.config.admin_listen != config.admin_listen {
            tracing::warn!("listener addresses changed; restart jwtgate to apply");
        }
        let snapshot = bind(config, &self.keys);
        self.snapshot.store(Arc::new(snapshot));
    }
}

fn bind(config: Config, keys: &KeyManager) -> Snapshot {
    let settings: Vec<KeySettings> = config.issuers.iter().map(|(_, s)| s.clone()).collect();
    let stores = keys.sync(&settings);
    let issuers = Issuers::new(
        config
            .issuers
            .iter()
            .map(|(policy, _)| Arc::clone(policy))
            .zip(stores),
    );
    let upstream = Upstream::new(config.upstream.clone());
    Snapshot {
        config,
        issuers,
        upstream,
    }
}

/// The bound proxy and admin sockets.
pub struct Listeners {
    /// Proxy traffic.
    pub proxy: TcpListener,
    /// Admin endpoints.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses a config names.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let proxy = TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
        })?;
        let admin = TcpListener::bind(config.admin_listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", config.admin_listen),
            )
        })?;
        Ok(Listeners { proxy, admin })
    }
}

/// Serves until `shutdown` resolves, then drains in-flight requests (up to the drain timeout).
pub async fn serve(shared: Arc<Shared>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let (stop, stopped) = watch::channel(false);
    let proxy = tokio::spawn(server::run_proxy(
        listeners.proxy,
        Arc::clone(&shared),
        stopped.clone(),
    ));
    let admin = tokio::spawn(server::run_admin(listeners.admin, shared, stopped));
    shutdown.await;
    let _ = stop.send(true);
    let _ = proxy.await;
    let _ = admin.await;
}

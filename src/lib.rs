//! jwtgate: API Gateway's JWT authorizer as a reverse proxy in front of any HTTP service.
//!
//! The request path lives in [`proxy`]; the pieces it calls are one module each: [`routes`]
//! (normalise and match), [`token`] (bearer validation), [`jwks`] (keys), [`authz`] (route
//! requirements), [`headers`] (what the upstream sees), [`error`] (what the client sees).
//! [`compile`] turns the TOML ([`config`]) into the checked [`settings`] that each [`Snapshot`]
//! holds and one request reads; [`state`] holds the snapshot and what outlives it; this file
//! binds the listeners and serves.

pub mod admin;
pub mod authorizer;
pub mod authz;
pub mod aws;
pub mod compile;
pub mod config;
pub mod cors;
pub mod dev;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod http1;
pub mod jwks;
pub mod log_writer;
pub mod login;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod server;
pub mod settings;
pub mod start;
pub mod state;
pub mod tls;
pub mod token;
pub mod trace;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::settings::Config;

pub use crate::start::StartError;
pub use crate::state::{Shared, Snapshot};

/// The bound proxy and admin sockets.
pub struct Listeners {
    /// Proxy traffic.
    pub proxy: TcpListener,
    /// Admin endpoints.
    pub admin: TcpListener,
    /// TLS on the proxy listener, when `[server.tls]` is configured.
    pub tls: Option<Arc<tls::Acceptor>>,
}

impl Listeners {
    /// Binds the addresses a config names and loads its TLS certificate.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let tls = match &config.tls {
            Some(settings) => Some(tls::Acceptor::new(settings).map_err(std::io::Error::other)?),
            None => None,
        };
        let proxy = TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
        })?;
        let admin = TcpListener::bind(config.admin_listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", config.admin_listen),
            )
        })?;
        Ok(Listeners { proxy, admin, tls })
    }

    /// [`Listeners::bind`] for `cores` runtimes of one thread each: the proxy address is bound
    /// `cores` times with `SO_REUSEPORT` (the kernel spreads new connections over the sockets),
    /// and every socket but the first is returned for [`serve_per_core`] to move to its thread.
    #[cfg(unix)]
    pub async fn bind_per_core(
        config: &Config,
        cores: usize,
    ) -> std::io::Result<(Self, Vec<std::net::TcpListener>)> {
        let tls = match &config.tls {
            Some(settings) => Some(tls::Acceptor::new(settings).map_err(std::io::Error::other)?),
            None => None,
        };
        let reuse_port = || -> std::io::Result<TcpListener> {
            let socket = if config.listen.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(config.listen)?;
            socket.listen(1024)
        };
        let cannot = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
        };
        let proxy = reuse_port().map_err(cannot)?;
        let mut more = Vec::with_capacity(cores.saturating_sub(1));
        for _ in 1..cores {
            more.push(
                reuse_port()
                    .and_then(TcpListener::into_std)
                    .map_err(cannot)?,
            );
        }
        let admin = TcpListener::bind(config.admin_listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", config.admin_listen),
            )
        })?;
        Ok((Listeners { proxy, admin, tls }, more))
    }
}

/// Serves until `shutdown` resolves, then drains in-flight requests (up to the drain timeout).
pub async fn serve(shared: Arc<Shared>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    serve_per_core(shared, listeners, Vec::new(), shutdown).await;
}

/// [`serve`], with each of `more` proxy sockets (from [`Listeners::bind_per_core`]) served by
/// a runtime of its own on its own thread: one current-thread runtime per core, no work
/// stealing between them. The admin listener, reloads and key refreshes stay on the calling
/// runtime; every runtime drains on `shutdown`. Each accept loop takes its share of
/// `max_connections`.
pub async fn serve_per_core(
    shared: Arc<Shared>,
    listeners: Listeners,
    more: Vec<std::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_proxy, proxy_stopped) = watch::channel(false);
    let share = more.len() + 1;
    let mut cores = Vec::with_capacity(more.len());
    for (i, socket) in more.into_iter().enumerate() {
        let (shared, tls, stopped) = (
            Arc::clone(&shared),
            listeners.tls.clone(),
            proxy_stopped.clone(),
        );
        let started = std::thread::Builder::new()
            .name(format!("jwtgate-core-{}", i + 1))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let served = runtime.and_then(|rt| {
                    rt.block_on(async {
                        socket.set_nonblocking(true)?;
                        let listener = TcpListener::from_std(socket)?;
                        server::run_proxy(listener, shared, tls, stopped, share).await;
                        Ok::<_, std::io::Error>(())
                    })
                });
                if let Err(e) = served {
                    tracing::error!(core = i + 1, error = %e, "a core's runtime failed; the others serve on");
                }
            });
        match started {
            Ok(handle) => cores.push(handle),
            Err(e) => tracing::error!(error = %e, "cannot start a core's thread"),
        }
    }
    let (stop_admin, admin_stopped) = watch::channel(false);
    let watcher = listeners
        .tls
        .as_ref()
        .map(|tls| tokio::spawn(Arc::clone(tls).watch()));
    let proxy = tokio::spawn(server::run_proxy(
        listeners.proxy,
        Arc::clone(&shared),
        listeners.tls,
        proxy_stopped,
        share,
    ));
    let admin = tokio::spawn(server::run_admin(
        listeners.admin,
        Arc::clone(&shared),
        admin_stopped,
    ));
    shutdown.await;
    // Report not-ready at once, keep serving for the shutdown delay (load balancers and the
    // Kubernetes endpoints controller take a moment to stop sending), then drain. The admin
    // listener (probes, metrics) stays up until the proxy has drained.
    shared
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let delay = shared.snapshot.load().config.limits.shutdown_delay;
    if !delay.is_zero() {
        tracing::info!(
            ?delay,
            "shutting down: not ready, still serving for the shutdown delay"
        );
        tokio::time::sleep(delay).await;
    }
    let _ = stop_proxy.send(true);
    let _ = proxy.await;
    // The other cores drain on the same signal, within the same timeout.
    let _ = tokio::task::spawn_blocking(move || {
        for core in cores {
            let _ = core.join();
        }
    })
    .await;
    let _ = stop_admin.send(true);
    let _ = admin.await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
}

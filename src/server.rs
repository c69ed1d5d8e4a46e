//! Accept loops: a connection cap, hyper's limits (head size, header count, head read timeout),
//! HTTP/1.1 and h2c on the same port, and a graceful drain on shutdown. Proxy connections start
//! on the HTTP/1.1 fast path ([`h1`]) and move to hyper at the first request it leaves to hyper.

mod body;
mod h1;

pub use body::ClientBody;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::proxy::{self, ConnInfo};
use crate::settings::Limits;
use crate::{Shared, admin, tls};

/// Pause after an `accept` error (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

/// Serves the proxy on `listener` (over TLS when `tls` is set) until `shutdown` resolves, then
/// stops accepting and waits up to `limits.drain_timeout` for in-flight requests. `share`: how
/// many accept loops serve this address (one per core): each takes that part of
/// `max_connections`.
pub async fn run_proxy(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<tls::Acceptor>>,
    shutdown: watch::Receiver<bool>,
    share: usize,
) {
    let mut limits = shared.snapshot.load().config.limits.clone();
    limits.max_connections = limits.max_connections.div_ceil(share.max(1));
    let fast = Arc::clone(&shared);
    let service = move |peer, proto| {
        let shared = Arc::clone(&shared);
        let conn = ConnInfo::new(peer, proto);
        service_fn(move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            let conn = conn.clone();
            let req = req.map(ClientBody::Streaming);
            async move { Ok::<_, std::convert::Infallible>(proxy::handle(shared, conn, req).await) }
        })
    };
    accept_loop(
        "proxy",
        listener,
        tls,
        &limits,
        service,
        Some(fast),
        shutdown,
    )
    .await;
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn run_admin(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = Limits {
        max_connections: 64,
        drain_timeout: Duration::from_secs(1),
        ..shared.snapshot.load().config.limits.clone()
    };
    let service = move |_peer, _proto| {
        let shared = Arc::clone(&shared);
        service_fn(move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, std::convert::Infallible>(admin::handle(&shared, &req)) }
        })
    };
    accept_loop("admin", listener, None, &limits, service, None, shutdown).await;
}

async fn accept_loop<S, M>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<tls::Acceptor>>,
    limits: &Limits,
    make_service: M,
    fast: Option<Arc<Shared>>,
    mut shutdown: watch::Receiver<bool>,
) where
    M: Fn(SocketAddr, &'static str) -> S,
    S: ConnService,
{
    let builder = Arc::new(builder(limits));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let proto = if tls.is_some() { "https" } else { "http" };
    let shared_limits = Arc::new(limits.clone());
    loop {
        // Wait for a free slot first: over the cap, connections queue in the kernel backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(listener = name, "accept failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: Arc::clone(&builder),
            watcher: graceful.watcher(),
            peer,
            first_request_timeout: limits.header_read_timeout,
            fast: fast.as_ref().map(|shared| Fast {
                shared: Arc::clone(shared),
                conn: ConnInfo::new(peer, proto),
                limits: Arc::clone(&shared_limits),
                shutdown: shutdown.clone(),
            }),
        };
        let service = make_service(peer, proto);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection.serve(stream, service).await,
                Some(tls) => {
                    // The handshake counts against the same timeout as the first request.
                    let handshake = tokio::time::timeout(
                        connection.first_request_timeout,
                        tls.acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(stream)) => connection.serve(stream, service).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(listener = name, "draining connections");
    // hyper's connections hear the shutdown from `graceful`, the fast path's from `shutdown`;
    // every connection holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = async {
        graceful.shutdown().await;
        let _ = permits.acquire_many(all).await;
    };
    if tokio::time::timeout(limits.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "drain timeout reached; closing remaining connections"
        );
    }
}

/// A connection's request handler, as hyper serves it.
trait ConnService:
    hyper::service::Service<
        Request<Incoming>,
        Response = hyper::Response<proxy::ProxyBody>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<S> ConnService for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = hyper::Response<proxy::ProxyBody>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// One accepted connection, ready to be served over TCP or TLS.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
    first_request_timeout: Duration,
    /// Set for proxy connections, which start on the fast path.
    fast: Option<Fast>,
}

/// What a proxy connection's fast path needs.
struct Fast {
    shared: Arc<Shared>,
    conn: ConnInfo,
    limits: Arc<Limits>,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    async fn serve<I, S>(mut self, io: I, service: S)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: ConnService,
    {
        let (io, read) = match self.fast.take() {
            Some(fast) => {
                let path = h1::FastPath {
                    shared: &fast.shared,
                    conn: &fast.conn,
                    limits: &fast.limits,
                };
                match h1::serve(io, path, fast.shutdown).await {
                    h1::Ended::Closed => return,
                    h1::Ended::Handoff(io, read) => (io, read),
                }
            }
            None => (io, bytes::Bytes::new()),
        };
        let io = h1::Prefixed::new(read, io);
        let started = Arc::new(AtomicBool::new(false));
        let service = FirstRequest {
            inner: service,
            started: Arc::clone(&started),
        };
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        let conn = self.watcher.watch(conn.into_owned());
        // hyper's header read timeout only starts once it knows the protocol: a client that
        // sends nothing, or half an HTTP/2 preface, would hold its slot forever. So the first
        // request must arrive within the same timeout, or the connection is dropped.
        let deadline = async {
            tokio::time::sleep(self.first_request_timeout).await;
            if started.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        let peer = self.peer;
        tokio::select! {
            result = conn => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "connection ended with an error: {e}");
                }
            }
            () = deadline => tracing::debug!(%peer, "no request within the header read timeout; closing"),
        }
    }
}

/// Wraps a connection's service to note that a request arrived.
struct FirstRequest<S> {
    inner: S,
    started: Arc<AtomicBool>,
}

impl<S, R> hyper::service::Service<R> for FirstRequest<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> Self::Future {
        self.started.store(true, Ordering::Relaxed);
        self.inner.call(req)
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("cannot listen for SIGTERM: {e}");
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    }
}

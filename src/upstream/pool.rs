//! One origin's idle connections: one list, one bound, one idle timeout, one sweeper.
//!
//! An HTTP/1.1 connection is of one of two kinds for its whole life: raw, driven by the bodiless
//! exchange itself ([`exchange::Conn`]), or hyper's ([`http1::SendRequest`], its connection task
//! run by hyper) for requests with a body and upgrades. Both kinds wait in the same list, most
//! recently used last; a request takes the newest of the kind it needs. `pool_max_idle` bounds
//! them together, `pool_idle_timeout` ages them alike. The pool also holds the shared HTTP/2
//! connection of an HTTP/2 upstream. An [`Upstream`](super::Upstream) owns one pool, and a
//! pool costs a mutex, an empty list and a sleeping sweeper task until it is used.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};

use super::UploadBody;
use super::exchange;

/// The kind of connection a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Raw, for a bodiless exchange.
    Exchange,
    /// hyper's, for a request with a body or an upgrade.
    Hyper,
}

/// An HTTP/1.1 connection between requests.
pub enum Idle {
    /// A raw connection whose last bodiless exchange ended cleanly.
    Exchange(exchange::Conn),
    /// One of hyper's whose last response was read to the end.
    Hyper(http1::SendRequest<UploadBody>),
}

impl Idle {
    fn kind(&self) -> Kind {
        match self {
            Idle::Exchange(_) => Kind::Exchange,
            Idle::Hyper(_) => Kind::Hyper,
        }
    }

    /// The raw connection, if it is one.
    pub fn into_exchange(self) -> Option<exchange::Conn> {
        match self {
            Idle::Exchange(conn) => Some(conn),
            Idle::Hyper(_) => None,
        }
    }

    /// hyper's connection, if it is one.
    pub fn into_hyper(self) -> Option<http1::SendRequest<UploadBody>> {
        match self {
            Idle::Hyper(sender) => Some(sender),
            Idle::Exchange(_) => None,
        }
    }

    /// Closed, as far as is known without touching the socket (hyper's connection task notices
    /// a close; a raw connection is only checked when taken).
    fn known_closed(&self) -> bool {
        match self {
            Idle::Exchange(_) => false,
            Idle::Hyper(sender) => sender.is_closed(),
        }
    }

    /// Closed (or sent something unasked) while idle. Never waits.
    fn closed(&mut self) -> bool {
        match self {
            Idle::Exchange(conn) => conn.closed_while_idle(),
            Idle::Hyper(sender) => sender.is_closed(),
        }
    }
}

struct Entry {
    conn: Idle,
    /// When it went idle.
    since: Instant,
}

impl Entry {
    /// Idle for `timeout` or longer at `now`.
    fn too_old(&self, now: Instant, timeout: Duration) -> bool {
        now.saturating_duration_since(self.since) >= timeout
    }

    /// Too old at `now`, or known to be closed.
    fn expired(&self, now: Instant, timeout: Duration) -> bool {
        self.too_old(now, timeout) || self.conn.known_closed()
    }
}

/// One origin's idle HTTP/1.1 connections, and its shared HTTP/2 connection.
pub struct Pool {
    idle: Mutex<Vec<Entry>>,
    h2: Mutex<Option<http2::SendRequest<UploadBody>>>,
    /// Most idle HTTP/1.1 connections kept, of both kinds together.
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// An empty pool. Idle connections past `idle_timeout` are closed even when no request comes
    /// to notice, by a task that ends with the pool.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            max_idle,
            idle_timeout,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&pool)));
        }
        pool
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Entry>> {
        // Pushes and removals only: a panic elsewhere cannot leave the list inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn h2(&self) -> MutexGuard<'_, Option<http2::SendRequest<UploadBody>>> {
        self.h2.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection of `kind` that is still open and young enough.
    /// Those of `kind` found closed or too old on the way are dropped.
    pub fn take(&self, kind: Kind) -> Option<Idle> {
        let now = Instant::now();
        let mut idle = self.idle();
        let mut at = idle.len();
        while at > 0 {
            at -= 1;
            if idle[at].conn.kind() != kind {
                continue;
            }
            let mut entry = idle.remove(at);
            if !entry.too_old(now, self.idle_timeout) && !entry.conn.closed() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Keeps a connection whose last response ended cleanly, unless it is known to be closed
    /// or the pool is full (after dropping expired ones).
    ///
    /// This runs once per proxied request, so it reads the clock once and looks at one entry:
    /// the list is in the order connections went idle, so when its first entry is young enough
    /// all are, and only a full pool needs a scan for closed ones.
    pub fn put_back(&self, conn: Idle) {
        if conn.known_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        let oldest_too_old = idle
            .first()
            .is_some_and(|e| e.too_old(now, self.idle_timeout));
        if oldest_too_old || idle.len() >= self.max_idle {
            idle.retain(|e| !e.expired(now, self.idle_timeout));
        }
        if idle.len() < self.max_idle {
            idle.push(Entry { conn, since: now });
        }
    }

    /// The shared HTTP/2 connection, unless there is none or it closed.
    pub fn shared_h2(&self) -> Option<http2::SendRequest<UploadBody>> {
        self.h2().as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// Makes `sender` the shared HTTP/2 connection.
    pub fn share_h2(&self, sender: http2::SendRequest<UploadBody>) {
        *self.h2() = Some(sender);
    }
}

/// Closes expired idle connections every half idle timeout (at least every second), until the
/// pool is gone (its upstream replaced by a reload).
async fn sweep(pool: Weak<Pool>) {
    let every = pool.upgrade().map_or(Duration::from_secs(1), |p| {
        (p.idle_timeout / 2).max(Duration::from_secs(1))
    });
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        pool.idle().retain(|e| !e.expired(now, pool.idle_timeout));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hyper_rustls::MaybeHttpsStream;
    use hyper_util::rt::TokioIo;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    /// A listener that accepts connections and keeps their server ends until dropped.
    struct Peer {
        addr: std::net::SocketAddr,
        listener: TcpListener,
    }

    impl Peer {
        async fn new() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            Peer { addr, listener }
        }

        /// A client connection, and its server end.
        async fn connect(&self) -> (MaybeHttpsStream<TokioIo<TcpStream>>, TcpStream) {
            let client = TcpStream::connect(self.addr).await.unwrap();
            let (server, _) = self.listener.accept().await.unwrap();
            (MaybeHttpsStream::Http(TokioIo::new(client)), server)
        }

        async fn raw(&self) -> (exchange::Conn, TcpStream) {
            let (io, server) = self.connect().await;
            (exchange::Conn::new(io), server)
        }

        async fn hyper(&self) -> (http1::SendRequest<UploadBody>, TcpStream) {
            let (io, server) = self.connect().await;
            let (sender, conn) = http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            (sender, server)
        }
    }

    fn port(conn: &exchange::Conn) -> u16 {
        conn.local_addr().unwrap().port()
    }

    fn idle_count(pool: &Pool) -> usize {
        pool.idle().len()
    }

    #[tokio::test]
    async fn a_request_takes_the_newest_connection_of_its_kind() {
        let peer = Peer::new().await;
        let pool = Pool::new(8, LONG);
        let (a, _a) = peer.raw().await;
        let (h, _h) = peer.hyper().await;
        let (b, _b) = peer.raw().await;
        let (pa, pb) = (port(&a), port(&b));
        pool.put_back(Idle::Exchange(a));
        pool.put_back(Idle::Hyper(h));
        pool.put_back(Idle::Exchange(b));

        let taken = pool.take(Kind::Exchange).and_then(Idle::into_exchange);
        assert_eq!(
            taken.map(|c| port(&c)),
            Some(pb),
            "most recently used first"
        );
        assert!(pool.take(Kind::Hyper).and_then(Idle::into_hyper).is_some());
        let taken = pool.take(Kind::Exchange).and_then(Idle::into_exchange);
        assert_eq!(taken.map(|c| port(&c)), Some(pa));
        assert!(pool.take(Kind::Exchange).is_none());
        assert!(pool.take(Kind::Hyper).is_none());
    }

    #[tokio::test]
    async fn pool_max_idle_bounds_both_kinds_together() {
        let peer = Peer::new().await;
        let pool = Pool::new(2, LONG);
        let (a, _a) = peer.raw().await;
        let (h, _h) = peer.hyper().await;
        let (b, _b) = peer.raw().await;
        pool.put_back(Idle::Exchange(a));
        pool.put_back(Idle::Hyper(h));
        pool.put_back(Idle::Exchange(b));
        assert_eq!(idle_count(&pool), 2, "the third is closed, not kept");
        assert!(pool.take(Kind::Exchange).is_some());
        assert!(pool.take(Kind::Hyper).is_some());
        assert!(pool.take(Kind::Exchange).is_none());
    }

    #[tokio::test]
    async fn connections_the_upstream_closed_are_never_taken() {
        let peer = Peer::new().await;
        let pool = Pool::new(8, LONG);
        let (raw, raw_server) = peer.raw().await;
        let (h, h_server) = peer.hyper().await;
        pool.put_back(Idle::Exchange(raw));
        pool.put_back(Idle::Hyper(h));
        drop((raw_server, h_server));
        // The close reaches the client side, and hyper's connection task, within a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pool.take(Kind::Exchange).is_none(), "raw: read on taking");
        assert!(pool.take(Kind::Hyper).is_none(), "hyper: its task noticed");
        assert_eq!(idle_count(&pool), 0, "both dropped on the way");
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_dropped_by_either_kind_of_request() {
        let peer = Peer::new().await;
        let pool = Pool::new(8, Duration::from_millis(50));
        let (a, _a) = peer.raw().await;
        let (h, _h) = peer.hyper().await;
        pool.put_back(Idle::Exchange(a));
        pool.put_back(Idle::Hyper(h));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Putting one back expires the old ones of both kinds.
        let (b, _b) = peer.raw().await;
        pool.put_back(Idle::Exchange(b));
        assert_eq!(idle_count(&pool), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pool.take(Kind::Exchange).is_none(), "too old to take");
    }

    #[tokio::test]
    async fn a_full_pool_makes_room_by_dropping_connections_known_closed() {
        let peer = Peer::new().await;
        let pool = Pool::new(2, LONG);
        let (h, h_server) = peer.hyper().await;
        let (a, _a) = peer.raw().await;
        pool.put_back(Idle::Hyper(h));
        pool.put_back(Idle::Exchange(a));
        drop(h_server);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Full, but hyper's connection task has noticed its close: the new one takes its place.
        let (b, _b) = peer.raw().await;
        let pb = port(&b);
        pool.put_back(Idle::Exchange(b));
        assert_eq!(idle_count(&pool), 2);
        let taken = pool.take(Kind::Exchange).and_then(Idle::into_exchange);
        assert_eq!(taken.map(|c| port(&c)), Some(pb));
        assert!(pool.take(Kind::Hyper).is_none());
    }
}

//! The client to the one upstream origin: a pool of HTTP/1.1 connections, or one shared HTTP/2
//! connection, over TCP or TLS.
//!
//! jwtgate talks to a single origin, so the pool is a stack of idle connections rather than a
//! map keyed by origin. Requests without a body (nearly all of them) are exchanged by the
//! requesting task itself ([`exchange`]); requests with a body and upgrades go through hyper's
//! client. Either way an HTTP/1.1 connection goes back to the pool when its response body has
//! been read to the end ([`UpstreamBody`]): no task per request waits for it to become idle. A
//! request that finds its pooled connection closed (the upstream's keep-alive timeout won the
//! race) is sent again on a new connection when it was never written, or when it is idempotent
//! and not one byte of response came back; otherwise it is never replayed.

mod exchange;

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::settings::UpstreamSettings;

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Why a request did not get a response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (refused, timed out, TLS failed).
    #[error("cannot connect to the upstream: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed during the exchange.
    #[error("upstream request failed: {0}")]
    Request(#[from] hyper::Error),
    /// A bodiless exchange failed (see [`exchange`]).
    #[error(transparent)]
    Exchange(#[from] exchange::ExchangeError),
}

/// The upstream client (one per configuration).
pub struct Upstream {
    /// The settings it was made from.
    pub settings: UpstreamSettings,
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<Pool>,
}

/// Idle HTTP/1.1 connections and the shared HTTP/2 connection.
struct Pool {
    idle: Mutex<IdleSet>,
    h2: Mutex<Option<http2::SendRequest<UploadBody>>>,
    /// Most idle HTTP/1.1 connections kept, of both kinds together.
    max_idle: usize,
    idle_timeout: Duration,
}

/// Idle connections, most recently used last: those hyper drives and those [`exchange`] uses.
#[derive(Default)]
struct IdleSet {
    hyper: Vec<Idle>,
    direct: Vec<exchange::Conn>,
}

impl IdleSet {
    fn len(&self) -> usize {
        self.hyper.len() + self.direct.len()
    }

    /// Drops connections that closed or idled past `timeout`.
    fn expire(&mut self, timeout: Duration) {
        self.hyper.retain(|e| e.usable(timeout));
        self.direct.retain(|c| c.since.elapsed() < timeout);
    }
}

struct Idle {
    sender: http1::SendRequest<UploadBody>,
    since: Instant,
}

impl Idle {
    /// Still open, and idle for less than `timeout`.
    fn usable(&self, timeout: Duration) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < timeout
    }
}

impl Pool {
    fn idle(&self) -> MutexGuard<'_, IdleSet> {
        // Pushes and pops only: a panic elsewhere cannot leave the list inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn h2(&self) -> MutexGuard<'_, Option<http2::SendRequest<UploadBody>>> {
        self.h2.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that is still open and young enough.
    fn checkout(&self) -> Option<http1::SendRequest<UploadBody>> {
        let mut idle = self.idle();
        while let Some(entry) = idle.hyper.pop() {
            if entry.usable(self.idle_timeout) {
                return Some(entry.sender);
            }
        }
        None
    }

    /// The most recently used idle connection for a bodiless exchange that is still open and
    /// young enough.
    fn checkout_direct(&self) -> Option<exchange::Conn> {
        let mut idle = self.idle();
        while let Some(mut conn) = idle.direct.pop() {
            if conn.since.elapsed() < self.idle_timeout && !conn.closed_while_idle() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose last bodiless exchange ended cleanly.
    fn give_back_direct(&self, conn: exchange::Conn) {
        let mut idle = self.idle();
        idle.expire(self.idle_timeout);
        if idle.len() < self.max_idle {
            idle.direct.push(conn);
        }
    }

    /// Keeps a connection whose last response was read to the end.
    fn give_back(&self, sender: http1::SendRequest<UploadBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        idle.expire(self.idle_timeout);
        if idle.len() < self.max_idle {
            idle.hyper.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl Upstream {
    /// A client with the configured timeouts, pool, protocol and TLS. The TLS settings were
    /// checked when the config was compiled.
    pub fn new(settings: UpstreamSettings) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let tls = match &settings.tls {
            Some(tls) => crate::tls::client_config(tls)?,
            // Plain http: the TLS half of the connector is never used.
            None => rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if settings.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let pool = Arc::new(Pool {
            idle: Mutex::new(IdleSet::default()),
            h2: Mutex::new(None),
            max_idle: settings.pool_max_idle,
            idle_timeout: settings.pool_idle_timeout,
        });
        // Idle connections past their timeout are closed even when no request comes to notice.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_idle(Arc::downgrade(&pool)));
        }
        Ok(Upstream {
            settings,
            connector,
            pool,
        })
    }

    /// The HTTP version requests to this upstream use.
    pub fn version(&self) -> Version {
        if self.settings.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        }
    }

    /// The request target for `path` and `query` below the upstream's path prefix: origin-form
    /// for HTTP/1.1, absolute for HTTP/2 (its `:scheme` and `:authority`).
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut pq = String::with_capacity(
            self.settings.path_prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        pq.push_str(&self.settings.path_prefix);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::try_from(pq)?;
        if self.settings.http2 {
            let mut parts = self.settings.origin.clone().into_parts();
            parts.path_and_query = Some(pq);
            Ok(Uri::from_parts(parts)?)
        } else {
            Ok(Uri::from(pq))
        }
    }

    /// Sends `req` and waits for the response head.
    pub async fn send(
        &self,
        req: Request<UploadBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if self.settings.http2 {
            let response = self.send_h2(req).await?;
            let response = response.map(|inner| Watched::new(inner, ReturnToPool(None)));
            return Ok(response.map(UpstreamBody::Hyper));
        }
        if req.body().is_end_stream() && !req.headers().contains_key(header::UPGRADE) {
            return self.send_direct(req).await;
        }
        let req = match self.pool.checkout() {
            Some(mut sender) => match unsent(pooled_send(&mut sender, req).await)? {
                Ok(response) => return Ok(self.returning(sender, response)),
                // Never written: the connection had closed. Try once on a new one.
                Err(req) => req,
            },
            None => req,
        };
        let mut sender = self.connect_h1().await?;
        sender.ready().await?;
        let response = sender.send_request(req).await?;
        Ok(self.returning(sender, response))
    }

    /// Sends a bodiless request on a pooled connection of the direct kind, or a new one.
    async fn send_direct(
        &self,
        req: Request<UploadBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (parts, _empty) = req.into_parts();
        let head = crate::http1::encode_request_head(&parts, self.authority());
        let head_request = parts.method == Method::HEAD;
        if let Some(conn) = self.pool.checkout_direct() {
            match exchange::exchange(conn, &head, head_request, &self.pool).await {
                Ok(response) => return Ok(response.map(UpstreamBody::Direct)),
                // The upstream had closed it: try once on a new one, if that is safe.
                Err(failed) if failed.stale && parts.method.is_idempotent() => {
                    tracing::debug!(error = %failed.error, "pooled connection was closed; retrying");
                }
                Err(failed) => return Err(failed.error.into()),
            }
        }
        let conn = exchange::Conn::new(self.connect().await?);
        match exchange::exchange(conn, &head, head_request, &self.pool).await {
            Ok(response) => Ok(response.map(UpstreamBody::Direct)),
            Err(failed) => Err(failed.error.into()),
        }
    }

    /// `host[:port]` of the upstream, the `Host` of requests that came without one.
    fn authority(&self) -> &str {
        self.settings.origin.authority().map_or("", |a| a.as_str())
    }

    /// Arranges for `sender` to rejoin the pool once `response`'s body has been read.
    fn returning(
        &self,
        sender: http1::SendRequest<UploadBody>,
        mut response: Response<Incoming>,
    ) -> Response<UpstreamBody> {
        // hyper framed the body by Transfer-Encoding but leaves a Content-Length beside it in
        // the headers: removed here as the exchange does (RFC 9112 §6.3), before hop-by-hop
        // stripping takes Transfer-Encoding away, and the connection is not trusted again.
        let conflicted = crate::http1::drop_length_beside_encoding(response.headers_mut());
        // A 101 hands the connection over to the upgraded protocol: it never comes back.
        let keep = (response.status() != http::StatusCode::SWITCHING_PROTOCOLS && !conflicted)
            .then(|| (sender, Arc::clone(&self.pool)));
        response.map(|inner| UpstreamBody::Hyper(Watched::new(inner, ReturnToPool(keep))))
    }

    async fn send_h2(&self, req: Request<UploadBody>) -> Result<Response<Incoming>, SendError> {
        let shared = self.pool.h2().as_ref().filter(|s| !s.is_closed()).cloned();
        let req = match shared {
            Some(mut sender) => {
                // Err means closed, which try_send_request reports with the request.
                let _ = sender.ready().await;
                match unsent(sender.try_send_request(req).await)? {
                    Ok(response) => return Ok(response),
                    // Closed (GOAWAY) before the request went out: a new connection.
                    Err(req) => req,
                }
            }
            None => req,
        };
        let mut sender = self.connect_h2().await?;
        *self.pool.h2() = Some(sender.clone());
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }

    async fn connect(&self) -> Result<Io, SendError> {
        use tower_service::Service as _;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        connector
            .call(self.settings.origin.clone())
            .await
            .map_err(SendError::Connect)
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<UploadBody>, SendError> {
        let io = self.connect().await?;
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(sender)
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<UploadBody>, SendError> {
        let io = self.connect().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

/// Closes expired idle connections every half idle timeout (at least every second), until the
/// pool is gone (replaced by a reload).
async fn sweep_idle(pool: std::sync::Weak<Pool>) {
    let every = pool.upgrade().map_or(Duration::from_secs(1), |p| {
        (p.idle_timeout / 2).max(Duration::from_secs(1))
    });
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.idle().expire(pool.idle_timeout);
    }
}

/// Sends on a pooled connection, which may still be finishing its previous exchange. If it
/// closed meanwhile, the error gives the unsent request back.
async fn pooled_send(
    sender: &mut http1::SendRequest<UploadBody>,
    req: Request<UploadBody>,
) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<UploadBody>>> {
    // Err means closed, which try_send_request reports with the request.
    let _ = sender.ready().await;
    sender.try_send_request(req).await
}

/// The response, or the request back when its connection closed before sending it.
type Unsent = Result<Response<Incoming>, Request<UploadBody>>;

/// Sorts a `try_send_request` result: an error that returned the request is [`Unsent`].
fn unsent(
    sent: Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<UploadBody>>>,
) -> Result<Unsent, SendError> {
    match sent {
        Ok(response) => Ok(Ok(response)),
        Err(mut e) => match e.take_message() {
            Some(req) => Ok(Err(req)),
            None => Err(e.into_error().into()),
        },
    }
}

/// A body that tells its [`EndHook`] how it ended.
pub struct Watched<B: Body, H: EndHook> {
    inner: B,
    hook: H,
}

/// How a [`Watched`] body ended. A hook may hear more than once (e.g. complete, then dropped).
pub trait EndHook {
    /// `complete`: read to the end; otherwise it failed or was dropped early.
    fn ended(&mut self, complete: bool);

    /// The body itself yielded an error (rather than being dropped early).
    fn failed(&mut self) {
        self.ended(false);
    }
}

impl<B: Body, H: EndHook> Watched<B, H> {
    fn new(inner: B, mut hook: H) -> Self {
        if inner.is_end_stream() {
            hook.ended(true);
        }
        Watched { inner, hook }
    }
}

impl<B: Body<Data = Bytes> + Unpin, H: EndHook + Unpin> Body for Watched<B, H> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.hook.ended(true),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.hook.ended(true),
            Poll::Ready(Some(Err(_))) => self.hook.failed(),
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body, H: EndHook> Drop for Watched<B, H> {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.hook.ended(complete);
    }
}

/// The upstream's response body: from hyper's client, or read by a bodiless exchange.
pub enum UpstreamBody {
    /// From hyper's client (HTTP/2, and HTTP/1.1 requests with a body).
    Hyper(Watched<Incoming, ReturnToPool>),
    /// From a bodiless HTTP/1.1 exchange.
    Direct(exchange::ResponseBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Direct(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(body) => body.is_end_stream(),
            UpstreamBody::Direct(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(body) => body.size_hint(),
            UpstreamBody::Direct(body) => body.size_hint(),
        }
    }
}

/// An HTTP/1.1 connection rejoins the pool when its response body has been read to the end;
/// one whose body failed or was dropped early closes (its state is unknown).
pub struct ReturnToPool(Option<(http1::SendRequest<UploadBody>, Arc<Pool>)>);

impl EndHook for ReturnToPool {
    fn ended(&mut self, complete: bool) {
        if let Some((sender, pool)) = self.0.take() {
            if complete {
                pool.give_back(sender);
            }
        }
    }
}

/// The client's request body on its way upstream.
pub type UploadBody = Watched<ClientBody, UploadDone>;

/// How the upload of a client's request body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadEnd {
    /// Sent completely, or dropped by the upstream client (which then reports why).
    Done,
    /// The client's body itself failed (bad chunked syntax, cut short, longer or shorter than
    /// its declared length): the request is the client's fault, whatever error the upstream
    /// client reports for it.
    BodyFailed,
}

/// Reports when the request body has been sent completely (or failed), which starts the
/// response timeout, and whether the client's body was at fault.
pub struct UploadDone(Option<oneshot::Sender<UploadEnd>>);

impl UploadDone {
    fn report(&mut self, end: UploadEnd) {
        if let Some(sent) = self.0.take() {
            let _ = sent.send(end);
        }
    }
}

impl EndHook for UploadDone {
    fn ended(&mut self, _complete: bool) {
        self.report(UploadEnd::Done);
    }

    fn failed(&mut self) {
        self.report(UploadEnd::BodyFailed);
    }
}

/// Wraps a client's request body; `sent` (if any) hears once it has been sent, failed or been
/// dropped.
pub fn upload_body(inner: ClientBody, sent: Option<oneshot::Sender<UploadEnd>>) -> UploadBody {
    Watched::new(inner, UploadDone(sent))
}

/// A client's request body: none (a request the HTTP/1.1 fast path served), or hyper's stream.
#[derive(Debug)]
pub enum ClientBody {
    /// The request has no body.
    Empty,
    /// The body as hyper's server receives it.
    Streaming(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    /// The body's data. Request trailers (which hyper yields for chunked HTTP/1.1 and for
    /// HTTP/2) are dropped, never forwarded: they arrive after every header rule has run, so a
    /// trailer field `x-user-sub: evil` would reach the upstream next to jwtgate's own identity
    /// header, unstripped. Nothing legitimate is lost: gRPC requests never carry trailers.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Streaming(body) => loop {
                match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                    Some(Ok(frame)) if frame.is_trailers() => continue,
                    polled => return Poll::Ready(polled),
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Streaming(body) => body.size_hint(),
        }
    }
}

//! The client to one upstream: pooled HTTP/1.1 connections or a shared HTTP/2 one.
//!
//! An [`Upstream`] is one origin (or, with `urls`, several addresses of one service taking
//! turns, each skipped for a while after a failed connect), over TCP or TLS, with its own
//! [`pool`] per address: a list of idle connections rather than a map keyed by origin. Requests without a body (nearly all of them) are
//! exchanged by the requesting task itself ([`exchange`]); requests with a body and upgrades go
//! through hyper's client. Either way an HTTP/1.1 connection goes back to the pool when its
//! response body has been read to the end ([`UpstreamBody`]): no task per request waits for it to
//! become idle. A request that finds its pooled connection closed (the upstream's keep-alive
//! timeout won the race) is sent again on a new connection when it was never written, or when it is
//! idempotent and not one byte of response came back; otherwise it is never replayed ([`retry`]
//! decides, for all three ways of sending).

mod exchange;
mod pool;
mod retry;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::server::ClientBody;
use crate::settings::UpstreamSettings;
use pool::{Idle, Kind, Pool};
use retry::{Failure, Retry};

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

/// How long an address whose connect failed is skipped: this after the first failure in a
/// row, doubling with each further one up to [`EJECT_MAX`].
pub const EJECT_BASE: Duration = Duration::from_secs(1);
/// The longest an address is skipped, however often its connects failed.
pub const EJECT_MAX: Duration = Duration::from_secs(30);
/// Most addresses one request tries to connect to (the chosen one, then others not skipped):
/// nothing has been sent before a connection exists, so trying another address is safe, and
/// the bound keeps a request from waiting out many connect timeouts.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// One address of an upstream: its own pool, and whether it is being skipped.
struct Backend {
    origin: Uri,
    pool: Arc<Pool>,
    /// Connect failures in a row (0: healthy).
    failures: AtomicU32,
    /// Skipped until this many milliseconds after [`Upstream::born`].
    ejected_until_ms: AtomicU64,
}

impl Backend {
    fn ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// A connect failed: skip it for [`EJECT_BASE`], doubled per failure in a row, at most
    /// [`EJECT_MAX`].
    fn eject(&self, now_ms: u64) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed);
        let period = EJECT_BASE
            .saturating_mul(1u32 << failures.min(16))
            .min(EJECT_MAX);
        let until = now_ms.saturating_add(u64::try_from(period.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until_ms.store(until, Ordering::Relaxed);
    }

    /// A connect succeeded: healthy again (written only when it was not, to keep the line
    /// shared between threads clean).
    fn connected(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

/// The client to one upstream: one origin, or several taking turns (`urls`), each with its own
/// pool (one per configuration).
pub struct Upstream {
    /// The settings it was made from.
    pub settings: UpstreamSettings,
    connector: HttpsConnector<HttpConnector>,
    /// One per address, in the configured order; never empty.
    backends: Vec<Backend>,
    /// The turn of the next request among `backends`.
    next: AtomicUsize,
    /// The origin of the ejection clock.
    born: Instant,
    /// A digest of the TLS files' contents when the client was made: a reload keeps this
    /// client only while they are unchanged (a rotated client certificate keeps its path).
    tls_files: Option<Vec<u8>>,
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
        let origins = if settings.origins.is_empty() {
            std::slice::from_ref(&settings.origin)
        } else {
            settings.origins.as_slice()
        };
        let backends = origins
            .iter()
            .map(|origin| Backend {
                origin: origin.clone(),
                pool: Pool::new(settings.pool_max_idle, settings.pool_idle_timeout),
                failures: AtomicU32::new(0),
                ejected_until_ms: AtomicU64::new(0),
            })
            .collect();
        let tls_files = settings.tls.as_ref().and_then(tls_files_digest);
        Ok(Upstream {
            settings,
            connector,
            backends,
            next: AtomicUsize::new(0),
            born: Instant::now(),
            tls_files,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The address whose turn it is, skipping those ejected; when every one is, the one whose
    /// turn it is anyway (a single address is always tried: it may be back).
    fn pick(&self) -> Result<&Backend, SendError> {
        if let [only] = self.backends.as_slice() {
            return Ok(only);
        }
        let count = self.backends.len();
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % count.max(1);
        let now = self.now_ms();
        let mut ring = self.backends.iter().cycle().skip(turn).take(count);
        let first = ring
            .clone()
            .next()
            .ok_or_else(|| SendError::Connect("the upstream has no address".into()))?;
        Ok(ring.find(|b| !b.ejected(now)).unwrap_or(first))
    }

    /// Whether the TLS files this client was made from still hold what they held then.
    pub fn same_tls_files(&self) -> bool {
        match &self.settings.tls {
            None => true,
            Some(tls) => self.tls_files.is_some() && tls_files_digest(tls) == self.tls_files,
        }
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
        self.send_h1(req).await
    }

    /// Sends a bodiless request on a pooled raw connection, or a new one.
    async fn send_direct(
        &self,
        req: Request<UploadBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (parts, _empty) = req.into_parts();
        let head = crate::http1::encode_request_head(&parts, self.authority());
        let head_request = parts.method == Method::HEAD;
        let idempotent = parts.method.is_idempotent();
        let mut backend = self.pick()?;
        let mut pooled = backend
            .pool
            .take(Kind::Exchange)
            .and_then(Idle::into_exchange);
        loop {
            let reused = pooled.is_some();
            let conn = match pooled.take() {
                Some(conn) => conn,
                None => {
                    let (io, connected) = self.connect(backend).await?;
                    backend = connected;
                    exchange::Conn::new(io)
                }
            };
            let failed = match exchange::exchange(conn, &head, head_request, &backend.pool).await {
                Ok(response) => return Ok(response.map(UpstreamBody::Direct)),
                Err(failed) => failed,
            };
            match retry::decide(idempotent, reused, failed.failure) {
                Retry::NewConnection => {
                    tracing::debug!(error = %failed.error, "pooled connection was closed; retrying");
                }
                Retry::Fail => return Err(failed.error.into()),
            }
        }
    }

    /// Sends a request with a body, or an upgrade, on a pooled connection of hyper's, or a new
    /// one.
    async fn send_h1(
        &self,
        mut req: Request<UploadBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let idempotent = req.method().is_idempotent();
        let mut backend = self.pick()?;
        let mut pooled = backend.pool.take(Kind::Hyper).and_then(Idle::into_hyper);
        loop {
            let reused = pooled.is_some();
            let mut sender = match pooled.take() {
                Some(sender) => sender,
                None => {
                    let (sender, connected) = self.connect_h1(backend).await?;
                    backend = connected;
                    sender
                }
            };
            // A pooled connection may still be finishing its previous exchange. Err means
            // closed, which try_send_request reports with the request.
            let _ = sender.ready().await;
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(returning(&backend.pool, sender, response)),
                Err(e) => {
                    req = HyperFailed::new(e, Failure::Unwritten).retry(idempotent, reused)?
                }
            }
        }
    }

    /// `host[:port]` of the upstream, the `Host` of requests that came without one.
    fn authority(&self) -> &str {
        self.settings.origin.authority().map_or("", |a| a.as_str())
    }

    /// Sends on the shared HTTP/2 connection, or a new one that becomes the shared one.
    async fn send_h2(&self, mut req: Request<UploadBody>) -> Result<Response<Incoming>, SendError> {
        let idempotent = req.method().is_idempotent();
        let mut backend = self.pick()?;
        let mut shared = backend.pool.shared_h2();
        loop {
            let reused = shared.is_some();
            let mut sender = match shared.take() {
                Some(sender) => sender,
                None => {
                    let (sender, connected) = self.connect_h2(backend).await?;
                    backend = connected;
                    backend.pool.share_h2(sender.clone());
                    sender
                }
            };
            // Err means closed, which try_send_request reports with the request.
            let _ = sender.ready().await;
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(response),
                Err(e) => req = HyperFailed::new(e, Failure::Refused).retry(idempotent, reused)?,
            }
        }
    }

    /// Connects to `first`, or, when that fails, to the next addresses not being skipped (at
    /// most [`MAX_CONNECT_ATTEMPTS`] in all); which one answered. A failed address is ejected.
    async fn connect<'a>(&'a self, first: &'a Backend) -> Result<(Io, &'a Backend), SendError> {
        let now = self.now_ms();
        let at = self
            .backends
            .iter()
            .position(|b| std::ptr::eq(b, first))
            .unwrap_or(0);
        let others = self
            .backends
            .iter()
            .cycle()
            .skip(at + 1)
            .take(self.backends.len().saturating_sub(1))
            .filter(|b| !b.ejected(now));
        let mut failure = None;
        for backend in std::iter::once(first)
            .chain(others)
            .take(MAX_CONNECT_ATTEMPTS)
        {
            match self.connect_to(backend).await {
                Ok(io) => {
                    backend.connected();
                    return Ok((io, backend));
                }
                Err(e) => {
                    backend.eject(self.now_ms());
                    if self.backends.len() > 1 {
                        tracing::warn!(upstream = &*self.settings.name, address = %backend.origin, error = %e, "upstream address skipped for a while");
                    }
                    failure = Some(e);
                }
            }
        }
        Err(failure.unwrap_or_else(|| SendError::Connect("no address to connect to".into())))
    }

    async fn connect_to(&self, backend: &Backend) -> Result<Io, SendError> {
        use tower_service::Service as _;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        connector
            .call(backend.origin.clone())
            .await
            .map_err(SendError::Connect)
    }

    async fn connect_h1<'a>(
        &'a self,
        first: &'a Backend,
    ) -> Result<(http1::SendRequest<UploadBody>, &'a Backend), SendError> {
        let (io, backend) = self.connect(first).await?;
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok((sender, backend))
    }

    async fn connect_h2<'a>(
        &'a self,
        first: &'a Backend,
    ) -> Result<(http2::SendRequest<UploadBody>, &'a Backend), SendError> {
        let (io, backend) = self.connect(first).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok((sender, backend))
    }
}

/// Arranges for `sender` to rejoin `pool` once `response`'s body has been read.
fn returning(
    pool: &Arc<Pool>,
    sender: http1::SendRequest<UploadBody>,
    mut response: Response<Incoming>,
) -> Response<UpstreamBody> {
    // hyper framed the body by Transfer-Encoding but leaves a Content-Length beside it in
    // the headers: removed here as the exchange does (RFC 9112 §6.3), before hop-by-hop
    // stripping takes Transfer-Encoding away, and the connection is not trusted again.
    let conflicted = crate::http1::drop_length_beside_encoding(response.headers_mut());
    // A 101 hands the connection over to the upgraded protocol: it never comes back.
    let keep = (response.status() != http::StatusCode::SWITCHING_PROTOCOLS && !conflicted)
        .then(|| (sender, Arc::clone(pool)));
    response.map(|inner| UpstreamBody::Hyper(Watched::new(inner, ReturnToPool(keep))))
}

/// SHA-256 over the contents of the CA bundle and the client certificate and key; `None` when
/// one cannot be read (then no client is ever kept across a reload).
fn tls_files_digest(tls: &crate::tls::UpstreamTls) -> Option<Vec<u8>> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let files = tls
        .ca_file
        .iter()
        .chain(tls.client_cert.iter().flat_map(|(c, k)| [c, k]));
    for file in files {
        let bytes = std::fs::read(file).ok()?;
        // Length first, so that moving bytes from one file to the next changes the digest.
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(&bytes);
    }
    Some(ctx.finish().as_ref().to_vec())
}

/// A request hyper's client could not complete: what failed, why, and the request itself if the
/// connection handed it back unsent.
struct HyperFailed {
    failure: Failure,
    error: hyper::Error,
    request: Option<Request<UploadBody>>,
}

impl HyperFailed {
    /// A `try_send_request` error, sorted: `unwritten` (how this connection kind names a request
    /// it never sent) when the request came back, [`Failure::Partial`] otherwise.
    fn new(mut e: TrySendError<Request<UploadBody>>, unwritten: Failure) -> Self {
        let request = e.take_message();
        HyperFailed {
            failure: if request.is_some() {
                unwritten
            } else {
                Failure::Partial
            },
            error: e.into_error(),
            request,
        }
    }

    /// The request to send again on a new connection, or the error to report.
    fn retry(self, idempotent: bool, reused: bool) -> Result<Request<UploadBody>, SendError> {
        match (
            retry::decide(idempotent, reused, self.failure),
            self.request,
        ) {
            (Retry::NewConnection, Some(request)) => {
                tracing::debug!(error = %self.error, "pooled connection was closed; retrying");
                Ok(request)
            }
            _ => Err(self.error.into()),
        }
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
                pool.put_back(Idle::Hyper(sender));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn upstream(addresses: &[&str]) -> Upstream {
        let origins: Vec<Uri> = addresses.iter().map(|a| a.parse().unwrap()).collect();
        Upstream::new(UpstreamSettings {
            name: Arc::from("svc"),
            origin: origins[0].clone(),
            origins,
            path_prefix: String::new(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(1),
            pool_max_idle: 1,
            http2: false,
            tls: None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_failed_address_is_skipped_for_a_growing_bounded_time() {
        let up = upstream(&["http://127.0.0.1:1/"]);
        let b = &up.backends[0];
        let mut periods = Vec::new();
        for _ in 0..8 {
            b.eject(1000);
            periods.push(b.ejected_until_ms.load(Ordering::Relaxed) - 1000);
        }
        assert_eq!(
            periods,
            [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert!(b.ejected(1000 + 29_999) && !b.ejected(1000 + 30_000));
        b.connected();
        assert!(!b.ejected(1000));
        b.eject(1000);
        assert_eq!(
            b.ejected_until_ms.load(Ordering::Relaxed),
            2000,
            "back to the base"
        );
    }

    #[tokio::test]
    async fn addresses_take_turns_and_ejected_ones_are_skipped_unless_all_are() {
        let up = upstream(&["http://a:1/", "http://b:1/", "http://c:1/"]);
        let picked = |n: usize| -> Vec<String> {
            (0..n)
                .map(|_| up.pick().unwrap().origin.to_string())
                .collect()
        };
        assert_eq!(
            picked(4),
            ["http://a:1/", "http://b:1/", "http://c:1/", "http://a:1/"]
        );
        up.backends[1].eject(up.now_ms());
        let now = picked(6);
        assert!(!now.contains(&"http://b:1/".to_owned()), "{now:?}");
        assert_eq!(now.len(), 6);
        for b in &up.backends {
            b.eject(up.now_ms());
        }
        assert_eq!(
            picked(3).len(),
            3,
            "every address ejected: still one to try"
        );
    }
}

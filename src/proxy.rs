//! The request pipeline as named phases over one per-request context (`Ctx`): target,
//! own paths, route, authenticate, authorise, policy, authorizer, AWS credentials, rewrite
//! request, sign, forward, rewrite response, record. Bodies stream both ways; only a signed AWS
//! payload is read whole (to be hashed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::authz::{Denial, ForbiddenReason};
use crate::cors;
use crate::error::{Reject, UpstreamError};
use crate::headers::{self, REQUEST_ID};
use crate::login::{Gate, Identity, Login};
use crate::metrics::{Decision, SigningFailure, UpstreamResult};
use crate::routes::{self, Captures, Match, PathError};
use crate::server::ClientBody;
use crate::settings::{AuthMode, Route};
use crate::token::{self, unix_now};
use crate::upstream::{SendError, UploadEnd, Upstream, UpstreamBody, upload_body};
use crate::{Shared, Snapshot};

/// A response body: the upstream's stream, or jwtgate's own fixed answer.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Route label for requests that matched no route.
const UNMATCHED: &str = "_unmatched";
/// Route label of jwtgate's own sign-in paths (callback, sign-out).
const LOGIN_ROUTE: &str = "_login";
/// The unmatched label, allocated once (every request starts with it).
static UNMATCHED_ROUTE: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from(UNMATCHED));

/// What the server knows about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer address.
    pub peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The peer's IP as header text, for `X-Forwarded-For` (made once per connection).
    pub peer_value: HeaderValue,
}

impl ConnInfo {
    /// The connection from `peer`, over `proto`.
    pub fn new(peer: SocketAddr, proto: &'static str) -> Self {
        ConnInfo {
            peer,
            proto,
            peer_value: headers::peer_value(peer.ip()),
        }
    }
}

/// One request on its way through the phases: what every phase may read, and what the record
/// phase reports. The phases, in order (each one function below):
///
/// `target` (host, normalised path) → `own_paths` (sign-in, forward-auth, CORS preflights) →
/// `route` → `authenticate` → `authorise` → `check_policy` → `call_authorizer` →
/// `aws_credentials` → `rewrite_request` → `sign_request` → `forward` →
/// `rewrite_response` → `record` (metrics, access log, span: the only place that records).
struct Ctx<'a> {
    shared: &'a Shared,
    snapshot: &'a Snapshot,
    conn: &'a ConnInfo,
    request_id: HeaderValue,
    /// The route label (`_unmatched` until a route or jwtgate's own path claims the request).
    route: Arc<str>,
    /// Why the request was refused (empty when it was not).
    reason: &'static str,
    upstream_seconds: Option<f64>,
    /// The upstream the request was sent to (its configured name) and how that ended; `None`
    /// when no upstream was contacted.
    upstream: Option<(&'a Arc<str>, UpstreamResult)>,
    /// jwtgate answered a CORS preflight itself.
    preflight: bool,
    /// This request's place in its trace.
    trace: crate::trace::TraceContext,
    /// Headers the route's external authorizer grants the upstream (its context headers).
    authorizer_headers: Vec<(http::HeaderName, HeaderValue)>,
}

/// Serves one request end to end; never fails (errors become responses).
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<ClientBody>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let _in_flight = shared.metrics.in_flight();
    let snapshot = shared.snapshot.load_full();
    let method = req.method().clone();
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut ctx = Ctx {
        shared: &shared,
        snapshot: &snapshot,
        conn: &conn,
        request_id: headers::request_id(req.headers()),
        route: Arc::clone(&UNMATCHED_ROUTE),
        reason: "",
        upstream_seconds: None,
        upstream: None,
        preflight: false,
        trace: crate::trace::TraceContext::from_headers(
            req.headers(),
            &snapshot.config.tracing.sampler,
        ),
        authorizer_headers: Vec::new(),
    };
    let span_facts = crate::trace::RequestFacts::capture(
        snapshot.config.tracing.export.is_some(),
        &ctx.trace,
        &req,
    );
    let origin = req.headers().get(header::ORIGIN).cloned();

    let span = tracing::info_span!("request", request_id = ctx.request_id.to_str().unwrap_or_default(), method = %method);
    let result = pipeline(&mut ctx, req).instrument(span).await;

    let (mut response, decision) = match result {
        Ok(response) => (response, Decision::Allow),
        Err(reject) => {
            let reason = reject.reason();
            ctx.reason = reason.as_str();
            if reject.is_auth_failure() {
                shared.metrics.auth_failure(&ctx.route, reason);
            } else {
                shared.metrics.rejection(&ctx.route, reason);
            }
            let decision = if reject.status().is_server_error() {
                Decision::Error
            } else {
                Decision::Deny
            };
            (reject.render(grpc).map(Either::Right), decision)
        }
    };
    response
        .headers_mut()
        .insert(REQUEST_ID, ctx.request_id.clone());
    if let (Some(cors), false) = (&snapshot.config.cors, ctx.preflight) {
        cors.decorate(origin.as_ref(), response.headers_mut());
    }
    record(ctx, &method, decision, &response, started, span_facts);
    response
}

/// The record phase: metrics, the access-log line and the exported span, for every request.
fn record(
    ctx: Ctx<'_>,
    method: &Method,
    decision: Decision,
    response: &Response<ProxyBody>,
    started: Instant,
    span_facts: Option<crate::trace::RequestFacts>,
) {
    let metrics = &ctx.shared.metrics;
    let elapsed = started.elapsed().as_secs_f64();
    metrics.request(&ctx.route, method, decision, response.status(), elapsed);
    if let (Some(seconds), Some((upstream, result))) = (ctx.upstream_seconds, ctx.upstream) {
        metrics.upstream(&ctx.route, upstream, result, seconds);
    }
    tracing::info!(
        target: "jwtgate::access",
        request_id = ctx.request_id.to_str().unwrap_or_default(),
        peer = %ctx.conn.peer.ip(),
        method = %method,
        route = &*ctx.route,
        decision = decision.as_str(),
        reason = ctx.reason,
        status = response.status().as_u16(),
        latency_ms = elapsed * 1000.0,
        upstream_ms = ctx.upstream_seconds.map(|s| s * 1000.0),
        upstream = ctx.upstream.map(|(name, _)| &**name),
    );
    // Only a sampled request with export configured has facts: nothing to do otherwise.
    #[cfg(feature = "otlp")]
    if let (Some(request), Some(exporter)) = (span_facts, &*ctx.shared.exporter.load()) {
        let snapshot = ctx.snapshot;
        let route_pattern = snapshot
            .config
            .routes
            .iter()
            .find(|(_, _, r)| Arc::ptr_eq(&r.name, &ctx.route))
            .map(|(pattern, _, _)| Box::from(pattern.as_str()));
        exporter.export(crate::trace::SpanRecord {
            context: ctx.trace,
            end: request.end(),
            request,
            method: method.clone(),
            status: response.status().as_u16(),
            route: ctx.route,
            route_pattern,
            upstream: ctx.upstream.map(|(name, _)| Arc::clone(name)),
            decision: decision.as_str(),
            reason: ctx.reason,
            scheme: ctx.conn.proto,
            peer: ctx.conn.peer,
            peer_trusted: snapshot.config.headers.is_trusted(ctx.conn.peer.ip()),
            request_id: ctx.request_id,
        });
    }
    #[cfg(not(feature = "otlp"))]
    let _ = span_facts;
}

/// Who the request is, once authenticated, and the rules its claims are judged by.
enum Caller {
    Anonymous,
    Token(Arc<token::VerifiedToken>, Arc<token::IssuerPolicy>),
    /// A browser session, with the provider that signed it in (the route's).
    Session(Box<Identity>, Arc<Login>),
}

/// The outcome of authentication: a caller (with cookies to send), or an answer of its own (a
/// redirect to sign in).
enum Decided {
    Caller(Caller, Vec<HeaderValue>),
    /// Boxed: it is rare, and a response is large.
    Respond(Box<Response<ProxyBody>>),
}

/// What a request names, read once: the host (RFC 9112 §3.2), the normalised path, the query.
struct Target<'a> {
    host: Option<HeaderValue>,
    path: String,
    query: Option<&'a str>,
}

/// How the request is routed, once jwtgate's own paths have passed it on.
struct Routing {
    /// The method routes are matched with: a forwarded preflight's requested method.
    method: Method,
    /// A CORS preflight the route handles itself: forwarded without authentication.
    preflight_forward: bool,
}

/// Runs the phases in order; any of them may end the request with an answer or a refusal.
async fn pipeline(
    ctx: &mut Ctx<'_>,
    req: Request<ClientBody>,
) -> Result<Response<ProxyBody>, Reject> {
    // Split so the URI can be read while the headers are rewritten.
    let (mut parts, body) = req.into_parts();
    let uri = parts.uri.clone();
    let target = target(ctx, &parts, &uri)?;
    let base = || {
        ctx.snapshot.config.headers.external_base(
            &parts.headers,
            target.host.as_ref(),
            ctx.conn.peer.ip(),
            ctx.conn.proto,
        )
    };
    let routing = match own_paths(ctx, &parts, &target, &base).await? {
        Own::Answer(answer) => return Ok(*answer),
        Own::Route(routing) => routing,
    };
    let Match { route, captures } = route(ctx, &routing.method, &target.path)?;
    let (caller, set_cookies) = if routing.preflight_forward {
        (Caller::Anonymous, Vec::new())
    } else {
        let request = Asking {
            headers: &parts.headers,
            method: &parts.method,
            path: &target.path,
            query: target.query,
            base: &base,
        };
        match authenticate(ctx, route, &request).await? {
            Decided::Respond(response) => return Ok(*response),
            Decided::Caller(caller, cookies) => (caller, cookies),
        }
    };
    authorise(route, &caller, &captures)?;
    check_policy(ctx, route, &caller, &captures, &parts.method, target.query)?;
    let asking = Authorizing {
        method: &parts.method,
        raw_path: uri.path(),
        path: &target.path,
        query: target.query,
    };
    call_authorizer(ctx, route, &caller, &captures, &parts, &asking).await?;
    // An index compile checked: never out of range (a 502 rather than a panic if it were).
    let upstream = ctx
        .snapshot
        .upstreams
        .get(route.upstream)
        .ok_or(Reject::Upstream(UpstreamError::Unreachable))?;
    let signing = match route.aws_sigv4.as_deref() {
        Some(signing) => Some((
            signing,
            aws_credentials(ctx, signing, upstream, &caller, &parts.headers).await?,
        )),
        None => None,
    };
    let upgrade = rewrite_request(
        ctx,
        route,
        &captures,
        upstream,
        &caller,
        &mut parts,
        &target,
        signing.is_some(),
    )?;
    let body = match &signing {
        Some((signing, credentials)) => {
            sign_request(ctx, signing, upstream, credentials, &mut parts, body).await?
        }
        None => body,
    };
    let response = forward(ctx, upstream, Request::from_parts(parts, body), upgrade).await?;
    if signing.is_some() && response.status() == StatusCode::FORBIDDEN {
        check_clock(ctx, upstream, response.headers());
    }
    Ok(rewrite_response(response, set_cookies))
}

/// AWS-credentials phase (routes with `aws_sigv4`): the caller's credentials from the route's
/// source (cached per user and role). The user's token is the verified bearer token, or the
/// session's ID token on a login route; a caller without one is a guest, which only an
/// identity pool with `guests = true` and the gateway's own credentials serve.
async fn aws_credentials(
    ctx: &Ctx<'_>,
    signing: &crate::aws::Signing,
    upstream: &Upstream,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<Arc<crate::aws::Credentials>, Reject> {
    let result = async {
        // Compile checked the name: a 500 rather than a panic if it were not there.
        let source = ctx
            .snapshot
            .credentials
            .get(&signing.credentials)
            .ok_or_else(|| {
                Reject::AwsCredentials(crate::aws::AwsError::NotConfigured(
                    "no such credential source".into(),
                ))
            })?;
        let principal = principal(caller, headers, &source.settings().kind)?;
        source
            .credentials(&principal)
            .await
            .map_err(Reject::AwsCredentials)
    }
    .await;
    if result.is_err() {
        ctx.shared
            .metrics
            .aws_signing_failure(&upstream.settings.name, SigningFailure::Credentials);
    }
    result
}

/// Whom credentials are asked for: the verified bearer token's user, a session's user by its
/// ID token, or a guest (only where the source serves guests; otherwise the caller must
/// authenticate: 401).
fn principal<'c>(
    caller: &'c Caller,
    headers: &'c HeaderMap,
    source: &crate::aws::SourceKind,
) -> Result<crate::aws::Principal<'c>, Reject> {
    use crate::aws::{AwsError, Principal, SourceKind, UserToken};
    let no_subject = || {
        Reject::AwsCredentials(AwsError::Forbidden {
            service: "jwtgate",
            code: "NoSubject".into(),
            message: "the token has no sub or exp to key credentials by".into(),
        })
    };
    match caller {
        Caller::Anonymous => match source {
            SourceKind::Gateway(_) => Ok(Principal::Guest),
            SourceKind::IdentityPool(p) if p.guests => Ok(Principal::Guest),
            _ => Err(Reject::MissingToken),
        },
        Caller::Token(token, _) => {
            // The header authentication read: it is there and well-formed.
            let raw = token::bearer(headers)
                .ok()
                .flatten()
                .ok_or(Reject::MissingToken)?;
            UserToken::from_claims(raw, &token.claims)
                .map(Principal::User)
                .ok_or_else(no_subject)
        }
        Caller::Session(identity, _) => {
            let id_token = identity.session.id_token.as_deref().ok_or_else(|| {
                Reject::AwsCredentials(AwsError::TokenRefused {
                    service: "jwtgate",
                    code: "NoIdToken".into(),
                    message: "the session holds no ID token: sign in again".into(),
                })
            })?;
            UserToken::from_claims(id_token, &identity.claims)
                .map(Principal::User)
                .ok_or_else(no_subject)
        }
    }
}

/// Signing phase (routes with `aws_sigv4`), once every header is final: the body read whole
/// and hashed for a `signed` payload (413 beyond `max_body`), then AWS's signature in place of
/// whatever the client sent to speak for itself.
async fn sign_request(
    ctx: &Ctx<'_>,
    signing: &crate::aws::Signing,
    upstream: &Upstream,
    credentials: &crate::aws::Credentials,
    parts: &mut http::request::Parts,
    body: ClientBody,
) -> Result<ClientBody, Reject> {
    use crate::aws::{Payload, PayloadMode};
    let name = &upstream.settings.name;
    let (body, hash) = match signing.payload {
        PayloadMode::Unsigned => (body, None),
        PayloadMode::Signed => {
            let (bytes, budget) = read_body(
                body,
                signing.max_body,
                &parts.headers,
                upstream,
                &ctx.shared.body_budget,
            )
            .await?;
            let hash = hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes).as_ref());
            // The body now has a known length: sent (and signed) as Content-Length.
            parts.headers.remove(header::TRANSFER_ENCODING);
            let body = if bytes.is_empty() && !parts.headers.contains_key(header::CONTENT_LENGTH) {
                ClientBody::Empty
            } else {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                ClientBody::Buffered(Some(bytes), budget)
            };
            (body, Some(hash))
        }
    };
    let payload = match &hash {
        Some(hash) => Payload::Sha256(hash),
        None => Payload::Unsigned,
    };
    let Some(authority) = upstream.settings.origin.authority() else {
        return Err(Reject::AwsSigning);
    };
    crate::aws::sign(
        parts,
        authority,
        &signing.scope,
        credentials,
        payload,
        std::time::SystemTime::now(),
    )
    .map_err(|e| {
        ctx.shared
            .metrics
            .aws_signing_failure(name, SigningFailure::Request);
        tracing::info!(upstream = &**name, error = %e, "request cannot be signed");
        Reject::AwsSigning
    })?;
    Ok(body)
}

/// The client's body, whole, with its share of the buffered-body budget: 413 beyond `max`
/// (told by `Content-Length` before reading a byte), 503 when the bodies held at this moment
/// would pass `max_buffered_body_bytes`, 400 when it breaks off or does not arrive within the
/// upstream's response timeout.
async fn read_body(
    body: ClientBody,
    max: u64,
    headers: &HeaderMap,
    upstream: &Upstream,
    budget: &Arc<tokio::sync::Semaphore>,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), Reject> {
    use http_body_util::BodyExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(Reject::BodyTooLarge);
    }
    // Permits are KiB; a declared length is reserved before reading, a chunked body as it comes.
    let kib = |bytes: u64| u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
    let take = |n: u32| {
        Arc::clone(budget)
            .try_acquire_many_owned(n)
            .map_err(|_| Reject::BodyBuffersFull)
    };
    let mut held = take(kib(declared.unwrap_or(0)))?;
    let read = async {
        let mut body = body;
        let mut data = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                tracing::info!(error = %e, "client request body failed while read for signing");
                Reject::BadRequestBody
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let total = (data.len() + chunk.len()) as u64;
            if total > max {
                return Err(Reject::BodyTooLarge);
            }
            let needed = kib(total);
            let have = u32::try_from(held.num_permits()).unwrap_or(u32::MAX);
            if needed > have {
                held.merge(take(needed - have)?);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data.freeze())
    };
    match tokio::time::timeout(upstream.settings.response_timeout, read).await {
        Ok(Ok(bytes)) => Ok((bytes, held)),
        Ok(Err(reject)) => Err(reject),
        Err(_) => {
            tracing::info!(
                "client request body not received within the upstream's response_timeout"
            );
            Err(Reject::BadRequestBody)
        }
    }
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// SigV4 signatures are valid within 5 minutes of AWS's clock.
const SIGV4_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// After AWS refused a signed request (403): if its `Date` is further from this machine's
/// clock than SigV4 allows, that is the likely cause; it is logged plainly and counted.
fn check_clock(ctx: &Ctx<'_>, upstream: &Upstream, headers: &HeaderMap) {
    let Some(theirs) = headers
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return;
    };
    let ours = std::time::SystemTime::now();
    let skew = ours
        .duration_since(theirs)
        .or_else(|_| theirs.duration_since(ours))
        .unwrap_or_default();
    if skew > SIGV4_WINDOW {
        let name = &upstream.settings.name;
        ctx.shared
            .metrics
            .aws_signing_failure(name, SigningFailure::ClockSkew);
        tracing::warn!(
            upstream = &**name,
            skew_seconds = skew.as_secs(),
            "AWS refused a signed request and its clock differs from this machine's by more than SigV4's 5 minutes: check the clock (NTP)"
        );
    }
}

/// Target phase: the host and the normalised path, or 400.
fn target<'u>(
    ctx: &Ctx<'_>,
    parts: &http::request::Parts,
    uri: &'u http::Uri,
) -> Result<Target<'u>, Reject> {
    if parts.method == Method::CONNECT {
        return Err(Reject::BadPath(PathError::NotAbsolute));
    }
    Ok(Target {
        host: headers::request_host(parts.version, uri, &parts.headers)?,
        path: routes::normalize(uri.path(), ctx.snapshot.config.paths)?,
        query: uri.query(),
    })
}

/// What the own-paths phase made of a request.
enum Own {
    /// jwtgate answered it (boxed: a response is large, and this is the rarer case).
    Answer(Box<Response<ProxyBody>>),
    /// It goes on to routing.
    Route(Routing),
}

/// Own-paths phase: jwtgate's sign-in paths and forward-auth come before any route, and CORS
/// preflights are answered from `[cors]` (or passed upstream unauthenticated for routes that
/// handle CORS themselves; browsers never send credentials on a preflight).
async fn own_paths<B: Fn() -> Option<String>>(
    ctx: &mut Ctx<'_>,
    parts: &http::request::Parts,
    target: &Target<'_>,
    base: &B,
) -> Result<Own, Reject> {
    let snapshot = ctx.snapshot;
    let config = &snapshot.config;
    let path = target.path.as_str();
    if let Some(login) = snapshot.logins.owner(path) {
        ctx.route = Arc::from(LOGIN_ROUTE);
        let base = base().ok_or(Reject::BadPath(PathError::NotAbsolute))?;
        let response = login
            .handle_own(&parts.headers, path, target.query, &base)
            .await?;
        return Ok(Own::Answer(Box::new(response.map(Either::Right))));
    }
    if let Some(rest) = config.forward_auth.as_deref().and_then(|p| under(path, p)) {
        let answer = forward_auth(ctx, parts, rest, base).await?;
        return Ok(Own::Answer(Box::new(answer)));
    }
    let mut routing = Routing {
        method: parts.method.clone(),
        preflight_forward: false,
    };
    if let Some(requested) = cors::preflight(&parts.method, &parts.headers) {
        if config
            .routes
            .lookup(&requested, path)
            .is_some_and(|r| r.preflight_forward)
        {
            routing = Routing {
                method: requested,
                preflight_forward: true,
            };
        } else if let Some(cors) = &config.cors {
            ctx.preflight = true;
            let answer = cors.answer_preflight::<Full<Bytes>>(&parts.headers);
            return Ok(Own::Answer(Box::new(answer.map(Either::Right))));
        }
    }
    Ok(Own::Route(routing))
}

/// Route phase: the first route whose path and method match, with what its pattern captured
/// in the path, or 404.
fn route<'s, 'p>(
    ctx: &mut Ctx<'s>,
    method: &Method,
    path: &'p str,
) -> Result<Match<'s, 'p, Route>, Reject> {
    let matched = ctx
        .snapshot
        .config
        .routes
        .find(method, path)
        .ok_or(Reject::NoRoute)?;
    ctx.route = Arc::clone(&matched.route.name);
    Ok(matched)
}

/// Rewrite-request phase: strip what the client may not say, add what jwtgate vouches for
/// (no identity headers when the request will be `signed` for AWS), and aim the request at
/// the route's upstream. Whether the client asked for a WebSocket upgrade.
#[allow(clippy::too_many_arguments)]
fn rewrite_request(
    ctx: &Ctx<'_>,
    route: &Route,
    captures: &Captures<'_, '_>,
    upstream: &Upstream,
    caller: &Caller,
    parts: &mut http::request::Parts,
    target: &Target<'_>,
    signed: bool,
) -> Result<bool, Reject> {
    let snapshot = ctx.snapshot;
    let plan = &snapshot.config.headers;
    let upstream_uri = upstream
        .uri(&route.upstream_path(&target.path), target.query)
        .map_err(|_| Reject::BadPath(PathError::BadEncoding))?;
    let upgrade = headers::upgrade_requested(&parts.headers);
    let headers = &mut parts.headers;
    plan.strip_inbound(headers, ctx.conn.peer.ip(), &route.keep_override_headers);
    snapshot.logins.strip_cookies(headers);
    // AWS authenticates the signature, not identity headers, and never gets the user's tokens
    // (`x-amzn-oidc-accesstoken` is one).
    if !signed {
        add_identity(snapshot, headers, caller);
    }
    add_captures(headers, route, captures)?;
    for (name, value) in &ctx.authorizer_headers {
        headers.insert(name.clone(), value.clone());
    }
    plan.add_forwarded(
        headers,
        &ctx.conn.peer_value,
        ctx.conn.proto,
        target.host.clone(),
    );
    headers.insert(TRACEPARENT, ctx.trace.traceparent());
    headers.insert(REQUEST_ID, ctx.request_id.clone());
    if let Some(host) = target.host.clone() {
        headers.insert(header::HOST, host);
    }
    parts.uri = upstream_uri;
    parts.version = upstream.version();
    Ok(upgrade)
}

/// Rewrite-response phase: the upstream's answer without hop-by-hop headers (an upgrade keeps
/// its own), plus the session cookies authentication set.
fn rewrite_response(
    mut response: Response<UpstreamBody>,
    set_cookies: Vec<HeaderValue>,
) -> Response<ProxyBody> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        headers::strip_hop_by_hop(response.headers_mut());
    }
    for cookie in set_cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response.map(Either::Left)
}

/// The parts of a request authentication reads.
struct Asking<'a, B> {
    headers: &'a HeaderMap,
    method: &'a Method,
    /// The normalised path and the query: where a sign-in returns to.
    path: &'a str,
    query: Option<&'a str>,
    /// `scheme://host` as the client sees it, made only when sign-in needs it.
    base: &'a B,
}

/// `path` with its query, as a same-origin return target.
fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// The part of `path` below `prefix` (`Some("")` for the prefix itself).
fn under<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Authenticate phase: who the request is, per the route's auth mode (missing or invalid
/// credentials are refused here), or an answer of its own (a redirect to sign in).
async fn authenticate<B: Fn() -> Option<String>>(
    ctx: &Ctx<'_>,
    route: &Route,
    request: &Asking<'_, B>,
) -> Result<Decided, Reject> {
    let snapshot = ctx.snapshot;
    let caller = match route.auth {
        AuthMode::None => Caller::Anonymous,
        AuthMode::Jwt | AuthMode::Optional => match token::bearer(request.headers)? {
            None if route.auth == AuthMode::Jwt => return Err(Reject::MissingToken),
            None => Caller::Anonymous,
            Some(raw) => {
                let (verified, policy) = token::verify(
                    &snapshot.issuers,
                    &ctx.shared.token_cache,
                    &ctx.shared.metrics,
                    raw,
                    unix_now(),
                )
                .await?;
                Caller::Token(verified, policy)
            }
        },
        AuthMode::Login => {
            // The route's provider: its sessions only (every login route has one that exists).
            let login = route
                .login
                .as_deref()
                .and_then(|name| snapshot.logins.get(name))
                .ok_or(Reject::LoginRequired)?;
            let base = (request.base)().ok_or(Reject::BadPath(PathError::NotAbsolute))?;
            let return_to = with_query(request.path, request.query);
            return match login
                .gate(request.headers, request.method, &return_to, &base)
                .await?
            {
                Gate::Respond(response) => {
                    Ok(Decided::Respond(Box::new(response.map(Either::Right))))
                }
                Gate::Forward(identity, cookies) => {
                    let caller = identity.map_or(Caller::Anonymous, |identity| {
                        Caller::Session(Box::new(identity), Arc::clone(login))
                    });
                    Ok(Decided::Caller(caller, cookies))
                }
            };
        }
    };
    Ok(Decided::Caller(caller, Vec::new()))
}

/// Authorise phase: the route's requirements (token kind and issuer: 401; scopes, groups,
/// claims: 403) on the caller's claims. Anonymous callers have nothing to check.
fn authorise(route: &Route, caller: &Caller, captures: &Captures<'_, '_>) -> Result<(), Reject> {
    let (policy, claims) = match caller {
        Caller::Anonymous => return Ok(()),
        Caller::Token(token, policy) => (&**policy, &token.claims),
        Caller::Session(identity, login) => (login.policy(), &identity.claims),
    };
    route
        .requirements
        .check_captured(policy, claims, captures)
        .map_err(|denial| match denial {
            Denial::Token(e) => Reject::InvalidToken(e),
            Denial::Forbidden(reason) => Reject::Forbidden {
                reason,
                scope: route.requirements.required_scope.clone(),
            },
        })
}

/// Policy phase: the route's Cedar policies (`policy = …`) decide, after its requirements. A
/// deny, or a request Cedar cannot evaluate, is 403 `policy`; the determining policies are
/// logged. An anonymous caller (an `optional` route without a token) is asked to authenticate.
fn check_policy(
    ctx: &Ctx<'_>,
    route: &Route,
    caller: &Caller,
    captures: &Captures<'_, '_>,
    method: &Method,
    query: Option<&str>,
) -> Result<(), Reject> {
    let Some(chosen) = &route.policy else {
        return Ok(());
    };
    let forbidden = || Reject::Forbidden {
        reason: ForbiddenReason::Policy,
        scope: None,
    };
    // An index compile checked: never out of range (a deny rather than a panic if it were).
    let store = ctx
        .snapshot
        .config
        .policies
        .get(chosen.set)
        .ok_or_else(forbidden)?;
    let (claims, token_key) = match caller {
        Caller::Anonymous => return Err(Reject::MissingToken),
        Caller::Token(token, _) => (&token.claims, Some(token.payload_b64())),
        Caller::Session(identity, _) => (&identity.claims, None),
    };
    let method = crate::policy::lower_method(method);
    let asked = crate::policy::Asked {
        claims,
        token_key,
        method: &method,
        template: &chosen.template,
        captures: *captures,
        query,
    };
    let verdict = store.decide(&asked, unix_now());
    if verdict.allowed {
        tracing::debug!(policy_set = &*store.name, determining = ?verdict.determining, "allowed by policy");
        return Ok(());
    }
    tracing::info!(
        policy_set = &*store.name,
        determining = ?verdict.determining,
        errors = ?verdict.errors,
        "denied by policy"
    );
    Err(forbidden())
}

/// The request's method, path (as sent and normalised) and query, for the external authorizer.
struct Authorizing<'a> {
    method: &'a Method,
    raw_path: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

/// Authorizer phase (after the requirements and the policy): the route's external authorizer,
/// if it has one, decides; the upstream headers it grants wait in `ctx` for the rewrite phase.
/// It is sent the client's headers without jwtgate's sign-in cookies, and the verified JWT's
/// claims and scopes (`requestContext.authorizer.jwt`) when the route verified a token.
async fn call_authorizer(
    ctx: &mut Ctx<'_>,
    route: &Route,
    caller: &Caller,
    captures: &Captures<'_, '_>,
    parts: &http::request::Parts,
    asking: &Authorizing<'_>,
) -> Result<(), Reject> {
    let Some(uses) = &route.authorizer else {
        return Ok(());
    };
    let snapshot = ctx.snapshot;
    // An index compile checked: a refusal rather than a panic if it were not.
    let authorizer = snapshot
        .authorizers
        .get(uses.index)
        .ok_or(Reject::AuthorizerFailed(StatusCode::INTERNAL_SERVER_ERROR))?;
    let sent_headers = || {
        let mut headers = parts.headers.clone();
        snapshot.logins.strip_cookies(&mut headers);
        headers::strip_hop_by_hop(&mut headers);
        headers
    };
    let jwt = match caller {
        Caller::Token(token, _) => Some((
            token.claims.all(),
            token.claims.scopes.as_slice(),
            token.claims.exp,
        )),
        _ => None,
    };
    let asked = crate::authorizer::Asked {
        method: asking.method,
        raw_path: asking.raw_path,
        path: asking.path,
        query: asking.query,
        headers: &parts.headers,
        sent_headers: &sent_headers,
        peer: ctx.conn.peer.ip(),
        version: parts.version,
        request_id: ctx.request_id.to_str().unwrap_or_default(),
        route_name: &route.name,
        route: uses,
        captures: captures
            .iter()
            .filter_map(|(name, value)| Some((name, value?.into_owned())))
            .collect(),
        jwt,
    };
    ctx.authorizer_headers = authorizer.decide(&asked).await?;
    Ok(())
}

/// Adds the identity headers jwtgate vouches for: claim headers, and ALB's for sessions.
fn add_identity(snapshot: &Snapshot, headers: &mut HeaderMap, caller: &Caller) {
    let plan = &snapshot.config.headers;
    match caller {
        Caller::Anonymous => {}
        Caller::Token(token, _) => {
            plan.inject_claims(headers, || token.claims.all(), Some(token.payload_b64()))
        }
        Caller::Session(identity, login) => {
            login.inject(headers, identity);
            plan.inject_claims(headers, || &identity.session.claims, None);
        }
    }
}

/// Sends the route's `capture_headers` (the client's copies were stripped with the identity
/// headers). A captured value that is not UTF-8, or not a header value jwtgate will send, is
/// the client's error (400).
fn add_captures(
    headers: &mut HeaderMap,
    route: &Route,
    captures: &Captures<'_, '_>,
) -> Result<(), Reject> {
    for (name, index) in &route.capture_headers {
        let value = captures
            .value(*index)
            .and_then(|v| capture_header_value(&v))
            .ok_or(Reject::BadCapture)?;
        headers.insert(name.clone(), value);
    }
    Ok(())
}

/// A captured value as a header value: no control characters (tab included) and no leading or
/// trailing space, which a receiver would trim or split on. Non-ASCII text is sent as its
/// UTF-8 bytes.
fn capture_header_value(value: &str) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let clean = !bytes.iter().any(|&b| b < 0x20 || b == 0x7F)
        && !value.starts_with(' ')
        && !value.ends_with(' ');
    clean.then(|| HeaderValue::from_bytes(bytes).ok()).flatten()
}

/// Forward-auth (nginx `auth_request`, Traefik `forwardAuth`, Envoy `ext_authz`): decides the
/// original request, named by the asking proxy's headers, and answers 200 with the identity
/// headers, or the 401/403/404 (or sign-in redirect) the request itself would get. The
/// original method, URI and host are read from `X-Forwarded-Method/-Uri/-Host` (Traefik) or
/// `X-Original-Method/-URI` (nginx) only when the peer is a trusted proxy; otherwise, and for
/// Envoy, the path below the forward-auth prefix names the original path.
async fn forward_auth<B: Fn() -> Option<String>>(
    ctx: &mut Ctx<'_>,
    req: &http::request::Parts,
    suffix: &str,
    base: &B,
) -> Result<Response<ProxyBody>, Reject> {
    let snapshot = ctx.snapshot;
    let trusted = snapshot.config.headers.is_trusted(ctx.conn.peer.ip());
    let header = |names: &[&str]| {
        names.iter().find_map(|n| {
            req.headers
                .get(*n)
                .and_then(|v| v.to_str().ok())
                .filter(|_| trusted)
        })
    };
    let method = header(&["x-forwarded-method", "x-original-method"])
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or_else(|| req.method.clone());
    let uri = header(&["x-forwarded-uri", "x-original-uri"])
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let path = if suffix.is_empty() { "/" } else { suffix };
            with_query(path, req.uri.query())
        });
    let (path, query) = original_target(&uri, snapshot.config.paths)?;
    let Match { route, captures } = route(ctx, &method, &path)?;
    let request = Asking {
        headers: &req.headers,
        method: &method,
        path: &path,
        query,
        base,
    };
    match authenticate(ctx, route, &request).await? {
        Decided::Respond(response) => Ok(*response),
        Decided::Caller(caller, cookies) => {
            authorise(route, &caller, &captures)?;
            check_policy(ctx, route, &caller, &captures, &method, query)?;
            // The original request's method, not the subrequest's.
            let asking = Authorizing {
                method: &method,
                raw_path: &path,
                path: &path,
                query,
            };
            call_authorizer(ctx, route, &caller, &captures, req, &asking).await?;
            let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
            let headers = response.headers_mut();
            add_identity(snapshot, headers, &caller);
            add_captures(headers, route, &captures)?;
            for (name, value) in std::mem::take(&mut ctx.authorizer_headers) {
                headers.insert(name, value);
            }
            for cookie in cookies {
                headers.append(header::SET_COOKIE, cookie);
            }
            Ok(response)
        }
    }
}

/// The forward-auth original URI split at the first `?`: its normalised path and its query. A
/// fragment (`#…`, which no client sends but a raw request line may hold) is cut off first, as
/// `http::Uri` does for the request line itself: `/admin#/../public` names `/admin`.
#[doc(hidden)]
pub fn original_target(
    uri: &str,
    options: routes::PathOptions,
) -> Result<(String, Option<&str>), PathError> {
    let uri = uri.split('#').next().unwrap_or_default();
    let (raw_path, query) = uri
        .split_once('?')
        .map_or((uri, None), |(p, q)| (p, Some(q)));
    Ok((routes::normalize(raw_path, options)?, query))
}

/// Forward phase: sends the request to the route's upstream and waits for its response head
/// (within `response_timeout` of the client's body being sent); bridges a WebSocket upgrade.
async fn forward<'s>(
    ctx: &mut Ctx<'s>,
    upstream: &'s Arc<Upstream>,
    mut req: Request<ClientBody>,
    upgrade: bool,
) -> Result<Response<UpstreamBody>, Reject> {
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let sent = Instant::now();
    // The response timeout starts once the client's body has been sent: a slow upload is the
    // client's time, not the upstream's.
    // Nothing to wait for without a body (most requests): no channel then.
    let (body_sent, mut uploaded) = if req.body().is_end_stream() {
        (None, None)
    } else {
        let (sent, uploaded) = oneshot::channel();
        (Some(sent), Some(uploaded))
    };
    let req = req.map(|body| upload_body(body, body_sent));
    // A client body that fails is the client's fault (400), not the upstream's, whatever error
    // the upstream client reports for the request it could not finish.
    let mut body_failed = false;
    let timeout = async {
        if let Some(uploaded) = uploaded.as_mut() {
            if let Ok(UploadEnd::BodyFailed) = uploaded.await {
                body_failed = true;
                return;
            }
        }
        tokio::time::sleep(upstream.settings.response_timeout).await;
    };
    let result = tokio::select! {
        result = upstream.send(req) => Some(result),
        () = timeout => None,
    };
    // The failure may have been reported in the same instant the send failed.
    if let Some(uploaded) = uploaded.as_mut() {
        body_failed |= uploaded.try_recv() == Ok(UploadEnd::BodyFailed);
    }
    ctx.upstream_seconds = Some(sent.elapsed().as_secs_f64());
    let name = &upstream.settings.name;
    let mut response = match result {
        None | Some(Err(_)) if body_failed => {
            ctx.upstream = Some((name, UpstreamResult::BadRequestBody));
            tracing::info!("client request body failed on its way upstream");
            return Err(Reject::BadRequestBody);
        }
        None => {
            ctx.upstream = Some((name, UpstreamResult::Timeout));
            return Err(UpstreamError::Timeout.into());
        }
        Some(Err(e)) => {
            let result = match e {
                SendError::Connect(_) => UpstreamResult::Unreachable,
                SendError::Request(_) | SendError::Exchange(_) => UpstreamResult::Failed,
            };
            ctx.upstream = Some((name, result));
            tracing::warn!(upstream = &**name, error = %e, source = ?std::error::Error::source(&e), "upstream request failed");
            return Err(UpstreamError::Unreachable.into());
        }
        Some(Ok(response)) => response,
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // A 101 the client did not ask for cannot be relayed (its connection would switch to a
        // protocol it never chose): a 502, as the bodiless exchange answers.
        let Some(client_upgrade) = client_upgrade else {
            ctx.upstream = Some((name, UpstreamResult::Failed));
            tracing::warn!(
                upstream = &**name,
                "upstream answered 101 to a request that asked no upgrade"
            );
            return Err(UpstreamError::Unreachable.into());
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }
    ctx.upstream = Some((name, UpstreamResult::Response));
    Ok(response)
}

//! The request pipeline (normalise, route, authenticate, authorise, rewrite headers, forward).
//! Bodies stream both ways; nothing is buffered whole.

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

use crate::authz::Denial;
use crate::cors;
use crate::error::{Reject, UpstreamError};
use crate::headers::{self, REQUEST_ID};
use crate::login::cookies;
use crate::login::{Gate, Identity, STATE_COOKIE};
use crate::metrics::Decision;
use crate::routes::{self, PathError};
use crate::settings::{AuthMode, Route};
use crate::token::{self, unix_now};
use crate::upstream::{ClientBody, UploadEnd, UpstreamBody, upload_body};
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

/// What the access log and metrics record of one request.
struct Outcome {
    route: Arc<str>,
    reason: &'static str,
    upstream_seconds: Option<f64>,
    /// jwtgate answered a CORS preflight itself.
    preflight: bool,
    /// This request's place in its trace.
    trace: crate::trace::TraceContext,
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
    let request_id = headers::request_id(req.headers());
    let method = req.method().clone();
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut outcome = Outcome {
        route: Arc::clone(&UNMATCHED_ROUTE),
        reason: "",
        upstream_seconds: None,
        preflight: false,
        trace: crate::trace::TraceContext::from_headers(
            req.headers(),
            &snapshot.config.tracing.sampler,
        ),
    };
    let span_facts = crate::trace::RequestFacts::capture(
        snapshot.config.tracing.export.is_some(),
        &outcome.trace,
        &req,
    );
    let origin = req.headers().get(header::ORIGIN).cloned();

    let span = tracing::info_span!("request", request_id = request_id.to_str().unwrap_or_default(), method = %method);
    let result = pipeline(&shared, &snapshot, &conn, &request_id, req, &mut outcome)
        .instrument(span)
        .await;

    let (mut response, decision) = match result {
        Ok(response) => (response, Decision::Allow),
        Err(reject) => {
            let reason = reject.reason();
            outcome.reason = reason.as_str();
            if reject.is_auth_failure() {
                shared.metrics.auth_failure(&outcome.route, reason);
            } else {
                shared.metrics.rejection(&outcome.route, reason);
            }
            let decision = if reject.status().is_server_error() {
                Decision::Error
            } else {
                Decision::Deny
            };
            let response = if grpc {
                reject.into_grpc_response()
            } else {
                reject.into_response()
            };
            (response.map(Either::Right), decision)
        }
    };
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    if let (Some(cors), false) = (&snapshot.config.cors, outcome.preflight) {
        cors.decorate(origin.as_ref(), response.headers_mut());
    }
    let elapsed = started.elapsed().as_secs_f64();
    shared.metrics.request(
        &outcome.route,
        &method,
        decision,
        response.status(),
        elapsed,
    );
    if let Some(up) = outcome.upstream_seconds {
        shared.metrics.upstream(&outcome.route, up);
    }
    tracing::info!(
        target: "jwtgate::access",
        request_id = request_id.to_str().unwrap_or_default(),
        peer = %conn.peer.ip(),
        method = %method,
        route = &*outcome.route,
        decision = decision.as_str(),
        reason = outcome.reason,
        status = response.status().as_u16(),
        latency_ms = elapsed * 1000.0,
        upstream_ms = outcome.upstream_seconds.map(|s| s * 1000.0),
    );
    // Only a sampled request with export configured has facts: nothing to do otherwise.
    #[cfg(feature = "otlp")]
    if let (Some(request), Some(exporter)) = (span_facts, &*shared.exporter.load()) {
        let route_pattern = snapshot
            .config
            .routes
            .iter()
            .find(|(_, _, r)| Arc::ptr_eq(&r.name, &outcome.route))
            .map(|(pattern, _, _)| Box::from(pattern.as_str()));
        exporter.export(crate::trace::SpanRecord {
            context: outcome.trace,
            end: request.end(),
            request,
            method,
            status: response.status().as_u16(),
            route: outcome.route,
            route_pattern,
            decision: decision.as_str(),
            reason: outcome.reason,
            scheme: conn.proto,
            peer: conn.peer,
            peer_trusted: snapshot.config.headers.is_trusted(conn.peer.ip()),
            request_id,
        });
    }
    #[cfg(not(feature = "otlp"))]
    let _ = span_facts;
    response
}

/// Who the request is, once authenticated.
enum Caller {
    Anonymous,
    Token(Arc<token::VerifiedToken>),
    Session(Box<Identity>),
}

/// The outcome of authentication: a caller (with cookies to send), or an answer of its own (a
/// redirect to sign in).
enum Decided {
    Caller(Caller, Vec<HeaderValue>),
    /// Boxed: it is rare, and a response is large.
    Respond(Box<Response<ProxyBody>>),
}

async fn pipeline(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    req: Request<ClientBody>,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, Reject> {
    let config = &snapshot.config;
    let plan = &config.headers;
    if req.method() == Method::CONNECT {
        return Err(Reject::BadPath(PathError::NotAbsolute));
    }
    // Split so the URI can be read while the headers are rewritten.
    let (mut parts, body) = req.into_parts();
    let host = headers::request_host(parts.version, &parts.uri, &parts.headers)?;
    let path = routes::normalize(parts.uri.path(), config.paths)?;
    let query = parts.uri.query();
    // `scheme://host` as the client sees it: only sign-in needs it, so it is made on demand.
    let base = || plan.external_base(&parts.headers, host.as_ref(), conn.peer.ip(), conn.proto);

    // jwtgate's own paths come before any route.
    if let Some(login) = snapshot.login.as_ref().filter(|l| l.owns(&path)) {
        outcome.route = Arc::from(LOGIN_ROUTE);
        let base = base().ok_or(Reject::BadPath(PathError::NotAbsolute))?;
        let response = login
            .handle_own(&parts.headers, &path, query, &base)
            .await?;
        return Ok(response.map(Either::Right));
    }
    if let Some(prefix) = config.forward_auth.as_deref() {
        if let Some(rest) = under(&path, prefix) {
            return forward_auth(shared, snapshot, conn, &parts, rest, &base, outcome).await;
        }
    }

    // CORS preflights: answered from [cors], or passed upstream unauthenticated for routes
    // that handle CORS themselves; browsers never send credentials on a preflight.
    let mut method = parts.method.clone();
    let mut preflight_forward = false;
    if let Some(requested) = cors::preflight(&parts.method, &parts.headers) {
        if config
            .routes
            .lookup(&requested, &path)
            .is_some_and(|r| r.preflight_forward)
        {
            method = requested;
            preflight_forward = true;
        } else if let Some(cors) = &config.cors {
            outcome.preflight = true;
            return Ok(cors
                .answer_preflight::<Full<Bytes>>(&parts.headers)
                .map(Either::Right));
        }
    }

    let route = config
        .routes
        .lookup(&method, &path)
        .ok_or(Reject::NoRoute)?;
    outcome.route = Arc::clone(&route.name);

    // Authenticate and authorise before touching the request.
    let (caller, set_cookies) = if preflight_forward {
        (Caller::Anonymous, Vec::new())
    } else {
        let request = Asking {
            headers: &parts.headers,
            method: &parts.method,
            path: &path,
            query,
            base: &base,
        };
        match authenticate(shared, snapshot, route, &request).await? {
            Decided::Respond(response) => return Ok(*response),
            Decided::Caller(caller, cookies) => (caller, cookies),
        }
    };

    // Rewrite headers: strip what the client may not say, then add what we vouch for.
    let upstream_uri = snapshot
        .upstream
        .uri(&path, query)
        .map_err(|_| Reject::BadPath(PathError::BadEncoding))?;
    let upgrade = headers::upgrade_requested(&parts.headers);
    let headers = &mut parts.headers;
    plan.strip_inbound(headers, conn.peer.ip(), &route.keep_override_headers);
    if let Some(login) = &snapshot.login {
        cookies::strip_own(headers, login.cookie_name(), &[STATE_COOKIE]);
    }
    add_identity(snapshot, headers, &caller);
    plan.add_forwarded(headers, &conn.peer_value, conn.proto, host.clone());
    headers.insert(TRACEPARENT, outcome.trace.traceparent());
    headers.insert(REQUEST_ID, request_id.clone());
    if let Some(host) = host {
        headers.insert(header::HOST, host);
    }
    parts.uri = upstream_uri;
    parts.version = snapshot.upstream.version();

    let req = Request::from_parts(parts, body);
    let mut response = forward(snapshot, req, upgrade, outcome)
        .await?
        .map(Either::Left);
    for cookie in set_cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
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

/// Authenticates and authorises a request for `route`.
async fn authenticate<B: Fn() -> Option<String>>(
    shared: &Shared,
    snapshot: &Snapshot,
    route: &Route,
    request: &Asking<'_, B>,
) -> Result<Decided, Reject> {
    let caller = match route.auth {
        AuthMode::None => Caller::Anonymous,
        AuthMode::Jwt | AuthMode::Optional => match token::bearer(request.headers)? {
            None if route.auth == AuthMode::Jwt => return Err(Reject::MissingToken),
            None => Caller::Anonymous,
            Some(raw) => {
                let (verified, policy) = token::verify(
                    &snapshot.issuers,
                    &shared.token_cache,
                    &shared.metrics,
                    raw,
                    unix_now(),
                )
                .await?;
                authorize(route, &policy, &verified.claims)?;
                Caller::Token(verified)
            }
        },
        AuthMode::Login => {
            let login = snapshot.login.as_ref().ok_or(Reject::LoginRequired)?;
            let base = (request.base)().ok_or(Reject::BadPath(PathError::NotAbsolute))?;
            let return_to = with_query(request.path, request.query);
            match login
                .gate(request.headers, request.method, &return_to, &base)
                .await?
            {
                Gate::Respond(response) => {
                    return Ok(Decided::Respond(Box::new(response.map(Either::Right))));
                }
                Gate::Forward(identity, cookies) => {
                    let caller = match identity {
                        Some(identity) => {
                            authorize(route, login.policy(), &identity.claims)?;
                            Caller::Session(Box::new(identity))
                        }
                        None => Caller::Anonymous,
                    };
                    return Ok(Decided::Caller(caller, cookies));
                }
            }
        }
    };
    Ok(Decided::Caller(caller, Vec::new()))
}

/// Adds the identity headers jwtgate vouches for: claim headers, and ALB's for sessions.
fn add_identity(snapshot: &Snapshot, headers: &mut HeaderMap, caller: &Caller) {
    let plan = &snapshot.config.headers;
    match caller {
        Caller::Anonymous => {}
        Caller::Token(token) => {
            plan.inject_claims(headers, &token.claims.all, Some(&token.payload_b64))
        }
        Caller::Session(identity) => {
            if let Some(login) = &snapshot.login {
                login.inject(headers, identity);
            }
            plan.inject_claims(headers, &identity.session.claims, None);
        }
    }
}

/// Forward-auth (nginx `auth_request`, Traefik `forwardAuth`, Envoy `ext_authz`): decides the
/// original request, named by the asking proxy's headers, and answers 200 with the identity
/// headers, or the 401/403/404 (or sign-in redirect) the request itself would get. The
/// original method, URI and host are read from `X-Forwarded-Method/-Uri/-Host` (Traefik) or
/// `X-Original-Method/-URI` (nginx) only when the peer is a trusted proxy; otherwise, and for
/// Envoy, the path below the forward-auth prefix names the original path.
async fn forward_auth<B: Fn() -> Option<String>>(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    req: &http::request::Parts,
    suffix: &str,
    base: &B,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, Reject> {
    let plan = &snapshot.config.headers;
    let trusted = plan.is_trusted(conn.peer.ip());
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
    let (raw_path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri.as_str(), None),
    };
    let path = routes::normalize(raw_path, snapshot.config.paths)?;
    let route = snapshot
        .config
        .routes
        .lookup(&method, &path)
        .ok_or(Reject::NoRoute)?;
    outcome.route = Arc::clone(&route.name);
    let request = Asking {
        headers: &req.headers,
        method: &method,
        path: &path,
        query,
        base,
    };
    match authenticate(shared, snapshot, route, &request).await? {
        Decided::Respond(response) => Ok(*response),
        Decided::Caller(caller, cookies) => {
            let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
            let headers = response.headers_mut();
            add_identity(snapshot, headers, &caller);
            for cookie in cookies {
                headers.append(header::SET_COOKIE, cookie);
            }
            Ok(response)
        }
    }
}

fn authorize(
    route: &crate::settings::Route,
    policy: &token::IssuerPolicy,
    claims: &token::Claims,
) -> Result<(), Reject> {
    route
        .requirements
        .check(policy, claims)
        .map_err(|denial| match denial {
            Denial::Token(e) => Reject::InvalidToken(e),
            Denial::Forbidden(reason) => Reject::Forbidden {
                reason,
                scope: route.requirements.required_scope.clone(),
            },
        })
}

async fn forward(
    snapshot: &Snapshot,
    mut req: Request<ClientBody>,
    upgrade: bool,
    outcome: &mut Outcome,
) -> Result<Response<UpstreamBody>, Reject> {
    let upstream = &snapshot.upstream;
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
    outcome.upstream_seconds = Some(sent.elapsed().as_secs_f64());
    let mut response = match result {
        None | Some(Err(_)) if body_failed => {
            tracing::info!("client request body failed on its way upstream");
            return Err(Reject::BadRequestBody);
        }
        None => return Err(UpstreamError::Timeout.into()),
        Some(Err(e)) => {
            tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "upstream request failed");
            return Err(UpstreamError::Unreachable.into());
        }
        Some(Ok(response)) => response,
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // A 101 the client did not ask for cannot be relayed (its connection would switch to a
        // protocol it never chose): a 502, as the bodiless exchange answers.
        let Some(client_upgrade) = client_upgrade else {
            tracing::warn!("upstream answered 101 to a request that asked no upgrade");
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
        return Ok(response);
    }
    headers::strip_hop_by_hop(response.headers_mut());
    Ok(response)
}

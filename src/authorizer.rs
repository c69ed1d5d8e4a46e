//! External authorizers (`[[authorizers]]`): API Gateway's Lambda-authorizer contract (payload
//! format 2.0, simple and IAM-policy responses) delivered to an HTTP endpoint or by the Lambda
//! Invoke API (SigV4-signed with jwtgate's own AWS credentials), and Envoy's HTTP ext_authz
//! protocol. Decisions are cached per identity-source values and route, bounded in
//! bytes, never past the JWT's `exp`, denials included; concurrent misses for one key make one
//! call. Every failure (timeout, connection, status, shape, size) refuses the request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::error::{AuthorizerDenial, Reject};
use crate::metrics::{AuthorizerResult, Metrics};

/// Largest authorizer answer read, bytes (a bigger one is a failure, never an allow).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long a call may take when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a decision is cached when `ttl` is not set (API Gateway's default).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The longest `ttl` (API Gateway's maximum).
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Cache size per authorizer when `cache_bytes` is not set.
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// The ARN prefix routeArns are built on when `api_arn` is not set.
pub const DEFAULT_API_ARN: &str = "arn:aws:execute-api:local:000000000000:jwtgate/$default";

/// How a `type = "lambda"` authorizer's answer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// `{"isAuthorized": bool, "context": {…}}` (HTTP APIs' `enableSimpleResponses`).
    Simple,
    /// `principalId`, `policyDocument` with `execute-api:Invoke` statements, `context`.
    Iam,
}

/// Delivery of a `type = "lambda"` event by the Lambda Invoke API instead of a plain POST.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoke {
    /// Function name, partial or full ARN (as written).
    pub function: String,
    /// The function's region: the signing region.
    pub region: String,
    /// Alias or version (`?Qualifier=`).
    pub qualifier: Option<String>,
    /// The `[[aws_credentials]]` source (a `gateway` one) whose credentials sign the call. Part
    /// of the settings so that a reload that changes the source starts the authorizer afresh.
    pub credentials: Option<crate::aws::SourceSettings>,
}

/// The protocol an authorizer speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// API Gateway's Lambda-authorizer event (payload format 2.0), POSTed as JSON to `url`
    /// (signed for the Invoke API when the settings have `invoke`).
    Lambda {
        /// Which answer shape is expected.
        response: ResponseFormat,
        /// Payload format 1.0 (REST API `REQUEST` authorizers; IAM answers only) instead of 2.0.
        payload_v1: bool,
        /// `arn:aws:execute-api:REGION:ACCOUNT:API_ID/STAGE`: routeArns are this plus
        /// `/METHOD/path`.
        api_arn: String,
    },
    /// Envoy's HTTP ext_authz: the original method and path (below `url`'s path), the listed
    /// headers, no body.
    ExtAuthz {
        /// Client request headers sent to the service (lower case).
        allowed_headers: Vec<HeaderName>,
        /// Service response headers copied to the upstream request on an allow.
        upstream_headers: Vec<HeaderName>,
        /// Service response headers copied to the client on a denial; `None`: all but
        /// hop-by-hop and framing headers (Envoy's default).
        client_headers: Option<Vec<HeaderName>>,
    },
}

/// A `$context.…` identity source jwtgate can supply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextVar {
    /// `$context.identity.sourceIp`.
    SourceIp,
    /// `$context.routeKey`.
    RouteKey,
    /// `$context.httpMethod`.
    HttpMethod,
    /// `$context.path`.
    Path,
}

/// One `identity_source` entry, as API Gateway writes it for HTTP APIs.
#[derive(Debug, Clone, PartialEq)]
pub enum IdentitySource {
    /// `$request.header.NAME`.
    Header(HeaderName),
    /// `$request.querystring.NAME`.
    Query(String),
    /// `$context.…`.
    Context(ContextVar),
}

/// What a cached decision is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKey {
    /// Identity-source values, the method and the route (default): an allow for one route
    /// never opens another.
    Route,
    /// Identity-source values alone, as API Gateway keys its cache: a decision made for one
    /// route is reused on every route of the authorizer.
    Identity,
}

impl CacheKey {
    /// The word `cache_key = "…"` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheKey::Route => "route",
            CacheKey::Identity => "identity",
        }
    }
}

/// A checked `[[authorizers]]` table. Equal settings let a reload keep the authorizer (and its
/// cached decisions); any change starts it afresh.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizerSettings {
    /// What routes, metrics and logs call it.
    pub name: Arc<str>,
    /// Its protocol.
    pub kind: Kind,
    /// Where it is called (`http(s)://…`); with `invoke`, the function's Invoke URL.
    pub url: String,
    /// `type = "lambda"` with `function`: signed Lambda Invoke API calls to `url`.
    pub invoke: Option<Invoke>,
    /// Values that must be present (else 401 without a call) and that key the cache.
    pub identity_sources: Vec<IdentitySource>,
    /// The texts of `identity_sources`, as written (for `jwtgate check`).
    pub identity_source_text: Vec<String>,
    /// How long a decision is cached; zero: not cached, every request calls.
    pub ttl: Duration,
    /// What a decision is cached by.
    pub cache_key: CacheKey,
    /// Cache size, bytes.
    pub cache_bytes: u64,
    /// Time allowed for one call, connect to last body byte.
    pub timeout: Duration,
    /// Upstream header and the `context` key whose value it carries (`type = "lambda"`).
    pub context_headers: Vec<(HeaderName, String)>,
    /// Send the client's cookies (other than jwtgate's own sign-in cookies, which are never
    /// sent). Default true for `lambda` (the `cookies` field, as API Gateway sends them).
    pub send_cookies: bool,
}

impl AuthorizerSettings {
    /// The status a failed call answers: 500 for Lambda authorizers (API Gateway's answer),
    /// 403 for ext_authz (Envoy's `status_on_error` default).
    pub fn failure_status(&self) -> StatusCode {
        match self.kind {
            Kind::Lambda { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::ExtAuthz { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// `lambda` or `ext_authz`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Lambda { .. } => "lambda",
            Kind::ExtAuthz { .. } => "ext_authz",
        }
    }
}

/// A route's use of an authorizer, compiled with the route.
#[derive(Debug, Clone)]
pub struct RouteAuthorizer {
    /// Index into `Config::authorizers` (and `Snapshot::authorizers`).
    pub index: usize,
    /// The route's pattern as API Gateway writes a route path: `{name}` captures as is, a
    /// trailing `/**` as `/{proxy+}`.
    pub route_path: Arc<str>,
    /// With a trailing `/**`: the number of pattern segments before it (the `proxy` path
    /// parameter is the rest of the path).
    pub proxy_after: Option<usize>,
}

/// What one request gives an authorizer.
pub struct Asked<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path as the client sent it.
    pub raw_path: &'a str,
    /// The normalised path the route matched.
    pub path: &'a str,
    /// The query, as sent.
    pub query: Option<&'a str>,
    /// The client's headers (identity sources are read from them).
    pub headers: &'a HeaderMap,
    /// The headers an authorizer may be sent: the client's without jwtgate's sign-in cookies
    /// and hop-by-hop headers. Made only when a call is made (a cache hit copies nothing).
    pub sent_headers: &'a (dyn Fn() -> HeaderMap + Sync),
    /// The client's address.
    pub peer: IpAddr,
    /// The HTTP version.
    pub version: http::Version,
    /// This request's id.
    pub request_id: &'a str,
    /// The route's name (part of the cache key).
    pub route_name: &'a str,
    /// How the route uses the authorizer.
    pub route: &'a RouteAuthorizer,
    /// The route's path captures, decoded (a value that is not UTF-8 is left out).
    pub captures: Vec<(&'a str, String)>,
    /// The verified JWT's claims, scopes and `exp`, when the route verified one.
    pub jwt: Option<(&'a Map<String, Value>, &'a [String], i64)>,
}

impl Asked<'_> {
    /// `METHOD /pattern` (API Gateway's routeKey).
    fn route_key(&self) -> String {
        format!("{} {}", self.method, self.route.route_path)
    }

    /// The path parameters: captures, plus `proxy` for a `/**` route.
    fn path_parameters(&self) -> Map<String, Value> {
        let mut out: Map<String, Value> = self
            .captures
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
            .collect();
        if let Some(n) = self.route.proxy_after {
            let rest: Vec<&str> = self
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .skip(n)
                .collect();
            if !rest.is_empty() {
                out.insert("proxy".into(), Value::String(rest.join("/")));
            }
        }
        out
    }
}

/// A decision as the authorizer gave it: evaluated against each request (an IAM policy is
/// matched against the request's routeArn, also when it comes from the cache).
#[derive(Debug)]
enum Verdict {
    Simple {
        allowed: bool,
        context: Map<String, Value>,
    },
    Policy {
        statements: Vec<Statement>,
        context: Map<String, Value>,
    },
    ExtAllow(Vec<(HeaderName, HeaderValue)>),
    ExtDeny(AuthorizerDenial),
}

/// One IAM policy statement about `execute-api:Invoke`.
#[derive(Debug)]
struct Statement {
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// A cached decision, with its expiry and size.
#[derive(Debug)]
struct Cached {
    verdict: Verdict,
    expires: Instant,
    weight: u32,
}

/// Why a call did not produce a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Unreachable,
    BadStatus,
    TooLarge,
    Invalid,
    FunctionError,
    Credentials,
}

impl Failure {
    fn result(self) -> AuthorizerResult {
        match self {
            Failure::Timeout => AuthorizerResult::Timeout,
            Failure::Unreachable => AuthorizerResult::Unreachable,
            Failure::BadStatus => AuthorizerResult::BadStatus,
            Failure::TooLarge => AuthorizerResult::TooLarge,
            Failure::Invalid => AuthorizerResult::Invalid,
            Failure::FunctionError => AuthorizerResult::FunctionError,
            Failure::Credentials => AuthorizerResult::Credentials,
        }
    }
}

type Flight = Arc<OnceCell<Result<Arc<Cached>, Failure>>>;

struct UntilExpiry;

impl moka::Expiry<Vec<u8>, Arc<Cached>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &Vec<u8>,
        value: &Arc<Cached>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(created_at))
    }
}

/// A live authorizer: its settings, HTTP client, decision cache and calls in flight.
pub struct Authorizer {
    /// The checked settings.
    pub settings: AuthorizerSettings,
    http: reqwest::Client,
    /// With `invoke`: the source of jwtgate's own AWS credentials that sign each call.
    credentials: Option<crate::aws::CredentialSource>,
    cache: Option<moka::sync::Cache<Vec<u8>, Arc<Cached>>>,
    /// One call per key at a time; later requests for the key wait for its answer.
    in_flight: Mutex<HashMap<Vec<u8>, Flight>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("name", &self.settings.name)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer with an empty cache.
    pub fn new(
        settings: AuthorizerSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jwtgate/", env!("CARGO_PKG_VERSION")))
            // Straight to the authorizer: a decision never goes through HTTP(S)_PROXY.
            .no_proxy()
            .build()?;
        let cache = (!settings.ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.cache_bytes)
                .weigher(|k: &Vec<u8>, v: &Arc<Cached>| {
                    v.weight
                        .saturating_add(u32::try_from(k.len()).unwrap_or(u32::MAX))
                })
                .expire_after(UntilExpiry)
                .build()
        });
        let credentials = match settings
            .invoke
            .as_ref()
            .and_then(|i| i.credentials.as_ref())
        {
            Some(source) => Some(crate::aws::CredentialSource::new(
                source.clone(),
                Arc::clone(&metrics),
            )?),
            None => None,
        };
        metrics.authorizer_known(&settings.name);
        Ok(Authorizer {
            settings,
            http,
            credentials,
            cache,
            in_flight: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Cached decisions held now.
    pub fn cache_entries(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    /// Decides a request: the upstream headers an allow carries, or the refusal (401 when an
    /// identity source is missing, 403 on a denial, the authorizer's own answer for an
    /// ext_authz denial, and [`AuthorizerSettings::failure_status`] when the call fails).
    pub async fn decide(
        &self,
        asked: &Asked<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Reject> {
        let name = &*self.settings.name;
        let Some(identity) = self.identity(asked) else {
            tracing::info!(
                authorizer = name,
                "identity source missing: not calling the authorizer"
            );
            return Err(Reject::AuthorizerIdentityMissing);
        };
        let cached = match &self.cache {
            None => self.call(asked, &identity).await,
            Some(cache) => {
                let key = self.key(asked, &identity);
                if let Some(hit) = cache.get(&key) {
                    self.metrics.authorizer_cache(name, true);
                    Ok(hit)
                } else {
                    self.metrics.authorizer_cache(name, false);
                    self.call_once(cache, key, asked, &identity).await
                }
            }
        };
        let cached =
            cached.map_err(|_| Reject::AuthorizerFailed(self.settings.failure_status()))?;
        self.evaluate(&cached.verdict, asked)
    }

    /// The identity-source values, in order; `None` when one is missing or empty.
    fn identity(&self, asked: &Asked<'_>) -> Option<Vec<String>> {
        self.settings
            .identity_sources
            .iter()
            .map(|source| {
                let value = match source {
                    // The values are sent (`identitySource`): a cookie source is read without
                    // jwtgate's sign-in cookies.
                    IdentitySource::Header(name) if *name == header::COOKIE => {
                        joined((asked.sent_headers)().get_all(name))
                    }
                    IdentitySource::Header(name) => joined(asked.headers.get_all(name)),
                    IdentitySource::Query(name) => query_pairs(asked.query)
                        .filter(|(k, _)| k == name)
                        .map(|(_, v)| v)
                        .collect::<Vec<_>>()
                        .join(","),
                    IdentitySource::Context(ContextVar::SourceIp) => asked.peer.to_string(),
                    IdentitySource::Context(ContextVar::RouteKey) => asked.route_key(),
                    IdentitySource::Context(ContextVar::HttpMethod) => asked.method.to_string(),
                    IdentitySource::Context(ContextVar::Path) => asked.path.to_owned(),
                };
                (!value.trim().is_empty()).then_some(value)
            })
            .collect()
    }

    /// The cache key: length-prefixed parts, so no two different part lists share one.
    fn key(&self, asked: &Asked<'_>, identity: &[String]) -> Vec<u8> {
        let mut key = Vec::new();
        let mut part = |bytes: &[u8]| {
            key.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
            key.extend_from_slice(bytes);
        };
        for value in identity {
            part(value.as_bytes());
        }
        if self.settings.cache_key == CacheKey::Route {
            part(asked.method.as_str().as_bytes());
            part(asked.route_name.as_bytes());
            part(asked.route.route_path.as_bytes());
        }
        if matches!(self.settings.kind, Kind::ExtAuthz { .. }) {
            // The service decides on the path and query it is sent: they are part of the key.
            part(asked.path.as_bytes());
            part(asked.query.unwrap_or_default().as_bytes());
        }
        key
    }

    /// One call for `key` at a time: the first miss calls, the others wait for its answer.
    /// A decision (allow or deny) is cached before the flight ends; a failure is not cached.
    async fn call_once(
        &self,
        cache: &moka::sync::Cache<Vec<u8>, Arc<Cached>>,
        key: Vec<u8>,
        asked: &Asked<'_>,
        identity: &[String],
    ) -> Result<Arc<Cached>, Failure> {
        let flight: Flight = {
            let mut map = self
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(map.entry(key.clone()).or_default())
        };
        // Leaves the map tidy however this request ends (answered, or dropped mid-call when the
        // client goes away), so no flight outlives its callers.
        let _leave = Leave {
            map: &self.in_flight,
            key: &key,
            flight: &flight,
        };
        flight
            .get_or_init(|| async {
                let result = self.call(asked, identity).await;
                if let Ok(cached) = &result {
                    cache.insert(key.clone(), Arc::clone(cached));
                }
                result
            })
            .await
            .clone()
    }

    /// Calls the authorizer once; the decision with its expiry, or why there is none.
    async fn call(&self, asked: &Asked<'_>, identity: &[String]) -> Result<Arc<Cached>, Failure> {
        let name = &*self.settings.name;
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.settings.timeout, self.exchange(asked, identity))
            .await
            .unwrap_or(Err(Failure::Timeout));
        let seconds = started.elapsed().as_secs_f64();
        let (verdict, size) = match outcome {
            Ok(answer) => answer,
            Err(failure) => {
                tracing::warn!(
                    authorizer = name,
                    result = failure.result().as_str(),
                    "authorizer call failed; refusing the request"
                );
                self.metrics
                    .authorizer_call(name, failure.result(), seconds);
                return Err(failure);
            }
        };
        let result = match &verdict {
            Verdict::Simple { allowed: true, .. } | Verdict::ExtAllow(_) => AuthorizerResult::Allow,
            Verdict::Simple { allowed: false, .. } | Verdict::ExtDeny(_) => AuthorizerResult::Deny,
            Verdict::Policy { statements, .. } => {
                if statements.iter().any(|s| s.allow) {
                    AuthorizerResult::Allow
                } else {
                    AuthorizerResult::Deny
                }
            }
        };
        self.metrics.authorizer_call(name, result, seconds);
        let mut ttl = self.settings.ttl;
        // Never past the expiry of a JWT that is part of the key (verified, or an identity
        // value that reads as one; reading it unverified can only shorten the lifetime).
        let now = crate::token::unix_now();
        let exps = asked
            .jwt
            .map(|(_, _, exp)| exp)
            .into_iter()
            .chain(identity.iter().filter_map(|v| jwt_exp(v)));
        for exp in exps {
            let left = u64::try_from(exp.saturating_sub(now)).unwrap_or(0);
            ttl = ttl.min(Duration::from_secs(left));
        }
        Ok(Arc::new(Cached {
            verdict,
            expires: Instant::now() + ttl,
            weight: u32::try_from(size + 256).unwrap_or(u32::MAX),
        }))
    }

    /// The HTTP exchange: the request for the authorizer's protocol, and its answer read.
    async fn exchange(
        &self,
        asked: &Asked<'_>,
        identity: &[String],
    ) -> Result<(Verdict, usize), Failure> {
        match &self.settings.kind {
            Kind::Lambda {
                response,
                api_arn,
                payload_v1,
            } => {
                let headers = (asked.sent_headers)();
                let event = if *payload_v1 {
                    lambda_event_v1(asked, &headers, identity, api_arn)
                } else {
                    lambda_event(
                        asked,
                        &headers,
                        identity,
                        api_arn,
                        self.settings.send_cookies,
                    )
                };
                let request = match &self.settings.invoke {
                    None => self
                        .http
                        .post(&self.settings.url)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(event.to_string()),
                    Some(invoke) => self.signed_invoke(invoke, event.to_string()).await?,
                };
                let (status, headers, body) = self.send(request).await?;
                if self.settings.invoke.is_some() {
                    lambda_answer(&self.settings.name, status, &headers, &body)?;
                } else if !status.is_success() {
                    return Err(Failure::BadStatus);
                }
                let value: Value = serde_json::from_slice(&body).map_err(|_| Failure::Invalid)?;
                let verdict = match response {
                    ResponseFormat::Simple => parse_simple(&value),
                    ResponseFormat::Iam => parse_policy(&value),
                }
                .ok_or(Failure::Invalid)?;
                Ok((verdict, body.len()))
            }
            Kind::ExtAuthz {
                allowed_headers,
                upstream_headers,
                client_headers,
            } => {
                let mut url = format!(
                    "{}{}",
                    self.settings.url.trim_end_matches('/'),
                    asked.raw_path
                );
                if let Some(q) = asked.query {
                    url.push('?');
                    url.push_str(q);
                }
                let method = reqwest::Method::from_bytes(asked.method.as_str().as_bytes())
                    .map_err(|_| Failure::Invalid)?;
                let sent = (asked.sent_headers)();
                let mut request = self.http.request(method, url);
                for name in allowed_headers {
                    if *name == header::COOKIE && !self.settings.send_cookies {
                        continue;
                    }
                    for value in sent.get_all(name) {
                        request = request.header(name.as_str(), value.as_bytes());
                    }
                }
                if let Some(host) = sent.get(header::HOST) {
                    request = request.header("x-forwarded-host", host.as_bytes());
                }
                let (status, headers, body) = self.send(request).await?;
                let size = body.len()
                    + headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + v.len())
                        .sum::<usize>();
                if status.is_success() {
                    let granted = upstream_headers
                        .iter()
                        .filter_map(|n| headers.get(n).map(|v| (n.clone(), v.clone())))
                        .collect();
                    return Ok((Verdict::ExtAllow(granted), size));
                }
                let mut relayed = HeaderMap::new();
                for (name, value) in &headers {
                    let listed = match client_headers {
                        Some(list) => list.contains(name),
                        None => {
                            !crate::headers::manages(name.as_str())
                                || *name == header::WWW_AUTHENTICATE
                        }
                    };
                    if listed && *name != header::CONTENT_LENGTH {
                        relayed.append(name.clone(), value.clone());
                    }
                }
                Ok((
                    Verdict::ExtDeny(AuthorizerDenial {
                        status,
                        headers: relayed,
                        body,
                    }),
                    size,
                ))
            }
        }
    }

    /// The Invoke API request carrying `body`, signed (SigV4, service `lambda`, the body's hash
    /// signed) with the credentials of the configured source, got now (cached by the source).
    async fn signed_invoke(
        &self,
        invoke: &Invoke,
        body: String,
    ) -> Result<reqwest::RequestBuilder, Failure> {
        let name = &*self.settings.name;
        let Some(source) = &self.credentials else {
            return Err(Failure::Credentials);
        };
        let credentials = source
            .credentials(&crate::aws::Principal::Guest)
            .await
            .map_err(|e| {
                tracing::warn!(authorizer = name, error = %e, "no AWS credentials to invoke the function");
                Failure::Credentials
            })?;
        let uri: http::Uri = self.settings.url.parse().map_err(|_| Failure::Invalid)?;
        let authority = uri.authority().cloned().ok_or(Failure::Invalid)?;
        let (mut parts, ()) = http::Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
            .map_err(|_| Failure::Invalid)?
            .into_parts();
        let hash = hex_lower(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body.as_bytes()).as_ref(),
        );
        let scope = crate::aws::SigningScope::new("lambda", invoke.region.as_str());
        crate::aws::sign(
            &mut parts,
            &authority,
            &scope,
            &credentials,
            crate::aws::Payload::Sha256(&hash),
            std::time::SystemTime::now(),
        )
        .map_err(|e| {
            tracing::warn!(authorizer = name, error = %e, "the Invoke request could not be signed");
            Failure::Credentials
        })?;
        let mut request = self.http.post(&self.settings.url).body(body);
        for (n, v) in &parts.headers {
            request = request.header(n.as_str(), v.as_bytes());
        }
        Ok(request)
    }

    /// Sends `request`; its status, headers and body (at most [`MAX_RESPONSE_BYTES`]).
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Failure> {
        let mut response = request.send().await.map_err(|e| {
            tracing::debug!(error = %e, "authorizer request failed");
            if e.is_timeout() {
                Failure::Timeout
            } else {
                Failure::Unreachable
            }
        })?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(Failure::TooLarge);
        }
        let status =
            StatusCode::from_u16(response.status().as_u16()).map_err(|_| Failure::Invalid)?;
        let mut headers = HeaderMap::new();
        for (name, value) in response.headers() {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_str().as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.append(n, v);
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|_| Failure::Unreachable)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Failure::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, Bytes::from(body)))
    }

    /// A decision applied to this request: the upstream headers, or the refusal.
    fn evaluate(
        &self,
        verdict: &Verdict,
        asked: &Asked<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Reject> {
        let context = match verdict {
            Verdict::Simple { allowed: false, .. } => return Err(Reject::AuthorizerDenied),
            Verdict::Simple { context, .. } => context,
            Verdict::Policy {
                statements,
                context,
            } => {
                let Kind::Lambda { api_arn, .. } = &self.settings.kind else {
                    return Err(Reject::AuthorizerDenied);
                };
                let arn = route_arn(api_arn, asked);
                if !policy_allows(statements, &arn) {
                    return Err(Reject::AuthorizerDenied);
                }
                context
            }
            Verdict::ExtAllow(headers) => return Ok(headers.clone()),
            Verdict::ExtDeny(denial) => {
                return Err(Reject::AuthorizerAnswered(Box::new(denial.clone())));
            }
        };
        let mut out = Vec::with_capacity(self.settings.context_headers.len());
        for (header, key) in &self.settings.context_headers {
            let Some(value) = context.get(key) else {
                continue;
            };
            let text = crate::headers::render_claim(value);
            match context_header_value(&text) {
                Some(v) => out.push((header.clone(), v)),
                None => {
                    tracing::warn!(
                        authorizer = &*self.settings.name,
                        key = key.as_str(),
                        "authorizer context value is not a valid header value; refusing the request"
                    );
                    return Err(Reject::AuthorizerFailed(self.settings.failure_status()));
                }
            }
        }
        Ok(out)
    }
}

/// Removes a flight from the in-flight map when its answer is in (any request may, once) or
/// when the last request waiting for it leaves without one.
struct Leave<'a> {
    map: &'a Mutex<HashMap<Vec<u8>, Flight>>,
    key: &'a [u8],
    flight: &'a Flight,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ours = map
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight));
        // Two holders: the map and this request.
        if ours && (self.flight.initialized() || Arc::strong_count(self.flight) <= 2) {
            map.remove(self.key);
        }
    }
}

/// A header's values joined with `,` (values that are not text are left out).
fn joined(values: http::header::GetAll<'_, HeaderValue>) -> String {
    values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks an Invoke API answer: a function that failed (`X-Amz-Function-Error`, its error
/// object as the body) or an error of Lambda itself (throttling, access denied, no such
/// function) is a failure, logged with Lambda's error type, never an allow.
fn lambda_answer(
    name: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Failure> {
    let text = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(100)
            .collect::<String>()
    };
    if headers.contains_key("x-amz-function-error") {
        let error_type = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| {
                v.get("errorType")?
                    .as_str()
                    .map(|s| s.chars().take(100).collect::<String>())
            })
            .unwrap_or_default();
        tracing::warn!(
            authorizer = name,
            function_error = text("x-amz-function-error"),
            error_type,
            "the authorizer function failed"
        );
        return Err(Failure::FunctionError);
    }
    if !status.is_success() {
        // `x-amzn-ErrorType` (`TooManyRequestsException`, `AccessDeniedException`,
        // `ResourceNotFoundException`, …); the message is not logged: it may quote the ARNs.
        tracing::warn!(
            authorizer = name,
            status = status.as_u16(),
            error_type = text("x-amzn-errortype"),
            "Lambda refused the Invoke call"
        );
        return Err(Failure::BadStatus);
    }
    Ok(())
}

/// Lowercase hex.
fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A context value as a header value: no control characters, no leading or trailing space.
fn context_header_value(text: &str) -> Option<HeaderValue> {
    let clean = !text.bytes().any(|b| b < 0x20 || b == 0x7F)
        && !text.starts_with(' ')
        && !text.ends_with(' ');
    clean.then(|| HeaderValue::from_str(text).ok()).flatten()
}

/// `api_arn/METHOD/path` (the normalised path, without its leading `/`), as API Gateway builds
/// `routeArn` / `methodArn`.
fn route_arn(api_arn: &str, asked: &Asked<'_>) -> String {
    format!("{api_arn}/{}{}", asked.method, asked.path)
}

/// IAM evaluation for `execute-api:Invoke` on `arn`: an explicit Deny wins, else an Allow is
/// needed; no matching statement denies.
fn policy_allows(statements: &[Statement], arn: &str) -> bool {
    let applies = |s: &Statement| {
        s.actions.iter().any(|a| glob(a, "execute-api:Invoke"))
            && s.resources.iter().any(|r| glob(r, arn))
    };
    let mut allowed = false;
    for s in statements.iter().filter(|s| applies(s)) {
        if !s.allow {
            return false;
        }
        allowed = true;
    }
    allowed
}

/// IAM's wildcard match: `*` any run of characters (`/` included), `?` one character.
/// Iterative with one backtrack point: linear-ish, no recursion on hostile input.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `{"isAuthorized": bool, "context": {…}?}`.
fn parse_simple(value: &Value) -> Option<Verdict> {
    let allowed = value.get("isAuthorized")?.as_bool()?;
    let context = context_of(value)?;
    Some(Verdict::Simple { allowed, context })
}

/// `{"principalId", "policyDocument": {"Statement": [...]}, "context"}`.
fn parse_policy(value: &Value) -> Option<Verdict> {
    let doc = value.get("policyDocument")?;
    let statements = match doc.get("Statement")? {
        Value::Array(list) => list
            .iter()
            .map(parse_statement)
            .collect::<Option<Vec<_>>>()?,
        one @ Value::Object(_) => vec![parse_statement(one)?],
        _ => return None,
    };
    let context = context_of(value)?;
    Some(Verdict::Policy {
        statements,
        context,
    })
}

fn parse_statement(value: &Value) -> Option<Statement> {
    let allow = match value.get("Effect")?.as_str()? {
        "Allow" => true,
        "Deny" => false,
        _ => return None,
    };
    let strings = |v: &Value| -> Option<Vec<String>> {
        match v {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => None,
        }
    };
    Some(Statement {
        allow,
        actions: strings(value.get("Action")?)?,
        resources: strings(value.get("Resource")?)?,
    })
}

/// The optional `context` object (absent or null: empty).
fn context_of(value: &Value) -> Option<Map<String, Value>> {
    match value.get("context") {
        None | Some(Value::Null) => Some(Map::new()),
        Some(Value::Object(map)) => Some(map.clone()),
        Some(_) => None,
    }
}

/// `exp` of a value that reads as a JWT (`Bearer ` optional), unverified.
fn jwt_exp(value: &str) -> Option<i64> {
    use base64::Engine as _;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value);
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_i64()
}

/// `k=v` pairs of a query, percent-decoded (`+` as space), as API Gateway reads them.
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// API Gateway's payload format 2.0 `REQUEST` event for `asked`.
fn lambda_event(
    asked: &Asked<'_>,
    sent: &HeaderMap,
    identity: &[String],
    api_arn: &str,
    send_cookies: bool,
) -> Value {
    let mut headers = Map::new();
    for name in sent.keys() {
        if *name == header::COOKIE {
            continue;
        }
        let values: Vec<&str> = sent
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        headers.insert(name.as_str().to_owned(), Value::String(values.join(",")));
    }
    let cookies: Vec<Value> = if send_cookies {
        sent.get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| Value::String(c.to_owned()))
            .collect()
    } else {
        Vec::new()
    };
    let mut query = Map::new();
    for (k, v) in query_pairs(asked.query) {
        match query.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                query.insert(k, Value::String(v));
            }
        }
    }
    let (account, api_id, stage) = arn_parts(api_arn);
    let host = sent
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let route_key = asked.route_key();
    let mut request_context = json!({
        "accountId": account,
        "apiId": api_id,
        "domainName": host,
        "domainPrefix": host.split('.').next().unwrap_or_default(),
        "http": {
            "method": asked.method.as_str(),
            "path": asked.raw_path,
            "protocol": format!("{:?}", asked.version),
            "sourceIp": asked.peer.to_string(),
            "userAgent": sent.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default(),
        },
        "requestId": asked.request_id,
        "routeKey": route_key,
        "stage": stage,
        "time": clf_time(u64::try_from(millis / 1000).unwrap_or(0)),
        "timeEpoch": u64::try_from(millis).unwrap_or(0),
    });
    if let (Some((claims, scopes, _)), Some(ctx)) = (asked.jwt, request_context.as_object_mut()) {
        // As API Gateway fills it for JWT authorizers: claim values as strings.
        let claims: Map<String, Value> = claims
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(crate::headers::render_claim(v))))
            .collect();
        let scopes = if scopes.is_empty() {
            Value::Null
        } else {
            json!(scopes)
        };
        ctx.insert(
            "authorizer".into(),
            json!({ "jwt": { "claims": claims, "scopes": scopes } }),
        );
    }
    let mut event = json!({
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": route_arn(api_arn, asked),
        "identitySource": identity,
        "routeKey": route_key,
        "rawPath": asked.raw_path,
        "rawQueryString": asked.query.unwrap_or_default(),
        "headers": headers,
        "requestContext": request_context,
    });
    if let Some(map) = event.as_object_mut() {
        if !cookies.is_empty() {
            map.insert("cookies".into(), Value::Array(cookies));
        }
        if !query.is_empty() {
            map.insert("queryStringParameters".into(), Value::Object(query));
        }
        let params = asked.path_parameters();
        if !params.is_empty() {
            map.insert("pathParameters".into(), Value::Object(params));
        }
    }
    event
}

/// Payload format 1.0 (API Gateway's REST `REQUEST` authorizer event, which HTTP APIs also
/// send with `authorizerPayloadFormatVersion` 1.0): single- and multi-value headers and query
/// parameters, `methodArn`, the identity values joined with `,`.
fn lambda_event_v1(
    asked: &Asked<'_>,
    sent: &HeaderMap,
    identity: &[String],
    api_arn: &str,
) -> Value {
    let mut headers = Map::new();
    let mut multi_headers = Map::new();
    for name in sent.keys() {
        let values: Vec<Value> = sent
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| Value::String(v.to_owned()))
            .collect();
        if let Some(last) = values.last() {
            headers.insert(name.as_str().to_owned(), last.clone());
            multi_headers.insert(name.as_str().to_owned(), Value::Array(values));
        }
    }
    let mut query = Map::new();
    let mut multi_query = Map::new();
    for (k, v) in query_pairs(asked.query) {
        query.insert(k.clone(), Value::String(v.clone()));
        if let Value::Array(list) = multi_query
            .entry(k)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(Value::String(v));
        }
    }
    let (account, api_id, stage) = arn_parts(api_arn);
    let joined = identity.join(",");
    let params = asked.path_parameters();
    let or_null = |m: Map<String, Value>| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Object(m)
        }
    };
    json!({
        "version": "1.0",
        "type": "REQUEST",
        "methodArn": route_arn(api_arn, asked),
        "identitySource": joined,
        "authorizationToken": joined,
        "resource": &*asked.route.route_path,
        "path": asked.raw_path,
        "httpMethod": asked.method.as_str(),
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": or_null(query),
        "multiValueQueryStringParameters": or_null(multi_query),
        "pathParameters": or_null(params),
        "stageVariables": Value::Null,
        "requestContext": {
            "accountId": account,
            "apiId": api_id,
            "httpMethod": asked.method.as_str(),
            "identity": {
                "sourceIp": asked.peer.to_string(),
                "userAgent": sent.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
            },
            "path": asked.raw_path,
            "requestId": asked.request_id,
            "resourceId": asked.route_key(),
            "resourcePath": &*asked.route.route_path,
            "stage": stage,
        },
    })
}

/// Account, API id and stage of `arn:aws:execute-api:REGION:ACCOUNT:API_ID/STAGE`.
fn arn_parts(api_arn: &str) -> (&str, &str, &str) {
    let mut fields = api_arn.splitn(6, ':');
    let account = fields.nth(4).unwrap_or_default();
    let rest = fields.next().unwrap_or_default();
    let (api, stage) = rest.split_once('/').unwrap_or((rest, ""));
    (account, api, stage)
}

/// Whether `text` is an `api_arn`: `arn:PARTITION:execute-api:REGION:ACCOUNT:API_ID/STAGE`,
/// without wildcards.
pub fn valid_api_arn(text: &str) -> bool {
    let fields: Vec<&str> = text.splitn(6, ':').collect();
    matches!(fields.as_slice(), ["arn", partition, "execute-api", region, account, rest]
        if !partition.is_empty() && !region.is_empty() && !account.is_empty()
            && rest.split_once('/').is_some_and(|(api, stage)| !api.is_empty() && !stage.is_empty() && !stage.contains('/')))
        && !text.contains(['*', '?'])
}

/// `12/Mar/2020:19:03:58 +0000` (API Gateway's `time`) for Unix seconds `secs`.
fn clf_time(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = MONTHS
        .get(usize::try_from(month - 1).unwrap_or(0))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{day:02}/{month_name}/{year}:{:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_wildcards_match_like_iam() {
        let arn = "arn:aws:execute-api:us-east-1:123456789012:abc/$default/GET/orders/7";
        assert!(glob(
            "arn:aws:execute-api:us-east-1:123456789012:abc/*/GET/orders/*",
            arn
        ));
        assert!(glob("*", arn));
        assert!(glob(
            "arn:aws:execute-api:*:*:abc/$default/GET/orders/?",
            arn
        ));
        assert!(!glob(
            "arn:aws:execute-api:us-east-1:123456789012:abc/*/POST/*",
            arn
        ));
        assert!(!glob(
            "arn:aws:execute-api:us-east-1:123456789012:abc/$default/GET/orders",
            arn
        ));
        assert!(glob("execute-api:*", "execute-api:Invoke"));
    }

    #[test]
    fn explicit_deny_wins_and_no_statement_denies() {
        let s = |allow, r: &str| Statement {
            allow,
            actions: vec!["execute-api:Invoke".into()],
            resources: vec![r.into()],
        };
        let arn = "arn:x/$default/GET/a";
        assert!(policy_allows(&[s(true, "*")], arn));
        assert!(!policy_allows(
            &[s(true, "*"), s(false, "arn:x/*/GET/*")],
            arn
        ));
        assert!(!policy_allows(&[s(true, "arn:x/*/POST/*")], arn));
        assert!(!policy_allows(&[], arn));
    }

    #[test]
    fn responses_of_the_wrong_shape_are_refused() {
        assert!(parse_simple(&json!({"isAuthorized": "true"})).is_none());
        assert!(parse_simple(&json!({"isAuthorized": true, "context": []})).is_none());
        assert!(parse_simple(&json!({"isAuthorized": false})).is_some());
        assert!(parse_policy(&json!({"principalId": "u"})).is_none());
        assert!(
            parse_policy(&json!({"policyDocument": {"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}}))
                .is_none()
        );
        assert!(
            parse_policy(&json!({"policyDocument": {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": ["*"]}}}))
                .is_some()
        );
    }

    #[test]
    fn api_gateway_time_and_arns() {
        assert_eq!(clf_time(1_583_348_638), "04/Mar/2020:19:03:58 +0000");
        assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
        assert!(valid_api_arn(DEFAULT_API_ARN));
        assert!(valid_api_arn(
            "arn:aws:execute-api:us-east-1:123456789012:abcdef123/test"
        ));
        assert!(!valid_api_arn(
            "arn:aws:execute-api:us-east-1:123456789012:abcdef123"
        ));
        assert!(!valid_api_arn(
            "arn:aws:execute-api:us-east-1:*:abcdef123/test"
        ));
        assert_eq!(
            arn_parts("arn:aws:execute-api:us-east-1:123456789012:abcdef123/test"),
            ("123456789012", "abcdef123", "test")
        );
    }

    fn settings(url: String) -> AuthorizerSettings {
        AuthorizerSettings {
            name: Arc::from("t"),
            kind: Kind::Lambda {
                payload_v1: false,
                response: ResponseFormat::Simple,
                api_arn: DEFAULT_API_ARN.into(),
            },
            url,
            invoke: None,
            identity_sources: vec![IdentitySource::Header(header::AUTHORIZATION)],
            identity_source_text: vec!["$request.header.Authorization".into()],
            ttl: DEFAULT_TTL,
            cache_key: CacheKey::Route,
            cache_bytes: DEFAULT_CACHE_BYTES,
            timeout: Duration::from_secs(30),
            context_headers: Vec::new(),
            send_cookies: true,
        }
    }

    /// A request whose client goes away while the authorizer has not answered leaves no flight
    /// behind (the in-flight map stays bounded by the requests in flight).
    #[tokio::test]
    async fn an_abandoned_call_leaves_no_flight() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let authorizer = Authorizer::new(settings(url), Arc::new(Metrics::new())).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("token"));
        let route = RouteAuthorizer {
            index: 0,
            route_path: Arc::from("/x"),
            proxy_after: None,
        };
        let asked = Asked {
            method: &Method::GET,
            raw_path: "/x",
            path: "/x",
            query: None,
            headers: &headers,
            sent_headers: &|| HeaderMap::new(),
            peer: IpAddr::from([127, 0, 0, 1]),
            version: http::Version::HTTP_11,
            request_id: "r",
            route_name: "x",
            route: &route,
            captures: Vec::new(),
            jwt: None,
        };
        let abandoned =
            tokio::time::timeout(Duration::from_millis(200), authorizer.decide(&asked)).await;
        assert!(abandoned.is_err(), "the authorizer never answers");
        assert!(authorizer.in_flight.lock().unwrap().is_empty());
        hold.abort();
    }

    #[test]
    fn an_unverified_jwt_exp_is_read_only_from_a_jwt() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":42}"#);
        assert_eq!(jwt_exp(&format!("Bearer e30.{payload}.sig")), Some(42));
        assert_eq!(jwt_exp("an-api-key"), None);
        assert_eq!(jwt_exp("a.b.c.d"), None);
    }
}

//! The checked configuration the runtime reads: what `compile` builds from the TOML file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Uri};

use crate::authz::Requirements;
use crate::cors::Cors;
use crate::headers::HeaderPlan;
use crate::jwks::KeySettings;
use crate::login::LoginSettings;
use crate::routes::{PathOptions, PathRewrite, Router};
use crate::tls::{ServerTls, UpstreamTls};
use crate::token::IssuerPolicy;
use crate::trace::{ExportSettings, Sampler};

/// How a route authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid bearer token is required.
    Jwt,
    /// A token is validated when present; anonymous requests pass.
    Optional,
    /// Anonymous (identity headers are still stripped).
    None,
    /// Browser sign-in with a session cookie (`[login]`).
    Login,
}

impl AuthMode {
    /// The word `auth = "…"` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Jwt => "jwt",
            AuthMode::Optional => "optional",
            AuthMode::None => "none",
            AuthMode::Login => "login",
        }
    }
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Metric and log label.
    pub name: Arc<str>,
    /// Authentication mode.
    pub auth: AuthMode,
    /// Requirements on the token.
    pub requirements: Requirements,
    /// Pass CORS preflights upstream without authentication.
    pub preflight_forward: bool,
    /// Override headers this route passes upstream (usually none).
    pub keep_override_headers: Vec<HeaderName>,
    /// With `auth = "login"`: the name of the sign-in provider whose sessions it accepts.
    pub login: Option<Arc<str>>,
    /// Headers carrying captured values upstream: header and capture index in the pattern.
    pub capture_headers: Vec<(HeaderName, usize)>,
    /// What happens to the path before it goes upstream (`strip_prefix`, `add_prefix`).
    pub rewrite: PathRewrite,
    /// Where this route forwards: an index into [`Config::upstreams`] (and `Snapshot::upstreams`),
    /// so choosing the upstream costs no lookup by name per request.
    pub upstream: usize,
    /// The Cedar policy set deciding this route's requests (`policy = …`), if any.
    pub policy: Option<RoutePolicy>,
    /// The external authorizer that decides after the route's requirements (`authorizer =
    /// "NAME"`), if any.
    pub authorizer: Option<crate::authorizer::RouteAuthorizer>,
    /// SigV4 signing of the requests it forwards (its own `aws_sigv4`, else its upstream's),
    /// if any.
    pub aws_sigv4: Option<Arc<crate::aws::Signing>>,
}

/// A route's Cedar policy set and the path template its actions are named with.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    /// The set: an index into [`Config::policies`].
    pub set: usize,
    /// The route's path pattern as written (`/pets/{petId}`): actions are
    /// `"<method> <template>"`, as in AVP's API-linked policy stores.
    pub template: Arc<str>,
}

impl Route {
    /// The path the upstream receives for the normalised, matched `path`, below the upstream
    /// URL's own path prefix (which the upstream adds).
    pub fn upstream_path<'p>(&self, path: &'p str) -> std::borrow::Cow<'p, str> {
        self.rewrite.apply(path)
    }
}

/// Listener limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Time allowed to send the request head.
    pub header_read_timeout: Duration,
    /// Most concurrent client connections.
    pub max_connections: usize,
    /// Time SIGTERM waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Time to keep serving, not ready, after SIGTERM.
    pub shutdown_delay: Duration,
    /// Most bytes of request bodies held whole at once (signed AWS payloads), all requests
    /// together.
    pub max_buffered_body_bytes: usize,
}

/// Where allowed requests go. Equal settings let a reload keep the upstream's warm pool.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// `default` for `[upstream]`, else the `[[upstreams]]` name: what routes, metrics and logs
    /// call it.
    pub name: Arc<str>,
    /// `scheme://authority` of the first address: the authority of HTTP/2 request targets, and
    /// the `Host` of a request that came without one.
    pub origin: Uri,
    /// Every address, `scheme://authority` each (`origin` first): requests take turns among
    /// them. One for `url`, several for `urls`.
    pub origins: Vec<Uri>,
    /// Path prefix from the URL, without a trailing `/` (often empty).
    pub path_prefix: String,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time to the response head.
    pub response_timeout: Duration,
    /// Idle pooled connections live this long.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept.
    pub pool_max_idle: usize,
    /// HTTP/2 to the upstream.
    pub http2: bool,
    /// TLS settings for an `https://` upstream.
    pub tls: Option<UpstreamTls>,
}

/// A checked configuration: everything but live key stores.
#[derive(Debug)]
pub struct Config {
    /// The file it came from (for messages).
    pub source: String,
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Listener limits.
    pub limits: Limits,
    /// The upstreams: `[upstream]` (named `default`) first, then `[[upstreams]]` in file
    /// order. Routes hold indices into it.
    pub upstreams: Vec<UpstreamSettings>,
    /// Issuers with the settings of their key stores.
    pub issuers: Vec<(Arc<IssuerPolicy>, KeySettings)>,
    /// How request paths are normalised and matched (`[paths]`).
    pub paths: PathOptions,
    /// Routes in file order.
    pub routes: Router<Route>,
    /// Header plan.
    pub headers: HeaderPlan,
    /// Verified-token cache size, bytes.
    pub token_cache_bytes: u64,
    /// Browser sign-in providers: `[login]` (named `default`) first, then `[[logins]]` in
    /// file order. Names, cookie names and paths are unique.
    pub logins: Vec<LoginSettings>,
    /// Path prefix of the forward-auth endpoint, when `[forward_auth]` is configured.
    pub forward_auth: Option<String>,
    /// TLS on the proxy listener.
    pub tls: Option<ServerTls>,
    /// CORS, when `[cors]` is configured.
    pub cors: Option<Cors>,
    /// Sampling and OpenTelemetry export: `[tracing]` and the `OTEL_*` environment variables.
    pub tracing: TracingSettings,
    /// Cedar policy sets: `[policies]` (named `default`) first, then `[[policy_sets]]`.
    pub policies: Vec<Arc<crate::policy::PolicyStore>>,
    /// External authorizers (`[[authorizers]]`), in file order; routes hold indices.
    pub authorizers: Vec<crate::authorizer::AuthorizerSettings>,
    /// `[[aws_credentials]]`: named credential sources, in file order.
    pub aws_credentials: Vec<crate::aws::SourceSettings>,
}

impl Config {
    /// The other files the configuration names (policy files, with their wildcards, and
    /// schemas): hot reload watches them too.
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        self.policies
            .iter()
            .flat_map(|p| p.files.iter().cloned())
            .collect()
    }
}

/// `[tracing]` and the OpenTelemetry environment variables, merged (the file wins).
#[derive(Debug, Clone, Default)]
pub struct TracingSettings {
    /// Decides the `sampled` flag sent upstream, and which spans are exported.
    pub sampler: Sampler,
    /// Span export, when an endpoint is configured (and `OTEL_SDK_DISABLED` is not `true`).
    pub export: Option<ExportSettings>,
}

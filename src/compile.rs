//! From the file as written to what the hot path needs. Every check lives here; every problem
//! is collected (not just the first) and reported as `file:line:col: key: reason`.

use std::collections::HashSet;
use std::fmt::{self, Display, Write as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;
use toml::Spanned;

use crate::authz::{ClaimMatcher, Requirements};
use crate::config::{self, ClaimValues, RawConfig};
use crate::cors::Cors;
use crate::headers::{self, ALB_IDENTITY_HEADERS, HeaderPlan};
use crate::jwks::{KeySettings, KeySource};
use crate::login::alb::{AlbSigner, DEFAULT_SIGNER};
use crate::login::cookies::CookieKeys;
use crate::login::oidc::{ClientAuth, EndpointConfig, Endpoints};
use crate::login::{CALLBACK_PATH, LoginSettings, OnUnauthenticated, Redacted};
use crate::routes::{PathOptions, Pattern, Router, Semicolons};
use crate::tls::{ServerTls, UpstreamTls};
use crate::token::{IssuerPolicy, TokenUse};
use crate::trace::{self, ExportSettings, OtelEnv, Protocol, Ratio, Sampler, SamplerKind};

// Re-exported for one step: the runtime now imports these from `crate::settings`.
pub use crate::settings::{AuthMode, Config, Limits, Route, TracingSettings, UpstreamSettings};

/// Default `[server].max_header_bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Smallest `max_header_bytes` (hyper's lower bound for its read buffer).
pub const MIN_MAX_HEADER_BYTES: usize = 8192;
/// Default `[server].max_headers`.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default `[server].header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `[server].max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `[server].drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `[upstream].connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `[upstream].response_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `[upstream].pool_idle_timeout`.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default `[upstream].pool_max_idle`.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// Default `leeway` of an issuer.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default `refresh_interval` of an issuer.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// Default `min_refetch_interval` of an issuer.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Default `fetch_timeout` of an issuer.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `[token_cache].max_bytes`.
pub const DEFAULT_TOKEN_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Every problem found, one `file:line:col: key: reason` per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

struct Diags<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<String>,
}

impl Diags<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    fn err(&mut self, span: Range<usize>, key: impl Display, reason: impl Display) {
        let (line, col) = self.position(span.start);
        self.errors
            .push(format!("{}:{line}:{col}: {key}: {reason}", self.file));
    }

    fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) => d,
                Err(reason) => {
                    self.err(v.span(), key, reason);
                    default
                }
            },
        }
    }

    /// One of a closed set of words; `default` when absent, an error naming the choices when
    /// the word is not among them.
    fn choice<T: Copy>(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(v) = value else {
            return default;
        };
        match options
            .iter()
            .find(|(word, _)| *word == v.get_ref().as_str())
        {
            Some((_, t)) => *t,
            None => {
                let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
                self.err(
                    v.span(),
                    key,
                    format!("{:?} must be {}", v.get_ref(), words.join(", ")),
                );
                default
            }
        }
    }

    fn bounded(
        &mut self,
        value: &Option<Spanned<u64>>,
        key: &str,
        range: Range<u64>,
        default: usize,
    ) -> usize {
        match value {
            None => default,
            Some(v) if range.contains(v.get_ref()) => {
                usize::try_from(*v.get_ref()).unwrap_or(default)
            }
            Some(v) => {
                self.err(
                    v.span(),
                    key,
                    format!("must be between {} and {}", range.start, range.end - 1),
                );
                default
            }
        }
    }

    fn socket(&mut self, value: &Option<Spanned<String>>, key: &str, default: &str) -> SocketAddr {
        let (text, span) = match value {
            Some(v) => (v.get_ref().as_str(), v.span()),
            None => (default, 0..0),
        };
        text.parse().unwrap_or_else(|_| {
            self.err(
                span,
                key,
                format!("{text:?} is not an address like 0.0.0.0:8080"),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration like \"500ms\", \"10s\", \"5m\", \"1h\"")
    })?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{text:?}: unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

fn strings(list: &Option<Spanned<Vec<Spanned<String>>>>) -> Vec<&Spanned<String>> {
    list.as_ref()
        .map(|l| l.get_ref().iter().collect())
        .unwrap_or_default()
}

/// Reads and checks a config file's text. `file` is only used in messages. The OpenTelemetry
/// variables (`[tracing]`) come from the process environment.
pub fn compile(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    compile_with_env(file, text, |name| std::env::var(name).ok())
}

/// [`compile`], with the OpenTelemetry variables read through `env` (tests pass a map).
pub fn compile_with_env(
    file: &str,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut d = Diags {
        file,
        text,
        errors: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            d.err(span, "toml", e.message().trim());
            return Err(ConfigErrors(d.errors));
        }
    };

    // [server]
    let s = &raw.server;
    let listen = d.socket(&s.listen, "server.listen", config::DEFAULT_LISTEN);
    let admin_listen = d.socket(
        &s.admin_listen,
        "server.admin_listen",
        config::DEFAULT_ADMIN_LISTEN,
    );
    let limits = Limits {
        max_header_bytes: d.bounded(
            &s.max_header_bytes,
            "server.max_header_bytes",
            MIN_MAX_HEADER_BYTES as u64..1024 * 1024 + 1,
            DEFAULT_MAX_HEADER_BYTES,
        ),
        max_headers: d.bounded(
            &s.max_headers,
            "server.max_headers",
            1..1001,
            DEFAULT_MAX_HEADERS,
        ),
        header_read_timeout: d.duration(
            &s.header_read_timeout,
            "server.header_read_timeout",
            DEFAULT_HEADER_READ_TIMEOUT,
        ),
        max_connections: d.bounded(
            &s.max_connections,
            "server.max_connections",
            1..1_000_001,
            DEFAULT_MAX_CONNECTIONS,
        ),
        drain_timeout: d.duration(
            &s.drain_timeout,
            "server.drain_timeout",
            DEFAULT_DRAIN_TIMEOUT,
        ),
        shutdown_delay: d.duration(&s.shutdown_delay, "server.shutdown_delay", Duration::ZERO),
    };
    if limits.header_read_timeout.is_zero() {
        if let Some(v) = &s.header_read_timeout {
            d.err(
                v.span(),
                "server.header_read_timeout",
                "must be more than 0",
            );
        }
    }
    let mut trusted_proxies = Vec::new();
    for cidr in strings(&s.trusted_proxies) {
        let text = cidr.get_ref();
        match text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => d.err(
                cidr.span(),
                "server.trusted_proxies",
                format!("{text:?} is not a CIDR like 10.0.0.0/8"),
            ),
        }
    }

    // [paths]: before anything that normalises or parses a path.
    let paths = PathOptions {
        semicolons: d.choice(
            &raw.paths.semicolons,
            "paths.semicolons",
            &[("reject", Semicolons::Reject), ("allow", Semicolons::Allow)],
            Semicolons::Reject,
        ),
        case_insensitive: raw
            .paths
            .case_insensitive
            .as_ref()
            .is_some_and(|c| *c.get_ref()),
    };

    let server_tls = s
        .tls
        .as_ref()
        .and_then(|t| compile_server_tls(&mut d, t.get_ref()));

    // [upstream]
    let upstream = match &raw.upstream {
        None => {
            d.err(
                0..0,
                "upstream",
                "missing [upstream] table with url = \"http://host:port\"",
            );
            None
        }
        Some(u) => compile_upstream(&mut d, u.get_ref()),
    };

    // [[issuers]]
    let mut issuers = Vec::new();
    let mut names = HashSet::new();
    let mut iss_seen = HashSet::new();
    for (i, raw_issuer) in raw.issuers.iter().enumerate() {
        let key = format!("issuers[{i}]");
        if let Some(compiled) = compile_issuer(&mut d, &key, raw_issuer) {
            let (policy, _) = &compiled;
            if !names.insert(Arc::clone(&policy.name)) {
                d.err(
                    raw_issuer.span(),
                    format!("{key}.name"),
                    format!("duplicate issuer name {:?}", policy.name),
                );
            }
            if !iss_seen.insert(Arc::clone(&policy.issuer)) {
                d.err(
                    raw_issuer.span(),
                    format!("{key}.issuer"),
                    format!("issuer {:?} is configured twice", policy.issuer),
                );
            }
            issuers.push(compiled);
        }
    }

    // [[routes]]
    let mut routes = Router::new();
    if raw.routes.is_empty() {
        d.err(0..0, "routes", "no [[routes]]: every request would be 404");
    }
    for (i, raw_route) in raw.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        if let Some((pattern, methods, route)) =
            compile_route(&mut d, &key, raw_route.get_ref(), &names, paths)
        {
            if matches!(route.auth, AuthMode::Jwt | AuthMode::Optional) && raw.issuers.is_empty() {
                d.err(
                    raw_route.span(),
                    format!("{key}.auth"),
                    "needs tokens but no [[issuers]] are configured",
                );
            }
            routes.push(pattern, methods, route);
        }
    }

    // [headers]
    let headers = compile_headers(&mut d, &raw.headers, trusted_proxies);

    // [login]
    let login = raw
        .login
        .as_ref()
        .and_then(|l| compile_login(&mut d, l, paths));

    // [tracing], over the OpenTelemetry environment variables
    let tracing = compile_tracing(&mut d, raw.tracing.as_ref(), trace::read_env(env));

    // [cors]
    let cors = raw
        .cors
        .as_ref()
        .and_then(|c| compile_cors(&mut d, c.get_ref()));

    // [forward_auth]
    let forward_auth = raw.forward_auth.as_ref().map(|fa| {
        let path = fa
            .get_ref()
            .path
            .as_ref()
            .map_or_else(|| "/auth".to_owned(), |p| p.get_ref().clone());
        let normal = crate::routes::normalize(&path, paths)
            .ok()
            .is_some_and(|n| n == path);
        if !normal || path == "/" || path.ends_with('/') {
            let span = fa.get_ref().path.as_ref().map_or(fa.span(), Spanned::span);
            d.err(
                span,
                "forward_auth.path",
                format!("{path:?} must be a normalised path like /auth"),
            );
        }
        if let Some(l) = &login {
            if path == CALLBACK_PATH || path == l.logout_path {
                d.err(
                    fa.span(),
                    "forward_auth.path",
                    "collides with the sign-in paths",
                );
            }
        }
        path
    });
    let needs_login = routes.iter().any(|(_, _, r)| r.auth == AuthMode::Login);
    if needs_login && raw.login.is_none() {
        d.err(
            0..0,
            "login",
            "routes use auth = \"login\" but there is no [login] table",
        );
    }

    let token_cache_bytes = match &raw.token_cache.max_bytes {
        None => DEFAULT_TOKEN_CACHE_BYTES,
        Some(v) if *v.get_ref() <= 1 << 32 => *v.get_ref(),
        Some(v) => {
            d.err(
                v.span(),
                "token_cache.max_bytes",
                "must be at most 4294967296 (4 GiB)",
            );
            DEFAULT_TOKEN_CACHE_BYTES
        }
    };

    match upstream {
        Some(upstream) if d.errors.is_empty() => Ok(Config {
            source: file.to_owned(),
            listen,
            admin_listen,
            limits,
            upstream,
            issuers,
            paths,
            routes,
            headers,
            token_cache_bytes,
            login,
            forward_auth,
            tls: server_tls,
            cors,
            tracing,
        }),
        _ => Err(ConfigErrors(d.errors)),
    }
}

/// `[tracing]` merged with the environment: each key of the file wins over its variable.
fn compile_tracing(
    d: &mut Diags<'_>,
    raw: Option<&Spanned<config::RawTracing>>,
    env: OtelEnv,
) -> TracingSettings {
    for warning in &env.warnings {
        tracing::warn!("{warning}");
    }
    let t = raw.map(Spanned::get_ref);
    let pick =
        |f: fn(&config::RawTracing) -> &Option<Spanned<String>>| t.and_then(|t| f(t).as_ref());

    let kind = match pick(|t| &t.sampler) {
        Some(v) => SamplerKind::parse(v.get_ref()).unwrap_or_else(|| {
            let names: Vec<&str> = SamplerKind::ALL.iter().map(|(n, _)| *n).collect();
            d.err(
                v.span(),
                "tracing.sampler",
                format!("{:?} must be {}", v.get_ref(), names.join(", ")),
            );
            SamplerKind::ParentBasedAlwaysOn
        }),
        None => env.sampler.unwrap_or(SamplerKind::ParentBasedAlwaysOn),
    };
    let ratio = match t.and_then(|t| t.sampler_ratio.as_ref()) {
        Some(v) => Ratio::new(*v.get_ref()).unwrap_or_else(|| {
            d.err(v.span(), "tracing.sampler_ratio", "must be from 0 to 1");
            Ratio::ONE
        }),
        None => env.sampler_ratio.unwrap_or(Ratio::ONE),
    };
    let sampler = Sampler { kind, ratio };

    let protocol = match pick(|t| &t.protocol) {
        Some(v) => Protocol::parse(v.get_ref()).unwrap_or_else(|| {
            d.err(
                v.span(),
                "tracing.protocol",
                format!("{:?} must be http/protobuf or http/json", v.get_ref()),
            );
            Protocol::HttpProtobuf
        }),
        None => env.protocol.unwrap_or(Protocol::HttpProtobuf),
    };

    let url = match pick(|t| &t.otlp_endpoint) {
        Some(v) if !is_http_url(v.get_ref()) => {
            d.err(
                v.span(),
                "tracing.otlp_endpoint",
                "must be an http(s) URL like http://otel-collector:4318",
            );
            None
        }
        Some(v) if !cfg!(feature = "otlp") => {
            d.err(
                v.span(),
                "tracing.otlp_endpoint",
                "this build has no OTLP export (cargo feature otlp)",
            );
            None
        }
        Some(v) => Some(format!("{}/v1/traces", v.get_ref().trim_end_matches('/'))),
        None if env.traces_endpoint.is_some() && !cfg!(feature = "otlp") => {
            tracing::warn!("OTEL_EXPORTER_OTLP_*ENDPOINT ignored: this build has no OTLP export");
            None
        }
        None => env.traces_endpoint,
    };

    // service.name: the file's, OTEL_SERVICE_NAME, service.name in OTEL_RESOURCE_ATTRIBUTES,
    // then jwtgate. Other attributes: the environment's, then the file's over them by key.
    let mut attributes = env.resource_attributes;
    let from_attributes = attributes
        .iter()
        .rposition(|(k, _)| k == "service.name")
        .map(|i| attributes.remove(i).1);
    attributes.retain(|(k, _)| k != "service.name");
    let file_attributes = t.and_then(|t| t.resource_attributes.as_ref());
    for (key, value) in file_attributes
        .map(|a| a.get_ref().iter())
        .into_iter()
        .flatten()
    {
        if key == "service.name" {
            d.err(
                value.span(),
                "tracing.resource_attributes",
                "set service.name with service_name",
            );
            continue;
        }
        attributes.retain(|(k, _)| k != key);
        attributes.push((key.clone(), value.get_ref().clone()));
    }
    let service_name = pick(|t| &t.service_name)
        .map(|v| v.get_ref().clone())
        .or(env.service_name)
        .or(from_attributes)
        .unwrap_or_else(|| "jwtgate".to_owned());
    let mut resource = vec![("service.name".to_owned(), service_name)];
    resource.extend(attributes);
    if !resource.iter().any(|(k, _)| k == "service.version") {
        resource.push((
            "service.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ));
    }

    let max_queue = env.max_queue.unwrap_or(trace::DEFAULT_MAX_QUEUE);
    let export = url.filter(|_| !env.sdk_disabled).map(|url| ExportSettings {
        url,
        protocol,
        headers: env.headers,
        resource,
        max_queue,
        // The batch never exceeds the queue (as OTEL_BSP_MAX_EXPORT_BATCH_SIZE says).
        max_batch: env
            .max_batch
            .unwrap_or(trace::DEFAULT_MAX_BATCH)
            .min(max_queue),
        schedule_delay: env.schedule_delay.unwrap_or(trace::DEFAULT_SCHEDULE_DELAY),
        timeout: env.timeout.unwrap_or(trace::DEFAULT_EXPORT_TIMEOUT),
    });
    TracingSettings { sampler, export }
}

fn compile_cors(d: &mut Diags<'_>, c: &config::RawCors) -> Option<Cors> {
    let list = |d: &mut Diags<'_>,
                v: &Option<Spanned<Vec<Spanned<String>>>>,
                key: &str,
                default: &[&str]|
     -> Option<HeaderValue> {
        let items: Vec<String> = match v {
            Some(list) => list.get_ref().iter().map(|s| s.get_ref().clone()).collect(),
            None => default.iter().map(|s| (*s).to_owned()).collect(),
        };
        if items.is_empty() {
            return None;
        }
        HeaderValue::try_from(items.join(", "))
            .map_err(|_| {
                d.err(
                    v.as_ref().map_or(0..0, Spanned::span),
                    key,
                    "not valid in a header",
                )
            })
            .ok()
    };
    let allow_origins: Vec<String> = c
        .allow_origins
        .get_ref()
        .iter()
        .map(|s| s.get_ref().clone())
        .collect();
    for origin in c.allow_origins.get_ref() {
        let o = origin.get_ref();
        let ok = o == "*"
            || ((o.starts_with("https://") || o.starts_with("http://"))
                && !o.ends_with('/')
                && o.parse::<Uri>().is_ok());
        if !ok {
            d.err(
                origin.span(),
                "cors.allow_origins",
                format!("{o:?} is not an origin like https://app.example.com (or \"*\")"),
            );
        }
    }
    let allow_credentials = c.allow_credentials.as_ref().is_some_and(|b| *b.get_ref());
    if allow_credentials && allow_origins.iter().any(|o| o == "*") {
        d.err(
            c.allow_origins.span(),
            "cors.allow_origins",
            "\"*\" cannot be combined with allow_credentials = true",
        );
    }
    let max_age = d.duration(&c.max_age, "cors.max_age", Duration::from_secs(600));
    Some(Cors {
        allow_origins,
        allow_methods: list(
            d,
            &c.allow_methods,
            "cors.allow_methods",
            &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
        )?,
        allow_headers: list(
            d,
            &c.allow_headers,
            "cors.allow_headers",
            &["authorization", "content-type"],
        )?,
        expose_headers: list(d, &c.expose_headers, "cors.expose_headers", &[]),
        max_age: HeaderValue::from(max_age.as_secs()),
        allow_credentials,
    })
}

fn compile_server_tls(d: &mut Diags<'_>, t: &config::RawServerTls) -> Option<ServerTls> {
    let client_cert_required = d.choice(
        &t.client_auth,
        "server.tls.client_auth",
        &[("required", true), ("optional", false)],
        true,
    );
    if t.client_auth.is_some() && t.client_ca_file.is_none() {
        if let Some(v) = &t.client_auth {
            d.err(v.span(), "server.tls.client_auth", "needs client_ca_file");
        }
    }
    let settings = ServerTls {
        cert_file: t.cert_file.get_ref().into(),
        key_file: t.key_file.get_ref().into(),
        client_ca_file: t.client_ca_file.as_ref().map(|c| c.get_ref().into()),
        client_cert_required,
    };
    // Load everything now, so `check` reports a bad certificate, key or CA with its position.
    if let Err(e) = crate::tls::certified_key(&settings.cert_file, &settings.key_file) {
        d.err(t.cert_file.span(), "server.tls.cert_file", e);
        return None;
    }
    if let Err(e) = crate::tls::Acceptor::new(&settings) {
        let span = t
            .client_ca_file
            .as_ref()
            .map_or(t.cert_file.span(), Spanned::span);
        d.err(span, "server.tls", e);
        return None;
    }
    Some(settings)
}

fn compile_upstream(d: &mut Diags<'_>, u: &config::RawUpstream) -> Option<UpstreamSettings> {
    let text = u.url.get_ref();
    let uri: Uri = match text.parse() {
        Ok(uri) => uri,
        Err(_) => {
            d.err(
                u.url.span(),
                "upstream.url",
                format!("{text:?} is not a URL"),
            );
            return None;
        }
    };
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            d.err(
                u.url.span(),
                "upstream.url",
                format!("{text:?} must start with http:// or https://"),
            );
            return None;
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        d.err(
            u.url.span(),
            "upstream.url",
            format!("{text:?} has no host"),
        );
        return None;
    };
    if uri.query().is_some() {
        d.err(u.url.span(), "upstream.url", "must not have a query string");
    }
    let origin = Uri::builder()
        .scheme(if https { "https" } else { "http" })
        .authority(authority)
        .path_and_query("/")
        .build()
        .ok()?;
    let file =
        |d: &mut Diags<'_>, v: &Option<Spanned<String>>, key: &str| -> Option<std::path::PathBuf> {
            let v = v.as_ref()?;
            let path = std::path::PathBuf::from(v.get_ref());
            if !path.is_file() {
                d.err(
                    v.span(),
                    key,
                    format!("{} is not a readable file", path.display()),
                );
            }
            Some(path)
        };
    let ca_file = file(d, &u.ca_file, "upstream.ca_file");
    let client_cert = match (
        file(d, &u.client_cert_file, "upstream.client_cert_file"),
        file(d, &u.client_key_file, "upstream.client_key_file"),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            d.err(
                u.url.span(),
                "upstream.client_cert_file",
                "client_cert_file and client_key_file go together",
            );
            None
        }
    };
    if !https && (ca_file.is_some() || client_cert.is_some()) {
        d.err(
            u.url.span(),
            "upstream.url",
            "ca_file and client certificates need an https:// upstream",
        );
    }
    let tls = https.then_some(UpstreamTls {
        ca_file,
        client_cert,
    });
    let http2 = u.http2.as_ref().is_some_and(|h| *h.get_ref());
    if let Some(tls) = &tls {
        if let Err(e) = crate::tls::client_config(tls) {
            d.err(u.url.span(), "upstream", e);
        }
    }
    Some(UpstreamSettings {
        http2,
        tls,
        origin,
        path_prefix: uri.path().trim_end_matches('/').to_owned(),
        connect_timeout: d.duration(
            &u.connect_timeout,
            "upstream.connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
        ),
        response_timeout: d.duration(
            &u.response_timeout,
            "upstream.response_timeout",
            DEFAULT_RESPONSE_TIMEOUT,
        ),
        pool_idle_timeout: d.duration(
            &u.pool_idle_timeout,
            "upstream.pool_idle_timeout",
            DEFAULT_POOL_IDLE_TIMEOUT,
        ),
        pool_max_idle: d.bounded(
            &u.pool_max_idle,
            "upstream.pool_max_idle",
            0..100_001,
            DEFAULT_POOL_MAX_IDLE,
        ),
    })
}

fn is_http_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.parse::<Uri>().is_ok_and(|u| u.host().is_some())
}

fn compile_issuer(
    d: &mut Diags<'_>,
    key: &str,
    raw: &Spanned<config::RawIssuer>,
) -> Option<(Arc<IssuerPolicy>, KeySettings)> {
    let span = raw.span();
    let r = raw.get_ref();
    let errors_before = d.errors.len();
    // The exact `iss`, either written out or derived from the Cognito shorthand.
    let (issuer, default_source) = match (&r.issuer, &r.user_pool_id) {
        (Some(_), Some(pool)) => {
            d.err(
                pool.span(),
                format!("{key}.user_pool_id"),
                "give either issuer or user_pool_id, not both",
            );
            return None;
        }
        (Some(iss), None) => {
            if !is_http_url(iss.get_ref()) {
                d.err(
                    iss.span(),
                    format!("{key}.issuer"),
                    format!("{:?} is not an http(s) URL", iss.get_ref()),
                );
                return None;
            }
            if let Some(region) = &r.region {
                d.err(
                    region.span(),
                    format!("{key}.region"),
                    "region goes with user_pool_id, not issuer",
                );
            }
            let iss = iss.get_ref().clone();
            let discovery = format!(
                "{}/.well-known/openid-configuration",
                iss.trim_end_matches('/')
            );
            (iss, KeySource::Discovery(discovery))
        }
        (None, Some(pool)) => {
            let pool_id = pool.get_ref();
            let Some(region) = cognito_region(pool_id) else {
                d.err(
                    pool.span(),
                    format!("{key}.user_pool_id"),
                    format!("{pool_id:?} is not a user pool id like us-east-1_AbC123"),
                );
                return None;
            };
            if let Some(r) = &r.region {
                if r.get_ref() != region {
                    d.err(
                        r.span(),
                        format!("{key}.region"),
                        format!("the user pool id says {region:?}"),
                    );
                }
            }
            let iss = format!("https://cognito-idp.{region}.amazonaws.com/{pool_id}");
            let jwks = format!("{iss}/.well-known/jwks.json");
            (iss, KeySource::Jwks(jwks))
        }
        (None, None) => {
            d.err(
                span,
                key,
                "needs issuer = \"https://…\" (or the Cognito shorthand user_pool_id)",
            );
            return None;
        }
    };
    let source = match &r.jwks_uri {
        Some(uri) if is_http_url(uri.get_ref()) => KeySource::Jwks(uri.get_ref().clone()),
        Some(uri) => {
            d.err(
                uri.span(),
                format!("{key}.jwks_uri"),
                format!("{:?} is not an http(s) URL", uri.get_ref()),
            );
            default_source
        }
        None => default_source,
    };
    let name: Arc<str> = r
        .name
        .as_ref()
        .map_or_else(|| issuer.as_str().into(), |n| n.get_ref().as_str().into());
    let skip_audience_check = r.skip_audience_check.as_ref().is_some_and(|s| *s.get_ref());
    let audiences: Vec<String> = strings(&r.audiences)
        .iter()
        .map(|a| a.get_ref().clone())
        .collect();
    match (&r.audiences, skip_audience_check) {
        (Some(a), true) => d.err(
            a.span(),
            format!("{key}.audiences"),
            "conflicts with skip_audience_check = true",
        ),
        (Some(a), false) if audiences.is_empty() => {
            d.err(
                a.span(),
                format!("{key}.audiences"),
                "is empty; list your app client ids (or set skip_audience_check = true)",
            );
        }
        (None, false) => d.err(
            span,
            format!("{key}.audiences"),
            "missing: list the accepted app client ids (or set skip_audience_check = true)",
        ),
        _ => {}
    }
    let token_use = r.token_use.as_ref().and_then(|t| {
        TokenUse::parse(t.get_ref()).or_else(|| {
            d.err(
                t.span(),
                format!("{key}.token_use"),
                "must be \"access\" or \"id\"",
            );
            None
        })
    });
    let mut algorithms = Vec::new();
    for alg in strings(&r.algorithms) {
        match alg.get_ref().parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => d.err(
                alg.span(),
                format!("{key}.algorithms"),
                "HMAC algorithms are refused: a shared secret cannot be published in a key set",
            ),
            Ok(a) => algorithms.push(a),
            Err(_) => d.err(
                alg.span(),
                format!("{key}.algorithms"),
                format!(
                    "{:?} is not one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA",
                    alg.get_ref()
                ),
            ),
        }
    }
    if r.algorithms.is_none() {
        algorithms.push(Algorithm::RS256);
    } else if algorithms.is_empty() {
        if let Some(a) = &r.algorithms {
            d.err(
                a.span(),
                format!("{key}.algorithms"),
                "must list at least one algorithm",
            );
        }
    }
    let leeway = d.duration(&r.leeway, &format!("{key}.leeway"), DEFAULT_LEEWAY);
    if leeway > Duration::from_secs(600) {
        if let Some(l) = &r.leeway {
            d.err(
                l.span(),
                format!("{key}.leeway"),
                "more than 10m of clock skew is not a leeway",
            );
        }
    }
    let refresh_interval = d.duration(
        &r.refresh_interval,
        &format!("{key}.refresh_interval"),
        DEFAULT_REFRESH_INTERVAL,
    );
    let min_refetch_interval = d.duration(
        &r.min_refetch_interval,
        &format!("{key}.min_refetch_interval"),
        DEFAULT_MIN_REFETCH_INTERVAL,
    );
    let fetch_timeout = d.duration(
        &r.fetch_timeout,
        &format!("{key}.fetch_timeout"),
        DEFAULT_FETCH_TIMEOUT,
    );
    for (value, field, min) in [
        (
            &r.refresh_interval,
            "refresh_interval",
            Duration::from_secs(1),
        ),
        (
            &r.fetch_timeout,
            "fetch_timeout",
            Duration::from_millis(100),
        ),
    ] {
        if let Some(v) = value {
            if parse_duration(v.get_ref()).is_ok_and(|x| x < min) {
                d.err(
                    v.span(),
                    format!("{key}.{field}"),
                    format!("must be at least {min:?}"),
                );
            }
        }
    }
    if d.errors.len() > errors_before {
        return None;
    }
    let issuer: Arc<str> = issuer.into();
    let policy = IssuerPolicy {
        name: Arc::clone(&name),
        issuer: Arc::clone(&issuer),
        audiences,
        skip_audience_check,
        token_use,
        algorithms: algorithms.clone(),
        leeway_secs: i64::try_from(leeway.as_secs()).unwrap_or(0),
    };
    let settings = KeySettings {
        name,
        issuer,
        source,
        algorithms,
        refresh_interval,
        min_refetch_interval,
        fetch_timeout,
    };
    Some((Arc::new(policy), settings))
}

/// The region of a Cognito user pool id (`us-east-1_AbC123` → `us-east-1`).
fn cognito_region(pool_id: &str) -> Option<&str> {
    let (region, id) = pool_id.split_once('_')?;
    let parts: Vec<&str> = region.split('-').collect();
    let region_ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
    let id_ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric());
    (region_ok && id_ok).then_some(region)
}

fn compile_route(
    d: &mut Diags<'_>,
    key: &str,
    r: &config::RawRoute,
    issuer_names: &HashSet<Arc<str>>,
    paths: PathOptions,
) -> Option<(Pattern, Option<Vec<Method>>, Route)> {
    let errors_before = d.errors.len();
    let pattern = match Pattern::parse(r.path.get_ref(), paths) {
        Ok(p) => Some(p),
        Err(reason) => {
            d.err(
                r.path.span(),
                format!("{key}.path"),
                format!("{:?} {reason}", r.path.get_ref()),
            );
            None
        }
    };
    let methods = r.methods.as_ref().map(|list| {
        list.get_ref()
            .iter()
            .filter_map(|m| {
                let text = m.get_ref();
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase()) {
                    Method::from_bytes(text.as_bytes()).ok()
                } else {
                    d.err(
                        m.span(),
                        format!("{key}.methods"),
                        format!("{text:?} is not an upper-case method name"),
                    );
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let auth = match r.auth.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
        None | Some(("jwt", _)) => AuthMode::Jwt,
        Some(("optional", _)) => AuthMode::Optional,
        Some(("none", _)) => AuthMode::None,
        Some(("login", _)) => AuthMode::Login,
        Some((other, span)) => {
            d.err(
                span,
                format!("{key}.auth"),
                format!("{other:?} must be jwt, optional, none or login"),
            );
            AuthMode::Jwt
        }
    };
    let words = |d: &mut Diags<'_>,
                 list: &Option<Spanned<Vec<Spanned<String>>>>,
                 field: &str|
     -> Vec<String> {
        strings(list)
            .into_iter()
            .filter_map(|s| {
                let text = s.get_ref();
                if text.is_empty()
                    || text
                        .chars()
                        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
                {
                    d.err(
                        s.span(),
                        format!("{key}.{field}"),
                        format!("{text:?} must be one word without quotes"),
                    );
                    None
                } else {
                    Some(text.clone())
                }
            })
            .collect()
    };
    let scopes_any = words(d, &r.scopes_any, "scopes_any");
    let scopes_all = words(d, &r.scopes_all, "scopes_all");
    let groups_any = words(d, &r.groups_any, "groups_any");
    let token_use = r.token_use.as_ref().and_then(|t| {
        TokenUse::parse(t.get_ref()).or_else(|| {
            d.err(
                t.span(),
                format!("{key}.token_use"),
                "must be \"access\" or \"id\"",
            );
            None
        })
    });
    let issuers = r.issuers.as_ref().map(|list| {
        list.get_ref()
            .iter()
            .filter_map(|n| match issuer_names.get(n.get_ref().as_str()) {
                Some(name) => Some(Arc::clone(name)),
                None => {
                    d.err(
                        n.span(),
                        format!("{key}.issuers"),
                        format!("no issuer is named {:?}", n.get_ref()),
                    );
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let claims: Vec<ClaimMatcher> = r
        .claims
        .as_ref()
        .map(|m| {
            m.get_ref()
                .iter()
                .map(|(name, values)| ClaimMatcher {
                    name: name.clone(),
                    values: match values.get_ref() {
                        ClaimValues::One(v) => vec![v.clone()],
                        ClaimValues::Any(v) => v.clone(),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    for (name, values) in r.claims.iter().flat_map(|m| m.get_ref().iter()) {
        if matches!(values.get_ref(), ClaimValues::Any(v) if v.is_empty()) {
            d.err(
                values.span(),
                format!("{key}.claims.{name}"),
                "lists no accepted value",
            );
        }
    }
    let required_scope = {
        let mut all: Vec<&str> = scopes_any
            .iter()
            .chain(&scopes_all)
            .map(String::as_str)
            .collect();
        all.dedup();
        (!all.is_empty()).then(|| all.join(" "))
    };
    let requirements = Requirements {
        scopes_any,
        scopes_all,
        groups_any,
        token_use,
        issuers,
        claims,
        required_scope,
    };
    if auth == AuthMode::Login
        && (requirements.token_use.is_some() || requirements.issuers.is_some())
    {
        d.err(r.path.span(), key, "token_use and issuers do not apply to auth = \"login\" (the session's ID token decides)");
    }
    if auth == AuthMode::None && !requirements.is_empty() {
        d.err(r.path.span(), key, "requirements (scopes, groups, token_use, issuers, claims) have no effect with auth = \"none\"");
    }
    let name: Arc<str> = r.name.as_ref().map_or_else(
        || r.path.get_ref().as_str().into(),
        |n| n.get_ref().as_str().into(),
    );
    if d.errors.len() > errors_before {
        return None;
    }
    let preflight_forward = match r
        .preflight
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None => false,
        Some(("forward", _)) => true,
        Some((other, span)) => {
            d.err(
                span,
                format!("{key}.preflight"),
                format!("{other:?}: the only value is \"forward\""),
            );
            false
        }
    };
    let mut keep_override_headers = Vec::new();
    for header in strings(&r.keep_override_headers) {
        let name = HeaderName::from_bytes(header.get_ref().to_ascii_lowercase().as_bytes());
        if let Some(name) = name
            .ok()
            .filter(|n| headers::OVERRIDE_HEADERS.contains(&n.as_str()))
        {
            keep_override_headers.push(name);
        } else {
            d.err(
                header.span(),
                format!("{key}.keep_override_headers"),
                format!(
                    "{:?} is not an override header (one of {})",
                    header.get_ref(),
                    headers::OVERRIDE_HEADERS.join(", ")
                ),
            );
        }
    }
    Some((
        pattern?,
        methods,
        Route {
            name,
            auth,
            requirements,
            preflight_forward,
            keep_override_headers,
        },
    ))
}

/// Header names jwtgate manages itself; claims cannot be injected under them.
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

fn compile_headers(
    d: &mut Diags<'_>,
    h: &config::RawHeaders,
    trusted_proxies: Vec<IpNet>,
) -> HeaderPlan {
    let header_name =
        |d: &mut Diags<'_>, text: &str, span: Range<usize>, key: &str| -> Option<HeaderName> {
            let lower = text.to_ascii_lowercase();
            // A look-alike (`x_forwarded_for`) reads as the managed header in CGI-style servers.
            if RESERVED_HEADERS.contains(&lower.replace('_', "-").as_str()) {
                d.err(span, key, format!("{text:?} is managed by jwtgate"));
                return None;
            }
            HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| d.err(span, key, format!("{text:?} is not a header name")))
                .ok()
        };
    let keep_underscores = match h
        .underscores
        .as_ref()
        .map(|u| (u.get_ref().as_str(), u.span()))
    {
        None | Some(("drop", _)) => false,
        Some(("keep", _)) => true,
        Some((other, span)) => {
            d.err(
                span,
                "headers.underscores",
                format!("{other:?}: expected \"drop\" or \"keep\""),
            );
            false
        }
    };
    let mut plan = HeaderPlan {
        forward_authorization: h
            .forward_authorization
            .as_ref()
            .is_none_or(|f| *f.get_ref()),
        trusted_proxies,
        keep_underscores,
        ..HeaderPlan::default()
    };
    if let Some(claims) = &h.claims {
        for (name, claim) in claims.get_ref() {
            if let Some(header) =
                header_name(d, name, claims.span(), &format!("headers.claims.{name}"))
            {
                if claim.get_ref().is_empty() {
                    d.err(
                        claim.span(),
                        format!("headers.claims.{name}"),
                        "names no claim",
                    );
                }
                plan.claims.push((header, claim.get_ref().clone()));
            }
        }
    }
    if let Some(name) = &h.claims_json {
        plan.claims_json = header_name(d, name.get_ref(), name.span(), "headers.claims_json");
    }
    let mut identity: Vec<HeaderName> = plan.claims.iter().map(|(n, _)| n.clone()).collect();
    identity.extend(plan.claims_json.clone());
    identity.extend(
        ALB_IDENTITY_HEADERS
            .iter()
            .map(|n| HeaderName::from_static(n)),
    );
    for extra in strings(&h.strip) {
        identity.extend(header_name(
            d,
            extra.get_ref(),
            extra.span(),
            "headers.strip",
        ));
    }
    identity.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    identity.dedup();
    plan.identity = identity;
    plan
}

impl Config {
    /// The compiled route table and settings, as `jwtgate check` prints them.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "listen {}  admin {}  upstream {}{}",
            self.listen,
            self.admin_listen,
            self.upstream.origin.to_string().trim_end_matches('/'),
            self.upstream.path_prefix
        );
        for (policy, keys) in &self.issuers {
            let algs: Vec<String> = policy.algorithms.iter().map(|a| format!("{a:?}")).collect();
            let audience = if policy.skip_audience_check {
                "any".to_owned()
            } else {
                policy.audiences.join(",")
            };
            let _ = writeln!(
                out,
                "issuer {:?}  iss={}  keys={}  audiences={}  token_use={}  algorithms={}",
                policy.name,
                policy.issuer,
                keys.source.url(),
                audience,
                policy.token_use.map_or("any", TokenUse::as_str),
                algs.join(","),
            );
        }
        if let Some(login) = &self.login {
            let _ = writeln!(
                out,
                "login  iss={}  client_id={}  cookie={}  store={}  on_unauthenticated={:?}  logout={}",
                login.issuer,
                login.client_id,
                login.cookie_name,
                if login.redis_url.is_some() {
                    "redis"
                } else {
                    "cookie"
                },
                login.on_unauthenticated,
                login.logout_path,
            );
        }
        let _ = writeln!(
            out,
            "paths  semicolons={}  case_insensitive={}",
            self.paths.semicolons.as_str(),
            self.paths.case_insensitive,
        );
        let _ = writeln!(
            out,
            "{:<4} {:<24} {:<22} {:<12} {:<8} requirements",
            "#", "path", "name", "methods", "auth"
        );
        for (i, (pattern, methods, route)) in self.routes.iter().enumerate() {
            let methods = methods.map_or("*".to_owned(), |m| {
                m.iter().map(Method::as_str).collect::<Vec<_>>().join(",")
            });
            let r = &route.requirements;
            let mut req = Vec::new();
            if !r.scopes_any.is_empty() {
                req.push(format!("scopes_any={}", r.scopes_any.join(",")));
            }
            if !r.scopes_all.is_empty() {
                req.push(format!("scopes_all={}", r.scopes_all.join(",")));
            }
            if !r.groups_any.is_empty() {
                req.push(format!("groups_any={}", r.groups_any.join(",")));
            }
            if let Some(t) = r.token_use {
                req.push(format!("token_use={}", t.as_str()));
            }
            if let Some(i) = &r.issuers {
                req.push(format!(
                    "issuers={}",
                    i.iter().map(|n| &**n).collect::<Vec<_>>().join(",")
                ));
            }
            for c in &r.claims {
                req.push(format!("claim {}={}", c.name, c.values.join("|")));
            }
            if !route.keep_override_headers.is_empty() {
                let kept: Vec<&str> = route
                    .keep_override_headers
                    .iter()
                    .map(|h| h.as_str())
                    .collect();
                req.push(format!("keeps {}", kept.join(",")));
            }
            let _ = writeln!(
                out,
                "{:<4} {:<24} {:<22} {:<12} {:<8} {}",
                i + 1,
                pattern.as_str(),
                &*route.name,
                methods,
                route.auth.as_str(),
                if req.is_empty() {
                    "-".to_owned()
                } else {
                    req.join(" ")
                }
            );
        }
        let _ = writeln!(out, "unmatched requests: 404");
        let _ = writeln!(
            out,
            "client headers with '_': {}",
            if self.headers.keep_underscores {
                "kept (look-alikes of managed headers dropped)"
            } else {
                "dropped"
            }
        );
        out
    }
}

/// Most `extra_params` (ALB allows 10).
const MAX_EXTRA_PARAMS: usize = 10;
/// Authorization parameters jwtgate sets itself.
const RESERVED_PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

fn compile_login(
    d: &mut Diags<'_>,
    raw: &Spanned<config::RawLogin>,
    paths: PathOptions,
) -> Option<LoginSettings> {
    let span = raw.span();
    let r = raw.get_ref();
    let before = d.errors.len();
    let url_field = |d: &mut Diags<'_>, v: &Option<Spanned<String>>, key: &str| -> Option<String> {
        let v = v.as_ref()?;
        if is_http_url(v.get_ref()) {
            Some(v.get_ref().clone())
        } else {
            d.err(
                v.span(),
                format!("login.{key}"),
                format!("{:?} is not an http(s) URL", v.get_ref()),
            );
            None
        }
    };
    let mut explicit = Endpoints {
        authorization: url_field(d, &r.authorization_endpoint, "authorization_endpoint")
            .unwrap_or_default(),
        token: url_field(d, &r.token_endpoint, "token_endpoint").unwrap_or_default(),
        user_info: url_field(d, &r.user_info_endpoint, "user_info_endpoint"),
        end_session: url_field(d, &r.end_session_endpoint, "end_session_endpoint"),
        jwks_uri: url_field(d, &r.jwks_uri, "jwks_uri"),
    };
    let mut cognito_logout = false;
    let issuer = match (&r.issuer, &r.user_pool_id) {
        (Some(iss), None) if is_http_url(iss.get_ref()) => iss.get_ref().clone(),
        (Some(iss), None) => {
            d.err(
                iss.span(),
                "login.issuer",
                format!("{:?} is not an http(s) URL", iss.get_ref()),
            );
            return None;
        }
        (None, Some(pool)) => {
            let Some(region) = cognito_region(pool.get_ref()) else {
                d.err(
                    pool.span(),
                    "login.user_pool_id",
                    format!(
                        "{:?} is not a user pool id like us-east-1_AbC123",
                        pool.get_ref()
                    ),
                );
                return None;
            };
            if let Some(rg) = &r.region {
                if rg.get_ref() != region {
                    d.err(
                        rg.span(),
                        "login.region",
                        format!("the user pool id says {region:?}"),
                    );
                }
            }
            let Some(domain) = &r.domain else {
                d.err(pool.span(), "login.domain", "the Cognito shorthand needs the hosted UI domain (e.g. myapp.auth.us-east-1.amazoncognito.com)");
                return None;
            };
            let host = domain
                .get_ref()
                .trim_start_matches("https://")
                .trim_end_matches('/');
            if host.is_empty() || host.contains(['/', ' ']) {
                d.err(domain.span(), "login.domain", "must be a host name");
                return None;
            }
            let iss = format!(
                "https://cognito-idp.{region}.amazonaws.com/{}",
                pool.get_ref()
            );
            let or = |s: &mut String, v: String| {
                if s.is_empty() {
                    *s = v
                }
            };
            or(
                &mut explicit.authorization,
                format!("https://{host}/oauth2/authorize"),
            );
            or(&mut explicit.token, format!("https://{host}/oauth2/token"));
            explicit
                .user_info
                .get_or_insert_with(|| format!("https://{host}/oauth2/userInfo"));
            explicit
                .end_session
                .get_or_insert_with(|| format!("https://{host}/logout"));
            explicit
                .jwks_uri
                .get_or_insert_with(|| format!("{iss}/.well-known/jwks.json"));
            cognito_logout = true;
            iss
        }
        (Some(_), Some(pool)) => {
            d.err(
                pool.span(),
                "login.user_pool_id",
                "give either issuer or user_pool_id, not both",
            );
            return None;
        }
        (None, None) => {
            d.err(
                span,
                "login",
                "needs issuer = \"https://…\" (or the Cognito shorthand user_pool_id + domain)",
            );
            return None;
        }
    };
    let complete = !explicit.authorization.is_empty()
        && !explicit.token.is_empty()
        && explicit.jwks_uri.is_some();
    let discovery = (!complete).then(|| {
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        )
    });
    let key_source = match (&explicit.jwks_uri, &discovery) {
        (Some(uri), _) => KeySource::Jwks(uri.clone()),
        (None, Some(disc)) => KeySource::Discovery(disc.clone()),
        (None, None) => KeySource::Discovery(format!("{issuer}/.well-known/openid-configuration")),
    };
    let client_id = r.client_id.get_ref().clone();
    if client_id.is_empty() {
        d.err(r.client_id.span(), "login.client_id", "must not be empty");
    }
    let client_secret = match (&r.client_secret_env, &r.client_secret_file) {
        (Some(_), Some(f)) => {
            d.err(
                f.span(),
                "login.client_secret_file",
                "give client_secret_env or client_secret_file, not both",
            );
            None
        }
        (Some(var), None) => match std::env::var(var.get_ref()) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                d.err(
                    var.span(),
                    "login.client_secret_env",
                    format!("environment variable {} is not set", var.get_ref()),
                );
                None
            }
        },
        (None, Some(file)) => match std::fs::read_to_string(file.get_ref()) {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
            Ok(_) => {
                d.err(file.span(), "login.client_secret_file", "is empty");
                None
            }
            Err(e) => {
                d.err(
                    file.span(),
                    "login.client_secret_file",
                    format!("cannot read {}: {e}", file.get_ref()),
                );
                None
            }
        },
        (None, None) => None,
    };
    let client_auth = d.choice(
        &r.token_endpoint_auth,
        "login.token_endpoint_auth",
        &[
            ("client_secret_basic", ClientAuth::Basic),
            ("client_secret_post", ClientAuth::Post),
        ],
        ClientAuth::Basic,
    );
    let scope = r
        .scope
        .as_ref()
        .map_or_else(|| "openid".to_owned(), |s| s.get_ref().clone());
    if !scope.split_whitespace().any(|s| s == "openid") {
        if let Some(s) = &r.scope {
            d.err(s.span(), "login.scope", "must include openid");
        }
    }
    let mut extra_params = Vec::new();
    if let Some(params) = &r.extra_params {
        if params.get_ref().len() > MAX_EXTRA_PARAMS {
            d.err(
                params.span(),
                "login.extra_params",
                format!("at most {MAX_EXTRA_PARAMS} parameters"),
            );
        }
        for (k, v) in params.get_ref() {
            if RESERVED_PARAMS.contains(&k.as_str()) {
                d.err(
                    v.span(),
                    format!("login.extra_params.{k}"),
                    "is set by jwtgate",
                );
            }
            extra_params.push((k.clone(), v.get_ref().clone()));
        }
    }
    let cookie_name = r.session_cookie_name.as_ref().map_or_else(
        || "AWSELBAuthSessionCookie".to_owned(),
        |n| n.get_ref().clone(),
    );
    if cookie_name.is_empty()
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        if let Some(n) = &r.session_cookie_name {
            d.err(
                n.span(),
                "login.session_cookie_name",
                "letters, digits, '_' and '-' only",
            );
        }
    }
    let session_timeout = d.duration(
        &r.session_timeout,
        "login.session_timeout",
        Duration::from_secs(7 * 86_400),
    );
    let on_unauthenticated = d.choice(
        &r.on_unauthenticated,
        "login.on_unauthenticated",
        &[
            ("authenticate", OnUnauthenticated::Authenticate),
            ("deny", OnUnauthenticated::Deny),
            ("allow", OnUnauthenticated::Allow),
        ],
        OnUnauthenticated::Authenticate,
    );
    let deny_api_clients = d.choice(
        &r.api_clients,
        "login.api_clients",
        &[("deny", true), ("authenticate", false)],
        true,
    );
    let logout_path = r
        .logout_path
        .as_ref()
        .map_or_else(|| "/oauth2/sign_out".to_owned(), |p| p.get_ref().clone());
    if !logout_path.starts_with('/')
        || logout_path == CALLBACK_PATH
        || crate::routes::normalize(&logout_path, paths)
            .ok()
            .as_deref()
            != Some(logout_path.as_str())
    {
        if let Some(p) = &r.logout_path {
            d.err(
                p.span(),
                "login.logout_path",
                "must be a normalised absolute path other than the callback",
            );
        }
    }
    let logout_redirect = url_field(d, &r.logout_redirect, "logout_redirect");
    let redirect_base =
        url_field(d, &r.redirect_base, "redirect_base").map(|b| b.trim_end_matches('/').to_owned());
    let secure_cookies = r.secure_cookies.as_ref().is_none_or(|s| *s.get_ref());
    let cookie_keys = match (&r.cookie_keys_env, &r.cookie_keys_file) {
        (Some(_), Some(f)) => {
            d.err(
                f.span(),
                "login.cookie_keys_file",
                "give cookie_keys_env or cookie_keys_file, not both",
            );
            Vec::new()
        }
        (Some(var), None) => match std::env::var(var.get_ref()) {
            Ok(text) => CookieKeys::parse_list(&text).unwrap_or_else(|e| {
                d.err(var.span(), "login.cookie_keys_env", e);
                Vec::new()
            }),
            Err(_) => {
                d.err(
                    var.span(),
                    "login.cookie_keys_env",
                    format!("environment variable {} is not set", var.get_ref()),
                );
                Vec::new()
            }
        },
        (None, Some(file)) => match std::fs::read_to_string(file.get_ref()) {
            Ok(text) => CookieKeys::parse_list(&text).unwrap_or_else(|e| {
                d.err(file.span(), "login.cookie_keys_file", e);
                Vec::new()
            }),
            Err(e) => {
                d.err(
                    file.span(),
                    "login.cookie_keys_file",
                    format!("cannot read {}: {e}", file.get_ref()),
                );
                Vec::new()
            }
        },
        (None, None) => Vec::new(),
    };
    let redis = d.choice(
        &r.session_store,
        "login.session_store",
        &[("cookie", false), ("redis", true)],
        false,
    );
    // The URL from the file, or from an environment variable (a password stays out of the file).
    let url_from_env = r
        .redis_url_env
        .as_ref()
        .map(|var| match std::env::var(var.get_ref()) {
            Ok(url) => Some((url, var.span(), "login.redis_url_env")),
            Err(_) => {
                d.err(
                    var.span(),
                    "login.redis_url_env",
                    format!("environment variable {} is not set", var.get_ref()),
                );
                None
            }
        });
    let url = match (&r.redis_url, url_from_env) {
        (Some(u), None) => Some((u.get_ref().clone(), u.span(), "login.redis_url")),
        (None, Some(found)) => found,
        (Some(u), Some(_)) => {
            d.err(
                u.span(),
                "login.redis_url",
                "give redis_url or redis_url_env, not both",
            );
            None
        }
        (None, None) => None,
    };
    let redis_url = match (redis, url) {
        (false, Some((_, span, key))) => {
            d.err(span, key, "only used with session_store = \"redis\"");
            None
        }
        (true, Some((url, _, _)))
            if url.starts_with("redis://") || url.starts_with("rediss://") =>
        {
            Some(url)
        }
        (true, Some((_, span, key))) => {
            d.err(span, key, "must start with redis:// (or rediss://)");
            None
        }
        (true, None) if r.redis_url_env.is_none() => {
            d.err(
                span,
                "login.redis_url",
                "session_store = \"redis\" needs redis_url or redis_url_env",
            );
            None
        }
        _ => None,
    };
    let alb_signer = r
        .alb_signer
        .as_ref()
        .map_or_else(|| DEFAULT_SIGNER.to_owned(), |s| s.get_ref().clone());
    let arn_ok = alb_signer
        .strip_prefix("arn:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(partition, rest)| {
            matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
                && rest.starts_with("elasticloadbalancing:")
        });
    if !arn_ok {
        if let Some(s) = &r.alb_signer {
            d.err(s.span(), "login.alb_signer", "must be a load balancer ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/app/NAME/ID)");
        }
    }
    let alb_key = r.alb_key_file.as_ref().and_then(|f| {
        match std::fs::read_to_string(f.get_ref())
            .map_err(|e| format!("cannot read {}: {e}", f.get_ref()))
            .and_then(|pem| AlbSigner::from_pem(&pem))
        {
            Ok(signer) => Some(Arc::new(signer)),
            Err(e) => {
                d.err(f.span(), "login.alb_key_file", e);
                None
            }
        }
    });
    let mut algorithms = Vec::new();
    for alg in strings(&r.algorithms) {
        match alg.get_ref().parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => {
                d.err(
                    alg.span(),
                    "login.algorithms",
                    format!("{:?} is not an asymmetric JWS algorithm", alg.get_ref()),
                );
            }
            Ok(a) => algorithms.push(a),
        }
    }
    if algorithms.is_empty() {
        algorithms.push(Algorithm::RS256);
    }
    if d.errors.len() > before {
        return None;
    }
    let issuer: Arc<str> = issuer.into();
    let name: Arc<str> = "login".into();
    let policy = Arc::new(IssuerPolicy {
        name: Arc::clone(&name),
        issuer: Arc::clone(&issuer),
        audiences: vec![client_id.clone()],
        skip_audience_check: false,
        token_use: None,
        algorithms: algorithms.clone(),
        leeway_secs: i64::try_from(DEFAULT_LEEWAY.as_secs()).unwrap_or(60),
    });
    let keys = KeySettings {
        name,
        issuer: Arc::clone(&issuer),
        source: key_source,
        algorithms,
        refresh_interval: DEFAULT_REFRESH_INTERVAL,
        min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
        fetch_timeout: DEFAULT_FETCH_TIMEOUT,
    };
    Some(LoginSettings {
        issuer,
        endpoints: EndpointConfig {
            discovery,
            explicit,
        },
        cognito_logout,
        keys,
        policy,
        client_id,
        client_secret: client_secret.map(Redacted),
        client_auth,
        scope,
        extra_params,
        cookie_name,
        session_timeout,
        on_unauthenticated,
        deny_api_clients,
        logout_path,
        logout_redirect,
        redirect_base,
        secure_cookies,
        cookie_keys: Redacted(cookie_keys),
        redis_url,
        alb_signer,
        alb_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[upstream]
url = "http://127.0.0.1:3000"

[[issuers]]
name = "cognito"
user_pool_id = "us-east-1_AbC123"
audiences = ["client"]

[[routes]]
path = "/health"
auth = "none"

[[routes]]
path = "/admin/**"
scopes_any = ["api/admin"]
token_use = "access"
"#;

    #[test]
    fn a_good_file_compiles_and_cognito_shorthand_expands() {
        let c = compile("good.toml", GOOD).unwrap();
        let (policy, keys) = &c.issuers[0];
        assert_eq!(
            &*policy.issuer,
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123"
        );
        assert_eq!(keys.source, KeySource::Jwks("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123/.well-known/jwks.json".into()));
        assert_eq!(policy.algorithms, vec![Algorithm::RS256]);
        assert_eq!(c.routes.len(), 2);
        assert!(c.describe().contains("/admin/**"));
    }

    #[test]
    fn every_error_is_reported_with_position_and_key() {
        let bad = r#"
[server]
listen = "nowhere"

[upstream]
url = "ftp://x"

[[issuers]]
issuer = "https://idp.example"
algorithms = ["HS256"]

[[routes]]
path = "admin/**"
auth = "sometimes"
"#;
        let errors = compile("bad.toml", bad).unwrap_err().0;
        let text = errors.join("\n");
        assert!(text.contains("bad.toml:3:10: server.listen:"), "{text}");
        assert!(text.contains("bad.toml:6:7: upstream.url:"), "{text}");
        assert!(text.contains("issuers[0].algorithms: HMAC"), "{text}");
        assert!(text.contains("issuers[0].audiences: missing"), "{text}");
        assert!(text.contains("bad.toml:13:8: routes[0].path:"), "{text}");
        assert!(text.contains("bad.toml:14:8: routes[0].auth:"), "{text}");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_point_at_the_spot() {
        let errors = compile("x.toml", "[server]\nlisten = \"0.0.0.0:1\"\nlistn = 1\n")
            .unwrap_err()
            .0;
        assert!(
            errors[0].starts_with("x.toml:3:1: toml: unknown field `listn`"),
            "{errors:?}"
        );
        let errors = compile("x.toml", "[server\n").unwrap_err().0;
        assert!(errors[0].starts_with("x.toml:1:"), "{errors:?}");
    }

    #[test]
    fn paths_options_default_strict_and_are_checked() {
        let c = compile("good.toml", GOOD).unwrap();
        assert_eq!(c.paths, PathOptions::default());
        assert!(
            c.describe()
                .contains("paths  semicolons=reject  case_insensitive=false")
        );
        let text = format!("{GOOD}\n[paths]\nsemicolons = \"allow\"\ncase_insensitive = true\n");
        let c = compile("good.toml", &text).unwrap();
        assert_eq!(c.paths.semicolons, Semicolons::Allow);
        assert!(c.paths.case_insensitive);
        assert!(
            c.describe()
                .contains("paths  semicolons=allow  case_insensitive=true")
        );

        let bad = format!("{GOOD}\n[paths]\nsemicolons = \"strip\"\n");
        let errors = compile("bad.toml", &bad).unwrap_err().0;
        let line = bad
            .lines()
            .position(|l| l.starts_with("semicolons"))
            .unwrap()
            + 1;
        assert_eq!(
            errors,
            [format!(
                "bad.toml:{line}:14: paths.semicolons: \"strip\" must be reject, allow"
            )]
        );
        let errors = compile(
            "bad.toml",
            &format!("{GOOD}\n[paths]\ncase_insensitive = 1\n"),
        )
        .unwrap_err()
        .0;
        assert!(errors[0].contains("invalid type"), "{errors:?}");

        // A pattern with a ';' is refused in either mode.
        for mode in ["reject", "allow"] {
            let text = format!(
                "{GOOD}\n[[routes]]\npath = \"/a;b\"\nauth = \"none\"\n[paths]\nsemicolons = \"{mode}\"\n"
            );
            let errors = compile("x.toml", &text).unwrap_err().0;
            assert!(
                errors[0].contains("routes[2].path: \"/a;b\" must not contain ';'"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
    }

    fn with_env(extra: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        compile_with_env("t.toml", &format!("{GOOD}\n{extra}"), |k| {
            vars.get(k).cloned()
        })
    }

    #[cfg(feature = "otlp")] // without it, nothing is exported
    #[test]
    fn trace_settings_come_from_the_environment_when_the_file_is_silent() {
        let c = with_env("", &[]).unwrap();
        assert_eq!(c.tracing.sampler, Sampler::default());
        assert!(c.tracing.export.is_none(), "no endpoint, no export");

        let c = with_env(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_SERVICE_NAME", "edge"),
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored,env=prod"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=k"),
            ],
        )
        .unwrap();
        assert_eq!(c.tracing.sampler.kind, SamplerKind::TraceIdRatio);
        assert_eq!(c.tracing.sampler.ratio.get(), 0.1);
        let e = c.tracing.export.unwrap();
        assert_eq!(e.url, "http://collector:4318/v1/traces");
        assert_eq!(e.protocol, Protocol::HttpJson);
        assert_eq!(e.headers.len(), 1);
        assert_eq!(e.resource[0], ("service.name".into(), "edge".into()));
        assert!(e.resource.contains(&("env".into(), "prod".into())));
        assert!(e.resource.iter().any(|(k, _)| k == "service.version"));
        assert_eq!(e.max_queue, trace::DEFAULT_MAX_QUEUE);

        // service.name from OTEL_RESOURCE_ATTRIBUTES when nothing else names it.
        let c = with_env(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:1/t"),
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
            ],
        )
        .unwrap();
        let e = c.tracing.export.unwrap();
        assert_eq!(e.url, "http://c:1/t");
        assert_eq!(e.protocol, Protocol::HttpProtobuf, "the spec's default");
        assert_eq!(e.resource[0].1, "from-attrs");
    }

    #[cfg(feature = "otlp")] // without it, nothing is exported
    #[test]
    fn trace_settings_in_the_file_win_over_the_environment() {
        let file = r#"
[tracing]
otlp_endpoint = "http://file:4318"
protocol = "http/protobuf"
service_name = "from-file"
sampler = "parentbased_traceidratio"
sampler_ratio = 0.5
resource_attributes = { env = "staging", region = "eu" }
"#;
        let c = with_env(
            file,
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://env:1/v1/traces",
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_SERVICE_NAME", "from-env"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.9"),
                ("OTEL_RESOURCE_ATTRIBUTES", "env=prod,team=core"),
            ],
        )
        .unwrap();
        assert_eq!(c.tracing.sampler.kind, SamplerKind::ParentBasedTraceIdRatio);
        assert_eq!(c.tracing.sampler.ratio.get(), 0.5);
        let e = c.tracing.export.unwrap();
        assert_eq!(e.url, "http://file:4318/v1/traces");
        assert_eq!(e.protocol, Protocol::HttpProtobuf);
        assert_eq!(e.resource[0].1, "from-file");
        let get = |key: &str| {
            e.resource
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("env"), Some("staging"), "the file's value, key by key");
        assert_eq!(get("team"), Some("core"));
        assert_eq!(get("region"), Some("eu"));

        // The environment fills what the file leaves out.
        let c = with_env(
            "[tracing]\nsampler = \"traceidratio\"\n",
            &[
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ],
        )
        .unwrap();
        assert_eq!(c.tracing.sampler.ratio.get(), 0.25);
        assert_eq!(c.tracing.export.unwrap().url, "http://env:4318/v1/traces");

        // OTEL_SDK_DISABLED is the off switch, even for the file's endpoint.
        let c = with_env(file, &[("OTEL_SDK_DISABLED", "true")]).unwrap();
        assert!(c.tracing.export.is_none());
    }

    #[test]
    fn trace_settings_errors_in_the_file_point_at_the_spot() {
        let errors = with_env(
            r#"
[tracing]
sampler = "sometimes"
sampler_ratio = 2.0
protocol = "grpc"
otlp_endpoint = "collector:4318"
resource_attributes = { "service.name" = "x" }
"#,
            // Unknown values in the environment are warnings, not errors.
            &[("OTEL_TRACES_SAMPLER", "sometimes")],
        )
        .unwrap_err()
        .0;
        let joined = errors.join("\n");
        for key in [
            "tracing.sampler: \"sometimes\" must be always_on",
            "tracing.sampler_ratio: must be from 0 to 1",
            "tracing.protocol",
            "tracing.otlp_endpoint",
            "tracing.resource_attributes: set service.name with service_name",
        ] {
            assert!(joined.contains(key), "{key} in {joined}");
        }
        assert!(errors.iter().all(|e| e.starts_with("t.toml:")), "{joined}");
        assert!(with_env("", &[("OTEL_TRACES_SAMPLER", "sometimes")]).is_ok());
    }

    #[test]
    fn pool_ids() {
        assert_eq!(cognito_region("us-east-1_AbC123"), Some("us-east-1"));
        assert_eq!(cognito_region("us-gov-west-1_x"), Some("us-gov-west-1"));
        assert_eq!(cognito_region("useast1_x"), None);
        assert_eq!(cognito_region("us-east-1_"), None);
    }
}

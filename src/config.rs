//! The TOML file exactly as written. Nothing here is validated beyond its shape:
//! `compile` checks values (with their source spans) and builds what the hot path needs.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// Listen address of the proxy when `[server].listen` is absent.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Listen address of the admin endpoints when `[server].admin_listen` is absent.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`: listeners and limits.
    #[serde(default)]
    pub server: RawServer,
    /// `[paths]`: how request paths are read and matched.
    #[serde(default)]
    pub paths: RawPaths,
    /// `[upstream]`: where allowed requests go (the upstream named `default`).
    pub upstream: Option<Spanned<RawUpstream>>,
    /// `[[upstreams]]`: further named upstreams, chosen per route with `upstream = "name"`.
    #[serde(default)]
    pub upstreams: Vec<Spanned<RawUpstream>>,
    /// `[[issuers]]`: who may sign tokens.
    #[serde(default)]
    pub issuers: Vec<Spanned<RawIssuer>>,
    /// `[[routes]]`: matched in file order, first match wins.
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    /// `[headers]`: what the upstream receives.
    #[serde(default)]
    pub headers: RawHeaders,
    /// `[token_cache]`: the verified-token cache.
    #[serde(default)]
    pub token_cache: RawTokenCache,
    /// `[login]`: the browser sign-in used by `auth = "login"` routes (the provider named
    /// `default`).
    pub login: Option<Spanned<RawLogin>>,
    /// `[[logins]]`: further sign-in providers, each with a `name` routes choose with `login`.
    #[serde(default)]
    pub logins: Vec<Spanned<RawLogin>>,
    /// `[forward_auth]`: answer auth subrequests of another proxy instead of forwarding.
    pub forward_auth: Option<Spanned<RawForwardAuth>>,
    /// `[cors]`: answer preflights and add CORS headers, like API Gateway's CORS settings.
    pub cors: Option<Spanned<RawCors>>,
    /// `[tracing]`: OpenTelemetry export.
    pub tracing: Option<Spanned<RawTracing>>,
    /// `[policies]`: the Cedar policy set routes opt into with `policy = true` (named
    /// `default`).
    pub policies: Option<Spanned<RawPolicies>>,
    /// `[[policy_sets]]`: further named Cedar policy sets, chosen with `policy = "name"`.
    #[serde(default)]
    pub policy_sets: Vec<Spanned<RawPolicies>>,
    /// `[[authorizers]]`: external authorizers routes name with `authorizer = "NAME"`.
    #[serde(default)]
    pub authorizers: Vec<Spanned<RawAuthorizer>>,
    /// `[[aws_credentials]]`: named sources of AWS credentials (per user or jwtgate's own).
    #[serde(default)]
    pub aws_credentials: Vec<Spanned<RawAwsCredentials>>,
}

/// `[policies]` or one `[[policy_sets]]` table: Cedar policies with Amazon Verified
/// Permissions' entity shapes. Files are relative to the config file's directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicies {
    /// `[[policy_sets]]` only: the name routes give in `policy = "name"`.
    pub name: Option<Spanned<String>>,
    /// Policy files (`*.cedar`); `*` and `?` in the file name match several.
    pub files: Spanned<Vec<Spanned<String>>>,
    /// Cedar schema (`.cedarschema`, or JSON `.json`): policies are validated against it.
    /// Default: none (no validation; every claim becomes an attribute).
    pub schema: Option<Spanned<String>>,
    /// Namespace of the entity types (`PetStore` gives `PetStore::User`). Default: none.
    pub namespace: Option<Spanned<String>>,
    /// Entity id of the resource `NS::Application::"…"`. Default: the namespace.
    pub application: Option<Spanned<String>>,
    /// Most decisions cached (each until its token expires); 0 disables. Default 10000.
    pub cache_entries: Option<Spanned<u64>>,
}

/// A route's `policy`: `true` for `[policies]`, or the name of a `[[policy_sets]]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PolicyChoice {
    /// `true` (the default set) or `false` (none).
    On(bool),
    /// A set by name.
    Named(String),
}

/// `[[authorizers]]`: an external authorizer (API Gateway Lambda-authorizer contract over
/// HTTP, or Envoy's HTTP ext_authz).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorizer {
    /// What routes (`authorizer = "…"`), metrics and logs call it.
    pub name: Spanned<String>,
    /// `lambda` or `ext_authz`.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// Where it is called: the endpoint the event is POSTed to (`lambda`), or the service base
    /// URL the original path is appended to (`ext_authz`). A `lambda` authorizer has this or
    /// `function`.
    pub url: Option<Spanned<String>>,
    /// `lambda`: the function called by the Lambda Invoke API (name, partial or full ARN).
    pub function: Option<Spanned<String>>,
    /// `lambda` with `function`: its region (required unless `function` is a full ARN).
    pub region: Option<Spanned<String>>,
    /// `lambda` with `function`: the `[[aws_credentials]]` source (`source = "gateway"`).
    pub credentials: Option<Spanned<String>>,
    /// `lambda` with `function`: the Lambda endpoint (VPC endpoint, tests). Default
    /// `https://lambda.{region}.amazonaws.com`.
    pub endpoint: Option<Spanned<String>>,
    /// `lambda` with `function`: the alias or version invoked.
    pub qualifier: Option<Spanned<String>>,
    /// `lambda`: `simple` (default) or `iam`.
    pub response: Option<Spanned<String>>,
    /// `lambda`: payload format; only `2.0` (the default) for now.
    pub payload_format: Option<Spanned<String>>,
    /// `lambda`: `arn:aws:execute-api:REGION:ACCOUNT:API_ID/STAGE`, the routeArn prefix.
    /// Default `arn:aws:execute-api:local:000000000000:jwtgate/$default`.
    pub api_arn: Option<Spanned<String>>,
    /// `$request.header.NAME`, `$request.querystring.NAME`, `$context.identity.sourceIp`,
    /// `$context.routeKey`, `$context.httpMethod`, `$context.path`. Required when `ttl` is
    /// not zero.
    pub identity_source: Option<Spanned<Vec<Spanned<String>>>>,
    /// How long decisions are cached, `0s` to `1h`. Default `300s`; `0s`: off.
    pub ttl: Option<Spanned<String>>,
    /// `route` (default: identity sources, method and route) or `identity` (identity sources
    /// alone, as API Gateway keys its cache).
    pub cache_key: Option<Spanned<String>>,
    /// Cache size, bytes. Default 16 MiB.
    pub cache_bytes: Option<Spanned<u64>>,
    /// Time allowed for one call. Default `1s`.
    pub timeout: Option<Spanned<String>>,
    /// `lambda`: upstream header to `context` key (`{ "x-tenant" = "tenantId" }`).
    pub context_headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Send the client's cookies (jwtgate's own sign-in cookies never go). Default true for
    /// `lambda` (as API Gateway does), false for `ext_authz`.
    pub send_cookies: Option<Spanned<bool>>,
    /// `ext_authz`: client headers sent to the service. Default `["authorization"]`.
    pub allowed_headers: Option<Spanned<Vec<Spanned<String>>>>,
    /// `ext_authz`: service response headers copied to the upstream request on an allow.
    pub upstream_headers: Option<Spanned<Vec<Spanned<String>>>>,
    /// `ext_authz`: service response headers copied to the client on a denial. Default: all
    /// but hop-by-hop and framing headers.
    pub client_headers: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One `[[aws_credentials]]` table. Which keys apply depends on `source`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsCredentials {
    /// The name upstreams and routes refer to; a metric label. Required.
    pub name: Option<Spanned<String>>,
    /// `identity_pool`, `web_identity` or `gateway`. Required.
    pub source: Option<Spanned<String>>,
    /// `identity_pool`: the pool id, `region:uuid`. Required there.
    pub identity_pool_id: Option<Spanned<String>>,
    /// Region of the identity pool (default: from its id), or of STS (`web_identity`,
    /// `gateway`; default: the global endpoint, or `AWS_REGION` for `gateway`).
    pub region: Option<Spanned<String>>,
    /// Endpoint URL of Cognito Identity or STS (emulators, VPC endpoints). Default: AWS's.
    pub endpoint: Option<Spanned<String>>,
    /// `identity_pool`: requests without a token get the pool's unauthenticated identity.
    /// Default false.
    pub guests: Option<Spanned<bool>>,
    /// `web_identity`: the role assumed (when the token's `cognito:preferred_role` is not
    /// one of `roles`).
    pub role_arn: Option<Spanned<String>>,
    /// `web_identity`: roles a token may pick with `cognito:preferred_role`.
    pub roles: Option<Spanned<Vec<Spanned<String>>>>,
    /// `web_identity`: session length asked of STS, `15m` to `12h`. Default: STS's (1 h).
    pub duration: Option<Spanned<String>>,
    /// Timeout of each call to AWS. Default `3s`.
    pub timeout: Option<Spanned<String>>,
    /// Credentials are replaced this long before they expire. Default `5m`.
    pub refresh_margin: Option<Spanned<String>>,
    /// Size bound of this source's credential cache, bytes. Default 16777216 (16 MiB).
    pub cache_max_bytes: Option<Spanned<u64>>,
}

/// `[tracing]`. Each key wins over its OpenTelemetry environment variable.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// OTLP/HTTP collector base URL, e.g. `http://otel-collector:4318` (spans go to
    /// `/v1/traces`). Default: from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; no export without one.
    pub otlp_endpoint: Option<Spanned<String>>,
    /// `http/protobuf` (default) or `http/json`.
    pub protocol: Option<Spanned<String>>,
    /// `service.name` of the exported spans. Default `OTEL_SERVICE_NAME`, else `jwtgate`.
    pub service_name: Option<Spanned<String>>,
    /// More resource attributes (`{ "deployment.environment" = "prod" }`), over
    /// `OTEL_RESOURCE_ATTRIBUTES` key by key.
    pub resource_attributes: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// One of OpenTelemetry's samplers (`parentbased_always_on`, …). Default
    /// `OTEL_TRACES_SAMPLER`, else `parentbased_always_on`.
    pub sampler: Option<Spanned<String>>,
    /// The ratio of the `traceidratio` samplers, 0 to 1. Default `OTEL_TRACES_SAMPLER_ARG`,
    /// else 1.
    pub sampler_ratio: Option<Spanned<f64>>,
}

/// `[cors]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Allowed origins (`https://app.example.com`), or `["*"]`.
    pub allow_origins: Spanned<Vec<Spanned<String>>>,
    /// Allowed methods. Default `["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]`.
    pub allow_methods: Option<Spanned<Vec<Spanned<String>>>>,
    /// Allowed request headers. Default `["authorization", "content-type"]`.
    pub allow_headers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Response headers the page may read. Default none.
    pub expose_headers: Option<Spanned<Vec<Spanned<String>>>>,
    /// How long browsers may cache a preflight answer. Default `10m`.
    pub max_age: Option<Spanned<String>>,
    /// Allow cookies and `Authorization` on cross-origin requests. Default false.
    pub allow_credentials: Option<Spanned<bool>>,
}

/// `[forward_auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    /// Path (and prefix) of the auth endpoint. Default `/auth`.
    pub path: Option<Spanned<String>>,
}

/// `[paths]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    /// `reject` (default): a `;` in a path is 400. `allow`: it starts a segment's parameters,
    /// and `..;x` is a dot-segment. `%3B` is 400 either way.
    pub semicolons: Option<Spanned<String>>,
    /// Route patterns match ASCII letters case-insensitively. Default false.
    pub case_insensitive: Option<Spanned<bool>>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Proxy listener, `host:port`. Default `0.0.0.0:8080`.
    pub listen: Option<Spanned<String>>,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`). Default `127.0.0.1:9901`.
    pub admin_listen: Option<Spanned<String>>,
    /// Largest request head (request line plus headers), bytes. Default 16384, minimum 8192.
    pub max_header_bytes: Option<Spanned<u64>>,
    /// Most request headers accepted. Default 100.
    pub max_headers: Option<Spanned<u64>>,
    /// Time a client has to send the whole request head. Default `10s`.
    pub header_read_timeout: Option<Spanned<String>>,
    /// Most client connections open at once; further ones wait in the backlog. Default 10000.
    pub max_connections: Option<Spanned<u64>>,
    /// How long SIGTERM waits for in-flight requests. Default `30s`.
    pub drain_timeout: Option<Spanned<String>>,
    /// After SIGTERM, how long to keep accepting while `/readyz` says 503, before draining.
    /// Default `0s`.
    pub shutdown_delay: Option<Spanned<String>>,
    /// Most bytes of request bodies held whole at once, over all requests (a signed AWS
    /// payload is read whole to be hashed); a request that would pass it gets 503. Default
    /// 268435456 (256 MiB).
    pub max_buffered_body_bytes: Option<Spanned<u64>>,
    /// Networks whose `X-Forwarded-*` headers are believed (CIDRs). Default: none.
    pub trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[server.tls]`: TLS on the proxy listener.
    pub tls: Option<Spanned<RawServerTls>>,
}

/// `[server.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: Spanned<String>,
    /// PEM private key.
    pub key_file: Spanned<String>,
    /// PEM CA bundle for client certificates (mutual TLS).
    pub client_ca_file: Option<Spanned<String>>,
    /// `required` (default with `client_ca_file`) or `optional`.
    pub client_auth: Option<Spanned<String>>,
}

/// `[upstream]`, or one `[[upstreams]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Required in `[[upstreams]]` (routes, metrics and logs name it); the single `[upstream]`
    /// is `default` and takes no name.
    pub name: Option<Spanned<String>>,
    /// Base URL, `http://host:port` (a path prefix is allowed). This or `urls`.
    pub url: Option<Spanned<String>>,
    /// Several addresses of one service (same scheme and path), taking turns; one whose
    /// connect fails is skipped for a while. This or `url`.
    pub urls: Option<Spanned<Vec<Spanned<String>>>>,
    /// TCP connect timeout. Default `5s`.
    pub connect_timeout: Option<Spanned<String>>,
    /// Time from sending the request until the response head arrives. Default `60s`.
    pub response_timeout: Option<Spanned<String>>,
    /// Idle pooled connections are closed after this long. Default `90s`.
    pub pool_idle_timeout: Option<Spanned<String>>,
    /// Most idle pooled connections kept. Default 256.
    pub pool_max_idle: Option<Spanned<u64>>,
    /// Speak HTTP/2 to the upstream (h2c for `http://`, ALPN h2 for `https://`). Default false.
    pub http2: Option<Spanned<bool>>,
    /// PEM CA bundle trusted for an `https://` upstream. Default: the system's roots.
    pub ca_file: Option<Spanned<String>>,
    /// PEM client certificate for mutual TLS to the upstream.
    pub client_cert_file: Option<Spanned<String>>,
    /// PEM key of `client_cert_file`.
    pub client_key_file: Option<Spanned<String>>,
    /// Sign every request to this upstream with SigV4 (S3, IAM-authorised API Gateway, Lambda
    /// function URLs, OpenSearch): `{ service, region, credentials, payload, max_body }`.
    /// Default: unsigned.
    pub aws_sigv4: Option<Spanned<SigV4Choice>>,
}

/// `aws_sigv4 = { … }` on an upstream or a route, or `aws_sigv4 = false` on a route (unsigned
/// although its upstream signs).
#[derive(Debug)]
pub enum SigV4Choice {
    /// `false`: do not sign (`true` is refused: say how).
    Off(bool),
    /// Sign as the table says (boxed: a table is large, `false` is one byte).
    Sign(Box<RawSigV4>),
}

/// Reads a boolean or a table, keeping the table's own errors (an unknown key, a wrong type)
/// at their place, which an untagged enum would lose.
impl<'de> Deserialize<'de> for SigV4Choice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SigV4Choice;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table { service, region, credentials, … } or false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<SigV4Choice, E> {
                Ok(SigV4Choice::Off(v))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> Result<SigV4Choice, M::Error> {
                RawSigV4::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|table| SigV4Choice::Sign(Box::new(table)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The keys of `aws_sigv4`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigV4 {
    /// The service's signing name: `s3`, `execute-api`, `lambda`, `es`, `aoss`, …. Required.
    pub service: Option<Spanned<String>>,
    /// The region signed for (`us-east-1`). Required.
    pub region: Option<Spanned<String>>,
    /// The `[[aws_credentials]]` source whose credentials sign. Required.
    pub credentials: Option<Spanned<String>>,
    /// `unsigned` (S3 only, the default there: the body streams) or `signed` (the body is
    /// buffered up to `max_body` and hashed; the default elsewhere).
    pub payload: Option<Spanned<String>>,
    /// Largest body a `signed` payload buffers, like `10MB`. Default `10MB`.
    pub max_body: Option<Spanned<String>>,
    /// The client's `x-amz-*` headers sent (and signed) with the request, by name or prefix
    /// (`["x-amz-meta-*", "x-amz-acl"]`); SigV4's own never are. Default: none.
    pub forward_headers: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One `[[issuers]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// Label in metrics, logs and route `issuers` lists. Default: the issuer URL.
    pub name: Option<Spanned<String>>,
    /// Exact `iss` value. Required unless `region` + `user_pool_id` are given.
    pub issuer: Option<Spanned<String>>,
    /// Cognito shorthand: region of the user pool.
    pub region: Option<Spanned<String>>,
    /// Cognito shorthand: user pool id.
    pub user_pool_id: Option<Spanned<String>>,
    /// Key set URL. Default: from `{issuer}/.well-known/openid-configuration`
    /// (Cognito shorthand: `{issuer}/.well-known/jwks.json`).
    pub jwks_uri: Option<Spanned<String>>,
    /// Accepted `aud` values (any of); `client_id` is checked when `aud` is absent.
    pub audiences: Option<Spanned<Vec<Spanned<String>>>>,
    /// Accept tokens whatever their audience. Default false; must be said explicitly.
    pub skip_audience_check: Option<Spanned<bool>>,
    /// `"access"` or `"id"`: the only Cognito token kind accepted. Default: either.
    pub token_use: Option<Spanned<String>>,
    /// Allowed signing algorithms. Default `["RS256"]`.
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat`. Default `60s`.
    pub leeway: Option<Spanned<String>>,
    /// How often keys are refetched in the background. Default `10m`.
    pub refresh_interval: Option<Spanned<String>>,
    /// Least time between two fetches caused by unknown `kid`s. Default `10s`.
    pub min_refetch_interval: Option<Spanned<String>>,
    /// Timeout of one key-set or discovery fetch. Default `5s`.
    pub fetch_timeout: Option<Spanned<String>>,
}

/// One `[[routes]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Label in metrics and logs. Default: the path pattern.
    pub name: Option<Spanned<String>>,
    /// Path pattern: exact, `*` for one segment, `{name}` for one captured segment, `/**` as the
    /// last segment for a prefix.
    pub path: Spanned<String>,
    /// Methods this route applies to. Default: all.
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    /// `jwt` (default), `optional` or `none`.
    pub auth: Option<Spanned<String>>,
    /// At least one of these scopes.
    pub scopes_any: Option<Spanned<Vec<Spanned<String>>>>,
    /// Every one of these scopes.
    pub scopes_all: Option<Spanned<Vec<Spanned<String>>>>,
    /// At least one of these `cognito:groups`.
    pub groups_any: Option<Spanned<Vec<Spanned<String>>>>,
    /// `access` or `id`.
    pub token_use: Option<Spanned<String>>,
    /// Only tokens of these issuers (by name).
    pub issuers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Exact claim values: `{ claim = "value" }` or `{ claim = ["a", "b"] }` (any of).
    pub claims: Option<Spanned<BTreeMap<String, Spanned<ClaimValues>>>>,
    /// `forward`: pass CORS preflights for this route to the upstream without authentication.
    /// Default: answered from `[cors]` when it is configured, else treated like any request.
    pub preflight: Option<Spanned<String>>,
    /// Override headers (`X-HTTP-Method-Override`, `X-Original-URL`, …) this route passes to
    /// its upstream. Default: none (every one is removed).
    pub keep_override_headers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Name of the upstream this route forwards to. Default `default`.
    pub upstream: Option<Spanned<String>>,
    /// With `auth = "login"`: the sign-in provider (a `[[logins]]` name). Default `default`,
    /// the `[login]` table.
    pub login: Option<Spanned<String>>,
    /// Upstream header name to the name of a capture of `path` (`{ "x-tenant-id" = "tenant" }`):
    /// the captured value is sent in that header. Default: none.
    pub capture_headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Leading literal segments of `path` to remove before forwarding (`"/orders"`). Default:
    /// none.
    pub strip_prefix: Option<Spanned<String>>,
    /// Segments to put in front of the path before forwarding (`"/v1"`), after `strip_prefix`.
    /// Default: none.
    pub add_prefix: Option<Spanned<String>>,
    /// Cedar policies decide the request after the route's requirements: `true` for
    /// `[policies]`, or a `[[policy_sets]]` name. Default: none.
    pub policy: Option<Spanned<PolicyChoice>>,
    /// An `[[authorizers]]` name: that external authorizer decides after the route's own
    /// requirements. Default: none.
    pub authorizer: Option<Spanned<String>>,
    /// SigV4 signing of this route's requests, instead of its upstream's (`false`: unsigned).
    /// Default: the upstream's.
    pub aws_sigv4: Option<Spanned<SigV4Choice>>,
}

/// A claim matcher's accepted value(s).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ClaimValues {
    /// One accepted value.
    One(String),
    /// Any of these values.
    Any(Vec<String>),
}

/// `[headers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    /// Upstream header name to claim name.
    pub claims: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Header carrying every verified claim as base64url JSON. Default: none.
    pub claims_json: Option<Spanned<String>>,
    /// Pass the client's `Authorization` header upstream. Default true.
    pub forward_authorization: Option<Spanned<bool>>,
    /// Further header names to strip from every client request (identity headers of your own).
    pub strip: Option<Spanned<Vec<Spanned<String>>>>,
    /// Client header names containing `_`: `drop` (default, as nginx does) or `keep` (look-alikes
    /// of headers jwtgate manages, and of headers the request carries, are dropped even then).
    pub underscores: Option<Spanned<String>>,
}

/// `[token_cache]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenCache {
    /// Memory the cache may use, bytes (approximate: token claims plus overhead). Default
    /// 33554432 (32 MiB); 0 disables the cache.
    pub max_bytes: Option<Spanned<u64>>,
}

/// `[login]` or one `[[logins]]` table: ALB-style browser sign-in (authorization code flow
/// with PKCE).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    /// `[[logins]]` only: the provider's name (routes' `login`, metric label, default cookie
    /// and path names). `[login]` is the provider named `default`.
    pub name: Option<Spanned<String>>,
    /// OpenID issuer; endpoints come from its discovery document unless given below.
    pub issuer: Option<Spanned<String>>,
    /// Cognito shorthand: user pool id (gives the issuer and key set).
    pub user_pool_id: Option<Spanned<String>>,
    /// Cognito shorthand: region (optional, derived from the pool id).
    pub region: Option<Spanned<String>>,
    /// Cognito shorthand: hosted UI domain, e.g. `myapp.auth.us-east-1.amazoncognito.com`.
    pub domain: Option<Spanned<String>>,
    /// Authorization endpoint (else from discovery / the Cognito domain).
    pub authorization_endpoint: Option<Spanned<String>>,
    /// Token endpoint.
    pub token_endpoint: Option<Spanned<String>>,
    /// User-info endpoint.
    pub user_info_endpoint: Option<Spanned<String>>,
    /// End-session (logout) endpoint.
    pub end_session_endpoint: Option<Spanned<String>>,
    /// Key set of the ID token signer.
    pub jwks_uri: Option<Spanned<String>>,
    /// OAuth client id.
    pub client_id: Spanned<String>,
    /// Name of the environment variable holding the client secret.
    pub client_secret_env: Option<Spanned<String>>,
    /// File holding the client secret.
    pub client_secret_file: Option<Spanned<String>>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    pub token_endpoint_auth: Option<Spanned<String>>,
    /// Requested scopes. Default `openid`.
    pub scope: Option<Spanned<String>>,
    /// Extra authorization request parameters (at most 10).
    pub extra_params: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Session cookie name (shards get `-0`, `-1`, …). Default `AWSELBAuthSessionCookie`
    /// (`[[logins]]`: `AWSELBAuthSessionCookie.NAME`).
    pub session_cookie_name: Option<Spanned<String>>,
    /// Longest a session lives, whatever the refreshes. Default `7d`.
    pub session_timeout: Option<Spanned<String>>,
    /// `authenticate` (302 to the IdP, default), `deny` (401) or `allow` (anonymous).
    pub on_unauthenticated: Option<Spanned<String>>,
    /// API clients (`Accept: application/json`, `X-Requested-With`) without a session:
    /// `deny` (401, default) or `authenticate` (302 like browsers).
    pub api_clients: Option<Spanned<String>>,
    /// Path that signs out. Default `/oauth2/sign_out` (`[[logins]]`: `/oauth2/sign_out/NAME`).
    pub logout_path: Option<Spanned<String>>,
    /// Path the IdP redirects back to with the code. Default `/oauth2/idpresponse`
    /// (`[[logins]]`: `/oauth2/idpresponse/NAME`).
    pub callback_path: Option<Spanned<String>>,
    /// Where the IdP sends the user after logout.
    pub logout_redirect: Option<Spanned<String>>,
    /// External base URL (`https://app.example.com`) for the callback URL. Default: from the
    /// request's `Host` and scheme.
    pub redirect_base: Option<Spanned<String>>,
    /// Mark cookies `Secure`. Default true; turn off only for plain-http development.
    pub secure_cookies: Option<Spanned<bool>>,
    /// Environment variable with the cookie keys: base64 32-byte keys, comma-separated,
    /// newest first (the newest encrypts, all decrypt).
    pub cookie_keys_env: Option<Spanned<String>>,
    /// File with the cookie keys, one per line, newest first.
    pub cookie_keys_file: Option<Spanned<String>>,
    /// `cookie` (default) or `redis`.
    pub session_store: Option<Spanned<String>>,
    /// Redis URL for `session_store = "redis"`.
    pub redis_url: Option<Spanned<String>>,
    /// Environment variable holding the Redis URL (keeps a password out of the file).
    pub redis_url_env: Option<Spanned<String>>,
    /// ALB ARN put in `x-amzn-oidc-data`'s `signer` header.
    pub alb_signer: Option<Spanned<String>>,
    /// PEM (PKCS#8) P-256 private key that signs `x-amzn-oidc-data`. Default: generated.
    pub alb_key_file: Option<Spanned<String>>,
    /// Allowed ID token algorithms. Default `["RS256"]`.
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
}

//! `[[aws_credentials]]` as checked: what each named source needs at run time.

use std::sync::Arc;
use std::time::Duration;

/// Default `timeout` of every call a source makes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default `refresh_margin`: credentials are replaced this long before they expire (at most
/// half their lifetime before).
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Default `cache_max_bytes` of a source's credential cache.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Longest any cache entry is kept, whatever the token and credentials say (STS's maximum
/// session).
pub const MAX_ENTRY_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// One `[[aws_credentials]]` table, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// The name routes and upstreams will refer to; a metric label.
    pub name: Arc<str>,
    /// Where the credentials come from.
    pub kind: SourceKind,
    /// Timeout of each outbound call.
    pub timeout: Duration,
    /// How long before expiry credentials are replaced.
    pub refresh_margin: Duration,
    /// Size bound of the credential cache, bytes.
    pub cache_max_bytes: u64,
}

impl SourceSettings {
    /// One line for `jwtgate check`.
    pub fn describe(&self) -> String {
        let what = match &self.kind {
            SourceKind::IdentityPool(p) => format!(
                "pool={}  endpoint={}  guests={}",
                p.identity_pool_id, p.endpoint, p.guests
            ),
            SourceKind::WebIdentity(w) => format!(
                "role={}  roles={}  endpoint={}  duration={}",
                w.role_arn.as_deref().unwrap_or("-"),
                if w.roles.is_empty() {
                    "-".to_owned()
                } else {
                    w.roles.join(",")
                },
                w.endpoint,
                w.duration
                    .map_or_else(|| "default".to_owned(), |d| format!("{}s", d.as_secs())),
            ),
            SourceKind::Gateway(g) => format!(
                "sts={}",
                g.sts_endpoint.as_deref().unwrap_or("from AWS_REGION")
            ),
        };
        format!(
            "aws_credentials {:?}  source={}  {what}  timeout={}ms  refresh_margin={}s  cache_max_bytes={}",
            self.name,
            self.kind.as_str(),
            self.timeout.as_millis(),
            self.refresh_margin.as_secs(),
            self.cache_max_bytes
        )
    }
}

/// Where a source's credentials come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A Cognito identity pool (enhanced flow).
    IdentityPool(IdentityPool),
    /// STS `AssumeRoleWithWebIdentity` with the user's token.
    WebIdentity(WebIdentity),
    /// jwtgate's own credentials from the standard chain.
    Gateway(Gateway),
}

impl SourceKind {
    /// The word `source = "…"` takes; also the metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::IdentityPool(_) => "identity_pool",
            SourceKind::WebIdentity(_) => "web_identity",
            SourceKind::Gateway(_) => "gateway",
        }
    }
}

/// `source = "identity_pool"`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityPool {
    /// `region:uuid`.
    pub identity_pool_id: String,
    /// Region of the pool (from the id unless given).
    pub region: String,
    /// Cognito Identity endpoint: `https://cognito-identity.{region}.amazonaws.com/` or the
    /// configured `endpoint`.
    pub endpoint: String,
    /// Requests without a token get the pool's unauthenticated identity.
    pub guests: bool,
}

/// `source = "web_identity"`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebIdentity {
    /// The role assumed when the token names none of `roles` (`role_arn`).
    pub role_arn: Option<String>,
    /// Roles a token may choose with `cognito:preferred_role`.
    pub roles: Vec<String>,
    /// STS endpoint: regional from `region`, the global one, or the configured `endpoint`.
    pub endpoint: String,
    /// `DurationSeconds` asked for; STS's default (1 h) when absent.
    pub duration: Option<Duration>,
}

/// `source = "gateway"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// STS endpoint for the web-identity step of the chain (IRSA); default from `AWS_REGION`
    /// at run time.
    pub sts_endpoint: Option<String>,
}

/// STS's endpoint for `region` (the global one without a region).
pub fn sts_endpoint(region: Option<&str>) -> String {
    match region {
        Some(r) => format!("https://sts.{r}.amazonaws.com/"),
        None => "https://sts.amazonaws.com/".to_owned(),
    }
}

/// Default `aws_sigv4.max_body`: the largest body a `signed` payload buffers.
pub const DEFAULT_MAX_BODY: u64 = 10_000_000;
/// Largest `aws_sigv4.max_body` accepted (each request in flight may hold this much).
pub const MAX_MAX_BODY: u64 = 1 << 30;

/// `aws_sigv4`, as checked: how a route's requests are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    /// Service, region and the service's canonicalisation rules.
    pub scope: super::SigningScope,
    /// The `[[aws_credentials]]` source whose credentials sign.
    pub credentials: Arc<str>,
    /// What the signature says about the body.
    pub payload: PayloadMode,
    /// Largest body a `signed` payload buffers (bytes); beyond it 413.
    pub max_body: u64,
}

impl Signing {
    /// One line for `jwtgate check`.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "sigv4 service={} region={} credentials={} payload={}",
            self.scope.service,
            self.scope.region,
            self.credentials,
            match self.payload {
                PayloadMode::Unsigned => "unsigned".to_owned(),
                PayloadMode::Signed => format!("signed(max {} bytes)", self.max_body),
            }
        );
        if !self.scope.forward_amz_headers.is_empty() {
            text.push_str(&format!(
                " forwards={}",
                self.scope.forward_amz_headers.join(",")
            ));
        }
        text
    }
}

/// `aws_sigv4.payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadMode {
    /// `UNSIGNED-PAYLOAD`: the body streams (S3 only).
    Unsigned,
    /// The body is buffered and its SHA-256 signed.
    Signed,
}

/// Whether `service` is one of S3's signing names, which accept `UNSIGNED-PAYLOAD`.
pub fn is_s3(service: &str) -> bool {
    matches!(service, "s3" | "s3-object-lambda" | "s3express")
}

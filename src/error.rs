//! Why a request stopped inside jwtgate, and the one place that becomes a response.
//! Bodies are fixed JSON strings; details go to the log, never to the client.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::authz::ForbiddenReason;
use crate::headers::HostError;
use crate::metrics::Reason;
use crate::routes::PathError;
use crate::token::TokenError;

/// The realm in every `WWW-Authenticate` challenge.
pub const REALM: &str = "jwtgate";

/// Why the upstream exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused, reset, DNS or protocol failure.
    #[error("upstream unreachable")]
    Unreachable,
    /// No response head within the response timeout.
    #[error("upstream timed out")]
    Timeout,
}

/// A request refused or failed inside jwtgate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// An unusable request target (bad encoding, encoded slash, …).
    #[error("bad request: {0}")]
    BadPath(#[from] PathError),
    /// A missing, repeated or invalid `Host` (RFC 9112 §3.2).
    #[error("bad request: {0}")]
    BadHost(#[from] HostError),
    /// A path segment a route captures for a header (`capture_headers`) is not UTF-8 or not a
    /// header value jwtgate sends (a control character, leading or trailing space).
    #[error("bad request: captured path segment is not a valid header value")]
    BadCapture,
    /// No route matches (deny by default, like API Gateway).
    #[error("no matching route")]
    NoRoute,
    /// No bearer token on a route that needs one.
    #[error("missing bearer token")]
    MissingToken,
    /// A token was sent and refused.
    #[error("invalid token: {0}")]
    InvalidToken(#[from] TokenError),
    /// A valid token without the route's permission.
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Which requirement failed.
        reason: ForbiddenReason,
        /// The route's required scopes, for the challenge.
        scope: Option<String>,
    },
    /// The client's request body broke off on its way upstream (bad chunked syntax, the
    /// connection closed before `Content-Length` bytes, an HTTP/2 body longer or shorter than
    /// its `content-length`): the client's fault, not the upstream's.
    #[error("broken request body")]
    BadRequestBody,
    /// The upstream failed.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    /// A login route without a session, where redirecting is not wanted (API client, `deny`).
    #[error("sign-in required")]
    LoginRequired,
    /// The sign-in callback could not complete (bad state, nonce, code, …).
    #[error("sign-in failed: {0}")]
    LoginFailed(&'static str),
    /// The identity provider cannot be reached or answered nonsense.
    #[error("identity provider unavailable")]
    IdpUnavailable,
    /// The session store (Redis) cannot be reached.
    #[error("session store unavailable")]
    SessionStore,
    /// A route's external authorizer lacks an identity source value: 401 without a call.
    #[error("authorizer identity source missing")]
    AuthorizerIdentityMissing,
    /// The external authorizer denied the request (simple `false`, or the IAM policy does not
    /// allow the routeArn).
    #[error("denied by the authorizer")]
    AuthorizerDenied,
    /// The authorizer call failed (timeout, connection, status, shape, size): refused with
    /// this status, never allowed.
    #[error("authorizer failed")]
    AuthorizerFailed(StatusCode),
    /// An ext_authz service denied: its status, listed headers and body go to the client.
    #[error("denied by the authorizer ({})", .0.status)]
    AuthorizerAnswered(Box<AuthorizerDenial>),
    /// No AWS credentials for the caller of a signing route: 401 when Cognito or STS refused
    /// the token, 403 when the role or a guest is not allowed, 503 when AWS is busy or
    /// unreachable, 502 for an answer that makes no sense, 500 when the source has nothing.
    #[error("no AWS credentials: {0}")]
    AwsCredentials(crate::aws::AwsError),
    /// A request to a signing route that cannot be signed as it is (a header value that is
    /// not visible ASCII, which AWS's canonical form cannot hold).
    #[error("bad request: cannot be signed for AWS")]
    AwsSigning,
    /// A body over the signing route's `max_body` (a signed payload is buffered to be hashed).
    #[error("request body too large")]
    BodyTooLarge,
    /// The bodies held whole at this moment already fill `max_buffered_body_bytes`: 503, try
    /// again shortly.
    #[error("request body buffers full")]
    BodyBuffersFull,
}

/// An ext_authz denial as the service answered it (headers already filtered for the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizerDenial {
    /// The service's status.
    pub status: StatusCode,
    /// The headers the client gets.
    pub headers: http::HeaderMap,
    /// The service's body (bounded when read).
    pub body: Bytes,
}

impl Reject {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::BadPath(_)
            | Reject::BadHost(_)
            | Reject::BadRequestBody
            | Reject::BadCapture
            | Reject::AwsSigning => StatusCode::BAD_REQUEST,
            Reject::NoRoute => StatusCode::NOT_FOUND,
            Reject::InvalidToken(TokenError::KeysUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Reject::MissingToken | Reject::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Reject::Forbidden { .. } => StatusCode::FORBIDDEN,
            Reject::Upstream(UpstreamError::Unreachable) => StatusCode::BAD_GATEWAY,
            Reject::Upstream(UpstreamError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Reject::LoginRequired | Reject::LoginFailed(_) => StatusCode::UNAUTHORIZED,
            Reject::IdpUnavailable => StatusCode::BAD_GATEWAY,
            Reject::SessionStore => StatusCode::SERVICE_UNAVAILABLE,
            Reject::AuthorizerIdentityMissing => StatusCode::UNAUTHORIZED,
            Reject::AuthorizerDenied => StatusCode::FORBIDDEN,
            Reject::AuthorizerFailed(status) => *status,
            Reject::AuthorizerAnswered(denial) => denial.status,
            Reject::AwsCredentials(e) => e.status(),
            Reject::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BodyBuffersFull => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The label for metrics and the access log.
    pub fn reason(&self) -> Reason {
        match self {
            Reject::BadPath(_) => Reason::BadPath,
            Reject::BadHost(_) => Reason::BadHost,
            Reject::BadRequestBody => Reason::BadRequestBody,
            Reject::BadCapture => Reason::BadCapture,
            Reject::NoRoute => Reason::NoRoute,
            Reject::MissingToken => Reason::MissingToken,
            Reject::InvalidToken(e) => e.reason(),
            Reject::Forbidden { reason, .. } => Reason::from(*reason),
            Reject::Upstream(UpstreamError::Unreachable) => Reason::UpstreamUnreachable,
            Reject::Upstream(UpstreamError::Timeout) => Reason::UpstreamTimeout,
            Reject::LoginRequired => Reason::LoginRequired,
            Reject::LoginFailed(_) => Reason::LoginFailed,
            Reject::IdpUnavailable => Reason::IdpUnavailable,
            Reject::SessionStore => Reason::SessionStoreUnavailable,
            Reject::AuthorizerIdentityMissing => Reason::AuthorizerIdentityMissing,
            Reject::AuthorizerDenied | Reject::AuthorizerAnswered(_) => Reason::AuthorizerDenied,
            Reject::AuthorizerFailed(_) => Reason::AuthorizerFailed,
            Reject::AwsCredentials(_) => Reason::AwsCredentials,
            Reject::AwsSigning => Reason::AwsSigning,
            Reject::BodyTooLarge => Reason::BodyTooLarge,
            Reject::BodyBuffersFull => Reason::BodyBuffersFull,
        }
    }

    /// Whether an authentication or authorisation decision caused it (counted as an auth failure).
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            Reject::MissingToken
                | Reject::InvalidToken(_)
                | Reject::Forbidden { .. }
                | Reject::LoginRequired
                | Reject::LoginFailed(_)
                | Reject::AuthorizerIdentityMissing
                | Reject::AuthorizerDenied
                | Reject::AuthorizerAnswered(_)
        ) || matches!(self, Reject::AwsCredentials(e) if e.status().is_client_error())
    }

    /// The gRPC status code a gRPC client gets instead of the HTTP status.
    pub fn grpc_status(&self) -> u8 {
        match self.status() {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => 3, // INVALID_ARGUMENT
            StatusCode::UNAUTHORIZED => 16,                               // UNAUTHENTICATED
            StatusCode::FORBIDDEN => 7,                                   // PERMISSION_DENIED
            StatusCode::NOT_FOUND => 12,                                  // UNIMPLEMENTED
            StatusCode::GATEWAY_TIMEOUT => 4,                             // DEADLINE_EXCEEDED
            _ => 14,                                                      // UNAVAILABLE
        }
    }

    /// jwtgate's answer, decided once; [`Synthetic::render`] writes it for the protocol.
    pub fn synthetic(&self) -> Synthetic {
        let http_status = self.status();
        let body: &'static str = match http_status {
            StatusCode::BAD_REQUEST => r#"{"message":"Bad Request"}"#,
            StatusCode::NOT_FOUND => r#"{"message":"Not Found"}"#,
            StatusCode::UNAUTHORIZED => r#"{"message":"Unauthorized"}"#,
            StatusCode::FORBIDDEN => r#"{"message":"Forbidden"}"#,
            StatusCode::BAD_GATEWAY => r#"{"message":"Bad Gateway"}"#,
            StatusCode::GATEWAY_TIMEOUT => r#"{"message":"Gateway Timeout"}"#,
            StatusCode::INTERNAL_SERVER_ERROR => r#"{"message":"Internal Server Error"}"#,
            StatusCode::PAYLOAD_TOO_LARGE => r#"{"message":"Request Entity Too Large"}"#,
            _ if matches!(self, Reject::SessionStore) => {
                r#"{"message":"Service Unavailable","reason":"session store unavailable"}"#
            }
            _ => r#"{"message":"Service Unavailable"}"#,
        };
        let challenge = match self {
            Reject::MissingToken => Some(format!(r#"Bearer realm="{REALM}""#)),
            Reject::InvalidToken(TokenError::KeysUnavailable) => None,
            Reject::InvalidToken(e) => Some(format!(
                r#"Bearer realm="{REALM}", error="invalid_token", error_description="{e}""#
            )),
            Reject::Forbidden {
                scope: Some(scope), ..
            } => Some(format!(
                r#"Bearer realm="{REALM}", error="insufficient_scope", scope="{scope}""#
            )),
            Reject::Forbidden { scope: None, .. } => Some(format!(
                r#"Bearer realm="{REALM}", error="insufficient_scope""#
            )),
            Reject::AwsCredentials(e) if e.status() == StatusCode::UNAUTHORIZED => Some(format!(
                r#"Bearer realm="{REALM}", error="invalid_token", error_description="AWS refused the token""#
            )),
            _ => None,
        };
        let retry_after = match self {
            Reject::AwsCredentials(e) => e
                .retry_after()
                .map(|d| u16::try_from(d.as_secs().max(1)).unwrap_or(u16::MAX)),
            _ => (http_status == StatusCode::SERVICE_UNAVAILABLE).then_some(5),
        };
        Synthetic {
            http_status,
            grpc_status: self.grpc_status(),
            body,
            challenge,
            retry_after,
            // The request's framing or host could not be trusted: nothing after it on the
            // same connection can be either. A body refused unread is not read to its end.
            close_connection: matches!(
                self,
                Reject::BadRequestBody
                    | Reject::BadHost(_)
                    | Reject::BodyTooLarge
                    | Reject::BodyBuffersFull
            ),
            message: format!("jwtgate: {self}"),
        }
    }

    /// The response a client gets: [`Reject::synthetic`] rendered, or for an ext_authz denial
    /// (not to a gRPC client) the service's own status, listed headers and body.
    pub fn render(&self, grpc: bool) -> Response<Full<Bytes>> {
        let mut response = self.synthetic().render(grpc);
        if let (Reject::AuthorizerAnswered(denial), false) = (self, grpc) {
            let headers = response.headers_mut();
            headers.remove(header::CONTENT_TYPE);
            for (name, value) in &denial.headers {
                headers.append(name.clone(), value.clone());
            }
            *response.body_mut() = Full::new(denial.body.clone());
        }
        response
    }
}

/// jwtgate's own answer to a refused request, rendered as HTTP or gRPC in one place (the shape
/// of linkerd2-proxy's `SyntheticHttpResponse`). Nothing in it comes from the request beyond
/// the fixed reason texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthetic {
    /// The HTTP status.
    pub http_status: StatusCode,
    /// The `grpc-status` a gRPC client gets instead.
    pub grpc_status: u8,
    /// The fixed JSON body.
    pub body: &'static str,
    /// `WWW-Authenticate` (RFC 6750), when a challenge applies.
    pub challenge: Option<String>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u16>,
    /// Close the client connection after this answer.
    pub close_connection: bool,
    /// `grpc-message` (percent-encoded when rendered).
    pub message: String,
}

impl Synthetic {
    /// The response: a fixed JSON body with its status, or for a gRPC client HTTP 200,
    /// `application/grpc`, no body and the outcome in `grpc-status` / `grpc-message` (a
    /// "trailers-only" response); the same challenge either way.
    pub fn render(self, grpc: bool) -> Response<Full<Bytes>> {
        let body = if grpc { "" } else { self.body };
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = if grpc {
            StatusCode::OK
        } else {
            self.http_status
        };
        let headers = response.headers_mut();
        if grpc {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert(
                "grpc-status",
                HeaderValue::from(u16::from(self.grpc_status)),
            );
            if let Ok(v) = HeaderValue::try_from(percent_encode(&self.message)) {
                headers.insert("grpc-message", v);
            }
        } else {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(value) = self.challenge.and_then(|c| HeaderValue::try_from(c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.close_connection {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// `grpc-message` encoding: printable ASCII except `%` as is, every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(r: Reject) -> (StatusCode, String) {
        let resp = r.synthetic().render(false);
        let c = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (resp.status(), c)
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(
            challenge(Reject::MissingToken),
            (StatusCode::UNAUTHORIZED, r#"Bearer realm="jwtgate""#.into())
        );
        let (s, c) = challenge(Reject::InvalidToken(TokenError::Expired));
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(
            c,
            r#"Bearer realm="jwtgate", error="invalid_token", error_description="token expired""#
        );
        let (s, c) = challenge(Reject::Forbidden {
            reason: ForbiddenReason::InsufficientScope,
            scope: Some("api/read".into()),
        });
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert!(c.contains(r#"error="insufficient_scope", scope="api/read""#));
        let (s, c) = challenge(Reject::InvalidToken(TokenError::KeysUnavailable));
        assert_eq!((s, c.as_str()), (StatusCode::SERVICE_UNAVAILABLE, ""));
        assert_eq!(Reject::NoRoute.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            Reject::Upstream(UpstreamError::Timeout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        let (s, c) = challenge(Reject::BadRequestBody);
        assert_eq!((s, c.as_str()), (StatusCode::BAD_REQUEST, ""));
        assert_eq!(Reject::BadRequestBody.reason().as_str(), "bad_request_body");
        assert_eq!(Reject::BadRequestBody.grpc_status(), 3, "INVALID_ARGUMENT");
        assert!(!Reject::BadRequestBody.is_auth_failure());
    }
}

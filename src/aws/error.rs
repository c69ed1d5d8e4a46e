//! Why credentials could not be had: a closed set the proxy maps to its answer (401/403 for a
//! token AWS refused, 503 with `Retry-After` when AWS is busy or unreachable, 502 for an answer
//! that makes no sense). Messages carry AWS's error code and a scrubbed, shortened message,
//! never a token or a secret.

use std::time::Duration;

use http::StatusCode;

/// How long a client is told to wait after throttling or an unreachable service.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Longest AWS message kept in an error, characters.
const MAX_MESSAGE_CHARS: usize = 200;

/// What went wrong while getting credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// Cognito or STS refused the user's token (expired, wrong issuer, not trusted).
    #[error("{service} refused the token: {code}: {message}")]
    TokenRefused {
        /// Which service answered.
        service: &'static str,
        /// AWS's error code (`NotAuthorizedException`, `InvalidIdentityToken`, …).
        code: String,
        /// AWS's message, scrubbed of anything token-shaped and shortened.
        message: String,
    },
    /// The user is known but may not have these credentials (role not allowed, guests off,
    /// `AccessDenied`).
    #[error("{service} denied credentials: {code}: {message}")]
    Forbidden {
        /// Which service answered (or `jwtgate` for its own checks).
        service: &'static str,
        /// AWS's error code, or jwtgate's reason.
        code: String,
        /// Details, scrubbed.
        message: String,
    },
    /// Throttled, unreachable, timed out or a 5xx: worth retrying later.
    #[error("{service} unavailable: {cause}")]
    Unavailable {
        /// Which service.
        service: &'static str,
        /// What happened (an error code, `timeout`, `connect`, `status 500`).
        cause: String,
        /// How long to tell the client to wait.
        retry_after: Duration,
    },
    /// An answer that is not what the API documents (bad JSON/XML, missing fields, too big).
    #[error("{service} answered something unusable: {what}")]
    Malformed {
        /// Which service.
        service: &'static str,
        /// What was wrong.
        what: String,
    },
    /// No credentials can be had from this source as configured (the gateway's chain found
    /// nothing, a guest on a source without guests).
    #[error("no credentials: {0}")]
    NotConfigured(String),
}

impl AwsError {
    /// The status the proxy answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AwsError::TokenRefused { .. } => StatusCode::UNAUTHORIZED,
            AwsError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AwsError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AwsError::Malformed { .. } => StatusCode::BAD_GATEWAY,
            AwsError::NotConfigured(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Retry-After` to send with a 503.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AwsError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// A fixed label for metrics and the access log.
    pub fn reason(&self) -> crate::metrics::CredentialResult {
        use crate::metrics::CredentialResult as R;
        match self {
            AwsError::TokenRefused { .. } => R::TokenRefused,
            AwsError::Forbidden { .. } => R::Forbidden,
            AwsError::Unavailable { .. } => R::Unavailable,
            AwsError::Malformed { .. } => R::Malformed,
            AwsError::NotConfigured(_) => R::NotConfigured,
        }
    }

    pub(crate) fn unavailable(service: &'static str, cause: impl Into<String>) -> Self {
        AwsError::Unavailable {
            service,
            cause: scrub(&cause.into()),
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    pub(crate) fn malformed(service: &'static str, what: impl Into<String>) -> Self {
        AwsError::Malformed {
            service,
            what: scrub(&what.into()),
        }
    }
}

/// An AWS error code as kept: AWS's codes are short words; anything else is replaced.
pub(crate) fn code(raw: &str) -> String {
    // Cognito's JSON errors may say `com.amazonaws.cognito...#NotAuthorizedException`.
    let raw = raw.rsplit('#').next().unwrap_or(raw).trim();
    if !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        raw.to_owned()
    } else {
        "UnknownError".to_owned()
    }
}

/// A message fit for an error: words that look like a JWT, a long base64 run (a token, a
/// session token, a secret key) replaced, control characters dropped, shortened.
pub(crate) fn scrub(message: &str) -> String {
    let mut out = String::new();
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let secret_like = word.starts_with("eyJ")
            || word.matches('.').count() >= 2 && word.len() > 40
            || word.len() >= 32
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(&b));
        if secret_like {
            out.push_str("<redacted>");
        } else {
            out.extend(word.chars().filter(|c| !c.is_control()));
        }
    }
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_anything_token_shaped() {
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlc2lnbmF0dXJl";
        let m = scrub(&format!(
            "Invalid login token. Token {token} expired\n at 12"
        ));
        assert!(!m.contains("eyJ"), "{m}");
        assert!(
            m.starts_with("Invalid login token. Token <redacted> expired"),
            "{m}"
        );
        let m = scrub("key wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY leaked");
        assert_eq!(m, "key <redacted> leaked");
        assert!(scrub(&"a ".repeat(500)).chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn codes_are_short_words() {
        assert_eq!(
            code("com.amazonaws.cognito.identity.model#NotAuthorizedException"),
            "NotAuthorizedException"
        );
        assert_eq!(code("<script>"), "UnknownError");
    }

    #[test]
    fn statuses() {
        let refused = AwsError::TokenRefused {
            service: "sts",
            code: "InvalidIdentityToken".into(),
            message: String::new(),
        };
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let busy = AwsError::unavailable("sts", "Throttling");
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.retry_after(), Some(DEFAULT_RETRY_AFTER));
        assert_eq!(
            AwsError::malformed("sts", "x").status(),
            StatusCode::BAD_GATEWAY
        );
    }
}

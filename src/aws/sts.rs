//! STS `AssumeRoleWithWebIdentity`: an unsigned query-API call (form POST, so the token is
//! never in a URL), answered in XML.

use std::time::Duration;

use super::credentials::{Credentials, Secret};
use super::error::{AwsError, DEFAULT_RETRY_AFTER, code, scrub};
use super::http::{send, unexpected_status};
use super::time::parse_rfc3339;
use super::xml;

const SERVICE: &str = "sts";

/// What to assume.
pub(crate) struct AssumeRole<'a> {
    /// Role ARN.
    pub role_arn: &'a str,
    /// `RoleSessionName`, already in STS's charset (see [`session_name`]).
    pub session_name: &'a str,
    /// The OIDC token.
    pub token: &'a str,
    /// `DurationSeconds`, when not STS's default.
    pub duration: Option<Duration>,
}

/// A `RoleSessionName` from any text (a `sub`): STS allows 2 to 64 of `[\w+=,.@-]`; other
/// characters become `-`, longer names are cut, shorter ones padded.
pub fn session_name(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while name.len() < 2 {
        name.push('-');
    }
    name
}

/// Calls STS at `endpoint`.
pub(crate) async fn assume_role_with_web_identity(
    client: &reqwest::Client,
    endpoint: &str,
    call: AssumeRole<'_>,
) -> Result<Credentials, AwsError> {
    let duration = call.duration.map(|d| d.as_secs().to_string());
    let mut form = vec![
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", call.role_arn),
        ("RoleSessionName", call.session_name),
        ("WebIdentityToken", call.token),
    ];
    if let Some(d) = &duration {
        form.push(("DurationSeconds", d));
    }
    let request = client.post(endpoint).form(&form);
    let (status, answer) = send(SERVICE, request).await?;
    let text = std::str::from_utf8(&answer)
        .map_err(|_| AwsError::malformed(SERVICE, "answer is not UTF-8"))?;
    if !status.is_success() {
        return Err(error(status, text));
    }
    let field = |tag| xml::text(text, tag).filter(|v| !v.is_empty());
    match (
        field("AccessKeyId"),
        field("SecretAccessKey"),
        field("SessionToken"),
        field("Expiration").and_then(|e| parse_rfc3339(&e)),
    ) {
        (Some(id), Some(secret), Some(token), Some(expires)) => Ok(Credentials::new(
            id,
            Secret::new(secret),
            Some(Secret::new(token)),
            Some(expires),
        )),
        _ => Err(AwsError::malformed(
            SERVICE,
            "AssumeRoleWithWebIdentity: no credentials",
        )),
    }
}

/// An STS error answer (`<ErrorResponse><Error><Code>…`) as an [`AwsError`].
fn error(status: http::StatusCode, text: &str) -> AwsError {
    let Some(raw_code) = xml::text(text, "Code") else {
        return unexpected_status(SERVICE, status);
    };
    let code = code(&raw_code);
    let message = scrub(&xml::text(text, "Message").unwrap_or_default());
    match code.as_str() {
        "InvalidIdentityToken" | "ExpiredTokenException" | "ExpiredToken" | "IDPRejectedClaim" => {
            AwsError::TokenRefused {
                service: SERVICE,
                code,
                message,
            }
        }
        "IDPCommunicationError"
        | "Throttling"
        | "ThrottlingException"
        | "ServiceUnavailable"
        | "InternalFailure" => AwsError::Unavailable {
            service: SERVICE,
            cause: format!("{code}: {message}"),
            retry_after: DEFAULT_RETRY_AFTER,
        },
        _ if status.is_server_error() => AwsError::Unavailable {
            service: SERVICE,
            cause: format!("{code}: {message}"),
            retry_after: DEFAULT_RETRY_AFTER,
        },
        _ => AwsError::Forbidden {
            service: SERVICE,
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn session_names_fit_sts() {
        assert_eq!(
            session_name("9f1c2e34-aaaa-bbbb-cccc-0123456789ab"),
            "9f1c2e34-aaaa-bbbb-cccc-0123456789ab"
        );
        assert_eq!(session_name("a b/c:d"), "a-b-c-d");
        assert_eq!(session_name(""), "--");
        assert_eq!(session_name("é"), "--");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn errors_by_code() {
        let doc = |c: &str| {
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{c}</Code>\
                 <Message>token eyJhbGciOi.eyJzdWIi.sig is bad</Message></Error></ErrorResponse>"
            )
        };
        let e = error(StatusCode::BAD_REQUEST, &doc("InvalidIdentityToken"));
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert!(!e.to_string().contains("eyJ"), "{e}");
        let e = error(StatusCode::FORBIDDEN, &doc("AccessDenied"));
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let e = error(StatusCode::BAD_REQUEST, &doc("Throttling"));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let e = error(StatusCode::INTERNAL_SERVER_ERROR, "oops");
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

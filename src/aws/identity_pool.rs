//! Cognito identity pools, enhanced flow: `GetId` then `GetCredentialsForIdentity`, both
//! unsigned JSON calls. With a user's ID token both carry `Logins = { "<iss without
//! https://>": <ID token> }`; a guest's carry none.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::credentials::{Credentials, Secret};
use super::error::{AwsError, code, scrub};
use super::http::{send, unexpected_status};
use super::time::from_epoch_seconds;

const SERVICE: &str = "cognito-identity";

/// The `Logins` entry of a user: the provider name (the token's `iss` without its scheme) and
/// the ID token.
#[derive(Clone, Copy)]
pub(crate) struct Login<'a> {
    /// `iss` as in the token.
    pub issuer: &'a str,
    /// The ID token.
    pub id_token: &'a str,
}

impl Login<'_> {
    /// `{"cognito-idp.{region}.amazonaws.com/{pool}": token}`.
    fn map(&self) -> Value {
        let provider = self
            .issuer
            .strip_prefix("https://")
            .unwrap_or(self.issuer)
            .trim_end_matches('/');
        let mut m = Map::new();
        m.insert(provider.to_owned(), Value::String(self.id_token.to_owned()));
        Value::Object(m)
    }
}

/// One JSON call with `X-Amz-Target: AWSCognitoIdentityService.{action}`.
async fn call(
    client: &reqwest::Client,
    endpoint: &str,
    action: &str,
    body: &Value,
    guest: bool,
) -> Result<Value, AwsError> {
    let request = client
        .post(endpoint)
        .header("content-type", "application/x-amz-json-1.1")
        .header(
            "x-amz-target",
            format!("AWSCognitoIdentityService.{action}"),
        )
        .body(body.to_string());
    let (status, answer) = send(SERVICE, request).await?;
    if status.is_success() {
        return serde_json::from_slice(&answer)
            .map_err(|_| AwsError::malformed(SERVICE, format!("{action}: not JSON")));
    }
    Err(error(status, &answer, guest))
}

/// A Cognito error answer (`{"__type": "...", "message": "..."}`) as an [`AwsError`].
fn error(status: http::StatusCode, answer: &[u8], guest: bool) -> AwsError {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let Ok(body) = serde_json::from_slice::<ErrorBody>(answer) else {
        return unexpected_status(SERVICE, status);
    };
    let Some(kind) = body.kind else {
        return unexpected_status(SERVICE, status);
    };
    let code = code(&kind);
    let message = scrub(body.message.as_deref().unwrap_or(""));
    match code.as_str() {
        // A guest refused means the pool allows no unauthenticated identities.
        "NotAuthorizedException" if guest => AwsError::Forbidden {
            service: SERVICE,
            code,
            message,
        },
        "NotAuthorizedException" => AwsError::TokenRefused {
            service: SERVICE,
            code,
            message,
        },
        "TooManyRequestsException"
        | "LimitExceededException"
        | "InternalErrorException"
        | "ExternalServiceException"
        | "ResourceConflictException" => AwsError::Unavailable {
            service: SERVICE,
            cause: format!("{code}: {message}"),
            retry_after: super::error::DEFAULT_RETRY_AFTER,
        },
        "ResourceNotFoundException" => {
            AwsError::NotConfigured(format!("{SERVICE}: {code}: {message}"))
        }
        _ if status.is_server_error() => unexpected_status(SERVICE, status),
        _ => AwsError::Forbidden {
            service: SERVICE,
            code,
            message,
        },
    }
}

/// `GetId`: the identity id of the user (or a new unauthenticated one for a guest).
pub(crate) async fn get_id(
    client: &reqwest::Client,
    endpoint: &str,
    identity_pool_id: &str,
    login: Option<Login<'_>>,
) -> Result<String, AwsError> {
    let mut body = json!({ "IdentityPoolId": identity_pool_id });
    if let Some(login) = &login {
        body["Logins"] = login.map();
    }
    let answer = call(client, endpoint, "GetId", &body, login.is_none()).await?;
    match answer.get("IdentityId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.len() <= 64 => Ok(id.to_owned()),
        _ => Err(AwsError::malformed(SERVICE, "GetId: no IdentityId")),
    }
}

/// Whether a `GetCredentialsForIdentity` error means the cached identity id is stale.
pub(crate) fn identity_gone(e: &AwsError) -> bool {
    matches!(e, AwsError::NotConfigured(m) if m.contains("ResourceNotFoundException"))
}

/// `GetCredentialsForIdentity`: the identity's credentials.
pub(crate) async fn credentials_for_identity(
    client: &reqwest::Client,
    endpoint: &str,
    identity_id: &str,
    login: Option<Login<'_>>,
) -> Result<Credentials, AwsError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        credentials: Option<Creds>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Creds {
        access_key_id: Option<String>,
        secret_key: Option<String>,
        session_token: Option<String>,
        expiration: Option<f64>,
    }
    let mut body = json!({ "IdentityId": identity_id });
    if let Some(login) = &login {
        body["Logins"] = login.map();
    }
    let answer = call(
        client,
        endpoint,
        "GetCredentialsForIdentity",
        &body,
        login.is_none(),
    )
    .await?;
    let malformed = || AwsError::malformed(SERVICE, "GetCredentialsForIdentity: no credentials");
    let creds = serde_json::from_value::<Answer>(answer)
        .map_err(|_| malformed())?
        .credentials
        .ok_or_else(malformed)?;
    match (
        creds.access_key_id,
        creds.secret_key,
        creds.session_token,
        creds.expiration.and_then(from_epoch_seconds),
    ) {
        (Some(id), Some(secret), Some(token), Some(expires))
            if !id.is_empty() && !secret.is_empty() =>
        {
            Ok(Credentials::new(
                id,
                Secret::new(secret),
                Some(Secret::new(token)),
                Some(expires),
            ))
        }
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn logins_key_is_the_issuer_without_scheme() {
        let login = Login {
            issuer: "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC",
            id_token: "tok",
        };
        assert_eq!(
            login.map(),
            json!({"cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC": "tok"})
        );
    }

    #[test]
    fn errors_by_code() {
        let e = |status: u16, body: &str, guest| {
            error(
                StatusCode::from_u16(status).unwrap(),
                body.as_bytes(),
                guest,
            )
        };
        let refused = e(
            400,
            r#"{"__type":"NotAuthorizedException","message":"Invalid login token. Token expired: eyJa.eyJb.c"}"#,
            false,
        );
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(!refused.to_string().contains("eyJ"), "{refused}");
        let guest = e(
            400,
            r#"{"__type":"NotAuthorizedException","message":"Unauthenticated access is not supported"}"#,
            true,
        );
        assert_eq!(guest.status(), StatusCode::FORBIDDEN);
        let busy = e(400, r#"{"__type":"TooManyRequestsException"}"#, false);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            e(502, "<html>", false).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(e(400, "<html>", false).status(), StatusCode::BAD_GATEWAY);
    }
}

//! jwtgate's own credentials, from the chain a pod or instance offers, first configured step
//! wins (as in AWS's SDKs): environment variables; a web-identity token file with a role
//! (EKS IRSA); the container credentials endpoint (ECS, EKS Pod Identity); the instance
//! metadata service (IMDSv2).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::credentials::{Credentials, Secret};
use super::error::AwsError;
use super::http::{MAX_ANSWER_BYTES, send, unexpected_status};
use super::settings::{Gateway, sts_endpoint};
use super::sts::{self, AssumeRole};
use super::time::parse_rfc3339;

/// Reads an environment variable (tests pass a map).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment.
pub fn process_env() -> Env {
    Arc::new(|name| std::env::var(name).ok())
}

/// Timeout of each instance-metadata call: the service answers in milliseconds, and off EC2
/// the address does not answer at all.
pub const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// Where ECS serves `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const ECS_HOST: &str = "http://169.254.170.2";
/// The instance metadata service.
const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Largest token file read, bytes.
const MAX_TOKEN_FILE_BYTES: u64 = 16 * 1024;

/// Gets credentials from the first configured step of the chain.
pub(crate) async fn fetch(
    client: &reqwest::Client,
    imds_client: &reqwest::Client,
    settings: &Gateway,
    env: &Env,
) -> Result<Credentials, AwsError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => {
            let expires = match var("AWS_CREDENTIAL_EXPIRATION") {
                Some(e) => Some(parse_rfc3339(&e).ok_or_else(|| {
                    AwsError::NotConfigured(
                        "AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 time".into(),
                    )
                })?),
                None => None,
            };
            return Ok(Credentials::new(
                id,
                Secret::new(secret),
                var("AWS_SESSION_TOKEN").map(Secret::new),
                expires,
            ));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(AwsError::NotConfigured(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together".into(),
            ));
        }
        (None, None) => {}
    }

    if let (Some(file), Some(role_arn)) = (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN"))
    {
        // Read at every refresh: the kubelet rotates the projected token.
        let token = read_small_file(&file, "AWS_WEB_IDENTITY_TOKEN_FILE").await?;
        let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
        let endpoint = settings
            .sts_endpoint
            .clone()
            .unwrap_or_else(|| sts_endpoint(region.as_deref()));
        let session_name =
            sts::session_name(&var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "jwtgate".into()));
        return sts::assume_role_with_web_identity(
            client,
            &endpoint,
            AssumeRole {
                role_arn: &role_arn,
                session_name: &session_name,
                token: token.trim(),
                duration: None,
            },
        )
        .await;
    }

    let container_uri = match (
        var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        var("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    ) {
        (Some(relative), _) => Some(format!("{ECS_HOST}{relative}")),
        (None, Some(full)) => {
            if !full_uri_allowed(&full) {
                return Err(AwsError::NotConfigured(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback \
                     or the ECS/EKS link-local address"
                        .into(),
                ));
            }
            Some(full)
        }
        (None, None) => None,
    };
    if let Some(uri) = container_uri {
        let auth = match var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(file) => Some(
                read_small_file(&file, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
                    .await?
                    .trim()
                    .to_owned(),
            ),
            None => var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        };
        let mut request = client.get(&uri);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        return endpoint_credentials("container-credentials", request).await;
    }

    if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(AwsError::NotConfigured(
            "no credentials in the environment, and the instance metadata service is disabled"
                .into(),
        ));
    }
    let base = var("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| IMDS_ENDPOINT.into());
    imds(imds_client, base.trim_end_matches('/')).await
}

/// IMDSv2: a session token by PUT, then the role name, then its credentials.
async fn imds(client: &reqwest::Client, base: &str) -> Result<Credentials, AwsError> {
    const SERVICE: &str = "imds";
    let (status, token) = send(
        SERVICE,
        client
            .put(format!("{base}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600"),
    )
    .await?;
    if !status.is_success() {
        return Err(unexpected_status(SERVICE, status));
    }
    let token = std::str::from_utf8(&token)
        .map_err(|_| AwsError::malformed(SERVICE, "token is not text"))?
        .trim()
        .to_owned();
    let path = format!("{base}/latest/meta-data/iam/security-credentials/");
    let (status, roles) = send(
        SERVICE,
        client.get(&path).header("x-aws-ec2-metadata-token", &token),
    )
    .await?;
    if status == http::StatusCode::NOT_FOUND {
        return Err(AwsError::NotConfigured(
            "the instance has no IAM role (instance metadata: 404)".into(),
        ));
    }
    if !status.is_success() {
        return Err(unexpected_status(SERVICE, status));
    }
    let role = std::str::from_utf8(&roles)
        .ok()
        .and_then(|r| r.lines().next())
        .map(str::trim)
        .filter(|r| !r.is_empty() && !r.contains('/'))
        .ok_or_else(|| AwsError::malformed(SERVICE, "no role name"))?
        .to_owned();
    endpoint_credentials(
        SERVICE,
        client
            .get(format!("{path}{role}"))
            .header("x-aws-ec2-metadata-token", &token),
    )
    .await
}

/// The JSON answer of the container endpoint and the instance metadata service.
async fn endpoint_credentials(
    service: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<Credentials, AwsError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        code: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        token: Option<String>,
        expiration: Option<String>,
    }
    let (status, body) = send(service, request).await?;
    if !status.is_success() {
        return Err(unexpected_status(service, status));
    }
    let answer: Answer = serde_json::from_slice(&body)
        .map_err(|_| AwsError::malformed(service, "not the credentials JSON"))?;
    if answer.code.as_deref().is_some_and(|c| c != "Success") {
        return Err(AwsError::unavailable(service, "Code is not Success"));
    }
    match (
        answer.access_key_id,
        answer.secret_access_key,
        answer.expiration.as_deref().map(parse_rfc3339),
    ) {
        (Some(id), Some(secret), Some(Some(expires))) if !id.is_empty() && !secret.is_empty() => {
            Ok(Credentials::new(
                id,
                Secret::new(secret),
                answer.token.filter(|t| !t.is_empty()).map(Secret::new),
                Some(expires),
            ))
        }
        _ => Err(AwsError::malformed(service, "no credentials in the answer")),
    }
}

/// A token file, bounded; its path is named in the error, never its content.
async fn read_small_file(path: &str, variable: &str) -> Result<String, AwsError> {
    let unreadable = || AwsError::NotConfigured(format!("{variable}: cannot read {path:?}"));
    let meta = tokio::fs::metadata(path).await.map_err(|_| unreadable())?;
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(AwsError::NotConfigured(format!(
            "{variable}: {path:?} is larger than {MAX_TOKEN_FILE_BYTES} bytes"
        )));
    }
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|_| unreadable())?;
    if text.len() > MAX_ANSWER_BYTES {
        return Err(unreadable());
    }
    Ok(text)
}

/// The SDKs' rule for `AWS_CONTAINER_CREDENTIALS_FULL_URI`: https anywhere; http only to a
/// loopback address or the ECS / EKS Pod Identity link-local addresses.
fn full_uri_allowed(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Ipv4(ip)) => {
                ip.is_loopback()
                    || ip.octets() == [169, 254, 170, 2]
                    || ip.octets() == [169, 254, 170, 23]
            }
            Some(url::Host::Ipv6(ip)) => {
                ip.is_loopback()
                    || ip == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)
            }
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Env {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Arc::new(move |name| map.get(name).cloned())
    }

    fn clients() -> (reqwest::Client, reqwest::Client) {
        (
            super::super::http::client(Duration::from_secs(2)).unwrap(),
            super::super::http::client(IMDS_TIMEOUT).unwrap(),
        )
    }

    #[tokio::test]
    async fn environment_variables_come_first() {
        let (c, i) = clients();
        let creds = fetch(
            &c,
            &i,
            &Gateway { sts_endpoint: None },
            &env(&[
                ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                ("AWS_SECRET_ACCESS_KEY", "envsecret"),
                ("AWS_SESSION_TOKEN", "envtoken"),
                ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ignored"),
            ]),
        )
        .await
        .unwrap();
        assert_eq!(creds.access_key_id(), "AKIDENV");
        assert_eq!(creds.secret_access_key().expose(), "envsecret");
        assert_eq!(creds.session_token().unwrap().expose(), "envtoken");
        assert_eq!(creds.expires_at(), None);
    }

    #[tokio::test]
    async fn half_configured_or_disabled_is_not_configured() {
        let (c, i) = clients();
        let g = Gateway { sts_endpoint: None };
        let e = fetch(&c, &i, &g, &env(&[("AWS_ACCESS_KEY_ID", "A")]))
            .await
            .unwrap_err();
        assert!(matches!(e, AwsError::NotConfigured(_)), "{e}");
        let e = fetch(&c, &i, &g, &env(&[("AWS_EC2_METADATA_DISABLED", "true")]))
            .await
            .unwrap_err();
        assert!(matches!(e, AwsError::NotConfigured(_)), "{e}");
        let e = fetch(
            &c,
            &i,
            &g,
            &env(&[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://example.com/creds",
            )]),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, AwsError::NotConfigured(_)), "{e}");
    }

    #[test]
    fn full_uri_rule() {
        assert!(full_uri_allowed("https://creds.example.com/x"));
        assert!(full_uri_allowed("http://127.0.0.1:8080/x"));
        assert!(full_uri_allowed("http://169.254.170.23/v1/credentials"));
        assert!(full_uri_allowed("http://[fd00:ec2::23]/v1/credentials"));
        assert!(!full_uri_allowed("http://10.0.0.1/x"));
        assert!(!full_uri_allowed("file:///etc/passwd"));
    }
}

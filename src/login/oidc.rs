//! Talking to the identity provider: endpoint discovery, the authorization URL, the code and
//! refresh-token grants (client_secret_basic or client_secret_post) and user-info. Every call
//! has a timeout and a response-size cap; nothing here logs a token or the client secret.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Timeout of one call to the identity provider.
pub const IDP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest identity-provider response read, bytes.
pub const MAX_IDP_RESPONSE_BYTES: usize = 256 * 1024;

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic (Cognito's default).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// The provider's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Authorization endpoint.
    pub authorization: String,
    /// Token endpoint.
    pub token: String,
    /// User-info endpoint.
    pub user_info: Option<String>,
    /// End-session endpoint.
    pub end_session: Option<String>,
    /// Key set of the ID token signer.
    pub jwks_uri: Option<String>,
}

/// Endpoints as configured: each one given explicitly or left to discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The discovery URL, when any endpoint is left out.
    pub discovery: Option<String>,
    /// Explicit endpoints (empty strings are taken from discovery).
    pub explicit: Endpoints,
}

/// Why a provider call failed (logged; the user sees a 401 or a fresh login).
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// Transport failure or timeout.
    #[error("{what}: request failed: {source}")]
    Http {
        /// Which call.
        what: &'static str,
        /// The cause.
        source: reqwest::Error,
    },
    /// A non-success status (the body's `error` field when there is one).
    #[error("{what}: HTTP {status} {error}")]
    Status {
        /// Which call.
        what: &'static str,
        /// The status.
        status: u16,
        /// The OAuth `error` code, if any.
        error: String,
    },
    /// An answer we cannot use.
    #[error("{what}: {reason}")]
    Invalid {
        /// Which call.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// A token endpoint answer.
#[derive(Debug, Deserialize)]
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// The ID token (always on the code grant; optional on refresh).
    pub id_token: Option<String>,
    /// The refresh token (a new one when the provider rotates them).
    pub refresh_token: Option<String>,
    /// Access token lifetime, seconds.
    pub expires_in: Option<i64>,
}

/// A configured OAuth client at one provider.
pub struct Provider {
    /// Exact issuer.
    pub issuer: Arc<str>,
    config: EndpointConfig,
    resolved: ArcSwapOption<Endpoints>,
    http: reqwest::Client,
    /// OAuth client id.
    pub client_id: String,
    secret: Option<String>,
    auth: ClientAuth,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Provider {
    /// A provider client.
    pub fn new(
        issuer: Arc<str>,
        config: EndpointConfig,
        http: reqwest::Client,
        client_id: String,
        secret: Option<String>,
        auth: ClientAuth,
    ) -> Self {
        let resolved = ArcSwapOption::from(
            config
                .discovery
                .is_none()
                .then(|| Arc::new(config.explicit.clone())),
        );
        Provider {
            issuer,
            config,
            resolved,
            http,
            client_id,
            secret,
            auth,
        }
    }

    /// The endpoints, discovering them on first use (and again after a failure).
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, IdpError> {
        if let Some(e) = self.resolved.load_full() {
            return Ok(e);
        }
        let Some(url) = &self.config.discovery else {
            return Ok(Arc::new(self.config.explicit.clone()));
        };
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            authorization_endpoint: String,
            token_endpoint: String,
            userinfo_endpoint: Option<String>,
            end_session_endpoint: Option<String>,
            jwks_uri: Option<String>,
        }
        let what = "discovery";
        let response = self
            .http
            .get(url)
            .timeout(IDP_TIMEOUT)
            .send()
            .await
            .map_err(|source| IdpError::Http { what, source })?;
        let doc: Discovery = read_json(what, response).await?;
        if doc.issuer != *self.issuer {
            return Err(IdpError::Invalid {
                what,
                reason: format!(
                    "names issuer {:?}, configured {:?}",
                    doc.issuer, self.issuer
                ),
            });
        }
        let pick = |explicit: &str, found: String| {
            if explicit.is_empty() {
                found
            } else {
                explicit.to_owned()
            }
        };
        let e = &self.config.explicit;
        let endpoints = Arc::new(Endpoints {
            authorization: pick(&e.authorization, doc.authorization_endpoint),
            token: pick(&e.token, doc.token_endpoint),
            user_info: e.user_info.clone().or(doc.userinfo_endpoint),
            end_session: e.end_session.clone().or(doc.end_session_endpoint),
            jwks_uri: e.jwks_uri.clone().or(doc.jwks_uri),
        });
        self.resolved.store(Some(Arc::clone(&endpoints)));
        Ok(endpoints)
    }

    /// Exchanges an authorization code (with its PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Tokens, IdpError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        self.token_call("token endpoint (code)", &form).await
    }

    /// Redeems a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, IdpError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        self.token_call("token endpoint (refresh)", &form).await
    }

    async fn token_call(
        &self,
        what: &'static str,
        form: &[(&str, &str)],
    ) -> Result<Tokens, IdpError> {
        let endpoints = self.endpoints().await?;
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let mut request = self.http.post(&endpoints.token).timeout(IDP_TIMEOUT);
        match (self.auth, &self.secret) {
            (ClientAuth::Basic, Some(secret)) => {
                // RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
                let user: String =
                    url::form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect();
                let pass: String =
                    url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
                request = request.basic_auth(user, Some(pass));
                fields.push(("client_id", &self.client_id));
            }
            (ClientAuth::Post, Some(secret)) => {
                fields.push(("client_id", &self.client_id));
                fields.push(("client_secret", secret));
            }
            (_, None) => fields.push(("client_id", &self.client_id)),
        }
        let response = request
            .form(&fields)
            .send()
            .await
            .map_err(|source| IdpError::Http { what, source })?;
        read_json(what, response).await
    }

    /// Calls user-info with the access token.
    pub async fn user_info(
        &self,
        access_token: &str,
    ) -> Result<Option<Map<String, Value>>, IdpError> {
        let endpoints = self.endpoints().await?;
        let Some(url) = &endpoints.user_info else {
            return Ok(None);
        };
        let what = "user-info";
        let response = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .timeout(IDP_TIMEOUT)
            .send()
            .await
            .map_err(|source| IdpError::Http { what, source })?;
        read_json(what, response).await.map(Some)
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    mut response: reqwest::Response,
) -> Result<T, IdpError> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| IdpError::Http { what, source })?
    {
        if body.len() + chunk.len() > MAX_IDP_RESPONSE_BYTES {
            return Err(IdpError::Invalid {
                what,
                reason: "response too large".into(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        #[derive(Deserialize)]
        struct OAuthError {
            error: String,
        }
        let error = serde_json::from_slice::<OAuthError>(&body)
            .map(|e| e.error)
            .unwrap_or_default();
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return Err(IdpError::Status {
            what,
            status: status.as_u16(),
            error,
        });
    }
    serde_json::from_slice(&body).map_err(|e| IdpError::Invalid {
        what,
        reason: format!("unexpected JSON: {e}"),
    })
}

/// PKCE S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A random URL-safe string of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The parameters of one authorization request.
pub struct AuthorizationRequest<'a> {
    /// OAuth client id.
    pub client_id: &'a str,
    /// The callback URL.
    pub redirect_uri: &'a str,
    /// Requested scopes.
    pub scope: &'a str,
    /// CSRF state.
    pub state: &'a str,
    /// ID token nonce.
    pub nonce: &'a str,
    /// PKCE verifier (its S256 challenge is sent).
    pub verifier: &'a str,
    /// Extra parameters.
    pub extra: &'a [(String, String)],
}

impl AuthorizationRequest<'_> {
    /// The URL at `endpoint`.
    pub fn url(&self, endpoint: &str) -> Result<String, url::ParseError> {
        let mut url = url::Url::parse(endpoint)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", self.client_id)
                .append_pair("redirect_uri", self.redirect_uri)
                .append_pair("scope", self.scope)
                .append_pair("state", self.state)
                .append_pair("nonce", self.nonce)
                .append_pair("code_challenge", &pkce_challenge(self.verifier))
                .append_pair("code_challenge_method", "S256");
            for (k, v) in self.extra {
                q.append_pair(k, v);
            }
        }
        Ok(url.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn authorization_urls_carry_every_parameter_encoded() {
        let extra = [("prompt".to_owned(), "login".to_owned())];
        let url = AuthorizationRequest {
            client_id: "client",
            redirect_uri: "https://app/oauth2/idpresponse",
            scope: "openid email",
            state: "st",
            nonce: "no",
            verifier: "verifier",
            extra: &extra,
        }
        .url("https://idp.example/oauth2/authorize")
        .unwrap();
        assert!(url.starts_with(
            "https://idp.example/oauth2/authorize?response_type=code&client_id=client"
        ));
        assert!(url.contains("redirect_uri=https%3A%2F%2Fapp%2Foauth2%2Fidpresponse"));
        assert!(url.contains("scope=openid+email"));
        assert!(url.contains("code_challenge_method=S256"));
        assert!(url.ends_with("&prompt=login"));
    }
}

//! ALB-style browser sign-in for `auth = "login"` routes: the authorization code flow with PKCE
//! S256, a `state` bound to a sealed cookie and a `nonce` checked in the ID token; an
//! encrypted, sharded session cookie (or Redis); one refresh per session at a time; logout; and
//! ALB's `x-amzn-oidc-*` headers for the upstream.

pub mod alb;
pub mod cookies;
pub mod oidc;
pub mod session;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use self::alb::AlbSigner;
use self::cookies::{CookieAttrs, CookieKeys};
use self::oidc::{ClientAuth, EndpointConfig, Provider};
use self::session::{Session, Sessions, Store};
use crate::error::Reject;
use crate::jwks::{KeySettings, KeyStore};
use crate::metrics::{LoginEvent, Metrics};
use crate::start::StartError;
use crate::token::{self, IssuerPolicy, Issuers, TokenCache, unix_now};

/// The name of the `[login]` provider, the one routes use without `login = "NAME"`.
pub const DEFAULT_PROVIDER: &str = "default";
/// The callback path of the `default` provider, as in ALB (`[[logins]]`:
/// `/oauth2/idpresponse/NAME`).
pub const CALLBACK_PATH: &str = "/oauth2/idpresponse";
/// Name of the cookie holding the `default` provider's logins in flight (`[[logins]]`:
/// `jwtgate-login-state.NAME`).
pub const STATE_COOKIE: &str = "jwtgate-login-state";
/// Logins in flight per browser; the oldest is dropped beyond this (no cookie pile-up).
pub const MAX_PENDING: usize = 5;
/// How long a started login may take.
pub const PENDING_TTL_SECS: i64 = 600;
/// A refresh result is reused for this long, for requests still carrying the old cookie.
const REFRESH_REUSE: Duration = Duration::from_secs(30);
/// Refresh this long before the access token expires.
const REFRESH_SKEW_SECS: i64 = 30;

/// A value whose `Debug` output never shows it (secrets in settings that may be logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What happens to a request without a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnauthenticated {
    /// Redirect to the identity provider.
    Authenticate,
    /// 401.
    Deny,
    /// Forward anonymously.
    Allow,
}

/// `[login]` or one `[[logins]]` table, checked.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    /// Provider name: `default` for `[login]`; routes' `login`, the metrics label.
    pub name: Arc<str>,
    /// Where the IdP sends the browser back with the code.
    pub callback_path: String,
    /// Name of the cookie holding this provider's logins in flight.
    pub state_cookie: String,
    /// Exact issuer of the ID tokens.
    pub issuer: Arc<str>,
    /// Endpoints, explicit or discovered.
    pub endpoints: EndpointConfig,
    /// Logout in Cognito's style (`logout_uri`) instead of OIDC's (`post_logout_redirect_uri`).
    pub cognito_logout: bool,
    /// Key source for ID tokens.
    pub keys: KeySettings,
    /// ID token policy (audience = client id).
    pub policy: Arc<IssuerPolicy>,
    /// OAuth client id.
    pub client_id: String,
    /// Client secret (never logged).
    pub client_secret: Option<Redacted<String>>,
    /// Token endpoint client authentication.
    pub client_auth: ClientAuth,
    /// Requested scopes.
    pub scope: String,
    /// Extra authorization parameters.
    pub extra_params: Vec<(String, String)>,
    /// Session cookie base name.
    pub cookie_name: String,
    /// Session lifetime.
    pub session_timeout: Duration,
    /// Policy for requests without a session.
    pub on_unauthenticated: OnUnauthenticated,
    /// Answer API clients without a session with 401 instead of a redirect.
    pub deny_api_clients: bool,
    /// Sign-out path.
    pub logout_path: String,
    /// Where the IdP sends the user after sign-out.
    pub logout_redirect: Option<String>,
    /// External base URL for the callback.
    pub redirect_base: Option<String>,
    /// `Secure` cookies.
    pub secure_cookies: bool,
    /// Cookie keys, newest first; empty means a random key per process (with a warning).
    pub cookie_keys: Redacted<Vec<[u8; 32]>>,
    /// Redis URL when sessions live in Redis (it may hold a password: never shown).
    pub redis_url: Option<Redacted<String>>,
    /// `signer` of `x-amzn-oidc-data`.
    pub alb_signer: String,
    /// The signing key; `None` generates one per process.
    pub alb_key: Option<Arc<AlbSigner>>,
    /// Keep the ID token in the session: a route of this provider signs AWS requests with
    /// credentials an identity pool or STS gives for it (`aws_sigv4`).
    pub keep_id_token: bool,
}

/// What a cookie sealed for provider `name` is bound to (AES-GCM associated data): the cookie
/// name alone for `default` (so sessions sealed before there were several providers still
/// open), `login:NAME:COOKIE` for the others. Cookie names cannot hold `:`, so the two forms
/// never meet, and a value copied under another provider's cookie name does not open.
pub fn seal_purpose(name: &str, cookie: &str) -> String {
    if name == DEFAULT_PROVIDER {
        cookie.to_owned()
    } else {
        format!("login:{name}:{cookie}")
    }
}

/// Login state that outlives config reloads.
pub struct LoginRuntime {
    http: reqwest::Client,
    random_secret: OnceLock<[u8; 32]>,
    generated_alb: OnceLock<Arc<AlbSigner>>,
    refreshes: moka::sync::Cache<String, SharedRefresh>,
    redis: Mutex<Vec<(String, Arc<session::RedisStore>)>>,
}

type SharedRefresh = Shared<BoxFuture<'static, Option<Arc<Session>>>>;

impl LoginRuntime {
    /// Runtime state with its own HTTP client.
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(LoginRuntime {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("jwtgate/", env!("CARGO_PKG_VERSION")))
                .build()?,
            random_secret: OnceLock::new(),
            generated_alb: OnceLock::new(),
            refreshes: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(REFRESH_REUSE)
                .build(),
            redis: Mutex::new(Vec::new()),
        })
    }

    fn redis(&self, url: &str) -> Result<Arc<session::RedisStore>, String> {
        let mut stores = self.redis.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, store)) = stores.iter().find(|(u, _)| u == url) {
            return Ok(Arc::clone(store));
        }
        let store = Arc::new(session::RedisStore::new(url)?);
        stores.push((url.to_owned(), Arc::clone(&store)));
        Ok(store)
    }
}

/// A login in flight, kept in the sealed state cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    created: i64,
}

/// The live login configuration.
pub struct Login {
    settings: LoginSettings,
    provider: Provider,
    id_tokens: Issuers,
    no_cache: TokenCache,
    sessions: Sessions,
    state_keys: CookieKeys,
    /// What the state cookie is sealed for (see [`seal_purpose`]).
    state_purpose: String,
    alb: Arc<AlbSigner>,
    runtime: Arc<LoginRuntime>,
    metrics: Arc<Metrics>,
}

/// A signed-in user, for route checks and upstream headers.
pub struct Identity {
    /// The session.
    pub session: Arc<Session>,
    /// Claims in checkable form.
    pub claims: token::Claims,
}

/// What the login gate decided for a request on a login route.
pub enum Gate {
    /// Forward, signed in or (with `on_unauthenticated = "allow"`) anonymous; send these cookies.
    Forward(Option<Identity>, Vec<HeaderValue>),
    /// Answer directly (a redirect to the IdP).
    Respond(Response<Full<Bytes>>),
}

impl Login {
    /// Binds settings to live key stores and runtime state. Must run inside a tokio runtime.
    pub fn new(
        settings: LoginSettings,
        store: Arc<KeyStore>,
        runtime: &Arc<LoginRuntime>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, StartError> {
        let id_tokens = Issuers::new([(Arc::clone(&settings.policy), store)]);
        let secrets = if settings.cookie_keys.0.is_empty() {
            vec![*runtime.random_secret.get_or_init(|| {
                tracing::warn!(
                    "no cookie_keys configured: sessions are sealed with a random key, so they end at restart \
                     and replicas cannot read each other's cookies"
                );
                CookieKeys::random_secret()
            })]
        } else {
            settings.cookie_keys.0.clone()
        };
        let store = match &settings.redis_url {
            Some(Redacted(url)) => {
                Store::Redis(runtime.redis(url).map_err(StartError::SessionStore)?)
            }
            None => Store::Cookie,
        };
        let alb = match &settings.alb_key {
            Some(key) => Arc::clone(key),
            None => Arc::clone(runtime.generated_alb.get_or_init(|| {
                tracing::warn!("no alb_key_file configured: x-amzn-oidc-data is signed with a key generated at start");
                Arc::new(AlbSigner::generate())
            })),
        };
        let provider = Provider::new(
            Arc::clone(&settings.issuer),
            settings.endpoints.clone(),
            runtime.http.clone(),
            settings.client_id.clone(),
            settings.client_secret.as_ref().map(|s| s.0.clone()),
            settings.client_auth,
        );
        metrics.login_provider(&settings.name);
        let namespace = if &*settings.name == DEFAULT_PROVIDER {
            String::new()
        } else {
            settings.name.to_string()
        };
        Ok(Login {
            sessions: Sessions {
                cookie_name: settings.cookie_name.clone(),
                purpose: seal_purpose(&settings.name, &settings.cookie_name),
                namespace,
                keys: CookieKeys::new(&secrets),
                attrs: CookieAttrs {
                    secure: settings.secure_cookies,
                },
                store,
            },
            state_keys: CookieKeys::new(&secrets),
            state_purpose: seal_purpose(&settings.name, &settings.state_cookie),
            provider,
            id_tokens,
            no_cache: TokenCache::new(0),
            alb,
            runtime: Arc::clone(runtime),
            metrics: Arc::clone(metrics),
            settings,
        })
    }

    /// The `x-amzn-oidc-data` signer (its public key is served on the admin listener).
    pub fn alb_signer(&self) -> &AlbSigner {
        &self.alb
    }

    /// Whether jwtgate itself answers `path` for this provider (its callback and sign-out path).
    pub fn owns(&self, path: &str) -> bool {
        path == self.settings.callback_path || path == self.settings.logout_path
    }

    /// The provider's name (`default` for `[login]`).
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Name of the cookie holding this provider's logins in flight.
    pub fn state_cookie_name(&self) -> &str {
        &self.settings.state_cookie
    }

    /// The ID token policy (the issuer name routes see).
    pub fn policy(&self) -> &IssuerPolicy {
        &self.settings.policy
    }

    /// Session cookie base name.
    pub fn cookie_name(&self) -> &str {
        &self.settings.cookie_name
    }

    fn attrs(&self) -> &CookieAttrs {
        &self.sessions.attrs
    }

    /// Decides a request on a login route.
    pub async fn gate(
        self: &Arc<Self>,
        headers: &HeaderMap,
        method: &Method,
        path_and_query: &str,
        base: &str,
    ) -> Result<Gate, Reject> {
        let now = unix_now();
        let loaded = self
            .sessions
            .load(headers, now)
            .await
            .map_err(store_unavailable)?;
        if let Some(session) = loaded {
            let (session, cookies) = if session.access_expires_at - REFRESH_SKEW_SECS <= now {
                match self.refresh(session).await {
                    Some(fresh) => {
                        let cookies = self
                            .sessions
                            .save(&fresh, headers, now)
                            .await
                            .map_err(store_unavailable)?;
                        (Some(fresh), cookies)
                    }
                    None => (None, Vec::new()),
                }
            } else {
                (Some(Arc::new(session)), Vec::new())
            };
            if let Some(session) = session {
                let claims = token::Claims::from_payload(session.claims.clone())
                    .map_err(Reject::InvalidToken)?;
                return Ok(Gate::Forward(Some(Identity { session, claims }), cookies));
            }
        }
        match self.settings.on_unauthenticated {
            OnUnauthenticated::Allow => Ok(Gate::Forward(None, Vec::new())),
            OnUnauthenticated::Deny => Err(Reject::LoginRequired),
            OnUnauthenticated::Authenticate
                if self.settings.deny_api_clients && is_api_client(headers, method) =>
            {
                Err(Reject::LoginRequired)
            }
            OnUnauthenticated::Authenticate => self
                .start(headers, path_and_query, base)
                .await
                .map(Gate::Respond),
        }
    }

    /// The refreshed session, one token-endpoint call per session however many requests ask.
    async fn refresh(self: &Arc<Self>, session: Session) -> Option<Arc<Session>> {
        let refresh_token = session.refresh_token.clone()?;
        let this = Arc::clone(self);
        // One refresh per session generation: requests still carrying this cookie share it;
        // the refreshed session (a new expiry) refreshes on its own when its turn comes.
        let generation =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, session.access_token.as_bytes());
        let key = format!(
            "{}:{}:{}",
            self.settings.name,
            session.id,
            URL_SAFE_NO_PAD.encode(&generation.as_ref()[..12])
        );
        let future = self.runtime.refreshes.get_with(key, move || {
            let task = tokio::spawn(async move {
                let result = this.provider.refresh(&refresh_token).await;
                match result {
                    Ok(tokens) => {
                        this.metrics
                            .login_event(&this.settings.name, LoginEvent::RefreshOk);
                        let now = unix_now();
                        let mut fresh = session;
                        if let Some(id_token) = &tokens.id_token {
                            match this.verify_id_token(id_token, None).await {
                                Ok(claims) => {
                                    merge(&mut fresh.claims, claims);
                                    if this.settings.keep_id_token {
                                        fresh.id_token = Some(id_token.clone());
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!("refreshed ID token refused: {e}");
                                    return None;
                                }
                            }
                        }
                        fresh.access_token = tokens.access_token;
                        fresh.access_expires_at = now + tokens.expires_in.unwrap_or(3600);
                        if tokens.refresh_token.is_some() {
                            fresh.refresh_token = tokens.refresh_token;
                        }
                        Some(Arc::new(fresh))
                    }
                    Err(e) => {
                        this.metrics
                            .login_event(&this.settings.name, LoginEvent::RefreshFailed);
                        tracing::info!("session refresh failed, the user signs in again: {e}");
                        None
                    }
                }
            });
            async move { task.await.ok().flatten() }.boxed().shared()
        });
        future.await
    }

    /// 302 to the authorization endpoint, remembering the login in the state cookie.
    async fn start(
        &self,
        headers: &HeaderMap,
        return_to: &str,
        base: &str,
    ) -> Result<Response<Full<Bytes>>, Reject> {
        let endpoints = self.provider.endpoints().await.map_err(|e| {
            tracing::error!("cannot start a login: {e}");
            Reject::IdpUnavailable
        })?;
        let now = unix_now();
        let pending = Pending {
            state: oidc::random_token(24),
            nonce: oidc::random_token(24),
            verifier: oidc::random_token(48),
            return_to: return_to.to_owned(),
            created: now,
        };
        let url = oidc::AuthorizationRequest {
            client_id: &self.settings.client_id,
            redirect_uri: &self.redirect_uri(base),
            scope: &self.settings.scope,
            state: &pending.state,
            nonce: &pending.nonce,
            verifier: &pending.verifier,
            extra: &self.settings.extra_params,
        }
        .url(&endpoints.authorization)
        .map_err(|e| {
            tracing::error!("authorization endpoint is not a URL: {e}");
            Reject::IdpUnavailable
        })?;
        let mut list = self.pending(headers, now);
        list.push(pending);
        if list.len() > MAX_PENDING {
            list.drain(..list.len() - MAX_PENDING);
        }
        self.metrics
            .login_event(&self.settings.name, LoginEvent::Redirect);
        let mut response = redirect(&url);
        if let Some(cookie) = self.state_cookie(&list) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    fn redirect_uri(&self, base: &str) -> String {
        format!(
            "{}{}",
            self.settings.redirect_base.as_deref().unwrap_or(base),
            self.settings.callback_path
        )
    }

    fn pending(&self, headers: &HeaderMap, now: i64) -> Vec<Pending> {
        cookies::cookie(headers, &self.settings.state_cookie)
            .and_then(|v| self.state_keys.open(&self.state_purpose, v))
            .and_then(|plain| serde_json::from_slice::<Vec<Pending>>(&plain).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| now - p.created < PENDING_TTL_SECS)
            .collect()
    }

    fn state_cookie(&self, list: &[Pending]) -> Option<HeaderValue> {
        let name = &self.settings.state_cookie;
        if list.is_empty() {
            return self.attrs().expire(name);
        }
        let json = serde_json::to_vec(list).ok()?;
        let sealed = self.state_keys.seal(&self.state_purpose, &json)?;
        self.attrs().set(name, &sealed, PENDING_TTL_SECS)
    }

    /// Answers the callback and the sign-out path.
    pub async fn handle_own(
        &self,
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        base: &str,
    ) -> Result<Response<Full<Bytes>>, Reject> {
        if path == self.settings.callback_path {
            let result = self.callback(headers, query.unwrap_or(""), base).await;
            self.metrics.login_event(
                &self.settings.name,
                if result.is_ok() {
                    LoginEvent::CallbackOk
                } else {
                    LoginEvent::CallbackFailed
                },
            );
            result
        } else {
            self.metrics
                .login_event(&self.settings.name, LoginEvent::Logout);
            self.logout(headers).await
        }
    }

    async fn callback(
        &self,
        headers: &HeaderMap,
        query: &str,
        base: &str,
    ) -> Result<Response<Full<Bytes>>, Reject> {
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let now = unix_now();
        let mut list = self.pending(headers, now);
        let state = param("state").ok_or(Reject::LoginFailed("callback without state"))?;
        let index = list
            .iter()
            .position(|p| {
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    p.state.as_bytes(),
                    state.as_bytes(),
                )
                .is_ok()
            })
            .ok_or(Reject::LoginFailed("unknown, expired or replayed state"))?;
        let pending = list.remove(index);
        if let Some(error) = param("error") {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            tracing::info!(error, "the identity provider refused the login");
            return Err(Reject::LoginFailed(
                "the identity provider returned an error",
            ));
        }
        if let Some(iss) = param("iss") {
            if iss != &*self.settings.issuer {
                return Err(Reject::LoginFailed(
                    "callback iss does not match the issuer",
                ));
            }
        }
        let code = param("code").ok_or(Reject::LoginFailed("callback without code"))?;
        let tokens = self
            .provider
            .exchange_code(code, &self.redirect_uri(base), &pending.verifier)
            .await
            .map_err(|e| {
                tracing::warn!("code exchange failed: {e}");
                match e {
                    oidc::IdpError::Status {
                        status: 400..=499, ..
                    } => Reject::LoginFailed("code exchange refused"),
                    _ => Reject::IdpUnavailable,
                }
            })?;
        let id_token = tokens
            .id_token
            .as_deref()
            .ok_or(Reject::LoginFailed("no ID token in the token response"))?;
        let id_claims = self
            .verify_id_token(id_token, Some(&pending.nonce))
            .await
            .map_err(|e| {
                tracing::warn!("ID token refused: {e}");
                Reject::LoginFailed("ID token refused")
            })?;
        let id_sub = id_claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let user_info = match self.provider.user_info(&tokens.access_token).await {
            Ok(Some(info)) => {
                if info.get("sub").and_then(Value::as_str) != Some(id_sub.as_str()) {
                    return Err(Reject::LoginFailed(
                        "user-info sub differs from the ID token",
                    ));
                }
                info
            }
            Ok(None) => id_claims.clone(),
            Err(e) => {
                tracing::warn!("user-info failed: {e}");
                return Err(Reject::IdpUnavailable);
            }
        };
        let mut claims = id_claims;
        merge(&mut claims, user_info.clone());
        let session = Session {
            id: oidc::random_token(32),
            sub: id_sub,
            claims,
            user_info,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            id_token: self.settings.keep_id_token.then(|| id_token.to_owned()),
            access_expires_at: now + tokens.expires_in.unwrap_or(3600),
            expires_at: now
                + i64::try_from(self.settings.session_timeout.as_secs()).unwrap_or(i64::MAX / 2),
        };
        let cookies = self
            .sessions
            .save(&session, headers, now)
            .await
            .map_err(store_unavailable)?;
        let mut response = redirect(safe_return(&pending.return_to));
        for cookie in cookies.into_iter().chain(self.state_cookie(&list)) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    async fn verify_id_token(
        &self,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, String> {
        let (verified, _) = token::verify(
            &self.id_tokens,
            &self.no_cache,
            &self.metrics,
            id_token,
            unix_now(),
        )
        .await
        .map_err(|e| e.to_string())?;
        if let Some(expected) = nonce {
            let got = verified
                .claims
                .all
                .get("nonce")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if aws_lc_rs::constant_time::verify_slices_are_equal(
                got.as_bytes(),
                expected.as_bytes(),
            )
            .is_err()
            {
                return Err("nonce mismatch".into());
            }
        }
        Ok(verified.claims.all.clone())
    }

    async fn logout(&self, headers: &HeaderMap) -> Result<Response<Full<Bytes>>, Reject> {
        let session = self.sessions.load(headers, unix_now()).await.ok().flatten();
        let cookies = self
            .sessions
            .delete(headers, session.as_ref())
            .await
            .map_err(store_unavailable)?;
        let target = self.logout_target().await;
        let mut response = redirect(&target);
        let state = self.attrs().expire(&self.settings.state_cookie);
        for cookie in cookies.into_iter().chain(state) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    /// The IdP's end-session URL with `client_id` (RP-initiated logout allows it instead of an
    /// `id_token_hint`, which would double the session's size) and the way back.
    async fn logout_target(&self) -> String {
        let fallback = self
            .settings
            .logout_redirect
            .clone()
            .unwrap_or_else(|| "/".into());
        let Some(end_session) = self
            .provider
            .endpoints()
            .await
            .ok()
            .and_then(|e| e.end_session.clone())
        else {
            return fallback;
        };
        let Ok(mut url) = url::Url::parse(&end_session) else {
            return fallback;
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.settings.client_id);
            if let Some(back) = &self.settings.logout_redirect {
                q.append_pair(
                    if self.settings.cognito_logout {
                        "logout_uri"
                    } else {
                        "post_logout_redirect_uri"
                    },
                    back,
                );
            }
        }
        url.into()
    }

    /// Adds ALB's identity headers for a signed-in user.
    pub fn inject(&self, headers: &mut HeaderMap, identity: &Identity) {
        let session = &identity.session;
        if let Ok(v) = HeaderValue::from_str(&session.access_token) {
            headers.insert(HeaderName::from_static("x-amzn-oidc-accesstoken"), v);
        }
        if let Ok(v) = HeaderValue::from_str(&session.sub) {
            headers.insert(HeaderName::from_static("x-amzn-oidc-identity"), v);
        }
        let signed = self.alb.sign(
            &session.user_info,
            &self.settings.issuer,
            &self.settings.client_id,
            &self.settings.alb_signer,
            unix_now(),
        );
        if let Some(v) = signed.and_then(|s| HeaderValue::from_str(&s).ok()) {
            headers.insert(HeaderName::from_static("x-amzn-oidc-data"), v);
        }
    }
}

/// The live sign-in providers of one config: `default` (`[login]`) first, then `[[logins]]`.
#[derive(Default)]
pub struct Logins {
    list: Vec<Arc<Login>>,
}

impl Logins {
    /// The providers, in config order.
    pub fn new(list: Vec<Arc<Login>>) -> Self {
        Logins { list }
    }

    /// The provider named `name` (a route's `login`, checked when the config was compiled).
    pub fn get(&self, name: &str) -> Option<&Arc<Login>> {
        self.list.iter().find(|l| l.name() == name)
    }

    /// The provider whose callback or sign-out path `path` is.
    pub fn owner(&self, path: &str) -> Option<&Arc<Login>> {
        self.list.iter().find(|l| l.owns(path))
    }

    /// Every provider.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Login>> {
        self.list.iter()
    }

    /// Removes every provider's session and state cookies: none reaches the upstream, whichever
    /// provider the route uses.
    pub fn strip_cookies(&self, headers: &mut HeaderMap) {
        if self.list.is_empty() {
            return;
        }
        let sessions: Vec<&str> = self.list.iter().map(|l| l.cookie_name()).collect();
        let states: Vec<&str> = self.list.iter().map(|l| l.state_cookie_name()).collect();
        cookies::strip_all(headers, &sessions, &states);
    }
}

/// A session store failure: logged here, a 503 for the client.
fn store_unavailable(e: session::StoreError) -> Reject {
    tracing::error!("{e}");
    Reject::SessionStore
}

fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        into.insert(k, v);
    }
}

/// A same-origin path: anything else becomes `/` (no open redirect).
fn safe_return(target: &str) -> &str {
    let ok = target.starts_with('/')
        && !target.starts_with("//")
        && !target.starts_with("/\\")
        && !target.contains(['\r', '\n']);
    if ok { target } else { "/" }
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// XHR and JSON clients (and non-GET requests, whose body a redirect would lose) get 401.
fn is_api_client(headers: &HeaderMap, method: &Method) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return true;
    }
    if headers.contains_key("x-requested-with") {
        return true;
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/html")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_targets_stay_on_this_origin() {
        assert_eq!(safe_return("/app/x?y=1"), "/app/x?y=1");
        assert_eq!(safe_return("//evil.example/x"), "/");
        assert_eq!(safe_return("/\\evil.example"), "/");
        assert_eq!(safe_return("https://evil.example/"), "/");
        assert_eq!(safe_return("/a\r\nSet-Cookie: x"), "/");
    }

    #[test]
    fn api_clients_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(!is_api_client(&h, &Method::GET));
        assert!(is_api_client(&h, &Method::POST));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(is_api_client(&h, &Method::GET));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/json;q=0.9"),
        );
        assert!(!is_api_client(&h, &Method::GET));
        h.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert!(is_api_client(&h, &Method::GET));
    }
}

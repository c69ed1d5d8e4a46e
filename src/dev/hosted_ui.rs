//! The development issuer's hosted UI, shaped like Cognito's: an authorize endpoint with a
//! login page, the token endpoint (authorization code with PKCE S256, refresh token), user-info
//! and logout. Enough for `jwtgate demo` in a browser and for the login tests; not an IdP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Map, Value, json};

use super::json_response;
use super::users::{DEMO_CLIENT_ID, User, access_claims, id_claims, user};
use crate::login::oidc::{pkce_challenge, random_token};
use crate::token::unix_now;

/// The demo app client's secret.
pub const DEMO_CLIENT_SECRET: &str = "jwtgate-demo-secret";
/// Every demo user's password.
pub const DEMO_PASSWORD: &str = "demo";
/// Most codes, refresh tokens and access tokens remembered (oldest dropped): bounded memory.
const MAX_REMEMBERED: usize = 10_000;

struct Code {
    user: &'static User,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    created: i64,
}

/// Hosted-UI state: codes, refresh tokens, issued access tokens.
pub struct HostedUi {
    codes: Mutex<HashMap<String, Code>>,
    refresh_tokens: Mutex<HashMap<String, &'static User>>,
    access_tokens: Mutex<HashMap<String, &'static User>>,
    token_calls: AtomicU64,
    access_ttl: AtomicI64,
    extra_id_claims: Mutex<Map<String, Value>>,
}

impl Default for HostedUi {
    fn default() -> Self {
        HostedUi {
            codes: Mutex::default(),
            refresh_tokens: Mutex::default(),
            access_tokens: Mutex::default(),
            token_calls: AtomicU64::new(0),
            access_ttl: AtomicI64::new(3600),
            extra_id_claims: Mutex::default(),
        }
    }
}

fn bounded_insert<V>(map: &Mutex<HashMap<String, V>>, key: String, value: V) {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= MAX_REMEMBERED {
        map.clear();
    }
    map.insert(key, value);
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(v) = http::HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn form(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

fn oauth_error(error: &str) -> Response<Full<Bytes>> {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": error }))
}

impl HostedUi {
    /// Token endpoint calls so far (the refresh test counts them).
    pub fn token_calls(&self) -> u64 {
        self.token_calls.load(Ordering::SeqCst)
    }

    /// Lifetime of access tokens issued from now on, seconds.
    pub fn set_access_ttl(&self, secs: i64) {
        self.access_ttl.store(secs, Ordering::SeqCst);
    }

    /// Claims added to every ID token issued from now on (e.g. to make sessions large).
    pub fn set_extra_id_claims(&self, claims: Map<String, Value>) {
        *self
            .extra_id_claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = claims;
    }

    /// `GET /oauth2/authorize`: the login page.
    pub fn authorize(&self, query: &str) -> Response<Full<Bytes>> {
        let q = form(query);
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != DEMO_CLIENT_ID {
            return html(StatusCode::BAD_REQUEST, "<h1>unknown client_id</h1>".into());
        }
        if get("response_type") != "code"
            || get("code_challenge_method") != "S256"
            || get("code_challenge").is_empty()
        {
            return html(
                StatusCode::BAD_REQUEST,
                "<h1>response_type=code with PKCE S256 required</h1>".into(),
            );
        }
        let redirect_uri = get("redirect_uri");
        if !(redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://")) {
            return html(
                StatusCode::BAD_REQUEST,
                "<h1>redirect_uri required</h1>".into(),
            );
        }
        let hidden: String = ["redirect_uri", "state", "nonce", "code_challenge", "scope"]
            .iter()
            .map(|k| {
                format!(
                    r#"<input type="hidden" name="{k}" value="{}">"#,
                    escape(get(k))
                )
            })
            .collect();
        html(
            StatusCode::OK,
            format!(
                r#"<!doctype html><html><head><title>jwtgate demo sign-in</title></head>
<body style="font-family:sans-serif;max-width:24em;margin:4em auto">
<h1>Sign in</h1><p>Development issuer. Users: alice, bob, carol; password <code>{DEMO_PASSWORD}</code>.</p>
<form method="post" action="login">{hidden}
<p><label>Username <input name="username" autofocus></label></p>
<p><label>Password <input name="password" type="password"></label></p>
<p><button type="submit">Sign in</button></p></form></body></html>"#
            ),
        )
    }

    /// `POST /login`: checks the password, then 302 back to the app with a code.
    pub fn login(&self, body: &str) -> Response<Full<Bytes>> {
        let f = form(body);
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
        let Some(user) = user(get("username")).filter(|_| get("password") == DEMO_PASSWORD) else {
            return html(
                StatusCode::UNAUTHORIZED,
                "<h1>Wrong username or password</h1><p>Go back and try again.</p>".into(),
            );
        };
        let code = random_token(24);
        let nonce = Some(get("nonce").to_owned()).filter(|n| !n.is_empty());
        bounded_insert(
            &self.codes,
            code.clone(),
            Code {
                user,
                redirect_uri: get("redirect_uri").to_owned(),
                challenge: get("code_challenge").to_owned(),
                nonce,
                created: unix_now(),
            },
        );
        let Ok(mut url) = url::Url::parse(get("redirect_uri")) else {
            return html(StatusCode::BAD_REQUEST, "<h1>bad redirect_uri</h1>".into());
        };
        url.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", get("state"));
        redirect(url.as_str())
    }

    /// `POST /oauth2/token`.
    pub fn token(
        &self,
        headers: &HeaderMap,
        body: &str,
        sign: &dyn Fn(&Value) -> String,
        issuer: &str,
    ) -> Response<Full<Bytes>> {
        self.token_calls.fetch_add(1, Ordering::SeqCst);
        let f = form(body);
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let (client, secret) = match &basic {
            Some(pair) => pair.split_once(':').map_or(("", ""), |(a, b)| (a, b)),
            None => (get("client_id"), get("client_secret")),
        };
        if client != DEMO_CLIENT_ID || secret != DEMO_CLIENT_SECRET {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_client"}),
            );
        }
        let (user, nonce) = match get("grant_type") {
            "authorization_code" => {
                let code = self
                    .codes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(get("code"));
                let Some(code) = code.filter(|c| unix_now() - c.created < 300) else {
                    return oauth_error("invalid_grant");
                };
                if code.redirect_uri != get("redirect_uri")
                    || pkce_challenge(get("code_verifier")) != code.challenge
                {
                    return oauth_error("invalid_grant");
                }
                (code.user, code.nonce)
            }
            "refresh_token" => {
                let found = self
                    .refresh_tokens
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(get("refresh_token"))
                    .copied();
                match found {
                    Some(user) => (user, None),
                    None => return oauth_error("invalid_grant"),
                }
            }
            _ => return oauth_error("unsupported_grant_type"),
        };
        let ttl = self.access_ttl.load(Ordering::SeqCst);
        let mut access = access_claims(issuer, user);
        access["exp"] = json!(unix_now() + ttl);
        let access_token = sign(&access);
        let mut id = id_claims(issuer, user);
        if let Some(nonce) = nonce {
            id["nonce"] = json!(nonce);
        }
        for (k, v) in self
            .extra_id_claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            id[k] = v.clone();
        }
        bounded_insert(&self.access_tokens, access_token.clone(), user);
        let mut answer = json!({
            "access_token": access_token, "id_token": sign(&id), "token_type": "Bearer", "expires_in": ttl,
        });
        if get("grant_type") == "authorization_code" {
            let refresh = random_token(32);
            bounded_insert(&self.refresh_tokens, refresh.clone(), user);
            answer["refresh_token"] = json!(refresh);
        }
        json_response(StatusCode::OK, &answer)
    }

    /// `GET /oauth2/userInfo` with the access token.
    pub fn user_info(&self, headers: &HeaderMap) -> Response<Full<Bytes>> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let found = self
            .access_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .copied();
        match found {
            Some(user) => json_response(
                StatusCode::OK,
                &json!({
                    "sub": user.sub, "email": user.email, "email_verified": "true",
                    "name": user.name, "username": user.username,
                }),
            ),
            None => json_response(StatusCode::UNAUTHORIZED, &json!({"error": "invalid_token"})),
        }
    }

    /// `GET /logout?client_id=…&logout_uri=…` (Cognito) or `post_logout_redirect_uri` (OIDC).
    pub fn logout(&self, query: &str) -> Response<Full<Bytes>> {
        let q = form(query);
        let back = q
            .get("logout_uri")
            .or_else(|| q.get("post_logout_redirect_uri"));
        match back {
            Some(uri) if uri.starts_with("http://") || uri.starts_with("https://") => redirect(uri),
            _ => html(StatusCode::OK, "<h1>Signed out</h1>".into()),
        }
    }
}

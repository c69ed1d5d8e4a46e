//! A development issuer: Cognito-shaped access and ID tokens for demo users, signed with keys
//! generated at start, published over real HTTP (discovery and JWKS). `jwtgate demo` runs it,
//! and the integration tests use it as their identity provider: it can rotate keys, go down,
//! count key set fetches, and sign whatever hostile token a test needs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::hosted_ui::HostedUi;
pub use super::users::{DEMO_CLIENT_ID, USERS, User, access_claims, id_claims, user};
use super::{json_response, spawn_server};

enum Pair {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private signing key and its public JWK.
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    /// Algorithm it signs with.
    pub alg: Algorithm,
    pair: Pair,
}

impl SigningKey {
    /// Generates a key for `alg` (RS*, PS*, ES256, ES384 or EdDSA).
    pub fn generate(alg: Algorithm, kid: impl Into<String>) -> Self {
        let pair = match alg {
            Algorithm::ES256 => Pair::Ec(
                EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key"), // ok: dev tool, start-up
            ),
            Algorithm::ES384 => Pair::Ec(
                EcdsaKeyPair::generate(&sig::ECDSA_P384_SHA384_FIXED_SIGNING).expect("P-384 key"), // ok: dev tool, start-up
            ),
            Algorithm::EdDSA => Pair::Ed(Ed25519KeyPair::generate().expect("Ed25519 key")), // ok: dev tool, start-up
            _ => Pair::Rsa(aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("RSA key")), // ok: dev tool, start-up
        };
        SigningKey {
            kid: kid.into(),
            alg,
            pair,
        }
    }

    /// Signs `message` (RSA and HMAC-free algorithms only; JWS raw `r||s` for ECDSA).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Rsa(key) => {
                let encoding: &'static dyn sig::RsaEncoding = match self.alg {
                    Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                    Algorithm::PS512 => &sig::RSA_PSS_SHA512,
                    _ => &sig::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0; key.public_modulus_len()];
                key.sign(encoding, &rng, message, &mut out)
                    .expect("RSA signing"); // ok: fixed-size buffer
                out
            }
            Pair::Ec(key) => {
                let signature = key.sign(&rng, message).expect("ECDSA signing"); // ok: cannot fail for a valid key
                signature.as_ref().to_vec()
            }
            Pair::Ed(key) => key.sign(message).as_ref().to_vec(),
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let alg = format!("{:?}", self.alg);
        match &self.pair {
            Pair::Rsa(key) => {
                let public = key.public_key();
                json!({"kty":"RSA","use":"sig","alg":alg,"kid":self.kid,
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero())})
            }
            Pair::Ec(key) => {
                let point = key.public_key().as_ref();
                let len = (point.len() - 1) / 2;
                let crv = if len == 32 { "P-256" } else { "P-384" };
                json!({"kty":"EC","use":"sig","alg":alg,"kid":self.kid,"crv":crv,
                    "x": b64(&point[1..=len]), "y": b64(&point[1 + len..])})
            }
            Pair::Ed(key) => {
                json!({"kty":"OKP","use":"sig","alg":"EdDSA","kid":self.kid,"crv":"Ed25519",
                "x": b64(key.public_key().as_ref())})
            }
        }
    }

    /// The raw public key bytes (RSA: modulus), e.g. to forge an HMAC key from them.
    pub fn public_bytes(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Rsa(key) => key.public_key().as_ref().to_vec(),
            Pair::Ec(key) => key.public_key().as_ref().to_vec(),
            Pair::Ed(key) => key.public_key().as_ref().to_vec(),
        }
    }
}

struct State {
    issuer: String,
    prefix: String,
    ui: HostedUi,
    jwks_path: String,
    /// Published keys; the first one signs by default.
    keys: Mutex<Vec<Arc<SigningKey>>>,
    jwks_fetches: AtomicU64,
    down: AtomicBool,
}

/// The running development issuer.
pub struct DevIssuer {
    state: Arc<State>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DevIssuer {
    /// Starts on `127.0.0.1:0` with one RS256 key; `iss` is `http://127.0.0.1:PORT/{pool_id}`.
    pub async fn start(pool_id: &str) -> std::io::Result<Self> {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await?, pool_id)
    }

    /// Starts on a bound listener.
    pub fn start_on(listener: TcpListener, pool_id: &str) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}/{pool_id}");
        let state = Arc::new(State {
            prefix: format!("/{pool_id}"),
            ui: HostedUi::default(),
            jwks_path: format!("/{pool_id}/.well-known/jwks.json"),
            issuer,
            keys: Mutex::new(vec![Arc::new(SigningKey::generate(
                Algorithm::RS256,
                "dev-rsa-1",
            ))]),
            jwks_fetches: AtomicU64::new(0),
            down: AtomicBool::new(false),
        });
        let serving = Arc::clone(&state);
        let task = spawn_server(listener, move |req| {
            let state = Arc::clone(&serving);
            async move { state.handle(req).await }
        });
        Ok(DevIssuer { state, addr, task })
    }

    /// The hosted UI (token-call counter, access token lifetime, extra ID token claims).
    pub fn hosted_ui(&self) -> &HostedUi {
        &self.state.ui
    }

    /// The exact `iss`.
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// The key set URL.
    pub fn jwks_uri(&self) -> String {
        format!("http://{}{}", self.addr, self.state.jwks_path)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Key set fetches served so far (answered or refused while down).
    pub fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// While down, every request is answered 503.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Vec<Arc<SigningKey>>> {
        self.state
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Generates and publishes a key; `make_default` makes it the one tokens are signed with.
    pub fn add_key(&self, alg: Algorithm, kid: &str, make_default: bool) {
        let key = Arc::new(SigningKey::generate(alg, kid));
        let mut keys = self.keys();
        if make_default {
            keys.insert(0, key);
        } else {
            keys.push(key);
        }
    }

    /// Stops publishing `kid`.
    pub fn remove_key(&self, kid: &str) {
        self.keys().retain(|k| k.kid != kid);
    }

    /// The kid tokens are signed with by default.
    pub fn default_kid(&self) -> String {
        self.keys()
            .first()
            .map(|k| k.kid.clone())
            .unwrap_or_default()
    }

    /// A published key by kid.
    pub fn key(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.keys().iter().find(|k| k.kid == kid).cloned()
    }

    /// Signs `claims` with the default key (header `alg`, `kid`, `typ`).
    pub fn sign(&self, claims: &Value) -> String {
        self.state.sign_default(claims)
    }

    /// Claims of a Cognito-shaped access token for `user`, valid for an hour.
    pub fn access_token(&self, user: &User) -> Value {
        access_claims(self.issuer(), user)
    }

    /// Claims of a Cognito-shaped ID token for `user`, valid for an hour.
    pub fn id_token(&self, user: &User) -> Value {
        id_claims(self.issuer(), user)
    }
}

/// Signs `header.claims` with `key` exactly as given (tests use it to build hostile tokens).
pub fn sign_with(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

impl State {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        if path == self.jwks_path {
            self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
        }
        if self.down.load(Ordering::SeqCst) {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"message": "issuer is down"}),
            );
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, 64 * 1024).collect().await {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(_) => {
                return json_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &json!({"message": "body too large"}),
                );
            }
        };
        let sign = |claims: &Value| self.sign_default(claims);
        let local = path.strip_prefix(&self.prefix).unwrap_or("");
        match (parts.method.as_str(), local) {
            ("GET", "/.well-known/jwks.json") => {
                let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
                let jwks: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
                json_response(StatusCode::OK, &json!({ "keys": jwks }))
            }
            ("GET", "/.well-known/openid-configuration") => {
                let host = parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("127.0.0.1");
                let base = format!("http://{host}{}", self.prefix);
                json_response(
                    StatusCode::OK,
                    &json!({
                        "issuer": self.issuer,
                        "jwks_uri": format!("{base}/.well-known/jwks.json"),
                        "authorization_endpoint": format!("{base}/oauth2/authorize"),
                        "token_endpoint": format!("{base}/oauth2/token"),
                        "userinfo_endpoint": format!("{base}/oauth2/userInfo"),
                        "end_session_endpoint": format!("{base}/logout"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "code_challenge_methods_supported": ["S256"],
                        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    }),
                )
            }
            ("GET", "/oauth2/authorize") => self.ui.authorize(&query),
            ("POST", "/oauth2/login") => self.ui.login(&body),
            ("POST", "/oauth2/token") => self.ui.token(&parts.headers, &body, &sign, &self.issuer),
            ("GET", "/oauth2/userInfo") => self.ui.user_info(&parts.headers),
            ("GET", "/logout") => self.ui.logout(&query),
            ("GET", "/dev/token") => self.mint(&query),
            _ => json_response(StatusCode::NOT_FOUND, &json!({"message": "Not Found"})),
        }
    }

    fn sign_default(&self, claims: &Value) -> String {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        match keys.first() {
            Some(key) => sign_with(
                key,
                &json!({"alg": format!("{:?}", key.alg), "kid": key.kid, "typ": "JWT"}),
                claims,
            ),
            None => String::new(),
        }
    }

    /// `GET /{pool}/dev/token?user=alice&kind=access|id`: a fresh token, for demo curls.
    fn mint(&self, query: &str) -> Response<Full<Bytes>> {
        let mut params: Map<String, Value> = Map::new();
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                params.insert(k.to_owned(), Value::String(v.to_owned()));
            }
        }
        let Some(user) = params.get("user").and_then(Value::as_str).and_then(user) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"message": "user must be alice, bob or carol"}),
            );
        };
        let claims = match params.get("kind").and_then(Value::as_str) {
            Some("id") => id_claims(&self.issuer, user),
            _ => access_claims(&self.issuer, user),
        };
        let token = self.sign_default(&claims);
        let mut response = Response::new(Full::new(Bytes::from(token)));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        response
    }
}

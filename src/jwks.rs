//! Per-issuer signing keys: fetched over HTTP, parsed once, refreshed in the background, and
//! refetched when a token names an unknown `kid`.
//!
//! The hot path never waits on a lock: the current key set sits in an `ArcSwap`. Fetches are
//! single-flighted (one spawned task, awaited by everyone through a shared future), at most one
//! per `min_refetch_interval` is caused by unknown `kid`s (which makes every unknown `kid` a
//! negative-cache hit inside that window), and a failed fetch keeps the last good keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use aws_lc_rs::digest;
use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::metrics::{FetchResult, Metrics};

/// Largest key set or discovery document accepted, bytes.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// Most keys kept from one key set; the rest are ignored (with a warning).
pub const MAX_KEYS: usize = 64;
/// TCP connect timeout of key-set and discovery fetches.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// First retry delay after a failed fetch; doubles up to the refresh interval (at most 5 min).
const RETRY_INITIAL: Duration = Duration::from_secs(1);

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// A key set URL.
    Jwks(String),
    /// An OpenID discovery document whose `jwks_uri` names the key set.
    Discovery(String),
}

impl KeySource {
    /// The URL fetched first.
    pub fn url(&self) -> &str {
        match self {
            KeySource::Jwks(u) | KeySource::Discovery(u) => u,
        }
    }
}

/// What a key store needs to know; two issuers with equal settings share one store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeySettings {
    /// The metrics label.
    pub name: Arc<str>,
    /// Exact `iss`, checked against a discovery document's `issuer`.
    pub issuer: Arc<str>,
    /// Where the keys come from.
    pub source: KeySource,
    /// Algorithms a key may be used with.
    pub algorithms: Vec<Algorithm>,
    /// Background refresh period.
    pub refresh_interval: Duration,
    /// Least time between unknown-`kid` refetches.
    pub min_refetch_interval: Duration,
    /// Timeout of one HTTP fetch.
    pub fetch_timeout: Duration,
}

/// Why a key could not be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The issuer's keys have never been fetched successfully.
    #[error("signing keys are not available yet")]
    Unavailable,
    /// The `kid` is not in the key set, even after a refetch (or within the back-off window).
    #[error("unknown key id")]
    UnknownKid,
}

/// Why a fetch failed (logged, and counted by `result`).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connect, TLS, timeout or protocol failure.
    #[error("request to {url} failed: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// A non-200 answer.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The body exceeded [`MAX_DOCUMENT_BYTES`].
    #[error("{url}: response larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge {
        /// The URL.
        url: String,
    },
    /// Not the JSON we expect.
    #[error("{url}: {reason}")]
    Invalid {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl FetchError {
    /// The metric label.
    pub fn kind(&self) -> FetchResult {
        match self {
            FetchError::Http { source, .. } if source.is_timeout() => FetchResult::Timeout,
            FetchError::Http { .. } => FetchResult::Network,
            FetchError::Status { .. } => FetchResult::HttpStatus,
            FetchError::TooLarge { .. } => FetchResult::TooLarge,
            FetchError::Invalid { .. } => FetchResult::Invalid,
        }
    }
}

/// One public key, parsed once for every algorithm it may verify.
pub struct VerifyKey {
    verifiers: Vec<(Algorithm, ParsedPublicKey)>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<_> = self.verifiers.iter().map(|(a, _)| a).collect();
        f.debug_struct("VerifyKey")
            .field("algorithms", &algs)
            .finish()
    }
}

impl VerifyKey {
    /// Parses a JWK for the allowed algorithms that fit it. `None` when it fits none (an
    /// encryption key, an unsupported curve, an `alg` outside the allow-list).
    pub fn from_jwk(jwk: &Jwk, allowed: &[Algorithm]) -> Result<Option<Self>, String> {
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            return Ok(None);
        }
        let declared = match jwk.common.key_algorithm {
            None => None,
            Some(ka) => match key_algorithm(ka) {
                Some(alg) => Some(alg),
                None => return Ok(None),
            },
        };
        let candidates = allowed
            .iter()
            .copied()
            .filter(|a| declared.is_none_or(|d| d == *a));
        let mut verifiers = Vec::new();
        match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let n = decode_b64(&rsa.n, "n")?;
                let e = decode_b64(&rsa.e, "e")?;
                let components = RsaPublicKeyComponents {
                    n: strip_leading_zeros(&n),
                    e: strip_leading_zeros(&e),
                };
                for alg in candidates {
                    let params: &'static sig::RsaParameters = match alg {
                        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
                        _ => continue,
                    };
                    let key = components
                        .to_parsed_public_key(params)
                        .map_err(|e| format!("RSA key rejected: {e}"))?;
                    verifiers.push((alg, key));
                }
            }
            AlgorithmParameters::EllipticCurve(ec) => {
                let (alg, params, len): (_, &'static sig::EcdsaVerificationAlgorithm, _) = match ec
                    .curve
                {
                    EllipticCurve::P256 => (Algorithm::ES256, &sig::ECDSA_P256_SHA256_FIXED, 32),
                    EllipticCurve::P384 => (Algorithm::ES384, &sig::ECDSA_P384_SHA384_FIXED, 48),
                    _ => return Ok(None),
                };
                if candidates.clone().any(|a| a == alg) {
                    let x = decode_b64(&ec.x, "x")?;
                    let y = decode_b64(&ec.y, "y")?;
                    if x.len() != len || y.len() != len {
                        return Err("EC coordinates have the wrong length".into());
                    }
                    let mut point = Vec::with_capacity(1 + 2 * len);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    let key = ParsedPublicKey::new(params, point)
                        .map_err(|e| format!("EC key rejected: {e}"))?;
                    verifiers.push((alg, key));
                }
            }
            AlgorithmParameters::OctetKeyPair(okp) => {
                if okp.curve != EllipticCurve::Ed25519 {
                    return Ok(None);
                }
                if candidates.clone().any(|a| a == Algorithm::EdDSA) {
                    let x = decode_b64(&okp.x, "x")?;
                    let key = ParsedPublicKey::new(&sig::ED25519, x)
                        .map_err(|e| format!("Ed25519 key rejected: {e}"))?;
                    verifiers.push((Algorithm::EdDSA, key));
                }
            }
            // Symmetric keys never verify tokens: that is the "HMAC with a public key" attack.
            _ => return Ok(None),
        }
        Ok((!verifiers.is_empty()).then_some(VerifyKey { verifiers }))
    }

    /// Whether this key may verify `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    /// Verifies `signature` over `message` with `alg`; `false` if the key does not do `alg`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }

    /// As [`VerifyKey::verify`], given `message`'s SHA-256 as well: the algorithms that hash
    /// with SHA-256 (RS256, PS256, ES256) verify that digest instead of hashing the message
    /// again (the token cache's key already took it).
    pub fn verify_with_sha256(
        &self,
        alg: Algorithm,
        message: &[u8],
        sha256: &digest::Digest,
        signature: &[u8],
    ) -> bool {
        let prehashed = matches!(alg, Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256)
            && sha256.algorithm() == &digest::SHA256;
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| {
                let checked = if prehashed {
                    key.verify_digest_sig(sha256, signature)
                } else {
                    key.verify_sig(message, signature)
                };
                checked.is_ok()
            })
    }
}

fn key_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn decode_b64(value: &str, field: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("field {field:?} is not base64url"))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// The keys of one issuer at one moment.
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<Box<str>, Arc<VerifyKey>>,
    /// Keys published without a `kid`; used only by tokens without one.
    anonymous: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the keys usable with `allowed`. Keys that fail to parse
    /// are skipped with a warning, so one odd key cannot take the whole issuer down.
    pub fn parse(name: &str, body: &[u8], allowed: &[Algorithm]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document =
            serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut set = KeySet::default();
        for (i, value) in doc.keys.into_iter().enumerate() {
            if set.len() >= MAX_KEYS {
                tracing::warn!(
                    issuer = name,
                    "key set has more than {MAX_KEYS} keys; the rest are ignored"
                );
                break;
            }
            let jwk: Jwk = match serde_json::from_value(value) {
                Ok(jwk) => jwk,
                Err(e) => {
                    tracing::warn!(issuer = name, key = i, "skipping unparseable key: {e}");
                    continue;
                }
            };
            match VerifyKey::from_jwk(&jwk, allowed) {
                Ok(Some(key)) => {
                    let key = Arc::new(key);
                    match jwk.common.key_id {
                        Some(kid) => {
                            set.by_kid.insert(kid.into_boxed_str(), key);
                        }
                        None => set.anonymous.push(key),
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(issuer = name, key = i, "skipping key: {e}"),
            }
        }
        Ok(set)
    }

    /// The key a token names; a token without `kid` may use the only anonymous key.
    pub fn get(&self, kid: Option<&str>) -> Option<&Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None if self.anonymous.len() == 1 => self.anonymous.first(),
            None if self.anonymous.is_empty() && self.by_kid.len() == 1 => {
                self.by_kid.values().next()
            }
            None => None,
        }
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    /// Whether no key is usable.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type SharedFetch = Shared<BoxFuture<'static, bool>>;

#[derive(Default)]
struct FetchState {
    inflight: Option<SharedFetch>,
    /// Start of the last fetch an unknown `kid` caused; timer fetches do not count, so a key
    /// rotated in just after a scheduled refresh is still picked up at once.
    last_unknown_kid_fetch: Option<Instant>,
    /// `jwks_uri` learned from discovery.
    discovered_jwks_uri: Option<String>,
}

/// Why a fetch starts: unknown `kid`s are rate limited, the refresh timer is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Timer,
    UnknownKid,
}

/// The keys of one issuer, kept fresh.
pub struct KeyStore {
    settings: KeySettings,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    keys: ArcSwapOption<KeySet>,
    state: Mutex<FetchState>,
}

impl KeyStore {
    fn new(settings: KeySettings, http: reqwest::Client, metrics: Arc<Metrics>) -> Self {
        KeyStore {
            settings,
            http,
            metrics,
            keys: ArcSwapOption::empty(),
            state: Mutex::new(FetchState::default()),
        }
    }

    /// A store preloaded with a JWKS document and no refresh task (benchmarks and tests).
    pub fn preloaded(
        settings: KeySettings,
        jwks: &[u8],
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let set = KeySet::parse(&settings.name, jwks, &settings.algorithms)?;
        let store = KeyStore::new(settings, reqwest::Client::new(), metrics);
        store.keys.store(Some(Arc::new(set)));
        store.lock_state().last_unknown_kid_fetch = Some(Instant::now());
        Ok(Arc::new(store))
    }

    /// The settings this store was built from.
    pub fn settings(&self) -> &KeySettings {
        &self.settings
    }

    /// Whether a good key set has been fetched.
    pub fn is_ready(&self) -> bool {
        self.keys.load().is_some()
    }

    /// Whether `kid` is in the current key set (a cached verification stays valid only while
    /// its key is published).
    pub fn contains(&self, kid: Option<&str>) -> bool {
        self.keys
            .load()
            .as_ref()
            .is_some_and(|set| set.get(kid).is_some())
    }

    /// The key for `kid`, refetching the set once (rate limited) when it is unknown.
    pub async fn key(self: &Arc<Self>, kid: Option<&str>) -> Result<Arc<VerifyKey>, KeyError> {
        if let Some(key) = self.lookup(kid) {
            return Ok(key);
        }
        if let Some(fetch) = self.start_fetch(Trigger::UnknownKid) {
            fetch.await;
            if let Some(key) = self.lookup(kid) {
                return Ok(key);
            }
        }
        Err(if self.is_ready() {
            KeyError::UnknownKid
        } else {
            KeyError::Unavailable
        })
    }

    fn lookup(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        self.keys
            .load()
            .as_ref()
            .and_then(|set| set.get(kid).cloned())
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the fetch in flight or starts one; `None` when an unknown-`kid` fetch is refused
    /// by the rate limit.
    fn start_fetch(self: &Arc<Self>, trigger: Trigger) -> Option<SharedFetch> {
        let mut state = self.lock_state();
        if let Some(fetch) = &state.inflight {
            return Some(fetch.clone());
        }
        if trigger == Trigger::UnknownKid {
            if state
                .last_unknown_kid_fetch
                .is_some_and(|t| t.elapsed() < self.settings.min_refetch_interval)
            {
                self.metrics.jwks_refetch_suppressed(&self.settings.name);
                return None;
            }
            state.last_unknown_kid_fetch = Some(Instant::now());
        }
        let this = Arc::clone(self);
        // Spawned, so a request that gives up cannot cancel the fetch for the others. The task
        // clears `inflight` under the lock, which it cannot take before we have set it below.
        let task: JoinHandle<bool> = tokio::spawn(async move {
            let ok = this.fetch_and_store().await;
            this.lock_state().inflight = None;
            ok
        });
        let fetch = async move { task.await.unwrap_or(false) }.boxed().shared();
        state.inflight = Some(fetch.clone());
        Some(fetch)
    }

    async fn fetch_and_store(&self) -> bool {
        let name = &*self.settings.name;
        match self.fetch().await {
            Ok(set) => {
                let count = set.len();
                if count == 0 {
                    tracing::warn!(
                        issuer = name,
                        "key set has no usable key for the allowed algorithms"
                    );
                }
                self.metrics.jwks_fetched(name, FetchResult::Ok, count);
                self.keys.store(Some(Arc::new(set)));
                tracing::debug!(issuer = name, keys = count, "signing keys fetched");
                true
            }
            Err(e) => {
                self.metrics.jwks_fetched(
                    name,
                    e.kind(),
                    self.keys.load().as_ref().map_or(0, |s| s.len()),
                );
                if self.is_ready() {
                    tracing::warn!(
                        issuer = name,
                        "key fetch failed, keeping the last good keys: {e}"
                    );
                } else {
                    tracing::error!(
                        issuer = name,
                        "key fetch failed and no keys are loaded yet: {e}"
                    );
                }
                false
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, FetchError> {
        let jwks_uri = match &self.settings.source {
            KeySource::Jwks(uri) => uri.clone(),
            KeySource::Discovery(url) => {
                let known = self.lock_state().discovered_jwks_uri.clone();
                match known {
                    Some(uri) => uri,
                    None => {
                        let uri = self.discover(url).await?;
                        self.lock_state().discovered_jwks_uri = Some(uri.clone());
                        uri
                    }
                }
            }
        };
        let body = self.get(&jwks_uri).await?;
        KeySet::parse(&self.settings.name, &body, &self.settings.algorithms).map_err(|reason| {
            FetchError::Invalid {
                url: jwks_uri,
                reason,
            }
        })
    }

    async fn discover(&self, url: &str) -> Result<String, FetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let body = self.get(url).await?;
        let doc: Discovery = serde_json::from_slice(&body).map_err(|e| FetchError::Invalid {
            url: url.to_owned(),
            reason: format!("not an OpenID discovery document: {e}"),
        })?;
        if doc.issuer != *self.settings.issuer {
            return Err(FetchError::Invalid {
                url: url.to_owned(),
                reason: format!(
                    "discovery names issuer {:?}, configured {:?}",
                    doc.issuer, self.settings.issuer
                ),
            });
        }
        Ok(doc.jwks_uri)
    }

    /// GET with a timeout and a size cap.
    async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let http_err = |source| FetchError::Http {
            url: url.to_owned(),
            source,
        };
        let mut response = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .timeout(self.settings.fetch_timeout)
            .send()
            .await
            .map_err(http_err)?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_err)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Fetches now, then every `refresh_interval`; after failures retries sooner, with
    /// exponential back-off.
    async fn refresh_loop(self: Arc<Self>) {
        let mut retry = RETRY_INITIAL;
        loop {
            let ok = match self.start_fetch(Trigger::Timer) {
                Some(fetch) => fetch.await,
                None => false,
            };
            let delay = if ok {
                retry = RETRY_INITIAL;
                self.settings.refresh_interval
            } else {
                let delay = retry;
                retry =
                    (retry * 2).min(self.settings.refresh_interval.min(Duration::from_secs(300)));
                delay
            };
            tokio::time::sleep(delay).await;
        }
    }
}

/// A key store and its refresh task; dropping it stops the task.
struct Running {
    store: Arc<KeyStore>,
    refresher: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Every issuer's key store. Stores outlive config reloads: an issuer whose settings did not
/// change keeps its keys; new ones start fetching; removed ones stop.
pub struct KeyManager {
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    running: Mutex<HashMap<KeySettings, Running>>,
}

impl KeyManager {
    /// A manager with its own HTTP client (rustls, system roots).
    pub fn new(metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("jwtgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(KeyManager {
            http,
            metrics,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Returns the store for each settings entry (starting new ones) and stops stores no
    /// longer named. Must run inside a tokio runtime.
    pub fn sync(&self, wanted: &[KeySettings]) -> Vec<Arc<KeyStore>> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.retain(|settings, _| wanted.contains(settings));
        wanted
            .iter()
            .map(|settings| {
                let entry = running.entry(settings.clone()).or_insert_with(|| {
                    let store = Arc::new(KeyStore::new(
                        settings.clone(),
                        self.http.clone(),
                        Arc::clone(&self.metrics),
                    ));
                    let refresher = tokio::spawn(Arc::clone(&store).refresh_loop());
                    Running { store, refresher }
                });
                Arc::clone(&entry.store)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_for_encryption_symmetric_or_disallowed_algorithms_are_ignored() {
        let allowed = [Algorithm::RS256];
        let hmac: Jwk = serde_json::from_str(r#"{"kty":"oct","k":"c2VjcmV0","kid":"h"}"#).unwrap();
        assert!(VerifyKey::from_jwk(&hmac, &allowed).unwrap().is_none());
        let ec: Jwk = serde_json::from_str(
            r#"{"kty":"EC","crv":"P-256","kid":"e","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
        )
        .unwrap();
        assert!(
            VerifyKey::from_jwk(&ec, &allowed).unwrap().is_none(),
            "ES256 not allowed"
        );
        let ec_ok = VerifyKey::from_jwk(&ec, &[Algorithm::ES256])
            .unwrap()
            .unwrap();
        assert!(ec_ok.supports(Algorithm::ES256));
        assert!(!ec_ok.supports(Algorithm::RS256));
    }

    #[test]
    fn a_signature_checks_the_same_from_the_message_or_its_sha256() {
        use crate::dev::issuer::{SigningKey, sign_with};
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ] {
            let signer = SigningKey::generate(alg, "k");
            let jwk: Jwk = serde_json::from_value(signer.jwk()).unwrap();
            let key = VerifyKey::from_jwk(&jwk, &[alg]).unwrap().unwrap();
            let token = sign_with(
                &signer,
                &serde_json::json!({"alg": format!("{alg:?}"), "kid": "k"}),
                &serde_json::json!({"sub": "a"}),
            );
            let (message, signature) = token.rsplit_once('.').unwrap();
            let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            let sha256 = |m: &str| digest::digest(&digest::SHA256, m.as_bytes());
            let other = format!("{message}x");
            assert!(key.verify(alg, message.as_bytes(), &signature), "{alg:?}");
            assert!(
                key.verify_with_sha256(alg, message.as_bytes(), &sha256(message), &signature),
                "{alg:?}"
            );
            // Another message's digest fails, whichever of the two an algorithm reads.
            assert!(
                !key.verify_with_sha256(alg, other.as_bytes(), &sha256(&other), &signature),
                "{alg:?}"
            );
            // A digest of another algorithm is never taken for SHA-256: the message is hashed.
            let sha384 = digest::digest(&digest::SHA384, message.as_bytes());
            assert!(
                key.verify_with_sha256(alg, message.as_bytes(), &sha384, &signature),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn a_bad_key_does_not_spoil_the_set() {
        let body = br#"{"keys":[{"kty":"RSA","kid":"bad","n":"!!","e":"AQAB"},{"kty":"weird"},
            {"kty":"EC","crv":"P-256","kid":"e","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        let set = KeySet::parse("t", body, &[Algorithm::ES256, Algorithm::RS256]).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.get(Some("e")).is_some());
        assert!(set.get(Some("bad")).is_none());
        assert!(
            set.get(None).is_some(),
            "a single key serves kid-less tokens"
        );
        assert!(KeySet::parse("t", b"[]", &[Algorithm::RS256]).is_err());
    }
}

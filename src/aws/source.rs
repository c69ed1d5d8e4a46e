//! A named credential source at run time: who is asking, the cache in front of AWS, and the
//! call behind it.
//!
//! The cache is keyed by (identity, role) within the source: identity is the token's
//! `iss` + `sub` (never shared by two users), `guest` for the pool's unauthenticated identity,
//! `gateway` for jwtgate's own. An entry serves until the earlier of the credentials' expiry
//! minus the refresh margin (at most half their lifetime) and the token's `exp`; then the next
//! request fetches anew. Concurrent requests for one key wait for the one call in flight
//! (single flight), and share its error too; a failed entry is dropped, so the next request
//! retries. Memory is bounded by `cache_max_bytes` (each entry is weighed at its key plus
//! [`ENTRY_WEIGHT`]) and by the token's `exp` (at most [`MAX_ENTRY_LIFETIME`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache;
use tokio::sync::OnceCell;

use super::credentials::Credentials;
use super::error::AwsError;
use super::gateway::{self, Env};
use super::identity_pool::{self, Login};
use super::settings::{MAX_ENTRY_LIFETIME, SourceKind, SourceSettings};
use super::sts::{self, AssumeRole};
use crate::metrics::{CredentialResult, Metrics};

/// Weight of one cache entry beyond its key, bytes: the credentials (a session token is 1 to
/// 2 KiB) and the bookkeeping around them.
pub const ENTRY_WEIGHT: u32 = 4096;
/// Most `IdentityId`s remembered per identity-pool source (one per user; ~150 bytes each).
pub const MAX_IDENTITY_IDS: u64 = 100_000;
/// An `IdentityId` not used for this long is forgotten (it stays valid in Cognito; forgetting
/// costs one `GetId`).
pub const IDENTITY_ID_IDLE: Duration = Duration::from_secs(24 * 3600);

/// The wall clock (tests move it).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// A verified user token, as the proxy read it.
#[derive(Debug, Clone, Copy)]
pub struct UserToken<'a> {
    /// The token as sent (an ID token for identity pools). Never logged.
    pub token: &'a str,
    /// `iss`.
    pub issuer: &'a str,
    /// `sub`.
    pub subject: &'a str,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// `cognito:preferred_role`, when the token has one.
    pub preferred_role: Option<&'a str>,
}

impl<'a> UserToken<'a> {
    /// The parts of a verified token a source needs: `None` without a string `sub` or with a
    /// negative `exp` (identity pools and STS key users by `sub`).
    pub fn from_claims(token: &'a str, claims: &'a crate::token::Claims) -> Option<Self> {
        let text = |name: &str| claims.all().get(name).and_then(serde_json::Value::as_str);
        Some(UserToken {
            token,
            issuer: &claims.iss,
            subject: text("sub").filter(|s| !s.is_empty())?,
            expires_at: u64::try_from(claims.exp).ok()?,
            preferred_role: text("cognito:preferred_role"),
        })
    }
}

/// Who the credentials are for.
#[derive(Debug, Clone, Copy)]
pub enum Principal<'a> {
    /// A signed-in user.
    User(UserToken<'a>),
    /// A request without a token (identity pools with `guests = true`; the gateway source).
    Guest,
}

/// A cache key within one source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    identity: Arc<str>,
    role: Arc<str>,
}

/// Credentials fetched, and until when they serve.
#[derive(Clone)]
struct Fetched {
    credentials: Arc<Credentials>,
    refresh_at: SystemTime,
}

/// One cache entry: a fetch in flight or done.
struct Slot {
    cell: OnceCell<Result<Fetched, AwsError>>,
    /// When the token that made it expires (wall clock).
    token_expires: Option<SystemTime>,
    /// When moka may drop it (monotonic).
    memory_deadline: Instant,
}

impl Slot {
    /// Whether a request at `now` may use it: in flight, or done and still fresh.
    fn usable(&self, now: SystemTime) -> bool {
        match self.cell.get() {
            None => true,
            Some(Ok(f)) => now < f.refresh_at && self.token_expires.is_none_or(|t| now < t),
            Some(Err(_)) => false,
        }
    }
}

/// Drops entries at their token's `exp` (at most [`MAX_ENTRY_LIFETIME`]).
struct SlotExpiry;

impl Expiry<Key, Arc<Slot>> for SlotExpiry {
    fn expire_after_create(&self, _: &Key, slot: &Arc<Slot>, _: Instant) -> Option<Duration> {
        Some(
            slot.memory_deadline
                .saturating_duration_since(Instant::now()),
        )
    }

    fn expire_after_update(
        &self,
        _: &Key,
        slot: &Arc<Slot>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(
            slot.memory_deadline
                .saturating_duration_since(Instant::now()),
        )
    }
}

/// One `[[aws_credentials]]` source, ready to serve.
pub struct CredentialSource {
    settings: SourceSettings,
    client: reqwest::Client,
    imds_client: reqwest::Client,
    cache: Cache<Key, Arc<Slot>>,
    identity_ids: Cache<Arc<str>, Arc<str>>,
    metrics: Arc<Metrics>,
    clock: Clock,
    env: Env,
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSource")
            .field("settings", &self.settings)
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl CredentialSource {
    /// A source with an empty cache, the system clock and the process environment. Fails only
    /// when its HTTP client cannot start (no TLS backend).
    pub fn new(settings: SourceSettings, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let cache = Cache::builder()
            .max_capacity(settings.cache_max_bytes)
            .weigher(|k: &Key, _: &Arc<Slot>| {
                let key = u32::try_from(k.identity.len() + k.role.len()).unwrap_or(u32::MAX);
                key.saturating_add(ENTRY_WEIGHT)
            })
            .expire_after(SlotExpiry)
            .build();
        let identity_ids = Cache::builder()
            .max_capacity(MAX_IDENTITY_IDS)
            .time_to_idle(IDENTITY_ID_IDLE)
            .build();
        Ok(CredentialSource {
            client: super::http::client(settings.timeout)?,
            imds_client: super::http::client(settings.timeout.min(gateway::IMDS_TIMEOUT))?,
            settings,
            cache,
            identity_ids,
            metrics,
            clock: Arc::new(SystemTime::now),
            env: gateway::process_env(),
        })
    }

    /// The same source reading time from `clock` (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same source reading the gateway chain's variables from `env` (tests).
    pub fn with_env(mut self, env: Env) -> Self {
        self.env = env;
        self
    }

    /// Its settings.
    pub fn settings(&self) -> &SourceSettings {
        &self.settings
    }

    /// Entries in the credential cache (after pending evictions).
    pub fn cached_entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Credentials for `who`: from the cache, or from one call to AWS shared by every request
    /// asking for the same key meanwhile.
    pub async fn credentials(&self, who: &Principal<'_>) -> Result<Arc<Credentials>, AwsError> {
        let now = (self.clock)();
        let (key, role, token_expires) = self.key(who, now)?;
        let slot = self.slot(&key, token_expires, now);
        let mut fetched_here = false;
        let result = slot
            .cell
            .get_or_init(|| async {
                fetched_here = true;
                let result = self.fetch(who, role.as_deref()).await;
                self.metrics.aws_credential_call(
                    &self.settings.name,
                    result
                        .as_ref()
                        .map_or_else(AwsError::reason, |_| CredentialResult::Ok),
                );
                result.map(|c| self.fetched(c, token_expires))
            })
            .await
            .clone();
        self.metrics
            .aws_credential_cache(&self.settings.name, !fetched_here);
        match result {
            Ok(f) => Ok(f.credentials),
            Err(e) => {
                if fetched_here {
                    // Not cached: the next request tries again. Only this failed entry goes,
                    // not one a newer request has put in its place meanwhile.
                    self.cache
                        .entry(key)
                        .and_compute_with(|current| match current {
                            Some(e) if Arc::ptr_eq(e.value(), &slot) => Op::Remove,
                            _ => Op::Nop,
                        });
                    tracing::warn!(source = %self.settings.name, error = %e, "AWS credentials");
                }
                Err(e)
            }
        }
    }

    /// The cache key, the role to assume, and the token's expiry, for `who`.
    fn key(
        &self,
        who: &Principal<'_>,
        now: SystemTime,
    ) -> Result<(Key, Option<String>, Option<SystemTime>), AwsError> {
        let user = match who {
            Principal::User(u) => Some(u),
            Principal::Guest => None,
        };
        // An `exp` beyond what the clock can hold bounds nothing (entries still end within
        // MAX_ENTRY_LIFETIME).
        let token_expires = user.map(|u| {
            SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(u.expires_at))
                .unwrap_or(now + MAX_ENTRY_LIFETIME)
        });
        if token_expires.is_some_and(|t| t <= now) {
            return Err(AwsError::TokenRefused {
                service: "jwtgate",
                code: "ExpiredToken".into(),
                message: "the token expired".into(),
            });
        }
        let user_identity = |u: &UserToken<'_>| user_key("user", u);
        let (identity, role): (Arc<str>, Option<String>) = match (&self.settings.kind, user) {
            (SourceKind::Gateway(_), _) => ("gateway".into(), None),
            (SourceKind::IdentityPool(_), Some(u)) => (user_identity(u), None),
            (SourceKind::IdentityPool(p), None) if p.guests => ("guest".into(), None),
            (SourceKind::IdentityPool(_), None) => {
                return Err(forbidden(
                    "GuestsNotAllowed",
                    "this source has guests = false",
                ));
            }
            (SourceKind::WebIdentity(w), Some(u)) => {
                let preferred = u.preferred_role.filter(|r| w.roles.iter().any(|a| a == r));
                match preferred.map(str::to_owned).or_else(|| w.role_arn.clone()) {
                    Some(role) => (user_identity(u), Some(role)),
                    None => {
                        return Err(forbidden(
                            "RoleNotAllowed",
                            "cognito:preferred_role is missing or not in roles",
                        ));
                    }
                }
            }
            (SourceKind::WebIdentity(_), None) => {
                return Err(forbidden(
                    "TokenRequired",
                    "web_identity needs a user token",
                ));
            }
        };
        let key = Key {
            identity,
            role: role.as_deref().unwrap_or("").into(),
        };
        Ok((key, role, token_expires))
    }

    /// The entry to wait on: the cached one while usable, else a new one (atomically per key,
    /// so concurrent requests agree on one).
    fn slot(&self, key: &Key, token_expires: Option<SystemTime>, now: SystemTime) -> Arc<Slot> {
        if let Some(slot) = self.cache.get(key) {
            if slot.usable(now) {
                return slot;
            }
        }
        let entry = self
            .cache
            .entry(key.clone())
            .and_upsert_with(|current| match current {
                Some(e) if e.value().usable(now) => Arc::clone(e.value()),
                _ => {
                    let lifetime = token_expires
                        .and_then(|t| t.duration_since(now).ok())
                        .unwrap_or(MAX_ENTRY_LIFETIME)
                        .min(MAX_ENTRY_LIFETIME);
                    Arc::new(Slot {
                        cell: OnceCell::new(),
                        token_expires,
                        memory_deadline: Instant::now() + lifetime,
                    })
                }
            });
        entry.into_value()
    }

    /// When fetched credentials stop serving: their expiry minus the margin (at most half
    /// their remaining lifetime, so short-lived ones still serve), and the token's `exp`.
    fn fetched(&self, credentials: Credentials, token_expires: Option<SystemTime>) -> Fetched {
        let now = (self.clock)();
        let far = now + MAX_ENTRY_LIFETIME;
        let by_credentials = credentials.expires_at().map_or(far, |at| {
            let left = at.duration_since(now).unwrap_or(Duration::ZERO);
            at - self.settings.refresh_margin.min(left / 2)
        });
        let refresh_at = token_expires.map_or(by_credentials, |t| t.min(by_credentials));
        Fetched {
            credentials: Arc::new(credentials),
            refresh_at: refresh_at.min(far),
        }
    }

    /// The call to AWS (or the chain) behind a cache miss.
    async fn fetch(
        &self,
        who: &Principal<'_>,
        role: Option<&str>,
    ) -> Result<Credentials, AwsError> {
        match (&self.settings.kind, who) {
            (SourceKind::Gateway(g), _) => {
                gateway::fetch(&self.client, &self.imds_client, g, &self.env).await
            }
            (SourceKind::IdentityPool(p), who) => {
                let (id_key, login): (Arc<str>, Option<Login<'_>>) = match who {
                    Principal::User(u) => (
                        user_key("identity", u),
                        Some(Login {
                            issuer: u.issuer,
                            id_token: u.token,
                        }),
                    ),
                    Principal::Guest => ("guest".into(), None),
                };
                let cached = self.identity_ids.get(&id_key);
                let identity_id = match &cached {
                    Some(id) => Arc::clone(id),
                    None => self.get_id(p, &id_key, login).await?,
                };
                let result = identity_pool::credentials_for_identity(
                    &self.client,
                    &p.endpoint,
                    &identity_id,
                    login,
                )
                .await;
                match result {
                    // The remembered identity was deleted: ask for the current one, once.
                    Err(e) if cached.is_some() && identity_pool::identity_gone(&e) => {
                        self.identity_ids.invalidate(&id_key);
                        let identity_id = self.get_id(p, &id_key, login).await?;
                        identity_pool::credentials_for_identity(
                            &self.client,
                            &p.endpoint,
                            &identity_id,
                            login,
                        )
                        .await
                    }
                    other => other,
                }
            }
            (SourceKind::WebIdentity(w), Principal::User(u)) => {
                let session_name = sts::session_name(u.subject);
                sts::assume_role_with_web_identity(
                    &self.client,
                    &w.endpoint,
                    AssumeRole {
                        role_arn: role.unwrap_or_default(),
                        session_name: &session_name,
                        token: u.token,
                        duration: w.duration,
                    },
                )
                .await
            }
            (SourceKind::WebIdentity(_), Principal::Guest) => Err(forbidden(
                "TokenRequired",
                "web_identity needs a user token",
            )),
        }
    }

    /// `GetId`, remembered per user.
    async fn get_id(
        &self,
        pool: &super::settings::IdentityPool,
        id_key: &Arc<str>,
        login: Option<Login<'_>>,
    ) -> Result<Arc<str>, AwsError> {
        let id: Arc<str> =
            identity_pool::get_id(&self.client, &pool.endpoint, &pool.identity_pool_id, login)
                .await?
                .into();
        self.identity_ids
            .insert(Arc::clone(id_key), Arc::clone(&id));
        Ok(id)
    }
}

/// A user's key: the issuer's length first, so no `iss` and `sub` pair can spell another's.
fn user_key(kind: &str, u: &UserToken<'_>) -> Arc<str> {
    format!("{kind}:{}:{}{}", u.issuer.len(), u.issuer, u.subject).into()
}

/// jwtgate's own refusal.
fn forbidden(code: &str, message: &str) -> AwsError {
    AwsError::Forbidden {
        service: "jwtgate",
        code: code.into(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::Secret;
    use crate::aws::settings::{
        DEFAULT_REFRESH_MARGIN, DEFAULT_TIMEOUT, IdentityPool, WebIdentity,
    };

    fn source(kind: SourceKind) -> CredentialSource {
        CredentialSource::new(
            SourceSettings {
                name: "t".into(),
                kind,
                timeout: DEFAULT_TIMEOUT,
                refresh_margin: DEFAULT_REFRESH_MARGIN,
                cache_max_bytes: 1 << 20,
            },
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    fn web(role_arn: Option<&str>, roles: &[&str]) -> SourceKind {
        SourceKind::WebIdentity(WebIdentity {
            role_arn: role_arn.map(str::to_owned),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            endpoint: "http://127.0.0.1:1/".into(),
            duration: None,
        })
    }

    fn user<'a>(issuer: &'a str, subject: &'a str, role: Option<&'a str>) -> Principal<'a> {
        Principal::User(UserToken {
            token: "t",
            issuer,
            subject,
            expires_at: 4_000_000_000,
            preferred_role: role,
        })
    }

    #[test]
    fn user_token_from_verified_claims() {
        let claims = |v: serde_json::Value| {
            crate::token::Claims::from_payload(v.as_object().unwrap().clone()).unwrap()
        };
        let c = claims(serde_json::json!({
            "iss": "https://i", "sub": "alice", "exp": 2_000_000_000u64,
            "cognito:preferred_role": "arn:r/writers", "token_use": "id",
        }));
        let u = UserToken::from_claims("tok", &c).unwrap();
        assert_eq!(
            (u.issuer, u.subject, u.expires_at, u.preferred_role),
            ("https://i", "alice", 2_000_000_000, Some("arn:r/writers"))
        );
        let no_sub = claims(serde_json::json!({"iss": "https://i", "exp": 1}));
        assert!(UserToken::from_claims("tok", &no_sub).is_none());
        let far = claims(serde_json::json!({"iss": "https://i", "sub": "a", "exp": 1e18}));
        let far = UserToken::from_claims("tok", &far).unwrap();
        let s = source(web(Some("arn:r"), &[]));
        assert!(
            s.key(&Principal::User(far), SystemTime::now()).is_ok(),
            "no overflow"
        );
        let bad_exp = claims(serde_json::json!({"iss": "https://i", "sub": "a", "exp": -1}));
        assert!(UserToken::from_claims("tok", &bad_exp).is_none());
    }

    #[test]
    fn keys_separate_users_issuers_and_roles() {
        let s = source(web(Some("arn:r/default"), &["arn:r/writers"]));
        let now = SystemTime::now();
        let key = |p: Principal<'_>| s.key(&p, now).unwrap().0;
        let alice = key(user("https://a", "alice", None));
        assert_ne!(alice, key(user("https://a", "bob", None)));
        // The same `sub` from another issuer is another user.
        assert_ne!(alice, key(user("https://b", "alice", None)));
        // `sub` cannot forge another issuer's key with a line break.
        assert_ne!(
            key(user("https://a\nx", "y", None)),
            key(user("https://a", "x\ny", None))
        );
        let writer = key(user("https://a", "alice", Some("arn:r/writers")));
        assert_ne!(alice, writer);
        assert_eq!(&*writer.role, "arn:r/writers");
        // A role outside the list is the default role, the same entry.
        assert_eq!(alice, key(user("https://a", "alice", Some("arn:r/admins"))));
    }

    #[test]
    fn guests_and_expired_tokens() {
        let now = SystemTime::now();
        let pool = |guests| {
            SourceKind::IdentityPool(IdentityPool {
                identity_pool_id: "us-east-1:x".into(),
                region: "us-east-1".into(),
                endpoint: "http://127.0.0.1:1/".into(),
                guests,
            })
        };
        let closed = source(pool(false));
        assert_eq!(
            closed.key(&Principal::Guest, now).unwrap_err().status(),
            http::StatusCode::FORBIDDEN
        );
        let open = source(pool(true));
        assert_eq!(
            &*open.key(&Principal::Guest, now).unwrap().0.identity,
            "guest"
        );
        let expired = Principal::User(UserToken {
            token: "t",
            issuer: "i",
            subject: "s",
            expires_at: 1,
            preferred_role: None,
        });
        assert_eq!(
            open.key(&expired, now).unwrap_err().status(),
            http::StatusCode::UNAUTHORIZED
        );
        let strict = source(web(None, &["arn:r/writers"]));
        assert_eq!(
            strict.key(&user("i", "s", None), now).unwrap_err().status(),
            http::StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn refresh_time_is_the_earliest_bound() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = source(web(Some("arn:r"), &[])).with_clock(Arc::new(move || now));
        let creds = |secs| {
            Credentials::new(
                "A",
                Secret::new("s"),
                None,
                Some(now + Duration::from_secs(secs)),
            )
        };
        // An hour of credentials: refreshed 5 minutes before.
        assert_eq!(
            s.fetched(creds(3600), None).refresh_at,
            now + Duration::from_secs(3300)
        );
        // 90 seconds: half-way, not immediately.
        assert_eq!(
            s.fetched(creds(90), None).refresh_at,
            now + Duration::from_secs(45)
        );
        // The token ends first.
        let token = now + Duration::from_secs(600);
        assert_eq!(s.fetched(creds(3600), Some(token)).refresh_at, token);
        // Long-term keys: at most the longest entry lifetime.
        let forever = Credentials::new("A", Secret::new("s"), None, None);
        assert_eq!(
            s.fetched(forever, None).refresh_at,
            now + MAX_ENTRY_LIFETIME
        );
    }
}

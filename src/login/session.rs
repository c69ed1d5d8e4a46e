//! Sessions and where they live: in the encrypted, sharded cookie itself (stateless, the
//! default) or in Redis (the cookie holds only a random id; sessions of any size; logout
//! revokes everywhere). Either way the session is sealed with the cookie keys, and its expiry
//! is enforced from inside the sealed payload, never by the cookie's Max-Age alone.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::cookies::{self, CookieAttrs, CookieKeys};

/// Timeout of one Redis command (and of connecting).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A signed-in browser session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Random id (Redis key; refresh single-flight key).
    pub id: String,
    /// The user-info (or ID token) `sub`.
    pub sub: String,
    /// ID token claims overlaid with user-info claims: what routes check and headers carry.
    pub claims: Map<String, Value>,
    /// User-info claims, the payload of `x-amzn-oidc-data`.
    pub user_info: Map<String, Value>,
    /// The access token (`x-amzn-oidc-accesstoken`).
    pub access_token: String,
    /// The refresh token, when the provider issued one.
    pub refresh_token: Option<String>,
    /// The ID token, kept only when the provider's routes sign AWS requests with it
    /// (`LoginSettings::keep_id_token`): identity pools and STS take it, not the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// When the access token expires (Unix seconds).
    pub access_expires_at: i64,
    /// When the session ends, whatever the refreshes (Unix seconds).
    pub expires_at: i64,
}

/// Why the session store failed (a 503, never a panic).
#[derive(Debug, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct StoreError(pub String);

/// Where sessions live.
pub enum Store {
    /// Sealed in the cookie.
    Cookie,
    /// Sealed in Redis under a random id carried by the cookie.
    Redis(Arc<RedisStore>),
}

/// A lazily connected, self-reconnecting Redis client.
pub struct RedisStore {
    client: redis::Client,
    manager: OnceCell<redis::aio::ConnectionManager>,
}

impl RedisStore {
    /// A store for `url` (not connected until first use).
    pub fn new(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        Ok(RedisStore {
            client,
            manager: OnceCell::new(),
        })
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, StoreError> {
        self.manager
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                self.client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(|e| StoreError(e.to_string()))
            })
            .await
            .cloned()
    }

    /// `jwtgate:session:DIGEST` for the `default` provider (as before there were several),
    /// `jwtgate:session:NAME:DIGEST` for the others: one provider never reads another's keys.
    fn key(namespace: &str, id: &str) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
        let digest = URL_SAFE_NO_PAD.encode(digest.as_ref());
        if namespace.is_empty() {
            format!("jwtgate:session:{digest}")
        } else {
            format!("jwtgate:session:{namespace}:{digest}")
        }
    }

    async fn get(&self, namespace: &str, id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.connection().await?;
        redis::cmd("GET")
            .arg(Self::key(namespace, id))
            .query_async(&mut conn)
            .await
            .map_err(|e| StoreError(e.to_string()))
    }

    async fn put(
        &self,
        namespace: &str,
        id: &str,
        value: &str,
        ttl_secs: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        redis::cmd("SET")
            .arg(Self::key(namespace, id))
            .arg(value)
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| StoreError(e.to_string()))
    }

    async fn delete(&self, namespace: &str, id: &str) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        redis::cmd("DEL")
            .arg(Self::key(namespace, id))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| StoreError(e.to_string()))
    }
}

/// Reads and writes sessions for one cookie name (one sign-in provider).
pub struct Sessions {
    /// Base cookie name (shards are `NAME-0`, `NAME-1`, …).
    pub cookie_name: String,
    /// What a sealed session is bound to (AES-GCM associated data): the cookie name, and the
    /// provider's name for all but `default`, so no provider opens another's session.
    pub purpose: String,
    /// Redis key namespace: empty for `default`, else the provider's name.
    pub namespace: String,
    /// Cookie sealing keys.
    pub keys: CookieKeys,
    /// Cookie attributes.
    pub attrs: CookieAttrs,
    /// Where sessions live.
    pub store: Store,
}

impl Sessions {
    /// The request's session, if it carries a valid, unexpired one.
    pub async fn load(&self, headers: &HeaderMap, now: i64) -> Result<Option<Session>, StoreError> {
        let Some(value) = cookies::read_sharded(headers, &self.cookie_name) else {
            return Ok(None);
        };
        let sealed = match &self.store {
            Store::Cookie => value,
            Store::Redis(redis) => {
                if value.len() > 128 {
                    return Ok(None);
                }
                match redis.get(&self.namespace, &value).await? {
                    Some(sealed) => sealed,
                    None => return Ok(None),
                }
            }
        };
        let session = self
            .keys
            .open(&self.purpose, &sealed)
            .and_then(|plain| serde_json::from_slice::<Session>(&plain).ok());
        Ok(session.filter(|s| s.expires_at > now))
    }

    /// Stores `session`; returns the `Set-Cookie` values to send.
    pub async fn save(
        &self,
        session: &Session,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let json = serde_json::to_vec(session).map_err(|e| StoreError(e.to_string()))?;
        let sealed = self
            .keys
            .seal(&self.purpose, &json)
            .ok_or_else(|| StoreError("cannot seal the session".into()))?;
        let ttl = session.expires_at - now;
        let sent = cookies::shards_sent(headers, &self.cookie_name);
        let value = match &self.store {
            Store::Cookie => sealed,
            Store::Redis(redis) => {
                redis
                    .put(&self.namespace, &session.id, &sealed, ttl)
                    .await?;
                session.id.clone()
            }
        };
        self.attrs
            .set_sharded(&self.cookie_name, &value, ttl, &sent)
            .ok_or_else(|| {
                StoreError("session too large for cookies; use session_store = \"redis\"".into())
            })
    }

    /// Forgets the request's session (in Redis too); returns the expiring `Set-Cookie` values.
    pub async fn delete(
        &self,
        headers: &HeaderMap,
        session: Option<&Session>,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        if let (Store::Redis(redis), Some(session)) = (&self.store, session) {
            redis.delete(&self.namespace, &session.id).await?;
        }
        Ok(self.attrs.expire_sharded(
            &self.cookie_name,
            &cookies::shards_sent(headers, &self.cookie_name),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_keys_are_namespaced_per_provider() {
        let default = RedisStore::key("", "id1");
        assert!(default.starts_with("jwtgate:session:"), "{default}");
        assert_eq!(
            default.matches(':').count(),
            2,
            "as before there were several"
        );
        let staff = RedisStore::key("staff", "id1");
        assert!(staff.starts_with("jwtgate:session:staff:"), "{staff}");
        assert_ne!(RedisStore::key("other", "id1"), staff);
    }
}

//! Encrypted cookies: AES-256-GCM sealing with key rotation, sharding into `NAME-0`, `NAME-1`, …
//! (as ALB does, at most 4,000 value bytes each), reading them back, and removing jwtgate's own
//! cookies from what the upstream sees.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::header::{COOKIE, HeaderMap, HeaderValue};

/// Value bytes per cookie shard: with the name and attributes a cookie stays under the 4,096
/// bytes browsers accept.
pub const SHARD_BYTES: usize = 4000;
/// Most shards read or written (an 11 KB ALB session needs 3; this allows 64 KB).
pub const MAX_SHARDS: usize = 16;

/// The keys that seal cookies: the first seals, every one opens (rotation).
pub struct CookieKeys {
    keys: Vec<LessSafeKey>,
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CookieKeys({} keys)", self.keys.len())
    }
}

/// Why keys could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cookie key {index}: {reason}")]
pub struct KeyFormatError {
    index: usize,
    reason: &'static str,
}

impl CookieKeys {
    /// Keys from raw 32-byte secrets, newest first.
    pub fn new(secrets: &[[u8; 32]]) -> Self {
        let keys = secrets
            .iter()
            .filter_map(|s| UnboundKey::new(&AES_256_GCM, s).ok().map(LessSafeKey::new))
            .collect();
        CookieKeys { keys }
    }

    /// Parses base64 (standard or url-safe) 32-byte keys separated by commas, spaces or lines.
    pub fn parse_list(text: &str) -> Result<Vec<[u8; 32]>, KeyFormatError> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(index, s)| {
                let bytes = STANDARD
                    .decode(s)
                    .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
                    .map_err(|_| KeyFormatError {
                        index,
                        reason: "not base64",
                    })?;
                <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyFormatError {
                    index,
                    reason: "must be 32 bytes (openssl rand -base64 32)",
                })
            })
            .collect()
    }

    /// A fresh random secret.
    pub fn random_secret() -> [u8; 32] {
        let mut secret = [0u8; 32];
        // The system RNG failing is not recoverable; a zero key would be worse.
        SystemRandom::new()
            .fill(&mut secret)
            .expect("system random number generator"); // ok: start-up only
        secret
    }

    /// Encrypts `plaintext`, bound to `purpose` (the cookie name), as base64url(nonce ‖ sealed).
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Option<String> {
        let key = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut buffer = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(purpose.as_bytes()),
            &mut buffer,
        )
        .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts with whichever key sealed it; `None` when tampered, truncated or foreign.
    pub fn open(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.keys.iter().find_map(|key| {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut buffer = ciphertext.to_vec();
            key.open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buffer)
                .ok()
                .map(|plain| plain.to_vec())
        })
    }
}

/// Every `name=value` pair of the request's `Cookie` headers.
pub fn request_cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// One cookie's value.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    request_cookies(headers)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The shard index of `cookie_name` if it is `NAME-<n>`.
fn shard_index(base: &str, cookie_name: &str) -> Option<usize> {
    cookie_name
        .strip_prefix(base)?
        .strip_prefix('-')?
        .parse::<usize>()
        .ok()
        .filter(|i| *i < MAX_SHARDS)
}

/// Reassembles `NAME-0`, `NAME-1`, … (contiguous from 0); `None` when `NAME-0` is absent.
pub fn read_sharded(headers: &HeaderMap, base: &str) -> Option<String> {
    let mut shards: Vec<Option<&str>> = vec![None; MAX_SHARDS];
    for (name, value) in request_cookies(headers) {
        if let Some(i) = shard_index(base, name) {
            shards[i] = Some(value);
        }
    }
    let mut out = String::new();
    for shard in shards.iter().map_while(|s| *s) {
        out.push_str(shard);
    }
    (!out.is_empty()).then_some(out)
}

/// Indexes of the shards the client sent (to expire the ones a shorter value no longer uses).
pub fn shards_sent(headers: &HeaderMap, base: &str) -> Vec<usize> {
    let mut found: Vec<usize> = request_cookies(headers)
        .filter_map(|(n, _)| shard_index(base, n))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Attributes of every cookie jwtgate sets.
#[derive(Debug, Clone)]
pub struct CookieAttrs {
    /// `Secure`.
    pub secure: bool,
}

impl CookieAttrs {
    /// `name=value; Path=/; Max-Age=…; HttpOnly; SameSite=Lax[; Secure]`.
    pub fn set(&self, name: &str, value: &str, max_age_secs: i64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::try_from(format!(
            "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            max_age_secs.max(0)
        ))
        .ok()
    }

    /// Expires `name` now.
    pub fn expire(&self, name: &str) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::try_from(format!(
            "{name}=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax{secure}"
        ))
        .ok()
    }

    /// `Set-Cookie` values storing `value` in shards of `base`, expiring shards the client has
    /// beyond the new count. `None` when the value needs more than [`MAX_SHARDS`].
    pub fn set_sharded(
        &self,
        base: &str,
        value: &str,
        max_age_secs: i64,
        sent: &[usize],
    ) -> Option<Vec<HeaderValue>> {
        let chunks: Vec<&str> = value
            .as_bytes()
            .chunks(SHARD_BYTES)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        if chunks.len() > MAX_SHARDS {
            return None;
        }
        let mut out = Vec::with_capacity(chunks.len() + sent.len());
        for (i, chunk) in chunks.iter().enumerate() {
            out.push(self.set(&format!("{base}-{i}"), chunk, max_age_secs)?);
        }
        for i in sent.iter().filter(|i| **i >= chunks.len()) {
            out.push(self.expire(&format!("{base}-{i}"))?);
        }
        Some(out)
    }

    /// Expires every shard the client sent (and `-0`, in case it sent none).
    pub fn expire_sharded(&self, base: &str, sent: &[usize]) -> Vec<HeaderValue> {
        let mut indexes = sent.to_vec();
        if !indexes.contains(&0) {
            indexes.insert(0, 0);
        }
        indexes
            .iter()
            .filter_map(|i| self.expire(&format!("{base}-{i}")))
            .collect()
    }
}

/// Removes jwtgate's own cookies (session shards and `extra` names) from the `Cookie` headers,
/// keeping every other cookie for the upstream.
pub fn strip_own(headers: &mut HeaderMap, session_base: &str, extra: &[&str]) {
    strip_all(headers, &[session_base], extra);
}

/// [`strip_own`] for several session cookies (one per sign-in provider) at once.
pub fn strip_all(headers: &mut HeaderMap, session_bases: &[&str], extra: &[&str]) {
    let values: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    if values.is_empty() {
        return;
    }
    headers.remove(COOKIE);
    let kept: Vec<String> = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !name.is_empty()
                && session_bases
                    .iter()
                    .all(|base| shard_index(base, name).is_none())
                && !extra.contains(&name)
        })
        .map(str::to_owned)
        .collect();
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::try_from(kept.join("; ")) {
            headers.insert(COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seeds: &[u8]) -> CookieKeys {
        CookieKeys::new(&seeds.iter().map(|s| [*s; 32]).collect::<Vec<_>>())
    }

    #[test]
    fn sealed_values_open_only_unmodified_with_a_known_key_and_purpose() {
        let k = keys(&[1]);
        let sealed = k.seal("session", b"hello").unwrap();
        assert_eq!(k.open("session", &sealed).unwrap(), b"hello");
        assert!(k.open("state", &sealed).is_none(), "bound to its purpose");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        bytes[20] ^= 1;
        assert!(
            k.open("session", &URL_SAFE_NO_PAD.encode(&bytes)).is_none(),
            "bit flip"
        );
        assert!(
            k.open("session", &sealed[..sealed.len() - 4]).is_none(),
            "truncated"
        );
        assert!(keys(&[2]).open("session", &sealed).is_none(), "unknown key");
        // Rotation: new key first, old key still opens old cookies; new cookies use the new key.
        let rotated = keys(&[2, 1]);
        assert_eq!(rotated.open("session", &sealed).unwrap(), b"hello");
        let fresh = rotated.seal("session", b"x").unwrap();
        assert!(keys(&[1]).open("session", &fresh).is_none());
        assert!(keys(&[2]).open("session", &fresh).is_some());
    }

    #[test]
    fn key_lists_parse() {
        let a = STANDARD.encode([7u8; 32]);
        let b = URL_SAFE_NO_PAD.encode([8u8; 32]);
        let parsed = CookieKeys::parse_list(&format!("{a}, {b}\n")).unwrap();
        assert_eq!(parsed, vec![[7u8; 32], [8u8; 32]]);
        assert!(CookieKeys::parse_list("c2hvcnQ=").is_err());
    }

    #[test]
    fn shards_round_trip_and_extra_shards_expire() {
        let attrs = CookieAttrs { secure: true };
        let value = "v".repeat(SHARD_BYTES * 2 + 10);
        let set = attrs.set_sharded("S", &value, 60, &[0, 1, 2, 3]).unwrap();
        assert_eq!(set.len(), 4, "three shards and one expiry");
        assert!(set[0].to_str().unwrap().starts_with("S-0="));
        assert!(
            set[0]
                .to_str()
                .unwrap()
                .ends_with("HttpOnly; SameSite=Lax; Secure")
        );
        assert!(
            set[3]
                .to_str()
                .unwrap()
                .starts_with("S-3=; Path=/; Max-Age=0")
        );
        let mut headers = HeaderMap::new();
        let cookie_line: Vec<String> = set[..3]
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect();
        headers.insert(
            COOKIE,
            HeaderValue::try_from(format!("other=1; {}", cookie_line.join("; "))).unwrap(),
        );
        assert_eq!(read_sharded(&headers, "S").unwrap(), value);
        assert_eq!(shards_sent(&headers, "S"), vec![0, 1, 2]);
        strip_own(&mut headers, "S", &[]);
        assert_eq!(headers[COOKIE], "other=1");
    }

    #[test]
    fn a_missing_first_shard_means_no_value() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("S-1=abc; S-2=def"));
        assert!(read_sharded(&headers, "S").is_none());
        headers.insert(COOKIE, HeaderValue::from_static("S-0=abc; S-2=def"));
        assert_eq!(
            read_sharded(&headers, "S").unwrap(),
            "abc",
            "stops at the gap"
        );
    }
}

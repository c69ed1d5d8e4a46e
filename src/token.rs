//! Bearer tokens: extraction, signature, `iss`, `aud`/`client_id`, `token_use`, `exp`/`nbf`/`iat`,
//! and the verified-token cache.
//!
//! Validation follows API Gateway's JWT authorizer: `iss` must equal a configured issuer exactly,
//! `aud` must match one configured audience and, only when `aud` is absent, `client_id` is checked
//! instead (this lets Cognito access tokens through). The token's `alg` never chooses on its own:
//! it must be on the issuer's allow-list and fit the key its `kid` names.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::jwks::{KeyError, KeyStore};
use crate::metrics::{Metrics, Reason};

/// Longest token accepted, bytes. Cognito tokens are 1–2 KB; large custom claims stay well below.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest a verified token stays cached, whatever its `exp`.
const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Cognito's two token kinds (`token_use` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// `token_use = "access"`.
    Access,
    /// `token_use = "id"`.
    Id,
}

impl TokenUse {
    /// Parses the config and claim spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "access" => Some(TokenUse::Access),
            "id" => Some(TokenUse::Id),
            _ => None,
        }
    }

    /// The claim spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Access => "access",
            TokenUse::Id => "id",
        }
    }
}

/// Why a token was refused. Every variant is a 401 `invalid_token`, except
/// [`TokenError::KeysUnavailable`] (503: the token may well be good).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWS compact token (or too large, or not ASCII).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is `none`, HMAC, unknown or not on the issuer's allow-list.
    #[error("signing algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The key named by `kid` cannot verify the token's `alg`.
    #[error("algorithm does not match the key")]
    AlgorithmMismatch,
    /// A `crit` header: jwtgate understands no JWS extensions.
    #[error("unsupported critical header")]
    CriticalHeader,
    /// `iss` is not a configured issuer (or not accepted on this route).
    #[error("untrusted issuer")]
    UnknownIssuer,
    /// `kid` is not in the issuer's key set.
    #[error("unknown signing key")]
    UnknownKid,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// `exp` is missing.
    #[error("missing exp claim")]
    MissingExp,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` lies in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// Neither `aud` nor (when `aud` is absent) `client_id` is an accepted audience.
    #[error("audience not allowed")]
    WrongAudience,
    /// `token_use` is not what the issuer or route requires.
    #[error("wrong token_use")]
    WrongTokenUse,
    /// The issuer's keys have never been fetched.
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

impl TokenError {
    /// The metric label (`jwtgate_auth_failures_total{reason}`).
    pub fn reason(self) -> Reason {
        match self {
            TokenError::Malformed(_) | TokenError::CriticalHeader | TokenError::MissingExp => {
                Reason::Malformed
            }
            TokenError::AlgorithmNotAllowed | TokenError::AlgorithmMismatch => Reason::BadAlgorithm,
            TokenError::UnknownIssuer => Reason::WrongIssuer,
            TokenError::UnknownKid => Reason::UnknownKid,
            TokenError::BadSignature => Reason::BadSignature,
            TokenError::Expired => Reason::Expired,
            TokenError::NotYetValid => Reason::NotYetValid,
            TokenError::WrongAudience => Reason::WrongAudience,
            TokenError::WrongTokenUse => Reason::WrongTokenUse,
            TokenError::KeysUnavailable => Reason::KeysUnavailable,
        }
    }
}

/// The claims jwtgate reads, extracted once at verification, plus the whole claim set.
#[derive(Debug)]
pub struct Claims {
    /// `iss` (a verified token's is its issuer's configured `issuer`, shared, not a copy).
    pub iss: Arc<str>,
    /// `exp`, seconds since the epoch.
    pub exp: i64,
    /// `nbf`.
    pub nbf: Option<i64>,
    /// `iat`.
    pub iat: Option<i64>,
    /// `aud`, as a list (a string becomes one element).
    pub aud: Vec<String>,
    /// `client_id` (Cognito access tokens).
    pub client_id: Option<String>,
    /// `token_use` (Cognito).
    pub token_use: Option<String>,
    /// Scopes of `scope` (a string) or `scp` (a string or an array). A string is split on
    /// U+0020 only (RFC 6749 §3.3); an array element is one scope.
    pub scopes: Vec<String>,
    /// `cognito:groups`.
    pub groups: Vec<String>,
    /// Every claim (see [`Claims::all`]).
    all: OnceLock<Map<String, Value>>,
    /// The token's payload as sent, base64url: forwarded as the all-claims header without
    /// encoding it again, and what `all` is read from on first use (empty when `all` was given).
    payload_b64: Box<str>,
}

impl Claims {
    /// Reads a verified payload. Type errors in the claims jwtgate checks are refusals.
    pub fn from_payload(all: Map<String, Value>) -> Result<Self, TokenError> {
        let mut seen = Scanned::default();
        for (name, value) in &all {
            if let Some(slot) = seen.slot(name) {
                *slot = Some(Seen::from_value(value));
            }
        }
        let mut claims = seen.claims(|iss| Ok(iss.into()))?;
        claims.all = OnceLock::from(all);
        Ok(claims)
    }

    /// Reads a verified payload from its JSON text in one pass that copies only the claims
    /// jwtgate checks: the map of every claim is built later, and only when something asks
    /// for it (claim headers, claim matchers, policies), which a plain scope check never does.
    /// The text is checked as strictly as parsing it into a map would (UTF-8, number range,
    /// nesting); a duplicated name counts once, its last value, as in the map. `json` is
    /// `payload_b64` decoded; `issuer` gives the `iss` to keep once every type is judged (or
    /// refuses it).
    fn from_json(
        json: &[u8],
        payload_b64: &str,
        issuer: impl FnOnce(&str) -> Result<Arc<str>, TokenError>,
    ) -> Result<Self, TokenError> {
        let seen: Scanned<'_> = serde_json::from_slice(json)
            .map_err(|_| TokenError::Malformed("payload is not a JSON object"))?;
        let mut claims = seen.claims(issuer)?;
        claims.payload_b64 = payload_b64.into();
        Ok(claims)
    }

    /// Every claim, for header injection, claim matchers and policies; parsed from the payload
    /// the first time it is asked for (then kept with the cached token).
    pub fn all(&self) -> &Map<String, Value> {
        // `from_json` accepted this text under the rules of a map parse, so this cannot fail;
        // an empty map would only hide claims, never add one.
        self.all.get_or_init(|| {
            URL_SAFE_NO_PAD
                .decode(&*self.payload_b64)
                .ok()
                .and_then(|json| serde_json::from_slice(&json).ok())
                .unwrap_or_default()
        })
    }
}

/// The checked claims of a payload, as found, before their types are judged.
#[derive(Default)]
struct Scanned<'a> {
    iss: Option<Seen<'a>>,
    exp: Option<Seen<'a>>,
    nbf: Option<Seen<'a>>,
    iat: Option<Seen<'a>>,
    aud: Option<Seen<'a>>,
    client_id: Option<Seen<'a>>,
    token_use: Option<Seen<'a>>,
    scope: Option<Seen<'a>>,
    scp: Option<Seen<'a>>,
    groups: Option<Seen<'a>>,
}

/// A claim value, reduced to what the checks distinguish.
enum Seen<'a> {
    Null,
    Number(serde_json::Number),
    Str(Cow<'a, str>),
    /// An array: each element's text if it is a string.
    List(Vec<Option<Cow<'a, str>>>),
    /// `true`, `false` or an object.
    Other,
}

impl<'a> Seen<'a> {
    fn from_value(v: &'a Value) -> Self {
        match v {
            Value::Null => Seen::Null,
            Value::Number(n) => Seen::Number(n.clone()),
            Value::String(s) => Seen::Str(Cow::Borrowed(s)),
            Value::Array(items) => Seen::List(
                items
                    .iter()
                    .map(|v| v.as_str().map(Cow::Borrowed))
                    .collect(),
            ),
            Value::Bool(_) | Value::Object(_) => Seen::Other,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Seen::Str(s) => Some(s),
            _ => None,
        }
    }

    /// NumericDate: integer seconds, or a float (floored).
    fn numeric_date(&self) -> Option<i64> {
        match self {
            Seen::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.floor() as i64)),
            _ => None,
        }
    }
}

impl<'a> Scanned<'a> {
    fn slot(&mut self, name: &str) -> Option<&mut Option<Seen<'a>>> {
        Some(match name {
            "iss" => &mut self.iss,
            "exp" => &mut self.exp,
            "nbf" => &mut self.nbf,
            "iat" => &mut self.iat,
            "aud" => &mut self.aud,
            "client_id" => &mut self.client_id,
            "token_use" => &mut self.token_use,
            "scope" => &mut self.scope,
            "scp" => &mut self.scp,
            "cognito:groups" => &mut self.groups,
            _ => return None,
        })
    }

    /// Judges the types and copies the values out (`all` and `payload_b64` left empty);
    /// `issuer` turns the `iss` text into the one kept, last, so a type error is reported
    /// before an unknown issuer.
    fn claims(
        self,
        issuer: impl FnOnce(&str) -> Result<Arc<str>, TokenError>,
    ) -> Result<Claims, TokenError> {
        let Some(Seen::Str(iss)) = &self.iss else {
            return Err(TokenError::Malformed("missing iss claim"));
        };
        let exp = match &self.exp {
            None | Some(Seen::Null) => return Err(TokenError::MissingExp),
            Some(v) => v
                .numeric_date()
                .ok_or(TokenError::Malformed("exp is not a number"))?,
        };
        let optional_date = |v: &Option<Seen<'_>>, why: &'static str| match v {
            None | Some(Seen::Null) => Ok(None),
            Some(v) => v.numeric_date().map(Some).ok_or(TokenError::Malformed(why)),
        };
        let nbf = optional_date(&self.nbf, "nbf is not a number")?;
        let iat = optional_date(&self.iat, "iat is not a number")?;
        let aud = match self.aud {
            None | Some(Seen::Null) => Vec::new(),
            Some(Seen::Str(s)) => vec![s.into_owned()],
            Some(Seen::List(items)) => items
                .into_iter()
                .map(|v| v.map(Cow::into_owned))
                .collect::<Option<_>>()
                .ok_or(TokenError::Malformed("aud is not a string list"))?,
            Some(_) => return Err(TokenError::Malformed("aud is not a string list")),
        };
        let string = |v: &Option<Seen<'_>>| v.as_ref().and_then(Seen::as_str).map(str::to_owned);
        let mut scopes: Vec<String> = Vec::new();
        for v in [&self.scope, &self.scp] {
            match v {
                // RFC 6749 §3.3: scope-tokens are separated by %x20 only. A tab or any other
                // whitespace is part of a (strange) scope, never a separator.
                Some(Seen::Str(s)) => scopes.extend(
                    s.split(' ')
                        .filter(|word| !word.is_empty())
                        .map(str::to_owned),
                ),
                Some(Seen::List(items)) => {
                    scopes.extend(items.iter().flatten().map(|s| s.clone().into_owned()));
                }
                _ => {}
            }
        }
        let groups = match self.groups {
            Some(Seen::List(items)) => items.into_iter().flatten().map(Cow::into_owned).collect(),
            Some(Seen::Str(s)) => vec![s.into_owned()],
            _ => Vec::new(),
        };
        Ok(Claims {
            iss: issuer(iss)?,
            exp,
            nbf,
            iat,
            aud,
            client_id: string(&self.client_id),
            token_use: string(&self.token_use),
            scopes,
            groups,
            all: OnceLock::new(),
            payload_b64: Box::default(),
        })
    }
}

impl<'de> Deserialize<'de> for Scanned<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Scanned<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scanned<'de>, A::Error> {
                let mut seen = Scanned::default();
                while let Some(name) = map.next_key::<Name<'de>>()? {
                    match seen.slot(&name.0) {
                        // The last of duplicated names wins, as in a map.
                        Some(slot) => *slot = Some(map.next_value()?),
                        None => map.next_value::<Checked>().map(drop)?,
                    }
                }
                Ok(seen)
            }
        }
        d.deserialize_map(Object)
    }
}

/// A member name, borrowed from the text when it has no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Text)
    }
}

impl<'de> Deserialize<'de> for Seen<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SeenVisitor)
    }
}

/// Reads any JSON value as [`serde_json::Value`] would accept it, keeping what [`Seen`] holds.
struct SeenVisitor;

impl<'de> Visitor<'de> for SeenVisitor {
    type Value = Seen<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Seen<'de>, E> {
        Ok(Seen::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Seen<'de>, E> {
        Ok(Seen::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Seen<'de>, E> {
        Ok(Seen::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Seen<'de>, E> {
        // As `Value`: a float that is not finite becomes null.
        Ok(serde_json::Number::from_f64(v).map_or(Seen::Null, Seen::Number))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Seen<'de>, E> {
        Ok(Seen::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Seen<'de>, E> {
        Ok(Seen::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Seen<'de>, E> {
        Ok(Seen::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Seen<'de>, E> {
        Ok(Seen::Null)
    }
    fn visit_none<E>(self) -> Result<Seen<'de>, E> {
        Ok(Seen::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Seen<'de>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Seen<'de>>()? {
            items.push(match item {
                Seen::Str(s) => Some(s),
                _ => None,
            });
        }
        Ok(Seen::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Seen<'de>, A::Error> {
        Checked::drain(map)?;
        Ok(Seen::Other)
    }
}

/// A value jwtgate does not read: checked as [`serde_json::Value`] would check it (strings
/// UTF-8, numbers in range, nesting bounded), kept nowhere.
struct Checked;

impl Checked {
    fn drain<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Checked;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_unit<E>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_none<E>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Checked, A::Error> {
                Checked::drain(map)?;
                Ok(Checked)
            }
        }
        d.deserialize_any(Any)
    }
}

/// A token whose signature has been checked.
#[derive(Debug)]
pub struct VerifiedToken {
    /// Its claims.
    pub claims: Claims,
    alg: Algorithm,
    kid: Option<Box<str>>,
    /// Memory held, roughly, for the cache weigher.
    weight: u32,
}

impl VerifiedToken {
    /// The base64url payload as sent (forwarded as the all-claims header without re-encoding).
    pub fn payload_b64(&self) -> &str {
        &self.claims.payload_b64
    }
}

/// What a token from one issuer must satisfy.
#[derive(Debug)]
pub struct IssuerPolicy {
    /// Label in metrics, logs and route `issuers` lists.
    pub name: Arc<str>,
    /// Exact `iss`.
    pub issuer: Arc<str>,
    /// Accepted audiences (`aud`, or `client_id` when `aud` is absent).
    pub audiences: Vec<String>,
    /// Skip the audience check entirely (explicit opt-out).
    pub skip_audience_check: bool,
    /// Required `token_use`, if any.
    pub token_use: Option<TokenUse>,
    /// Allowed signing algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Tolerated clock skew, seconds.
    pub leeway_secs: i64,
}

/// The configured issuers, by exact `iss`, each with its key store.
#[derive(Default)]
pub struct Issuers {
    by_iss: HashMap<Arc<str>, (Arc<IssuerPolicy>, Arc<KeyStore>)>,
}

impl Issuers {
    /// Pairs policies with their key stores.
    pub fn new(entries: impl IntoIterator<Item = (Arc<IssuerPolicy>, Arc<KeyStore>)>) -> Self {
        Issuers {
            by_iss: entries
                .into_iter()
                .map(|(p, k)| (Arc::clone(&p.issuer), (p, k)))
                .collect(),
        }
    }

    /// Each issuer's name and whether its keys are loaded.
    pub fn readiness(&self) -> Vec<(Arc<str>, bool)> {
        let mut out: Vec<_> = self
            .by_iss
            .values()
            .map(|(p, k)| (Arc::clone(&p.name), k.is_ready()))
            .collect();
        out.sort();
        out
    }

    /// Whether every issuer has keys.
    pub fn all_ready(&self) -> bool {
        self.by_iss.values().all(|(_, keys)| keys.is_ready())
    }

    fn get(&self, iss: &str) -> Option<&(Arc<IssuerPolicy>, Arc<KeyStore>)> {
        self.by_iss.get(iss)
    }
}

/// The `Authorization` token, with or without the `Bearer ` prefix (as API Gateway accepts it).
/// `Ok(None)` when there is none, or when another scheme (e.g. `Basic`) is used.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, TokenError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TokenError::Malformed("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| TokenError::Malformed("Authorization header is not ASCII"))?
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim_start(),
        Some(_) => return Ok(None),
        None if value.is_empty() => return Ok(None),
        None if value.eq_ignore_ascii_case("bearer") => return Ok(None),
        None => value,
    };
    Ok(Some(token))
}

/// Verified tokens by SHA-256 of the token bytes; bounded in bytes; an entry never outlives
/// its token's `exp` (plus leeway). A token is admitted on its second verification: a stream of
/// tokens that are each used once (the load an attacker with many valid tokens, or a client
/// minting a token per call, produces) costs no cache insert and evicts nothing useful.
pub struct TokenCache {
    cache: Option<moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>>,
    /// Fingerprints of tokens verified once, in slots chosen by their key; a collision only
    /// delays admission.
    seen_once: Box<[AtomicU64]>,
}

/// Slots of the verified-once filter (8 bytes each: 512 KiB).
const SEEN_ONCE_SLOTS: usize = 1 << 16;

struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<VerifiedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<VerifiedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = value.claims.exp.saturating_sub(unix_now()).max(0);
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)).min(MAX_CACHE_TTL))
    }
}

impl TokenCache {
    /// A cache holding at most about `max_bytes`; 0 disables it.
    pub fn new(max_bytes: u64) -> Self {
        let cache = (max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_k: &[u8; 32], v: &Arc<VerifiedToken>| v.weight)
                .expire_after(UntilExpiry)
                .build()
        });
        let slots = if cache.is_some() { SEEN_ONCE_SLOTS } else { 0 };
        TokenCache {
            cache,
            seen_once: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether the token with this key was verified before (and notes it if not).
    fn seen_before(&self, key: &[u8; 32]) -> bool {
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&key[i..i + 8]);
            u64::from_le_bytes(bytes)
        };
        let Some(slot) = self
            .seen_once
            .get(usize::try_from(word(0)).unwrap_or(0) % SEEN_ONCE_SLOTS)
        else {
            return false;
        };
        // Never 0, the empty slot.
        let fingerprint = word(8) | 1;
        slot.swap(fingerprint, Ordering::Relaxed) == fingerprint
    }

    /// Entries held (for the gauge; called at scrape time).
    pub fn entry_count(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            // Settle moka's pending inserts and evictions so the count is current.
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Verifies `token` against the configured issuers: cached verification when the same token was
/// seen before (and its key is still published), a full check otherwise. `now` is Unix seconds.
pub async fn verify(
    issuers: &Issuers,
    cache: &TokenCache,
    metrics: &Metrics,
    token: &str,
    now: i64,
) -> Result<(Arc<VerifiedToken>, Arc<IssuerPolicy>), TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("token too large"));
    }
    let (signing_input, signature_b64) = token
        .rsplit_once('.')
        .ok_or(TokenError::Malformed("not a JWS compact token"))?;
    // The cache key covers the whole token, through the signing input's SHA-256, which a new
    // token's RS256, PS256 or ES256 signature check then uses instead of hashing it again.
    let signing_sha256 = digest::digest(&digest::SHA256, signing_input.as_bytes());
    let key = cache_key(&signing_sha256, signature_b64);

    if let Some(cache) = &cache.cache {
        if let Some(hit) = cache.get(&key) {
            if let Some((policy, keys)) = issuers.get(&hit.claims.iss) {
                if policy.algorithms.contains(&hit.alg) && keys.contains(hit.kid.as_deref()) {
                    metrics.token_cache(true);
                    check_claims(policy, &hit.claims, now)?;
                    return Ok((hit, Arc::clone(policy)));
                }
            }
            // The config or the key set changed since: verify from scratch.
            cache.invalidate(&key);
        }
        metrics.token_cache(false);
    }

    let (verified, policy) = verify_signature(issuers, token, &signing_sha256).await?;
    check_claims(&policy, &verified.claims, now)?;
    let verified = Arc::new(verified);
    if let Some(store) = &cache.cache {
        if cache.seen_before(&key) {
            store.insert(key, Arc::clone(&verified));
        }
    }
    Ok((verified, policy))
}

/// The token cache's key: SHA-256 over the signing input's SHA-256 and the signature as sent,
/// so two tokens share a key only if they are the same text.
fn cache_key(signing_sha256: &digest::Digest, signature_b64: &str) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(signing_sha256.as_ref());
    context.update(signature_b64.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// JOSE header fields jwtgate reads. `jku`, `x5u`, `jwk` and `x5c` are ignored on purpose: keys
/// come only from the configured issuer's key set.
#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow)]
    kid: Option<Cow<'a, str>>,
    crit: Option<Checked>,
}

/// A token read and judged up to its signature: what the signature check needs, and the
/// claims it will vouch for.
struct Unverified<'t> {
    signing_input: &'t str,
    signature_b64: &'t str,
    alg: Algorithm,
    kid: Option<Box<str>>,
    claims: Claims,
    policy: Arc<IssuerPolicy>,
    keys: Arc<KeyStore>,
}

/// Splits, decodes and reads the header and the payload, and picks the issuer, before any
/// network call (unknown issuers cost nothing). Header and payload are decoded into buffers on
/// the stack when they fit, as they do for Cognito's tokens.
fn read_unverified<'t>(issuers: &Issuers, token: &'t str) -> Result<Unverified<'t>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not a JWS compact token"));
    };
    let (mut stack, mut heap) = ([0u8; 256], Vec::new());
    let header_json = decode_b64(header_b64, &mut stack, &mut heap, "header is not base64url")?;
    let header: JoseHeader<'_> = serde_json::from_slice(header_json)
        .map_err(|_| TokenError::Malformed("header is not a JSON object"))?;
    if header.crit.is_some() {
        return Err(TokenError::CriticalHeader);
    }
    let alg = allowed_family(&header.alg)?;
    let (mut stack, mut heap) = ([0u8; 2048], Vec::new());
    let json = decode_b64(
        payload_b64,
        &mut stack,
        &mut heap,
        "payload is not base64url",
    )?;
    let mut found = None;
    let claims = Claims::from_json(json, payload_b64, |iss| {
        let (policy, keys) = issuers.get(iss).ok_or(TokenError::UnknownIssuer)?;
        found = Some((Arc::clone(policy), Arc::clone(keys)));
        Ok(Arc::clone(&policy.issuer))
    })?;
    let (policy, keys) = found.ok_or(TokenError::UnknownIssuer)?;
    if !policy.algorithms.contains(&alg) {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    Ok(Unverified {
        signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
        signature_b64,
        alg,
        kid: header.kid.map(|k| k.into_owned().into_boxed_str()),
        claims,
        policy,
        keys,
    })
}

/// Decodes base64url `text` into `stack` when it fits, else into `heap`.
fn decode_b64<'b>(
    text: &str,
    stack: &'b mut [u8],
    heap: &'b mut Vec<u8>,
    why: &'static str,
) -> Result<&'b [u8], TokenError> {
    match URL_SAFE_NO_PAD.decode_slice(text, stack) {
        Ok(n) => Ok(stack.get(..n).unwrap_or_default()),
        Err(DecodeSliceError::OutputSliceTooSmall) => {
            *heap = URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| TokenError::Malformed(why))?;
            Ok(heap)
        }
        Err(DecodeSliceError::DecodeError(_)) => Err(TokenError::Malformed(why)),
    }
}

async fn verify_signature(
    issuers: &Issuers,
    token: &str,
    signing_sha256: &digest::Digest,
) -> Result<(VerifiedToken, Arc<IssuerPolicy>), TokenError> {
    let read = read_unverified(issuers, token)?;
    let key = read
        .keys
        .key(read.kid.as_deref())
        .await
        .map_err(|e| match e {
            KeyError::UnknownKid => TokenError::UnknownKid,
            KeyError::Unavailable => TokenError::KeysUnavailable,
        })?;
    if !key.supports(read.alg) {
        return Err(TokenError::AlgorithmMismatch);
    }
    // Room on the stack for RSA-4096's signature; a longer one (which no key verifies) is
    // decoded on the heap.
    let (mut stack, mut heap) = ([0u8; 512], Vec::new());
    let signature = decode_b64(
        read.signature_b64,
        &mut stack,
        &mut heap,
        "signature is not base64url",
    )?;
    let message = read.signing_input.as_bytes();
    if !key.verify_with_sha256(read.alg, message, signing_sha256, signature) {
        return Err(TokenError::BadSignature);
    }
    // Memory an entry really holds, calibrated on the load benchmark when the claim map was
    // always built: 300k distinct Cognito-shaped tokens cost ~2.4 KB each for a ~300-byte
    // payload. The map is now built on first use only; the charge still assumes it.
    let payload_len = read.claims.payload_b64.len();
    let weight = u32::try_from(payload_len * 6 + payload_len * 3 / 4 + 640).unwrap_or(u32::MAX);
    Ok((
        VerifiedToken {
            claims: read.claims,
            alg: read.alg,
            kid: read.kid,
            weight,
        },
        read.policy,
    ))
}

/// Maps `alg` to an asymmetric algorithm; `none`, HMAC and unknown names are refused outright.
fn allowed_family(alg: &str) -> Result<Algorithm, TokenError> {
    match alg.parse::<Algorithm>() {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => {
            Err(TokenError::AlgorithmNotAllowed)
        }
        Ok(alg) => Ok(alg),
    }
}

/// The time and audience checks, run on every request (cached or not).
pub fn check_claims(policy: &IssuerPolicy, claims: &Claims, now: i64) -> Result<(), TokenError> {
    let leeway = policy.leeway_secs;
    if now >= claims.exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        || claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(leeway))
    {
        return Err(TokenError::NotYetValid);
    }
    if !policy.skip_audience_check {
        let accepted = |v: &str| policy.audiences.iter().any(|a| a == v);
        let ok = if claims.aud.is_empty() {
            claims.client_id.as_deref().is_some_and(accepted)
        } else {
            claims.aud.iter().any(|a| accepted(a))
        };
        if !ok {
            return Err(TokenError::WrongAudience);
        }
    }
    if let Some(required) = policy.token_use {
        if claims.token_use.as_deref() != Some(required.as_str()) {
            return Err(TokenError::WrongTokenUse);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> IssuerPolicy {
        IssuerPolicy {
            name: "t".into(),
            issuer: "https://issuer".into(),
            audiences: vec!["client-a".into()],
            skip_audience_check: false,
            token_use: None,
            algorithms: vec![Algorithm::RS256],
            leeway_secs: 60,
        }
    }

    fn claims(v: Value) -> Claims {
        let Value::Object(map) = v else { panic!() };
        Claims::from_payload(map).unwrap()
    }

    #[test]
    fn audience_is_aud_any_of_and_client_id_only_when_aud_is_absent() {
        let p = policy();
        let now = 1_000_000;
        let id = claims(json!({"iss":"https://issuer","exp":now+100,"aud":"client-a"}));
        assert_eq!(check_claims(&p, &id, now), Ok(()));
        let access = claims(json!({"iss":"https://issuer","exp":now+100,"client_id":"client-a"}));
        assert_eq!(check_claims(&p, &access, now), Ok(()));
        let list = claims(json!({"iss":"x","exp":now+100,"aud":["other","client-a"]}));
        assert_eq!(check_claims(&p, &list, now), Ok(()));
        // aud present but wrong: client_id must NOT rescue it.
        let both = claims(json!({"iss":"x","exp":now+100,"aud":"other","client_id":"client-a"}));
        assert_eq!(check_claims(&p, &both, now), Err(TokenError::WrongAudience));
        let neither = claims(json!({"iss":"x","exp":now+100}));
        assert_eq!(
            check_claims(&p, &neither, now),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn time_claims_honour_leeway() {
        let p = policy();
        let now = 1_000_000;
        let c = |v| claims(v);
        assert_eq!(
            check_claims(
                &p,
                &c(json!({"iss":"x","aud":"client-a","exp":now-59})),
                now
            ),
            Ok(())
        );
        assert_eq!(
            check_claims(
                &p,
                &c(json!({"iss":"x","aud":"client-a","exp":now-60})),
                now
            ),
            Err(TokenError::Expired)
        );
        assert_eq!(
            check_claims(
                &p,
                &c(json!({"iss":"x","aud":"client-a","exp":now+600,"nbf":now+61})),
                now
            ),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            check_claims(
                &p,
                &c(json!({"iss":"x","aud":"client-a","exp":now+600,"iat":now+61})),
                now
            ),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            check_claims(
                &p,
                &c(json!({"iss":"x","aud":"client-a","exp":now+600,"nbf":now+30})),
                now
            ),
            Ok(())
        );
    }

    /// What a payload text reads as, one way or the other: the claims jwtgate checks, or why
    /// it was refused.
    fn read(text: &str) -> Result<String, TokenError> {
        from_text(text.as_bytes()).map(|c| shown(&c))
    }

    /// Claims from a payload's JSON text, as a token carrying it is read.
    fn from_text(json: &[u8]) -> Result<Claims, TokenError> {
        let payload_b64 = URL_SAFE_NO_PAD.encode(json);
        Claims::from_json(json, &payload_b64, |iss| Ok(iss.into()))
    }

    fn read_via_map(text: &str) -> Result<String, TokenError> {
        let map: Map<String, Value> = serde_json::from_str(text)
            .map_err(|_| TokenError::Malformed("payload is not a JSON object"))?;
        Claims::from_payload(map).map(|c| shown(&c))
    }

    fn shown(c: &Claims) -> String {
        format!(
            "{} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            c.iss, c.exp, c.nbf, c.iat, c.aud, c.client_id, c.token_use, c.scopes, c.groups
        )
    }

    #[test]
    fn one_pass_reading_agrees_with_the_claim_map() {
        let cases = [
            r#"{"iss":"x","exp":1}"#,
            r#"{"iss":"x","exp":1.9,"nbf":-2.5,"iat":null,"aud":["a","b"],"scope":"a  b","scp":["c",1,"d"]}"#,
            r#"{"iss":"x","exp":18446744073709551615,"aud":"a","cognito:groups":["g",["h"],"i"]}"#,
            r#"{"iss":"x","exp":1e300,"client_id":"c","token_use":"id","cognito:groups":"g"}"#,
            r#"{"i\u0073s":"\u0078","exp":1,"sc\u006fpe":"a\tb c"}"#,
            r#"{"iss":"first","exp":1,"iss":"last"}"#,
            r#"{"iss":1,"exp":1,"iss":"x"}"#,
            r#"{"iss":"x","exp":1,"iss":1}"#,
            r#"{"iss":"x","exp":"1"}"#,
            r#"{"iss":"x","exp":null}"#,
            r#"{"iss":"x"}"#,
            r#"{"iss":"x","exp":1,"nbf":true}"#,
            r#"{"iss":"x","exp":1,"aud":["a",2]}"#,
            r#"{"iss":"x","exp":1,"aud":{}}"#,
            r#"{"iss":"x","exp":1,"client_id":5,"token_use":["id"]}"#,
            r#"{"iss":"x","exp":1,"other":{"deep":[1,2,{"k":"v"}]},"n":-0.0}"#,
            // Refused by a map parse, so refused here too: a number out of range, a bad
            // escape, trailing text, not an object, a lone surrogate, nothing.
            r#"{"iss":"x","exp":1,"other":1e999}"#,
            r#"{"iss":"x","exp":1,"other":"\q"}"#,
            r#"{"iss":"x","exp":1} x"#,
            r#"["iss","x"]"#,
            r#"{"iss":"x","exp":1,"other":"\ud800"}"#,
            "",
        ];
        for text in cases {
            assert_eq!(read(text), read_via_map(text), "{text}");
        }
        // Invalid UTF-8 in a claim jwtgate does not read is refused, as a map parse refuses it.
        let bytes = b"{\"iss\":\"x\",\"exp\":1,\"other\":\"\xff\"}".to_vec();
        assert!(serde_json::from_slice::<Map<String, Value>>(&bytes).is_err());
        assert!(from_text(&bytes).is_err());
        // So is nesting past the parser's limit.
        let deep = format!(
            r#"{{"iss":"x","exp":1,"o":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(serde_json::from_str::<Map<String, Value>>(&deep).is_err());
        assert!(read(&deep).is_err());
    }

    #[test]
    fn the_claim_map_is_built_on_first_use() {
        let text = r#"{"iss":"x","exp":1,"sub":"s","iss":"y","n":[1,{"a":null}]}"#;
        let c = from_text(text.as_bytes()).unwrap();
        assert!(c.all.get().is_none());
        let map: Map<String, Value> = serde_json::from_str(text).unwrap();
        assert_eq!(c.all(), &map);
        assert_eq!(c.all()["iss"], "y");
    }

    #[test]
    fn exp_is_required_and_typed() {
        let Value::Object(m) = json!({"iss":"x"}) else {
            panic!()
        };
        assert_eq!(Claims::from_payload(m).unwrap_err(), TokenError::MissingExp);
        let Value::Object(m) = json!({"iss":"x","exp":"tomorrow"}) else {
            panic!()
        };
        assert!(matches!(
            Claims::from_payload(m),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn scopes_come_from_scope_or_scp_as_whole_words() {
        let c = claims(json!({"iss":"x","exp":1,"scope":"openid api/read  api/write"}));
        assert_eq!(c.scopes, ["openid", "api/read", "api/write"]);
        let c = claims(json!({"iss":"x","exp":1,"scp":["a","b"]}));
        assert_eq!(c.scopes, ["a", "b"]);
        let c = claims(json!({"iss":"x","exp":1,"scp":"a b"}));
        assert_eq!(c.scopes, ["a", "b"]);
    }

    #[test]
    fn only_a_space_separates_scopes() {
        let c = claims(json!({"iss":"x","exp":1,"scope":"api/read\tapi/admin"}));
        assert_eq!(c.scopes, ["api/read\tapi/admin"]);
        let c = claims(json!({"iss":"x","exp":1,"scope":" a\nb  c\u{a0}d \u{3000}e "}));
        assert_eq!(c.scopes, ["a\nb", "c\u{a0}d", "\u{3000}e"]);
        let c = claims(json!({"iss":"x","exp":1,"scp":"x\ty z"}));
        assert_eq!(c.scopes, ["x\ty", "z"]);
        let c = claims(json!({"iss":"x","exp":1,"scp":["a b", "c\td"]}));
        assert_eq!(c.scopes, ["a b", "c\td"], "an array element is one scope");
    }

    #[test]
    fn token_use_is_enforced_when_configured() {
        let mut p = policy();
        p.token_use = Some(TokenUse::Access);
        let id = claims(json!({"iss":"x","exp":2_000_000,"aud":"client-a","token_use":"id"}));
        assert_eq!(
            check_claims(&p, &id, 1_000_000),
            Err(TokenError::WrongTokenUse)
        );
    }

    #[test]
    fn bearer_extraction() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Ok(None));
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Ok(Some("abc")));
        h.insert("authorization", "bearer   abc".parse().unwrap());
        assert_eq!(bearer(&h), Ok(Some("abc")));
        h.insert("authorization", "abc.def.ghi".parse().unwrap());
        assert_eq!(
            bearer(&h),
            Ok(Some("abc.def.ghi")),
            "API Gateway accepts a bare token"
        );
        h.insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(bearer(&h), Ok(None));
        h.append("authorization", "Bearer x".parse().unwrap());
        assert!(bearer(&h).is_err());
    }

    #[test]
    fn none_and_hmac_are_never_allowed() {
        for alg in ["none", "None", "HS256", "HS384", "HS512", "XS256", ""] {
            assert_eq!(
                allowed_family(alg),
                Err(TokenError::AlgorithmNotAllowed),
                "{alg}"
            );
        }
        assert_eq!(allowed_family("RS256"), Ok(Algorithm::RS256));
        assert_eq!(allowed_family("EdDSA"), Ok(Algorithm::EdDSA));
    }
}

//! Temporary AWS credentials. The secret parts are wrapped so that no `Debug`, `Display`, log
//! line, metric or error can print them: only the signer reads them, through [`Secret::expose`].

use std::fmt;
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

/// A secret string: its `Debug` says `<redacted>`, it has no `Display`, and its memory is
/// zeroed when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself, for the signer and the outbound call that needs it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its length in bytes (for cache weights).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One set of AWS credentials: an access key id (an identifier, shown in logs), its secret and
/// session token (never shown), and when they stop working.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: Secret,
    session_token: Option<Secret>,
    expires_at: Option<SystemTime>,
}

impl Credentials {
    /// Credentials as an AWS answer or the environment gave them. `expires_at` is `None` for
    /// long-term keys (environment variables without a session token).
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: Secret,
        session_token: Option<Secret>,
        expires_at: Option<SystemTime>,
    ) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token,
            expires_at,
        }
    }

    /// The access key id (not a secret: AWS puts it in the `Authorization` header in clear).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key.
    pub fn secret_access_key(&self) -> &Secret {
        &self.secret_access_key
    }

    /// The session token of temporary credentials.
    pub fn session_token(&self) -> Option<&Secret> {
        self.session_token.as_ref()
    }

    /// When they expire; `None` for long-term keys.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Whether they are still usable at `now` with `margin` to spare.
    pub fn fresh_at(&self, now: SystemTime, margin: Duration) -> bool {
        self.expires_at
            .is_none_or(|at| now.checked_add(margin).is_some_and(|later| later < at))
    }

    /// Approximate heap size, bytes (the cache weighs entries with it).
    pub fn weight(&self) -> usize {
        self.access_key_id.len()
            + self.secret_access_key.len()
            + self.session_token.as_ref().map_or(0, Secret::len)
            + 64
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at.map(httpdate::fmt_http_date))
            .finish()
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "access key {}", self.access_key_id)?;
        if let Some(at) = self.expires_at {
            write!(f, ", expires {}", httpdate::fmt_http_date(at))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_appear_in_debug_or_display() {
        let c = Credentials::new(
            "ASIAEXAMPLEKEYID",
            Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            Some(Secret::new("FwoGZXIvYXdzEXAMPLESESSIONTOKEN")),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000)),
        );
        for text in [format!("{c:?}"), format!("{c:#?}"), c.to_string()] {
            assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
            assert!(!text.contains("FwoGZXIvYXdz"), "{text}");
            assert!(text.contains("ASIAEXAMPLEKEYID"), "{text}");
        }
        assert_eq!(format!("{:?}", Secret::new("x")), "<redacted>");
    }

    #[test]
    fn freshness_keeps_a_margin() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let c = |at: u64| {
            Credentials::new(
                "A",
                Secret::new("s"),
                None,
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(at)),
            )
        };
        assert!(c(1_400).fresh_at(now, Duration::from_secs(300)));
        assert!(!c(1_300).fresh_at(now, Duration::from_secs(300)));
        assert!(!c(900).fresh_at(now, Duration::ZERO));
        let forever = Credentials::new("A", Secret::new("s"), None, None);
        assert!(forever.fresh_at(now, Duration::from_secs(3600)));
    }
}

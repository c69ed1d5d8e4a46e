//! `[[issuers]]`: who may sign the bearer tokens, and how their keys are fetched; and the issuer
//! compiler `[login]` shares (the Cognito shorthand, the algorithms, the policy and key store).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use toml::Spanned;

use super::diags::{Diags, is_http_url, parse_duration, strings};
use crate::config::RawIssuer;
use crate::jwks::{KeySettings, KeySource};
use crate::token::IssuerPolicy;

/// Default `leeway` of an issuer.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default `refresh_interval` of an issuer.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// Default `min_refetch_interval` of an issuer.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Default `fetch_timeout` of an issuer.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// `[[issuers]]`, checked.
pub(super) struct Issuers {
    /// Each issuer's policy, with the settings of its key store.
    pub list: Vec<(Arc<IssuerPolicy>, KeySettings)>,
    /// Their names, which routes' `issuers` lists refer to.
    pub names: HashSet<Arc<str>>,
    /// Whether the file has any `[[issuers]]` table (even one with errors).
    pub any: bool,
}

/// Every `[[issuers]]` table; names and issuer URLs must not repeat.
pub(super) fn compile(d: &mut Diags<'_>, raw: &[Spanned<RawIssuer>]) -> Issuers {
    let mut list = Vec::new();
    let mut names = HashSet::new();
    let mut iss_seen = HashSet::new();
    for (i, raw_issuer) in raw.iter().enumerate() {
        let key = format!("issuers[{i}]");
        if let Some(compiled) = issuer(d, &key, raw_issuer) {
            let (policy, _) = &compiled;
            if !names.insert(Arc::clone(&policy.name)) {
                d.err(
                    raw_issuer.span(),
                    format!("{key}.name"),
                    format!("duplicate issuer name {:?}", policy.name),
                );
            }
            if !iss_seen.insert(Arc::clone(&policy.issuer)) {
                d.err(
                    raw_issuer.span(),
                    format!("{key}.issuer"),
                    format!("issuer {:?} is configured twice", policy.issuer),
                );
            }
            list.push(compiled);
        }
    }
    Issuers {
        list,
        names,
        any: !raw.is_empty(),
    }
}

/// One `[[issuers]]` table.
fn issuer(
    d: &mut Diags<'_>,
    key: &str,
    raw: &Spanned<RawIssuer>,
) -> Option<(Arc<IssuerPolicy>, KeySettings)> {
    let span = raw.span();
    let r = raw.get_ref();
    let errors_before = d.count();
    let named = IssuerKeys {
        key,
        span: span.clone(),
        issuer: &r.issuer,
        user_pool_id: &r.user_pool_id,
        region: &r.region,
        algorithms: &r.algorithms,
        dialect: ISSUERS,
    };
    let identity = named.identity(d)?;
    let source = d
        .http_url(&r.jwks_uri, &format!("{key}.jwks_uri"))
        .map_or(identity.default_keys, KeySource::Jwks);
    let name: Arc<str> = r.name.as_ref().map_or_else(
        || identity.issuer.as_str().into(),
        |n| n.get_ref().as_str().into(),
    );
    let skip_audience_check = r.skip_audience_check.as_ref().is_some_and(|s| *s.get_ref());
    let audiences: Vec<String> = strings(&r.audiences)
        .iter()
        .map(|a| a.get_ref().clone())
        .collect();
    match (&r.audiences, skip_audience_check) {
        (Some(a), true) => d.err(
            a.span(),
            format!("{key}.audiences"),
            "conflicts with skip_audience_check = true",
        ),
        (Some(a), false) if audiences.is_empty() => {
            d.err(
                a.span(),
                format!("{key}.audiences"),
                "is empty; list your app client ids (or set skip_audience_check = true)",
            );
        }
        (None, false) => d.err(
            span,
            format!("{key}.audiences"),
            "missing: list the accepted app client ids (or set skip_audience_check = true)",
        ),
        _ => {}
    }
    let token_use = d.token_use(&r.token_use, &format!("{key}.token_use"));
    let algorithms = named.algorithms(d);
    let leeway = d.duration(&r.leeway, &format!("{key}.leeway"), DEFAULT_LEEWAY);
    if leeway > Duration::from_secs(600) {
        if let Some(l) = &r.leeway {
            d.err(
                l.span(),
                format!("{key}.leeway"),
                "more than 10m of clock skew is not a leeway",
            );
        }
    }
    let fetching = Fetching {
        refresh_interval: d.duration(
            &r.refresh_interval,
            &format!("{key}.refresh_interval"),
            DEFAULT_REFRESH_INTERVAL,
        ),
        min_refetch_interval: d.duration(
            &r.min_refetch_interval,
            &format!("{key}.min_refetch_interval"),
            DEFAULT_MIN_REFETCH_INTERVAL,
        ),
        fetch_timeout: d.duration(
            &r.fetch_timeout,
            &format!("{key}.fetch_timeout"),
            DEFAULT_FETCH_TIMEOUT,
        ),
    };
    for (value, field, min) in [
        (
            &r.refresh_interval,
            "refresh_interval",
            Duration::from_secs(1),
        ),
        (
            &r.fetch_timeout,
            "fetch_timeout",
            Duration::from_millis(100),
        ),
    ] {
        if let Some(v) = value {
            if parse_duration(v.get_ref()).is_ok_and(|x| x < min) {
                d.err(
                    v.span(),
                    format!("{key}.{field}"),
                    format!("must be at least {min:?}"),
                );
            }
        }
    }
    if d.count() > errors_before {
        return None;
    }
    let policy = IssuerPolicy {
        name,
        issuer: identity.issuer.into(),
        audiences,
        skip_audience_check,
        token_use,
        algorithms,
        leeway_secs: i64::try_from(leeway.as_secs()).unwrap_or(0),
    };
    Some(build(policy, source, fetching))
}

/// Where `[[issuers]]` and `[login]` differ in naming an issuer (`[login]` keeps the checks
/// it has always made).
#[derive(Clone, Copy)]
pub(super) struct Dialect {
    /// The shorthand that the "needs issuer" message offers.
    shorthand: &'static str,
    /// `region` beside `issuer` is an error (else it is ignored).
    region_needs_pool: bool,
    /// One message for every refused algorithm, and an empty list means the default (else
    /// HMAC and unknown names are told apart, and an empty list is an error).
    lenient_algorithms: bool,
}

/// `[[issuers]]`.
pub(super) const ISSUERS: Dialect = Dialect {
    shorthand: "user_pool_id",
    region_needs_pool: true,
    lenient_algorithms: false,
};

/// `[login]`, whose Cognito shorthand also needs the hosted UI's domain.
pub(super) const LOGIN: Dialect = Dialect {
    shorthand: "user_pool_id + domain",
    region_needs_pool: false,
    lenient_algorithms: true,
};

/// The keys that name an issuer and its algorithms, as `[[issuers]]` and `[login]` both
/// spell them.
pub(super) struct IssuerKeys<'a> {
    /// The table, as messages name it: `issuers[0]`, `login`.
    pub key: &'a str,
    /// The table's span, for a missing issuer.
    pub span: Range<usize>,
    /// `issuer`: the exact `iss`.
    pub issuer: &'a Option<Spanned<String>>,
    /// `user_pool_id`: the Cognito shorthand.
    pub user_pool_id: &'a Option<Spanned<String>>,
    /// `region`: optional with the shorthand, and must agree with the pool id.
    pub region: &'a Option<Spanned<String>>,
    /// `algorithms`: the allowed signing algorithms.
    pub algorithms: &'a Option<Spanned<Vec<Spanned<String>>>>,
    /// How this table differs.
    pub dialect: Dialect,
}

/// Who an issuer is.
pub(super) struct Identity<'a> {
    /// The exact `iss`, written out or derived from the Cognito shorthand.
    pub issuer: String,
    /// Where its keys are unless `jwks_uri` says: the discovery document, or with the Cognito
    /// shorthand the user pool's key set.
    pub default_keys: KeySource,
    /// The user pool id, when the Cognito shorthand named the issuer.
    pub user_pool_id: Option<&'a Spanned<String>>,
}

impl<'a> IssuerKeys<'a> {
    /// The issuer from `issuer`, or from `user_pool_id` (and `region`); `None` after a problem
    /// that leaves nothing more to check.
    pub fn identity(&self, d: &mut Diags<'_>) -> Option<Identity<'a>> {
        let key = self.key;
        match (self.issuer, self.user_pool_id) {
            (Some(_), Some(pool)) => {
                d.err(
                    pool.span(),
                    format!("{key}.user_pool_id"),
                    "give either issuer or user_pool_id, not both",
                );
                None
            }
            (Some(iss), None) => {
                if !is_http_url(iss.get_ref()) {
                    d.err(
                        iss.span(),
                        format!("{key}.issuer"),
                        format!("{:?} is not an http(s) URL", iss.get_ref()),
                    );
                    return None;
                }
                if let Some(region) = self
                    .region
                    .as_ref()
                    .filter(|_| self.dialect.region_needs_pool)
                {
                    d.err(
                        region.span(),
                        format!("{key}.region"),
                        "region goes with user_pool_id, not issuer",
                    );
                }
                let issuer = iss.get_ref().clone();
                Some(Identity {
                    default_keys: KeySource::Discovery(discovery_url(&issuer)),
                    issuer,
                    user_pool_id: None,
                })
            }
            (None, Some(pool)) => {
                let pool_id = pool.get_ref();
                let Some(region) = cognito_region(pool_id) else {
                    d.err(
                        pool.span(),
                        format!("{key}.user_pool_id"),
                        format!("{pool_id:?} is not a user pool id like us-east-1_AbC123"),
                    );
                    return None;
                };
                if let Some(r) = self.region {
                    if r.get_ref() != region {
                        d.err(
                            r.span(),
                            format!("{key}.region"),
                            format!("the user pool id says {region:?}"),
                        );
                    }
                }
                let issuer = format!("https://cognito-idp.{region}.amazonaws.com/{pool_id}");
                Some(Identity {
                    default_keys: KeySource::Jwks(format!("{issuer}/.well-known/jwks.json")),
                    issuer,
                    user_pool_id: Some(pool),
                })
            }
            (None, None) => {
                d.err(
                    self.span.clone(),
                    key,
                    format!(
                        "needs issuer = \"https://…\" (or the Cognito shorthand {})",
                        self.dialect.shorthand
                    ),
                );
                None
            }
        }
    }

    /// The allowed signing algorithms: asymmetric ones only (a shared secret cannot be
    /// published in a key set), `RS256` when the key is absent.
    pub fn algorithms(&self, d: &mut Diags<'_>) -> Vec<Algorithm> {
        let key = format!("{}.algorithms", self.key);
        let lenient = self.dialect.lenient_algorithms;
        let mut algorithms = Vec::new();
        for alg in strings(self.algorithms) {
            match alg.get_ref().parse::<Algorithm>() {
                Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) if lenient => {
                    d.err(
                        alg.span(),
                        &key,
                        format!("{:?} is not an asymmetric JWS algorithm", alg.get_ref()),
                    );
                }
                Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => d.err(
                    alg.span(),
                    &key,
                    "HMAC algorithms are refused: a shared secret cannot be published in a key set",
                ),
                Ok(a) => algorithms.push(a),
                Err(_) => d.err(
                    alg.span(),
                    &key,
                    format!(
                        "{:?} is not one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA",
                        alg.get_ref()
                    ),
                ),
            }
        }
        match self.algorithms {
            _ if !algorithms.is_empty() => {}
            Some(list) if !lenient => d.err(list.span(), &key, "must list at least one algorithm"),
            _ => algorithms.push(Algorithm::RS256),
        }
        algorithms
    }
}

/// The discovery document of `issuer`.
pub(super) fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// How an issuer's keys are fetched: `[[issuers]]` may say, `[login]` takes the defaults.
pub(super) struct Fetching {
    /// How often keys are refetched in the background.
    pub refresh_interval: Duration,
    /// Least time between two fetches caused by unknown `kid`s.
    pub min_refetch_interval: Duration,
    /// Timeout of one key-set or discovery fetch.
    pub fetch_timeout: Duration,
}

impl Default for Fetching {
    fn default() -> Self {
        Fetching {
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// The issuer's token policy, and the settings of its key store (which shares its name, `iss`
/// and algorithms).
pub(super) fn build(
    policy: IssuerPolicy,
    source: KeySource,
    fetching: Fetching,
) -> (Arc<IssuerPolicy>, KeySettings) {
    let keys = KeySettings {
        name: Arc::clone(&policy.name),
        issuer: Arc::clone(&policy.issuer),
        source,
        algorithms: policy.algorithms.clone(),
        refresh_interval: fetching.refresh_interval,
        min_refetch_interval: fetching.min_refetch_interval,
        fetch_timeout: fetching.fetch_timeout,
    };
    (Arc::new(policy), keys)
}

/// The region of a Cognito user pool id (`us-east-1_AbC123` → `us-east-1`).
pub(super) fn cognito_region(pool_id: &str) -> Option<&str> {
    let (region, id) = pool_id.split_once('_')?;
    let parts: Vec<&str> = region.split('-').collect();
    let region_ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
    let id_ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric());
    (region_ok && id_ok).then_some(region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::compile::tests::GOOD;

    #[test]
    fn a_good_file_compiles_and_cognito_shorthand_expands() {
        let c = compile("good.toml", GOOD).unwrap();
        let (policy, keys) = &c.issuers[0];
        assert_eq!(
            &*policy.issuer,
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123"
        );
        assert_eq!(keys.source, KeySource::Jwks("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123/.well-known/jwks.json".into()));
        assert_eq!(policy.algorithms, vec![Algorithm::RS256]);
        assert_eq!(c.routes.len(), 2);
        assert!(c.describe().contains("/admin/**"));
    }

    #[test]
    fn pool_ids() {
        assert_eq!(cognito_region("us-east-1_AbC123"), Some("us-east-1"));
        assert_eq!(cognito_region("us-gov-west-1_x"), Some("us-gov-west-1"));
        assert_eq!(cognito_region("useast1_x"), None);
        assert_eq!(cognito_region("us-east-1_"), None);
    }

    #[test]
    fn login_and_issuers_name_an_issuer_alike_but_for_their_dialects() {
        let login =
            "[[routes]]\npath = \"/app/**\"\nauth = \"login\"\n[login]\nclient_id = \"app\"\n";
        let cognito = "user_pool_id = \"us-east-1_AbC123\"\ndomain = \"a.auth.us-east-1.amazoncognito.com\"\n";
        let c = compile("t.toml", &format!("{GOOD}\n{login}{cognito}")).unwrap();
        let (issuer, keys) = &c.issuers[0];
        let l = &c.logins[0];
        assert_eq!(l.policy.issuer, issuer.issuer);
        assert_eq!(l.keys.source, keys.source);
        assert_eq!(l.policy.algorithms, vec![Algorithm::RS256]);
        assert_eq!(&*l.policy.name, "login");
        assert_eq!(l.policy.audiences, ["app"]);

        // [login] ignores a region beside issuer, and an empty algorithms list means RS256.
        let oidc = "issuer = \"https://idp.example\"\nregion = \"us-east-1\"\nalgorithms = []\n";
        let c = compile("t.toml", &format!("{GOOD}\n{login}{oidc}")).unwrap();
        let l = &c.logins[0];
        assert_eq!(l.policy.algorithms, vec![Algorithm::RS256]);
        assert_eq!(
            l.keys.source,
            KeySource::Discovery("https://idp.example/.well-known/openid-configuration".into())
        );
        // [[issuers]] refuses both, and words its algorithm messages differently.
        let text = format!(
            "{GOOD}\n[[issuers]]\nname = \"b\"\naudiences = [\"a\"]\n{oidc}\n[[issuers]]\nname = \"c\"\nissuer = \"https://c\"\naudiences = [\"a\"]\nalgorithms = [\"HS256\", \"X1\"]\n"
        );
        let errors = compile("t.toml", &text).unwrap_err().0.join("\n");
        assert!(
            errors.contains("issuers[1].region: region goes with user_pool_id, not issuer"),
            "{errors}"
        );
        assert!(
            errors.contains("issuers[1].algorithms: must list at least one algorithm"),
            "{errors}"
        );
        assert!(
            errors.contains("issuers[2].algorithms: HMAC algorithms are refused"),
            "{errors}"
        );
        assert!(
            errors.contains("issuers[2].algorithms: \"X1\" is not one of RS256"),
            "{errors}"
        );
        let text = format!("{GOOD}\n{login}{oidc}algorithms = [\"HS256\"]\n");
        let errors = compile("t.toml", &text.replace("algorithms = []\n", ""))
            .unwrap_err()
            .0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].ends_with("login.algorithms: \"HS256\" is not an asymmetric JWS algorithm"),
            "{errors:?}"
        );
        // Only [login]'s shorthand needs the hosted UI's domain.
        let errors = compile("t.toml", &format!("{GOOD}\n{login}"))
            .unwrap_err()
            .0;
        assert!(errors[0].ends_with("login: needs issuer = \"https://…\" (or the Cognito shorthand user_pool_id + domain)"), "{errors:?}");
    }
}

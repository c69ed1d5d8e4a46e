//! `[[issuers]]`: who may sign the bearer tokens, and how their keys are fetched.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use toml::Spanned;

use super::diags::{Diags, is_http_url, parse_duration, strings};
use crate::config::RawIssuer;
use crate::jwks::{KeySettings, KeySource};
use crate::token::{IssuerPolicy, TokenUse};

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
    // The exact `iss`, either written out or derived from the Cognito shorthand.
    let (issuer, default_source) = match (&r.issuer, &r.user_pool_id) {
        (Some(_), Some(pool)) => {
            d.err(
                pool.span(),
                format!("{key}.user_pool_id"),
                "give either issuer or user_pool_id, not both",
            );
            return None;
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
            if let Some(region) = &r.region {
                d.err(
                    region.span(),
                    format!("{key}.region"),
                    "region goes with user_pool_id, not issuer",
                );
            }
            let iss = iss.get_ref().clone();
            let discovery = format!(
                "{}/.well-known/openid-configuration",
                iss.trim_end_matches('/')
            );
            (iss, KeySource::Discovery(discovery))
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
            if let Some(r) = &r.region {
                if r.get_ref() != region {
                    d.err(
                        r.span(),
                        format!("{key}.region"),
                        format!("the user pool id says {region:?}"),
                    );
                }
            }
            let iss = format!("https://cognito-idp.{region}.amazonaws.com/{pool_id}");
            let jwks = format!("{iss}/.well-known/jwks.json");
            (iss, KeySource::Jwks(jwks))
        }
        (None, None) => {
            d.err(
                span,
                key,
                "needs issuer = \"https://…\" (or the Cognito shorthand user_pool_id)",
            );
            return None;
        }
    };
    let source = match &r.jwks_uri {
        Some(uri) if is_http_url(uri.get_ref()) => KeySource::Jwks(uri.get_ref().clone()),
        Some(uri) => {
            d.err(
                uri.span(),
                format!("{key}.jwks_uri"),
                format!("{:?} is not an http(s) URL", uri.get_ref()),
            );
            default_source
        }
        None => default_source,
    };
    let name: Arc<str> = r
        .name
        .as_ref()
        .map_or_else(|| issuer.as_str().into(), |n| n.get_ref().as_str().into());
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
    let token_use = r.token_use.as_ref().and_then(|t| {
        TokenUse::parse(t.get_ref()).or_else(|| {
            d.err(
                t.span(),
                format!("{key}.token_use"),
                "must be \"access\" or \"id\"",
            );
            None
        })
    });
    let mut algorithms = Vec::new();
    for alg in strings(&r.algorithms) {
        match alg.get_ref().parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => d.err(
                alg.span(),
                format!("{key}.algorithms"),
                "HMAC algorithms are refused: a shared secret cannot be published in a key set",
            ),
            Ok(a) => algorithms.push(a),
            Err(_) => d.err(
                alg.span(),
                format!("{key}.algorithms"),
                format!(
                    "{:?} is not one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA",
                    alg.get_ref()
                ),
            ),
        }
    }
    if r.algorithms.is_none() {
        algorithms.push(Algorithm::RS256);
    } else if algorithms.is_empty() {
        if let Some(a) = &r.algorithms {
            d.err(
                a.span(),
                format!("{key}.algorithms"),
                "must list at least one algorithm",
            );
        }
    }
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
    let refresh_interval = d.duration(
        &r.refresh_interval,
        &format!("{key}.refresh_interval"),
        DEFAULT_REFRESH_INTERVAL,
    );
    let min_refetch_interval = d.duration(
        &r.min_refetch_interval,
        &format!("{key}.min_refetch_interval"),
        DEFAULT_MIN_REFETCH_INTERVAL,
    );
    let fetch_timeout = d.duration(
        &r.fetch_timeout,
        &format!("{key}.fetch_timeout"),
        DEFAULT_FETCH_TIMEOUT,
    );
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
    let issuer: Arc<str> = issuer.into();
    let policy = IssuerPolicy {
        name: Arc::clone(&name),
        issuer: Arc::clone(&issuer),
        audiences,
        skip_audience_check,
        token_use,
        algorithms: algorithms.clone(),
        leeway_secs: i64::try_from(leeway.as_secs()).unwrap_or(0),
    };
    let settings = KeySettings {
        name,
        issuer,
        source,
        algorithms,
        refresh_interval,
        min_refetch_interval,
        fetch_timeout,
    };
    Some((Arc::new(policy), settings))
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
}

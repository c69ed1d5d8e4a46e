//! `[[aws_credentials]]`: named sources of AWS credentials. Each table says where credentials
//! come from (`source`) and carries only the keys that source uses; a key of another source
//! is an error rather than silently ignored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::diags::{Diags, parse_duration, strings};
use crate::aws::{
    DEFAULT_CACHE_MAX_BYTES, DEFAULT_REFRESH_MARGIN, DEFAULT_TIMEOUT, Gateway, IdentityPool,
    SourceKind, SourceSettings, WebIdentity, sts_endpoint,
};
use crate::config::RawAwsCredentials;

/// Shortest and longest STS session (`duration`).
const DURATION_RANGE: (Duration, Duration) =
    (Duration::from_secs(15 * 60), Duration::from_secs(12 * 3600));
/// Shortest and longest `timeout`.
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));
/// Longest `refresh_margin`.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(3600);
/// Smallest `cache_max_bytes`: a few entries.
const MIN_CACHE_BYTES: u64 = 64 * 1024;
/// Largest `cache_max_bytes`.
const MAX_CACHE_BYTES: u64 = 1 << 32;

/// Every `[[aws_credentials]]` table; names must not repeat.
pub(super) fn compile(
    d: &mut Diags<'_>,
    raw: &[Spanned<RawAwsCredentials>],
) -> Vec<SourceSettings> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, table) in raw.iter().enumerate() {
        let key = format!("aws_credentials[{i}]");
        if let Some(name) = &table.get_ref().name {
            if !names.insert(name.get_ref().clone()) {
                d.err(
                    name.span(),
                    format!("{key}.name"),
                    format!("duplicate name {:?}", name.get_ref()),
                );
            }
        }
        if let Some(source) = source(d, &key, table) {
            out.push(source);
        }
    }
    out
}

/// The source a `credentials = "NAME"` names; an error at the name when no table has it (a
/// table of that name with errors of its own was reported there).
pub(super) fn named<'s>(
    d: &mut Diags<'_>,
    key: &str,
    name: &Spanned<String>,
    raw: &[Spanned<RawAwsCredentials>],
    sources: &'s [SourceSettings],
) -> Option<&'s SourceSettings> {
    let text = name.get_ref();
    if let Some(source) = sources.iter().find(|s| &*s.name == text.as_str()) {
        return Some(source);
    }
    let declared = raw.iter().any(|s| {
        s.get_ref()
            .name
            .as_ref()
            .is_some_and(|n| n.get_ref() == text)
    });
    if !declared {
        d.err(
            name.span(),
            key,
            format!("{text:?} is not an [[aws_credentials]] name"),
        );
    }
    None
}

/// One table.
fn source(
    d: &mut Diags<'_>,
    key: &str,
    table: &Spanned<RawAwsCredentials>,
) -> Option<SourceSettings> {
    let r = table.get_ref();
    let before = d.count();
    let name = match &r.name {
        None => {
            d.err(
                table.span(),
                format!("{key}.name"),
                "missing: name this source",
            );
            None
        }
        Some(n) if valid_name(n.get_ref()) => Some(n.get_ref().as_str()),
        Some(n) => {
            d.err(
                n.span(),
                format!("{key}.name"),
                "must be 1 to 64 of A-Z a-z 0-9 _ - .",
            );
            None
        }
    };
    let kind = match &r.source {
        None => {
            d.err(
                table.span(),
                format!("{key}.source"),
                "missing: \"identity_pool\", \"web_identity\" or \"gateway\"",
            );
            None
        }
        Some(s) => match s.get_ref().as_str() {
            "identity_pool" => identity_pool(d, key, table),
            "web_identity" => web_identity(d, key, table),
            "gateway" => gateway(d, key, r),
            other => {
                d.err(
                    s.span(),
                    format!("{key}.source"),
                    format!("{other:?} must be identity_pool, web_identity or gateway"),
                );
                None
            }
        },
    };
    let timeout = ranged(
        d,
        &r.timeout,
        &format!("{key}.timeout"),
        DEFAULT_TIMEOUT,
        TIMEOUT_RANGE,
    );
    let refresh_margin = ranged(
        d,
        &r.refresh_margin,
        &format!("{key}.refresh_margin"),
        DEFAULT_REFRESH_MARGIN,
        (Duration::ZERO, MAX_REFRESH_MARGIN),
    );
    let cache_max_bytes = match &r.cache_max_bytes {
        None => DEFAULT_CACHE_MAX_BYTES,
        Some(v) if (MIN_CACHE_BYTES..=MAX_CACHE_BYTES).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            d.err(
                v.span(),
                format!("{key}.cache_max_bytes"),
                format!("must be between {MIN_CACHE_BYTES} and {MAX_CACHE_BYTES}"),
            );
            DEFAULT_CACHE_MAX_BYTES
        }
    };
    if d.count() > before {
        return None;
    }
    Some(SourceSettings {
        name: Arc::from(name?),
        kind: kind?,
        timeout,
        refresh_margin,
        cache_max_bytes,
    })
}

/// `source = "identity_pool"`.
fn identity_pool(
    d: &mut Diags<'_>,
    key: &str,
    table: &Spanned<RawAwsCredentials>,
) -> Option<SourceKind> {
    let r = table.get_ref();
    d.unused(
        key,
        "not used by source = \"identity_pool\"",
        &[
            ("role_arn", r.role_arn.as_ref().map(Spanned::span)),
            ("roles", r.roles.as_ref().map(Spanned::span)),
            ("duration", r.duration.as_ref().map(Spanned::span)),
        ],
    );
    let Some(pool) = &r.identity_pool_id else {
        d.err(
            table.span(),
            format!("{key}.identity_pool_id"),
            "missing: the identity pool's id, like \"us-east-1:0a1b2c3d-…\"",
        );
        return None;
    };
    let Some(pool_region) = identity_pool_region(pool.get_ref()) else {
        d.err(
            pool.span(),
            format!("{key}.identity_pool_id"),
            format!(
                "{:?} is not an identity pool id like \"us-east-1:0a1b2c3d-1234-…\"",
                pool.get_ref()
            ),
        );
        return None;
    };
    if let Some(region) = &r.region {
        if region.get_ref() != pool_region {
            d.err(
                region.span(),
                format!("{key}.region"),
                format!(
                    "{:?} is not the pool's region ({pool_region:?})",
                    region.get_ref()
                ),
            );
        }
    }
    let endpoint = d
        .http_url(&r.endpoint, &format!("{key}.endpoint"))
        .unwrap_or_else(|| format!("https://cognito-identity.{pool_region}.amazonaws.com/"));
    Some(SourceKind::IdentityPool(IdentityPool {
        identity_pool_id: pool.get_ref().clone(),
        region: pool_region.to_owned(),
        endpoint,
        guests: r.guests.as_ref().is_some_and(|g| *g.get_ref()),
    }))
}

/// `source = "web_identity"`.
fn web_identity(
    d: &mut Diags<'_>,
    key: &str,
    table: &Spanned<RawAwsCredentials>,
) -> Option<SourceKind> {
    let r = table.get_ref();
    d.unused(
        key,
        "not used by source = \"web_identity\"",
        &[
            (
                "identity_pool_id",
                r.identity_pool_id.as_ref().map(Spanned::span),
            ),
            ("guests", r.guests.as_ref().map(Spanned::span)),
        ],
    );
    let role_arn = r.role_arn.as_ref().and_then(|a| {
        if is_role_arn(a.get_ref()) {
            Some(a.get_ref().clone())
        } else {
            d.err(
                a.span(),
                format!("{key}.role_arn"),
                format!(
                    "{:?} is not an IAM role ARN like \"arn:aws:iam::123456789012:role/name\"",
                    a.get_ref()
                ),
            );
            None
        }
    });
    let mut roles = Vec::new();
    for (j, role) in strings(&r.roles).into_iter().enumerate() {
        if is_role_arn(role.get_ref()) {
            roles.push(role.get_ref().clone());
        } else {
            d.err(
                role.span(),
                format!("{key}.roles[{j}]"),
                format!(
                    "{:?} is not an IAM role ARN like \"arn:aws:iam::123456789012:role/name\"",
                    role.get_ref()
                ),
            );
        }
    }
    match (&r.role_arn, &r.roles) {
        (None, None) => d.err(
            table.span(),
            format!("{key}.role_arn"),
            "missing: give role_arn, or roles that cognito:preferred_role may choose from",
        ),
        (_, Some(list)) if list.get_ref().is_empty() => d.err(
            list.span(),
            format!("{key}.roles"),
            "is empty: list the roles a token may choose, or leave it out",
        ),
        _ => {}
    }
    let region = checked_region(d, key, &r.region);
    let endpoint = d
        .http_url(&r.endpoint, &format!("{key}.endpoint"))
        .unwrap_or_else(|| sts_endpoint(region.as_deref()));
    let duration = r.duration.as_ref().map(|_| {
        ranged(
            d,
            &r.duration,
            &format!("{key}.duration"),
            DURATION_RANGE.0,
            DURATION_RANGE,
        )
    });
    Some(SourceKind::WebIdentity(WebIdentity {
        role_arn,
        roles,
        endpoint,
        duration,
    }))
}

/// `source = "gateway"`.
fn gateway(d: &mut Diags<'_>, key: &str, r: &RawAwsCredentials) -> Option<SourceKind> {
    d.unused(
        key,
        "not used by source = \"gateway\"",
        &[
            (
                "identity_pool_id",
                r.identity_pool_id.as_ref().map(Spanned::span),
            ),
            ("guests", r.guests.as_ref().map(Spanned::span)),
            ("role_arn", r.role_arn.as_ref().map(Spanned::span)),
            ("roles", r.roles.as_ref().map(Spanned::span)),
            ("duration", r.duration.as_ref().map(Spanned::span)),
        ],
    );
    let region = checked_region(d, key, &r.region);
    let endpoint = d.http_url(&r.endpoint, &format!("{key}.endpoint"));
    Some(SourceKind::Gateway(Gateway {
        sts_endpoint: endpoint.or_else(|| region.map(|r| sts_endpoint(Some(&r)))),
    }))
}

/// `region`, checked for shape.
fn checked_region(
    d: &mut Diags<'_>,
    key: &str,
    region: &Option<Spanned<String>>,
) -> Option<String> {
    let r = region.as_ref()?;
    if is_region(r.get_ref()) {
        Some(r.get_ref().clone())
    } else {
        d.err(
            r.span(),
            format!("{key}.region"),
            format!("{:?} is not a region like \"us-east-1\"", r.get_ref()),
        );
        None
    }
}

/// A duration within `range` (inclusive); `default` when absent or wrong (reported).
fn ranged(
    d: &mut Diags<'_>,
    value: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Duration {
    let got = d.duration(value, key, default);
    if let Some(v) = value {
        if parse_duration(v.get_ref()).is_ok() && !(min..=max).contains(&got) {
            d.err(
                v.span(),
                key,
                format!("must be between {} and {}", human(min), human(max)),
            );
            return default;
        }
    }
    got
}

/// `15m`, `12h`, `100ms`, as the config spells durations.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// A source name: a metric label and a reference, so short and plain.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`: lowercase words and a number, by dashes.
fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The region of an identity pool id `region:uuid` (lowercase hex UUID, as Cognito writes it).
fn identity_pool_region(id: &str) -> Option<&str> {
    let (region, uuid) = id.split_once(':')?;
    let groups: Vec<&str> = uuid.split('-').collect();
    let uuid_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    (is_region(region) && uuid_ok).then_some(region)
}

/// `arn:{aws|aws-cn|aws-us-gov|…}:iam::{12 digits}:role/{path/}name`, with IAM's name charset.
fn is_role_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let partition_ok = partition == "aws" || partition.starts_with("aws-");
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let Some(path_name) = resource.strip_prefix("role/") else {
        return false;
    };
    let name = path_name.rsplit('/').next().unwrap_or("");
    partition_ok
        && account_ok
        && (1..=64).contains(&name.len())
        && path_name.len() <= 512 + 64
        && path_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
}

#[cfg(test)]
mod tests {
    use crate::aws::SourceKind;
    use crate::compile::compile;

    const BASE: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n";
    const ROUTE: &str = "\n[[routes]]\npath = \"/**\"\nauth = \"none\"\n";

    fn errors(tables: &str) -> Vec<String> {
        compile("c.toml", &format!("{BASE}{tables}{ROUTE}"))
            .unwrap_err()
            .0
    }

    #[test]
    fn the_three_sources_compile() {
        let c = compile(
            "c.toml",
            &format!(
                r#"{BASE}
[[aws_credentials]]
name = "users"
source = "identity_pool"
identity_pool_id = "us-east-1:0a1b2c3d-1234-5678-9abc-def012345678"
guests = true

[[aws_credentials]]
name = "s3-users"
source = "web_identity"
role_arn = "arn:aws:iam::123456789012:role/readers"
roles = ["arn:aws:iam::123456789012:role/path/writers"]
region = "eu-west-1"
duration = "30m"
timeout = "2s"

[[aws_credentials]]
name = "self"
source = "gateway"
{ROUTE}"#
            ),
        )
        .unwrap();
        let a = &c.aws_credentials;
        assert_eq!(a.len(), 3);
        match &a[0].kind {
            SourceKind::IdentityPool(p) => {
                assert_eq!(p.region, "us-east-1");
                assert_eq!(
                    p.endpoint,
                    "https://cognito-identity.us-east-1.amazonaws.com/"
                );
                assert!(p.guests);
            }
            other => panic!("{other:?}"),
        }
        match &a[1].kind {
            SourceKind::WebIdentity(w) => {
                assert_eq!(w.endpoint, "https://sts.eu-west-1.amazonaws.com/");
                assert_eq!(w.duration, Some(std::time::Duration::from_secs(1800)));
                assert_eq!(w.roles.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a[1].timeout, std::time::Duration::from_secs(2));
        assert_eq!(
            a[2].kind,
            SourceKind::Gateway(crate::aws::Gateway { sts_endpoint: None })
        );
        assert_eq!(a[2].timeout, crate::aws::DEFAULT_TIMEOUT);
        let table = c.describe();
        assert!(
            table.contains(
                "aws_credentials \"users\"  source=identity_pool  \
                 pool=us-east-1:0a1b2c3d-1234-5678-9abc-def012345678  \
                 endpoint=https://cognito-identity.us-east-1.amazonaws.com/  guests=true"
            ),
            "{table}"
        );
        assert!(table.contains("aws_credentials \"self\"  source=gateway  sts=from AWS_REGION"));
    }

    #[test]
    fn problems_point_at_the_key() {
        let text = errors(
            r#"
[[aws_credentials]]
name = "a"
source = "identity_pools"

[[aws_credentials]]
name = "a"
source = "identity_pool"
identity_pool_id = "us-east-1_AbC123"

[[aws_credentials]]
name = "b"
source = "web_identity"
role_arn = "arn:aws:iam::1234:user/bob"
guests = true

[[aws_credentials]]
name = "c"
source = "web_identity"

[[aws_credentials]]
source = "gateway"
roles = []
duration = "1h"

[[aws_credentials]]
name = "d"
source = "identity_pool"
identity_pool_id = "us-east-1:0a1b2c3d-1234-5678-9abc-def012345678"
region = "eu-west-1"
duration = "5m"
timeout = "5m"
"#,
        )
        .join("\n");
        for expected in [
            "c.toml:6:10: aws_credentials[0].source: \"identity_pools\" must be identity_pool, web_identity or gateway",
            "c.toml:9:8: aws_credentials[1].name: duplicate name \"a\"",
            "c.toml:11:20: aws_credentials[1].identity_pool_id: \"us-east-1_AbC123\" is not an identity pool id",
            "c.toml:16:12: aws_credentials[2].role_arn: \"arn:aws:iam::1234:user/bob\" is not an IAM role ARN",
            "c.toml:17:10: aws_credentials[2].guests: not used by source = \"web_identity\"",
            "aws_credentials[3].role_arn: missing: give role_arn, or roles",
            "aws_credentials[4].name: missing",
            "aws_credentials[4].roles: not used by source = \"gateway\"",
            "aws_credentials[4].duration: not used by source = \"gateway\"",
            "aws_credentials[5].region: \"eu-west-1\" is not the pool's region (\"us-east-1\")",
            "aws_credentials[5].duration: not used by source = \"identity_pool\"",
            "aws_credentials[5].timeout: must be between 100ms and 1m",
        ] {
            assert!(text.contains(expected), "{expected}\n---\n{text}");
        }
    }

    #[test]
    fn formats() {
        use super::*;
        assert!(is_role_arn("arn:aws:iam::123456789012:role/a"));
        assert!(is_role_arn("arn:aws-cn:iam::123456789012:role/p/q/r"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:role/"));
        assert!(!is_role_arn("arn:aws:s3:::bucket"));
        assert!(!is_role_arn("arn:aws:iam::12345678901x:role/a"));
        assert!(is_region("us-gov-west-1"));
        assert!(!is_region("US-east-1"));
        assert!(!is_region("useast1"));
        assert_eq!(
            identity_pool_region("ap-southeast-2:0a1b2c3d-1234-5678-9abc-def012345678"),
            Some("ap-southeast-2")
        );
        assert_eq!(identity_pool_region("us-east-1:not-a-uuid"), None);
        assert_eq!(human(Duration::from_secs(900)), "15m");
    }
}

//! `[[authorizers]]`: external authorizers (`type = "lambda"` over HTTP or the Lambda Invoke
//! API, `type = "ext_authz"`) that routes name with `authorizer = "NAME"`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::diags::{Diags, strings};
use crate::authorizer::{
    AuthorizerSettings, CacheKey, ContextVar, DEFAULT_API_ARN, DEFAULT_CACHE_BYTES,
    DEFAULT_TIMEOUT, DEFAULT_TTL, IdentitySource, Invoke, Kind, MAX_TTL, ResponseFormat,
    valid_api_arn,
};
use crate::aws::{SourceKind, SourceSettings};
use crate::config::{RawAuthorizer, RawAwsCredentials, RawRoute};
use crate::headers::HeaderPlan;

/// The longest `timeout`.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Every `[[authorizers]]` table, in file order. Names are unique.
pub(super) fn compile(
    d: &mut Diags<'_>,
    raw: &[Spanned<RawAuthorizer>],
) -> Vec<AuthorizerSettings> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        let key = format!("authorizers[{i}]");
        let r = a.get_ref();
        let name = r.name.get_ref();
        if name.is_empty() || name.chars().any(|c| c.is_control() || c == '"') {
            d.err(
                r.name.span(),
                format!("{key}.name"),
                "must be a non-empty name without quotes",
            );
        } else if !names.insert(name.clone()) {
            d.err(
                r.name.span(),
                format!("{key}.name"),
                format!("{name:?} is used twice"),
            );
        }
        if let Some(settings) = authorizer(d, &key, r) {
            out.push(settings);
        }
    }
    out
}

/// One table.
fn authorizer(d: &mut Diags<'_>, key: &str, r: &RawAuthorizer) -> Option<AuthorizerSettings> {
    let before = d.count();
    let lambda = match r.kind.get_ref().as_str() {
        "lambda" => true,
        "ext_authz" => false,
        other => {
            d.err(
                r.kind.span(),
                format!("{key}.type"),
                format!("{other:?} must be lambda or ext_authz"),
            );
            return None;
        }
    };
    let delivery = delivery(d, key, r, lambda);
    if lambda {
        d.unused(
            key,
            "only with type = \"ext_authz\"",
            &[
                (
                    "allowed_headers",
                    r.allowed_headers.as_ref().map(Spanned::span),
                ),
                (
                    "upstream_headers",
                    r.upstream_headers.as_ref().map(Spanned::span),
                ),
                (
                    "client_headers",
                    r.client_headers.as_ref().map(Spanned::span),
                ),
            ],
        );
    } else {
        d.unused(
            key,
            "only with type = \"lambda\"",
            &[
                ("response", r.response.as_ref().map(Spanned::span)),
                (
                    "payload_format",
                    r.payload_format.as_ref().map(Spanned::span),
                ),
                ("api_arn", r.api_arn.as_ref().map(Spanned::span)),
                (
                    "context_headers",
                    r.context_headers.as_ref().map(Spanned::span),
                ),
            ],
        );
    }
    let payload_v1 = d.choice(
        &r.payload_format,
        &format!("{key}.payload_format"),
        &[("2.0", false), ("1.0", true)],
        false,
    );
    // Payload format 1.0 answers with IAM policies only (as API Gateway requires).
    let response = d.choice(
        &r.response,
        &format!("{key}.response"),
        &[
            ("simple", ResponseFormat::Simple),
            ("iam", ResponseFormat::Iam),
        ],
        if payload_v1 {
            ResponseFormat::Iam
        } else {
            ResponseFormat::Simple
        },
    );
    if payload_v1 && response == ResponseFormat::Simple {
        if let Some(r) = &r.response {
            d.err(
                r.span(),
                format!("{key}.response"),
                "payload_format = \"1.0\" answers with IAM policies: response = \"iam\"",
            );
        }
    }
    let api_arn = match &r.api_arn {
        None => DEFAULT_API_ARN.to_owned(),
        Some(arn) if valid_api_arn(arn.get_ref()) => arn.get_ref().clone(),
        Some(arn) => {
            d.err(
                arn.span(),
                format!("{key}.api_arn"),
                format!(
                    "{:?} is not arn:aws:execute-api:REGION:ACCOUNT:API_ID/STAGE (no wildcards)",
                    arn.get_ref()
                ),
            );
            String::new()
        }
    };
    let mut identity_sources = Vec::new();
    let mut identity_source_text = Vec::new();
    for source in strings(&r.identity_source) {
        match identity_source(source.get_ref()) {
            Ok(s) => {
                identity_sources.push(s);
                identity_source_text.push(source.get_ref().clone());
            }
            Err(reason) => d.err(source.span(), format!("{key}.identity_source"), reason),
        }
    }
    let ttl = d.duration(&r.ttl, &format!("{key}.ttl"), DEFAULT_TTL);
    if ttl > MAX_TTL {
        if let Some(t) = &r.ttl {
            d.err(t.span(), format!("{key}.ttl"), "must be at most 1h (3600s)");
        }
    }
    if !ttl.is_zero() && identity_sources.is_empty() {
        let span = r
            .identity_source
            .as_ref()
            .map_or(r.name.span(), Spanned::span);
        d.err(
            span,
            format!("{key}.identity_source"),
            "required when decisions are cached (ttl is not 0s): the cache is keyed by it",
        );
    }
    let cache_key = d.choice(
        &r.cache_key,
        &format!("{key}.cache_key"),
        &[("route", CacheKey::Route), ("identity", CacheKey::Identity)],
        CacheKey::Route,
    );
    let cache_bytes = match &r.cache_bytes {
        None => DEFAULT_CACHE_BYTES,
        Some(b) if (1024..=1 << 32).contains(b.get_ref()) => *b.get_ref(),
        Some(b) => {
            d.err(
                b.span(),
                format!("{key}.cache_bytes"),
                "must be between 1024 and 4294967296",
            );
            DEFAULT_CACHE_BYTES
        }
    };
    let timeout = d.duration(&r.timeout, &format!("{key}.timeout"), DEFAULT_TIMEOUT);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        if let Some(t) = &r.timeout {
            d.err(
                t.span(),
                format!("{key}.timeout"),
                "must be more than 0s and at most 30s",
            );
        }
    }
    let mut context_headers = Vec::new();
    if let Some(map) = &r.context_headers {
        for (header, context_key) in map.get_ref() {
            let field = format!("{key}.context_headers.{header}");
            if let Some(name) = super::headers::settable_name(d, header, map.span(), &field) {
                if context_key.get_ref().is_empty() {
                    d.err(context_key.span(), &field, "names no context key");
                }
                context_headers.push((name, context_key.get_ref().clone()));
            }
        }
    }
    let header_list = |d: &mut Diags<'_>,
                       list: &Option<Spanned<Vec<Spanned<String>>>>,
                       field: &str,
                       managed: bool| {
        strings(list)
            .into_iter()
            .filter_map(|h| {
                let field = format!("{key}.{field}");
                if managed {
                    super::headers::settable_name(d, h.get_ref(), h.span(), &field)
                } else {
                    HeaderName::from_bytes(h.get_ref().to_ascii_lowercase().as_bytes())
                        .map_err(|_| {
                            d.err(
                                h.span(),
                                &field,
                                format!("{:?} is not a header name", h.get_ref()),
                            )
                        })
                        .ok()
                }
            })
            .collect::<Vec<_>>()
    };
    let allowed_headers = match &r.allowed_headers {
        None => vec![http::header::AUTHORIZATION],
        some => header_list(d, some, "allowed_headers", false),
    };
    let upstream_headers = header_list(d, &r.upstream_headers, "upstream_headers", true);
    let client_headers = r
        .client_headers
        .as_ref()
        .map(|_| header_list(d, &r.client_headers, "client_headers", false));
    let send_cookies = r.send_cookies.as_ref().map_or(lambda, |b| *b.get_ref());
    if d.count() > before {
        return None;
    }
    let (url, invoke) = delivery?;
    Some(AuthorizerSettings {
        name: Arc::from(r.name.get_ref().as_str()),
        kind: if lambda {
            Kind::Lambda {
                response,
                api_arn,
                payload_v1,
            }
        } else {
            Kind::ExtAuthz {
                allowed_headers,
                upstream_headers,
                client_headers,
            }
        },
        url,
        invoke,
        identity_sources,
        identity_source_text,
        ttl,
        cache_key,
        cache_bytes,
        timeout,
        context_headers,
        send_cookies,
    })
}

/// Where a table's calls go: `url`, or (`lambda` only) the Invoke API URL of `function` with
/// what signs the call (its credentials are resolved by [`credentials`]).
fn delivery(
    d: &mut Diags<'_>,
    key: &str,
    r: &RawAuthorizer,
    lambda: bool,
) -> Option<(String, Option<Invoke>)> {
    let invoke_keys = [
        ("region", &r.region),
        ("credentials", &r.credentials),
        ("endpoint", &r.endpoint),
        ("qualifier", &r.qualifier),
    ];
    let function = match (&r.url, &r.function) {
        (Some(_), Some(f)) => {
            d.err(
                f.span(),
                format!("{key}.function"),
                "give url (an HTTP endpoint) or function (the Lambda Invoke API), not both",
            );
            return None;
        }
        (None, None) => {
            d.err(
                r.name.span(),
                format!("{key}.url"),
                if lambda {
                    "required: url (an HTTP endpoint) or function (the Lambda Invoke API)"
                } else {
                    "required"
                },
            );
            return None;
        }
        (Some(url), None) => {
            let present: Vec<_> = invoke_keys
                .iter()
                .map(|(field, value)| (*field, value.as_ref().map(Spanned::span)))
                .collect();
            d.unused(key, "only with function", &present);
            return d
                .http_url(&Some(url.clone()), &format!("{key}.url"))
                .map(|u| (u, None));
        }
        (None, Some(f)) => f,
    };
    if !lambda {
        d.err(
            function.span(),
            format!("{key}.function"),
            "only with type = \"lambda\"",
        );
        return None;
    }
    let before = d.count();
    let arn_region = match function_name(function.get_ref()) {
        Ok(region) => region,
        Err(reason) => {
            d.err(function.span(), format!("{key}.function"), reason);
            None
        }
    };
    let region = match (&r.region, arn_region) {
        (Some(region), _) if !valid_region(region.get_ref()) => {
            d.err(
                region.span(),
                format!("{key}.region"),
                format!("{:?} is not a region name (us-east-1)", region.get_ref()),
            );
            None
        }
        (Some(region), Some(arn)) if region.get_ref() != arn => {
            d.err(
                region.span(),
                format!("{key}.region"),
                format!(
                    "{:?} is not the function ARN's region {arn:?}",
                    region.get_ref()
                ),
            );
            None
        }
        (Some(region), _) => Some(region.get_ref().clone()),
        (None, Some(arn)) => Some(arn.to_owned()),
        (None, None) => {
            d.err(
                function.span(),
                format!("{key}.region"),
                "required unless function is a full ARN",
            );
            None
        }
    };
    if r.credentials.is_none() {
        d.err(
            function.span(),
            format!("{key}.credentials"),
            "required with function: the [[aws_credentials]] source (source = \"gateway\") whose credentials sign the call",
        );
    }
    let endpoint = d.http_url(&r.endpoint, &format!("{key}.endpoint"));
    let qualifier = r.qualifier.as_ref().map(|q| {
        let text = q.get_ref();
        let ok = (1..=128).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"$_-".contains(&b));
        if !ok {
            d.err(
                q.span(),
                format!("{key}.qualifier"),
                format!("{text:?} is not an alias or version ($LATEST, 7, live)"),
            );
        }
        text.clone()
    });
    let region = region?;
    if d.count() > before {
        return None;
    }
    let base = endpoint.unwrap_or_else(|| {
        let domain = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        format!("https://lambda.{region}.{domain}")
    });
    // As AWS's SDKs send it: the ARN's `:` percent-encoded in the path.
    let mut url = format!(
        "{}/2015-03-31/functions/{}/invocations",
        base.trim_end_matches('/'),
        function.get_ref().replace(':', "%3A")
    );
    if let Some(q) = &qualifier {
        url.push_str("?Qualifier=");
        url.push_str(&q.replace('$', "%24"));
    }
    Some((
        url,
        Some(Invoke {
            function: function.get_ref().clone(),
            region,
            qualifier,
            credentials: None,
        }),
    ))
}

/// Checks a function name as Lambda takes it (`NAME`, `ACCOUNT:function:NAME`,
/// `arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME`); a full ARN's region.
fn function_name(text: &str) -> Result<Option<&str>, String> {
    let name_ok = |n: &str| {
        (1..=64).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let account_ok = |a: &str| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = text.split(':').collect();
    let region = match parts.as_slice() {
        [name] if name_ok(name) => None,
        [account, "function", name] if account_ok(account) && name_ok(name) => None,
        [
            "arn",
            partition,
            "lambda",
            region,
            account,
            "function",
            name,
        ] if partition.starts_with("aws")
            && valid_region(region)
            && account_ok(account)
            && name_ok(name) =>
        {
            Some(*region)
        }
        [.., "function", _, _] => {
            return Err(format!(
                "{text:?}: put the alias or version in qualifier, not in the ARN"
            ));
        }
        _ => {
            return Err(format!(
                "{text:?} is not a function name, ACCOUNT:function:NAME or arn:aws:lambda:REGION:ACCOUNT:function:NAME"
            ));
        }
    };
    Ok(region)
}

/// A region name as AWS spells them (`us-east-1`, `cn-north-1`, `us-gov-west-1`).
fn valid_region(text: &str) -> bool {
    (1..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// Resolves each `function` authorizer's `credentials` to its `[[aws_credentials]]` source,
/// which must be `source = "gateway"`: jwtgate invokes the function as itself, never as a user.
pub(super) fn credentials(
    d: &mut Diags<'_>,
    raw: &[Spanned<RawAuthorizer>],
    raw_sources: &[Spanned<RawAwsCredentials>],
    sources: &[SourceSettings],
    authorizers: &mut [AuthorizerSettings],
) {
    for (i, a) in raw.iter().enumerate() {
        let r = a.get_ref();
        let (Some(_), Some(name)) = (&r.function, &r.credentials) else {
            continue;
        };
        let key = format!("authorizers[{i}].credentials");
        let text = name.get_ref();
        let Some(source) = super::aws_credentials::named(d, &key, name, raw_sources, sources)
        else {
            continue;
        };
        if !matches!(source.kind, SourceKind::Gateway(_)) {
            d.err(
                name.span(),
                key,
                format!(
                    "{text:?} is a source = \"{}\" source; jwtgate invokes the function as itself: use a source = \"gateway\" one",
                    source.kind.as_str()
                ),
            );
            continue;
        }
        if let Some(invoke) = authorizers
            .iter_mut()
            .find(|s| *s.name == **r.name.get_ref())
            .and_then(|s| s.invoke.as_mut())
        {
            invoke.credentials = Some(source.clone());
        }
    }
}

/// One identity source as API Gateway writes it for HTTP APIs.
fn identity_source(text: &str) -> Result<IdentitySource, String> {
    if let Some(name) = text.strip_prefix("$request.header.") {
        return HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map(IdentitySource::Header)
            .map_err(|_| format!("{text:?}: {name:?} is not a header name"));
    }
    if let Some(name) = text.strip_prefix("$request.querystring.") {
        if name.is_empty() {
            return Err(format!("{text:?} names no query parameter"));
        }
        return Ok(IdentitySource::Query(name.to_owned()));
    }
    let context = match text {
        "$context.identity.sourceIp" => ContextVar::SourceIp,
        "$context.routeKey" => ContextVar::RouteKey,
        "$context.httpMethod" => ContextVar::HttpMethod,
        "$context.path" => ContextVar::Path,
        _ => {
            return Err(format!(
                "{text:?} must be $request.header.NAME, $request.querystring.NAME, $context.identity.sourceIp, $context.routeKey, $context.httpMethod or $context.path"
            ));
        }
    };
    Ok(IdentitySource::Context(context))
}

/// Across tables: the headers authorizers set (`context_headers`, `upstream_headers`) may not
/// be claim or capture headers, and are removed from every client request, on every route,
/// like identity headers.
pub(super) fn manage_headers(
    d: &mut Diags<'_>,
    raw: &[Spanned<RawAuthorizer>],
    compiled: &[AuthorizerSettings],
    plan: &mut HeaderPlan,
) {
    let taken: Vec<HeaderName> = plan.identity.clone();
    let mut added = false;
    for settings in compiled {
        let index = raw
            .iter()
            .position(|r| r.get_ref().name.get_ref().as_str() == &*settings.name)
            .unwrap_or(0);
        let span = raw.get(index).map_or(0..0, Spanned::span);
        let mut names: Vec<&HeaderName> = settings.context_headers.iter().map(|(n, _)| n).collect();
        if let Kind::ExtAuthz {
            upstream_headers, ..
        } = &settings.kind
        {
            names.extend(upstream_headers);
        }
        for name in names {
            if taken.contains(name) {
                d.err(
                    span.clone(),
                    format!("authorizers[{index}]"),
                    format!(
                        "{:?} is already a claim, capture or identity header",
                        name.as_str()
                    ),
                );
            } else {
                plan.identity.push(name.clone());
                added = true;
            }
        }
    }
    if added {
        plan.identity.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        plan.identity.dedup();
    }
}

/// A route's `authorizer = "NAME"`: the index of that authorizer.
pub(super) fn route_index(
    d: &mut Diags<'_>,
    key: &str,
    r: &RawRoute,
    names: &[Arc<str>],
) -> Option<usize> {
    let name = r.authorizer.as_ref()?;
    let index = names.iter().position(|n| **n == *name.get_ref());
    if index.is_none() {
        d.err(
            name.span(),
            format!("{key}.authorizer"),
            format!("no authorizer is named {:?}", name.get_ref()),
        );
    }
    index
}

#[cfg(test)]
mod tests {
    use crate::compile::compile;

    const BASE: &str = r#"
[upstream]
url = "http://127.0.0.1:3000"
"#;

    fn errors(extra: &str) -> String {
        compile("a.toml", &format!("{BASE}{extra}"))
            .map(|_| String::new())
            .unwrap_or_else(|e| e.0.join("\n"))
    }

    #[test]
    fn a_good_table_compiles_and_check_shows_it() {
        let config = compile(
            "a.toml",
            &format!(
                r#"{BASE}
[[authorizers]]
name = "tenants"
type = "lambda"
url = "http://127.0.0.1:9000/authorize"
response = "iam"
identity_source = ["$request.header.Authorization", "$request.querystring.key"]
ttl = "60s"
context_headers = {{ "x-tenant" = "tenantId" }}

[[routes]]
path = "/orders/{{id}}/**"
auth = "none"
authorizer = "tenants"
"#
            ),
        )
        .unwrap();
        let text = config.describe();
        assert!(
            text.contains(r#"authorizer "tenants"  type=lambda"#),
            "{text}"
        );
        assert!(
            text.contains("ttl=60s  cache_key=route  timeout=1000ms  payload=2.0  response=iam"),
            "{text}"
        );
        assert!(text.contains("context_headers=x-tenant=tenantId"), "{text}");
        assert!(text.contains("authorizer=tenants"), "{text}");
        let (_, _, route) = config.routes.iter().next().unwrap();
        let uses = route.authorizer.as_ref().unwrap();
        assert_eq!(&*uses.route_path, "/orders/{id}/{proxy+}");
        assert_eq!(uses.proxy_after, Some(2));
        assert!(
            config.headers.identity.iter().any(|h| h == "x-tenant"),
            "stripped from clients"
        );
    }

    const GATEWAY: &str = r#"
[[aws_credentials]]
name = "self"
source = "gateway"

[[aws_credentials]]
name = "users"
source = "web_identity"
role_arn = "arn:aws:iam::123456789012:role/readers"
"#;

    #[test]
    fn a_function_is_invoked_at_its_region_s_endpoint() {
        let config = compile(
            "a.toml",
            &format!(
                r#"{BASE}{GATEWAY}
[[authorizers]]
name = "arn"
type = "lambda"
function = "arn:aws:lambda:eu-west-1:123456789012:function:tenants"
credentials = "self"
qualifier = "$LATEST"
ttl = "0s"

[[authorizers]]
name = "named"
type = "lambda"
function = "tenants"
region = "cn-north-1"
credentials = "self"
ttl = "0s"

[[authorizers]]
name = "local"
type = "lambda"
function = "123456789012:function:tenants"
region = "us-east-1"
endpoint = "http://127.0.0.1:9001/"
credentials = "self"
qualifier = "live"
ttl = "0s"

[[routes]]
path = "/x"
auth = "none"
"#
            ),
        )
        .unwrap();
        let a = &config.authorizers;
        assert_eq!(
            a[0].url,
            "https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Atenants/invocations?Qualifier=%24LATEST"
        );
        let invoke = a[0].invoke.as_ref().unwrap();
        assert_eq!(invoke.region, "eu-west-1");
        assert_eq!(invoke.credentials.as_ref().unwrap().name.as_ref(), "self");
        assert_eq!(
            a[1].url,
            "https://lambda.cn-north-1.amazonaws.com.cn/2015-03-31/functions/tenants/invocations"
        );
        assert_eq!(
            a[2].url,
            "http://127.0.0.1:9001/2015-03-31/functions/123456789012%3Afunction%3Atenants/invocations?Qualifier=live"
        );
        assert!(
            a.iter()
                .all(|a| a.invoke.as_ref().unwrap().credentials.is_some())
        );
    }

    #[test]
    fn bad_invoke_tables_are_reported_at_the_key() {
        let text = errors(&format!(
            r#"{GATEWAY}
[[authorizers]]
name = "both"
type = "lambda"
url = "http://127.0.0.1:9000/"
function = "tenants"

[[authorizers]]
name = "neither"
type = "lambda"

[[authorizers]]
name = "no-region"
type = "lambda"
function = "tenants"
credentials = "self"

[[authorizers]]
name = "user-credentials"
type = "lambda"
function = "arn:aws:lambda:us-east-1:123456789012:function:tenants"
region = "eu-west-1"
credentials = "users"

[[authorizers]]
name = "bad-names"
type = "lambda"
function = "arn:aws:lambda:us-east-1:123456789012:function:tenants:live"
region = "US East"
qualifier = "a b"
endpoint = "lambda.local"

[[authorizers]]
name = "url-only"
type = "lambda"
url = "http://127.0.0.1:9000/"
region = "us-east-1"
credentials = "self"

[[authorizers]]
name = "ext"
type = "ext_authz"
function = "tenants"

[[authorizers]]
name = "unknown-source"
type = "lambda"
function = "tenants"
region = "us-east-1"
credentials = "nobody"
ttl = "0s"
"#
        ));
        for want in [
            "a.toml:18:12: authorizers[0].function: give url (an HTTP endpoint) or function (the Lambda Invoke API), not both",
            "a.toml:21:8: authorizers[1].url: required: url (an HTTP endpoint) or function (the Lambda Invoke API)",
            "a.toml:27:12: authorizers[2].region: required unless function is a full ARN",
            "a.toml:34:10: authorizers[3].region: \"eu-west-1\" is not the function ARN's region \"us-east-1\"",
            "a.toml:40:12: authorizers[4].function: \"arn:aws:lambda:us-east-1:123456789012:function:tenants:live\": put the alias or version in qualifier, not in the ARN",
            "a.toml:41:10: authorizers[4].region: \"US East\" is not a region name (us-east-1)",
            "a.toml:40:12: authorizers[4].credentials: required with function",
            "a.toml:42:13: authorizers[4].qualifier: \"a b\" is not an alias or version",
            "a.toml:43:12: authorizers[4].endpoint: \"lambda.local\" is not an http(s) URL",
            "a.toml:49:10: authorizers[5].region: only with function",
            "a.toml:50:15: authorizers[5].credentials: only with function",
            "a.toml:55:12: authorizers[6].function: only with type = \"lambda\"",
            "a.toml:62:15: authorizers[7].credentials: \"nobody\" is not an [[aws_credentials]] name",
        ] {
            assert!(text.contains(want), "{want}\n---\n{text}");
        }
        // The ARN's region is wrong, so the table is not compiled, and its credentials are
        // not checked; a table with only the source wrong is.
        let text = errors(&format!(
            r#"{GATEWAY}
[[authorizers]]
name = "user-credentials"
type = "lambda"
function = "tenants"
region = "us-east-1"
credentials = "users"
ttl = "0s"
"#
        ));
        assert!(
            text.contains("a.toml:19:15: authorizers[0].credentials: \"users\" is a source = \"web_identity\" source; jwtgate invokes the function as itself: use a source = \"gateway\" one"),
            "{text}"
        );
    }

    #[test]
    fn bad_tables_are_reported_at_the_key() {
        let text = errors(
            r#"
[[authorizers]]
name = "a"
type = "lambda"
url = "ftp://x"
identity_source = ["$request.body.x", "$stageVariables.x"]
ttl = "2h"
timeout = "0s"
cache_key = "everything"
context_headers = { "authorization" = "x", "x_user" = "y" }
allowed_headers = ["authorization"]

[[routes]]
path = "/x"
auth = "none"
"#,
        );
        assert!(text.contains("a.toml:8:7: authorizers[0].url:"), "{text}");
        assert!(
            text.contains(
                "a.toml:9:20: authorizers[0].identity_source: \"$request.body.x\" must be"
            ),
            "{text}"
        );
        assert!(
            text.contains("authorizers[0].identity_source: \"$stageVariables.x\""),
            "{text}"
        );
        assert!(
            text.contains("a.toml:10:7: authorizers[0].ttl: must be at most 1h"),
            "{text}"
        );
        assert!(
            text.contains("authorizers[0].timeout: must be more than 0s"),
            "{text}"
        );
        assert!(
            text.contains("authorizers[0].cache_key: \"everything\" must be route, identity"),
            "{text}"
        );
        assert!(
            text.contains(
                "authorizers[0].context_headers.authorization: \"authorization\" is managed"
            ),
            "{text}"
        );
        assert!(
            text.contains("authorizers[0].context_headers.x_user:"),
            "{text}"
        );
        assert!(
            text.contains("authorizers[0].allowed_headers: only with type = \"ext_authz\""),
            "{text}"
        );
        // `function` (the Lambda Invoke API) is the other delivery, never both.
        let text = errors(
            "[[authorizers]]\nname = \"f\"\ntype = \"lambda\"\nurl = \"http://127.0.0.1:1\"\nfunction = \"f\"\n",
        );
        assert!(
            text.contains("a.toml:8:12: authorizers[0].function: give url (an HTTP endpoint) or function (the Lambda Invoke API), not both"),
            "{text}"
        );
        let text = errors(
            r#"
[[authorizers]]
name = "b"
type = "opa"
url = "http://127.0.0.1:1"

[[authorizers]]
name = "c"
type = "lambda"
url = "http://127.0.0.1:1"

[[authorizers]]
name = "c"
type = "lambda"
url = "http://127.0.0.1:1"
ttl = "0s"

[[routes]]
path = "/x"
auth = "none"
authorizer = "nobody"
"#,
        );
        assert!(
            text.contains("authorizers[0].type: \"opa\" must be lambda or ext_authz"),
            "{text}"
        );
        assert!(
            text.contains("authorizers[1].identity_source: required when decisions are cached"),
            "{text}"
        );
        assert!(
            text.contains("authorizers[2].name: \"c\" is used twice"),
            "{text}"
        );
        assert!(
            text.contains("routes[0].authorizer: no authorizer is named \"nobody\""),
            "{text}"
        );
    }

    #[test]
    fn payload_format_1_0_answers_with_policies() {
        let table = |extra: &str| {
            format!(
                "[[authorizers]]\nname = \"v1\"\ntype = \"lambda\"\nurl = \"http://127.0.0.1:1\"\nttl = \"0s\"\npayload_format = \"1.0\"\n{extra}\n[[routes]]\npath = \"/x\"\nauth = \"none\"\nauthorizer = \"v1\"\n"
            )
        };
        assert_eq!(errors(&table("")), "");
        let text = errors(&table("response = \"simple\""));
        assert!(
            text.contains(
                "authorizers[0].response: payload_format = \"1.0\" answers with IAM policies"
            ),
            "{text}"
        );
        let text = errors(&table("").replace("1.0", "3.0"));
        assert!(
            text.contains("authorizers[0].payload_format: \"3.0\" must be 2.0, 1.0"),
            "{text}"
        );
    }

    #[test]
    fn authorizer_headers_may_not_be_claim_headers() {
        let text = errors(
            r#"
[[authorizers]]
name = "a"
type = "ext_authz"
url = "http://127.0.0.1:1"
ttl = "0s"
upstream_headers = ["x-user-sub"]

[[routes]]
path = "/x"
auth = "none"

[headers]
claims = { "x-user-sub" = "sub" }
"#,
        );
        assert!(
            text.contains("authorizers[0]: \"x-user-sub\" is already a claim"),
            "{text}"
        );
    }
}

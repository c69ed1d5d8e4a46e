//! `aws_sigv4` on upstreams and routes: which requests jwtgate signs for AWS, with whose
//! credentials, and whether the route can supply the token the credential source needs.

use std::collections::HashMap;
use std::sync::Arc;

use toml::Spanned;

use super::diags::{Diags, parse_size};
use super::upstream::{DEFAULT_UPSTREAM, Upstreams};
use crate::aws::{
    DEFAULT_MAX_BODY, MAX_MAX_BODY, PayloadMode, SIGV4_HEADERS, Signing, SigningScope, SourceKind,
    SourceSettings, header_pattern_matches, is_s3,
};
use crate::config::{RawAwsCredentials, RawRoute, RawSigV4, RawUpstream, SigV4Choice};
use crate::login::LoginSettings;
use crate::settings::AuthMode;
use crate::token::{IssuerPolicy, TokenUse};

/// What every table that can say `aws_sigv4` needs to know about the rest of the config.
pub(super) struct Context<'a> {
    pub raw_sources: &'a [Spanned<RawAwsCredentials>],
    pub sources: &'a [SourceSettings],
    pub issuers: &'a [Arc<IssuerPolicy>],
}

/// Each upstream's signing (by upstream name; only those that sign), with the span of its
/// `aws_sigv4` for messages about the routes that inherit it.
pub(super) fn upstreams(
    d: &mut Diags<'_>,
    cx: &Context<'_>,
    single: Option<&Spanned<RawUpstream>>,
    named: &[Spanned<RawUpstream>],
) -> HashMap<String, Arc<Signing>> {
    let tables = single
        .map(|u| ("upstream".to_owned(), DEFAULT_UPSTREAM.to_owned(), u))
        .into_iter()
        .chain(named.iter().enumerate().filter_map(|(i, u)| {
            let name = u.get_ref().name.as_ref()?.get_ref().clone();
            Some((format!("upstreams[{i}]"), name, u))
        }));
    let mut out = HashMap::new();
    for (key, name, raw) in tables {
        let raw = raw.get_ref();
        let Some(choice) = &raw.aws_sigv4 else {
            continue;
        };
        let key = format!("{key}.aws_sigv4");
        let table = match choice.get_ref() {
            SigV4Choice::Sign(table) => table,
            SigV4Choice::Off(_) => {
                d.err(
                    choice.span(),
                    &key,
                    "an upstream signs with a table { service, region, credentials } or not at all (false is for routes)",
                );
                continue;
            }
        };
        if raw.urls.as_ref().is_some_and(|u| u.get_ref().len() > 1) {
            d.err(
                choice.span(),
                &key,
                "a signature names one host: give a signing upstream one url",
            );
            continue;
        }
        if let Some(signing) = signing(d, cx, &key, choice.span(), table) {
            out.insert(name, Arc::new(signing));
        }
    }
    out
}

/// Sets each route's signing: its own `aws_sigv4`, else its upstream's (`false`: none), and
/// checks that the route can give the credential source what it asks for. Marks the sign-in
/// providers whose sessions must keep the ID token.
pub(super) fn routes(
    d: &mut Diags<'_>,
    cx: &Context<'_>,
    raw: &[Spanned<RawRoute>],
    by_upstream: &HashMap<String, Arc<Signing>>,
    upstreams: &Upstreams,
    routes: &mut crate::routes::Router<crate::settings::Route>,
    logins: &mut [LoginSettings],
) {
    let mut own: Vec<Option<Option<Arc<Signing>>>> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}].aws_sigv4");
        own.push(match r.get_ref().aws_sigv4.as_ref() {
            None => None,
            Some(choice) => match choice.get_ref() {
                SigV4Choice::Off(false) => Some(None),
                SigV4Choice::Off(true) => {
                    d.err(
                        choice.span(),
                        &key,
                        "true is not a choice: write the table { service, region, credentials }, or false for unsigned",
                    );
                    None
                }
                SigV4Choice::Sign(table) => {
                    signing(d, cx, &key, choice.span(), table).map(|s| Some(Arc::new(s)))
                }
            },
        });
    }
    // Routes were compiled in file order, skipping none when there are no errors.
    if d.count() > 0 {
        return;
    }
    let upstream_names: HashMap<usize, &str> = upstreams
        .names
        .iter()
        .map(|(name, index)| (*index, &**name))
        .collect();
    for ((i, r), route) in raw.iter().enumerate().zip(routes.routes_mut()) {
        let inherited = || {
            let name = upstream_names.get(&route.upstream)?;
            by_upstream.get(*name).cloned()
        };
        let signing = match own.get(i).cloned().flatten() {
            Some(chosen) => chosen,
            None => inherited(),
        };
        let Some(signing) = signing else {
            continue;
        };
        let r = r.get_ref();
        let span = r
            .aws_sigv4
            .as_ref()
            .map(Spanned::span)
            .or_else(|| r.upstream.as_ref().map(Spanned::span))
            .unwrap_or_else(|| r.path.span());
        let key = format!("routes[{i}].aws_sigv4");
        let Some(source) = cx.sources.iter().find(|s| s.name == signing.credentials) else {
            continue;
        };
        match principal_problem(route, &source.kind, cx.issuers) {
            Some(problem) => d.err(
                span,
                &key,
                format!(
                    "credentials {:?} (source = \"{}\"): {problem}",
                    source.name,
                    source.kind.as_str()
                ),
            ),
            None => {
                let per_user = !matches!(source.kind, SourceKind::Gateway(_));
                if let (true, AuthMode::Login, Some(login)) =
                    (per_user, route.auth, route.login.as_deref())
                {
                    if let Some(l) = logins.iter_mut().find(|l| &*l.name == login) {
                        l.keep_id_token = true;
                    }
                }
            }
        }
        route.aws_sigv4 = Some(signing);
    }
}

/// Why `route` cannot give a source of `kind` the token it needs, if it cannot.
fn principal_problem(
    route: &crate::settings::Route,
    kind: &SourceKind,
    issuers: &[Arc<IssuerPolicy>],
) -> Option<&'static str> {
    match (kind, route.auth) {
        (SourceKind::Gateway(_), _) => None,
        (SourceKind::IdentityPool(p), AuthMode::None) if !p.guests => Some(
            "a route with auth = \"none\" has no user token; set guests = true on the source for the pool's unauthenticated identity",
        ),
        (SourceKind::WebIdentity(_), AuthMode::None) => {
            Some("STS needs the user's token: not with auth = \"none\"")
        }
        (SourceKind::IdentityPool(_), AuthMode::Jwt | AuthMode::Optional)
            if !takes_only_id_tokens(route, issuers) =>
        {
            Some(
                "identity pools take the user pool's ID token: add token_use = \"id\" to this route (or to each of its issuers)",
            )
        }
        _ => None,
    }
}

/// Whether every token the route accepts is an ID token: the route says so, or each issuer it
/// accepts does.
fn takes_only_id_tokens(route: &crate::settings::Route, issuers: &[Arc<IssuerPolicy>]) -> bool {
    if route.requirements.token_use == Some(TokenUse::Id) {
        return true;
    }
    let accepted = |i: &&Arc<IssuerPolicy>| {
        route
            .requirements
            .issuers
            .as_ref()
            .is_none_or(|names| names.contains(&i.name))
    };
    let mut accepted = issuers.iter().filter(accepted).peekable();
    accepted.peek().is_some() && accepted.all(|i| i.token_use == Some(TokenUse::Id))
}

/// One `aws_sigv4` table, checked.
fn signing(
    d: &mut Diags<'_>,
    cx: &Context<'_>,
    key: &str,
    span: std::ops::Range<usize>,
    t: &RawSigV4,
) -> Option<Signing> {
    let before = d.count();
    let word = |d: &mut Diags<'_>, v: &Option<Spanned<String>>, field: &str, what: &str| {
        let Some(v) = v else {
            d.err(
                span.clone(),
                format!("{key}.{field}"),
                format!("missing: {what}"),
            );
            return None;
        };
        let text = v.get_ref();
        let ok = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            d.err(
                v.span(),
                format!("{key}.{field}"),
                format!("{text:?} must be lower-case letters, digits and -"),
            );
            return None;
        }
        Some(text.clone())
    };
    let service = word(
        d,
        &t.service,
        "service",
        "the service's signing name (s3, execute-api, lambda, es, aoss, …)",
    );
    let region = word(
        d,
        &t.region,
        "region",
        "the region signed for (us-east-1, …)",
    );
    let credentials = credentials(d, cx, key, span.clone(), &t.credentials);
    let s3 = service.as_deref().is_some_and(is_s3);
    let payload = d.choice(
        &t.payload,
        &format!("{key}.payload"),
        &[
            ("unsigned", PayloadMode::Unsigned),
            ("signed", PayloadMode::Signed),
        ],
        if s3 {
            PayloadMode::Unsigned
        } else {
            PayloadMode::Signed
        },
    );
    if let (Some(p), PayloadMode::Unsigned, Some(service), false) =
        (&t.payload, payload, &service, s3)
    {
        d.err(
            p.span(),
            format!("{key}.payload"),
            format!("{service:?} does not accept UNSIGNED-PAYLOAD (S3 does): use \"signed\""),
        );
    }
    let max_body = match &t.max_body {
        None => DEFAULT_MAX_BODY,
        Some(v) if payload == PayloadMode::Unsigned => {
            d.err(
                v.span(),
                format!("{key}.max_body"),
                "applies to payload = \"signed\" only (an unsigned body streams, whatever its size)",
            );
            DEFAULT_MAX_BODY
        }
        Some(v) => match parse_size(v.get_ref()) {
            Ok(n) if (1..=MAX_MAX_BODY).contains(&n) => n,
            Ok(_) => {
                d.err(
                    v.span(),
                    format!("{key}.max_body"),
                    "must be between 1 byte and 1GiB",
                );
                DEFAULT_MAX_BODY
            }
            Err(reason) => {
                d.err(v.span(), format!("{key}.max_body"), reason);
                DEFAULT_MAX_BODY
            }
        },
    };
    let forward = forward_headers(d, key, &t.forward_headers);
    if d.count() > before {
        return None;
    }
    let mut scope = SigningScope::new(service?, region?);
    scope.forward_amz_headers = forward;
    Some(Signing {
        scope,
        credentials: credentials?,
        payload,
        max_body,
    })
}

/// `forward_headers`: `x-amz-` names or prefixes (`x-amz-meta-*`), none of which reaches
/// SigV4's own headers.
fn forward_headers(
    d: &mut Diags<'_>,
    key: &str,
    value: &Option<Spanned<Vec<Spanned<String>>>>,
) -> Vec<String> {
    let key = format!("{key}.forward_headers");
    let mut out = Vec::new();
    for entry in super::diags::strings(value) {
        let text = entry.get_ref();
        let name = text.strip_suffix('*').unwrap_or(text);
        let well_formed = name.starts_with("x-amz-")
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            d.err(
                entry.span(),
                &key,
                format!(
                    "{text:?} must be a lower-case x-amz- header name, or a prefix ending in *"
                ),
            );
            continue;
        }
        if let Some(own) = SIGV4_HEADERS
            .iter()
            .find(|h| header_pattern_matches(text, h))
        {
            d.err(
                entry.span(),
                &key,
                format!("{text:?} would forward the client's {own}, which the signature sets: name the headers or a narrower prefix"),
            );
            continue;
        }
        out.push(text.clone());
    }
    out
}

/// `credentials`: the name of an `[[aws_credentials]]` table.
fn credentials(
    d: &mut Diags<'_>,
    cx: &Context<'_>,
    key: &str,
    span: std::ops::Range<usize>,
    value: &Option<Spanned<String>>,
) -> Option<Arc<str>> {
    let key = format!("{key}.credentials");
    let Some(name) = value else {
        d.err(
            span,
            key,
            "missing: the [[aws_credentials]] source whose credentials sign",
        );
        return None;
    };
    super::aws_credentials::named(d, &key, name, cx.raw_sources, cx.sources)
        .map(|s| Arc::clone(&s.name))
}

#[cfg(test)]
mod tests {
    use crate::aws::PayloadMode;
    use crate::compile::compile;

    const SOURCES: &str = r#"
[[aws_credentials]]
name = "users"
source = "identity_pool"
identity_pool_id = "us-east-1:0a1b2c3d-1234-5678-9abc-def012345678"

[[aws_credentials]]
name = "guests"
source = "identity_pool"
identity_pool_id = "us-east-1:0a1b2c3d-1234-5678-9abc-def012345678"
guests = true

[[aws_credentials]]
name = "sts"
source = "web_identity"
role_arn = "arn:aws:iam::123456789012:role/readers"

[[aws_credentials]]
name = "self"
source = "gateway"

[[issuers]]
name = "pool"
user_pool_id = "us-east-1_AbC123"
audiences = ["client"]
"#;

    fn config(text: &str) -> Result<crate::settings::Config, Vec<String>> {
        compile("s.toml", &format!("{SOURCES}{text}")).map_err(|e| e.0)
    }

    fn errors(text: &str) -> String {
        config(text).unwrap_err().join("\n")
    }

    #[test]
    fn routes_inherit_their_upstreams_signing_or_override_it() {
        let c = config(
            r#"
[upstream]
url = "http://127.0.0.1:3000"

[[upstreams]]
name = "files"
url = "https://bucket.s3.us-east-1.amazonaws.com"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "sts", forward_headers = ["x-amz-meta-*", "x-amz-acl"] }

[[routes]]
path = "/files/**"
upstream = "files"

[[routes]]
path = "/public/**"
upstream = "files"
auth = "none"
aws_sigv4 = false

[[routes]]
path = "/api/**"
aws_sigv4 = { service = "execute-api", region = "eu-west-1", credentials = "self", max_body = "64KiB" }

[[routes]]
path = "/plain/**"
"#,
        )
        .unwrap();
        let signing: Vec<_> = c
            .routes
            .iter()
            .map(|(_, _, r)| r.aws_sigv4.clone())
            .collect();
        let files = signing[0].as_ref().unwrap();
        assert_eq!(
            (
                files.scope.service.as_str(),
                &*files.credentials,
                files.payload
            ),
            ("s3", "sts", PayloadMode::Unsigned),
            "S3 streams by default"
        );
        assert!(!files.scope.double_encode && files.scope.content_sha256_header);
        assert!(signing[1].is_none(), "aws_sigv4 = false turns it off");
        let api = signing[2].as_ref().unwrap();
        assert_eq!(
            (api.payload, api.max_body, api.scope.region.as_str()),
            (PayloadMode::Signed, 65_536, "eu-west-1"),
            "other services hash the body"
        );
        assert!(signing[3].is_none());
        let table = c.describe();
        assert!(
            table.contains("sigv4 service=s3 region=us-east-1 credentials=sts payload=unsigned forwards=x-amz-meta-*,x-amz-acl"),
            "{table}"
        );
        assert!(table.contains("payload=signed(max 65536 bytes)"), "{table}");
    }

    #[test]
    fn problems_point_at_the_key() {
        let text = errors(
            r#"
[upstream]
urls = ["http://127.0.0.1:3000", "http://127.0.0.1:3001"]
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "self" }

[[upstreams]]
name = "x"
url = "http://127.0.0.1:3000"
aws_sigv4 = false

[[routes]]
path = "/a/**"
aws_sigv4 = { service = "S3", region = "us-east-1", credentials = "nobody" }

[[routes]]
path = "/b/**"
aws_sigv4 = { service = "lambda", region = "us-east-1", credentials = "self", payload = "unsigned" }

[[routes]]
path = "/c/**"
aws_sigv4 = { service = "s3", credentials = "self", max_body = "5MB" }

[[routes]]
path = "/d/**"
aws_sigv4 = { service = "es", region = "us-east-1", credentials = "self", max_body = "2GiB" }

[[routes]]
path = "/e/**"
aws_sigv4 = true

[[routes]]
path = "/g/**"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "self", forward_headers = ["x-amz-meta-*", "x-amz-*", "X-Amz-Acl", "x-amz-security-token"] }
"#,
        );
        for expected in [
            "s.toml:29:13: upstream.aws_sigv4: a signature names one host",
            "s.toml:34:13: upstreams[0].aws_sigv4: an upstream signs with a table",
            "s.toml:38:25: routes[0].aws_sigv4.service: \"S3\" must be lower-case",
            "s.toml:38:67: routes[0].aws_sigv4.credentials: \"nobody\" is not an [[aws_credentials]] name",
            "s.toml:42:89: routes[1].aws_sigv4.payload: \"lambda\" does not accept UNSIGNED-PAYLOAD",
            "s.toml:46:13: routes[2].aws_sigv4.region: missing",
            "s.toml:46:64: routes[2].aws_sigv4.max_body: applies to payload = \"signed\" only",
            "s.toml:50:86: routes[3].aws_sigv4.max_body: must be between 1 byte and 1GiB",
            "s.toml:54:13: routes[4].aws_sigv4: true is not a choice",
            "routes[5].aws_sigv4.forward_headers: \"x-amz-*\" would forward the client's x-amz-date, which the signature sets",
            "routes[5].aws_sigv4.forward_headers: \"X-Amz-Acl\" must be a lower-case x-amz- header name",
            "routes[5].aws_sigv4.forward_headers: \"x-amz-security-token\" would forward the client's x-amz-security-token",
        ] {
            assert!(text.contains(expected), "{expected}\nin\n{text}");
        }
        // A misspelt key inside the table is reported at the key, as everywhere else.
        let text = errors(
            "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[[routes]]\npath = \"/f/**\"\naws_sigv4 = { service = \"es\", credential = \"self\" }\n",
        );
        assert!(
            text.starts_with("s.toml:30:31: toml: unknown field `credential`"),
            "{text}"
        );
    }

    #[test]
    fn the_route_must_be_able_to_supply_the_token() {
        let text = errors(
            r#"
[upstream]
url = "http://127.0.0.1:3000"

[[routes]]
path = "/a/**"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "users" }

[[routes]]
path = "/b/**"
auth = "none"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "users" }

[[routes]]
path = "/c/**"
auth = "none"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "sts" }
"#,
        );
        assert!(
            text.contains("s.toml:32:13: routes[0].aws_sigv4: credentials \"users\" (source = \"identity_pool\"): identity pools take the user pool's ID token: add token_use = \"id\""),
            "{text}"
        );
        assert!(
            text.contains("routes[1].aws_sigv4: credentials \"users\" (source = \"identity_pool\"): a route with auth = \"none\" has no user token; set guests = true"),
            "{text}"
        );
        assert!(
            text.contains("routes[2].aws_sigv4: credentials \"sts\" (source = \"web_identity\"): STS needs the user's token"),
            "{text}"
        );
        // What each can do instead.
        config(
            r#"
[upstream]
url = "http://127.0.0.1:3000"

[[routes]]
path = "/a/**"
token_use = "id"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "users" }

[[routes]]
path = "/b/**"
auth = "none"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "guests" }

[[routes]]
path = "/c/**"
auth = "optional"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "sts" }

[[routes]]
path = "/d/**"
auth = "none"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "self" }
"#,
        )
        .unwrap();
    }

    #[test]
    fn an_issuer_of_id_tokens_only_is_enough() {
        let text = format!(
            "{}\n{}",
            SOURCES.replace(
                "audiences = [\"client\"]",
                "audiences = [\"client\"]\ntoken_use = \"id\""
            ),
            r#"
[upstream]
url = "http://127.0.0.1:3000"

[[routes]]
path = "/a/**"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "users" }
"#
        );
        compile("s.toml", &text).unwrap();
    }

    #[test]
    fn login_routes_that_sign_as_the_user_keep_the_id_token() {
        let c = config(
            r#"
[upstream]
url = "http://127.0.0.1:3000"

[login]
issuer = "https://customers.example"
client_id = "app"

[[logins]]
name = "staff"
issuer = "https://corp.example"
client_id = "staff-app"

[[routes]]
path = "/files/**"
auth = "login"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "users" }

[[routes]]
path = "/staff/**"
auth = "login"
login = "staff"
aws_sigv4 = { service = "s3", region = "us-east-1", credentials = "self" }
"#,
        )
        .unwrap();
        let keep: Vec<(&str, bool)> = c
            .logins
            .iter()
            .map(|l| (&*l.name, l.keep_id_token))
            .collect();
        assert_eq!(
            keep,
            [("default", true), ("staff", false)],
            "only a per-user source needs the session's ID token"
        );
    }
}

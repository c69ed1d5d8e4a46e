//! `[[routes]]`: the route table, matched in file order, and each route's requirements.

use std::collections::HashSet;
use std::sync::Arc;

use http::{HeaderName, Method};
use toml::Spanned;

use super::diags::{Diags, strings};
use super::issuers::Issuers;
use super::upstream::{DEFAULT_UPSTREAM, Upstreams};
use crate::authz::{ClaimMatcher, Requirements};
use crate::config::{ClaimValues, RawRoute};
use crate::headers::{self, HeaderPlan};
use crate::routes::{self, PathOptions, PathRewrite, Pattern, Router};
use crate::settings::{AuthMode, Route};

/// Every `[[routes]]` table, in file order; routes that need tokens need `[[issuers]]`.
pub(super) fn compile(
    d: &mut Diags<'_>,
    raw: &[Spanned<RawRoute>],
    issuers: &Issuers,
    paths: PathOptions,
    upstreams: &Upstreams,
    authorizers: &[Arc<str>],
) -> Router<Route> {
    let mut routes = Router::new();
    if raw.is_empty() {
        d.err(0..0, "routes", "no [[routes]]: every request would be 404");
    }
    for (i, raw_route) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        if let Some((pattern, methods, route)) = route(
            d,
            &key,
            raw_route.get_ref(),
            &issuers.names,
            paths,
            upstreams,
            authorizers,
        ) {
            if matches!(route.auth, AuthMode::Jwt | AuthMode::Optional) && !issuers.any {
                d.err(
                    raw_route.span(),
                    format!("{key}.auth"),
                    "needs tokens but no [[issuers]] are configured",
                );
            }
            routes.push(pattern, methods, route);
        }
    }
    routes
}

/// One `[[routes]]` table: its pattern, methods and compiled route.
fn route(
    d: &mut Diags<'_>,
    key: &str,
    r: &RawRoute,
    issuer_names: &HashSet<Arc<str>>,
    paths: PathOptions,
    upstreams: &Upstreams,
    authorizers: &[Arc<str>],
) -> Option<(Pattern, Option<Vec<Method>>, Route)> {
    let errors_before = d.count();
    let pattern = match Pattern::parse(r.path.get_ref(), paths) {
        Ok(p) => Some(p),
        Err(reason) => {
            d.err(
                r.path.span(),
                format!("{key}.path"),
                format!("{:?} {reason}", r.path.get_ref()),
            );
            None
        }
    };
    let methods = r.methods.as_ref().map(|list| {
        list.get_ref()
            .iter()
            .filter_map(|m| {
                let text = m.get_ref();
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase()) {
                    Method::from_bytes(text.as_bytes()).ok()
                } else {
                    d.err(
                        m.span(),
                        format!("{key}.methods"),
                        format!("{text:?} is not an upper-case method name"),
                    );
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let auth = match r.auth.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
        None | Some(("jwt", _)) => AuthMode::Jwt,
        Some(("optional", _)) => AuthMode::Optional,
        Some(("none", _)) => AuthMode::None,
        Some(("login", _)) => AuthMode::Login,
        Some((other, span)) => {
            d.err(
                span,
                format!("{key}.auth"),
                format!("{other:?} must be jwt, optional, none or login"),
            );
            AuthMode::Jwt
        }
    };
    // Whether the provider exists is checked across tables, once [[logins]] are compiled.
    let login = match (&r.login, auth) {
        (Some(name), AuthMode::Login) => Some(Arc::from(name.get_ref().as_str())),
        (None, AuthMode::Login) => Some(Arc::from(crate::login::DEFAULT_PROVIDER)),
        (Some(name), _) => {
            d.err(
                name.span(),
                format!("{key}.login"),
                "only with auth = \"login\"",
            );
            None
        }
        (None, _) => None,
    };
    let words = |d: &mut Diags<'_>,
                 list: &Option<Spanned<Vec<Spanned<String>>>>,
                 field: &str|
     -> Vec<String> {
        strings(list)
            .into_iter()
            .filter_map(|s| {
                let text = s.get_ref();
                if text.is_empty()
                    || text
                        .chars()
                        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
                {
                    d.err(
                        s.span(),
                        format!("{key}.{field}"),
                        format!("{text:?} must be one word without quotes"),
                    );
                    None
                } else {
                    Some(text.clone())
                }
            })
            .collect()
    };
    let scopes_any = words(d, &r.scopes_any, "scopes_any");
    let scopes_all = words(d, &r.scopes_all, "scopes_all");
    let groups_any = words(d, &r.groups_any, "groups_any");
    let token_use = d.token_use(&r.token_use, &format!("{key}.token_use"));
    let issuers = r.issuers.as_ref().map(|list| {
        list.get_ref()
            .iter()
            .filter_map(|n| match issuer_names.get(n.get_ref().as_str()) {
                Some(name) => Some(Arc::clone(name)),
                None => {
                    d.err(
                        n.span(),
                        format!("{key}.issuers"),
                        format!("no issuer is named {:?}", n.get_ref()),
                    );
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let claims: Vec<ClaimMatcher> = r
        .claims
        .as_ref()
        .map(|m| {
            m.get_ref()
                .iter()
                .map(|(name, values)| claim_matcher(d, key, name, values, pattern.as_ref()))
                .collect()
        })
        .unwrap_or_default();
    for (name, values) in r.claims.iter().flat_map(|m| m.get_ref().iter()) {
        if matches!(values.get_ref(), ClaimValues::Any(v) if v.is_empty()) {
            d.err(
                values.span(),
                format!("{key}.claims.{name}"),
                "lists no accepted value",
            );
        }
    }
    let capture_headers = pattern
        .as_ref()
        .map(|p| capture_headers(d, key, r, p))
        .unwrap_or_default();
    let rewrite = pattern
        .as_ref()
        .map(|p| rewrite(d, key, r, p, paths))
        .unwrap_or_default();
    let required_scope = {
        let mut all: Vec<&str> = scopes_any
            .iter()
            .chain(&scopes_all)
            .map(String::as_str)
            .collect();
        all.dedup();
        (!all.is_empty()).then(|| all.join(" "))
    };
    let requirements = Requirements {
        scopes_any,
        scopes_all,
        groups_any,
        token_use,
        issuers,
        claims,
        required_scope,
    };
    if auth == AuthMode::Login
        && (requirements.token_use.is_some() || requirements.issuers.is_some())
    {
        d.err(r.path.span(), key, "token_use and issuers do not apply to auth = \"login\" (the session's ID token decides)");
    }
    if auth == AuthMode::None && !requirements.is_empty() {
        d.err(r.path.span(), key, "requirements (scopes, groups, token_use, issuers, claims) have no effect with auth = \"none\"");
    }
    let upstream = upstream(d, key, r, upstreams);
    let authorizer = super::authorizers::route_index(d, key, r, authorizers)
        .and_then(|index| pattern.as_ref().map(|p| route_authorizer(index, p)));
    let name: Arc<str> = r.name.as_ref().map_or_else(
        || r.path.get_ref().as_str().into(),
        |n| n.get_ref().as_str().into(),
    );
    if d.count() > errors_before {
        return None;
    }
    let preflight_forward = match r
        .preflight
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None => false,
        Some(("forward", _)) => true,
        Some((other, span)) => {
            d.err(
                span,
                format!("{key}.preflight"),
                format!("{other:?}: the only value is \"forward\""),
            );
            false
        }
    };
    let mut keep_override_headers = Vec::new();
    for header in strings(&r.keep_override_headers) {
        let name = HeaderName::from_bytes(header.get_ref().to_ascii_lowercase().as_bytes());
        if let Some(name) = name
            .ok()
            .filter(|n| headers::OVERRIDE_HEADERS.contains(&n.as_str()))
        {
            keep_override_headers.push(name);
        } else {
            d.err(
                header.span(),
                format!("{key}.keep_override_headers"),
                format!(
                    "{:?} is not an override header (one of {})",
                    header.get_ref(),
                    headers::OVERRIDE_HEADERS.join(", ")
                ),
            );
        }
    }
    Some((
        pattern?,
        methods,
        Route {
            name,
            auth,
            requirements,
            preflight_forward,
            keep_override_headers,
            upstream,
            login,
            capture_headers,
            rewrite,
            // Set once the policy sets are compiled (`policies::routes`).
            policy: None,
            authorizer,
            // Set once the credential sources are compiled (`aws_sigv4::routes`).
            aws_sigv4: None,
        },
    ))
}

/// A route's use of authorizer `index`: its pattern as API Gateway writes a route path (a
/// trailing `/**` is `/{proxy+}`, whose value is the rest of the path).
fn route_authorizer(index: usize, pattern: &Pattern) -> crate::authorizer::RouteAuthorizer {
    let proxy_after = pattern
        .as_str()
        .strip_suffix("/**")
        .map(|prefix| prefix.split('/').filter(|s| !s.is_empty()).count());
    crate::authorizer::RouteAuthorizer {
        index,
        route_path: Arc::from(pattern.api_gateway_path()),
        proxy_after,
    }
}

/// The index of the route's upstream: the one it names, else `default`. With no upstream at
/// all, that one error (reported by the upstream tables) is enough.
fn upstream(d: &mut Diags<'_>, key: &str, r: &RawRoute, upstreams: &Upstreams) -> usize {
    if upstreams.names.is_empty() {
        return 0;
    }
    match &r.upstream {
        Some(name) => upstreams.index(name.get_ref()).unwrap_or_else(|| {
            d.err(
                name.span(),
                format!("{key}.upstream"),
                format!("no upstream is named {:?}", name.get_ref()),
            );
            0
        }),
        None => upstreams.index(DEFAULT_UPSTREAM).unwrap_or_else(|| {
            d.err(
                r.path.span(),
                format!("{key}.upstream"),
                format!("missing: this route needs upstream = \"…\" (no upstream is named {DEFAULT_UPSTREAM:?})"),
            );
            0
        }),
    }
}

/// One `claims` entry: its literal values, and its `"{name}"` values bound to the pattern's
/// captures (one the pattern does not capture is an error at the value). With no pattern (it
/// failed to parse, and said so), references are not checked.
fn claim_matcher(
    d: &mut Diags<'_>,
    key: &str,
    name: &str,
    values: &Spanned<ClaimValues>,
    pattern: Option<&Pattern>,
) -> ClaimMatcher {
    let listed = match values.get_ref() {
        ClaimValues::One(v) => std::slice::from_ref(v),
        ClaimValues::Any(v) => v.as_slice(),
    };
    let mut matcher = ClaimMatcher {
        name: name.to_owned(),
        values: Vec::new(),
        captures: Vec::new(),
    };
    for value in listed {
        match routes::capture_reference(value) {
            None => matcher.values.push(value.clone()),
            Some(Err(reason)) => d.err(values.span(), format!("{key}.claims.{name}"), reason),
            Some(Ok(capture)) => match pattern.map(|p| (p.capture_index(capture), p)) {
                None => {}
                Some((Some(index), _)) => matcher.captures.push(index),
                Some((None, p)) => d.err(
                    values.span(),
                    format!("{key}.claims.{name}"),
                    not_captured(capture, p),
                ),
            },
        }
    }
    matcher
}

fn not_captured(capture: &str, pattern: &Pattern) -> String {
    format!(
        "{{{capture}}} is not captured by the route's path {:?}",
        pattern.as_str()
    )
}

/// `capture_headers`: header names jwtgate does not otherwise manage, each naming a capture of
/// the pattern. (Claim headers are checked across tables: [`manage_capture_headers`].)
fn capture_headers(
    d: &mut Diags<'_>,
    key: &str,
    r: &RawRoute,
    pattern: &Pattern,
) -> Vec<(HeaderName, usize)> {
    let Some(map) = &r.capture_headers else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (header, capture) in map.get_ref() {
        let field = format!("{key}.capture_headers.{header}");
        let Some(name) = super::headers::settable_name(d, header, map.span(), &field) else {
            continue;
        };
        if out.iter().any(|(n, _)| *n == name) {
            d.err(
                map.span(),
                field,
                format!("{header:?} is listed twice (names ignore case)"),
            );
            continue;
        }
        match pattern.capture_index(capture.get_ref()) {
            Some(index) => out.push((name, index)),
            None => d.err(
                capture.span(),
                field,
                not_captured(capture.get_ref(), pattern),
            ),
        }
    }
    out
}

/// Across tables: a capture header may not be a claim header (or the `claims_json` one), and
/// every capture header is removed from every client request, on every route, like identity
/// headers (look-alikes with `_` included).
pub(super) fn manage_capture_headers(
    d: &mut Diags<'_>,
    raw: &[Spanned<RawRoute>],
    plan: &mut HeaderPlan,
) {
    let mut added = false;
    for (i, route) in raw.iter().enumerate() {
        let Some(map) = &route.get_ref().capture_headers else {
            continue;
        };
        for header in map.get_ref().keys() {
            let lower = header.to_ascii_lowercase();
            let Ok(name) = HeaderName::from_bytes(lower.as_bytes()) else {
                continue; // reported with the route
            };
            if lower.contains('_') {
                continue; // reported with the route
            }
            let claim = plan
                .claims
                .iter()
                .map(|(n, _)| n)
                .chain(&plan.claims_json)
                .any(|n| *n == name);
            if claim {
                d.err(
                    map.span(),
                    format!("routes[{i}].capture_headers.{header}"),
                    format!("{header:?} is a claim header of [headers]"),
                );
            } else {
                plan.identity.push(name);
                added = true;
            }
        }
    }
    if added {
        plan.identity.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        plan.identity.dedup();
    }
}

/// `strip_prefix` and `add_prefix`. The prefix stripped must be the pattern's own leading
/// literal segments, so every request the route matches has it (whatever its case or `;`
/// parameters): the rewrite then just drops that many segments.
fn rewrite(
    d: &mut Diags<'_>,
    key: &str,
    r: &RawRoute,
    pattern: &Pattern,
    paths: PathOptions,
) -> PathRewrite {
    let mut rewrite = PathRewrite::default();
    if let Some(strip) = &r.strip_prefix {
        let text = strip.get_ref();
        let field = format!("{key}.strip_prefix");
        if text.len() < 2 || !text.starts_with('/') || text.ends_with('/') {
            d.err(
                strip.span(),
                field,
                format!(
                    "{text:?} must start with '/' and name whole segments, without a trailing '/'"
                ),
            );
        } else {
            let wanted: Vec<&str> = text[1..].split('/').collect();
            let literals: Vec<&str> = pattern.literal_prefix().take(wanted.len()).collect();
            if literals == wanted {
                rewrite.strip_segments = wanted.len();
                rewrite.strip = text.as_str().into();
            } else {
                d.err(
                    strip.span(),
                    field,
                    format!("cannot apply to the route's pattern {:?} (it must be the pattern's leading literal segments, before any '*', '{{name}}' or '**')", pattern.as_str()),
                );
            }
        }
    }
    if let Some(add) = &r.add_prefix {
        let text = add.get_ref();
        let pchar = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()+,=:@%/".contains(c);
        let normal = routes::normalize(text, paths).is_ok_and(|n| n == *text);
        if text.len() < 2
            || !text.starts_with('/')
            || text.ends_with('/')
            || !text.chars().all(pchar)
            || !normal
        {
            d.err(
                add.span(),
                format!("{key}.add_prefix"),
                format!("{text:?} must start with '/', have no trailing '/', and be a path in normal form without '*', '{{', '?', '#', ';' or spaces"),
            );
        } else {
            rewrite.add = text.as_str().into();
        }
    }
    rewrite
}

#[cfg(test)]
mod tests {
    use crate::compile::compile;
    use crate::compile::tests::GOOD;

    /// `GOOD` plus `extra`, compiled; the errors, each with its position.
    fn errors(extra: &str) -> Vec<String> {
        compile("x.toml", &format!("{GOOD}{extra}")).unwrap_err().0
    }

    /// `line:col` of the first `needle` at or after the line starting with `after`, in the
    /// text `errors` compiles.
    fn at(extra: &str, after: &str, needle: &str) -> String {
        let text = format!("{GOOD}{extra}");
        let start = text.lines().position(|l| l.starts_with(after)).unwrap();
        for (i, line) in text.lines().enumerate().skip(start) {
            if let Some(col) = line.find(needle) {
                return format!("{}:{}", i + 1, col + 1);
            }
        }
        panic!("{needle:?} not found");
    }

    #[test]
    fn captures_claims_headers_and_rewrites_compile() {
        let text = format!(
            r#"{GOOD}
[headers]
claims = {{ "x-user-sub" = "sub" }}

[[routes]]
path = "/tenants/{{tenant}}/**"
claims = {{ "custom:tenant" = ["{{tenant}}", "admin"] }}
capture_headers = {{ "X-Tenant-Id" = "tenant" }}
strip_prefix = "/tenants"
add_prefix = "/v1"

[[routes]]
path = "/orders/**"
auth = "none"
strip_prefix = "/orders"
"#
        );
        let c = compile("good.toml", &text).unwrap();
        let (pattern, _, route) = c.routes.iter().nth(2).unwrap();
        assert_eq!(pattern.capture_names().len(), 1);
        let claim = &route.requirements.claims[0];
        assert_eq!(claim.values, ["admin"]);
        assert_eq!(claim.captures, [0]);
        assert_eq!(route.capture_headers[0].0.as_str(), "x-tenant-id");
        assert_eq!(route.capture_headers[0].1, 0);
        assert_eq!(route.upstream_path("/tenants/acme/x"), "/v1/acme/x");
        let names: Vec<&str> = c.headers.identity.iter().map(|h| h.as_str()).collect();
        assert!(names.contains(&"x-tenant-id"), "{names:?}");
        assert!(names.contains(&"x-user-sub"), "{names:?}");
        let described = c.describe();
        assert!(
            described.contains("claim custom:tenant=admin|{tenant}"),
            "{described}"
        );
        assert!(
            described.contains(
                "captures tenant  header x-tenant-id={tenant}  /tenants/{tenant}/** → strip /tenants, add /v1"
            ),
            "{described}"
        );
        assert!(
            described.contains("/orders/** → strip /orders\n"),
            "{described}"
        );
    }

    #[test]
    fn bad_captures_are_errors_at_their_position() {
        for (pattern, reason) in [
            ("/t/{a}/{a}", "captures {a} twice"),
            ("/t/{a}x", "a capture must be a whole segment '{name}'"),
            ("/t/{1a}", "a capture name is a letter or '_'"),
        ] {
            let extra = format!("\n[[routes]]\npath = \"{pattern}\"\nauth = \"none\"\n");
            let errors = errors(&extra);
            let pos = at(&extra, "path = \"/t", "\"/t");
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with(&format!("x.toml:{pos}: routes[2].path: \"{pattern}\" ")),
                "{errors:?}"
            );
            assert!(errors[0].contains(reason), "{errors:?}");
        }
    }

    #[test]
    fn claims_may_only_name_captures_of_the_pattern() {
        let extra = "\n[[routes]]\npath = \"/t/{tenant}/**\"\nclaims = { org = [\"a\", \"{org}\"], t = \"{tenant}\", x = \"{a-b}\" }\n";
        let errors = errors(extra);
        let pos = at(extra, "claims = ", "[\"a\"");
        let x = at(extra, "claims = ", "\"{a-b}\"");
        assert_eq!(
            errors,
            [
                format!(
                    "x.toml:{pos}: routes[2].claims.org: {{org}} is not captured by the route's path \"/t/{{tenant}}/**\""
                ),
                format!(
                    "x.toml:{x}: routes[2].claims.x: \"{{a-b}}\": a capture name is a letter or '_', then letters, digits or '_'"
                ),
            ]
        );
    }

    #[test]
    fn capture_headers_are_checked() {
        let route = |headers: &str| {
            format!(
                "\n[[routes]]\npath = \"/t/{{tenant}}/**\"\ncapture_headers = {{ {headers} }}\n"
            )
        };
        for (headers, reason) in [
            (
                "\"x-forwarded-host\" = \"tenant\"",
                "\"x-forwarded-host\" is managed by jwtgate",
            ),
            (
                "\"X-Request-Id\" = \"tenant\"",
                "\"X-Request-Id\" is managed by jwtgate",
            ),
            ("\"x-amzn-oidc-data\" = \"tenant\"", "is managed by jwtgate"),
            ("\"content-type\" = \"tenant\"", "is managed by jwtgate"),
            (
                "\"x-http-method-override\" = \"tenant\"",
                "is managed by jwtgate",
            ),
            (
                "\"x tenant\" = \"tenant\"",
                "\"x tenant\" is not a header name",
            ),
            ("\"x_tenant\" = \"tenant\"", "use '-', not '_'"),
            (
                "\"x-t\" = \"tenant\", \"X-T\" = \"tenant\"",
                "is listed twice (names ignore case)",
            ),
        ] {
            let extra = route(headers);
            let errors = errors(&extra);
            let pos = at(&extra, "capture_headers", "{");
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with(&format!("x.toml:{pos}: routes[2].capture_headers.")),
                "{errors:?}"
            );
            assert!(errors[0].contains(reason), "{errors:?}");
        }
        let extra = route("\"x-tenant\" = \"org\"");
        let pos = at(&extra, "capture_headers", "\"org\"");
        assert_eq!(
            errors(&extra),
            [format!(
                "x.toml:{pos}: routes[2].capture_headers.x-tenant: {{org}} is not captured by the route's path \"/t/{{tenant}}/**\""
            )]
        );
        // A claim header cannot also carry a capture.
        let extra = format!(
            "{}\n[headers]\nclaims = {{ \"x-tenant\" = \"custom:tenant\" }}\n",
            route("\"X-Tenant\" = \"tenant\"")
        );
        let pos = at(&extra, "capture_headers", "{");
        assert_eq!(
            errors(&extra),
            [format!(
                "x.toml:{pos}: routes[2].capture_headers.X-Tenant: \"X-Tenant\" is a claim header of [headers]"
            )]
        );
    }

    #[test]
    fn rewrites_are_checked_against_the_pattern() {
        let route = |path: &str, key: &str, value: &str| {
            format!("\n[[routes]]\npath = \"{path}\"\nauth = \"none\"\n{key} = \"{value}\"\n")
        };
        let cannot = |pattern: &str| {
            format!(
                "cannot apply to the route's pattern \"{pattern}\" (it must be the pattern's leading literal segments, before any '*', '{{name}}' or '**')"
            )
        };
        for (path, strip, reason) in [
            ("/orders/**", "/order", cannot("/orders/**")),
            ("/orders/**", "/orders/x", cannot("/orders/**")),
            ("/a/*/b/**", "/a/x", cannot("/a/*/b/**")),
            ("/a/{t}/**", "/a/{t}", cannot("/a/{t}/**")),
            ("/**", "/x", cannot("/**")),
            ("/Orders/**", "/orders", cannot("/Orders/**")),
            (
                "/orders/**",
                "/orders/",
                "\"/orders/\" must start with '/' and name whole segments, without a trailing '/'"
                    .into(),
            ),
            (
                "/orders/**",
                "orders",
                "\"orders\" must start with '/' and name whole segments, without a trailing '/'"
                    .into(),
            ),
            (
                "/orders/**",
                "/",
                "\"/\" must start with '/' and name whole segments, without a trailing '/'".into(),
            ),
        ] {
            let extra = route(path, "strip_prefix", strip);
            let pos = at(&extra, "strip_prefix", "\"");
            assert_eq!(
                errors(&extra),
                [format!("x.toml:{pos}: routes[2].strip_prefix: {reason}")],
                "{path} {strip}"
            );
        }
        for (path, strip) in [
            ("/orders/**", "/orders"),
            ("/a/b/*/c", "/a/b"),
            ("/a/b", "/a/b"),
        ] {
            let text = format!("{GOOD}{}", route(path, "strip_prefix", strip));
            assert!(compile("x.toml", &text).is_ok(), "{path} {strip}");
        }
        for add in [
            "/v1/",
            "v1",
            "/",
            "/v1/../v2",
            "/v1//x",
            "/v*",
            "/{v}",
            "/v?x",
            "/v#x",
            "/v;x",
            "/v x",
            "/%61",
            "/é",
        ] {
            let extra = route("/**", "add_prefix", add);
            let pos = at(&extra, "add_prefix", "\"");
            let errors = errors(&extra);
            assert_eq!(errors.len(), 1, "{add}: {errors:?}");
            assert!(
                errors[0].starts_with(&format!("x.toml:{pos}: routes[2].add_prefix: ")),
                "{errors:?}"
            );
        }
        for add in ["/v1", "/api/v1", "/a%20b", "/a-b.c_d~e"] {
            let text = format!("{GOOD}{}", route("/**", "add_prefix", add));
            assert!(compile("x.toml", &text).is_ok(), "{add}");
        }
    }
}

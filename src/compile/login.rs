//! `[login]` and `[[logins]]`: ALB-style browser sign-in providers (the IdP, the client,
//! cookies and sessions), and which provider each login route uses.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::diags::Diags;
use super::issuers::{self, DEFAULT_LEEWAY, Fetching, IssuerKeys};
use super::secret::{self, Or};
use crate::config::{RawLogin, RawRoute};
use crate::jwks::KeySource;
use crate::login::alb::{AlbSigner, DEFAULT_SIGNER};
use crate::login::cookies::CookieKeys;
use crate::login::oidc::{ClientAuth, EndpointConfig, Endpoints};
use crate::login::{
    CALLBACK_PATH, DEFAULT_PROVIDER, LoginSettings, OnUnauthenticated, Redacted, STATE_COOKIE,
};
use crate::routes::PathOptions;
use crate::token::IssuerPolicy;

/// Session cookie name of the `default` provider, as ALB names it.
const DEFAULT_SESSION_COOKIE: &str = "AWSELBAuthSessionCookie";
/// Sign-out path of the `default` provider.
const DEFAULT_LOGOUT_PATH: &str = "/oauth2/sign_out";
/// Longest provider name (it goes into cookie names, paths and a metric label).
const MAX_NAME_LEN: usize = 64;

/// Most `extra_params` (ALB allows 10).
const MAX_EXTRA_PARAMS: usize = 10;
/// Authorization parameters jwtgate sets itself.
const RESERVED_PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// `[login]` (the provider named `default`) and every `[[logins]]` table, `default` first.
/// Names, cookie names, callback and sign-out paths must not repeat across providers.
pub(super) fn compile(
    d: &mut Diags<'_>,
    login: Option<&Spanned<RawLogin>>,
    logins: &[Spanned<RawLogin>],
    paths: PathOptions,
) -> Vec<LoginSettings> {
    let mut tables: Vec<Table<'_>> = Vec::new();
    if let Some(raw) = login {
        if let Some(name) = &raw.get_ref().name {
            d.err(
                name.span(),
                "login.name",
                "[login] is the provider named \"default\"; names are for [[logins]] tables",
            );
        }
        tables.push(("login".into(), DEFAULT_PROVIDER.into(), raw.span(), raw));
    }
    for (i, raw) in logins.iter().enumerate() {
        let key = format!("logins[{i}]");
        let Some(name) = &raw.get_ref().name else {
            d.err(
                raw.span(),
                format!("{key}.name"),
                "missing: every [[logins]] table needs a name",
            );
            continue;
        };
        let text = name.get_ref().as_str();
        let reason = if text.is_empty() || text.len() > MAX_NAME_LEN {
            Some(format!("must be 1 to {MAX_NAME_LEN} characters"))
        } else if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            Some(format!("{text:?}: letters, digits, '_', '.' and '-' only"))
        } else if text.bytes().all(|b| b == b'.') {
            Some(format!("{text:?} is not a name"))
        } else if text == DEFAULT_PROVIDER && login.is_some() {
            Some("\"default\" is the [login] table's provider: rename this one, or make [login] a [[logins]] table".into())
        } else if tables.iter().any(|(_, n, _, _)| &**n == text) {
            Some(format!("duplicate login name {text:?}"))
        } else {
            None
        };
        if let Some(reason) = reason {
            d.err(name.span(), format!("{key}.name"), reason);
            continue;
        }
        tables.push((key, text.into(), name.span(), raw));
    }
    let mut out = Vec::new();
    let mut taken = Taken::default();
    for (key, name, name_span, raw) in tables {
        if let Some(settings) = provider(d, &key, name, raw, paths) {
            taken.check(d, &key, &settings, raw.get_ref(), name_span);
            out.push(settings);
        }
    }
    out
}

/// One provider's table as declared: its key in messages (`login`, `logins[0]`), its name and
/// where the name stands (or the table, for `[login]`).
type Table<'a> = (String, Arc<str>, Range<usize>, &'a Spanned<RawLogin>);

/// Cookie names and paths the providers compiled so far use, with the provider that uses each.
#[derive(Default)]
struct Taken {
    cookies: Vec<(String, Arc<str>)>,
    paths: Vec<(String, Arc<str>)>,
}

impl Taken {
    /// Reports `settings`' cookie names and paths that an earlier provider already uses, at
    /// the key that set them (or at the name, for a value derived from it); then records them.
    /// (A provider's own callback and sign-out path are told apart where they are read.)
    fn check(
        &mut self,
        d: &mut Diags<'_>,
        key: &str,
        settings: &LoginSettings,
        r: &RawLogin,
        name_span: Range<usize>,
    ) {
        let at = |value: &Option<Spanned<String>>| {
            value.as_ref().map_or(name_span.clone(), Spanned::span)
        };
        let cookies = [
            (
                "session_cookie_name",
                &settings.cookie_name,
                at(&r.session_cookie_name),
                "session cookie",
            ),
            (
                "name",
                &settings.state_cookie,
                name_span.clone(),
                "login state cookie",
            ),
        ];
        for (field, cookie, span, what) in cookies {
            if let Some((_, other)) = self.cookies.iter().find(|(c, _)| c == cookie) {
                d.err(
                    span,
                    format!("{key}.{field}"),
                    format!("the {what} {cookie:?} is also a cookie of login {other:?}"),
                );
            }
            self.cookies
                .push((cookie.clone(), Arc::clone(&settings.name)));
        }
        let paths = [
            (
                "callback_path",
                &settings.callback_path,
                at(&r.callback_path),
            ),
            ("logout_path", &settings.logout_path, at(&r.logout_path)),
        ];
        for (field, path, span) in paths {
            if let Some((_, other)) = self.paths.iter().find(|(p, _)| p == path) {
                d.err(
                    span,
                    format!("{key}.{field}"),
                    format!("{path:?} is also a sign-in path of login {other:?}"),
                );
            }
            self.paths.push((path.clone(), Arc::clone(&settings.name)));
        }
    }
}

/// One provider's table; `key` names it in messages (`login`, `logins[0]`).
fn provider(
    d: &mut Diags<'_>,
    key: &str,
    name: Arc<str>,
    raw: &Spanned<RawLogin>,
    paths: PathOptions,
) -> Option<LoginSettings> {
    let k = |field: &str| format!("{key}.{field}");
    let default = &*name == DEFAULT_PROVIDER;
    let span = raw.span();
    let r = raw.get_ref();
    let before = d.count();
    let mut explicit = Endpoints {
        authorization: d
            .http_url(&r.authorization_endpoint, &k("authorization_endpoint"))
            .unwrap_or_default(),
        token: d
            .http_url(&r.token_endpoint, &k("token_endpoint"))
            .unwrap_or_default(),
        user_info: d.http_url(&r.user_info_endpoint, &k("user_info_endpoint")),
        end_session: d.http_url(&r.end_session_endpoint, &k("end_session_endpoint")),
        jwks_uri: d.http_url(&r.jwks_uri, &k("jwks_uri")),
    };
    let named = IssuerKeys {
        key,
        span: span.clone(),
        issuer: &r.issuer,
        user_pool_id: &r.user_pool_id,
        region: &r.region,
        algorithms: &r.algorithms,
        dialect: issuers::LOGIN,
    };
    let identity = named.identity(d)?;
    if let Some(pool) = identity.user_pool_id {
        hosted_ui(d, key, pool, &r.domain, &mut explicit)?;
        explicit
            .jwks_uri
            .get_or_insert_with(|| identity.default_keys.url().to_owned());
    }
    let complete = !explicit.authorization.is_empty()
        && !explicit.token.is_empty()
        && explicit.jwks_uri.is_some();
    let discovery = (!complete).then(|| issuers::discovery_url(&identity.issuer));
    let key_source = explicit
        .jwks_uri
        .clone()
        .map_or(identity.default_keys, KeySource::Jwks);
    let client_id = r.client_id.get_ref().clone();
    if client_id.is_empty() {
        d.err(r.client_id.span(), k("client_id"), "must not be empty");
    }
    let client_secret = secret::read(
        d,
        &k("client_secret"),
        &r.client_secret_env,
        Or::File(&r.client_secret_file),
        false,
    )
    .map(|s| s.value);
    let client_auth = d.choice(
        &r.token_endpoint_auth,
        &k("token_endpoint_auth"),
        &[
            ("client_secret_basic", ClientAuth::Basic),
            ("client_secret_post", ClientAuth::Post),
        ],
        ClientAuth::Basic,
    );
    let scope = d.string(
        &r.scope,
        &k("scope"),
        "openid",
        |scope| scope.split_whitespace().any(|s| s == "openid"),
        "must include openid",
    );
    let extra_params = extra_params(d, key, &r.extra_params);
    let cookie_name = d.string(
        &r.session_cookie_name,
        &k("session_cookie_name"),
        &if default {
            DEFAULT_SESSION_COOKIE.to_owned()
        } else {
            format!("{DEFAULT_SESSION_COOKIE}.{name}")
        },
        |name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        },
        "letters, digits, '_' and '-' only",
    );
    let session_timeout = d.duration(
        &r.session_timeout,
        &k("session_timeout"),
        Duration::from_secs(7 * 86_400),
    );
    let on_unauthenticated = d.choice(
        &r.on_unauthenticated,
        &k("on_unauthenticated"),
        &[
            ("authenticate", OnUnauthenticated::Authenticate),
            ("deny", OnUnauthenticated::Deny),
            ("allow", OnUnauthenticated::Allow),
        ],
        OnUnauthenticated::Authenticate,
    );
    let deny_api_clients = d.choice(
        &r.api_clients,
        &k("api_clients"),
        &[("deny", true), ("authenticate", false)],
        true,
    );
    let normal = |path: &str| {
        path.starts_with('/') && crate::routes::normalize(path, paths).ok().as_deref() == Some(path)
    };
    let callback_path = d.string(
        &r.callback_path,
        &k("callback_path"),
        &if default {
            CALLBACK_PATH.to_owned()
        } else {
            format!("{CALLBACK_PATH}/{name}")
        },
        normal,
        "must be a normalised absolute path",
    );
    let logout_path = d.string(
        &r.logout_path,
        &k("logout_path"),
        &if default {
            DEFAULT_LOGOUT_PATH.to_owned()
        } else {
            format!("{DEFAULT_LOGOUT_PATH}/{name}")
        },
        |path| normal(path) && path != callback_path,
        "must be a normalised absolute path other than the callback",
    );
    let logout_redirect = d.http_url(&r.logout_redirect, &k("logout_redirect"));
    let redirect_base = d
        .http_url(&r.redirect_base, &k("redirect_base"))
        .map(|b| b.trim_end_matches('/').to_owned());
    let secure_cookies = r.secure_cookies.as_ref().is_none_or(|s| *s.get_ref());
    let cookie_keys = secret::read(
        d,
        &k("cookie_keys"),
        &r.cookie_keys_env,
        Or::File(&r.cookie_keys_file),
        true,
    )
    .and_then(|keys| {
        CookieKeys::parse_list(&keys.value.0)
            .map_err(|e| d.err(keys.span, keys.key, e))
            .ok()
    })
    .unwrap_or_default();
    let redis_url = redis_url(d, key, r, span);
    let alb_signer = d.string(
        &r.alb_signer,
        &k("alb_signer"),
        DEFAULT_SIGNER,
        |arn| {
            arn.strip_prefix("arn:")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(partition, rest)| {
                    matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
                        && rest.starts_with("elasticloadbalancing:")
                })
        },
        "must be a load balancer ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/app/NAME/ID)",
    );
    let alb_key = r.alb_key_file.as_ref().and_then(|f| {
        match std::fs::read_to_string(f.get_ref())
            .map_err(|e| format!("cannot read {}: {e}", f.get_ref()))
            .and_then(|pem| AlbSigner::from_pem(&pem))
        {
            Ok(signer) => Some(Arc::new(signer)),
            Err(e) => {
                d.err(f.span(), k("alb_key_file"), e);
                None
            }
        }
    });
    let algorithms = named.algorithms(d);
    if d.count() > before {
        return None;
    }
    let policy = IssuerPolicy {
        // The key store's metrics label: `login` for `default` (as before), `login:NAME`.
        name: if default {
            "login".into()
        } else {
            format!("login:{name}").into()
        },
        issuer: identity.issuer.into(),
        audiences: vec![client_id.clone()],
        skip_audience_check: false,
        token_use: None,
        algorithms,
        leeway_secs: i64::try_from(DEFAULT_LEEWAY.as_secs()).unwrap_or(60),
    };
    let (policy, keys) = issuers::build(policy, key_source, Fetching::default());
    Some(LoginSettings {
        state_cookie: if default {
            STATE_COOKIE.to_owned()
        } else {
            format!("{STATE_COOKIE}.{name}")
        },
        name,
        callback_path,
        issuer: Arc::clone(&policy.issuer),
        endpoints: EndpointConfig {
            discovery,
            explicit,
        },
        cognito_logout: identity.user_pool_id.is_some(),
        keys,
        policy,
        client_id,
        client_secret,
        client_auth,
        scope,
        extra_params,
        cookie_name,
        session_timeout,
        on_unauthenticated,
        deny_api_clients,
        logout_path,
        logout_redirect,
        redirect_base,
        secure_cookies,
        cookie_keys: Redacted(cookie_keys),
        redis_url: redis_url.map(Redacted),
        alb_signer,
        alb_key,
        // Set by `aws_sigv4::routes` when a route of this provider signs with user credentials.
        keep_id_token: false,
    })
}

/// The Cognito shorthand's endpoints, on the hosted UI's `domain`, where none is written out.
fn hosted_ui(
    d: &mut Diags<'_>,
    key: &str,
    pool: &Spanned<String>,
    domain: &Option<Spanned<String>>,
    explicit: &mut Endpoints,
) -> Option<()> {
    let k = |field: &str| format!("{key}.{field}");
    let Some(domain) = domain else {
        d.err(pool.span(), k("domain"), "the Cognito shorthand needs the hosted UI domain (e.g. myapp.auth.us-east-1.amazoncognito.com)");
        return None;
    };
    let host = domain
        .get_ref()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if host.is_empty() || host.contains(['/', ' ']) {
        d.err(domain.span(), k("domain"), "must be a host name");
        return None;
    }
    let or = |s: &mut String, v: String| {
        if s.is_empty() {
            *s = v
        }
    };
    or(
        &mut explicit.authorization,
        format!("https://{host}/oauth2/authorize"),
    );
    or(&mut explicit.token, format!("https://{host}/oauth2/token"));
    explicit
        .user_info
        .get_or_insert_with(|| format!("https://{host}/oauth2/userInfo"));
    explicit
        .end_session
        .get_or_insert_with(|| format!("https://{host}/logout"));
    Some(())
}

/// `extra_params`: at most ten, and none that jwtgate sets itself.
fn extra_params(
    d: &mut Diags<'_>,
    key: &str,
    params: &Option<Spanned<BTreeMap<String, Spanned<String>>>>,
) -> Vec<(String, String)> {
    let Some(params) = params else {
        return Vec::new();
    };
    if params.get_ref().len() > MAX_EXTRA_PARAMS {
        d.err(
            params.span(),
            format!("{key}.extra_params"),
            format!("at most {MAX_EXTRA_PARAMS} parameters"),
        );
    }
    let mut extra_params = Vec::new();
    for (k, v) in params.get_ref() {
        if RESERVED_PARAMS.contains(&k.as_str()) {
            d.err(
                v.span(),
                format!("{key}.extra_params.{k}"),
                "is set by jwtgate",
            );
        }
        extra_params.push((k.clone(), v.get_ref().clone()));
    }
    extra_params
}

/// `session_store`, and with `redis` the Redis URL: in the file, or in an environment variable
/// (a password stays out of the file).
fn redis_url(d: &mut Diags<'_>, key: &str, r: &RawLogin, span: Range<usize>) -> Option<String> {
    let k = |field: &str| format!("{key}.{field}");
    let redis = d.choice(
        &r.session_store,
        &k("session_store"),
        &[("cookie", false), ("redis", true)],
        false,
    );
    let url = secret::read(
        d,
        &k("redis_url"),
        &r.redis_url_env,
        Or::Value(&r.redis_url),
        true,
    );
    match (redis, url) {
        (false, Some(url)) => {
            d.err(
                url.span,
                url.key,
                "only used with session_store = \"redis\"",
            );
            None
        }
        (true, Some(url))
            if url.value.0.starts_with("redis://") || url.value.0.starts_with("rediss://") =>
        {
            Some(url.value.0)
        }
        (true, Some(url)) => {
            d.err(url.span, url.key, "must start with redis:// (or rediss://)");
            None
        }
        (true, None) if r.redis_url_env.is_none() => {
            d.err(
                span,
                k("redis_url"),
                "session_store = \"redis\" needs redis_url or redis_url_env",
            );
            None
        }
        _ => None,
    }
}

/// Each `auth = "login"` route's provider exists: the one its `login` names, or `default`
/// (the `[login]` table) without one. Providers are looked up as the file declares them, so a
/// provider with problems of its own does not also make its routes wrong.
pub(super) fn routes(
    d: &mut Diags<'_>,
    routes: &[Spanned<RawRoute>],
    login: Option<&Spanned<RawLogin>>,
    logins: &[Spanned<RawLogin>],
) {
    let declared: Vec<&str> = login
        .map(|_| DEFAULT_PROVIDER)
        .into_iter()
        .chain(
            logins
                .iter()
                .filter_map(|l| l.get_ref().name.as_ref().map(|n| n.get_ref().as_str())),
        )
        .collect();
    for (i, raw) in routes.iter().enumerate() {
        let r = raw.get_ref();
        let Some(auth) = r.auth.as_ref().filter(|a| a.get_ref() == "login") else {
            continue;
        };
        let exists = |name: &str| declared.contains(&name);
        match &r.login {
            Some(name) if !exists(name.get_ref()) => {
                let known = &declared;
                d.err(
                    name.span(),
                    format!("routes[{i}].login"),
                    if known.is_empty() {
                        format!(
                            "no login provider is named {:?} (there is no [login] or [[logins]] table)",
                            name.get_ref()
                        )
                    } else {
                        format!(
                            "no login provider is named {:?} (known: {})",
                            name.get_ref(),
                            known.join(", ")
                        )
                    },
                );
            }
            None if !exists(DEFAULT_PROVIDER) => d.err(
                auth.span(),
                format!("routes[{i}].auth"),
                "auth = \"login\" without login = \"NAME\" needs a [login] table (the provider named \"default\")",
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::compile::compile;
    use crate::compile::tests::GOOD;

    const LOGIN: &str = "[[routes]]\npath = \"/app/**\"\nauth = \"login\"\n[login]\nissuer = \"https://idp.example\"\nclient_id = \"app\"\n";

    #[test]
    fn defaults_hold_and_given_values_are_checked_where_they_stand() {
        let c = compile("t.toml", &format!("{GOOD}\n{LOGIN}")).unwrap();
        let l = &c.logins[0];
        assert_eq!(l.scope, "openid");
        assert_eq!(l.cookie_name, "AWSELBAuthSessionCookie");
        assert_eq!(l.logout_path, "/oauth2/sign_out");
        assert!(l.alb_signer.starts_with("arn:aws:elasticloadbalancing:"));
        assert!(!l.cognito_logout);

        let bad = "scope = \"email\"\nsession_cookie_name = \"a b\"\nlogout_path = \"/oauth2/idpresponse\"\nalb_signer = \"arn:aws:s3:::b\"\n";
        let text = format!("{GOOD}\n{LOGIN}{bad}");
        let errors = compile("t.toml", &text).unwrap_err().0;
        let line = |key: &str| {
            text.lines()
                .position(|l| l.starts_with(&format!("{key} =")))
                .unwrap()
                + 1
        };
        let expected = [
            ("scope", 9, "login.scope: must include openid"),
            (
                "session_cookie_name",
                23,
                "login.session_cookie_name: letters, digits, '_' and '-' only",
            ),
            (
                "logout_path",
                15,
                "login.logout_path: must be a normalised absolute path other than the callback",
            ),
            (
                "alb_signer",
                14,
                "login.alb_signer: must be a load balancer ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/app/NAME/ID)",
            ),
        ];
        let expected: Vec<String> = expected
            .iter()
            .map(|(key, col, message)| format!("t.toml:{}:{col}: {message}", line(key)))
            .collect();
        assert_eq!(errors, expected);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let text = format!(
            "{GOOD}\n{LOGIN}session_store = \"redis\"\nredis_url = \"redis://:hunter2@127.0.0.1:6379/0\"\n"
        );
        let login = compile("t.toml", &text).unwrap().logins.remove(0);
        assert_eq!(
            login.redis_url.as_ref().map(|u| u.0.as_str()),
            Some("redis://:hunter2@127.0.0.1:6379/0")
        );
        let shown = format!("{login:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

#[cfg(test)]
mod several {
    use crate::compile::compile;
    use crate::compile::tests::GOOD;

    /// `file:line:col` of the `nth` (0-based) occurrence of `needle` in `text`.
    fn at(text: &str, needle: &str, nth: usize) -> String {
        let offset = text
            .match_indices(needle)
            .nth(nth)
            .unwrap_or_else(|| panic!("{needle:?} #{nth} not in the text"))
            .0;
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("t.toml:{line}:{col}")
    }

    fn errors(text: &str) -> Vec<String> {
        compile("t.toml", text).unwrap_err().0
    }

    const TWO: &str = r#"
[[routes]]
path = "/staff/**"
auth = "login"
login = "staff"

[[routes]]
path = "/app/**"
auth = "login"

[login]
issuer = "https://customers.example"
client_id = "app"

[[logins]]
name = "staff"
issuer = "https://corp.example"
client_id = "staff-app"
"#;

    #[test]
    fn named_providers_get_their_own_cookies_and_paths() {
        let c = compile("t.toml", &format!("{GOOD}{TWO}")).unwrap();
        let names: Vec<&str> = c.logins.iter().map(|l| &*l.name).collect();
        assert_eq!(names, ["default", "staff"]);
        let (default, staff) = (&c.logins[0], &c.logins[1]);
        assert_eq!(default.cookie_name, "AWSELBAuthSessionCookie");
        assert_eq!(default.state_cookie, "jwtgate-login-state");
        assert_eq!(default.callback_path, "/oauth2/idpresponse");
        assert_eq!(default.logout_path, "/oauth2/sign_out");
        assert_eq!(&*default.policy.name, "login");
        assert_eq!(staff.cookie_name, "AWSELBAuthSessionCookie.staff");
        assert_eq!(staff.state_cookie, "jwtgate-login-state.staff");
        assert_eq!(staff.callback_path, "/oauth2/idpresponse/staff");
        assert_eq!(staff.logout_path, "/oauth2/sign_out/staff");
        assert_eq!(&*staff.policy.name, "login:staff");
        let providers: Vec<Option<&str>> = c
            .routes
            .iter()
            .map(|(_, _, r)| r.login.as_deref())
            .collect();
        assert_eq!(
            providers,
            [None, None, Some("staff"), Some("default")],
            "health, admin (bearer), staff, app"
        );
        let shown = c.describe();
        assert!(
            shown.contains("login \"staff\"  iss=https://corp.example"),
            "{shown}"
        );
        assert!(
            shown.contains("callback=/oauth2/idpresponse/staff"),
            "{shown}"
        );
        assert!(shown.contains("login=staff"), "{shown}");
        assert!(shown.contains("login=default"), "{shown}");

        // Only [[logins]]: a login route must name its provider.
        let only = TWO.replace(
            "[login]\nissuer = \"https://customers.example\"\nclient_id = \"app\"\n",
            "",
        );
        let text = format!("{GOOD}{only}");
        assert_eq!(
            errors(&text),
            [format!(
                "{}: routes[3].auth: auth = \"login\" without login = \"NAME\" needs a [login] table (the provider named \"default\")",
                at(&text, "\"login\"", 1)
            )]
        );
        // A [[logins]] table named default is the default provider when there is no [login].
        let text = format!(
            "{GOOD}{only}\n[[logins]]\nname = \"default\"\nissuer = \"https://c.example\"\nclient_id = \"c\"\n"
        );
        let c = compile("t.toml", &text).unwrap();
        assert_eq!(c.logins[1].cookie_name, "AWSELBAuthSessionCookie");
        assert_eq!(c.logins[1].callback_path, "/oauth2/idpresponse");
    }

    #[test]
    fn names_are_checked_where_they_stand() {
        let more = r#"
[[logins]]
name = "default"
issuer = "https://a.example"
client_id = "a"

[[logins]]
name = "staff"
issuer = "https://b.example"
client_id = "b"

[[logins]]
name = "bad name"
issuer = "https://c.example"
client_id = "c"

[[logins]]
name = ""
issuer = "https://d.example"
client_id = "d"

[[logins]]
name = ".."
issuer = "https://e.example"
client_id = "e"

[[logins]]
issuer = "https://f.example"
client_id = "f"
"#;
        let text = format!("{GOOD}{TWO}{more}\n");
        let text = text.replace("[login]\nissuer", "[login]\nname = \"customers\"\nissuer");
        let expected = [
            format!(
                "{}: login.name: [login] is the provider named \"default\"; names are for [[logins]] tables",
                at(&text, "\"customers\"", 0)
            ),
            format!(
                "{}: logins[1].name: \"default\" is the [login] table's provider: rename this one, or make [login] a [[logins]] table",
                at(&text, "\"default\"", 0)
            ),
            format!(
                "{}: logins[2].name: duplicate login name \"staff\"",
                at(&text, "\"staff\"", 2)
            ),
            format!(
                "{}: logins[3].name: \"bad name\": letters, digits, '_', '.' and '-' only",
                at(&text, "\"bad name\"", 0)
            ),
            format!(
                "{}: logins[4].name: must be 1 to 64 characters",
                at(&text, "\"\"\n", 0)
            ),
            format!(
                "{}: logins[5].name: \"..\" is not a name",
                at(&text, "\"..\"", 0)
            ),
        ];
        let got = errors(&text);
        assert_eq!(got[..expected.len()], expected, "{got:#?}");
        assert_eq!(got.len(), expected.len() + 1, "{got:#?}");
        assert!(
            got[expected.len()]
                .ends_with("logins[6].name: missing: every [[logins]] table needs a name"),
            "{got:#?}"
        );
    }

    #[test]
    fn colliding_cookies_and_paths_and_misused_route_keys_are_refused() {
        let clash = r#"
[[logins]]
name = "b"
issuer = "https://b.example"
client_id = ""
session_cookie_name = "AWSELBAuthSessionCookie"
callback_path = "/oauth2/sign_out"
logout_path = "/oauth2/idpresponse/staff"

[[routes]]
path = "/x/**"
auth = "none"
login = "staff"

[[routes]]
path = "/y/**"
auth = "login"
login = "nobody"

[forward_auth]
path = "/oauth2/sign_out/staff"
"#;
        let text = format!("{GOOD}{TWO}{clash}");
        let expected = [
            format!(
                "{}: routes[4].login: only with auth = \"login\"",
                at(&text, "\"staff\"", 2)
            ),
            format!(
                "{}: logins[1].client_id: must not be empty",
                at(&text, "\"\"\n", 0)
            ),
            format!(
                "{}: forward_auth.path: collides with the sign-in paths of login \"staff\"",
                at(&text, "[forward_auth]", 0)
            ),
            format!(
                "{}: routes[5].login: no login provider is named \"nobody\" (known: default, staff, b)",
                at(&text, "\"nobody\"", 0)
            ),
        ];
        assert_eq!(errors(&text), expected);

        // With a good client id, the cookie and paths collide.
        let text = text.replace("client_id = \"\"", "client_id = \"b\"");
        let text = text.replace(
            "login = \"staff\"\n\n[[routes]]\npath = \"/y",
            "\n[[routes]]\npath = \"/y",
        );
        let text = text.replace("login = \"nobody\"\n", "login = \"b\"\n");
        let text = text.replace("[forward_auth]\npath = \"/oauth2/sign_out/staff\"\n", "");
        let expected = [
            format!(
                "{}: logins[1].session_cookie_name: the session cookie \"AWSELBAuthSessionCookie\" is also a cookie of login \"default\"",
                at(&text, "\"AWSELBAuthSessionCookie\"", 0)
            ),
            format!(
                "{}: logins[1].callback_path: \"/oauth2/sign_out\" is also a sign-in path of login \"default\"",
                at(&text, "\"/oauth2/sign_out\"", 0)
            ),
            format!(
                "{}: logins[1].logout_path: \"/oauth2/idpresponse/staff\" is also a sign-in path of login \"staff\"",
                at(&text, "\"/oauth2/idpresponse/staff\"", 0)
            ),
        ];
        assert_eq!(errors(&text), expected);
    }
}

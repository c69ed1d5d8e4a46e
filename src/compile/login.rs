//! `[login]`: ALB-style browser sign-in (the IdP, the client, cookies and sessions).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::diags::Diags;
use super::issuers::{self, DEFAULT_LEEWAY, Fetching, IssuerKeys};
use super::secret::{self, Or};
use crate::config::RawLogin;
use crate::jwks::KeySource;
use crate::login::alb::{AlbSigner, DEFAULT_SIGNER};
use crate::login::cookies::CookieKeys;
use crate::login::oidc::{ClientAuth, EndpointConfig, Endpoints};
use crate::login::{CALLBACK_PATH, LoginSettings, OnUnauthenticated, Redacted};
use crate::routes::{PathOptions, Router};
use crate::settings::{AuthMode, Route};
use crate::token::IssuerPolicy;

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

/// `[login]`, when the file has one.
pub(super) fn compile(
    d: &mut Diags<'_>,
    raw: Option<&Spanned<RawLogin>>,
    paths: PathOptions,
) -> Option<LoginSettings> {
    let raw = raw?;
    let span = raw.span();
    let r = raw.get_ref();
    let before = d.count();
    let mut explicit = Endpoints {
        authorization: d
            .http_url(&r.authorization_endpoint, "login.authorization_endpoint")
            .unwrap_or_default(),
        token: d
            .http_url(&r.token_endpoint, "login.token_endpoint")
            .unwrap_or_default(),
        user_info: d.http_url(&r.user_info_endpoint, "login.user_info_endpoint"),
        end_session: d.http_url(&r.end_session_endpoint, "login.end_session_endpoint"),
        jwks_uri: d.http_url(&r.jwks_uri, "login.jwks_uri"),
    };
    let named = IssuerKeys {
        key: "login",
        span: span.clone(),
        issuer: &r.issuer,
        user_pool_id: &r.user_pool_id,
        region: &r.region,
        algorithms: &r.algorithms,
        dialect: issuers::LOGIN,
    };
    let identity = named.identity(d)?;
    if let Some(pool) = identity.user_pool_id {
        hosted_ui(d, pool, &r.domain, &mut explicit)?;
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
        d.err(r.client_id.span(), "login.client_id", "must not be empty");
    }
    let client_secret = secret::read(
        d,
        "login.client_secret",
        &r.client_secret_env,
        Or::File(&r.client_secret_file),
        false,
    )
    .map(|s| s.value);
    let client_auth = d.choice(
        &r.token_endpoint_auth,
        "login.token_endpoint_auth",
        &[
            ("client_secret_basic", ClientAuth::Basic),
            ("client_secret_post", ClientAuth::Post),
        ],
        ClientAuth::Basic,
    );
    let scope = d.string(
        &r.scope,
        "login.scope",
        "openid",
        |scope| scope.split_whitespace().any(|s| s == "openid"),
        "must include openid",
    );
    let extra_params = extra_params(d, &r.extra_params);
    let cookie_name = d.string(
        &r.session_cookie_name,
        "login.session_cookie_name",
        "AWSELBAuthSessionCookie",
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
        "login.session_timeout",
        Duration::from_secs(7 * 86_400),
    );
    let on_unauthenticated = d.choice(
        &r.on_unauthenticated,
        "login.on_unauthenticated",
        &[
            ("authenticate", OnUnauthenticated::Authenticate),
            ("deny", OnUnauthenticated::Deny),
            ("allow", OnUnauthenticated::Allow),
        ],
        OnUnauthenticated::Authenticate,
    );
    let deny_api_clients = d.choice(
        &r.api_clients,
        "login.api_clients",
        &[("deny", true), ("authenticate", false)],
        true,
    );
    let logout_path = d.string(
        &r.logout_path,
        "login.logout_path",
        "/oauth2/sign_out",
        |path| {
            path.starts_with('/')
                && path != CALLBACK_PATH
                && crate::routes::normalize(path, paths).ok().as_deref() == Some(path)
        },
        "must be a normalised absolute path other than the callback",
    );
    let logout_redirect = d.http_url(&r.logout_redirect, "login.logout_redirect");
    let redirect_base = d
        .http_url(&r.redirect_base, "login.redirect_base")
        .map(|b| b.trim_end_matches('/').to_owned());
    let secure_cookies = r.secure_cookies.as_ref().is_none_or(|s| *s.get_ref());
    let cookie_keys = secret::read(
        d,
        "login.cookie_keys",
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
    let redis_url = redis_url(d, r, span);
    let alb_signer = d.string(
        &r.alb_signer,
        "login.alb_signer",
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
                d.err(f.span(), "login.alb_key_file", e);
                None
            }
        }
    });
    let algorithms = named.algorithms(d);
    if d.count() > before {
        return None;
    }
    let policy = IssuerPolicy {
        name: "login".into(),
        issuer: identity.issuer.into(),
        audiences: vec![client_id.clone()],
        skip_audience_check: false,
        token_use: None,
        algorithms,
        leeway_secs: i64::try_from(DEFAULT_LEEWAY.as_secs()).unwrap_or(60),
    };
    let (policy, keys) = issuers::build(policy, key_source, Fetching::default());
    Some(LoginSettings {
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
    })
}

/// The Cognito shorthand's endpoints, on the hosted UI's `domain`, where none is written out.
fn hosted_ui(
    d: &mut Diags<'_>,
    pool: &Spanned<String>,
    domain: &Option<Spanned<String>>,
    explicit: &mut Endpoints,
) -> Option<()> {
    let Some(domain) = domain else {
        d.err(pool.span(), "login.domain", "the Cognito shorthand needs the hosted UI domain (e.g. myapp.auth.us-east-1.amazoncognito.com)");
        return None;
    };
    let host = domain
        .get_ref()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if host.is_empty() || host.contains(['/', ' ']) {
        d.err(domain.span(), "login.domain", "must be a host name");
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
    params: &Option<Spanned<BTreeMap<String, Spanned<String>>>>,
) -> Vec<(String, String)> {
    let Some(params) = params else {
        return Vec::new();
    };
    if params.get_ref().len() > MAX_EXTRA_PARAMS {
        d.err(
            params.span(),
            "login.extra_params",
            format!("at most {MAX_EXTRA_PARAMS} parameters"),
        );
    }
    let mut extra_params = Vec::new();
    for (k, v) in params.get_ref() {
        if RESERVED_PARAMS.contains(&k.as_str()) {
            d.err(
                v.span(),
                format!("login.extra_params.{k}"),
                "is set by jwtgate",
            );
        }
        extra_params.push((k.clone(), v.get_ref().clone()));
    }
    extra_params
}

/// `session_store`, and with `redis` the Redis URL: in the file, or in an environment variable
/// (a password stays out of the file).
fn redis_url(d: &mut Diags<'_>, r: &RawLogin, span: Range<usize>) -> Option<String> {
    let redis = d.choice(
        &r.session_store,
        "login.session_store",
        &[("cookie", false), ("redis", true)],
        false,
    );
    let url = secret::read(
        d,
        "login.redis_url",
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
                "login.redis_url",
                "session_store = \"redis\" needs redis_url or redis_url_env",
            );
            None
        }
        _ => None,
    }
}

/// Routes with `auth = "login"` need a `[login]` table.
pub(super) fn required(d: &mut Diags<'_>, routes: &Router<Route>, raw: Option<&Spanned<RawLogin>>) {
    let needs_login = routes.iter().any(|(_, _, r)| r.auth == AuthMode::Login);
    if needs_login && raw.is_none() {
        d.err(
            0..0,
            "login",
            "routes use auth = \"login\" but there is no [login] table",
        );
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
        let l = c.login.unwrap();
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
        let login = compile("t.toml", &text).unwrap().login.unwrap();
        assert_eq!(
            login.redis_url.as_ref().map(|u| u.0.as_str()),
            Some("redis://:hunter2@127.0.0.1:6379/0")
        );
        let shown = format!("{login:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

//! From the file as written to the checked [`Config`]: one module per TOML table, each
//! compiling itself. Every problem is collected (not just the first) and reported as
//! `file:line:col: key: reason`.

mod authorizers;
mod aws_credentials;
mod aws_sigv4;
mod cors;
mod describe;
mod diags;
mod forward_auth;
mod headers;
mod issuers;
mod login;
mod paths;
mod policies;
mod routes;
mod secret;
mod server;
mod token_cache;
mod tracing;
mod upstream;

use crate::config::RawConfig;
use crate::trace;
use diags::Diags;

pub use diags::{ConfigErrors, parse_duration};
pub use issuers::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_LEEWAY, DEFAULT_MIN_REFETCH_INTERVAL, DEFAULT_REFRESH_INTERVAL,
};
pub use policies::DEFAULT_SET;
pub use server::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, MIN_MAX_HEADER_BYTES,
};
pub use token_cache::DEFAULT_TOKEN_CACHE_BYTES;
pub use upstream::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_POOL_MAX_IDLE,
    DEFAULT_RESPONSE_TIMEOUT, DEFAULT_UPSTREAM,
};

use crate::settings::Config;

/// Reads and checks a config file's text. `file` is only used in messages. The OpenTelemetry
/// variables (`[tracing]`) come from the process environment.
pub fn compile(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    compile_with_env(file, text, |name| std::env::var(name).ok())
}

/// [`compile`], with the OpenTelemetry variables read through `env` (tests pass a map).
///
/// Each table compiles itself, in this order (the order of the messages); a table that needs
/// another's result is handed it.
pub fn compile_with_env(
    file: &str,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut d = Diags::new(file, text);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            d.err(span, "toml", e.message().trim());
            return Err(d.finish());
        }
    };

    let server = server::compile(&mut d, &raw.server);
    // Before anything that normalises or parses a path.
    let paths = paths::compile(&mut d, &raw.paths);
    let tls = server::tls(&mut d, &raw.server);
    let upstreams = upstream::compile(&mut d, raw.upstream.as_ref(), &raw.upstreams);
    let issuers = issuers::compile(&mut d, &raw.issuers);
    let authorizer_names: Vec<std::sync::Arc<str>> = raw
        .authorizers
        .iter()
        .map(|a| std::sync::Arc::from(a.get_ref().name.get_ref().as_str()))
        .collect();
    let mut authorizers = authorizers::compile(&mut d, &raw.authorizers);
    let routes = routes::compile(
        &mut d,
        &raw.routes,
        &issuers,
        paths,
        &upstreams,
        &authorizer_names,
    );
    let mut headers = headers::compile(&mut d, &raw.headers, server.trusted_proxies);
    routes::manage_capture_headers(&mut d, &raw.routes, &mut headers);
    authorizers::manage_headers(&mut d, &raw.authorizers, &authorizers, &mut headers);
    let mut logins = login::compile(&mut d, raw.login.as_ref(), &raw.logins, paths);
    let tracing = tracing::compile(&mut d, raw.tracing.as_ref(), trace::read_env(env));
    let cors = cors::compile(&mut d, raw.cors.as_ref());
    let forward_auth = forward_auth::compile(&mut d, raw.forward_auth.as_ref(), paths, &logins);
    // Across tables (a route's references to [[issuers]] are checked with the route).
    login::routes(&mut d, &raw.routes, raw.login.as_ref(), &raw.logins);
    let policy_sets = policies::compile(&mut d, raw.policies.as_ref(), &raw.policy_sets);
    let mut routes = routes;
    let configured = policies::names(raw.policies.as_ref(), &raw.policy_sets);
    policies::routes(&mut d, &raw.routes, &policy_sets, &configured, &mut routes);
    // Last, where its message has always been.
    let token_cache_bytes = token_cache::compile(&mut d, &raw.token_cache);
    let aws_credentials = aws_credentials::compile(&mut d, &raw.aws_credentials);
    authorizers::credentials(
        &mut d,
        &raw.authorizers,
        &raw.aws_credentials,
        &aws_credentials,
        &mut authorizers,
    );
    let issuer_policies: Vec<_> = issuers
        .list
        .iter()
        .map(|(p, _)| std::sync::Arc::clone(p))
        .collect();
    let sigv4 = aws_sigv4::Context {
        raw_sources: &raw.aws_credentials,
        sources: &aws_credentials,
        issuers: &issuer_policies,
    };
    let by_upstream = aws_sigv4::upstreams(&mut d, &sigv4, raw.upstream.as_ref(), &raw.upstreams);
    aws_sigv4::routes(
        &mut d,
        &sigv4,
        &raw.routes,
        &by_upstream,
        &upstreams,
        &mut routes,
        &mut logins,
    );

    match upstreams.settings() {
        Some(upstreams) if d.count() == 0 => Ok(Config {
            source: file.to_owned(),
            listen: server.listen,
            admin_listen: server.admin_listen,
            limits: server.limits,
            upstreams,
            issuers: issuers.list,
            paths,
            routes,
            headers,
            token_cache_bytes,
            logins,
            forward_auth,
            tls,
            cors,
            tracing,
            policies: policy_sets,
            authorizers,
            aws_credentials,
        }),
        _ => Err(d.finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const GOOD: &str = r#"
[upstream]
url = "http://127.0.0.1:3000"

[[issuers]]
name = "cognito"
user_pool_id = "us-east-1_AbC123"
audiences = ["client"]

[[routes]]
path = "/health"
auth = "none"

[[routes]]
path = "/admin/**"
scopes_any = ["api/admin"]
token_use = "access"
"#;

    #[test]
    fn every_error_is_reported_with_position_and_key() {
        let bad = r#"
[server]
listen = "nowhere"

[upstream]
url = "ftp://x"

[[issuers]]
issuer = "https://idp.example"
algorithms = ["HS256"]

[[routes]]
path = "admin/**"
auth = "sometimes"
"#;
        let errors = compile("bad.toml", bad).unwrap_err().0;
        let text = errors.join("\n");
        assert!(text.contains("bad.toml:3:10: server.listen:"), "{text}");
        assert!(text.contains("bad.toml:6:7: upstream.url:"), "{text}");
        assert!(text.contains("issuers[0].algorithms: HMAC"), "{text}");
        assert!(text.contains("issuers[0].audiences: missing"), "{text}");
        assert!(text.contains("bad.toml:13:8: routes[0].path:"), "{text}");
        assert!(text.contains("bad.toml:14:8: routes[0].auth:"), "{text}");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_point_at_the_spot() {
        let errors = compile("x.toml", "[server]\nlisten = \"0.0.0.0:1\"\nlistn = 1\n")
            .unwrap_err()
            .0;
        assert!(
            errors[0].starts_with("x.toml:3:1: toml: unknown field `listn`"),
            "{errors:?}"
        );
        let errors = compile("x.toml", "[server\n").unwrap_err().0;
        assert!(errors[0].starts_with("x.toml:1:"), "{errors:?}");
    }
}

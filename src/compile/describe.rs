//! `jwtgate check`'s table: the compiled routes and settings, one line each.

use std::fmt::Write as _;

use http::Method;

use crate::settings::Config;
use crate::token::TokenUse;

impl Config {
    /// The compiled route table and settings, as `jwtgate check` prints them.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "listen {}  admin {}", self.listen, self.admin_listen);
        for (index, upstream) in self.upstreams.iter().enumerate() {
            let used = self.routes.iter().any(|(_, _, r)| r.upstream == index);
            let urls: Vec<String> = upstream
                .origins
                .iter()
                .map(|o| {
                    format!(
                        "{}{}",
                        o.to_string().trim_end_matches('/'),
                        upstream.path_prefix
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "upstream {:?}  url={}  http2={}{}",
                &*upstream.name,
                urls.join(","),
                upstream.http2,
                if used { "" } else { "  (no route uses it)" },
            );
        }
        for (policy, keys) in &self.issuers {
            let algs: Vec<String> = policy.algorithms.iter().map(|a| format!("{a:?}")).collect();
            let audience = if policy.skip_audience_check {
                "any".to_owned()
            } else {
                policy.audiences.join(",")
            };
            let _ = writeln!(
                out,
                "issuer {:?}  iss={}  keys={}  audiences={}  token_use={}  algorithms={}",
                policy.name,
                policy.issuer,
                keys.source.url(),
                audience,
                policy.token_use.map_or("any", TokenUse::as_str),
                algs.join(","),
            );
        }
        for login in &self.logins {
            let _ = writeln!(
                out,
                "login {:?}  iss={}  client_id={}  cookie={}  store={}  on_unauthenticated={:?}  callback={}  logout={}",
                login.name,
                login.issuer,
                login.client_id,
                login.cookie_name,
                if login.redis_url.is_some() {
                    "redis"
                } else {
                    "cookie"
                },
                login.on_unauthenticated,
                login.callback_path,
                login.logout_path,
            );
        }
        for set in &self.policies {
            let _ = writeln!(
                out,
                "policies {:?}  namespace={}  resource={}  policies={}  schema={}",
                &*set.name,
                if set.namespace.is_empty() {
                    "-"
                } else {
                    &set.namespace
                },
                set.resource(),
                set.policies.policies().count(),
                if set.has_schema() {
                    "validated"
                } else {
                    "none"
                },
            );
        }
        for a in &self.authorizers {
            let detail = match &a.kind {
                crate::authorizer::Kind::Lambda {
                    response,
                    api_arn,
                    payload_v1,
                } => format!(
                    "payload={}  response={}  api_arn={api_arn}",
                    if *payload_v1 { "1.0" } else { "2.0" },
                    match response {
                        crate::authorizer::ResponseFormat::Simple => "simple",
                        crate::authorizer::ResponseFormat::Iam => "iam",
                    }
                ),
                crate::authorizer::Kind::ExtAuthz {
                    allowed_headers,
                    upstream_headers,
                    ..
                } => format!(
                    "sends={}  upstream_headers={}",
                    allowed_headers
                        .iter()
                        .map(|h| h.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    upstream_headers
                        .iter()
                        .map(|h| h.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            };
            let context: Vec<String> = a
                .context_headers
                .iter()
                .map(|(h, k)| format!("{h}={k}"))
                .collect();
            let _ = writeln!(
                out,
                "authorizer {:?}  type={}  url={}  identity_source={}  ttl={}s  cache_key={}  timeout={}ms  {detail}{}",
                &*a.name,
                a.type_name(),
                a.url,
                if a.identity_source_text.is_empty() {
                    "-".to_owned()
                } else {
                    a.identity_source_text.join(",")
                },
                a.ttl.as_secs(),
                a.cache_key.as_str(),
                a.timeout.as_millis(),
                if context.is_empty() {
                    String::new()
                } else {
                    format!("  context_headers={}", context.join(","))
                },
            );
        }
        let _ = writeln!(
            out,
            "paths  semicolons={}  case_insensitive={}",
            self.paths.semicolons.as_str(),
            self.paths.case_insensitive,
        );
        let _ = writeln!(
            out,
            "{:<4} {:<24} {:<22} {:<12} {:<8} {:<12} requirements",
            "#", "path", "name", "methods", "auth", "upstream"
        );
        for (i, (pattern, methods, route)) in self.routes.iter().enumerate() {
            let methods = methods.map_or("*".to_owned(), |m| {
                m.iter().map(Method::as_str).collect::<Vec<_>>().join(",")
            });
            let r = &route.requirements;
            let mut req = Vec::new();
            if let Some(login) = &route.login {
                req.push(format!("login={login}"));
            }
            if let Some(a) = route
                .authorizer
                .as_ref()
                .and_then(|a| self.authorizers.get(a.index))
            {
                req.push(format!("authorizer={}", a.name));
            }
            if !r.scopes_any.is_empty() {
                req.push(format!("scopes_any={}", r.scopes_any.join(",")));
            }
            if !r.scopes_all.is_empty() {
                req.push(format!("scopes_all={}", r.scopes_all.join(",")));
            }
            if !r.groups_any.is_empty() {
                req.push(format!("groups_any={}", r.groups_any.join(",")));
            }
            if let Some(t) = r.token_use {
                req.push(format!("token_use={}", t.as_str()));
            }
            if let Some(i) = &r.issuers {
                req.push(format!(
                    "issuers={}",
                    i.iter().map(|n| &**n).collect::<Vec<_>>().join(",")
                ));
            }
            let captures = pattern.capture_names();
            for c in &r.claims {
                let bound = c.captures.iter().filter_map(|&i| captures.get(i));
                let values: Vec<String> = c
                    .values
                    .iter()
                    .cloned()
                    .chain(bound.map(|n| format!("{{{n}}}")))
                    .collect();
                req.push(format!("claim {}={}", c.name, values.join("|")));
            }
            if let Some(chosen) = &route.policy {
                let set = self.policies.get(chosen.set).map_or("?", |s| &*s.name);
                req.push(format!("policy={set}"));
            }
            if let Some(signing) = &route.aws_sigv4 {
                req.push(signing.describe());
            }
            if !route.keep_override_headers.is_empty() {
                let kept: Vec<&str> = route
                    .keep_override_headers
                    .iter()
                    .map(|h| h.as_str())
                    .collect();
                req.push(format!("keeps {}", kept.join(",")));
            }
            let upstream = self.upstreams.get(route.upstream).map_or("?", |u| &*u.name);
            let _ = writeln!(
                out,
                "{:<4} {:<24} {:<22} {:<12} {:<8} {:<12} {}",
                i + 1,
                pattern.as_str(),
                &*route.name,
                methods,
                route.auth.as_str(),
                upstream,
                if req.is_empty() {
                    "-".to_owned()
                } else {
                    req.join(" ")
                }
            );
            // Captures and the path the upstream gets, on a line of their own when there are any.
            let mut path = Vec::new();
            if !captures.is_empty() {
                let names: Vec<&str> = captures.iter().map(|n| &**n).collect();
                path.push(format!("captures {}", names.join(",")));
            }
            for (header, i) in &route.capture_headers {
                if let Some(n) = captures.get(*i) {
                    path.push(format!("header {header}={{{n}}}"));
                }
            }
            if !route.rewrite.is_identity() {
                path.push(format!("{} → {}", pattern.as_str(), route.rewrite));
            }
            if !path.is_empty() {
                let _ = writeln!(out, "{:<4} {}", "", path.join("  "));
            }
        }
        let _ = writeln!(out, "unmatched requests: 404");
        let _ = writeln!(
            out,
            "client headers with '_': {}",
            if self.headers.keep_underscores {
                "kept (look-alikes of managed headers dropped)"
            } else {
                "dropped"
            }
        );
        for source in &self.aws_credentials {
            let _ = writeln!(out, "{}", source.describe());
        }
        out
    }
}

//! Per-route requirements on a verified token: which issuer and token kind (a mismatch is 401:
//! the client needs another token), then scopes, groups and claim values (a mismatch is 403).

use std::sync::Arc;

use serde_json::Value;

use crate::metrics::label_enum;
use crate::routes::Captures;
use crate::token::{Claims, IssuerPolicy, TokenError, TokenUse};

/// What a route asks of a token.
#[derive(Debug, Default, Clone)]
pub struct Requirements {
    /// At least one of these scopes (API Gateway semantics).
    pub scopes_any: Vec<String>,
    /// All of these scopes.
    pub scopes_all: Vec<String>,
    /// At least one of these `cognito:groups`.
    pub groups_any: Vec<String>,
    /// The token kind.
    pub token_use: Option<TokenUse>,
    /// Issuer names accepted on this route; `None` means every configured issuer.
    pub issuers: Option<Vec<Arc<str>>>,
    /// Claims that must hold one of the listed values.
    pub claims: Vec<ClaimMatcher>,
    /// `scope="…"` of a 403 answer, precomputed.
    pub required_scope: Option<String>,
}

/// An exact-value claim requirement.
#[derive(Debug, Clone)]
pub struct ClaimMatcher {
    /// The claim name.
    pub name: String,
    /// Accepted values (any of).
    pub values: Vec<String>,
    /// Captures of the route's pattern whose value is also accepted (`"{tenant}"` in the
    /// config), by index in the pattern's capture names.
    pub captures: Vec<usize>,
}

impl ClaimMatcher {
    /// Whether a claim value is accepted: equal to a listed value or to a captured one (a
    /// capture that is not UTF-8 equals nothing).
    fn accepts(&self, value: &Value, captures: &Captures<'_, '_>) -> bool {
        value_matches(value, &|text| {
            self.values.iter().any(|a| a == text)
                || self
                    .captures
                    .iter()
                    .any(|&i| captures.value(i).is_some_and(|v| v == text))
        })
    }
}

/// Why a verified token may not use the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The wrong kind of token or issuer for this route: 401 `invalid_token`.
    Token(TokenError),
    /// Valid token, missing permission: 403. The reason says which requirement failed.
    Forbidden(ForbiddenReason),
}

label_enum! {
    /// Which requirement a valid token failed (403); also its `reason` metric label.
    pub enum ForbiddenReason {
        /// None of `scopes_any`, or not all of `scopes_all`.
        InsufficientScope => "insufficient_scope",
        /// None of `groups_any`.
        MissingGroup => "missing_group",
        /// A `claims` requirement without an accepted value.
        ClaimMismatch => "claim_mismatch",
        /// The route's Cedar policies did not allow the request (`policy = …`).
        Policy => "policy",
    }
}

impl Requirements {
    /// Whether any requirement is set (used by `check` output).
    pub fn is_empty(&self) -> bool {
        self.scopes_any.is_empty()
            && self.scopes_all.is_empty()
            && self.groups_any.is_empty()
            && self.token_use.is_none()
            && self.issuers.is_none()
            && self.claims.is_empty()
    }

    /// Checks the token against every requirement, outside routing: a claim bound to a
    /// capture never matches then.
    pub fn check(&self, policy: &IssuerPolicy, claims: &Claims) -> Result<(), Denial> {
        self.check_captured(policy, claims, &Captures::NONE)
    }

    /// Checks the token against every requirement; claims bound to captures compare with the
    /// values the route's pattern captured in the request's path.
    pub fn check_captured(
        &self,
        policy: &IssuerPolicy,
        claims: &Claims,
        captures: &Captures<'_, '_>,
    ) -> Result<(), Denial> {
        if let Some(issuers) = &self.issuers {
            if !issuers.contains(&policy.name) {
                return Err(Denial::Token(TokenError::UnknownIssuer));
            }
        }
        if let Some(required) = self.token_use {
            if claims.token_use.as_deref() != Some(required.as_str()) {
                return Err(Denial::Token(TokenError::WrongTokenUse));
            }
        }
        let has = |s: &String| claims.scopes.contains(s);
        if !self.scopes_any.is_empty() && !self.scopes_any.iter().any(has) {
            return Err(Denial::Forbidden(ForbiddenReason::InsufficientScope));
        }
        if !self.scopes_all.iter().all(has) {
            return Err(Denial::Forbidden(ForbiddenReason::InsufficientScope));
        }
        if !self.groups_any.is_empty() && !self.groups_any.iter().any(|g| claims.groups.contains(g))
        {
            return Err(Denial::Forbidden(ForbiddenReason::MissingGroup));
        }
        for matcher in &self.claims {
            let ok = claims
                .all()
                .get(&matcher.name)
                .is_some_and(|v| matcher.accepts(v, captures));
            if !ok {
                return Err(Denial::Forbidden(ForbiddenReason::ClaimMismatch));
            }
        }
        Ok(())
    }
}

/// Strings compare as is, numbers and booleans by their JSON text, arrays when any element does.
fn value_matches(value: &Value, accepted: &dyn Fn(&str) -> bool) -> bool {
    match value {
        Value::String(s) => accepted(s),
        Value::Bool(_) | Value::Number(_) => accepted(&value.to_string()),
        Value::Array(items) => items.iter().any(|v| value_matches(v, accepted)),
        Value::Null | Value::Object(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    fn policy(name: &str) -> IssuerPolicy {
        IssuerPolicy {
            name: name.into(),
            issuer: "https://issuer".into(),
            audiences: vec![],
            skip_audience_check: true,
            token_use: None,
            algorithms: vec![Algorithm::RS256],
            leeway_secs: 0,
        }
    }

    fn claims(v: Value) -> Claims {
        let Value::Object(map) = v else { panic!() };
        Claims::from_payload(map).unwrap()
    }

    #[test]
    fn scopes_any_all_groups_and_claims() {
        let c = claims(json!({
            "iss":"x","exp":1,"scope":"api/read openid","cognito:groups":["users"],
            "email_verified":"true","tier":["gold","beta"],"level":3
        }));
        let p = policy("cognito");
        let req = |f: fn(&mut Requirements)| {
            let mut r = Requirements::default();
            f(&mut r);
            r.check(&p, &c)
        };
        assert_eq!(req(|_| {}), Ok(()));
        assert_eq!(
            req(|r| r.scopes_any = vec!["api/admin".into(), "api/read".into()]),
            Ok(())
        );
        assert_eq!(
            req(|r| r.scopes_any = vec!["api/rea".into()]),
            Err(Denial::Forbidden(ForbiddenReason::InsufficientScope)),
            "whole words only"
        );
        assert_eq!(
            req(|r| r.scopes_all = vec!["api/read".into(), "api/admin".into()]),
            Err(Denial::Forbidden(ForbiddenReason::InsufficientScope))
        );
        assert_eq!(
            req(|r| r.groups_any = vec!["admins".into(), "users".into()]),
            Ok(())
        );
        assert_eq!(
            req(|r| r.groups_any = vec!["admins".into()]),
            Err(Denial::Forbidden(ForbiddenReason::MissingGroup))
        );
        let m = |name: &str, v: &str| ClaimMatcher {
            name: name.into(),
            values: vec![v.into()],
            captures: vec![],
        };
        assert_eq!(
            req(|r| r.claims = vec![ClaimMatcher {
                name: "tier".into(),
                values: vec!["gold".into()],
                captures: vec![],
            }]),
            Ok(())
        );
        let mut r = Requirements {
            claims: vec![m("level", "3"), m("email_verified", "true")],
            ..Default::default()
        };
        assert_eq!(r.check(&p, &c), Ok(()));
        r.claims = vec![m("missing", "x")];
        assert_eq!(
            r.check(&p, &c),
            Err(Denial::Forbidden(ForbiddenReason::ClaimMismatch))
        );
    }

    #[test]
    fn wrong_token_use_or_issuer_is_a_token_problem_not_a_permission_problem() {
        let id = claims(json!({"iss":"x","exp":1,"token_use":"id"}));
        let r = Requirements {
            token_use: Some(TokenUse::Access),
            ..Default::default()
        };
        assert_eq!(
            r.check(&policy("a"), &id),
            Err(Denial::Token(TokenError::WrongTokenUse))
        );
        let r = Requirements {
            issuers: Some(vec!["b".into()]),
            ..Default::default()
        };
        assert_eq!(
            r.check(&policy("a"), &id),
            Err(Denial::Token(TokenError::UnknownIssuer))
        );
    }

    #[test]
    fn claims_bound_to_captures_compare_with_the_path() {
        use crate::routes::{PathOptions, Pattern, Router};
        let mut router = Router::new();
        router.push(
            Pattern::parse("/tenants/{tenant}/**", PathOptions::default()).unwrap(),
            None,
            Requirements {
                claims: vec![ClaimMatcher {
                    name: "custom:tenant".into(),
                    values: vec!["admin".into()],
                    captures: vec![0],
                }],
                ..Default::default()
            },
        );
        let p = policy("cognito");
        let check = |token: Value, path: &str| {
            let m = router.find(&http::Method::GET, path).unwrap();
            m.route.check_captured(&p, &claims(token), &m.captures)
        };
        let deny = Err(Denial::Forbidden(ForbiddenReason::ClaimMismatch));
        let acme = json!({"iss":"x","exp":1,"custom:tenant":"acme"});
        assert_eq!(check(acme.clone(), "/tenants/acme/x"), Ok(()));
        assert_eq!(check(acme.clone(), "/tenants/globex/x"), deny);
        assert_eq!(check(acme.clone(), "/tenants/ACME/x"), deny, "exact");
        assert_eq!(check(acme.clone(), "/tenants/%FF/x"), deny, "not UTF-8");
        // Literal values still count, and arrays match on any element.
        let admin = json!({"iss":"x","exp":1,"custom:tenant":"admin"});
        assert_eq!(check(admin, "/tenants/globex/x"), Ok(()));
        let both = json!({"iss":"x","exp":1,"custom:tenant":["globex","acme"]});
        assert_eq!(check(both.clone(), "/tenants/acme/x"), Ok(()));
        assert_eq!(check(both, "/tenants/initech/x"), deny);
        let number = json!({"iss":"x","exp":1,"custom:tenant":42});
        assert_eq!(
            check(number, "/tenants/42/x"),
            Ok(()),
            "JSON text, as literals"
        );
        assert_eq!(check(json!({"iss":"x","exp":1}), "/tenants/acme/x"), deny);
        // Outside routing there are no captures: only the literal values match.
        let m = router.find(&http::Method::GET, "/tenants/acme/x").unwrap();
        assert_eq!(m.route.check(&p, &claims(acme)), deny);
    }
}

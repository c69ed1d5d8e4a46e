//! The closed sets metric labels come from. Each value and its label string are written once,
//! here (or, for a domain's own enum such as [`crate::authz::ForbiddenReason`], next to it), and
//! `ALL` lists every value, so pre-registered zero series and documentation checks cannot
//! drift from the code. Label strings are part of the interface: dashboards and alerts in
//! `deploy/` select on them.

/// Declares a label enum: the variants with their label strings, `as_str`, `ALL` and `Display`.
/// A label may be a constant expression, to reuse another enum's string instead of repeating it.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:expr, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub const fn as_str(&self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use label_enum;

use crate::authz::ForbiddenReason;

label_enum! {
    /// What happened to a request, for `jwtgate_requests_total{decision}`.
    pub enum Decision {
        /// Forwarded upstream.
        Allow => "allow",
        /// Refused by jwtgate (400, 401, 403, 404).
        Deny => "deny",
        /// jwtgate or the upstream failed (5xx produced by jwtgate).
        Error => "error",
    }
}

label_enum! {
    /// Why jwtgate answered a request itself: `jwtgate_auth_failures_total{reason}` for
    /// authentication and authorisation refusals, `jwtgate_rejections_total{reason}` for the rest,
    /// and the access log's `reason`.
    pub enum Reason {
        /// An unusable request target.
        BadPath => "bad_path",
        /// A missing, repeated or invalid `Host`.
        BadHost => "bad_host",
        /// The client's request body broke off.
        BadRequestBody => "bad_request_body",
        /// No route matches.
        NoRoute => "no_route",
        /// No bearer token on a route that needs one.
        MissingToken => "missing_token",
        /// Not a well-formed token, a `crit` header or no `exp`.
        Malformed => "malformed",
        /// A signing algorithm not allowed, or not the key's.
        BadAlgorithm => "bad_algorithm",
        /// An issuer not configured, or not accepted on the route.
        WrongIssuer => "wrong_issuer",
        /// A `kid` not in the issuer's key set.
        UnknownKid => "unknown_kid",
        /// The signature does not verify.
        BadSignature => "bad_signature",
        /// `exp` has passed.
        Expired => "expired",
        /// `nbf` or `iat` lies in the future.
        NotYetValid => "not_yet_valid",
        /// No accepted audience.
        WrongAudience => "wrong_audience",
        /// `token_use` is not the required one.
        WrongTokenUse => "wrong_token_use",
        /// The issuer's keys have never been fetched.
        KeysUnavailable => "keys_unavailable",
        /// A required scope is missing.
        InsufficientScope => ForbiddenReason::InsufficientScope.as_str(),
        /// No required group.
        MissingGroup => ForbiddenReason::MissingGroup.as_str(),
        /// A claim without an accepted value.
        ClaimMismatch => ForbiddenReason::ClaimMismatch.as_str(),
        /// The upstream cannot be reached.
        UpstreamUnreachable => "upstream_unreachable",
        /// The upstream sent no response head in time.
        UpstreamTimeout => "upstream_timeout",
        /// A login route without a session, where redirecting is not wanted.
        LoginRequired => "login_required",
        /// The sign-in callback could not complete.
        LoginFailed => "login_failed",
        /// The identity provider cannot be reached or answered nonsense.
        IdpUnavailable => "idp_unavailable",
        /// The session store cannot be reached.
        SessionStoreUnavailable => "session_store_unavailable",
        /// A path segment captured for a header is not a valid header value.
        BadCapture => "bad_capture",
        /// The route's Cedar policies did not allow the request.
        Policy => ForbiddenReason::Policy.as_str(),
        /// A route's external authorizer lacks an identity source value (401, no call).
        AuthorizerIdentityMissing => "authorizer_identity_missing",
        /// The external authorizer denied the request.
        AuthorizerDenied => "authorizer_denied",
        /// The external authorizer call failed (fail closed).
        AuthorizerFailed => "authorizer_failed",
        /// No AWS credentials for the caller (`aws_sigv4`): refused by Cognito or STS, a
        /// role or guest not allowed, AWS unreachable.
        AwsCredentials => "aws_credentials",
        /// A request to a signing route jwtgate cannot sign (a header that is not visible
        /// ASCII).
        AwsSigning => "aws_signing",
        /// A body over `aws_sigv4.max_body`, which a signed payload buffers.
        BodyTooLarge => "body_too_large",
        /// The bodies held whole already fill `[server].max_buffered_body_bytes` (503).
        BodyBuffersFull => "body_buffers_full",
    }
}

label_enum! {
    /// Why a request to a signing route was not signed, or was signed and refused for the
    /// clock, for `jwtgate_aws_signing_failures_total{upstream,reason}`.
    pub enum SigningFailure {
        /// No credentials for the caller.
        Credentials => "credentials",
        /// The request cannot be signed as it is (a header that is not visible ASCII).
        Request => "request",
        /// AWS refused the signature, and its clock is more than 5 minutes from jwtgate's.
        ClockSkew => "clock_skew",
    }
}

label_enum! {
    /// How an external authorizer call ended, for `jwtgate_authorizer_calls_total{result}`.
    pub enum AuthorizerResult {
        /// An allow (simple `true`, a policy with an Allow, an ext_authz 2xx).
        Allow => "allow",
        /// A denial (simple `false`, a policy without Allow, an ext_authz non-2xx).
        Deny => "deny",
        /// No answer within `timeout`.
        Timeout => "timeout",
        /// No connection, or the exchange broke off.
        Unreachable => "unreachable",
        /// A Lambda authorizer endpoint answered a non-2xx status.
        BadStatus => "bad_status",
        /// An answer larger than the limit.
        TooLarge => "too_large",
        /// Not JSON, the wrong shape, or a context value that is no header value.
        Invalid => "invalid",
        /// The Lambda function itself failed (`X-Amz-Function-Error`).
        FunctionError => "function_error",
        /// No AWS credentials to invoke the function with, or the request could not be signed.
        Credentials => "credentials",
    }
}

impl From<ForbiddenReason> for Reason {
    fn from(reason: ForbiddenReason) -> Self {
        match reason {
            ForbiddenReason::InsufficientScope => Reason::InsufficientScope,
            ForbiddenReason::MissingGroup => Reason::MissingGroup,
            ForbiddenReason::ClaimMismatch => Reason::ClaimMismatch,
            ForbiddenReason::Policy => Reason::Policy,
        }
    }
}

label_enum! {
    /// How one fetch of AWS credentials ended, for
    /// `jwtgate_aws_credential_calls_total{source,result}`.
    pub enum CredentialResult {
        /// Credentials were had.
        Ok => "ok",
        /// Cognito or STS refused the user's token.
        TokenRefused => "token_refused",
        /// The user may not have these credentials (role, guests, `AccessDenied`).
        Forbidden => "forbidden",
        /// Throttled, unreachable, timed out or a 5xx.
        Unavailable => "unavailable",
        /// An answer that is not what the API documents.
        Malformed => "malformed",
        /// Nothing to get credentials from (the gateway's chain is empty, a pool not found).
        NotConfigured => "not_configured",
    }
}

label_enum! {
    /// A browser sign-in event, for `jwtgate_login_events_total{provider,event}`.
    pub enum LoginEvent {
        /// A 302 to the identity provider.
        Redirect => "redirect",
        /// A callback that signed the user in.
        CallbackOk => "callback_ok",
        /// A callback that could not complete.
        CallbackFailed => "callback_failed",
        /// A session refreshed with its refresh token.
        RefreshOk => "refresh_ok",
        /// A refresh the identity provider refused (the user signs in again).
        RefreshFailed => "refresh_failed",
        /// A request to the sign-out path.
        Logout => "logout",
    }
}

label_enum! {
    /// How a configuration reload ended, for `jwtgate_config_reloads_total{result}`.
    pub enum ReloadResult {
        /// Installed.
        Ok => "ok",
        /// Refused; the previous configuration keeps serving.
        Refused => "refused",
    }
}

label_enum! {
    /// How a request to an upstream ended, for `jwtgate_upstream_requests_total{result}`.
    pub enum UpstreamResult {
        /// A response head arrived and was relayed (whatever its status).
        Response => "response",
        /// No response head within `response_timeout` (504).
        Timeout => "timeout",
        /// No connection could be made: refused, connect timeout, DNS, TLS handshake (502).
        Unreachable => "unreachable",
        /// Connected, but the exchange broke off or the answer could not be relayed: reset,
        /// malformed head, a 101 to a request that asked no upgrade (502).
        Failed => "failed",
        /// The client's own request body broke off on its way (400; not the upstream's fault).
        BadRequestBody => "bad_request_body",
    }
}

label_enum! {
    /// How a key set fetch ended, for `jwtgate_jwks_fetches_total{result}`.
    pub enum FetchResult {
        /// Fetched and parsed.
        Ok => "ok",
        /// No answer in time.
        Timeout => "timeout",
        /// Connect, TLS or protocol failure.
        Network => "network",
        /// A non-200 answer.
        HttpStatus => "http_status",
        /// A body larger than the limit.
        TooLarge => "too_large",
        /// Not the JSON expected.
        Invalid => "invalid",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `ALL` holds each variant once (`index` is an exhaustive match, so a new variant must be
    /// added there, and then is checked to be in `ALL`), and label strings are distinct
    /// lower_snake_case.
    fn closed<T: Copy + PartialEq + std::fmt::Debug>(
        all: &[T],
        variants: usize,
        index: fn(T) -> usize,
        label: fn(&T) -> &'static str,
    ) {
        let mut seen = vec![false; variants];
        for &v in all {
            let i = index(v);
            assert!(!seen[i], "{v:?} twice in ALL");
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s), "ALL misses a variant");
        let labels: BTreeSet<&str> = all.iter().map(label).collect();
        assert_eq!(labels.len(), all.len(), "label strings are distinct");
        for l in labels {
            assert!(
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l:?}"
            );
        }
    }

    #[test]
    fn every_all_covers_its_variants() {
        closed(
            Decision::ALL,
            3,
            |v| match v {
                Decision::Allow => 0,
                Decision::Deny => 1,
                Decision::Error => 2,
            },
            Decision::as_str,
        );
        closed(
            Reason::ALL,
            33,
            |v| match v {
                Reason::BadPath => 0,
                Reason::BadHost => 1,
                Reason::BadRequestBody => 2,
                Reason::NoRoute => 3,
                Reason::MissingToken => 4,
                Reason::Malformed => 5,
                Reason::BadAlgorithm => 6,
                Reason::WrongIssuer => 7,
                Reason::UnknownKid => 8,
                Reason::BadSignature => 9,
                Reason::Expired => 10,
                Reason::NotYetValid => 11,
                Reason::WrongAudience => 12,
                Reason::WrongTokenUse => 13,
                Reason::KeysUnavailable => 14,
                Reason::InsufficientScope => 15,
                Reason::MissingGroup => 16,
                Reason::ClaimMismatch => 17,
                Reason::UpstreamUnreachable => 18,
                Reason::UpstreamTimeout => 19,
                Reason::LoginRequired => 20,
                Reason::LoginFailed => 21,
                Reason::IdpUnavailable => 22,
                Reason::SessionStoreUnavailable => 23,
                Reason::BadCapture => 24,
                Reason::Policy => 25,
                Reason::AuthorizerIdentityMissing => 26,
                Reason::AuthorizerDenied => 27,
                Reason::AuthorizerFailed => 28,
                Reason::AwsCredentials => 29,
                Reason::AwsSigning => 30,
                Reason::BodyTooLarge => 31,
                Reason::BodyBuffersFull => 32,
            },
            Reason::as_str,
        );
        closed(
            AuthorizerResult::ALL,
            9,
            |v| match v {
                AuthorizerResult::Allow => 0,
                AuthorizerResult::Deny => 1,
                AuthorizerResult::Timeout => 2,
                AuthorizerResult::Unreachable => 3,
                AuthorizerResult::BadStatus => 4,
                AuthorizerResult::TooLarge => 5,
                AuthorizerResult::Invalid => 6,
                AuthorizerResult::FunctionError => 7,
                AuthorizerResult::Credentials => 8,
            },
            AuthorizerResult::as_str,
        );
        closed(
            ForbiddenReason::ALL,
            4,
            |v| match v {
                ForbiddenReason::InsufficientScope => 0,
                ForbiddenReason::MissingGroup => 1,
                ForbiddenReason::ClaimMismatch => 2,
                ForbiddenReason::Policy => 3,
            },
            ForbiddenReason::as_str,
        );
        closed(
            LoginEvent::ALL,
            6,
            |v| match v {
                LoginEvent::Redirect => 0,
                LoginEvent::CallbackOk => 1,
                LoginEvent::CallbackFailed => 2,
                LoginEvent::RefreshOk => 3,
                LoginEvent::RefreshFailed => 4,
                LoginEvent::Logout => 5,
            },
            LoginEvent::as_str,
        );
        closed(
            CredentialResult::ALL,
            6,
            |v| match v {
                CredentialResult::Ok => 0,
                CredentialResult::TokenRefused => 1,
                CredentialResult::Forbidden => 2,
                CredentialResult::Unavailable => 3,
                CredentialResult::Malformed => 4,
                CredentialResult::NotConfigured => 5,
            },
            CredentialResult::as_str,
        );
        closed(
            SigningFailure::ALL,
            3,
            |v| match v {
                SigningFailure::Credentials => 0,
                SigningFailure::Request => 1,
                SigningFailure::ClockSkew => 2,
            },
            SigningFailure::as_str,
        );
        closed(
            ReloadResult::ALL,
            2,
            |v| match v {
                ReloadResult::Ok => 0,
                ReloadResult::Refused => 1,
            },
            ReloadResult::as_str,
        );
        closed(
            UpstreamResult::ALL,
            5,
            |v| match v {
                UpstreamResult::Response => 0,
                UpstreamResult::Timeout => 1,
                UpstreamResult::Unreachable => 2,
                UpstreamResult::Failed => 3,
                UpstreamResult::BadRequestBody => 4,
            },
            UpstreamResult::as_str,
        );
        closed(
            FetchResult::ALL,
            6,
            |v| match v {
                FetchResult::Ok => 0,
                FetchResult::Timeout => 1,
                FetchResult::Network => 2,
                FetchResult::HttpStatus => 3,
                FetchResult::TooLarge => 4,
                FetchResult::Invalid => 5,
            },
            FetchResult::as_str,
        );
    }

    fn labels<T>(all: &[T], label: fn(&T) -> &'static str) -> Vec<&'static str> {
        all.iter().map(label).collect()
    }

    /// The label values dashboards and alerts in `deploy/` select on, spelled out: changing one
    /// breaks them.
    #[test]
    fn label_strings_are_the_published_ones() {
        assert_eq!(
            labels(Decision::ALL, Decision::as_str),
            ["allow", "deny", "error"]
        );
        assert_eq!(
            labels(LoginEvent::ALL, LoginEvent::as_str),
            [
                "redirect",
                "callback_ok",
                "callback_failed",
                "refresh_ok",
                "refresh_failed",
                "logout"
            ]
        );
        assert_eq!(
            labels(ReloadResult::ALL, ReloadResult::as_str),
            ["ok", "refused"]
        );
        assert_eq!(
            labels(CredentialResult::ALL, CredentialResult::as_str),
            [
                "ok",
                "token_refused",
                "forbidden",
                "unavailable",
                "malformed",
                "not_configured"
            ]
        );
        assert_eq!(
            labels(FetchResult::ALL, FetchResult::as_str),
            [
                "ok",
                "timeout",
                "network",
                "http_status",
                "too_large",
                "invalid"
            ]
        );
        assert_eq!(
            labels(UpstreamResult::ALL, UpstreamResult::as_str),
            [
                "response",
                "timeout",
                "unreachable",
                "failed",
                "bad_request_body"
            ]
        );
        assert_eq!(
            labels(ForbiddenReason::ALL, ForbiddenReason::as_str),
            [
                "insufficient_scope",
                "missing_group",
                "claim_mismatch",
                "policy"
            ]
        );
        assert_eq!(
            labels(Reason::ALL, Reason::as_str),
            [
                "bad_path",
                "bad_host",
                "bad_request_body",
                "no_route",
                "missing_token",
                "malformed",
                "bad_algorithm",
                "wrong_issuer",
                "unknown_kid",
                "bad_signature",
                "expired",
                "not_yet_valid",
                "wrong_audience",
                "wrong_token_use",
                "keys_unavailable",
                "insufficient_scope",
                "missing_group",
                "claim_mismatch",
                "upstream_unreachable",
                "upstream_timeout",
                "login_required",
                "login_failed",
                "idp_unavailable",
                "session_store_unavailable",
                "bad_capture",
                "policy",
                "authorizer_identity_missing",
                "authorizer_denied",
                "authorizer_failed",
                "aws_credentials",
                "aws_signing",
                "body_too_large",
                "body_buffers_full"
            ]
        );
        assert_eq!(
            labels(AuthorizerResult::ALL, AuthorizerResult::as_str),
            [
                "allow",
                "deny",
                "timeout",
                "unreachable",
                "bad_status",
                "too_large",
                "invalid",
                "function_error",
                "credentials"
            ]
        );
        for &f in ForbiddenReason::ALL {
            assert_eq!(Reason::from(f).as_str(), f.as_str());
            assert_eq!(f.to_string(), f.as_str(), "Display is the label");
        }
    }

    /// README's Operations section with its whitespace collapsed, so wrapped lines compare.
    fn operations() -> String {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("## Operations")
            .expect("README has an Operations section");
        let section = &readme[start..];
        let end = section[1..].find("\n## ").map_or(section.len(), |e| e + 1);
        section[..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The backticked items of the parenthesised list after `lead`.
    fn listed<'a>(text: &'a str, lead: &str) -> Vec<&'a str> {
        let at = text
            .find(lead)
            .unwrap_or_else(|| panic!("{lead:?} not in README"));
        let rest = &text[at + lead.len()..];
        let list = &rest[..rest.find(')').expect("closing parenthesis")];
        list.split(", ")
            .map(|item| item.trim_matches('`'))
            .collect()
    }

    #[test]
    fn readme_documents_every_label_value() {
        let text = operations();
        assert_eq!(
            listed(
                &text,
                "`jwtgate_login_events_total{provider,event}` (event "
            ),
            labels(LoginEvent::ALL, LoginEvent::as_str)
        );
        assert_eq!(
            listed(
                &text,
                "`jwtgate_authorizer_calls_total{authorizer,result}` ("
            ),
            labels(AuthorizerResult::ALL, AuthorizerResult::as_str)
        );
        assert_eq!(
            listed(
                &text,
                "`jwtgate_aws_credential_calls_total{source,result}` ("
            ),
            labels(CredentialResult::ALL, CredentialResult::as_str)
        );
        assert_eq!(
            listed(
                &text,
                "`jwtgate_aws_signing_failures_total{upstream,reason}` ("
            ),
            labels(SigningFailure::ALL, SigningFailure::as_str)
        );
        assert_eq!(
            listed(&text, "`jwtgate_config_reloads_total{result}` ("),
            labels(ReloadResult::ALL, ReloadResult::as_str)
        );
        assert_eq!(
            listed(
                &text,
                "`jwtgate_upstream_requests_total{upstream,result}` ("
            ),
            labels(UpstreamResult::ALL, UpstreamResult::as_str)
        );
        assert_eq!(
            listed(&text, "`jwtgate_jwks_fetches_total{issuer,result}` ("),
            labels(FetchResult::ALL, FetchResult::as_str)
        );
        assert_eq!(
            listed(
                &text,
                "`jwtgate_requests_total{route,method,decision,status}` (decision "
            ),
            labels(Decision::ALL, Decision::as_str)
        );
        let mut reasons: BTreeSet<&str> = listed(
            &text,
            "`jwtgate_rejections_total{route,reason}` (every other answer jwtgate gives itself: ",
        )
        .into_iter()
        .collect();
        let auth = listed(&text, "fixed reasons (");
        for reason in &auth {
            assert!(reasons.insert(reason), "{reason} listed twice");
        }
        assert_eq!(
            reasons,
            Reason::ALL
                .iter()
                .map(Reason::as_str)
                .collect::<BTreeSet<_>>()
        );
    }
}

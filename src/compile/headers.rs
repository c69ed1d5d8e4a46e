//! `[headers]`: what the upstream receives (claim headers, stripped identity headers).

use std::ops::Range;

use http::HeaderName;
use ipnet::IpNet;

use super::diags::{Diags, strings};
use crate::config::RawHeaders;
use crate::headers::{ALB_IDENTITY_HEADERS, HeaderPlan};

/// Header names jwtgate manages itself; claims cannot be injected under them.
pub(super) const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// `[headers]`, with `[server]`'s trusted proxies (the plan decides whose `X-Forwarded-*` to keep).
pub(super) fn compile(
    d: &mut Diags<'_>,
    h: &RawHeaders,
    trusted_proxies: Vec<IpNet>,
) -> HeaderPlan {
    let header_name =
        |d: &mut Diags<'_>, text: &str, span: Range<usize>, key: &str| -> Option<HeaderName> {
            let lower = text.to_ascii_lowercase();
            // A look-alike (`x_forwarded_for`) reads as the managed header in CGI-style servers.
            if RESERVED_HEADERS.contains(&lower.replace('_', "-").as_str()) {
                d.err(span, key, format!("{text:?} is managed by jwtgate"));
                return None;
            }
            HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| d.err(span, key, format!("{text:?} is not a header name")))
                .ok()
        };
    let keep_underscores = match h
        .underscores
        .as_ref()
        .map(|u| (u.get_ref().as_str(), u.span()))
    {
        None | Some(("drop", _)) => false,
        Some(("keep", _)) => true,
        Some((other, span)) => {
            d.err(
                span,
                "headers.underscores",
                format!("{other:?}: expected \"drop\" or \"keep\""),
            );
            false
        }
    };
    let mut plan = HeaderPlan {
        forward_authorization: h
            .forward_authorization
            .as_ref()
            .is_none_or(|f| *f.get_ref()),
        trusted_proxies,
        keep_underscores,
        ..HeaderPlan::default()
    };
    if let Some(claims) = &h.claims {
        for (name, claim) in claims.get_ref() {
            if let Some(header) =
                header_name(d, name, claims.span(), &format!("headers.claims.{name}"))
            {
                if claim.get_ref().is_empty() {
                    d.err(
                        claim.span(),
                        format!("headers.claims.{name}"),
                        "names no claim",
                    );
                }
                plan.claims.push((header, claim.get_ref().clone()));
            }
        }
    }
    if let Some(name) = &h.claims_json {
        plan.claims_json = header_name(d, name.get_ref(), name.span(), "headers.claims_json");
    }
    let mut identity: Vec<HeaderName> = plan.claims.iter().map(|(n, _)| n.clone()).collect();
    identity.extend(plan.claims_json.clone());
    identity.extend(
        ALB_IDENTITY_HEADERS
            .iter()
            .map(|n| HeaderName::from_static(n)),
    );
    for extra in strings(&h.strip) {
        identity.extend(header_name(
            d,
            extra.get_ref(),
            extra.span(),
            "headers.strip",
        ));
    }
    identity.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    identity.dedup();
    plan.identity = identity;
    plan
}

/// A header jwtgate sets itself from something other than a claim (a captured path segment, an
/// authorizer's answer): a header name, not one jwtgate manages or interprets, and without `_`
/// (CGI-style servers read `x_tenant` as `x-tenant`: a client's dashed copy would be taken for
/// jwtgate's).
pub(super) fn settable_name(
    d: &mut Diags<'_>,
    text: &str,
    span: Range<usize>,
    field: &str,
) -> Option<HeaderName> {
    let lower = text.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || crate::headers::manages(&lower) {
        d.err(span, field, format!("{text:?} is managed by jwtgate"));
        return None;
    }
    if lower.contains('_') {
        d.err(
            span,
            field,
            format!("{text:?}: use '-', not '_', in header names"),
        );
        return None;
    }
    HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| d.err(span, field, format!("{text:?} is not a header name")))
        .ok()
}

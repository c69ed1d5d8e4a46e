//! `[forward_auth]`: the endpoint that answers another proxy's auth subrequests.

use toml::Spanned;

use super::diags::Diags;
use crate::config::RawForwardAuth;
use crate::login::LoginSettings;
use crate::routes::PathOptions;

/// `[forward_auth]`, when the file has one: its path, which must not take the sign-in paths.
pub(super) fn compile(
    d: &mut Diags<'_>,
    raw: Option<&Spanned<RawForwardAuth>>,
    paths: PathOptions,
    logins: &[LoginSettings],
) -> Option<String> {
    let fa = raw?;
    let path = fa
        .get_ref()
        .path
        .as_ref()
        .map_or_else(|| "/auth".to_owned(), |p| p.get_ref().clone());
    let normal = crate::routes::normalize(&path, paths)
        .ok()
        .is_some_and(|n| n == path);
    if !normal || path == "/" || path.ends_with('/') {
        let span = fa.get_ref().path.as_ref().map_or(fa.span(), Spanned::span);
        d.err(
            span,
            "forward_auth.path",
            format!("{path:?} must be a normalised path like /auth"),
        );
    }
    for l in logins {
        if path == l.callback_path || path == l.logout_path {
            d.err(
                fa.span(),
                "forward_auth.path",
                format!("collides with the sign-in paths of login {:?}", l.name),
            );
        }
    }
    Some(path)
}

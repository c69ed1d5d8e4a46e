//! `[token_cache]`: the size of the verified-token cache.

use super::diags::Diags;
use crate::config::RawTokenCache;

/// Default `[token_cache].max_bytes`.
pub const DEFAULT_TOKEN_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// `[token_cache]`: its size in bytes.
pub(super) fn compile(d: &mut Diags<'_>, t: &RawTokenCache) -> u64 {
    match &t.max_bytes {
        None => DEFAULT_TOKEN_CACHE_BYTES,
        Some(v) if *v.get_ref() <= 1 << 32 => *v.get_ref(),
        Some(v) => {
            d.err(
                v.span(),
                "token_cache.max_bytes",
                "must be at most 4294967296 (4 GiB)",
            );
            DEFAULT_TOKEN_CACHE_BYTES
        }
    }
}

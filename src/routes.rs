//! Path normalisation and first-match route lookup.
//!
//! The path is normalised once, matched, and the same normalised path is forwarded, so jwtgate
//! and the upstream can never disagree about which resource a request names.

use std::fmt;

use http::Method;

/// Why a request path cannot be served (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding")]
    BadEncoding,
    /// `%2F`, `%5C`, a raw `\` or `%00`: ambiguous between proxy and upstream.
    #[error("encoded slash, backslash or NUL in path")]
    AmbiguousSegment,
}

/// Normalises a request path (no query): percent-decodes unreserved characters, upper-cases the
/// remaining escapes, merges repeated slashes and resolves `.` and `..` (never above the root).
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Decode into `decoded`, keeping reserved escapes as `%XX`.
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
                let (Some(hi), Some(lo)) = (hex_value(hex[0]), hex_value(hex[1])) else {
                    return Err(PathError::BadEncoding);
                };
                let c = hi << 4 | lo;
                if matches!(c, b'/' | b'\\' | 0) {
                    return Err(PathError::AmbiguousSegment);
                }
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c as char);
                } else {
                    decoded.push('%');
                    decoded.push(HEX_UPPER[usize::from(hi)] as char);
                    decoded.push(HEX_UPPER[usize::from(lo)] as char);
                }
                i += 3;
            }
            b'\\' => return Err(PathError::AmbiguousSegment),
            _ => {
                // Copy the run up to the next escape or backslash in one go (keeps UTF-8 intact).
                let end = bytes[i..]
                    .iter()
                    .position(|&c| c == b'%' || c == b'\\')
                    .map_or(bytes.len(), |p| i + p);
                decoded.push_str(&raw[i..end]);
                i = end;
            }
        }
    }
    // Resolve dot segments and merge empty segments (RFC 3986 §5.2.4, plus `//` → `/`).
    let trailing_slash = decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || decoded == "/";
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if trailing_slash || path.is_empty() {
        path.push('/');
    }
    Ok(path)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
    /// Ends in `/**`: matches the prefix itself and everything below it.
    prefix: bool,
    /// The pattern ends with `/` (only meaningful for exact patterns).
    trailing_slash: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one non-empty segment.
    Any,
}

impl Pattern {
    /// Parses a pattern: `/exact/path`, `/users/*/orders`, `/api/**`, `/**`.
    pub fn parse(source: &str) -> Result<Self, String> {
        if !source.starts_with('/') {
            return Err("must start with '/'".into());
        }
        let normalized = normalize(source).map_err(|e| e.to_string())?;
        if normalized != source {
            return Err(format!(
                "is not in normal form (requests are matched on {normalized:?})"
            ));
        }
        let mut parts: Vec<&str> = source.split('/').skip(1).collect();
        let trailing_slash = parts.last() == Some(&"") && parts.len() > 1;
        if parts.last() == Some(&"") {
            parts.pop();
        }
        let prefix = parts.last() == Some(&"**");
        if prefix {
            parts.pop();
            if trailing_slash {
                return Err("'**' must be the last segment, without a trailing '/'".into());
            }
        }
        let mut segments = Vec::with_capacity(parts.len());
        for part in parts {
            segments.push(match part {
                "*" => Segment::Any,
                "**" => return Err("'**' is only allowed as the last segment".into()),
                p if p.contains('*') => {
                    return Err(format!(
                        "segment {p:?}: '*' must be a whole segment ('*' or a final '**')"
                    ));
                }
                p => Segment::Literal(p.to_owned()),
            });
        }
        Ok(Pattern {
            source: source.to_owned(),
            segments,
            prefix,
            trailing_slash,
        })
    }

    /// Whether a normalised path matches.
    pub fn matches(&self, path: &str) -> bool {
        let mut rest = path.strip_prefix('/').unwrap_or(path);
        let path_trailing = rest.ends_with('/') && !rest.is_empty();
        if path_trailing {
            rest = &rest[..rest.len() - 1];
        }
        let mut parts = rest.split('/').filter(|s| !s.is_empty());
        for segment in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Any => {}
                Segment::Literal(lit) => {
                    if lit != part {
                        return false;
                    }
                }
            }
        }
        if self.prefix {
            return true;
        }
        parts.next().is_none() && path_trailing == self.trailing_slash
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Routes in file order.
#[derive(Debug)]
pub struct Router<R> {
    routes: Vec<(Pattern, Option<Vec<Method>>, R)>,
}

impl<R> Router<R> {
    /// An empty table (every lookup misses).
    pub fn new() -> Self {
        Router { routes: Vec::new() }
    }

    /// Appends a route; earlier routes win.
    pub fn push(&mut self, pattern: Pattern, methods: Option<Vec<Method>>, route: R) {
        self.routes.push((pattern, methods, route));
    }

    /// The first route whose pattern and methods match.
    pub fn lookup(&self, method: &Method, path: &str) -> Option<&R> {
        self.routes
            .iter()
            .find(|(pattern, methods, _)| {
                methods.as_ref().is_none_or(|m| m.contains(method)) && pattern.matches(path)
            })
            .map(|(_, _, r)| r)
    }

    /// Routes in order, with their patterns and methods.
    pub fn iter(&self) -> impl Iterator<Item = (&Pattern, Option<&[Method]>, &R)> {
        self.routes.iter().map(|(p, m, r)| (p, m.as_deref(), r))
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl<R> Default for Router<R> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize(p)
    }

    #[test]
    fn normalization_resolves_dots_slashes_and_unreserved_escapes() {
        assert_eq!(norm("/").unwrap(), "/");
        assert_eq!(norm("//a///b").unwrap(), "/a/b");
        assert_eq!(norm("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/../../etc").unwrap(), "/etc");
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
        assert_eq!(norm("/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/public/%2E%2E/admin").unwrap(), "/admin");
        assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
        assert_eq!(norm("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(norm("/a/").unwrap(), "/a/");
        assert_eq!(norm("/é").unwrap(), "/é");
    }

    #[test]
    fn ambiguous_or_invalid_paths_are_rejected() {
        assert_eq!(norm("/a%2Fb"), Err(PathError::AmbiguousSegment));
        assert_eq!(norm("/a%2fb"), Err(PathError::AmbiguousSegment));
        assert_eq!(norm("/a%5Cb"), Err(PathError::AmbiguousSegment));
        assert_eq!(norm("/a\\b"), Err(PathError::AmbiguousSegment));
        assert_eq!(norm("/a%00"), Err(PathError::AmbiguousSegment));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(norm("/a%2"), Err(PathError::BadEncoding));
        assert_eq!(norm("a"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn patterns_match_exact_one_segment_and_prefix() {
        let exact = Pattern::parse("/health").unwrap();
        assert!(exact.matches("/health"));
        assert!(!exact.matches("/health/"));
        assert!(!exact.matches("/healthz"));
        assert!(!exact.matches("/health/x"));

        let one = Pattern::parse("/users/*/orders").unwrap();
        assert!(one.matches("/users/42/orders"));
        assert!(!one.matches("/users/orders"));
        assert!(!one.matches("/users/1/2/orders"));

        let prefix = Pattern::parse("/admin/**").unwrap();
        assert!(
            prefix.matches("/admin"),
            "a prefix glob covers the prefix itself"
        );
        assert!(prefix.matches("/admin/"));
        assert!(prefix.matches("/admin/a/b"));
        assert!(!prefix.matches("/administrator"));

        let all = Pattern::parse("/**").unwrap();
        assert!(all.matches("/"));
        assert!(all.matches("/anything/at/all"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Pattern::parse("admin").is_err());
        assert!(Pattern::parse("/a/**/b").is_err());
        assert!(Pattern::parse("/a*").is_err());
        assert!(Pattern::parse("/a//b").is_err());
        assert!(Pattern::parse("/a/../b").is_err());
    }

    #[test]
    fn first_match_wins_and_methods_filter() {
        let mut router = Router::new();
        router.push(
            Pattern::parse("/a/**").unwrap(),
            Some(vec![Method::POST]),
            1,
        );
        router.push(Pattern::parse("/a/**").unwrap(), None, 2);
        router.push(Pattern::parse("/**").unwrap(), None, 3);
        assert_eq!(router.lookup(&Method::POST, "/a/x"), Some(&1));
        assert_eq!(router.lookup(&Method::GET, "/a/x"), Some(&2));
        assert_eq!(router.lookup(&Method::GET, "/b"), Some(&3));
        let empty: Router<u8> = Router::new();
        assert_eq!(empty.lookup(&Method::GET, "/"), None);
    }
}

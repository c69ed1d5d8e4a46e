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
    /// A raw `;` while `[paths] semicolons = "reject"`, or a `%3B` in any mode: servlet stacks
    /// read `;` as the start of path parameters (`/public/..;/admin` is `/admin` to Tomcat), and
    /// an encoded one is data to some upstreams and a delimiter to others.
    #[error("';' (path parameter) in path")]
    Semicolon,
    /// With `[paths] case_insensitive = true`: a character (`ſ`, `ı`, the Kelvin or Ångström
    /// sign) that a case-insensitive upstream may fold onto an ASCII letter.
    #[error("character that case-folds onto ASCII in path")]
    CaseFold,
}

/// What a `;` in a request path means (`[paths] semicolons`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Semicolons {
    /// A `;`, `%3B` or `%3b` anywhere in the path is refused with 400 (the default, as Spring
    /// Security's `StrictHttpFirewall` does).
    #[default]
    Reject,
    /// A raw `;` is allowed: in each segment it starts parameters that do not name the
    /// resource, and a segment named `.` or `..` before them is a dot-segment (`..;x`). `%3B`
    /// is still refused.
    Allow,
}

impl Semicolons {
    /// The word used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Semicolons::Reject => "reject",
            Semicolons::Allow => "allow",
        }
    }
}

/// How request paths are read and matched (`[paths]`). The default is the strictest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathOptions {
    /// What a `;` means.
    pub semicolons: Semicolons,
    /// Route patterns' literal segments match ASCII letters case-insensitively.
    pub case_insensitive: bool,
}

/// Normalises a request path (no query): percent-decodes unreserved characters, upper-cases the
/// remaining escapes, merges repeated slashes and resolves `.` and `..` (never above the root).
/// With `Semicolons::Allow`, a segment is named by its part before the first `;`: a segment
/// named `.` or `..` is a dot-segment and one with an empty name is an empty segment (its
/// parameters go with it); other segments are kept whole, parameters included. `%3B` is
/// refused in both modes.
pub fn normalize(raw: &str, options: PathOptions) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let reject_semicolons = options.semicolons == Semicolons::Reject;
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
                if c == b';' {
                    return Err(PathError::Semicolon);
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
            b';' if reject_semicolons => return Err(PathError::Semicolon),
            _ => {
                // Copy the run up to the next byte that needs a look (keeps UTF-8 intact).
                let end = bytes[i..]
                    .iter()
                    .position(|&c| c == b'%' || c == b'\\' || (c == b';' && reject_semicolons))
                    .map_or(bytes.len(), |p| i + p);
                decoded.push_str(&raw[i..end]);
                i = end;
            }
        }
    }
    // Resolve dot segments and merge empty segments (RFC 3986 §5.2.4, plus `//` → `/`). A path
    // ending in an empty or dot segment ends with `/`.
    let parameters = options.semicolons == Semicolons::Allow;
    let mut trailing_slash = false;
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        let name = if parameters {
            segment_name(segment)
        } else {
            segment
        };
        trailing_slash = matches!(name, "" | "." | "..");
        match name {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(segment),
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
    if options.case_insensitive && folds_to_ascii(&path) {
        return Err(PathError::CaseFold);
    }
    Ok(path)
}

/// Characters that Unicode case folding (Java's `equalsIgnoreCase`, .NET's `OrdinalIgnoreCase`)
/// takes for ASCII letters: `ſ` (s), `ı` (i), the Kelvin sign (k), the Ångström sign (å is
/// not ASCII, but it folds with `Å`). Raw, or percent-encoded as they stay after normalising.
const ASCII_FOLDING: [(&str, &str); 4] = [
    ("\u{17F}", "%C5%BF"),
    ("\u{131}", "%C4%B1"),
    ("\u{212A}", "%E2%84%AA"),
    ("\u{212B}", "%E2%84%AB"),
];

/// Whether a normalised path holds a character a case-insensitive upstream may read as an
/// ASCII letter: `/%E2%84%AApi` would be `/kpi` there while jwtgate matches it literally.
fn folds_to_ascii(path: &str) -> bool {
    (!path.is_ascii() || path.contains("%C") || path.contains("%E2"))
        && ASCII_FOLDING
            .iter()
            .any(|(raw, escaped)| path.contains(raw) || path.contains(escaped))
}

/// The part of a segment before its parameters (the first `;`).
fn segment_name(segment: &str) -> &str {
    segment.split_once(';').map_or(segment, |(name, _)| name)
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
    /// How paths are matched against it (from `[paths]`).
    options: PathOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one non-empty segment.
    Any,
}

impl Pattern {
    /// Parses a pattern: `/exact/path`, `/users/*/orders`, `/api/**`, `/**`. `options` are the
    /// ones requests are normalised with, and say how this pattern matches.
    pub fn parse(source: &str, options: PathOptions) -> Result<Self, String> {
        if !source.starts_with('/') {
            return Err("must start with '/'".into());
        }
        if source.contains(';') || source.to_ascii_uppercase().contains("%3B") {
            return Err("must not contain ';' (path parameters do not name a resource)".into());
        }
        let normalized = normalize(source, options).map_err(|e| e.to_string())?;
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
            options,
        })
    }

    /// Whether a path, normalised with this pattern's options, matches. With semicolons
    /// allowed, a segment's parameters are not compared; with `case_insensitive`, ASCII letters
    /// of literal segments compare without case (no copy is made either way).
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
                    let name = match self.options.semicolons {
                        // Refused while normalising: no segment has parameters.
                        Semicolons::Reject => part,
                        Semicolons::Allow => segment_name(part),
                    };
                    let same = if self.options.case_insensitive {
                        lit.eq_ignore_ascii_case(name)
                    } else {
                        lit == name
                    };
                    if !same {
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

    const STRICT: PathOptions = PathOptions {
        semicolons: Semicolons::Reject,
        case_insensitive: false,
    };
    const PARAMS: PathOptions = PathOptions {
        semicolons: Semicolons::Allow,
        case_insensitive: false,
    };
    const NO_CASE: PathOptions = PathOptions {
        semicolons: Semicolons::Reject,
        case_insensitive: true,
    };

    fn norm(p: &str) -> Result<String, PathError> {
        normalize(p, STRICT)
    }

    fn norm_params(p: &str) -> Result<String, PathError> {
        normalize(p, PARAMS)
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
        let exact = Pattern::parse("/health", STRICT).unwrap();
        assert!(exact.matches("/health"));
        assert!(!exact.matches("/health/"));
        assert!(!exact.matches("/healthz"));
        assert!(!exact.matches("/health/x"));

        let one = Pattern::parse("/users/*/orders", STRICT).unwrap();
        assert!(one.matches("/users/42/orders"));
        assert!(!one.matches("/users/orders"));
        assert!(!one.matches("/users/1/2/orders"));

        let prefix = Pattern::parse("/admin/**", STRICT).unwrap();
        assert!(
            prefix.matches("/admin"),
            "a prefix glob covers the prefix itself"
        );
        assert!(prefix.matches("/admin/"));
        assert!(prefix.matches("/admin/a/b"));
        assert!(!prefix.matches("/administrator"));

        let all = Pattern::parse("/**", STRICT).unwrap();
        assert!(all.matches("/"));
        assert!(all.matches("/anything/at/all"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Pattern::parse("admin", STRICT).is_err());
        assert!(Pattern::parse("/a/**/b", STRICT).is_err());
        assert!(Pattern::parse("/a*", STRICT).is_err());
        assert!(Pattern::parse("/a//b", STRICT).is_err());
        assert!(Pattern::parse("/a/../b", STRICT).is_err());
    }

    #[test]
    fn first_match_wins_and_methods_filter() {
        let mut router = Router::new();
        router.push(
            Pattern::parse("/a/**", STRICT).unwrap(),
            Some(vec![Method::POST]),
            1,
        );
        router.push(Pattern::parse("/a/**", STRICT).unwrap(), None, 2);
        router.push(Pattern::parse("/**", STRICT).unwrap(), None, 3);
        assert_eq!(router.lookup(&Method::POST, "/a/x"), Some(&1));
        assert_eq!(router.lookup(&Method::GET, "/a/x"), Some(&2));
        assert_eq!(router.lookup(&Method::GET, "/b"), Some(&3));
        let empty: Router<u8> = Router::new();
        assert_eq!(empty.lookup(&Method::GET, "/"), None);
    }

    #[test]
    fn semicolons_are_refused_by_default_raw_or_encoded() {
        assert_eq!(PathOptions::default(), STRICT);
        for p in [
            "/public/..;/admin/x",
            "/public/.;/admin",
            "/a;b",
            "/a/b;",
            "/;",
            "/a%3Bb",
            "/a%3bb",
            "/public/..%3B/admin",
            "/public/%2e%2e%3b/admin",
        ] {
            assert_eq!(norm(p), Err(PathError::Semicolon), "{p}");
        }
        assert_eq!(
            norm("/a%253B").unwrap(),
            "/a%253B",
            "an encoded '%' then '3B'"
        );
        assert!(Pattern::parse("/a;b", STRICT).is_err());
        assert!(Pattern::parse("/a%3Bb/**", STRICT).is_err());
    }

    #[test]
    fn allowed_semicolons_make_dot_segments_of_dot_names() {
        assert_eq!(norm_params("/public/..;/admin/x").unwrap(), "/admin/x");
        assert_eq!(norm_params("/public/..;x=1/admin/x").unwrap(), "/admin/x");
        assert_eq!(norm_params("/public/.;x/admin").unwrap(), "/public/admin");
        assert_eq!(norm_params("/public/.;/x").unwrap(), "/public/x");
        assert_eq!(norm_params("/a/b/..;").unwrap(), "/a/");
        assert_eq!(norm_params("/a/b/.;x").unwrap(), "/a/b/");
        assert_eq!(norm_params("/..;/..;/admin").unwrap(), "/admin");
        assert_eq!(norm_params("/public/%2e%2e;/admin").unwrap(), "/admin");
        assert_eq!(norm_params("/public/.%2E;x/admin").unwrap(), "/admin");
        // An encoded `;` is data to some upstreams and a delimiter to others: still refused.
        for p in [
            "/public/..%3B/admin",
            "/public/..%3bx/admin",
            "/a%3Bb",
            "/a;b%3B",
        ] {
            assert_eq!(norm_params(p), Err(PathError::Semicolon), "{p}");
        }
        // A segment with nothing before its parameters is an empty segment.
        assert_eq!(norm_params("/;x/admin").unwrap(), "/admin");
        assert_eq!(norm_params("/a/;").unwrap(), "/a/");
        // Parameters of an ordinary segment are kept; escapes are still upper-cased.
        assert_eq!(norm_params("/a;b").unwrap(), "/a;b");
        assert_eq!(
            norm_params("/shop/cart;jsessionid=AB12/item").unwrap(),
            "/shop/cart;jsessionid=AB12/item"
        );
        assert_eq!(norm_params("/a%3fb/c;d%3f").unwrap(), "/a%3Fb/c;d%3F");
        assert_eq!(norm_params("/a;..").unwrap(), "/a;..");
        assert_eq!(norm_params("/...;x").unwrap(), "/...;x");
        // The other refusals still hold.
        assert_eq!(norm_params("/a;%2F"), Err(PathError::AmbiguousSegment));
        assert_eq!(norm_params("/a;\\b"), Err(PathError::AmbiguousSegment));
        // Normal form is a fixed point.
        for p in ["/a;b", "/a%3Fb/c;d", "/x;y/", "/a;b=1;c=2/d"] {
            assert_eq!(norm_params(p).unwrap(), p);
        }
    }

    #[test]
    fn allowed_semicolons_match_on_the_segment_name() {
        let admin = Pattern::parse("/admin/**", PARAMS).unwrap();
        assert!(admin.matches(&norm_params("/admin;x/secret").unwrap()));
        assert!(admin.matches(&norm_params("/public/..;/admin;a=b").unwrap()));
        assert!(!admin.matches(&norm_params("/administrator;x").unwrap()));
        let exact = Pattern::parse("/health", PARAMS).unwrap();
        assert!(exact.matches("/health;jsessionid=1"));
        assert!(!exact.matches("/health;jsessionid=1/"));
        let one = Pattern::parse("/users/*/orders", PARAMS).unwrap();
        assert!(one.matches("/users/42;v=1/orders;x"));
        assert!(!one.matches("/users/orders;x"));
        // A pattern never has parameters of its own; dot-names are not normal form.
        assert!(Pattern::parse("/a;b", PARAMS).is_err());
        assert!(Pattern::parse("/a/..;/b", PARAMS).is_err());
    }

    #[test]
    fn case_insensitive_matching_is_an_option() {
        let cases = [
            ("/admin/**", "/ADMIN/x", true),
            ("/admin/**", "/Admin", true),
            ("/admin/**", "/aDmIn/", true),
            ("/admin/**", "/ADMINISTRATOR", false),
            ("/Admin/**", "/admin/x", true),
            ("/users/*/orders", "/USERS/42/Orders", true),
            ("/users/*/orders", "/USERS/Orders", false),
            ("/health", "/HEALTH", true),
            ("/health", "/HEALTH/", false),
            ("/a%3F", "/A%3f", true),
            ("/**", "/ANY/Thing", true),
        ];
        for (pattern, path, ci) in cases {
            let path = normalize(path, NO_CASE).unwrap();
            let off = Pattern::parse(pattern, STRICT).unwrap();
            let on = Pattern::parse(pattern, NO_CASE).unwrap();
            assert_eq!(on.matches(&path), ci, "{pattern} {path} case-insensitive");
            let exact = pattern == "/**" || path == pattern;
            assert_eq!(off.matches(&path), exact, "{pattern} {path} case-sensitive");
        }
        // Only ASCII letters fold.
        let p = Pattern::parse("/%C3%A9t%C3%A9", NO_CASE).unwrap();
        assert!(p.matches("/%C3%A9T%C3%A9"));
        assert!(!p.matches("/%C3%89t%C3%A9"), "É is not é");
        // Both options together.
        let both = PathOptions {
            semicolons: Semicolons::Allow,
            case_insensitive: true,
        };
        let admin = Pattern::parse("/admin/**", both).unwrap();
        let path = normalize("/public/..;/ADMIN;x/y", both).unwrap();
        assert_eq!(path, "/ADMIN;x/y", "the client's case is kept");
        assert!(admin.matches(&path));
    }

    #[test]
    fn characters_folding_onto_ascii_are_refused_when_case_insensitive() {
        for path in [
            "/%E2%84%AApi",
            "/%e2%84%aapi",
            "/admin/%C5%BF",
            "/\u{131}d",
            "/\u{212B}",
        ] {
            assert_eq!(normalize(path, NO_CASE), Err(PathError::CaseFold), "{path}");
            assert!(
                normalize(path, STRICT).is_ok(),
                "{path}: only with the option"
            );
        }
        assert!(normalize("/%C3%A9t%C3%A9/%E2%82%AC", NO_CASE).is_ok());
    }

    #[test]
    fn the_router_matches_with_its_patterns_options() {
        let mut router = Router::new();
        router.push(Pattern::parse("/admin/**", NO_CASE).unwrap(), None, 1);
        router.push(Pattern::parse("/**", NO_CASE).unwrap(), None, 2);
        assert_eq!(router.lookup(&Method::GET, "/AdMiN/x"), Some(&1));
        let mut router = Router::new();
        router.push(Pattern::parse("/admin/**", STRICT).unwrap(), None, 1);
        router.push(Pattern::parse("/**", STRICT).unwrap(), None, 2);
        assert_eq!(router.lookup(&Method::GET, "/AdMiN/x"), Some(&2));
    }
}

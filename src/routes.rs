//! Path normalisation and first-match route lookup.
//!
//! The path is normalised once, matched, and the same normalised path is forwarded, so jwtgate
//! and the upstream can never disagree about which resource a request names.

use std::borrow::Cow;
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
    /// Names of the `{name}` segments, in pattern order.
    captures: Vec<Box<str>>,
    /// Index in `segments` of each capture, in the order of `captures`.
    capture_segments: Vec<usize>,
    /// `/` and the leading literal segments (`/orders/v2`; empty when the first segment is not
    /// literal): a byte comparison that turns most non-matching paths away before the path is
    /// split into segments, so a gateway's long route table costs little per route.
    literal_head: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one non-empty segment.
    Any,
    /// `{name}`: exactly one non-empty segment, whose value the route can use.
    Capture,
}

/// Whether `name` is a capture name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_capture_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The capture name of a whole `{name}` text (a pattern segment, a claim value), if it is one.
/// `Err` holds the reason a text in braces is not a usable reference.
pub fn capture_reference(text: &str) -> Option<Result<&str, String>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    Some(if is_capture_name(inner) {
        Ok(inner)
    } else {
        Err(format!(
            "{text:?}: a capture name is a letter or '_', then letters, digits or '_'"
        ))
    })
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
        let mut captures: Vec<Box<str>> = Vec::new();
        let mut capture_segments = Vec::new();
        for part in parts {
            segments.push(match part {
                "*" => Segment::Any,
                "**" => return Err("'**' is only allowed as the last segment".into()),
                p if p.contains('*') => {
                    return Err(format!(
                        "segment {p:?}: '*' must be a whole segment ('*' or a final '**')"
                    ));
                }
                p if p.contains(['{', '}']) => {
                    let name = match capture_reference(p) {
                        Some(Ok(name)) => name,
                        Some(Err(reason)) => return Err(reason),
                        None => {
                            return Err(format!(
                                "segment {p:?}: a capture must be a whole segment '{{name}}'"
                            ));
                        }
                    };
                    if captures.iter().any(|c| &**c == name) {
                        return Err(format!("captures {{{name}}} twice"));
                    }
                    captures.push(name.into());
                    capture_segments.push(segments.len());
                    Segment::Capture
                }
                p => Segment::Literal(p.to_owned()),
            });
        }
        let mut literal_head = String::new();
        for segment in &segments {
            let Segment::Literal(literal) = segment else {
                break;
            };
            literal_head.push('/');
            literal_head.push_str(literal);
        }
        Ok(Pattern {
            source: source.to_owned(),
            segments,
            prefix,
            trailing_slash,
            options,
            captures,
            capture_segments,
            literal_head,
        })
    }

    /// The names of the pattern's `{name}` segments, in order (a capture's index is its place
    /// here).
    pub fn capture_names(&self) -> &[Box<str>] {
        &self.captures
    }

    /// The index of the capture called `name`.
    pub fn capture_index(&self, name: &str) -> Option<usize> {
        self.captures.iter().position(|c| &**c == name)
    }

    /// How many segments the pattern starts with that are literal (before any `*`, `{name}`
    /// or `**`), and the text they spell (`/orders/v2`): what a route may strip.
    pub fn literal_prefix(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map_while(|s| match s {
            Segment::Literal(l) => Some(l.as_str()),
            Segment::Any | Segment::Capture => None,
        })
    }

    /// Whether a path, normalised with this pattern's options, matches. With semicolons
    /// allowed, a segment's parameters are not compared; with `case_insensitive`, ASCII letters
    /// of literal segments compare without case (no copy is made either way).
    pub fn matches(&self, path: &str) -> bool {
        self.head_may_match(path) && self.segments_match(path)
    }

    /// A necessary condition for [`Pattern::matches`], in one byte comparison: a normalised
    /// path (no `//`, no dot-segments) starts with the pattern's leading literal segments, up to
    /// a segment boundary. With `;` parameters allowed a segment may carry them (`/orders;x`),
    /// so the check is left to [`Pattern::segments_match`] then.
    fn head_may_match(&self, path: &str) -> bool {
        let head = self.literal_head.as_bytes();
        if head.is_empty() || self.options.semicolons == Semicolons::Allow {
            return true;
        }
        let Some(start) = path.as_bytes().get(..head.len()) else {
            return false;
        };
        let same = if self.options.case_insensitive {
            start.eq_ignore_ascii_case(head)
        } else {
            start == head
        };
        same && matches!(path.as_bytes().get(head.len()), None | Some(b'/'))
    }

    /// Segment by segment: the whole decision of [`Pattern::matches`].
    fn segments_match(&self, path: &str) -> bool {
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
                Segment::Any | Segment::Capture => {}
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

    /// The pattern as API Gateway writes a route's path: a trailing `/**` is the greedy path
    /// variable `/{proxy+}` (`/orders/**` → `/orders/{proxy+}`, `/**` → `/{proxy+}`). Lambda
    /// authorizers see it in `routeKey`, and Cedar actions are named with it, as in an
    /// API-linked Verified Permissions store.
    pub fn api_gateway_path(&self) -> String {
        match self.source.strip_suffix("/**") {
            Some(prefix) => format!("{prefix}/{{proxy+}}"),
            None => self.source.clone(),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Routes in file order, indexed by their first segment.
///
/// Lookup is first match in file order, as written. The index only skips routes that cannot
/// match: a route whose first segment is a literal (`/orders/**`) can only match paths whose
/// first segment is that literal, so a lookup tries the routes of the path's first segment and
/// the routes that start with anything else (`/**`, `/*/x`, `/{tenant}/…`, `/`), merged in file
/// order. A gateway's table of fifty routes then costs a handful of pattern checks.
#[derive(Debug)]
pub struct Router<R> {
    routes: Vec<(Pattern, Option<Vec<Method>>, R)>,
    /// Distinct literal first segments, sorted (ASCII case folded when case-insensitive), each
    /// with its routes' indices in file order.
    heads: Vec<(Box<str>, Vec<usize>)>,
    /// Routes whose first segment is not a literal, in file order.
    open: Vec<usize>,
    /// How the patterns match (the same `[paths]` options for every route).
    options: PathOptions,
}

impl<R> Router<R> {
    /// An empty table (every lookup misses).
    pub fn new() -> Self {
        Router {
            routes: Vec::new(),
            heads: Vec::new(),
            open: Vec::new(),
            options: PathOptions::default(),
        }
    }

    /// Appends a route; earlier routes win.
    pub fn push(&mut self, pattern: Pattern, methods: Option<Vec<Method>>, route: R) {
        let index = self.routes.len();
        if index == 0 {
            self.options = pattern.options;
        }
        debug_assert_eq!(self.options, pattern.options, "one [paths] for every route");
        match pattern.segments.first() {
            Some(Segment::Literal(head)) => {
                let options = self.options;
                match self
                    .heads
                    .binary_search_by(|(h, _)| compare_heads(h, head, options))
                {
                    Ok(at) => self.heads[at].1.push(index),
                    Err(at) => self.heads.insert(at, (head.as_str().into(), vec![index])),
                }
            }
            _ => self.open.push(index),
        }
        self.routes.push((pattern, methods, route));
    }

    /// The first route whose pattern and methods match.
    pub fn lookup(&self, method: &Method, path: &str) -> Option<&R> {
        self.find(method, path).map(|m| m.route)
    }

    /// The first route whose pattern and methods match, with its captures in `path` (read
    /// only when asked for: a route that captures nothing costs nothing more).
    pub fn find<'r, 'p>(&'r self, method: &Method, path: &'p str) -> Option<Match<'r, 'p, R>> {
        let head = first_segment(path, self.options);
        let keyed: &[usize] = self
            .heads
            .binary_search_by(|(h, _)| compare_heads(h, head, self.options))
            .map_or(&[], |at| &self.heads[at].1);
        // Both lists are in file order: merge them.
        let (mut keyed, mut open) = (keyed.iter().peekable(), self.open.iter().peekable());
        let candidates = std::iter::from_fn(|| match (keyed.peek(), open.peek()) {
            (Some(&&k), Some(&&o)) if o < k => open.next(),
            (Some(_), _) => keyed.next(),
            (None, _) => open.next(),
        });
        candidates
            .map(|&i| &self.routes[i])
            .find(|(pattern, methods, _)| {
                methods.as_ref().is_none_or(|m| m.contains(method)) && pattern.matches(path)
            })
            .map(|(pattern, _, route)| Match {
                route,
                captures: Captures {
                    pattern: Some(pattern),
                    path,
                },
            })
    }

    /// Routes in order, with their patterns and methods.
    pub fn iter(&self) -> impl Iterator<Item = (&Pattern, Option<&[Method]>, &R)> {
        self.routes.iter().map(|(p, m, r)| (p, m.as_deref(), r))
    }

    /// The routes in order, to complete at compile time (a cross-table setting).
    pub fn routes_mut(&mut self) -> impl Iterator<Item = &mut R> {
        self.routes.iter_mut().map(|(_, _, r)| r)
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

/// A route that matched a path, and what its pattern captured there.
#[derive(Debug)]
pub struct Match<'r, 'p, R> {
    /// The route.
    pub route: &'r R,
    /// The values of its `{name}` segments in the path.
    pub captures: Captures<'r, 'p>,
}

/// The `{name}` segments of a matched pattern, read from the (normalised) path on demand: no
/// copy is made unless a value needs percent-decoding.
#[derive(Debug, Clone, Copy)]
pub struct Captures<'r, 'p> {
    pattern: Option<&'r Pattern>,
    path: &'p str,
}

impl<'r, 'p> Captures<'r, 'p> {
    /// No captures (for a request no pattern matched, such as a caller outside routing).
    pub const NONE: Captures<'static, 'static> = Captures {
        pattern: None,
        path: "",
    };

    /// The capture names, in pattern order.
    pub fn names(&self) -> &'r [Box<str>] {
        self.pattern.map_or(&[], |p| p.capture_names())
    }

    /// The path segment capture `index` matched, as normalised (escapes kept), without its
    /// parameters (`;…`) when `[paths] semicolons = "allow"`.
    pub fn raw(&self, index: usize) -> Option<&'p str> {
        let pattern = self.pattern?;
        let at = *pattern.capture_segments.get(index)?;
        let segment = self.path.split('/').filter(|s| !s.is_empty()).nth(at)?;
        Some(match pattern.options.semicolons {
            Semicolons::Reject => segment,
            Semicolons::Allow => segment_name(segment),
        })
    }

    /// The value of capture `index`: its segment percent-decoded. `None` when the decoded
    /// bytes are not UTF-8 (such a value equals nothing) or there is no such capture.
    pub fn value(&self, index: usize) -> Option<Cow<'p, str>> {
        percent_decode(self.raw(index)?)
    }

    /// The value of the capture called `name` (see [`Captures::value`]).
    pub fn get(&self, name: &str) -> Option<Cow<'p, str>> {
        self.value(self.pattern?.capture_index(name)?)
    }

    /// Every capture as (name, value), in pattern order; a value that is not UTF-8 is `None`.
    pub fn iter(&self) -> impl Iterator<Item = (&'r str, Option<Cow<'p, str>>)> + '_ {
        self.names()
            .iter()
            .enumerate()
            .map(|(i, name)| (&**name, self.value(i)))
    }
}

/// Decodes every `%XX` of a normalised segment; `None` if the result is not UTF-8. Borrows
/// when there is nothing to decode (the usual case).
fn percent_decode(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment));
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(&[hi, lo])) => hex_value(hi).zip(hex_value(lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// What a route does to the normalised path before it goes upstream: drop its first
/// `strip_segments` segments, then put `add` in front. The default changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathRewrite {
    /// How many leading segments to drop (those of `strip_prefix`; the pattern has already
    /// matched them, so this is right whatever their case or `;` parameters in the request).
    pub strip_segments: usize,
    /// `strip_prefix` as written (for `jwtgate check`), empty when none.
    pub strip: Box<str>,
    /// `add_prefix`: `/`-started, without a trailing `/`; empty when none.
    pub add: Box<str>,
}

impl PathRewrite {
    /// Whether the path is forwarded as it is.
    pub fn is_identity(&self) -> bool {
        self.strip_segments == 0 && self.add.is_empty()
    }

    /// The rewritten path (normalised `path` in, never empty out). Stripping every segment
    /// leaves `/`; a trailing `/` of the request is kept (`/orders/a/` → `/a/`), and with
    /// `add` the rest goes after it (`/orders` → `/v1`, `/orders/` → `/v1/`).
    pub fn apply<'p>(&self, path: &'p str) -> Cow<'p, str> {
        if self.is_identity() {
            return Cow::Borrowed(path);
        }
        let mut rest = path;
        for _ in 0..self.strip_segments {
            // `rest` starts with '/' (or is empty once everything is gone).
            let Some(after) = rest.strip_prefix('/') else {
                break;
            };
            rest = after.find('/').map_or("", |end| &after[end..]);
        }
        match (self.add.is_empty(), rest.is_empty()) {
            (true, true) => Cow::Borrowed("/"),
            (true, false) => Cow::Borrowed(rest),
            (false, _) => Cow::Owned(format!("{}{rest}", self.add)),
        }
    }
}

impl fmt::Display for PathRewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.strip.is_empty(), self.add.is_empty()) {
            (true, true) => f.write_str("unchanged"),
            (false, true) => write!(f, "strip {}", self.strip),
            (true, false) => write!(f, "add {}", self.add),
            (false, false) => write!(f, "strip {}, add {}", self.strip, self.add),
        }
    }
}

/// The name of a normalised path's first segment (`orders` of `/orders/1`; before any `;`
/// parameters when they are allowed), as the router's index compares it.
fn first_segment(path: &str, options: PathOptions) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let segment = rest.find('/').map_or(rest, |end| &rest[..end]);
    match options.semicolons {
        Semicolons::Reject => segment,
        Semicolons::Allow => segment_name(segment),
    }
}

/// The order of the router's index: bytes, with ASCII letters folded when matching is
/// case-insensitive (so a case-folded lookup finds its head by binary search).
fn compare_heads(a: &str, b: &str, options: PathOptions) -> std::cmp::Ordering {
    if options.case_insensitive {
        a.bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
    } else {
        a.cmp(b)
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
    fn the_literal_head_check_never_turns_away_a_match() {
        let patterns = [
            "/a/**",
            "/a/b",
            "/a/b/",
            "/a/*/c",
            "/a/{x}/**",
            "/ab/**",
            "/*/b",
            "/{t}/b/**",
            "/**",
            "/a",
            "/A/b/**",
            "/a%20b/**",
        ];
        let segments = ["a", "A", "b", "ab", "c", "a%20b", "a;x", "b;y"];
        let mut paths = vec!["/".to_owned()];
        for a in segments {
            paths.push(format!("/{a}"));
            paths.push(format!("/{a}/"));
            for b in segments {
                paths.push(format!("/{a}/{b}"));
                for c in ["c", "d/"] {
                    paths.push(format!("/{a}/{b}/{c}"));
                }
            }
        }
        for options in [STRICT, PARAMS, NO_CASE] {
            for source in patterns {
                let pattern = Pattern::parse(source, options).unwrap();
                for path in &paths {
                    let Ok(path) = normalize(path, options) else {
                        continue;
                    };
                    assert_eq!(
                        pattern.matches(&path),
                        pattern.segments_match(&path),
                        "{source} {path} {options:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_index_finds_what_a_linear_scan_finds() {
        let patterns = [
            "/a/b",
            "/**",
            "/a/**",
            "/b/*",
            "/{t}/b/**",
            "/a",
            "/",
            "/A/x/**",
            "/ab/**",
            "/*/c",
            "/b/**",
            "/a/{x}",
        ];
        let paths = [
            "/", "/a", "/a/", "/a/b", "/A/b", "/a/x/y", "/A/X/y", "/b", "/b/c", "/x/b/z", "/ab",
            "/ab/c", "/q/c", "/a;p/b", "/b;q/c",
        ];
        for options in [STRICT, PARAMS, NO_CASE] {
            // Every rotation of the table, so that each pattern is first once.
            for start in 0..patterns.len() {
                let mut router = Router::new();
                let order: Vec<&str> = patterns[start..]
                    .iter()
                    .chain(&patterns[..start])
                    .copied()
                    .collect();
                for (i, p) in order.iter().enumerate() {
                    router.push(Pattern::parse(p, options).unwrap(), None, i);
                }
                for path in paths {
                    let Ok(path) = normalize(path, options) else {
                        continue;
                    };
                    let linear = router
                        .iter()
                        .find(|(pattern, _, _)| pattern.matches(&path))
                        .map(|(_, _, r)| r);
                    assert_eq!(
                        router.lookup(&Method::GET, &path),
                        linear,
                        "{path} {order:?} {options:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn greedy_patterns_read_as_api_gateway_proxy_paths() {
        for (pattern, path) in [
            ("/orders/**", "/orders/{proxy+}"),
            ("/**", "/{proxy+}"),
            ("/tenants/{t}/**", "/tenants/{t}/{proxy+}"),
            ("/pets/{petId}", "/pets/{petId}"),
            ("/a/*/b", "/a/*/b"),
        ] {
            let pattern = Pattern::parse(pattern, STRICT).unwrap();
            assert_eq!(pattern.api_gateway_path(), path);
        }
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

    fn captures_of(
        pattern: &str,
        options: PathOptions,
        raw: &str,
    ) -> Option<Vec<(String, Option<String>)>> {
        let mut router = Router::new();
        router.push(Pattern::parse(pattern, options).unwrap(), None, ());
        let path = normalize(raw, options).unwrap();
        let m = router.find(&Method::GET, &path)?;
        Some(
            m.captures
                .iter()
                .map(|(n, v)| (n.to_owned(), v.map(Cow::into_owned)))
                .collect(),
        )
    }

    fn tenant(pattern: &str, options: PathOptions, raw: &str) -> Option<String> {
        captures_of(pattern, options, raw)?
            .into_iter()
            .find(|(n, _)| n == "tenant")?
            .1
    }

    #[test]
    fn captures_match_one_segment_and_give_its_value() {
        let p = "/tenants/{tenant}/**";
        assert_eq!(
            tenant(p, STRICT, "/tenants/acme/x").as_deref(),
            Some("acme")
        );
        assert_eq!(tenant(p, STRICT, "/tenants/acme").as_deref(), Some("acme"));
        assert_eq!(captures_of(p, STRICT, "/tenants/"), None, "never empty");
        assert_eq!(captures_of(p, STRICT, "/tenants"), None);
        // Unreserved escapes are decoded by normalisation, the rest by the capture.
        assert_eq!(
            tenant(p, STRICT, "/tenants/%61cme/x").as_deref(),
            Some("acme")
        );
        assert_eq!(
            tenant(p, STRICT, "/tenants/a%20b/x").as_deref(),
            Some("a b")
        );
        assert_eq!(tenant(p, STRICT, "/tenants/a%3f/x").as_deref(), Some("a?"));
        assert_eq!(tenant(p, STRICT, "/tenants/%C3%A9/x").as_deref(), Some("é"));
        assert_eq!(tenant(p, STRICT, "/tenants/é/x").as_deref(), Some("é"));
        assert_eq!(tenant(p, STRICT, "/tenants/%25/x").as_deref(), Some("%"));
        assert_eq!(tenant(p, STRICT, "/tenants/%0A/x").as_deref(), Some("\n"));
        // Not UTF-8 once decoded: no value (it equals nothing).
        assert_eq!(
            captures_of(p, STRICT, "/tenants/%FF/x"),
            Some(vec![("tenant".into(), None)])
        );
        // Dot-segments are resolved first.
        assert_eq!(
            tenant(p, STRICT, "/tenants/globex/../acme/x").as_deref(),
            Some("acme")
        );
        assert_eq!(
            tenant(p, STRICT, "/tenants/acme/../globex/x").as_deref(),
            Some("globex")
        );
        assert_eq!(
            tenant(p, STRICT, "/tenants/acme/%2e%2e/globex/x").as_deref(),
            Some("globex")
        );
        // Several captures, with literals and '*' between them.
        let two = "/t/{tenant}/*/u/{user}";
        assert_eq!(
            captures_of(two, STRICT, "/t/acme/x/u/bob"),
            Some(vec![
                ("tenant".into(), Some("acme".into())),
                ("user".into(), Some("bob".into()))
            ])
        );
        assert_eq!(captures_of(two, STRICT, "/t/acme/x/u/bob/"), None);
        // A pattern without captures has none, and the router still matches it.
        assert_eq!(captures_of("/a/**", STRICT, "/a/b"), Some(vec![]));
    }

    #[test]
    fn capture_values_with_parameters_and_case() {
        let p = "/tenants/{tenant}/**";
        assert_eq!(
            tenant(p, PARAMS, "/tenants/acme;v=1/x").as_deref(),
            Some("acme"),
            "the segment's name, without its parameters"
        );
        assert_eq!(
            tenant(p, PARAMS, "/tenants/globex/..;/acme;x/y").as_deref(),
            Some("acme")
        );
        // Case-insensitive matching folds literals, never captured values.
        assert_eq!(
            tenant(p, NO_CASE, "/TENANTS/ACME/x").as_deref(),
            Some("ACME")
        );
        assert_eq!(
            tenant(p, STRICT, "/tenants/ACME/x").as_deref(),
            Some("ACME")
        );
    }

    #[test]
    fn capture_lookup_by_name_and_index() {
        let pattern = Pattern::parse("/t/{tenant}/u/{user}", STRICT).unwrap();
        assert_eq!(
            pattern.capture_names(),
            [Box::<str>::from("tenant"), Box::from("user")]
        );
        assert_eq!(pattern.capture_index("user"), Some(1));
        assert_eq!(pattern.capture_index("nope"), None);
        let mut router = Router::new();
        router.push(pattern, None, 7);
        let m = router.find(&Method::GET, "/t/a%20b/u/c").unwrap();
        assert_eq!(*m.route, 7);
        assert_eq!(m.captures.get("tenant").as_deref(), Some("a b"));
        assert_eq!(m.captures.raw(0), Some("a%20b"));
        assert_eq!(m.captures.value(1).as_deref(), Some("c"));
        assert_eq!(m.captures.value(2), None);
        assert_eq!(m.captures.get("nope"), None);
        assert!(Captures::NONE.names().is_empty());
        assert_eq!(Captures::NONE.value(0), None);
    }

    #[test]
    fn bad_captures_are_refused() {
        for (pattern, why) in [
            ("/t/{a}/{a}", "twice"),
            ("/t/{a}x", "whole segment"),
            ("/t/x{a}", "whole segment"),
            ("/t/{a", "whole segment"),
            ("/t/a}", "whole segment"),
            ("/t/{}", "capture name"),
            ("/t/{1a}", "capture name"),
            ("/t/{a-b}", "capture name"),
            ("/t/{a}{b}", "capture name"),
            ("/t/{é}", "capture name"),
        ] {
            let err = Pattern::parse(pattern, STRICT).unwrap_err();
            assert!(err.contains(why), "{pattern}: {err}");
        }
        for good in ["/t/{a}", "/{_x9}/**", "/t/{A_b}/{c}/x/"] {
            assert!(Pattern::parse(good, STRICT).is_ok(), "{good}");
        }
    }

    #[test]
    fn literal_prefixes_stop_at_wildcards() {
        let lits = |p: &str| -> Vec<String> {
            Pattern::parse(p, STRICT)
                .unwrap()
                .literal_prefix()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(lits("/orders/**"), ["orders"]);
        assert_eq!(lits("/a/b/*/c"), ["a", "b"]);
        assert_eq!(lits("/a/{x}/c"), ["a"]);
        assert_eq!(lits("/**"), Vec::<String>::new());
        assert_eq!(lits("/health"), ["health"]);
    }

    #[test]
    fn rewrites_strip_segments_then_add_a_prefix() {
        let rw = |n: usize, strip: &str, add: &str| PathRewrite {
            strip_segments: n,
            strip: strip.into(),
            add: add.into(),
        };
        let strip = rw(1, "/orders", "");
        let add = rw(0, "", "/v1");
        let both = rw(1, "/orders", "/v1");
        let two = rw(2, "/api/orders", "");
        for (rewrite, path, expected) in [
            (&strip, "/orders", "/"),
            (&strip, "/orders/", "/"),
            (&strip, "/orders/a", "/a"),
            (&strip, "/orders/a/", "/a/"),
            (&strip, "/orders/a/b", "/a/b"),
            (&strip, "/ORDERS/a", "/a"),
            (&strip, "/orders;v=1/a", "/a"),
            (&strip, "/orders/a%20b", "/a%20b"),
            (&add, "/", "/v1/"),
            (&add, "/x", "/v1/x"),
            (&add, "/x/", "/v1/x/"),
            (&both, "/orders", "/v1"),
            (&both, "/orders/", "/v1/"),
            (&both, "/orders/42", "/v1/42"),
            (&two, "/api/orders/1", "/1"),
            (&two, "/api/orders", "/"),
            (&PathRewrite::default(), "/a/b/", "/a/b/"),
        ] {
            assert_eq!(rewrite.apply(path), expected, "{rewrite} {path}");
        }
        assert_eq!(both.to_string(), "strip /orders, add /v1");
        assert_eq!(strip.to_string(), "strip /orders");
        assert_eq!(add.to_string(), "add /v1");
        assert!(PathRewrite::default().is_identity());
        assert!(matches!(
            PathRewrite::default().apply("/a"),
            Cow::Borrowed("/a")
        ));
    }
}

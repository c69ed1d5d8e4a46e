//! The problems of a config file: collected (not just the first), each as
//! `file:line:col: key: reason`, with the readers of common values that report into it.

use std::fmt::{self, Display};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use http::Uri;
use toml::Spanned;

use crate::token::TokenUse;

/// Every problem found, one `file:line:col: key: reason` per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// The problems found so far, each placed at its `file:line:col` from the span it came with.
pub(super) struct Diags<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<String>,
}

impl<'a> Diags<'a> {
    /// A collector for `text`, read from `file` (only used in messages).
    pub(super) fn new(file: &'a str, text: &'a str) -> Self {
        Diags {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// The config file, as named in messages (other files it names are relative to it).
    pub(super) fn file(&self) -> &str {
        self.file
    }

    /// How many problems were found so far (a table compares it before and after itself).
    pub(super) fn count(&self) -> usize {
        self.errors.len()
    }

    /// Every problem, in the order found.
    pub(super) fn finish(self) -> ConfigErrors {
        ConfigErrors(self.errors)
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// One problem, at `span`, under `key`.
    pub(super) fn err(&mut self, span: Range<usize>, key: impl Display, reason: impl Display) {
        let (line, col) = self.position(span.start);
        let error = format!("{}:{line}:{col}: {key}: {reason}", self.file);
        // One problem, one line: names, paths and variables quoted from the file may hold
        // line breaks.
        self.errors
            .push(error.replace('\r', "\\r").replace('\n', "\\n"));
    }

    /// One problem in another file the config names (a policy file), at byte `offset` of its
    /// `text`, under `key`.
    pub(super) fn err_in(
        &mut self,
        file: &str,
        text: &str,
        offset: usize,
        key: impl Display,
        reason: impl Display,
    ) {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let (line, col) = Diags::new(file, text).position(offset);
        let error = format!("{file}:{line}:{col}: {key}: {reason}");
        self.errors
            .push(error.replace('\r', "\\r").replace('\n', "\\n"));
    }

    /// Reports each key of `present` that is there (its span) although the table's kind does
    /// not use it: `key.field: reason` (e.g. `only with type = "lambda"`).
    pub(super) fn unused(
        &mut self,
        key: &str,
        reason: &str,
        present: &[(&str, Option<Range<usize>>)],
    ) {
        for (field, span) in present {
            if let Some(span) = span {
                self.err(span.clone(), format!("{key}.{field}"), reason);
            }
        }
    }

    /// A duration like `10s`; `default` when absent, or when wrong (which is reported).
    pub(super) fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) => d,
                Err(reason) => {
                    self.err(v.span(), key, reason);
                    default
                }
            },
        }
    }

    /// One of a closed set of words; `default` when absent, an error naming the choices when
    /// the word is not among them.
    pub(super) fn choice<T: Copy>(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(v) = value else {
            return default;
        };
        match options
            .iter()
            .find(|(word, _)| *word == v.get_ref().as_str())
        {
            Some((_, t)) => *t,
            None => {
                let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
                self.err(
                    v.span(),
                    key,
                    format!("{:?} must be {}", v.get_ref(), words.join(", ")),
                );
                default
            }
        }
    }

    /// A whole number in `range`; `default` when absent, or when outside (which is reported).
    pub(super) fn bounded(
        &mut self,
        value: &Option<Spanned<u64>>,
        key: &str,
        range: Range<u64>,
        default: usize,
    ) -> usize {
        match value {
            None => default,
            Some(v) if range.contains(v.get_ref()) => {
                usize::try_from(*v.get_ref()).unwrap_or(default)
            }
            Some(v) => {
                self.err(
                    v.span(),
                    key,
                    format!("must be between {} and {}", range.start, range.end - 1),
                );
                default
            }
        }
    }

    /// An `http(s)` URL; `None` when absent, or when not such a URL (which is reported).
    pub(super) fn http_url(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
    ) -> Option<String> {
        let v = value.as_ref()?;
        if is_http_url(v.get_ref()) {
            Some(v.get_ref().clone())
        } else {
            self.err(
                v.span(),
                key,
                format!("{:?} is not an http(s) URL", v.get_ref()),
            );
            None
        }
    }

    /// `token_use`: `access` or `id`; `None` when absent, or when neither (which is reported).
    pub(super) fn token_use(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
    ) -> Option<TokenUse> {
        let v = value.as_ref()?;
        TokenUse::parse(v.get_ref()).or_else(|| {
            self.err(v.span(), key, "must be \"access\" or \"id\"");
            None
        })
    }

    /// A string, `default` when absent; a value that fails `ok` is reported with `reason`.
    pub(super) fn string(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: &str,
        ok: impl Fn(&str) -> bool,
        reason: &str,
    ) -> String {
        let Some(v) = value else {
            return default.to_owned();
        };
        if !ok(v.get_ref()) {
            self.err(v.span(), key, reason);
        }
        v.get_ref().clone()
    }

    /// A listen address like `0.0.0.0:8080`; `default` when absent.
    pub(super) fn socket(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: &str,
    ) -> SocketAddr {
        let (text, span) = match value {
            Some(v) => (v.get_ref().as_str(), v.span()),
            None => (default, 0..0),
        };
        text.parse().unwrap_or_else(|_| {
            self.err(
                span,
                key,
                format!("{text:?} is not an address like 0.0.0.0:8080"),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration like \"500ms\", \"10s\", \"5m\", \"1h\"")
    })?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{text:?}: unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

/// Parses a size in bytes: `512`, `64KB`, `10MB`, `1GB` (powers of 1000) or `64KiB`, `10MiB`,
/// `1GiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like \"64KB\", \"10MB\", \"1GiB\""))?;
    let factor: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: unit must be B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The strings of an optional list (none when the key is absent).
pub(super) fn strings(list: &Option<Spanned<Vec<Spanned<String>>>>) -> Vec<&Spanned<String>> {
    list.as_ref()
        .map(|l| l.get_ref().iter().collect())
        .unwrap_or_default()
}

/// An `http://` or `https://` URL with a host.
pub(super) fn is_http_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.parse::<Uri>().is_ok_and(|u| u.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("64 KiB"), Ok(65_536));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("10mb").is_err());
        assert!(parse_size("MB").is_err());
        assert!(parse_size("99999999999999999999GB").is_err());
        assert!(parse_size("18446744073709551615GB").is_err());
    }
}

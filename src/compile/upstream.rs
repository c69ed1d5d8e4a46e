//! `[upstream]` and `[[upstreams]]`: where allowed requests go, and how jwtgate connects there.
//! The single `[upstream]` table is the upstream named `default`; `[[upstreams]]` add named
//! ones, which routes choose with `upstream = "name"`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use toml::Spanned;

use super::diags::Diags;
use crate::config::RawUpstream;
use crate::settings::UpstreamSettings;
use crate::tls::UpstreamTls;

/// Default `[upstream].connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `[upstream].response_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `[upstream].pool_idle_timeout`.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default `[upstream].pool_max_idle`.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// The name of the single `[upstream]` table, and of the upstream routes use by default.
pub const DEFAULT_UPSTREAM: &str = "default";

/// `[upstream]` and `[[upstreams]]`, checked.
pub(super) struct Upstreams {
    /// Every upstream in index order (`[upstream]` first); `None` for one with errors (which
    /// are reported), so that names and indices still line up for the routes' checks.
    pub list: Vec<Option<UpstreamSettings>>,
    /// Name to index, for routes' `upstream = "name"`.
    pub names: HashMap<Arc<str>, usize>,
}

impl Upstreams {
    /// The index of the upstream called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    /// Every upstream's settings, when none had errors.
    pub fn settings(self) -> Option<Vec<UpstreamSettings>> {
        if self.list.is_empty() {
            return None;
        }
        self.list.into_iter().collect()
    }
}

/// Whether `name` is fit for a metric label and a log field: ASCII letters, digits, `_`, `.`
/// and `-`, not empty.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `[upstream]` and every `[[upstreams]]` table; at least one is needed, names must be valid
/// and must not repeat.
pub(super) fn compile(
    d: &mut Diags<'_>,
    single: Option<&Spanned<RawUpstream>>,
    named: &[Spanned<RawUpstream>],
) -> Upstreams {
    let mut upstreams = Upstreams {
        list: Vec::new(),
        names: HashMap::new(),
    };
    if single.is_none() && named.is_empty() {
        d.err(
            0..0,
            "upstream",
            "missing [upstream] table with url = \"http://host:port\"",
        );
        return upstreams;
    }
    // The key of each entry of `list`, for duplicate-name messages.
    let mut keys: Vec<String> = Vec::new();
    if let Some(u) = single {
        if let Some(name) = &u.get_ref().name {
            d.err(
                name.span(),
                "upstream.name",
                format!("[upstream] is always named {DEFAULT_UPSTREAM:?}; name upstreams in [[upstreams]] tables"),
            );
        }
        let name: Arc<str> = Arc::from(DEFAULT_UPSTREAM);
        upstreams.names.insert(Arc::clone(&name), 0);
        upstreams.list.push(settings(d, "upstream", name, u));
        keys.push("upstream".to_owned());
    }
    for (i, raw) in named.iter().enumerate() {
        let key = format!("upstreams[{i}]");
        let u = raw.get_ref();
        let Some(name) = &u.name else {
            d.err(
                raw.span(),
                format!("{key}.name"),
                "missing: every [[upstreams]] table needs a name (routes choose it with upstream = \"name\")",
            );
            continue;
        };
        let text = name.get_ref().as_str();
        if !valid_name(text) {
            d.err(
                name.span(),
                format!("{key}.name"),
                format!(
                    "{text:?} must be one or more of A-Z a-z 0-9 _ . - (it becomes a metric label)"
                ),
            );
            continue;
        }
        if let Some(first) = upstreams.index(text).and_then(|at| keys.get(at)) {
            let reason = if first == "upstream" {
                format!(
                    "{text:?} is the name of the [upstream] table; give this one another name, or move [upstream] here"
                )
            } else {
                format!("duplicate upstream name {text:?} (first in {first})")
            };
            d.err(name.span(), format!("{key}.name"), reason);
            continue;
        }
        let name: Arc<str> = Arc::from(text);
        upstreams
            .names
            .insert(Arc::clone(&name), upstreams.list.len());
        upstreams.list.push(settings(d, &key, name, raw));
        keys.push(key);
    }
    upstreams
}

/// Most addresses in one `urls` list (each has its own pool of up to `pool_max_idle`).
pub const MAX_URLS: usize = 64;

/// One address of an upstream: its origin, whether it is `https`, and its path prefix.
struct Address {
    origin: Uri,
    https: bool,
    path_prefix: String,
}

/// Parses one `url` (or `urls` entry), reporting under `field`.
fn address(d: &mut Diags<'_>, field: &str, value: &Spanned<String>) -> Option<Address> {
    let text = value.get_ref();
    let uri: Uri = match text.parse() {
        Ok(uri) => uri,
        Err(_) => {
            d.err(value.span(), field, format!("{text:?} is not a URL"));
            return None;
        }
    };
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            d.err(
                value.span(),
                field,
                format!("{text:?} must start with http:// or https://"),
            );
            return None;
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        d.err(value.span(), field, format!("{text:?} has no host"));
        return None;
    };
    if uri.query().is_some() {
        d.err(value.span(), field, "must not have a query string");
    }
    let origin = Uri::builder()
        .scheme(if https { "https" } else { "http" })
        .authority(authority)
        .path_and_query("/")
        .build()
        .ok()?;
    Some(Address {
        origin,
        https,
        path_prefix: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// The addresses of `url` or `urls` (exactly one of them), all with the first's scheme and
/// path; with the span errors about the whole upstream point at.
fn addresses(
    d: &mut Diags<'_>,
    key: &str,
    table: std::ops::Range<usize>,
    u: &RawUpstream,
) -> Option<(Vec<Address>, std::ops::Range<usize>)> {
    match (&u.url, &u.urls) {
        (Some(url), None) => {
            let one = address(d, &format!("{key}.url"), url)?;
            Some((vec![one], url.span()))
        }
        (None, Some(urls)) => {
            let field = format!("{key}.urls");
            let list = urls.get_ref();
            if list.is_empty() || list.len() > MAX_URLS {
                d.err(
                    urls.span(),
                    &field,
                    format!("lists {} addresses: give 1 to {MAX_URLS}", list.len()),
                );
                return None;
            }
            let parsed: Vec<Option<Address>> = list.iter().map(|v| address(d, &field, v)).collect();
            let parsed: Vec<Address> = parsed.into_iter().collect::<Option<_>>()?;
            let first = parsed.first()?;
            for (a, v) in parsed.iter().zip(list).skip(1) {
                if a.https != first.https || a.path_prefix != first.path_prefix {
                    d.err(
                        v.span(),
                        &field,
                        format!(
                            "{:?}: every address needs the scheme and path of the first",
                            v.get_ref()
                        ),
                    );
                }
            }
            Some((parsed, urls.span()))
        }
        (Some(_), Some(urls)) => {
            d.err(
                urls.span(),
                format!("{key}.urls"),
                "give url or urls, not both",
            );
            None
        }
        (None, None) => {
            d.err(
                table,
                format!("{key}.url"),
                "missing: url = \"http://host:port\" (or urls = [...])",
            );
            None
        }
    }
}

/// One upstream's table, its keys reported under `key` (`upstream` or `upstreams[N]`).
fn settings(
    d: &mut Diags<'_>,
    key: &str,
    name: Arc<str>,
    raw: &Spanned<RawUpstream>,
) -> Option<UpstreamSettings> {
    let u = raw.get_ref();
    let (addresses, url_span) = addresses(d, key, raw.span(), u)?;
    let first = addresses.first()?;
    let https = first.https;
    let origin = first.origin.clone();
    let path_prefix = first.path_prefix.clone();
    let origins: Vec<Uri> = addresses.into_iter().map(|a| a.origin).collect();
    let file =
        |d: &mut Diags<'_>, v: &Option<Spanned<String>>, key: &str| -> Option<std::path::PathBuf> {
            let v = v.as_ref()?;
            let path = std::path::PathBuf::from(v.get_ref());
            if !path.is_file() {
                d.err(
                    v.span(),
                    key,
                    format!("{} is not a readable file", path.display()),
                );
            }
            Some(path)
        };
    let ca_file = file(d, &u.ca_file, &format!("{key}.ca_file"));
    let client_cert = match (
        file(d, &u.client_cert_file, &format!("{key}.client_cert_file")),
        file(d, &u.client_key_file, &format!("{key}.client_key_file")),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            d.err(
                url_span.clone(),
                format!("{key}.client_cert_file"),
                "client_cert_file and client_key_file go together",
            );
            None
        }
    };
    if !https && (ca_file.is_some() || client_cert.is_some()) {
        d.err(
            url_span.clone(),
            format!("{key}.url"),
            "ca_file and client certificates need an https:// upstream",
        );
    }
    let tls = https.then_some(UpstreamTls {
        ca_file,
        client_cert,
    });
    let http2 = u.http2.as_ref().is_some_and(|h| *h.get_ref());
    if let Some(tls) = &tls {
        if let Err(e) = crate::tls::client_config(tls) {
            d.err(url_span, key, e);
        }
    }
    Some(UpstreamSettings {
        name,
        http2,
        tls,
        origin,
        origins,
        path_prefix,
        connect_timeout: d.duration(
            &u.connect_timeout,
            &format!("{key}.connect_timeout"),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        response_timeout: d.duration(
            &u.response_timeout,
            &format!("{key}.response_timeout"),
            DEFAULT_RESPONSE_TIMEOUT,
        ),
        pool_idle_timeout: d.duration(
            &u.pool_idle_timeout,
            &format!("{key}.pool_idle_timeout"),
            DEFAULT_POOL_IDLE_TIMEOUT,
        ),
        pool_max_idle: d.bounded(
            &u.pool_max_idle,
            &format!("{key}.pool_max_idle"),
            0..100_001,
            DEFAULT_POOL_MAX_IDLE,
        ),
    })
}

#[cfg(test)]
mod tests {
    use crate::compile::compile;

    const ROUTES: &str = r#"
[[routes]]
path = "/health"
auth = "none"
"#;

    /// The errors of `text`, one line each.
    fn errors(text: &str) -> String {
        compile("gw.toml", text).unwrap_err().0.join("\n")
    }

    #[test]
    fn a_single_upstream_table_is_the_upstream_named_default() {
        let config = compile(
            "gw.toml",
            &format!("[upstream]\nurl = \"http://127.0.0.1:3000/v1/\"\n{ROUTES}"),
        )
        .unwrap();
        assert_eq!(config.upstreams.len(), 1);
        let upstream = &config.upstreams[0];
        assert_eq!(&*upstream.name, "default");
        assert_eq!(upstream.origin, "http://127.0.0.1:3000/");
        assert_eq!(upstream.path_prefix, "/v1");
        let (_, _, route) = config.routes.iter().next().unwrap();
        assert_eq!(route.upstream, 0);
    }

    #[test]
    fn routes_choose_named_upstreams_by_index_and_default_to_default() {
        let text = r#"
[upstream]
url = "http://127.0.0.1:3000"

[[upstreams]]
name = "orders"
url = "http://127.0.0.1:3001"
http2 = true
response_timeout = "5s"

[[upstreams]]
name = "unused.v2-x_1"
url = "http://127.0.0.1:3002"

[[routes]]
path = "/orders/**"
auth = "none"
upstream = "orders"

[[routes]]
path = "/**"
auth = "none"
"#;
        let config = compile("gw.toml", text).unwrap();
        let names: Vec<&str> = config.upstreams.iter().map(|u| &*u.name).collect();
        assert_eq!(names, ["default", "orders", "unused.v2-x_1"]);
        assert!(config.upstreams[1].http2);
        assert_eq!(
            config.upstreams[1].response_timeout,
            std::time::Duration::from_secs(5)
        );
        let upstreams: Vec<usize> = config.routes.iter().map(|(_, _, r)| r.upstream).collect();
        assert_eq!(upstreams, [1, 0]);
        let described = config.describe();
        assert!(
            described.contains("upstream \"unused.v2-x_1\"  url=http://127.0.0.1:3002  http2=false  (no route uses it)"),
            "{described}"
        );
        assert!(
            described.contains("upstream \"orders\"  url=http://127.0.0.1:3001  http2=true\n"),
            "{described}"
        );
    }

    #[test]
    fn named_upstreams_alone_need_no_default_when_every_route_names_one() {
        let text = r#"
[[upstreams]]
name = "a"
url = "http://127.0.0.1:3001"

[[routes]]
path = "/a/**"
auth = "none"
upstream = "a"
"#;
        let config = compile("gw.toml", text).unwrap();
        assert_eq!(config.upstreams.len(), 1);
    }

    #[test]
    fn a_route_without_upstream_and_no_default_is_an_error_on_the_route() {
        let text = r#"
[[upstreams]]
name = "a"
url = "http://127.0.0.1:3001"

[[routes]]
path = "/a/**"
auth = "none"
"#;
        let text = errors(text);
        assert!(
            text.contains(
                "gw.toml:7:8: routes[0].upstream: missing: this route needs upstream = \"…\" (no upstream is named \"default\")"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_upstream_name_is_an_error_at_the_value() {
        let text = r#"
[upstream]
url = "http://127.0.0.1:3000"

[[routes]]
path = "/a/**"
auth = "none"
upstream = "x"
"#;
        assert_eq!(
            errors(text),
            "gw.toml:8:12: routes[0].upstream: no upstream is named \"x\""
        );
    }

    #[test]
    fn default_cannot_be_both_the_table_and_a_named_upstream() {
        let text = r#"
[upstream]
url = "http://127.0.0.1:3000"

[[upstreams]]
name = "default"
url = "http://127.0.0.1:3001"
"#;
        let text = errors(&format!("{text}{ROUTES}"));
        assert!(
            text.contains(
                "gw.toml:6:8: upstreams[0].name: \"default\" is the name of the [upstream] table"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_duplicate_name_is_reported_at_the_second() {
        let text = r#"
[[upstreams]]
name = "a"
url = "http://127.0.0.1:3001"

[[upstreams]]
name = "b"
url = "http://127.0.0.1:3002"

[[upstreams]]
name = "a"
url = "http://127.0.0.1:3003"

[[routes]]
path = "/a/**"
auth = "none"
upstream = "a"
"#;
        assert_eq!(
            errors(text),
            "gw.toml:11:8: upstreams[2].name: duplicate upstream name \"a\" (first in upstreams[0])"
        );
    }

    #[test]
    fn names_must_be_metric_label_safe_and_present() {
        for (name, col) in [("\"\"", 8), ("\"a b\"", 8), ("\"ünï\"", 8), ("\"a/b\"", 8)] {
            let text = format!(
                "[upstream]\nurl = \"http://127.0.0.1:3000\"\n\n[[upstreams]]\nname = {name}\nurl = \"http://127.0.0.1:3001\"\n{ROUTES}"
            );
            let text = errors(&text);
            assert!(
                text.starts_with(&format!("gw.toml:5:{col}: upstreams[0].name: ")),
                "{text}"
            );
            assert!(text.contains("A-Z a-z 0-9 _ . -"), "{text}");
        }
        let text = errors(&format!(
            "[upstream]\nurl = \"http://127.0.0.1:3000\"\n\n[[upstreams]]\nurl = \"http://127.0.0.1:3001\"\n{ROUTES}"
        ));
        assert!(text.contains("upstreams[0].name: missing"), "{text}");
        let text = errors(&format!(
            "[upstream]\nname = \"x\"\nurl = \"http://127.0.0.1:3000\"\n{ROUTES}"
        ));
        assert!(
            text.starts_with("gw.toml:2:8: upstream.name: [upstream] is always named \"default\""),
            "{text}"
        );
    }

    #[test]
    fn no_upstream_at_all_keeps_its_message() {
        assert_eq!(
            errors(ROUTES),
            "gw.toml:1:1: upstream: missing [upstream] table with url = \"http://host:port\""
        );
    }

    #[test]
    fn keys_of_named_upstreams_are_reported_by_index() {
        let text = r#"
[upstream]
url = "ftp://x"

[[upstreams]]
name = "a"
url = "http://127.0.0.1:3001"

[[upstreams]]
name = "b"
url = "gopher://x"
connect_timeout = "soon"
pool_max_idle = 1000000
ca_file = "/nonexistent/ca.pem"
"#;
        let text = errors(&format!("{text}{ROUTES}"));
        assert!(text.contains("gw.toml:3:7: upstream.url:"), "{text}");
        assert!(text.contains("gw.toml:11:7: upstreams[1].url:"), "{text}");
        assert!(!text.contains("upstreams[0]"), "{text}");
    }

    #[test]
    fn unchanged_settings_compare_equal_and_a_change_does_not() {
        let text = |timeout: &str| {
            format!(
                "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:3001\"\nresponse_timeout = \"{timeout}\"\n{ROUTES}upstream = \"a\"\n"
            )
        };
        let one = compile("gw.toml", &text("5s")).unwrap();
        let same = compile("gw.toml", &text("5s")).unwrap();
        let other = compile("gw.toml", &text("6s")).unwrap();
        assert_eq!(one.upstreams, same.upstreams);
        assert_ne!(one.upstreams, other.upstreams);
    }

    #[test]
    fn urls_lists_several_addresses_of_one_service() {
        let text = format!(
            "[upstream]\nurls = [\"http://10.0.0.1:80/v1\", \"http://10.0.0.2:8080/v1/\"]\n{ROUTES}"
        );
        let config = compile("gw.toml", &text).unwrap();
        let upstream = &config.upstreams[0];
        let origins: Vec<String> = upstream.origins.iter().map(|o| o.to_string()).collect();
        assert_eq!(origins, ["http://10.0.0.1:80/", "http://10.0.0.2:8080/"]);
        assert_eq!(upstream.origin, upstream.origins[0]);
        assert_eq!(upstream.path_prefix, "/v1");
        let described = config.describe();
        assert!(
            described.contains("url=http://10.0.0.1:80/v1,http://10.0.0.2:8080/v1  http2=false"),
            "{described}"
        );
        // One url is one address.
        let one = compile(
            "gw.toml",
            &format!("[upstream]\nurl = \"http://10.0.0.1:3000\"\n{ROUTES}"),
        )
        .unwrap();
        assert_eq!(one.upstreams[0].origins, [one.upstreams[0].origin.clone()]);
    }

    #[test]
    fn url_and_urls_are_one_or_the_other_and_agree() {
        let cases = [
            (
                "url = \"http://a:1\"\nurls = [\"http://b:1\"]",
                "gw.toml:4:8: upstream.urls: give url or urls, not both",
            ),
            (
                "urls = []",
                "gw.toml:3:8: upstream.urls: lists 0 addresses: give 1 to 64",
            ),
            (
                "urls = [\"http://a:1\", \"https://b:1\"]",
                "gw.toml:3:23: upstream.urls: \"https://b:1\": every address needs the scheme and path of the first",
            ),
            (
                "urls = [\"http://a:1/v1\", \"http://b:1/v2\"]",
                "gw.toml:3:26: upstream.urls: \"http://b:1/v2\": every address needs the scheme and path of the first",
            ),
            (
                "urls = [\"http://a:1\", \"ftp://b\"]",
                "gw.toml:3:23: upstream.urls: \"ftp://b\" must start with http:// or https://",
            ),
            (
                "http2 = true",
                "upstream.url: missing: url = \"http://host:port\" (or urls = [...])",
            ),
        ];
        for (keys, expected) in cases {
            let text = errors(&format!("\n[upstream]\n{keys}\n{ROUTES}"));
            assert!(text.contains(expected), "{keys}: {text}");
        }
    }
}

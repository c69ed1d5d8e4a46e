//! CORS the way API Gateway's HTTP API does it: with `[cors]` configured, jwtgate answers
//! preflight requests itself (no token needed: browsers never send credentials on a preflight)
//! and adds the CORS headers to every answer for an allowed origin, its own 401/403 included so
//! the page can read them. A route may instead pass preflights to the upstream unauthenticated
//! (`preflight = "forward"`), for services that handle CORS themselves.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

/// `[cors]`, checked.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Allowed origins; `*` allows any (never with credentials).
    pub allow_origins: Vec<String>,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: HeaderValue,
    /// `Access-Control-Allow-Headers`.
    pub allow_headers: HeaderValue,
    /// `Access-Control-Expose-Headers`, if any.
    pub expose_headers: Option<HeaderValue>,
    /// `Access-Control-Max-Age`.
    pub max_age: HeaderValue,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
}

/// Whether a request is a CORS preflight; returns the method it asks about.
pub fn preflight(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    let requested = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(requested.as_bytes()).ok()
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
    fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        if self.allow_origins.iter().any(|o| o == "*") && !self.allow_credentials {
            return Some(HeaderValue::from_static("*"));
        }
        let text = origin.to_str().ok()?;
        self.allow_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(text))
            .then(|| origin.clone())
    }

    /// Answers a preflight: 204 with the CORS headers for an allowed origin, a bare 204
    /// (which the browser treats as a refusal) otherwise.
    pub fn answer_preflight<B: Default>(&self, headers: &HeaderMap) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.allowed(headers.get(header::ORIGIN)) {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            out.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                self.allow_methods.clone(),
            );
            out.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                self.allow_headers.clone(),
            );
            out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
            if self.allow_credentials {
                out.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        response
    }

    /// Adds the CORS headers to an answer for a request from an allowed origin.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let Some(allowed) = self.allowed(origin) else {
            return;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors {
            allow_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            allow_methods: HeaderValue::from_static("GET, POST"),
            allow_headers: HeaderValue::from_static("authorization, content-type"),
            expose_headers: None,
            max_age: HeaderValue::from_static("600"),
            allow_credentials: credentials,
        }
    }

    #[test]
    fn preflights_are_recognised_and_answered_for_allowed_origins_only() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        assert_eq!(
            preflight(&Method::OPTIONS, &h),
            None,
            "no Access-Control-Request-Method"
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        assert_eq!(preflight(&Method::OPTIONS, &h), Some(Method::POST));
        assert_eq!(preflight(&Method::GET, &h), None);
        let ok: Response<()> = cors(&["https://app.example"], true).answer_preflight(&h);
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
        let refused: Response<()> = cors(&["https://other.example"], false).answer_preflight(&h);
        assert!(
            !refused
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
        let any: Response<()> = cors(&["*"], false).answer_preflight(&h);
        assert_eq!(any.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let any_with_credentials: Response<()> = cors(&["*"], true).answer_preflight(&h);
        assert!(
            !any_with_credentials
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "a wildcard never goes with credentials"
        );
    }
}

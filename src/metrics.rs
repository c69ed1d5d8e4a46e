//! Every metric jwtgate exports, in one place. Label values come from closed sets (route names
//! from the config, issuer names, fixed reason strings), never from a raw path, subject or token.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

mod labels;

pub(crate) use labels::label_enum;
pub use labels::{
    AuthorizerResult, CredentialResult, Decision, FetchResult, LoginEvent, Reason, ReloadResult,
    SigningFailure, UpstreamResult,
};

/// Latency buckets, seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The registry and its metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_requests: IntCounterVec,
    auth_failures: IntCounterVec,
    rejections: IntCounterVec,
    in_flight: IntGauge,
    jwks_fetches: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_last_success: GaugeVec,
    jwks_refetch_suppressed: IntCounterVec,
    token_cache_hits: IntCounter,
    token_cache_misses: IntCounter,
    token_cache_entries: IntGauge,
    login_events: IntCounterVec,
    config_reloads: IntCounterVec,
    authorizer_calls: IntCounterVec,
    authorizer_duration: HistogramVec,
    authorizer_cache: IntCounterVec,
    authorizer_cache_entries: IntGaugeVec,
    aws_credential_calls: IntCounterVec,
    aws_credential_cache: IntCounterVec,
    aws_signing_failures: IntCounterVec,
}

fn method_class(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Label values joined by ", ", for a help text.
fn joined<T>(all: &[T], label: fn(&T) -> &'static str) -> String {
    all.iter().map(label).collect::<Vec<_>>().join(", ")
}

impl Metrics {
    /// Registers every metric. Panics only on a programming error (a duplicate name).
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "jwtgate_requests_total",
                "Requests by route, method, decision and status.",
            ),
            &["route", "method", "decision", "status"],
        )
        .expect("metric"); // ok: static definition
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "jwtgate_request_duration_seconds",
                "Time from request head to response head, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("metric"); // ok: static definition
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "jwtgate_upstream_duration_seconds",
                "Time the upstream took to answer with a response head, by route and upstream.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "upstream"],
        )
        .expect("metric"); // ok: static definition
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "jwtgate_upstream_requests_total",
                format!(
                    "Requests sent to each upstream, by result ({}).",
                    joined(UpstreamResult::ALL, UpstreamResult::as_str)
                ),
            ),
            &["upstream", "result"],
        )
        .expect("metric"); // ok: static definition
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "jwtgate_auth_failures_total",
                "Refused authentications by route and reason.",
            ),
            &["route", "reason"],
        )
        .expect("metric"); // ok: static definition
        let rejections = IntCounterVec::new(
            Opts::new(
                "jwtgate_rejections_total",
                "Requests jwtgate answered itself for a reason other than authentication, by route and reason.",
            ),
            &["route", "reason"],
        )
        .expect("metric"); // ok: static definition
        let in_flight =
            IntGauge::new("jwtgate_requests_in_flight", "Requests being served.").expect("metric"); // ok: static definition
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "jwtgate_jwks_fetches_total",
                "Key set fetches by issuer and result.",
            ),
            &["issuer", "result"],
        )
        .expect("metric"); // ok: static definition
        let jwks_keys = IntGaugeVec::new(
            Opts::new("jwtgate_jwks_keys", "Usable signing keys held, by issuer."),
            &["issuer"],
        )
        .expect("metric"); // ok: static definition
        let jwks_last_success = GaugeVec::new(
            Opts::new(
                "jwtgate_jwks_last_success_timestamp_seconds",
                "Unix time of the last good key set fetch, by issuer.",
            ),
            &["issuer"],
        )
        .expect("metric"); // ok: static definition
        let jwks_refetch_suppressed = IntCounterVec::new(
            Opts::new(
                "jwtgate_jwks_refetch_suppressed_total",
                "Unknown-kid refetches refused by the rate limit, by issuer.",
            ),
            &["issuer"],
        )
        .expect("metric"); // ok: static definition
        let token_cache_hits = IntCounter::new(
            "jwtgate_token_cache_hits_total",
            "Tokens whose signature check was skipped thanks to the verified-token cache.",
        )
        .expect("metric"); // ok: static definition
        let token_cache_misses = IntCounter::new(
            "jwtgate_token_cache_misses_total",
            "Tokens verified from scratch.",
        )
        .expect("metric"); // ok: static definition
        let token_cache_entries =
            IntGauge::new("jwtgate_token_cache_entries", "Verified tokens cached.")
                .expect("metric"); // ok: static definition
        let login_events = IntCounterVec::new(
            Opts::new(
                "jwtgate_login_events_total",
                format!(
                    "Browser sign-in events: {}.",
                    joined(LoginEvent::ALL, LoginEvent::as_str)
                ),
            ),
            &["provider", "event"],
        )
        .expect("metric"); // ok: static definition
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "jwtgate_config_reloads_total",
                format!(
                    "Configuration reloads by result ({}).",
                    joined(ReloadResult::ALL, ReloadResult::as_str)
                ),
            ),
            &["result"],
        )
        .expect("metric"); // ok: static definition
        let authorizer_calls = IntCounterVec::new(
            Opts::new(
                "jwtgate_authorizer_calls_total",
                format!(
                    "External authorizer calls by authorizer and result ({}).",
                    joined(AuthorizerResult::ALL, AuthorizerResult::as_str)
                ),
            ),
            &["authorizer", "result"],
        )
        .expect("metric"); // ok: static definition
        let authorizer_duration = HistogramVec::new(
            HistogramOpts::new(
                "jwtgate_authorizer_duration_seconds",
                "Time an external authorizer call took, by authorizer.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["authorizer"],
        )
        .expect("metric"); // ok: static definition
        let authorizer_cache = IntCounterVec::new(
            Opts::new(
                "jwtgate_authorizer_cache_total",
                "External authorizer decision cache lookups by authorizer and result (hit, miss).",
            ),
            &["authorizer", "result"],
        )
        .expect("metric"); // ok: static definition
        let authorizer_cache_entries = IntGaugeVec::new(
            Opts::new(
                "jwtgate_authorizer_cache_entries",
                "Cached external authorizer decisions, by authorizer (sampled at scrape time).",
            ),
            &["authorizer"],
        )
        .expect("metric"); // ok: static definition
        let aws_credential_calls = IntCounterVec::new(
            Opts::new(
                "jwtgate_aws_credential_calls_total",
                format!(
                    "Fetches of AWS credentials (each one exchange with Cognito, STS or the \
                     credential chain) by [[aws_credentials]] source and result ({}).",
                    joined(CredentialResult::ALL, CredentialResult::as_str)
                ),
            ),
            &["source", "result"],
        )
        .expect("metric"); // ok: static definition
        let aws_credential_cache = IntCounterVec::new(
            Opts::new(
                "jwtgate_aws_credential_cache_total",
                "AWS credential cache lookups by source and outcome (hit: served from the \
                 cache or a fetch in flight; miss: this request fetched).",
            ),
            &["source", "outcome"],
        )
        .expect("metric"); // ok: static definition
        let aws_signing_failures = IntCounterVec::new(
            Opts::new(
                "jwtgate_aws_signing_failures_total",
                format!(
                    "Requests to a signing (aws_sigv4) route that were not signed, or whose \
                     signature AWS refused for the clock, by upstream and reason ({}).",
                    joined(SigningFailure::ALL, SigningFailure::as_str)
                ),
            ),
            &["upstream", "reason"],
        )
        .expect("metric"); // ok: static definition
        let build_info = IntGaugeVec::new(
            Opts::new(
                "jwtgate_build_info",
                "Always 1; the version label says which build.",
            ),
            &["version"],
        )
        .expect("metric"); // ok: static definition
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(auth_failures.clone()),
            Box::new(rejections.clone()),
            Box::new(in_flight.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(jwks_keys.clone()),
            Box::new(jwks_last_success.clone()),
            Box::new(jwks_refetch_suppressed.clone()),
            Box::new(token_cache_hits.clone()),
            Box::new(token_cache_misses.clone()),
            Box::new(token_cache_entries.clone()),
            Box::new(login_events.clone()),
            Box::new(config_reloads.clone()),
            Box::new(authorizer_calls.clone()),
            Box::new(authorizer_duration.clone()),
            Box::new(authorizer_cache.clone()),
            Box::new(authorizer_cache_entries.clone()),
            Box::new(aws_credential_calls.clone()),
            Box::new(aws_credential_cache.clone()),
            Box::new(aws_signing_failures.clone()),
            Box::new(build_info),
        ];
        for c in collectors {
            registry.register(c).expect("unique metric names"); // ok: static definition
        }
        // Known label values start at 0, so their families show from the first scrape and
        // increase() sees the first event (login events: per provider, see `login_provider`).
        for result in ReloadResult::ALL {
            config_reloads
                .with_label_values(&[result.as_str()])
                .inc_by(0);
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_requests,
            auth_failures,
            rejections,
            in_flight,
            jwks_fetches,
            jwks_keys,
            jwks_last_success,
            jwks_refetch_suppressed,
            token_cache_hits,
            token_cache_misses,
            token_cache_entries,
            login_events,
            config_reloads,
            authorizer_calls,
            authorizer_duration,
            authorizer_cache,
            authorizer_cache_entries,
            aws_credential_calls,
            aws_credential_cache,
            aws_signing_failures,
        }
    }

    /// A configured external authorizer: its call and cache series start at 0.
    pub fn authorizer_known(&self, authorizer: &str) {
        for result in AuthorizerResult::ALL {
            self.authorizer_calls
                .with_label_values(&[authorizer, result.as_str()])
                .inc_by(0);
        }
        for result in ["hit", "miss"] {
            self.authorizer_cache
                .with_label_values(&[authorizer, result])
                .inc_by(0);
        }
    }

    /// One external authorizer call: how it ended and how long it took.
    pub fn authorizer_call(&self, authorizer: &str, result: AuthorizerResult, seconds: f64) {
        self.authorizer_calls
            .with_label_values(&[authorizer, result.as_str()])
            .inc();
        self.authorizer_duration
            .with_label_values(&[authorizer])
            .observe(seconds);
    }

    /// An external authorizer decision cache lookup.
    pub fn authorizer_cache(&self, authorizer: &str, hit: bool) {
        self.authorizer_cache
            .with_label_values(&[authorizer, if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// The number of decisions an authorizer's cache holds (set at scrape time).
    pub fn authorizer_cache_entries(&self, authorizer: &str, entries: u64) {
        self.authorizer_cache_entries
            .with_label_values(&[authorizer])
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// A configuration reload attempt.
    pub fn config_reload(&self, result: ReloadResult) {
        self.config_reloads
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// A browser sign-in event of the provider named `provider` (a name from the config).
    pub fn login_event(&self, provider: &str, event: LoginEvent) {
        self.login_events
            .with_label_values(&[provider, event.as_str()])
            .inc();
    }

    /// Starts a configured provider's login event series at 0, so they show from the first
    /// scrape and increase() sees the first event.
    pub fn login_provider(&self, provider: &str) {
        for event in LoginEvent::ALL {
            self.login_events
                .with_label_values(&[provider, event.as_str()])
                .inc_by(0);
        }
    }

    /// One finished request.
    pub fn request(
        &self,
        route: &str,
        method: &http::Method,
        decision: Decision,
        status: http::StatusCode,
        seconds: f64,
    ) {
        self.requests
            .with_label_values(&[
                route,
                method_class(method),
                decision.as_str(),
                status.as_str(),
            ])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(seconds);
    }

    /// One request sent to `upstream` for `route`: how it ended, and the time to the response
    /// head (or to the failure).
    pub fn upstream(&self, route: &str, upstream: &str, result: UpstreamResult, seconds: f64) {
        self.upstream_duration
            .with_label_values(&[route, upstream])
            .observe(seconds);
        self.upstream_requests
            .with_label_values(&[upstream, result.as_str()])
            .inc();
    }

    /// A configured upstream: its result series start at 0, so they show from the first scrape
    /// and increase() sees the first failure. Upstream names come from the config only.
    pub fn upstream_known(&self, upstream: &str) {
        for result in UpstreamResult::ALL {
            self.upstream_requests
                .with_label_values(&[upstream, result.as_str()])
                .inc_by(0);
        }
    }

    /// Zero series for an `[[aws_credentials]]` source (every result, hit and miss), so its
    /// families show from the first scrape and `increase()` sees the first event.
    pub fn aws_source_known(&self, source: &str) {
        for result in CredentialResult::ALL {
            self.aws_credential_calls
                .with_label_values(&[source, result.as_str()])
                .inc_by(0);
        }
        for outcome in ["hit", "miss"] {
            self.aws_credential_cache
                .with_label_values(&[source, outcome])
                .inc_by(0);
        }
    }

    /// Zero series of the signing failures of an upstream some route signs for.
    pub fn aws_signing_known(&self, upstream: &str) {
        for reason in SigningFailure::ALL {
            self.aws_signing_failures
                .with_label_values(&[upstream, reason.as_str()])
                .inc_by(0);
        }
    }

    /// A refused authentication or authorisation.
    pub fn auth_failure(&self, route: &str, reason: Reason) {
        self.auth_failures
            .with_label_values(&[route, reason.as_str()])
            .inc();
    }

    /// A request jwtgate answered itself for a reason other than authentication (bad path or
    /// body, no route, upstream or IdP failure).
    pub fn rejection(&self, route: &str, reason: Reason) {
        self.rejections
            .with_label_values(&[route, reason.as_str()])
            .inc();
    }

    /// Tracks a request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// One key set fetch and the number of keys now held.
    pub fn jwks_fetched(&self, issuer: &str, result: FetchResult, keys: usize) {
        self.jwks_fetches
            .with_label_values(&[issuer, result.as_str()])
            .inc();
        self.jwks_keys
            .with_label_values(&[issuer])
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
        if result == FetchResult::Ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.jwks_last_success.with_label_values(&[issuer]).set(now);
        }
    }

    /// An unknown-kid refetch refused by the rate limit.
    pub fn jwks_refetch_suppressed(&self, issuer: &str) {
        self.jwks_refetch_suppressed
            .with_label_values(&[issuer])
            .inc();
    }

    /// One fetch of AWS credentials by an `[[aws_credentials]]` source.
    pub fn aws_credential_call(&self, source: &str, result: CredentialResult) {
        self.aws_credential_calls
            .with_label_values(&[source, result.as_str()])
            .inc();
    }

    /// One lookup in a source's credential cache.
    pub fn aws_credential_cache(&self, source: &str, hit: bool) {
        self.aws_credential_cache
            .with_label_values(&[source, if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// A request to a signing route not signed, or refused by AWS for the clock.
    pub fn aws_signing_failure(&self, upstream: &str, reason: SigningFailure) {
        self.aws_signing_failures
            .with_label_values(&[upstream, reason.as_str()])
            .inc();
    }

    /// A verified-token cache lookup.
    pub fn token_cache(&self, hit: bool) {
        if hit {
            self.token_cache_hits.inc();
        } else {
            self.token_cache_misses.inc();
        }
    }

    /// Renders the text exposition format; `cache_entries` is sampled at scrape time.
    pub fn render(&self, cache_entries: u64) -> String {
        self.token_cache_entries
            .set(i64::try_from(cache_entries).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Help texts are built from the label enums; the exposition must read as it always has,
    /// and every known event and reload result shows from the first scrape.
    #[test]
    fn help_texts_and_zero_series_are_unchanged() {
        let metrics = Metrics::new();
        metrics.login_provider("default");
        let text = metrics.render(0);
        let lines: Vec<&str> = text.lines().collect();
        for line in [
            "# HELP jwtgate_login_events_total Browser sign-in events: redirect, callback_ok, callback_failed, refresh_ok, refresh_failed, logout.",
            "# HELP jwtgate_config_reloads_total Configuration reloads by result (ok, refused).",
            r#"jwtgate_login_events_total{event="redirect",provider="default"} 0"#,
            r#"jwtgate_login_events_total{event="callback_ok",provider="default"} 0"#,
            r#"jwtgate_login_events_total{event="callback_failed",provider="default"} 0"#,
            r#"jwtgate_login_events_total{event="refresh_ok",provider="default"} 0"#,
            r#"jwtgate_login_events_total{event="refresh_failed",provider="default"} 0"#,
            r#"jwtgate_login_events_total{event="logout",provider="default"} 0"#,
            r#"jwtgate_config_reloads_total{result="ok"} 0"#,
            r#"jwtgate_config_reloads_total{result="refused"} 0"#,
        ] {
            assert!(lines.contains(&line), "{line:?} not in:\n{text}");
        }
    }

    #[test]
    fn counters_take_the_enums_label() {
        let m = Metrics::new();
        m.login_event("staff", LoginEvent::CallbackFailed);
        m.config_reload(ReloadResult::Refused);
        m.auth_failure("api", Reason::InsufficientScope);
        m.rejection("api", Reason::BadHost);
        m.jwks_fetched("cognito", FetchResult::Timeout, 0);
        m.upstream_known("orders");
        m.upstream("api", "orders", UpstreamResult::Unreachable, 0.01);
        m.jwks_fetched("cognito", FetchResult::Ok, 2);
        let text = m.render(0);
        for line in [
            r#"jwtgate_login_events_total{event="callback_failed",provider="staff"} 1"#,
            r#"jwtgate_config_reloads_total{result="refused"} 1"#,
            r#"jwtgate_auth_failures_total{reason="insufficient_scope",route="api"} 1"#,
            r#"jwtgate_rejections_total{reason="bad_host",route="api"} 1"#,
            r#"jwtgate_jwks_fetches_total{issuer="cognito",result="timeout"} 1"#,
            r#"jwtgate_jwks_fetches_total{issuer="cognito",result="ok"} 1"#,
            r#"jwtgate_jwks_keys{issuer="cognito"} 2"#,
            r#"jwtgate_upstream_requests_total{result="unreachable",upstream="orders"} 1"#,
            r#"jwtgate_upstream_requests_total{result="timeout",upstream="orders"} 0"#,
            r#"jwtgate_upstream_duration_seconds_count{route="api",upstream="orders"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        let last_success = text
            .lines()
            .find(|l| {
                l.starts_with(r#"jwtgate_jwks_last_success_timestamp_seconds{issuer="cognito"}"#)
            })
            .expect("set by the good fetch");
        assert!(!last_success.ends_with(" 0"), "{last_success}");
    }
}

//! The live state: `Shared` (what outlives a config: key stores, the token cache, metrics, the
//! exporter) and `Snapshot` (one config with what it needs bound, swapped whole on reload).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::StartError;
use crate::jwks::{KeyManager, KeySettings};
use crate::login::{Login, LoginRuntime, Logins};
use crate::metrics::Metrics;
use crate::settings::Config;
use crate::token::{Issuers, TokenCache};
use crate::upstream::Upstream;

/// Everything one request reads, swapped as a whole on reload: a request loads it once and
/// keeps that `Arc` to the end, so it never sees half of an old config and half of a new one.
pub struct Snapshot {
    /// The checked configuration.
    pub config: Config,
    /// Issuer policies with their live key stores.
    pub issuers: Issuers,
    /// The upstream clients, in the order of `config.upstreams` (routes hold indices). An
    /// upstream whose settings a reload left unchanged is shared with the previous snapshot, so
    /// its pool stays warm; requests in flight keep the snapshot (and clients) they started with.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Browser sign-in providers (none without `[login]` or `[[logins]]`).
    pub logins: Logins,
    /// External authorizers, in the order of `config.authorizers` (routes hold indices). One
    /// whose settings a reload left unchanged is kept with its cached decisions; a changed one
    /// starts with an empty cache, so no decision of its old settings is served.
    pub authorizers: Vec<Arc<crate::authorizer::Authorizer>>,
    /// `[[aws_credentials]]` sources, by name (routes' `aws_sigv4` name them). One whose
    /// settings a reload left unchanged is kept with its cached credentials.
    pub credentials: crate::aws::CredentialSources,
}

/// State shared by every connection.
pub struct Shared {
    /// The live configuration.
    pub snapshot: ArcSwap<Snapshot>,
    /// Key stores; they survive reloads.
    pub keys: KeyManager,
    /// Verified tokens; they survive reloads (claims are re-checked against the live config).
    pub token_cache: TokenCache,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Sign-in state that survives reloads (generated keys, refreshes in flight, Redis).
    pub login_runtime: Arc<LoginRuntime>,
    /// Set on shutdown: `/readyz` answers 503 from then on.
    pub draining: std::sync::atomic::AtomicBool,
    /// Request bodies held whole (signed AWS payloads), in KiB permits: together they stay
    /// within `max_buffered_body_bytes` (fixed at start).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// OTLP span export, when an endpoint is configured (`[tracing]` or `OTEL_*`); replaced
    /// when a reload changes the export settings.
    #[cfg(feature = "otlp")]
    pub exporter: arc_swap::ArcSwapOption<crate::trace::Exporter>,
}

/// Starts the span exporter `settings` asks for, if any.
#[cfg(feature = "otlp")]
fn start_exporter(
    settings: &crate::settings::TracingSettings,
) -> Result<Option<Arc<crate::trace::Exporter>>, String> {
    let Some(export) = &settings.export else {
        return Ok(None);
    };
    let exporter = crate::trace::Exporter::start(export)?;
    // Never the header values: they are usually credentials.
    tracing::info!(
        url = %export.url,
        protocol = export.protocol.as_str(),
        headers = export.headers.len(),
        sampler = %settings.sampler,
        "exporting spans over OTLP"
    );
    Ok(Some(Arc::new(exporter)))
}

impl Shared {
    /// Builds the state and starts fetching keys. Must run inside a tokio runtime.
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let keys = KeyManager::new(Arc::clone(&metrics)).map_err(StartError::HttpClient)?;
        let login_runtime = Arc::new(LoginRuntime::new().map_err(StartError::HttpClient)?);
        let token_cache = TokenCache::new(config.token_cache_bytes);
        let body_budget = Arc::new(tokio::sync::Semaphore::new(
            (config.limits.max_buffered_body_bytes / 1024).min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        #[cfg(feature = "otlp")]
        let exporter = arc_swap::ArcSwapOption::new(
            start_exporter(&config.tracing).map_err(StartError::Tracing)?,
        );
        let snapshot = bind(config, None, &keys, &login_runtime, &metrics)?;
        Ok(Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            keys,
            token_cache,
            metrics,
            login_runtime,
            draining: std::sync::atomic::AtomicBool::new(false),
            body_budget,
            #[cfg(feature = "otlp")]
            exporter,
        }))
    }

    /// Waits until every issuer has keys, at most `timeout`; whether they all do.
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.snapshot.load().issuers.all_ready() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Installs a new configuration atomically. Listener addresses, limits and the token cache
    /// size are fixed at start; a change to them is logged and takes effect on restart.
    pub fn install(&self, config: Config) -> Result<(), StartError> {
        let old = self.snapshot.load();
        if old.config.listen != config.listen || old.config.admin_listen != config.admin_listen {
            tracing::warn!("listener addresses changed; restart jwtgate to apply");
        }
        // A new exporter only when the export settings changed; the old one sends what it
        // holds, then stops.
        #[cfg(feature = "otlp")]
        let exporter = (old.config.tracing.export != config.tracing.export)
            .then(|| start_exporter(&config.tracing))
            .transpose()
            .map_err(StartError::Tracing)?;
        let snapshot = bind(
            config,
            Some(&old),
            &self.keys,
            &self.login_runtime,
            &self.metrics,
        )?;
        self.snapshot.store(Arc::new(snapshot));
        #[cfg(feature = "otlp")]
        if let Some(exporter) = exporter {
            self.exporter.store(exporter);
        }
        Ok(())
    }
}

/// Attaches live key stores (started or kept by the manager), the login runtime and upstream
/// clients to a checked config: `old`'s client for an upstream of the same name and settings
/// (its TLS files unchanged), a new one otherwise.
fn bind(
    config: Config,
    old: Option<&Snapshot>,
    keys: &KeyManager,
    login_runtime: &Arc<LoginRuntime>,
    metrics: &Arc<Metrics>,
) -> Result<Snapshot, StartError> {
    let mut settings: Vec<KeySettings> = config.issuers.iter().map(|(_, s)| s.clone()).collect();
    // Each sign-in provider's ID token keys, after the issuers', in config order.
    settings.extend(config.logins.iter().map(|l| l.keys.clone()));
    let mut stores = keys.sync(&settings);
    let login_stores = stores.split_off(config.issuers.len().min(stores.len()));
    let issuers = Issuers::new(
        config
            .issuers
            .iter()
            .map(|(policy, _)| Arc::clone(policy))
            .zip(stores),
    );
    let logins = config
        .logins
        .iter()
        .zip(login_stores)
        .map(|(settings, store)| {
            Login::new(settings.clone(), store, login_runtime, metrics).map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut upstreams = Vec::with_capacity(config.upstreams.len());
    for settings in &config.upstreams {
        let kept = old
            .into_iter()
            .flat_map(|old| &old.upstreams)
            .find(|u| u.settings == *settings && u.same_tls_files());
        let upstream = match kept {
            Some(kept) => Arc::clone(kept),
            None => Arc::new(Upstream::new(settings.clone()).map_err(StartError::Upstream)?),
        };
        metrics.upstream_known(&settings.name);
        upstreams.push(upstream);
    }
    let mut authorizers = Vec::with_capacity(config.authorizers.len());
    for settings in &config.authorizers {
        let kept = old
            .into_iter()
            .flat_map(|old| &old.authorizers)
            .find(|a| a.settings == *settings);
        authorizers.push(match kept {
            Some(kept) => Arc::clone(kept),
            None => Arc::new(
                crate::authorizer::Authorizer::new(settings.clone(), Arc::clone(metrics))
                    .map_err(StartError::HttpClient)?,
            ),
        });
    }
    let credentials = match old {
        Some(old) => old.credentials.reload(&config.aws_credentials, metrics),
        None => crate::aws::CredentialSources::new(&config.aws_credentials, metrics),
    }
    .map_err(StartError::HttpClient)?;
    for source in &config.aws_credentials {
        metrics.aws_source_known(&source.name);
    }
    for (_, _, route) in config.routes.iter() {
        if let (Some(_), Some(upstream)) = (&route.aws_sigv4, config.upstreams.get(route.upstream))
        {
            metrics.aws_signing_known(&upstream.name);
        }
    }
    Ok(Snapshot {
        config,
        issuers,
        upstreams,
        logins: Logins::new(logins),
        authorizers,
        credentials,
    })
}

//! Config reload, on SIGHUP and when the file changes: read, check, compile, swap. A bad file is
//! refused with its `file:line:col` errors and the running config keeps serving.
//!
//! File changes are found by reading the file every [`WATCH_INTERVAL`] and comparing a digest of
//! its bytes, not by inotify: a Kubernetes ConfigMap update replaces a symlinked directory
//! (`..data`), which inotify watches on the file itself miss, while a re-read always sees it. The
//! file is small, so this costs nothing measurable. The files the config names (Cedar policy
//! files and schemas) are watched the same way, with the config.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;

use crate::compile::{ConfigErrors, compile};
use crate::metrics::ReloadResult;
use crate::{Shared, StartError};

/// How often the config file is checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Why a reload was refused; the running configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read.
    #[error("{path}: {error}")]
    Read {
        /// The file, as given.
        path: String,
        /// Why (no `source()`: the message carries it).
        error: std::io::Error,
    },
    /// The file has problems, one `file:line:col: key: reason` line each.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The checked configuration cannot be installed.
    #[error(transparent)]
    Install(#[from] StartError),
}

/// Reads and compiles `path`, then installs it. Returns the errors when refused.
pub fn reload(shared: &Shared, path: &Path) -> Result<(), ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|error| ReloadError::Read {
        path: path.display().to_string(),
        error,
    })?;
    let config = compile(&path.display().to_string(), &text)?;
    Ok(shared.install(config)?)
}

fn reload_and_log(shared: &Shared, path: &Path, cause: &'static str) {
    match reload(shared, path) {
        Ok(()) => {
            shared.metrics.config_reload(ReloadResult::Ok);
            tracing::info!(file = %path.display(), cause, "configuration reloaded");
        }
        Err(errors) => {
            shared.metrics.config_reload(ReloadResult::Refused);
            tracing::error!(
                file = %path.display(),
                cause,
                "configuration refused, the previous one keeps serving:\n{errors}"
            );
        }
    }
}

/// A digest of the config file and of the files it names (policy files, found anew through
/// their wildcards, and schemas), as the running config names them; `None` while the config
/// file is missing.
fn fingerprint(shared: &Shared, path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&bytes);
    for pattern in shared.snapshot.load().config.watched_files() {
        for file in crate::policy::expand(&pattern).unwrap_or_default() {
            ctx.update(file.as_os_str().as_encoded_bytes());
            // A file that cannot be read counts as changed content (the reload says why).
            let content = std::fs::read(&file).unwrap_or_else(|_| b"\0unreadable".to_vec());
            ctx.update(digest::digest(&digest::SHA256, &content).as_ref());
        }
    }
    Some(ctx.finish().as_ref().to_vec())
}

/// Reloads on every SIGHUP, and whenever the file's contents change, until the runtime stops.
pub async fn watch(shared: Arc<Shared>, path: PathBuf) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::error!("cannot listen for SIGHUP; reload on file change only: {e}"))
        .ok();
    let mut seen = fingerprint(&shared, &path);
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = hangup => {
                seen = fingerprint(&shared, &path);
                reload_and_log(&shared, &path, "SIGHUP");
            }
            _ = tick.tick() => {
                let now = fingerprint(&shared, &path);
                // A file being replaced can be missing for a moment: wait for it to come back.
                if now.is_some() && now != seen {
                    seen = now;
                    reload_and_log(&shared, &path, "file changed");
                }
            }
        }
    }
}

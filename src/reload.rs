//! Config reload on SIGHUP: read, check, compile, swap. A bad file is refused with its
//! `file:line:col` errors and the running config keeps serving.

use std::path::PathBuf;
use std::sync::Arc;

use crate::Shared;
use crate::compile::compile;

/// Reads and compiles `path`, then installs it. Returns the errors when refused.
pub fn reload(shared: &Shared, path: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = compile(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
    shared.install(config)
}

/// Reloads on every SIGHUP until the runtime stops.
#[cfg(unix)]
pub async fn on_sighup(shared: Arc<Shared>, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGHUP; reload disabled: {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match reload(&shared, &path) {
            Ok(()) => tracing::info!(file = %path.display(), "configuration reloaded"),
            Err(errors) => {
                tracing::error!(file = %path.display(), "configuration refused, the previous one keeps serving:\n{errors}");
            }
        }
    }
}

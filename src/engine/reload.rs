//! Reloading a running daemon: SIGHUP (or `systemctl reload`) re-reads the configuration file
//! and every mapping, then every TLS certificate.
//!
//! The file is read and validated first; a problem anywhere (a syntax error, a mapping that
//! does not compile, a certificate that does not load, an address already in use) leaves the
//! daemon running exactly as before, logs why at warn, and counts
//! `ordobridge_config_reload_failures_total`. What a successful reload changes is logged by
//! channel and destination name (see [`ReloadSummary`]).

use std::path::Path;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::{Config, ConfigErrors};
use crate::tls::Reloader;

use super::EngineError;
pub use super::running::ReloadSummary;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{count} problem(s) in the configuration:\n{errors}", count = .0.0.len(), errors = .0)]
    Config(ConfigErrors),
    #[error("{0}")]
    Apply(EngineError),
    #[error("the daemon is stopping")]
    Stopped,
}

/// A new configuration for the engine, and where to say how it went.
pub(super) struct ReloadRequest {
    pub(super) config: Box<Config>,
    pub(super) done: oneshot::Sender<Result<ReloadSummary, EngineError>>,
}

/// The engine's end of [`reload_channel`]: passed to [`super::run_reloadable`].
pub struct ReloadRequests {
    pub(super) receiver: mpsc::Receiver<ReloadRequest>,
    pub(super) tls: Reloader,
}

/// The caller's end: the binary's SIGHUP handler, tests.
#[derive(Clone)]
pub struct ReloadHandle {
    sender: mpsc::Sender<ReloadRequest>,
    tls: Reloader,
}

/// A handle to reload a daemon started with the other end. `tls` is the daemon's registry of
/// certificates (read again by [`ReloadHandle::reload_certificates`]).
pub fn reload_channel(tls: Reloader) -> (ReloadHandle, ReloadRequests) {
    let (sender, receiver) = mpsc::channel(1);
    (
        ReloadHandle {
            sender,
            tls: tls.clone(),
        },
        ReloadRequests { receiver, tls },
    )
}

impl ReloadHandle {
    /// What SIGHUP does: the configuration file and its mappings, then the certificates of
    /// whatever did not restart. Logs each outcome.
    pub async fn reload_all(&self, config_file: &Path) -> Result<ReloadSummary, ReloadError> {
        let outcome = self.reload_file(config_file).await;
        match &outcome {
            Ok(summary) => info!(%summary, "configuration reloaded"),
            Err(error) => warn!(
                file = %config_file.display(),
                %error,
                "configuration reload refused: the previous configuration stays in force"
            ),
        }
        self.reload_certificates();
        outcome
    }

    /// Reads `config_file` and applies it; see the module docs.
    pub async fn reload_file(&self, config_file: &Path) -> Result<ReloadSummary, ReloadError> {
        match Config::load(config_file) {
            Ok(config) => self.reload_config(config).await,
            Err(errors) => {
                reload_counters().failures.inc();
                Err(ReloadError::Config(errors))
            }
        }
    }

    /// Applies an already loaded configuration.
    pub async fn reload_config(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        let (done, answer) = oneshot::channel();
        let request = ReloadRequest {
            config: Box::new(config),
            done,
        };
        if self.sender.send(request).await.is_err() {
            return Err(ReloadError::Stopped);
        }
        let outcome = match answer.await {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(error)) => Err(ReloadError::Apply(error)),
            Err(_) => Err(ReloadError::Stopped),
        };
        let counters = reload_counters();
        match &outcome {
            Ok(_) => counters.successes.inc(),
            Err(ReloadError::Stopped) => 0,
            Err(_) => counters.failures.inc(),
        };
        outcome
    }

    /// Re-reads every TLS certificate and key in use; returns how many failed (those keep
    /// their old files).
    pub fn reload_certificates(&self) -> usize {
        self.tls.reload_all()
    }
}

/// Reloads since start, for `/metrics`.
pub(crate) struct ReloadCounters {
    pub(crate) successes: Counter,
    pub(crate) failures: Counter,
}

static RELOADS: std::sync::LazyLock<ReloadCounters> = std::sync::LazyLock::new(|| ReloadCounters {
    successes: Counter::default(),
    failures: Counter::default(),
});

pub(crate) fn reload_counters() -> &'static ReloadCounters {
    &RELOADS
}

/// Registers the reload counters in `registry`.
pub(super) fn register(registry: &mut prometheus_client::registry::Registry) {
    let counters = reload_counters();
    registry.register(
        "ordobridge_config_reloads",
        "configuration reloads applied (SIGHUP)",
        counters.successes.clone(),
    );
    registry.register(
        "ordobridge_config_reload_failures",
        "configuration reloads refused: the previous configuration stayed in force",
        counters.failures.clone(),
    );
}

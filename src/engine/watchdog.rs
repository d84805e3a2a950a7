//! The systemd watchdog (`WatchdogSec=` in the unit): `WATCHDOG=1` is sent only after the
//! store's writer thread committed a transaction (an empty one) within half the watchdog
//! period, from a task of the runtime. A stuck writer or a starved runtime stops the pings, and
//! systemd restarts the daemon (`Restart=on-failure`). Outside systemd (no `WATCHDOG_USEC`),
//! nothing runs.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::Store;

/// Pings systemd every half period while the store commits, until `shutdown`.
pub(super) async fn run_watchdog(store: Store, period: Duration, shutdown: CancellationToken) {
    let every = (period / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match tokio::time::timeout(every, store.probe_commit()).await {
            Ok(Ok(_)) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Ok(Err(e)) => warn!(error = %e, "the store did not commit: no watchdog ping"),
            Err(_) => warn!(
                seconds = every.as_secs_f64(),
                "the store did not commit in time: no watchdog ping"
            ),
        }
    }
}

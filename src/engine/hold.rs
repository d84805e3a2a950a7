//! The releaser of held bundles: a pushed bundle whose patient the census did not know is
//! held (see `push`); this task releases it as soon as the census knows the patient (the
//! processor pokes it after each census update), or at its `release_at` with what the bundle
//! says (`census.known = false`).
//!
//! Each round asks the store which holds are due (one indexed query: deadline passed, or the
//! partner id is a census IPP), resolves the patient (a merged IPP gives the survivor), maps
//! through the same code as the push endpoint, and settles the bundle in one transaction
//! (messages enqueued, journal row processed, hold released). Holds live in the store, so
//! after a restart the first round picks them up again. A bundle whose release fails (store
//! busy, a mapping that refuses the census identity) stays held, visible in `/status`, and is
//! tried again after [`RETRY_AFTER`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::push::{Deliverer, Failure};
use crate::posos::bundle::read_bundle;
use crate::store::{DeliverOutcome, HeldBundle, ReleaseReason, Store};

/// A safety net if a wake-up is missed, and the longest sleep between rounds.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// How long a bundle whose release failed waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Least time between two rounds woken by census updates: under an ADT burst the pokes
/// collapse into a few rounds instead of one query per message.
const MIN_ROUND_GAP: Duration = Duration::from_millis(50);

/// Released bundles by reason, for `/status` and `/metrics` (relaxed atomics, no lock).
#[derive(Debug, Default)]
pub(super) struct HoldStats {
    pub(super) patient_known: AtomicU64,
    pub(super) hold_expired: AtomicU64,
}

impl HoldStats {
    fn count(&self, reason: ReleaseReason) {
        let counter = match reason {
            ReleaseReason::PatientKnown => &self.patient_known,
            ReleaseReason::HoldExpired => &self.hold_expired,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(reason, released so far)` for each reason.
    pub(super) fn snapshot(&self) -> [(ReleaseReason, u64); 2] {
        [
            (
                ReleaseReason::PatientKnown,
                self.patient_known.load(Ordering::Relaxed),
            ),
            (
                ReleaseReason::HoldExpired,
                self.hold_expired.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// Runs until `shutdown`; `wake` is poked after each census update and each new hold.
pub(super) async fn run_releaser(
    store: Store,
    deliverer: Arc<Deliverer>,
    stats: Arc<HoldStats>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    // Bundles whose release failed, and when to try them again (memory only: a restart
    // simply tries them at once).
    let mut failed: HashMap<i64, Instant> = HashMap::new();
    loop {
        let now = jiff::Timestamp::now();
        let mut sleep = IDLE_POLL;
        match store.due_holds(now).await {
            Ok((due, next)) => {
                for hold in due {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    if let Some(retry) = failed.get(&hold.journal_id) {
                        let left = retry.saturating_duration_since(Instant::now());
                        if !left.is_zero() {
                            sleep = sleep.min(left);
                            continue;
                        }
                    }
                    match release(&store, &deliverer, &hold, now).await {
                        Ok(Some(reason)) => {
                            failed.remove(&hold.journal_id);
                            stats.count(reason);
                        }
                        Ok(None) => {
                            failed.remove(&hold.journal_id);
                        }
                        Err(e) => {
                            warn!(journal_id = hold.journal_id, error = %e, "cannot release the held bundle; it stays held and is tried again");
                            failed.insert(hold.journal_id, Instant::now() + RETRY_AFTER);
                            sleep = sleep.min(RETRY_AFTER);
                        }
                    }
                }
                if let Some(next) = next {
                    let until = next.duration_since(jiff::Timestamp::now());
                    // Past deadlines (a failed release) are covered by the retry time above.
                    if let Ok(until) = Duration::try_from(until)
                        && !until.is_zero()
                    {
                        sleep = sleep.min(until);
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot read the held bundles; will try again");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {
                // Pokes during the gap are kept by `Notify` (one permit) and coalesced.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(MIN_ROUND_GAP) => {}
                }
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Releases one due hold; `Some(reason)` when this call released it, `None` when it was not
/// due after all (census race) or somebody else settled it.
async fn release(
    store: &Store,
    deliverer: &Deliverer,
    hold: &HeldBundle,
    now: jiff::Timestamp,
) -> Result<Option<ReleaseReason>, String> {
    let entry = store
        .journal_entry_async(hold.journal_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("journal row {} is gone", hold.journal_id))?;
    let prescription =
        read_bundle(&entry.raw).map_err(|e| format!("journal row {}: {e}", hold.journal_id))?;
    let census = deliverer
        .census(&prescription)
        .await
        .map_err(|e| e.to_string())?;
    let reason = match (&census, hold.release_at <= now) {
        (Some(_), _) => ReleaseReason::PatientKnown,
        (None, true) => ReleaseReason::HoldExpired,
        (None, false) => return Ok(None),
    };
    let outcome = deliverer
        .deliver(
            hold.journal_id,
            &prescription,
            census.as_ref(),
            Some(reason),
        )
        .await
        .map_err(|e| match e {
            Failure::Mapping(text) => format!("mapping: {text}"),
            Failure::Store(text) => text,
        })?;
    match outcome {
        DeliverOutcome::Queued { ids } => {
            info!(
                journal_id = hold.journal_id,
                reason = %reason,
                messages = ids.len(),
                "held bundle released, mapped and queued"
            );
            Ok(Some(reason))
        }
        DeliverOutcome::AlreadyDone => Ok(None),
    }
}

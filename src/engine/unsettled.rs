//! The sweeper of unsettled pushes: a pushed bundle is journaled (committed) before anything
//! else, so when its push is answered with an error after that (the store could not queue its
//! messages), or its client goes away mid-request, the journal row stays `accepted` with
//! nothing behind it. Posos usually pushes again (answered as a duplicate, mapped then); when it
//! does not, this task settles the row like the push endpoint would have: mapped and queued,
//! held for an unknown patient, or rejected with the mapping's reason. Every journaled push
//! thus ends `processed`, held, or `rejected`.
//!
//! Rows younger than [`SETTLE_AFTER`] belong to their request still in flight. The scan starts
//! where the previous one stopped (rowid order), so each round reads only recent rows.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::push::{Deliverer, PUSH_CHANNEL, Settled};
use crate::posos::bundle::read_bundle;
use crate::store::{Store, UnsettledPush};

/// A pushed row left `accepted` this long is no longer its request's.
pub(super) const SETTLE_AFTER: Duration = Duration::from_secs(60);
/// Time between two rounds.
const ROUND: Duration = Duration::from_secs(30);
/// Rows read per round.
const BATCH: usize = 64;

/// Settles unsettled pushes every [`ROUND`] until `shutdown`.
pub(super) async fn run_sweeper(
    store: Store,
    deliverer: Arc<Deliverer>,
    shutdown: CancellationToken,
) {
    let mut after = 0i64;
    loop {
        after = sweep(&store, &deliverer, after, SETTLE_AFTER).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(ROUND) => {}
        }
    }
}

/// One round from journal id `after`; returns where the next round starts.
pub(super) async fn sweep(
    store: &Store,
    deliverer: &Deliverer,
    mut after: i64,
    settle_after: Duration,
) -> i64 {
    let (rows, last) = match store.unsettled_pushes(PUSH_CHANNEL, after, BATCH).await {
        Ok(found) => found,
        Err(e) => {
            warn!(error = %e, "cannot look for unsettled pushes; trying again later");
            return after;
        }
    };
    if rows.is_empty() {
        return after.max(last);
    }
    let cutoff = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(settle_after).unwrap_or_default())
        .unwrap_or(jiff::Timestamp::MIN);
    for row in rows {
        if row.received_at > cutoff {
            // Its request may still be running: the next round looks again from here.
            return after;
        }
        if !settle(store, deliverer, &row).await {
            return after;
        }
        after = row.journal_id;
    }
    after
}

/// Settles one row as the push endpoint would have; `false` when it must be tried again
/// later (store trouble).
async fn settle(store: &Store, deliverer: &Deliverer, row: &UnsettledPush) -> bool {
    let journal_id = row.journal_id;
    let prescription = match read_bundle(&row.raw) {
        Ok(prescription) => prescription,
        Err(e) => {
            let reason = format!("channel `{PUSH_CHANNEL}`: {e}");
            return store.reject_accepted(journal_id, reason).await.is_ok();
        }
    };
    match deliverer.settle(journal_id, &prescription).await {
        Ok(Settled::Queued { messages, .. }) => {
            info!(journal_id, messages, "unsettled push mapped and queued");
            true
        }
        Ok(Settled::AlreadyDone) => true,
        Ok(Settled::Held { .. }) => {
            info!(journal_id, "unsettled push held until its patient is known");
            true
        }
        Ok(Settled::Refused { recorded, .. }) => {
            if recorded {
                info!(
                    journal_id,
                    "unsettled push refused by its mapping; journal row rejected"
                );
            }
            recorded
        }
        Err(_) => false,
    }
}

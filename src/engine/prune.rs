//! The background pruner: every `[store] prune_interval`, deletes what `[store] retention`,
//! `rejected_retention`, the channels' `retention` and `[census] retention` let go
//! ([`Store::prune`]: small transactions, intake served between them), then shrinks the file.
//! Counted for `/status` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RetentionConfig;
use crate::store::Store;

/// The pruner takes at most a quarter of the writer's time (it pauses three times as long as
/// each step took): measured with `benches/prune_load.sh`, intake at 64 connections kept 62 %
/// of its pace with no pause and (see the README) more with this one.
const PAUSE_RATIO: u32 = 3;

/// What the pruner did since start.
#[derive(Debug, Default)]
pub(super) struct PruneStats {
    pub(super) journal: AtomicU64,
    pub(super) outbound: AtomicU64,
    pub(super) holds: AtomicU64,
    pub(super) census_encounters: AtomicU64,
    pub(super) census_patients: AtomicU64,
    pub(super) pages_freed: AtomicU64,
    pub(super) failures: AtomicU64,
    /// Unix seconds of the last prune that finished; 0 before the first.
    pub(super) last_run: AtomicU64,
}

/// Prunes once shortly after start (a daemon restarted every night still prunes), then every
/// `settings.interval`, until `shutdown`.
pub(super) async fn run_pruner(
    store: Store,
    settings: RetentionConfig,
    stats: Arc<PruneStats>,
    shutdown: CancellationToken,
) {
    /// The first prune waits this long: starting up (census catch-up, queues) comes first.
    const FIRST_DELAY: std::time::Duration = std::time::Duration::from_secs(60);
    let mut wait = FIRST_DELAY.min(settings.interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = settings.interval;
        let Some(plan) = settings.plan(jiff::Timestamp::now()) else {
            continue;
        };
        // The prune runs as a task of its own so that shutdown does not cut a transaction
        // half-way: `select!` drops only the wait, never a store call in flight.
        let started = std::time::Instant::now();
        match store.prune_gently(plan, settings.batch, PAUSE_RATIO).await {
            Ok((pruned, freed)) => {
                stats
                    .journal
                    .fetch_add(pruned.journal as u64, Ordering::Relaxed);
                stats
                    .outbound
                    .fetch_add(pruned.outbound as u64, Ordering::Relaxed);
                stats
                    .holds
                    .fetch_add(pruned.holds as u64, Ordering::Relaxed);
                stats
                    .census_encounters
                    .fetch_add(pruned.census_encounters as u64, Ordering::Relaxed);
                stats
                    .census_patients
                    .fetch_add(pruned.census_patients as u64, Ordering::Relaxed);
                stats.pages_freed.fetch_add(freed, Ordering::Relaxed);
                stats.last_run.store(
                    u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0),
                    Ordering::Relaxed,
                );
                if pruned.total() > 0 {
                    info!(
                        journal = pruned.journal,
                        outbound = pruned.outbound,
                        holds = pruned.holds,
                        census_encounters = pruned.census_encounters,
                        census_patients = pruned.census_patients,
                        documents = pruned.documents,
                        pages_freed = freed,
                        seconds = started.elapsed().as_secs_f64(),
                        "pruned rows past their retention"
                    );
                }
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                warn!(
                    error = %crate::text::error_chain(&e),
                    "prune failed; it runs again at the next interval"
                );
            }
        }
    }
}

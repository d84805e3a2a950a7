//! Work that one node of a cluster does at a time (issue 14): a destination's delivery, a
//! file inbox, the census processor, the hold releaser, the sweeper of unsettled pushes, the
//! pruner. Each runs under a lease of the store ([`Store::claim_destination`]) named after
//! what it does (see [`Role`]): a node runs the work only while it holds the lease.
//!
//! The life of a lease, as [`run_leased`] drives it:
//!
//! - **Claim.** Every third of the lease (`[cluster] failover_after`), a node that does not
//!   hold it asks for it; it gets it once nobody holds it or the holder's lease expired. A
//!   node that died therefore loses its work at most `failover_after` after its last renewal.
//! - **Hold.** The holder renews every third of the lease. A renewal that fails (PostgreSQL
//!   unreachable) is tried again every second while the lease still holds.
//! - **Step down.** When a third of the lease is left without a renewal, or a renewal says
//!   another node took over, the work is asked to stop (its token is cancelled: the attempt in
//!   flight ends, its outcome is recorded). When the lease runs out before the work stopped,
//!   the work is dropped where it stands (a delivery's connection is closed mid-exchange: the
//!   message stays queued and the next holder sends it again, same MSH-10). The lease ends on
//!   the holder's monotonic clock before it ends on the database's (see `store::ownership`), so
//!   two nodes never work at once.
//! - **Give back.** At shutdown, the work stops, then the lease is released so another node
//!   takes over at once rather than after `failover_after`.
//!
//! On SQLite there is one node and no lease: the work runs as it is.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store::ownership::Lease;
use crate::store::{Store, StoreError};
use crate::text::error_chain;

/// How often a failed renewal is tried again while the lease still holds.
const RENEW_RETRY: Duration = Duration::from_secs(1);

/// What a lease is for; its name is the lease's key in the store and what `/status` shows.
/// Destination names are configuration keys (letters, digits, `-`, `_`), so the `@` of the
/// other roles never collides with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Delivering an outbound destination's queue, in order.
    Destination(String),
    /// Taking files from an inbound channel's folder (a folder shared by the nodes).
    Inbox(String),
    /// Applying journaled ADT/HPRIM to the census, in journal order.
    Census,
    /// Releasing held bundles.
    Holds,
    /// Sending again pushes whose delivery did not finish.
    UnsettledPushes,
    /// Deleting what the retention no longer keeps.
    Prune,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Destination(name) => f.write_str(name),
            Role::Inbox(channel) => write!(f, "@inbox:{channel}"),
            Role::Census => f.write_str("@census"),
            Role::Holds => f.write_str("@holds"),
            Role::UnsettledPushes => f.write_str("@unsettled-pushes"),
            Role::Prune => f.write_str("@prune"),
        }
    }
}

/// Who asks for leases, and for how long each holds.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// This node's name (`[cluster] node_name`).
    pub node: String,
    /// How long a claim or renewal holds (`[cluster] failover_after`).
    pub duration: Duration,
}

/// Runs `work` whenever this node holds the lease of `role`, until `shutdown` is cancelled.
///
/// `work` is called anew each time the lease is taken, with a token that is cancelled when
/// the work must stop (shutdown, or the lease is being lost). On SQLite it is called once,
/// with `shutdown`.
pub async fn run_leased<W, F>(
    store: Store,
    role: Role,
    settings: LeaseSettings,
    shutdown: CancellationToken,
    mut work: W,
) where
    W: FnMut(CancellationToken) -> F,
    F: Future<Output = ()>,
{
    if store.backend_name() == "sqlite" {
        work(shutdown).await;
        return;
    }
    let key = role.to_string();
    let every = settings.duration / 3;
    loop {
        let lease = tokio::select! {
            () = shutdown.cancelled() => return,
            lease = claim(&store, &key, &settings) => lease,
        };
        let Some(lease) = lease else {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => continue,
            }
        };
        tracing::info!(role = %key, node = %lease.node, epoch = lease.epoch, "lease taken: this node does the work");
        let lease = hold(&store, lease, &shutdown, &mut work).await;
        if let Some(lease) = lease {
            let epoch = lease.epoch;
            if let Err(error) = store.release_destination(lease).await {
                tracing::warn!(role = %key, epoch, error = %error_chain(&error), "lease not given back: another node takes over once it expires");
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        // The work ended on its own (an inbox whose folder is refused returns at once) or the
        // lease was lost: ask again only after a third of the lease, never in a tight loop.
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Asks for the lease once; `None` when another node holds it or the store failed.
async fn claim(store: &Store, key: &str, settings: &LeaseSettings) -> Option<Lease> {
    match store
        .claim_destination(key, &settings.node, settings.duration)
        .await
    {
        Ok(lease) => lease,
        Err(error) => {
            tracing::warn!(role = %key, error = %error_chain(&error), "cannot ask for the lease; trying again");
            None
        }
    }
}

/// Runs the work while the lease holds; answers the lease to give back (`None` when it was
/// lost: there is nothing to give back). Renewals run beside the work, never in its way.
async fn hold<W, F>(
    store: &Store,
    mut lease: Lease,
    shutdown: &CancellationToken,
    work: &mut W,
) -> Option<Lease>
where
    W: FnMut(CancellationToken) -> F,
    F: Future<Output = ()>,
{
    let every = lease.duration / 3;
    let stop = shutdown.child_token();
    let running = work(stop.clone());
    tokio::pin!(running);
    let mut renew_at = Instant::now() + every;
    let mut renewing = None;
    loop {
        // A third of the lease left without a renewal: ask the work to stop.
        let step_down_at = lease
            .valid_until
            .checked_sub(every)
            .unwrap_or(lease.valid_until);
        tokio::select! {
            () = &mut running => return Some(lease),
            () = tokio::time::sleep_until(lease.valid_until.into()) => {
                tracing::warn!(role = %lease.destination, epoch = lease.epoch, "lease ran out before the work stopped: work dropped, the next holder takes over");
                return None;
            }
            () = tokio::time::sleep_until(step_down_at.into()), if !stop.is_cancelled() => {
                tracing::warn!(role = %lease.destination, epoch = lease.epoch, "lease not renewed in time: stopping the work");
                stop.cancel();
            }
            () = tokio::time::sleep_until(renew_at.into()), if renewing.is_none() => {
                renewing = Some(Box::pin(renew(store.clone(), lease.clone())));
            }
            (renewed, copy) = async {
                match renewing.as_mut() {
                    Some(renewal) => renewal.await,
                    None => std::future::pending().await,
                }
            }, if renewing.is_some() => {
                renewing = None;
                match renewed {
                    Ok(true) => {
                        lease = copy;
                        renew_at = Instant::now() + every;
                    }
                    Ok(false) => {
                        tracing::warn!(role = %lease.destination, epoch = lease.epoch, "lease taken over by another node: work dropped");
                        return None;
                    }
                    Err(error) => {
                        tracing::warn!(role = %lease.destination, epoch = lease.epoch, error = %error_chain(&error), "cannot renew the lease; trying again");
                        renew_at = Instant::now() + RENEW_RETRY;
                    }
                }
            }
        }
    }
}

/// One renewal, on a copy of the lease (the copy carries the new deadline).
async fn renew(store: Store, mut lease: Lease) -> (Result<bool, StoreError>, Lease) {
    let renewed = store.renew_destination(&mut lease).await;
    (renewed, lease)
}

//! Which node delivers a destination (issue 14): one owner at a time, through a lease.
//!
//! A node delivers a destination only while it holds its lease: [`Store::claim_destination`]
//! takes it when nobody holds it or the holder's lease expired; the holder renews it well
//! within its duration ([`Store::renew_destination`], e.g. every third of it) and stops
//! sending as soon as [`Lease::is_valid`] is false or a renewal fails; a clean stop gives it
//! back ([`Store::release_destination`]) so another node takes over at once. A node that dies
//! stops renewing: another node takes the destination once the lease expired, at most the
//! lease's duration later (`[cluster] failover_after`), and resumes from the queue.
//!
//! Never two senders: the lease expires on the database's clock, and its holder's own
//! deadline ([`Lease::is_valid`]) counts from before the request that set it, on its monotonic
//! clock, so it ends first. Each owner gets a new `epoch`: a late renewal by an owner that was
//! taken over fails.
//!
//! On SQLite there is one node: every claim succeeds and renewals always hold (no table).

use std::time::{Duration, Instant};

use super::{Store, StoreError};

/// A held destination: deliver only while [`Lease::is_valid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The destination held.
    pub destination: String,
    /// This node's name (`[cluster] node_name`).
    pub node: String,
    /// Counts the owners of the destination; 0 on SQLite.
    pub epoch: i64,
    /// How long each claim or renewal holds.
    pub duration: Duration,
    /// This node's deadline: the lease holds until then unless renewed.
    pub valid_until: Instant,
}

impl Lease {
    /// Whether this node may still send to the destination.
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

/// A destination's owner as recorded (`/status`, the console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationOwner {
    pub destination: String,
    pub node: String,
    pub epoch: i64,
    /// When the lease ends unless renewed (the database's clock).
    pub expires_at: jiff::Timestamp,
    /// Whether the lease still holds now.
    pub live: bool,
}

impl Store {
    /// Takes `destination` for `node` for `duration`, unless another node holds a live lease
    /// on it (then `None`: try again later). On SQLite, always taken.
    pub async fn claim_destination(
        &self,
        destination: &str,
        node: &str,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres
                .claim_destination(destination, node, duration)
                .await;
        }
        Ok(Some(Lease {
            destination: destination.to_owned(),
            node: node.to_owned(),
            epoch: 0,
            duration,
            valid_until: Instant::now() + duration,
        }))
    }

    /// Extends `lease` by its duration; `false` when it was taken over (stop sending: the
    /// lease is no longer valid). An error leaves the lease running out on its own.
    pub async fn renew_destination(&self, lease: &mut Lease) -> Result<bool, StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.renew_destination(lease).await;
        }
        lease.valid_until = Instant::now() + lease.duration;
        Ok(true)
    }

    /// Gives `lease` back so another node can take the destination at once.
    pub async fn release_destination(&self, lease: Lease) -> Result<(), StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.release_destination(lease).await;
        }
        Ok(())
    }

    /// Every recorded owner, by destination; empty on SQLite (one node owns everything).
    pub async fn destination_owners(&self) -> Result<Vec<DestinationOwner>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.destination_owners().await;
        }
        Ok(Vec::new())
    }
}

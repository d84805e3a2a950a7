//! Destination leases on PostgreSQL (see `store::ownership`).

use std::time::{Duration, Instant};

use super::Postgres;
use crate::store::StoreError;
use crate::store::ownership::{DestinationOwner, Lease};

/// The server's clock in unix microseconds: every node compares leases on the same clock.
macro_rules! server_now {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
    };
}

/// Takes the destination when nobody holds it or its lease expired (on the server's clock);
/// the epoch counts owners. Nothing comes back when a live lease is someone else's, or this
/// node's from before a crash: a lease is only ever taken over once expired.
const CLAIM_SQL: &str = concat!(
    "INSERT INTO destination_owners AS o (destination, node, epoch, expires_at, renewed_at)
    VALUES ($1, $2, 1, ",
    server_now!(),
    " + $3, ",
    server_now!(),
    ")
    ON CONFLICT (destination) DO UPDATE
        SET node = excluded.node, epoch = o.epoch + 1, expires_at = excluded.expires_at,
            renewed_at = excluded.renewed_at
        WHERE o.expires_at < excluded.renewed_at
    RETURNING epoch"
);

/// Extends a lease still this owner's (same node and epoch: nobody took it over meanwhile).
const RENEW_SQL: &str = concat!(
    "UPDATE destination_owners SET expires_at = ",
    server_now!(),
    " + $4, renewed_at = ",
    server_now!(),
    " WHERE destination = $1 AND node = $2 AND epoch = $3"
);

/// Ends a lease now, so another node can take the destination at once (a clean stop).
const RELEASE_SQL: &str = "UPDATE destination_owners SET expires_at = 0
    WHERE destination = $1 AND node = $2 AND epoch = $3";

const OWNERS_SQL: &str = concat!(
    "SELECT destination, node, epoch, expires_at, expires_at > ",
    server_now!(),
    " FROM destination_owners ORDER BY destination"
);

impl Postgres {
    /// [`Store::claim_destination`](crate::store::Store::claim_destination).
    pub(in crate::store) async fn claim_destination(
        &self,
        destination: &str,
        node: &str,
        lease: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let destination = destination.to_owned();
        let node = node.to_owned();
        let micros = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        // The local deadline counts from before the request: it ends before the server's.
        let asked = Instant::now();
        self.run(move |inner| async move {
            const OPERATION: &str = "claim_destination";
            let connection = inner.connection(OPERATION).await?;
            let row = connection
                .query_opt(CLAIM_SQL, &[&destination, &node, &micros])
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(row.map(|row| Lease {
                destination,
                node,
                epoch: row.get(0),
                duration: lease,
                valid_until: asked + lease,
            }))
        })
        .await
    }

    /// [`Store::renew_destination`](crate::store::Store::renew_destination).
    pub(in crate::store) async fn renew_destination(
        &self,
        lease: &mut Lease,
    ) -> Result<bool, StoreError> {
        let (destination, node, epoch) =
            (lease.destination.clone(), lease.node.clone(), lease.epoch);
        let micros = i64::try_from(lease.duration.as_micros()).unwrap_or(i64::MAX);
        let asked = Instant::now();
        let renewed = self
            .run(move |inner| async move {
                const OPERATION: &str = "renew_destination";
                let connection = inner.connection(OPERATION).await?;
                connection
                    .execute(RENEW_SQL, &[&destination, &node, &epoch, &micros])
                    .await
                    .map_err(inner.failed(OPERATION))
            })
            .await?;
        if renewed > 0 {
            lease.valid_until = asked + lease.duration;
            Ok(true)
        } else {
            lease.valid_until = asked;
            Ok(false)
        }
    }

    /// [`Store::release_destination`](crate::store::Store::release_destination).
    pub(in crate::store) async fn release_destination(
        &self,
        lease: Lease,
    ) -> Result<(), StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "release_destination";
            let connection = inner.connection(OPERATION).await?;
            connection
                .execute(
                    RELEASE_SQL,
                    &[&lease.destination, &lease.node, &lease.epoch],
                )
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(())
        })
        .await
    }

    /// [`Store::destination_owners`](crate::store::Store::destination_owners).
    pub(in crate::store) async fn destination_owners(
        &self,
    ) -> Result<Vec<DestinationOwner>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "destination_owners";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(OWNERS_SQL, &[])
                .await
                .map_err(inner.failed(OPERATION))?;
            rows.iter()
                .map(|row| {
                    Ok(DestinationOwner {
                        destination: row.get(0),
                        node: row.get(1),
                        epoch: row.get(2),
                        expires_at: inner.timestamp(OPERATION, row.get(3))?,
                        live: row.get(4),
                    })
                })
                .collect()
        })
        .await
    }
}

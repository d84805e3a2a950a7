//! Held bundles and their release on PostgreSQL (as SQLite's `store::hold`, same rules).
//!
//! # Delivered once, with several nodes
//!
//! [`Postgres::deliver`] settles a bundle (or a document) in ONE transaction: the hold
//! released, the journal row marked `processed`, the messages enqueued through the queue's own
//! path (`queue::insert`, its per-destination lock keeps ids committing in order), the
//! document's tracking recorded; answered after `COMMIT`. Its first statements are the guards,
//! each an `UPDATE … WHERE` the state it expects (hold not released, journal row `accepted`):
//! an `UPDATE` locks the row as `SELECT … FOR UPDATE` would, so a second node settling the
//! same bundle waits for the first one's commit, then reads the row again, finds the guard
//! false and enqueues nothing ([`DeliverOutcome::AlreadyDone`]).
//!
//! Why the row lock at delivery rather than `FOR UPDATE SKIP LOCKED` in [`Postgres::due_holds`]:
//! between the two the releaser reads the bundle, asks the census and maps it, outside the
//! store. A claim made by `due_holds` would end with its read transaction, long before the
//! delivery, so it would protect nothing; keeping that transaction open over the mapping would
//! pin a pooled connection per bundle and hold row locks across code that may fail. The lock
//! taken by the delivery's own guard is held exactly as long as needed, and a race costs the
//! loser one mapping, never a second message. The lead's lease on the releaser makes races
//! rare; this makes them harmless.
//!
//! [`Postgres::hold`] inserts the hold from the journal row read `FOR SHARE` and still
//! `accepted`: a delivery of the same row running meanwhile is waited for, so a bundle just
//! delivered is never held afterwards.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{Inner, Postgres, limit};
use crate::store::hold::{Delivery, NewHold};
use crate::store::{
    AuditEntry, DeliverOutcome, HeldBundle, HoldOverview, JournalSummary, StoreError, UnsettledPush,
};

/// The hold, if the journal row is still `accepted` (locked `FOR SHARE` until the commit).
const HOLD_SQL: &str = "INSERT INTO push_holds (journal_id, partner_id, held_at, release_at)
    SELECT id, $2, $3, $4 FROM journal WHERE id = $1 AND status = 'accepted' FOR SHARE
    ON CONFLICT (journal_id) DO NOTHING";

/// Inserts `hold` ([`HOLD_SQL`]) on `client`, a connection or a transaction; `true` when the
/// row was still `accepted` and had no hold, so one was recorded.
pub(super) async fn insert(
    client: &impl GenericClient,
    hold: &NewHold,
) -> Result<bool, tokio_postgres::Error> {
    let inserted = client
        .execute(
            HOLD_SQL,
            &[
                &hold.journal_id,
                &hold.partner_id,
                &hold.held_at,
                &hold.release_at,
            ],
        )
        .await?;
    Ok(inserted > 0)
}

const RELEASE_SQL: &str = "UPDATE push_holds SET released_at = $2, released_reason = $3
    WHERE journal_id = $1 AND released_at IS NULL";

const PROCESSED_SQL: &str =
    "UPDATE journal SET status = 'processed' WHERE id = $1 AND status = 'accepted'";

/// A still-accepted row becomes rejected with its reason (`kept` follows the status).
const REJECT_SQL: &str = "UPDATE journal SET status = 'rejected', kept = false, reason = $2
    WHERE id = $1 AND status = 'accepted'";

/// A held bundle due now (the console's "release now"); the releaser maps it next round.
const RELEASE_NOW_SQL: &str = "UPDATE push_holds SET release_at = least(release_at, $2)
    WHERE journal_id = $1 AND released_at IS NULL";

/// Columns read by [`held`], in order.
macro_rules! held_columns {
    () => {
        "SELECT journal_id, partner_id, held_at, release_at FROM push_holds \
         WHERE released_at IS NULL"
    };
}

const HELD_SQL: &str = concat!(held_columns!(), " ORDER BY held_at, journal_id LIMIT $1");
const HELD_ONE_SQL: &str = concat!(held_columns!(), " AND journal_id = $1");
/// Held bundles to release now: due, or whose partner id the census knows.
const DUE_SQL: &str = concat!(
    held_columns!(),
    " AND (release_at <= $1 OR EXISTS (SELECT 1 FROM census_patients p \
     WHERE p.ipp = push_holds.partner_id)) ORDER BY held_at, journal_id"
);
const NEXT_RELEASE_SQL: &str = "SELECT min(release_at) FROM push_holds WHERE released_at IS NULL";
const OVERVIEW_SQL: &str =
    "SELECT count(*), min(held_at) FROM push_holds WHERE released_at IS NULL";

/// The condition of an unsettled push (SQLite's `read::unsettled_push`): of channel `$1`,
/// still `accepted`, not held.
macro_rules! unsettled_push {
    () => {
        "channel = $1 AND status = 'accepted' AND NOT EXISTS (SELECT 1 FROM push_holds h \
         WHERE h.journal_id = journal.id AND h.released_at IS NULL)"
    };
}

/// Unsettled pushes after journal id `$2`, by id (the `journal_accepted` index: accepted rows
/// only, whatever the journal's size).
const UNSETTLED_SQL: &str = concat!(
    "SELECT id, received_at, raw FROM journal WHERE id > $2 AND ",
    unsettled_push!(),
    " ORDER BY id LIMIT $3"
);

const UNFINISHED_SQL: &str = concat!(
    "SELECT id, received_at, channel, message_type, control_id, status, reason, peer, sender, \
     note FROM journal WHERE kept AND received_at < $2 AND ",
    unsettled_push!(),
    " ORDER BY received_at, id LIMIT $3"
);

const DOCUMENT_INSERT_SQL: &str =
    "INSERT INTO documents (journal_id, transaction_id, accepted_at) VALUES ($1, $2, $3)";
const DOCUMENT_MESSAGE_INSERT_SQL: &str =
    "INSERT INTO document_messages (journal_id, outbound_id, destination) VALUES ($1, $2, $3)";

impl Postgres {
    /// [`Store::unsettled_pushes`](crate::store::Store::unsettled_pushes).
    ///
    /// The second value is `after` itself, never the newest journal id as on SQLite: ids are
    /// taken before commit here, so a push still committing may hold an id below the newest
    /// one, and a cursor moved past it would never see it. Not moving costs nothing: the scan
    /// reads accepted rows only (an index of its own), held ones and a few in flight.
    pub(in crate::store) async fn unsettled_pushes(
        &self,
        channel: String,
        after: i64,
        limit_rows: usize,
    ) -> Result<(Vec<UnsettledPush>, i64), StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "unsettled_pushes";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(UNSETTLED_SQL, &[&channel, &after, &limit(limit_rows)])
                .await
                .map_err(inner.failed(OPERATION))?;
            let pushes = rows
                .iter()
                .map(|row| {
                    Ok(UnsettledPush {
                        journal_id: row.get(0),
                        received_at: inner.timestamp(OPERATION, row.get(1))?,
                        raw: row.get(2),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok((pushes, after))
        })
        .await
    }

    /// [`Store::unfinished_pushes`](crate::store::Store::unfinished_pushes) (blocking).
    pub(in crate::store) fn unfinished_pushes(
        &self,
        channel: &str,
        before: jiff::Timestamp,
        limit_rows: usize,
    ) -> Result<Vec<JournalSummary>, StoreError> {
        let channel = channel.to_owned();
        let before = before.as_microsecond();
        self.block(move |inner| async move {
            const OPERATION: &str = "unfinished_pushes";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(UNFINISHED_SQL, &[&channel, &before, &limit(limit_rows)])
                .await
                .map_err(inner.failed(OPERATION))?;
            rows.iter()
                .map(|row| super::journal::summary(&inner, OPERATION, row))
                .collect()
        })
    }

    /// [`Store::reject_accepted`](crate::store::Store::reject_accepted): committed when it
    /// returns.
    pub(in crate::store) async fn reject_accepted(
        &self,
        journal_id: i64,
        reason: String,
    ) -> Result<bool, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "reject_accepted";
            let connection = inner.connection(OPERATION).await?;
            let changed = connection
                .execute(REJECT_SQL, &[&journal_id, &reason])
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(changed > 0)
        })
        .await
    }

    /// [`Store::hold`](crate::store::Store::hold): committed when it returns; `true` when a
    /// hold was recorded now.
    pub(in crate::store) async fn hold(&self, hold: NewHold) -> Result<bool, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "hold";
            let connection = inner.connection(OPERATION).await?;
            insert(&connection, &hold)
                .await
                .map_err(inner.failed(OPERATION))
        })
        .await
    }

    /// [`Store::deliver_bundle`](crate::store::Store::deliver_bundle) and
    /// [`Store::deliver_document`](crate::store::Store::deliver_document): one transaction,
    /// answered after its commit (see the module docs).
    pub(in crate::store) async fn deliver(
        &self,
        delivery: Delivery,
    ) -> Result<DeliverOutcome, StoreError> {
        let operation = if delivery.document.is_some() {
            "deliver_document"
        } else {
            "deliver_bundle"
        };
        self.run(move |inner| async move {
            let failed = inner.failed(operation);
            let mut connection = inner.connection(operation).await?;
            let transaction = connection.transaction().await.map_err(&failed)?;
            if let Some((reason, at)) = delivery.release {
                let released = transaction
                    .execute(RELEASE_SQL, &[&delivery.journal_id, &at, &reason.as_str()])
                    .await
                    .map_err(&failed)?;
                if released == 0 {
                    // Released by someone else: nothing written (the rollback is the drop).
                    return Ok(DeliverOutcome::AlreadyDone);
                }
            }
            let processed = transaction
                .execute(PROCESSED_SQL, &[&delivery.journal_id])
                .await
                .map_err(&failed)?;
            if processed == 0 {
                // As on SQLite: a hold left on a row processed meanwhile is released, and
                // nothing is enqueued.
                transaction.commit().await.map_err(&failed)?;
                return Ok(DeliverOutcome::AlreadyDone);
            }
            let rows: Vec<_> = delivery.items.iter().map(|item| item.row()).collect();
            let ids = super::queue::insert(&transaction, &rows)
                .await
                .map_err(&failed)?;
            if let Some((transaction_id, accepted_at)) = &delivery.document {
                transaction
                    .execute(
                        DOCUMENT_INSERT_SQL,
                        &[&delivery.journal_id, transaction_id, accepted_at],
                    )
                    .await
                    .map_err(&failed)?;
                let insert = transaction
                    .prepare_cached(DOCUMENT_MESSAGE_INSERT_SQL)
                    .await
                    .map_err(&failed)?;
                for (outbound_id, destination) in delivery.tracked(&ids) {
                    transaction
                        .execute(&insert, &[&delivery.journal_id, &outbound_id, &destination])
                        .await
                        .map_err(&failed)?;
                }
            }
            transaction.commit().await.map_err(&failed)?;
            inner.wake(super::queue::destinations(
                delivery.items.iter().map(|item| item.destination()),
            ));
            Ok(DeliverOutcome::Queued { ids })
        })
        .await
    }

    /// [`Store::held_bundles_async`](crate::store::Store::held_bundles_async).
    pub(in crate::store) async fn held_bundles(
        &self,
        limit_rows: usize,
    ) -> Result<Vec<HeldBundle>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "held_bundles";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(HELD_SQL, &[&limit(limit_rows)])
                .await
                .map_err(inner.failed(OPERATION))?;
            held(&inner, OPERATION, &rows)
        })
        .await
    }

    /// [`Store::held_bundles`](crate::store::Store::held_bundles) (blocking).
    pub(in crate::store) fn block_held_bundles(
        &self,
        limit_rows: usize,
    ) -> Result<Vec<HeldBundle>, StoreError> {
        futures::executor::block_on(self.held_bundles(limit_rows))
    }

    /// [`Store::held_bundle`](crate::store::Store::held_bundle).
    pub(in crate::store) async fn held_bundle(
        &self,
        journal_id: i64,
    ) -> Result<Option<HeldBundle>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "held_bundle";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(HELD_ONE_SQL, &[&journal_id])
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(held(&inner, OPERATION, &rows)?.pop())
        })
        .await
    }

    /// [`Store::due_holds`](crate::store::Store::due_holds): the due holds and the earliest
    /// deadline, from one snapshot.
    pub(in crate::store) async fn due_holds(
        &self,
        now: jiff::Timestamp,
    ) -> Result<(Vec<HeldBundle>, Option<jiff::Timestamp>), StoreError> {
        let now = now.as_microsecond();
        self.run(move |inner| async move {
            const OPERATION: &str = "due_holds";
            let failed = inner.failed(OPERATION);
            let mut connection = inner.connection(OPERATION).await?;
            let transaction = super::snapshot(&mut connection).await.map_err(&failed)?;
            let rows = transaction.query(DUE_SQL, &[&now]).await.map_err(&failed)?;
            let next: Option<i64> = transaction
                .query_one(NEXT_RELEASE_SQL, &[])
                .await
                .map_err(&failed)?
                .get(0);
            transaction.commit().await.map_err(&failed)?;
            let due = held(&inner, OPERATION, &rows)?;
            let next = next
                .map(|micros| inner.timestamp(OPERATION, micros))
                .transpose()?;
            Ok((due, next))
        })
        .await
    }

    /// [`Store::hold_overview_async`](crate::store::Store::hold_overview_async).
    pub(in crate::store) async fn hold_overview(&self) -> Result<HoldOverview, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "hold_overview";
            let connection = inner.connection(OPERATION).await?;
            let row = connection
                .query_one(OVERVIEW_SQL, &[])
                .await
                .map_err(inner.failed(OPERATION))?;
            let held: i64 = row.get(0);
            let oldest: Option<i64> = row.get(1);
            Ok(HoldOverview {
                held: u64::try_from(held)
                    .map_err(|_| inner.corrupt(OPERATION, format!("count {held} out of range")))?,
                oldest_held_at: oldest
                    .map(|micros| inner.timestamp(OPERATION, micros))
                    .transpose()?,
            })
        })
        .await
    }

    /// [`Store::hold_overview`](crate::store::Store::hold_overview) (blocking).
    pub(in crate::store) fn block_hold_overview(&self) -> Result<HoldOverview, StoreError> {
        futures::executor::block_on(self.hold_overview())
    }

    /// [`Store::release_hold_now`](crate::store::Store::release_hold_now): the hold made due
    /// and `entry` recorded in one transaction; `false` if it was not held.
    pub(in crate::store) async fn release_hold_now(
        &self,
        journal_id: i64,
        entry: AuditEntry,
        at: i64,
    ) -> Result<bool, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "release_hold_now";
            let failed = inner.failed(OPERATION);
            let mut connection = inner.connection(OPERATION).await?;
            let transaction = connection.transaction().await.map_err(&failed)?;
            transaction
                .execute(
                    super::audit::AUDIT_SQL,
                    &[
                        &at,
                        &entry.user,
                        &entry.action,
                        &entry.target,
                        &entry.reason,
                    ],
                )
                .await
                .map_err(&failed)?;
            let changed = transaction
                .execute(RELEASE_NOW_SQL, &[&journal_id, &at])
                .await
                .map_err(&failed)?;
            transaction.commit().await.map_err(&failed)?;
            if changed > 0 {
                inner.wake([super::Wakeup::Releaser]);
            }
            Ok(changed > 0)
        })
        .await
    }
}

fn held(
    inner: &Inner,
    operation: &'static str,
    rows: &[Row],
) -> Result<Vec<HeldBundle>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(HeldBundle {
                journal_id: row.get(0),
                partner_id: row.get(1),
                held_at: inner.timestamp(operation, row.get(2))?,
                release_at: inner.timestamp(operation, row.get(3))?,
            })
        })
        .collect()
}

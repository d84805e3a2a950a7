//! The outbound queue on PostgreSQL (same statuses and rules as SQLite's `store::queue`).
//!
//! Order per destination follows the row id. An enqueue takes a transaction advisory lock per
//! destination (in name order, so two enqueues never wait on each other in a cycle) before it
//! inserts: a destination's ids are taken and committed one transaction at a time, so a
//! worker reading ahead by id never skips a row committed late.

use bytes::Bytes;
use tokio_postgres::Row;

use super::{Inner, Postgres, Wakeup, limit};
use crate::store::queue::{READ_AHEAD_BYTES, now_micros};
use crate::store::{
    DeadLetter, DestinationDepth, OutboundItem, OutboundMessage, OutboundStatus, QueueHead,
    StoreError,
};

const ENQUEUE_SQL: &str = "INSERT INTO outbound (destination, enqueued_at, control_id, payload,
        source, status, attempts, next_attempt_at)
    VALUES ($1, $2, $3, $4, $5, 'pending', 0, $2) RETURNING id";

/// Serializes the enqueues of one destination until the commit.
const DESTINATION_LOCK_SQL: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('ordobridge.outbound.' || $1, 0))";

const DELIVERED_SQL: &str = "UPDATE outbound
    SET status = 'delivered', attempts = attempts + 1, delivered_at = $2, ack = $3
    WHERE id = $1 AND status = 'pending'";

const RETRY_SQL: &str = "UPDATE outbound
    SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
    WHERE id = $1 AND status = 'pending'";

const DEAD_SQL: &str = "UPDATE outbound
    SET status = 'dead', attempts = attempts + 1, last_error = $2, dead_at = $3
    WHERE id = $1 AND status = 'pending'";

const REPLAY_SQL: &str = "UPDATE outbound
    SET status = 'pending', attempts = 0, next_attempt_at = $2, dead_at = NULL
    WHERE id = ANY($1) AND status = 'dead' RETURNING destination";

macro_rules! message_columns {
    () => {
        "id, destination, enqueued_at, control_id, payload, source, attempts, next_attempt_at, \
         last_error"
    };
}

const NEXT_PENDING_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM outbound WHERE destination = $1 AND status = 'pending' ORDER BY id LIMIT 1"
);

const PENDING_AFTER_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM outbound WHERE destination = $1 AND status = 'pending' AND id > $2 ORDER BY id LIMIT $3"
);

const MESSAGE_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    ", status FROM outbound WHERE id = $1"
);

const OVERVIEW_SQL: &str = "SELECT destination,
        count(*) FILTER (WHERE status = 'pending'),
        count(*) FILTER (WHERE status = 'dead'),
        min(enqueued_at) FILTER (WHERE status = 'pending')
    FROM outbound WHERE status IN ('pending', 'dead')
    GROUP BY destination ORDER BY destination";

const HEADS_SQL: &str =
    "SELECT o.destination, o.attempts, coalesce(o.last_error, ''), o.enqueued_at
    FROM (SELECT min(id) AS id FROM outbound WHERE status = 'pending' GROUP BY destination) h
    JOIN outbound o ON o.id = h.id ORDER BY o.destination";

const DEAD_SQL_SELECT: &str = "SELECT id, destination, enqueued_at, control_id, source, attempts,
        coalesce(last_error, ''), dead_at FROM outbound
    WHERE status = 'dead' AND ($2::text IS NULL OR destination = $2) ORDER BY id LIMIT $1";

/// The wakeups of the destinations named, each once.
pub(super) fn destinations<'a>(names: impl Iterator<Item = &'a str>) -> Vec<Wakeup> {
    let names: std::collections::BTreeSet<&str> = names.collect();
    names
        .into_iter()
        .map(|name| Wakeup::Destination(name.to_owned()))
        .collect()
}

/// A status change, as SQLite's `queue::Change`.
enum Change {
    Delivered { id: i64, ack: Bytes, at: i64 },
    Retry { id: i64, error: String, next: i64 },
    Dead { id: i64, reason: String, at: i64 },
    Replay { ids: Vec<i64>, at: i64 },
}

impl Postgres {
    /// [`Store::enqueue`](crate::store::Store::enqueue): committed before the ids return.
    pub(in crate::store) async fn enqueue(
        &self,
        items: Vec<OutboundItem>,
    ) -> Result<Vec<i64>, StoreError> {
        let enqueued_at = now_micros();
        self.run(move |inner| async move {
            const OPERATION: &str = "enqueue";
            let failed = inner.failed(OPERATION);
            let mut connection = inner.connection(OPERATION).await?;
            let transaction = connection.transaction().await.map_err(&failed)?;
            let rows: Vec<(&OutboundItem, i64)> =
                items.iter().map(|item| (item, enqueued_at)).collect();
            let ids = insert(&transaction, &rows).await.map_err(&failed)?;
            transaction.commit().await.map_err(&failed)?;
            inner.wake(destinations(
                items.iter().map(|item| item.destination.as_str()),
            ));
            Ok(ids)
        })
        .await
    }

    /// [`Store::mark_delivered`](crate::store::Store::mark_delivered).
    pub(in crate::store) async fn mark_delivered(
        &self,
        id: i64,
        ack: Bytes,
    ) -> Result<bool, StoreError> {
        let at = now_micros();
        self.change("mark_delivered", Change::Delivered { id, ack, at })
            .await
            .map(|n| n > 0)
    }

    /// [`Store::mark_retry`](crate::store::Store::mark_retry).
    pub(in crate::store) async fn mark_retry(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        let change = Change::Retry {
            id,
            error: error.to_owned(),
            next: next_attempt_at.as_microsecond(),
        };
        self.change("mark_retry", change).await.map(|n| n > 0)
    }

    /// [`Store::mark_dead`](crate::store::Store::mark_dead).
    pub(in crate::store) async fn mark_dead(
        &self,
        id: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let change = Change::Dead {
            id,
            reason: reason.to_owned(),
            at: now_micros(),
        };
        self.change("mark_dead", change).await.map(|n| n > 0)
    }

    /// [`Store::replay`](crate::store::Store::replay).
    pub(in crate::store) async fn replay(&self, ids: Vec<i64>) -> Result<usize, StoreError> {
        self.change(
            "replay",
            Change::Replay {
                ids,
                at: now_micros(),
            },
        )
        .await
    }

    /// One status change in its own statement (its own transaction, committed when it
    /// returns); the rows changed.
    async fn change(&self, operation: &'static str, change: Change) -> Result<usize, StoreError> {
        self.run(move |inner| async move {
            let connection = inner.connection(operation).await?;
            let changed = match &change {
                Change::Delivered { id, ack, at } => {
                    let ack = &ack[..];
                    connection.execute(DELIVERED_SQL, &[id, at, &ack]).await
                }
                Change::Retry { id, error, next } => {
                    connection.execute(RETRY_SQL, &[id, error, next]).await
                }
                Change::Dead { id, reason, at } => {
                    connection.execute(DEAD_SQL, &[id, reason, at]).await
                }
                Change::Replay { ids, at } => {
                    let rows = connection
                        .query(REPLAY_SQL, &[ids, at])
                        .await
                        .map_err(inner.failed(operation))?;
                    inner.wake(destinations(rows.iter().map(|row| row.get::<_, &str>(0))));
                    Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
                }
            }
            .map_err(inner.failed(operation))?;
            Ok(usize::try_from(changed).unwrap_or(usize::MAX))
        })
        .await
    }

    /// [`Store::next_pending`](crate::store::Store::next_pending).
    pub(in crate::store) async fn next_pending(
        &self,
        destination: &str,
    ) -> Result<Option<OutboundMessage>, StoreError> {
        let destination = destination.to_owned();
        self.run(move |inner| async move {
            const OPERATION: &str = "next_pending";
            let connection = inner.connection(OPERATION).await?;
            let row = connection
                .query_opt(NEXT_PENDING_SQL, &[&destination])
                .await
                .map_err(inner.failed(OPERATION))?;
            row.map(|row| message(&inner, OPERATION, &row)).transpose()
        })
        .await
    }

    /// [`Store::pending_after`](crate::store::Store::pending_after): stops once
    /// `READ_AHEAD_BYTES` of payloads are read (past the first row).
    pub(in crate::store) async fn pending_after(
        &self,
        destination: &str,
        after: i64,
        limit_rows: usize,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        let destination = destination.to_owned();
        let wanted = i64::try_from(limit_rows).unwrap_or(i64::MAX);
        self.run(move |inner| async move {
            const OPERATION: &str = "pending_after";
            let connection = inner.connection(OPERATION).await?;
            // Rows come as the server sends them: stopping early leaves the rest unread.
            let rows = connection
                .query_raw(
                    PENDING_AFTER_SQL,
                    [
                        &destination as &(dyn tokio_postgres::types::ToSql + Sync),
                        &after,
                        &wanted,
                    ],
                )
                .await
                .map_err(inner.failed(OPERATION))?;
            let mut rows = std::pin::pin!(rows);
            let mut out = Vec::new();
            let mut bytes = 0usize;
            while bytes < READ_AHEAD_BYTES {
                use futures::StreamExt as _;
                let Some(row) = rows.next().await else {
                    break;
                };
                let row = row.map_err(inner.failed(OPERATION))?;
                let message = message(&inner, OPERATION, &row)?;
                bytes = bytes.saturating_add(message.payload.len());
                out.push(message);
            }
            Ok(out)
        })
        .await
    }

    /// [`Store::outbound_message`](crate::store::Store::outbound_message).
    pub(in crate::store) async fn outbound_message(
        &self,
        id: i64,
    ) -> Result<Option<(OutboundMessage, OutboundStatus)>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "outbound_message";
            let connection = inner.connection(OPERATION).await?;
            let Some(row) = connection
                .query_opt(MESSAGE_SQL, &[&id])
                .await
                .map_err(inner.failed(OPERATION))?
            else {
                return Ok(None);
            };
            let text: &str = row.get(9);
            let status = OutboundStatus::from_bytes(text.as_bytes())
                .ok_or_else(|| inner.corrupt(OPERATION, format!("outbound status `{text}`")))?;
            Ok(Some((message(&inner, OPERATION, &row)?, status)))
        })
        .await
    }

    /// [`Store::queue_overview`](crate::store::Store::queue_overview).
    pub(in crate::store) async fn queue_overview(
        &self,
    ) -> Result<Vec<DestinationDepth>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "queue_overview";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(OVERVIEW_SQL, &[])
                .await
                .map_err(inner.failed(OPERATION))?;
            rows.iter()
                .map(|row| {
                    let oldest: Option<i64> = row.get(3);
                    Ok(DestinationDepth {
                        destination: row.get(0),
                        pending: count(&inner, OPERATION, row.get(1))?,
                        dead: count(&inner, OPERATION, row.get(2))?,
                        oldest_pending_at: oldest
                            .map(|micros| inner.timestamp(OPERATION, micros))
                            .transpose()?,
                    })
                })
                .collect()
        })
        .await
    }

    /// [`Store::queue_heads_async`](crate::store::Store::queue_heads_async).
    pub(in crate::store) async fn queue_heads(&self) -> Result<Vec<QueueHead>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "queue_heads";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(HEADS_SQL, &[])
                .await
                .map_err(inner.failed(OPERATION))?;
            rows.iter()
                .map(|row| {
                    Ok(QueueHead {
                        destination: row.get(0),
                        attempts: count(&inner, OPERATION, i64::from(row.get::<_, i32>(1)))?,
                        last_error: row.get(2),
                        enqueued_at: inner.timestamp(OPERATION, row.get(3))?,
                    })
                })
                .collect()
        })
        .await
    }

    /// [`Store::dead_letters`](crate::store::Store::dead_letters).
    pub(in crate::store) async fn dead_letters(
        &self,
        destination: Option<String>,
        limit_rows: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "dead_letters";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(DEAD_SQL_SELECT, &[&limit(limit_rows), &destination])
                .await
                .map_err(inner.failed(OPERATION))?;
            rows.iter()
                .map(|row| {
                    let dead_at: Option<i64> = row.get(7);
                    Ok(DeadLetter {
                        id: row.get(0),
                        destination: row.get(1),
                        enqueued_at: inner.timestamp(OPERATION, row.get(2))?,
                        control_id: row.get(3),
                        source: row.get(4),
                        attempts: count(&inner, OPERATION, i64::from(row.get::<_, i32>(5)))?,
                        reason: row.get(6),
                        dead_at: dead_at
                            .map(|micros| inner.timestamp(OPERATION, micros))
                            .transpose()?,
                    })
                })
                .collect()
        })
        .await
    }
}

/// Enqueues `items` (each with its enqueue time, unix µs) in `transaction`: first the lock of
/// each destination (in name order), then the inserts; the new ids in item order. The caller
/// commits: every enqueue, alone ([`Postgres::enqueue`]) or with the journal row and hold it
/// settles (`hold::deliver`), goes through here, so a destination's ids commit in order.
pub(super) async fn insert(
    transaction: &deadpool_postgres::Transaction<'_>,
    items: &[(&OutboundItem, i64)],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let mut destinations: Vec<&str> = items
        .iter()
        .map(|(item, _)| item.destination.as_str())
        .collect();
    destinations.sort_unstable();
    destinations.dedup();
    for destination in destinations {
        transaction
            .execute(DESTINATION_LOCK_SQL, &[&destination])
            .await?;
    }
    let insert = transaction.prepare_cached(ENQUEUE_SQL).await?;
    let mut ids = Vec::with_capacity(items.len());
    for (item, enqueued_at) in items {
        let payload = &item.payload[..];
        let row = transaction
            .query_one(
                &insert,
                &[
                    &item.destination,
                    enqueued_at,
                    &item.control_id,
                    &payload,
                    &item.source,
                ],
            )
            .await?;
        ids.push(row.get(0));
    }
    Ok(ids)
}

fn message(
    inner: &Inner,
    operation: &'static str,
    row: &Row,
) -> Result<OutboundMessage, StoreError> {
    let payload: Vec<u8> = row.get(4);
    Ok(OutboundMessage {
        id: row.get(0),
        destination: row.get(1),
        enqueued_at: inner.timestamp(operation, row.get(2))?,
        control_id: row.get(3),
        payload: Bytes::from(payload),
        source: row.get(5),
        attempts: count(inner, operation, i64::from(row.get::<_, i32>(6)))?,
        next_attempt_at: inner.timestamp(operation, row.get(7))?,
        last_error: row.get(8),
    })
}

/// A non-negative count into any unsigned type; out of range is a value error.
fn count<T: TryFrom<i64>>(
    inner: &Inner,
    operation: &'static str,
    value: i64,
) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| inner.corrupt(operation, format!("count {value} out of range")))
}

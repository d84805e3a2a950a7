//! The durable outbound queue: messages waiting to be delivered to a destination, in order.
//!
//! # What it guarantees
//!
//! - [`Store::enqueue`] resolves only after the rows are committed (through the writer thread,
//!   group commit like the journal): once it returns, a crash loses nothing.
//! - Each row keeps its control id (MSH-10 of the payload) and its bytes across retries, so a
//!   receiver that sees a message twice can tell it is a duplicate (at-least-once delivery).
//! - Order is per destination and follows the row id (the enqueue order):
//!   [`Store::next_pending`] always returns the oldest pending row of a destination, even while
//!   it waits for its next attempt, so nothing overtakes a message in backoff.
//! - A message ends `delivered` (with the receiver's ACK bytes) or `dead` (with the reason);
//!   a dead letter no longer blocks its destination and can be sent again with
//!   [`Store::replay`].
//!
//! # Statuses
//!
//! `pending` → `delivered` (ACK AA/CA), `pending` → `dead` (AR/CR, or the retry limit),
//! `dead` → `pending` (replay). Updates only apply to rows in the expected status, so a late
//! update after a replay or a second worker by mistake cannot resurrect or bury a row twice.
//!
//! Only one worker may deliver a destination at a time (the daemon runs one task per
//! destination); the queue itself does not lock rows.

use bytes::Bytes;
use rusqlite::types::{Type, ValueRef};
use rusqlite::{Connection, Row, Transaction};
use tokio::sync::oneshot;

use super::writer::Request;
use super::{Store, StoreError};

/// Status of an outbound row, as stored in its `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboundStatus {
    /// Waiting for delivery (possibly in backoff until `next_attempt_at`).
    Pending,
    /// Acknowledged AA/CA by the receiver.
    Delivered,
    /// Refused (AR/CR) or given up after the retry limit; waits for an operator.
    Dead,
}

impl OutboundStatus {
    /// The text stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    /// Reads the `status` column; `None` for a value this build does not know.
    pub fn from_bytes(text: &[u8]) -> Option<Self> {
        match text {
            b"pending" => Some(Self::Pending),
            b"delivered" => Some(Self::Delivered),
            b"dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

impl std::fmt::Display for OutboundStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message to deliver, as the producer (mapping, send-to-ehr) hands it to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundItem {
    /// Configured destination name; one delivery worker per destination.
    pub destination: String,
    /// MSH-10 of `payload`: checked against MSA-2 of the ACK and kept across retries so the
    /// receiver can de-duplicate.
    pub control_id: String,
    /// The bytes to send, exactly (never rebuilt between attempts).
    pub payload: Bytes,
    /// Where it came from (journal id, bundle id …), for the operator.
    pub source: String,
}

/// One pending row with its bytes: what a delivery worker sends next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Row id; also the order within the destination.
    pub id: i64,
    /// Destination name.
    pub destination: String,
    /// When it was enqueued.
    pub enqueued_at: jiff::Timestamp,
    /// MSH-10 of the payload.
    pub control_id: String,
    /// The bytes to send.
    pub payload: Bytes,
    /// Where it came from.
    pub source: String,
    /// Attempts so far that reached the receiver (or may have).
    pub attempts: u32,
    /// Not to be sent before this instant (backoff after a failed attempt).
    pub next_attempt_at: jiff::Timestamp,
    /// Why the last attempt failed, if one did.
    pub last_error: Option<String>,
}

/// Depth of one destination's queue: what `ordobridge queue` and the metrics show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationDepth {
    /// Destination name.
    pub destination: String,
    /// Rows waiting for delivery.
    pub pending: u64,
    /// Dead letters waiting for an operator.
    pub dead: u64,
    /// Enqueue time of the oldest pending row: how far behind the destination is.
    pub oldest_pending_at: Option<jiff::Timestamp>,
}

/// The head of a destination's queue (its oldest pending message): what the worker is trying
/// to deliver now, and how that goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueHead {
    /// Destination name.
    pub destination: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed (empty before the first failure).
    pub last_error: String,
    /// When it was enqueued.
    pub enqueued_at: jiff::Timestamp,
}

/// One dead letter without its bytes: what `ordobridge replay` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Row id, to pass to [`Store::replay`].
    pub id: i64,
    /// Destination name.
    pub destination: String,
    /// When it was enqueued.
    pub enqueued_at: jiff::Timestamp,
    /// MSH-10 of the payload.
    pub control_id: String,
    /// Where it came from.
    pub source: String,
    /// Attempts made before it died.
    pub attempts: u32,
    /// Why it died (the receiver's refusal or the last error).
    pub reason: String,
    /// When it died.
    pub dead_at: Option<jiff::Timestamp>,
}

/// An item with its enqueue time taken on the caller's task.
#[derive(Debug)]
pub(super) struct PreparedItem {
    item: OutboundItem,
    /// Unix microseconds; also the first `next_attempt_at`.
    enqueued_at: i64,
}

impl PreparedItem {
    /// The destination it is queued for.
    pub(super) fn destination(&self) -> &str {
        &self.item.destination
    }

    /// The item and its enqueue time (unix µs), as the PostgreSQL backend inserts them.
    pub(super) fn row(&self) -> (&OutboundItem, i64) {
        (&self.item, self.enqueued_at)
    }
}

/// A status change of outbound rows, run by the writer thread.
#[derive(Debug)]
pub(super) enum Change {
    /// `pending` → `delivered`, with the ACK bytes.
    Delivered { id: i64, ack: Bytes, at: i64 },
    /// Stays `pending`: one more attempt, the error, the time of the next attempt.
    Retry { id: i64, error: String, next: i64 },
    /// `pending` → `dead`, with the reason.
    Dead { id: i64, reason: String, at: i64 },
    /// `dead` → `pending`, attempts reset, due now.
    Replay { ids: Vec<i64>, at: i64 },
}

const ENQUEUE_SQL: &str = "INSERT INTO outbound (destination, enqueued_at, control_id, payload,
        source, status, attempts, next_attempt_at)
    VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?2)";

const DELIVERED_SQL: &str = "UPDATE outbound
    SET status = 'delivered', attempts = attempts + 1, delivered_at = ?2, ack = ?3
    WHERE id = ?1 AND status = 'pending'";

const RETRY_SQL: &str = "UPDATE outbound
    SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3
    WHERE id = ?1 AND status = 'pending'";

const DEAD_SQL: &str = "UPDATE outbound
    SET status = 'dead', attempts = attempts + 1, last_error = ?2, dead_at = ?3
    WHERE id = ?1 AND status = 'pending'";

const REPLAY_SQL: &str = "UPDATE outbound
    SET status = 'pending', attempts = 0, next_attempt_at = ?2, dead_at = NULL
    WHERE id = ?1 AND status = 'dead'";

/// Columns read by [`message`], in order.
macro_rules! message_columns {
    () => {
        "id, destination, enqueued_at, control_id, payload, source, attempts, next_attempt_at, \
         last_error"
    };
}

const NEXT_PENDING_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM outbound WHERE destination = ?1 AND status = 'pending' ORDER BY id LIMIT 1"
);

const PENDING_AFTER_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM outbound WHERE destination = ?1 AND status = 'pending' AND id > ?2 ORDER BY id LIMIT ?3"
);

const MESSAGE_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    ", status FROM outbound WHERE id = ?1"
);

const OVERVIEW_SQL: &str = "SELECT destination,
        sum(status = 'pending'),
        sum(status = 'dead'),
        min(CASE WHEN status = 'pending' THEN enqueued_at END)
    FROM outbound WHERE status IN ('pending', 'dead')
    GROUP BY destination ORDER BY destination";

/// Columns read by [`dead_letter`], in order.
macro_rules! dead_columns {
    () => {
        "SELECT id, destination, enqueued_at, control_id, source, attempts, \
         coalesce(last_error, ''), dead_at FROM outbound WHERE status = 'dead'"
    };
}

const DEAD_ALL_SQL: &str = concat!(dead_columns!(), " ORDER BY id LIMIT ?1");
const DEAD_BY_DESTINATION_SQL: &str = concat!(
    dead_columns!(),
    " AND destination = ?2 ORDER BY id LIMIT ?1"
);

impl Store {
    /// Queues messages for delivery; resolves with their row ids (in the order of `items`)
    /// only after the transaction holding them has committed. Wake the destination's worker
    /// afterwards (`Notify::notify_one`), or it finds them at its next poll.
    pub async fn enqueue(&self, items: Vec<OutboundItem>) -> Result<Vec<i64>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.enqueue(items).await;
        }
        let ids = Vec::with_capacity(items.len());
        let items = prepare(items);
        let (reply, answer) = oneshot::channel();
        self.send(Request::Enqueue { items, ids, reply }).await?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Records the receiver's positive ACK; `false` if the row was not pending (unknown id,
    /// already delivered or dead).
    pub async fn mark_delivered(&self, id: i64, ack: Bytes) -> Result<bool, StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.mark_delivered(id, ack).await;
        }
        let at = now_micros();
        self.change(Change::Delivered { id, ack, at })
            .await
            .map(|n| n > 0)
    }

    /// Records a failed attempt of a pending row and when to try again; the row stays at the
    /// head of its destination. `false` if the row was not pending.
    pub async fn mark_retry(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.mark_retry(id, error, next_attempt_at).await;
        }
        let change = Change::Retry {
            id,
            error: error.to_owned(),
            next: next_attempt_at.as_microsecond(),
        };
        self.change(change).await.map(|n| n > 0)
    }

    /// Turns a pending row into a dead letter (counting the attempt that killed it), so the
    /// next message of its destination can go. `false` if the row was not pending.
    pub async fn mark_dead(&self, id: i64, reason: &str) -> Result<bool, StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.mark_dead(id, reason).await;
        }
        let change = Change::Dead {
            id,
            reason: reason.to_owned(),
            at: now_micros(),
        };
        self.change(change).await.map(|n| n > 0)
    }

    /// Makes dead letters pending again (attempts reset, due now, same bytes and control id);
    /// returns how many ids were dead letters. A replayed row keeps its id, so it goes
    /// before the messages of its destination enqueued after it that are still pending.
    pub async fn replay(&self, ids: Vec<i64>) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.replay(ids).await;
        }
        self.change(Change::Replay {
            ids,
            at: now_micros(),
        })
        .await
    }

    /// The oldest pending message of `destination`, due or not (blocking: CLI or
    /// `spawn_blocking`).
    pub fn next_pending(&self, destination: &str) -> Result<Option<OutboundMessage>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return futures::executor::block_on(postgres.next_pending(destination));
        }
        self.shared
            .readers
            .with(|connection| next_pending(connection, destination))
    }

    /// [`Store::next_pending`] on the blocking pool, for the delivery workers.
    pub async fn next_pending_async(
        &self,
        destination: &str,
    ) -> Result<Option<OutboundMessage>, StoreError> {
        let store = self.clone();
        if let Some(postgres) = self.postgres() {
            return postgres.next_pending(destination).await;
        }
        let destination = destination.to_owned();
        tokio::task::spawn_blocking(move || store.next_pending(&destination))
            .await
            .map_err(|source| self.read_task(source))?
    }

    /// Up to `limit` pending rows of `destination` with an id above `after` (0: from the
    /// head), oldest first, and no more once 4 MiB of payloads are read (blocking): a delivery
    /// worker reads ahead, and skips the rows it has sent whose delivery is still being
    /// committed.
    pub fn pending_after(
        &self,
        destination: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return futures::executor::block_on(postgres.pending_after(destination, after, limit));
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.shared
            .readers
            .with(|connection| pending_after(connection, destination, after, limit))
    }

    /// [`Store::pending_after`] on the blocking pool, for the delivery workers.
    pub async fn pending_after_async(
        &self,
        destination: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        let store = self.clone();
        if let Some(postgres) = self.postgres() {
            return postgres.pending_after(destination, after, limit).await;
        }
        let destination = destination.to_owned();
        tokio::task::spawn_blocking(move || store.pending_after(&destination, after, limit))
            .await
            .map_err(|source| self.read_task(source))?
    }

    /// One outbound row with its bytes and status, whatever the status (blocking).
    pub fn outbound_message(
        &self,
        id: i64,
    ) -> Result<Option<(OutboundMessage, OutboundStatus)>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return futures::executor::block_on(postgres.outbound_message(id));
        }
        self.shared
            .readers
            .with(|connection| outbound_message(connection, id))
    }

    /// Pending and dead counts per destination that has any (blocking).
    pub fn queue_overview(&self) -> Result<Vec<DestinationDepth>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return futures::executor::block_on(postgres.queue_overview());
        }
        self.shared.readers.with(overview)
    }

    /// The head of every destination that has pending messages (blocking pool).
    pub async fn queue_heads_async(&self) -> Result<Vec<QueueHead>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.queue_heads().await;
        }
        self.read_blocking(queue_heads).await
    }

    /// [`Store::queue_overview`] on the blocking pool, for async callers (HTTP, metrics).
    pub async fn queue_overview_async(&self) -> Result<Vec<DestinationDepth>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.queue_overview().await;
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.queue_overview())
            .await
            .map_err(|source| self.read_task(source))?
    }

    /// Dead letters, oldest first, of one destination or all; `limit` 0 means no limit
    /// (blocking).
    pub fn dead_letters(
        &self,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        if let Some(postgres) = self.postgres() {
            let destination = destination.map(str::to_owned);
            return futures::executor::block_on(postgres.dead_letters(destination, limit));
        }
        self.shared
            .readers
            .with(|connection| dead_letters(connection, destination, limit))
    }

    /// [`Store::dead_letters`] on the blocking pool, for async callers.
    pub async fn dead_letters_async(
        &self,
        destination: Option<String>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.dead_letters(destination, limit).await;
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.dead_letters(destination.as_deref(), limit))
            .await
            .map_err(|source| self.read_task(source))?
    }

    /// Sends one status change to the writer; the number of rows it changed.
    async fn change(&self, change: Change) -> Result<usize, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Outbound {
            change,
            changed: 0,
            reply,
        })
        .await?;
        answer.await.map_err(|_| self.closed())?
    }
}

pub(super) fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// Stamps items with one enqueue time, taken on the caller's task (see [`Store::enqueue`]).
pub(super) fn prepare(items: Vec<OutboundItem>) -> Vec<PreparedItem> {
    let enqueued_at = now_micros();
    items
        .into_iter()
        .map(|item| PreparedItem { item, enqueued_at })
        .collect()
}

/// Inserts `items` in the writer's transaction, pushing each new id onto `ids`.
pub(super) fn insert(
    transaction: &Transaction<'_>,
    items: &[PreparedItem],
    ids: &mut Vec<i64>,
) -> rusqlite::Result<()> {
    let mut statement = transaction.prepare_cached(ENQUEUE_SQL)?;
    for prepared in items {
        let item = &prepared.item;
        // No `RETURNING`: it costs a temporary table per insert; the new row's id is
        // `last_insert_rowid`.
        statement.execute(rusqlite::params![
            item.destination,
            prepared.enqueued_at,
            item.control_id,
            &item.payload[..],
            item.source,
        ])?;
        ids.push(transaction.last_insert_rowid());
    }
    Ok(())
}

/// Applies one status change in the writer's transaction; the number of rows changed.
pub(super) fn apply(transaction: &Transaction<'_>, change: &Change) -> rusqlite::Result<usize> {
    match change {
        Change::Delivered { id, ack, at } => transaction
            .prepare_cached(DELIVERED_SQL)?
            .execute(rusqlite::params![id, at, &ack[..]]),
        Change::Retry { id, error, next } => transaction
            .prepare_cached(RETRY_SQL)?
            .execute(rusqlite::params![id, error, next]),
        Change::Dead { id, reason, at } => transaction
            .prepare_cached(DEAD_SQL)?
            .execute(rusqlite::params![id, reason, at]),
        Change::Replay { ids, at } => {
            let mut statement = transaction.prepare_cached(REPLAY_SQL)?;
            let mut changed = 0;
            for id in ids {
                changed += statement.execute(rusqlite::params![id, at])?;
            }
            Ok(changed)
        }
    }
}

fn next_pending(
    connection: &Connection,
    destination: &str,
) -> rusqlite::Result<Option<OutboundMessage>> {
    let mut statement = connection.prepare_cached(NEXT_PENDING_SQL)?;
    let mut rows = statement.query([destination])?;
    rows.next()?.map(message).transpose()
}

fn pending_after(
    connection: &Connection,
    destination: &str,
    after: i64,
    limit: i64,
) -> rusqlite::Result<Vec<OutboundMessage>> {
    let mut statement = connection.prepare_cached(PENDING_AFTER_SQL)?;
    let mut rows = statement.query(rusqlite::params![destination, after, limit])?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    // Rows are read one at a time: stopping here leaves the payloads behind unread.
    while bytes < READ_AHEAD_BYTES
        && let Some(row) = rows.next()?
    {
        let message = message(row)?;
        bytes = bytes.saturating_add(message.payload.len());
        out.push(message);
    }
    Ok(out)
}

/// The payload bytes one [`Store::pending_after`] call reads at most (past the first row): a
/// queue of 20 MiB documents must not be read 32 rows at a time.
pub(super) const READ_AHEAD_BYTES: usize = 4 * 1024 * 1024;

fn outbound_message(
    connection: &Connection,
    id: i64,
) -> rusqlite::Result<Option<(OutboundMessage, OutboundStatus)>> {
    let mut statement = connection.prepare_cached(MESSAGE_SQL)?;
    let mut rows = statement.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let status = match row.get_ref(9)? {
        ValueRef::Text(text) => OutboundStatus::from_bytes(text),
        _ => None,
    };
    // The CHECK constraint keeps `status` to known values; a file edited by hand could not.
    let status = status.ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(9, Type::Text, "unknown outbound status".into())
    })?;
    Ok(Some((message(row)?, status)))
}

fn message(row: &Row<'_>) -> rusqlite::Result<OutboundMessage> {
    let payload: Vec<u8> = row.get(4)?;
    Ok(OutboundMessage {
        id: row.get(0)?,
        destination: row.get(1)?,
        enqueued_at: timestamp(row, 2)?,
        control_id: row.get(3)?,
        payload: Bytes::from(payload),
        source: row.get(5)?,
        attempts: count(row, 6)?,
        next_attempt_at: timestamp(row, 7)?,
        last_error: row.get(8)?,
    })
}

fn overview(connection: &Connection) -> rusqlite::Result<Vec<DestinationDepth>> {
    let mut statement = connection.prepare_cached(OVERVIEW_SQL)?;
    let mut rows = statement.query([])?;
    let mut depths = Vec::new();
    while let Some(row) = rows.next()? {
        let oldest: Option<i64> = row.get(3)?;
        depths.push(DestinationDepth {
            destination: row.get(0)?,
            pending: count(row, 1)?,
            dead: count(row, 2)?,
            oldest_pending_at: oldest
                .map(|micros| micros_to_timestamp(micros, 3))
                .transpose()?,
        });
    }
    Ok(depths)
}

/// The oldest pending row of each destination, through the `outbound_pending` index.
const HEADS_SQL: &str =
    "SELECT o.destination, o.attempts, coalesce(o.last_error, ''), o.enqueued_at
    FROM (SELECT min(id) AS id FROM outbound WHERE status = 'pending' GROUP BY destination) h
    JOIN outbound o ON o.id = h.id ORDER BY o.destination";

fn queue_heads(connection: &Connection) -> rusqlite::Result<Vec<QueueHead>> {
    let mut statement = connection.prepare_cached(HEADS_SQL)?;
    let mut rows = statement.query([])?;
    let mut heads = Vec::new();
    while let Some(row) = rows.next()? {
        heads.push(QueueHead {
            destination: row.get(0)?,
            attempts: row.get(1)?,
            last_error: row.get(2)?,
            enqueued_at: micros_to_timestamp(row.get(3)?, 3)?,
        });
    }
    Ok(heads)
}

fn dead_letters(
    connection: &Connection,
    destination: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<DeadLetter>> {
    // LIMIT -1 is SQLite's "no limit".
    let limit = match limit {
        0 => -1,
        limit => i64::try_from(limit).unwrap_or(i64::MAX),
    };
    let mut statement;
    let mut rows = match destination {
        None => {
            statement = connection.prepare_cached(DEAD_ALL_SQL)?;
            statement.query(rusqlite::params![limit])?
        }
        Some(destination) => {
            statement = connection.prepare_cached(DEAD_BY_DESTINATION_SQL)?;
            statement.query(rusqlite::params![limit, destination])?
        }
    };
    let mut letters = Vec::new();
    while let Some(row) = rows.next()? {
        let dead_at: Option<i64> = row.get(7)?;
        letters.push(DeadLetter {
            id: row.get(0)?,
            destination: row.get(1)?,
            enqueued_at: timestamp(row, 2)?,
            control_id: row.get(3)?,
            source: row.get(4)?,
            attempts: count(row, 5)?,
            reason: row.get(6)?,
            dead_at: dead_at
                .map(|micros| micros_to_timestamp(micros, 7))
                .transpose()?,
        });
    }
    Ok(letters)
}

/// Reads a non-negative integer column into any unsigned type; out of range is an error.
fn count<T: TryFrom<i64>>(row: &Row<'_>, column: usize) -> rusqlite::Result<T> {
    let value: i64 = row.get(column)?;
    T::try_from(value).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            Type::Integer,
            format!("count {value} out of range").into(),
        )
    })
}

/// Reads a unix-microseconds column.
pub(super) fn timestamp(row: &Row<'_>, column: usize) -> rusqlite::Result<jiff::Timestamp> {
    micros_to_timestamp(row.get(column)?, column)
}

pub(super) fn micros_to_timestamp(micros: i64, column: usize) -> rusqlite::Result<jiff::Timestamp> {
    jiff::Timestamp::from_microsecond(micros).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(column, Type::Integer, error.into())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use rstest::rstest;

    fn item(destination: &str, control_id: &str) -> OutboundItem {
        OutboundItem {
            destination: destination.to_owned(),
            control_id: control_id.to_owned(),
            payload: Bytes::from(format!(
                "MSH|^~\\&|ORDO|POSOS|||||ORM^O01|{control_id}|P|2.5"
            )),
            source: format!("bundle-{control_id}"),
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.sqlite"), StoreOptions::default()).unwrap();
        (dir, store)
    }

    #[rstest]
    #[case::ok_pending(OutboundStatus::Pending, "pending")]
    #[case::ok_delivered(OutboundStatus::Delivered, "delivered")]
    #[case::ok_dead(OutboundStatus::Dead, "dead")]
    fn ok_status_text_round_trips(#[case] status: OutboundStatus, #[case] text: &str) {
        assert_eq!(status.to_string(), text);
        assert_eq!(OutboundStatus::from_bytes(text.as_bytes()), Some(status));
    }

    #[rstest]
    #[case::err_empty(b"")]
    #[case::err_case(b"Pending")]
    #[case::err_journal_status(b"accepted")]
    fn err_status_text_unknown(#[case] text: &[u8]) {
        assert_eq!(OutboundStatus::from_bytes(text), None);
    }

    #[tokio::test]
    async fn ok_enqueue_keeps_order_per_destination() {
        let (_dir, store) = open();
        let ids = store
            .enqueue(vec![
                item("ehr", "A1"),
                item("lab", "B1"),
                item("ehr", "A2"),
            ])
            .await
            .unwrap();
        assert_eq!(ids, [1, 2, 3]);
        let head = store.next_pending_async("ehr").await.unwrap().unwrap();
        assert_eq!(head.id, 1);
        assert_eq!(head.control_id, "A1");
        assert_eq!(head.source, "bundle-A1");
        assert_eq!(head.attempts, 0);
        assert_eq!(head.next_attempt_at, head.enqueued_at);
        assert_eq!(head.payload, item("ehr", "A1").payload);
        assert_eq!(store.next_pending("lab").unwrap().unwrap().id, 2);
        assert_eq!(store.next_pending("none").unwrap(), None);
        assert_eq!(store.enqueue(Vec::new()).await.unwrap(), Vec::<i64>::new());
    }

    #[rstest]
    #[case::ok_from_the_head(0, 10, &[1, 3, 4])]
    #[case::ok_after_a_sent_row(3, 10, &[4])]
    #[case::ok_limited(0, 2, &[1, 3])]
    #[case::ok_nothing_after_the_last(4, 10, &[])]
    #[tokio::test]
    async fn ok_pending_after_reads_ahead_in_order(
        #[case] after: i64,
        #[case] limit: usize,
        #[case] expected: &[i64],
    ) {
        let (_dir, store) = open();
        store
            .enqueue(vec![
                item("ehr", "A1"),
                item("lab", "B1"),
                item("ehr", "A2"),
                item("ehr", "A3"),
                item("ehr", "A4"),
            ])
            .await
            .unwrap();
        let ack = Bytes::from_static(b"MSH|^~\\&\rMSA|AA|A4");
        assert!(store.mark_delivered(5, ack).await.unwrap());
        let rows = store
            .pending_after_async("ehr", after, limit)
            .await
            .unwrap();
        let ids: Vec<i64> = rows.iter().map(|m| m.id).collect();
        assert_eq!(
            ids, expected,
            "pending only, this destination, oldest first"
        );
        assert!(rows.iter().all(|m| m.control_id.starts_with('A')));
    }

    #[tokio::test]
    async fn ok_retry_keeps_head_then_delivered_moves_on() {
        let (_dir, store) = open();
        store
            .enqueue(vec![item("ehr", "A1"), item("ehr", "A2")])
            .await
            .unwrap();
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
        assert!(
            store
                .mark_retry(1, "receiver answered AE", later)
                .await
                .unwrap()
        );
        let head = store.next_pending("ehr").unwrap().unwrap();
        assert_eq!(head.id, 1, "a message in backoff stays at the head");
        assert_eq!(head.attempts, 1);
        assert_eq!(head.last_error.as_deref(), Some("receiver answered AE"));
        assert_eq!(
            head.next_attempt_at.as_microsecond(),
            later.as_microsecond()
        );

        let ack = Bytes::from_static(b"MSH|^~\\&\rMSA|AA|A1");
        assert!(store.mark_delivered(1, ack.clone()).await.unwrap());
        assert!(!store.mark_delivered(1, ack).await.unwrap(), "only once");
        let (message, status) = store.outbound_message(1).unwrap().unwrap();
        assert_eq!(status, OutboundStatus::Delivered);
        assert_eq!(message.attempts, 2);
        assert_eq!(store.next_pending("ehr").unwrap().unwrap().id, 2);
        assert_eq!(store.outbound_message(99).unwrap(), None);
    }

    #[tokio::test]
    async fn ok_dead_letter_unblocks_and_replay_restores() {
        let (_dir, store) = open();
        store
            .enqueue(vec![
                item("ehr", "A1"),
                item("ehr", "A2"),
                item("lab", "B1"),
            ])
            .await
            .unwrap();
        assert!(
            store
                .mark_dead(1, "receiver refused (AR): bad patient")
                .await
                .unwrap()
        );
        assert!(!store.mark_dead(1, "again").await.unwrap());
        assert_eq!(store.next_pending("ehr").unwrap().unwrap().id, 2);

        let overview = store.queue_overview_async().await.unwrap();
        assert_eq!(overview.len(), 2);
        let ehr = overview.first().unwrap();
        assert_eq!(
            (ehr.destination.as_str(), ehr.pending, ehr.dead),
            ("ehr", 1, 1)
        );
        assert!(ehr.oldest_pending_at.is_some());

        let dead = store.dead_letters(Some("ehr"), 10).unwrap();
        assert_eq!(dead.len(), 1);
        let letter = dead.first().unwrap();
        assert_eq!(letter.id, 1);
        assert_eq!(letter.control_id, "A1");
        assert_eq!(letter.attempts, 1);
        assert_eq!(letter.reason, "receiver refused (AR): bad patient");
        assert!(letter.dead_at.is_some());
        assert!(store.dead_letters(Some("lab"), 0).unwrap().is_empty());
        assert_eq!(
            store.dead_letters_async(None, 0).await.unwrap().len(),
            1,
            "all destinations"
        );

        // Unknown and pending ids are not replayed; the dead one is, ahead of A2.
        assert_eq!(store.replay(vec![1, 2, 42]).await.unwrap(), 1);
        assert_eq!(store.replay(Vec::new()).await.unwrap(), 0);
        let head = store.next_pending("ehr").unwrap().unwrap();
        assert_eq!((head.id, head.attempts), (1, 0));
        assert_eq!(head.control_id, "A1");
        assert!(store.dead_letters(None, 0).unwrap().is_empty());
    }

    #[tokio::test]
    async fn ok_overview_forgets_fully_delivered_destinations() {
        let (_dir, store) = open();
        store.enqueue(vec![item("ehr", "A1")]).await.unwrap();
        store.mark_delivered(1, Bytes::new()).await.unwrap();
        assert!(store.queue_overview().unwrap().is_empty());
    }

    #[tokio::test]
    async fn err_enqueue_on_closed_store() {
        let (dir, store) = open();
        store.close().await;
        let err = store.enqueue(vec![item("ehr", "A1")]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "store `{}` is closed",
                dir.path().join("q.sqlite").display()
            )
        );
        let err = store.mark_dead(1, "x").await.unwrap_err();
        assert!(matches!(err, StoreError::Closed { .. }), "{err:?}");
    }

    #[test]
    fn err_negative_attempts_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        let writer = crate::store::schema::open_writer(&path).unwrap();
        writer
            .execute_batch(
                "INSERT INTO outbound (destination, enqueued_at, control_id, payload, source,
                 status, attempts, next_attempt_at)
                 VALUES ('ehr', 0, 'A1', x'00', '', 'pending', -1, 0)",
            )
            .unwrap();
        let readers = crate::store::read::Readers::new(path.clone());
        let err = readers.with(|c| next_pending(c, "ehr")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("store `{}`: read failed", path.display())
        );
    }
}

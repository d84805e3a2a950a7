//! The journal on PostgreSQL: inserts with duplicate detection, processed marks, listings,
//! the census processor's work list.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_postgres::Row;

use super::{Inner, Postgres, Wakeup, limit};
use crate::store::{
    EntryStatus, InboundRecord, JournalEntry, JournalFilter, JournalOutcome, JournalSummary,
    RecordStatus, StoreError, Unprocessed,
};

/// Inserts a record unless a kept row has the same duplicate key. A concurrent insert of the
/// same key is waited for (the unique index): once it commits, this one does nothing and
/// [`DUPLICATE_SQL`] counts it.
const JOURNAL_SQL: &str = "INSERT INTO journal (channel, received_at, peer, sender, message_type,
        control_id, content_hash, raw, status, reason, duplicate_count, last_seen_at, kept)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $2, $11)
    ON CONFLICT (channel, sender, control_id, content_hash) WHERE kept DO NOTHING
    RETURNING id";

/// A duplicate: the row it repeats is counted and its last sighting kept.
const DUPLICATE_SQL: &str = "UPDATE journal
    SET duplicate_count = duplicate_count + 1, last_seen_at = $5
    WHERE channel = $1 AND sender = $2 AND control_id = $3 AND content_hash = $4 AND kept
    RETURNING id, status";

/// Only accepted rows become processed; rejected ones stay rejected.
const MARK_PROCESSED_SQL: &str =
    "UPDATE journal SET status = 'processed' WHERE id = ANY($1) AND status = 'accepted'";

macro_rules! summary_columns {
    () => {
        "id, received_at, channel, message_type, control_id, status, reason, peer, sender, note"
    };
}

/// How many columns [`summary`] reads; the columns after them are the caller's.
pub(super) const SUMMARY_COLUMNS: usize = 10;

/// The columns [`summary`] reads, for statements built elsewhere (the search).
pub(super) const SUMMARY_COLUMNS_SQL: &str = summary_columns!();

const LIST_SQL: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM journal WHERE ($1::text IS NULL OR control_id = $1)
        AND ($2::text IS NULL OR channel = $2)
    ORDER BY received_at DESC, id DESC LIMIT $3"
);

const ENTRY_SQL: &str = concat!(
    "SELECT ",
    summary_columns!(),
    ", raw, content_hash, duplicate_count, last_seen_at FROM journal WHERE id = $1"
);

/// The census processor's rows: accepted, of the channels it reads, after its cursor or (see
/// [`Postgres::accepted_after`]) of a transaction that was running at its last read, and only
/// of transactions that ended before every one running now.
const ACCEPTED_SQL: &str = "SELECT id, channel, raw FROM journal
    WHERE status = 'accepted' AND channel <> $3 AND channel <> $4
        AND (id > $1 OR ($5::bigint IS NOT NULL AND xid >= ($5::bigint)::text::xid8))
        AND xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY id LIMIT $2";

/// The oldest transaction running now (as a number: `xid8` has no binary form here).
const HORIZON_SQL: &str = "SELECT (pg_snapshot_xmin(pg_current_snapshot()))::text::bigint";

/// Tries of an insert whose duplicate vanished between the two statements (pruned meanwhile).
const DUPLICATE_TRIES: usize = 3;

/// A record with its hash and time, computed before the connection is taken.
pub(super) struct Prepared {
    record: InboundRecord,
    hash: [u8; 32],
    received_at: i64,
}

impl Prepared {
    pub(super) fn new(record: InboundRecord) -> Prepared {
        let hash = Sha256::digest(&record.raw).into();
        let received_at = record.received_at.as_microsecond();
        Prepared {
            record,
            hash,
            received_at,
        }
    }
}

impl Postgres {
    /// [`Store::journal_many`](crate::store::Store::journal_many): one transaction, committed
    /// before the outcomes are returned.
    pub(in crate::store) async fn journal_many(
        &self,
        records: Vec<InboundRecord>,
    ) -> Result<Vec<JournalOutcome>, StoreError> {
        let records: Vec<Prepared> = records.into_iter().map(Prepared::new).collect();
        self.run(move |inner| async move { insert(&inner, records).await })
            .await
    }

    /// [`Store::journal`](crate::store::Store::journal).
    pub(in crate::store) async fn journal(
        &self,
        record: InboundRecord,
    ) -> Result<JournalOutcome, StoreError> {
        let mut outcomes = self.journal_many(vec![record]).await?;
        outcomes.pop().ok_or_else(|| StoreError::PostgresValue {
            path: self.path().to_path_buf(),
            operation: "journal",
            reason: "no outcome for the record".to_owned(),
        })
    }

    /// [`Store::mark_processed`](crate::store::Store::mark_processed).
    pub(in crate::store) async fn mark_processed(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "mark_processed";
            let failed = inner.failed(OPERATION);
            let connection = inner.connection(OPERATION).await?;
            // One statement: its own transaction, committed when it returns.
            connection
                .execute(MARK_PROCESSED_SQL, &[&ids])
                .await
                .map_err(&failed)?;
            Ok(())
        })
        .await
    }

    /// [`Store::list_journal`](crate::store::Store::list_journal) (blocking).
    pub(in crate::store) fn list_journal(
        &self,
        filter: &JournalFilter,
    ) -> Result<Vec<JournalSummary>, StoreError> {
        let filter = filter.clone();
        self.block(move |inner| async move {
            const OPERATION: &str = "list_journal";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(
                    LIST_SQL,
                    &[&filter.control_id, &filter.channel, &limit(filter.limit)],
                )
                .await
                .map_err(inner.failed(OPERATION))?;
            rows.iter()
                .map(|row| summary(&inner, OPERATION, row))
                .collect()
        })
    }

    /// [`Store::journal_entry`](crate::store::Store::journal_entry) (blocking).
    pub(in crate::store) fn journal_entry(
        &self,
        id: i64,
    ) -> Result<Option<JournalEntry>, StoreError> {
        self.block(move |inner| async move {
            const OPERATION: &str = "journal_entry";
            let connection = inner.connection(OPERATION).await?;
            let Some(row) = connection
                .query_opt(ENTRY_SQL, &[&id])
                .await
                .map_err(inner.failed(OPERATION))?
            else {
                return Ok(None);
            };
            let hash: Vec<u8> = row.get(SUMMARY_COLUMNS + 1);
            let content_hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| {
                inner.corrupt(OPERATION, format!("content hash of {} bytes", hash.len()))
            })?;
            Ok(Some(JournalEntry {
                summary: summary(&inner, OPERATION, &row)?,
                raw: row.get(SUMMARY_COLUMNS),
                content_hash,
                duplicate_count: row.get(SUMMARY_COLUMNS + 2),
                last_seen_at: inner.timestamp(OPERATION, row.get(SUMMARY_COLUMNS + 3))?,
            }))
        })
    }

    /// [`Store::accepted_after`](crate::store::Store::accepted_after).
    ///
    /// Ids are taken before commit, so a row may commit after a row with a higher id that the
    /// processor already read past. Rows are only returned once every transaction older than
    /// theirs has ended (`xid < xmin` of this read's snapshot), and a read also returns, below
    /// the cursor, the rows of transactions that were still running at the previous complete
    /// read (`xid >= ` that read's xmin): each row is returned by the first read whose snapshot
    /// has its transaction ended. A read cut by `limit` keeps the previous xmin, so the rows
    /// beyond it come with the next read.
    pub(in crate::store) async fn accepted_after(
        &self,
        after_id: i64,
        limit_rows: usize,
        skip: [&'static str; 2],
    ) -> Result<Vec<Unprocessed>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "accepted_after";
            let failed = inner.failed(OPERATION);
            let mut connection = inner.connection(OPERATION).await?;
            // REPEATABLE READ: the horizon and the rows come from one snapshot.
            let transaction = super::snapshot(&mut connection).await.map_err(&failed)?;
            let horizon: i64 = transaction
                .query_one(HORIZON_SQL, &[])
                .await
                .map_err(&failed)?
                .get(0);
            let previous = *inner
                .processor_horizon
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let wanted = i64::try_from(limit_rows).unwrap_or(i64::MAX);
            let rows = transaction
                .query(
                    ACCEPTED_SQL,
                    &[&after_id, &wanted, &skip[0], &skip[1], &previous],
                )
                .await
                .map_err(&failed)?;
            transaction.commit().await.map_err(&failed)?;
            let complete = rows.len() < limit_rows;
            if complete {
                *inner
                    .processor_horizon
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(horizon);
            }
            Ok(rows
                .iter()
                .map(|row| Unprocessed {
                    id: row.get(0),
                    channel: row.get(1),
                    raw: row.get(2),
                })
                .collect())
        })
        .await
    }

    /// [`Store::last_journal_id_async`](crate::store::Store::last_journal_id_async).
    pub(in crate::store) async fn last_journal_id(&self) -> Result<i64, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "last_journal_id";
            let connection = inner.connection(OPERATION).await?;
            let row = connection
                .query_one("SELECT coalesce(max(id), 0) FROM journal", &[])
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(row.get(0))
        })
        .await
    }

    /// [`Store::probe_commit`](crate::store::Store::probe_commit): a transaction that writes
    /// (takes a transaction id) and commits.
    pub(in crate::store) async fn probe_commit(&self) -> Result<(), StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "probe_commit";
            let failed = inner.failed(OPERATION);
            let mut connection = inner.connection(OPERATION).await?;
            let transaction = connection.transaction().await.map_err(&failed)?;
            transaction
                .execute("SELECT pg_current_xact_id()", &[])
                .await
                .map_err(&failed)?;
            transaction.commit().await.map_err(&failed)
        })
        .await
    }
}

/// Inserts `records` in one transaction and commits; the outcomes in order.
async fn insert(
    inner: &Arc<Inner>,
    records: Vec<Prepared>,
) -> Result<Vec<JournalOutcome>, StoreError> {
    const OPERATION: &str = "journal";
    let failed = inner.failed(OPERATION);
    let mut connection = inner.connection(OPERATION).await?;
    let transaction = connection.transaction().await.map_err(&failed)?;
    let statements = JournalStatements::prepare(&transaction, &failed).await?;
    let mut outcomes = Vec::with_capacity(records.len());
    for prepared in &records {
        outcomes.push(insert_one(inner, &transaction, &statements, prepared).await?);
    }
    transaction.commit().await.map_err(&failed)?;
    let accepted = records.iter().zip(&outcomes).any(|(prepared, outcome)| {
        matches!(prepared.record.status, RecordStatus::Accepted)
            && matches!(outcome, JournalOutcome::Stored { .. })
    });
    if accepted {
        inner.wake([Wakeup::Processor]);
    }
    Ok(outcomes)
}

/// The statements of [`insert_one`], prepared once per transaction.
pub(super) struct JournalStatements {
    insert: tokio_postgres::Statement,
    duplicate: tokio_postgres::Statement,
}

impl JournalStatements {
    pub(super) async fn prepare(
        transaction: &deadpool_postgres::Transaction<'_>,
        failed: &impl Fn(tokio_postgres::Error) -> StoreError,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            insert: transaction
                .prepare_cached(JOURNAL_SQL)
                .await
                .map_err(failed)?,
            duplicate: transaction
                .prepare_cached(DUPLICATE_SQL)
                .await
                .map_err(failed)?,
        })
    }
}

/// One record in `transaction` ([`JOURNAL_SQL`] then, for a duplicate, [`DUPLICATE_SQL`]);
/// shared with `push` (issue 15).
pub(super) async fn insert_one(
    inner: &Inner,
    transaction: &deadpool_postgres::Transaction<'_>,
    statements: &JournalStatements,
    prepared: &Prepared,
) -> Result<JournalOutcome, StoreError> {
    let JournalStatements { insert, duplicate } = statements;
    const OPERATION: &str = "journal";
    let failed = inner.failed(OPERATION);
    let record = &prepared.record;
    let (status, reason) = match &record.status {
        RecordStatus::Accepted => (EntryStatus::Accepted, None),
        RecordStatus::Rejected { reason } => (EntryStatus::Rejected, Some(reason.as_str())),
    };
    let kept = status != EntryStatus::Rejected;
    let hash = &prepared.hash[..];
    let raw = &record.raw[..];
    let mut outcome = None;
    for _ in 0..DUPLICATE_TRIES {
        let inserted = transaction
            .query_opt(
                insert,
                &[
                    &record.channel,
                    &prepared.received_at,
                    &record.peer,
                    &record.sender,
                    &record.message_type,
                    &record.control_id,
                    &hash,
                    &raw,
                    &status.as_str(),
                    &reason,
                    &kept,
                ],
            )
            .await
            .map_err(&failed)?;
        if let Some(row) = inserted {
            outcome = Some(JournalOutcome::Stored { id: row.get(0) });
            break;
        }
        let repeated = transaction
            .query_opt(
                duplicate,
                &[
                    &record.channel,
                    &record.sender,
                    &record.control_id,
                    &hash,
                    &prepared.received_at,
                ],
            )
            .await
            .map_err(&failed)?;
        if let Some(row) = repeated {
            let text: &str = row.get(1);
            let status = EntryStatus::from_bytes(text.as_bytes())
                .ok_or_else(|| inner.corrupt(OPERATION, format!("journal status `{text}`")))?;
            outcome = Some(JournalOutcome::Duplicate {
                id: row.get(0),
                status,
            });
            break;
        }
    }
    let outcome = outcome.ok_or_else(|| {
        inner.corrupt(
            OPERATION,
            "the duplicate of a record kept vanishing (pruned while it arrived?)".to_owned(),
        )
    })?;
    Ok(outcome)
}

pub(super) fn summary(
    inner: &Inner,
    operation: &'static str,
    row: &Row,
) -> Result<JournalSummary, StoreError> {
    Ok(JournalSummary {
        id: row.get(0),
        received_at: inner.timestamp(operation, row.get(1))?,
        channel: row.get(2),
        message_type: row.get(3),
        control_id: row.get(4),
        status: row.get(5),
        reason: row.get(6),
        peer: row.get(7),
        sender: row.get(8),
        note: row.get(9),
    })
}

//! Retention: deleting what is old enough and finished, in small transactions on the writer, so
//! intake never waits behind a long delete.
//!
//! What may go (all times in microseconds since 1970, as stored):
//!
//! - a journal row received before its cutoff (`rejected_before` for rejected rows,
//!   `journal_before` for the others), **unless** it is still `accepted` (the census or the push
//!   has not finished with it), a pushed bundle of it is still held, or one of its outbound
//!   messages is still pending (neither delivered nor dead-lettered);
//! - an outbound message delivered or dead-lettered before `outbound_before`;
//! - a released hold released before `holds_before`.
//!
//! Never: the census (its own retention), an `accepted` row, a pending message, a held bundle.
//!
//! Each call deletes at most `limit` rows of each kind, oldest first; the pruner calls again
//! until nothing is left, and the writer serves journal inserts between calls. After a prune,
//! `PRAGMA incremental_vacuum` gives the freed pages back to the file system (the store runs
//! with `auto_vacuum = INCREMENTAL`).

use rusqlite::{Connection, params};

/// The cutoffs of one prune, computed from the retention settings and the current time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Accepted-then-processed journal rows received before this go.
    pub journal_before: i64,
    /// Rejected journal rows (junk frames, unreadable files) received before this go.
    pub rejected_before: i64,
    /// Delivered or dead outbound messages finished before this go.
    pub outbound_before: i64,
    /// Released holds released before this go.
    pub holds_before: i64,
    /// Document tracking rows accepted before this go (`[documents] tracking_retention`),
    /// once none of their messages is pending.
    pub documents_before: i64,
}

impl RetentionPlan {
    /// The cutoffs `now - retention` (journal, outbound and holds alike) and
    /// `now - rejected_retention`.
    pub fn at(
        now: jiff::Timestamp,
        retention: std::time::Duration,
        rejected_retention: std::time::Duration,
    ) -> RetentionPlan {
        let before = |age: std::time::Duration| {
            now.as_microsecond()
                .saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX))
        };
        let journal_before = before(retention);
        RetentionPlan {
            journal_before,
            rejected_before: before(rejected_retention),
            outbound_before: journal_before,
            holds_before: journal_before,
            documents_before: i64::MIN,
        }
    }

    /// The same plan, with document tracking kept `retention`.
    pub fn with_document_tracking(
        self,
        now: jiff::Timestamp,
        retention: std::time::Duration,
    ) -> RetentionPlan {
        RetentionPlan {
            documents_before: now
                .as_microsecond()
                .saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX)),
            ..self
        }
    }
}

/// Rows deleted (or, for a dry run, that would be).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub journal: usize,
    pub outbound: usize,
    pub holds: usize,
    /// Document tracking rows (`[documents] tracking_retention`).
    pub documents: usize,
}

impl Pruned {
    /// Rows of every kind.
    pub fn total(&self) -> usize {
        self.journal + self.outbound + self.holds + self.documents
    }

    pub(super) fn add(&mut self, other: Pruned) {
        self.journal += other.journal;
        self.outbound += other.outbound;
        self.holds += other.holds;
        self.documents += other.documents;
    }
}

/// The journal rows that may go, oldest first. The two `NOT IN` lists are small (pending
/// messages and waiting holds, both read through partial indexes) and evaluated once.
const PRUNABLE_JOURNAL: &str = "FROM journal
    WHERE ((status = 'processed' AND received_at < ?1) OR (status = 'rejected' AND received_at < ?2))
      AND ('journal:' || id) NOT IN (SELECT source FROM outbound WHERE status = 'pending')
      AND id NOT IN (SELECT journal_id FROM push_holds WHERE released_at IS NULL)";

const PRUNABLE_OUTBOUND: &str = "FROM outbound
    WHERE (status = 'delivered' AND delivered_at < ?1) OR (status = 'dead' AND dead_at < ?1)";

const PRUNABLE_HOLDS: &str = "FROM push_holds WHERE released_at IS NOT NULL AND released_at < ?1";

/// Document tracking rows accepted before `?1` whose messages are all finished (or gone).
const PRUNABLE_DOCUMENTS: &str = "FROM documents d WHERE d.accepted_at < ?1
      AND NOT EXISTS (SELECT 1 FROM document_messages m JOIN outbound o ON o.id = m.outbound_id
                      WHERE m.journal_id = d.journal_id AND o.status = 'pending')";

/// Deletes at most `limit` document tracking rows (and their message links) that
/// `[documents] tracking_retention` lets go.
fn prune_documents(connection: &Connection, before: i64, limit: i64) -> rusqlite::Result<usize> {
    if before == i64::MIN {
        return Ok(0);
    }
    connection
        .prepare_cached(&format!(
            "DELETE FROM document_messages WHERE journal_id IN \
             (SELECT journal_id {PRUNABLE_DOCUMENTS} ORDER BY journal_id LIMIT ?2)"
        ))?
        .execute(params![before, limit])?;
    connection
        .prepare_cached(&format!(
            "DELETE FROM documents WHERE journal_id IN \
             (SELECT journal_id {PRUNABLE_DOCUMENTS} ORDER BY journal_id LIMIT ?2)"
        ))?
        .execute(params![before, limit])
}

/// Deletes at most `limit` rows of each kind (in the caller's transaction).
pub(super) fn prune(
    connection: &Connection,
    plan: &RetentionPlan,
    limit: usize,
) -> rusqlite::Result<Pruned> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Outbound first: a journal row whose messages are all finished and old goes in the same
    // call as they do.
    let outbound = connection
        .prepare_cached(&format!(
            "DELETE FROM outbound WHERE id IN (SELECT id {PRUNABLE_OUTBOUND} ORDER BY id LIMIT ?2)"
        ))?
        .execute(params![plan.outbound_before, limit])?;
    let journal = connection
        .prepare_cached(&format!(
            "DELETE FROM journal WHERE id IN (SELECT id {PRUNABLE_JOURNAL} ORDER BY id LIMIT ?3)"
        ))?
        .execute(params![plan.journal_before, plan.rejected_before, limit])?;
    let holds = connection
        .prepare_cached(&format!(
            "DELETE FROM push_holds WHERE journal_id IN (SELECT journal_id {PRUNABLE_HOLDS} ORDER BY journal_id LIMIT ?2)"
        ))?
        .execute(params![plan.holds_before, limit])?;
    let documents = prune_documents(connection, plan.documents_before, limit)?;
    Ok(Pruned {
        journal,
        outbound,
        holds,
        documents,
    })
}

/// What [`prune`] would delete in all, without deleting (`ordobridge prune --dry-run`). The
/// journal count leaves out rows kept only by messages that the same prune would delete.
pub(super) fn count(connection: &Connection, plan: &RetentionPlan) -> rusqlite::Result<Pruned> {
    let count = |sql: String, values: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<usize> {
        connection
            .query_row(&sql, values, |row| row.get::<_, i64>(0))
            .map(|n| usize::try_from(n).unwrap_or(0))
    };
    Ok(Pruned {
        journal: count(
            format!("SELECT count(*) {PRUNABLE_JOURNAL}"),
            &[&plan.journal_before, &plan.rejected_before],
        )?,
        outbound: count(
            format!("SELECT count(*) {PRUNABLE_OUTBOUND}"),
            &[&plan.outbound_before],
        )?,
        holds: count(
            format!("SELECT count(*) {PRUNABLE_HOLDS}"),
            &[&plan.holds_before],
        )?,
        documents: count(
            format!("SELECT count(*) {PRUNABLE_DOCUMENTS}"),
            &[&plan.documents_before],
        )?,
    })
}

/// A passive checkpoint from a connection of its own (the writer's transactions cannot run
/// one): it copies the write-ahead log into the database file without blocking the writer, and
/// when it catches up with the whole log, SQLite truncates the file to its new size, so the
/// pages the vacuum gave back leave the disk. Returns whether the whole log was copied.
pub(super) fn checkpoint(path: &std::path::Path) -> rusqlite::Result<bool> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    let (busy, log, copied): (i64, i64, i64) =
        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    Ok(busy == 0 && log == copied)
}

/// Gives up to `pages` free pages back to the file system (needs `auto_vacuum = INCREMENTAL`);
/// returns the pages freed.
pub(super) fn incremental_vacuum(connection: &Connection, pages: u32) -> rusqlite::Result<u32> {
    let before: u32 = connection.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
    // The pragma returns no row per freed page we need; step it to the end.
    let mut statement = connection.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = statement.query([])?;
    while rows.next()?.is_some() {}
    drop(rows);
    let after: u32 = connection.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
    Ok(before.saturating_sub(after))
}

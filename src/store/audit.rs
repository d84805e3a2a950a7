//! The console's audit trail and lineage reads.
//!
//! Every view of a raw message and every console action is recorded (who, when, what, on
//! which row, why) through the writer, like any other write: [`Store::audit`] resolves once
//! the row is committed, so the console shows a raw message only after its view is on record.
//! The lineage of a journal row is the outbound rows it produced (their `source` is
//! `journal:ID`), each with its attempts and the receiver's ACK.

use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::queue::OutboundStatus;
use super::writer::Request;
use super::{Store, StoreError};

/// One audit row to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The console user.
    pub user: String,
    /// What was done: `view`, `resend`, `replay`, `release` …
    pub action: String,
    /// On what: `journal:12`, `outbound:7`, `destination:ehr`.
    pub target: String,
    /// Why, as the user wrote it (may be empty for a view).
    pub reason: String,
}

/// One recorded audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: jiff::Timestamp,
    pub entry: AuditEntry,
}

/// One outbound row produced from a journal row, with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageRow {
    pub id: i64,
    pub destination: String,
    pub enqueued_at: jiff::Timestamp,
    pub control_id: String,
    pub status: OutboundStatus,
    /// Attempts that reached the receiver (or may have).
    pub attempts: u32,
    pub last_error: Option<String>,
    pub delivered_at: Option<jiff::Timestamp>,
    /// The receiver's ACK, once delivered.
    pub ack: Option<Bytes>,
}

/// A held bundle due now: the releaser maps it with what is known at its next round.
pub(super) const RELEASE_NOW_SQL: &str = "UPDATE push_holds SET release_at = min(release_at, ?2) WHERE journal_id = ?1 AND released_at IS NULL";

pub(super) const AUDIT_SQL: &str =
    "INSERT INTO audit (at, user, action, target, reason) VALUES (?1, ?2, ?3, ?4, ?5)";

const RECENT_SQL: &str =
    "SELECT id, at, user, action, target, reason FROM audit ORDER BY id DESC LIMIT ?1";

const LINEAGE_SQL: &str = "SELECT id, destination, enqueued_at, control_id, status, attempts,
        last_error, delivered_at, ack
    FROM outbound WHERE source = ?1 ORDER BY id";

const PAUSE_SQL: &str = "INSERT INTO paused_destinations (destination, paused_at, user)
    VALUES (?1, ?2, ?3) ON CONFLICT (destination) DO NOTHING";
const RESUME_SQL: &str = "DELETE FROM paused_destinations WHERE destination = ?1";
const PAUSED_SQL: &str = "SELECT destination FROM paused_destinations ORDER BY destination";

/// Records `destination` as paused or resumed (in the writer's transaction).
pub(super) fn pause(
    transaction: &rusqlite::Transaction<'_>,
    destination: &str,
    paused: bool,
    at: i64,
    user: &str,
) -> rusqlite::Result<()> {
    if paused {
        transaction
            .prepare_cached(PAUSE_SQL)?
            .execute(rusqlite::params![destination, at, user])?;
    } else {
        transaction
            .prepare_cached(RESUME_SQL)?
            .execute([destination])?;
    }
    Ok(())
}

/// Inserts one audit row (in the writer's transaction).
pub(super) fn insert(
    transaction: &rusqlite::Transaction<'_>,
    at: i64,
    entry: &AuditEntry,
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached(AUDIT_SQL)?
        .execute(rusqlite::params![
            at,
            entry.user,
            entry.action,
            entry.target,
            entry.reason
        ])?;
    Ok(())
}

fn micros(value: i64) -> rusqlite::Result<jiff::Timestamp> {
    jiff::Timestamp::from_microsecond(value).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, error.into())
    })
}

fn recent(connection: &Connection, limit: usize) -> rusqlite::Result<Vec<AuditRecord>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = connection.prepare_cached(RECENT_SQL)?;
    let rows = statement.query_map([limit], |row| {
        Ok(AuditRecord {
            id: row.get(0)?,
            at: micros(row.get(1)?)?,
            entry: AuditEntry {
                user: row.get(2)?,
                action: row.get(3)?,
                target: row.get(4)?,
                reason: row.get(5)?,
            },
        })
    })?;
    rows.collect()
}

pub(super) fn lineage(
    connection: &Connection,
    journal_id: i64,
) -> rusqlite::Result<Vec<LineageRow>> {
    let mut statement = connection.prepare_cached(LINEAGE_SQL)?;
    let rows = statement.query_map([format!("journal:{journal_id}")], |row| {
        let status: String = row.get(4)?;
        let delivered_at: Option<i64> = row.get(7)?;
        let ack: Option<Vec<u8>> = row.get(8)?;
        Ok(LineageRow {
            id: row.get(0)?,
            destination: row.get(1)?,
            enqueued_at: micros(row.get(2)?)?,
            control_id: row.get(3)?,
            status: OutboundStatus::from_bytes(status.as_bytes()).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    4,
                    rusqlite::types::Type::Text,
                    "unknown outbound status".into(),
                )
            })?,
            attempts: row.get(5)?,
            last_error: row.get(6)?,
            delivered_at: delivered_at.map(micros).transpose()?,
            ack: ack.map(Bytes::from),
        })
    })?;
    rows.collect()
}

impl Store {
    /// Records `entry`; resolves once it is committed.
    pub async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres
                .audit(entry, jiff::Timestamp::now().as_microsecond())
                .await;
        }
        self.audited(entry, None, None).await.map(drop)
    }

    /// Pauses (`paused`) or resumes `destination` for good (a restart keeps it), recording
    /// `entry` in the same transaction.
    pub async fn switch_destination(
        &self,
        destination: String,
        paused: bool,
        entry: AuditEntry,
    ) -> Result<(), StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            let at = jiff::Timestamp::now().as_microsecond();
            return postgres
                .switch_destination(destination, paused, entry, at)
                .await;
        }
        self.audited(entry, None, Some((destination, paused)))
            .await
            .map(drop)
    }

    /// The destinations paused from the console, by name (a reader connection).
    pub fn paused_destinations(&self) -> Result<Vec<String>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.paused_destinations();
        }
        self.shared.readers.with(|connection| {
            let mut statement = connection.prepare_cached(PAUSED_SQL)?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect()
        })
    }

    /// Makes the held bundle of journal row `journal_id` due now (the releaser maps it at
    /// its next round, with what is known), recording `entry` in the same transaction;
    /// `false` if it was not held.
    pub async fn release_hold_now(
        &self,
        journal_id: i64,
        entry: AuditEntry,
    ) -> Result<bool, StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres
                .release_hold_now(journal_id, entry, jiff::Timestamp::now().as_microsecond())
                .await;
        }
        self.audited(entry, Some(journal_id), None).await
    }

    async fn audited(
        &self,
        entry: AuditEntry,
        release_hold: Option<i64>,
        pause: Option<(String, bool)>,
    ) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Audit {
            entry,
            at: jiff::Timestamp::now().as_microsecond(),
            release_hold,
            pause,
            changed: false,
            reply,
        })
        .await?;
        answer.await.map_err(|_| self.closed())?
    }

    /// The newest `limit` audit rows, newest first (blocking pool).
    pub async fn recent_audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.recent_audit(limit).await;
        }
        self.read_blocking(move |connection| recent(connection, limit))
            .await
    }

    /// The outbound rows produced from journal row `journal_id`, oldest first (blocking pool).
    pub async fn lineage(&self, journal_id: i64) -> Result<Vec<LineageRow>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.lineage(journal_id).await;
        }
        self.read_blocking(move |connection| lineage(connection, journal_id))
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{OutboundItem, StoreOptions};
    use super::*;

    #[tokio::test]
    async fn ok_pause_is_kept_with_its_audit_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sqlite");
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        let entry = |action: &str| AuditEntry {
            user: "olga".into(),
            action: action.into(),
            target: "destination:ehr".into(),
            reason: "maintenance".into(),
        };
        store
            .switch_destination("ehr".into(), true, entry("pause"))
            .await
            .unwrap();
        store
            .switch_destination("ehr".into(), true, entry("pause"))
            .await
            .unwrap();
        store
            .switch_destination("lab".into(), true, entry("pause"))
            .await
            .unwrap();
        store
            .switch_destination("lab".into(), false, entry("resume"))
            .await
            .unwrap();
        store.close().await;
        drop(store);
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        assert_eq!(store.paused_destinations().unwrap(), ["ehr"]);
        assert_eq!(store.recent_audit(10).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn ok_audit_then_read_and_lineage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.sqlite"), StoreOptions::default()).unwrap();
        let entry = AuditEntry {
            user: "alice".into(),
            action: "view".into(),
            target: "journal:1".into(),
            reason: String::new(),
        };
        store.audit(entry.clone()).await.unwrap();
        let recent = store.recent_audit(10).await.unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].entry, entry);

        let ids = store
            .enqueue(vec![OutboundItem {
                destination: "ehr".into(),
                control_id: "C1".into(),
                payload: Bytes::from_static(b"MSH|^~\\&|"),
                source: "journal:1".into(),
            }])
            .await
            .unwrap();
        store
            .mark_delivered(ids[0], Bytes::from_static(b"MSA|AA|C1"))
            .await
            .unwrap();
        let lineage = store.lineage(1).await.unwrap();
        assert_eq!(lineage.len(), 1);
        assert_eq!(lineage[0].status, OutboundStatus::Delivered);
        assert_eq!(lineage[0].ack.as_deref(), Some(&b"MSA|AA|C1"[..]));
        assert!(store.lineage(2).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ok_release_now_then_err_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.sqlite"), StoreOptions::default()).unwrap();
        let id = store
            .journal(super::super::tests::record("B1", b"{}"))
            .await
            .unwrap()
            .id();
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
        assert!(store.hold(id, "100001".into(), later).await.unwrap());
        let entry = AuditEntry {
            user: "olga".into(),
            action: "release".into(),
            target: format!("hold:{id}"),
            reason: "patient admitted by phone".into(),
        };
        assert!(store.release_hold_now(id, entry.clone()).await.unwrap());
        let (due, _) = store.due_holds(jiff::Timestamp::now()).await.unwrap();
        assert_eq!(due.iter().map(|h| h.journal_id).collect::<Vec<_>>(), [id]);
        assert!(
            !store.release_hold_now(id + 1, entry).await.unwrap(),
            "not held"
        );
        assert_eq!(
            store.recent_audit(10).await.unwrap().len(),
            2,
            "both recorded"
        );
    }
}

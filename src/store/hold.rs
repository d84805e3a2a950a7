//! Pushed bundles held until their patient is known (schema version 4, `push_holds`).
//!
//! A bundle pushed for a patient the census does not know yet is journaled (`accepted`) and
//! held: one `push_holds` row with its journal id, the patient's partner id (the IPP), when it
//! was held and when it must be released at the latest. Its journal row stays `accepted` while
//! it is held.
//!
//! # Exactly once
//!
//! [`Store::deliver_bundle`] enqueues the messages of a bundle, marks its journal row
//! `processed` and, for a held bundle, marks the hold released, all in ONE transaction of the
//! writer. Every step is guarded by the state it expects (hold not released, journal row
//! `accepted`): when a guard fails nothing is enqueued and the caller learns
//! [`DeliverOutcome::AlreadyDone`]. A crash before the commit leaves the bundle held (released
//! again after the restart); after it, released once. Nothing is duplicated or lost.
//!
//! [`Store::hold`] inserts the hold only if the journal row is still `accepted` and no hold
//! exists for it, so a bundle pushed again while held is not held twice.

use rusqlite::{Connection, Row, Transaction};
use tokio::sync::oneshot;

use super::queue::{self, PreparedItem, micros_to_timestamp, timestamp};
use super::writer::Request;
use super::{OutboundItem, Store, StoreError};

/// Why a held bundle was released; stored in `released_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseReason {
    /// The census learned the patient (an ADT arrived): mapped with the census identity.
    PatientKnown,
    /// The hold time ran out: mapped with what the bundle says of the patient.
    HoldExpired,
}

impl ReleaseReason {
    /// The text stored in `released_reason` (and used as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PatientKnown => "patient known",
            Self::HoldExpired => "hold expired",
        }
    }
}

impl std::fmt::Display for ReleaseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One bundle still held: what the releaser and `ordobridge queue` need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBundle {
    /// Journal row of the bundle (its bytes).
    pub journal_id: i64,
    /// The patient's `id://partner` identifier (the IPP): PHI, never logged above trace.
    pub partner_id: String,
    /// When it was held.
    pub held_at: jiff::Timestamp,
    /// When it is released with what is known, if its patient is still unknown.
    pub release_at: jiff::Timestamp,
}

/// How many bundles are held and since when: what `/status` and `/metrics` show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoldOverview {
    /// Bundles still held.
    pub held: u64,
    /// When the oldest of them was held.
    pub oldest_held_at: Option<jiff::Timestamp>,
}

/// What [`Store::deliver_bundle`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliverOutcome {
    /// The messages were enqueued (row ids in item order), the journal row marked processed
    /// and the hold, if any, released.
    Queued {
        /// Outbound row ids.
        ids: Vec<i64>,
    },
    /// The journal row was not `accepted` any more, or the hold was already released: someone
    /// else delivered this bundle; nothing was enqueued.
    AlreadyDone,
}

/// A hold to record, prepared on the caller's task (either backend records it).
#[derive(Debug)]
pub(super) struct NewHold {
    pub(super) journal_id: i64,
    pub(super) partner_id: String,
    pub(super) held_at: i64,
    pub(super) release_at: i64,
}

/// A bundle's messages with the journal row (and hold) they settle, prepared on the caller's
/// task; either backend settles it in one transaction, with the same guards in the same order
/// (see the module docs).
#[derive(Debug)]
pub(super) struct Delivery {
    pub(super) journal_id: i64,
    pub(super) items: Vec<PreparedItem>,
    /// For a held bundle: why it is released and when (unix microseconds).
    pub(super) release: Option<(ReleaseReason, i64)>,
    /// For a document (`$send-to-ehr`): its transaction id and when it was accepted (unix
    /// microseconds), recorded with the messages for `$tracking`.
    pub(super) document: Option<(String, i64)>,
}

impl Delivery {
    /// A pushed bundle's messages; with `release`, its hold is released now.
    pub(super) fn bundle(
        journal_id: i64,
        items: Vec<OutboundItem>,
        release: Option<ReleaseReason>,
    ) -> Delivery {
        Delivery {
            journal_id,
            items: queue::prepare(items),
            release: release.map(|reason| (reason, queue::now_micros())),
            document: None,
        }
    }

    /// The `document_messages` rows of a document whose messages got `ids` (item order):
    /// `(outbound id, destination)`.
    pub(super) fn tracked<'a>(&'a self, ids: &[i64]) -> Vec<(i64, &'a str)> {
        ids.iter()
            .zip(&self.items)
            .map(|(id, item)| (*id, item.destination()))
            .collect()
    }

    /// A document's messages, tracked under `transaction_id`.
    pub(super) fn document(
        journal_id: i64,
        items: Vec<PreparedItem>,
        transaction_id: String,
        accepted_at: i64,
    ) -> Delivery {
        Delivery {
            journal_id,
            items,
            release: None,
            document: Some((transaction_id, accepted_at)),
        }
    }
}

const HOLD_SQL: &str = "INSERT INTO push_holds (journal_id, partner_id, held_at, release_at)
    SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM journal WHERE id = ?1 AND status = 'accepted')
    ON CONFLICT (journal_id) DO NOTHING";

const RELEASE_SQL: &str = "UPDATE push_holds SET released_at = ?2, released_reason = ?3
    WHERE journal_id = ?1 AND released_at IS NULL";

const PROCESSED_SQL: &str =
    "UPDATE journal SET status = 'processed' WHERE id = ?1 AND status = 'accepted'";

/// Columns read by [`held`], in order.
macro_rules! held_columns {
    () => {
        "SELECT journal_id, partner_id, held_at, release_at FROM push_holds \
         WHERE released_at IS NULL"
    };
}

const HELD_SQL: &str = concat!(held_columns!(), " ORDER BY held_at, journal_id LIMIT ?1");
const HELD_ONE_SQL: &str = concat!(held_columns!(), " AND journal_id = ?1");
/// Held bundles to release now: due, or whose partner id the census knows (indexed look-up
/// on `census_patients.ipp`, so one query per wake-up whatever the census size).
const DUE_SQL: &str = concat!(
    held_columns!(),
    " AND (release_at <= ?1 OR EXISTS (SELECT 1 FROM census_patients p \
     WHERE p.ipp = push_holds.partner_id)) ORDER BY held_at, journal_id"
);
const NEXT_RELEASE_SQL: &str = "SELECT min(release_at) FROM push_holds WHERE released_at IS NULL";
const OVERVIEW_SQL: &str =
    "SELECT count(*), min(held_at) FROM push_holds WHERE released_at IS NULL";

/// A pushed bundle journaled `accepted` that is neither held nor processed: its push was
/// answered with an error, or its client went away, before it was mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsettledPush {
    pub journal_id: i64,
    pub received_at: jiff::Timestamp,
    pub raw: Vec<u8>,
}

/// Unsettled pushes of channel `?1` after journal id `?2`, oldest first (rowid order from
/// `?2`: the scan starts where the previous sweep stopped).
const UNSETTLED_SQL: &str = concat!(
    "SELECT id, received_at, raw FROM journal WHERE id > ?2 AND ",
    super::read::unsettled_push!(),
    " ORDER BY id LIMIT ?3"
);

/// A still-accepted row becomes rejected with its reason (`kept` follows the status, so a
/// later push of the same bundle is journaled anew rather than taken for a duplicate).
pub(super) const REJECT_SQL: &str = "UPDATE journal SET status = 'rejected', kept = 0, reason = ?2
    WHERE id = ?1 AND status = 'accepted'";

impl Store {
    /// Pushed bundles left `accepted` without a hold, after journal id `after` (see
    /// [`UnsettledPush`]); at most `limit`, oldest first. Also returns the highest journal id
    /// when the query ran: with no row returned, nothing up to it is unsettled.
    pub async fn unsettled_pushes(
        &self,
        channel: &str,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<UnsettledPush>, i64), StoreError> {
        let channel = channel.to_string();
        if let Some(postgres) = self.postgres() {
            return postgres.unsettled_pushes(channel, after, limit).await;
        }
        self.read_blocking(move |connection| {
            let last = super::read::last_journal_id(connection)?;
            let mut statement = connection.prepare_cached(UNSETTLED_SQL)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = statement.query_map(rusqlite::params![channel, after, limit], |row| {
                Ok(UnsettledPush {
                    journal_id: row.get(0)?,
                    received_at: micros_to_timestamp(row.get(1)?, 1)?,
                    raw: row.get(2)?,
                })
            })?;
            Ok((rows.collect::<rusqlite::Result<Vec<_>>>()?, last))
        })
        .await
    }

    /// Marks an `accepted` journal row rejected with `reason` (a pushed bundle that no mapping
    /// can take); `false` if the row was no longer `accepted`. Resolves after the commit.
    pub async fn reject_accepted(
        &self,
        journal_id: i64,
        reason: String,
    ) -> Result<bool, StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.reject_accepted(journal_id, reason).await;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Reject {
            journal_id,
            reason,
            changed: false,
            reply,
        })
        .await?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Holds journal row `journal_id` (a pushed bundle) until `release_at` or until its
    /// patient is known; resolves after the commit. `false` when it was not held now: already
    /// held, or its journal row is no longer `accepted` (delivered meanwhile).
    pub async fn hold(
        &self,
        journal_id: i64,
        partner_id: String,
        release_at: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        let hold = NewHold {
            journal_id,
            partner_id,
            held_at: queue::now_micros(),
            release_at: release_at.as_microsecond(),
        };
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.hold(hold).await;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Hold {
            hold,
            inserted: false,
            reply,
        })
        .await?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Enqueues the messages of a pushed bundle, marks its journal row processed and, with
    /// `release`, marks its hold released, in one transaction (see the module docs).
    pub async fn deliver_bundle(
        &self,
        journal_id: i64,
        items: Vec<OutboundItem>,
        release: Option<ReleaseReason>,
    ) -> Result<DeliverOutcome, StoreError> {
        let delivery = Delivery::bundle(journal_id, items, release);
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.deliver(delivery).await;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Deliver {
            delivery,
            outcome: None,
            reply,
        })
        .await?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Bundles still held, oldest first; `limit` 0 means no limit (blocking).
    pub fn held_bundles(&self, limit: usize) -> Result<Vec<HeldBundle>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.block_held_bundles(limit);
        }
        self.shared
            .readers
            .with(|connection| held(connection, HELD_SQL, limit_param(limit)))
    }

    /// [`Store::held_bundles`] on the blocking pool, for async callers.
    pub async fn held_bundles_async(&self, limit: usize) -> Result<Vec<HeldBundle>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.held_bundles(limit).await;
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.held_bundles(limit))
            .await
            .map_err(|source| self.read_task(source))?
    }

    /// The hold of journal row `journal_id` if it is still held (blocking pool).
    pub async fn held_bundle(&self, journal_id: i64) -> Result<Option<HeldBundle>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.held_bundle(journal_id).await;
        }
        self.read_blocking(move |connection| {
            held(connection, HELD_ONE_SQL, journal_id).map(|mut v| v.pop())
        })
        .await
    }

    /// Held bundles to release at `now` (due, or the census knows their partner id), and
    /// the earliest `release_at` of all still held (blocking pool): one releaser round.
    pub async fn due_holds(
        &self,
        now: jiff::Timestamp,
    ) -> Result<(Vec<HeldBundle>, Option<jiff::Timestamp>), StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.due_holds(now).await;
        }
        self.read_blocking(move |connection| {
            let due = held(connection, DUE_SQL, now.as_microsecond())?;
            let next: Option<i64> = connection
                .prepare_cached(NEXT_RELEASE_SQL)?
                .query_row([], |row| row.get(0))?;
            let next = next.map(|m| micros_to_timestamp(m, 0)).transpose()?;
            Ok((due, next))
        })
        .await
    }

    /// How many bundles are held and the oldest hold time (blocking).
    pub fn hold_overview(&self) -> Result<HoldOverview, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.block_hold_overview();
        }
        self.shared.readers.with(|connection| {
            connection
                .prepare_cached(OVERVIEW_SQL)?
                .query_row([], |row| {
                    let oldest: Option<i64> = row.get(1)?;
                    Ok(HoldOverview {
                        held: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        oldest_held_at: oldest.map(|m| micros_to_timestamp(m, 1)).transpose()?,
                    })
                })
        })
    }

    /// [`Store::hold_overview`] on the blocking pool, for `/status` and `/metrics`.
    pub async fn hold_overview_async(&self) -> Result<HoldOverview, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.hold_overview().await;
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.hold_overview())
            .await
            .map_err(|source| self.read_task(source))?
    }
}

/// `LIMIT -1` is SQLite's "no limit".
fn limit_param(limit: usize) -> i64 {
    match limit {
        0 => -1,
        limit => i64::try_from(limit).unwrap_or(i64::MAX),
    }
}

fn held(connection: &Connection, sql: &str, param: i64) -> rusqlite::Result<Vec<HeldBundle>> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map([param], held_row)?;
    rows.collect()
}

fn held_row(row: &Row<'_>) -> rusqlite::Result<HeldBundle> {
    Ok(HeldBundle {
        journal_id: row.get(0)?,
        partner_id: row.get(1)?,
        held_at: timestamp(row, 2)?,
        release_at: timestamp(row, 3)?,
    })
}

/// Records a hold in the writer's transaction; `true` when a row was inserted.
pub(super) fn insert(transaction: &Transaction<'_>, hold: &NewHold) -> rusqlite::Result<bool> {
    let changed = transaction
        .prepare_cached(HOLD_SQL)?
        .execute(rusqlite::params![
            hold.journal_id,
            hold.partner_id,
            hold.held_at,
            hold.release_at,
        ])?;
    Ok(changed > 0)
}

/// Settles a bundle in the writer's transaction (see the module docs).
pub(super) fn deliver(
    transaction: &Transaction<'_>,
    delivery: &Delivery,
) -> rusqlite::Result<DeliverOutcome> {
    if let Some((reason, at)) = delivery.release {
        let released = transaction
            .prepare_cached(RELEASE_SQL)?
            .execute(rusqlite::params![delivery.journal_id, at, reason.as_str(),])?;
        if released == 0 {
            return Ok(DeliverOutcome::AlreadyDone);
        }
    }
    let processed = transaction
        .prepare_cached(PROCESSED_SQL)?
        .execute([delivery.journal_id])?;
    if processed == 0 {
        return Ok(DeliverOutcome::AlreadyDone);
    }
    let mut ids = Vec::with_capacity(delivery.items.len());
    queue::insert(transaction, &delivery.items, &mut ids)?;
    if let Some((transaction_id, accepted_at)) = &delivery.document {
        super::documents::insert_tracking(
            transaction,
            delivery.journal_id,
            transaction_id,
            *accepted_at,
            &delivery.tracked(&ids),
        )?;
    }
    Ok(DeliverOutcome::Queued { ids })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::tests::record;
    use crate::store::{EntryStatus, StoreOptions};
    use rstest::rstest;

    fn item(control_id: &str) -> OutboundItem {
        OutboundItem {
            destination: "ehr".to_owned(),
            control_id: control_id.to_owned(),
            payload: bytes::Bytes::from_static(b"MSH|^~\\&|OB"),
            source: "journal:1".to_owned(),
        }
    }

    fn later(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds)
    }

    async fn open(dir: &tempfile::TempDir) -> (Store, i64) {
        let store = Store::open(&dir.path().join("s.sqlite"), StoreOptions::default()).unwrap();
        let id = store.journal(record("B1", b"{}")).await.unwrap().id();
        (store, id)
    }

    fn count(store: &Store, sql: &str) -> i64 {
        rusqlite::Connection::open(store.path())
            .unwrap()
            .query_row(sql, [], |row| row.get(0))
            .unwrap()
    }

    #[rstest]
    #[case::ok_known(ReleaseReason::PatientKnown, "patient known")]
    #[case::ok_expired(ReleaseReason::HoldExpired, "hold expired")]
    fn ok_reason_text(#[case] reason: ReleaseReason, #[case] text: &str) {
        assert_eq!(reason.as_str(), text);
        assert_eq!(reason.to_string(), text);
    }

    #[tokio::test]
    async fn ok_hold_once_then_release_enqueues_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = open(&dir).await;
        assert!(store.hold(id, "100001".into(), later(600)).await.unwrap());
        // Pushed again while held: not held twice.
        assert!(!store.hold(id, "100001".into(), later(600)).await.unwrap());
        let held = store.held_bundles(0).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].journal_id, id);
        assert_eq!(held[0].partner_id, "100001");
        assert_eq!(store.held_bundle(id).await.unwrap(), Some(held[0].clone()));
        let overview = store.hold_overview().unwrap();
        assert_eq!(overview.held, 1);
        assert_eq!(overview.oldest_held_at, Some(held[0].held_at));
        // Neither due nor known yet.
        let (due, next) = store.due_holds(jiff::Timestamp::now()).await.unwrap();
        assert!(due.is_empty());
        assert_eq!(next, Some(held[0].release_at));

        let outcome = store
            .deliver_bundle(id, vec![item("OB1-1")], Some(ReleaseReason::PatientKnown))
            .await
            .unwrap();
        assert!(matches!(outcome, DeliverOutcome::Queued { ref ids } if ids.len() == 1));
        // A second release (a racing releaser, a replay after a crash) enqueues nothing.
        let again = store
            .deliver_bundle(id, vec![item("OB1-1")], Some(ReleaseReason::HoldExpired))
            .await
            .unwrap();
        assert_eq!(again, DeliverOutcome::AlreadyDone);
        assert_eq!(count(&store, "SELECT count(*) FROM outbound"), 1);
        assert_eq!(
            store.journal_entry(id).unwrap().unwrap().summary.status,
            EntryStatus::Processed.as_str()
        );
        assert!(store.held_bundles(0).unwrap().is_empty());
        assert_eq!(store.hold_overview().unwrap(), HoldOverview::default());
        let reason: String = rusqlite::Connection::open(store.path())
            .unwrap()
            .query_row(
                "SELECT released_reason FROM push_holds WHERE journal_id = ?1",
                [id],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(reason, "patient known");
    }

    #[tokio::test]
    async fn ok_deliver_without_hold_is_guarded_by_the_journal_status() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = open(&dir).await;
        let first = store
            .deliver_bundle(id, vec![item("OB1-1"), item("OB1-2")], None)
            .await
            .unwrap();
        assert!(matches!(first, DeliverOutcome::Queued { ref ids } if ids.len() == 2));
        let second = store
            .deliver_bundle(id, vec![item("OB1-1")], None)
            .await
            .unwrap();
        assert_eq!(second, DeliverOutcome::AlreadyDone);
        assert_eq!(count(&store, "SELECT count(*) FROM outbound"), 2);
        // A processed row is not held afterwards.
        assert!(!store.hold(id, "100001".into(), later(60)).await.unwrap());
    }

    #[tokio::test]
    async fn ok_due_when_expired_or_known_to_the_census() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite"), StoreOptions::default()).unwrap();
        let a = store.journal(record("A", b"a")).await.unwrap().id();
        let b = store.journal(record("B", b"b")).await.unwrap().id();
        let c = store.journal(record("C", b"c")).await.unwrap().id();
        store.hold(a, "1".into(), later(-1)).await.unwrap();
        store.hold(b, "2".into(), later(600)).await.unwrap();
        store.hold(c, "3".into(), later(900)).await.unwrap();
        rusqlite::Connection::open(store.path())
            .unwrap()
            .execute_batch("INSERT INTO census_patients (ipp, journal_id) VALUES ('2', 9)")
            .unwrap();
        let (due, next) = store.due_holds(jiff::Timestamp::now()).await.unwrap();
        let ids: Vec<i64> = due.iter().map(|h| h.journal_id).collect();
        assert_eq!(ids, [a, b]);
        assert!(next.is_some_and(|n| n <= jiff::Timestamp::now()));
    }

    #[tokio::test]
    async fn err_failed_enqueue_leaves_the_bundle_held() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = open(&dir).await;
        store.hold(id, "100001".into(), later(600)).await.unwrap();
        rusqlite::Connection::open(store.path())
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse_bad BEFORE INSERT ON outbound
                 WHEN NEW.control_id = 'BAD'
                 BEGIN SELECT RAISE(ABORT, 'refused by test'); END;",
            )
            .unwrap();
        let err = store
            .deliver_bundle(
                id,
                vec![item("OB1-1"), item("BAD")],
                Some(ReleaseReason::PatientKnown),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "store `{}`: batch of 1 request(s) not committed",
                store.path().display()
            )
        );
        // Rolled back as one: still held, still accepted, nothing queued.
        assert_eq!(store.held_bundles(0).unwrap().len(), 1);
        assert_eq!(
            store.journal_entry(id).unwrap().unwrap().summary.status,
            EntryStatus::Accepted.as_str()
        );
        assert_eq!(count(&store, "SELECT count(*) FROM outbound"), 0);
        // The next attempt goes through.
        let outcome = store
            .deliver_bundle(id, vec![item("OB1-1")], Some(ReleaseReason::PatientKnown))
            .await
            .unwrap();
        assert!(matches!(outcome, DeliverOutcome::Queued { .. }));
    }

    #[tokio::test]
    async fn ok_holds_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = open(&dir).await;
        store.hold(id, "100001".into(), later(600)).await.unwrap();
        store.close().await;
        let store = Store::open(&dir.path().join("s.sqlite"), StoreOptions::default()).unwrap();
        let held = store.held_bundles(10).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].journal_id, id);
    }

    #[tokio::test]
    async fn err_unknown_reason_refused_by_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = open(&dir).await;
        store.hold(id, "100001".into(), later(600)).await.unwrap();
        let connection = rusqlite::Connection::open(store.path()).unwrap();
        let err = connection
            .execute(
                "UPDATE push_holds SET released_at = 1, released_reason = 'lost'",
                [],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("CHECK constraint failed"), "{err}");
        // A reason without a time (or the reverse) is refused too.
        let err = connection
            .execute("UPDATE push_holds SET released_reason = 'hold expired'", [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CHECK constraint failed"), "{err}");
    }
}

//! Documents sent into the EHR (`$send-to-ehr`, schema version 8) and what the FHIR search
//! reads of the census.
//!
//! A document's journal row is settled like a pushed bundle ([`Store::deliver_document`]): its
//! messages are enqueued, the row marked processed and its tracking (`documents`: the
//! transaction id; `document_messages`: the outbound row of each destination) inserted, all in
//! ONE transaction of the writer. [`Store::document_tracking`] reads the tracking with the
//! current state of each message in the queue.
//!
//! The FHIR ids of patients and encounters are the census row ids (`census_patients.id`,
//! `census_encounters.id`): stable, and not an identifier of the patient.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::oneshot;

use super::census::{PatientKey, PatientView};
use super::hold::{DeliverOutcome, Delivery};
use super::queue::{self, micros_to_timestamp};
use super::writer::Request;
use super::{OutboundItem, OutboundStatus, Store, StoreError};

/// How to find a patient for the FHIR routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CensusLookup {
    /// `Patient/{id}` (a merged patient gives the survivor).
    Patient(i64),
    /// `Encounter/{id}`: the patient, with that encounter as `current`.
    Encounter(i64),
    /// By IPP, NDA (that encounter as `current`) or INS.
    Key(PatientKey),
}

/// A census patient with the row ids the FHIR resources are named by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CensusRecord {
    /// `census_patients.id` of the survivor: the Patient's id.
    pub patient_id: i64,
    /// What the census knows.
    pub view: PatientView,
    /// `census_encounters.id` of each encounter by NDA, in the order of `view.encounters`.
    pub encounter_ids: Vec<(String, i64)>,
}

impl CensusRecord {
    /// The row id of the encounter with this NDA.
    pub fn encounter_id(&self, nda: &str) -> Option<i64> {
        self.encounter_ids
            .iter()
            .find(|(n, _)| n == nda)
            .map(|(_, id)| *id)
    }
}

/// One destination's message of a tracked document, with its state in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedMessage {
    /// The `[outbound.NAME]` destination.
    pub destination: String,
    /// Its outbound row.
    pub outbound_id: i64,
    /// The row's state; `None` when the row is gone (pruned).
    pub state: Option<MessageState>,
}

/// The queue state of one outbound row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    pub status: OutboundStatus,
    /// Attempts that reached (or may have reached) the receiver.
    pub attempts: u32,
    /// Whether an older message of the same destination is still pending before it.
    pub waiting_behind: bool,
    /// When the receiver acknowledged it.
    pub delivered_at: Option<jiff::Timestamp>,
    /// When it was dead-lettered.
    pub dead_at: Option<jiff::Timestamp>,
    /// Why the last attempt failed (the dead letter's reason).
    pub last_error: Option<String>,
}

/// A document's tracking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentTracking {
    /// The journal row of the request.
    pub journal_id: i64,
    /// The id `$tracking` is asked with.
    pub transaction_id: String,
    /// When it was accepted.
    pub accepted_at: jiff::Timestamp,
    /// One per destination that got a message, in route order.
    pub messages: Vec<TrackedMessage>,
}

const DOCUMENT_INSERT: &str =
    "INSERT INTO documents (journal_id, transaction_id, accepted_at) VALUES (?1, ?2, ?3)";
const DOCUMENT_MESSAGE_INSERT: &str =
    "INSERT INTO document_messages (journal_id, outbound_id, destination) VALUES (?1, ?2, ?3)";
const DOCUMENT_BY_JOURNAL: &str =
    "SELECT journal_id, transaction_id, accepted_at FROM documents WHERE journal_id = ?1";
const DOCUMENT_BY_TRANSACTION: &str =
    "SELECT journal_id, transaction_id, accepted_at FROM documents WHERE transaction_id = ?1";
const DOCUMENT_MESSAGES: &str = "SELECT m.destination, m.outbound_id, o.status, o.attempts,
        o.delivered_at, o.dead_at, o.last_error,
        EXISTS (SELECT 1 FROM outbound b WHERE b.destination = o.destination
                AND b.status = 'pending' AND b.id < o.id)
    FROM document_messages m LEFT JOIN outbound o ON o.id = m.outbound_id
    WHERE m.journal_id = ?1 ORDER BY m.outbound_id";

fn tracking(
    connection: &Connection,
    sql: &str,
    key: &dyn rusqlite::ToSql,
) -> rusqlite::Result<Option<DocumentTracking>> {
    let Some((journal_id, transaction_id, accepted_at)) = connection
        .prepare_cached(sql)?
        .query_row([key], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let time = |micros: Option<i64>, column| micros.map(|m| micros_to_timestamp(m, column));
    let messages = connection
        .prepare_cached(DOCUMENT_MESSAGES)?
        .query_map([journal_id], |row| {
            let status: Option<String> = row.get(2)?;
            let state = message_state(status.as_deref(), |status| -> rusqlite::Result<_> {
                Ok(MessageState {
                    status,
                    attempts: row.get(3)?,
                    delivered_at: time(row.get(4)?, 4).transpose()?,
                    dead_at: time(row.get(5)?, 5).transpose()?,
                    last_error: row.get(6)?,
                    waiting_behind: row.get(7)?,
                })
            })?;
            Ok(TrackedMessage {
                destination: row.get(0)?,
                outbound_id: row.get(1)?,
                state,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(DocumentTracking {
        journal_id,
        transaction_id,
        accepted_at: micros_to_timestamp(accepted_at, 2)?,
        messages,
    }))
}

/// The state of a tracked message from the `status` of its queue row (both backends; the
/// rest of the row is read by `state`): none when the row is gone (pruned) or has a status
/// this build does not know.
pub(super) fn message_state<E>(
    status: Option<&str>,
    state: impl FnOnce(OutboundStatus) -> Result<MessageState, E>,
) -> Result<Option<MessageState>, E> {
    match status.and_then(|text| OutboundStatus::from_bytes(text.as_bytes())) {
        Some(status) => state(status).map(Some),
        None => Ok(None),
    }
}

/// Records the tracking of a document whose messages were just enqueued (writer transaction).
pub(super) fn insert_tracking(
    transaction: &Transaction<'_>,
    journal_id: i64,
    transaction_id: &str,
    accepted_at: i64,
    messages: &[(i64, &str)],
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached(DOCUMENT_INSERT)?
        .execute(params![journal_id, transaction_id, accepted_at])?;
    let mut insert = transaction.prepare_cached(DOCUMENT_MESSAGE_INSERT)?;
    for (outbound_id, destination) in messages {
        insert.execute(params![journal_id, outbound_id, destination])?;
    }
    Ok(())
}

impl Store {
    /// The census record for `lookup` on the blocking pool (the FHIR routes).
    pub async fn census_record(
        &self,
        lookup: CensusLookup,
    ) -> Result<Option<CensusRecord>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.census_record(lookup).await;
        }
        self.read_blocking(move |connection| super::census::sqlite_record(connection, &lookup))
            .await
    }

    /// Enqueues the messages of a document, marks its journal row processed and records its
    /// tracking under `transaction_id`, in one transaction; `AlreadyDone` (nothing written)
    /// when the journal row was no longer `accepted`.
    pub async fn deliver_document(
        &self,
        journal_id: i64,
        items: Vec<OutboundItem>,
        transaction_id: String,
    ) -> Result<DeliverOutcome, StoreError> {
        let delivery = Delivery::document(
            journal_id,
            queue::prepare(items),
            transaction_id,
            queue::now_micros(),
        );
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

    /// The tracking of the document journaled as `journal_id`, if it was delivered.
    pub async fn document_by_journal(
        &self,
        journal_id: i64,
    ) -> Result<Option<DocumentTracking>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.document_by_journal(journal_id).await;
        }
        self.read_blocking(move |connection| tracking(connection, DOCUMENT_BY_JOURNAL, &journal_id))
            .await
    }

    /// The tracking of a document by its transaction id, with its messages' queue state.
    pub async fn document_tracking(
        &self,
        transaction_id: String,
    ) -> Result<Option<DocumentTracking>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.document_tracking(transaction_id).await;
        }
        self.read_blocking(move |connection| {
            tracking(connection, DOCUMENT_BY_TRANSACTION, &transaction_id)
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::tests::record;
    use crate::store::{EntryStatus, RetentionPlan, StoreOptions};

    fn item(destination: &str) -> OutboundItem {
        OutboundItem {
            destination: destination.to_owned(),
            control_id: format!("DOC1-{destination}"),
            payload: bytes::Bytes::from_static(b"MSH|^~\\&|OB"),
            source: "journal:1".to_owned(),
        }
    }

    /// A plan that prunes nothing but document tracking accepted before `now + 1 s`.
    fn tracking_only() -> RetentionPlan {
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
        RetentionPlan::keeping(later, None, None)
            .with_document_tracking(Some(std::time::Duration::ZERO))
    }

    #[tokio::test]
    async fn ok_delivered_with_tracking_once_then_pruned_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite"), StoreOptions::default()).unwrap();
        let journal_id = store.journal(record("D1", b"{}")).await.unwrap().id();
        let outcome = store
            .deliver_document(journal_id, vec![item("ehr"), item("mdm")], "T-1".into())
            .await
            .unwrap();
        let DeliverOutcome::Queued { ids } = outcome else {
            panic!("{outcome:?}")
        };
        // A second delivery of the same row does nothing (the journal row is processed).
        let again = store
            .deliver_document(journal_id, vec![item("ehr")], "T-2".into())
            .await
            .unwrap();
        assert_eq!(again, DeliverOutcome::AlreadyDone);
        let entry = store.journal_entry(journal_id).unwrap().unwrap();
        assert_eq!(entry.summary.status, EntryStatus::Processed.as_str());

        let tracking = store
            .document_tracking("T-1".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tracking.journal_id, journal_id);
        let states: Vec<(String, OutboundStatus, bool)> = tracking
            .messages
            .iter()
            .map(|m| {
                let state = m.state.as_ref().unwrap();
                (m.destination.clone(), state.status, state.waiting_behind)
            })
            .collect();
        assert_eq!(
            states,
            vec![
                ("ehr".to_string(), OutboundStatus::Pending, false),
                ("mdm".to_string(), OutboundStatus::Pending, false)
            ]
        );
        assert_eq!(store.document_tracking("T-2".into()).await.unwrap(), None);
        assert_eq!(
            store
                .document_by_journal(journal_id)
                .await
                .unwrap()
                .map(|t| t.transaction_id),
            Some("T-1".to_string())
        );

        // Old enough, but a message is still pending: kept.
        let (pruned, _) = store.prune(tracking_only(), 10).await.unwrap();
        assert_eq!(pruned.documents, 0);
        store
            .mark_delivered(ids[0], bytes::Bytes::new())
            .await
            .unwrap();
        store.mark_dead(ids[1], "AR").await.unwrap();
        let tracking = store
            .document_tracking("T-1".into())
            .await
            .unwrap()
            .unwrap();
        let dead = tracking.messages[1].state.as_ref().unwrap();
        assert_eq!(
            (dead.status, dead.last_error.as_deref()),
            (OutboundStatus::Dead, Some("AR"))
        );
        assert!(
            tracking.messages[0]
                .state
                .as_ref()
                .unwrap()
                .delivered_at
                .is_some()
        );
        let (pruned, _) = store.prune(tracking_only(), 10).await.unwrap();
        assert_eq!(pruned.documents, 1);
        assert_eq!(store.document_tracking("T-1".into()).await.unwrap(), None);
    }
}

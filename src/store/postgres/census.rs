//! The census on PostgreSQL: the executor of `store::census`'s rules (the same statements as
//! SQLite's, in this dialect), one transaction per update, and the views.
//!
//! # One apply per journal row, whichever node
//!
//! An update's transaction first locks its journal row (`SELECT … FOR UPDATE`) and applies
//! only if the row is still `accepted`: a second node (or a replay) applying the same row
//! waits for the first one's commit, then finds it `processed` and answers
//! [`ApplyStatus::AlreadyProcessed`](crate::store::ApplyStatus::AlreadyProcessed).
//! Two updates of one patient from two nodes at once (the engine runs one processor at a
//! time; this is the safety net) may collide on a unique key or deadlock: the loser's
//! transaction is rolled back and applied again, seeing the winner's rows.
//!
//! # Order and commits
//!
//! [`Postgres::submit_census`] applies a submission's updates one after the other, after
//! those of the submissions before it: per patient, the processor's journal-id order holds.
//! A submission (the processor's chunk, 32 updates) is one transaction with a savepoint around
//! each update, as SQLite's writer does: one commit for the chunk, and a failing update is
//! left out alone.
//!
//! # Why blocking, and the pipeline
//!
//! The rules (`census::apply`) are synchronous, written once for both backends; here they run
//! on a blocking thread of the backend's runtime, each read waiting for its answer from the
//! connection, which the runtime's workers drive. A write whose answer the rules do not use
//! (every `UPDATE`, most `INSERT`s) is not waited for: it is kept and sent with the next read
//! (or before the commit) in one pipeline, in order, so the server runs every statement in
//! the rules' order and an update costs one round trip per read, not per statement.

use std::cell::RefCell;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};

use super::{Inner, Postgres};
use crate::census::{CensusUpdate, EncounterStatus, Event, Patient, Practitioner};
use crate::store::census::{
    self, Census, EncounterRow, Facts, LookedUp, MovementRow, Read, State, StoredEncounter,
    StoredPatient, StoredPractitioner, ViewBy, Written,
};
use crate::store::{
    Anomaly, AnomalyView, CensusLookup, CensusOutcome, CensusRecord, MovementView, PatientKey,
    PatientView, StoreError,
};

/// Locks the journal row until the commit: a concurrent apply of the same row waits here.
const CLAIM: &str = "SELECT status FROM journal WHERE id = $1 FOR UPDATE";
/// `$2` is the note of a message the census could not use (NULL otherwise).
const MARK_PROCESSED: &str = "UPDATE journal SET status = 'processed', note = $2 WHERE id = $1";
const PATIENT_INSERT: &str = "INSERT INTO census_patients (ipp, legal_family, legal_given,
        used_family, used_given, birth_date, sex, reliability, ins, ins_oid, journal_id,
        identity_hash, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id";
const PATIENT_UPDATE: &str = "UPDATE census_patients SET legal_family = $2, legal_given = $3,
        used_family = $4, used_given = $5, birth_date = $6, sex = $7, reliability = $8,
        ins = $9, ins_oid = $10, journal_id = $11, identity_hash = $12, updated_at = $13
    WHERE id = $1";
const PATIENT_LOOKUP: &str =
    "SELECT id, merged_into, identity_hash, updated_at FROM census_patients WHERE ipp = $1";
const PATIENT_TOUCH: &str = "UPDATE census_patients SET updated_at = $2
    WHERE id = $1 AND coalesce(updated_at < $3, true)";
const PATIENT_BY_IPP: &str = "SELECT id, merged_into FROM census_patients WHERE ipp = $1";
const PATIENT_MERGED_INTO: &str = "SELECT merged_into FROM census_patients WHERE id = $1";
const PATIENT_IPP: &str = "SELECT ipp FROM census_patients WHERE id = $1";
const PATIENT_STUB: &str = "INSERT INTO census_patients (ipp, merged_into, journal_id, updated_at)
    VALUES ($1, $2, $3, $4)";
const PATIENT_MERGE: &str =
    "UPDATE census_patients SET merged_into = $2, journal_id = $3, updated_at = $4 WHERE id = $1";
const PATIENT_FLATTEN: &str = "UPDATE census_patients SET merged_into = $2 WHERE merged_into = $1";
const ENCOUNTERS_MOVE: &str = "UPDATE census_encounters SET patient_id = $2 WHERE patient_id = $1";
const IDENTIFIER_INSERT: &str = "INSERT INTO census_identifiers
    (patient_id, id_type, authority, value) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
/// Writes only when something changed.
const PRACTITIONER_UPSERT: &str = "INSERT INTO census_practitioners AS p
        (rpps, family, given, prefix, journal_id) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (rpps) DO UPDATE SET family = excluded.family, given = excluded.given,
        prefix = excluded.prefix, journal_id = excluded.journal_id
    WHERE p.family IS DISTINCT FROM excluded.family OR p.given IS DISTINCT FROM excluded.given
        OR p.prefix IS DISTINCT FROM excluded.prefix";
const ENCOUNTER_BY_NDA: &str = "SELECT id, patient_id, status, class, unit, attending, admitting,
    referring, admit_at, discharge_at, last_movement_at FROM census_encounters WHERE nda = $1";
const ENCOUNTER_INSERT: &str = "INSERT INTO census_encounters (nda, patient_id, status, class,
        unit, attending, admitting, referring, admit_at, discharge_at, last_movement_at,
        journal_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id";
const ENCOUNTER_UPDATE: &str = "UPDATE census_encounters SET status = $2, class = $3, unit = $4,
        attending = $5, admitting = $6, referring = $7, admit_at = $8, discharge_at = $9,
        last_movement_at = $10, journal_id = $11
    WHERE id = $1";
const MOVEMENT_BY_ID: &str = "SELECT seq, encounter_id, event, status, journal_id,
    updated_journal_id, cancel_journal_id FROM census_movements WHERE movement_id = $1";
const MOVEMENT_INSERT: &str = "INSERT INTO census_movements (movement_id, encounter_id, event,
        status, movement_at, class, unit, attending, admitting, referring, admit_at,
        discharge_at, journal_id, cancel_journal_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
const MOVEMENT_UPDATE: &str = "UPDATE census_movements SET encounter_id = $2, event = $3,
        movement_at = $4, class = $5, unit = $6, attending = $7, admitting = $8,
        referring = $9, admit_at = $10, discharge_at = $11, updated_journal_id = $12
    WHERE seq = $1";
const MOVEMENT_CANCEL: &str =
    "UPDATE census_movements SET status = 'cancelled', cancel_journal_id = $2 WHERE seq = $1";
const MOVEMENTS_ACTIVE: &str = "SELECT event, movement_at, class, unit, attending, admitting,
        referring, admit_at, discharge_at
    FROM census_movements WHERE encounter_id = $1 AND status = 'active'
    ORDER BY movement_at, seq";
const MOVEMENTS_LATEST: &str = "SELECT movement_id FROM census_movements
    WHERE encounter_id = $1 AND status = 'active' AND event = $2
    ORDER BY movement_at DESC, seq DESC LIMIT 1";
const ANOMALY_INSERT: &str =
    "INSERT INTO census_anomalies (journal_id, patient_id, kind, text) VALUES ($1, $2, $3, $4)";

const VIEW_PATIENT: &str = "SELECT ipp, legal_family, legal_given, used_family, used_given,
    birth_date, sex, reliability, ins, ins_oid FROM census_patients WHERE id = $1";
const VIEW_BY_IPP: &str = "SELECT id FROM census_patients WHERE ipp = $1";
const VIEW_BY_NDA: &str = "SELECT patient_id FROM census_encounters WHERE nda = $1";
const VIEW_BY_INS: &str = "SELECT id FROM census_patients WHERE ins = $1
    ORDER BY merged_into IS NULL DESC, id DESC LIMIT 1";
const VIEW_MERGED_IPPS: &str = "SELECT ipp FROM census_patients WHERE merged_into = $1 ORDER BY id";
const VIEW_ENCOUNTERS: &str = "SELECT nda, status, class, unit, attending, admitting, referring,
        admit_at, discharge_at
    FROM census_encounters WHERE patient_id = $1 ORDER BY last_movement_at DESC, id DESC";
const VIEW_MOVEMENTS: &str = "SELECT m.movement_id, e.nda, m.event, m.status, m.movement_at,
        m.unit, m.journal_id, m.updated_journal_id, m.cancel_journal_id
    FROM census_movements m JOIN census_encounters e ON e.id = m.encounter_id
    WHERE e.patient_id = $1 ORDER BY m.movement_at, m.seq";
const VIEW_ANOMALIES: &str = "SELECT journal_id, kind, text FROM census_anomalies
    WHERE patient_id = $1
       OR patient_id IN (SELECT id FROM census_patients WHERE merged_into = $1)
    ORDER BY id";
const VIEW_PRACTITIONER: &str =
    "SELECT rpps, family, given, prefix FROM census_practitioners WHERE rpps = $1";
const ENCOUNTER_NDA: &str = "SELECT nda FROM census_encounters WHERE id = $1";
const ENCOUNTER_IDS: &str = "SELECT nda, id FROM census_encounters WHERE patient_id = $1";

/// Around each update of a submission (see the module docs).
const SAVEPOINT: &str = "SAVEPOINT census_update";
const RELEASE: &str = "RELEASE SAVEPOINT census_update";
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT census_update; RELEASE SAVEPOINT census_update";

/// Tries of an update whose transaction lost to a concurrent one (see the module docs).
const TRIES: usize = 3;

type Params<'p> = [&'p (dyn ToSql + Sync)];

/// The executor: the statements of one transaction, run from a blocking thread.
struct Pg<'t, 'c> {
    transaction: &'t deadpool_postgres::Transaction<'c>,
    handle: &'t Handle,
    inner: &'t Inner,
    operation: &'static str,
    /// Writes not sent yet (see the module docs), in order.
    deferred: RefCell<Vec<(&'static str, Vec<Value>)>>,
}

impl<'t, 'c> Pg<'t, 'c> {
    fn new(
        transaction: &'t deadpool_postgres::Transaction<'c>,
        handle: &'t Handle,
        inner: &'t Inner,
        operation: &'static str,
    ) -> Pg<'t, 'c> {
        Pg {
            transaction,
            handle,
            inner,
            operation,
            deferred: RefCell::new(Vec::new()),
        }
    }
}

/// A parameter of a deferred write, owned (the caller's values are gone when it is sent).
#[derive(Debug)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Int(value) => value.to_sql(ty, out),
            Value::Text(value) => value.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <String as ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

impl From<&i64> for Value {
    fn from(value: &i64) -> Value {
        Value::Int(Some(*value))
    }
}

impl From<&Option<i64>> for Value {
    fn from(value: &Option<i64>) -> Value {
        Value::Int(*value)
    }
}

impl From<&&str> for Value {
    fn from(value: &&str) -> Value {
        Value::Text(Some((*value).to_owned()))
    }
}

impl From<&String> for Value {
    fn from(value: &String) -> Value {
        Value::Text(Some(value.clone()))
    }
}

impl From<&Option<String>> for Value {
    fn from(value: &Option<String>) -> Value {
        Value::Text(value.clone())
    }
}

impl From<&Option<&str>> for Value {
    fn from(value: &Option<&str>) -> Value {
        Value::Text(value.map(str::to_owned))
    }
}

/// The parameters of a deferred write.
macro_rules! values {
    ($($value:expr),* $(,)?) => {
        vec![$(Value::from($value)),*]
    };
}

impl Pg<'_, '_> {
    /// Sends the deferred writes, then `read` if any, in one pipeline; the read's rows.
    fn pipeline(&self, read: Option<(&str, &Params<'_>)>) -> Result<Option<Vec<Row>>, StoreError> {
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        self.handle
            .block_on(async {
                // Prepared first (cached per connection after its first use): the requests
                // below are then each sent when first polled, in this order.
                let mut writes = Vec::with_capacity(deferred.len());
                for (sql, values) in &deferred {
                    writes.push((self.transaction.prepare_cached(sql).await?, values));
                }
                let read = match read {
                    Some((sql, params)) => {
                        Some((self.transaction.prepare_cached(sql).await?, params))
                    }
                    None => None,
                };
                let sent = writes.iter().map(|(statement, values)| async move {
                    let params: Vec<&(dyn ToSql + Sync)> = values
                        .iter()
                        .map(|value| value as &(dyn ToSql + Sync))
                        .collect();
                    self.transaction.execute(statement, &params).await
                });
                let rows = async {
                    match &read {
                        Some((statement, params)) => {
                            self.transaction.query(statement, params).await.map(Some)
                        }
                        None => Ok(None),
                    }
                };
                let (written, rows) = futures::join!(futures::future::join_all(sent), rows);
                for result in written {
                    result?;
                }
                rows
            })
            .map_err(self.inner.failed(self.operation))
    }

    fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StoreError> {
        Ok(self.pipeline(Some((sql, params)))?.unwrap_or_default())
    }

    fn optional(&self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, StoreError> {
        let mut rows = self.query(sql, params)?;
        if rows.len() > 1 {
            return Err(self.inner.corrupt(
                self.operation,
                format!("{} rows where one at most was expected", rows.len()),
            ));
        }
        Ok(rows.pop())
    }

    fn one(&self, sql: &str, params: &Params<'_>) -> Result<Row, StoreError> {
        self.optional(sql, params)?.ok_or_else(|| {
            self.inner
                .corrupt(self.operation, "no row where one was expected".to_owned())
        })
    }

    /// A write whose answer is not needed: sent with the next read, or by [`Pg::flush`].
    fn execute(&self, sql: &'static str, values: Vec<Value>) -> Result<(), StoreError> {
        self.deferred.borrow_mut().push((sql, values));
        Ok(())
    }

    /// Sends the deferred writes (before a commit).
    fn flush(&self) -> Result<(), StoreError> {
        self.pipeline(None).map(drop)
    }
}

/// An encounter's state columns from `first` on (as SQLite's executor reads them).
fn state(row: &Row, first: usize) -> State {
    State {
        status: EncounterStatus::from_text(row.get(first)),
        class: row.get(first + 1),
        unit: row.get(first + 2),
        attending: row.get(first + 3),
        admitting: row.get(first + 4),
        referring: row.get(first + 5),
        admit_at: row.get(first + 6),
        discharge_at: row.get(first + 7),
        last_at: row.get(first + 8),
    }
}

impl Census for Pg<'_, '_> {
    type Error = StoreError;

    fn unencodable(&self, error: serde_json::Error) -> StoreError {
        self.inner
            .corrupt(self.operation, format!("a practitioner as JSON: {error}"))
    }

    fn claim(&self, journal_id: i64, note: Option<&str>) -> Result<Option<String>, StoreError> {
        let status: Option<String> = self.optional(CLAIM, &[&journal_id])?.map(|row| row.get(0));
        if status.as_deref() == Some("accepted") {
            self.execute(MARK_PROCESSED, values![&journal_id, &note])?;
        }
        Ok(status)
    }

    fn patient_lookup(&self, ipp: &str) -> Result<Option<LookedUp>, StoreError> {
        Ok(self
            .optional(PATIENT_LOOKUP, &[&ipp])?
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3))))
    }

    fn merged_into(&self, id: i64) -> Result<Option<i64>, StoreError> {
        Ok(self.one(PATIENT_MERGED_INTO, &[&id])?.get(0))
    }

    fn touch(&self, id: i64, now: i64, older_than: i64) -> Result<(), StoreError> {
        self.execute(PATIENT_TOUCH, values![&id, &now, &older_than])
    }

    fn ipp_of(&self, id: i64) -> Result<String, StoreError> {
        Ok(self.one(PATIENT_IPP, &[&id])?.get(0))
    }

    fn insert_patient(&self, p: &Patient, w: &Written) -> Result<i64, StoreError> {
        let identity = Identity::of(p);
        let row = self.one(
            PATIENT_INSERT,
            &[
                &p.ipp,
                &identity.legal_family,
                &identity.legal_given,
                &identity.used_family,
                &identity.used_given,
                &p.birth_date,
                &p.sex,
                &p.reliability,
                &identity.ins,
                &identity.ins_oid,
                &w.journal_id,
                &w.hash,
                &w.now,
            ],
        )?;
        Ok(row.get(0))
    }

    fn update_patient(&self, id: i64, p: &Patient, w: &Written) -> Result<(), StoreError> {
        let identity = Identity::of(p);
        self.execute(
            PATIENT_UPDATE,
            values![
                &id,
                &identity.legal_family,
                &identity.legal_given,
                &identity.used_family,
                &identity.used_given,
                &p.birth_date,
                &p.sex,
                &p.reliability,
                &identity.ins,
                &identity.ins_oid,
                &w.journal_id,
                &w.hash,
                &w.now,
            ],
        )
    }

    fn insert_identifier(
        &self,
        patient_id: i64,
        id_type: &str,
        authority: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            IDENTIFIER_INSERT,
            values![&patient_id, &id_type, &authority, &value],
        )
    }

    fn upsert_practitioner(
        &self,
        rpps: &str,
        doctor: &Practitioner,
        journal_id: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            PRACTITIONER_UPSERT,
            values![
                &rpps,
                &doctor.family,
                &doctor.given,
                &doctor.prefix,
                &journal_id,
            ],
        )
    }

    fn encounter(&self, nda: &str) -> Result<Option<EncounterRow>, StoreError> {
        Ok(self
            .optional(ENCOUNTER_BY_NDA, &[&nda])?
            .map(|row| EncounterRow {
                id: row.get(0),
                patient_id: row.get(1),
                state: state(&row, 2),
            }))
    }

    fn create_encounter(
        &self,
        nda: &str,
        patient_id: i64,
        s: &State,
        journal_id: i64,
    ) -> Result<i64, StoreError> {
        let row = self.one(
            ENCOUNTER_INSERT,
            &[
                &nda,
                &patient_id,
                &s.status.as_str(),
                &s.class,
                &s.unit,
                &s.attending,
                &s.admitting,
                &s.referring,
                &s.admit_at,
                &s.discharge_at,
                &s.last_at,
                &journal_id,
            ],
        )?;
        Ok(row.get(0))
    }

    fn save_encounter(&self, id: i64, s: &State, journal_id: i64) -> Result<(), StoreError> {
        self.execute(
            ENCOUNTER_UPDATE,
            values![
                &id,
                &s.status.as_str(),
                &s.class,
                &s.unit,
                &s.attending,
                &s.admitting,
                &s.referring,
                &s.admit_at,
                &s.discharge_at,
                &s.last_at,
                &journal_id,
            ],
        )
    }

    fn active_movements(&self, encounter_id: i64) -> Result<Vec<Facts>, StoreError> {
        let rows = self.query(MOVEMENTS_ACTIVE, &[&encounter_id])?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some(Facts {
                    event: Event::from_trigger(row.get(0))?,
                    at: row.get(1),
                    class: row.get(2),
                    unit: row.get(3),
                    attending: row.get(4),
                    admitting: row.get(5),
                    referring: row.get(6),
                    admit_at: row.get(7),
                    discharge_at: row.get(8),
                })
            })
            .collect())
    }

    fn movement(&self, movement_id: &str) -> Result<Option<MovementRow>, StoreError> {
        Ok(self
            .optional(MOVEMENT_BY_ID, &[&movement_id])?
            .map(|row| MovementRow {
                seq: row.get(0),
                encounter_id: row.get(1),
                event: row.get(2),
                cancelled: row.get::<_, &str>(3) == "cancelled",
                journal_id: row.get(4),
                updated_journal_id: row.get(5),
                cancel_journal_id: row.get(6),
            }))
    }

    fn insert_movement(
        &self,
        movement_id: &str,
        encounter_id: i64,
        f: &Facts,
        cancelled: bool,
        journal_id: i64,
    ) -> Result<(), StoreError> {
        let status = if cancelled { "cancelled" } else { "active" };
        let cancel_journal_id = cancelled.then_some(journal_id);
        self.execute(
            MOVEMENT_INSERT,
            values![
                &movement_id,
                &encounter_id,
                &f.event.trigger(),
                &status,
                &f.at,
                &f.class,
                &f.unit,
                &f.attending,
                &f.admitting,
                &f.referring,
                &f.admit_at,
                &f.discharge_at,
                &journal_id,
                &cancel_journal_id,
            ],
        )
    }

    fn update_movement(
        &self,
        seq: i64,
        encounter_id: i64,
        f: &Facts,
        journal_id: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            MOVEMENT_UPDATE,
            values![
                &seq,
                &encounter_id,
                &f.event.trigger(),
                &f.at,
                &f.class,
                &f.unit,
                &f.attending,
                &f.admitting,
                &f.referring,
                &f.admit_at,
                &f.discharge_at,
                &journal_id,
            ],
        )
    }

    fn cancel_movement(&self, seq: i64, journal_id: i64) -> Result<(), StoreError> {
        self.execute(MOVEMENT_CANCEL, values![&seq, &journal_id])
    }

    fn latest_movement(
        &self,
        encounter_id: i64,
        trigger: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .optional(MOVEMENTS_LATEST, &[&encounter_id, &trigger])?
            .map(|row| row.get(0)))
    }

    fn patient_by_ipp(&self, ipp: &str) -> Result<Option<(i64, Option<i64>)>, StoreError> {
        Ok(self
            .optional(PATIENT_BY_IPP, &[&ipp])?
            .map(|row| (row.get(0), row.get(1))))
    }

    fn insert_stub(
        &self,
        ipp: &str,
        survivor: i64,
        journal_id: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.execute(PATIENT_STUB, values![&ipp, &survivor, &journal_id, &now])
    }

    fn merge_patient(
        &self,
        merged: i64,
        survivor: i64,
        journal_id: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            PATIENT_MERGE,
            values![&merged, &survivor, &journal_id, &now],
        )?;
        self.execute(PATIENT_FLATTEN, values![&merged, &survivor])?;
        self.execute(ENCOUNTERS_MOVE, values![&merged, &survivor])
    }

    fn insert_anomaly(
        &self,
        journal_id: i64,
        patient_id: Option<i64>,
        anomaly: &Anomaly,
    ) -> Result<(), StoreError> {
        self.execute(
            ANOMALY_INSERT,
            values![
                &journal_id,
                &patient_id,
                &anomaly.kind.as_str(),
                &anomaly.text,
            ],
        )
    }
}

/// The identity columns a patient write binds.
struct Identity<'p> {
    legal_family: Option<&'p str>,
    legal_given: Option<&'p str>,
    used_family: Option<&'p str>,
    used_given: Option<&'p str>,
    ins: Option<&'p str>,
    ins_oid: Option<&'p str>,
}

impl<'p> Identity<'p> {
    fn of(p: &'p Patient) -> Identity<'p> {
        let (legal, used, ins) = (p.legal_name.as_ref(), p.used_name.as_ref(), p.ins.as_ref());
        Identity {
            legal_family: legal.map(|n| n.family.as_str()),
            legal_given: legal.map(|n| n.given.as_str()),
            used_family: used.map(|n| n.family.as_str()),
            used_given: used.map(|n| n.given.as_str()),
            ins: ins.map(|i| i.value.as_str()),
            ins_oid: ins.map(|i| i.oid.as_str()),
        }
    }
}

impl Read for Pg<'_, '_> {
    type Error = StoreError;

    fn patient_id(&self, by: ViewBy, key: &str) -> Result<Option<i64>, StoreError> {
        let sql = match by {
            ViewBy::Ipp => VIEW_BY_IPP,
            ViewBy::Nda => VIEW_BY_NDA,
            ViewBy::Ins => VIEW_BY_INS,
        };
        Ok(self.optional(sql, &[&key])?.map(|row| row.get(0)))
    }

    fn merged_into(&self, id: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .optional(PATIENT_MERGED_INTO, &[&id])?
            .and_then(|row| row.get(0)))
    }

    fn patient(&self, id: i64) -> Result<StoredPatient, StoreError> {
        let row = self.one(VIEW_PATIENT, &[&id])?;
        Ok(StoredPatient {
            ipp: row.get(0),
            legal_family: row.get(1),
            legal_given: row.get(2),
            used_family: row.get(3),
            used_given: row.get(4),
            birth_date: row.get(5),
            sex: row.get(6),
            reliability: row.get(7),
            ins: row.get(8),
            ins_oid: row.get(9),
        })
    }

    fn merged_ipps(&self, id: i64) -> Result<Vec<String>, StoreError> {
        let rows = self.query(VIEW_MERGED_IPPS, &[&id])?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn encounters(&self, id: i64) -> Result<Vec<StoredEncounter>, StoreError> {
        let rows = self.query(VIEW_ENCOUNTERS, &[&id])?;
        Ok(rows
            .iter()
            .map(|row| StoredEncounter {
                nda: row.get(0),
                status: row.get(1),
                class: row.get(2),
                unit: row.get(3),
                attending: row.get(4),
                admitting: row.get(5),
                referring: row.get(6),
                admit_at: row.get(7),
                discharge_at: row.get(8),
            })
            .collect())
    }

    fn movements(&self, id: i64) -> Result<Vec<MovementView>, StoreError> {
        let rows = self.query(VIEW_MOVEMENTS, &[&id])?;
        Ok(rows
            .iter()
            .map(|row| MovementView {
                movement_id: row.get(0),
                nda: row.get(1),
                event: row.get(2),
                cancelled: row.get::<_, &str>(3) == "cancelled",
                at: row.get(4),
                unit: row.get(5),
                journal_id: row.get(6),
                updated_by: row.get(7),
                cancelled_by: row.get(8),
            })
            .collect())
    }

    fn anomalies(&self, id: i64) -> Result<Vec<AnomalyView>, StoreError> {
        let rows = self.query(VIEW_ANOMALIES, &[&id])?;
        Ok(rows
            .iter()
            .map(|row| AnomalyView {
                journal_id: row.get(0),
                kind: row.get(1),
                text: row.get(2),
            })
            .collect())
    }

    fn practitioner(&self, rpps: &str) -> Result<Option<StoredPractitioner>, StoreError> {
        Ok(self
            .optional(VIEW_PRACTITIONER, &[&rpps])?
            .map(|row| StoredPractitioner {
                rpps: row.get(0),
                family: row.get(1),
                given: row.get(2),
                prefix: row.get(3),
            }))
    }

    fn patient_ipp(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(self.optional(PATIENT_IPP, &[&id])?.map(|row| row.get(0)))
    }

    fn encounter_nda(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(self.optional(ENCOUNTER_NDA, &[&id])?.map(|row| row.get(0)))
    }

    fn encounter_ids(&self, patient_id: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self.query(ENCOUNTER_IDS, &[&patient_id])?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }
}

/// Whether a failed update lost to a concurrent transaction (tried again): a unique key
/// taken meanwhile, a deadlock, or a row it refers to deleted meanwhile by a prune step (see
/// `postgres::prune`; the next try sees the row gone).
fn lost_a_race(error: &StoreError) -> bool {
    let StoreError::Postgres { source, .. } = error else {
        return false;
    };
    matches!(
        source.code(),
        Some(code) if *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::FOREIGN_KEY_VIOLATION
    )
}

/// Applies one update in its own transaction and commits (blocking thread of the runtime);
/// again when it lost a race (see the module docs).
fn apply(
    inner: &Inner,
    handle: &Handle,
    journal_id: i64,
    update: &CensusUpdate,
) -> Result<CensusOutcome, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match apply_once(inner, handle, journal_id, update) {
            Err(error) if tries < TRIES && lost_a_race(&error) => {
                tracing::debug!(journal_id, %error, "census update lost a race: applied again");
            }
            outcome => return outcome,
        }
    }
}

fn apply_once(
    inner: &Inner,
    handle: &Handle,
    journal_id: i64,
    update: &CensusUpdate,
) -> Result<CensusOutcome, StoreError> {
    const OPERATION: &str = "apply_census";
    let failed = inner.failed(OPERATION);
    let mut connection = handle.block_on(inner.connection(OPERATION))?;
    let transaction = handle.block_on(connection.transaction()).map_err(&failed)?;
    let executor = Pg::new(&transaction, handle, inner, OPERATION);
    let outcome = census::apply_with(&executor, journal_id, update)?;
    executor.flush()?;
    handle.block_on(transaction.commit()).map_err(&failed)?;
    inner.wake([super::Wakeup::Releaser]);
    Ok(outcome)
}

/// A submitted update and where its answer goes.
type Work = (
    i64,
    CensusUpdate,
    oneshot::Sender<Result<CensusOutcome, StoreError>>,
);

/// Applies a submission (blocking thread of the runtime) and answers each update after the
/// commit. If the transaction itself fails (connection lost, commit refused), each update is
/// applied again alone: a row already applied answers `AlreadyProcessed`.
fn apply_submission(inner: &Inner, handle: &Handle, work: Vec<Work>) {
    match apply_together(inner, handle, &work) {
        Ok(outcomes) => {
            for ((_, _, reply), outcome) in work.into_iter().zip(outcomes) {
                // A caller that stopped waiting: its update is committed all the same.
                let _ = reply.send(outcome);
            }
        }
        Err(error) => {
            tracing::debug!(%error, "census submission not committed: each update alone");
            for (journal_id, update, reply) in work {
                let _ = reply.send(apply(inner, handle, journal_id, &update));
            }
        }
    }
}

/// One transaction, a savepoint around each update; the outcome of each, once committed.
fn apply_together(
    inner: &Inner,
    handle: &Handle,
    work: &[Work],
) -> Result<Vec<Result<CensusOutcome, StoreError>>, StoreError> {
    const OPERATION: &str = "apply_census";
    let failed = inner.failed(OPERATION);
    let mut connection = handle.block_on(inner.connection(OPERATION))?;
    let transaction = handle.block_on(connection.transaction()).map_err(&failed)?;
    let executor = Pg::new(&transaction, handle, inner, OPERATION);
    let mut outcomes = Vec::with_capacity(work.len());
    for (journal_id, update, _) in work {
        let mut tries = 0;
        let outcome = loop {
            tries += 1;
            // Sent with the update's first read; released with its last writes (one
            // round trip), so the update is settled before the next one starts.
            executor.execute(SAVEPOINT, Vec::new())?;
            let applied = census::apply_with(&executor, *journal_id, update).and_then(|outcome| {
                executor.execute(RELEASE, Vec::new())?;
                executor.flush()?;
                Ok(outcome)
            });
            let Err(error) = applied else {
                break applied;
            };
            let unsent = std::mem::take(&mut *executor.deferred.borrow_mut());
            if unsent.first().is_none_or(|(sql, _)| *sql != SAVEPOINT) {
                // The savepoint was sent: undo what followed it.
                handle
                    .block_on(transaction.batch_execute(ROLLBACK_TO))
                    .map_err(&failed)?;
            }
            if tries < TRIES && lost_a_race(&error) {
                tracing::debug!(journal_id, %error, "census update lost a race: applied again");
                continue;
            }
            break Err(error);
        };
        outcomes.push(outcome);
    }
    handle.block_on(transaction.commit()).map_err(&failed)?;
    inner.wake([super::Wakeup::Releaser]);
    Ok(outcomes)
}

/// Runs a view in one read-only snapshot (the statements agree with each other).
fn read<T>(
    inner: &Inner,
    handle: &Handle,
    operation: &'static str,
    view: impl FnOnce(&Pg<'_, '_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let failed = inner.failed(operation);
    let mut connection = handle.block_on(inner.connection(operation))?;
    let transaction = handle
        .block_on(super::snapshot(&mut connection))
        .map_err(&failed)?;
    let executor = Pg::new(&transaction, handle, inner, operation);
    let found = view(&executor)?;
    handle.block_on(transaction.commit()).map_err(&failed)?;
    Ok(found)
}

/// An answer of [`Postgres::submit_census`].
pub(in crate::store) type CensusAnswer = oneshot::Receiver<Result<CensusOutcome, StoreError>>;

impl Postgres {
    /// [`Store::apply_census`](crate::store::Store::apply_census): committed before it
    /// answers.
    pub(in crate::store) async fn apply_census(
        &self,
        journal_id: i64,
        update: CensusUpdate,
    ) -> Result<CensusOutcome, StoreError> {
        self.run_blocking(move |inner, handle| apply(inner, handle, journal_id, &update))
            .await
    }

    /// [`Store::submit_census`](crate::store::Store::submit_census): the updates are applied
    /// in order, after those of every earlier submission, in one transaction (a savepoint
    /// each); the answers come after its commit.
    pub(in crate::store) fn submit_census(
        &self,
        updates: Vec<(i64, CensusUpdate)>,
    ) -> Vec<CensusAnswer> {
        let mut answers = Vec::with_capacity(updates.len());
        let mut work = Vec::with_capacity(updates.len());
        for (journal_id, update) in updates {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            work.push((journal_id, update, reply));
        }
        let inner = Arc::clone(&self.inner);
        let handle = self.handle.clone();
        let mut tail = self
            .inner
            .census_tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = tail.take();
        *tail = Some(self.handle.spawn(async move {
            if let Some(before) = before {
                // Its outcomes went to its callers; only its end matters here.
                let _ = before.await;
            }
            let blocking = handle.clone();
            let applied = blocking.spawn_blocking(move || apply_submission(&inner, &handle, work));
            let _ = applied.await;
        }));
        answers
    }

    /// [`Store::census_patient`](crate::store::Store::census_patient) (blocking).
    pub(in crate::store) fn census_patient(
        &self,
        key: &PatientKey,
    ) -> Result<Option<PatientView>, StoreError> {
        futures::executor::block_on(self.census_patient_async(key.clone()))
    }

    /// [`Store::census_patient_async`](crate::store::Store::census_patient_async).
    pub(in crate::store) async fn census_patient_async(
        &self,
        key: PatientKey,
    ) -> Result<Option<PatientView>, StoreError> {
        self.run_blocking(move |inner, handle| {
            read(inner, handle, "census_patient", |db| census::view(db, &key))
        })
        .await
    }

    /// [`Store::census_practitioner`](crate::store::Store::census_practitioner) (blocking).
    pub(in crate::store) fn census_practitioner(
        &self,
        rpps: &str,
    ) -> Result<Option<Practitioner>, StoreError> {
        let rpps = rpps.to_owned();
        futures::executor::block_on(self.run_blocking(move |inner, handle| {
            read(inner, handle, "census_practitioner", |db| {
                census::practitioner_with(db, &rpps)
            })
        }))
    }

    /// [`Store::census_record`](crate::store::Store::census_record).
    pub(in crate::store) async fn census_record(
        &self,
        lookup: CensusLookup,
    ) -> Result<Option<CensusRecord>, StoreError> {
        self.run_blocking(move |inner, handle| {
            read(inner, handle, "census_record", |db| {
                census::record(db, &lookup)
            })
        })
        .await
    }
}

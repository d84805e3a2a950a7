//! The census on SQLite: the statements of `apply` in the writer's transaction and of the
//! views on a read connection. The rules are in `apply` and `query`.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::apply::{Census, EncounterRow, Facts, LookedUp, MovementRow, State, Written};
use super::query::{Read, StoredEncounter, StoredPatient, StoredPractitioner, ViewBy};
use super::*;

const JOURNAL_STATUS: &str = "SELECT status FROM journal WHERE id = ?1";
/// `?2` is the note of a message the census could not use (NULL otherwise).
const MARK_PROCESSED: &str =
    "UPDATE journal SET status = 'processed', note = ?2 WHERE id = ?1 AND status = 'accepted'";
const PATIENT_INSERT: &str = "INSERT INTO census_patients (ipp, legal_family, legal_given,
        used_family, used_given, birth_date, sex, reliability, ins, ins_oid, journal_id,
        identity_hash, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING id";
const PATIENT_UPDATE: &str = "UPDATE census_patients SET legal_family = ?2, legal_given = ?3,
        used_family = ?4, used_given = ?5, birth_date = ?6, sex = ?7, reliability = ?8,
        ins = ?9, ins_oid = ?10, journal_id = ?11, identity_hash = ?12, updated_at = ?13
    WHERE id = ?1";
/// The identity hash lets the common case (same identity again) skip every patient write;
/// `updated_at` is rewritten only when a day old (see `apply::UPDATED_AT_GRAIN`).
const PATIENT_LOOKUP: &str =
    "SELECT id, merged_into, identity_hash, updated_at FROM census_patients WHERE ipp = ?1";
/// Records that a message named the patient (`?2` now), when the record is older than `?3`.
const PATIENT_TOUCH: &str = "UPDATE census_patients SET updated_at = ?2
    WHERE id = ?1 AND ifnull(updated_at < ?3, 1)";
const PATIENT_BY_IPP: &str = "SELECT id, merged_into FROM census_patients WHERE ipp = ?1";
const PATIENT_MERGED_INTO: &str = "SELECT merged_into FROM census_patients WHERE id = ?1";
const PATIENT_IPP: &str = "SELECT ipp FROM census_patients WHERE id = ?1";
const PATIENT_STUB: &str = "INSERT INTO census_patients (ipp, merged_into, journal_id, updated_at)
    VALUES (?1, ?2, ?3, ?4) RETURNING id";
const PATIENT_MERGE: &str =
    "UPDATE census_patients SET merged_into = ?2, journal_id = ?3, updated_at = ?4 WHERE id = ?1";
const PATIENT_FLATTEN: &str = "UPDATE census_patients SET merged_into = ?2 WHERE merged_into = ?1";
const ENCOUNTERS_MOVE: &str = "UPDATE census_encounters SET patient_id = ?2 WHERE patient_id = ?1";
const IDENTIFIER_INSERT: &str = "INSERT OR IGNORE INTO census_identifiers
    (patient_id, id_type, authority, value) VALUES (?1, ?2, ?3, ?4)";
/// Writes only when something changed.
const PRACTITIONER_UPSERT: &str = "INSERT INTO census_practitioners
        (rpps, family, given, prefix, journal_id) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (rpps) DO UPDATE SET family = excluded.family, given = excluded.given,
        prefix = excluded.prefix, journal_id = excluded.journal_id
    WHERE family IS NOT excluded.family OR given IS NOT excluded.given
        OR prefix IS NOT excluded.prefix";
const ENCOUNTER_BY_NDA: &str = "SELECT id, patient_id, status, class, unit, attending, admitting,
    referring, admit_at, discharge_at, last_movement_at FROM census_encounters WHERE nda = ?1";
const ENCOUNTER_INSERT: &str = "INSERT INTO census_encounters (nda, patient_id, status, class,
        unit, attending, admitting, referring, admit_at, discharge_at, last_movement_at,
        journal_id)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id";
const ENCOUNTER_UPDATE: &str = "UPDATE census_encounters SET status = ?2, class = ?3, unit = ?4,
        attending = ?5, admitting = ?6, referring = ?7, admit_at = ?8, discharge_at = ?9,
        last_movement_at = ?10, journal_id = ?11
    WHERE id = ?1";
const MOVEMENT_BY_ID: &str = "SELECT seq, encounter_id, event, status, journal_id,
    updated_journal_id, cancel_journal_id FROM census_movements WHERE movement_id = ?1";
const MOVEMENT_INSERT: &str = "INSERT INTO census_movements (movement_id, encounter_id, event,
        status, movement_at, class, unit, attending, admitting, referring, admit_at,
        discharge_at, journal_id, cancel_journal_id)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
const MOVEMENT_UPDATE: &str = "UPDATE census_movements SET encounter_id = ?2, event = ?3,
        movement_at = ?4, class = ?5, unit = ?6, attending = ?7, admitting = ?8,
        referring = ?9, admit_at = ?10, discharge_at = ?11, updated_journal_id = ?12
    WHERE seq = ?1";
const MOVEMENT_CANCEL: &str =
    "UPDATE census_movements SET status = 'cancelled', cancel_journal_id = ?2 WHERE seq = ?1";
const MOVEMENTS_ACTIVE: &str = "SELECT event, movement_at, class, unit, attending, admitting,
        referring, admit_at, discharge_at
    FROM census_movements WHERE encounter_id = ?1 AND status = 'active'
    ORDER BY movement_at, seq";
const MOVEMENTS_LATEST: &str = "SELECT movement_id FROM census_movements
    WHERE encounter_id = ?1 AND status = 'active' AND event = ?2
    ORDER BY movement_at DESC, seq DESC LIMIT 1";
const ANOMALY_INSERT: &str =
    "INSERT INTO census_anomalies (journal_id, patient_id, kind, text) VALUES (?1, ?2, ?3, ?4)";

const VIEW_PATIENT: &str = "SELECT ipp, legal_family, legal_given, used_family, used_given,
    birth_date, sex, reliability, ins, ins_oid FROM census_patients WHERE id = ?1";
const VIEW_BY_IPP: &str = "SELECT id FROM census_patients WHERE ipp = ?1";
const VIEW_BY_NDA: &str = "SELECT patient_id FROM census_encounters WHERE nda = ?1";
const VIEW_BY_INS: &str = "SELECT id FROM census_patients WHERE ins = ?1
    ORDER BY merged_into IS NULL DESC, id DESC LIMIT 1";
const VIEW_MERGED_IPPS: &str = "SELECT ipp FROM census_patients WHERE merged_into = ?1 ORDER BY id";
const VIEW_ENCOUNTERS: &str = "SELECT nda, status, class, unit, attending, admitting, referring,
        admit_at, discharge_at
    FROM census_encounters WHERE patient_id = ?1 ORDER BY last_movement_at DESC, id DESC";
const VIEW_MOVEMENTS: &str = "SELECT m.movement_id, e.nda, m.event, m.status, m.movement_at,
        m.unit, m.journal_id, m.updated_journal_id, m.cancel_journal_id
    FROM census_movements m JOIN census_encounters e ON e.id = m.encounter_id
    WHERE e.patient_id = ?1 ORDER BY m.movement_at, m.seq";
const VIEW_ANOMALIES: &str = "SELECT journal_id, kind, text FROM census_anomalies
    WHERE patient_id = ?1
       OR patient_id IN (SELECT id FROM census_patients WHERE merged_into = ?1)
    ORDER BY id";
const VIEW_PRACTITIONER: &str =
    "SELECT rpps, family, given, prefix FROM census_practitioners WHERE rpps = ?1";

const ENCOUNTER_NDA: &str = "SELECT nda FROM census_encounters WHERE id = ?1";
const ENCOUNTER_IDS: &str = "SELECT nda, id FROM census_encounters WHERE patient_id = ?1";

/// SQLite's census executor on a connection (the writer's transaction, or a reader).
pub(in crate::store) struct Sqlite<'c>(pub(in crate::store) &'c Connection);

/// An encounter's state columns from `first` on: status, class, unit, the three doctors,
/// admit, discharge, last movement.
fn state(row: &Row<'_>, first: usize) -> rusqlite::Result<State> {
    Ok(State {
        status: EncounterStatus::from_text(&row.get::<_, String>(first)?),
        class: row.get(first + 1)?,
        unit: row.get(first + 2)?,
        attending: row.get(first + 3)?,
        admitting: row.get(first + 4)?,
        referring: row.get(first + 5)?,
        admit_at: row.get(first + 6)?,
        discharge_at: row.get(first + 7)?,
        last_at: row.get(first + 8)?,
    })
}

impl Census for Sqlite<'_> {
    type Error = rusqlite::Error;

    fn unencodable(&self, error: serde_json::Error) -> rusqlite::Error {
        rusqlite::Error::ToSqlConversionFailure(Box::new(error))
    }

    fn claim(&self, journal_id: i64, note: Option<&str>) -> rusqlite::Result<Option<String>> {
        // The writer's transaction holds the file: marking is claiming.
        let marked = self
            .0
            .prepare_cached(MARK_PROCESSED)?
            .execute(params![journal_id, note])?;
        if marked == 1 {
            return Ok(Some("accepted".to_owned()));
        }
        self.0
            .prepare_cached(JOURNAL_STATUS)?
            .query_row([journal_id], |row| row.get(0))
            .optional()
    }

    fn patient_lookup(&self, ipp: &str) -> rusqlite::Result<Option<LookedUp>> {
        self.0
            .prepare_cached(PATIENT_LOOKUP)?
            .query_row([ipp], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()
    }

    fn merged_into(&self, id: i64) -> rusqlite::Result<Option<i64>> {
        self.0
            .prepare_cached(PATIENT_MERGED_INTO)?
            .query_row([id], |row| row.get(0))
    }

    fn touch(&self, id: i64, now: i64, older_than: i64) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(PATIENT_TOUCH)?
            .execute(params![id, now, older_than])?;
        Ok(())
    }

    fn ipp_of(&self, id: i64) -> rusqlite::Result<String> {
        self.0
            .prepare_cached(PATIENT_IPP)?
            .query_row([id], |row| row.get(0))
    }

    fn insert_patient(&self, p: &Patient, w: &Written) -> rusqlite::Result<i64> {
        let (legal, used, ins) = (p.legal_name.as_ref(), p.used_name.as_ref(), p.ins.as_ref());
        self.0.prepare_cached(PATIENT_INSERT)?.query_row(
            params![
                p.ipp,
                legal.map(|n| &n.family),
                legal.map(|n| &n.given),
                used.map(|n| &n.family),
                used.map(|n| &n.given),
                p.birth_date,
                p.sex,
                p.reliability,
                ins.map(|i| &i.value),
                ins.map(|i| &i.oid),
                w.journal_id,
                w.hash,
                w.now,
            ],
            |row| row.get(0),
        )
    }

    fn update_patient(&self, id: i64, p: &Patient, w: &Written) -> rusqlite::Result<()> {
        let (legal, used, ins) = (p.legal_name.as_ref(), p.used_name.as_ref(), p.ins.as_ref());
        self.0.prepare_cached(PATIENT_UPDATE)?.execute(params![
            id,
            legal.map(|n| &n.family),
            legal.map(|n| &n.given),
            used.map(|n| &n.family),
            used.map(|n| &n.given),
            p.birth_date,
            p.sex,
            p.reliability,
            ins.map(|i| &i.value),
            ins.map(|i| &i.oid),
            w.journal_id,
            w.hash,
            w.now,
        ])?;
        Ok(())
    }

    fn insert_identifier(
        &self,
        patient_id: i64,
        id_type: &str,
        authority: &str,
        value: &str,
    ) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(IDENTIFIER_INSERT)?
            .execute(params![patient_id, id_type, authority, value])?;
        Ok(())
    }

    fn upsert_practitioner(
        &self,
        rpps: &str,
        doctor: &Practitioner,
        journal_id: i64,
    ) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(PRACTITIONER_UPSERT)?
            .execute(params![
                rpps,
                doctor.family,
                doctor.given,
                doctor.prefix,
                journal_id
            ])?;
        Ok(())
    }

    fn encounter(&self, nda: &str) -> rusqlite::Result<Option<EncounterRow>> {
        self.0
            .prepare_cached(ENCOUNTER_BY_NDA)?
            .query_row([nda], |row| {
                Ok(EncounterRow {
                    id: row.get(0)?,
                    patient_id: row.get(1)?,
                    state: state(row, 2)?,
                })
            })
            .optional()
    }

    fn create_encounter(
        &self,
        nda: &str,
        patient_id: i64,
        s: &State,
        journal_id: i64,
    ) -> rusqlite::Result<i64> {
        self.0.prepare_cached(ENCOUNTER_INSERT)?.query_row(
            params![
                nda,
                patient_id,
                s.status.as_str(),
                s.class,
                s.unit,
                s.attending,
                s.admitting,
                s.referring,
                s.admit_at,
                s.discharge_at,
                s.last_at,
                journal_id
            ],
            |row| row.get(0),
        )
    }

    fn save_encounter(&self, id: i64, s: &State, journal_id: i64) -> rusqlite::Result<()> {
        self.0.prepare_cached(ENCOUNTER_UPDATE)?.execute(params![
            id,
            s.status.as_str(),
            s.class,
            s.unit,
            s.attending,
            s.admitting,
            s.referring,
            s.admit_at,
            s.discharge_at,
            s.last_at,
            journal_id
        ])?;
        Ok(())
    }

    fn active_movements(&self, encounter_id: i64) -> rusqlite::Result<Vec<Facts>> {
        let mut statement = self.0.prepare_cached(MOVEMENTS_ACTIVE)?;
        let mut rows = statement.query([encounter_id])?;
        let mut movements = Vec::new();
        while let Some(row) = rows.next()? {
            let Some(event) = Event::from_trigger(&row.get::<_, String>(0)?) else {
                continue;
            };
            movements.push(Facts {
                event,
                at: row.get(1)?,
                class: row.get(2)?,
                unit: row.get(3)?,
                attending: row.get(4)?,
                admitting: row.get(5)?,
                referring: row.get(6)?,
                admit_at: row.get(7)?,
                discharge_at: row.get(8)?,
            });
        }
        Ok(movements)
    }

    fn movement(&self, movement_id: &str) -> rusqlite::Result<Option<MovementRow>> {
        self.0
            .prepare_cached(MOVEMENT_BY_ID)?
            .query_row([movement_id], |row| {
                Ok(MovementRow {
                    seq: row.get(0)?,
                    encounter_id: row.get(1)?,
                    event: row.get(2)?,
                    cancelled: row.get::<_, String>(3)? == "cancelled",
                    journal_id: row.get(4)?,
                    updated_journal_id: row.get(5)?,
                    cancel_journal_id: row.get(6)?,
                })
            })
            .optional()
    }

    fn insert_movement(
        &self,
        movement_id: &str,
        encounter_id: i64,
        f: &Facts,
        cancelled: bool,
        journal_id: i64,
    ) -> rusqlite::Result<()> {
        self.0.prepare_cached(MOVEMENT_INSERT)?.execute(params![
            movement_id,
            encounter_id,
            f.event.trigger(),
            if cancelled { "cancelled" } else { "active" },
            f.at,
            f.class,
            f.unit,
            f.attending,
            f.admitting,
            f.referring,
            f.admit_at,
            f.discharge_at,
            journal_id,
            cancelled.then_some(journal_id),
        ])?;
        Ok(())
    }

    fn update_movement(
        &self,
        seq: i64,
        encounter_id: i64,
        f: &Facts,
        journal_id: i64,
    ) -> rusqlite::Result<()> {
        self.0.prepare_cached(MOVEMENT_UPDATE)?.execute(params![
            seq,
            encounter_id,
            f.event.trigger(),
            f.at,
            f.class,
            f.unit,
            f.attending,
            f.admitting,
            f.referring,
            f.admit_at,
            f.discharge_at,
            journal_id,
        ])?;
        Ok(())
    }

    fn cancel_movement(&self, seq: i64, journal_id: i64) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(MOVEMENT_CANCEL)?
            .execute([seq, journal_id])?;
        Ok(())
    }

    fn latest_movement(
        &self,
        encounter_id: i64,
        trigger: &str,
    ) -> rusqlite::Result<Option<String>> {
        self.0
            .prepare_cached(MOVEMENTS_LATEST)?
            .query_row(params![encounter_id, trigger], |row| row.get(0))
            .optional()
    }

    fn patient_by_ipp(&self, ipp: &str) -> rusqlite::Result<Option<(i64, Option<i64>)>> {
        self.0
            .prepare_cached(PATIENT_BY_IPP)?
            .query_row([ipp], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
    }

    fn insert_stub(
        &self,
        ipp: &str,
        survivor: i64,
        journal_id: i64,
        now: i64,
    ) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(PATIENT_STUB)?
            .query_row(params![ipp, survivor, journal_id, now], |row| {
                row.get::<_, i64>(0)
            })?;
        Ok(())
    }

    fn merge_patient(
        &self,
        merged: i64,
        survivor: i64,
        journal_id: i64,
        now: i64,
    ) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(PATIENT_MERGE)?
            .execute([merged, survivor, journal_id, now])?;
        self.0
            .prepare_cached(PATIENT_FLATTEN)?
            .execute([merged, survivor])?;
        self.0
            .prepare_cached(ENCOUNTERS_MOVE)?
            .execute([merged, survivor])?;
        Ok(())
    }

    fn insert_anomaly(
        &self,
        journal_id: i64,
        patient_id: Option<i64>,
        anomaly: &Anomaly,
    ) -> rusqlite::Result<()> {
        self.0.prepare_cached(ANOMALY_INSERT)?.execute(params![
            journal_id,
            patient_id,
            anomaly.kind.as_str(),
            anomaly.text
        ])?;
        Ok(())
    }
}

impl Read for Sqlite<'_> {
    type Error = rusqlite::Error;

    fn patient_id(&self, by: ViewBy, key: &str) -> rusqlite::Result<Option<i64>> {
        let sql = match by {
            ViewBy::Ipp => VIEW_BY_IPP,
            ViewBy::Nda => VIEW_BY_NDA,
            ViewBy::Ins => VIEW_BY_INS,
        };
        self.0
            .prepare_cached(sql)?
            .query_row([key], |row| row.get(0))
            .optional()
    }

    fn merged_into(&self, id: i64) -> rusqlite::Result<Option<i64>> {
        Ok(self
            .0
            .prepare_cached(PATIENT_MERGED_INTO)?
            .query_row([id], |row| row.get::<_, Option<i64>>(0))
            .optional()?
            .flatten())
    }

    fn patient(&self, id: i64) -> rusqlite::Result<StoredPatient> {
        self.0.prepare_cached(VIEW_PATIENT)?.query_row([id], |row| {
            Ok(StoredPatient {
                ipp: row.get(0)?,
                legal_family: row.get(1)?,
                legal_given: row.get(2)?,
                used_family: row.get(3)?,
                used_given: row.get(4)?,
                birth_date: row.get(5)?,
                sex: row.get(6)?,
                reliability: row.get(7)?,
                ins: row.get(8)?,
                ins_oid: row.get(9)?,
            })
        })
    }

    fn merged_ipps(&self, id: i64) -> rusqlite::Result<Vec<String>> {
        self.0
            .prepare_cached(VIEW_MERGED_IPPS)?
            .query_map([id], |row| row.get(0))?
            .collect()
    }

    fn encounters(&self, id: i64) -> rusqlite::Result<Vec<StoredEncounter>> {
        self.0
            .prepare_cached(VIEW_ENCOUNTERS)?
            .query_map([id], |row| {
                Ok(StoredEncounter {
                    nda: row.get(0)?,
                    status: row.get(1)?,
                    class: row.get(2)?,
                    unit: row.get(3)?,
                    attending: row.get(4)?,
                    admitting: row.get(5)?,
                    referring: row.get(6)?,
                    admit_at: row.get(7)?,
                    discharge_at: row.get(8)?,
                })
            })?
            .collect()
    }

    fn movements(&self, id: i64) -> rusqlite::Result<Vec<MovementView>> {
        self.0
            .prepare_cached(VIEW_MOVEMENTS)?
            .query_map([id], |row| {
                Ok(MovementView {
                    movement_id: row.get(0)?,
                    nda: row.get(1)?,
                    event: row.get(2)?,
                    cancelled: row.get::<_, String>(3)? == "cancelled",
                    at: row.get(4)?,
                    unit: row.get(5)?,
                    journal_id: row.get(6)?,
                    updated_by: row.get(7)?,
                    cancelled_by: row.get(8)?,
                })
            })?
            .collect()
    }

    fn anomalies(&self, id: i64) -> rusqlite::Result<Vec<AnomalyView>> {
        self.0
            .prepare_cached(VIEW_ANOMALIES)?
            .query_map([id], |row| {
                Ok(AnomalyView {
                    journal_id: row.get(0)?,
                    kind: row.get(1)?,
                    text: row.get(2)?,
                })
            })?
            .collect()
    }

    fn practitioner(&self, rpps: &str) -> rusqlite::Result<Option<StoredPractitioner>> {
        self.0
            .prepare_cached(VIEW_PRACTITIONER)?
            .query_row([rpps], |row| {
                Ok(StoredPractitioner {
                    rpps: row.get(0)?,
                    family: row.get(1)?,
                    given: row.get(2)?,
                    prefix: row.get(3)?,
                })
            })
            .optional()
    }

    fn patient_ipp(&self, id: i64) -> rusqlite::Result<Option<String>> {
        self.0
            .prepare_cached(PATIENT_IPP)?
            .query_row([id], |row| row.get(0))
            .optional()
    }

    fn encounter_nda(&self, id: i64) -> rusqlite::Result<Option<String>> {
        self.0
            .prepare_cached(ENCOUNTER_NDA)?
            .query_row([id], |row| row.get(0))
            .optional()
    }

    fn encounter_ids(&self, patient_id: i64) -> rusqlite::Result<Vec<(String, i64)>> {
        self.0
            .prepare_cached(ENCOUNTER_IDS)?
            .query_map([patient_id], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect()
    }
}

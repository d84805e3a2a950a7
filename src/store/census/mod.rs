//! The census tables (schema version 2): applying a [`CensusUpdate`] in the writer's
//! transaction (`apply`), and the patient and practitioner views on the read pool (`query`).
//! The rules are written once, over the statements of a backend: `sqlite` here, and
//! `postgres::census` for PostgreSQL (the same tables, the same statements in its dialect).
//!
//! # State
//!
//! Every movement is a row of `census_movements`, keyed by its movement id (ZBE-1), with
//! `active`/`cancelled` status and the journal row that produced it. An encounter's state
//! (status, class, unit, doctors, admit/discharge) is the fold of its active movements in time
//! order. A movement that arrives in time order is folded onto the stored state (the common
//! case: a few statements); a cancel, a correction or a late movement replays the encounter's
//! active movements, so cancelling undoes exactly the cancelled movement and an A03 before its
//! A01 still ends discharged.
//!
//! # Idempotence and anomalies
//!
//! A journal row already `processed` is not applied again. Out-of-order and unknown references
//! (a cancel of an unknown movement, a transfer for an unknown encounter, a merge of an unknown
//! patient, …) are applied as far as possible and recorded in `census_anomalies`, never
//! dropped; a cancel that arrives before its movement leaves a cancelled placeholder, so the
//! late movement stays cancelled. Anomaly texts name IPPs, NDAs and movement ids: log their
//! kind, and the text only where PHI logging is on.

mod apply;
mod query;
mod sqlite;

pub(in crate::store) use apply::{
    Census, EncounterRow, Facts, LookedUp, MovementRow, State, Written, apply, apply_with,
};
pub use query::render;
pub(in crate::store) use query::{
    Read, StoredEncounter, StoredPatient, StoredPractitioner, ViewBy, patient_view, practitioner,
    practitioner_with, record, sqlite_record, view,
};

#[cfg(test)]
use rusqlite::Connection;

use crate::census::{
    Cancel, CensusUpdate, EncounterFacts, EncounterStatus, Event, Ins, InsKind, Merge, Patient,
    PersonName, Practitioner, Visit,
};

/// What `apply_census` did with one journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CensusOutcome {
    /// Applied, ignored, or already applied before.
    pub status: ApplyStatus,
    /// What did not fit (kept and flagged), for the engine to log.
    pub anomalies: Vec<Anomaly>,
}

/// Whether the update changed the census.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStatus {
    /// Applied (possibly with anomalies); the journal row is now processed.
    Applied,
    /// [`CensusUpdate::Ignored`] or [`CensusUpdate::Unusable`]: nothing to apply; the journal
    /// row is now processed (with the note of an unusable one).
    Ignored,
    /// The journal row was already processed: nothing changed (a replay after a crash).
    AlreadyProcessed,
}

/// Kinds of anomaly, as stored in `census_anomalies.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    /// The journal id has no journal row (applied anyway).
    JournalRowMissing,
    /// A merge names a patient never seen.
    UnknownPatient,
    /// A movement for an encounter never seen (other than A05/A01/A04).
    UnknownEncounter,
    /// A cancel or correction of a movement never seen.
    UnknownMovement,
    /// A movement older than the encounter's latest: the state was replayed in time order.
    OutOfOrder,
    /// A new movement with the id of an existing one: it replaced it.
    DuplicateMovement,
    /// A movement (or correction) for a movement already cancelled: kept cancelled.
    CancelledMovement,
    /// A cancel of a movement already cancelled.
    AlreadyCancelled,
    /// A cancel whose movement is of another kind than the cancel says.
    CancelMismatch,
    /// A message for an IPP merged into another: applied to the survivor.
    MergedPatient,
    /// An encounter named with another patient than its own.
    PatientMismatch,
    /// A merge of a patient into itself.
    SelfMerge,
}

impl AnomalyKind {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JournalRowMissing => "journal_row_missing",
            Self::UnknownPatient => "unknown_patient",
            Self::UnknownEncounter => "unknown_encounter",
            Self::UnknownMovement => "unknown_movement",
            Self::OutOfOrder => "out_of_order",
            Self::DuplicateMovement => "duplicate_movement",
            Self::CancelledMovement => "cancelled_movement",
            Self::AlreadyCancelled => "already_cancelled",
            Self::CancelMismatch => "cancel_mismatch",
            Self::MergedPatient => "merged_patient",
            Self::PatientMismatch => "patient_mismatch",
            Self::SelfMerge => "self_merge",
        }
    }
}

/// One anomaly of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// What kind.
    pub kind: AnomalyKind,
    /// What happened and what was done, naming the identifiers.
    pub text: String,
}

/// How to find a patient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatientKey {
    /// By IPP (a merged IPP resolves to the survivor).
    Ipp(String),
    /// By visit number.
    Nda(String),
    /// By INS (only stored for validated identities).
    Ins(String),
}

/// A patient as the census knows them: what `ordobridge census` prints and the launch uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientView {
    /// The survivor's IPP.
    pub ipp: String,
    /// The IPP asked for when it was merged into this patient.
    pub resolved_from: Option<String>,
    /// IPPs merged into this patient.
    pub merged_ipps: Vec<String>,
    /// Birth name.
    pub legal_name: Option<PersonName>,
    /// Used name.
    pub used_name: Option<PersonName>,
    /// ISO 8601, as precise as sent.
    pub birth_date: Option<String>,
    /// PID-8.
    pub sex: Option<String>,
    /// PID-32.
    pub reliability: Option<String>,
    /// Only for a validated identity.
    pub ins: Option<Ins>,
    /// The encounter asked for (by NDA), else the latest open one, else the latest.
    pub current: Option<EncounterView>,
    /// Every encounter, latest first.
    pub encounters: Vec<EncounterView>,
    /// Every movement of every encounter, in time order.
    pub movements: Vec<MovementView>,
    /// Anomalies recorded for this patient (and the IPPs merged into it).
    pub anomalies: Vec<AnomalyView>,
}

/// One encounter's derived state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncounterView {
    /// Visit number.
    pub nda: String,
    /// Derived from the active movements.
    pub status: EncounterStatus,
    /// PV1-2.
    pub class: Option<String>,
    /// UF code, else PV1-3.1.
    pub unit: Option<String>,
    /// PV1-7.
    pub attending: Option<Practitioner>,
    /// PV1-17.
    pub admitting: Option<Practitioner>,
    /// PV1-8.
    pub referring: Option<Practitioner>,
    /// Civil date-time (ISO 8601).
    pub admit_at: Option<String>,
    /// Civil date-time (ISO 8601).
    pub discharge_at: Option<String>,
}

/// One movement in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementView {
    /// ZBE-1 (or `#<journal id>` for a sender without ZBE).
    pub movement_id: String,
    /// Its encounter.
    pub nda: String,
    /// Trigger (`A01`, …).
    pub event: String,
    /// `active` or `cancelled`.
    pub cancelled: bool,
    /// Civil date-time (ISO 8601).
    pub at: Option<String>,
    /// Unit at that movement.
    pub unit: Option<String>,
    /// Journal row that produced it.
    pub journal_id: i64,
    /// Journal row of the last correction.
    pub updated_by: Option<i64>,
    /// Journal row of the cancel.
    pub cancelled_by: Option<i64>,
}

/// One stored anomaly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyView {
    /// Journal row that raised it.
    pub journal_id: i64,
    /// Kind as stored.
    pub kind: String,
    /// What happened.
    pub text: String,
}

// ---------------------------------------------------------------------------------------------
// Writing

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::apply::*;
    use super::query::*;
    use super::*;
    use rstest::rstest;

    fn updated_at(conn: &Connection, ipp: &str) -> Option<i64> {
        conn.query_row(
            "SELECT updated_at FROM census_patients WHERE ipp = ?1",
            [ipp],
            |row| row.get(0),
        )
        .unwrap()
    }

    fn identity(ipp: &str, family: &str) -> CensusUpdate {
        CensusUpdate::Identity(Patient {
            ipp: ipp.to_owned(),
            legal_name: Some(PersonName {
                family: family.to_owned(),
                given: "TEST".to_owned(),
            }),
            ..Patient::default()
        })
    }

    /// `updated_at`, what census retention counts from: set by every write of a patient, and
    /// by a message that names them unchanged once the record is a day old (not at every
    /// message); a merge touches the survivor and dates the merged IPP.
    #[test]
    fn ok_updated_at_follows_the_messages() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::schema::open_writer(&dir.path().join("ob.db")).unwrap();
        let before = jiff::Timestamp::now().as_microsecond();
        apply(&conn, 1, &identity("IPP1", "A")).unwrap();
        let first = updated_at(&conn, "IPP1").unwrap();
        assert!(first >= before);
        // Unchanged identity, record fresh: not rewritten.
        conn.execute(
            "UPDATE census_patients SET updated_at = updated_at - 1000",
            [],
        )
        .unwrap();
        apply(&conn, 2, &identity("IPP1", "A")).unwrap();
        assert_eq!(updated_at(&conn, "IPP1"), Some(first - 1000));
        // Unchanged identity, record two days old: touched.
        let old = first - 2 * UPDATED_AT_GRAIN;
        conn.execute("UPDATE census_patients SET updated_at = ?1", [old])
            .unwrap();
        apply(&conn, 3, &identity("IPP1", "A")).unwrap();
        assert!(updated_at(&conn, "IPP1").unwrap() >= first);
        // A changed identity is written, `updated_at` with it.
        conn.execute("UPDATE census_patients SET updated_at = ?1", [old])
            .unwrap();
        apply(&conn, 4, &identity("IPP1", "B")).unwrap();
        assert!(updated_at(&conn, "IPP1").unwrap() >= first);
        // A merge: the merged IPP (a stub here) is dated, the survivor touched.
        conn.execute("UPDATE census_patients SET updated_at = ?1", [old])
            .unwrap();
        let merge = CensusUpdate::Merge(Merge {
            survivor: Patient {
                ipp: "IPP1".to_owned(),
                legal_name: Some(PersonName {
                    family: "B".to_owned(),
                    given: "TEST".to_owned(),
                }),
                ..Patient::default()
            },
            merged_ipp: "IPP0".to_owned(),
        });
        apply(&conn, 5, &merge).unwrap();
        assert!(updated_at(&conn, "IPP1").unwrap() >= first);
        assert!(updated_at(&conn, "IPP0").unwrap() >= first);
        // A message for the merged IPP touches the survivor.
        conn.execute("UPDATE census_patients SET updated_at = ?1", [old])
            .unwrap();
        apply(&conn, 6, &identity("IPP0", "Z")).unwrap();
        assert!(updated_at(&conn, "IPP1").unwrap() >= first);
        assert_eq!(
            updated_at(&conn, "IPP0"),
            Some(old),
            "the stub is not rewritten"
        );
    }

    fn facts(event: Event, at: &str) -> Facts {
        Facts {
            event,
            at: at.to_owned(),
            class: None,
            unit: None,
            attending: None,
            admitting: None,
            referring: None,
            admit_at: None,
            discharge_at: None,
        }
    }

    fn fold(moves: &[Facts]) -> State {
        let mut state = State::default();
        for m in moves {
            step(&mut state, m);
        }
        state
    }

    #[rstest]
    #[case::ok_preadmit(&[Event::PreAdmit], EncounterStatus::PreAdmitted)]
    #[case::ok_admit(&[Event::PreAdmit, Event::Admit], EncounterStatus::Admitted)]
    #[case::ok_leave(&[Event::Admit, Event::LeaveOut], EncounterStatus::OnLeave)]
    #[case::ok_return(&[Event::Admit, Event::LeaveOut, Event::LeaveReturn], EncounterStatus::Admitted)]
    #[case::ok_discharge(&[Event::Admit, Event::Transfer, Event::Discharge], EncounterStatus::Discharged)]
    #[case::ok_transfer_only(&[Event::Transfer], EncounterStatus::Unknown)]
    fn ok_fold_status(#[case] events: &[Event], #[case] status: EncounterStatus) {
        let moves: Vec<Facts> = events
            .iter()
            .enumerate()
            .map(|(i, e)| facts(*e, &format!("2026-01-0{}T00:00:00", i + 1)))
            .collect();
        let state = fold(&moves);
        assert_eq!(state.status, status);
        assert_eq!(state.last_at, moves.last().map(|m| m.at.clone()));
    }

    #[test]
    fn ok_fold_fields() {
        let mut admit = facts(Event::Admit, "2026-01-01T08:00:00");
        admit.unit = Some("4010".into());
        admit.class = Some("O".into());
        let mut transfer = facts(Event::Transfer, "2026-01-02T08:00:00");
        transfer.unit = Some("4020".into());
        let to_in = facts(Event::ToInpatient, "2026-01-03T08:00:00");
        let mut discharge = facts(Event::Discharge, "2026-01-04T08:00:00");
        discharge.discharge_at = Some("2026-01-04T07:00:00".into());
        let state = fold(&[admit, transfer, to_in, discharge]);
        assert_eq!(state.unit.as_deref(), Some("4020"));
        assert_eq!(state.class.as_deref(), Some("I"));
        assert_eq!(state.admit_at.as_deref(), Some("2026-01-01T08:00:00"));
        assert_eq!(state.discharge_at.as_deref(), Some("2026-01-04T07:00:00"));
    }

    #[rstest]
    #[case::ok_journal(AnomalyKind::JournalRowMissing, "journal_row_missing")]
    #[case::ok_out_of_order(AnomalyKind::OutOfOrder, "out_of_order")]
    #[case::ok_unknown_movement(AnomalyKind::UnknownMovement, "unknown_movement")]
    fn ok_anomaly_kind_text(#[case] kind: AnomalyKind, #[case] text: &str) {
        assert_eq!(kind.as_str(), text);
    }

    #[test]
    fn ok_render_block() {
        let doctor = Practitioner {
            id: "10003456789".into(),
            family: "LEBLANC".into(),
            given: "PIERRE".into(),
            prefix: "DR".into(),
            rpps: Some("10003456789".into()),
        };
        let encounter = EncounterView {
            nda: "900001".into(),
            status: EncounterStatus::Admitted,
            class: Some("I".into()),
            unit: Some("4020".into()),
            attending: Some(doctor),
            admitting: None,
            referring: None,
            admit_at: Some("2026-11-22T08:15:00".into()),
            discharge_at: None,
        };
        let view = PatientView {
            ipp: "100001".into(),
            resolved_from: Some("100009".into()),
            merged_ipps: vec!["100009".into()],
            legal_name: Some(PersonName {
                family: "DURAND".into(),
                given: "JEANNE".into(),
            }),
            used_name: None,
            birth_date: Some("1975-04-12".into()),
            sex: Some("F".into()),
            reliability: Some("VALI".into()),
            ins: Some(Ins {
                value: "275046912345678".into(),
                oid: crate::census::INS_TEST_OID.into(),
                kind: InsKind::Test,
            }),
            current: Some(encounter.clone()),
            encounters: vec![encounter],
            movements: vec![MovementView {
                movement_id: "MVT0001".into(),
                nda: "900001".into(),
                event: "A01".into(),
                cancelled: true,
                at: Some("2026-11-22T08:15:00".into()),
                unit: Some("4010".into()),
                journal_id: 2,
                updated_by: None,
                cancelled_by: Some(3),
            }],
            anomalies: vec![AnomalyView {
                journal_id: 3,
                kind: "out_of_order".into(),
                text: "late".into(),
            }],
        };
        assert_eq!(
            render(&view),
            "Patient IPP 100001 (IPP 100009 was merged into it)
  Legal name    DURAND JEANNE
  Used name     -
  Birth date    1975-04-12
  Sex           F
  Identity      VALI
  INS           275046912345678 (INS test, OID 1.2.250.1.213.1.4.10)
  Merged IPPs   100009
Encounter NDA 900001
  Status        admitted (class I)
  Unit          4020
  Attending     DR LEBLANC PIERRE (RPPS 10003456789)
  Admitting     -
  Referring     -
  Admitted      2026-11-22T08:15:00
  Discharged    -
Movements (1)
  2026-11-22T08:15:00  A01 admission          MVT0001      NDA 900001 unit 4010 journal #2, CANCELLED #3
Anomalies (1)
  journal #3 out_of_order: late
"
        );
    }
}

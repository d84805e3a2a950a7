//! The census tables (schema version 2): applying a [`CensusUpdate`] in the writer's
//! transaction, and the patient and practitioner views on the read pool.
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

use rusqlite::{Connection, OptionalExtension, Row, params};

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
/// `updated_at` is rewritten only when a day old (see [`UPDATED_AT_GRAIN`]).
const PATIENT_LOOKUP: &str =
    "SELECT id, merged_into, identity_hash, updated_at FROM census_patients WHERE ipp = ?1";
/// Records that a message named the patient (`?2` now), when the record is older than `?3`.
const PATIENT_TOUCH: &str = "UPDATE census_patients SET updated_at = ?2
    WHERE id = ?1 AND ifnull(updated_at < ?3, 1)";
/// `census_patients.updated_at` (what census retention counts from) is kept to this
/// precision, in microseconds: a patient named by every message of a stay costs one write a
/// day, not one a message.
const UPDATED_AT_GRAIN: i64 = 86_400_000_000;
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

/// An encounter's state: the fold of its active movements. Doctors stay JSON text here (they
/// are only copied, never looked into, while applying).
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    status: EncounterStatus,
    class: Option<String>,
    unit: Option<String>,
    attending: Option<String>,
    admitting: Option<String>,
    referring: Option<String>,
    admit_at: Option<String>,
    discharge_at: Option<String>,
    last_at: Option<String>,
}

impl Default for State {
    fn default() -> Self {
        State {
            status: EncounterStatus::Unknown,
            class: None,
            unit: None,
            attending: None,
            admitting: None,
            referring: None,
            admit_at: None,
            discharge_at: None,
            last_at: None,
        }
    }
}

/// One movement as stored: what the fold reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Facts {
    event: Event,
    at: String,
    class: Option<String>,
    unit: Option<String>,
    attending: Option<String>,
    admitting: Option<String>,
    referring: Option<String>,
    admit_at: Option<String>,
    discharge_at: Option<String>,
}

impl Facts {
    fn new(event: Event, at: String, facts: &EncounterFacts) -> rusqlite::Result<Facts> {
        Ok(Facts {
            event,
            at,
            class: facts.class.clone(),
            unit: facts.unit.clone(),
            attending: json(facts.attending.as_ref())?,
            admitting: json(facts.admitting.as_ref())?,
            referring: json(facts.referring.as_ref())?,
            admit_at: facts.admit_at.map(|t| t.to_string()),
            discharge_at: facts.discharge_at.map(|t| t.to_string()),
        })
    }
}

fn json(practitioner: Option<&Practitioner>) -> rusqlite::Result<Option<String>> {
    practitioner
        .map(|p| {
            serde_json::to_string(p)
                .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))
        })
        .transpose()
}

/// FNV-1a over every identity field the census stores (fields separated by a byte that text
/// cannot hold), as an `i64` column. Not a security hash: a collision only skips one update
/// of an identity that differs from the stored one in a 1-in-2^64 way.
fn identity_hash(p: &Patient) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |text: &str| {
        for b in text.bytes().chain(std::iter::once(0xFF)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "\u{1}".to_owned());
    feed(&p.ipp);
    for id in &p.identifiers {
        for part in [&id.value, &id.namespace, &id.oid, &id.id_type] {
            feed(part);
        }
    }
    for name in [&p.legal_name, &p.used_name] {
        match name {
            Some(n) => {
                feed(&n.family);
                feed(&n.given);
            }
            None => feed("\u{1}"),
        }
    }
    match &p.ins {
        Some(ins) => {
            feed(&ins.value);
            feed(&ins.oid);
        }
        None => feed("\u{1}"),
    }
    feed(&opt(&p.birth_date));
    feed(&opt(&p.sex));
    feed(&opt(&p.reliability));
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// Folds one movement onto an encounter's state (see the module docs).
fn step(state: &mut State, f: &Facts) {
    match f.event {
        Event::PreAdmit => state.status = EncounterStatus::PreAdmitted,
        Event::Admit | Event::Register => {
            state.status = EncounterStatus::Admitted;
            state.admit_at = Some(f.at.clone());
            state.discharge_at = None;
        }
        Event::Discharge => {
            state.status = EncounterStatus::Discharged;
            state.discharge_at = Some(f.discharge_at.clone().unwrap_or_else(|| f.at.clone()));
        }
        Event::ToInpatient => state.class = Some("I".to_owned()),
        Event::ToOutpatient => state.class = Some("O".to_owned()),
        Event::LeaveOut => state.status = EncounterStatus::OnLeave,
        Event::LeaveReturn => state.status = EncounterStatus::Admitted,
        Event::Transfer | Event::DoctorChange | Event::VisitUpdate => {}
    }
    let set = |slot: &mut Option<String>, value: &Option<String>| {
        if value.is_some() {
            slot.clone_from(value);
        }
    };
    set(&mut state.class, &f.class);
    set(&mut state.unit, &f.unit);
    set(&mut state.attending, &f.attending);
    set(&mut state.admitting, &f.admitting);
    set(&mut state.referring, &f.referring);
    set(&mut state.admit_at, &f.admit_at);
    if f.event == Event::VisitUpdate {
        set(&mut state.discharge_at, &f.discharge_at);
    }
    if state
        .last_at
        .as_deref()
        .is_none_or(|last| f.at.as_str() >= last)
    {
        state.last_at = Some(f.at.clone());
    }
}

/// A patient row as `PATIENT_LOOKUP` reads it: id, `merged_into`, identity hash,
/// `updated_at`.
type LookedUp = (i64, Option<i64>, Option<i64>, Option<i64>);

/// An encounter row as `ENCOUNTER_BY_NDA` reads it.
struct EncounterRow {
    id: i64,
    patient_id: i64,
    state: State,
}

/// A movement row as `MOVEMENT_BY_ID` reads it.
struct MovementRow {
    seq: i64,
    encounter_id: i64,
    event: String,
    cancelled: bool,
    journal_id: i64,
    updated_journal_id: Option<i64>,
    cancel_journal_id: Option<i64>,
}

/// One update being applied: the transaction's connection and what it collected.
struct Apply<'c> {
    conn: &'c Connection,
    journal_id: i64,
    /// When the update is applied (µs since 1970): `census_patients.updated_at`.
    now: i64,
    /// The patient the anomalies are filed under.
    patient_id: Option<i64>,
    anomalies: Vec<Anomaly>,
}

/// Applies one update and marks its journal row processed, inside the caller's transaction.
pub(super) fn apply(
    conn: &Connection,
    journal_id: i64,
    update: &CensusUpdate,
) -> rusqlite::Result<CensusOutcome> {
    // Marked first (the transaction makes it atomic with the rest): one statement in the
    // common case; only a row that was not `accepted` needs a second look.
    let note = match update {
        CensusUpdate::Unusable { note } => Some(note.as_str()),
        _ => None,
    };
    let marked = conn
        .prepare_cached(MARK_PROCESSED)?
        .execute(params![journal_id, note])?;
    let status: Option<String> = if marked == 1 {
        Some("accepted".to_owned())
    } else {
        conn.prepare_cached(JOURNAL_STATUS)?
            .query_row([journal_id], |row| row.get(0))
            .optional()?
    };
    let mut cx = Apply {
        conn,
        journal_id,
        now: jiff::Timestamp::now().as_microsecond(),
        patient_id: None,
        anomalies: Vec::new(),
    };
    match status.as_deref() {
        Some("processed") => {
            return Ok(CensusOutcome {
                status: ApplyStatus::AlreadyProcessed,
                anomalies: Vec::new(),
            });
        }
        Some(_) => {}
        None => cx.flag(
            AnomalyKind::JournalRowMissing,
            format!("journal row {journal_id} does not exist: applied anyway"),
        ),
    }
    let status = match update {
        CensusUpdate::Identity(patient) => {
            cx.patient(patient)?;
            ApplyStatus::Applied
        }
        CensusUpdate::Visit(visit) => {
            cx.visit(visit)?;
            ApplyStatus::Applied
        }
        CensusUpdate::Cancel(cancel) => {
            cx.cancel(cancel)?;
            ApplyStatus::Applied
        }
        CensusUpdate::Merge(merge) => {
            cx.merge(merge)?;
            ApplyStatus::Applied
        }
        CensusUpdate::Ignored { .. } | CensusUpdate::Unusable { .. } => ApplyStatus::Ignored,
    };
    if !cx.anomalies.is_empty() {
        let mut insert = conn.prepare_cached(ANOMALY_INSERT)?;
        for anomaly in &cx.anomalies {
            insert.execute(params![
                journal_id,
                cx.patient_id,
                anomaly.kind.as_str(),
                anomaly.text
            ])?;
        }
    }
    Ok(CensusOutcome {
        status,
        anomalies: cx.anomalies,
    })
}

impl Apply<'_> {
    fn flag(&mut self, kind: AnomalyKind, text: String) {
        self.anomalies.push(Anomaly { kind, text });
    }

    /// Follows `merged_into` to the surviving patient (bounded, in case of a cycle).
    fn resolve(&self, mut id: i64) -> rusqlite::Result<i64> {
        let mut next = self.conn.prepare_cached(PATIENT_MERGED_INTO)?;
        for _ in 0..16 {
            match next.query_row([id], |row| row.get::<_, Option<i64>>(0))? {
                Some(target) if target != id => id = target,
                _ => break,
            }
        }
        Ok(id)
    }

    /// Records that this message named patient `id` (see [`PATIENT_TOUCH`]).
    fn touch(&self, id: i64) -> rusqlite::Result<()> {
        self.conn.prepare_cached(PATIENT_TOUCH)?.execute(params![
            id,
            self.now,
            self.now - UPDATED_AT_GRAIN
        ])?;
        Ok(())
    }

    fn ipp_of(&self, id: i64) -> rusqlite::Result<String> {
        self.conn
            .prepare_cached(PATIENT_IPP)?
            .query_row([id], |row| row.get(0))
    }

    /// Creates or updates the patient; returns the surviving patient's id.
    fn patient(&mut self, p: &Patient) -> rusqlite::Result<i64> {
        let hash = identity_hash(p);
        let found: Option<LookedUp> = self
            .conn
            .prepare_cached(PATIENT_LOOKUP)?
            .query_row([&p.ipp], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        let id = match found {
            Some((id, None, stored, updated)) if stored == Some(hash) => {
                if updated.is_none_or(|at| at < self.now - UPDATED_AT_GRAIN) {
                    self.touch(id)?;
                }
                id
            }
            Some((merged, Some(_), _, _)) => {
                let survivor = self.resolve(merged)?;
                self.touch(survivor)?;
                let survivor_ipp = self.ipp_of(survivor)?;
                self.flag(
                    AnomalyKind::MergedPatient,
                    format!(
                        "IPP {} was merged into IPP {survivor_ipp}: applied to IPP \
                         {survivor_ipp}, identity not updated",
                        p.ipp
                    ),
                );
                survivor
            }
            found => {
                let legal = p.legal_name.as_ref();
                let used = p.used_name.as_ref();
                let ins = p.ins.as_ref();
                // ?1 is the row id for an update, the IPP for an insert; the rest is shared.
                let key: &dyn rusqlite::ToSql = match &found {
                    Some((id, _, _, _)) => id,
                    None => &p.ipp,
                };
                let values = params![
                    key,
                    legal.map(|n| &n.family),
                    legal.map(|n| &n.given),
                    used.map(|n| &n.family),
                    used.map(|n| &n.given),
                    p.birth_date,
                    p.sex,
                    p.reliability,
                    ins.map(|i| &i.value),
                    ins.map(|i| &i.oid),
                    self.journal_id,
                    hash,
                    self.now,
                ];
                let id = match found {
                    Some((id, _, _, _)) => {
                        self.conn.prepare_cached(PATIENT_UPDATE)?.execute(values)?;
                        id
                    }
                    None => self
                        .conn
                        .prepare_cached(PATIENT_INSERT)?
                        .query_row(values, |row| row.get(0))?,
                };
                let mut insert = self.conn.prepare_cached(IDENTIFIER_INSERT)?;
                for identifier in &p.identifiers {
                    let authority = if identifier.oid.is_empty() {
                        &identifier.namespace
                    } else {
                        &identifier.oid
                    };
                    insert.execute(params![id, identifier.id_type, authority, identifier.value])?;
                }
                id
            }
        };
        self.patient_id = Some(id);
        Ok(id)
    }

    fn practitioners(&self, facts: &EncounterFacts) -> rusqlite::Result<()> {
        let doctors = [&facts.attending, &facts.admitting, &facts.referring];
        for doctor in doctors.into_iter().flatten() {
            if let Some(rpps) = &doctor.rpps {
                self.conn
                    .prepare_cached(PRACTITIONER_UPSERT)?
                    .execute(params![
                        rpps,
                        doctor.family,
                        doctor.given,
                        doctor.prefix,
                        self.journal_id
                    ])?;
            }
        }
        Ok(())
    }

    fn encounter(&self, nda: &str) -> rusqlite::Result<Option<EncounterRow>> {
        self.conn
            .prepare_cached(ENCOUNTER_BY_NDA)?
            .query_row([nda], |row| {
                Ok(EncounterRow {
                    id: row.get(0)?,
                    patient_id: row.get(1)?,
                    state: State {
                        status: EncounterStatus::from_text(&row.get::<_, String>(2)?),
                        class: row.get(3)?,
                        unit: row.get(4)?,
                        attending: row.get(5)?,
                        admitting: row.get(6)?,
                        referring: row.get(7)?,
                        admit_at: row.get(8)?,
                        discharge_at: row.get(9)?,
                        last_at: row.get(10)?,
                    },
                })
            })
            .optional()
    }

    fn create_encounter(&self, nda: &str, patient_id: i64, s: &State) -> rusqlite::Result<i64> {
        self.conn.prepare_cached(ENCOUNTER_INSERT)?.query_row(
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
                self.journal_id
            ],
            |row| row.get(0),
        )
    }

    fn save_encounter(&self, id: i64, s: &State) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(ENCOUNTER_UPDATE)?
            .execute(params![
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
                self.journal_id
            ])?;
        Ok(())
    }

    /// Recomputes an encounter from its active movements, in time order.
    fn replay(&self, encounter_id: i64) -> rusqlite::Result<()> {
        let mut state = State::default();
        let mut statement = self.conn.prepare_cached(MOVEMENTS_ACTIVE)?;
        let mut rows = statement.query([encounter_id])?;
        let mut any = false;
        while let Some(row) = rows.next()? {
            let Some(event) = Event::from_trigger(&row.get::<_, String>(0)?) else {
                continue;
            };
            any = true;
            step(
                &mut state,
                &Facts {
                    event,
                    at: row.get(1)?,
                    class: row.get(2)?,
                    unit: row.get(3)?,
                    attending: row.get(4)?,
                    admitting: row.get(5)?,
                    referring: row.get(6)?,
                    admit_at: row.get(7)?,
                    discharge_at: row.get(8)?,
                },
            );
        }
        if !any {
            state.status = EncounterStatus::Cancelled;
        }
        self.save_encounter(encounter_id, &state)
    }

    fn movement(&self, movement_id: &str) -> rusqlite::Result<Option<MovementRow>> {
        self.conn
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
    ) -> rusqlite::Result<()> {
        self.conn.prepare_cached(MOVEMENT_INSERT)?.execute(params![
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
            self.journal_id,
            cancelled.then_some(self.journal_id),
        ])?;
        Ok(())
    }

    fn visit(&mut self, v: &Visit) -> rusqlite::Result<()> {
        let patient_id = self.patient(&v.patient)?;
        self.practitioners(&v.facts)?;
        let facts = Facts::new(v.event, v.at.to_string(), &v.facts)?;
        let trigger = v.event.trigger();
        let movement_id = v
            .movement_id
            .clone()
            .unwrap_or_else(|| format!("#{}", self.journal_id));
        let encounter = self.encounter(&v.nda)?;
        match &encounter {
            None if !matches!(v.event, Event::PreAdmit | Event::Admit | Event::Register) => self
                .flag(
                    AnomalyKind::UnknownEncounter,
                    format!(
                        "{trigger} for NDA {}, not seen before: encounter created from it",
                        v.nda
                    ),
                ),
            Some(e) if e.patient_id != patient_id => {
                let owner = self.ipp_of(e.patient_id)?;
                self.flag(
                    AnomalyKind::PatientMismatch,
                    format!(
                        "{trigger} names IPP {} for NDA {}, which belongs to IPP {owner}: kept \
                         with IPP {owner}",
                        v.patient.ipp, v.nda
                    ),
                );
                // The movement applies to the owner's encounter: file the anomaly there.
                self.patient_id = Some(e.patient_id);
            }
            _ => {}
        }
        let Some(existing) = self.movement(&movement_id)? else {
            if v.correction {
                self.flag(
                    AnomalyKind::UnknownMovement,
                    format!(
                        "update of movement {movement_id} ({trigger}), not seen before: \
                         recorded as a new movement"
                    ),
                );
            }
            return match encounter {
                None => {
                    let mut state = State::default();
                    step(&mut state, &facts);
                    let id = self.create_encounter(&v.nda, patient_id, &state)?;
                    self.insert_movement(&movement_id, id, &facts, false)
                }
                Some(EncounterRow { id, mut state, .. }) => {
                    self.insert_movement(&movement_id, id, &facts, false)?;
                    match state.last_at.clone() {
                        Some(last) if facts.at < last => {
                            self.flag(
                                AnomalyKind::OutOfOrder,
                                format!(
                                    "{trigger} movement {movement_id} at {} is older than the \
                                     latest movement of NDA {} ({last}): state replayed in time \
                                     order",
                                    facts.at, v.nda
                                ),
                            );
                            self.replay(id)
                        }
                        _ => {
                            step(&mut state, &facts);
                            self.save_encounter(id, &state)
                        }
                    }
                }
            };
        };
        if existing.journal_id == self.journal_id
            || existing.updated_journal_id == Some(self.journal_id)
        {
            return Ok(()); // this very message was applied already
        }
        if existing.cancelled {
            self.flag(
                AnomalyKind::CancelledMovement,
                format!(
                    "{trigger} movement {movement_id} was cancelled (journal row {}): data \
                     updated, still cancelled",
                    existing.cancel_journal_id.unwrap_or(existing.journal_id)
                ),
            );
        } else if !v.correction {
            self.flag(
                AnomalyKind::DuplicateMovement,
                format!(
                    "movement {movement_id} was already recorded (journal row {}): replaced by \
                     this {trigger}",
                    existing.journal_id
                ),
            );
        }
        let encounter_id = match encounter {
            Some(e) => e.id,
            None => self.create_encounter(&v.nda, patient_id, &State::default())?,
        };
        self.conn.prepare_cached(MOVEMENT_UPDATE)?.execute(params![
            existing.seq,
            encounter_id,
            facts.event.trigger(),
            facts.at,
            facts.class,
            facts.unit,
            facts.attending,
            facts.admitting,
            facts.referring,
            facts.admit_at,
            facts.discharge_at,
            self.journal_id,
        ])?;
        self.replay(encounter_id)?;
        if existing.encounter_id != encounter_id {
            self.replay(existing.encounter_id)?;
        }
        Ok(())
    }

    fn cancel(&mut self, c: &Cancel) -> rusqlite::Result<()> {
        self.patient(&c.patient)?;
        let trigger = c.trigger.as_str();
        let encounter = match &c.nda {
            Some(nda) => self.encounter(nda)?,
            None => None,
        };
        let movement_id = match (&c.movement_id, &encounter) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(e)) => {
                let mut latest = self.conn.prepare_cached(MOVEMENTS_LATEST)?;
                let mut found = None;
                for event in &c.cancels {
                    found = latest
                        .query_row(params![e.id, event.trigger()], |row| row.get(0))
                        .optional()?;
                    if found.is_some() {
                        break;
                    }
                }
                found
            }
            (None, None) => None,
        };
        let existing = match &movement_id {
            Some(id) => self.movement(id)?,
            None => None,
        };
        let expected: Vec<&str> = c.cancels.iter().map(|e| e.trigger()).collect();
        let expected = expected.join("/");
        match existing {
            Some(m) if m.cancelled => {
                if m.cancel_journal_id != Some(self.journal_id) {
                    self.flag(
                        AnomalyKind::AlreadyCancelled,
                        format!(
                            "{trigger} cancels movement {}, already cancelled (journal row {}): \
                             nothing to undo",
                            movement_id.unwrap_or_default(),
                            m.cancel_journal_id.unwrap_or(m.journal_id)
                        ),
                    );
                }
                Ok(())
            }
            Some(m) => {
                let kind = Event::from_trigger(&m.event);
                if !kind.is_some_and(|k| c.cancels.contains(&k)) {
                    self.flag(
                        AnomalyKind::CancelMismatch,
                        format!(
                            "{trigger} cancels movement {}, which is an {} and not an \
                             {expected}: cancelled as asked",
                            movement_id.unwrap_or_default(),
                            m.event
                        ),
                    );
                }
                self.conn
                    .prepare_cached(MOVEMENT_CANCEL)?
                    .execute([m.seq, self.journal_id])?;
                self.replay(m.encounter_id)
            }
            None => match (movement_id, &c.nda) {
                (Some(id), Some(nda)) => {
                    self.flag(
                        AnomalyKind::UnknownMovement,
                        format!(
                            "{trigger} cancels movement {id} ({expected}), not seen before: \
                             recorded as cancelled, so it stays cancelled if it arrives later"
                        ),
                    );
                    let encounter_id = match encounter {
                        Some(e) => e.id,
                        None => {
                            let patient_id = self.patient_id.unwrap_or_default();
                            self.create_encounter(nda, patient_id, &State::default())?
                        }
                    };
                    let event = c.cancels.first().copied().unwrap_or(Event::VisitUpdate);
                    let facts = Facts::new(event, c.at.to_string(), &EncounterFacts::default())?;
                    self.insert_movement(&id, encounter_id, &facts, true)?;
                    self.replay(encounter_id)
                }
                (id, nda) => {
                    let what = match id {
                        Some(id) => format!("movement {id}"),
                        None => format!("the latest {expected}"),
                    };
                    let of = nda
                        .as_deref()
                        .map_or_else(|| "no NDA given".to_owned(), |nda| format!("NDA {nda}"));
                    self.flag(
                        AnomalyKind::UnknownMovement,
                        format!("{trigger} cancels {what} ({of}), not found: nothing to undo"),
                    );
                    Ok(())
                }
            },
        }
    }

    fn merge(&mut self, m: &Merge) -> rusqlite::Result<()> {
        let survivor = self.patient(&m.survivor)?;
        let survivor_ipp = self.ipp_of(survivor)?;
        let merged: Option<(i64, Option<i64>)> = self
            .conn
            .prepare_cached(PATIENT_BY_IPP)?
            .query_row([&m.merged_ipp], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let Some((merged, before)) = merged else {
            self.flag(
                AnomalyKind::UnknownPatient,
                format!(
                    "A40 merges IPP {}, not seen before: recorded as merged into IPP \
                     {survivor_ipp}",
                    m.merged_ipp
                ),
            );
            self.conn.prepare_cached(PATIENT_STUB)?.query_row(
                params![m.merged_ipp, survivor, self.journal_id, self.now],
                |row| row.get::<_, i64>(0),
            )?;
            return Ok(());
        };
        if merged == survivor {
            self.flag(
                AnomalyKind::SelfMerge,
                format!(
                    "A40 merges IPP {} into IPP {survivor_ipp}, the same patient: nothing to do",
                    m.merged_ipp
                ),
            );
            return Ok(());
        }
        if before == Some(survivor) {
            return Ok(()); // merged already
        }
        if let Some(other) = before {
            let other_ipp = self.ipp_of(other)?;
            self.flag(
                AnomalyKind::MergedPatient,
                format!(
                    "IPP {} was merged into IPP {other_ipp} before: now merged into IPP \
                     {survivor_ipp}",
                    m.merged_ipp
                ),
            );
        }
        self.conn.prepare_cached(PATIENT_MERGE)?.execute([
            merged,
            survivor,
            self.journal_id,
            self.now,
        ])?;
        self.conn
            .prepare_cached(PATIENT_FLATTEN)?
            .execute([merged, survivor])?;
        self.conn
            .prepare_cached(ENCOUNTERS_MOVE)?
            .execute([merged, survivor])?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

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

/// Follows `merged_into` on a read connection.
fn resolve_read(conn: &Connection, mut id: i64) -> rusqlite::Result<i64> {
    let mut next = conn.prepare_cached(PATIENT_MERGED_INTO)?;
    for _ in 0..16 {
        match next
            .query_row([id], |row| row.get::<_, Option<i64>>(0))
            .optional()?
            .flatten()
        {
            Some(target) if target != id => id = target,
            _ => break,
        }
    }
    Ok(id)
}

fn one_id(conn: &Connection, sql: &str, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(sql)?
        .query_row([key], |row| row.get(0))
        .optional()
}

fn name(family: Option<String>, given: Option<String>) -> Option<PersonName> {
    (family.is_some() || given.is_some()).then(|| PersonName {
        family: family.unwrap_or_default(),
        given: given.unwrap_or_default(),
    })
}

/// A stored practitioner column; a value that is not our JSON reads as absent.
fn practitioner_column(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Practitioner>> {
    let text: Option<String> = row.get(column)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// The patient for `key`, with the survivor's data when the key names a merged IPP.
pub(super) fn patient_view(
    conn: &Connection,
    key: &PatientKey,
) -> rusqlite::Result<Option<PatientView>> {
    let found = match key {
        PatientKey::Ipp(ipp) => one_id(conn, VIEW_BY_IPP, ipp)?,
        PatientKey::Nda(nda) => one_id(conn, VIEW_BY_NDA, nda)?,
        PatientKey::Ins(ins) => one_id(conn, VIEW_BY_INS, ins)?,
    };
    let Some(found) = found else {
        return Ok(None);
    };
    let id = resolve_read(conn, found)?;
    let mut view = conn.prepare_cached(VIEW_PATIENT)?.query_row([id], |row| {
        let reliability: Option<String> = row.get(7)?;
        let validated = reliability
            .as_deref()
            .is_some_and(|r| r.split('~').any(|s| s == "VALI"));
        let ins_value: Option<String> = row.get(8)?;
        let ins_oid: Option<String> = row.get(9)?;
        let ins = ins_value.filter(|_| validated).map(|value| {
            let oid = ins_oid.unwrap_or_default();
            Ins {
                value,
                kind: InsKind::from_oid(&oid),
                oid,
            }
        });
        Ok(PatientView {
            ipp: row.get(0)?,
            resolved_from: None,
            merged_ipps: Vec::new(),
            legal_name: name(row.get(1)?, row.get(2)?),
            used_name: name(row.get(3)?, row.get(4)?),
            birth_date: row.get(5)?,
            sex: row.get(6)?,
            reliability,
            ins,
            current: None,
            encounters: Vec::new(),
            movements: Vec::new(),
            anomalies: Vec::new(),
        })
    })?;
    if let PatientKey::Ipp(ipp) = key
        && *ipp != view.ipp
    {
        view.resolved_from = Some(ipp.clone());
    }
    let mut statement = conn.prepare_cached(VIEW_MERGED_IPPS)?;
    view.merged_ipps = statement
        .query_map([id], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut statement = conn.prepare_cached(VIEW_ENCOUNTERS)?;
    view.encounters = statement
        .query_map([id], |row| {
            Ok(EncounterView {
                nda: row.get(0)?,
                status: EncounterStatus::from_text(&row.get::<_, String>(1)?),
                class: row.get(2)?,
                unit: row.get(3)?,
                attending: practitioner_column(row, 4)?,
                admitting: practitioner_column(row, 5)?,
                referring: practitioner_column(row, 6)?,
                admit_at: row.get(7)?,
                discharge_at: row.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let open = |e: &&EncounterView| {
        matches!(
            e.status,
            EncounterStatus::Admitted | EncounterStatus::OnLeave | EncounterStatus::PreAdmitted
        )
    };
    view.current = match key {
        PatientKey::Nda(nda) => view.encounters.iter().find(|e| e.nda == *nda),
        _ => view
            .encounters
            .iter()
            .find(open)
            .or_else(|| view.encounters.first()),
    }
    .cloned();
    let mut statement = conn.prepare_cached(VIEW_MOVEMENTS)?;
    view.movements = statement
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
        .collect::<rusqlite::Result<_>>()?;
    let mut statement = conn.prepare_cached(VIEW_ANOMALIES)?;
    view.anomalies = statement
        .query_map([id], |row| {
            Ok(AnomalyView {
                journal_id: row.get(0)?,
                kind: row.get(1)?,
                text: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(view))
}

/// A practitioner by RPPS, as last named by an ADT message.
pub(super) fn practitioner(
    conn: &Connection,
    rpps: &str,
) -> rusqlite::Result<Option<Practitioner>> {
    conn.prepare_cached(VIEW_PRACTITIONER)?
        .query_row([rpps], |row| {
            let rpps: String = row.get(0)?;
            Ok(Practitioner {
                id: rpps.clone(),
                rpps: Some(rpps),
                family: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                given: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                prefix: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
            })
        })
        .optional()
}

/// What `ordobridge census --ipp X | --nda Y` prints: a readable block, one fact per line.
pub fn render(view: &PatientView) -> String {
    use std::fmt::Write as _;
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let person = |n: &Option<PersonName>| {
        n.as_ref().map_or_else(
            || "-".to_owned(),
            |n| format!("{} {}", n.family, n.given).trim().to_owned(),
        )
    };
    let doctor = |p: &Option<Practitioner>| match p {
        None => "-".to_owned(),
        Some(p) => {
            let name = [p.prefix.as_str(), p.family.as_str(), p.given.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            match &p.rpps {
                Some(rpps) => format!("{name} (RPPS {rpps})"),
                None => format!("{name} (id {}, no RPPS)", p.id),
            }
        }
    };
    let mut out = String::new();
    let _ = write!(out, "Patient IPP {}", view.ipp);
    if let Some(from) = &view.resolved_from {
        let _ = write!(out, " (IPP {from} was merged into it)");
    }
    out.push('\n');
    let _ = writeln!(out, "  Legal name    {}", person(&view.legal_name));
    let _ = writeln!(out, "  Used name     {}", person(&view.used_name));
    let _ = writeln!(out, "  Birth date    {}", dash(&view.birth_date));
    let _ = writeln!(out, "  Sex           {}", dash(&view.sex));
    let _ = writeln!(out, "  Identity      {}", dash(&view.reliability));
    let ins = view.ins.as_ref().map_or_else(
        || "- (only shown for a validated identity)".to_owned(),
        |i| format!("{} ({}, OID {})", i.value, i.kind.label(), i.oid),
    );
    let _ = writeln!(out, "  INS           {ins}");
    if !view.merged_ipps.is_empty() {
        let _ = writeln!(out, "  Merged IPPs   {}", view.merged_ipps.join(", "));
    }
    match &view.current {
        None => out.push_str("No encounter\n"),
        Some(e) => {
            let _ = writeln!(out, "Encounter NDA {}", e.nda);
            let _ = writeln!(
                out,
                "  Status        {} (class {})",
                e.status.as_str(),
                dash(&e.class)
            );
            let _ = writeln!(out, "  Unit          {}", dash(&e.unit));
            let _ = writeln!(out, "  Attending     {}", doctor(&e.attending));
            let _ = writeln!(out, "  Admitting     {}", doctor(&e.admitting));
            let _ = writeln!(out, "  Referring     {}", doctor(&e.referring));
            let _ = writeln!(out, "  Admitted      {}", dash(&e.admit_at));
            let _ = writeln!(out, "  Discharged    {}", dash(&e.discharge_at));
        }
    }
    if view.encounters.len() > 1 {
        let others: Vec<String> = view
            .encounters
            .iter()
            .filter(|e| Some(&e.nda) != view.current.as_ref().map(|c| &c.nda))
            .map(|e| format!("{} ({})", e.nda, e.status.as_str()))
            .collect();
        let _ = writeln!(out, "Other encounters: {}", others.join(", "));
    }
    let _ = writeln!(out, "Movements ({})", view.movements.len());
    for m in &view.movements {
        let label = Event::from_trigger(&m.event).map_or("?", Event::label);
        let mut line = format!(
            "  {:<19}  {} {:<18} {:<12} NDA {} unit {} journal #{}",
            dash(&m.at),
            m.event,
            label,
            m.movement_id,
            m.nda,
            dash(&m.unit),
            m.journal_id
        );
        if let Some(u) = m.updated_by {
            let _ = write!(line, ", updated #{u}");
        }
        if m.cancelled {
            match m.cancelled_by {
                Some(c) => {
                    let _ = write!(line, ", CANCELLED #{c}");
                }
                None => line.push_str(", CANCELLED"),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if !view.anomalies.is_empty() {
        let _ = writeln!(out, "Anomalies ({})", view.anomalies.len());
        for a in &view.anomalies {
            let _ = writeln!(out, "  journal #{} {}: {}", a.journal_id, a.kind, a.text);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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

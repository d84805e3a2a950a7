//! Applying one census update in the writer's transaction (see the module docs of `census`).

use rusqlite::{Connection, OptionalExtension, params};

use super::*;

pub(super) const JOURNAL_STATUS: &str = "SELECT status FROM journal WHERE id = ?1";
/// `?2` is the note of a message the census could not use (NULL otherwise).
pub(super) const MARK_PROCESSED: &str =
    "UPDATE journal SET status = 'processed', note = ?2 WHERE id = ?1 AND status = 'accepted'";
pub(super) const PATIENT_INSERT: &str =
    "INSERT INTO census_patients (ipp, legal_family, legal_given,
        used_family, used_given, birth_date, sex, reliability, ins, ins_oid, journal_id,
        identity_hash, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING id";
pub(super) const PATIENT_UPDATE: &str =
    "UPDATE census_patients SET legal_family = ?2, legal_given = ?3,
        used_family = ?4, used_given = ?5, birth_date = ?6, sex = ?7, reliability = ?8,
        ins = ?9, ins_oid = ?10, journal_id = ?11, identity_hash = ?12, updated_at = ?13
    WHERE id = ?1";
/// The identity hash lets the common case (same identity again) skip every patient write;
/// `updated_at` is rewritten only when a day old (see [`UPDATED_AT_GRAIN`]).
pub(super) const PATIENT_LOOKUP: &str =
    "SELECT id, merged_into, identity_hash, updated_at FROM census_patients WHERE ipp = ?1";
/// Records that a message named the patient (`?2` now), when the record is older than `?3`.
pub(super) const PATIENT_TOUCH: &str = "UPDATE census_patients SET updated_at = ?2
    WHERE id = ?1 AND ifnull(updated_at < ?3, 1)";
/// `census_patients.updated_at` (what census retention counts from) is kept to this
/// precision, in microseconds: a patient named by every message of a stay costs one write a
/// day, not one a message.
pub(super) const UPDATED_AT_GRAIN: i64 = 86_400_000_000;
pub(super) const PATIENT_BY_IPP: &str =
    "SELECT id, merged_into FROM census_patients WHERE ipp = ?1";
pub(super) const PATIENT_MERGED_INTO: &str =
    "SELECT merged_into FROM census_patients WHERE id = ?1";
pub(super) const PATIENT_IPP: &str = "SELECT ipp FROM census_patients WHERE id = ?1";
pub(super) const PATIENT_STUB: &str =
    "INSERT INTO census_patients (ipp, merged_into, journal_id, updated_at)
    VALUES (?1, ?2, ?3, ?4) RETURNING id";
pub(super) const PATIENT_MERGE: &str =
    "UPDATE census_patients SET merged_into = ?2, journal_id = ?3, updated_at = ?4 WHERE id = ?1";
pub(super) const PATIENT_FLATTEN: &str =
    "UPDATE census_patients SET merged_into = ?2 WHERE merged_into = ?1";
pub(super) const ENCOUNTERS_MOVE: &str =
    "UPDATE census_encounters SET patient_id = ?2 WHERE patient_id = ?1";
pub(super) const IDENTIFIER_INSERT: &str = "INSERT OR IGNORE INTO census_identifiers
    (patient_id, id_type, authority, value) VALUES (?1, ?2, ?3, ?4)";
/// Writes only when something changed.
pub(super) const PRACTITIONER_UPSERT: &str = "INSERT INTO census_practitioners
        (rpps, family, given, prefix, journal_id) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (rpps) DO UPDATE SET family = excluded.family, given = excluded.given,
        prefix = excluded.prefix, journal_id = excluded.journal_id
    WHERE family IS NOT excluded.family OR given IS NOT excluded.given
        OR prefix IS NOT excluded.prefix";
pub(super) const ENCOUNTER_BY_NDA: &str =
    "SELECT id, patient_id, status, class, unit, attending, admitting,
    referring, admit_at, discharge_at, last_movement_at FROM census_encounters WHERE nda = ?1";
pub(super) const ENCOUNTER_INSERT: &str =
    "INSERT INTO census_encounters (nda, patient_id, status, class,
        unit, attending, admitting, referring, admit_at, discharge_at, last_movement_at,
        journal_id)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id";
pub(super) const ENCOUNTER_UPDATE: &str =
    "UPDATE census_encounters SET status = ?2, class = ?3, unit = ?4,
        attending = ?5, admitting = ?6, referring = ?7, admit_at = ?8, discharge_at = ?9,
        last_movement_at = ?10, journal_id = ?11
    WHERE id = ?1";
pub(super) const MOVEMENT_BY_ID: &str = "SELECT seq, encounter_id, event, status, journal_id,
    updated_journal_id, cancel_journal_id FROM census_movements WHERE movement_id = ?1";
pub(super) const MOVEMENT_INSERT: &str =
    "INSERT INTO census_movements (movement_id, encounter_id, event,
        status, movement_at, class, unit, attending, admitting, referring, admit_at,
        discharge_at, journal_id, cancel_journal_id)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
pub(super) const MOVEMENT_UPDATE: &str =
    "UPDATE census_movements SET encounter_id = ?2, event = ?3,
        movement_at = ?4, class = ?5, unit = ?6, attending = ?7, admitting = ?8,
        referring = ?9, admit_at = ?10, discharge_at = ?11, updated_journal_id = ?12
    WHERE seq = ?1";
pub(super) const MOVEMENT_CANCEL: &str =
    "UPDATE census_movements SET status = 'cancelled', cancel_journal_id = ?2 WHERE seq = ?1";
pub(super) const MOVEMENTS_ACTIVE: &str =
    "SELECT event, movement_at, class, unit, attending, admitting,
        referring, admit_at, discharge_at
    FROM census_movements WHERE encounter_id = ?1 AND status = 'active'
    ORDER BY movement_at, seq";
pub(super) const MOVEMENTS_LATEST: &str = "SELECT movement_id FROM census_movements
    WHERE encounter_id = ?1 AND status = 'active' AND event = ?2
    ORDER BY movement_at DESC, seq DESC LIMIT 1";
pub(super) const ANOMALY_INSERT: &str =
    "INSERT INTO census_anomalies (journal_id, patient_id, kind, text) VALUES (?1, ?2, ?3, ?4)";

/// An encounter's state: the fold of its active movements. Doctors stay JSON text here (they
/// are only copied, never looked into, while applying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct State {
    pub(super) status: EncounterStatus,
    pub(super) class: Option<String>,
    pub(super) unit: Option<String>,
    pub(super) attending: Option<String>,
    pub(super) admitting: Option<String>,
    pub(super) referring: Option<String>,
    pub(super) admit_at: Option<String>,
    pub(super) discharge_at: Option<String>,
    pub(super) last_at: Option<String>,
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
pub(super) struct Facts {
    pub(super) event: Event,
    pub(super) at: String,
    pub(super) class: Option<String>,
    pub(super) unit: Option<String>,
    pub(super) attending: Option<String>,
    pub(super) admitting: Option<String>,
    pub(super) referring: Option<String>,
    pub(super) admit_at: Option<String>,
    pub(super) discharge_at: Option<String>,
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

pub(super) fn json(practitioner: Option<&Practitioner>) -> rusqlite::Result<Option<String>> {
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
pub(super) fn identity_hash(p: &Patient) -> i64 {
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
pub(super) fn step(state: &mut State, f: &Facts) {
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
pub(super) struct EncounterRow {
    id: i64,
    patient_id: i64,
    state: State,
}

/// A movement row as `MOVEMENT_BY_ID` reads it.
pub(super) struct MovementRow {
    seq: i64,
    encounter_id: i64,
    event: String,
    cancelled: bool,
    journal_id: i64,
    updated_journal_id: Option<i64>,
    cancel_journal_id: Option<i64>,
}

/// One update being applied: the transaction's connection and what it collected.
pub(super) struct Apply<'c> {
    conn: &'c Connection,
    journal_id: i64,
    /// When the update is applied (µs since 1970): `census_patients.updated_at`.
    now: i64,
    /// The patient the anomalies are filed under.
    patient_id: Option<i64>,
    anomalies: Vec<Anomaly>,
}

/// Applies one update and marks its journal row processed, inside the caller's transaction.
pub(in crate::store) fn apply(
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

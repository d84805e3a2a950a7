//! Applying one census update (see the module docs of `census`), whatever the backend.
//!
//! The rules live here once: which patient a message names (merged IPPs resolve to the
//! survivor), when an identity is rewritten, how a movement folds onto its encounter or
//! replays it, what a cancel undoes, what a merge moves, and every anomaly. They read and
//! write through [`Census`], one call per statement, inside the caller's transaction: SQLite's
//! executor is `census::sqlite` (the writer thread's transaction), PostgreSQL's
//! `postgres::census` (one transaction per update, the journal row locked first).

use super::*;

/// `census_patients.updated_at` (what census retention counts from) is kept to this
/// precision, in microseconds: a patient named by every message of a stay costs one write a
/// day, not one a message.
pub(super) const UPDATED_AT_GRAIN: i64 = 86_400_000_000;

/// The statements of one update, in the caller's transaction. Each method is one statement
/// (three for [`Census::merge_patient`], two for PostgreSQL's [`Census::claim`]); the
/// executor only binds parameters and reads columns.
pub(in crate::store) trait Census {
    /// What a failed statement gives.
    type Error;

    /// A practitioner that cannot be written as JSON (not reached with this build's types).
    fn unencodable(&self, error: serde_json::Error) -> Self::Error;
    /// Marks journal row `journal_id` processed (with `note`) if it is `accepted`, holding
    /// the row until the commit; its status before: `accepted` when marked, `None` for no row.
    fn claim(&self, journal_id: i64, note: Option<&str>) -> Result<Option<String>, Self::Error>;
    /// The patient with this IPP: id, `merged_into`, identity hash, `updated_at`.
    fn patient_lookup(&self, ipp: &str) -> Result<Option<LookedUp>, Self::Error>;
    /// `merged_into` of patient `id` (the row exists).
    fn merged_into(&self, id: i64) -> Result<Option<i64>, Self::Error>;
    /// Sets `updated_at` of patient `id` to `now` when it is older than `older_than` (or unset).
    fn touch(&self, id: i64, now: i64, older_than: i64) -> Result<(), Self::Error>;
    /// The IPP of patient `id` (the row exists).
    fn ipp_of(&self, id: i64) -> Result<String, Self::Error>;
    /// A new patient with this identity; its id.
    fn insert_patient(&self, p: &Patient, identity: &Written) -> Result<i64, Self::Error>;
    /// Rewrites the identity of patient `id`.
    fn update_patient(&self, id: i64, p: &Patient, identity: &Written) -> Result<(), Self::Error>;
    /// Adds an identifier of patient `id` unless it is there.
    fn insert_identifier(
        &self,
        patient_id: i64,
        id_type: &str,
        authority: &str,
        value: &str,
    ) -> Result<(), Self::Error>;
    /// Creates or updates a practitioner by RPPS, writing only when a name part changed.
    fn upsert_practitioner(
        &self,
        rpps: &str,
        doctor: &Practitioner,
        journal_id: i64,
    ) -> Result<(), Self::Error>;
    /// The encounter with this NDA.
    fn encounter(&self, nda: &str) -> Result<Option<EncounterRow>, Self::Error>;
    /// A new encounter; its id.
    fn create_encounter(
        &self,
        nda: &str,
        patient_id: i64,
        state: &State,
        journal_id: i64,
    ) -> Result<i64, Self::Error>;
    /// Writes encounter `id`'s state.
    fn save_encounter(&self, id: i64, state: &State, journal_id: i64) -> Result<(), Self::Error>;
    /// The active movements of an encounter in time order (then insertion order), those of a
    /// trigger this build does not know left out.
    fn active_movements(&self, encounter_id: i64) -> Result<Vec<Facts>, Self::Error>;
    /// The movement with this id.
    fn movement(&self, movement_id: &str) -> Result<Option<MovementRow>, Self::Error>;
    /// A new movement, `cancelled` by this journal row or active.
    fn insert_movement(
        &self,
        movement_id: &str,
        encounter_id: i64,
        facts: &Facts,
        cancelled: bool,
        journal_id: i64,
    ) -> Result<(), Self::Error>;
    /// Replaces the data of movement `seq` (a correction or a repeat).
    fn update_movement(
        &self,
        seq: i64,
        encounter_id: i64,
        facts: &Facts,
        journal_id: i64,
    ) -> Result<(), Self::Error>;
    /// Cancels movement `seq` by this journal row.
    fn cancel_movement(&self, seq: i64, journal_id: i64) -> Result<(), Self::Error>;
    /// The latest active movement of an encounter with this trigger.
    fn latest_movement(
        &self,
        encounter_id: i64,
        trigger: &str,
    ) -> Result<Option<String>, Self::Error>;
    /// The patient with this IPP: id and `merged_into`.
    fn patient_by_ipp(&self, ipp: &str) -> Result<Option<(i64, Option<i64>)>, Self::Error>;
    /// A patient known only as merged into `survivor`.
    fn insert_stub(
        &self,
        ipp: &str,
        survivor: i64,
        journal_id: i64,
        now: i64,
    ) -> Result<(), Self::Error>;
    /// Merges patient `merged` into `survivor`: the patients merged into it follow, and its
    /// encounters move.
    fn merge_patient(
        &self,
        merged: i64,
        survivor: i64,
        journal_id: i64,
        now: i64,
    ) -> Result<(), Self::Error>;
    /// Records an anomaly.
    fn insert_anomaly(
        &self,
        journal_id: i64,
        patient_id: Option<i64>,
        anomaly: &Anomaly,
    ) -> Result<(), Self::Error>;
}

/// What a patient write stores beside the identity.
pub(in crate::store) struct Written {
    pub(in crate::store) journal_id: i64,
    /// [`identity_hash`] of the identity.
    pub(in crate::store) hash: i64,
    /// `updated_at`.
    pub(in crate::store) now: i64,
}

/// An encounter's state: the fold of its active movements. Doctors stay JSON text here (they
/// are only copied, never looked into, while applying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store) struct State {
    pub(in crate::store) status: EncounterStatus,
    pub(in crate::store) class: Option<String>,
    pub(in crate::store) unit: Option<String>,
    pub(in crate::store) attending: Option<String>,
    pub(in crate::store) admitting: Option<String>,
    pub(in crate::store) referring: Option<String>,
    pub(in crate::store) admit_at: Option<String>,
    pub(in crate::store) discharge_at: Option<String>,
    pub(in crate::store) last_at: Option<String>,
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
pub(in crate::store) struct Facts {
    pub(in crate::store) event: Event,
    pub(in crate::store) at: String,
    pub(in crate::store) class: Option<String>,
    pub(in crate::store) unit: Option<String>,
    pub(in crate::store) attending: Option<String>,
    pub(in crate::store) admitting: Option<String>,
    pub(in crate::store) referring: Option<String>,
    pub(in crate::store) admit_at: Option<String>,
    pub(in crate::store) discharge_at: Option<String>,
}

impl Facts {
    fn new(event: Event, at: String, facts: &EncounterFacts) -> serde_json::Result<Facts> {
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

/// A practitioner as stored (JSON text).
pub(super) fn json(practitioner: Option<&Practitioner>) -> serde_json::Result<Option<String>> {
    practitioner.map(serde_json::to_string).transpose()
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

/// A patient row as [`Census::patient_lookup`] reads it: id, `merged_into`, identity hash,
/// `updated_at`.
pub(in crate::store) type LookedUp = (i64, Option<i64>, Option<i64>, Option<i64>);

/// An encounter row as [`Census::encounter`] reads it.
pub(in crate::store) struct EncounterRow {
    pub(in crate::store) id: i64,
    pub(in crate::store) patient_id: i64,
    pub(in crate::store) state: State,
}

/// A movement row as [`Census::movement`] reads it.
pub(in crate::store) struct MovementRow {
    pub(in crate::store) seq: i64,
    pub(in crate::store) encounter_id: i64,
    pub(in crate::store) event: String,
    pub(in crate::store) cancelled: bool,
    pub(in crate::store) journal_id: i64,
    pub(in crate::store) updated_journal_id: Option<i64>,
    pub(in crate::store) cancel_journal_id: Option<i64>,
}

/// One update being applied: the transaction's statements and what it collected.
struct Apply<'c, D> {
    db: &'c D,
    journal_id: i64,
    /// When the update is applied (µs since 1970): `census_patients.updated_at`.
    now: i64,
    /// The patient the anomalies are filed under.
    patient_id: Option<i64>,
    anomalies: Vec<Anomaly>,
}

/// Applies one update on SQLite and marks its journal row processed, inside the caller's
/// transaction (the writer's).
pub(in crate::store) fn apply(
    conn: &rusqlite::Connection,
    journal_id: i64,
    update: &CensusUpdate,
) -> rusqlite::Result<CensusOutcome> {
    apply_with(&super::sqlite::Sqlite(conn), journal_id, update)
}

/// Applies one update and marks its journal row processed, inside the caller's transaction.
pub(in crate::store) fn apply_with<D: Census>(
    db: &D,
    journal_id: i64,
    update: &CensusUpdate,
) -> Result<CensusOutcome, D::Error> {
    // Marked first (the transaction makes it atomic with the rest): one statement in the
    // common case; only a row that was not `accepted` needs a second look.
    let note = match update {
        CensusUpdate::Unusable { note } => Some(note.as_str()),
        _ => None,
    };
    let status = db.claim(journal_id, note)?;
    let mut cx = Apply {
        db,
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
    for anomaly in &cx.anomalies {
        db.insert_anomaly(journal_id, cx.patient_id, anomaly)?;
    }
    Ok(CensusOutcome {
        status,
        anomalies: cx.anomalies,
    })
}

impl<D: Census> Apply<'_, D> {
    fn flag(&mut self, kind: AnomalyKind, text: String) {
        self.anomalies.push(Anomaly { kind, text });
    }

    /// Follows `merged_into` to the surviving patient (bounded, in case of a cycle).
    fn resolve(&self, mut id: i64) -> Result<i64, D::Error> {
        for _ in 0..16 {
            match self.db.merged_into(id)? {
                Some(target) if target != id => id = target,
                _ => break,
            }
        }
        Ok(id)
    }

    /// Records that this message named patient `id` (updated when a day old).
    fn touch(&self, id: i64) -> Result<(), D::Error> {
        self.db.touch(id, self.now, self.now - UPDATED_AT_GRAIN)
    }

    fn facts(&self, event: Event, at: String, facts: &EncounterFacts) -> Result<Facts, D::Error> {
        Facts::new(event, at, facts).map_err(|e| self.db.unencodable(e))
    }

    /// Creates or updates the patient; returns the surviving patient's id.
    fn patient(&mut self, p: &Patient) -> Result<i64, D::Error> {
        let hash = identity_hash(p);
        let found = self.db.patient_lookup(&p.ipp)?;
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
                let survivor_ipp = self.db.ipp_of(survivor)?;
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
                let written = Written {
                    journal_id: self.journal_id,
                    hash,
                    now: self.now,
                };
                let id = match found {
                    Some((id, _, _, _)) => {
                        self.db.update_patient(id, p, &written)?;
                        id
                    }
                    None => self.db.insert_patient(p, &written)?,
                };
                for identifier in &p.identifiers {
                    let authority = if identifier.oid.is_empty() {
                        &identifier.namespace
                    } else {
                        &identifier.oid
                    };
                    self.db.insert_identifier(
                        id,
                        &identifier.id_type,
                        authority,
                        &identifier.value,
                    )?;
                }
                id
            }
        };
        self.patient_id = Some(id);
        Ok(id)
    }

    fn practitioners(&self, facts: &EncounterFacts) -> Result<(), D::Error> {
        let doctors = [&facts.attending, &facts.admitting, &facts.referring];
        for doctor in doctors.into_iter().flatten() {
            if let Some(rpps) = &doctor.rpps {
                self.db.upsert_practitioner(rpps, doctor, self.journal_id)?;
            }
        }
        Ok(())
    }

    fn create_encounter(&self, nda: &str, patient_id: i64, s: &State) -> Result<i64, D::Error> {
        self.db
            .create_encounter(nda, patient_id, s, self.journal_id)
    }

    fn save_encounter(&self, id: i64, s: &State) -> Result<(), D::Error> {
        self.db.save_encounter(id, s, self.journal_id)
    }

    /// Recomputes an encounter from its active movements, in time order.
    fn replay(&self, encounter_id: i64) -> Result<(), D::Error> {
        let mut state = State::default();
        let movements = self.db.active_movements(encounter_id)?;
        for facts in &movements {
            step(&mut state, facts);
        }
        if movements.is_empty() {
            state.status = EncounterStatus::Cancelled;
        }
        self.save_encounter(encounter_id, &state)
    }

    fn insert_movement(
        &self,
        movement_id: &str,
        encounter_id: i64,
        f: &Facts,
        cancelled: bool,
    ) -> Result<(), D::Error> {
        self.db
            .insert_movement(movement_id, encounter_id, f, cancelled, self.journal_id)
    }

    fn visit(&mut self, v: &Visit) -> Result<(), D::Error> {
        let patient_id = self.patient(&v.patient)?;
        self.practitioners(&v.facts)?;
        let facts = self.facts(v.event, v.at.to_string(), &v.facts)?;
        let trigger = v.event.trigger();
        let movement_id = v
            .movement_id
            .clone()
            .unwrap_or_else(|| format!("#{}", self.journal_id));
        let encounter = self.db.encounter(&v.nda)?;
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
                let owner = self.db.ipp_of(e.patient_id)?;
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
        let Some(existing) = self.db.movement(&movement_id)? else {
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
        self.db
            .update_movement(existing.seq, encounter_id, &facts, self.journal_id)?;
        self.replay(encounter_id)?;
        if existing.encounter_id != encounter_id {
            self.replay(existing.encounter_id)?;
        }
        Ok(())
    }

    fn cancel(&mut self, c: &Cancel) -> Result<(), D::Error> {
        self.patient(&c.patient)?;
        let trigger = c.trigger.as_str();
        let encounter = match &c.nda {
            Some(nda) => self.db.encounter(nda)?,
            None => None,
        };
        let movement_id = match (&c.movement_id, &encounter) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(e)) => {
                let mut found = None;
                for event in &c.cancels {
                    found = self.db.latest_movement(e.id, event.trigger())?;
                    if found.is_some() {
                        break;
                    }
                }
                found
            }
            (None, None) => None,
        };
        let existing = match &movement_id {
            Some(id) => self.db.movement(id)?,
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
                self.db.cancel_movement(m.seq, self.journal_id)?;
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
                    let facts = self.facts(event, c.at.to_string(), &EncounterFacts::default())?;
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

    fn merge(&mut self, m: &Merge) -> Result<(), D::Error> {
        let survivor = self.patient(&m.survivor)?;
        let survivor_ipp = self.db.ipp_of(survivor)?;
        let merged = self.db.patient_by_ipp(&m.merged_ipp)?;
        let Some((merged, before)) = merged else {
            self.flag(
                AnomalyKind::UnknownPatient,
                format!(
                    "A40 merges IPP {}, not seen before: recorded as merged into IPP \
                     {survivor_ipp}",
                    m.merged_ipp
                ),
            );
            self.db
                .insert_stub(&m.merged_ipp, survivor, self.journal_id, self.now)?;
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
            let other_ipp = self.db.ipp_of(other)?;
            self.flag(
                AnomalyKind::MergedPatient,
                format!(
                    "IPP {} was merged into IPP {other_ipp} before: now merged into IPP \
                     {survivor_ipp}",
                    m.merged_ipp
                ),
            );
        }
        self.db
            .merge_patient(merged, survivor, self.journal_id, self.now)?;
        Ok(())
    }
}

//! The patient and practitioner views, whatever the backend: what a lookup resolves to
//! (merged IPPs give the survivor), when the INS is shown, which encounter is current. The
//! statements are the executor's ([`Read`]): `census::sqlite` on a read connection,
//! `postgres::census` on a pooled one.

use super::*;
use crate::store::documents::{CensusLookup, CensusRecord};

/// Which column [`Read::patient_id`] looks a patient up by.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) enum ViewBy {
    /// `census_patients.ipp`.
    Ipp,
    /// The NDA of one of their encounters.
    Nda,
    /// `census_patients.ins` (a survivor first, then the latest).
    Ins,
}

/// A patient row as stored.
pub(in crate::store) struct StoredPatient {
    pub(in crate::store) ipp: String,
    pub(in crate::store) legal_family: Option<String>,
    pub(in crate::store) legal_given: Option<String>,
    pub(in crate::store) used_family: Option<String>,
    pub(in crate::store) used_given: Option<String>,
    pub(in crate::store) birth_date: Option<String>,
    pub(in crate::store) sex: Option<String>,
    pub(in crate::store) reliability: Option<String>,
    pub(in crate::store) ins: Option<String>,
    pub(in crate::store) ins_oid: Option<String>,
}

/// An encounter row as stored (doctors as JSON text).
pub(in crate::store) struct StoredEncounter {
    pub(in crate::store) nda: String,
    pub(in crate::store) status: String,
    pub(in crate::store) class: Option<String>,
    pub(in crate::store) unit: Option<String>,
    pub(in crate::store) attending: Option<String>,
    pub(in crate::store) admitting: Option<String>,
    pub(in crate::store) referring: Option<String>,
    pub(in crate::store) admit_at: Option<String>,
    pub(in crate::store) discharge_at: Option<String>,
}

/// A practitioner row as stored.
pub(in crate::store) struct StoredPractitioner {
    pub(in crate::store) rpps: String,
    pub(in crate::store) family: Option<String>,
    pub(in crate::store) given: Option<String>,
    pub(in crate::store) prefix: Option<String>,
}

/// The statements of the views, one call per statement.
pub(in crate::store) trait Read {
    /// What a failed statement gives.
    type Error;

    /// The patient row found by `key`.
    fn patient_id(&self, by: ViewBy, key: &str) -> Result<Option<i64>, Self::Error>;
    /// `merged_into` of patient `id` (`None` also when there is no such row).
    fn merged_into(&self, id: i64) -> Result<Option<i64>, Self::Error>;
    /// Patient `id` (the row exists).
    fn patient(&self, id: i64) -> Result<StoredPatient, Self::Error>;
    /// The IPPs merged into patient `id`, oldest row first.
    fn merged_ipps(&self, id: i64) -> Result<Vec<String>, Self::Error>;
    /// Patient `id`'s encounters, latest movement first.
    fn encounters(&self, id: i64) -> Result<Vec<StoredEncounter>, Self::Error>;
    /// Patient `id`'s movements in time order.
    fn movements(&self, id: i64) -> Result<Vec<MovementView>, Self::Error>;
    /// The anomalies of patient `id` and of the patients merged into it.
    fn anomalies(&self, id: i64) -> Result<Vec<AnomalyView>, Self::Error>;
    /// A practitioner by RPPS.
    fn practitioner(&self, rpps: &str) -> Result<Option<StoredPractitioner>, Self::Error>;
    /// The IPP of patient row `id`.
    fn patient_ipp(&self, id: i64) -> Result<Option<String>, Self::Error>;
    /// The NDA of encounter row `id`.
    fn encounter_nda(&self, id: i64) -> Result<Option<String>, Self::Error>;
    /// The NDA and row id of each encounter of patient row `patient_id`.
    fn encounter_ids(&self, patient_id: i64) -> Result<Vec<(String, i64)>, Self::Error>;
}

/// Follows `merged_into` to the survivor (bounded, in case of a cycle).
fn resolve<R: Read>(db: &R, mut id: i64) -> Result<i64, R::Error> {
    for _ in 0..16 {
        match db.merged_into(id)? {
            Some(target) if target != id => id = target,
            _ => break,
        }
    }
    Ok(id)
}

pub(super) fn name(family: Option<String>, given: Option<String>) -> Option<PersonName> {
    (family.is_some() || given.is_some()).then(|| PersonName {
        family: family.unwrap_or_default(),
        given: given.unwrap_or_default(),
    })
}

/// A stored practitioner column; a value that is not our JSON reads as absent.
fn practitioner_column(text: Option<String>) -> Option<Practitioner> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// The patient for `key` on SQLite (a read connection).
pub(in crate::store) fn patient_view(
    conn: &rusqlite::Connection,
    key: &PatientKey,
) -> rusqlite::Result<Option<PatientView>> {
    view(&super::sqlite::Sqlite(conn), key)
}

/// A practitioner by RPPS on SQLite (a read connection).
pub(in crate::store) fn practitioner(
    conn: &rusqlite::Connection,
    rpps: &str,
) -> rusqlite::Result<Option<Practitioner>> {
    practitioner_with(&super::sqlite::Sqlite(conn), rpps)
}

/// The census record for `lookup` on SQLite (a read connection).
pub(in crate::store) fn sqlite_record(
    conn: &rusqlite::Connection,
    lookup: &CensusLookup,
) -> rusqlite::Result<Option<CensusRecord>> {
    record(&super::sqlite::Sqlite(conn), lookup)
}

/// The patient for `key`, with the survivor's data when the key names a merged IPP.
pub(in crate::store) fn view<R: Read>(
    db: &R,
    key: &PatientKey,
) -> Result<Option<PatientView>, R::Error> {
    let found = match key {
        PatientKey::Ipp(ipp) => db.patient_id(ViewBy::Ipp, ipp)?,
        PatientKey::Nda(nda) => db.patient_id(ViewBy::Nda, nda)?,
        PatientKey::Ins(ins) => db.patient_id(ViewBy::Ins, ins)?,
    };
    let Some(found) = found else {
        return Ok(None);
    };
    let id = resolve(db, found)?;
    let row = db.patient(id)?;
    let validated = row
        .reliability
        .as_deref()
        .is_some_and(|r| r.split('~').any(|s| s == "VALI"));
    let ins_oid = row.ins_oid;
    let ins = row.ins.filter(|_| validated).map(|value| {
        let oid = ins_oid.unwrap_or_default();
        Ins {
            value,
            kind: InsKind::from_oid(&oid),
            oid,
        }
    });
    let mut view = PatientView {
        ipp: row.ipp,
        resolved_from: None,
        merged_ipps: Vec::new(),
        legal_name: name(row.legal_family, row.legal_given),
        used_name: name(row.used_family, row.used_given),
        birth_date: row.birth_date,
        sex: row.sex,
        reliability: row.reliability,
        ins,
        current: None,
        encounters: Vec::new(),
        movements: Vec::new(),
        anomalies: Vec::new(),
    };
    if let PatientKey::Ipp(ipp) = key
        && *ipp != view.ipp
    {
        view.resolved_from = Some(ipp.clone());
    }
    view.merged_ipps = db.merged_ipps(id)?;
    view.encounters = db
        .encounters(id)?
        .into_iter()
        .map(|e| EncounterView {
            nda: e.nda,
            status: EncounterStatus::from_text(&e.status),
            class: e.class,
            unit: e.unit,
            attending: practitioner_column(e.attending),
            admitting: practitioner_column(e.admitting),
            referring: practitioner_column(e.referring),
            admit_at: e.admit_at,
            discharge_at: e.discharge_at,
        })
        .collect();
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
    view.movements = db.movements(id)?;
    view.anomalies = db.anomalies(id)?;
    Ok(Some(view))
}

/// A practitioner by RPPS, as last named by an ADT message.
pub(in crate::store) fn practitioner_with<R: Read>(
    db: &R,
    rpps: &str,
) -> Result<Option<Practitioner>, R::Error> {
    Ok(db.practitioner(rpps)?.map(|row| Practitioner {
        id: row.rpps.clone(),
        rpps: Some(row.rpps),
        family: row.family.unwrap_or_default(),
        given: row.given.unwrap_or_default(),
        prefix: row.prefix.unwrap_or_default(),
    }))
}

/// The census record for `lookup` (the FHIR routes): the view and the row ids resources are
/// named by.
pub(in crate::store) fn record<R: Read>(
    db: &R,
    lookup: &CensusLookup,
) -> Result<Option<CensusRecord>, R::Error> {
    let key = match lookup {
        CensusLookup::Patient(id) => match db.patient_ipp(*id)? {
            Some(ipp) => PatientKey::Ipp(ipp),
            None => return Ok(None),
        },
        CensusLookup::Encounter(id) => match db.encounter_nda(*id)? {
            Some(nda) => PatientKey::Nda(nda),
            None => return Ok(None),
        },
        CensusLookup::Key(key) => key.clone(),
    };
    let Some(mut view) = view(db, &key)? else {
        return Ok(None);
    };
    // The FHIR id is the survivor's; the IPP asked for is not an answer to `Patient/{id}`.
    if matches!(lookup, CensusLookup::Patient(_)) {
        view.resolved_from = None;
    }
    let Some(patient_id) = db.patient_id(ViewBy::Ipp, &view.ipp)? else {
        return Ok(None);
    };
    let encounter_ids = db.encounter_ids(patient_id)?;
    Ok(Some(CensusRecord {
        patient_id,
        view,
        encounter_ids,
    }))
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

//! The patient and practitioner views, read on the read pool.

use rusqlite::{Connection, OptionalExtension, Row};

use super::apply::PATIENT_MERGED_INTO;
use super::*;

pub(super) const VIEW_PATIENT: &str =
    "SELECT ipp, legal_family, legal_given, used_family, used_given,
    birth_date, sex, reliability, ins, ins_oid FROM census_patients WHERE id = ?1";
pub(super) const VIEW_BY_IPP: &str = "SELECT id FROM census_patients WHERE ipp = ?1";
pub(super) const VIEW_BY_NDA: &str = "SELECT patient_id FROM census_encounters WHERE nda = ?1";
pub(super) const VIEW_BY_INS: &str = "SELECT id FROM census_patients WHERE ins = ?1
    ORDER BY merged_into IS NULL DESC, id DESC LIMIT 1";
pub(super) const VIEW_MERGED_IPPS: &str =
    "SELECT ipp FROM census_patients WHERE merged_into = ?1 ORDER BY id";
pub(super) const VIEW_ENCOUNTERS: &str =
    "SELECT nda, status, class, unit, attending, admitting, referring,
        admit_at, discharge_at
    FROM census_encounters WHERE patient_id = ?1 ORDER BY last_movement_at DESC, id DESC";
pub(super) const VIEW_MOVEMENTS: &str =
    "SELECT m.movement_id, e.nda, m.event, m.status, m.movement_at,
        m.unit, m.journal_id, m.updated_journal_id, m.cancel_journal_id
    FROM census_movements m JOIN census_encounters e ON e.id = m.encounter_id
    WHERE e.patient_id = ?1 ORDER BY m.movement_at, m.seq";
pub(super) const VIEW_ANOMALIES: &str = "SELECT journal_id, kind, text FROM census_anomalies
    WHERE patient_id = ?1
       OR patient_id IN (SELECT id FROM census_patients WHERE merged_into = ?1)
    ORDER BY id";
pub(super) const VIEW_PRACTITIONER: &str =
    "SELECT rpps, family, given, prefix FROM census_practitioners WHERE rpps = ?1";

/// Follows `merged_into` on a read connection.
pub(super) fn resolve_read(conn: &Connection, mut id: i64) -> rusqlite::Result<i64> {
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

pub(super) fn one_id(conn: &Connection, sql: &str, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(sql)?
        .query_row([key], |row| row.get(0))
        .optional()
}

pub(super) fn name(family: Option<String>, given: Option<String>) -> Option<PersonName> {
    (family.is_some() || given.is_some()).then(|| PersonName {
        family: family.unwrap_or_default(),
        given: given.unwrap_or_default(),
    })
}

/// A stored practitioner column; a value that is not our JSON reads as absent.
pub(super) fn practitioner_column(
    row: &Row<'_>,
    column: usize,
) -> rusqlite::Result<Option<Practitioner>> {
    let text: Option<String> = row.get(column)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// The patient for `key`, with the survivor's data when the key names a merged IPP.
pub(in crate::store) fn patient_view(
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
pub(in crate::store) fn practitioner(
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

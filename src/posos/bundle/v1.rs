//! The v1 `drugs` body: a flat list of drugs with posology text (see the module docs of
//! [`super`] for the reading).

use super::read::{classify, fill_codes, medication, rpps};
use super::value::{Node, string, strings};
use super::{
    BundleError, CodeKind, Coding, Dosage, Line, Medication, Patient, Prescriber, Prescription,
};

/// Reads a whole v1 body: `id`, `date`, `patientId`, `rpps` and `drugs`.
pub(super) fn read_body(
    body: &Node<'_, '_>,
    drugs: &Node<'_, '_>,
) -> Result<Prescription, BundleError> {
    let lines = drug_lines(drugs)?;
    if lines.is_empty() {
        return Err(BundleError::Empty);
    }
    Ok(Prescription {
        id: string(body.get_any(&["id", "prescriptionId"]))?,
        authored_at: string(body.get_any(&["date", "authoredOn"]))?,
        patient: Patient {
            partner_id: string(body.get_any(&["patientId", "patient_id"]))?,
            ..Patient::default()
        },
        prescriber: Prescriber {
            rpps: string(body.get("rpps"))?.map(|r| rpps(&r).to_owned()),
            ..Prescriber::default()
        },
        lines,
        observations: Vec::new(),
        document: None,
    })
}

/// One line per drug of the `drugs` list.
pub(super) fn drug_lines(drugs: &Node<'_, '_>) -> Result<Vec<Line>, BundleError> {
    if !drugs.value.is_array() {
        return Err(drugs.invalid("a list of drugs"));
    }
    let mut lines = Vec::new();
    for drug in drugs.items() {
        lines.push(drug_line(&drug)?);
    }
    Ok(lines)
}

/// One drug.
fn drug_line(drug: &Node<'_, '_>) -> Result<Line, BundleError> {
    if drug.value.is_string() {
        let medication = medication(Some(drug), None)?;
        return Ok(line(medication, Vec::new()));
    }
    drug.object()?;
    let mut out = Medication {
        text: string(drug.get_any(&["name", "label", "denomination", "display"]))?,
        ..Medication::default()
    };
    let named = [
        (&["cip13", "cip"][..], CodeKind::Cip, super::CIP_SYSTEM),
        (&["ucd", "ucd13"][..], CodeKind::Ucd, super::UCD_SYSTEM),
        (&["cis"][..], CodeKind::Cis, super::CIS_SYSTEM),
    ];
    for (keys, kind, system) in named {
        if let Some(code) = string(drug.get_any(keys))? {
            out.codings.push(Coding {
                system: Some(system.to_owned()),
                code,
                display: None,
                kind: Some(kind),
            });
        }
    }
    if let Some(code) = string(drug.get_any(&["code", "coded"]))? {
        let system = string(drug.get("system"))?;
        let kind = classify(system.as_deref(), &code);
        out.codings.push(Coding {
            system,
            code,
            display: None,
            kind,
        });
    }
    if out.text.is_none() && out.codings.is_empty() {
        return Err(drug.invalid("a drug with a name or a code"));
    }
    if let Some(form) = drug.get("form") {
        let form_only = medication(None, Some(&form))?;
        out.form = form_only.form;
    }
    fill_codes(&mut out);
    let posology = drug.get_any(&["posology", "posologie", "dosage", "text"]);
    let several = posology.as_ref().is_some_and(|p| p.value.is_array());
    let texts = strings(posology)?;
    let dosages = texts
        .into_iter()
        .zip(1i64..)
        .map(|(text, sequence)| Dosage {
            sequence: several.then_some(sequence),
            text: Some(text),
            ..Dosage::default()
        })
        .collect();
    Ok(line(out, dosages))
}

/// A line with nothing but a medication and its dosages.
fn line(medication: Medication, dosages: Vec<Dosage>) -> Line {
    Line {
        id: None,
        status: None,
        authored_at: None,
        medication,
        dosages,
        substitution_allowed: None,
        note: None,
    }
}

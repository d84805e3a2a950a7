//! FHIR resources to the normalized model. Each reader takes a node (a value and its location)
//! and answers a model value or an error naming the path; references go through the index.

use std::borrow::Cow;

use super::index::Index;
use super::json::Json;
use super::v1;
use super::value::{Node, string, strings};
use super::{
    BundleError, CIP_SYSTEM, CIS_SYSTEM, Code, CodeKind, Coding, Document, Dosage, Dose, Duration,
    Identifier, Line, Medication, Name, Observation, PARTNER_SYSTEM, Patient, Period, Prescriber,
    Prescription, RPPS_SYSTEM, Timing, UCD_SYSTEM,
};
use crate::text::readable_line;

/// How deep RequestGroup actions may nest.
const MAX_ACTION_DEPTH: usize = 16;

/// Reads a bundle (already known to be one) and, when it has no MedicationRequest, the v1
/// `drugs` list found beside or inside it.
pub(super) fn read_fhir(
    bundle: &Node<'_, '_>,
    wrapped: bool,
    drugs: Option<Node<'_, '_>>,
) -> Result<Prescription, BundleError> {
    let index = Index::build(bundle, wrapped)?;
    let group = index.of_kind("RequestGroup").next();

    // Lines: the MedicationRequests the RequestGroups' actions name, then the others.
    let mut used = vec![false; index.resources.len()];
    let mut order = Vec::new();
    for position in index.of_kind("RequestGroup") {
        if let Some(resource) = index.get(position) {
            let node = resource.node();
            if let Some(actions) = node.get("action") {
                collect_actions(&index, position, &actions, 0, &mut used, &mut order)?;
            }
        }
    }
    for position in index.of_kind("MedicationRequest") {
        if let Some(seen) = used.get_mut(position)
            && !*seen
        {
            *seen = true;
            order.push(position);
        }
    }
    let mut lines = Vec::with_capacity(order.len());
    for &position in &order {
        if let Some(resource) = index.get(position) {
            lines.push(line(&index, position, &resource.node())?);
        }
    }
    let has_requests = !order.is_empty();
    if !has_requests && let Some(drugs) = &drugs {
        lines = v1::drug_lines(drugs)?;
    }

    let mut document_refs = 0;
    let mut document_found = None;
    for position in index.of_kind("DocumentReference") {
        document_refs += 1;
        if document_found.is_none()
            && let Some(resource) = index.get(position)
        {
            document_found = document(&resource.node())?;
        }
    }
    if !has_requests && document_refs == 0 && lines.is_empty() {
        return Err(BundleError::Empty);
    }

    let patient = match find_patient(&index, group, &order)? {
        Some(position) => match index.get(position) {
            Some(resource) => patient(&resource.node())?,
            None => Patient::default(),
        },
        None => Patient::default(),
    };
    let prescriber = match find_prescriber(&index, group, &order)? {
        Some(position) => match index.get(position) {
            Some(resource) => prescriber(&resource.node())?,
            None => Prescriber::default(),
        },
        None => Prescriber::default(),
    };
    let mut observations = Vec::new();
    for position in index.of_kind("Observation") {
        if let Some(resource) = index.get(position) {
            observations.push(observation(&resource.node())?);
        }
    }

    let mut id = None;
    let mut authored_at = None;
    if let Some(resource) = group.and_then(|g| index.get(g)) {
        let node = resource.node();
        id = string(node.get("id"))?;
        if id.is_none() {
            id = identifiers(&node)?.into_iter().next().map(|i| i.value);
        }
        if id.is_none() {
            id = resource.full_url.map(|url| {
                url.strip_prefix("urn:uuid:")
                    .unwrap_or(url)
                    .trim()
                    .to_owned()
            });
        }
        authored_at = string(node.get("authoredOn"))?;
    }
    if id.is_none() {
        id = identifiers(bundle)?.into_iter().next().map(|i| i.value);
    }
    if id.is_none() {
        id = string(bundle.get("id"))?;
    }
    if id.is_none() {
        id = lines.iter().find_map(|l| l.id.clone());
    }
    if authored_at.is_none() {
        authored_at = lines.iter().find_map(|l| l.authored_at.clone());
    }
    if authored_at.is_none() {
        authored_at = string(bundle.get("timestamp"))?;
    }

    Ok(Prescription {
        id,
        authored_at,
        patient,
        prescriber,
        lines,
        observations,
        document: document_found,
    })
}

/// Walks `action[]` (and nested `action[].action[]`), appending the MedicationRequests named
/// by `action.resource` to `order` once each.
fn collect_actions(
    index: &Index<'_>,
    from: usize,
    actions: &Node<'_, '_>,
    depth: usize,
    used: &mut [bool],
    order: &mut Vec<usize>,
) -> Result<(), BundleError> {
    if depth >= MAX_ACTION_DEPTH {
        return Err(actions.invalid("actions nested at most 16 deep"));
    }
    for action in actions.items() {
        action.object()?;
        if let Some(reference) = action.get("resource")
            && let Some(position) = follow(index, from, &reference, &[], "resource")?
        {
            let is_request = index.get(position).map(|r| r.kind) == Some("MedicationRequest");
            if let Some(seen) = used.get_mut(position)
                && is_request
                && !*seen
            {
                *seen = true;
                order.push(position);
            }
        }
        if let Some(nested) = action.get("action") {
            collect_actions(index, from, &nested, depth + 1, used, order)?;
        }
    }
    Ok(())
}

/// Resolves a Reference (an object with `reference`, or the reference string itself) written
/// in resource `from`. `None` when there is no reference to follow (absent, or a logical
/// reference by identifier only); an error when it names nothing, or (when `kinds` is not
/// empty) a resource of another type.
fn follow(
    index: &Index<'_>,
    from: usize,
    node: &Node<'_, '_>,
    kinds: &[&str],
    expected: &'static str,
) -> Result<Option<usize>, BundleError> {
    let inner;
    let reference = if node.value.is_string() {
        node
    } else {
        node.object()?;
        match node.get("reference") {
            Some(found) => {
                inner = found;
                &inner
            }
            None => return Ok(None),
        }
    };
    let Some(text) = reference.text()? else {
        return Ok(None);
    };
    let Some(position) = index.resolve(from, &text) else {
        return Err(BundleError::Dangling {
            path: reference.path(),
            reference: readable_line(text.as_bytes(), 80),
        });
    };
    match index.get(position) {
        Some(target) if !kinds.is_empty() && !kinds.contains(&target.kind) => {
            Err(BundleError::WrongTarget {
                path: reference.path(),
                reference: readable_line(text.as_bytes(), 80),
                expected,
                found: format!("a {}", readable_line(target.kind.as_bytes(), 40)),
            })
        }
        _ => Ok(Some(position)),
    }
}

/// The patient: the RequestGroup subject, else the first line's subject, else the Patient with
/// a partner identifier, else the first Patient.
fn find_patient(
    index: &Index<'_>,
    group: Option<usize>,
    order: &[usize],
) -> Result<Option<usize>, BundleError> {
    let candidates = group.into_iter().chain(order.first().copied());
    for from in candidates {
        if let Some(resource) = index.get(from) {
            let node = resource.node();
            if let Some(subject) = node.get("subject")
                && let Some(found) = follow(index, from, &subject, &["Patient"], "Patient")?
            {
                return Ok(Some(found));
            }
        }
    }
    let with_partner = index.of_kind("Patient").find(|&position| {
        index.get(position).is_some_and(|r| {
            let ids = r
                .value
                .get("identifier")
                .or_else(|| r.value.get("identify"));
            let mut all = ids
                .and_then(Json::as_array)
                .unwrap_or_default()
                .iter()
                .map(|slot| r.value.with(slot))
                .chain(ids.filter(|v| v.is_object()));
            all.any(|id| id.get("system").and_then(Json::as_str) == Some(PARTNER_SYSTEM))
        })
    });
    Ok(with_partner.or_else(|| index.of_kind("Patient").next()))
}

/// The prescriber: the RequestGroup author, else the first line's requester, else the first
/// Practitioner; a PractitionerRole is followed to its practitioner, other authors (Device,
/// Organization) are passed over.
fn find_prescriber(
    index: &Index<'_>,
    group: Option<usize>,
    order: &[usize],
) -> Result<Option<usize>, BundleError> {
    let candidates = group
        .map(|g| (g, "author"))
        .into_iter()
        .chain(order.first().map(|&l| (l, "requester")));
    for (from, key) in candidates {
        let Some(resource) = index.get(from) else {
            continue;
        };
        let node = resource.node();
        let Some(reference) = node.get(key) else {
            continue;
        };
        let Some(found) = follow(index, from, &reference, &[], "Practitioner")? else {
            continue;
        };
        let Some(target) = index.get(found) else {
            continue;
        };
        match target.kind {
            "Practitioner" => return Ok(Some(found)),
            "PractitionerRole" => {
                let role = target.node();
                if let Some(practitioner) = role.get("practitioner") {
                    let followed = follow(
                        index,
                        found,
                        &practitioner,
                        &["Practitioner"],
                        "Practitioner",
                    )?;
                    if followed.is_some() {
                        return Ok(followed);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(index.of_kind("Practitioner").next())
}

/// A MedicationRequest.
fn line(index: &Index<'_>, from: usize, node: &Node<'_, '_>) -> Result<Line, BundleError> {
    let medication = if let Some(concept) = node.get("medicationCodeableConcept") {
        medication(Some(&concept), None)?
    } else if let Some(reference) = node.get("medicationReference") {
        referenced_medication(index, from, &reference)?
    } else if let Some(both) = node.get("medication") {
        // R5 CodeableReference.
        if let Some(concept) = both.get("concept") {
            medication(Some(&concept), None)?
        } else if let Some(reference) = both.get("reference") {
            referenced_medication(index, from, &reference)?
        } else {
            Medication::default()
        }
    } else {
        Medication::default()
    };

    let mut dosages = Vec::new();
    if let Some(instructions) = node.get("dosageInstruction") {
        for instruction in instructions.items() {
            dosages.push(dosage(&instruction)?);
        }
    }
    // Stable: equal sequences keep their order; entries without one go last.
    dosages.sort_by_key(|d| (d.sequence.is_none(), d.sequence));

    let mut substitution_allowed = None;
    if let Some(substitution) = node.get("substitution")
        && let Some(allowed) = substitution.get("allowedBoolean")
    {
        substitution_allowed = Some(allowed.boolean()?);
    }
    let mut notes: Vec<String> = Vec::new();
    if let Some(note) = node.get("note") {
        for item in note.items() {
            let text = if item.value.is_string() {
                string(Some(item))?
            } else {
                item.object()?;
                string(item.get("text"))?
            };
            notes.extend(text);
        }
    }

    Ok(Line {
        id: string(node.get("id"))?,
        status: string(node.get("status"))?,
        authored_at: string(node.get("authoredOn"))?,
        medication,
        dosages,
        substitution_allowed,
        note: (!notes.is_empty()).then(|| notes.join("\n")),
    })
}

/// The Medication a reference names (an entry or a contained resource).
fn referenced_medication(
    index: &Index<'_>,
    from: usize,
    reference: &Node<'_, '_>,
) -> Result<Medication, BundleError> {
    let Some(found) = follow(index, from, reference, &["Medication"], "Medication")? else {
        return Ok(Medication::default());
    };
    let Some(resource) = index.get(found) else {
        return Ok(Medication::default());
    };
    let node = resource.node();
    let concept = node.get_any(&["code", "coded"]);
    let form = node.get("form");
    medication(concept.as_ref(), form.as_ref())
}

/// A medication from its concept (CodeableConcept) and dose form.
pub(super) fn medication(
    concept: Option<&Node<'_, '_>>,
    form: Option<&Node<'_, '_>>,
) -> Result<Medication, BundleError> {
    let mut out = Medication::default();
    if let Some(concept) = concept {
        if concept.value.is_string() {
            out.text = string(Some(*concept))?;
        } else {
            concept.object()?;
            out.text = string(concept.get("text"))?;
            if let Some(codings) = concept.get("coding") {
                for item in codings.items() {
                    push_coding(&mut out.codings, &item)?;
                }
            } else if concept.get_any(&["code", "coded"]).is_some() {
                // A Coding where a CodeableConcept belongs.
                push_coding(&mut out.codings, concept)?;
            }
        }
    }
    if let Some(form) = form {
        out.form = Some(concept_code(form)?);
    }
    fill_codes(&mut out);
    Ok(out)
}

/// Sets the preferred code, the display and the per-kind codes from the codings.
pub(super) fn fill_codes(out: &mut Medication) {
    let rank = |kind: Option<CodeKind>| match kind {
        Some(CodeKind::Cip) => 0,
        Some(CodeKind::Ucd) => 1,
        Some(CodeKind::Cis) => 2,
        Some(CodeKind::Atc) => 3,
        None => 4,
    };
    let best = out.codings.iter().min_by_key(|c| rank(c.kind));
    out.code = best.map(|c| c.code.clone());
    out.system = best.and_then(|c| c.system.clone());
    out.kind = best.and_then(|c| c.kind);
    out.display = best
        .and_then(|c| c.display.clone())
        .or_else(|| out.text.clone());
    let of_kind = |kind| {
        out.codings
            .iter()
            .find(|c| c.kind == Some(kind))
            .map(|c| c.code.clone())
    };
    out.cip13 = of_kind(CodeKind::Cip);
    out.ucd = of_kind(CodeKind::Ucd);
    out.cis = of_kind(CodeKind::Cis);
}

/// Reads one coding and keeps it when it has a code.
fn push_coding(codings: &mut Vec<Coding>, node: &Node<'_, '_>) -> Result<(), BundleError> {
    node.object()?;
    let system = string(node.get("system"))?;
    let display = string(node.get("display"))?;
    if let Some(code) = string(node.get_any(&["code", "coded"]))? {
        let kind = classify(system.as_deref(), &code);
        codings.push(Coding {
            system,
            code,
            display,
            kind,
        });
    }
    Ok(())
}

/// The kind of a medication code, from its system, or from its shape when there is none.
pub(super) fn classify(system: Option<&str>, code: &str) -> Option<CodeKind> {
    let Some(system) = system else {
        let digits = code.len() == 13 && code.bytes().all(|b| b.is_ascii_digit());
        return match code.get(..5) {
            Some("34009") if digits => Some(CodeKind::Cip),
            Some("34008") if digits => Some(CodeKind::Ucd),
            _ => None,
        };
    };
    match system {
        CIP_SYSTEM => return Some(CodeKind::Cip),
        UCD_SYSTEM => return Some(CodeKind::Ucd),
        CIS_SYSTEM => return Some(CodeKind::Cis),
        "urn:oid:2.16.840.1.113883.6.73" => return Some(CodeKind::Atc),
        _ => {}
    }
    [
        ("cip", CodeKind::Cip),
        ("ucd", CodeKind::Ucd),
        ("cis", CodeKind::Cis),
        ("atc", CodeKind::Atc),
    ]
    .into_iter()
    .find(|(needle, _)| contains_ignore_case(system, needle))
    .map(|(_, kind)| kind)
}

/// Whether `haystack` contains the lowercase ASCII `needle`, ignoring ASCII case.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A CodeableConcept as a [`Code`]: the first coding with a code; a bare string is its text;
/// a Coding where a CodeableConcept belongs is read as its only coding.
fn concept_code(node: &Node<'_, '_>) -> Result<Code, BundleError> {
    if node.value.is_string() {
        return Ok(Code {
            text: string(Some(*node))?,
            ..Code::default()
        });
    }
    node.object()?;
    let mut out = Code {
        text: string(node.get("text"))?,
        ..Code::default()
    };
    let mut take = |coding: &Node<'_, '_>| -> Result<(), BundleError> {
        coding.object()?;
        if out.code.is_none() {
            let code = string(coding.get_any(&["code", "coded"]))?;
            if code.is_some() {
                out.code = code;
                out.system = string(coding.get("system"))?;
                out.display = string(coding.get("display"))?;
            } else if out.display.is_none() {
                out.display = string(coding.get("display"))?;
            }
        }
        Ok(())
    };
    if let Some(codings) = node.get("coding") {
        for coding in codings.items() {
            take(&coding)?;
        }
    } else {
        take(node)?;
    }
    Ok(out)
}

/// The best short text of a concept: its text, else its display, else its code.
fn concept_text(node: &Node<'_, '_>) -> Result<Option<String>, BundleError> {
    let code = concept_code(node)?;
    Ok(code.text.or(code.display).or(code.code))
}

/// One `dosageInstruction`.
fn dosage(node: &Node<'_, '_>) -> Result<Dosage, BundleError> {
    if node.value.is_string() {
        return Ok(Dosage {
            text: string(Some(*node))?,
            ..Dosage::default()
        });
    }
    node.object()?;
    let mut out = Dosage {
        sequence: node.get("sequence").map(|n| n.integer()).transpose()?,
        text: string(node.get("text"))?,
        patient_instruction: string(node.get("patientInstruction"))?,
        ..Dosage::default()
    };
    if let Some(timing_node) = node.get("timing") {
        out.timing = Some(timing(&timing_node)?);
    }
    if let Some(route) = node.get("route") {
        out.route = Some(concept_code(&route)?);
    }
    if let Some(flag) = node.get_any(&["asNeededBoolean", "asNeeded"]) {
        out.as_needed = flag.boolean()?;
    }
    if let Some(reason) = node.get("asNeededCodeableConcept") {
        out.as_needed = true;
        out.as_needed_reason = concept_text(&reason)?;
    }
    if let Some(reasons) = node.get("asNeededFor") {
        for reason in reasons.items() {
            out.as_needed = true;
            if out.as_needed_reason.is_none() {
                out.as_needed_reason = concept_text(&reason)?;
            }
        }
    }
    if let Some(rates) = node.get("doseAndRate") {
        for rate in rates.items() {
            rate.object()?;
            if let Some(dose) = dose(&rate)? {
                out.dose = Some(dose);
                break;
            }
        }
    }
    if out.dose.is_none() {
        out.dose = dose(node)?;
    }
    Ok(out)
}

/// `doseQuantity` or `doseRange` of an object, if either is there.
fn dose(node: &Node<'_, '_>) -> Result<Option<Dose>, BundleError> {
    if let Some(quantity_node) = node.get("doseQuantity") {
        let (value, unit, code) = quantity(&quantity_node)?;
        return Ok(Some(Dose {
            value,
            low: None,
            high: None,
            unit: unit.or_else(|| code.clone()),
            code,
        }));
    }
    if let Some(range) = node.get("doseRange") {
        range.object()?;
        let (low, low_unit, low_code) = match range.get("low") {
            Some(low) => quantity(&low)?,
            None => (None, None, None),
        };
        let (high, high_unit, high_code) = match range.get("high") {
            Some(high) => quantity(&high)?,
            None => (None, None, None),
        };
        let code = low_code.or(high_code);
        return Ok(Some(Dose {
            value: None,
            low,
            high,
            unit: low_unit.or(high_unit).or_else(|| code.clone()),
            code,
        }));
    }
    Ok(None)
}

/// A Quantity's value, unit and unit code.
type Quantity = (Option<serde_json::Number>, Option<String>, Option<String>);

/// A Quantity as (value, unit, code); a bare number is a value without unit.
fn quantity(node: &Node<'_, '_>) -> Result<Quantity, BundleError> {
    if node.value.is_number() || node.value.is_string() {
        return Ok((Some(node.number()?), None, None));
    }
    node.object()?;
    Ok((
        node.get("value").map(|v| v.number()).transpose()?,
        string(node.get("unit"))?,
        string(node.get_any(&["code", "coded"]))?,
    ))
}

/// A Timing: `repeat` fields (also accepted directly under `timing`) and `code`.
fn timing(node: &Node<'_, '_>) -> Result<Timing, BundleError> {
    if node.value.is_string() {
        return Ok(Timing {
            code: Some(concept_code(node)?),
            ..Timing::default()
        });
    }
    node.object()?;
    let repeat_node = node.get("repeat");
    let repeat = repeat_node.as_ref().unwrap_or(node);
    repeat.object()?;
    let whole = |key| repeat.get(key).map(|n| n.whole()).transpose();
    let number = |key| repeat.get(key).map(|n| n.number()).transpose();
    let bounds_duration = match repeat.get("boundsDuration") {
        Some(bounds) => {
            let (value, unit, code) = quantity(&bounds)?;
            Some(Duration { value, unit, code })
        }
        None => None,
    };
    let bounds_period = match repeat.get("boundsPeriod") {
        Some(period) => {
            period.object()?;
            Some(Period {
                start: string(period.get("start"))?,
                end: string(period.get("end"))?,
            })
        }
        None => None,
    };
    Ok(Timing {
        frequency: whole("frequency")?,
        frequency_max: whole("frequencyMax")?,
        period: number("period")?,
        period_max: number("periodMax")?,
        period_unit: string(repeat.get("periodUnit"))?,
        when: strings(repeat.get("when"))?,
        time_of_day: strings(repeat.get("timeOfDay"))?,
        day_of_week: strings(repeat.get("dayOfWeek"))?,
        count: whole("count")?,
        count_max: whole("countMax")?,
        duration: number("duration")?,
        duration_unit: string(repeat.get("durationUnit"))?,
        bounds_duration,
        bounds_period,
        code: node
            .get_any(&["code", "coded"])
            .map(|code| concept_code(&code))
            .transpose()?,
    })
}

/// `identifier` (or `identify`) entries that have a value.
fn identifiers(node: &Node<'_, '_>) -> Result<Vec<Identifier>, BundleError> {
    let mut out = Vec::new();
    let Some(list) = node.get_any(&["identifier", "identify"]) else {
        return Ok(out);
    };
    for item in list.items() {
        if item.value.is_string() {
            if let Some(value) = string(Some(item))? {
                out.push(Identifier {
                    system: None,
                    value,
                    type_: None,
                });
            }
            continue;
        }
        item.object()?;
        let Some(value) = string(item.get("value"))? else {
            continue;
        };
        let type_ = match item.get("type") {
            Some(kind) => {
                let code = concept_code(&kind)?;
                code.code.or(code.text)
            }
            None => None,
        };
        out.push(Identifier {
            system: string(item.get("system"))?,
            value,
            type_,
        });
    }
    Ok(out)
}

/// `name` entries (HumanName; a bare string is its text).
fn names(node: &Node<'_, '_>) -> Result<Vec<Name>, BundleError> {
    let mut out = Vec::new();
    let Some(list) = node.get("name") else {
        return Ok(out);
    };
    for item in list.items() {
        if item.value.is_string() {
            out.push(Name {
                text: string(Some(item))?,
                ..Name::default()
            });
            continue;
        }
        item.object()?;
        let family = strings(item.get("family"))?;
        out.push(Name {
            use_: string(item.get("use"))?,
            family: (!family.is_empty()).then(|| family.join(" ")),
            given: strings(item.get("given"))?,
            prefix: strings(item.get("prefix"))?,
            text: string(item.get("text"))?,
        });
    }
    Ok(out)
}

/// Family and given names of the preferred name: `official`, else `usual`, else the first
/// name that has either.
fn preferred(names: &[Name]) -> (Option<String>, Option<String>) {
    let usable = |n: &&Name| n.family.is_some() || !n.given.is_empty();
    let with_use = |wanted: &str| {
        names
            .iter()
            .filter(usable)
            .find(|n| n.use_.as_deref() == Some(wanted))
    };
    let name = with_use("official")
        .or_else(|| with_use("usual"))
        .or_else(|| names.iter().find(usable));
    match name {
        Some(name) => (
            name.family.clone(),
            (!name.given.is_empty()).then(|| name.given.join(" ")),
        ),
        None => (None, None),
    }
}

/// A Patient.
fn patient(node: &Node<'_, '_>) -> Result<Patient, BundleError> {
    let identifiers = identifiers(node)?;
    let names = names(node)?;
    let (family, given) = preferred(&names);
    let gender = string(node.get("gender"))?;
    let sex = gender.as_deref().map(|g| {
        let g = g.to_ascii_lowercase();
        match g.as_str() {
            "male" | "m" | "homme" => "M",
            "female" | "f" | "femme" => "F",
            "other" | "o" => "O",
            _ => "U",
        }
        .to_owned()
    });
    Ok(Patient {
        partner_id: identifiers
            .iter()
            .find(|i| i.system.as_deref() == Some(PARTNER_SYSTEM))
            .map(|i| i.value.clone()),
        family,
        given,
        birth_date: string(node.get("birthDate"))?,
        gender,
        sex,
        names,
        identifiers,
    })
}

/// A Practitioner.
fn prescriber(node: &Node<'_, '_>) -> Result<Prescriber, BundleError> {
    let identifiers = identifiers(node)?;
    let names = names(node)?;
    let (family, given) = preferred(&names);
    let rpps = identifiers
        .iter()
        .find(|i| {
            i.system.as_deref() == Some(RPPS_SYSTEM)
                || i.type_
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("RPPS"))
        })
        .map(|i| rpps(&i.value).to_owned());
    Ok(Prescriber {
        rpps,
        family,
        given,
        names,
        identifiers,
    })
}

/// The RPPS number in an identifier value: an IdNat_PS (`8` + 11-digit RPPS) is cut.
pub(super) fn rpps(value: &str) -> &str {
    match value.strip_prefix('8') {
        Some(rest) if rest.len() == 11 && rest.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => value,
    }
}

/// An Observation.
fn observation(node: &Node<'_, '_>) -> Result<Observation, BundleError> {
    let mut out = Observation {
        id: string(node.get("id"))?,
        code: match node.get_any(&["code", "coded"]) {
            Some(code) => concept_code(&code)?,
            None => Code::default(),
        },
        value: None,
        value_text: None,
        unit: None,
        unit_code: None,
        effective: string(node.get_any(&["effectiveDateTime", "effectiveInstant"]))?,
    };
    if out.effective.is_none()
        && let Some(period) = node.get("effectivePeriod")
    {
        period.object()?;
        out.effective = string(period.get("start"))?;
    }
    if let Some(quantity_node) = node.get("valueQuantity") {
        let (value, unit, code) = quantity(&quantity_node)?;
        out.value = value;
        out.unit = unit.or_else(|| code.clone());
        out.unit_code = code;
    } else if let Some(number) = node.get("valueInteger") {
        out.value = Some(number.number()?);
    } else if let Some(text) = node.get("valueString") {
        out.value_text = string(Some(text))?;
    } else if let Some(concept) = node.get("valueCodeableConcept") {
        out.value_text = concept_text(&concept)?;
    } else if let Some(flag) = node.get("valueBoolean") {
        out.value_text = Some(flag.boolean()?.to_string());
    }
    Ok(out)
}

/// The first attachment of a DocumentReference that carries `data` or `url`.
fn document(node: &Node<'_, '_>) -> Result<Option<Document>, BundleError> {
    let Some(contents) = node.get("content") else {
        return Ok(None);
    };
    for content in contents.items() {
        content.object()?;
        let Some(attachment) = content.get("attachment") else {
            continue;
        };
        attachment.object()?;
        let data_base64 = match attachment.get("data") {
            Some(data) => base64(&data)?,
            None => None,
        };
        let url = string(attachment.get("url"))?;
        if data_base64.is_none() && url.is_none() {
            continue;
        }
        let created = match string(attachment.get("creation"))? {
            Some(created) => Some(created),
            None => string(node.get("date"))?,
        };
        return Ok(Some(Document {
            id: string(node.get("id"))?,
            content_type: string(attachment.get("contentType"))?,
            data_base64,
            url,
            title: string(attachment.get("title"))?,
            description: string(node.get("description"))?,
            created,
        }));
    }
    Ok(None)
}

/// Base64 text, checked (alphabet, padding, length) and without whitespace.
fn base64(node: &Node<'_, '_>) -> Result<Option<String>, BundleError> {
    let Some(text) = node.text()? else {
        return Ok(None);
    };
    let mut count = 0usize;
    let mut padding = 0usize;
    let mut spaces = false;
    for (offset, c) in text.char_indices() {
        let bad = match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '+' | '/' => padding > 0,
            '=' => {
                padding += 1;
                padding > 2
            }
            ' ' | '\t' | '\r' | '\n' => {
                spaces = true;
                continue;
            }
            _ => true,
        };
        if bad {
            let mut buf = [0u8; 4];
            return Err(BundleError::Invalid {
                path: node.path(),
                expected: "base64 data",
                found: format!(
                    "`{}` at byte {offset}",
                    readable_line(c.encode_utf8(&mut buf).as_bytes(), 4)
                ),
            });
        }
        count += 1;
    }
    if !count.is_multiple_of(4) {
        return Err(BundleError::Invalid {
            path: node.path(),
            expected: "base64 data",
            found: format!("{count} base64 characters, not a multiple of 4"),
        });
    }
    Ok(Some(match text {
        Cow::Borrowed(text) if spaces => {
            text.chars().filter(|c| !c.is_ascii_whitespace()).collect()
        }
        text => text.into_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_cip_oid(Some(CIP_SYSTEM), "3400930000001", Some(CodeKind::Cip))]
    #[case::ok_ucd_oid(Some(UCD_SYSTEM), "3400890000001", Some(CodeKind::Ucd))]
    #[case::ok_cis_oid(Some(CIS_SYSTEM), "60000001", Some(CodeKind::Cis))]
    #[case::ok_cip_url(Some("https://posos.fr/CIP13"), "3400930000001", Some(CodeKind::Cip))]
    #[case::ok_ucd_url(Some("http://example.org/ucd"), "9000001", Some(CodeKind::Ucd))]
    #[case::ok_atc(Some("http://www.whocc.no/atc"), "N02BE01", Some(CodeKind::Atc))]
    #[case::ok_shape_cip(None, "3400930000001", Some(CodeKind::Cip))]
    #[case::ok_shape_ucd(None, "3400890000001", Some(CodeKind::Ucd))]
    #[case::ok_shape_unknown(None, "12345", None)]
    #[case::ok_other_system(Some("http://snomed.info/sct"), "1", None)]
    fn classify_cases(
        #[case] system: Option<&str>,
        #[case] code: &str,
        #[case] expected: Option<CodeKind>,
    ) {
        assert_eq!(classify(system, code), expected);
    }

    #[rstest]
    #[case::ok_rpps("10001234567", "10001234567")]
    #[case::ok_idnat_ps("810001234567", "10001234567")]
    #[case::ok_adeli("0123456789", "0123456789")]
    #[case::ok_short_8("81234", "81234")]
    fn rpps_cases(#[case] value: &str, #[case] expected: &str) {
        assert_eq!(rpps(value), expected);
    }
}

//! The tolerant reader of the FHIR bundles Posos pushes: bytes in, a normalized, strictly typed
//! [`Prescription`] out. Pure: no I/O, no logging, no panics on any input.
//!
//! The mapping files never see FHIR: they address the JSON that [`Prescription`] serializes
//! to (with serde). **That JSON shape is the contract with the mapping-file authors**; it is
//! described below and only grows (a field is never renamed or removed). Every key is always
//! present: absent data is `null` (or `[]` for lists), never a missing key.
//!
//! # Layout
//!
//! - `value`: JSON access: locations rendered only for errors, typed reads that tolerate
//!   numbers in strings, one object where FHIR wants an array, both spellings of a key.
//! - `index`: every resource (entries and contained) indexed once by `fullUrl`, `Type/id`, id
//!   and `#id`, so each reference is one hash look-up.
//! - `read`: FHIR resources to the model.
//! - `v1`: the older `drugs` body.
//!
//! # What is accepted
//!
//! - The Bundle bare, or wrapped as `{"fhirBundle": {…}}`; any Bundle `type` (transaction,
//!   collection, …); an object with `entry` but no `resourceType` is read as a Bundle. A UTF-8
//!   BOM before the JSON is skipped.
//! - `identify` wherever FHIR says `identifier`, `coded` wherever it says `code` (the standard
//!   spelling wins when both are present).
//! - References as `urn:uuid:…` (the entry `fullUrl`), `Type/id` (relative or absolute URL,
//!   `_history` ignored), `urn:uuid:X` or bare `X` naming a resource id, `#id` naming a
//!   contained resource (of the referring resource's container first, then of any resource).
//! - Numbers given as strings (`"3"`, `"0,5"`), `true`/`false` given as strings, a single
//!   object or string where FHIR wants an array, `null` or `""` for absent data.
//! - Dosage both as text and as Timing/doseAndRate, several `dosageInstruction` entries ordered
//!   by `sequence` (stable: equal sequences keep their order, entries without `sequence` come
//!   after, in array order); `timing.repeat` fields also found directly under `timing`;
//!   `doseQuantity` directly under the dosage (STU3).
//! - R5 spellings: `medication.concept` / `medication.reference`, `asNeeded`, `asNeededFor`.
//! - The v1 body (see [`v1`](#the-v1-drugs-body)).
//!
//! # What is refused (a [`BundleError`] naming the JSON path)
//!
//! Not JSON; JSON that is neither a Bundle, a wrapper nor a v1 body; no MedicationRequest, no
//! DocumentReference and no `drugs`; an entry or resource that is not an object, or a resource
//! without `resourceType`; a reference that names nothing in the bundle, or a resource of the
//! wrong type (a `medicationReference` to a Patient); a value of the wrong JSON type
//! (`entry[3].resource.dosageInstruction[0].timing.repeat.frequency: expected a number, found
//! "deux"`); attachment data that is not base64. Missing optional data is never an error.
//!
//! # How the model is filled
//!
//! - `id`: the RequestGroup `id`, else its first identifier value, else its entry `fullUrl`
//!   without `urn:uuid:`, else the Bundle identifier value, else the Bundle `id`, else the
//!   first line's `id`.
//! - `authored_at`: as written (FHIR dateTime, normally RFC 3339): the RequestGroup
//!   `authoredOn`, else the first line's `authoredOn`, else the Bundle `timestamp`.
//! - `patient`: the RequestGroup `subject`, else the first MedicationRequest `subject`, else
//!   the Patient carrying an `id://partner` identifier, else the first Patient.
//!   `partner_id` is the value of the identifier of system `id://partner` (the `patientId` the
//!   launch sent). `sex` is `gender` as an HL7 code (`male` → `M`, `female` → `F`, `other` →
//!   `O`, `unknown` → `U`); `family`/`given` come from the `official` name, else `usual`, else
//!   the first name (given names joined with a space).
//! - `prescriber`: the RequestGroup `author`, else the first MedicationRequest `requester`,
//!   else the first Practitioner; a PractitionerRole is followed to its `practitioner`. `rpps`
//!   is the identifier of system `urn:oid:1.2.250.1.71.4.2.1` or of type `RPPS`; a 12-digit
//!   national id `8` + RPPS (IdNat_PS) is cut to the 11-digit RPPS (`identifiers` keeps it).
//! - `lines`: one per MedicationRequest: first those the RequestGroup actions name (nested
//!   actions included, in order), then the others in document order.
//! - `medication`: `medicationCodeableConcept`, or the Medication that `medicationReference`
//!   names (entry or contained). `code`/`system`/`kind` are the preferred coding: CIP
//!   (`urn:oid:1.2.250.1.213.2.3.2`, or a system containing `cip`), then UCD
//!   (`urn:oid:1.2.250.1.213.2.61`, or `ucd`), then CIS (`urn:oid:1.2.250.1.213.2.3.1`, or
//!   `cis`), then ATC, then the first coding. A coding without a system is classified by shape
//!   (13 digits `34009…` CIP13, `34008…` UCD13). `cip13`, `ucd`, `cis` hold the code of each
//!   kind when present. `display` is the preferred coding's display, else the concept `text`.
//! - `dosages[].dose`: the first `doseAndRate` with `doseQuantity` (`value`) or `doseRange`
//!   (`low`, `high`); `unit` is the quantity's `unit`, else its `code`.
//! - `observations`: every Observation, document order; a numeric value (`valueQuantity`,
//!   `valueInteger`) in `value`, any other (`valueString`, `valueCodeableConcept`,
//!   `valueBoolean`) as text in `value_text`.
//! - `document`: the first DocumentReference attachment carrying `data` or `url`; base64 is
//!   checked and whitespace (line wrapping) removed.
//!
//! # The v1 `drugs` body
//!
//! An older, simpler result: `{"patientId": "…", "rpps": "…", "id": "…", "date": "…", "drugs":
//! [{"name": "…", "cip13": "…", "ucd": "…", "cis": "…", "form": "…", "posology": "…"}]}`.
//! Accepted alone, beside the bundle in the wrapper, or inside the Bundle object; it gives the
//! lines only when the bundle has no MedicationRequest. Each drug: `name` (or `label`,
//! `denomination`, `display`) → `medication.display`; `cip13`/`cip`, `ucd`/`ucd13`, `cis` →
//! codes (or a generic `code` + `system`, classified as above); `form` → `medication.form.text`;
//! `posology` (or `posologie`, `dosage`, `text`): a string is one dosage step with that text, a
//! list of strings one step per string (`sequence` 1, 2, …). A drug given as a bare string is
//! its name. A drug with neither name nor code is an error. Body keys `patientId`/`patient_id`
//! → `patient.partner_id`, `rpps` → `prescriber.rpps`, `id`, `date` → `authored_at`.
//!
//! # The JSON shape (example)
//!
//! ```json
//! {
//!   "id": "rg-1",
//!   "authored_at": "2026-01-05T10:00:00+01:00",
//!   "patient": {
//!     "partner_id": "IPP42", "family": "MARTIN", "given": "Claire Anne",
//!     "birth_date": "1950-03-02", "gender": "female", "sex": "F",
//!     "names": [{ "use": "official", "family": "MARTIN", "given": ["Claire", "Anne"], "prefix": [], "text": null }],
//!     "identifiers": [{ "system": "id://partner", "value": "IPP42", "type": null }]
//!   },
//!   "prescriber": {
//!     "rpps": "10001234567", "family": "DURAND", "given": "Paul",
//!     "names": [ … ], "identifiers": [ … ]
//!   },
//!   "lines": [{
//!     "id": "mr-1", "status": "active", "authored_at": "2026-01-05T10:00:00+01:00",
//!     "medication": {
//!       "code": "3400930000000", "system": "urn:oid:1.2.250.1.213.2.3.2", "kind": "cip",
//!       "display": "PREDNISONE 20 mg, comprimé", "text": "PREDNISONE 20 mg, comprimé",
//!       "cip13": "3400930000000", "ucd": null, "cis": null,
//!       "form": { "code": null, "system": null, "display": null, "text": "comprimé" },
//!       "codings": [{ "system": "urn:oid:1.2.250.1.213.2.3.2", "code": "3400930000000",
//!                     "display": "PREDNISONE 20 mg, comprimé", "kind": "cip" }]
//!     },
//!     "dosages": [{
//!       "sequence": 1, "text": "3 comprimés le matin pendant 5 jours", "patient_instruction": null,
//!       "timing": {
//!         "frequency": 1, "frequency_max": null, "period": 1, "period_max": null,
//!         "period_unit": "d", "when": ["MORN"], "time_of_day": [], "day_of_week": [],
//!         "count": null, "count_max": null, "duration": null, "duration_unit": null,
//!         "bounds_duration": { "value": 5, "unit": "jours", "code": "d" },
//!         "bounds_period": null, "code": null
//!       },
//!       "dose": { "value": 3, "low": null, "high": null, "unit": "comprimé", "code": null },
//!       "route": { "code": "20053000", "system": "http://standardterms.edqm.eu", "display": "Oral use", "text": null },
//!       "as_needed": false, "as_needed_reason": null
//!     }],
//!     "substitution_allowed": null,
//!     "note": null
//!   }],
//!   "observations": [{
//!     "id": "obs-1", "code": { "code": "29463-7", "system": "http://loinc.org", "display": "Body weight", "text": null },
//!     "value": 62.5, "value_text": null, "unit": "kg", "unit_code": "kg", "effective": "2026-01-05"
//!   }],
//!   "document": {
//!     "id": "doc-1", "content_type": "application/pdf", "data_base64": "JVBERi0xLjQK…",
//!     "url": null, "title": "ordonnance.pdf", "description": null, "created": null
//!   }
//! }
//! ```
//!
//! Kinds are `"cip"`, `"ucd"`, `"cis"`, `"atc"` or `null`. Numbers keep their JSON form (`1`
//! stays `1`, `0.5` stays `0.5`). `document` is `null` when there is none.

mod index;
mod json;
mod read;
mod v1;
mod value;

use serde::Serialize;
use serde_json::{Number, Value};

use json::{Json, Tree};
use value::{Node, Origin};

/// The identifier system of the partner's patient id (the `patientId` of the launch).
pub const PARTNER_SYSTEM: &str = "id://partner";

/// The identifier system of RPPS numbers (ASIP Santé / ANS OID).
pub const RPPS_SYSTEM: &str = "urn:oid:1.2.250.1.71.4.2.1";

/// The code system of CIP (presentation) codes.
pub const CIP_SYSTEM: &str = "urn:oid:1.2.250.1.213.2.3.2";

/// The code system of UCD (dispensing unit) codes.
pub const UCD_SYSTEM: &str = "urn:oid:1.2.250.1.213.2.61";

/// The code system of CIS (speciality) codes.
pub const CIS_SYSTEM: &str = "urn:oid:1.2.250.1.213.2.3.1";

/// A Posos result, normalized: what the mapping files address (see the module docs for the
/// JSON shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prescription {
    /// Prescription id, for order numbers (RequestGroup id, see the module docs).
    pub id: Option<String>,
    /// When it was written (FHIR dateTime as given, normally RFC 3339).
    pub authored_at: Option<String>,
    /// Who it is for.
    pub patient: Patient,
    /// Who wrote it.
    pub prescriber: Prescriber,
    /// The prescription lines, in prescription order.
    pub lines: Vec<Line>,
    /// Observations that came with it (weight, creatinine clearance …).
    pub observations: Vec<Observation>,
    /// The document (the scanned or generated PDF), when there is one.
    pub document: Option<Document>,
}

/// The patient, as the bundle names them; the EHR identity comes from `partner_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Patient {
    /// The `id://partner` identifier value: the `patientId` the launch passed.
    pub partner_id: Option<String>,
    /// Family name of the preferred name.
    pub family: Option<String>,
    /// Given names of the preferred name, joined with a space.
    pub given: Option<String>,
    /// Birth date as given (`YYYY-MM-DD`, possibly partial).
    pub birth_date: Option<String>,
    /// FHIR `gender` as given.
    pub gender: Option<String>,
    /// `gender` as an HL7 administrative sex code: `M`, `F`, `O`, `U`.
    pub sex: Option<String>,
    /// Every name, as given.
    pub names: Vec<Name>,
    /// Every identifier, as given.
    pub identifiers: Vec<Identifier>,
}

/// The prescriber, with the RPPS the EHR needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Prescriber {
    /// The 11-digit RPPS number.
    pub rpps: Option<String>,
    /// Family name of the preferred name.
    pub family: Option<String>,
    /// Given names of the preferred name, joined with a space.
    pub given: Option<String>,
    /// Every name, as given.
    pub names: Vec<Name>,
    /// Every identifier, as given.
    pub identifiers: Vec<Identifier>,
}

/// A person's name (FHIR HumanName), kept whole for mappings that need more than one.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Name {
    /// `use`: `official` (birth name in France), `usual`, `maiden` …
    #[serde(rename = "use")]
    pub use_: Option<String>,
    /// Family name.
    pub family: Option<String>,
    /// Given names, in order.
    pub given: Vec<String>,
    /// Prefixes (`Dr`).
    pub prefix: Vec<String>,
    /// The name as one text.
    pub text: Option<String>,
}

/// An identifier, for mappings that need one the model does not name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identifier {
    /// The namespace (`urn:oid:…`, `id://partner`).
    pub system: Option<String>,
    /// The value.
    pub value: String,
    /// The identifier type code (`RPPS`, `IDNPS`, `PI` …), or its text.
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

/// A code from a CodeableConcept: its first coding with a code, and the concept's text.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Code {
    /// The code.
    pub code: Option<String>,
    /// Its system.
    pub system: Option<String>,
    /// The coding's display.
    pub display: Option<String>,
    /// The concept's free text.
    pub text: Option<String>,
}

/// One prescription line: one MedicationRequest (or one v1 drug).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// MedicationRequest id.
    pub id: Option<String>,
    /// MedicationRequest status (`active`, …).
    pub status: Option<String>,
    /// MedicationRequest `authoredOn`.
    pub authored_at: Option<String>,
    /// What is prescribed.
    pub medication: Medication,
    /// How it is taken, in sequence.
    pub dosages: Vec<Dosage>,
    /// `substitution.allowedBoolean`: `false` means non substituable.
    pub substitution_allowed: Option<bool>,
    /// `note[].text`, joined with a line feed.
    pub note: Option<String>,
}

/// The kind of a medication code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeKind {
    /// CIP: presentation code (CIP13, or CIP7).
    Cip,
    /// UCD: common dispensing unit (UCD13, or UCD7).
    Ucd,
    /// CIS: speciality code.
    Cis,
    /// ATC: substance class.
    Atc,
}

/// What is prescribed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Medication {
    /// The preferred code (CIP, then UCD, CIS, ATC, then the first).
    pub code: Option<String>,
    /// Its system.
    pub system: Option<String>,
    /// Its kind.
    pub kind: Option<CodeKind>,
    /// The preferred coding's display, else the text.
    pub display: Option<String>,
    /// The concept's free text.
    pub text: Option<String>,
    /// The CIP code, when one is given.
    pub cip13: Option<String>,
    /// The UCD code, when one is given.
    pub ucd: Option<String>,
    /// The CIS code, when one is given.
    pub cis: Option<String>,
    /// The dose form (`comprimé`).
    pub form: Option<Code>,
    /// Every coding, as given, classified.
    pub codings: Vec<Coding>,
}

/// One coding of a medication.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coding {
    /// The system.
    pub system: Option<String>,
    /// The code.
    pub code: String,
    /// The display.
    pub display: Option<String>,
    /// The kind, from the system (or the code's shape when there is no system).
    pub kind: Option<CodeKind>,
}

/// One dosage step (a `dosageInstruction`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dosage {
    /// `sequence` as given.
    pub sequence: Option<i64>,
    /// The posology as text.
    pub text: Option<String>,
    /// `patientInstruction`.
    pub patient_instruction: Option<String>,
    /// The structured timing, when given.
    pub timing: Option<Timing>,
    /// The dose, when given.
    pub dose: Option<Dose>,
    /// The route (EDQM), when given.
    pub route: Option<Code>,
    /// Taken as needed.
    pub as_needed: bool,
    /// Why, when as needed.
    pub as_needed_reason: Option<String>,
}

/// A FHIR Timing, flattened (`timing.repeat.*` and `timing.code`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timing {
    /// Times per period.
    pub frequency: Option<u32>,
    /// Upper bound of times per period.
    pub frequency_max: Option<u32>,
    /// The period.
    pub period: Option<Number>,
    /// Upper bound of the period.
    pub period_max: Option<Number>,
    /// UCUM unit of the period: `s`, `min`, `h`, `d`, `wk`, `mo`, `a`.
    pub period_unit: Option<String>,
    /// Events of the day (`MORN`, `ACM`, `HS` …).
    pub when: Vec<String>,
    /// Times of day (`08:00:00`).
    pub time_of_day: Vec<String>,
    /// Days of week (`mon` …).
    pub day_of_week: Vec<String>,
    /// Number of times in total.
    pub count: Option<u32>,
    /// Upper bound of the number of times.
    pub count_max: Option<u32>,
    /// Duration of one administration.
    pub duration: Option<Number>,
    /// Its UCUM unit.
    pub duration_unit: Option<String>,
    /// How long the step lasts (`boundsDuration`).
    pub bounds_duration: Option<Duration>,
    /// When the step starts and ends (`boundsPeriod`).
    pub bounds_period: Option<Period>,
    /// `timing.code` (`BID`, `TID` …).
    pub code: Option<Code>,
}

/// A duration (a FHIR Duration quantity).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Duration {
    /// The amount.
    pub value: Option<Number>,
    /// The unit as written (`jours`).
    pub unit: Option<String>,
    /// The UCUM code (`d`).
    pub code: Option<String>,
}

/// A period of time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    /// Start, as given.
    pub start: Option<String>,
    /// End, as given.
    pub end: Option<String>,
}

/// A dose: a quantity (`value`) or a range (`low`, `high`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dose {
    /// The dose (`doseQuantity`).
    pub value: Option<Number>,
    /// The low end (`doseRange`).
    pub low: Option<Number>,
    /// The high end (`doseRange`).
    pub high: Option<Number>,
    /// The unit as written, else its code.
    pub unit: Option<String>,
    /// The unit code (UCUM or EDQM).
    pub code: Option<String>,
}

/// An observation that came with the prescription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// Observation id.
    pub id: Option<String>,
    /// What was observed (LOINC …).
    pub code: Code,
    /// A numeric value.
    pub value: Option<Number>,
    /// A non-numeric value, as text.
    pub value_text: Option<String>,
    /// The unit as written, else its code.
    pub unit: Option<String>,
    /// The unit code (UCUM).
    pub unit_code: Option<String>,
    /// When (`effectiveDateTime`, or `effectivePeriod.start`).
    pub effective: Option<String>,
}

/// The document attached to the result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    /// DocumentReference id.
    pub id: Option<String>,
    /// MIME type (`application/pdf`).
    pub content_type: Option<String>,
    /// The content, base64, checked, without whitespace.
    pub data_base64: Option<String>,
    /// Where the content is, when not inline.
    pub url: Option<String>,
    /// Attachment title.
    pub title: Option<String>,
    /// DocumentReference description.
    pub description: Option<String>,
    /// Attachment `creation`, else DocumentReference `date`.
    pub created: Option<String>,
}

/// Why a body cannot be read as a Posos result; each variant but the first two names the JSON
/// path, for the FHIR OperationOutcome that answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The body is not JSON.
    #[error("the body is not JSON: {reason} at line {line}, column {column}")]
    NotJson {
        /// What the JSON parser said.
        reason: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The body has nothing to deliver.
    #[error(
        "the bundle has no MedicationRequest, no DocumentReference and no `drugs`: nothing to deliver"
    )]
    Empty,
    /// The JSON is neither a Bundle, a `{"fhirBundle": …}` wrapper nor a v1 `drugs` body.
    #[error(
        "{path}: expected a FHIR Bundle, a {{\"fhirBundle\": …}} wrapper or a `drugs` list, found {found}"
    )]
    NotABundle {
        /// Where (`$` for the body).
        path: String,
        /// What was there.
        found: String,
    },
    /// A value has the wrong type or cannot be read as what it should be.
    #[error("{path}: expected {expected}, found {found}")]
    Invalid {
        /// Where.
        path: String,
        /// What was expected.
        expected: &'static str,
        /// What was found, readable.
        found: String,
    },
    /// A required key is absent.
    #[error("{path}: `{key}` is missing")]
    Missing {
        /// The object it is missing from.
        path: String,
        /// The key.
        key: &'static str,
    },
    /// A reference names nothing in the bundle.
    #[error("{path}: `{reference}` refers to no resource in the bundle")]
    Dangling {
        /// Where the reference is.
        path: String,
        /// The reference, readable.
        reference: String,
    },
    /// A reference names a resource of the wrong type.
    #[error("{path}: `{reference}` refers to {found}, expected a {expected}")]
    WrongTarget {
        /// Where the reference is.
        path: String,
        /// The reference, readable.
        reference: String,
        /// The type the reference should name.
        expected: &'static str,
        /// What it names (`a Patient`).
        found: String,
    },
}

impl BundleError {
    /// The JSON path of the problem, for an OperationOutcome `expression`; `None` when the
    /// problem is the body as a whole.
    pub fn path(&self) -> Option<&str> {
        match self {
            BundleError::NotJson { .. } | BundleError::Empty => None,
            BundleError::NotABundle { path, .. }
            | BundleError::Invalid { path, .. }
            | BundleError::Missing { path, .. }
            | BundleError::Dangling { path, .. }
            | BundleError::WrongTarget { path, .. } => Some(path),
        }
    }
}

/// Reads a Posos result (a FHIR Bundle, bare or wrapped, or a v1 `drugs` body) into the
/// normalized model the mappings address.
pub fn read_bundle(json: &[u8]) -> Result<Prescription, BundleError> {
    let json = json.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(json);
    // Valid UTF-8 checked once for the whole body (not string by string); the byte parser
    // keeps its own messages for a body that is not.
    let text = match std::str::from_utf8(json) {
        Ok(text) => text,
        Err(_) => return Err(not_json(serde_json::from_slice::<Value>(json).err())),
    };
    let body = Tree::parse(text).map_err(|e| not_json(Some(e)))?;
    read_json(body.root())
}

/// The error for a body that is not JSON, from the parser's error (`None`: a body that
/// `serde_json` reads as JSON but is not UTF-8, which cannot happen).
fn not_json(error: Option<serde_json::Error>) -> BundleError {
    match error {
        Some(e) => {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            BundleError::NotJson {
                reason: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
                line: e.line(),
                column: e.column(),
            }
        }
        None => BundleError::NotJson {
            reason: "invalid UTF-8".to_owned(),
            line: 1,
            column: 0,
        },
    }
}

/// Reads an already parsed body (see [`read_bundle`]); for callers that hold a `Value`.
pub fn read_value(body: &Value) -> Result<Prescription, BundleError> {
    read_json(Tree::from_value(body).root())
}

/// Reads the body as the borrowed tree.
fn read_json(body: Json<'_>) -> Result<Prescription, BundleError> {
    let root = Node::root(body, Origin::default());
    if !body.is_object() {
        return Err(not_a_bundle(&root));
    }
    if let Some(inner) = root.get("fhirBundle") {
        let inner_root = Node::root(
            inner.value,
            Origin {
                wrapped: true,
                ..Origin::default()
            },
        );
        if !is_bundle(inner.value) {
            return Err(not_a_bundle(&inner_root));
        }
        let drugs = root.get("drugs").or_else(|| inner_root.get("drugs"));
        return read::read_fhir(&inner_root, true, drugs);
    }
    if is_bundle(body) {
        let drugs = root.get("drugs");
        return read::read_fhir(&root, false, drugs);
    }
    if body.get("resourceType").is_none()
        && let Some(drugs) = root.get("drugs")
    {
        return v1::read_body(&root, &drugs);
    }
    Err(not_a_bundle(&root))
}

/// A Bundle, or an object with `entry` and no `resourceType`.
fn is_bundle(value: Json<'_>) -> bool {
    match value.get("resourceType") {
        Some(kind) => kind.as_str().map(str::trim) == Some("Bundle"),
        None => value.get("entry").is_some_and(Json::is_array),
    }
}

/// The error for a body that is not a bundle.
fn not_a_bundle(node: &Node<'_, '_>) -> BundleError {
    BundleError::NotABundle {
        path: node.path(),
        found: value::describe(node.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::err_not_json(b"{".as_slice(), "the body is not JSON: EOF while parsing an object at line 1, column 1", None)]
    #[case::err_empty_body(b"".as_slice(), "the body is not JSON: EOF while parsing a value at line 1, column 0", None)]
    #[case::err_array(b"[]".as_slice(), "$: expected a FHIR Bundle, a {\"fhirBundle\": \u{2026}} wrapper or a `drugs` list, found an array", Some("$"))]
    #[case::err_patient(br#"{"resourceType":"Patient"}"#.as_slice(), "$: expected a FHIR Bundle, a {\"fhirBundle\": \u{2026}} wrapper or a `drugs` list, found a Patient", Some("$"))]
    #[case::err_wrapped_string(br#"{"fhirBundle":"x"}"#.as_slice(), "fhirBundle: expected a FHIR Bundle, a {\"fhirBundle\": \u{2026}} wrapper or a `drugs` list, found \"x\"", Some("fhirBundle"))]
    #[case::err_nothing(br#"{"resourceType":"Bundle","entry":[]}"#.as_slice(), "the bundle has no MedicationRequest, no DocumentReference and no `drugs`: nothing to deliver", None)]
    fn body_errors(#[case] body: &[u8], #[case] message: &str, #[case] path: Option<&str>) {
        let error = read_bundle(body).unwrap_err();
        assert_eq!(error.to_string(), message);
        assert_eq!(error.path(), path);
    }

    #[test]
    fn ok_bom_and_bare_entry_object() {
        let body = b"\xEF\xBB\xBF{\"entry\":[{\"resource\":{\"resourceType\":\"MedicationRequest\",\"medicationCodeableConcept\":{\"text\":\"X\"}}}]}";
        let prescription = read_bundle(body).unwrap();
        assert_eq!(prescription.lines.len(), 1);
    }
}

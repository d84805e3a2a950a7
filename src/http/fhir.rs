//! The pure side of the FHIR document routes: reading a `$send-to-ehr` request (FHIR R4
//! `Parameters`) into a checked [`SendRequest`], search tokens (`SYSTEM|VALUE`), and the
//! OperationOutcome every refusal is answered with.
//!
//! Everything here takes bytes or text and returns values or a [`ParameterError`] naming the
//! parameter; nothing does I/O. The payload is checked as it is read (Base64 alphabet and
//! padding, decoded size) without ever being decoded into memory: the HL7 messages carry it as
//! Base64, and a 20 MiB document must not be held twice more than needed.
//!
//! # Accepted parameters
//!
//! | name | value | default |
//! |---|---|---|
//! | `subject` | `valueReference` `Patient/{id}` (or `valueString`) | required |
//! | `context` | `valueReference` `Encounter/{id}` | the patient's current encounter |
//! | `content-type` | `valueCode` (or `valueString`): `application/pdf`, `image/jpeg`, `image/png`, `application/txt` | `application/pdf` |
//! | `document-type` | `valueCoding` / `valueCodeableConcept` (LOINC) or `valueCode` | `11488-4` |
//! | `document-title` | `valueString` | `FAMILY_GIVEN_BIRTHDATE_TYPE_TRANSACTION` |
//! | `sender-identifier` | `valueIdentifier` or `valueString`: an RPPS (11 digits) | the application name |
//! | `payload` | `valueBase64Binary` (or `valueAttachment.data`) | required |
//!
//! Unknown parameters are refused (a misspelt `document-titel` must not be ignored silently);
//! a parameter given twice is refused.

use std::fmt;

use serde::Deserialize;
use serde_json::{Value, json};

/// The content types a document may have, with what HL7 and files call them.
pub const CONTENT_TYPES: &[ContentType] = &[
    ContentType {
        mime: "application/pdf",
        hl7_type: "AP",
        hl7_subtype: "PDF",
        extension: "pdf",
    },
    ContentType {
        mime: "image/jpeg",
        hl7_type: "IM",
        hl7_subtype: "JPEG",
        extension: "jpg",
    },
    ContentType {
        mime: "image/png",
        hl7_type: "IM",
        hl7_subtype: "PNG",
        extension: "png",
    },
    ContentType {
        mime: "application/txt",
        hl7_type: "TEXT",
        hl7_subtype: "PLAIN",
        extension: "txt",
    },
];

/// The LOINC code of a document sent without `document-type`: a consultation note.
pub const DEFAULT_DOCUMENT_TYPE: &str = "11488-4";

/// LOINC document types with a display name; others are sent with their code as display.
const DOCUMENT_TYPES: &[(&str, &str)] = &[
    ("11488-4", "Consult note"),
    ("57833-6", "Prescription for medication"),
    ("18842-5", "Discharge summary"),
    ("11506-3", "Progress note"),
    ("34133-9", "Summary of episode note"),
    ("11502-2", "Laboratory report"),
    ("18748-4", "Diagnostic imaging study"),
];

/// One allowed content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentType {
    /// `application/pdf`.
    pub mime: &'static str,
    /// ED-2, HL7 table 0191 (`AP`, `IM`, `TEXT`).
    pub hl7_type: &'static str,
    /// ED-3, HL7 table 0291 (`PDF`, `JPEG`, …).
    pub hl7_subtype: &'static str,
    /// The extension of the file written beside an HPRIM message.
    pub extension: &'static str,
}

/// A `$send-to-ehr` request, read and checked (the patient and encounter not yet resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// The census id of `Patient/{id}`.
    pub subject: i64,
    /// The census id of `Encounter/{id}`, when given.
    pub context: Option<i64>,
    pub content_type: ContentType,
    /// LOINC code.
    pub document_type: String,
    /// Its display name (the code when unknown).
    pub document_type_display: String,
    /// Given by the caller; `None`: built from the patient (see [`default_title`]).
    pub title: Option<String>,
    /// The RPPS of the sender, when given.
    pub sender_rpps: Option<String>,
    /// The document, Base64 as received (checked).
    pub payload_base64: String,
    /// Its decoded size in bytes.
    pub size: usize,
}

/// Why a request was refused: the parameter, what is wrong, and the HTTP status family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterError {
    /// The parameter (`payload`, `subject`, …), or `Parameters` for the body as a whole.
    pub parameter: &'static str,
    /// What is wrong and what to do, without patient data.
    pub message: String,
    pub kind: ErrorKind,
}

/// What kind of refusal, which decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not a readable `Parameters` resource, a missing or ill-typed parameter: 400.
    Structure,
    /// Readable but not acceptable (bad Base64, content type, RPPS, …): 422.
    Semantic,
    /// The payload is over `[documents] max_size`: 413.
    TooLarge,
}

impl fmt::Display for ParameterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parameter `{}`: {}", self.parameter, self.message)
    }
}

impl std::error::Error for ParameterError {}

fn structure(parameter: &'static str, message: impl Into<String>) -> ParameterError {
    ParameterError {
        parameter,
        message: message.into(),
        kind: ErrorKind::Structure,
    }
}

fn semantic(parameter: &'static str, message: impl Into<String>) -> ParameterError {
    ParameterError {
        parameter,
        message: message.into(),
        kind: ErrorKind::Semantic,
    }
}

/// The JSON shape read: only the value types the parameters use; others are ignored and the
/// parameter then reads as given without a usable value.
#[derive(Deserialize)]
struct RawParameters {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(default)]
    parameter: Vec<RawParameter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawParameter {
    name: Option<String>,
    value_string: Option<String>,
    value_code: Option<String>,
    value_base64_binary: Option<String>,
    value_reference: Option<RawReference>,
    value_coding: Option<RawCoding>,
    value_codeable_concept: Option<RawCodeableConcept>,
    value_identifier: Option<RawIdentifier>,
    value_attachment: Option<RawAttachment>,
}

#[derive(Deserialize)]
struct RawReference {
    reference: Option<String>,
}

#[derive(Deserialize)]
struct RawCoding {
    system: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize)]
struct RawCodeableConcept {
    #[serde(default)]
    coding: Vec<RawCoding>,
}

#[derive(Deserialize)]
struct RawIdentifier {
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAttachment {
    content_type: Option<String>,
    data: Option<String>,
}

const NAMES: [&str; 7] = [
    "subject",
    "context",
    "content-type",
    "document-type",
    "document-title",
    "sender-identifier",
    "payload",
];

/// Reads and checks a `$send-to-ehr` body; `max_size` bounds the decoded payload.
pub fn read_send_request(body: &[u8], max_size: usize) -> Result<SendRequest, ParameterError> {
    let raw: RawParameters = serde_json::from_slice(body).map_err(|e| {
        structure(
            "Parameters",
            format!("the body is not a FHIR Parameters resource in JSON ({e}): send `{{\"resourceType\": \"Parameters\", \"parameter\": [...]}}`"),
        )
    })?;
    if raw.resource_type.as_deref() != Some("Parameters") {
        return Err(structure(
            "Parameters",
            format!(
                "`resourceType` is {}, not `Parameters`: send the document as FHIR Parameters",
                raw.resource_type
                    .as_deref()
                    .map_or("missing".to_string(), |t| format!("`{t}`"))
            ),
        ));
    }
    let mut slots: [Option<RawParameter>; 7] = Default::default();
    for parameter in raw.parameter {
        let name = parameter.name.clone().unwrap_or_default();
        let Some(index) = NAMES.iter().position(|n| *n == name) else {
            return Err(structure(
                "Parameters",
                format!(
                    "unknown parameter `{name}`: expected {}",
                    NAMES.map(|n| format!("`{n}`")).join(", ")
                ),
            ));
        };
        if slots[index].is_some() {
            return Err(structure(
                NAMES[index],
                "given more than once: send it once",
            ));
        }
        slots[index] = Some(parameter);
    }
    let [
        subject,
        context,
        content_type,
        document_type,
        title,
        sender,
        payload,
    ] = slots;

    let subject = match subject {
        Some(p) => reference(p, "subject", "Patient")?,
        None => {
            return Err(structure(
                "subject",
                "missing: send `{\"name\": \"subject\", \"valueReference\": {\"reference\": \"Patient/ID\"}}` with the id found by `GET /fhir/Patient?identifier=…`",
            ));
        }
    };
    let context = context
        .map(|p| reference(p, "context", "Encounter"))
        .transpose()?;
    let attachment_type = payload
        .as_ref()
        .and_then(|p| p.value_attachment.as_ref())
        .and_then(|a| a.content_type.clone());
    let content_type = match content_type {
        Some(p) => {
            let given = p
                .value_code
                .or(p.value_string)
                .ok_or_else(|| structure("content-type", "no `valueCode`: send e.g. `{\"name\": \"content-type\", \"valueCode\": \"application/pdf\"}`"))?;
            content_type_of(&given)?
        }
        None => match attachment_type {
            Some(given) => content_type_of(&given)?,
            None => CONTENT_TYPES[0],
        },
    };
    let document_type = match document_type {
        Some(p) => {
            let code = p
                .value_coding
                .and_then(|c| c.code)
                .or_else(|| {
                    p.value_codeable_concept.and_then(|c| {
                        c.coding
                            .into_iter()
                            .find(|c| {
                                c.system.as_deref().is_none_or(|s| s == "http://loinc.org")
                            })
                            .and_then(|c| c.code)
                    })
                })
                .or(p.value_code)
                .or(p.value_string)
                .ok_or_else(|| structure("document-type", "no `valueCoding`: send e.g. `{\"name\": \"document-type\", \"valueCoding\": {\"system\": \"http://loinc.org\", \"code\": \"11488-4\"}}`"))?;
            if !is_loinc(&code) {
                return Err(semantic(
                    "document-type",
                    format!(
                        "`{}` is not a LOINC code (digits, `-`, a check digit, such as `11488-4`)",
                        shown(&code)
                    ),
                ));
            }
            code
        }
        None => DEFAULT_DOCUMENT_TYPE.to_string(),
    };
    let document_type_display = DOCUMENT_TYPES
        .iter()
        .find(|(code, _)| *code == document_type)
        .map_or(document_type.clone(), |(_, display)| (*display).to_string());
    let title = match title {
        Some(p) => {
            let text = p.value_string.ok_or_else(|| {
                structure(
                    "document-title",
                    "no `valueString`: send the title as `valueString`",
                )
            })?;
            let text = text.trim().to_string();
            if text.is_empty() {
                return Err(semantic(
                    "document-title",
                    "empty: leave the parameter out for the default title",
                ));
            }
            if text.chars().count() > 200 {
                return Err(semantic(
                    "document-title",
                    format!("{} characters: send at most 200", text.chars().count()),
                ));
            }
            Some(text)
        }
        None => None,
    };
    let sender_rpps = match sender {
        Some(p) => {
            let value = p
                .value_identifier
                .and_then(|i| i.value)
                .or(p.value_string)
                .ok_or_else(|| structure("sender-identifier", "no `valueIdentifier`: send `{\"name\": \"sender-identifier\", \"valueIdentifier\": {\"system\": \"urn:oid:1.2.250.1.71.4.2.1\", \"value\": \"RPPS\"}}`"))?;
            if value.len() != 11 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(semantic(
                    "sender-identifier",
                    format!("`{}` is not an RPPS number (11 digits)", shown(&value)),
                ));
            }
            Some(value)
        }
        None => None,
    };
    let payload_base64 = match payload {
        Some(p) => p
            .value_base64_binary
            .or_else(|| p.value_attachment.and_then(|a| a.data))
            .ok_or_else(|| {
                structure(
                    "payload",
                    "no `valueBase64Binary`: send the document Base64-encoded in `valueBase64Binary`",
                )
            })?,
        None => {
            return Err(structure(
                "payload",
                "missing: send the document Base64-encoded as `{\"name\": \"payload\", \"valueBase64Binary\": \"…\"}`",
            ));
        }
    };
    let size = check_base64(&payload_base64, max_size)?;
    Ok(SendRequest {
        subject,
        context,
        content_type,
        document_type,
        document_type_display,
        title,
        sender_rpps,
        payload_base64,
        size,
    })
}

/// A value from the request, shortened for a message (it may be long; never patient data
/// here: codes, references, identifiers of the sender).
fn shown(value: &str) -> String {
    let mut out: String = value.chars().take(40).collect();
    if value.chars().count() > 40 {
        out.push('…');
    }
    out.escape_debug().to_string()
}

fn content_type_of(given: &str) -> Result<ContentType, ParameterError> {
    let base = given.split(';').next().unwrap_or_default().trim();
    CONTENT_TYPES
        .iter()
        .find(|t| t.mime.eq_ignore_ascii_case(base))
        .copied()
        .ok_or_else(|| {
            semantic(
                "content-type",
                format!(
                    "`{}` is not allowed: send one of {}",
                    shown(given),
                    CONTENT_TYPES
                        .iter()
                        .map(|t| format!("`{}`", t.mime))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

/// `Patient/17` (or `http://host/fhir/Patient/17`) → 17.
fn reference(
    parameter: RawParameter,
    name: &'static str,
    resource: &str,
) -> Result<i64, ParameterError> {
    let text = parameter
        .value_reference
        .and_then(|r| r.reference)
        .or(parameter.value_string)
        .ok_or_else(|| {
            structure(
                name,
                format!("no `valueReference`: send `{{\"name\": \"{name}\", \"valueReference\": {{\"reference\": \"{resource}/ID\"}}}}`"),
            )
        })?;
    let article = if resource.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    };
    reference_id(&text, resource).ok_or_else(|| {
        semantic(
            name,
            format!(
                "`{}` is not {article} `{resource}/ID` reference: send the id that `GET /fhir/{resource}?…` gave",
                shown(&text)
            ),
        )
    })
}

/// The id of a `Resource/ID` reference (relative or absolute) when it names `resource`.
pub fn reference_id(text: &str, resource: &str) -> Option<i64> {
    let (kind, id) = text.trim().rsplit_once('/')?;
    let kind = kind.rsplit('/').next().unwrap_or(kind);
    (kind == resource).then(|| parse_id(id)).flatten()
}

/// A census row id as written in FHIR ids: decimal digits, positive.
pub fn parse_id(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|id| *id > 0)
}

/// `NNNNN-N`: digits, a dash and one check digit.
fn is_loinc(code: &str) -> bool {
    let Some((number, check)) = code.split_once('-') else {
        return false;
    };
    (1..=7).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
        && check.len() == 1
        && check.bytes().all(|b| b.is_ascii_digit())
}

/// Checks standard Base64 (with padding, no line breaks) chunk by chunk into a small buffer
/// and returns the decoded size; refuses a size over `max_size` before decoding anything.
pub fn check_base64(text: &str, max_size: usize) -> Result<usize, ParameterError> {
    use base64::Engine as _;
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(semantic(
            "payload",
            "empty: send the document's bytes, Base64-encoded",
        ));
    }
    let upper = bytes.len() / 4 * 3;
    let padding = bytes.iter().rev().take(2).filter(|b| **b == b'=').count();
    if upper.saturating_sub(padding) > max_size {
        return Err(ParameterError {
            parameter: "payload",
            message: format!(
                "the document is {} bytes, more than the {max_size} bytes allowed: send a smaller document (the limit is set by the ordobridge operator)",
                upper.saturating_sub(padding)
            ),
            kind: ErrorKind::TooLarge,
        });
    }
    if !bytes.len().is_multiple_of(4) {
        return Err(semantic(
            "payload",
            format!(
                "not Base64: its length ({}) is not a multiple of 4 (padding `=` missing, or line breaks): send standard Base64 with padding, on one line",
                bytes.len()
            ),
        ));
    }
    /// Characters decoded at once: a multiple of 4.
    const CHUNK: usize = 16 * 1024;
    let mut buffer = vec![0u8; CHUNK / 4 * 3];
    let mut size = 0;
    for (index, chunk) in bytes.chunks(CHUNK).enumerate() {
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(chunk, &mut buffer)
            .map_err(|e| {
                let at = match e {
                    base64::DecodeSliceError::DecodeError(
                        base64::DecodeError::InvalidByte(offset, _)
                        | base64::DecodeError::InvalidLastSymbol(offset, _),
                    ) => format!(" at character {}", index * CHUNK + offset + 1),
                    _ => String::new(),
                };
                semantic(
                    "payload",
                    format!("not Base64{at}: send standard Base64 (`A-Z a-z 0-9 + /`, `=` padding), on one line"),
                )
            })?;
        size += n;
    }
    Ok(size)
}

/// The default title: `FAMILY_GIVEN_BIRTHDATE_TYPE_TRANSACTION` (in the names, `_` for
/// spaces, dashes and apostrophes; empty parts left out).
pub fn default_title(
    family: &str,
    given: &str,
    birth_date: &str,
    document_type: &str,
    transaction_id: &str,
) -> String {
    let names = [family, given, birth_date].map(|part| part.trim().replace([' ', '-', '\''], "_"));
    names
        .iter()
        .map(String::as_str)
        .chain([document_type, transaction_id])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// A `SYSTEM|VALUE` search token: `(Some(system), value)`; `VALUE` alone or `|VALUE` give
/// `(None, value)` (any system).
pub fn search_token(text: &str) -> (Option<&str>, &str) {
    match text.split_once('|') {
        Some(("", value)) => (None, value),
        Some((system, value)) => (Some(system), value),
        None => (None, text),
    }
}

/// A FHIR OperationOutcome with one error issue; `expression` names the parameter.
pub fn operation_outcome(code: &str, diagnostics: &str, expression: Option<&str>) -> Value {
    let mut issue = json!({"severity": "error", "code": code, "diagnostics": diagnostics});
    if let Some(path) = expression {
        issue["expression"] = json!([path]);
    }
    json!({"resourceType": "OperationOutcome", "issue": [issue]})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn body(parameters: &[Value]) -> Vec<u8> {
        json!({"resourceType": "Parameters", "parameter": parameters})
            .to_string()
            .into_bytes()
    }

    fn subject() -> Value {
        json!({"name": "subject", "valueReference": {"reference": "Patient/17"}})
    }

    fn payload(text: &str) -> Value {
        json!({"name": "payload", "valueBase64Binary": text})
    }

    #[test]
    fn ok_minimal_takes_the_defaults() {
        let request = read_send_request(&body(&[subject(), payload("JVBERi0=")]), 100).unwrap();
        assert_eq!(request.subject, 17);
        assert_eq!(request.context, None);
        assert_eq!(request.content_type.mime, "application/pdf");
        assert_eq!(request.document_type, "11488-4");
        assert_eq!(request.document_type_display, "Consult note");
        assert_eq!(request.title, None);
        assert_eq!(request.sender_rpps, None);
        assert_eq!(request.size, 5);
    }

    #[test]
    fn ok_every_parameter() {
        let request = read_send_request(
            &body(&[
                subject(),
                json!({"name": "context", "valueReference": {"reference": "http://h/fhir/Encounter/4"}}),
                json!({"name": "content-type", "valueCode": "image/png"}),
                json!({"name": "document-type", "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "57833-6"}]}}),
                json!({"name": "document-title", "valueString": " Ordonnance "}),
                json!({"name": "sender-identifier", "valueIdentifier": {"value": "10003456789"}}),
                payload("iVBORw=="),
            ]),
            100,
        )
        .unwrap();
        assert_eq!(request.context, Some(4));
        assert_eq!(request.content_type.extension, "png");
        assert_eq!(request.document_type_display, "Prescription for medication");
        assert_eq!(request.title.as_deref(), Some("Ordonnance"));
        assert_eq!(request.sender_rpps.as_deref(), Some("10003456789"));
        assert_eq!(request.size, 4);
    }

    #[rstest]
    #[case::err_not_json(b"{".to_vec(), "Parameters", ErrorKind::Structure,
        "the body is not a FHIR Parameters resource in JSON (EOF while parsing an object at line 1 column 1): send `{\"resourceType\": \"Parameters\", \"parameter\": [...]}`")]
    #[case::err_not_parameters(br#"{"resourceType": "Bundle"}"#.to_vec(), "Parameters", ErrorKind::Structure,
        "`resourceType` is `Bundle`, not `Parameters`: send the document as FHIR Parameters")]
    #[case::err_unknown_parameter(body(&[json!({"name": "document-titel", "valueString": "x"})]), "Parameters", ErrorKind::Structure,
        "unknown parameter `document-titel`: expected `subject`, `context`, `content-type`, `document-type`, `document-title`, `sender-identifier`, `payload`")]
    #[case::err_twice(body(&[subject(), subject()]), "subject", ErrorKind::Structure,
        "given more than once: send it once")]
    #[case::err_no_subject(body(&[payload("AAAA")]), "subject", ErrorKind::Structure,
        "missing: send `{\"name\": \"subject\", \"valueReference\": {\"reference\": \"Patient/ID\"}}` with the id found by `GET /fhir/Patient?identifier=…`")]
    #[case::err_subject_not_patient(body(&[json!({"name": "subject", "valueReference": {"reference": "Encounter/3"}}), payload("AAAA")]), "subject", ErrorKind::Semantic,
        "`Encounter/3` is not a `Patient/ID` reference: send the id that `GET /fhir/Patient?…` gave")]
    #[case::err_context_not_encounter(body(&[subject(), json!({"name": "context", "valueReference": {"reference": "Encounter/x"}}), payload("AAAA")]), "context", ErrorKind::Semantic,
        "`Encounter/x` is not an `Encounter/ID` reference: send the id that `GET /fhir/Encounter?…` gave")]
    #[case::err_content_type(body(&[subject(), json!({"name": "content-type", "valueCode": "application/zip"}), payload("AAAA")]), "content-type", ErrorKind::Semantic,
        "`application/zip` is not allowed: send one of `application/pdf`, `image/jpeg`, `image/png`, `application/txt`")]
    #[case::err_document_type(body(&[subject(), json!({"name": "document-type", "valueCoding": {"code": "CR-HOSP"}}), payload("AAAA")]), "document-type", ErrorKind::Semantic,
        "`CR-HOSP` is not a LOINC code (digits, `-`, a check digit, such as `11488-4`)")]
    #[case::err_rpps(body(&[subject(), json!({"name": "sender-identifier", "valueIdentifier": {"value": "1234"}}), payload("AAAA")]), "sender-identifier", ErrorKind::Semantic,
        "`1234` is not an RPPS number (11 digits)")]
    #[case::err_no_payload(body(&[subject()]), "payload", ErrorKind::Structure,
        "missing: send the document Base64-encoded as `{\"name\": \"payload\", \"valueBase64Binary\": \"…\"}`")]
    #[case::err_payload_empty(body(&[subject(), payload("")]), "payload", ErrorKind::Semantic,
        "empty: send the document's bytes, Base64-encoded")]
    #[case::err_payload_alphabet(body(&[subject(), payload("AAAA*AAA")]), "payload", ErrorKind::Semantic,
        "not Base64 at character 5: send standard Base64 (`A-Z a-z 0-9 + /`, `=` padding), on one line")]
    #[case::err_payload_length(body(&[subject(), payload("AAAAA")]), "payload", ErrorKind::Semantic,
        "not Base64: its length (5) is not a multiple of 4 (padding `=` missing, or line breaks): send standard Base64 with padding, on one line")]
    #[case::err_payload_too_large(body(&[subject(), payload("AAAAAAAAAAAAAAAA")]), "payload", ErrorKind::TooLarge,
        "the document is 12 bytes, more than the 10 bytes allowed: send a smaller document (the limit is set by the ordobridge operator)")]
    fn err_send_request(
        #[case] body: Vec<u8>,
        #[case] parameter: &str,
        #[case] kind: ErrorKind,
        #[case] message: &str,
    ) {
        let error = read_send_request(&body, 10).unwrap_err();
        assert_eq!((error.parameter, error.kind), (parameter, kind));
        assert_eq!(error.message, message);
    }

    #[rstest]
    #[case::ok_relative("Patient/17", Some(17))]
    #[case::ok_absolute("https://ob.local/fhir/Patient/17", Some(17))]
    #[case::err_other_type("Encounter/17", None)]
    #[case::err_not_a_number("Patient/abc", None)]
    #[case::err_zero("Patient/0", None)]
    #[case::err_bare("17", None)]
    fn ok_reference_id(#[case] text: &str, #[case] expected: Option<i64>) {
        assert_eq!(reference_id(text, "Patient"), expected);
    }

    #[rstest]
    #[case::ok_system("urn:oid:1.2|123", (Some("urn:oid:1.2"), "123"))]
    #[case::ok_no_system("|123", (None, "123"))]
    #[case::ok_value_only("123", (None, "123"))]
    fn ok_search_token(#[case] text: &str, #[case] expected: (Option<&str>, &str)) {
        assert_eq!(search_token(text), expected);
    }

    #[test]
    fn ok_default_title() {
        assert_eq!(
            default_title("DE LA TOUR", "Marie-Anne", "19800102", "11488-4", "T1"),
            "DE_LA_TOUR_Marie_Anne_19800102_11488-4_T1"
        );
        assert_eq!(
            default_title("DUPONT", "", "", "11488-4", "T1"),
            "DUPONT_11488-4_T1"
        );
    }

    #[test]
    fn ok_base64_large_is_checked_by_chunks() {
        use base64::Engine as _;
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(check_base64(&text, 1 << 20).unwrap(), 100_000);
    }
}

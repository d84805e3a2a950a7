//! End to end: a mapping file on disk, a hand-written context (two prescription lines, a
//! four-step prednisone taper), and the exact ORM^O01 it must produce in ISO-8859-1.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use ordobridge::hl7::Message;
use ordobridge::mapping::Mapping;
use serde_json::{Value, json};

const ORM: &str = r#"# ORM^O01 for a Posos prescription, one ORC/RXO per line, one NTE per dosage step.
[message]
type = "ORM^O01^ORM_O01"
version = "2.5"
charset = "8859/1"

[[segment]]
id = "MSH"
fields = { "MSH-3" = "'ORDOBRIDGE'", "MSH-4" = "'POSOS'", "MSH-5" = "'DPI'",
           "MSH-6" = "'CH_EXEMPLE'", "MSH-7" = "message.now | datetime('%Y%m%d%H%M%S')",
           "MSH-10" = "message.control_id", "MSH-11" = "'P'" }

[[segment]]
id = "PID"
fields = { "PID-3.1" = { value = "census.ipp", required = true }, "PID-3.4" = "'CH_EXEMPLE'",
           "PID-3.5" = "'PI'", "PID-5.1" = "census.family | upper",
           "PID-5.2" = "census.given | upper", "PID-5.7" = "'L'",
           "PID-7" = "census.birth_date | date('%Y%m%d')", "PID-8" = "census.sex | map('sex')" }

[[segment]]
id = "PV1"
fields = { "PV1-2" = "'I'", "PV1-3.1" = "census.unit", "PV1-7.1" = "census.attending.rpps",
           "PV1-19" = "census.nda | default(prescription.patient.partner_id)" }

[[segment]]
for_each = "prescription.lines"       # binds `line` and `line_index`

  [[segment.segment]]
  id = "ORC"
  fields = { "ORC-1" = "'NW'", "ORC-2" = "prescription.id ~ '-' ~ line_index",
             "ORC-9" = "prescription.authored_at | datetime('%Y%m%d%H%M%S')",
             "ORC-12.1" = "prescription.prescriber.rpps", "ORC-12.9.1" = "'ASIP-SANTE-PS'",
             "ORC-12.9.2" = "'1.2.250.1.71.4.2.1'", "ORC-12.9.3" = "'ISO'",
             "ORC-12.10" = "'L'", "ORC-12.13" = "'RPPS'" }

  [[segment.segment]]
  id = "RXO"
  fields = { "RXO-1.1" = { value = "line.medication.code", required = true },
             "RXO-1.2" = "line.medication.display | truncate(199)",
             "RXO-1.3" = "line.medication.system | map('code_system')" }

  [[segment.segment]]
  for_each = "line.dosages"           # binds `dosage` and `dosage_index`

    [[segment.segment.segment]]
    id = "NTE"
    when = "dosage.text"
    fields = { "NTE-1" = "dosage_index", "NTE-2" = "'P'", "NTE-3" = "dosage.text" }

[maps.sex]
F = "F"
M = "M"
default = "U"

[maps.code_system]
"http://snomed.info/sct" = "SCT"
"urn:oid:1.2.250.1.213.2.3.1" = "CIP"
"#;

fn context() -> Value {
    json!({
        "message": {"control_id": "OB-000042", "now": "2024-03-31T01:15:00Z"},
        "census": {
            "ipp": "IPP001", "nda": "NDA777", "family": "Lefèvre", "given": "Hélène",
            "birth_date": "1948-05-12", "sex": "F", "unit": "CARDIO",
            "attending": {"rpps": "10000000002"}
        },
        "prescription": {
            "id": "RX-2024-001",
            "authored_at": "2024-03-30T16:45:00Z",
            "patient": {"partner_id": "IPP001"},
            "prescriber": {"rpps": "10000000001"},
            "document": {"data_base64": "JVBERi0xLjQK"},
            "lines": [
                {
                    "medication": {"code": "3400930000001", "display": "PREDNISONE 20 mg cp",
                                   "system": "urn:oid:1.2.250.1.213.2.3.1"},
                    "dosages": [
                        {"text": "60 mg/j pendant 3 jours"},
                        {"text": "40 mg/j pendant 3 jours"},
                        {"text": "20 mg/j pendant 3 jours"},
                        {"text": "10 mg/j | 3 jours ~ puis arrêt (note^1 & C\\R)"}
                    ]
                },
                {
                    "medication": {"code": "3400935000002", "display": "ÉSOMÉPRAZOLE 20 mg gél",
                                   "system": "urn:oid:1.2.250.1.213.2.3.1"},
                    "dosages": [{"text": "1 gél le matin"}]
                }
            ]
        }
    })
}

/// MSH-7 is 01:15 UTC on the night summer time starts: 03:15 in Paris. ORC-9 is the day
/// before, still winter time (+01:00).
const EXPECTED: &str = "MSH|^~\\&|ORDOBRIDGE|POSOS|DPI|CH_EXEMPLE|20240331031500||ORM^O01^ORM_O01|OB-000042|P|2.5||||||8859/1\r\
    PID|||IPP001^^^CH_EXEMPLE^PI||LEFÈVRE^HÉLÈNE^^^^^L||19480512|F\r\
    PV1||I|CARDIO||||10000000002||||||||||||NDA777\r\
    ORC|NW|RX-2024-001-1|||||||20240330174500|||10000000001^^^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS\r\
    RXO|3400930000001^PREDNISONE 20 mg cp^CIP\r\
    NTE|1|P|60 mg/j pendant 3 jours\r\
    NTE|2|P|40 mg/j pendant 3 jours\r\
    NTE|3|P|20 mg/j pendant 3 jours\r\
    NTE|4|P|10 mg/j \\F\\ 3 jours \\R\\ puis arrêt (note\\S\\1 \\T\\ C\\E\\R)\r\
    ORC|NW|RX-2024-001-2|||||||20240330174500|||10000000001^^^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS\r\
    RXO|3400935000002^ÉSOMÉPRAZOLE 20 mg gél^CIP\r\
    NTE|1|P|1 gél le matin\r";

fn load() -> Mapping {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orm-o01.toml");
    std::fs::write(&path, ORM).unwrap();
    ordobridge::config::read_mapping(&path).unwrap()
}

#[test]
fn ok_orm_o01_end_to_end() {
    let mapping = load();
    assert_eq!(mapping.message_type(), "ORM^O01^ORM_O01");
    let out = mapping.apply(&context()).unwrap();
    let expected = encoding_rs::WINDOWS_1252.encode(EXPECTED).0;
    assert_eq!(
        out,
        expected.as_ref(),
        "\n got: {}\nwant: {EXPECTED}",
        encoding_rs::WINDOWS_1252.decode(&out).0
    );
    // Latin-1 on the wire: `È` is one byte, 0xC8.
    assert!(out.windows(2).any(|w| w == b"F\xC8"));

    // Our own parser reads it back, escapes undone.
    let parsed = Message::parse(&out).unwrap();
    assert_eq!(
        parsed.query("NTE[4]-3").unwrap().as_deref(),
        Some("10 mg/j | 3 jours ~ puis arrêt (note^1 & C\\R)")
    );
    assert_eq!(
        parsed.query("RXO[2]-1.2").unwrap().as_deref(),
        Some("ÉSOMÉPRAZOLE 20 mg gél")
    );
}

#[test]
fn ok_same_input_same_bytes() {
    let mapping = load();
    assert_eq!(
        mapping.apply(&context()).unwrap(),
        mapping.apply(&context()).unwrap()
    );
}

#[test]
fn ok_default_and_map_default() {
    let mut context = context();
    context["census"]["nda"] = json!(null);
    context["census"]["sex"] = json!("I");
    let out = load().apply(&context).unwrap();
    let text = encoding_rs::WINDOWS_1252.decode(&out).0.into_owned();
    assert!(text.contains("||19480512|U\r"), "{text}");
    assert!(text.contains("||||||||||||IPP001\r"), "{text}");
}

#[test]
fn err_required_names_field_and_line() {
    let mut context = context();
    context["prescription"]["lines"][1]["medication"]["code"] = json!("");
    assert_eq!(
        load().apply(&context).unwrap_err().to_string(),
        "`RXO-1.1` in prescription.lines[2]: required value is missing: `line.medication.code` is empty"
    );
}

#[test]
fn err_load_reports_every_problem_with_its_line() {
    let broken = ORM
        .replace("map('sex')", "map('gender')")
        .replace("\"NTE-2\"", "\"NTE-9\"")
        .replace("truncate(199)", "trunc(199)");
    let err = Mapping::load(&broken, Path::new("mappings/orm-o01.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "mappings/orm-o01.toml:18:70: `segment[2].fields.PID-8`: unknown map `gender` at character 18: the file defines `sex`, `code_system`\n\
         mappings/orm-o01.toml:39:26: `segment[4].segment[2].fields.RXO-1.2`: unknown function `trunc` at character 27: expected one of `count`, `date`, `datetime`, `default`, `first`, `join`, `lower`, `map`, `replace`, `trim`, `truncate`, `upper`\n\
         mappings/orm-o01.toml:48:42: `segment[4].segment[3].segment[1].fields.NTE-9`: `NTE-9` is out of range: `NTE` has 4 fields"
    );
}

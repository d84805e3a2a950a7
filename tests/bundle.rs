//! The Posos bundle reader from the outside: the shipped samples, every spelling and reference
//! style seen in the wild, dosage ordering and Timing, the wrapper, the v1 `drugs` body, the
//! simulator's bundle, errors with their pinned JSON paths, and arbitrary input.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use base64::Engine as _;
use ordobridge::posos::bundle::{BundleError, Prescription, read_bundle, read_value};
use ordobridge::posos::simulator::{Session, SessionKind, SessionUser, prescription_bundle};
use proptest::prelude::*;
use rstest::rstest;
use serde_json::{Value, json};

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/samples/posos/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn read(body: &Value) -> Result<Prescription, BundleError> {
    read_bundle(&serde_json::to_vec(body).unwrap())
}

/// The model as the mapping files see it.
fn model(body: &Value) -> Value {
    serde_json::to_value(read(body).unwrap()).unwrap()
}

fn at<'a>(model: &'a Value, pointer: &str) -> &'a Value {
    model
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in {model:#}"))
}

fn entry(url: &str, resource: Value) -> Value {
    json!({ "fullUrl": url, "resource": resource })
}

fn bundle(entries: Vec<Value>) -> Value {
    json!({ "resourceType": "Bundle", "type": "collection", "entry": entries })
}

/// A MedicationRequest with a coded medication, plus `extra` members.
fn request(extra: Value) -> Value {
    let mut base = json!({
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": { "coding": [{ "system": "urn:oid:1.2.250.1.213.2.3.2", "code": "3400930000011" }] }
    });
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

/// A bundle whose only MedicationRequest has these dosage instructions.
fn with_dosages(dosages: Value) -> Value {
    bundle(vec![entry(
        "urn:uuid:r",
        request(json!({ "dosageInstruction": dosages })),
    )])
}

// ---------------------------------------------------------------------------------------------
// Samples

#[rstest]
#[case::ok_prednisone("two-drugs-prednisone-taper.json", &[
    ("/id", json!("rg-0001")),
    ("/authored_at", json!("2026-01-05T10:00:00+01:00")),
    ("/patient/partner_id", json!("IPP000042")),
    ("/patient/family", json!("MARTIN")),
    ("/patient/given", json!("Claire Anne")),
    ("/patient/sex", json!("F")),
    ("/prescriber/rpps", json!("10001234567")),
    ("/prescriber/family", json!("DURAND")),
    ("/lines/0/medication/code", json!("3400930000011")),
    ("/lines/0/medication/kind", json!("cip")),
    ("/lines/0/medication/form/text", json!("comprimé")),
    ("/lines/0/dosages/0/dose/value", json!(2)),
    ("/lines/0/dosages/1/dose/value", json!(1.5)),
    ("/lines/0/dosages/3/dose/value", json!(0.5)),
    ("/lines/0/dosages/3/timing/bounds_duration", json!({ "value": 5, "unit": "jours", "code": "d" })),
    ("/lines/0/dosages/2/route/code", json!("20053000")),
    ("/lines/1/medication/ucd", json!("3400890000022")),
    ("/lines/1/dosages/0/timing/when", json!(["ACM"])),
    ("/document", json!(null)),
])]
#[case::ok_spellings("identifier-code-spellings.json", &[
    ("/patient/partner_id", json!("IPP000042")),
    ("/prescriber/rpps", json!("10001234567")),
    ("/lines/0/medication/code", json!("3400930000011")),
])]
#[case::ok_pdf("with-pdf.json", &[
    ("/lines", json!([])),
    ("/patient/partner_id", json!("IPP000077")),
    ("/document/content_type", json!("application/pdf")),
    ("/document/title", json!("ordonnance.pdf")),
    ("/document/created", json!("2026-01-06T09:14:00+01:00")),
    ("/document/url", json!(null)),
])]
#[case::ok_observations("with-observations.json", &[
    ("/id", json!("mr-31")),
    ("/patient/partner_id", json!("IPP000103")),
    ("/prescriber/rpps", json!(null)),
    ("/lines/0/medication/cis", json!("60000033")),
    ("/lines/0/medication/form/code", json!("10210000")),
    ("/lines/0/dosages/0/timing/time_of_day", json!(["08:00:00", "20:00:00"])),
    ("/observations/0/code/code", json!("29463-7")),
    ("/observations/0/value", json!(62.5)),
    ("/observations/0/unit", json!("kg")),
    ("/observations/1/code/code", json!("2164-2")),
    ("/observations/1/value", json!(45)),
    ("/observations/1/unit", json!("mL/min")),
])]
#[case::ok_wrapped("fhir-bundle-wrapped.json", &[
    ("/id", json!("rg-9")),
    ("/patient/partner_id", json!("IPP000009")),
    ("/prescriber/rpps", json!("10009999999")),
    ("/lines/0/id", json!("line-1")),
    ("/lines/0/dosages/0/as_needed", json!(true)),
    ("/lines/0/dosages/0/dose", json!({ "value": null, "low": 1, "high": 2, "unit": "comprimé", "code": null })),
    ("/lines/0/dosages/0/timing/frequency_max", json!(3)),
    ("/lines/0/dosages/0/timing/count", json!(10)),
    ("/lines/1/medication/display", json!("Vitamine D3 100 000 UI, ampoule buvable")),
    ("/lines/1/dosages/0/timing/day_of_week", json!(["mon"])),
    ("/lines/1/dosages/0/timing/period_unit", json!("wk")),
])]
#[case::ok_v1("v1-drugs.json", &[
    ("/id", json!("v1-0001")),
    ("/patient/partner_id", json!("IPP000055")),
    ("/prescriber/rpps", json!("10005555555")),
    ("/lines/0/medication/cip13", json!("3400930000105")),
    ("/lines/0/dosages/0/text", json!("1 comprimé 3 fois par jour si douleur")),
    ("/lines/1/medication/kind", json!("ucd")),
    ("/lines/1/dosages/1/sequence", json!(2)),
    ("/lines/2/medication/display", json!("Sérum physiologique, unidose")),
    ("/lines/2/dosages", json!([])),
])]
fn samples(#[case] file: &str, #[case] expected: &[(&str, Value)]) {
    let prescription = read_bundle(&sample(file)).unwrap();
    let model = serde_json::to_value(&prescription).unwrap();
    for (pointer, value) in expected {
        assert_eq!(at(&model, pointer), value, "{file} {pointer}");
    }
}

#[test]
fn ok_shape_is_stable() {
    // The contract with the mapping-file authors: every key, always present.
    let model =
        serde_json::to_value(read_bundle(&sample("two-drugs-prednisone-taper.json")).unwrap())
            .unwrap();
    let keys = |pointer: &str| -> Vec<String> {
        at(&model, pointer)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let sorted = |mut names: Vec<&str>| {
        names.sort_unstable();
        names.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let cases: [(&str, Vec<&str>); 8] = [
        (
            "",
            vec![
                "id",
                "authored_at",
                "patient",
                "prescriber",
                "lines",
                "observations",
                "document",
            ],
        ),
        (
            "/patient",
            vec![
                "partner_id",
                "family",
                "given",
                "birth_date",
                "gender",
                "sex",
                "names",
                "identifiers",
            ],
        ),
        (
            "/prescriber",
            vec!["rpps", "family", "given", "names", "identifiers"],
        ),
        (
            "/lines/0",
            vec![
                "id",
                "status",
                "authored_at",
                "medication",
                "dosages",
                "substitution_allowed",
                "note",
            ],
        ),
        (
            "/lines/0/medication",
            vec![
                "code", "system", "kind", "display", "text", "cip13", "ucd", "cis", "form",
                "codings",
            ],
        ),
        (
            "/lines/0/dosages/0",
            vec![
                "sequence",
                "text",
                "patient_instruction",
                "timing",
                "dose",
                "route",
                "as_needed",
                "as_needed_reason",
            ],
        ),
        (
            "/lines/0/dosages/0/timing",
            vec![
                "frequency",
                "frequency_max",
                "period",
                "period_max",
                "period_unit",
                "when",
                "time_of_day",
                "day_of_week",
                "count",
                "count_max",
                "duration",
                "duration_unit",
                "bounds_duration",
                "bounds_period",
                "code",
            ],
        ),
        (
            "/lines/0/dosages/0/dose",
            vec!["value", "low", "high", "unit", "code"],
        ),
    ];
    for (pointer, expected) in cases {
        let mut got = keys(pointer);
        got.sort_unstable();
        assert_eq!(got, sorted(expected), "keys of `{pointer}`");
    }
    let pdf = serde_json::to_value(read_bundle(&sample("with-pdf.json")).unwrap()).unwrap();
    let mut got: Vec<&String> = at(&pdf, "/document").as_object().unwrap().keys().collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "content_type",
            "created",
            "data_base64",
            "description",
            "id",
            "title",
            "url"
        ]
    );
    let obs =
        serde_json::to_value(read_bundle(&sample("with-observations.json")).unwrap()).unwrap();
    let mut got: Vec<&String> = at(&obs, "/observations/0")
        .as_object()
        .unwrap()
        .keys()
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "code",
            "effective",
            "id",
            "unit",
            "unit_code",
            "value",
            "value_text"
        ]
    );
}

#[test]
fn ok_prednisone_steps_in_sequence() {
    let prescription = read_bundle(&sample("two-drugs-prednisone-taper.json")).unwrap();
    let steps: Vec<(Option<i64>, String)> = prescription.lines[0]
        .dosages
        .iter()
        .map(|d| {
            (
                d.sequence,
                d.dose.as_ref().unwrap().value.as_ref().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (Some(1), "2".to_owned()),
            (Some(2), "1.5".to_owned()),
            (Some(3), "1".to_owned()),
            (Some(4), "0.5".to_owned())
        ]
    );
}

#[test]
fn ok_pdf_is_a_pdf() {
    let prescription = read_bundle(&sample("with-pdf.json")).unwrap();
    let data = prescription.document.unwrap().data_base64.unwrap();
    let pdf = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    assert!(pdf.starts_with(b"%PDF-1.4\n"));
    assert!(pdf.ends_with(b"%%EOF\n"));
}

// ---------------------------------------------------------------------------------------------
// Spellings

#[test]
fn ok_both_spellings_read_the_same() {
    let coded = read_bundle(&sample("two-drugs-prednisone-taper.json")).unwrap();
    let standard = read_bundle(&sample("identifier-code-spellings.json")).unwrap();
    assert_eq!(coded, standard);
}

#[rstest]
#[case::ok_patient_identifier("identifier", "code")]
#[case::ok_patient_identify("identify", "code")]
#[case::ok_coded("identifier", "coded")]
#[case::ok_both_wild("identify", "coded")]
fn spellings(#[case] identifier: &str, #[case] code: &str) {
    let body = bundle(vec![
        entry(
            "urn:uuid:p",
            json!({ "resourceType": "Patient", identifier: [{ "system": "id://partner", "value": "IPP1" }] }),
        ),
        entry(
            "urn:uuid:d",
            json!({ "resourceType": "Practitioner",
            identifier: [{ "type": { "coding": [{ code: "RPPS" }] }, "value": "810001234567" }] }),
        ),
        entry(
            "urn:uuid:m",
            json!({ "resourceType": "Medication", code: { "coding": [{ "system": "urn:oid:1.2.250.1.213.2.61", code: "3400890000001" }] } }),
        ),
        entry(
            "urn:uuid:r",
            json!({ "resourceType": "MedicationRequest", "subject": { "reference": "urn:uuid:p" },
            "requester": { "reference": "urn:uuid:d" }, "medicationReference": { "reference": "urn:uuid:m" },
            "dosageInstruction": [{ "doseAndRate": [{ "doseQuantity": { "value": 1, code: "{tbl}" } }],
                "timing": { code: { "coding": [{ code: "BID" }] } } }] }),
        ),
        entry(
            "urn:uuid:o",
            json!({ "resourceType": "Observation", code: { "coding": [{ code: "29463-7" }] },
            "valueQuantity": { "value": 70, code: "kg" } }),
        ),
    ]);
    let model = model(&body);
    assert_eq!(at(&model, "/patient/partner_id"), "IPP1");
    assert_eq!(at(&model, "/prescriber/rpps"), "10001234567");
    assert_eq!(
        at(&model, "/prescriber/identifiers/0/value"),
        "810001234567"
    );
    assert_eq!(at(&model, "/lines/0/medication/ucd"), "3400890000001");
    assert_eq!(at(&model, "/lines/0/dosages/0/dose/unit"), "{tbl}");
    assert_eq!(at(&model, "/lines/0/dosages/0/timing/code/code"), "BID");
    assert_eq!(at(&model, "/observations/0/code/code"), "29463-7");
    assert_eq!(at(&model, "/observations/0/unit_code"), "kg");
}

// ---------------------------------------------------------------------------------------------
// References

#[rstest]
#[case::ok_urn_uuid("urn:uuid:7f0c", "urn:uuid:7f0c", None)]
#[case::ok_type_id("http://posos.example/fhir/Medication/m1", "Medication/m1", None)]
#[case::ok_absolute(
    "http://posos.example/fhir/Medication/m1",
    "http://posos.example/fhir/Medication/m1",
    None
)]
#[case::ok_other_base(
    "urn:uuid:7f0c",
    "https://elsewhere/fhir/Medication/m1/_history/3",
    None
)]
#[case::ok_urn_naming_id("urn:uuid:7f0c", "urn:uuid:m1", None)]
#[case::ok_contained("urn:uuid:unused", "#c1", Some("c1"))]
fn references(#[case] full_url: &str, #[case] reference: &str, #[case] contained: Option<&str>) {
    let medication = |id: &str, code: &str| {
        json!({ "resourceType": "Medication", "id": id,
                "code": { "coding": [{ "system": "urn:oid:1.2.250.1.213.2.3.1", "code": code }] } })
    };
    let mut line = request(json!({ "medicationReference": { "reference": reference } }));
    if let Some(id) = contained {
        line["contained"] = json!([medication(id, "CONTAINED")]);
    }
    line.as_object_mut()
        .unwrap()
        .remove("medicationCodeableConcept");
    let expected = if contained.is_some() {
        "CONTAINED"
    } else {
        "ENTRY"
    };
    let body = bundle(vec![
        entry(full_url, medication("m1", "ENTRY")),
        entry("urn:uuid:r", line),
    ]);
    assert_eq!(at(&model(&body), "/lines/0/medication/cis"), expected);
}

#[test]
fn ok_r5_codeable_reference_and_role() {
    let body = bundle(vec![
        entry(
            "urn:uuid:m",
            json!({ "resourceType": "Medication", "code": { "text": "X 1 mg" } }),
        ),
        entry(
            "urn:uuid:d",
            json!({ "resourceType": "Practitioner", "identifier": [{ "system": "urn:oid:1.2.250.1.71.4.2.1", "value": "10000000001" }] }),
        ),
        entry(
            "urn:uuid:role",
            json!({ "resourceType": "PractitionerRole", "practitioner": { "reference": "urn:uuid:d" } }),
        ),
        entry(
            "urn:uuid:r",
            json!({ "resourceType": "MedicationRequest", "medication": { "reference": { "reference": "urn:uuid:m" } },
            "requester": { "reference": "urn:uuid:role" } }),
        ),
    ]);
    let model = model(&body);
    assert_eq!(at(&model, "/lines/0/medication/display"), "X 1 mg");
    assert_eq!(at(&model, "/prescriber/rpps"), "10000000001");
}

#[test]
fn ok_lines_follow_action_order_then_bundle_order() {
    let line = |id: &str| request(json!({ "id": id }));
    let body = bundle(vec![
        entry("urn:uuid:a", line("a")),
        entry("urn:uuid:b", line("b")),
        entry("urn:uuid:c", line("c")),
        entry(
            "urn:uuid:g",
            json!({ "resourceType": "RequestGroup", "action": [
            { "resource": { "reference": "urn:uuid:c" } },
            { "title": "group", "action": [{ "resource": { "reference": "MedicationRequest/a" } }] },
            { "resource": { "reference": "urn:uuid:c" } }
        ] }),
        ),
    ]);
    let prescription = read(&body).unwrap();
    let ids: Vec<_> = prescription
        .lines
        .iter()
        .map(|l| l.id.as_deref().unwrap())
        .collect();
    assert_eq!(ids, ["c", "a", "b"]);
    assert_eq!(
        prescription.id.as_deref(),
        Some("g"),
        "the RequestGroup fullUrl names the prescription"
    );
}

// ---------------------------------------------------------------------------------------------
// Dosage

#[rstest]
#[case::ok_in_order(json!([1, 2, 3]), "abc")]
#[case::ok_reversed(json!([3, 2, 1]), "cba")]
#[case::ok_shuffled(json!([2, 3, 1]), "cab")]
#[case::ok_none_keep_array_order(json!([null, null, null]), "abc")]
#[case::ok_missing_go_last(json!([null, 2, 1]), "cba")]
#[case::ok_equal_keep_order(json!([1, 1, 0]), "cab")]
#[case::ok_text_numbers(json!(["10", "9", 8]), "cba")]
fn dosage_sequence(#[case] sequences: Value, #[case] expected: &str) {
    let dosages: Vec<Value> = sequences
        .as_array()
        .unwrap()
        .iter()
        .zip(["a", "b", "c"])
        .map(|(sequence, text)| {
            let mut dosage = json!({ "text": text });
            if !sequence.is_null() {
                dosage["sequence"] = sequence.clone();
            }
            dosage
        })
        .collect();
    let prescription = read(&with_dosages(json!(dosages))).unwrap();
    let order: String = prescription.lines[0]
        .dosages
        .iter()
        .map(|d| d.text.as_deref().unwrap())
        .collect();
    assert_eq!(order, expected);
}

#[rstest]
#[case::ok_frequency(json!({ "repeat": { "frequency": 3 } }), "/frequency", json!(3))]
#[case::ok_frequency_text(json!({ "repeat": { "frequency": "3" } }), "/frequency", json!(3))]
#[case::ok_frequency_max(json!({ "repeat": { "frequency": 1, "frequencyMax": 2 } }), "/frequency_max", json!(2))]
#[case::ok_period(json!({ "repeat": { "period": 0.5 } }), "/period", json!(0.5))]
#[case::ok_period_comma(json!({ "repeat": { "period": "0,5" } }), "/period", json!(0.5))]
#[case::ok_period_unit(json!({ "repeat": { "periodUnit": "h" } }), "/period_unit", json!("h"))]
#[case::ok_when(json!({ "repeat": { "when": ["MORN", "EVE"] } }), "/when", json!(["MORN", "EVE"]))]
#[case::ok_when_single(json!({ "repeat": { "when": "HS" } }), "/when", json!(["HS"]))]
#[case::ok_bounds_duration(json!({ "repeat": { "boundsDuration": { "value": 10, "unit": "jours", "code": "d" } } }), "/bounds_duration", json!({ "value": 10, "unit": "jours", "code": "d" }))]
#[case::ok_bounds_period(json!({ "repeat": { "boundsPeriod": { "start": "2026-01-01", "end": "2026-01-10" } } }), "/bounds_period", json!({ "start": "2026-01-01", "end": "2026-01-10" }))]
#[case::ok_count(json!({ "repeat": { "count": 6 } }), "/count", json!(6))]
#[case::ok_count_float(json!({ "repeat": { "count": 6.0 } }), "/count", json!(6))]
#[case::ok_time_of_day(json!({ "repeat": { "timeOfDay": ["08:00:00"] } }), "/time_of_day", json!(["08:00:00"]))]
#[case::ok_day_of_week(json!({ "repeat": { "dayOfWeek": ["mon", "thu"] } }), "/day_of_week", json!(["mon", "thu"]))]
#[case::ok_duration(json!({ "repeat": { "duration": 30, "durationUnit": "min" } }), "/duration_unit", json!("min"))]
#[case::ok_code(json!({ "code": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", "code": "BID" }] } }), "/code/code", json!("BID"))]
#[case::ok_flat_repeat(json!({ "frequency": 2, "periodUnit": "d" }), "/frequency", json!(2))]
#[case::ok_absent_field(json!({ "repeat": {} }), "/frequency", json!(null))]
fn timing_fields(#[case] timing: Value, #[case] pointer: &str, #[case] expected: Value) {
    let model = model(&with_dosages(json!([{ "timing": timing }])));
    assert_eq!(
        at(&model, &format!("/lines/0/dosages/0/timing{pointer}")),
        &expected
    );
}

#[rstest]
#[case::ok_quantity(json!({ "doseAndRate": [{ "doseQuantity": { "value": 2, "unit": "comprimés", "code": "{tbl}" } }] }), "/dose", json!({ "value": 2, "low": null, "high": null, "unit": "comprimés", "code": "{tbl}" }))]
#[case::ok_range(json!({ "doseAndRate": [{ "doseRange": { "low": { "value": 1, "unit": "mg" }, "high": { "value": 2 } } }] }), "/dose", json!({ "value": null, "low": 1, "high": 2, "unit": "mg", "code": null }))]
#[case::ok_second_rate(json!({ "doseAndRate": [{ "type": { "text": "ordered" } }, { "doseQuantity": { "value": 5 } }] }), "/dose/value", json!(5))]
#[case::ok_stu3_dose(json!({ "doseQuantity": { "value": 3, "unit": "mL" } }), "/dose/unit", json!("mL"))]
#[case::ok_unit_from_code(json!({ "doseAndRate": [{ "doseQuantity": { "value": 1, "code": "mg" } }] }), "/dose/unit", json!("mg"))]
#[case::ok_no_dose(json!({ "text": "x" }), "/dose", json!(null))]
#[case::ok_route(json!({ "route": { "coding": [{ "system": "http://standardterms.edqm.eu", "code": "20053000", "display": "Oral use" }], "text": "orale" } }), "/route", json!({ "code": "20053000", "system": "http://standardterms.edqm.eu", "display": "Oral use", "text": "orale" }))]
#[case::ok_as_needed(json!({ "asNeededBoolean": true }), "/as_needed", json!(true))]
#[case::ok_as_needed_text(json!({ "asNeededBoolean": "true" }), "/as_needed", json!(true))]
#[case::ok_as_needed_reason(json!({ "asNeededCodeableConcept": { "text": "douleur" } }), "/as_needed_reason", json!("douleur"))]
#[case::ok_r5_as_needed_for(json!({ "asNeededFor": [{ "text": "fièvre" }] }), "/as_needed_reason", json!("fièvre"))]
#[case::ok_not_as_needed(json!({}), "/as_needed", json!(false))]
#[case::ok_patient_instruction(json!({ "patientInstruction": "au cours du repas" }), "/patient_instruction", json!("au cours du repas"))]
#[case::ok_empty_text(json!({ "text": "  " }), "/text", json!(null))]
fn dosage_fields(#[case] dosage: Value, #[case] pointer: &str, #[case] expected: Value) {
    let model = model(&with_dosages(json!([dosage])));
    assert_eq!(
        at(&model, &format!("/lines/0/dosages/0{pointer}")),
        &expected
    );
}

// ---------------------------------------------------------------------------------------------
// Wrapper and v1

#[test]
fn ok_wrapper_reads_as_bare() {
    let bare: Value = serde_json::from_slice(&sample("two-drugs-prednisone-taper.json")).unwrap();
    let wrapped = json!({ "fhirBundle": bare.clone() });
    assert_eq!(read(&wrapped).unwrap(), read(&bare).unwrap());
    assert_eq!(read_value(&wrapped).unwrap(), read(&bare).unwrap());
}

#[rstest]
#[case::ok_beside_wrapper(json!({ "fhirBundle": { "resourceType": "Bundle", "entry": [] }, "drugs": ["A"] }), "A")]
#[case::ok_inside_bundle(json!({ "resourceType": "Bundle", "entry": [], "drugs": [{ "label": "B" }] }), "B")]
#[case::ok_ignored_with_requests(json!({ "resourceType": "Bundle", "drugs": ["C"],
    "entry": [{ "resource": { "resourceType": "MedicationRequest", "medicationCodeableConcept": { "text": "FHIR" } } }] }), "FHIR")]
#[case::ok_code_and_system(json!({ "drugs": [{ "code": "3400930000011", "system": "urn:oid:1.2.250.1.213.2.3.2", "posologie": "1/j" }] }), "3400930000011")]
#[case::ok_code_by_shape(json!({ "drugs": [{ "code": "3400890000001" }] }), "3400890000001")]
fn v1_drugs(#[case] body: Value, #[case] first: &str) {
    let model = model(&body);
    let medication = at(&model, "/lines/0/medication");
    let shown = medication["display"]
        .as_str()
        .or(medication["code"].as_str());
    assert_eq!(shown, Some(first));
}

// ---------------------------------------------------------------------------------------------
// The simulator's bundle

#[test]
fn ok_simulator_bundle() {
    let session = Session {
        user: SessionUser {
            first_name: "Jeanne".into(),
            last_name: "Fictive".into(),
            rpps: "10001234567".into(),
        },
        kind: SessionKind::Scan {
            facility_slug: "chu-demo".into(),
            patient_id: "IPP42".into(),
        },
    };
    let bundle = prescription_bundle(&session, "2026-01-01T00:00:00Z");
    let prescription = read(&bundle).unwrap();
    assert_eq!(prescription.patient.partner_id.as_deref(), Some("IPP42"));
    assert_eq!(prescription.prescriber.rpps.as_deref(), Some("10001234567"));
    assert_eq!(prescription.prescriber.family.as_deref(), Some("Fictive"));
    assert_eq!(prescription.prescriber.given.as_deref(), Some("Jeanne"));
    assert_eq!(
        prescription.authored_at.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    assert!(
        prescription.id.is_some(),
        "the RequestGroup fullUrl gives the id"
    );
    let lines: Vec<_> = prescription
        .lines
        .iter()
        .map(|l| (l.medication.code.as_deref().unwrap(), l.dosages.len()))
        .collect();
    assert_eq!(lines, [("N02BE01", 1), ("A02BC01", 1)]);
    let model = serde_json::to_value(&prescription).unwrap();
    assert_eq!(at(&model, "/lines/0/medication/kind"), "atc");
    assert_eq!(at(&model, "/lines/0/medication/form/text"), "comprimé");
    assert_eq!(at(&model, "/lines/0/dosages/0/timing/frequency"), 3);
    assert_eq!(
        at(&model, "/lines/0/dosages/0/timing/bounds_duration/value"),
        5
    );
    assert_eq!(at(&model, "/lines/1/dosages/0/dose/unit"), "gélule");
    assert_eq!(at(&model, "/lines/1/dosages/0/route/display"), "Oral use");
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Three resources before the MedicationRequest, so that it is `entry[3]`.
fn fourth(resource: Value) -> Value {
    bundle(vec![
        entry("urn:uuid:p", json!({ "resourceType": "Patient" })),
        entry("urn:uuid:d", json!({ "resourceType": "Practitioner" })),
        entry("urn:uuid:m", json!({ "resourceType": "Medication" })),
        entry("urn:uuid:r", resource),
    ])
}

#[rstest]
#[case::err_frequency_word(
    fourth(request(json!({ "dosageInstruction": [{ "timing": { "repeat": { "frequency": "deux" } } }] }))),
    "entry[3].resource.dosageInstruction[0].timing.repeat.frequency",
    "entry[3].resource.dosageInstruction[0].timing.repeat.frequency: expected a number, found \"deux\""
)]
#[case::err_frequency_fraction(
    fourth(request(json!({ "dosageInstruction": [{}, { "timing": { "repeat": { "frequency": 1.5 } } }] }))),
    "entry[3].resource.dosageInstruction[1].timing.repeat.frequency",
    "entry[3].resource.dosageInstruction[1].timing.repeat.frequency: expected a whole number, found 1.5"
)]
#[case::err_sequence(
    fourth(request(json!({ "dosageInstruction": [{ "sequence": "first" }] }))),
    "entry[3].resource.dosageInstruction[0].sequence",
    "entry[3].resource.dosageInstruction[0].sequence: expected a number, found \"first\""
)]
#[case::err_text_object(
    fourth(request(json!({ "dosageInstruction": [{ "text": { "fr": "x" } }] }))),
    "entry[3].resource.dosageInstruction[0].text",
    "entry[3].resource.dosageInstruction[0].text: expected a string, found an object"
)]
#[case::err_dose_value(
    fourth(request(json!({ "dosageInstruction": [{ "doseAndRate": [{ "doseQuantity": { "value": "un" } }] }] }))),
    "entry[3].resource.dosageInstruction[0].doseAndRate[0].doseQuantity.value",
    "entry[3].resource.dosageInstruction[0].doseAndRate[0].doseQuantity.value: expected a number, found \"un\""
)]
#[case::err_as_needed(
    fourth(request(json!({ "dosageInstruction": [{ "asNeededBoolean": "oui" }] }))),
    "entry[3].resource.dosageInstruction[0].asNeededBoolean",
    "entry[3].resource.dosageInstruction[0].asNeededBoolean: expected true or false, found \"oui\""
)]
#[case::err_dangling_medication(
    fourth(request(json!({ "medicationCodeableConcept": null, "medicationReference": { "reference": "urn:uuid:nope" } }))),
    "entry[3].resource.medicationReference.reference",
    "entry[3].resource.medicationReference.reference: `urn:uuid:nope` refers to no resource in the bundle"
)]
#[case::err_dangling_contained(
    fourth(request(json!({ "medicationCodeableConcept": null, "medicationReference": { "reference": "#med" } }))),
    "entry[3].resource.medicationReference.reference",
    "entry[3].resource.medicationReference.reference: `#med` refers to no resource in the bundle"
)]
#[case::err_wrong_medication(
    fourth(request(json!({ "medicationCodeableConcept": null, "medicationReference": { "reference": "urn:uuid:p" } }))),
    "entry[3].resource.medicationReference.reference",
    "entry[3].resource.medicationReference.reference: `urn:uuid:p` refers to a Patient, expected a Medication"
)]
#[case::err_wrong_subject(
    fourth(request(json!({ "subject": { "reference": "urn:uuid:d" } }))),
    "entry[3].resource.subject.reference",
    "entry[3].resource.subject.reference: `urn:uuid:d` refers to a Practitioner, expected a Patient"
)]
#[case::err_dangling_requester(
    fourth(request(json!({ "requester": { "reference": "Practitioner/unknown" } }))),
    "entry[3].resource.requester.reference",
    "entry[3].resource.requester.reference: `Practitioner/unknown` refers to no resource in the bundle"
)]
#[case::err_dangling_action(
    bundle(vec![entry("urn:uuid:g", json!({ "resourceType": "RequestGroup", "action": [{ "resource": { "reference": "urn:uuid:gone" } }] }))]),
    "entry[0].resource.action[0].resource.reference",
    "entry[0].resource.action[0].resource.reference: `urn:uuid:gone` refers to no resource in the bundle"
)]
#[case::err_contained_coding(
    bundle(vec![entry("urn:uuid:r", request(json!({ "medicationCodeableConcept": null, "medicationReference": { "reference": "#m" },
        "contained": [{ "resourceType": "Medication", "id": "m", "coded": { "coding": [7] } }] })))]),
    "entry[0].resource.contained[0].coded.coding[0]",
    "entry[0].resource.contained[0].coded.coding[0]: expected an object, found 7"
)]
#[case::err_wrapped_path(
    json!({ "fhirBundle": bundle(vec![entry("urn:uuid:r", request(json!({ "dosageInstruction": [{ "timing": { "repeat": { "count": "x" } } }] })))]) }),
    "fhirBundle.entry[0].resource.dosageInstruction[0].timing.repeat.count",
    "fhirBundle.entry[0].resource.dosageInstruction[0].timing.repeat.count: expected a number, found \"x\""
)]
#[case::err_base64(
    bundle(vec![entry("urn:uuid:doc", json!({ "resourceType": "DocumentReference", "content": [{ "attachment": { "data": "JVBE%i0x" } }] }))]),
    "entry[0].resource.content[0].attachment.data",
    "entry[0].resource.content[0].attachment.data: expected base64 data, found `%` at byte 4"
)]
#[case::err_base64_length(
    bundle(vec![entry("urn:uuid:doc", json!({ "resourceType": "DocumentReference", "content": [{ "attachment": { "data": "JVBER" } }] }))]),
    "entry[0].resource.content[0].attachment.data",
    "entry[0].resource.content[0].attachment.data: expected base64 data, found 5 base64 characters, not a multiple of 4"
)]
#[case::err_no_resource_type(
    bundle(vec![json!({ "resource": { "id": "x" } })]),
    "entry[0].resource",
    "entry[0].resource: `resourceType` is missing"
)]
#[case::err_entry_not_array(
    json!({ "resourceType": "Bundle", "entry": { "resource": {} } }),
    "entry",
    "entry: expected an array, found an object"
)]
#[case::err_not_a_bundle(
    json!({ "resourceType": "MedicationRequest" }),
    "$",
    "$: expected a FHIR Bundle, a {\"fhirBundle\": \u{2026}} wrapper or a `drugs` list, found a MedicationRequest"
)]
#[case::err_drug_nameless(
    json!({ "drugs": [{ "name": "A" }, { "posology": "1/j" }] }),
    "drugs[1]",
    "drugs[1]: expected a drug with a name or a code, found an object"
)]
#[case::err_drugs_not_list(
    json!({ "drugs": "A" }),
    "drugs",
    "drugs: expected a list of drugs, found \"A\""
)]
fn errors(#[case] body: Value, #[case] path: &str, #[case] message: &str) {
    let error = read(&body).unwrap_err();
    assert_eq!(error.to_string(), message);
    assert_eq!(error.path(), Some(path));
}

#[rstest]
#[case::err_only_a_patient(bundle(vec![entry("urn:uuid:p", json!({ "resourceType": "Patient" }))]))]
#[case::err_empty_drugs(json!({ "drugs": [] }))]
#[case::err_no_entry(json!({ "resourceType": "Bundle" }))]
fn err_nothing_to_deliver(#[case] body: Value) {
    let error = read(&body).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the bundle has no MedicationRequest, no DocumentReference and no `drugs`: nothing to deliver"
    );
    assert_eq!(error.path(), None);
}

#[test]
fn ok_missing_optional_data_is_not_an_error() {
    let body = bundle(vec![
        entry(
            "urn:uuid:r",
            json!({ "resourceType": "MedicationRequest", "subject": { "display": "only a display" },
            "medicationReference": { "identifier": { "value": "logical" } }, "dosageInstruction": [{}] }),
        ),
        entry(
            "urn:uuid:d",
            json!({ "resourceType": "DocumentReference", "content": [{ "attachment": { "contentType": "application/pdf" } }] }),
        ),
    ]);
    let prescription = read(&body).unwrap();
    assert_eq!(prescription.lines.len(), 1);
    assert_eq!(prescription.lines[0].medication.code, None);
    assert_eq!(prescription.patient.partner_id, None);
    assert_eq!(prescription.document, None);
}

#[test]
fn ok_base64_line_wrapping_removed() {
    let body = bundle(vec![entry(
        "urn:uuid:d",
        json!({ "resourceType": "DocumentReference",
        "content": [{ "attachment": { "data": "JVBE\r\nRi0x\nLjQK" } }] }),
    )]);
    let model = model(&body);
    assert_eq!(at(&model, "/document/data_base64"), "JVBERi0xLjQK");
}

// ---------------------------------------------------------------------------------------------
// Arbitrary input never panics

/// JSON built from FHIR words, so that generated values go deep into the reader.
fn fhir_json() -> impl Strategy<Value = Value> {
    let words = prop::sample::select(vec![
        "Bundle",
        "MedicationRequest",
        "Medication",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "RequestGroup",
        "Observation",
        "DocumentReference",
        "urn:uuid:a",
        "urn:uuid:b",
        "#a",
        "Patient/a",
        "Medication/a",
        "a",
        "b",
        "id://partner",
        "urn:oid:1.2.250.1.71.4.2.1",
        "3",
        "0,5",
        "deux",
        "",
        "JVBERi0x",
        "=",
        "true",
        "8100012345678",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        words.clone().prop_map(Value::from),
        ".{0,6}".prop_map(Value::from),
    ];
    let keys = prop::sample::select(vec![
        "resourceType",
        "id",
        "fullUrl",
        "resource",
        "entry",
        "fhirBundle",
        "drugs",
        "contained",
        "reference",
        "subject",
        "author",
        "requester",
        "action",
        "medicationReference",
        "medicationCodeableConcept",
        "medication",
        "concept",
        "code",
        "coded",
        "coding",
        "system",
        "display",
        "text",
        "identifier",
        "identify",
        "value",
        "type",
        "name",
        "family",
        "given",
        "dosageInstruction",
        "sequence",
        "timing",
        "repeat",
        "frequency",
        "period",
        "periodUnit",
        "when",
        "boundsDuration",
        "count",
        "timeOfDay",
        "dayOfWeek",
        "doseAndRate",
        "doseQuantity",
        "doseRange",
        "low",
        "high",
        "route",
        "asNeededBoolean",
        "asNeededCodeableConcept",
        "content",
        "attachment",
        "data",
        "url",
        "valueQuantity",
        "valueString",
        "gender",
        "practitioner",
        "posology",
        "cip13",
        "note",
        "substitution",
        "allowedBoolean",
    ]);
    leaf.prop_recursive(6, 96, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|map| Value::Object(
                map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_json_never_panics(value in fhir_json()) {
        let _ = read_value(&value);
    }

    #[test]
    fn arbitrary_entries_never_panic(resources in prop::collection::vec(fhir_json(), 0..6), kinds in prop::collection::vec(prop::sample::select(vec!["MedicationRequest", "Medication", "Patient", "RequestGroup", "Practitioner", "DocumentReference", "Observation"]), 6)) {
        let entries: Vec<Value> = resources
            .into_iter()
            .zip(kinds)
            .enumerate()
            .map(|(i, (mut resource, kind))| {
                if let Some(map) = resource.as_object_mut() {
                    map.insert("resourceType".into(), kind.into());
                }
                json!({ "fullUrl": format!("urn:uuid:{}", if i % 2 == 0 { "a" } else { "b" }), "resource": resource })
            })
            .collect();
        let _ = read_value(&json!({ "resourceType": "Bundle", "entry": entries }));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = read_bundle(&bytes);
    }

    #[test]
    fn mutated_sample_never_panics(pointer in 0usize..400, value in fhir_json()) {
        // Replace one node of the prednisone sample (depth-first numbering) with junk.
        let mut doc: Value = serde_json::from_slice(&sample("two-drugs-prednisone-taper.json")).unwrap();
        fn replace(node: &mut Value, target: &mut usize, value: &Value) -> bool {
            if *target == 0 {
                *node = value.clone();
                return true;
            }
            *target -= 1;
            match node {
                Value::Array(items) => items.iter_mut().any(|item| replace(item, target, value)),
                Value::Object(map) => map.values_mut().any(|item| replace(item, target, value)),
                _ => false,
            }
        }
        let mut target = pointer;
        replace(&mut doc, &mut target, &value);
        let _ = read_value(&doc);
    }
}

//! The shipped `hprim-oru` mapping end to end: a Posos bundle through `ordobridge transform`,
//! written to an outbox with its `.OK` witness, read back by the HPRIM parser.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ordobridge::filedrop::{NameVars, Outbox, OutboxSettings};
use ordobridge::hl7::Charset;
use ordobridge::hprim::{parse_file, patients};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

const BUNDLE: &str = "samples/posos/two-drugs-prednisone-taper.json";

fn oru() -> Vec<u8> {
    ordobridge::tools::transform(
        &repo("mappings/hprim-oru.toml"),
        &repo(BUNDLE),
        None,
        "RES20260105",
        "2026-01-05T09:00:00Z",
    )
    .unwrap()
    .expect("the HPRIM mapping writes a message for this bundle")
}

#[test]
fn ok_oru_written_to_an_outbox_and_read_back() {
    let bytes = oru();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::new(OutboxSettings {
        folder: dir.path().to_path_buf(),
        name_template: "{control_id}.HPR".into(),
        witness_suffix: Some(".OK".into()),
    })
    .unwrap();
    let written = outbox
        .write(&NameVars::now("RES20260105", "IPP000042", 1), &bytes)
        .unwrap();
    assert_eq!(written, dir.path().join("RES20260105.HPR"));
    assert!(dir.path().join("RES20260105.OK").exists());

    let raw = std::fs::read(&written).unwrap();
    assert_eq!(raw, bytes);
    // ISO-8859-1 on disk, CR LF record ends, the `H` record first with its delimiters.
    assert!(raw.starts_with(b"H|~^\\&|RES20260105||ORDOBRIDGE~POSOS||ORU|||||P|H2.2~C|"));
    assert!(raw.windows(9).any(|w| w == b"comprim\xe9s"));
    assert!(std::str::from_utf8(&raw).is_err(), "not UTF-8");
    assert!(raw.ends_with(b"\r\nL|1||1\r\n"));
    assert!(raw.split(|&b| b == b'\n').all(|line| line.len() <= 220));

    let messages = parse_file(&raw, None).unwrap();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.charset(), Charset::Latin1);
    assert_eq!(m.version().as_deref(), Some("H2.2"));
    let q = |p: &str| m.query(p).unwrap();

    let prescription =
        ordobridge::posos::bundle::read_bundle(&std::fs::read(repo(BUNDLE)).unwrap()).unwrap();
    assert_eq!(q("P.3"), prescription.patient.partner_id);
    assert_eq!(q("P.3").as_deref(), Some("IPP000042"));
    assert_eq!(q("P.6.1").as_deref(), Some("MARTIN"));
    assert_eq!(q("P.6.2").as_deref(), Some("Claire Anne"));
    assert_eq!(q("P.8").as_deref(), Some("19500302"));
    assert_eq!(q("P.9").as_deref(), Some("F"));
    let p = patients(m);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].ipp.as_str(), p[0].family.as_str()),
        ("IPP000042", "MARTIN")
    );

    assert_eq!(q("OBR.3").as_deref(), Some("rg-0001"));
    assert_eq!(q("OBR.5.2").as_deref(), Some("Prescription médicamenteuse"));
    assert_eq!(q("OBR.17.1").as_deref(), Some("10001234567"));

    assert_eq!(m.records_of("OBX").count(), 2);
    assert_eq!(q("OBX.2").as_deref(), Some("1"));
    assert_eq!(q("OBX.3").as_deref(), Some("TX"));
    assert_eq!(q("OBX.4.1").as_deref(), Some("3400930000011"));
    assert_eq!(q("OBX.4.2").as_deref(), Some("PREDNISONE 20 mg, comprimé"));
    // Four dosage steps: longer than an HPRIM line, so continued in an `A` record.
    assert_eq!(
        q("OBX.6").as_deref(),
        Some(
            "2 comprimés le matin pendant 5 jours ; 1 comprimé et demi le matin pendant 5 jours ; \
             1 comprimé le matin pendant 5 jours ; 1/2 comprimé le matin pendant 5 jours puis arrêt"
        )
    );
    assert!(m.record("OBX", 1).unwrap().line_count() >= 2);
    assert_eq!(q("OBX.12").as_deref(), Some("F"));
    assert_eq!(q("OBX[2].2").as_deref(), Some("2"));
    assert_eq!(q("OBX[2].4.2").as_deref(), Some("OMEPRAZOLE 20 mg, gélule"));
    assert_eq!(
        q("OBX[2].6").as_deref(),
        Some("1 gélule le matin pendant 20 jours")
    );
    assert_eq!(q("L.4").as_deref(), Some("1"));
}

#[test]
fn ok_mapping_loads_as_hprim() {
    let mapping = ordobridge::config::read_mapping(&repo("mappings/hprim-oru.toml")).unwrap();
    assert_eq!(mapping.message_type(), "ORU");
    assert_eq!(mapping.format(), ordobridge::mapping::OutputFormat::Hprim);
}

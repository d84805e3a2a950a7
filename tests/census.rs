//! The census on a real SQLite file through `Store`: messages are journaled, read with
//! `census::interpret` and applied with `Store::apply_census`, as the engine's processor will.
//! Messages come from `samples/adt/*.hl7` (synthetic PAM FR) and from the builder below.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use ordobridge::census::{self, CensusSettings, CensusUpdate, EncounterStatus, InsKind};
use ordobridge::hl7::Message;
use ordobridge::store::{
    AnomalyKind, ApplyStatus, CensusOutcome, EncounterView, InboundRecord, PatientKey, PatientView,
    RecordStatus, Store, StoreOptions,
};
use rstest::rstest;

const AUTH: &str = "CH_EXEMPLE&1.2.250.1.999.1&ISO";
const RPPS: &str = "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS";

fn settings() -> CensusSettings {
    CensusSettings {
        ipp_authority: Some("CH_EXEMPLE".to_owned()),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
}

fn open() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("census.sqlite"), StoreOptions::default()).unwrap();
    Fixture { _dir: dir, store }
}

static CONTROL: AtomicU32 = AtomicU32::new(1);

fn record(raw: &[u8]) -> InboundRecord {
    InboundRecord {
        channel: "adt-in".to_owned(),
        received_at: jiff::Timestamp::from_second(1_750_000_000).unwrap(),
        peer: "10.1.2.3:40000".to_owned(),
        sender: "DPI_SYNTH^CH_EXEMPLE".to_owned(),
        message_type: "ADT".to_owned(),
        control_id: format!("C{}", CONTROL.fetch_add(1, Ordering::Relaxed)),
        raw: Bytes::copy_from_slice(raw),
        status: RecordStatus::Accepted,
    }
}

fn update(raw: &[u8]) -> CensusUpdate {
    census::interpret(&Message::parse(raw).unwrap(), &settings()).unwrap()
}

impl Fixture {
    /// Journals, interprets and applies one message, as the processor does.
    async fn feed(&self, raw: &[u8]) -> (i64, CensusOutcome) {
        let id = self.store.journal(record(raw)).await.unwrap().id();
        let outcome = self.store.apply_census(id, update(raw)).await.unwrap();
        (id, outcome)
    }

    async fn feed_all(&self, messages: &[String]) -> Vec<CensusOutcome> {
        let mut outcomes = Vec::new();
        for m in messages {
            outcomes.push(self.feed(m.as_bytes()).await.1);
        }
        outcomes
    }

    fn patient(&self, key: PatientKey) -> PatientView {
        self.store.census_patient(&key).unwrap().unwrap()
    }

    fn encounter(&self, nda: &str) -> EncounterView {
        self.patient(PatientKey::Nda(nda.to_owned()))
            .current
            .unwrap()
    }
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/samples/adt/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn kinds(outcome: &CensusOutcome) -> Vec<AnomalyKind> {
    outcome.anomalies.iter().map(|a| a.kind).collect()
}

/// An inline ADT message in the shape of the samples; empty fields are left out.
#[derive(Clone)]
struct Adt<'a> {
    trigger: &'a str,
    ipp: &'a str,
    nda: &'a str,
    /// ZBE-1; no ZBE segment when empty.
    mvt: &'a str,
    /// ZBE-2 and EVN-6.
    at: &'a str,
    /// ZBE-4.
    action: &'a str,
    /// ZBE-6.
    original: &'a str,
    class: &'a str,
    unit: &'a str,
    doctor: &'a str,
    discharge: &'a str,
    pid32: &'a str,
    ins_oid: &'a str,
    mrg: &'a str,
}

impl Default for Adt<'_> {
    fn default() -> Self {
        Adt {
            trigger: "A01",
            ipp: "200001",
            nda: "800001",
            mvt: "",
            at: "20261110080000",
            action: "INSERT",
            original: "",
            class: "I",
            unit: "",
            doctor: "10003456789^LEBLANC^PIERRE",
            discharge: "",
            pid32: "VALI",
            ins_oid: "1.2.250.1.213.1.4.10",
            mrg: "",
        }
    }
}

fn seg(id: &str, fields: &[(usize, &str)]) -> String {
    let n = fields.iter().map(|(i, _)| *i).max().unwrap_or(0);
    let mut out = id.to_owned();
    for i in 1..=n {
        out.push('|');
        if let Some((_, v)) = fields.iter().find(|(k, _)| *k == i) {
            out.push_str(v);
        }
    }
    out
}

impl Adt<'_> {
    fn raw(&self) -> String {
        let mut segs = vec![
            format!(
                "MSH|^~\\&|DPI_SYNTH|CH_EXEMPLE|ORDOBRIDGE|POSOS|{}||ADT^{}^ADT_A01|X|P|2.5|||||FRA|UNICODE UTF-8|||2.11^IHE_FR",
                self.at, self.trigger
            ),
            seg("EVN", &[(2, self.at), (6, self.at)]),
        ];
        let pid3 = format!(
            "{}^^^{AUTH}^PI~2750469123456{}^^^ASIP-SANTE-INS-NIR&{}&ISO^INS",
            self.ipp,
            &self.ipp[self.ipp.len().saturating_sub(2)..],
            self.ins_oid
        );
        let an = format!("{}^^^{AUTH}^AN", self.nda);
        segs.push(seg(
            "PID",
            &[
                (1, "1"),
                (3, &pid3),
                (5, "DURAND^JEANNE^JEANNE^^^^L~MARTIN^JEANNE^^^^^D"),
                (7, "19750412"),
                (8, "F"),
                (18, if self.nda.is_empty() { "" } else { &an }),
                (32, self.pid32),
            ],
        ));
        if !self.mrg.is_empty() {
            segs.push(format!("MRG|{}^^^{AUTH}^PI", self.mrg));
        }
        if !self.nda.is_empty() {
            let unit = format!("{}^101^1^CH_EXEMPLE", self.unit);
            let doctor = if self.doctor.is_empty() {
                String::new()
            } else {
                format!("{}^^^DR^^^{RPPS}", self.doctor)
            };
            let vn = format!("{}^^^{AUTH}^VN", self.nda);
            segs.push(seg(
                "PV1",
                &[
                    (1, "1"),
                    (2, self.class),
                    (3, if self.unit.is_empty() { "" } else { &unit }),
                    (7, &doctor),
                    (19, &vn),
                    (45, self.discharge),
                ],
            ));
        }
        if !self.mvt.is_empty() {
            let uf = if self.unit.is_empty() {
                String::new()
            } else {
                format!("^^^^^^UF^^^{}", self.unit)
            };
            segs.push(seg(
                "ZBE",
                &[
                    (1, &format!("{}^CH_EXEMPLE", self.mvt)),
                    (2, self.at),
                    (4, self.action),
                    (5, "N"),
                    (6, self.original),
                    (7, &uf),
                ],
            ));
        }
        segs.join("\r") + "\r"
    }
}

/// Step `i` of a scenario: movement `M{i}` on day `10 + i`, unit `U{i}`, class by trigger.
fn step(i: usize, trigger: &str) -> String {
    let at = format!("202611{:02}080000", 10 + i);
    let mvt = format!("M{i}");
    let unit = format!("U{i}");
    let doctor = if trigger == "A54" {
        "10009876543^ROUSSEAU^CLAIRE"
    } else {
        "10003456789^LEBLANC^PIERRE"
    };
    let class = if matches!(trigger, "A04" | "A07") {
        "O"
    } else {
        "I"
    };
    Adt {
        trigger,
        mvt: if trigger == "A08" { "" } else { &mvt },
        at: &at,
        unit: &unit,
        class,
        doctor,
        ..Adt::default()
    }
    .raw()
}

fn scenario(triggers: &[&str]) -> Vec<String> {
    triggers
        .iter()
        .enumerate()
        .map(|(i, t)| step(i + 1, t))
        .collect()
}

#[tokio::test]
async fn ok_samples_in_order() {
    let f = open();
    let names = [
        "01-a28-create-identity.hl7",
        "02-a01-admit.hl7",
        "03-a02-transfer.hl7",
        "04-a04-outpatient-prov.hl7",
        "05-a54-doctor-change.hl7",
        "06-a03-discharge.hl7",
        "07-a31-update-latin1.hl7",
    ];
    for name in names {
        let raw = sample(name);
        let (id, outcome) = f.feed(&raw).await;
        assert_eq!(outcome.status, ApplyStatus::Applied, "{name}");
        assert!(outcome.anomalies.is_empty(), "{name}: {outcome:?}");
        let entry = f.store.journal_entry(id).unwrap().unwrap();
        assert_eq!(entry.summary.status, "processed", "{name}");
    }
    let p = f.patient(PatientKey::Ipp("100001".into()));
    assert_eq!(p.legal_name.as_ref().unwrap().family, "DURAND");
    assert_eq!(p.used_name.as_ref().unwrap().family, "MARTIN");
    assert_eq!(p.birth_date.as_deref(), Some("1975-04-12"));
    let ins = p.ins.as_ref().unwrap();
    assert_eq!(
        (ins.value.as_str(), ins.kind),
        ("275046912345678", InsKind::Test)
    );
    let e = p.current.as_ref().unwrap();
    assert_eq!(e.nda, "900001");
    assert_eq!(e.status, EncounterStatus::Discharged);
    assert_eq!(e.unit.as_deref(), Some("4020"));
    assert_eq!(e.class.as_deref(), Some("I"));
    let attending = e.attending.as_ref().unwrap();
    assert_eq!(attending.rpps.as_deref(), Some("10003456789"));
    assert_eq!(e.admit_at.as_deref(), Some("2026-11-22T08:15:00"));
    assert_eq!(e.discharge_at.as_deref(), Some("2026-11-23T11:00:00"));
    let ids: Vec<&str> = p.movements.iter().map(|m| m.movement_id.as_str()).collect();
    assert_eq!(ids, ["MVT0001", "MVT0002", "MVT0004", "MVT0005"]);

    let outpatient = f.patient(PatientKey::Nda("900002".into()));
    assert_eq!(outpatient.ipp, "100002");
    assert_eq!(outpatient.reliability.as_deref(), Some("PROV"));
    assert_eq!(outpatient.ins, None);
    assert_eq!(outpatient.current.unwrap().class.as_deref(), Some("O"));

    let latin = f.patient(PatientKey::Ins("186087512345699".into()));
    assert_eq!(latin.legal_name.unwrap().family, "GÉRARD");
    assert_eq!(latin.current, None);

    let doctor = f.store.census_practitioner("10009876543").unwrap().unwrap();
    assert_eq!(
        (doctor.family.as_str(), doctor.given.as_str()),
        ("ROUSSEAU", "CLAIRE")
    );
    assert_eq!(f.store.census_practitioner("42").unwrap(), None);
    assert_eq!(
        f.store
            .census_patient(&PatientKey::Ipp("9".into()))
            .unwrap(),
        None
    );

    let text = ordobridge::store::render(&p);
    assert!(text.starts_with("Patient IPP 100001\n"), "{text}");
    assert!(
        text.contains("  Status        discharged (class I)\n"),
        "{text}"
    );
    assert!(
        text.contains("DR LEBLANC PIERRE (RPPS 10003456789)"),
        "{text}"
    );
}

#[rstest]
#[case::a05(&["A05"], EncounterStatus::PreAdmitted, "I", "U1", "10003456789")]
#[case::a01(&["A05", "A01"], EncounterStatus::Admitted, "I", "U2", "10003456789")]
#[case::a04(&["A04"], EncounterStatus::Admitted, "O", "U1", "10003456789")]
#[case::a02(&["A01", "A02"], EncounterStatus::Admitted, "I", "U2", "10003456789")]
#[case::a03(&["A01", "A02", "A03"], EncounterStatus::Discharged, "I", "U3", "10003456789")]
#[case::a06(&["A04", "A06"], EncounterStatus::Admitted, "I", "U2", "10003456789")]
#[case::a07(&["A01", "A07"], EncounterStatus::Admitted, "O", "U2", "10003456789")]
#[case::a21(&["A01", "A21"], EncounterStatus::OnLeave, "I", "U2", "10003456789")]
#[case::a22(&["A01", "A21", "A22"], EncounterStatus::Admitted, "I", "U3", "10003456789")]
#[case::a54(&["A01", "A54"], EncounterStatus::Admitted, "I", "U2", "10009876543")]
#[case::a08(&["A01", "A08"], EncounterStatus::Admitted, "I", "U2", "10003456789")]
#[tokio::test]
async fn ok_events(
    #[case] triggers: &[&str],
    #[case] status: EncounterStatus,
    #[case] class: &str,
    #[case] unit: &str,
    #[case] rpps: &str,
) {
    let f = open();
    for outcome in f.feed_all(&scenario(triggers)).await {
        assert_eq!(outcome.status, ApplyStatus::Applied);
        assert!(outcome.anomalies.is_empty(), "{outcome:?}");
    }
    let e = f.encounter("800001");
    assert_eq!(e.status, status);
    assert_eq!(e.class.as_deref(), Some(class));
    assert_eq!(e.unit.as_deref(), Some(unit));
    assert_eq!(e.attending.unwrap().rpps.as_deref(), Some(rpps));
    let discharged = triggers.last() == Some(&"A03");
    assert_eq!(e.discharge_at.is_some(), discharged);
    let p = f.patient(PatientKey::Ipp("200001".into()));
    assert_eq!(p.movements.len(), triggers.len());
    if triggers.contains(&"A08") {
        assert!(p.movements.iter().any(|m| m.movement_id.starts_with('#')));
    }
}

#[rstest]
#[case::a28("A28")]
#[case::a31("A31")]
#[tokio::test]
async fn ok_identity_events(#[case] trigger: &str) {
    let f = open();
    let create = Adt {
        trigger,
        nda: "",
        pid32: "PROV",
        ..Adt::default()
    };
    f.feed(create.raw().as_bytes()).await;
    let p = f.patient(PatientKey::Ipp("200001".into()));
    assert_eq!((p.reliability.as_deref(), p.ins), (Some("PROV"), None));
    assert_eq!(p.current, None);
    let validate = Adt {
        pid32: "VALI",
        ..create
    };
    f.feed(validate.raw().as_bytes()).await;
    let p = f.patient(PatientKey::Ins("275046912345601".into()));
    assert_eq!(p.ipp, "200001");
    assert_eq!(p.reliability.as_deref(), Some("VALI"));
}

#[rstest]
#[case::ok_nir("1.2.250.1.213.1.4.8", "VALI", Some(InsKind::Nir))]
#[case::ok_nia("1.2.250.1.213.1.4.9", "VALI", Some(InsKind::Nia))]
#[case::ok_test("1.2.250.1.213.1.4.10", "VALI", Some(InsKind::Test))]
#[case::ok_prov("1.2.250.1.213.1.4.8", "PROV", None)]
#[tokio::test]
async fn ok_ins_rules(#[case] oid: &str, #[case] pid32: &str, #[case] kind: Option<InsKind>) {
    let f = open();
    let msg = Adt {
        trigger: "A28",
        nda: "",
        ins_oid: oid,
        pid32,
        ..Adt::default()
    };
    f.feed(msg.raw().as_bytes()).await;
    let p = f.patient(PatientKey::Ipp("200001".into()));
    assert_eq!(p.ins.as_ref().map(|i| i.kind), kind);
    let by_ins = f
        .store
        .census_patient(&PatientKey::Ins("275046912345601".into()))
        .unwrap();
    assert_eq!(by_ins.is_some(), kind.is_some());
}

/// Cancelling movement `cancelled` (1-based) of `triggers` leaves the encounter as if it had
/// never been sent.
#[rstest]
#[case::a38(&["A01", "A05"], "A38", 2)]
#[case::a11_a01(&["A05", "A01"], "A11", 2)]
#[case::a11_a04(&["A05", "A04"], "A11", 2)]
#[case::a12(&["A01", "A02"], "A12", 2)]
#[case::a12_middle(&["A01", "A02", "A02"], "A12", 2)]
#[case::a13(&["A01", "A02", "A03"], "A13", 3)]
#[case::a52(&["A01", "A21"], "A52", 2)]
#[case::a53(&["A01", "A21", "A22"], "A53", 3)]
#[case::a55(&["A01", "A54"], "A55", 2)]
#[tokio::test]
async fn ok_cancel_undoes_exactly_its_movement(
    #[case] triggers: &[&str],
    #[case] cancel: &str,
    #[case] cancelled: usize,
) {
    let f = open();
    f.feed_all(&scenario(triggers)).await;
    let at = format!("202611{:02}080000", 20);
    let mvt = format!("M{cancelled}");
    let original = triggers[cancelled - 1];
    let msg = Adt {
        trigger: cancel,
        mvt: &mvt,
        at: &at,
        action: "CANCEL",
        original,
        unit: "U9",
        ..Adt::default()
    };
    let (cancel_id, outcome) = f.feed(msg.raw().as_bytes()).await;
    assert!(outcome.anomalies.is_empty(), "{outcome:?}");

    let expected = open();
    let kept: Vec<String> = scenario(triggers)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i + 1 != cancelled)
        .map(|(_, m)| m)
        .collect();
    expected.feed_all(&kept).await;
    assert_eq!(f.encounter("800001"), expected.encounter("800001"));

    let p = f.patient(PatientKey::Ipp("200001".into()));
    for m in &p.movements {
        let is_cancelled = m.movement_id == mvt;
        assert_eq!(m.cancelled, is_cancelled, "{m:?}");
        assert_eq!(m.cancelled_by, is_cancelled.then_some(cancel_id));
    }
}

#[tokio::test]
async fn ok_cancel_of_only_movement_leaves_cancelled_encounter() {
    let f = open();
    f.feed_all(&scenario(&["A01"])).await;
    let msg = Adt {
        trigger: "A11",
        mvt: "M1",
        action: "CANCEL",
        original: "A01",
        at: "20261120080000",
        ..Adt::default()
    };
    f.feed(msg.raw().as_bytes()).await;
    assert_eq!(f.encounter("800001").status, EncounterStatus::Cancelled);
}

#[tokio::test]
async fn ok_z99_corrects_a_movement() {
    let f = open();
    f.feed_all(&scenario(&["A01", "A02"])).await;
    // Correct the transfer (the latest movement): its unit changes.
    let fix = Adt {
        trigger: "Z99",
        mvt: "M2",
        at: "20261112080000",
        action: "UPDATE",
        original: "A02",
        unit: "U9",
        ..Adt::default()
    };
    let (fix_id, outcome) = f.feed(fix.raw().as_bytes()).await;
    assert!(outcome.anomalies.is_empty(), "{outcome:?}");
    assert_eq!(f.encounter("800001").unit.as_deref(), Some("U9"));
    // Correct the admission (older): the later transfer still decides the unit.
    let old = Adt {
        mvt: "M1",
        original: "A01",
        unit: "U7",
        at: "20261111080000",
        ..fix
    };
    f.feed(old.raw().as_bytes()).await;
    let p = f.patient(PatientKey::Ipp("200001".into()));
    let e = p.current.unwrap();
    assert_eq!(e.unit.as_deref(), Some("U9"));
    assert_eq!(e.status, EncounterStatus::Admitted);
    assert_eq!(p.movements.len(), 2);
    assert_eq!(p.movements[1].updated_by, Some(fix_id));
    assert_eq!(p.movements[0].unit.as_deref(), Some("U7"));
}

#[tokio::test]
async fn ok_a40_merge_moves_encounters_and_old_ipp_resolves() {
    let f = open();
    let survivor = Adt {
        ipp: "300001",
        nda: "810001",
        mvt: "S1",
        ..Adt::default()
    };
    let merged = Adt {
        ipp: "300002",
        nda: "810002",
        mvt: "S2",
        ..Adt::default()
    };
    f.feed(survivor.raw().as_bytes()).await;
    f.feed(merged.raw().as_bytes()).await;
    let merge = Adt {
        trigger: "A40",
        ipp: "300001",
        nda: "",
        mrg: "300002",
        ..Adt::default()
    };
    let (_, outcome) = f.feed(merge.raw().as_bytes()).await;
    assert!(outcome.anomalies.is_empty(), "{outcome:?}");

    let p = f.patient(PatientKey::Ipp("300002".into()));
    assert_eq!(p.ipp, "300001");
    assert_eq!(p.resolved_from.as_deref(), Some("300002"));
    assert_eq!(p.merged_ipps, ["300002"]);
    let ndas: Vec<&str> = p.encounters.iter().map(|e| e.nda.as_str()).collect();
    assert_eq!(ndas.len(), 2);
    assert!(ndas.contains(&"810001") && ndas.contains(&"810002"));
    assert_eq!(f.patient(PatientKey::Nda("810002".into())).ipp, "300001");
    assert!(ordobridge::store::render(&p).contains("(IPP 300002 was merged into it)"));

    // A late message for the merged IPP lands on the survivor, flagged.
    let late = Adt {
        trigger: "A02",
        ipp: "300002",
        nda: "810002",
        mvt: "S3",
        unit: "U5",
        at: "20261111080000",
        ..Adt::default()
    };
    let (_, outcome) = f.feed(late.raw().as_bytes()).await;
    assert_eq!(kinds(&outcome), [AnomalyKind::MergedPatient]);
    assert_eq!(f.encounter("810002").unit.as_deref(), Some("U5"));

    // A merge of an unknown patient is kept: the unknown IPP resolves too.
    let unknown = Adt {
        mrg: "399999",
        ..merge
    };
    let (_, outcome) = f.feed(unknown.raw().as_bytes()).await;
    assert_eq!(kinds(&outcome), [AnomalyKind::UnknownPatient]);
    assert_eq!(f.patient(PatientKey::Ipp("399999".into())).ipp, "300001");
    let p = f.patient(PatientKey::Ipp("300001".into()));
    assert_eq!(p.anomalies.len(), 2, "{:?}", p.anomalies);
}

#[rstest]
#[case::ok_rpps("10003456789^LEBLANC^PIERRE", Some("10003456789"))]
#[tokio::test]
async fn ok_rpps_extraction(#[case] doctor: &str, #[case] rpps: Option<&str>) {
    let f = open();
    let msg = Adt {
        mvt: "R1",
        doctor,
        ..Adt::default()
    };
    f.feed(msg.raw().as_bytes()).await;
    let attending = f.encounter("800001").attending.unwrap();
    assert_eq!(attending.rpps.as_deref(), rpps);
    let stored = f.store.census_practitioner("10003456789").unwrap().unwrap();
    assert_eq!(stored.family, "LEBLANC");
}

#[tokio::test]
async fn ok_local_doctor_has_no_rpps() {
    let f = open();
    let raw = Adt {
        mvt: "R1",
        ..Adt::default()
    }
    .raw()
    .replace(
        &format!("10003456789^LEBLANC^PIERRE^^^DR^^^{RPPS}"),
        "D42^MOREAU^ANNE^^^DR",
    );
    f.feed(raw.as_bytes()).await;
    let attending = f.encounter("800001").attending.unwrap();
    assert_eq!((attending.id.as_str(), attending.rpps), ("D42", None));
    assert_eq!(f.store.census_practitioner("D42").unwrap(), None);
}

#[tokio::test]
async fn ok_discharge_before_admission_is_kept_and_flagged() {
    let f = open();
    let admit = step(1, "A01");
    let discharge = step(2, "A03");
    let (_, outcome) = f.feed(discharge.as_bytes()).await;
    assert_eq!(outcome.status, ApplyStatus::Applied);
    assert_eq!(kinds(&outcome), [AnomalyKind::UnknownEncounter]);
    assert_eq!(f.encounter("800001").status, EncounterStatus::Discharged);
    let (_, outcome) = f.feed(admit.as_bytes()).await;
    assert_eq!(kinds(&outcome), [AnomalyKind::OutOfOrder]);
    let e = f.encounter("800001");
    assert_eq!(e.status, EncounterStatus::Discharged);
    assert_eq!(e.admit_at.as_deref(), Some("2026-11-11T08:00:00"));
    assert_eq!(e.discharge_at.as_deref(), Some("2026-11-12T08:00:00"));
    let p = f.patient(PatientKey::Ipp("200001".into()));
    assert_eq!(p.movements.len(), 2);
    let kinds: Vec<&str> = p.anomalies.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["unknown_encounter", "out_of_order"]);
    assert!(ordobridge::store::render(&p).contains("Anomalies (2)"));
}

#[tokio::test]
async fn ok_cancel_before_its_movement_stays_cancelled() {
    let f = open();
    f.feed_all(&scenario(&["A01"])).await;
    let cancel = Adt {
        trigger: "A12",
        mvt: "M2",
        action: "CANCEL",
        original: "A02",
        at: "20261113080000",
        ..Adt::default()
    };
    let (_, outcome) = f.feed(cancel.raw().as_bytes()).await;
    assert_eq!(kinds(&outcome), [AnomalyKind::UnknownMovement]);
    assert_eq!(
        outcome.anomalies[0].text,
        "A12 cancels movement M2 (A02), not seen before: recorded as cancelled, so it stays \
         cancelled if it arrives later"
    );
    let (_, outcome) = f.feed(step(2, "A02").as_bytes()).await;
    assert_eq!(kinds(&outcome), [AnomalyKind::CancelledMovement]);
    let e = f.encounter("800001");
    assert_eq!(e.unit.as_deref(), Some("U1"));
    // A cancel for an encounter never seen is kept as a cancelled placeholder too.
    let nothing = Adt {
        mvt: "M77",
        nda: "899999",
        ..cancel
    };
    let (_, outcome) = f.feed(nothing.raw().as_bytes()).await;
    assert_eq!(kinds(&outcome), [AnomalyKind::UnknownMovement]);
}

#[tokio::test]
async fn ok_transfer_for_unknown_encounter_is_kept() {
    let f = open();
    let (_, outcome) = f.feed(step(2, "A02").as_bytes()).await;
    assert_eq!(kinds(&outcome), [AnomalyKind::UnknownEncounter]);
    assert_eq!(
        outcome.anomalies[0].text,
        "A02 for NDA 800001, not seen before: encounter created from it"
    );
    let e = f.encounter("800001");
    assert_eq!(
        (e.status, e.unit.as_deref()),
        (EncounterStatus::Unknown, Some("U2"))
    );
}

/// Dumps every census table, to compare states.
fn dump(path: &std::path::Path) -> Vec<String> {
    let connection = rusqlite::Connection::open(path).unwrap();
    let mut out = Vec::new();
    for table in [
        "census_patients",
        "census_identifiers",
        "census_practitioners",
        "census_encounters",
        "census_movements",
        "census_anomalies",
    ] {
        let mut statement = connection
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1"))
            .unwrap();
        let columns = statement.column_count();
        let rows = statement
            .query_map([], |row| {
                let values: Vec<String> = (0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect();
                Ok(format!("{table}: {}", values.join(", ")))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

#[tokio::test]
async fn ok_same_journal_id_twice_changes_nothing() {
    let f = open();
    let messages = scenario(&["A01", "A02", "A03"]);
    let mut last = (0, update(messages[0].as_bytes()));
    for m in &messages {
        let id = f.store.journal(record(m.as_bytes())).await.unwrap().id();
        let u = update(m.as_bytes());
        let outcome = f.store.apply_census(id, u.clone()).await.unwrap();
        assert_eq!(outcome.status, ApplyStatus::Applied);
        last = (id, u);
    }
    let path = f.store.path().to_path_buf();
    let before = dump(&path);
    assert!(before.len() > 5);
    let again = f.store.apply_census(last.0, last.1).await.unwrap();
    assert_eq!(again.status, ApplyStatus::AlreadyProcessed);
    // Replaying every row, as after a crash, changes nothing either.
    for (i, m) in messages.iter().enumerate() {
        let id = i64::try_from(i).unwrap() + 1;
        let outcome = f
            .store
            .apply_census(id, update(m.as_bytes()))
            .await
            .unwrap();
        assert_eq!(outcome.status, ApplyStatus::AlreadyProcessed);
    }
    assert_eq!(dump(&path), before);
}

#[tokio::test]
async fn ok_ignored_message_is_marked_processed() {
    let f = open();
    let raw = b"MSH|^~\\&|A|B|||20260101||ORU^R01|1|P|2.5\rPID|1||1\r";
    let (id, outcome) = f.feed(raw).await;
    assert_eq!(outcome.status, ApplyStatus::Ignored);
    let entry = f.store.journal_entry(id).unwrap().unwrap();
    assert_eq!(entry.summary.status, "processed");
}

#[tokio::test]
async fn ok_missing_journal_row_is_flagged() {
    let f = open();
    let outcome = f
        .store
        .apply_census(4242, update(step(1, "A01").as_bytes()))
        .await
        .unwrap();
    assert_eq!(kinds(&outcome), [AnomalyKind::JournalRowMissing]);
    assert_eq!(
        outcome.anomalies[0].text,
        "journal row 4242 does not exist: applied anyway"
    );
}

fn duplicate_movement() -> Vec<String> {
    let mut m = scenario(&["A01"]);
    m.push(step(2, "A02").replace("M2^CH_EXEMPLE", "M1^CH_EXEMPLE"));
    m
}

fn cancel_mismatch() -> Vec<String> {
    let mut m = scenario(&["A01", "A02"]);
    let cancel = Adt {
        trigger: "A12",
        mvt: "M1",
        action: "CANCEL",
        original: "A02",
        at: "20261120080000",
        ..Adt::default()
    };
    m.push(cancel.raw());
    m
}

fn already_cancelled() -> Vec<String> {
    let mut m = scenario(&["A01", "A02"]);
    let cancel = Adt {
        trigger: "A12",
        mvt: "M2",
        action: "CANCEL",
        original: "A02",
        at: "20261120080000",
        ..Adt::default()
    };
    m.push(cancel.raw());
    m.push(cancel.raw().replace("20261120080000", "20261121080000"));
    m
}

fn patient_mismatch() -> Vec<String> {
    let mut m = scenario(&["A01"]);
    m.push(
        Adt {
            trigger: "A02",
            ipp: "200002",
            mvt: "M2",
            at: "20261112080000",
            ..Adt::default()
        }
        .raw(),
    );
    m
}

fn self_merge() -> Vec<String> {
    let mut m = scenario(&["A01"]);
    m.push(
        Adt {
            trigger: "A40",
            nda: "",
            mrg: "200001",
            ..Adt::default()
        }
        .raw(),
    );
    m
}

#[rstest]
#[case::duplicate_movement(
    duplicate_movement,
    AnomalyKind::DuplicateMovement,
    "movement M1 was already recorded (journal row 1): replaced by this A02"
)]
#[case::cancel_mismatch(
    cancel_mismatch,
    AnomalyKind::CancelMismatch,
    "A12 cancels movement M1, which is an A01 and not an A02: cancelled as asked"
)]
#[case::already_cancelled(
    already_cancelled,
    AnomalyKind::AlreadyCancelled,
    "A12 cancels movement M2, already cancelled (journal row 3): nothing to undo"
)]
#[case::patient_mismatch(
    patient_mismatch,
    AnomalyKind::PatientMismatch,
    "A02 names IPP 200002 for NDA 800001, which belongs to IPP 200001: kept with IPP 200001"
)]
#[case::self_merge(
    self_merge,
    AnomalyKind::SelfMerge,
    "A40 merges IPP 200001 into IPP 200001, the same patient: nothing to do"
)]
#[tokio::test]
async fn ok_anomalies_are_kept_with_their_text(
    #[case] messages: fn() -> Vec<String>,
    #[case] kind: AnomalyKind,
    #[case] text: &str,
) {
    let f = open();
    let outcomes = f.feed_all(&messages()).await;
    let last = outcomes.last().unwrap();
    assert_eq!(last.status, ApplyStatus::Applied);
    assert_eq!(kinds(last), [kind]);
    assert_eq!(last.anomalies[0].text, text);
    let p = f.patient(PatientKey::Nda("800001".into()));
    assert!(
        p.anomalies.iter().any(|a| a.text == text),
        "{:?}",
        p.anomalies
    );
}

/// A census update that fails in SQL is rolled back alone (savepoint): the journal inserts of
/// other callers batched in the same transaction still commit, and its row stays `accepted`
/// for the processor to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_census_update_does_not_fail_the_journal_inserts_it_is_batched_with() {
    let fixture = open();
    let sample = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/adt/02-a01-admit.hl7"),
    )
    .unwrap();
    let id = fixture.store.journal(record(&sample)).await.unwrap().id();
    let db = rusqlite::Connection::open(fixture.store.path()).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fail_census BEFORE INSERT ON census_patients BEGIN SELECT RAISE(ABORT, 'census broken (test)'); END;",
    )
    .unwrap();
    // Send the failing census update and many journal inserts at once: the writer batches them.
    let census = fixture.store.apply_census(id, update(&sample));
    let journals =
        futures::future::join_all((0..20).map(|_| fixture.store.journal(record(&sample))));
    let (census, journals) = tokio::join!(census, journals);
    assert!(census.is_err(), "the census update must fail: {census:?}");
    assert!(
        journals.iter().all(Result::is_ok),
        "journal inserts batched with it must commit: {journals:?}"
    );
    let rows = fixture
        .store
        .list_journal(&ordobridge::store::JournalFilter {
            control_id: None,
            channel: None,
            limit: 0,
        })
        .unwrap();
    assert_eq!(rows.len(), 21);
    let first = rows.iter().find(|r| r.id == id).unwrap();
    assert_eq!(first.status, "accepted", "left for the processor to retry");
    db.execute_batch("DROP TRIGGER fail_census;").unwrap();
    fixture
        .store
        .apply_census(id, update(&sample))
        .await
        .unwrap();
}

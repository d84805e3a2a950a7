//! No patient data in the log at info level: the real daemon binary, its stdout captured with
//! `[log] level = "info"`, gets ADTs whose patient values are unique markers (names, IPP,
//! birth date, PV1-19) and that the census cannot use (a PID-3 of another authority, a bad
//! birth date), a payload that is not HL7 but a PID segment, a file refused for its charset,
//! a push whose ORM the EHR refuses with a text naming the patient (retried, then
//! dead-lettered), and documents (`$send-to-ehr`: one accepted, whose title names the patient
//! and which the EHR refuses too, one refused) after a FHIR search by IPP. The log must show
//! each of these events, and none of the markers.

mod common;

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

/// Every marker holds `ZQ`, which nothing else in a log line holds; the birth date is a valid
/// date that appears nowhere else.
const MARKERS: &[&str] = &[
    "NOMZQALPHA",
    "PRENOMZQBETA",
    "IPPZQ1001",
    "19ZQ0101",
    "NDAZQ1001",
    "IPPZQ2002",
    "NOMZQGAMMA",
    "IPPZQ3003",
    "NOMZQDELTA",
    "PRENOMZQEPS",
    "IPPZQ4004",
    "19230917",
    "NDAZQ4004",
    "NOMZQPUSH",
    "IPPZQ5005",
    "TITREZQDOC",
    "ZQ",
];

const FHIR_TOKEN: &str = "fhir-token-for-the-no-phi-test-0123456789";

const TOKEN: &str = "push-token-for-the-no-phi-test-0123456789";

/// An A01 with these PID-3, PID-5, PID-7 and PV1-19 values.
fn a01(control_id: &str, pid3: &str, name: &str, birth: &str, nda: &str) -> String {
    format!(
        "MSH|^~\\&|DPI|CH|OB|POSOS|20261201080000||ADT^A01^ADT_A01|{control_id}|P|2.5|||||FRA|8859/1\r\
         EVN|A01|20261201080000\r\
         PID|1||{pid3}||{name}||{birth}|F\r\
         PV1|1|I|CARDIO^101^1{}{nda}^^^CH_EXEMPLE^VN\r",
        "|".repeat(16)
    )
}

/// Waits until the captured log has at least `n` lines holding `text`.
async fn log_shows(daemon: &common::Daemon, text: &str, n: usize) {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let count = daemon
            .log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(text))
            .count();
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the log never showed {n} × `{text}`:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_info_log_holds_no_patient_data() {
    // The EHR refuses every order with a text naming the patient.
    let (peer, received) = common::ehr_peer_answering(|control_id| {
        format!("MSA|AE|{control_id}|PATIENT NOMZQDELTA IPPZQ4004 INCONNU")
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let root = common::repo_root();
    let config = dir.path().join("ordobridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"[store]
path = "data/ob.db"
[log]
level = "info"
format = "json"
[inbound.adt-in]
protocol = "mllp"
bind = "127.0.0.1:0"
[inbound.files]
protocol = "file"
folder = "in"
create_folder = true
patterns = ["*.hl7"]
ready = "stable"
stable_for = "50ms"
poll_interval = "20ms"
[census]
ipp_authority = "CH_EXEMPLE"
[http]
bind = "127.0.0.1:0"
[outbound.ehr-orders]
protocol = "mllp"
address = "{peer}"
retry_initial = "20ms"
max_attempts = 2
[push]
token = "{TOKEN}"
hold_unknown_for = "0s"
[[push.route]]
mapping = "{root}/mappings/orm-o01.toml"
destination = "ehr-orders"
[fhir]
token = "{FHIR_TOKEN}"
[documents]
[[documents.route]]
mapping = "{root}/mappings/oru-r01-document.toml"
destination = "ehr-orders"
"#,
            root = root.display()
        ),
    )
    .expect("write config");
    let mut daemon = common::Daemon::start(&config);
    let mllp = daemon.addr("adt-in");

    // A birth date that is not a date: the census refuses the message.
    let ack = common::send_adt(
        mllp,
        a01(
            "M1",
            "IPPZQ1001^^^CH_EXEMPLE^PI",
            "NOMZQALPHA^PRENOMZQBETA",
            "19ZQ0101",
            "NDAZQ1001",
        )
        .as_bytes(),
    )
    .await;
    assert!(ack.contains("MSA|AA|M1"), "{ack}");
    // A PID-3 of another authority: no IPP for the census.
    let ack = common::send_adt(
        mllp,
        a01(
            "M2",
            "IPPZQ2002^^^OTHER^PI",
            "NOMZQGAMMA",
            "19230917",
            "NDAZQ4004",
        )
        .as_bytes(),
    )
    .await;
    assert!(ack.contains("MSA|AA|M2"), "{ack}");
    // Not HL7 at all: a bare PID segment (refused; no ACK can be built for it).
    let mut raw = tokio::net::TcpStream::connect(mllp).await.expect("connect");
    raw.write_all(b"\x0BPID|1||IPPZQ3003^^^CH_EXEMPLE^PI||NOMZQGAMMA\r\x1C\x0D")
        .await
        .expect("send");
    // A patient the census knows, then a push for them.
    let ack = common::send_adt(
        mllp,
        a01(
            "M4",
            "IPPZQ4004^^^CH_EXEMPLE^PI",
            "NOMZQDELTA^PRENOMZQEPS",
            "19230917",
            "NDAZQ4004",
        )
        .as_bytes(),
    )
    .await;
    assert!(ack.contains("MSA|AA|M4"), "{ack}");
    // A file refused for its charset, its PID full of markers.
    std::fs::write(
        dir.path().join("in/adt-file.hl7"),
        "MSH|^~\\&|DPI|CH|OB|POSOS|2026||ADT^A01|F1|P|2.5||||||EBCDIC\r\
         PID|1||IPPZQ5005^^^CH_EXEMPLE^PI||NOMZQGAMMA||19230917\r",
    )
    .expect("drop");

    log_shows(&daemon, "message not usable by the census", 2).await;
    log_shows(&daemon, "message refused", 1).await;
    log_shows(&daemon, "file refused", 1).await;

    let bundle = String::from_utf8(common::sample(
        "samples/posos/two-drugs-prednisone-taper.json",
    ))
    .expect("utf-8 bundle")
    .replace("IPP000042", "IPPZQ4004")
    .replace("\"MARTIN\"", "\"NOMZQPUSH\"");
    let pushed = reqwest::Client::new()
        .post(format!("http://{}/fhir", daemon.addr("http")))
        .bearer_auth(TOKEN)
        .header("content-type", "application/fhir+json")
        .body(bundle)
        .send()
        .await
        .expect("push");
    assert!(pushed.status().is_success(), "push: {}", pushed.status());
    log_shows(&daemon, "delivery failed; will retry", 1).await;
    log_shows(&daemon, "message dead-lettered", 1).await;

    // Documents: the patient found by IPP, one document accepted (the EHR refuses it as it
    // refuses everything), one refused for its content type.
    let http = reqwest::Client::new();
    let base = format!("http://{}", daemon.addr("http"));
    let found: serde_json::Value = http
        .get(format!("{base}/fhir/Patient?identifier=IPPZQ4004"))
        .bearer_auth(FHIR_TOKEN)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    let patient = found["entry"][0]["resource"]["id"]
        .as_str()
        .expect("the patient by IPP")
        .to_string();
    for (content_type, status) in [("application/pdf", 200), ("application/zip", 422)] {
        let body = serde_json::json!({"resourceType": "Parameters", "parameter": [
            {"name": "subject", "valueReference": {"reference": format!("Patient/{patient}")}},
            {"name": "content-type", "valueCode": content_type},
            {"name": "document-title", "valueString": "TITREZQDOC NOMZQDELTA"},
            {"name": "payload", "valueBase64Binary": "JVBERi0xLjQK"},
        ]});
        let sent = http
            .post(format!("{base}/fhir/CommunicationRequest/$send-to-ehr"))
            .bearer_auth(FHIR_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(sent.status(), status, "{content_type}");
    }
    log_shows(&daemon, "document accepted and queued", 1).await;
    log_shows(&daemon, "document refused", 1).await;
    log_shows(&daemon, "message dead-lettered", 2).await;
    assert!(
        received.lock().expect("lock").len() >= 2,
        "the EHR got the order twice"
    );

    let status = daemon.terminate();
    assert!(status.success(), "daemon exit: {status}");
    let log = daemon.log_text();
    for line in log.lines() {
        let level = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|json| json["level"].as_str().map(str::to_owned))
            .unwrap_or_default();
        assert!(
            ["INFO", "WARN", "ERROR"].contains(&level.as_str()),
            "only info and above are logged: {line}"
        );
        for marker in MARKERS {
            assert!(
                !line.contains(marker),
                "patient data `{marker}` in the log at {level}: {line}"
            );
        }
    }
}

//! Documents into the EHR, end to end on the real engine (in-process, port 0, SQLite file):
//! the FHIR Patient/Encounter search from the census, `$send-to-ehr` with each of its
//! refusals, delivery to MLLP receivers (ours and python-hl7 + hl7apy), `$tracking` driven by
//! the queue, the idempotence of a request sent twice, and a curl client walking the scenario.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use common::{
    A01_SAMPLE, InProcess, PATIENCE, Received, config, ehr_peer, ehr_peer_answering, ehr_peer_on,
    repo_root, sample, send_adt, start_engine, wait_for,
};

/// The `[fhir]` bearer token of these tests (strong enough for `check`).
const TOKEN: &str = "dGVzdC1maGlyLXRva2VuLWZvci1kb2N1bWVudHMtMDAx";

/// `[fhir]` with [`TOKEN`], one MLLP destination `ehr-docs` toward `peer` and `[documents]`
/// with `routes` (mapping file names under `mappings/`) to it; `extra` goes into
/// `[documents]`, `outbound_extra` into `[outbound.ehr-docs]`.
fn documents_toml(peer: SocketAddr, routes: &[&str], extra: &str, outbound_extra: &str) -> String {
    let mut text = format!(
        r#"{base}
[fhir]
token = "{TOKEN}"
[outbound.ehr-docs]
protocol = "mllp"
address = "{peer}"
retry_initial = "20ms"
retry_max = "50ms"
{outbound_extra}
[documents]
{extra}
"#,
        base = common::base_toml()
    );
    for route in routes {
        text.push_str(&format!(
            "[[documents.route]]\nmapping = \"{}/mappings/{route}\"\ndestination = \"ehr-docs\"\n",
            repo_root().display()
        ));
    }
    text
}

/// The engine, with the census holding the patient of [`A01_SAMPLE`] (IPP 100001, NDA 900001).
async fn engine_with_patient(text: &str) -> (tempfile::TempDir, InProcess, Client) {
    let dir = tempfile::tempdir().expect("dir");
    let engine = start_engine(config(dir.path(), text)).await;
    let ack = send_adt(engine.addr("adt-in"), &sample(A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA"), "{ack}");
    let client = Client::new(engine.addr("http"));
    wait_for("the patient in the census", || {
        let client = client.clone();
        async move {
            let (_, body) = client
                .get("/fhir/Patient?identifier=urn:ordobridge:ipp|100001")
                .await;
            (body["total"] == 1).then_some(())
        }
    })
    .await;
    (dir, engine, client)
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, body: &[u8]) -> (u16, Value) {
        let response = self
            .http
            .post(format!(
                "{}/fhir/CommunicationRequest/$send-to-ehr",
                self.base
            ))
            .bearer_auth(TOKEN)
            .header("content-type", "application/fhir+json")
            .body(body.to_vec())
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The id of the patient of IPP 100001 and of its encounter NDA 900001.
    async fn ids(&self) -> (String, String) {
        let (_, patients) = self
            .get("/fhir/Patient?identifier=urn:ordobridge:ipp|100001")
            .await;
        let patient = patients["entry"][0]["resource"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let (_, encounters) = self
            .get(&format!("/fhir/Encounter?patient={patient}"))
            .await;
        let encounter = encounters["entry"][0]["resource"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        (patient, encounter)
    }

    /// The Communication statuses of a transaction, in destination order.
    async fn tracking(&self, transaction_id: &str) -> Vec<Value> {
        let (status, bundle) = self
            .get(&format!(
                "/fhir/CommunicationRequest/$tracking?transaction-id={transaction_id}"
            ))
            .await;
        assert_eq!(status, 200, "{bundle}");
        bundle["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["resource"].clone())
            .collect()
    }

    async fn wait_status(&self, transaction_id: &str, expected: &[&str]) -> Vec<Value> {
        wait_for(&format!("tracking {expected:?}"), || {
            let client = self.clone();
            let transaction_id = transaction_id.to_string();
            let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            async move {
                let communications = client.tracking(&transaction_id).await;
                let statuses: Vec<String> = communications
                    .iter()
                    .map(|c| c["status"].as_str().unwrap_or_default().to_string())
                    .collect();
                (statuses == expected).then_some(communications)
            }
        })
        .await
    }
}

fn parameters(patient: &str, extra: &[Value], payload: &[u8]) -> Vec<u8> {
    let mut list = vec![
        json!({"name": "subject", "valueReference": {"reference": format!("Patient/{patient}")}}),
    ];
    list.extend_from_slice(extra);
    list.push(json!({"name": "payload", "valueBase64Binary": base64::engine::general_purpose::STANDARD.encode(payload)}));
    json!({"resourceType": "Parameters", "parameter": list})
        .to_string()
        .into_bytes()
}

fn transaction_id(answer: &Value) -> String {
    answer["parameter"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "transaction-id"))
        .and_then(|p| p["valueString"].as_str())
        .unwrap_or_else(|| panic!("no transaction-id in {answer}"))
        .to_string()
}

/// A synthetic PDF of about `size` bytes (a header, then bytes of every value).
fn pdf(size: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n% synthetic test document\n".to_vec();
    bytes.extend((0..size.saturating_sub(bytes.len())).map(|i| (i * 7 % 256) as u8));
    bytes
}

#[tokio::test]
async fn ok_patient_and_encounter_search_and_read() {
    let (peer, _received) = ehr_peer().await;
    let (_dir, engine, client) =
        engine_with_patient(&documents_toml(peer, &["oru-r01-document.toml"], "", "")).await;

    let (status, bundle) = client
        .get("/fhir/Patient?identifier=urn:ordobridge:ipp|100001")
        .await;
    assert_eq!(status, 200);
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 1);
    let patient = &bundle["entry"][0]["resource"];
    let id = patient["id"].as_str().expect("id").to_string();
    assert_ne!(id, "100001", "the id is not the IPP");
    assert_eq!(patient["gender"], "female");
    assert_eq!(patient["birthDate"], "1975-04-12");
    assert_eq!(patient["identifier"][0]["value"], "100001");
    assert!(
        bundle["entry"][0]["fullUrl"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/fhir/Patient/{id}"))),
        "{bundle}"
    );
    // The same patient by NDA, by INS (validated, test OID) and by a bare value; read by id.
    for query in [
        "urn:ordobridge:nda|900001".to_string(),
        format!("urn:oid:1.2.250.1.213.1.4.10|{}", "275046912345678"),
        "100001".to_string(),
    ] {
        let (_, found) = client
            .get(&format!(
                "/fhir/Patient?identifier={}",
                query.replace('|', "%7C")
            ))
            .await;
        assert_eq!(
            found["entry"][0]["resource"]["id"],
            id.as_str(),
            "{query}: {found}"
        );
    }
    let (status, read) = client.get(&format!("/fhir/Patient/{id}")).await;
    assert_eq!((status, &read["id"]), (200, &json!(id)));
    let (status, none) = client
        .get("/fhir/Patient?identifier=urn:ordobridge:ipp|999999")
        .await;
    assert_eq!((status, &none["total"]), (200, &json!(0)));
    let (status, unknown) = client
        .get("/fhir/Patient?identifier=urn:other|100001")
        .await;
    assert_eq!((status, &unknown["total"]), (200, &json!(0)));
    assert!(
        unknown["entry"][0]["resource"]["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.starts_with("unknown identifier system `urn:other`"))
    );
    let (status, missing) = client.get("/fhir/Patient/424242").await;
    assert_eq!(
        (status, &missing["resourceType"]),
        (404, &json!("OperationOutcome"))
    );
    let (status, bad) = client.get("/fhir/Patient?name=DURAND").await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(
        bad["issue"][0]["diagnostics"],
        "unknown search parameter `name` for Patient: use `identifier`"
    );

    let (status, encounters) = client
        .get(&format!("/fhir/Encounter?patient=Patient/{id}"))
        .await;
    assert_eq!((status, &encounters["total"]), (200, &json!(1)));
    let encounter = &encounters["entry"][0]["resource"];
    assert_eq!(encounter["identifier"][0]["value"], "900001");
    assert_eq!(encounter["status"], "in-progress");
    assert_eq!(encounter["class"]["code"], "IMP");
    assert_eq!(encounter["subject"]["reference"], format!("Patient/{id}"));
    assert_eq!(encounter["serviceProvider"]["display"], "4010");
    assert!(
        encounter["period"]["start"]
            .as_str()
            .is_some_and(|s| s.starts_with("2026-11-22T08:15:00+01:00")),
        "{encounter}"
    );
    let encounter_id = encounter["id"].as_str().expect("id").to_string();
    let (_, by_nda) = client
        .get("/fhir/Encounter?identifier=urn:ordobridge:nda%7C900001")
        .await;
    assert_eq!(by_nda["entry"][0]["resource"]["id"], encounter_id.as_str());
    let (status, read) = client.get(&format!("/fhir/Encounter/{encounter_id}")).await;
    assert_eq!(
        (status, &read["identifier"][0]["value"]),
        (200, &json!("900001"))
    );
    engine.stop().await;
}

#[tokio::test]
async fn err_fhir_routes_refuse_without_credentials_or_from_elsewhere() {
    let (peer, _received) = ehr_peer().await;
    let dir = tempfile::tempdir().expect("dir");
    let engine = start_engine(config(
        dir.path(),
        &documents_toml(peer, &["oru-r01-document.toml"], "", ""),
    ))
    .await;
    let base = format!("http://{}", engine.addr("http"));
    let http = reqwest::Client::new();
    for path in [
        "/fhir/Patient?identifier=100001",
        "/fhir/Encounter/1",
        "/fhir/CommunicationRequest/$tracking?transaction-id=x",
    ] {
        for token in [None, Some("wrong")] {
            let mut request = http.get(format!("{base}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("GET");
            assert_eq!(response.status(), 401, "{path}");
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer realm=\"ordobridge\""
            );
            let body: Value = response.json().await.expect("json");
            assert_eq!(
                body["issue"][0]["diagnostics"],
                "missing or wrong credentials: send `Authorization: Bearer` with the FHIR token"
            );
        }
    }
    // The send is refused before its body is read.
    let response = http
        .post(format!("{base}/fhir/CommunicationRequest/$send-to-ehr"))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 401);
    engine.stop().await;

    // From an address outside `[fhir] allow`: 403, even with the token.
    let dir = tempfile::tempdir().expect("dir");
    let text = documents_toml(peer, &["oru-r01-document.toml"], "", "")
        .replace("[fhir]\n", "[fhir]\nallow = [\"10.99.0.0/16\"]\n");
    let engine = start_engine(config(dir.path(), &text)).await;
    let response = http
        .get(format!(
            "http://{}/fhir/Patient?identifier=100001",
            engine.addr("http")
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 403);
    engine.stop().await;
}

#[tokio::test]
async fn err_each_validation_error_names_its_parameter_and_queues_nothing() {
    let (peer, received) = ehr_peer().await;
    let (dir, engine, client) = engine_with_patient(&documents_toml(
        peer,
        &["oru-r01-document.toml"],
        "max_size = \"4KiB\"",
        "",
    ))
    .await;
    let (patient, encounter) = client.ids().await;
    // A second patient, with its own encounter (NDA 900002).
    let ack = send_adt(
        engine.addr("adt-in"),
        &sample("samples/adt/04-a04-outpatient-prov.hl7"),
    )
    .await;
    assert!(ack.contains("MSA|AA"), "{ack}");
    let other_encounter = wait_for("the second patient's encounter", || {
        let client = client.clone();
        async move {
            let (_, found) = client.get("/fhir/Encounter?identifier=900002").await;
            found["entry"][0]["resource"]["id"]
                .as_str()
                .map(str::to_string)
        }
    })
    .await;
    let small = b"%PDF-1.4 tiny";
    let cases: Vec<(&str, Vec<u8>, u16, &str, String)> = vec![
        ("not json", b"{".to_vec(), 400, "Parameters",
         "parameter `Parameters`: the body is not a FHIR Parameters resource in JSON (EOF while parsing an object at line 1 column 1): send `{\"resourceType\": \"Parameters\", \"parameter\": [...]}`".to_string()),
        ("unknown patient", parameters("999999", &[], small), 422, "subject",
         "parameter `subject`: no `Patient/999999` in the census: find the patient with `GET /fhir/Patient?identifier=…`".to_string()),
        ("unknown encounter", parameters(&patient, &[json!({"name": "context", "valueReference": {"reference": "Encounter/999999"}})], small), 422, "context",
         format!("parameter `context`: no `Encounter/999999` in the census: find the patient's encounters with `GET /fhir/Encounter?patient={patient}`")),
        ("another patient's encounter", parameters(&patient, &[json!({"name": "context", "valueReference": {"reference": format!("Encounter/{other_encounter}")}})], small), 422, "context",
         format!("parameter `context`: `Encounter/{other_encounter}` is not an encounter of `Patient/{patient}`: find its encounters with `GET /fhir/Encounter?patient={patient}`")),
        ("bad base64", format!(r#"{{"resourceType": "Parameters", "parameter": [{{"name": "subject", "valueReference": {{"reference": "Patient/{patient}"}}}}, {{"name": "payload", "valueBase64Binary": "JVBE!i0x"}}]}}"#).into_bytes(), 422, "payload",
         "parameter `payload`: not Base64 at character 5: send standard Base64 (`A-Z a-z 0-9 + /`, `=` padding), on one line".to_string()),
        ("content type", parameters(&patient, &[json!({"name": "content-type", "valueCode": "application/msword"})], small), 422, "content-type",
         "parameter `content-type`: `application/msword` is not allowed: send one of `application/pdf`, `image/jpeg`, `image/png`, `application/txt`".to_string()),
        ("rpps", parameters(&patient, &[json!({"name": "sender-identifier", "valueIdentifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "1000345678"}})], small), 422, "sender-identifier",
         "parameter `sender-identifier`: `1000345678` is not an RPPS number (11 digits)".to_string()),
        ("over max_size", parameters(&patient, &[], &pdf(5000)), 413, "payload",
         "parameter `payload`: the document is 5000 bytes, more than the 4096 bytes allowed: send a smaller document (the limit is set by the ordobridge operator)".to_string()),
        ("body over the limit", parameters(&patient, &[], &pdf(200_000)), 413, "payload",
         "parameter `payload`: the request is larger than a document of 4096 bytes allows: send a smaller document (the limit is set by the ordobridge operator)".to_string()),
    ];
    for (what, body, status, parameter, diagnostics) in cases {
        let (got, outcome) = client.send(&body).await;
        assert_eq!(got, status, "{what}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{what}");
        assert_eq!(
            outcome["issue"][0]["expression"][0], parameter,
            "{what}: {outcome}"
        );
        assert_eq!(outcome["issue"][0]["diagnostics"], diagnostics, "{what}");
    }
    // The valid request goes through; nothing refused reached the EHR.
    let (status, answer) = client
        .send(&parameters(&patient, &[json!({"name": "context", "valueReference": {"reference": format!("Encounter/{encounter}")}})], small))
        .await;
    assert_eq!(status, 200, "{answer}");
    common::first_received(&received).await;
    assert_eq!(received.lock().expect("lock").len(), 1);
    let journal = common::ordobridge(&[
        "journal",
        "--config",
        dir.path().join("ob.toml").to_str().expect("path"),
        "--channel",
        "documents",
        "--status",
        "rejected",
    ]);
    assert_eq!(
        journal.lines().filter(|l| l.contains("rejected")).count(),
        9,
        "{journal}"
    );
    engine.stop().await;
}

#[tokio::test]
async fn ok_same_request_twice_is_delivered_once_with_one_transaction() {
    let (peer, received) = ehr_peer().await;
    let (_dir, engine, client) =
        engine_with_patient(&documents_toml(peer, &["oru-r01-document.toml"], "", "")).await;
    let (patient, _) = client.ids().await;
    let body = parameters(&patient, &[], &pdf(1000));
    let (status, first) = client.send(&body).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = client.send(&body).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(transaction_id(&first), transaction_id(&second));
    let communications = client
        .wait_status(&transaction_id(&first), &["completed"])
        .await;
    assert!(communications[0]["sent"].is_string(), "{communications:?}");
    assert_eq!(received.lock().expect("lock").len(), 1);
    engine.stop().await;
}

#[tokio::test]
async fn ok_tracking_goes_preparation_in_progress_completed() {
    // The EHR is down (its port bound, nothing accepted): messages wait and are retried.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let peer = listener.local_addr().expect("addr");
    let (_dir, engine, client) = engine_with_patient(&documents_toml(
        peer,
        &["oru-r01-document.toml"],
        "",
        "ack_timeout = \"300ms\"",
    ))
    .await;
    let (patient, _) = client.ids().await;
    let (_, first) = client.send(&parameters(&patient, &[], &pdf(100))).await;
    let (_, second) = client.send(&parameters(&patient, &[], &pdf(200))).await;
    let (first, second) = (transaction_id(&first), transaction_id(&second));
    // The second waits behind the first: not taken yet.
    assert_eq!(client.tracking(&second).await[0]["status"], "preparation");
    // The first is being sent, then retried after its ACK timeout, with the reason.
    let retried = wait_for("a retried first document", || {
        let client = client.clone();
        let first = first.clone();
        async move {
            let communication = client.tracking(&first).await.remove(0);
            (communication["status"] == "in-progress" && communication["note"].is_array())
                .then_some(communication)
        }
    })
    .await;
    assert!(retried["sent"].is_null());
    // The EHR comes back: both are delivered, in order.
    let received: Received = ehr_peer_on(listener);
    for transaction in [&first, &second] {
        let completed = client.wait_status(transaction, &["completed"]).await;
        assert!(completed[0]["sent"].is_string());
    }
    let messages = received.lock().expect("lock").clone();
    let control_ids: Vec<String> = messages
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m)
                .split('|')
                .nth(9)
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let mut deduplicated = control_ids.clone();
    deduplicated.dedup();
    assert_eq!(deduplicated.len(), 2, "{control_ids:?}");
    engine.stop().await;
}

#[tokio::test]
async fn ok_tracking_entered_in_error_when_the_ehr_answers_ar() {
    let (peer, _received) =
        ehr_peer_answering(|id| format!("MSA|AR|{id}|document type not accepted")).await;
    let (_dir, engine, client) =
        engine_with_patient(&documents_toml(peer, &["mdm-t02.toml"], "", "")).await;
    let (patient, _) = client.ids().await;
    let (status, answer) = client.send(&parameters(&patient, &[], &pdf(300))).await;
    assert_eq!(status, 200, "{answer}");
    let communications = client
        .wait_status(&transaction_id(&answer), &["entered-in-error"])
        .await;
    let note = communications[0]["note"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(note.contains("document type not accepted"), "{note}");
    let (status, unknown) = client
        .get("/fhir/CommunicationRequest/$tracking?transaction-id=00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(
        (status, &unknown["issue"][0]["expression"][0]),
        (404, &json!("transaction-id"))
    );
    engine.stop().await;
}

/// The python-hl7 document receiver (`tests/peers/document_receiver.py`), killed when dropped.
struct PythonEhr {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl PythonEhr {
    fn start(log: &Path) -> PythonEhr {
        let python = common::python_peers();
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/peers/document_receiver.py"))
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the python receiver");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port: u16 = loop {
            let line = lines
                .next()
                .expect("the receiver printed its port")
                .expect("line");
            if let Some(port) = line.strip_prefix("PORT ") {
                break port.trim().parse().expect("port");
            }
        };
        PythonEhr {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log: log.to_path_buf(),
        }
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for PythonEhr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn ok_ten_mib_pdf_reaches_python_hl7_as_oru_and_mdm_with_the_same_bytes() {
    let logs = tempfile::tempdir().expect("dir");
    let ehr = PythonEhr::start(&logs.path().join("received.jsonl"));
    let (_dir, engine, client) = engine_with_patient(&documents_toml(
        ehr.addr,
        &["oru-r01-document.toml", "mdm-t02.toml"],
        "",
        "",
    ))
    .await;
    let (patient, encounter) = client.ids().await;
    let document = pdf(10 * 1024 * 1024);
    let digest = {
        use sha2::Digest as _;
        format!("{:x}", sha2::Sha256::digest(&document))
    };
    let (status, answer) = client
        .send(&parameters(
            &patient,
            &[
                json!({"name": "context", "valueReference": {"reference": format!("Encounter/{encounter}")}}),
                json!({"name": "document-type", "valueCoding": {"system": "http://loinc.org", "code": "57833-6"}}),
                json!({"name": "sender-identifier", "valueIdentifier": {"value": "10003456789"}}),
            ],
            &document,
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    let transaction = transaction_id(&answer);
    client
        .wait_status(&transaction, &["completed", "completed"])
        .await;
    let records = ehr.records();
    assert_eq!(records.len(), 2, "{records:?}");
    for (record, message_type) in records.iter().zip(["ORU^R01^ORU_R01", "MDM^T02^MDM_T02"]) {
        assert_eq!(record["type"], message_type, "{record}");
        assert_eq!(record["hl7apy"], "ok", "{record}");
        assert_eq!(record["ed"], json!(["AP", "PDF", "Base64"]), "{record}");
        assert_eq!(record["size"], document.len(), "{record}");
        assert_eq!(record["sha256"], digest.as_str(), "{record}");
    }
    assert!(
        records[1]["segments"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("TXA")))
    );
    engine.stop().await;
}

#[tokio::test]
async fn ok_curl_client_walks_the_scenario() {
    let (peer, _received) = ehr_peer().await;
    let (dir, engine, _client) =
        engine_with_patient(&documents_toml(peer, &["oru-r01-document.toml"], "", "")).await;
    let pdf_path = dir.path().join("letter.pdf");
    std::fs::write(&pdf_path, pdf(100 * 1024)).expect("write pdf");
    let output = tokio::time::timeout(
        PATIENCE + Duration::from_secs(10),
        tokio::process::Command::new("bash")
            .arg(repo_root().join("tests/peers/documents_walkthrough.sh"))
            .arg(format!("http://{}", engine.addr("http")))
            .arg(&pdf_path)
            .env("FHIR_TOKEN", TOKEN)
            .output(),
    )
    .await
    .expect("the walk-through ends in time")
    .expect("run the walk-through");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("status: completed"), "{stdout}");
    engine.stop().await;
}

#[tokio::test]
async fn ok_hprim_destination_writes_hpr_then_the_document_then_ok() {
    let dir = tempfile::tempdir().expect("dir");
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).expect("outbox");
    let text = format!(
        r#"{base}
[fhir]
token = "{TOKEN}"
[outbound.ehr-hprim]
protocol = "file"
folder = "{folder}"
name_template = "{{control_id}}.HPR"
witness_suffix = ".OK"
[documents]
[[documents.route]]
mapping = "{root}/mappings/hprim-oru-document.toml"
destination = "ehr-hprim"
"#,
        base = common::base_toml(),
        folder = outbox.display(),
        root = repo_root().display()
    );
    let engine = start_engine(config(dir.path(), &text)).await;
    let ack = send_adt(engine.addr("adt-in"), &sample(A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA"), "{ack}");
    let client = Client::new(engine.addr("http"));
    let patient = wait_for("the patient", || {
        let client = client.clone();
        async move {
            let (_, found) = client.get("/fhir/Patient?identifier=100001").await;
            found["entry"][0]["resource"]["id"]
                .as_str()
                .map(str::to_string)
        }
    })
    .await;
    // Watch the folder while the document is written: no state may show the document
    // before the message, or the witness before both.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (outbox, watching) = (outbox.clone(), watching.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let mut names: Vec<String> = std::fs::read_dir(&outbox)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| !n.ends_with(".tmp"))
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                if seen.last() != Some(&names) {
                    seen.push(names);
                }
            }
            seen
        })
    };
    let document = pdf(4 * 1024 * 1024);
    let (status, answer) = client.send(&parameters(&patient, &[], &document)).await;
    assert_eq!(status, 200, "{answer}");
    client
        .wait_status(&transaction_id(&answer), &["completed"])
        .await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let states = watcher.join().expect("watcher");
    for state in &states {
        let has = |ext: &str| state.iter().any(|n| n.ends_with(ext));
        assert!(
            !has(".pdf") || has(".HPR"),
            "the document before the message: {states:?}"
        );
        assert!(
            !has(".OK") || (has(".HPR") && has(".pdf")),
            "the witness too early: {states:?}"
        );
    }
    let last = states.last().expect("a state");
    assert_eq!(last.len(), 3, "{last:?}");
    let hpr = last.iter().find(|n| n.ends_with(".HPR")).expect("hpr");
    let stem = hpr.trim_end_matches(".HPR");
    assert!(last.contains(&format!("{stem}.pdf")) && last.contains(&format!("{stem}.OK")));
    assert_eq!(
        std::fs::read(outbox.join(format!("{stem}.pdf"))).expect("pdf"),
        document
    );
    let message = std::fs::read(outbox.join(hpr)).expect("hpr");
    let text = String::from_utf8_lossy(&message);
    assert!(
        text.contains(&format!("OBX|1|FIC|11488-4~Consult note||{stem}.pdf|")),
        "{text}"
    );
    assert!(
        text.starts_with("H|") && text.contains("\r\nP|1|100001|"),
        "{text}"
    );
    engine.stop().await;
}

//! The launch endpoints over real TCP: axum served on `127.0.0.1:0` with connect info, an
//! in-memory census and a fake Posos that records the exact JSON it receives.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordobridge::http::{
    AllowList, CORRELATION_HEADER, LaunchContext, LaunchFailure, LaunchSettings, LaunchState,
    PatientContext, PatientKey, PososApi, PractitionerContext, SigningSecret, UnknownPatient,
    router, shipped_guide, shipped_scan_token, sign_launch_url,
};
use rstest::rstest;
use serde_json::{Value, json};
use uuid::Uuid;

const POSOS_URL: &str = "https://app.posos.test/scan/session-123";
const SECRET: &[u8] = b"test-secret-test-secret-test-sec";

#[derive(Default)]
struct Census {
    patients: HashMap<PatientKey, PatientContext>,
    practitioners: HashMap<String, PractitionerContext>,
}

impl LaunchContext for Census {
    async fn patient(&self, key: PatientKey) -> Result<Option<PatientContext>, String> {
        Ok(self.patients.get(&key).cloned())
    }
    async fn practitioner(&self, rpps: &str) -> Result<Option<PractitionerContext>, String> {
        Ok(self.practitioners.get(rpps).cloned())
    }
}

struct FakePosos {
    answer: Result<String, LaunchFailure>,
    scan_bodies: Mutex<Vec<Value>>,
    guide_bodies: Mutex<Vec<Value>>,
}

impl PososApi for FakePosos {
    async fn scan_token(&self, body: Value) -> Result<String, LaunchFailure> {
        self.scan_bodies.lock().unwrap().push(body);
        self.answer.clone()
    }
    async fn prepare_guide(&self, body: Value) -> Result<String, LaunchFailure> {
        self.guide_bodies.lock().unwrap().push(body);
        self.answer.clone()
    }
}

fn census() -> Census {
    let patient = PatientContext {
        ipp: "800123".into(),
        nda: Some("2400555".into()),
        ins: Some("180057512345678".into()),
        family: "MARTIN".into(),
        given: "Claire".into(),
        birth_date: Some("1980-05-07".into()),
        sex: Some("F".into()),
        unit: Some("CARDIO".into()),
        attending: None,
    };
    let mut census = Census::default();
    census
        .patients
        .insert(PatientKey::Ipp("800123".into()), patient.clone());
    census
        .patients
        .insert(PatientKey::Ins("180057512345678".into()), patient);
    census.practitioners.insert(
        "10101010101".into(),
        PractitionerContext {
            rpps: "10101010101".into(),
            family: "DURAND".into(),
            given: "Paul".into(),
        },
    );
    census
}

struct Server {
    base: String,
    posos: Arc<FakePosos>,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    answer: Result<String, LaunchFailure>,
    tune: impl FnOnce(&mut LaunchSettings),
) -> Server {
    let posos = Arc::new(FakePosos {
        answer,
        scan_bodies: Mutex::new(Vec::new()),
        guide_bodies: Mutex::new(Vec::new()),
    });
    let mut settings = LaunchSettings::new(shipped_scan_token().unwrap(), shipped_guide().unwrap());
    tune(&mut settings);
    let state = LaunchState::new(Arc::new(census()), Arc::clone(&posos), settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Server {
        base: format!("http://{addr}"),
        posos,
        client,
        task,
    }
}

struct Answer {
    status: u16,
    location: Option<String>,
    correlation_id: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Server {
    async fn get(&self, path_and_query: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let location = header("location");
        let correlation_id = header(CORRELATION_HEADER);
        let content_type = header("content-type");
        Answer {
            status: response.status().as_u16(),
            location,
            correlation_id,
            content_type,
            body: response.text().await.unwrap(),
        }
    }

    fn scan_bodies(&self) -> Vec<Value> {
        self.posos.scan_bodies.lock().unwrap().clone()
    }
}

/// The correlation id is a v4 UUID, in the header and on the page.
fn assert_error_page(answer: &Answer) {
    let id = answer
        .correlation_id
        .as_deref()
        .expect("x-correlation-id header");
    let uuid = Uuid::parse_str(id).unwrap();
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(
        answer.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(
        answer
            .body
            .contains(&format!("<code id=\"correlation-id\">{id}</code>")),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn ok_scan_redirects_with_the_exact_body_sent_to_posos() {
    let server = serve(Ok(POSOS_URL.into()), |_| {}).await;
    let answer = server
        .get("/launch/scan?ipp=800123&rpps=10101010101&first_name=J%C3%A9r%C3%B4me&last_name=DE+LA+TOUR")
        .await;
    assert_eq!(answer.status, 302, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some(POSOS_URL));
    assert!(answer.correlation_id.is_some());
    assert_eq!(
        server.scan_bodies(),
        vec![json!({
            "first_name": "Jérôme",
            "last_name": "DE LA TOUR",
            "rpps": "10101010101",
            "facilitySlug": "ch-exemple",
            "patientId": "800123",
        })]
    );
}

#[tokio::test]
async fn ok_names_from_practitioner_lookup() {
    let server = serve(Ok(POSOS_URL.into()), |_| {}).await;
    let answer = server
        .get("/launch/scan?ins=180057512345678&rpps=10101010101")
        .await;
    assert_eq!(answer.status, 302, "{}", answer.body);
    assert_eq!(
        server.scan_bodies(),
        vec![json!({
            "first_name": "Paul",
            "last_name": "DURAND",
            "rpps": "10101010101",
            "facilitySlug": "ch-exemple",
            "patientId": "800123",
        })]
    );
}

#[tokio::test]
async fn ok_custom_mapping_uses_launch_id_and_nda() {
    let mapping = ordobridge::mapping::Mapping::load(
        "[message]\nformat = \"json\"\ninput = \"launch\"\n\
         [[segment]]\nid = \"/\"\n[segment.fields]\n\
         first_name = { value = \"user.first_name\", required = true }\n\
         last_name = { value = \"user.last_name\", required = true }\n\
         rpps = { value = \"user.rpps\", required = true }\n\
         facilitySlug = \"'chu-test'\"\n\
         patientId = { value = \"patient.nda | default(patient.ipp)\", required = true }\n\
         externalId = { value = \"launch.id\", required = true }\n",
        std::path::Path::new("test.toml"),
    )
    .unwrap();
    let server = serve(Ok(POSOS_URL.into()), |s| s.mapping = mapping).await;
    let answer = server.get("/launch/scan?ipp=800123&rpps=10101010101").await;
    assert_eq!(answer.status, 302);
    let body = server.scan_bodies().pop().unwrap();
    assert_eq!(body["patientId"], "2400555");
    assert_eq!(body["facilitySlug"], "chu-test");
    assert_eq!(
        body["externalId"].as_str(),
        answer.correlation_id.as_deref()
    );
}

#[tokio::test]
async fn err_unknown_patient_page() {
    let server = serve(Ok(POSOS_URL.into()), |_| {}).await;
    let answer = server.get("/launch/scan?ipp=999&rpps=10101010101").await;
    assert_eq!(answer.status, 404);
    assert_error_page(&answer);
    assert!(
        answer.body.contains("<h1>Patient inconnu</h1>"),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("<h2>Unknown patient</h2>"));
    assert!(answer.body.contains("(ipp 999)"));
    assert!(server.scan_bodies().is_empty());
}

#[tokio::test]
async fn ok_unknown_patient_fallback_launches_with_raw_identifiers() {
    let server = serve(Ok(POSOS_URL.into()), |s| {
        s.unknown_patient = UnknownPatient::Fallback;
    })
    .await;
    let answer = server
        .get("/launch/scan?ipp=999&nda=V42&rpps=10101010101")
        .await;
    assert_eq!(answer.status, 302, "{}", answer.body);
    assert_eq!(
        server.scan_bodies(),
        vec![json!({
            "first_name": "Paul",
            "last_name": "DURAND",
            "rpps": "10101010101",
            "facilitySlug": "ch-exemple",
            "patientId": "999",
        })]
    );
}

#[rstest]
#[case::err_unreachable(LaunchFailure::Unreachable("connection refused".into()), 502, "Posos est injoignable")]
#[case::err_timeout(LaunchFailure::Timeout("no answer in 10s".into()), 504, "Posos ne répond pas")]
#[case::err_bad_request(LaunchFailure::BadRequest { parameter: Some("rpps".into()), detail: "rpps: 11 digits expected".into() }, 400, "Posos a refusé la donnée « rpps »")]
#[case::err_bad_request_no_parameter(LaunchFailure::BadRequest { parameter: None, detail: String::new() }, 400, "Posos a refusé les données envoyées")]
#[case::err_unauthorized(LaunchFailure::Unauthorized("401 invalid identity token".into()), 502, "Accès à Posos refusé")]
#[case::err_other(LaunchFailure::Other("500".into()), 502, "Erreur du service Posos")]
#[tokio::test]
async fn err_posos_failure_pages(
    #[case] failure: LaunchFailure,
    #[case] status: u16,
    #[case] title: &str,
) {
    let server = serve(Err(failure), |_| {}).await;
    let answer = server.get("/launch/scan?ipp=800123&rpps=10101010101").await;
    assert_eq!(answer.status, status);
    assert_error_page(&answer);
    assert!(answer.body.contains(title), "{}", answer.body);
    assert_eq!(server.scan_bodies().len(), 1);
}

#[tokio::test]
async fn ok_guide_redirects_with_the_exact_body() {
    let server = serve(Ok(POSOS_URL.into()), |_| {}).await;
    let answer = server
        .get("/launch/guide/insuffisance-renale?rpps=10101010101&ucds=3400893826706,3400892088310&ucds=3400891996128")
        .await;
    assert_eq!(answer.status, 302, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some(POSOS_URL));
    assert_eq!(
        *server.posos.guide_bodies.lock().unwrap(),
        vec![json!({
            "rpps": "10101010101",
            "first_name": "Paul",
            "last_name": "DURAND",
            "guide": "insuffisance-renale",
            "ucds": ["3400893826706", "3400892088310", "3400891996128"],
        })]
    );
}

#[tokio::test]
async fn err_loopback_outside_allow_list_is_forbidden() {
    let server = serve(Ok(POSOS_URL.into()), |s| {
        s.allow_list = AllowList::parse(&["10.0.0.0/8"]).unwrap();
    })
    .await;
    let answer = server.get("/launch/scan?ipp=800123&rpps=10101010101").await;
    assert_eq!(answer.status, 403);
    assert_error_page(&answer);
    assert!(
        answer
            .body
            .contains("address 127.0.0.1 is not in the launch allow-list")
    );
    assert!(server.scan_bodies().is_empty());
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn signed(path: &str, exp: i64) -> String {
    sign_launch_url(
        SECRET,
        path,
        &[("ipp", "800123"), ("rpps", "10101010101")],
        exp,
    )
}

#[rstest]
#[case::ok_good(signed("/launch/scan", now() + 120), 302, None)]
#[case::err_bad(signed("/launch/scan", now() + 120).replace("ipp=800123", "ipp=800124"), 403, Some("the signature does not match the link"))]
#[case::err_other_path(signed("/launch/guide/x", now() + 120).replace("/launch/guide/x", "/launch/scan"), 403, Some("the signature does not match the link"))]
#[case::err_expired(signed("/launch/scan", now() - 5), 403, Some("the link expired at unix time"))]
#[case::err_missing(
    String::from("/launch/scan?ipp=800123&rpps=10101010101"),
    403,
    Some("the link is not signed and signatures are required")
)]
#[tokio::test]
async fn signature_required(
    #[case] link: String,
    #[case] status: u16,
    #[case] reason: Option<&str>,
) {
    let server = serve(Ok(POSOS_URL.into()), |s| {
        s.signing_secret = Some(SigningSecret::new(SECRET));
        s.require_signature = true;
    })
    .await;
    let answer = server.get(&link).await;
    assert_eq!(answer.status, status, "{}", answer.body);
    if let Some(reason) = reason {
        assert_error_page(&answer);
        assert!(answer.body.contains("Lancement refusé"));
        assert!(answer.body.contains(reason), "{}", answer.body);
        assert!(server.scan_bodies().is_empty());
    } else {
        assert_eq!(server.scan_bodies().len(), 1);
    }
}

#[tokio::test]
async fn ok_health() {
    let server = serve(Ok(POSOS_URL.into()), |_| {}).await;
    let answer = server.get("/health").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&answer.body).unwrap(),
        json!({"status": "ok"})
    );
}

/// A `MakeWriter` that appends every log line to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn ok_logs_carry_the_correlation_id_and_no_phi_above_trace() {
    // A process-wide subscriber interested in debug: without one, a callsite first hit by a
    // test running in parallel (no subscriber there) can be cached as "never", and this
    // test's own subscriber then misses its lines (tracing's per-callsite interest cache).
    static BASELINE: std::sync::Once = std::sync::Once::new();
    BASELINE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(std::io::sink)
                .finish(),
        );
    });
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = serve(
        Err(LaunchFailure::BadRequest {
            parameter: Some("patientId".into()),
            detail: "patientId 800123 unknown for MARTIN".into(),
        }),
        |_| {},
    )
    .await;
    let answer = server.get("/launch/scan?ipp=800123&rpps=10101010101").await;
    assert_eq!(answer.status, 400);
    let id = answer.correlation_id.unwrap();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("posos_bad_request"), "{text}");
    assert!(!text.contains("800123"), "PHI in logs: {text}");
    assert!(!text.contains("MARTIN"), "PHI in logs: {text}");
}

#[rstest]
#[case::err_unknown_source(
    "patientId    = { value = \"patient.ipn\", required = true }",
    "scan-token.toml:11:26: `segment[1].fields.patientId`: unknown name `patient.ipn` at character 1: expected `patient.ipp`, `patient.nda`"
)]
#[case::err_variable(
    "patientId    = \"${PATIENT}\"",
    "scan-token.toml:11:16: `segment[1].fields.patientId`: unexpected `${` at character 1: `${…}` is not expanded in mapping files: write the value, as a text in quotes"
)]
#[case::err_old_format(
    "[fields]\npatientId = { from = \"patient.ipp\" }",
    "scan-token.toml:1:2: `fields`: this is a scan-token mapping in the old format (`[fields]` with `from`, `value` and `default`), which ordobridge no longer reads: run `ordobridge mapping upgrade "
)]
fn err_mapping_file_names_file_line_and_key(#[case] line: &str, #[case] expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scan-token.toml");
    let text = if line.starts_with("[fields]") {
        format!("{line}\n")
    } else {
        format!(
            "[message]\n\
             format = \"json\"\n\
             input = \"launch\"\n\
             [[segment]]\n\
             id = \"/\"\n\
             [segment.fields]\n\
             first_name   = {{ value = \"user.first_name\", required = true }}\n\
             last_name    = {{ value = \"user.last_name\", required = true }}\n\
             rpps         = {{ value = \"user.rpps\", required = true }}\n\
             facilitySlug = \"'ch-exemple'\"\n\
             {line}\n"
        )
    };
    std::fs::write(&path, text).unwrap();
    let message = ordobridge::config::read_mapping(&path)
        .unwrap_err()
        .to_string();
    let expected = format!("{}/{expected}", dir.path().display());
    assert!(
        message.starts_with(&expected),
        "{message}\nexpected: {expected}"
    );
}

#[test]
fn ok_shipped_mapping_file_loads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let context = json!({
        "user": {"rpps": "10101010101", "first_name": "Paul", "last_name": "DURAND"},
        "patient": {"ipp": "800123", "nda": "2400555"},
        "launch": {"id": "l-1", "guide": "g", "ucds": ["1"]},
    });
    for (file, shipped) in [
        ("mappings/scan-token.toml", shipped_scan_token().unwrap()),
        ("mappings/guide.toml", shipped_guide().unwrap()),
    ] {
        let from_file = ordobridge::config::read_mapping(&root.join(file)).unwrap();
        assert_eq!(
            from_file.apply_json(&context).unwrap(),
            shipped.apply_json(&context).unwrap(),
            "{file}"
        );
    }
}

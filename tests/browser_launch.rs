//! Issue 3 in a real browser: headless Chromium (the system's, or `@sparticuz/chromium` installed
//! by the test: see `common::browser`), driven by playwright-core from
//! `tests/browser/launch.mjs`, opens the EHR's launch URL from an opener page, follows the
//! 302 to the built-in Posos simulator's Scan & Go page, checks that it names the patient and
//! the user, clicks "Import to DPI" and waits for `#success`. The simulator then pushes a FHIR
//! Bundle to a receiver started here, and the page posts the outcome to its opener.
//!
//! Chromium and node are killed by PID when the test ends, pass or fail; the browser's profile
//! is a fresh temp folder removed at the end.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Html;
use axum::routing::{get, post};
use common::A01_SAMPLE;
use ordobridge::config::Config;
use serde_json::Value;
use tokio::net::TcpListener;

/// One playwright wait (navigation, click, URL hash, message).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole Node script, Chromium's start and stop included.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
const PUSH_TOKEN: &str = "browser-test-push-token-0f8e2d6c4b1a9";
const IPP: &str = "100001";

/// The EHR side: an opener page that opens the launch URL in a popup and records the
/// `message` events it receives, and the FHIR push endpoint the simulator imports into.
const OPENER_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EHR (test opener)</title></head>
<body><h1>EHR</h1><button id="launch" type="button">Posos Scan &amp; Go</button>
<pre id="log"></pre>
<script>
window.received = [];
const launch = new URLSearchParams(location.search).get('launch');
document.getElementById('launch').addEventListener('click', () => {
  window.open(launch, 'posos');
});
window.addEventListener('message', (event) => {
  window.received.push({ origin: event.origin, data: event.data });
  document.getElementById('log').textContent = JSON.stringify(window.received);
});
</script></body></html>
"#;

/// One push the receiver got.
#[derive(Debug, Clone)]
struct Push {
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

type Pushes = Arc<Mutex<Vec<Push>>>;

async fn receive_push(State(pushes): State<Pushes>, headers: HeaderMap, body: Bytes) -> String {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    pushes.lock().expect("pushes lock").push(Push {
        authorization: text(header::AUTHORIZATION),
        content_type: text(header::CONTENT_TYPE),
        body,
    });
    r#"{"resourceType":"Bundle","type":"transaction-response"}"#.to_owned()
}

fn receiver(pushes: Pushes) -> Router {
    Router::new()
        .route("/opener", get(|| async { Html(OPENER_PAGE) }))
        .route("/fhir", post(receive_push))
        .with_state(pushes)
}

/// The daemon's configuration: MLLP ADT in, HTTP, the launch and the simulator pushing to
/// `push_url` with [`PUSH_TOKEN`].
fn config(dir: &Path, push_url: &str) -> Config {
    let simulator = format!("push_url = \"{push_url}\"\npush_token = \"{PUSH_TOKEN}\"");
    common::config(
        dir,
        &(common::base_toml() + &common::simulator_toml(&simulator)),
    )
}

/// Minimal percent-encoding for a query value (the launch URL is plain ASCII).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_launch_imports_to_dpi_and_pushes_the_bundle() {
    // Find or install playwright-core and Chromium first: a missing node or npm, or a failed
    // install, fails here saying which.
    let browser = tokio::task::spawn_blocking(common::browser::browser)
        .await
        .expect("provision the browser");
    eprintln!("browser: {browser:?}");

    let pushes: Pushes = Arc::default();
    let push_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let receiver_addr = push_listener.local_addr().expect("addr");
    let receiver_task =
        tokio::spawn(axum::serve(push_listener, receiver(pushes.clone())).into_future());

    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path(), &format!("http://{receiver_addr}/fhir"));
    let engine = common::start_engine(config).await;
    let http_addr = engine.addr("http");

    let ack = common::send_adt(engine.addr("adt-in"), &common::sample(A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|SYN0002"));

    // The census is fed just behind the ACK: wait until the launch knows the patient (this
    // opens one simulator session of its own; the browser opens another).
    let query = format!("ipp={IPP}&rpps=10003456789&first_name=Pierre&last_name=Leblanc");
    let launch = format!("http://{http_addr}/launch/scan?{query}");
    common::launch_until_redirect(http_addr, &query).await;

    // The browser part, off the runtime's workers (it blocks on the Node process).
    let profile = tempfile::Builder::new()
        .prefix("ob-chromium-profile-")
        .tempdir()
        .expect("profile dir");
    let opener_url = format!(
        "http://{receiver_addr}/opener?launch={}",
        query_escape(&launch)
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/launch.mjs");
    let profile_path = profile.path().to_path_buf();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        let mut node = Command::new("node");
        node.arg(&script);
        browser.set_env(&mut node);
        node.env("USER_DATA_DIR", &profile_path)
            .env("OPENER_URL", &opener_url)
            .env("STEP_TIMEOUT_MS", STEP_TIMEOUT.as_millis().to_string())
            .env("TOTAL_TIMEOUT_MS", SCRIPT_TIMEOUT.as_millis().to_string());
        let marker = profile_path.to_string_lossy().into_owned();
        common::Script::spawn(&mut node, Some(marker)).wait(SCRIPT_TIMEOUT + Duration::from_secs(5))
    })
    .await
    .expect("browser script");
    let browser_time = started.elapsed();
    assert!(
        output.status.is_some_and(|s| s.success()),
        "launch.mjs failed ({:?}) after {browser_time:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
    let summary: Value = serde_json::from_str(output.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "launch.mjs printed no JSON summary ({e}):\n{}\nstderr:\n{}",
            output.stdout, output.stderr
        )
    });
    let context = format!("summary: {summary:#}\nstderr:\n{}", output.stderr);

    // The popup went through the launch's 302 to the simulator page.
    let simulator_page = format!("http://{http_addr}/simulator/scan/");
    let responses = summary["responses"].as_array().expect("responses");
    let status_of = |prefix: &str| {
        responses
            .iter()
            .find(|r| r["url"].as_str().is_some_and(|u| u.starts_with(prefix)))
            .and_then(|r| r["status"].as_u64())
    };
    assert_eq!(status_of(&launch), Some(302), "{context}");
    assert_eq!(status_of(&simulator_page), Some(200), "{context}");
    let page = &summary["page"];
    assert!(
        page["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&simulator_page)),
        "{context}"
    );
    assert_eq!(page["title"], "Posos simulator: Scan & Go", "{context}");
    assert_eq!(
        page["patient"], IPP,
        "the page names the patient: {context}"
    );
    assert_eq!(
        page["user"], "Pierre Leblanc (RPPS 10003456789)",
        "and the user: {context}"
    );

    // "Import to DPI" succeeded: hash, status text, and the message to the opener.
    let final_url = summary["final_url"].as_str().expect("final_url");
    assert!(
        final_url.starts_with(&simulator_page) && final_url.ends_with("#success"),
        "{context}"
    );
    assert_eq!(summary["result"], "prescription imported", "{context}");
    let messages = summary["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "one postMessage: {context}");
    let message = &messages[0];
    assert_eq!(
        message["origin"],
        format!("http://{http_addr}"),
        "{context}"
    );
    assert_eq!(message["data"]["status"], "success", "{context}");
    assert_eq!(
        message["data"]["prescription"]["patientId"], IPP,
        "{context}"
    );
    let bundle_id = message["data"]["prescription"]["bundleId"]
        .as_str()
        .expect("bundleId")
        .to_owned();

    // The receiver got the FHIR Bundle for that patient, with the bearer token.
    let pushes = pushes.lock().expect("pushes lock").clone();
    assert_eq!(pushes.len(), 1, "one push: {pushes:#?}");
    let push = &pushes[0];
    assert_eq!(
        push.authorization.as_deref(),
        Some(format!("Bearer {PUSH_TOKEN}").as_str())
    );
    assert_eq!(push.content_type.as_deref(), Some("application/fhir+json"));
    let bundle = &push.body;
    assert_eq!(bundle["resourceType"], "Bundle", "{bundle:#}");
    assert_eq!(bundle["type"], "transaction", "{bundle:#}");
    assert_eq!(bundle["id"], bundle_id.as_str(), "{bundle:#}");
    let patient = bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Patient")
        .expect("a Patient entry");
    let partner_ids: Vec<&Value> = patient["identifier"]
        .as_array()
        .expect("identifiers")
        .iter()
        .filter(|i| i["system"] == "id://partner")
        .map(|i| &i["value"])
        .collect();
    assert_eq!(partner_ids, [IPP], "{patient:#}");

    // Nothing of the browser is left running; its profile goes with `profile`.
    common::kill_processes_naming(&profile.path().to_string_lossy());
    drop(profile);
    eprintln!("browser part took {browser_time:?}");

    engine.stop().await;
    receiver_task.abort();
}

/// The launch page (`mode=page`, issue 13): the EHR opens it, it frames the simulator's Scan &
/// Go; "Import to DPI" pushes the bundle to this daemon, which maps it and delivers the ORM to
/// a python-hl7 receiver answering AA; the page shows "ACK AA", live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_launch_page_follows_the_import_to_ack_aa() {
    let browser = tokio::task::spawn_blocking(common::browser::browser)
        .await
        .expect("provision the browser");
    let received_log = tempfile::NamedTempFile::new().expect("receiver log");
    let log_arg = received_log.path().to_string_lossy().into_owned();
    let receiver = tokio::task::spawn_blocking(move || {
        common::peer::PythonPeer::start("python_hl7_receiver.py", &[&log_arg, "0"])
    })
    .await
    .expect("start the python-hl7 receiver");

    let dir = tempfile::tempdir().expect("temp dir");
    let (listeners, mllp_addr, http_addr) = common::bind_listeners().await;
    let simulator =
        format!("push_url = \"http://{http_addr}/fhir\"\npush_token = \"{PUSH_TOKEN}\"");
    let push = format!("token = \"{PUSH_TOKEN}\"");
    let text = common::base_toml()
        + &common::simulator_toml(&simulator)
        + &common::push_to_ehr_toml(receiver.addr, &push);
    let engine = common::InProcess::start(common::config(dir.path(), &text), listeners).await;

    let ack = common::send_adt(mllp_addr, &common::sample(A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|SYN0002"));
    let query = format!("ipp={IPP}&rpps=10003456789&first_name=Pierre&last_name=Leblanc");
    common::launch_until_redirect(http_addr, &query).await;

    let page_url = format!("http://{http_addr}/launch/scan?{query}&mode=page&lang=en");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/launch-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let profile = tempfile::Builder::new()
        .prefix("ob-chromium-profile-")
        .tempdir()
        .expect("profile dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/launch_page.mjs");
    let profile_path = profile.path().to_path_buf();
    let shots_env = shots.clone();
    let total = Duration::from_secs(45);
    let output = tokio::task::spawn_blocking(move || {
        let mut node = Command::new("node");
        node.arg(&script);
        browser.set_env(&mut node);
        node.env("USER_DATA_DIR", &profile_path)
            .env("PAGE_URL", &page_url)
            .env("SCREENSHOT_DIR", &shots_env)
            .env("STEP_TIMEOUT_MS", STEP_TIMEOUT.as_millis().to_string())
            .env("ACK_TIMEOUT_MS", common::PATIENCE.as_millis().to_string())
            .env("TOTAL_TIMEOUT_MS", total.as_millis().to_string());
        let marker = profile_path.to_string_lossy().into_owned();
        common::Script::spawn(&mut node, Some(marker)).wait(total + Duration::from_secs(5))
    })
    .await
    .expect("browser script");
    common::kill_processes_naming(&profile.path().to_string_lossy());
    assert!(
        output.status.is_some_and(|s| s.success()),
        "launch_page.mjs failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
    let summary: Value = serde_json::from_str(output.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "launch_page.mjs printed no JSON summary ({e}):\n{}\nstderr:\n{}",
            output.stdout, output.stderr
        )
    });
    let context = format!("summary: {summary:#}\nstderr:\n{}", output.stderr);

    // The page frames only the Posos origin (the simulator: this daemon) and runs only its
    // own script; nothing was blocked by it.
    let policy = summary["policy"].as_str().expect("policy");
    assert!(
        policy.contains(&format!("frame-src http://{http_addr};")),
        "{context}"
    );
    assert!(policy.contains("script-src 'self';"), "{context}");
    assert_eq!(summary["violations"], serde_json::json!([]), "{context}");
    assert_eq!(
        summary["waiting"], "Waiting for the import from Scan & Go",
        "{context}"
    );
    assert_eq!(
        summary["after_forged"], "",
        "a message from another window is ignored: {context}"
    );

    // Live to the EHR's ACK, in words.
    assert_eq!(summary["state"], "acked", "{context}");
    assert_eq!(
        summary["headline"], "Received by the EHR (ACK AA)",
        "{context}"
    );
    assert_eq!(
        summary["scan_status"], "Scan & Go: import done",
        "{context}"
    );
    let steps: Vec<String> = summary["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect();
    let labels = [
        "Prescription received from Posos",
        "Mapped to an HL7 message",
        "Queued for the EHR",
        "Sent to the EHR",
        "ACK AA from the EHR",
    ];
    assert_eq!(steps.len(), labels.len(), "{context}");
    for (step, label) in steps.iter().zip(labels) {
        assert!(step.starts_with(label), "{step} / {label}: {context}");
    }
    assert!(
        summary["messages"][0]
            .as_str()
            .is_some_and(|m| m.starts_with("ehr-orders : Received by the EHR (ACK AA)")),
        "{context}"
    );
    // The receiver got the ORM of that import.
    let got = std::fs::read_to_string(received_log.path()).unwrap_or_default();
    assert_eq!(got.lines().count(), 1, "{got}");
    assert!(
        shots.join("launch-page-ack.png").exists(),
        "screenshot saved"
    );
    eprintln!("screenshots in {}", shots.display());

    drop(profile);
    engine.stop().await;
    drop(receiver);
}

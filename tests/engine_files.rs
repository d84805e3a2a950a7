//! File-drop channels through the real engine, over real temp folders and a real SQLite file:
//! HL7 files in stable mode, HPRIM files with `.OK` witnesses feeding the census, bad files
//! to `error/` with their reason.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ordobridge::config::Config;
use ordobridge::engine::BoundListeners;
use ordobridge::store::{JournalFilter, JournalSummary, PatientKey, Store, StoreOptions};

const PATIENCE: Duration = Duration::from_secs(20);

struct Running {
    dir: tempfile::TempDir,
    engine: common::InProcess,
}

impl Running {
    async fn start() -> Running {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = r#"
[store]
path = "data/ob.db"
[census]
ipp_authority = "CH_EXEMPLE"
[inbound.hl7-files]
protocol = "file"
folder = "in/hl7"
create_folder = true
patterns = ["*.hl7"]
format = "auto"
ready = "stable"
stable_for = "50ms"
poll_interval = "20ms"
[inbound.hprim-files]
protocol = "file"
folder = "in/hprim"
create_folder = true
patterns = ["*.HPR"]
format = "hprim"
charset = "8859/1"
ready = "witness"
poll_interval = "20ms"
"#;
        let config = Config::from_str_with_env(text, &dir.path().join("ob.toml"), &|_| None)
            .expect("valid config");
        let engine = common::InProcess::start(config, BoundListeners::default()).await;
        Running { dir, engine }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn store(&self) -> Store {
        Store::open(&self.path("data/ob.db"), StoreOptions::default()).expect("store")
    }

    fn journal(&self) -> Vec<JournalSummary> {
        self.store()
            .list_journal(&JournalFilter {
                control_id: None,
                channel: None,
                limit: 0,
            })
            .expect("list")
    }

    async fn stop(self) {
        self.engine.stop().await;
    }
}

/// Polls `check` until it holds or the patience runs out.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn files_under(folder: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in walk(folder) {
        names.push(
            entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    names.sort();
    names
}

fn walk(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_file_is_journaled_then_archived_and_feeds_the_census() {
    let engine = Running::start().await;
    let sample =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/adt/02-a01-admit.hl7"))
            .expect("sample");
    std::fs::write(engine.path("in/hl7/a01.hl7"), &sample).expect("drop");
    eventually("the file is archived", || {
        files_under(&engine.path("in/hl7/archive")) == vec!["a01.hl7".to_string()]
    })
    .await;
    let rows = engine.journal();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].peer, "file:a01.hl7");
    assert_eq!(rows[0].control_id, "SYN0002");
    eventually("the census knows the patient", || {
        engine
            .store()
            .census_patient(&PatientKey::Ipp("100001".to_string()))
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hprim_file_waits_for_its_witness_and_its_p_record_feeds_the_census() {
    let engine = Running::start().await;
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/hprim");
    std::fs::copy(
        samples.join("RES0001.HPR"),
        engine.path("in/hprim/RES0001.HPR"),
    )
    .expect("drop");
    // No witness yet: a few polls go by and the file stays.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(engine.path("in/hprim/RES0001.HPR").exists());
    assert!(engine.journal().is_empty());
    std::fs::write(engine.path("in/hprim/RES0001.OK"), b"").expect("witness");
    eventually("the file and its witness are archived", || {
        files_under(&engine.path("in/hprim/archive"))
            == vec!["RES0001.HPR".to_string(), "RES0001.OK".to_string()]
    })
    .await;
    let rows = engine.journal();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].message_type, "HPRIM ORU");
    assert_eq!(rows[0].control_id, "RES0001.HPR");
    eventually("the census knows the HPRIM patient", || {
        engine
            .store()
            .census_patient(&PatientKey::Ipp("100003".to_string()))
            .ok()
            .flatten()
            .is_some_and(|p| p.used_name.is_some_and(|n| n.given == "HÉLÈNE"))
    })
    .await;
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_goes_to_error_with_its_reason_and_nothing_from_it_is_accepted() {
    let engine = Running::start().await;
    let good = "MSH|^~\\&|DPI|CH|OB|POSOS|2026||ADT^A01|G1|P|2.5\rPID|1||1^^^CH_EXEMPLE^PI\r";
    let bad = "MSH|^~\\&|DPI|CH|OB|POSOS|2026||ADT^A01|B1|P|2.5||||||EBCDIC\rPID|1\r";
    std::fs::write(engine.path("in/hl7/mixed.hl7"), format!("{good}{bad}")).expect("drop");
    eventually("the file is in error/", || {
        engine.path("in/hl7/error/mixed.hl7").exists()
    })
    .await;
    let reason = std::fs::read_to_string(engine.path("in/hl7/error/mixed.hl7.reason"))
        .or_else(|_| std::fs::read_to_string(engine.path("in/hl7/error/mixed.reason")))
        .expect("reason file");
    assert!(reason.contains("message 2 (MSH-10 `B1`)"), "{reason}");
    assert!(
        reason.contains("unsupported charset `EBCDIC` in MSH-18"),
        "{reason}"
    );
    let rows = engine.journal();
    assert_eq!(
        rows.len(),
        1,
        "only the bad message is journaled (rejected): {rows:?}"
    );
    assert_eq!(rows[0].status, "rejected");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_inbox_is_visible_in_status_and_metrics_and_the_daemon_runs_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = r#"
[store]
path = "data/ob.db"
[http]
bind = "127.0.0.1:0"
[inbound.share]
protocol = "file"
folder = "mnt/share-that-is-not-mounted"
poll_interval = "20ms"
"#;
    let config = Config::from_str_with_env(text, &dir.path().join("ob.toml"), &|_| None)
        .expect("valid config");
    let engine = common::InProcess::start(config, BoundListeners::default()).await;
    let http = engine.addr("http");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    let status: serde_json::Value = loop {
        let status: serde_json::Value = client
            .get(format!("http://{http}/status"))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        if status["status"] == "attention" || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["status"], "attention", "{status}");
    let last_error = status["channels"]["share"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(last_error.contains("share-that-is-not-mounted"), "{status}");
    let metrics = client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let scan_errors = metrics
        .lines()
        .find(|l| l.starts_with("ordobridge_inbox_scan_errors_total{channel=\"share\"}"))
        .unwrap_or_else(|| panic!("no scan error metric:\n{metrics}"));
    let count: u64 = scan_errors
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(count >= 1, "{scan_errors}");
    // The daemon runs on and stops cleanly (the inbox tests cover the share coming back).
    engine.stop().await;
}

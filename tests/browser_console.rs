//! Issue 13 in a real browser: headless Chromium (the system's, or `@sparticuz/chromium`
//! installed by the test: see `common::browser`), driven by playwright-core from
//! `tests/browser/console.mjs`, uses the web console of the real engine: log in, watch the
//! dashboard count a message that arrives meanwhile (server-sent events, no reload), search
//! and open it (tree, lineage), resend it and see the EHR's ACK in its lineage, see a POST
//! without the CSRF token refused, log out; a viewer has no resend button and its POST is
//! refused; the French page. Screenshots are saved under `target/console-screenshots/` for
//! humans (not committed).
//!
//! Chromium and node are killed by PID when the test ends, pass or fail.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

const STEP_TIMEOUT: Duration = Duration::from_secs(15);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);
const OPERATOR_PASSWORD: &str = "operator password 42";
const VIEWER_PASSWORD: &str = "viewer password 42";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_console_login_dashboard_search_resend_roles_logout() {
    let browser = tokio::task::spawn_blocking(common::browser::browser)
        .await
        .expect("provision the browser");
    eprintln!("browser: {browser:?}");

    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("dir");
    let operator = ordobridge::console::hash_password(OPERATOR_PASSWORD).expect("hash");
    let viewer = ordobridge::console::hash_password(VIEWER_PASSWORD).expect("hash");
    let text = format!(
        r#"{base}
[outbound.ehr]
protocol = "mllp"
address = "{peer}"
retry_initial = "20ms"
[console]
[console.users]
olga = {{ role = "operator", password_hash = "{operator}" }}
victor = {{ role = "viewer", password_hash = "{viewer}" }}
"#,
        base = common::base_toml()
    );
    let engine = common::start_engine(common::config(dir.path(), &text)).await;

    let profile = tempfile::Builder::new()
        .prefix("ob-chromium-console-")
        .tempdir()
        .expect("profile dir");
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.mjs");
    let message = common::repo_root().join(common::A01_SAMPLE);
    let (http, mllp) = (engine.addr("http"), engine.addr("adt-in"));
    let profile_path = profile.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        let mut node = Command::new("node");
        node.arg(&script);
        browser.set_env(&mut node);
        node.env("USER_DATA_DIR", &profile_path)
            .env("BASE_URL", format!("http://{http}"))
            .env("MLLP_ADDR", mllp.to_string())
            .env("MESSAGE_FILE", &message)
            .env("OPERATOR", "olga")
            .env("OPERATOR_PASSWORD", OPERATOR_PASSWORD)
            .env("VIEWER", "victor")
            .env("VIEWER_PASSWORD", VIEWER_PASSWORD)
            .env("SCREENSHOT_DIR", &screenshots)
            .env("STEP_TIMEOUT_MS", STEP_TIMEOUT.as_millis().to_string())
            .env("TOTAL_TIMEOUT_MS", SCRIPT_TIMEOUT.as_millis().to_string());
        let marker = profile_path.to_string_lossy().into_owned();
        common::Script::spawn(&mut node, Some(marker)).wait(SCRIPT_TIMEOUT + Duration::from_secs(5))
    })
    .await
    .expect("browser script");
    assert!(
        output.status.is_some_and(|s| s.success()),
        "console.mjs failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
    let summary: Value = serde_json::from_str(output.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "console.mjs printed no JSON summary ({e}):\n{}\nstderr:\n{}",
            output.stdout, output.stderr
        )
    });
    let context = format!("summary: {summary:#}\nstderr:\n{}", output.stderr);

    // Logged in; the dashboard counted the message without a reload.
    assert_eq!(summary["dashboard_heading"], "Dashboard", "{context}");
    assert_eq!(summary["journaled_before"], "0", "{context}");
    assert!(
        summary["ack"]
            .as_str()
            .is_some_and(|a| a.contains("MSA|AA|SYN0002")),
        "{context}"
    );
    assert_eq!(summary["journaled_after"], "1", "{context}");
    assert_eq!(summary["same_page"], true, "no reload: {context}");
    assert_eq!(summary["adt_in_received"], "1", "{context}");

    // Found and opened, with its tree and (before the resend) no lineage.
    assert_eq!(summary["results"], 1, "{context}");
    assert!(
        summary["tree_has_pid"].as_str().is_some_and(
            |t| t.contains("Patient Identification") && t.contains("Message Control ID")
        ),
        "{context}"
    );
    assert_eq!(
        summary["lineage_before"], "No outbound message produced.",
        "{context}"
    );

    // CSRF refused; the resend reached the EHR and its ACK shows in the lineage.
    assert_eq!(summary["post_without_csrf"], 403, "{context}");
    assert_eq!(summary["notice"], "Message queued again.", "{context}");
    assert!(
        summary["lineage_status"]
            .as_str()
            .is_some_and(|s| s.starts_with("delivered")),
        "{context}"
    );
    assert!(
        summary["lineage_ack"]
            .as_str()
            .is_some_and(|a| a.contains("MSA|AA|SYN0002")),
        "{context}"
    );
    assert_eq!(
        received.lock().expect("lock").len(),
        1,
        "one delivery: {context}"
    );

    // Logged out: the console sends back to the login page.
    assert_eq!(summary["logged_out"], "You are logged out.", "{context}");
    assert!(
        summary["after_logout_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/console/login")),
        "{context}"
    );

    // The viewer.
    assert_eq!(summary["viewer_resend_buttons"], 0, "{context}");
    assert_eq!(
        summary["viewer_note"], "The message's content (patient data) is for operators only.",
        "{context}"
    );
    assert_eq!(summary["viewer_post"], 403, "{context}");
    assert_eq!(summary["french_heading"], "Tableau de bord", "{context}");

    common::kill_processes_naming(&profile.path().to_string_lossy());
    drop(profile);
    engine.stop().await;
}

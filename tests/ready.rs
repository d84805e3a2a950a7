//! Issue 10, readiness: `GET /ready` answers 200 while the store commits and every
//! destination keeps up; 503 naming the destination when its oldest message waits longer than
//! `alert_after`, and 200 again once the EHR answers. `/status` says `attention` meanwhile,
//! with the head message's attempts and last error. Real loopback sockets, in-process engine.

mod common;

use std::net::SocketAddr;

use serde_json::Value;

const TOKEN: &str = "r3adyT0ken-9c8b7a6f5e4d3c2b1a0f9e8d";
const BUNDLE: &str = "samples/posos/two-drugs-prednisone-taper.json";

async fn get(http: SocketAddr, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{http}{path}"))
        .await
        .expect("get");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_fails_while_a_destination_is_late_and_recovers() {
    // The EHR's port is bound but nobody answers yet: connections hang until the ACK timeout.
    let ehr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ehr_addr = ehr.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("dir");
    let text = common::base_toml()
        + &common::push_to_ehr_toml(
            ehr_addr,
            &format!("token = \"{TOKEN}\"\nhold_unknown_for = \"0s\""),
        )
        .replace(
            "retry_initial = \"20ms\"",
            "retry_initial = \"20ms\"\nretry_max = \"100ms\"\nack_timeout = \"200ms\"\nalert_after = \"1s\"",
        );
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let http = engine.addr("http");
    assert_eq!(
        get(http, "/ready").await,
        (200, serde_json::json!({"status": "ready"}))
    );

    let pushed = reqwest::Client::new()
        .post(format!("http://{http}/fhir"))
        .bearer_auth(TOKEN)
        .body(common::sample(BUNDLE))
        .send()
        .await
        .expect("push");
    assert_eq!(pushed.status(), 200);

    let problems = common::wait_for("/ready to turn 503", || async move {
        let (status, body) = get(http, "/ready").await;
        (status == 503).then_some(body)
    })
    .await;
    let text = problems["problems"][0]
        .as_str()
        .expect("problem")
        .to_string();
    assert!(
        text.starts_with("destination `ehr-orders`: its oldest message has waited "),
        "{problems}"
    );
    assert!(text.ends_with("(alert_after 1 s)"), "{text}");

    let status = common::wait_for(
        "/status to say attention with the head's attempts",
        || async move {
            let (_, body) = get(http, "/status").await;
            let attempts = body["destinations"]["ehr-orders"]["head"]["attempts"].as_u64()?;
            (body["status"] == "attention" && attempts >= 3).then_some(body)
        },
    )
    .await;
    let last_error = status["destinations"]["ehr-orders"]["head"]["last_error"]
        .as_str()
        .expect("last_error");
    assert!(!last_error.is_empty(), "{status}");

    // The EHR comes back: the message is delivered, /ready is 200 again.
    let received = common::ehr_peer_on(ehr);
    common::first_received(&received).await;
    common::wait_for("/ready to turn 200 again", || async move {
        let (status, body) = get(http, "/ready").await;
        (status == 200).then_some(body)
    })
    .await;
    let (_, body) = get(http, "/status").await;
    assert_eq!(body["status"], "ok", "{body}");
    // Which node answers (`[cluster] node_name`, by default the host name), on which store.
    assert_eq!(
        body["node"],
        ordobridge::store::settings::hostname(),
        "{body}"
    );
    assert_eq!(body["store"]["backend"], "sqlite", "{body}");
    engine.stop().await;
}

/// With the intake log (the default), a journal that cannot commit makes the log refuse new
/// MLLP messages (AE) from its first failed copy: `/ready` says so, and turns 200 again once
/// a copy succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_fails_while_the_intake_log_refuses_and_recovers() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(common::config(dir.path(), &common::base_toml())).await;
    let http = engine.addr("http");
    let adt = engine.addr("adt-in");
    let a01 = common::sample(common::A01_SAMPLE);
    assert!(common::send_adt(adt, &a01).await.contains("MSA|AA|"));
    let failing = common::JournalInsertsFail::start(&dir.path().join("data/ob.db"));
    common::wait_for("an AE once a copy failed", || {
        let a01 = a01.clone();
        async move {
            let answer = common::send_adt(adt, &a01).await;
            answer.contains("MSA|AE|").then_some(())
        }
    })
    .await;
    assert_eq!(
        get(http, "/ready").await,
        (
            503,
            serde_json::json!({"status": "not ready", "problems": [
                "store: the intake log refuses MLLP messages (answered AE): copying it into the journal fails; the daemon's log says why"
            ]})
        )
    );
    failing.end();
    common::wait_for("/ready to turn 200 again", || async move {
        (get(http, "/ready").await.0 == 200).then_some(())
    })
    .await;
    engine.stop().await;
}

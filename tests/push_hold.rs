//! Issue 4, unknown patients: a bundle pushed for an IPP the census does not know is held
//! (answered 200, entry `202 Accepted`, visible in `/status` and `/metrics`, nothing queued),
//! then released when the ADT arrives over MLLP (mapped with the census identity), or at the
//! end of the hold with what the bundle says; a held bundle survives a restart. Also the
//! push authentication: bearer and basic, 401 with the challenges.
//!
//! Everything runs over real loopback sockets with the in-process engine on a real SQLite
//! file; the EHR is a small MLLP peer answering AA.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::{Received, adt_for_bundle_patient, wait_for};
use ordobridge::config::Config;
use ordobridge::hl7::Message;
use serde_json::Value;

const BUNDLE: &str = "samples/posos/two-drugs-prednisone-taper.json";

/// The daemon's configuration: MLLP ADT in, HTTP, one MLLP destination, the push endpoint
/// with the shipped ORM^O01 mapping and `push_extra` lines in `[push]`.
fn config(dir: &Path, peer: SocketAddr, push_extra: &str) -> Config {
    // The hold tests push without credentials (the authentication test configures them).
    let push_extra = format!("allow_unauthenticated = true\n{push_extra}");
    let text = common::base_toml() + &common::push_to_ehr_toml(peer, &push_extra);
    // Written too, for the CLI (`ordobridge queue --config`).
    common::config(dir, &text)
}

async fn push(http: SocketAddr, auth: &str) -> reqwest::Response {
    let bundle = common::sample(BUNDLE);
    let mut request = reqwest::Client::new()
        .post(format!("http://{http}/fhir"))
        .body(bundle);
    if !auth.is_empty() {
        request = request.header("authorization", auth);
    }
    request.send().await.expect("push")
}

async fn status(http: SocketAddr) -> Value {
    reqwest::get(format!("http://{http}/status"))
        .await
        .expect("status")
        .json()
        .await
        .expect("status json")
}

async fn metrics(http: SocketAddr) -> String {
    common::metrics_text(http).await.expect("metrics")
}

async fn first_delivered(received: &Received) -> Message<'static> {
    let bytes = common::first_received(received).await;
    Message::parse(Box::leak(bytes.into_boxed_slice())).expect("the ORM parses")
}

fn query(message: &Message<'_>, path: &str) -> Option<String> {
    message.query(path).expect("path").map(|v| v.to_string())
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .expect("db")
        .query_row(sql, [], |row| row.get(0))
        .expect("count")
}

/// Asserts the push was answered 200 with a held entry (`202 Accepted`).
async fn assert_held_answer(response: reqwest::Response) {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let entry = &body["entry"][0]["response"];
    assert_eq!(entry["status"], "202 Accepted", "{body}");
    let diagnostics = entry["outcome"]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default();
    assert!(
        diagnostics.starts_with("held: the patient is not in the census yet"),
        "{body}"
    );
    assert!(
        !diagnostics.contains("IPP000042"),
        "no PHI in the answer: {body}"
    );
}

/// Sends [`adt_for_bundle_patient`] to the engine's `adt-in` and checks the AA.
async fn send_adt(engine: &common::InProcess) {
    let ack = common::send_adt(engine.addr("adt-in"), &adt_for_bundle_patient()).await;
    assert!(ack.contains("MSA|AA|HOLD0001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_until_the_adt_arrives_then_mapped_with_the_census_identity() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("data/ob.db");
    let engine = common::start_engine(config(dir.path(), peer, "hold_unknown_for = \"15m\"")).await;
    let http = engine.addr("http");

    assert_held_answer(push(http, "").await).await;
    let s = wait_for("the hold in /status", || async {
        let s = status(http).await;
        (s["push"]["held"] == 1).then_some(s)
    })
    .await;
    assert!(s["push"]["oldest_held_seconds"].is_u64(), "{s}");
    assert!(metrics(http).await.contains("\nordobridge_push_held 1\n"));
    assert_eq!(
        count(&db, "SELECT count(*) FROM outbound"),
        0,
        "nothing queued"
    );
    // Pushed again while held: same answer, not held twice.
    assert_held_answer(push(http, "").await).await;
    assert_eq!(count(&db, "SELECT count(*) FROM push_holds"), 1);

    send_adt(&engine).await;
    let orm = first_delivered(&received).await;
    assert_eq!(query(&orm, "PID-3.1").as_deref(), Some("IPP000042"));
    assert_eq!(
        query(&orm, "PID-5.1").as_deref(),
        Some("LEGRAND"),
        "name from the ADT"
    );
    assert_eq!(
        query(&orm, "PV1-19").as_deref(),
        Some("900042"),
        "NDA from the ADT"
    );
    let s = status(http).await;
    assert_eq!(s["push"]["held"], 0, "{s}");
    assert_eq!(s["push"]["released"]["patient known"], 1, "{s}");
    assert!(
        metrics(http)
            .await
            .contains("ordobridge_push_released_total{reason=\"patient known\"} 1\n")
    );
    // Pushed again once released: already queued, not queued twice.
    let again: Value = push(http, "").await.json().await.expect("json");
    assert_eq!(again["entry"][0]["response"]["status"], "201 Created");
    engine.stop().await;
    assert_eq!(count(&db, "SELECT count(*) FROM outbound"), 1);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM push_holds WHERE released_reason = 'patient known'"
        ),
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM journal WHERE channel = 'posos-push' AND status = 'processed'"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_expires_and_the_bundle_goes_with_what_it_says() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = common::start_engine(config(dir.path(), peer, "hold_unknown_for = \"1s\"")).await;
    let http = engine.addr("http");

    assert_held_answer(push(http, "").await).await;
    let orm = first_delivered(&received).await;
    assert_eq!(query(&orm, "PID-3.1").as_deref(), Some("IPP000042"));
    assert_eq!(
        query(&orm, "PID-5.1").as_deref(),
        Some("MARTIN"),
        "name from the bundle"
    );
    assert_eq!(
        query(&orm, "PV1-19"),
        None,
        "no NDA: the census does not know the patient"
    );
    let s = status(http).await;
    assert_eq!(s["push"]["held"], 0, "{s}");
    assert_eq!(s["push"]["released"]["hold expired"], 1, "{s}");
    engine.stop().await;
    assert_eq!(
        count(
            &dir.path().join("data/ob.db"),
            "SELECT count(*) FROM push_holds WHERE released_reason = 'hold expired'"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_bundle_survives_a_restart_and_is_released_after_it() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("data/ob.db");
    let engine = common::start_engine(config(dir.path(), peer, "hold_unknown_for = \"15m\"")).await;
    assert_held_answer(push(engine.addr("http"), "").await).await;
    engine.stop().await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM push_holds WHERE released_at IS NULL"
        ),
        1
    );
    // The operator sees it; the IPP only when asked for.
    let file = dir.path().join("ob.toml");
    let file = file.to_str().expect("utf-8 path");
    let listing = common::ordobridge(&["queue", "--config", file]);
    assert!(
        listing.contains(
            "1 pushed bundle(s) held until their patient is known\nJOURNAL ID  HELD SINCE"
        ),
        "{listing}"
    );
    assert!(!listing.contains("IPP000042"), "{listing}");
    let listing = common::ordobridge(&["queue", "--config", file, "--show-phi"]);
    assert!(listing.contains("IPP000042"), "{listing}");

    let engine = common::start_engine(config(dir.path(), peer, "hold_unknown_for = \"15m\"")).await;
    let http = engine.addr("http");
    assert_eq!(status(http).await["push"]["held"], 1);
    assert_eq!(count(&db, "SELECT count(*) FROM outbound"), 0);
    send_adt(&engine).await;
    let orm = first_delivered(&received).await;
    assert_eq!(query(&orm, "PID-5.1").as_deref(), Some("LEGRAND"));
    engine.stop().await;
    assert_eq!(count(&db, "SELECT count(*) FROM outbound"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hold_maps_at_once() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = common::start_engine(config(dir.path(), peer, "hold_unknown_for = \"0s\"")).await;
    let answer: Value = push(engine.addr("http"), "")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(answer["entry"][0]["response"]["status"], "201 Created");
    let orm = first_delivered(&received).await;
    assert_eq!(query(&orm, "PID-5.1").as_deref(), Some("MARTIN"));
    assert_eq!(status(engine.addr("http")).await["push"]["held"], 0);
    engine.stop().await;
}

/// Issue 15: without a hold, the journal row (processed) and its message (control id
/// `OB{journal id}-1`) are committed together before the 200; the same bundle pushed again is
/// answered the same and queued nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hold_one_commit_before_the_answer_and_a_repush_queues_nothing() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = common::start_engine(config(dir.path(), peer, "hold_unknown_for = \"0s\"")).await;
    let db = dir.path().join("data/ob.db");
    let response = push(engine.addr("http"), "").await;
    assert_eq!(response.status(), 200);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let id: i64 = location
        .strip_prefix("Bundle/")
        .and_then(|id| id.parse().ok())
        .expect("Bundle/ID");
    // Committed before the answer: the row processed, its message queued (or sent already).
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM journal WHERE id = {id} AND status = 'processed'")
        ),
        1
    );
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM outbound WHERE control_id = 'OB{id}-1' AND source = 'journal:{id}'"
            )
        ),
        1
    );
    let orm = first_delivered(&received).await;
    assert_eq!(query(&orm, "MSH-10"), Some(format!("OB{id}-1")));
    let again = push(engine.addr("http"), "").await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["location"], location.as_str());
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(count(&db, "SELECT count(*) FROM outbound"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM journal"), 1);
    assert_eq!(
        count(
            &db,
            &format!("SELECT duplicate_count FROM journal WHERE id = {id}")
        ),
        1
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_or_basic_passes_anything_else_is_401_with_the_challenges() {
    let (peer, _received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = common::start_engine(config(
        dir.path(),
        peer,
        "hold_unknown_for = \"0s\"\ntoken = \"t0ken-f3a9c2e1b7d4058a6e2c9b1d7f4a3e5c\"\nbasic_user = \"posos\"\nbasic_password = \"pa:ss\"",
    ))
    .await;
    let http = engine.addr("http");
    use base64::Engine as _;
    let basic = |credentials: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    let cases = [
        ("ok_basic", basic("posos:pa:ss"), 200),
        (
            "ok_bearer",
            "Bearer t0ken-f3a9c2e1b7d4058a6e2c9b1d7f4a3e5c".to_string(),
            200,
        ),
        (
            "ok_scheme_case",
            "bearer t0ken-f3a9c2e1b7d4058a6e2c9b1d7f4a3e5c".to_string(),
            200,
        ),
        ("err_wrong_password", basic("posos:wrong"), 401),
        ("err_wrong_user", basic("other:pa:ss"), 401),
        (
            "err_wrong_token",
            "Bearer t0ken-f3a9c2e1b7d4058a6e2c9b1d7f4a3e5c2".to_string(),
            401,
        ),
        (
            "err_token_as_basic",
            basic("t0ken-f3a9c2e1b7d4058a6e2c9b1d7f4a3e5c"),
            401,
        ),
        ("err_not_base64", "Basic %%%".to_string(), 401),
        ("err_other_scheme", "Digest x".to_string(), 401),
        ("err_none", String::new(), 401),
    ];
    for (name, auth, expected) in cases {
        let response = push(http, &auth).await;
        assert_eq!(response.status(), expected, "{name}");
        if expected != 401 {
            continue;
        }
        let challenges: Vec<String> = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect();
        assert_eq!(
            challenges,
            [
                "Bearer realm=\"ordobridge\"",
                "Basic realm=\"ordobridge\", charset=\"UTF-8\""
            ],
            "{name}"
        );
        let outcome: Value = response.json().await.expect("json");
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{name}");
        assert_eq!(
            outcome["issue"][0]["diagnostics"],
            "missing or wrong credentials: send `Authorization: Bearer` with the push token or \
             `Authorization: Basic` with the push user and password",
            "{name}"
        );
    }
    engine.stop().await;
}

//! Issue 14, pushes on PostgreSQL: the daemon binary on a real PostgreSQL server (started by
//! the test, `common::postgres`) with an MLLP ADT channel, the census, `[push]` holding bundles
//! for unknown patients and an MLLP destination toward an in-test EHR.
//!
//! The sample bundle, with its real `id://partner` identifier, names a patient the census does
//! not know: it is held (answered `202 Accepted`, visible in `/status`, nothing queued), held
//! once when Posos pushes it again; the ADT of the patient over MLLP releases it, mapped with
//! the census identity with the shipped ORM^O01 mapping, and it reaches the EHR once.
//!
//! Two nodes: the push and the ADT taken by the node that runs none of the work, the node that
//! runs it (the census processor, the hold releaser, the destination) is woken across nodes
//! (`LISTEN/NOTIFY`), well before its polls (2 s, 30 s, 5 s).
//!
//! The launch page (`mode=page`) follows the push of its patient through PostgreSQL
//! (`/launch/status/{token}`) until the EHR's ACK AA.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::postgres::TestPostgres;
use common::{Daemon, adt_for_bundle_patient, wait_for};
use ordobridge::hl7::Message;
use ordobridge::store::settings::PostgresSettings;
use ordobridge::store::{JournalFilter, OutboundStatus, Store};
use serde_json::Value;

const BUNDLE: &str = "samples/posos/two-drugs-prednisone-taper.json";

/// The daemon's configuration on `server`: MLLP ADT in, the census, the launch (Posos
/// simulator), `[push]` holding unknown patients, one MLLP destination toward `peer`; this node named `node`.
fn write_config(
    dir: &Path,
    server: &TestPostgres,
    peer: SocketAddr,
    node: &str,
) -> std::path::PathBuf {
    let text = format!(
        r#"[store]
backend = "postgres"
url = "{url}"
retention = "forever"
rejected_retention = "forever"
[inbound.adt-in]
protocol = "mllp"
bind = "127.0.0.1:0"
[census]
ipp_authority = "CH_EXEMPLE"
retention = "forever"
[cluster]
node_name = "{node}"
[log]
level = "info,ordobridge=debug"
format = "json"
[http]
bind = "127.0.0.1:0"
{launch}{push}"#,
        url = server.url(),
        launch = common::simulator_toml(""),
        push = common::push_to_ehr_toml(
            peer,
            "allow_unauthenticated = true\nhold_unknown_for = \"15m\""
        ),
    );
    let path = dir.join("ob.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

async fn push(http: SocketAddr) -> Value {
    push_bytes(http, common::sample(BUNDLE)).await
}

/// The sample bundle as another bundle (its own id): a second prescription.
fn another_bundle() -> Vec<u8> {
    let text = String::from_utf8(common::sample(BUNDLE)).expect("UTF-8 sample");
    assert!(text.contains("\"id\": \"b-0001\""), "the sample changed");
    text.replacen("\"id\": \"b-0001\"", "\"id\": \"b-0002\"", 1)
        .into_bytes()
}

async fn push_bytes(http: SocketAddr, body: Vec<u8>) -> Value {
    let answer = reqwest::Client::new()
        .post(format!("http://{http}/fhir"))
        .body(body)
        .send()
        .await
        .expect("push");
    assert_eq!(answer.status(), 200);
    answer.json().await.expect("json")
}

async fn status(http: SocketAddr) -> Value {
    reqwest::get(format!("http://{http}/status"))
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_held_push_released_by_the_adt_reaches_the_ehr_once_through_postgres() {
    let server = TestPostgres::start();
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), &server, peer, "ob-test-1");
    let daemon = Daemon::start(&config);
    let http = daemon.addr("http");
    let settings = PostgresSettings::from_url(&server.url()).expect("url");
    let store = Store::open_postgres(&settings, false).expect("open the store");

    // Pushed twice (Posos did not see the first answer): held once, nothing queued.
    for _ in 0..2 {
        let body = push(http).await;
        let entry = &body["entry"][0]["response"];
        assert_eq!(
            entry["status"],
            "202 Accepted",
            "{body}\n{}",
            daemon.log_text()
        );
        let diagnostics = entry["outcome"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default();
        assert!(
            diagnostics.starts_with("held: the patient is not in the census yet"),
            "{body}"
        );
    }
    let s = status(http).await;
    assert_eq!(s["push"]["held"], 1, "{s}");
    assert_eq!(s["store"]["backend"], "postgres", "{s}");
    let held = store.held_bundles_async(0).await.expect("held");
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].partner_id, "IPP000042");
    let journal_id = held[0].journal_id;
    assert!(
        store.lineage(journal_id).await.expect("lineage").is_empty(),
        "nothing queued"
    );

    // The ADT over MLLP: the census learns the patient, the releaser maps the bundle with it.
    let ack = common::send_adt(daemon.addr("adt-in"), &adt_for_bundle_patient()).await;
    assert!(ack.contains("MSA|AA|HOLD0001"), "{ack}");
    let orm = common::first_received(&received).await;
    let orm = Message::parse(&orm).expect("the ORM parses");
    assert_eq!(orm.header().message_type, "ORM^O01^ORM_O01");
    assert_eq!(
        orm.query("PID-3.1").expect("path").as_deref(),
        Some("IPP000042")
    );
    assert_eq!(
        orm.query("PID-5.1").expect("path").as_deref(),
        Some("LEGRAND"),
        "name from the ADT"
    );
    assert_eq!(
        orm.query("PV1-19").expect("path").as_deref(),
        Some("900042"),
        "NDA from the ADT"
    );

    wait_for("the message delivered", || {
        let store = store.clone();
        async move {
            let lineage = store.lineage(journal_id).await.expect("lineage");
            (lineage.len() == 1 && lineage[0].status == OutboundStatus::Delivered).then_some(())
        }
    })
    .await;
    let s = status(http).await;
    assert_eq!(s["push"]["held"], 0, "{s}");
    assert_eq!(s["push"]["released"]["patient known"], 1, "{s}");
    // Pushed again once released: already queued, not queued twice.
    let again = push(http).await;
    assert_eq!(
        again["entry"][0]["response"]["status"], "201 Created",
        "{again}"
    );

    let pushes = store
        .list_journal_async(JournalFilter {
            control_id: None,
            channel: Some("posos-push".to_owned()),
            limit: 0,
        })
        .await
        .expect("journal");
    assert_eq!(
        pushes
            .iter()
            .map(|p| (p.id, p.status.as_str()))
            .collect::<Vec<_>>(),
        [(journal_id, "processed")],
        "{pushes:?}"
    );
    assert_eq!(store.lineage(journal_id).await.expect("lineage").len(), 1);
    assert!(store.held_bundles_async(0).await.expect("held").is_empty());
    assert_eq!(received.lock().expect("lock").len(), 1, "delivered once");
    // The releaser and the sweeper of unsettled pushes read PostgreSQL without a complaint.
    let log = daemon.log_text();
    for complaint in [
        "cannot read the held bundles",
        "cannot look for unsettled pushes",
    ] {
        assert!(!log.contains(complaint), "{log}");
    }
    drop(daemon);
    drop(store);
}

/// The nodes owning each leased task, from `/status` (`[{destination, node, live}]`).
async fn owners(http: SocketAddr) -> Vec<(String, String)> {
    let s = status(http).await;
    s["store"]["owners"]
        .as_array()
        .map(|owners| {
            owners
                .iter()
                .filter(|o| o["live"] == true)
                .map(|o| {
                    (
                        o["destination"].as_str().unwrap_or_default().to_owned(),
                        o["node"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_work_taken_by_one_node_wakes_the_node_that_runs_it() {
    let server = TestPostgres::start();
    let (peer, received) = common::ehr_peer().await;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    // Node A starts first and takes every lease; B starts once A has them.
    let node_a = Daemon::start(&write_config(dir_a.path(), &server, peer, "ob-a"));
    let http_a = node_a.addr("http");
    let work = ["@census", "@holds", "ehr-orders"];
    wait_for(
        "node A owning the census, the holds and the destination",
        || async {
            let owners = owners(http_a).await;
            work.iter()
                .all(|w| owners.iter().any(|(d, n)| d == w && n == "ob-a"))
                .then_some(())
        },
    )
    .await;
    let node_b = Daemon::start(&write_config(dir_b.path(), &server, peer, "ob-b"));
    let http_b = node_b.addr("http");

    // The push to B: held there (B journals it and holds it).
    let body = push(http_b).await;
    assert_eq!(
        body["entry"][0]["response"]["status"], "202 Accepted",
        "{body}"
    );
    // The ADT to B: A's processor applies it, A's releaser maps the bundle, A delivers it.
    let sent = Instant::now();
    let ack = common::send_adt(node_b.addr("adt-in"), &adt_for_bundle_patient()).await;
    assert!(ack.contains("MSA|AA|HOLD0001"), "{ack}");
    let orm = common::first_received(&received).await;
    let took = sent.elapsed();
    let orm = Message::parse(&orm).expect("the ORM parses");
    assert_eq!(
        orm.query("PID-5.1").expect("path").as_deref(),
        Some("LEGRAND"),
        "mapped with the census identity"
    );
    eprintln!("ADT to node B -> ORM from node A: {took:?}");
    // Without wakeups, A's processor finds the ADT at its poll (2 s).
    assert!(
        took < Duration::from_secs(10),
        "{took:?}\nA: {}\nB: {}",
        node_a.log_text(),
        node_b.log_text()
    );
    // A's worker delivered and waits for its next poll (5 s): a bundle for the now known
    // patient, pushed to B, mapped and queued there, reaches the EHR well before it.
    let pushed = Instant::now();
    let body = push_bytes(http_b, another_bundle()).await;
    assert_eq!(
        body["entry"][0]["response"]["status"], "201 Created",
        "{body}"
    );
    wait_for("the second ORM", || async {
        (received.lock().expect("lock").len() == 2).then_some(())
    })
    .await;
    let second = pushed.elapsed();
    eprintln!("push to node B -> ORM from node A: {second:?}");
    assert!(
        second < Duration::from_millis(2500),
        "{second:?}: not woken, A waited for its poll\nA: {}\nB: {}",
        node_a.log_text(),
        node_b.log_text()
    );
    let owners = owners(http_b).await;
    assert!(
        work.iter()
            .all(|w| owners.iter().any(|(d, n)| d == w && n == "ob-a")),
        "A still ran all of it: {owners:?}"
    );
    assert_eq!(
        received.lock().expect("lock").len(),
        2,
        "each delivered once"
    );
    drop(node_b);
    drop(node_a);
}

/// The launch page of the bundle's patient, once the census knows it: its status URL.
async fn launch_page(http: SocketAddr) -> String {
    let client = common::no_redirect_client();
    let url = format!(
        "http://{http}/launch/scan?ipp=IPP000042&rpps=10003456789&first_name=Pierre&last_name=Leblanc&mode=page&lang=en"
    );
    let page = wait_for("the launch page", || async {
        let answer = client.get(&url).send().await.expect("launch");
        match answer.status().as_u16() {
            200 => Some(answer.text().await.expect("page")),
            404 => None,
            other => panic!("launch answered {other}: {:?}", answer.text().await),
        }
    })
    .await;
    let start = page.find("data-status=\"").expect("data-status") + "data-status=\"".len();
    let end = start + page[start..].find('"').expect("end of data-status");
    format!("http://{http}{}", &page[start..end])
}

async fn launch_status(url: &str) -> Value {
    let answer = reqwest::get(format!("{url}?lang=en"))
        .await
        .expect("status");
    assert_eq!(answer.status(), 200);
    let body = answer.text().await.expect("body");
    for phi in ["IPP000042", "LEGRAND", "MARTIN", "Claire", "10003456789"] {
        assert!(!body.contains(phi), "the status names `{phi}`: {body}");
    }
    serde_json::from_str(&body).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_launch_page_follows_the_push_to_the_ack_through_postgres() {
    let server = TestPostgres::start();
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(&write_config(dir.path(), &server, peer, "ob-test-1"));
    let http = daemon.addr("http");
    let ack = common::send_adt(daemon.addr("adt-in"), &adt_for_bundle_patient()).await;
    assert!(ack.contains("MSA|AA|HOLD0001"), "{ack}");

    let status = launch_page(http).await;
    assert_eq!(launch_status(&status).await["state"], "waiting");
    // Scan & Go imports: the bundle of the launch's patient, mapped at once (known patient).
    let body = push(http).await;
    assert_eq!(
        body["entry"][0]["response"]["status"], "201 Created",
        "{body}"
    );
    let view = wait_for("the launch page at the EHR's ACK", || async {
        let view = launch_status(&status).await;
        (view["state"] == "acked").then_some(view)
    })
    .await;
    assert_eq!(view["headline"], "Received by the EHR (ACK AA)", "{view}");
    assert_eq!(received.lock().expect("lock").len(), 1);
    drop(daemon);
}

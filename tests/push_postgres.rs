//! Issue 14, pushes on PostgreSQL: the daemon binary on a real PostgreSQL server (started by
//! the test, `common::postgres`) with `[push]` and an MLLP destination toward an in-test EHR.
//! A pushed bundle is journaled, mapped and queued in one transaction, delivered to the EHR
//! once (also when Posos pushes it twice), and `/status` reads the holds from PostgreSQL.
//!
//! The bundle names no `id://partner` identifier, so the push asks nothing of the census (not
//! on PostgreSQL on this branch); the mapping is the shipped ORM^O01 with a fallback IPP.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::postgres::TestPostgres;
use common::{Daemon, wait_for};
use ordobridge::hl7::Message;
use ordobridge::store::settings::PostgresSettings;
use ordobridge::store::{JournalFilter, Store};

const BUNDLE: &str = "samples/posos/two-drugs-prednisone-taper.json";

/// The daemon's configuration on `server`: no inbound channel, `[push]` to one MLLP
/// destination toward `peer`.
fn write_config(dir: &Path, server: &TestPostgres, peer: SocketAddr) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(common::repo_root().join("mappings/orm-o01.toml"))
        .expect("read the shipped mapping");
    let required = "\"census.ipp | default(prescription.patient.partner_id)\"";
    assert!(shipped.contains(required), "the shipped mapping changed");
    let mapping = dir.join("orm-o01.toml");
    std::fs::write(
        &mapping,
        shipped.replace(
            required,
            "\"census.ipp | default(prescription.patient.partner_id) | default('NO-IPP')\"",
        ),
    )
    .expect("write the mapping");
    let text = format!(
        r#"[store]
backend = "postgres"
url = "{url}"
retention = "forever"
rejected_retention = "forever"
[census]
retention = "forever"
[cluster]
node_name = "ob-test-1"
[log]
level = "info,ordobridge=debug"
format = "json"
[http]
bind = "127.0.0.1:0"
[outbound.ehr-orders]
protocol = "mllp"
address = "{peer}"
retry_initial = "20ms"
[push]
allow_unauthenticated = true
[[push.route]]
mapping = "{mapping}"
destination = "ehr-orders"
"#,
        url = server.url(),
        mapping = mapping.display(),
    );
    let path = dir.join("ob.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

/// The sample bundle without its `id://partner` identifier.
fn bundle_without_partner() -> Vec<u8> {
    let text = String::from_utf8(common::sample(BUNDLE)).expect("UTF-8 sample");
    assert!(text.contains("\"id://partner\""), "the sample changed");
    text.replace("\"id://partner\"", "\"urn:oid:1.2.250.1.999.9\"")
        .into_bytes()
}

async fn push(http: SocketAddr, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{http}/fhir"))
        .body(body)
        .send()
        .await
        .expect("push")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_pushed_bundle_reaches_the_ehr_once_through_postgres() {
    let server = TestPostgres::start();
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), &server, peer);
    let daemon = Daemon::start(&config);
    let http = daemon.addr("http");

    // Pushed twice (Posos did not see the first answer): journaled once, queued once.
    for _ in 0..2 {
        let answer = push(http, bundle_without_partner()).await;
        let status = answer.status();
        assert_eq!(
            status,
            200,
            "{:?}\n{}",
            answer.text().await,
            daemon.log_text()
        );
    }

    let orm = common::first_received(&received).await;
    let orm = Message::parse(&orm).expect("the ORM parses");
    assert_eq!(orm.header().message_type, "ORM^O01^ORM_O01");
    assert_eq!(
        orm.query("PID-3.1").expect("path").as_deref(),
        Some("NO-IPP")
    );
    assert!(orm.segment("RXO", 1).is_some());

    // What PostgreSQL holds: the push processed, its message delivered, nothing held.
    let settings = PostgresSettings::from_url(&server.url()).expect("url");
    let store = Store::open_postgres(&settings, false).expect("open the store");
    let pushes = store
        .list_journal_async(JournalFilter {
            control_id: None,
            channel: Some("posos-push".to_owned()),
            limit: 0,
        })
        .await
        .expect("journal");
    assert_eq!(
        pushes.iter().map(|p| p.status.as_str()).collect::<Vec<_>>(),
        ["processed"],
        "{pushes:?}"
    );
    let journal_id = pushes[0].id;
    wait_for("the message delivered", || {
        let store = store.clone();
        async move {
            let lineage = store.lineage(journal_id).await.expect("lineage");
            (lineage.len() == 1
                && lineage[0].status == ordobridge::store::OutboundStatus::Delivered)
                .then_some(())
        }
    })
    .await;
    assert_eq!(received.lock().expect("lock").len(), 1, "delivered once");
    assert!(store.held_bundles_async(0).await.expect("held").is_empty());

    // `/status` reads the holds from PostgreSQL.
    let status: serde_json::Value = reqwest::get(format!("http://{http}/status"))
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["push"]["held"], 0, "{status}");
    assert_eq!(status["store"]["backend"], "postgres", "{status}");
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

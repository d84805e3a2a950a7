//! Issue 10: every journaled push ends `processed`, held or `rejected` — none stays
//! `accepted` behind an error answer or a client that went away.
//!
//! - a bundle that no mapping can take is answered 422 and its journal row is `rejected` with
//!   the mapping's reason, holds on or off (a bundle to hold is refused now, not held);
//! - a bundle journaled but never mapped (the daemon died between the commit and the mapping, or
//!   the client went away) is settled by the sweeper: mapped, queued and delivered.

mod common;

use bytes::Bytes;
use ordobridge::store::{InboundRecord, JournalFilter, RecordStatus, Store, StoreOptions};

const TOKEN: &str = "s3ttle-T0ken-0a1b2c3d4e5f6a7b8c9d0e1f";
const BUNDLE: &str = "samples/posos/two-drugs-prednisone-taper.json";

fn journal_rows(db: &std::path::Path) -> Vec<ordobridge::store::JournalSummary> {
    let store = Store::open(db, StoreOptions::default()).expect("open");
    store
        .list_journal(&JournalFilter {
            limit: 0,
            ..JournalFilter::default()
        })
        .expect("list")
}

#[rstest::rstest]
#[case::holds_off("0s")]
#[case::holds_on("15m")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_no_mapping_can_take_is_rejected_in_the_journal(#[case] hold: &str) {
    let (peer, _received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("dir");
    // A mapping that needs the census NDA: an unknown patient cannot give it.
    let mapping = dir.path().join("needs-nda.toml");
    std::fs::write(
        &mapping,
        "[message]\ntype = \"ORM^O01^ORM_O01\"\nversion = \"2.5\"\ncharset = \"8859/1\"\n\n[[segment]]\nid = \"MSH\"\nfields = { \"MSH-10\" = \"message.control_id\" }\n\n[[segment]]\nid = \"PID\"\nfields = { \"PID-3.1\" = { value = \"census.nda\", required = true } }\n",
    )
    .expect("mapping");
    let text = common::base_toml()
        + &common::push_to_ehr_toml(
            peer,
            &format!("token = \"{TOKEN}\"\nhold_unknown_for = \"{hold}\""),
        )
        .replace(
            &format!("{}/mappings/orm-o01.toml", common::repo_root().display()),
            &mapping.display().to_string(),
        );
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let response = reqwest::Client::new()
        .post(format!("http://{}/fhir", engine.addr("http")))
        .bearer_auth(TOKEN)
        .body(common::sample(BUNDLE))
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 422);
    engine.stop().await;
    let rows = journal_rows(&dir.path().join("data/ob.db"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "rejected", "{:?}", rows[0]);
    let reason = rows[0].reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("channel `posos-push`: no route could map the bundle: "),
        "{reason}"
    );
    let holds: i64 = rusqlite::Connection::open(dir.path().join("data/ob.db"))
        .expect("open")
        .query_row("SELECT count(*) FROM push_holds", [], |row| row.get(0))
        .expect("count holds");
    assert_eq!(holds, 0, "refused, not held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_journaled_but_never_mapped_is_settled_by_the_sweeper() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("data")).expect("data");
    let db = dir.path().join("data/ob.db");
    // What a crash between the journal commit and the mapping leaves: an `accepted` push row,
    // two minutes old, with no hold and no message.
    {
        let store = Store::open(&db, StoreOptions::default()).expect("open");
        store
            .journal(InboundRecord {
                channel: "posos-push".to_string(),
                received_at: jiff::Timestamp::now() - jiff::SignedDuration::from_mins(2),
                peer: "127.0.0.1:40000".to_string(),
                sender: "posos".to_string(),
                message_type: "FHIR Bundle".to_string(),
                control_id: "orphan".to_string(),
                raw: Bytes::from(common::sample(BUNDLE)),
                status: RecordStatus::Accepted,
            })
            .await
            .expect("journal");
        store.close().await;
    }
    let text = common::base_toml()
        + &common::push_to_ehr_toml(
            peer,
            &format!("token = \"{TOKEN}\"\nhold_unknown_for = \"0s\""),
        );
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let delivered = common::first_received(&received).await;
    assert!(
        String::from_utf8_lossy(&delivered).contains("ORM^O01"),
        "the orphan's order reached the EHR"
    );
    engine.stop().await;
    let rows = journal_rows(&db);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "processed", "{:?}", rows[0]);
}

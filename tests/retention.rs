//! Issue 10, retention: what the pruner deletes and what it never touches, that the file
//! shrinks afterwards, that intake keeps answering while a large prune runs, and that
//! `ordobridge backup` copies a live store consistently. Real SQLite files, the real daemon
//! over loopback MLLP, the real binary for the CLI.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use ordobridge::store::{
    InboundRecord, JournalOutcome, RecordStatus, RetentionPlan, Store, StoreOptions,
};

fn record(control_id: &str, status: RecordStatus, age: Duration, body_len: usize) -> InboundRecord {
    let received_at = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(age).expect("age"))
        .expect("time");
    InboundRecord {
        channel: "adt-in".to_string(),
        received_at,
        peer: "127.0.0.1:5000".to_string(),
        sender: "DPI".to_string(),
        message_type: "ADT^A01".to_string(),
        control_id: control_id.to_string(),
        raw: Bytes::from(format!("MSH|^~\\&|{control_id}|{}", "x".repeat(body_len))),
        status,
    }
}

async fn journal(store: &Store, record: InboundRecord) -> i64 {
    match store.journal(record).await.expect("journal") {
        JournalOutcome::Stored { id } => id,
        other => panic!("not stored: {other:?}"),
    }
}

const DAY: Duration = Duration::from_secs(86_400);

fn ids(store: &Store) -> Vec<String> {
    let filter = ordobridge::store::JournalFilter {
        limit: 1000,
        ..Default::default()
    };
    let mut ids: Vec<String> = store
        .list_journal(&filter)
        .expect("list")
        .into_iter()
        .map(|row| row.control_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_what_is_old_and_finished() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("ob.db"), StoreOptions::default()).expect("open");
    let accepted = RecordStatus::Accepted;
    let rejected = || RecordStatus::Rejected {
        reason: "junk".to_string(),
    };
    // Old and finished: goes.
    let done = journal(&store, record("OLD-DONE", accepted.clone(), 100 * DAY, 10)).await;
    // Old but still accepted (the census has not applied it): stays.
    journal(
        &store,
        record("OLD-UNPROCESSED", accepted.clone(), 100 * DAY, 10),
    )
    .await;
    // Old, processed, but its message to the EHR is still pending: stays.
    let waiting = journal(
        &store,
        record("OLD-PENDING-OUT", accepted.clone(), 100 * DAY, 10),
    )
    .await;
    // Old, a pushed bundle still held for its patient: stays.
    let held = journal(&store, record("OLD-HELD", accepted.clone(), 100 * DAY, 10)).await;
    // Recent: stays.
    let recent = journal(&store, record("RECENT", accepted.clone(), DAY, 10)).await;
    // Rejected junk: 40 days goes (30 days of retention), 10 days stays.
    journal(&store, record("REJ-40D", rejected(), 40 * DAY, 10)).await;
    journal(&store, record("REJ-10D", rejected(), 10 * DAY, 10)).await;
    store
        .mark_processed(vec![done, waiting, recent])
        .await
        .expect("processed");
    let out = store
        .enqueue(vec![ordobridge::store::OutboundItem {
            destination: "ehr".to_string(),
            control_id: "OUT1".to_string(),
            payload: Bytes::from_static(b"MSH|^~\\&|x"),
            source: format!("journal:{waiting}"),
        }])
        .await
        .expect("enqueue");
    assert!(
        store
            .hold(held, "IPP1".to_string(), jiff::Timestamp::now())
            .await
            .expect("hold")
    );

    let plan = RetentionPlan::at(jiff::Timestamp::now(), 90 * DAY, 30 * DAY);
    let would = store.prunable(&plan).expect("count");
    assert_eq!((would.journal, would.outbound, would.holds), (2, 0, 0));
    let (pruned, _) = store.prune(plan, 1).await.expect("prune");
    assert_eq!((pruned.journal, pruned.outbound, pruned.holds), (2, 0, 0));
    assert_eq!(
        ids(&store),
        [
            "OLD-HELD",
            "OLD-PENDING-OUT",
            "OLD-UNPROCESSED",
            "RECENT",
            "REJ-10D"
        ]
    );

    // Once its message is delivered, the processed row goes with it (cutoffs in the future:
    // everything finished counts as old).
    store
        .mark_delivered(out[0], Bytes::from_static(b"MSA|AA|OUT1"))
        .await
        .expect("delivered");
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let all_old = RetentionPlan::at(later, Duration::ZERO, Duration::ZERO);
    let (pruned, _) = store.prune(all_old, 500).await.expect("prune");
    assert_eq!((pruned.journal, pruned.outbound), (3, 1), "{pruned:?}");
    assert_eq!(ids(&store), ["OLD-HELD", "OLD-UNPROCESSED"]);
    store.close().await;
}

fn page_count(path: &Path) -> i64 {
    let connection = rusqlite::Connection::open(path).expect("open");
    connection
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .expect("page_count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_shrinks_after_a_prune() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("ob.db");
    let store = Store::open(&path, StoreOptions::default()).expect("open");
    for i in 0..2000 {
        let status = RecordStatus::Rejected {
            reason: "junk".to_string(),
        };
        journal(&store, record(&format!("J{i}"), status, 40 * DAY, 4096)).await;
    }
    let before = page_count(&path);
    let plan = RetentionPlan::at(jiff::Timestamp::now(), 90 * DAY, 30 * DAY);
    let (pruned, freed) = store.prune(plan, 300).await.expect("prune");
    assert_eq!(pruned.journal, 2000);
    let after = page_count(&path);
    assert!(freed > 0, "pages given back");
    assert!(
        after * 4 < before,
        "the file holds {after} pages after the prune, {before} before"
    );
    // And the file itself shrank on disk (the checkpoint after the prune truncates it).
    let bytes = std::fs::metadata(&path).expect("size").len();
    assert!(
        bytes < 2 * 1024 * 1024,
        "the file is still {bytes} bytes after pruning 2,000 × 4 KiB rows"
    );
    store.close().await;
}

#[test]
fn cli_prune_dry_run_counts_and_prune_deletes() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("ob.toml");
    std::fs::write(
        &config,
        "[store]\npath = \"ob.db\"\nrejected_retention = \"7d\"\n",
    )
    .expect("config");
    {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let store =
                Store::open(&dir.path().join("ob.db"), StoreOptions::default()).expect("open");
            for i in 0..5 {
                let status = RecordStatus::Rejected {
                    reason: "junk".to_string(),
                };
                journal(&store, record(&format!("R{i}"), status, 8 * DAY, 10)).await;
            }
            store.close().await;
        });
    }
    let config = config.display().to_string();
    let dry = common::ordobridge(&["prune", "--config", &config, "--dry-run"]);
    assert!(
        dry.contains("would delete: 5 journal row(s), 0 outbound message(s), 0 released hold(s)"),
        "{dry}"
    );
    let done = common::ordobridge(&["prune", "--config", &config]);
    assert!(done.contains("deleted: 5 journal row(s)"), "{done}");
    let again = common::ordobridge(&["prune", "--config", &config, "--dry-run"]);
    assert!(again.contains("would delete: 0 journal row(s)"), "{again}");
}

/// A01 with a unique MSH-10.
fn adt(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|DPI|CH_EXEMPLE|OB|POSOS|20261201080000||ADT^A01^ADT_A01|{control_id}|P|2.5\rPID|1||{control_id}^^^CH_EXEMPLE^PI||TEST^PRUNE\rPV1|1|I\r"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_keeps_answering_while_a_large_prune_runs_and_a_backup_is_taken() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("data")).expect("data");
    let db = dir.path().join("data/ob.db");
    // 20,000 old processed rows for the pruner.
    {
        let store = Store::open(&db, StoreOptions::default()).expect("open");
        let records: Vec<InboundRecord> = (0..20_000)
            .map(|i| {
                record(
                    &format!("OLD{i}"),
                    RecordStatus::Rejected {
                        reason: "junk".to_string(),
                    },
                    40 * DAY,
                    200,
                )
            })
            .collect();
        for chunk in records.chunks(1000) {
            store.journal_many(chunk.to_vec()).await.expect("journal");
        }
        store.close().await;
    }
    let text = common::base_toml().replace(
        "path = \"data/ob.db\"",
        "path = \"data/ob.db\"\nprune_interval = \"1s\"\nprune_batch = 100",
    );
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let mllp = engine.addr("adt-in");

    // Send ADTs one after another while the prune runs; every one must be AA.
    let mut sent = 0;
    let config = dir.path().join("ob.toml").display().to_string();
    let backup = dir.path().join("backup.db");
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let ack = common::send_adt(mllp, &adt(&format!("LIVE{sent}"))).await;
        assert!(ack.contains("MSA|AA|"), "{ack}");
        sent += 1;
        if sent == 50 {
            // A backup in the middle of the load.
            let out = tokio::task::spawn_blocking({
                let config = config.clone();
                let backup = backup.display().to_string();
                move || common::ordobridge(&["backup", "--config", &config, &backup])
            })
            .await
            .expect("join");
            assert!(out.contains("integrity check ok"), "{out}");
        }
        let remaining: i64 = rusqlite::Connection::open(&db)
            .expect("reader")
            .query_row(
                "SELECT count(*) FROM journal WHERE control_id LIKE 'OLD%'",
                [],
                |row| row.get(0),
            )
            .expect("count");
        if remaining == 0 && sent >= 100 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the prune did not finish while {sent} messages were answered ({remaining} rows left)"
        );
    }
    engine.stop().await;
    let live: i64 = rusqlite::Connection::open(&db)
        .expect("reader")
        .query_row(
            "SELECT count(*) FROM journal WHERE control_id LIKE 'LIVE%'",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(live, sent, "every acknowledged message is in the journal");
    let copy = rusqlite::Connection::open(&backup).expect("open backup");
    let rows: i64 = copy
        .query_row("SELECT count(*) FROM journal", [], |row| row.get(0))
        .expect("count");
    assert!(rows >= 50, "the backup holds the journal ({rows} rows)");
}

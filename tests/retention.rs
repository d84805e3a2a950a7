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
    record_in("adt-in", control_id, status, age, body_len)
}

fn record_in(
    channel: &str,
    control_id: &str,
    status: RecordStatus,
    age: Duration,
    body_len: usize,
) -> InboundRecord {
    let received_at = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(age).expect("age"))
        .expect("time");
    InboundRecord {
        channel: channel.to_string(),
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

/// An ADT message of a stay: `trigger` at `at` (HL7 time) for patient `ipp`, visit `nda`; an
/// A03 is discharged at `at`.
fn stay(trigger: &str, ipp: &str, nda: &str, at: &str, control_id: &str) -> Vec<u8> {
    let discharge = if trigger == "A03" { at } else { "" };
    format!(
        "MSH|^~\\&|DPI|CH_EXEMPLE|OB|POSOS|{at}||ADT^{trigger}^ADT_A01|{control_id}|P|2.5\rEVN||{at}||||{at}\rPID|1||{ipp}^^^CH_EXEMPLE^PI||TEST^RETENTION||19700101|F\rPV1|1|I|||||||||||||||||{nda}^^^CH_EXEMPLE^VN||||||||||||||||||||||||||{discharge}\r"
    )
    .into_bytes()
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .expect("reader")
        .query_row(sql, [], |row| row.get(0))
        .expect("count")
}

fn strings(db: &Path, sql: &str) -> Vec<String> {
    rusqlite::Connection::open(db)
        .expect("reader")
        .prepare(sql)
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Feeds the census of a store through the real daemon: stays discharged three years ago
/// (OLD-*), a current admission that began three years ago (CURRENT) and a stay discharged
/// last month (RECENT). Returns when the census has applied them all.
async fn feed_census(dir: &Path, extra: &str) {
    let text = format!("{}{extra}", common::base_toml());
    let engine = common::start_engine(common::config(dir, &text)).await;
    let mllp = engine.addr("adt-in");
    let last_month = (jiff::Zoned::now() - jiff::Span::new().days(30))
        .strftime("%Y%m%d%H%M%S")
        .to_string();
    let messages = [
        stay("A01", "OLD1", "V-OLD1", "20230110080000", "C1"),
        stay("A03", "OLD1", "V-OLD1", "20230120080000", "C2"),
        stay("A01", "OLD2", "V-OLD2", "20230301080000", "C3"),
        stay("A03", "OLD2", "V-OLD2", "20230305080000", "C4"),
        stay("A01", "CURRENT", "V-CURRENT", "20230601080000", "C5"),
        stay("A01", "RECENT", "V-RECENT", &last_month, "C6"),
        stay("A03", "RECENT", "V-RECENT", &last_month, "C7"),
    ];
    for message in &messages {
        let ack = common::send_adt(mllp, message).await;
        assert!(ack.contains("MSA|AA|"), "{ack}");
    }
    let db = dir.join("data/ob.db");
    common::intake_copied(&db).await;
    common::wait_for("the census to apply every ADT", || {
        let done = count(
            &db,
            "SELECT count(*) FROM journal WHERE status = 'accepted'",
        ) == 0;
        async move { done.then_some(()) }
    })
    .await;
    engine.stop().await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM census_encounters WHERE status = 'discharged'"
        ),
        3
    );
}

/// Census retention through the CLI on a store the daemon filled: the encounters discharged
/// more than two years ago go with their movements, then their patients once nobody named
/// them for two years (aged here by hand: every ADT above named them today); the current
/// admission and last month's stay stay. `--dry-run` counts what the prune then deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn census_retention_drops_old_discharged_stays_and_keeps_current_ones() {
    let dir = tempfile::tempdir().expect("dir");
    feed_census(dir.path(), "").await;
    let db = dir.path().join("data/ob.db");
    let three_years_ago =
        jiff::Timestamp::now().as_microsecond() - 3 * 365 * 86_400 * 1_000_000_i64;
    rusqlite::Connection::open(&db)
        .expect("writer")
        .execute(
            "UPDATE census_patients SET updated_at = ?1 WHERE ipp <> 'RECENT'",
            [three_years_ago],
        )
        .expect("age");
    let config = dir.path().join("ob.toml").display().to_string();
    let dry = common::ordobridge(&["prune", "--config", &config, "--dry-run"]);
    assert!(
        dry.contains("retention: journal 90d, rejected 30d, census 730d"),
        "{dry}"
    );
    assert!(
        dry.contains(
            "would delete: 0 journal row(s), 0 outbound message(s), 0 released hold(s), 2 census encounter(s), 2 census patient(s)"
        ),
        "{dry}"
    );
    let done = common::ordobridge(&["prune", "--config", &config]);
    assert!(
        done.contains(
            "deleted: 0 journal row(s), 0 outbound message(s), 0 released hold(s), 2 census encounter(s), 2 census patient(s)"
        ),
        "{done}"
    );
    assert_eq!(
        strings(&db, "SELECT nda FROM census_encounters ORDER BY nda"),
        ["V-CURRENT", "V-RECENT"]
    );
    assert_eq!(
        strings(&db, "SELECT ipp FROM census_patients ORDER BY ipp"),
        ["CURRENT", "RECENT"]
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM census_movements WHERE encounter_id NOT IN (SELECT id FROM census_encounters)"
        ),
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM census_identifiers WHERE patient_id NOT IN (SELECT id FROM census_patients)"
        ),
        0,
        "identifiers went with their patients"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );
    let again = common::ordobridge(&["prune", "--config", &config, "--dry-run"]);
    assert!(
        again.contains("0 census encounter(s), 0 census patient(s)"),
        "{again}"
    );
}

/// `[census] retention = "forever"` keeps every stay, however old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn census_retention_forever_keeps_everything() {
    let dir = tempfile::tempdir().expect("dir");
    let text = common::base_toml().replace(
        "ipp_authority = \"CH_EXEMPLE\"",
        "ipp_authority = \"CH_EXEMPLE\"\nretention = \"forever\"",
    );
    std::fs::write(dir.path().join("ob.toml"), &text).expect("config");
    std::fs::create_dir_all(dir.path().join("data")).expect("data");
    let store = Store::open(&dir.path().join("data/ob.db"), StoreOptions::default()).expect("open");
    store.close().await;
    let config = dir.path().join("ob.toml").display().to_string();
    let dry = common::ordobridge(&["prune", "--config", &config, "--dry-run"]);
    assert!(dry.contains("census forever"), "{dry}");
    assert!(
        dry.contains("0 census encounter(s), 0 census patient(s)"),
        "{dry}"
    );
}

/// The background pruner of a running daemon: a channel kept 7 days loses its 10-day-old rows
/// while `adt-in` (the store's 90 days) keeps its own; the census's old stays go too, and
/// `/metrics` counts both. The dry run before counts per channel exactly what then goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_pruner_applies_channel_and_census_retention() {
    let dir = tempfile::tempdir().expect("dir");
    let lab = "\n[inbound.lab]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\nretention = \"7d\"\n";
    feed_census(dir.path(), lab).await;
    let db = dir.path().join("data/ob.db");
    {
        let store = Store::open(&db, StoreOptions::default()).expect("open");
        for (channel, id) in [("lab", "LAB-1"), ("lab", "LAB-2"), ("adt-in", "ADT-1")] {
            let id = journal(
                &store,
                record_in(channel, id, RecordStatus::Accepted, 10 * DAY, 10),
            )
            .await;
            store.mark_processed(vec![id]).await.expect("processed");
        }
        store.close().await;
    }
    let config = dir.path().join("ob.toml").display().to_string();
    let dry = common::ordobridge(&["prune", "--config", &config, "--dry-run"]);
    assert!(dry.contains("; channel lab 7d"), "{dry}");
    assert!(dry.contains("would delete: 2 journal row(s)"), "{dry}");
    assert!(dry.contains("  channel lab: 2 journal row(s)"), "{dry}");
    assert!(!dry.contains("channel adt-in:"), "{dry}");
    assert!(
        dry.contains("2 census encounter(s), 0 census patient(s)"),
        "{dry}"
    );

    let text = std::fs::read_to_string(dir.path().join("ob.toml"))
        .expect("config")
        .replace(
            "path = \"data/ob.db\"",
            "path = \"data/ob.db\"\nprune_interval = \"1s\"",
        );
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    common::wait_for("the pruner to apply every retention", || {
        let lab = count(&db, "SELECT count(*) FROM journal WHERE channel = 'lab'");
        let old = count(
            &db,
            "SELECT count(*) FROM census_encounters WHERE nda LIKE 'V-OLD%'",
        );
        async move { (lab == 0 && old == 0).then_some(()) }
    })
    .await;
    assert_eq!(
        strings(
            &db,
            "SELECT control_id FROM journal WHERE control_id LIKE 'ADT-%' OR control_id LIKE 'LAB-%'"
        ),
        ["ADT-1"]
    );
    let http = engine.addr("http");
    let metrics = common::wait_for("the prune in /metrics", || async move {
        let body = common::metrics_text(http).await?;
        body.contains("ordobridge_pruned_rows_total{kind=\"census_encounters\"} 2")
            .then_some(body)
    })
    .await;
    assert!(
        metrics.contains("ordobridge_pruned_rows_total{kind=\"journal\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ordobridge_pruned_rows_total{kind=\"census_patients\"} 0"),
        "{metrics}"
    );
    engine.stop().await;
}

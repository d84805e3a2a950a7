//! The store on real SQLite files in a temporary folder: migrations, journaling, group commit,
//! duplicates, commit failures, reads, durability and shutdown.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::join_all;
use ordobridge::store::{
    EntryStatus, JournalFilter, JournalOutcome, Store, StoreError, StoreOptions,
};
use rusqlite::Connection;

mod common;
use common::records::{record, rejected};

const ADT: &[u8] = b"MSH|^~\\&|DPI|CHU|ORDOBRIDGE|CHU|20250101120000||ADT^A01^ADT_A01|MSG1|P|2.5|||||FRA|8859/15\rEVN||20250101120000\rPID|1||123456^^^CHU&1.2.250.1.71.1.2.2&ISO^PI||DUPONT^JEAN^^^^^L||19700101|M\rPV1|1|I|CARDIO^101^1\r";

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Store,
}

fn open() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/journal.sqlite");
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    Fixture {
        _dir: dir,
        path,
        store,
    }
}

/// A connection of our own, as another process would open the file.
fn fresh(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

fn count(path: &Path, sql: &str) -> i64 {
    fresh(path).query_row(sql, [], |row| row.get(0)).unwrap()
}

#[tokio::test]
async fn ok_open_migrates_reopen_keeps_newer_refused() {
    let fixture = open();
    let id = fixture.store.journal(record("1", ADT)).await.unwrap().id();
    fixture.store.close().await;
    drop(fixture.store);
    assert_eq!(count(&fixture.path, "PRAGMA user_version"), 13);

    let store = Store::open(&fixture.path, StoreOptions::default()).unwrap();
    assert!(
        store.journal_entry(id).unwrap().is_some(),
        "row kept on reopen"
    );
    store.close().await;
    drop(store);

    fresh(&fixture.path)
        .pragma_update(None, "user_version", 14)
        .unwrap();
    let err = Store::open(&fixture.path, StoreOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "store `{}` has schema version 14, this build knows versions 0 to 13; \
             was it written by a newer ordobridge?",
            fixture.path.display()
        )
    );
}

#[tokio::test]
async fn ok_journal_one_and_many() {
    let fixture = open();
    let store = &fixture.store;
    assert_eq!(
        store.journal(record("1", b"MSH|1")).await.unwrap(),
        JournalOutcome::Stored { id: 1 }
    );
    let before = store.stats();
    let outcomes = store
        .journal_many(vec![
            record("2", b"MSH|2"),
            rejected("3", b"MSH|3", "MSH-9: unknown message type"),
            record("1", b"MSH|1"),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            JournalOutcome::Stored { id: 2 },
            JournalOutcome::Stored { id: 3 },
            JournalOutcome::Duplicate {
                id: 1,
                status: EntryStatus::Accepted
            },
        ]
    );
    let after = store.stats();
    assert_eq!(after.commits, before.commits + 1, "one transaction");
    assert_eq!(after.messages, 4);
    assert_eq!(after.duplicates, 1);
    let entry = store.journal_entry(3).unwrap().unwrap();
    assert_eq!(entry.summary.status, "rejected");
    assert_eq!(
        entry.summary.reason.as_deref(),
        Some("MSH-9: unknown message type")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_group_commit_fewer_transactions_than_messages() {
    let fixture = open();
    let calls = (0..300).map(|n| {
        let store = fixture.store.clone();
        async move {
            store
                .journal(record(&format!("C{n}"), format!("MSH|{n}").as_bytes()))
                .await
        }
    });
    let outcomes = join_all(calls).await;
    let mut ids: Vec<i64> = outcomes.into_iter().map(|o| o.unwrap().id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 300, "every call got its own row");
    let stats = fixture.store.stats();
    assert_eq!(stats.messages, 300);
    assert!(stats.commits < 300, "expected group commit, got {stats:?}");
    assert!(stats.max_batch_size > 1, "{stats:?}");
    assert_eq!(stats.batches, stats.commits);
    assert_eq!(count(&fixture.path, "SELECT count(*) FROM journal"), 300);
}

#[tokio::test]
async fn ok_duplicates_detected_by_channel_sender_control_id_and_content() {
    let fixture = open();
    let store = &fixture.store;
    let first = store.journal(record("A", ADT)).await.unwrap();
    assert_eq!(first, JournalOutcome::Stored { id: 1 });

    let mut again = record("A", ADT);
    again.received_at = jiff::Timestamp::from_second(1_750_000_060).unwrap();
    let duplicate = store.journal(again.clone()).await.unwrap();
    assert_eq!(
        duplicate,
        JournalOutcome::Duplicate {
            id: 1,
            status: EntryStatus::Accepted
        }
    );
    let entry = store.journal_entry(1).unwrap().unwrap();
    assert_eq!(entry.duplicate_count, 1);
    assert_eq!(entry.last_seen_at, again.received_at);
    assert_eq!(
        entry.summary.received_at,
        jiff::Timestamp::from_second(1_750_000_000).unwrap()
    );

    // Same MSH-10, different content: a new message.
    let changed = store.journal(record("A", b"MSH|changed")).await.unwrap();
    assert_eq!(changed, JournalOutcome::Stored { id: 2 });
    // Same content from another channel or sender: a new message.
    let mut other_channel = record("A", ADT);
    other_channel.channel = "adt-in-2".to_owned();
    assert_eq!(
        store.journal(other_channel).await.unwrap(),
        JournalOutcome::Stored { id: 3 }
    );
    let mut other_sender = record("A", ADT);
    other_sender.sender = "DPI^CLINIQUE".to_owned();
    assert_eq!(
        store.journal(other_sender).await.unwrap(),
        JournalOutcome::Stored { id: 4 }
    );

    // Once processed, a resend is still a duplicate, and says so.
    store.mark_processed(vec![1]).await.unwrap();
    assert_eq!(
        store.journal(record("A", ADT)).await.unwrap(),
        JournalOutcome::Duplicate {
            id: 1,
            status: EntryStatus::Processed
        }
    );
    assert_eq!(store.journal_entry(1).unwrap().unwrap().duplicate_count, 2);
    assert_eq!(store.stats().duplicates, 2);
}

#[tokio::test]
async fn ok_rejected_never_deduplicated() {
    let fixture = open();
    let store = &fixture.store;
    let reason = "PID-5: missing patient name";
    assert_eq!(
        store.journal(rejected("R", ADT, reason)).await.unwrap(),
        JournalOutcome::Stored { id: 1 }
    );
    assert_eq!(
        store.journal(rejected("R", ADT, reason)).await.unwrap(),
        JournalOutcome::Stored { id: 2 }
    );
    // The resend after the fix goes through, even with identical bytes.
    assert_eq!(
        store.journal(record("R", ADT)).await.unwrap(),
        JournalOutcome::Stored { id: 3 }
    );
    // And a later rejected copy of an accepted message is journaled, not folded into it.
    assert_eq!(
        store.journal(rejected("R", ADT, reason)).await.unwrap(),
        JournalOutcome::Stored { id: 4 }
    );
    assert_eq!(store.stats().duplicates, 0);
}

#[tokio::test]
async fn ok_mark_processed_only_touches_accepted_rows() {
    let fixture = open();
    let store = &fixture.store;
    let accepted = store.journal(record("1", b"MSH|1")).await.unwrap().id();
    let refused = store
        .journal(rejected("2", b"MSH|2", "bad"))
        .await
        .unwrap()
        .id();
    store
        .mark_processed(vec![accepted, refused, 999])
        .await
        .unwrap();
    let status = |id| store.journal_entry(id).unwrap().unwrap().summary.status;
    assert_eq!(status(accepted), "processed");
    assert_eq!(status(refused), "rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_commit_failure_reaches_every_caller_then_store_recovers() {
    let fixture = open();
    fixture
        .store
        .journal(record("before", b"MSH|0"))
        .await
        .unwrap();
    fresh(&fixture.path)
        .execute_batch(
            "CREATE TRIGGER read_only BEFORE INSERT ON journal
             BEGIN SELECT RAISE(ABORT, 'journal is read-only for this test'); END;",
        )
        .unwrap();

    let calls = (0..50).map(|n| {
        let store = fixture.store.clone();
        async move {
            store
                .journal(record(&format!("F{n}"), format!("MSH|{n}").as_bytes()))
                .await
        }
    });
    let many = fixture
        .store
        .journal_many(vec![record("M1", b"MSH|m1"), record("M2", b"MSH|m2")]);
    let (results, many) = tokio::join!(join_all(calls), many);
    for result in results {
        let err = result.unwrap_err();
        assert!(matches!(err, StoreError::NotCommitted { .. }), "{err:?}");
        let prefix = format!("store `{}`: batch of ", fixture.path.display());
        assert!(err.to_string().starts_with(&prefix), "{err}");
        assert!(
            err.to_string().ends_with("request(s) not committed"),
            "{err}"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            source.contains("journal is read-only for this test"),
            "{source}"
        );
    }
    assert!(matches!(many, Err(StoreError::NotCommitted { .. })));
    assert_eq!(count(&fixture.path, "SELECT count(*) FROM journal"), 1);
    let stats = fixture.store.stats();
    assert!(stats.failed_batches >= 1, "{stats:?}");
    assert_eq!(stats.messages, 1);

    fresh(&fixture.path)
        .execute_batch("DROP TRIGGER read_only")
        .unwrap();
    let outcome = fixture.store.journal(record("F0", b"MSH|0")).await.unwrap();
    assert_eq!(outcome, JournalOutcome::Stored { id: 2 });
}

#[tokio::test]
async fn ok_list_filter_limit_and_entry() {
    let fixture = open();
    let store = &fixture.store;
    for (n, control_id) in ["X", "Y", "X", "Z"].into_iter().enumerate() {
        let mut record = record(control_id, format!("MSH|{n}").as_bytes());
        record.received_at =
            jiff::Timestamp::from_second(1_750_000_000 + i64::try_from(n).unwrap()).unwrap();
        store.journal(record).await.unwrap();
    }
    let ids = |filter: JournalFilter| -> Vec<i64> {
        store
            .list_journal(&filter)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    assert_eq!(ids(JournalFilter::default()), [4, 3, 2, 1]);
    let by_x = JournalFilter {
        control_id: Some("X".to_owned()),
        ..JournalFilter::default()
    };
    assert_eq!(ids(by_x.clone()), [3, 1]);
    assert_eq!(ids(JournalFilter { limit: 1, ..by_x }), [3]);
    let other_channel = JournalFilter {
        channel: Some("lab-in".to_owned()),
        ..JournalFilter::default()
    };
    assert_eq!(ids(other_channel), Vec::<i64>::new());

    let entry = store.journal_entry(2).unwrap().unwrap();
    assert_eq!(entry.summary.control_id, "Y");
    assert_eq!(entry.raw, b"MSH|1");
    assert_eq!(store.journal_entry(42).unwrap(), None);
}

#[tokio::test]
async fn ok_committed_before_journal_returns() {
    let fixture = open();
    for n in 0..20 {
        let control_id = format!("D{n}");
        let id = fixture
            .store
            .journal(record(&control_id, control_id.as_bytes()))
            .await
            .unwrap()
            .id();
        // The store stays open: another connection must already see the row.
        let seen: String = fresh(&fixture.path)
            .query_row(
                "SELECT control_id FROM journal WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(seen, control_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_backpressure_with_tiny_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let options = StoreOptions {
        queue_capacity: 1,
        max_batch: 4,
        ..StoreOptions::DEFAULT
    };
    let store = Store::open(&path, options).unwrap();
    let calls = (0..100).map(|n| {
        let store = store.clone();
        async move {
            store
                .journal(record(&n.to_string(), n.to_string().as_bytes()))
                .await
        }
    });
    for result in join_all(calls).await {
        result.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.messages, 100);
    assert!(stats.max_batch_size <= 4, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_close_commits_what_was_queued() {
    let fixture = open();
    let calls = (0..50).map(|n| {
        let store = fixture.store.clone();
        async move {
            store
                .journal(record(&n.to_string(), n.to_string().as_bytes()))
                .await
        }
    });
    // `join!` polls the calls first: all 50 are queued before the close request.
    let (results, ()) = tokio::join!(join_all(calls), fixture.store.close());
    for result in results {
        result.unwrap();
    }
    assert_eq!(count(&fixture.path, "SELECT count(*) FROM journal"), 50);
    let err = fixture
        .store
        .journal(record("late", b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed { .. }), "{err:?}");
}

#[tokio::test]
async fn ok_dropping_every_handle_stops_the_writer() {
    let fixture = open();
    let store = fixture.store;
    store.journal(record("1", b"MSH|1")).await.unwrap();
    drop(store);
    // The writer closes its connection on the way out; then nothing holds the write lock.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let connection = fresh(&fixture.path);
        connection.busy_timeout(Duration::ZERO).unwrap();
        if connection.execute_batch("BEGIN EXCLUSIVE; COMMIT;").is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "writer did not stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count(&fixture.path, "SELECT count(*) FROM journal"), 1);
}

/// Throughput on the real disk, like the brief's target (> 30,000 inserts/s in batches of
/// ~64): `cargo test --release --test store -- --ignored --nocapture throughput`.
/// Set `STORE_BENCH_DIR` to measure on another disk than the temp folder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand, in release"]
async fn throughput() {
    let dir = match std::env::var_os("STORE_BENCH_DIR") {
        Some(folder) => tempfile::tempdir_in(folder).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let store = Store::open(&dir.path().join("bench.sqlite"), StoreOptions::default()).unwrap();
    let producers = 64;
    let per_producer = 1_000;

    // 64 concurrent callers (connections) journaling one message at a time: group commit
    // forms the batches. Control ids come from one counter, as from an EHR's sequence.
    let sequence = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let store = store.clone();
            let sequence = std::sync::Arc::clone(&sequence);
            tokio::spawn(async move {
                for n in 0..per_producer {
                    let id = sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut raw = ADT.to_vec();
                    raw.extend_from_slice(format!("NTE|{p}|{n}\r").as_bytes());
                    store
                        .journal(record(&format!("{id:012}"), &raw))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed();
    let stats = store.stats();
    let messages = producers * per_producer;
    println!(
        "journal(): {messages} messages of ~{} bytes in {elapsed:.2?} = {:.0}/s, {} commits, \
         {:.1} messages/commit, max batch {}",
        ADT.len() + 12,
        f64::from(messages) / elapsed.as_secs_f64(),
        stats.commits,
        f64::from(messages) / stats.commits as f64,
        stats.max_batch_size,
    );

    // One caller sending batches of 64 with journal_many (a file of 64 messages).
    let before = store.stats();
    let start = Instant::now();
    let batches = 1_000;
    for b in 0..batches {
        let records = (0..64)
            .map(|n| {
                let mut raw = ADT.to_vec();
                raw.extend_from_slice(format!("NTE|m{b}|{n}\r").as_bytes());
                record(&format!("m{b:06}-{n:02}"), &raw)
            })
            .collect();
        store.journal_many(records).await.unwrap();
    }
    let elapsed = start.elapsed();
    let commits = store.stats().commits - before.commits;
    println!(
        "journal_many(64): {} messages in {elapsed:.2?} = {:.0}/s, {commits} commits",
        batches * 64,
        f64::from(batches * 64) / elapsed.as_secs_f64(),
    );
    store.close().await;
}

//! One store suite, two backends (issue 14): every operation ported to PostgreSQL runs here
//! against a SQLite file and against a real PostgreSQL server started by the test
//! (`common::postgres`), with the same assertions. Row ids are compared as the store returned
//! them, never as literals: PostgreSQL's sequences skip the ids of conflicting inserts.
//!
//! Below the shared cases: what only PostgreSQL has (schema versions in their own table, rows
//! committed out of id order, many connections at once) and what it refuses for now.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use ordobridge::store::settings::PostgresSettings;
use ordobridge::store::{
    EntryStatus, InboundRecord, JournalFilter, JournalOutcome, OutboundItem, OutboundStatus, Store,
    StoreError, StoreOptions,
};
use rstest::rstest;

use common::postgres::TestPostgres;
use common::records::{record, rejected};

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A store on a fresh database; fields drop in order (the store before its server).
struct Fixture {
    store: Store,
    dir: tempfile::TempDir,
    server: Option<TestPostgres>,
}

fn open(backend: Backend) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    match backend {
        Backend::Sqlite => Fixture {
            store: Store::open(&dir.path().join("store.sqlite"), StoreOptions::default()).unwrap(),
            dir,
            server: None,
        },
        Backend::Postgres => {
            let server = TestPostgres::start();
            let settings = PostgresSettings::from_url(&server.url()).unwrap();
            Fixture {
                store: Store::open_postgres(&settings, true).unwrap(),
                dir,
                server: Some(server),
            }
        }
    }
}

impl Fixture {
    /// Closes the store and opens it again on the same database (a restart).
    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = self.another(true);
    }

    /// Another handle on the same database: on PostgreSQL, a second node (`writable`) or a
    /// listing; on SQLite, a writer (after the first closed) or a reader beside it.
    fn another(&self, writable: bool) -> Store {
        let path = self.dir.path().join("store.sqlite");
        match &self.server {
            None if writable => Store::open(&path, StoreOptions::default()).unwrap(),
            None => Store::open_read_only(&path).unwrap(),
            Some(server) => Store::open_postgres(
                &PostgresSettings::from_url(&server.url()).unwrap(),
                writable,
            )
            .unwrap(),
        }
    }
}

fn on(channel: &str, record: InboundRecord) -> InboundRecord {
    InboundRecord {
        channel: channel.to_owned(),
        ..record
    }
}

fn item(destination: &str, control_id: &str) -> OutboundItem {
    OutboundItem {
        destination: destination.to_owned(),
        control_id: control_id.to_owned(),
        payload: Bytes::from(format!(
            "MSH|^~\\&|ORDO|POSOS|||||ORM^O01|{control_id}|P|2.5"
        )),
        source: format!("bundle-{control_id}"),
    }
}

fn stored(outcome: JournalOutcome) -> i64 {
    match outcome {
        JournalOutcome::Stored { id } => id,
        other => panic!("expected a stored row, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The journal

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_journal_one_and_many(#[values(Backend::Sqlite, Backend::Postgres)] backend: Backend) {
    let fixture = open(backend);
    let store = &fixture.store;
    let first = stored(store.journal(record("1", b"MSH|1")).await.unwrap());
    let outcomes = store
        .journal_many(vec![
            record("2", b"MSH|2"),
            rejected("3", b"MSH|3", "MSH-9: unknown message type"),
            record("1", b"MSH|1"),
        ])
        .await
        .unwrap();
    let [two, three, again] = outcomes.as_slice() else {
        panic!("three outcomes expected: {outcomes:?}");
    };
    let (two, three) = (stored(*two), stored(*three));
    assert!(
        first < two && two < three,
        "ids follow the order: {outcomes:?}"
    );
    assert_eq!(
        *again,
        JournalOutcome::Duplicate {
            id: first,
            status: EntryStatus::Accepted
        }
    );
    let entry = store.journal_entry(three).unwrap().unwrap();
    assert_eq!(entry.summary.status, "rejected");
    assert_eq!(
        entry.summary.reason.as_deref(),
        Some("MSH-9: unknown message type")
    );
    let entry = store.journal_entry_async(first).await.unwrap().unwrap();
    assert_eq!(entry.raw, b"MSH|1");
    assert_eq!(entry.duplicate_count, 1);
    assert_eq!(entry.summary.channel, "adt-in");
    assert_eq!(entry.summary.sender, "DPI^CHU");
    assert_eq!(entry.summary.peer, "10.1.2.3:40000");
    assert_eq!(entry.summary.message_type, "ADT^A01");
    assert_eq!(
        entry.summary.received_at,
        jiff::Timestamp::from_second(1_750_000_000).unwrap()
    );
    assert_eq!(
        entry.content_hash[..4],
        [226, 224, 169, 127],
        "SHA-256 of the raw bytes"
    );
    assert!(store.journal_entry(three + 1000).unwrap().is_none());
    assert_eq!(store.journal_many(Vec::new()).await.unwrap(), Vec::new());
    assert_eq!(store.last_journal_id_async().await.unwrap(), three);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_duplicates_by_channel_sender_control_id_and_content(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let fixture = open(backend);
    let store = &fixture.store;
    let first = stored(store.journal(record("A", b"MSH|A")).await.unwrap());
    // Same key: a duplicate of the first row.
    assert_eq!(
        store.journal(record("A", b"MSH|A")).await.unwrap(),
        JournalOutcome::Duplicate {
            id: first,
            status: EntryStatus::Accepted
        }
    );
    // Another content, channel or sender: a new row each.
    let content = stored(store.journal(record("A", b"MSH|A2")).await.unwrap());
    let channel = stored(
        store
            .journal(on("lab-in", record("A", b"MSH|A")))
            .await
            .unwrap(),
    );
    let mut other_sender = record("A", b"MSH|A");
    other_sender.sender = "LAB^CHU".to_owned();
    let sender = stored(store.journal(other_sender).await.unwrap());
    assert!(first < content && content < channel && channel < sender);
    // A processed row still catches its duplicates, and says it was processed.
    store.mark_processed(vec![first]).await.unwrap();
    assert_eq!(
        store.journal(record("A", b"MSH|A")).await.unwrap(),
        JournalOutcome::Duplicate {
            id: first,
            status: EntryStatus::Processed
        }
    );
    let entry = store.journal_entry(first).unwrap().unwrap();
    assert_eq!(entry.duplicate_count, 2);
    assert_eq!(entry.summary.status, "processed");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_rejected_never_deduplicated_and_never_processed(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let fixture = open(backend);
    let store = &fixture.store;
    let one = stored(
        store
            .journal(rejected("R", b"MSH|R", "PID-3: missing"))
            .await
            .unwrap(),
    );
    let two = stored(
        store
            .journal(rejected("R", b"MSH|R", "PID-3: missing"))
            .await
            .unwrap(),
    );
    assert_ne!(one, two);
    // The fixed resend goes through as a new row, not as a duplicate of a rejected one.
    let fixed = stored(store.journal(record("R", b"MSH|R")).await.unwrap());
    store.mark_processed(vec![one, fixed, 9999]).await.unwrap();
    assert_eq!(
        store.journal_entry(one).unwrap().unwrap().summary.status,
        "rejected"
    );
    assert_eq!(
        store.journal_entry(fixed).unwrap().unwrap().summary.status,
        "processed"
    );
    store.mark_processed(Vec::new()).await.unwrap();
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_list_filters_newest_first(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let fixture = open(backend);
    let store = &fixture.store;
    let mut ids = Vec::new();
    for (channel, control_id) in [
        ("adt-in", "A"),
        ("lab-in", "B"),
        ("adt-in", "A"),
        ("lab-in", "C"),
    ] {
        let raw = format!("MSH|{}", ids.len());
        let outcome = store
            .journal(on(channel, record(control_id, raw.as_bytes())))
            .await
            .unwrap();
        ids.push(stored(outcome));
    }
    let listed = |filter: JournalFilter| {
        store
            .list_journal(&filter)
            .unwrap()
            .into_iter()
            .map(|summary| summary.id)
            .collect::<Vec<_>>()
    };
    let [a1, b, a2, c] = ids[..] else { panic!() };
    let filter = |control_id: Option<&str>, channel: Option<&str>, limit| JournalFilter {
        control_id: control_id.map(str::to_owned),
        channel: channel.map(str::to_owned),
        limit,
    };
    assert_eq!(listed(filter(None, None, 0)), [c, a2, b, a1]);
    assert_eq!(listed(filter(None, None, 2)), [c, a2]);
    assert_eq!(listed(filter(Some("A"), None, 10)), [a2, a1]);
    assert_eq!(listed(filter(None, Some("lab-in"), 10)), [c, b]);
    assert_eq!(
        listed(filter(Some("A"), Some("lab-in"), 10)),
        Vec::<i64>::new()
    );
    let asynchronous = store
        .list_journal_async(filter(Some("B"), None, 10))
        .await
        .unwrap();
    assert_eq!(asynchronous.len(), 1);
    assert_eq!(asynchronous[0].control_id, "B");
    assert_eq!(asynchronous[0].status, "accepted");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_accepted_after_is_the_processor_work_list(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let fixture = open(backend);
    let store = &fixture.store;
    let one = stored(store.journal(record("1", b"MSH|1")).await.unwrap());
    let push = stored(
        store
            .journal(on("posos-push", record("2", b"{}")))
            .await
            .unwrap(),
    );
    let two = stored(store.journal(record("3", b"MSH|3")).await.unwrap());
    let refused = stored(store.journal(rejected("4", b"MSH|4", "bad")).await.unwrap());
    let three = stored(store.journal(record("5", b"MSH|5")).await.unwrap());
    assert!(push > one && refused > two);
    let skip = ["posos-push", "documents"];
    let ids = |rows: Vec<ordobridge::store::Unprocessed>| -> Vec<i64> {
        rows.into_iter().map(|row| row.id).collect()
    };
    assert_eq!(
        ids(store.accepted_after(0, 10, skip).await.unwrap()),
        [one, two, three]
    );
    assert_eq!(
        ids(store.accepted_after(one, 1, skip).await.unwrap()),
        [two]
    );
    store.mark_processed(vec![two]).await.unwrap();
    let rows = store.accepted_after(one, 10, skip).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, three);
    assert_eq!(rows[0].channel, "adt-in");
    assert_eq!(rows[0].raw, b"MSH|5");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_probe_commit(#[values(Backend::Sqlite, Backend::Postgres)] backend: Backend) {
    let fixture = open(backend);
    fixture.store.probe_commit().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The outbound queue

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_enqueue_keeps_order_per_destination(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let fixture = open(backend);
    let store = &fixture.store;
    let ids = store
        .enqueue(vec![
            item("ehr", "A1"),
            item("lab", "B1"),
            item("ehr", "A2"),
        ])
        .await
        .unwrap();
    let [a1, b1, a2] = ids[..] else {
        panic!("{ids:?}")
    };
    assert!(a1 < b1 && b1 < a2);
    let head = store.next_pending_async("ehr").await.unwrap().unwrap();
    assert_eq!(head.id, a1);
    assert_eq!(head.control_id, "A1");
    assert_eq!(head.source, "bundle-A1");
    assert_eq!(head.attempts, 0);
    assert_eq!(head.next_attempt_at, head.enqueued_at);
    assert_eq!(head.payload, item("ehr", "A1").payload);
    assert_eq!(store.next_pending("lab").unwrap().unwrap().id, b1);
    assert_eq!(store.next_pending("none").unwrap(), None);
    assert_eq!(store.enqueue(Vec::new()).await.unwrap(), Vec::<i64>::new());
    let ahead: Vec<i64> = store
        .pending_after_async("ehr", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ahead, [a1, a2]);
    let after: Vec<i64> = store
        .pending_after("ehr", a1, 10)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(after, [a2]);
    assert_eq!(store.pending_after("ehr", 0, 1).unwrap().len(), 1);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_retry_keeps_head_then_delivered_moves_on(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let fixture = open(backend);
    let store = &fixture.store;
    let ids = store
        .enqueue(vec![item("ehr", "A1"), item("ehr", "A2")])
        .await
        .unwrap();
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
    assert!(
        store
            .mark_retry(ids[0], "receiver answered AE", later)
            .await
            .unwrap()
    );
    let head = store.next_pending("ehr").unwrap().unwrap();
    assert_eq!(head.id, ids[0], "a message in backoff stays at the head");
    assert_eq!(head.attempts, 1);
    assert_eq!(head.last_error.as_deref(), Some("receiver answered AE"));
    assert_eq!(
        head.next_attempt_at.as_microsecond(),
        later.as_microsecond()
    );
    let heads = store.queue_heads_async().await.unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!(
        (
            heads[0].destination.as_str(),
            heads[0].attempts,
            heads[0].last_error.as_str()
        ),
        ("ehr", 1, "receiver answered AE")
    );

    let ack = Bytes::from_static(b"MSH|^~\\&\rMSA|AA|A1");
    assert!(store.mark_delivered(ids[0], ack.clone()).await.unwrap());
    assert!(
        !store.mark_delivered(ids[0], ack).await.unwrap(),
        "only once"
    );
    let (message, status) = store.outbound_message(ids[0]).unwrap().unwrap();
    assert_eq!(status, OutboundStatus::Delivered);
    assert_eq!(message.attempts, 2);
    assert_eq!(store.next_pending("ehr").unwrap().unwrap().id, ids[1]);
    assert_eq!(store.outbound_message(ids[1] + 1000).unwrap(), None);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_dead_letter_unblocks_and_replay_restores(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let fixture = open(backend);
    let store = &fixture.store;
    let ids = store
        .enqueue(vec![
            item("ehr", "A1"),
            item("ehr", "A2"),
            item("lab", "B1"),
        ])
        .await
        .unwrap();
    assert!(
        store
            .mark_dead(ids[0], "receiver refused (AR): bad patient")
            .await
            .unwrap()
    );
    assert!(!store.mark_dead(ids[0], "again").await.unwrap());
    assert_eq!(store.next_pending("ehr").unwrap().unwrap().id, ids[1]);

    let overview = store.queue_overview_async().await.unwrap();
    assert_eq!(overview.len(), 2);
    let ehr = &overview[0];
    assert_eq!(
        (ehr.destination.as_str(), ehr.pending, ehr.dead),
        ("ehr", 1, 1)
    );
    assert!(ehr.oldest_pending_at.is_some());
    assert_eq!(store.queue_overview().unwrap(), overview);

    let dead = store.dead_letters(Some("ehr"), 10).unwrap();
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.id, ids[0]);
    assert_eq!(letter.control_id, "A1");
    assert_eq!(letter.attempts, 1);
    assert_eq!(letter.reason, "receiver refused (AR): bad patient");
    assert!(letter.dead_at.is_some());
    assert!(store.dead_letters(Some("lab"), 0).unwrap().is_empty());
    assert_eq!(store.dead_letters_async(None, 0).await.unwrap().len(), 1);

    // Unknown and pending ids are not replayed; the dead one is, ahead of A2.
    assert_eq!(
        store
            .replay(vec![ids[0], ids[1], ids[2] + 1000])
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.replay(Vec::new()).await.unwrap(), 0);
    let head = store.next_pending("ehr").unwrap().unwrap();
    assert_eq!((head.id, head.attempts), (ids[0], 0));
    assert!(store.dead_letters(None, 0).unwrap().is_empty());
    // A destination with nothing left waiting leaves the overview.
    store.mark_delivered(ids[2], Bytes::new()).await.unwrap();
    let destinations: Vec<String> = store
        .queue_overview()
        .unwrap()
        .into_iter()
        .map(|d| d.destination)
        .collect();
    assert_eq!(destinations, ["ehr"]);
}

// ---------------------------------------------------------------------------------------------
// The console's audit trail and lineage

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_audit_newest_first_and_lineage_of_a_journal_row(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let fixture = open(backend);
    let store = &fixture.store;
    for (action, target) in [("view", "journal:1"), ("replay", "outbound:2")] {
        store
            .audit(ordobridge::store::AuditEntry {
                user: "olga".to_owned(),
                action: action.to_owned(),
                target: target.to_owned(),
                reason: "ticket 42".to_owned(),
            })
            .await
            .unwrap();
    }
    let recent = store.recent_audit(10).await.unwrap();
    let shown: Vec<(&str, &str, &str, &str)> = recent
        .iter()
        .map(|r| {
            (
                r.entry.user.as_str(),
                r.entry.action.as_str(),
                r.entry.target.as_str(),
                r.entry.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("olga", "replay", "outbound:2", "ticket 42"),
            ("olga", "view", "journal:1", "ticket 42")
        ]
    );
    assert!(recent[0].id > recent[1].id);
    assert_eq!(store.recent_audit(1).await.unwrap().len(), 1);

    let mut from_journal = item("ehr", "A1");
    from_journal.source = "journal:7".to_owned();
    let mut other = item("lab", "B1");
    other.source = "journal:8".to_owned();
    let ids = store
        .enqueue(vec![from_journal.clone(), other, {
            let mut second = item("lab", "A2");
            second.source = "journal:7".to_owned();
            second
        }])
        .await
        .unwrap();
    let ack = Bytes::from_static(b"MSH|^~\\&\rMSA|AA|A1");
    store.mark_delivered(ids[0], ack.clone()).await.unwrap();
    let lineage = store.lineage(7).await.unwrap();
    assert_eq!(lineage.len(), 2);
    assert_eq!(
        (
            lineage[0].id,
            lineage[0].destination.as_str(),
            lineage[0].status
        ),
        (ids[0], "ehr", OutboundStatus::Delivered)
    );
    assert_eq!(lineage[0].ack.as_ref(), Some(&ack));
    assert!(lineage[0].delivered_at.is_some());
    assert_eq!(lineage[0].attempts, 1);
    assert_eq!(
        (lineage[1].id, lineage[1].status, lineage[1].ack.clone()),
        (ids[2], OutboundStatus::Pending, None)
    );
    assert!(store.lineage(99).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The console's search (the same rows, in the same order, as `store::read`'s own cases)

/// Five rows one minute apart from 2023-11-14T22:13:20Z; returns their ids in order.
async fn searchable(store: &Store) -> Vec<i64> {
    let rows: [(&str, &str, &str, &str, Option<&str>); 5] = [
        // PID-3 holds 4711 (second repetition).
        (
            "adt-in",
            "ADT^A01^ADT_A01",
            "MSH|^~\\&|A|B|||20260101||ADT^A01^ADT_A01|1|P|2.5\rPID|1||999^^^X^NH~4711^^^CH^PI\r",
            "one",
            None,
        ),
        // 4711 only as a visit number: not a match for the IPP.
        (
            "adt-in",
            "ADT^A08",
            "MSH|^~\\&|A|B|||20260101||ADT^A08|2|P|2.5\rPID|1||1234^^^CH^PI\rPV1|1|I|||||||||||||||||4711\r",
            "two",
            None,
        ),
        (
            "adt-in",
            "ADTX^A01",
            "MSH|^~\\&|A|B|||20260101||ADTX^A01|3|P|2.5\rPID|1||4711^^^CH^PI\r",
            "three",
            Some("bad"),
        ),
        (
            "lab-in",
            "ORU^R01",
            "MSH|^~\\&|A|B|||20260101||ORU^R01|4|P|2.5\rPID|1||4711^^^CH^PI\r",
            "four",
            None,
        ),
        // Not HL7 v2 at all, but holds the bytes.
        ("adt-in", "ADT", "H|4711", "five", None),
    ];
    let mut ids = Vec::new();
    for (n, (channel, message_type, raw, control_id, reason)) in rows.into_iter().enumerate() {
        let mut row = match reason {
            None => record(control_id, raw.as_bytes()),
            Some(reason) => rejected(control_id, raw.as_bytes(), reason),
        };
        row.channel = channel.to_owned();
        row.message_type = message_type.to_owned();
        row.received_at =
            jiff::Timestamp::from_second(1_700_000_000 + 60 * i64::try_from(n).unwrap()).unwrap();
        ids.push(stored(store.journal(row).await.unwrap()));
    }
    ids
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_search_filters_the_same_rows(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    use ordobridge::store::JournalSearch;
    let fixture = open(backend);
    let store = &fixture.store;
    let ids = searchable(store).await;
    let at = |text: &str| Some(text.parse::<jiff::Timestamp>().unwrap());
    let all = |limit: usize| JournalFilter {
        limit,
        ..JournalFilter::default()
    };
    let search = || JournalSearch {
        filter: all(0),
        ..JournalSearch::default()
    };
    let cases: Vec<(&str, JournalSearch, &[usize])> = vec![
        ("everything", search(), &[5, 4, 3, 2, 1]),
        (
            "since, inclusive",
            JournalSearch {
                since: at("2023-11-14T22:15:20Z"),
                ..search()
            },
            &[5, 4, 3],
        ),
        (
            "until, exclusive",
            JournalSearch {
                until: at("2023-11-14T22:15:20Z"),
                ..search()
            },
            &[2, 1],
        ),
        (
            "time range",
            JournalSearch {
                since: at("2023-11-14T22:14:20Z"),
                until: at("2023-11-14T22:16:20Z"),
                ..search()
            },
            &[3, 2],
        ),
        (
            "type family",
            JournalSearch {
                message_type: Some("ADT".into()),
                ..search()
            },
            &[5, 2, 1],
        ),
        (
            "type event",
            JournalSearch {
                message_type: Some("ADT^A01".into()),
                ..search()
            },
            &[1],
        ),
        (
            "underscore and percent are no wildcards",
            JournalSearch {
                message_type: Some("ADT^A01^ADT%".into()),
                ..search()
            },
            &[],
        ),
        (
            "type with a wildcard-like underscore",
            JournalSearch {
                message_type: Some("ADT^A01^ADT_A01".into()),
                ..search()
            },
            &[1],
        ),
        (
            "rejected",
            JournalSearch {
                status: Some(EntryStatus::Rejected),
                ..search()
            },
            &[3],
        ),
        (
            "accepted, limited",
            JournalSearch {
                status: Some(EntryStatus::Accepted),
                filter: all(3),
                ..search()
            },
            &[5, 4, 2],
        ),
        (
            "channel",
            JournalSearch {
                filter: JournalFilter {
                    channel: Some("lab-in".into()),
                    ..all(0)
                },
                ..search()
            },
            &[4],
        ),
        (
            "control id",
            JournalSearch {
                filter: JournalFilter {
                    control_id: Some("two".into()),
                    ..all(0)
                },
                ..search()
            },
            &[2],
        ),
        (
            "IPP in PID-3 only",
            JournalSearch {
                ipp: Some("4711".into()),
                ..search()
            },
            &[4, 3, 1],
        ),
        (
            "IPP, the limit counts rows kept",
            JournalSearch {
                ipp: Some("4711".into()),
                filter: all(2),
                ..search()
            },
            &[4, 3],
        ),
        (
            "IPP and type",
            JournalSearch {
                ipp: Some("4711".into()),
                message_type: Some("ADT".into()),
                ..search()
            },
            &[1],
        ),
        (
            "IPP in another repetition",
            JournalSearch {
                ipp: Some("999".into()),
                ..search()
            },
            &[1],
        ),
        (
            "part of an IPP is no match",
            JournalSearch {
                ipp: Some("471".into()),
                ..search()
            },
            &[],
        ),
        (
            "NDA in PV1-19",
            JournalSearch {
                nda: Some("4711".into()),
                ..search()
            },
            &[2],
        ),
        (
            "text in the raw bytes",
            JournalSearch {
                text: Some("ORU^R01".into()),
                ..search()
            },
            &[4],
        ),
        (
            "min id bounds the text scan",
            JournalSearch {
                text: Some("4711".into()),
                min_id: Some(ids[2]),
                ..search()
            },
            &[5, 4],
        ),
        (
            "page after a row",
            JournalSearch {
                after: at("2023-11-14T22:15:20Z").map(|t| (t, ids[2])),
                ..search()
            },
            &[2, 1],
        ),
        (
            "first page of two",
            JournalSearch {
                filter: all(2),
                ..search()
            },
            &[5, 4],
        ),
        (
            "second page of two",
            JournalSearch {
                filter: all(2),
                after: at("2023-11-14T22:16:20Z").map(|t| (t, ids[3])),
                ..search()
            },
            &[3, 2],
        ),
        (
            "IPP, next page",
            JournalSearch {
                ipp: Some("4711".into()),
                after: at("2023-11-14T22:16:20Z").map(|t| (t, ids[3])),
                ..search()
            },
            &[3, 1],
        ),
    ];
    for (name, search, rows) in cases {
        let listed: Vec<i64> = store
            .search_journal(&search)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        let expected: Vec<i64> = rows.iter().map(|n| ids[n - 1]).collect();
        assert_eq!(listed, expected, "{backend:?}: {name}");
    }
    let found = store.search_journal(&search()).unwrap();
    assert_eq!(found[1].channel, "lab-in");
    assert_eq!(found[1].control_id, "four");
    assert_eq!(found[2].status, "rejected");
    assert_eq!(found[2].reason.as_deref(), Some("bad"));
    // The dashboard's last message of each channel (absent: never).
    let last = store
        .last_received(vec!["adt-in".into(), "lab-in".into(), "none".into()])
        .await
        .unwrap();
    assert_eq!(
        last.into_iter().collect::<Vec<_>>(),
        [
            ("adt-in".to_owned(), "2023-11-14T22:17:20Z".parse().unwrap()),
            ("lab-in".to_owned(), "2023-11-14T22:16:20Z".parse().unwrap()),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The console's pause

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_pause_survives_a_restart_with_its_audit_rows(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    use ordobridge::store::AuditEntry;
    let mut fixture = open(backend);
    let entry = |action: &str, target: &str| AuditEntry {
        user: "olga".into(),
        action: action.into(),
        target: format!("destination:{target}"),
        reason: "maintenance".into(),
    };
    for (destination, paused) in [
        ("ehr", true),
        ("ehr", true),
        ("lab", true),
        ("lab", false),
        ("alpha", true),
        ("Zeta", true),
        ("never-paused", false),
    ] {
        let action = if paused { "pause" } else { "resume" };
        fixture
            .store
            .switch_destination(destination.into(), paused, entry(action, destination))
            .await
            .unwrap();
    }
    fixture.reopen().await;
    // By name in byte order, on both backends.
    assert_eq!(
        fixture.store.paused_destinations().unwrap(),
        ["Zeta", "alpha", "ehr"]
    );
    let audit = fixture.store.recent_audit(10).await.unwrap();
    assert_eq!(audit.len(), 7, "each switch is on record");
    assert_eq!(audit[0].entry, entry("resume", "never-paused"));
    fixture
        .store
        .switch_destination("ehr".into(), false, entry("resume", "ehr"))
        .await
        .unwrap();
    fixture.reopen().await;
    assert_eq!(
        fixture.store.paused_destinations().unwrap(),
        ["Zeta", "alpha"]
    );
}

// ---------------------------------------------------------------------------------------------
// Retention

const DAY: Duration = Duration::from_secs(86_400);

/// A journal row of `channel` received `days` before `now`, left `accepted`, made
/// `processed`, or `rejected`; returns its id.
async fn aged(
    store: &Store,
    now: jiff::Timestamp,
    (channel, days, status): (&str, u32, &str),
) -> i64 {
    let control_id = format!("{channel}-{days}-{status}");
    let raw = format!("MSH|{control_id}");
    let mut row = if status == "rejected" {
        rejected(&control_id, raw.as_bytes(), "bad")
    } else {
        record(&control_id, raw.as_bytes())
    };
    row.channel = channel.to_owned();
    row.received_at = now - jiff::SignedDuration::from_hours(24 * i64::from(days));
    let id = stored(store.journal(row).await.unwrap());
    if status == "processed" {
        store.mark_processed(vec![id]).await.unwrap();
    }
    id
}

/// The control ids left in the journal, sorted.
fn left(store: &Store) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_journal(&JournalFilter {
            limit: 0,
            ..JournalFilter::default()
        })
        .unwrap()
        .into_iter()
        .map(|s| s.control_id)
        .collect();
    ids.sort();
    ids
}

/// Retention by the store's cutoffs and by channel, in steps of one row: the dry run counts
/// what the prune deletes; a row with a pending message stays; finished messages go.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_prune_by_retention_and_channel(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    use ordobridge::store::RetentionPlan;
    let fixture = open(backend);
    let store = &fixture.store;
    let now = jiff::Timestamp::now();
    let mut ids = std::collections::BTreeMap::new();
    for row in [
        ("lab", 10, "processed"),
        ("lab", 3, "processed"),
        ("lab", 10, "rejected"),
        ("adt", 10, "processed"),
        ("adt", 100, "processed"),
        ("adt", 120, "processed"),
        ("adt", 40, "rejected"),
        ("archive", 400, "processed"),
        ("archive", 40, "rejected"),
        ("gone", 100, "processed"),
        ("gone", 10, "processed"),
        ("lab", 11, "accepted"),
    ] {
        ids.insert(row, aged(store, now, row).await);
    }
    // A message of `adt-120` still pending keeps it; the others are finished (or not yet).
    let mut pending = item("ehr", "P1");
    pending.source = format!("journal:{}", ids[&("adt", 120, "processed")]);
    let queued = store
        .enqueue(vec![
            pending,
            item("ehr", "D1"),
            item("ehr", "X1"),
            item("ehr", "P2"),
        ])
        .await
        .unwrap();
    assert!(
        store
            .mark_delivered(queued[1], Bytes::from_static(b"MSA|AA"))
            .await
            .unwrap()
    );
    assert!(store.mark_dead(queued[2], "refused").await.unwrap());
    // `lab` 7 days, `archive` forever, `adt` and `gone` the store's 90 days (30 for rejected
    // rows); finished messages up to an hour from now.
    let mut plan = RetentionPlan::at(now, 90 * DAY, 30 * DAY)
        .with_channel("lab", Some(7 * DAY))
        .with_channel("archive", None);
    plan.outbound_before = (now + jiff::SignedDuration::from_hours(1)).as_microsecond();
    let (counted, by_channel) = store.prunable_by_channel(&plan).unwrap();
    assert_eq!(
        by_channel,
        [
            ("adt".to_owned(), 2),
            ("archive".to_owned(), 1),
            ("gone".to_owned(), 1),
            ("lab".to_owned(), 2)
        ]
    );
    assert_eq!((counted.journal, counted.outbound), (6, 2));
    assert_eq!(store.prunable(&plan).unwrap(), counted);
    let (pruned, _) = store.prune(plan.clone(), 1).await.unwrap();
    assert_eq!(pruned, counted, "the dry run counts what the prune deletes");
    assert_eq!(
        left(store),
        [
            "adt-10-processed",
            "adt-120-processed",
            "archive-400-processed",
            "gone-10-processed",
            "lab-11-accepted",
            "lab-3-processed"
        ]
    );
    let overview = store.queue_overview_async().await.unwrap();
    assert_eq!((overview[0].pending, overview[0].dead), (2, 0));
    // Nothing left to go; once its message is delivered, `adt-120` goes.
    assert_eq!(store.prunable(&plan).unwrap().total(), 0);
    assert_eq!(
        store
            .prune_step(Some(plan.clone()), 10, 0)
            .await
            .unwrap()
            .0
            .total(),
        0
    );
    store
        .mark_delivered(queued[0], Bytes::from_static(b"MSA|AA"))
        .await
        .unwrap();
    let (pruned, _) = store.prune(plan, 10).await.unwrap();
    assert_eq!((pruned.journal, pruned.outbound), (1, 1));
}

/// A channel kept `forever` that leaves the configuration keeps `forever` (recorded at the
/// prune before), as the dry run says; configured again without a retention of its own, it
/// follows the store's again.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_removed_channel_keeps_its_last_retention(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    use ordobridge::store::RetentionPlan;
    let fixture = open(backend);
    let store = &fixture.store;
    let now = jiff::Timestamp::now();
    aged(store, now, ("archive", 400, "processed")).await;
    aged(store, now, ("adt", 100, "processed")).await;
    let store_default = || RetentionPlan::at(now, 90 * DAY, 30 * DAY);
    let configured = |channels: &[&str]| channels.iter().map(|c| (*c).to_owned()).collect();
    let with_archive = store_default()
        .with_configured_channels(configured(&["adt", "archive"]))
        .with_channel("archive", None);
    assert_eq!(store.prune(with_archive, 10).await.unwrap().0.journal, 1);

    // `archive` removed from the configuration: its `forever` holds, in the dry run too.
    let without_archive = store_default().with_configured_channels(configured(&["adt"]));
    let (counted, by_channel) = store.prunable_by_channel(&without_archive).unwrap();
    assert_eq!((counted.journal, by_channel), (0, vec![]));
    assert_eq!(store.prune(without_archive, 10).await.unwrap().0.journal, 0);
    assert_eq!(left(store), ["archive-400-processed"]);
    // A plan that does not know the configuration neither records nor applies.
    assert_eq!(store.prunable(&store_default()).unwrap().journal, 1);

    // A restart (another node) reads the same record.
    let other = fixture.another(false);
    let without_archive = store_default().with_configured_channels(configured(&["adt"]));
    assert_eq!(other.prunable(&without_archive).unwrap().journal, 0);

    // `archive` back, without a retention of its own: the store's 90 days.
    let archive_plain = store_default().with_configured_channels(configured(&["adt", "archive"]));
    assert_eq!(store.prunable(&archive_plain).unwrap().journal, 1);
    assert_eq!(store.prune(archive_plain, 10).await.unwrap().0.journal, 1);
    // Forgotten: removed again, it follows the store's retention (nothing left to show it
    // but a new row).
    aged(store, now, ("archive", 200, "processed")).await;
    let removed = store_default().with_configured_channels(configured(&["adt"]));
    assert_eq!(store.prunable(&removed).unwrap().journal, 1);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only

/// A plain client on the test server, its connection driven by a task.
async fn client(server: &TestPostgres) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_test_postgres_is_durable_and_stopped_by_pid() {
    let server = TestPostgres::start();
    let pid = server.pid();
    let client = client(&server).await;
    let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    let commit: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((fsync.as_str(), commit.as_str()), ("on", "on"));
    drop(client);
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the server (PID {pid}) is gone once its guard dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_postgres_schema_newer_refused_and_listing_never_migrates() {
    let server = TestPostgres::start();
    let settings = PostgresSettings::from_url(&server.url()).unwrap();
    let target = format!("postgres://ordobridge@127.0.0.1:{}/postgres", server.port);
    // A listing on a database the daemon never migrated is refused, and migrates nothing.
    let refused = Store::open_postgres(&settings, false)
        .unwrap_err()
        .to_string();
    let store = Store::open_postgres(&settings, true).unwrap();
    // This build's version, as the migration recorded it (scripts are added by several
    // branches: the number is read, not written here).
    let version: i32 = client(&server)
        .await
        .query_one("SELECT max(version) FROM ordobridge_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        refused,
        format!(
            "store `{target}` has schema version 0, this build reads version {version}: start \
             the daemon of this version once (`ordobridge run`), which migrates it; listings \
             never change the store"
        )
    );
    let id = stored(store.journal(record("1", b"MSH|1")).await.unwrap());
    drop(store);
    // Reopened (a second node, a restart): nothing migrated twice, the row is there.
    let store = Store::open_postgres(&settings, true).unwrap();
    assert!(store.journal_entry(id).unwrap().is_some());
    let reader = Store::open_postgres(&settings, false).unwrap();
    assert!(reader.journal_entry(id).unwrap().is_some());
    let err = reader.journal(record("2", b"MSH|2")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("store `{target}` is open read-only here: nothing can be written through it")
    );
    drop((store, reader));
    client(&server)
        .await
        .execute(
            "INSERT INTO ordobridge_schema (version, applied_at) VALUES ($1, 0)",
            &[&(version + 1)],
        )
        .await
        .unwrap();
    let err = Store::open_postgres(&settings, true).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "store `{target}` has schema version {}, this build knows versions 0 to {version}; \
             was it written by a newer ordobridge?",
            version + 1
        )
    );
}

/// Ids are taken before commit: a row may commit after a higher id the census processor
/// already read past. The work list holds the later rows back until the older transaction
/// ended, then hands over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_postgres_work_list_waits_for_rows_committed_late() {
    let fixture = open(Backend::Postgres);
    let store = &fixture.store;
    let server = fixture.server.as_ref().unwrap();
    let skip = ["posos-push", "documents"];
    let first = stored(store.journal(record("1", b"MSH|1")).await.unwrap());
    let mut late = client(server).await;
    let transaction = late.transaction().await.unwrap();
    let late_id: i64 = transaction
        .query_one(
            "INSERT INTO journal (channel, received_at, peer, sender, message_type, control_id,
                content_hash, raw, status, last_seen_at, kept)
             VALUES ('adt-in', 0, 'p', 's', 'ADT^A01', 'L', sha256('MSH|L'), 'MSH|L',
                'accepted', 0, true) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let after = stored(store.journal(record("3", b"MSH|3")).await.unwrap());
    assert!(first < late_id && late_id < after);
    let ids = |rows: Vec<ordobridge::store::Unprocessed>| -> Vec<i64> {
        rows.into_iter().map(|row| row.id).collect()
    };
    // The row after the running transaction waits for it.
    assert_eq!(
        ids(store.accepted_after(0, 10, skip).await.unwrap()),
        [first]
    );
    transaction.commit().await.unwrap();
    // The processor's cursor is past `first`: the late row comes all the same, in order.
    assert_eq!(
        ids(store.accepted_after(first, 10, skip).await.unwrap()),
        [late_id, after]
    );
    assert!(
        store
            .accepted_after(after, 10, skip)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Many intake tasks at once, each its own transaction on its own pooled connection: every
/// call answers once committed, with its own row; duplicates sent concurrently are one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_postgres_concurrent_intake_commits_every_message() {
    let fixture = open(Backend::Postgres);
    let calls = (0..200).map(|n| {
        let store = fixture.store.clone();
        async move {
            store
                .journal(record(
                    &format!("C{}", n % 150),
                    format!("MSH|{}", n % 150).as_bytes(),
                ))
                .await
        }
    });
    let outcomes: Vec<JournalOutcome> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut ids: Vec<i64> = outcomes.iter().map(|o| o.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 150, "one row per distinct message");
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, JournalOutcome::Duplicate { .. }))
        .count();
    assert_eq!(duplicates, 50);
    let listed = fixture
        .store
        .list_journal(&JournalFilter {
            limit: 0,
            ..JournalFilter::default()
        })
        .unwrap();
    assert_eq!(listed.len(), 150);
    let enqueued = join_all((0..40).map(|n| {
        let store = fixture.store.clone();
        async move {
            store
                .enqueue(vec![
                    item("ehr", &format!("E{n}")),
                    item("lab", &format!("L{n}")),
                ])
                .await
        }
    }))
    .await;
    assert!(enqueued.iter().all(Result::is_ok));
    assert_eq!(
        fixture.store.pending_after("ehr", 0, 100).unwrap().len(),
        40
    );
}

/// Commit before ACK on PostgreSQL: what `journal` and `enqueue` answered survives a crash of
/// the server (SIGKILL: no shutdown checkpoint, the rows come back from the WAL), and the
/// store's pool reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_postgres_answered_rows_survive_a_server_crash() {
    let mut fixture = open(Backend::Postgres);
    let journaled: Vec<i64> = join_all((0..20).map(|n| {
        let store = fixture.store.clone();
        async move {
            store
                .journal(record(&format!("K{n}"), format!("MSH|K{n}").as_bytes()))
                .await
        }
    }))
    .await
    .into_iter()
    .map(|outcome| stored(outcome.unwrap()))
    .collect();
    let enqueued = fixture
        .store
        .enqueue(vec![item("ehr", "Q1"), item("ehr", "Q2")])
        .await
        .unwrap();
    fixture.server.as_mut().unwrap().crash_and_restart();
    let store = &fixture.store;
    for id in &journaled {
        assert!(store.journal_entry(*id).unwrap().is_some(), "row {id} lost");
    }
    let pending: Vec<i64> = store
        .pending_after("ehr", 0, 10)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(pending, enqueued);
    stored(store.journal(record("after", b"MSH|after")).await.unwrap());
}

/// Two nodes on one database: one owner per destination; the other takes over once the
/// owner stops renewing (within the lease), at once after a release; a late renewal of a
/// lease taken over fails; the owner's own deadline ends before the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_postgres_one_owner_per_destination_and_failover() {
    let fixture = open(Backend::Postgres);
    let server = fixture.server.as_ref().unwrap();
    let settings = PostgresSettings::from_url(&server.url()).unwrap();
    let node_a = &fixture.store;
    let node_b = Store::open_postgres(&settings, true).unwrap();
    let lease = Duration::from_secs(1);

    let mut held = node_a
        .claim_destination("ehr", "ob-a", lease)
        .await
        .unwrap()
        .unwrap();
    assert!(held.is_valid());
    assert_eq!(held.epoch, 1);
    assert_eq!(
        node_b
            .claim_destination("ehr", "ob-b", lease)
            .await
            .unwrap(),
        None
    );
    // Another destination is free for the other node.
    let lab = node_b
        .claim_destination("lab", "ob-b", lease)
        .await
        .unwrap()
        .unwrap();
    assert!(node_a.renew_destination(&mut held).await.unwrap());
    let owners = node_b.destination_owners().await.unwrap();
    let shown: Vec<(&str, &str, bool)> = owners
        .iter()
        .map(|o| (o.destination.as_str(), o.node.as_str(), o.live))
        .collect();
    assert_eq!(shown, [("ehr", "ob-a", true), ("lab", "ob-b", true)]);

    // Node A stops renewing (it died): B takes the destination once the lease ran out.
    let stopped = std::time::Instant::now();
    let taken = loop {
        if let Some(taken) = node_b
            .claim_destination("ehr", "ob-b", lease)
            .await
            .unwrap()
        {
            break taken;
        }
        assert!(stopped.elapsed() < Duration::from_secs(10), "no failover");
        // A claim is a cheap statement: poll it, as a waiting node does.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !held.is_valid(),
        "A's own deadline passed before B could take over"
    );
    // Within the lease, plus the polling and a loaded machine's latency.
    assert!(
        stopped.elapsed() <= lease * 3,
        "failover took {:?}",
        stopped.elapsed()
    );
    assert_eq!(taken.epoch, 2);
    // A comes back late: its renewal fails, it must not send.
    assert!(!node_a.renew_destination(&mut held).await.unwrap());
    assert!(!held.is_valid());
    // B stops cleanly: A takes over at once.
    node_b.release_destination(taken).await.unwrap();
    node_b.release_destination(lab).await.unwrap();
    let again = node_a
        .claim_destination("ehr", "ob-a", lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.epoch, 3);
}

#[tokio::test]
async fn ok_sqlite_single_node_always_owns() {
    let fixture = open(Backend::Sqlite);
    let store = &fixture.store;
    let mut lease = store
        .claim_destination("ehr", "ob-a", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(lease.is_valid());
    assert!(store.renew_destination(&mut lease).await.unwrap());
    assert!(store.destination_owners().await.unwrap().is_empty());
    store.release_destination(lease).await.unwrap();
}

/// TLS to PostgreSQL through rustls: the server takes TLS only, its certificate is checked
/// against `ca_file` and the host name; a foreign CA is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_postgres_over_tls_and_err_unknown_ca() {
    use ordobridge::store::settings::PostgresTls;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).unwrap();
        (Issuer::new(params, key), path)
    };
    let (site, site_pem) = ca("site-ca");
    let (_, foreign_pem) = ca("foreign-ca");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf.signed_by(&leaf_key, &site).unwrap();
    let server = TestPostgres::start_tls(&leaf.pem(), &leaf_key.serialize_pem());

    let url = format!("postgres://ordobridge@localhost:{}/postgres", server.port);
    let mut settings = PostgresSettings::from_url(&url).unwrap();
    settings.tls = PostgresTls::VerifyFull {
        ca_file: Some(site_pem),
    };
    let store = Store::open_postgres(&settings, true).unwrap();
    let id = stored(store.journal(record("T", b"MSH|T")).await.unwrap());
    assert!(store.journal_entry(id).unwrap().is_some());
    drop(store);

    // Plain is refused by this server, so the store did speak TLS.
    let mut plain = PostgresSettings::from_url(&url).unwrap();
    plain.tls = PostgresTls::Disable;
    let err = Store::open_postgres(&plain, true).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("store `{url}`: no connection to PostgreSQL for `migrate`")
    );
    settings.tls = PostgresTls::VerifyFull {
        ca_file: Some(foreign_pem),
    };
    let err = Store::open_postgres(&settings, true).unwrap_err();
    let chain = ordobridge::text::error_chain(&err);
    assert!(
        chain.starts_with(&format!(
            "store `{url}`: no connection to PostgreSQL for `migrate`"
        )) && chain.contains("UnknownIssuer"),
        "{chain}"
    );
}

/// Two nodes prune the same journal at once: their steps take turns (an advisory lock), each
/// row goes once, and the counts add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_postgres_two_nodes_prune_at_once() {
    use ordobridge::store::RetentionPlan;
    let fixture = open(Backend::Postgres);
    let store = &fixture.store;
    let now = jiff::Timestamp::now();
    let old = now - jiff::SignedDuration::from_hours(24 * 100);
    let records = (0..300)
        .map(|n| {
            let mut row = record(&format!("old-{n}"), format!("MSH|{n}").as_bytes());
            row.received_at = old + jiff::SignedDuration::from_secs(n);
            row
        })
        .collect();
    let ids = store.journal_many(records).await.unwrap();
    store
        .mark_processed(ids.into_iter().map(stored).collect())
        .await
        .unwrap();
    aged(store, now, ("adt-in", 10, "processed")).await;
    let plan = RetentionPlan::at(now, 90 * DAY, 30 * DAY)
        .with_configured_channels(vec!["adt-in".to_owned(), "lab-in".to_owned()])
        .with_channel("adt-in", Some(60 * DAY));
    assert_eq!(store.prunable(&plan).unwrap().journal, 300);
    let other = fixture.another(true);
    let (one, two) = tokio::join!(store.prune(plan.clone(), 7), other.prune(plan.clone(), 7));
    let (one, two) = (one.unwrap().0, two.unwrap().0);
    assert_eq!(one.journal + two.journal, 300, "{one:?} {two:?}");
    assert_eq!(left(store), ["adt-in-10-processed"]);
    assert_eq!(other.prunable(&plan).unwrap().total(), 0);
}

/// The plans of the console's searches and of a prune step on 200,000 rows with statistics
/// (the forms `store::postgres::search` and `prune` write): a filter few rows match is read
/// through its own index, a prune step through `journal_received_at` from its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_postgres_plans_use_the_console_indexes() {
    let fixture = open(Backend::Postgres);
    let client = client(fixture.server.as_ref().unwrap()).await;
    client
        .batch_execute(
            "INSERT INTO journal (channel, received_at, peer, sender, message_type, control_id,
                content_hash, raw, status, last_seen_at, kept)
             SELECT CASE WHEN n % 5000 = 0 THEN 'rare' ELSE 'adt-in' END,
                1700000000000000 + n * 1000000, 'p', 's',
                CASE WHEN n % 5000 = 0 THEN 'ORM^O01' WHEN n % 3 = 0 THEN 'ORU^R01'
                    ELSE 'ADT^A01' END,
                'C' || n, sha256(n::text::bytea), ('MSH|' || n)::bytea,
                CASE WHEN n % 100 = 7 THEN 'rejected' ELSE 'processed' END, 0, n % 100 <> 7
             FROM generate_series(1::bigint, 200000::bigint) n;
             ANALYZE journal;",
        )
        .await
        .unwrap();
    let newest = " ORDER BY received_at DESC, id DESC LIMIT 51";
    for (condition, index) in [
        (
            "(message_type COLLATE \"C\" = 'ORM' OR (message_type COLLATE \"C\" >= 'ORM^' \
             AND message_type COLLATE \"C\" < 'ORM_'))",
            "journal_type_time",
        ),
        ("status = 'rejected'", "journal_rejected"),
        ("channel = 'rare'", "journal_channel_received"),
        ("received_at >= 1700000100000000", "journal_received_at"),
    ] {
        let plan: Vec<String> = client
            .query(
                &format!("EXPLAIN SELECT id FROM journal WHERE {condition}{newest}"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(
            plan.iter().any(|line| line.contains(&format!(" {index} "))),
            "{condition}: {plan:#?}"
        );
    }
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT id FROM journal WHERE received_at < 1700000100000000
                AND ((status = 'processed' AND received_at < 1700000100000000)
                    OR (status = 'rejected' AND received_at < 1700000050000000))
                AND NOT EXISTS (SELECT 1 FROM outbound o
                    WHERE o.source = 'journal:' || journal.id AND o.status = 'pending')
                AND received_at >= 1700000050000000
                AND (received_at, id) > (1700000050000000, 50)
             ORDER BY received_at, id LIMIT 500 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        plan.iter()
            .any(|line| line.contains("Index Scan using journal_received_at")),
        "{plan:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_postgres_refuses_what_is_not_ported_yet() {
    let fixture = open(Backend::Postgres);
    let store = &fixture.store;
    let target = store.path().display().to_string();
    let refusal = |operation: &str| {
        format!(
            "store `{target}`: `{operation}` is not ported to the PostgreSQL backend yet: use \
             `backend = \"sqlite\"` for a configuration that needs it"
        )
    };
    let err = store.held_bundles(10).unwrap_err();
    assert_eq!(err.to_string(), refusal("held_bundles"));
    // Document tracking is not here to prune; the census is not either, and has nothing to
    // prune (nothing feeds it on PostgreSQL).
    let plan = ordobridge::store::RetentionPlan::at(jiff::Timestamp::now(), 90 * DAY, 30 * DAY);
    let err = store
        .prune_step(Some(plan.clone().with_document_tracking(Some(DAY))), 10, 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), refusal("prune of document tracking"));
    let census = plan.with_census(Some(730 * DAY), &jiff::tz::TimeZone::UTC);
    assert_eq!(
        store
            .prune_step(Some(census.clone()), 10, 0)
            .await
            .unwrap()
            .0
            .total(),
        0
    );
    assert_eq!(store.prunable(&census).unwrap().total(), 0);
    // Once the census tables are there (a build with the census ported but not its prune
    // here), its retention is refused rather than silently not applied.
    client(fixture.server.as_ref().unwrap())
        .await
        .batch_execute("CREATE TABLE census_patients (id bigint)")
        .await
        .unwrap();
    let err = store
        .prune_step(Some(census.clone()), 10, 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), refusal("prune of the census"));
    let err = store.prunable(&census).unwrap_err();
    assert_eq!(err.to_string(), refusal("prune of the census"));
    let err = store
        .census_patient(&ordobridge::store::PatientKey::Ipp("123".to_owned()))
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Unported {
            operation: "census_patient",
            ..
        }
    ));
    let outcomes = store
        .submit_census(vec![(
            1,
            ordobridge::census::CensusUpdate::Ignored {
                reason: "test".to_owned(),
            },
        )])
        .await
        .outcomes()
        .await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        outcomes[0].as_ref().unwrap_err().to_string(),
        refusal("submit_census")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_postgres_down_is_a_store_error_naming_the_operation() {
    let fixture = open(Backend::Postgres);
    let Fixture { store, server, .. } = fixture;
    let target = store.path().display().to_string();
    drop(server);
    let started = std::time::Instant::now();
    let err = store.journal(record("1", b"MSH|1")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    // A pooled connection finds the server gone (a statement fails), or no new one can be
    // made: either way the caller learns nothing was stored, and which operation failed.
    let text = err.to_string();
    assert!(
        text == format!("store `{target}`: `journal` failed on PostgreSQL")
            || text == format!("store `{target}`: no connection to PostgreSQL for `journal`"),
        "{text}"
    );
}

/// `journal()` throughput with 64 concurrent callers, both backends on this machine (the
/// PostgreSQL one: the test server, `fsync=on`, 16 pooled connections):
/// `cargo test --test store_backends -- --ignored --nocapture journal_throughput`.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand"]
async fn journal_throughput(#[values(Backend::Sqlite, Backend::Postgres)] backend: Backend) {
    let fixture = open(backend);
    let producers = 64;
    let per_producer = 200;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let store = fixture.store.clone();
            tokio::spawn(async move {
                for n in 0..per_producer {
                    let raw = format!("MSH|^~\\&|DPI|CHU|||||ADT^A01|{p}-{n}|P|2.5\rNTE|{p}|{n}\r");
                    store
                        .journal(record(&format!("{p}-{n}"), raw.as_bytes()))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let messages = producers * per_producer;
    println!(
        "{backend:?}: journal() x {messages} from {producers} tasks in {elapsed:.2?} = {:.0}/s",
        f64::from(messages) / elapsed.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// `ordobridge check` on `[store]` sections: its first error line (stderr).
fn check_store(dir: &std::path::Path, store: &str) -> (bool, String) {
    let config = dir.join("ob.toml");
    std::fs::write(&config, format!("[store]\n{store}\n")).unwrap();
    let output = std::process::Command::new(common::ordobridge_bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr
        .lines()
        .find(|line| line.contains("store."))
        .unwrap_or("")
        .to_owned();
    (output.status.success(), first)
}

#[rstest]
#[case::err_password_in_url(
    "backend = \"postgres\"\nurl = \"postgres://ob:hunter2@db1.example.org/ob\"",
    "`store.url`: holds a password: write it in `password = \"${VAR}\"` or `password_file`, never in the URL"
)]
#[case::err_plain_to_a_remote_server(
    "backend = \"postgres\"\nurl = \"postgres://ob@db1.example.org/ob\"\nsslmode = \"disable\"",
    "`store.sslmode`: `disable` would send patient data in clear to `postgres://ob@db1.example.org:5432/ob`, which is not on this machine: keep TLS (`verify-full`), or set `allow_plain = true` if the network is protected otherwise"
)]
#[case::err_path_with_postgres(
    "backend = \"postgres\"\nurl = \"postgres://ob@127.0.0.1/ob\"\npath = \"ob.db\"",
    "`store.path`: is the SQLite file: the PostgreSQL store has none, remove it"
)]
#[case::err_postgres_key_on_sqlite(
    "path = \"ob.db\"\nurl = \"postgres://ob@127.0.0.1/ob\"",
    "`store.url`: is a PostgreSQL setting: add `backend = \"postgres\"`, or remove it"
)]
#[case::err_sqlite_without_path(
    "retention = \"30d\"",
    "`store.path`: missing: the SQLite store needs `path = \"var/ordobridge.db\"` (or set `backend = \"postgres\"` with a `url`)"
)]
fn err_check_store_settings(#[case] store: &str, #[case] expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (ok, line) = check_store(dir.path(), store);
    assert!(!ok);
    assert!(line.ends_with(expected), "{line}");
    assert!(
        !line.contains("hunter2"),
        "the password is never shown: {line}"
    );
}

#[test]
fn ok_check_accepts_a_postgres_store_that_needs_only_what_is_ported() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, line) = check_store(
        dir.path(),
        "backend = \"postgres\"\nurl = \"postgres://ob@127.0.0.1:5432/ob\"\n\
         password = \"${ORDO_TEST_PG_PASSWORD:-x}\"\nretention = \"forever\"\n\
         rejected_retention = \"forever\"\n[census]\nretention = \"forever\"\n\
         [cluster]\nnode_name = \"ob-1\"\nfailover_after = \"5s\"",
    );
    assert!(ok, "{line}");
    let shown = std::process::Command::new(common::ordobridge_bin())
        .args(["check", "--config"])
        .arg(dir.path().join("ob.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        stdout.contains("ok (0 inbound channel(s), store postgres://ob@127.0.0.1:5432/ob)"),
        "{stdout}"
    );
}

/// `ordobridge check` accepts the console and the default retentions on PostgreSQL, and
/// `ordobridge prune` (and its dry run) runs there: the same counts, then nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_cli_prune_and_console_on_postgres() {
    let fixture = open(Backend::Postgres);
    let store = &fixture.store;
    let now = jiff::Timestamp::now();
    for row in [
        ("adt-in", 100, "processed"),
        ("adt-in", 10, "processed"),
        ("adt-in", 40, "rejected"),
    ] {
        aged(store, now, row).await;
    }
    let hash = ordobridge::console::hash_password("operator password 42").unwrap();
    let config = fixture.dir.path().join("ob.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\n\n[http]\nbind = \"127.0.0.1:0\"\n\
             [console]\n[console.users]\n\
             olga = {{ role = \"operator\", password_hash = \"{hash}\" }}\n",
            fixture.server.as_ref().unwrap().url()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(common::ordobridge_bin())
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{args:?}: {text}");
        text
    };
    run(&["check"]);
    let dry = run(&["prune", "--dry-run"]);
    assert!(
        dry.contains("would delete: 2 journal row(s), 0 outbound message(s)")
            && dry.contains("  channel adt-in: 2 journal row(s)"),
        "{dry}"
    );
    let done = run(&["prune"]);
    assert!(
        done.contains("deleted: 2 journal row(s), 0 outbound message(s)"),
        "{done}"
    );
    assert_eq!(left(store), ["adt-in-10-processed"]);
    let again = run(&["prune", "--dry-run"]);
    assert!(again.contains("would delete: 0 journal row(s)"), "{again}");
}

#[test]
fn err_check_refuses_what_postgres_cannot_run_yet() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ob.toml");
    std::fs::write(
        &config,
        "[store]\nbackend = \"postgres\"\nurl = \"postgres://ob@127.0.0.1:5432/ob\"\n\n\
         [inbound.adt-in]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(common::ordobridge_bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        format!(
            "ordobridge: {}: `store.backend`: `postgres` cannot run this configuration yet, it \
             needs what is not ported to PostgreSQL: the census (every inbound channel feeds \
             it); keep `backend = \"sqlite\"` for it (README, High availability, says what runs \
             on PostgreSQL today)",
            config.display()
        )
    );
}

/// The console's searches and a prune on a journal of 100,000 rows (half older than the
/// retention), both backends on this machine: each search's median of 5 runs, then the prune
/// in steps of 500 rows, and a journal insert's latency while it runs:
/// `cargo test --test store_backends -- --ignored --nocapture search_and_prune_timings`.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand"]
async fn search_and_prune_timings(#[values(Backend::Sqlite, Backend::Postgres)] backend: Backend) {
    use ordobridge::store::{JournalSearch, RetentionPlan};
    const ROWS: i64 = 100_000;
    let fixture = open(backend);
    let store = &fixture.store;
    let now = jiff::Timestamp::now();
    let started = std::time::Instant::now();
    for chunk in 0..ROWS / 1000 {
        let records = (chunk * 1000..(chunk + 1) * 1000)
            .map(|n| {
                // One row in 5,000 an ORM of `rare`; one in 100 rejected; the IPP is n % 9973.
                let (channel, message_type) = if n % 5000 == 0 {
                    ("rare", "ORM^O01")
                } else if n % 3 == 0 {
                    ("lab-in", "ORU^R01")
                } else {
                    ("adt-in", "ADT^A01")
                };
                let raw = format!(
                    "MSH|^~\\&|A|B|||20260101||{message_type}|C{n}|P|2.5\rPID|1||{}^^^CH^PI\rNTE|1||note {n}\r",
                    n % 9973
                );
                let mut row = if n % 100 == 7 {
                    rejected(&format!("C{n}"), raw.as_bytes(), "bad")
                } else {
                    record(&format!("C{n}"), raw.as_bytes())
                };
                row.channel = channel.to_owned();
                row.message_type = message_type.to_owned();
                // 200 days back to now, oldest first.
                row.received_at = now - jiff::SignedDuration::from_secs((ROWS - n) * 172);
                row
            })
            .collect();
        let outcomes = store.journal_many(records).await.unwrap();
        let accepted = outcomes.into_iter().map(stored).collect();
        store.mark_processed(accepted).await.unwrap();
    }
    println!(
        "{backend:?}: {ROWS} rows journaled in {:.1?}",
        started.elapsed()
    );
    let last = store.last_journal_id_async().await.unwrap();
    let page = |search: JournalSearch| JournalSearch {
        filter: JournalFilter {
            limit: 51,
            ..search.filter
        },
        ..search
    };
    let cases: Vec<(&str, JournalSearch)> = vec![
        ("newest page", page(JournalSearch::default())),
        (
            "rare type (20 rows)",
            page(JournalSearch {
                message_type: Some("ORM".into()),
                ..JournalSearch::default()
            }),
        ),
        (
            "common type",
            page(JournalSearch {
                message_type: Some("ORU".into()),
                ..JournalSearch::default()
            }),
        ),
        (
            "rejected (1 %)",
            page(JournalSearch {
                status: Some(EntryStatus::Rejected),
                ..JournalSearch::default()
            }),
        ),
        (
            "rare channel",
            page(JournalSearch {
                filter: JournalFilter {
                    channel: Some("rare".into()),
                    ..JournalFilter::default()
                },
                ..JournalSearch::default()
            }),
        ),
        (
            "one day, 10 days ago",
            page(JournalSearch {
                since: Some(now - jiff::SignedDuration::from_hours(24 * 10)),
                until: Some(now - jiff::SignedDuration::from_hours(24 * 9)),
                ..JournalSearch::default()
            }),
        ),
        (
            "IPP (10 rows), newest 200,000",
            page(JournalSearch {
                ipp: Some("4711".into()),
                min_id: Some(last - 200_000),
                ..JournalSearch::default()
            }),
        ),
        (
            "text (1 row), newest 200,000",
            page(JournalSearch {
                text: Some("note 31337\r".into()),
                min_id: Some(last - 200_000),
                ..JournalSearch::default()
            }),
        ),
    ];
    // On PostgreSQL, fresh statistics (autovacuum's analyze comes once a tenth of the table
    // changed), then those of an ANALYZE.
    let rounds = if fixture.server.is_some() { 2 } else { 1 };
    for round in 0..rounds {
        if round == 1
            && let Some(server) = &fixture.server
        {
            client(server)
                .await
                .batch_execute("ANALYZE journal")
                .await
                .unwrap();
        }
        let when = if round == 1 { ", after ANALYZE" } else { "" };
        for (name, search) in &cases {
            let mut times = Vec::new();
            let mut found = 0;
            for _ in 0..5 {
                let started = std::time::Instant::now();
                found = store.search_journal(search).unwrap().len();
                times.push(started.elapsed());
            }
            times.sort();
            println!(
                "{backend:?}: search {name}{when}: {found} row(s), median {:.1?}",
                times[2]
            );
        }
    }
    let plan = RetentionPlan::at(now, 90 * DAY, 30 * DAY);
    let started = std::time::Instant::now();
    let (counted, _) = store.prunable_by_channel(&plan).unwrap();
    println!(
        "{backend:?}: dry run {} journal row(s) in {:.1?}",
        counted.journal,
        started.elapsed()
    );
    let pruner = {
        let (store, plan) = (store.clone(), plan.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (pruned, _) = store.prune(plan, 500).await.unwrap();
            (pruned, started.elapsed())
        })
    };
    let mut latencies = Vec::new();
    let mut n = 0;
    while !pruner.is_finished() {
        let started = std::time::Instant::now();
        store
            .journal(record(
                &format!("live-{n}"),
                format!("MSH|live {n}").as_bytes(),
            ))
            .await
            .unwrap();
        latencies.push(started.elapsed());
        n += 1;
    }
    let (pruned, elapsed) = pruner.await.unwrap();
    assert_eq!(pruned.journal, counted.journal);
    latencies.sort();
    let at = |q: usize| latencies[(latencies.len() * q / 100).min(latencies.len() - 1)];
    println!(
        "{backend:?}: pruned {} journal row(s) in {elapsed:.1?} ({:.0}/s); {} inserts meanwhile, latency median {:.1?}, p99 {:.1?}",
        pruned.journal,
        pruned.journal as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        at(50),
        at(99)
    );
}

//! The real engine in-process, on `127.0.0.1:0`, with a real SQLite file: what a sender sees
//! on the wire for each kind of input, and what the journal holds when the answer arrives.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use ordobridge::config::Config;
use ordobridge::engine::BoundListeners;
use ordobridge::mllp::client::{ClientSettings, MllpClient};
use ordobridge::store::{JournalFilter, Store, StoreOptions};
use rstest::rstest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(10);

/// A running engine; cancelled and awaited when the test calls `stop`.
struct Running {
    addr: std::net::SocketAddr,
    db: PathBuf,
    engine: common::InProcess,
    _dir: tempfile::TempDir,
}

impl Running {
    /// The engine with the default store (through the intake log) and `extra` lines in the
    /// channel's section.
    async fn start(extra: &str) -> Running {
        Running::start_with("", extra).await
    }

    /// The engine whose ACKs wait for the journal's own commit (no intake log).
    async fn start_committing(extra: &str) -> Running {
        Running::start_with("intake_log = false\n", extra).await
    }

    async fn start_with(store_lines: &str, extra: &str) -> Running {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            "[store]\npath = \"data/ob.db\"\n{store_lines}\n[inbound.adt-in]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\n{extra}\n"
        );
        let config = Config::from_str_with_env(&text, &dir.path().join("ob.toml"), &|_| None)
            .expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut listeners = BoundListeners::default();
        listeners.mllp.insert("adt-in".to_string(), listener);
        let engine = common::InProcess::start(config, listeners).await;
        Running {
            addr,
            db: dir.path().join("data/ob.db"),
            engine,
            _dir: dir,
        }
    }

    async fn client(&self) -> MllpClient {
        MllpClient::connect(self.addr, ClientSettings::default())
            .await
            .expect("connect")
    }

    /// The journal, once every message acknowledged so far is in it.
    async fn journal(&self) -> Vec<ordobridge::store::JournalSummary> {
        common::intake_copied(&self.db).await;
        self.journal_now()
    }

    /// The journal as it is this instant.
    fn journal_now(&self) -> Vec<ordobridge::store::JournalSummary> {
        let store = Store::open_read_only(&self.db).expect("open store");
        store
            .list_journal(&JournalFilter {
                control_id: None,
                channel: None,
                limit: 0,
            })
            .expect("list")
    }

    /// The bytes of the intake log's segments, as they are this instant.
    fn logged_bytes(&self) -> Vec<u8> {
        let folder = ordobridge::store::intake_log_folder(&self.db);
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(&folder).expect("the intake log's folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|extension| extension == "log") {
                bytes.extend(std::fs::read(&path).expect("segment"));
            }
        }
        bytes
    }

    async fn stop(self) {
        self.engine.stop().await;
    }
}

fn adt(control_id: &str, extra_msh: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|DPI|CH|OB|POSOS|20261122101500||ADT^A01^ADT_A01|{control_id}|P|2.5{extra_msh}\rPID|1||100001^^^CH^PI||DURAND^JEANNE||19750412|F\rPV1|1|I|CARDIO||||||||||||||||900001^^^CH^VN\r"
    )
    .into_bytes()
}

fn text(answer: &Bytes) -> String {
    String::from_utf8_lossy(answer).replace('\r', "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aa_only_after_the_message_is_in_the_journal() {
    let engine = Running::start_committing("").await;
    let mut client = engine.client().await;
    let answer = client.send(&adt("C1", ""), PATIENCE).await.expect("answer");
    assert!(text(&answer).contains("MSA|AA|C1"), "{}", text(&answer));
    // The ACK arrived: the row must already be visible to a fresh connection.
    let rows = engine.journal_now();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].control_id, "C1");
    // accepted, or already processed by the census right behind the ACK
    assert!(
        ["accepted", "processed"].contains(&rows[0].status.as_str()),
        "{:?}",
        rows[0]
    );
    assert_eq!(rows[0].message_type, "ADT^A01^ADT_A01");
    assert_eq!(rows[0].sender, "DPI^CH");
    engine.stop().await;
}

/// With the intake log (the default), the point an ACK waits for is the log: the message's
/// bytes are written in a segment when its AA arrives, its journal row follows. (That they
/// were synced, i.e. survive a crash, is `tests/crash.rs`'s to show, with `kill -9`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aa_only_after_the_message_is_in_the_intake_log() {
    let engine = Running::start("").await;
    let mut client = engine.client().await;
    let message = adt("L1", "");
    let answer = client.send(&message, PATIENCE).await.expect("answer");
    assert!(text(&answer).contains("MSA|AA|L1"), "{}", text(&answer));
    let logged = engine.logged_bytes();
    assert!(
        logged
            .windows(message.len())
            .any(|window| window == message),
        "the message is not in the intake log when its AA arrives"
    );
    let rows = engine.journal().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].control_id, "L1");
    engine.stop().await;
}

#[rstest]
#[case::bad_charset(
    b"MSH|^~\\&|DPI|CH|OB|POSOS|2026||ADT^A01|B1|P|2.5||||||EBCDIC\rPID|1\r".as_slice(),
    "MSA|AR|B1",
    "unsupported charset `EBCDIC` in MSH-18"
)]
#[case::lookalike_tilde(
    "MSH|^\u{2DC}\\&|DPI|CH|OB|POSOS|2026||ADT^A01|B2|P|2.5\rPID|1\r".as_bytes(),
    "MSA|AR|B2",
    "MSH-2"
)]
#[case::bad_segment_id(
    b"MSH|^~\\&|DPI|CH|OB|POSOS|2026||ADT^A01|B3|P|2.5\rP!D|1\r".as_slice(),
    "MSA|AR|B3",
    "segment 2"
)]
#[case::not_hl7(b"hello".as_slice(), "MSA|AR|", "")]
#[case::empty_msh_10(
    b"MSH|^~\\&|DPI|CH|OB|POSOS|2026||ADT^A01|  |P|2.5\rPID|1\r".as_slice(),
    "MSA|AR|",
    "ERR||MSH^1^10|101^Required field missing^HL70357|E||||MSH-10 (message control id) is empty"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_message_gets_ar_with_err_and_the_connection_stays_open(
    #[case] message: &[u8],
    #[case] msa: &str,
    #[case] err_text: &str,
) {
    let engine = Running::start("").await;
    let mut client = engine.client().await;
    let answer = text(&client.send(message, PATIENCE).await.expect("answer"));
    assert!(answer.contains(msa), "{answer}");
    assert!(answer.contains("\nERR|"), "no ERR segment: {answer}");
    assert!(answer.contains(err_text), "{answer}");
    // Same connection, next message: accepted.
    let next = text(
        &client
            .send(&adt("OK1", ""), PATIENCE)
            .await
            .expect("answer"),
    );
    assert!(next.contains("MSA|AA|OK1"), "{next}");
    let rows = engine.journal().await;
    assert_eq!(rows.len(), 2);
    let rejected = rows
        .iter()
        .find(|r| r.status == "rejected")
        .expect("rejected row");
    assert!(
        rejected
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("channel `adt-in`: "),
        "{rejected:?}"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_is_acknowledged_again_and_stored_once() {
    let engine = Running::start("").await;
    let mut client = engine.client().await;
    for _ in 0..3 {
        let answer = text(&client.send(&adt("D1", ""), PATIENCE).await.expect("answer"));
        assert!(answer.contains("MSA|AA|D1"), "{answer}");
    }
    let rows = engine.journal().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let store = Store::open(&engine.db, StoreOptions::default()).expect("store");
    let entry = store
        .journal_entry(rows[0].id)
        .expect("read")
        .expect("entry");
    assert_eq!(entry.duplicate_count, 2);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_mode_follows_msh_15() {
    let engine = Running::start("").await;
    let mut client = engine.client().await;
    // MSH-15 = NE: no accept acknowledgment at all; MSH-15 = AL: CA.
    let mut stream = TcpStream::connect(engine.addr).await.expect("connect");
    let mut wire = Vec::new();
    for (id, msh) in [("E1", "|||NE|NE"), ("E2", "|||AL|NE")] {
        wire.push(0x0B);
        wire.extend_from_slice(&adt(id, msh));
        wire.extend_from_slice(&[0x1C, 0x0D]);
    }
    stream.write_all(&wire).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]).replace('\r', "\n");
    assert!(answer.contains("MSA|CA|E2"), "{answer}");
    assert!(!answer.contains("E1"), "NE must not be answered: {answer}");
    // ER: answered only on error.
    let good = client
        .send(&adt("E3", "|||ER|NE"), Duration::from_millis(300))
        .await;
    assert!(
        good.is_err(),
        "ER on success must not be answered: {good:?}"
    );
    drop(client);
    let mut client = engine.client().await;
    let bad = text(
        &client
            .send(
                b"MSH|^~\\&|DPI|CH|OB|POSOS|2026||ADT^A01|E4|P|2.5|||ER|NE||WRONG\rPID|1\r",
                PATIENCE,
            )
            .await
            .expect("answer"),
    );
    assert!(bad.contains("MSA|CR|E4"), "{bad}");
    assert_eq!(engine.journal().await.len(), 4);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_messages_in_one_frame_get_one_ack_each_in_order() {
    let engine = Running::start("").await;
    let mut stream = TcpStream::connect(engine.addr).await.expect("connect");
    let mut payload = adt("M1", "");
    payload.extend_from_slice(&adt("M2", ""));
    payload.extend_from_slice(&adt("M3", ""));
    let mut wire = vec![0x0B];
    wire.extend_from_slice(&payload);
    wire.extend_from_slice(&[0x1C, 0x0D]);
    stream.write_all(&wire).await.expect("write");
    let mut got = String::new();
    let mut buf = vec![0u8; 8192];
    while got.matches("MSA|").count() < 3 {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("answers in time")
            .expect("read");
        assert!(n > 0, "connection closed after: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let order: Vec<usize> = ["MSA|AA|M1", "MSA|AA|M2", "MSA|AA|M3"]
        .iter()
        .map(|m| got.find(m).unwrap_or_else(|| panic!("{m} missing: {got}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{got}");
    assert_eq!(got.matches('\u{0B}').count(), 3, "one frame per ACK");
    assert_eq!(engine.journal().await.len(), 3);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sloppy_sender_byte_by_byte_with_lf_garbage_and_no_trailer() {
    let engine = Running::start("").await;
    let mut stream = TcpStream::connect(engine.addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let message = String::from_utf8(adt("S1", ""))
        .expect("ascii")
        .replace('\r', "\n");
    let mut wire = b"\0\0\r\ngarbage".to_vec();
    wire.push(0x0B);
    wire.extend_from_slice(message.as_bytes());
    wire.push(0x1C); // no trailing CR: the ACK must come anyway
    for byte in wire {
        stream.write_all(&[byte]).await.expect("write");
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.contains("MSA|AA|S1"), "{answer}");
    let rows = engine.journal().await;
    assert_eq!(rows.len(), 1);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_refused_and_the_connection_stays_usable() {
    let engine = Running::start("max_frame_size = \"2KiB\"").await;
    let mut client = engine.client().await;
    let mut big = adt("BIG1", "");
    big.extend_from_slice(b"NTE|1||");
    big.extend(std::iter::repeat_n(b'x', 10_000));
    big.push(b'\r');
    let answer = text(&client.send(&big, PATIENCE).await.expect("answer"));
    assert!(answer.contains("MSA|AR|BIG1"), "{answer}");
    assert!(answer.contains("exceeds max_frame_size"), "{answer}");
    let next = text(
        &client
            .send(&adt("AFTER", ""), PATIENCE)
            .await
            .expect("answer"),
    );
    assert!(next.contains("MSA|AA|AFTER"), "{next}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_commit_answers_ae_never_aa() {
    let engine = Running::start_committing("").await;
    let mut client = engine.client().await;
    let first = text(&client.send(&adt("F0", ""), PATIENCE).await.expect("answer"));
    assert!(first.contains("MSA|AA|F0"), "{first}");
    // Make every insert fail, as a full disk would.
    let failing = common::JournalInsertsFail::start(&engine.db);
    let answer = text(&client.send(&adt("F1", ""), PATIENCE).await.expect("answer"));
    assert!(answer.contains("MSA|AE|F1"), "{answer}");
    assert!(answer.contains("not stored"), "{answer}");
    failing.end();
    let again = text(&client.send(&adt("F1", ""), PATIENCE).await.expect("answer"));
    assert!(again.contains("MSA|AA|F1"), "{again}");
    let ids: Vec<String> = engine
        .journal()
        .await
        .into_iter()
        .map(|r| r.control_id)
        .collect();
    assert_eq!(ids, vec!["F1".to_string(), "F0".to_string()]);
    engine.stop().await;
}

/// With the intake log (the default), a message durable in the log is acknowledged even if
/// the journal cannot commit at that moment (it is copied once it can); from the first copy
/// the journal refuses, new messages are answered AE, until a copy succeeds again. Nothing
/// acknowledged is lost, nothing answered AE is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_intake_log_a_store_that_cannot_commit_keeps_what_was_acknowledged_then_answers_ae()
 {
    let engine = Running::start("").await;
    let mut client = engine.client().await;
    let first = text(&client.send(&adt("G0", ""), PATIENCE).await.expect("answer"));
    assert!(first.contains("MSA|AA|G0"), "{first}");
    engine.journal().await;
    let failing = common::JournalInsertsFail::start(&engine.db);
    // Every message answered AA must reach the journal, none answered AE may.
    let mut acknowledged = vec!["G0".to_string()];
    let refused = answer_until(&mut client, "AE", &mut acknowledged).await;
    assert!(refused.contains("not stored"), "{refused}");
    assert!(
        acknowledged.len() > 1,
        "the first message after the journal broke is durable in the log: AA"
    );
    failing.end();
    answer_until(&mut client, "AA", &mut acknowledged).await;
    let mut ids: Vec<String> = engine
        .journal()
        .await
        .into_iter()
        .map(|r| r.control_id)
        .collect();
    ids.sort();
    acknowledged.sort();
    assert_eq!(ids, acknowledged);
    engine.stop().await;
}

/// Sends ADTs `<wanted>-0`, `<wanted>-1`… until one is answered `wanted` (AA or AE; the
/// other answer is the only one allowed meanwhile) and returns that answer; every control id
/// answered AA is added to `acknowledged`.
async fn answer_until(
    client: &mut MllpClient,
    wanted: &str,
    acknowledged: &mut Vec<String>,
) -> String {
    let other = if wanted == "AA" { "AE" } else { "AA" };
    let deadline = std::time::Instant::now() + PATIENCE;
    for attempt in 0.. {
        let id = format!("{wanted}-{attempt}");
        let answer = text(&client.send(&adt(&id, ""), PATIENCE).await.expect("answer"));
        if answer.contains(&format!("MSA|AA|{id}")) {
            acknowledged.push(id.clone());
        }
        if answer.contains(&format!("MSA|{wanted}|{id}")) {
            return answer;
        }
        assert!(answer.contains(&format!("MSA|{other}|{id}")), "{answer}");
        assert!(std::time::Instant::now() < deadline, "no {wanted} in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!("an attempt answers or the deadline fails the test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_message_is_journaled_byte_for_byte() {
    let engine = Running::start("").await;
    let mut client = engine.client().await;
    let raw = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/adt/07-a31-update-latin1.hl7"),
    )
    .expect("sample");
    let answer = text(&client.send(&raw, PATIENCE).await.expect("answer"));
    assert!(answer.contains("MSA|AA|SYN0007"), "{answer}");
    assert!(answer.contains("|8859/1"), "MSH-18 echoed: {answer}");
    let rows = engine.journal().await;
    let store = Store::open(&engine.db, StoreOptions::default()).expect("store");
    let entry = store
        .journal_entry(rows[0].id)
        .expect("read")
        .expect("entry");
    assert_eq!(entry.raw, raw);
    engine.stop().await;
}

/// Issue 10: a sender spewing junk cannot fill the disk. Past `rejected_max_per_hour`, the
/// first rejected frame keeps its first 4 KiB and the next ones are answered AR and counted,
/// not journaled; accepted messages are never limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_frames_past_the_hourly_budget_are_answered_not_journaled() {
    let engine = Running::start("rejected_max_per_hour = 2").await;
    let mut client = engine.client().await;
    let junk = "this is not HL7 ".repeat(600);
    for _ in 0..5 {
        let answer = text(
            &client
                .send(junk.as_bytes(), PATIENCE)
                .await
                .expect("answer"),
        );
        assert!(answer.contains("MSA|AR|"), "{answer}");
    }
    let ok = text(
        &client
            .send(&adt("AFTER-JUNK", ""), PATIENCE)
            .await
            .expect("answer"),
    );
    assert!(ok.contains("MSA|AA|AFTER-JUNK"), "{ok}");
    let rows = engine.journal().await;
    let rejected: Vec<_> = rows.iter().filter(|r| r.status == "rejected").collect();
    assert_eq!(rejected.len(), 3, "two whole, one head: {rows:?}");
    assert!(
        rejected.iter().any(|r| r
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("`rejected_max_per_hour` reached")),
        "{rejected:?}"
    );
    assert_eq!(rows.iter().filter(|r| r.status != "rejected").count(), 1);
    engine.stop().await;
}

//! Outbound delivery against a real, independent MLLP receiver (python-hl7's asyncio server,
//! `tests/peers/python_hl7_receiver.py`) over loopback, with the real queue: every test runs
//! on both store backends, a SQLite file and a PostgreSQL server of its own.
//!
//! The receiver answers by MSH-10 prefix (AA, AR, AE, AE-then-AA, wrong MSA-2, silence) and
//! logs every MSH-10 it receives, in order, so the tests can check order and retries.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ordobridge::delivery::{
    DeliveryStats, DestinationSettings, FileDestinationSettings, RetryPolicy, outbound_item,
    render_dead_letters, render_overview, run_destination, run_file_destination,
};
use ordobridge::filedrop::{Outbox, OutboxSettings};
use ordobridge::store::settings::PostgresSettings;
use ordobridge::store::{OutboundMessage, OutboundStatus, Store, StoreOptions};
use rstest::rstest;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest wait for anything in these tests; they normally take well under a second each.
const PATIENCE: Duration = Duration::from_secs(30);

/// The python-hl7 receiver ([`common::peer::PythonPeer`]) and the file it logs MSH-10s to.
struct Receiver {
    /// Killed by its PID when dropped.
    _peer: common::peer::PythonPeer,
    addr: SocketAddr,
    log: PathBuf,
}

impl Receiver {
    /// Starts the receiver on `port` (0: any free port), logging MSH-10s to `log`.
    fn start(log: &Path, port: u16) -> Receiver {
        let log_arg = log.to_str().expect("utf-8 log path");
        let peer = common::peer::PythonPeer::start(
            "python_hl7_receiver.py",
            &[log_arg, &port.to_string()],
        );
        Receiver {
            addr: peer.addr,
            _peer: peer,
            log: log.to_path_buf(),
        }
    }

    /// Every MSH-10 received so far, in arrival order.
    fn received(&self) -> Vec<String> {
        received(&self.log)
    }
}

fn received(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Which store the queue lives in.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The store, the workers and what the tests need to poke and observe them.
struct Harness {
    dir: tempfile::TempDir,
    store: Store,
    /// The PostgreSQL server of [`Backend::Postgres`] (stopped by PID when dropped, after the
    /// store: fields drop in order).
    _server: Option<common::postgres::TestPostgres>,
    shutdown: CancellationToken,
    workers: Vec<JoinHandle<()>>,
    notify: HashMap<String, Arc<Notify>>,
    stats: HashMap<String, Arc<DeliveryStats>>,
}

impl Harness {
    fn new(backend: Backend) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, server) = match backend {
            Backend::Sqlite => (
                Store::open(&dir.path().join("ordobridge.db"), StoreOptions::default())
                    .expect("open store"),
                None,
            ),
            Backend::Postgres => {
                let server = common::postgres::TestPostgres::start();
                let settings = PostgresSettings::from_url(&server.url()).expect("server URL");
                let store = Store::open_postgres(&settings, true).expect("open store");
                (store, Some(server))
            }
        };
        Harness {
            dir,
            store,
            _server: server,
            shutdown: CancellationToken::new(),
            workers: Vec::new(),
            notify: HashMap::new(),
            stats: HashMap::new(),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("received.txt")
    }

    /// Starts the worker of a destination.
    fn spawn(&mut self, settings: DestinationSettings) {
        let notify = Arc::new(Notify::new());
        let stats = Arc::new(DeliveryStats::default());
        self.notify
            .insert(settings.name.clone(), Arc::clone(&notify));
        self.stats.insert(settings.name.clone(), Arc::clone(&stats));
        self.workers.push(tokio::spawn(run_destination(
            self.store.clone(),
            settings,
            notify,
            stats,
            self.shutdown.child_token(),
        )));
    }

    /// Starts the worker of a file destination.
    fn spawn_file(&mut self, settings: FileDestinationSettings) {
        // Never paused: the switch's sender goes at once.
        self.spawn_file_with_pause(settings, ordobridge::delivery::PauseReceiver::never());
    }

    /// Starts the worker of a file destination watching `pause` (an operator's switch).
    fn spawn_file_with_pause(
        &mut self,
        settings: FileDestinationSettings,
        pause: ordobridge::delivery::PauseReceiver,
    ) {
        let notify = Arc::new(Notify::new());
        self.notify
            .insert(settings.name.clone(), Arc::clone(&notify));
        let outbox = Outbox::new(settings.outbox.clone()).expect("valid outbox settings");
        self.workers.push(tokio::spawn(run_file_destination(
            self.store.clone(),
            settings,
            Arc::new(outbox),
            notify,
            pause,
            self.shutdown.child_token(),
        )));
    }

    /// Enqueues one ORM per control id for `destination` and wakes its worker.
    async fn enqueue(&self, destination: &str, control_ids: &[&str]) -> Vec<i64> {
        let items = control_ids
            .iter()
            .map(|id| {
                let payload = format!(
                    "MSH|^~\\&|ORDO|POSOS|EHR|CHU|20240101120000||ORM^O01^ORM_O01|{id}|P|2.5\r\
                     PID|1||{id}^^^CHU^PI\r"
                );
                outbound_item(destination, Bytes::from(payload), "test").expect("valid payload")
            })
            .collect();
        let ids = self.store.enqueue(items).await.expect("enqueue");
        if let Some(notify) = self.notify.get(destination) {
            notify.notify_one();
        }
        ids
    }

    fn row(&self, id: i64) -> (OutboundMessage, OutboundStatus) {
        self.store
            .outbound_message(id)
            .expect("read outbound row")
            .expect("row exists")
    }

    fn status(&self, id: i64) -> OutboundStatus {
        self.row(id).1
    }

    fn stats(&self, destination: &str) -> ordobridge::delivery::DeliveryStatsSnapshot {
        self.stats
            .get(destination)
            .expect("destination started")
            .snapshot()
    }

    /// Waits until every id has left `pending`.
    async fn settled(&self, ids: &[i64]) {
        wait_for("every message to leave pending", || {
            ids.iter()
                .all(|id| self.status(*id) != OutboundStatus::Pending)
                .then_some(())
        })
        .await;
    }

    /// Cancels the workers and waits for them to stop.
    async fn stop(&mut self) {
        self.shutdown.cancel();
        for worker in self.workers.drain(..) {
            tokio::time::timeout(PATIENCE, worker)
                .await
                .expect("worker stops after shutdown")
                .expect("worker did not panic");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Short timings so retries take milliseconds.
fn settings(name: &str, addr: SocketAddr) -> DestinationSettings {
    DestinationSettings {
        ack_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        retry: RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            multiplier: 2.0,
            max_attempts: 10,
        },
        poll_interval: Duration::from_millis(200),
        ..DestinationSettings::new(name, addr)
    }
}

/// Polls `probe` until it answers, or fails the test after [`PATIENCE`].
async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback port with nobody listening (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_delivered_in_order_with_their_acks(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let mut harness = Harness::new(backend);
    let receiver = Receiver::start(&harness.log_path(), 0);
    harness.spawn(settings("ehr", receiver.addr));
    let control_ids: Vec<String> = (1..=20).map(|n| format!("MSG-{n:04}")).collect();
    let refs: Vec<&str> = control_ids.iter().map(String::as_str).collect();
    // Two enqueues: the second arrives while the worker is busy with the first.
    let mut ids = harness.enqueue("ehr", &refs[..10]).await;
    ids.extend(harness.enqueue("ehr", &refs[10..]).await);
    harness.settled(&ids).await;

    assert_eq!(receiver.received(), control_ids);
    for (id, control_id) in ids.iter().zip(&control_ids) {
        let (row, status) = harness.row(*id);
        assert_eq!(status, OutboundStatus::Delivered);
        assert_eq!(row.attempts, 1);
        assert_eq!(&row.control_id, control_id);
    }
    assert!(harness.store.queue_overview().expect("overview").is_empty());
    // The counters are bumped right after the queue row changes: read them once the workers
    // have stopped.
    harness.stop().await;
    let stats = harness.stats("ehr");
    assert_eq!((stats.sent, stats.delivered, stats.retried), (20, 20, 0));
    assert_eq!(stats.connect_failures, 0);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_then_up_loses_nothing_and_keeps_order(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let mut harness = Harness::new(backend);
    let log = harness.log_path();
    let receiver = Receiver::start(&log, 0);
    let addr = receiver.addr;
    harness.spawn(settings("ehr", addr));
    let first = harness.enqueue("ehr", &["UP-1", "UP-2", "UP-3"]).await;
    harness.settled(&first).await;

    // The receiver goes away; what is enqueued meanwhile waits, in order.
    drop(receiver);
    let second = harness
        .enqueue("ehr", &["DOWN-1", "FLAKY-2", "DOWN-3", "DOWN-4"])
        .await;
    wait_for("two failed connection attempts", || {
        (harness.stats("ehr").connect_failures >= 2).then_some(())
    })
    .await;
    for id in &second {
        assert_eq!(harness.status(*id), OutboundStatus::Pending);
    }

    // Back on the same port: everything goes, in order; the flaky one is retried with the
    // same MSH-10 until it is accepted, and nothing overtakes it.
    let receiver = Receiver::start(&log, addr.port());
    harness.settled(&second).await;
    assert_eq!(
        receiver.received(),
        strings(&[
            "UP-1", "UP-2", "UP-3", "DOWN-1", "FLAKY-2", "FLAKY-2", "FLAKY-2", "DOWN-3", "DOWN-4"
        ])
    );
    for id in first.iter().chain(&second) {
        assert_eq!(harness.status(*id), OutboundStatus::Delivered);
    }
    let flaky = harness.row(second[1]).0;
    assert_eq!(flaky.control_id, "FLAKY-2");
    // Two AE answers, then AA; the send that hit the dead connection may add one more.
    assert!((3..=4).contains(&flaky.attempts), "{}", flaky.attempts);
    assert_eq!(
        flaky.last_error.as_deref(),
        Some("receiver answered AE to `FLAKY-2`: busy (2)")
    );
    harness.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ar_makes_a_dead_letter_and_the_next_message_proceeds(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let mut harness = Harness::new(backend);
    let receiver = Receiver::start(&harness.log_path(), 0);
    harness.spawn(settings("ehr", receiver.addr));
    let ids = harness.enqueue("ehr", &["MSG-1", "AR-2", "MSG-3"]).await;
    harness.settled(&ids).await;

    assert_eq!(receiver.received(), strings(&["MSG-1", "AR-2", "MSG-3"]));
    assert_eq!(harness.status(ids[0]), OutboundStatus::Delivered);
    assert_eq!(harness.status(ids[1]), OutboundStatus::Dead);
    assert_eq!(harness.status(ids[2]), OutboundStatus::Delivered);

    let dead = harness
        .store
        .dead_letters(Some("ehr"), 10)
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, ids[1]);
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(
        dead[0].reason,
        "receiver answered AR to `AR-2`: refused by test receiver"
    );
    let listing = render_dead_letters(&dead);
    assert!(listing.contains("AR-2"), "{listing}");
    assert!(listing.contains("refused by test receiver"), "{listing}");
    let overview = render_overview(&harness.store.queue_overview().expect("overview"));
    assert!(
        overview.starts_with("DESTINATION  PENDING  DEAD"),
        "{overview}"
    );
    assert!(
        overview.contains("\nehr          0        1     -\n"),
        "{overview}"
    );
    harness.stop().await;
    assert_eq!(harness.stats("ehr").dead, 1);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_msa2_is_retried_reported_then_given_up(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let mut harness = Harness::new(backend);
    let receiver = Receiver::start(&harness.log_path(), 0);
    let mut settings = settings("ehr", receiver.addr);
    // Long enough a backoff for the test to see the row pending between attempts.
    settings.retry = RetryPolicy {
        initial: Duration::from_millis(300),
        max: Duration::from_millis(300),
        multiplier: 1.0,
        max_attempts: 3,
    };
    harness.spawn(settings);
    let ids = harness.enqueue("ehr", &["WRONG-1", "MSG-2"]).await;

    let pending = wait_for("the first failed attempt", || {
        let (row, status) = harness.row(ids[0]);
        (status == OutboundStatus::Pending && row.attempts >= 1).then_some(row)
    })
    .await;
    assert_eq!(
        pending.last_error.as_deref(),
        Some("ACK for `OTHER-WRONG-1` while waiting for `WRONG-1`")
    );
    harness.settled(&ids).await;

    // Same MSH-10 each time, and MSG-2 only after WRONG-1 was given up.
    assert_eq!(
        receiver.received(),
        strings(&["WRONG-1", "WRONG-1", "WRONG-1", "MSG-2"])
    );
    let dead = harness.store.dead_letters(None, 0).expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(
        dead[0].reason,
        "gave up after 3 attempts: ACK for `OTHER-WRONG-1` while waiting for `WRONG-1`"
    );
    assert_eq!(harness.status(ids[1]), OutboundStatus::Delivered);
    harness.stop().await;
    let stats = harness.stats("ehr");
    assert_eq!((stats.wrong_acks, stats.retried, stats.dead), (3, 2, 1));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_does_not_block_another(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let mut harness = Harness::new(backend);
    let receiver = Receiver::start(&harness.log_path(), 0);
    let unlimited = |mut settings: DestinationSettings| {
        settings.retry.max_attempts = 0;
        settings.ack_timeout = Duration::from_millis(200);
        settings
    };
    // `silent`: the receiver never answers its head; `down`: nobody listens.
    harness.spawn(unlimited(settings("silent", receiver.addr)));
    let down = SocketAddr::from(([127, 0, 0, 1], closed_port()));
    harness.spawn(unlimited(settings("down", down)));
    harness.spawn(settings("ok", receiver.addr));

    let silent = harness.enqueue("silent", &["SILENT-1", "BLOCKED-2"]).await;
    let unreachable = harness.enqueue("down", &["NOWHERE-1"]).await;
    let control_ids: Vec<String> = (1..=10).map(|n| format!("OK-{n}")).collect();
    let refs: Vec<&str> = control_ids.iter().map(String::as_str).collect();
    let ok = harness.enqueue("ok", &refs).await;
    harness.settled(&ok).await;

    let got: Vec<String> = receiver
        .received()
        .into_iter()
        .filter(|id| id.starts_with("OK-"))
        .collect();
    assert_eq!(got, control_ids);
    wait_for("the silent head to be retried", || {
        let (row, _) = harness.row(silent[0]);
        (row.attempts >= 2).then_some(())
    })
    .await;
    let (head, status) = harness.row(silent[0]);
    assert_eq!(status, OutboundStatus::Pending);
    assert_eq!(
        head.last_error.as_deref(),
        Some(
            format!(
                "cannot deliver `SILENT-1` to {}: no response frame within the ack timeout \
                 of 200ms",
                receiver.addr
            )
            .as_str()
        )
    );
    assert_eq!(harness.status(silent[1]), OutboundStatus::Pending);
    assert!(!receiver.received().contains(&"BLOCKED-2".to_owned()));
    // Connection failures are not attempts of the message: it stays pending, untouched.
    let (nowhere, status) = harness.row(unreachable[0]);
    assert_eq!((status, nowhere.attempts), (OutboundStatus::Pending, 0));
    wait_for("a connection failure counted for `down`", || {
        (harness.stats("down").connect_failures >= 1).then_some(())
    })
    .await;

    let overview = harness.store.queue_overview().expect("overview");
    let names: Vec<(&str, u64)> = overview
        .iter()
        .map(|d| (d.destination.as_str(), d.pending))
        .collect();
    assert_eq!(names, [("down", 1), ("silent", 2)]);
    harness.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_a_dead_letter_again_with_the_same_control_id(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let mut harness = Harness::new(backend);
    let receiver = Receiver::start(&harness.log_path(), 0);
    let mut settings = settings("ehr", receiver.addr);
    settings.retry.max_attempts = 2;
    harness.spawn(settings);
    // FLAKY answers AE twice then AA: two attempts kill it, the replay gets it through.
    let ids = harness.enqueue("ehr", &["FLAKY-1"]).await;
    harness.settled(&ids).await;
    assert_eq!(harness.status(ids[0]), OutboundStatus::Dead);
    let dead = harness
        .store
        .dead_letters(Some("ehr"), 0)
        .expect("dead letters");
    assert_eq!(
        dead[0].reason,
        "gave up after 2 attempts: receiver answered AE to `FLAKY-1`: busy (2)"
    );

    assert_eq!(harness.store.replay(vec![ids[0]]).await.expect("replay"), 1);
    // No notify: the poll interval finds it, as it would after `ordobridge replay`.
    wait_for("the replayed message to be delivered", || {
        (harness.status(ids[0]) == OutboundStatus::Delivered).then_some(())
    })
    .await;
    assert_eq!(
        receiver.received(),
        strings(&["FLAKY-1", "FLAKY-1", "FLAKY-1"])
    );
    let (row, _) = harness.row(ids[0]);
    assert_eq!(row.attempts, 1, "attempts restart at the replay");
    assert!(
        harness
            .store
            .dead_letters(None, 0)
            .expect("dead")
            .is_empty()
    );
    harness.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_exchange_in_flight(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let mut harness = Harness::new(backend);
    let receiver = Receiver::start(&harness.log_path(), 0);
    let mut settings = settings("ehr", receiver.addr);
    settings.ack_timeout = Duration::from_millis(700);
    harness.spawn(settings);
    let ids = harness.enqueue("ehr", &["SILENT-1", "MSG-2"]).await;
    wait_for("the receiver to get the message", || {
        receiver
            .received()
            .contains(&"SILENT-1".to_owned())
            .then_some(())
    })
    .await;

    let started = Instant::now();
    harness.stop().await;
    // The worker waited for the ACK timeout and recorded the attempt before it stopped.
    assert!(started.elapsed() < Duration::from_secs(5));
    let (row, status) = harness.row(ids[0]);
    assert_eq!((status, row.attempts), (OutboundStatus::Pending, 1));
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.ends_with("no response frame within the ack timeout of 700ms")),
        "{:?}",
        row.last_error
    );
    assert_eq!(harness.status(ids[1]), OutboundStatus::Pending);
    assert_eq!(receiver.received(), strings(&["SILENT-1"]));
}

/// Issue 12: a file destination honours `retry_initial`, `retry_max` and `max_attempts` like
/// an MLLP one. Its folder is missing (a share that is not mounted; these tests may run as
/// root, whom permissions would not stop): the head message is retried with backoff while
/// the ones behind it wait, and dead-lettered after `max_attempts`; once the folder is back,
/// the next ones are delivered in order and the replayed dead letter follows.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_destination_retries_with_backoff_dead_letters_then_delivers_in_order(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let mut harness = Harness::new(backend);
    let folder = harness.dir.path().join("share/outbox");
    let outbox = OutboxSettings {
        folder: folder.clone(),
        name_template: "{control_id}.hl7".to_owned(),
        witness_suffix: None,
    };
    // The first wait is short, the second long: the test has at least 1.5 s, after the first
    // message's death, to see it (a PostgreSQL round trip per poll on a loaded machine) and
    // mount the share before the second one dies too.
    harness.spawn_file(FileDestinationSettings {
        retry: RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_secs(3),
            multiplier: 150.0,
            max_attempts: 3,
        },
        poll_interval: Duration::from_millis(50),
        ..FileDestinationSettings::new("drop", outbox)
    });
    let started = Instant::now();
    let first = harness.enqueue("drop", &["F-1"]).await;
    wait_for("a first failed write", || {
        (harness.row(first[0]).0.attempts >= 1).then_some(())
    })
    .await;
    // Enqueued behind a message in backoff: nothing overtakes it.
    let rest = harness.enqueue("drop", &["F-2", "F-3"]).await;
    for id in &rest {
        let (row, status) = harness.row(*id);
        assert_eq!((status, row.attempts), (OutboundStatus::Pending, 0));
    }
    wait_for("F-1 dead-lettered", || {
        (harness.status(first[0]) == OutboundStatus::Dead).then_some(())
    })
    .await;
    // Three attempts, the waits between them jittered in [10 ms, 20 ms] and [1.5 s, 3 s].
    assert!(
        started.elapsed() >= Duration::from_millis(1510),
        "{:?}",
        started.elapsed()
    );
    let (dead, _) = harness.row(first[0]);
    assert_eq!(dead.attempts, 3);
    let reason = dead.last_error.expect("a dead-letter reason");
    let expected = format!(
        "gave up after 3 attempts: cannot deliver `F-1` into `{}`: cannot write `{}`: ",
        folder.display(),
        folder.join("F-1.hl7.tmp").display()
    );
    assert!(reason.starts_with(&expected), "{reason}");
    assert!(reason.contains("No such file or directory"), "{reason}");

    // The share is back: F-2 (in its long backoff) and F-3 go, in order; then F-1 replayed.
    std::fs::create_dir_all(&folder).expect("mount the share");
    harness.settled(&rest).await;
    for id in &rest {
        assert_eq!(harness.status(*id), OutboundStatus::Delivered);
    }
    assert_eq!(
        harness.store.replay(first.clone()).await.expect("replay"),
        1
    );
    harness.notify["drop"].notify_one();
    harness.settled(&first).await;
    assert_eq!(harness.status(first[0]), OutboundStatus::Delivered);
    harness.stop().await;
    let mut names: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(&folder)
        .expect("list the share")
        .map(|entry| {
            let entry = entry.expect("entry");
            let modified = entry
                .metadata()
                .expect("metadata")
                .modified()
                .expect("mtime");
            (modified, entry.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    let names: Vec<String> = names.into_iter().map(|(_, name)| name).collect();
    assert_eq!(names, strings(&["F-2.hl7", "F-3.hl7", "F-1.hl7"]));
}

#[rstest]
#[tokio::test]
async fn a_paused_file_destination_writes_nothing_until_resumed(
    #[values(Backend::Sqlite, Backend::Postgres)] backend: Backend,
) {
    let mut harness = Harness::new(backend);
    let folder = harness.dir.path().join("share/outbox");
    std::fs::create_dir_all(&folder).expect("share");
    let outbox = OutboxSettings {
        folder: folder.clone(),
        name_template: "{control_id}.hl7".to_owned(),
        witness_suffix: None,
    };
    let pauses = ordobridge::delivery::PauseSwitches::default();
    assert!(pauses.set("drop", true), "paused");
    harness.spawn_file_with_pause(
        FileDestinationSettings {
            poll_interval: Duration::from_millis(20),
            ..FileDestinationSettings::new("drop", outbox)
        },
        pauses.receiver("drop"),
    );
    // The worker parks on the pause before anything is queued: from then on it leaves the
    // wait only when the switch changes, so what is queued now cannot be written.
    common::wait_for("the worker to park on its pause", || async {
        pauses.is_parked("drop").then_some(())
    })
    .await;
    let ids = harness.enqueue("drop", &["P-1"]).await;
    assert!(pauses.is_parked("drop"), "still parked after the enqueue");
    assert_eq!(harness.status(ids[0]), OutboundStatus::Pending);
    assert!(!folder.join("P-1.hl7").exists());
    assert!(pauses.is_paused("drop"));

    assert!(pauses.set("drop", false), "resumed");
    harness.settled(&ids).await;
    assert_eq!(harness.status(ids[0]), OutboundStatus::Delivered);
    assert!(folder.join("P-1.hl7").exists());
    assert!(
        !pauses.set("drop", false),
        "already running: nothing changed"
    );
}

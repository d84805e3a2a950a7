//! What one node of a cluster does at a time (issue 14, `engine::lease`): two nodes on one
//! real PostgreSQL (`common::postgres`) run the same work under one lease; the work records
//! when it runs, and these tests check that two nodes never run it at once, that a clean stop
//! hands over at once, that a dead node is replaced within the lease, and that a node which
//! loses its lease or its database stops working before the lease could be anyone else's.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordobridge::engine::lease::{LeaseSettings, Role, run_leased};
use ordobridge::store::Store;
use ordobridge::store::settings::PostgresSettings;
use tokio_util::sync::CancellationToken;

use common::postgres::TestPostgres;

/// The lease of these tests: short, so takeovers are quick, long enough for a loaded machine.
const LEASE: Duration = Duration::from_millis(1500);

/// What the nodes' work saw: who works now, how many at once at worst, and each stint.
#[derive(Default)]
struct Board {
    working: AtomicUsize,
    most_at_once: AtomicUsize,
    stints: Mutex<Vec<Done>>,
    current: Mutex<Option<String>>,
}

impl Board {
    fn current(&self) -> Option<String> {
        self.current.lock().unwrap().clone()
    }
    fn stints_of(&self, node: &str) -> usize {
        self.stints
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.0 == node)
            .count()
    }
}

/// A stint of work that ended: (node, started, asked to stop at, ended).
type Done = (String, Instant, Option<Instant>, Instant);

/// Marks a stint of work: counted from creation to drop (a dropped work ends its stint too).
struct Stint {
    board: Arc<Board>,
    node: String,
    started: Instant,
    asked_to_stop: Option<Instant>,
}

impl Drop for Stint {
    fn drop(&mut self) {
        self.board.working.fetch_sub(1, Ordering::SeqCst);
        let mut current = self.board.current.lock().unwrap();
        if current.as_deref() == Some(self.node.as_str()) {
            *current = None;
        }
        self.board.stints.lock().unwrap().push((
            self.node.clone(),
            self.started,
            self.asked_to_stop,
            Instant::now(),
        ));
    }
}

/// The work: runs until its token is cancelled, then takes `linger` to finish.
async fn work(board: Arc<Board>, node: String, stop: CancellationToken, linger: Duration) {
    let now_working = board.working.fetch_add(1, Ordering::SeqCst) + 1;
    board.most_at_once.fetch_max(now_working, Ordering::SeqCst);
    *board.current.lock().unwrap() = Some(node.clone());
    let mut stint = Stint {
        board,
        node,
        started: Instant::now(),
        asked_to_stop: None,
    };
    stop.cancelled().await;
    stint.asked_to_stop = Some(Instant::now());
    tokio::time::sleep(linger).await;
}

/// Starts `node`'s runner of the `@census`-like role on its own store.
fn node(
    server: &TestPostgres,
    name: &str,
    board: &Arc<Board>,
    linger: Duration,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let settings = PostgresSettings::from_url(&server.url()).unwrap();
    let store = Store::open_postgres(&settings, true).unwrap();
    let shutdown = CancellationToken::new();
    let lease = LeaseSettings {
        node: name.to_owned(),
        duration: LEASE,
    };
    let (board, node) = (board.clone(), name.to_owned());
    let runner = tokio::spawn(run_leased(
        store,
        Role::Census,
        lease,
        shutdown.clone(),
        move |stop| work(board.clone(), node.clone(), stop, linger),
    ));
    (shutdown, runner)
}

/// A plain client on the test server, its connection driven by a task.
async fn client(server: &TestPostgres) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Waits until `wanted` holds, at most `limit`.
async fn wait_for(what: &str, limit: Duration, wanted: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !wanted() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_one_node_at_a_time_clean_handover_and_failover_of_a_dead_node() {
    let server = TestPostgres::start();
    let board = Arc::new(Board::default());
    let (stop_a, runner_a) = node(&server, "ob-a", &board, Duration::ZERO);
    wait_for("node A works", LEASE * 4, || {
        board.current().as_deref() == Some("ob-a")
    })
    .await;
    let (stop_b, runner_b) = node(&server, "ob-b", &board, Duration::ZERO);
    // B asks every third of the lease and is refused while A holds it.
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(board.current().as_deref(), Some("ob-a"));
    assert_eq!(board.stints_of("ob-b"), 0);

    // A stops cleanly: it gives the lease back (its row says expired, unless B already took
    // it), so B takes over at its next ask instead of after the lease.
    stop_a.cancel();
    runner_a.await.unwrap();
    let client = client(&server).await;
    let row = client
        .query_one(
            "SELECT node, expires_at FROM destination_owners WHERE destination = '@census'",
            &[],
        )
        .await
        .unwrap();
    let (holder, expires_at): (String, i64) = (row.get(0), row.get(1));
    assert!(
        (holder == "ob-a" && expires_at == 0) || holder == "ob-b",
        "A's lease was not given back: held by {holder} until {expires_at}"
    );
    wait_for("B takes over from A's clean stop", LEASE * 4, || {
        board.current().as_deref() == Some("ob-b")
    })
    .await;

    // A comes back and waits; then B dies (its task is killed: no stop, no give back).
    let (stop_a, runner_a) = node(&server, "ob-a", &board, Duration::ZERO);
    tokio::time::sleep(LEASE).await;
    assert_eq!(board.current().as_deref(), Some("ob-b"));
    runner_b.abort();
    let died = Instant::now();
    let _ = runner_b.await;
    drop(stop_b);
    wait_for("A takes over from dead B", LEASE * 4, || {
        board.current().as_deref() == Some("ob-a")
    })
    .await;
    let failover = died.elapsed();
    // The lease, plus at most one ask (a third of it), plus a loaded machine's latency.
    let bound = LEASE + LEASE / 3 + Duration::from_secs(1);
    assert!(
        failover <= bound,
        "failover took {failover:?}, bound {bound:?}"
    );
    assert!(
        failover >= LEASE / 3,
        "A must not take over before B's lease could end: {failover:?}"
    );

    stop_a.cancel();
    runner_a.await.unwrap();
    assert_eq!(
        board.most_at_once.load(Ordering::SeqCst),
        1,
        "two nodes worked at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_a_lease_taken_over_drops_the_work_at_once() {
    let server = TestPostgres::start();
    let board = Arc::new(Board::default());
    // A's work would take long to stop: the lease decides, not the work.
    let (stop_a, runner_a) = node(&server, "ob-a", &board, Duration::from_secs(60));
    wait_for("node A works", LEASE * 4, || {
        board.current().as_deref() == Some("ob-a")
    })
    .await;
    // Another node took the lease (as after A was paused longer than the lease).
    client(&server)
        .await
        .execute(
            "UPDATE destination_owners SET node = 'ob-x', epoch = epoch + 1 WHERE destination = '@census'",
            &[],
        )
        .await
        .unwrap();
    let stolen = Instant::now();
    wait_for("A's work dropped", LEASE * 2, || board.current().is_none()).await;
    assert!(
        stolen.elapsed() <= LEASE,
        "A worked on after its lease was taken: {:?}",
        stolen.elapsed()
    );
    stop_a.cancel();
    runner_a.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_database_unreachable_stops_the_work_before_the_lease_ends() {
    let server = TestPostgres::start();
    let board = Arc::new(Board::default());
    // The work takes a moment to finish once asked (an ACK in flight).
    let linger = Duration::from_millis(200);
    let (stop_a, runner_a) = node(&server, "ob-a", &board, linger);
    wait_for("node A works", LEASE * 4, || {
        board.current().as_deref() == Some("ob-a")
    })
    .await;
    // The server freezes (its postmaster and every backend): renewals hang, nothing answers.
    let pid = server.pid().to_string();
    let signal_server = |signal: &str| {
        let parent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(parent.success());
        let children = std::process::Command::new("pkill")
            .args([signal, "-P", &pid])
            .status()
            .unwrap();
        assert!(children.success(), "the server has backends");
    };
    signal_server("-STOP");
    let frozen = Instant::now();
    let stopped = wait_for("A's work stopped", LEASE * 2, || board.current().is_none()).await;
    signal_server("-CONT");
    // The work was asked to stop with a third of the lease left, and finished in its time.
    assert!(
        stopped <= LEASE,
        "A worked {stopped:?} after the database froze"
    );
    let stints = board.stints.lock().unwrap().clone();
    let (_, _, asked, ended) = stints.last().unwrap();
    let asked = asked.expect("the work was asked to stop, not dropped");
    assert!(
        *ended >= asked + linger,
        "the work was given its time to finish"
    );
    assert!(asked > frozen);
    stop_a.cancel();
    runner_a.await.unwrap();
}

/// Work that ends on its own at once (an inbox whose folder is refused) is not restarted in a
/// tight loop: the node asks for the lease again only a third of the lease later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_work_that_ends_at_once_is_retried_a_third_of_the_lease_later() {
    let server = TestPostgres::start();
    let settings = PostgresSettings::from_url(&server.url()).unwrap();
    let store = Store::open_postgres(&settings, true).unwrap();
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let runner = {
        let starts = starts.clone();
        tokio::spawn(run_leased(
            store,
            Role::Inbox("refused".to_owned()),
            LeaseSettings {
                node: "ob-a".to_owned(),
                duration: LEASE,
            },
            shutdown.clone(),
            move |_stop| {
                let starts = starts.clone();
                async move { starts.lock().unwrap().push(Instant::now()) }
            },
        ))
    };
    wait_for("three starts", LEASE * 10, || {
        starts.lock().unwrap().len() >= 3
    })
    .await;
    shutdown.cancel();
    runner.await.unwrap();
    let starts = starts.lock().unwrap().clone();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= LEASE / 3, "restarted after {gap:?}: a tight loop");
    }
}

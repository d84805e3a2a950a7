//! Three ordobridge nodes on one PostgreSQL (issue 14): MLLP load spread over the three while
//! the node delivering the EHR destination is killed with SIGKILL, several times.
//!
//! What must hold, and is checked here:
//! - every message a node answered AA is in the journal (commit before ACK, on PostgreSQL);
//! - the EHR (python-hl7, `tests/peers/python_hl7_receiver.py`) receives every queued message
//!   at least once, in queue order (a message may come again after a failover: same MSH-10);
//! - never two connections to the EHR at once: one node delivers a destination at a time;
//! - after each kill another node takes the destination over within `[cluster]
//!   failover_after` (plus one claim interval and a loaded machine's slack).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::postgres::TestPostgres;
use common::{Daemon, repo_root};
use ordobridge::mllp::client::{ClientSettings, MllpClient};
use ordobridge::store::settings::PostgresSettings;
use ordobridge::store::{OutboundItem, Store};

const NODES: usize = 3;
/// Senders of ADT, spread over the nodes.
const SENDERS: usize = 6;
/// Messages queued for the EHR before each kill: the owner must have
/// something to deliver when it is watched, even if the queue drained while a killed node was
/// slow to come back (a loaded machine).
const QUEUED_PER_KILL: usize = 500;
/// Every message queued for the EHR by the end.
const QUEUED: usize = QUEUED_PER_KILL * KILLS;
const KILLS: usize = 3;
/// `[cluster] failover_after` of the nodes.
const FAILOVER: Duration = Duration::from_secs(2);

/// Writes node `node`'s configuration as `dir/NAME-NODE.toml`: the shared PostgreSQL store,
/// its node name, `failover_after` and logs, then `channels`.
fn write_node_config(dir: &Path, name: &str, node: usize, url: &str, channels: &str) -> PathBuf {
    let path = dir.join(format!("{name}-{node}.toml"));
    let text = format!(
        r#"[store]
backend = "postgres"
url = "{url}"

[cluster]
node_name = "ob-{node}"
failover_after = "{failover}s"

[log]
level = "info,ordobridge=debug"
format = "json"
{channels}"#,
        failover = FAILOVER.as_secs()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn node_config(dir: &Path, node: usize, url: &str, ehr: std::net::SocketAddr) -> PathBuf {
    let channels = format!(
        r#"
[inbound.adt-in]
protocol = "mllp"
bind = "127.0.0.1:0"
read_timeout = "5s"
idle_timeout = "60s"

[outbound.ehr]
protocol = "mllp"
address = "{ehr}"
ack_timeout = "5s"
retry_initial = "100ms"
retry_max = "1s"
"#
    );
    write_node_config(dir, "node", node, url, &channels)
}

/// The receiver's log: every MSH-10 received, in order.
fn received(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn ehr_message(n: usize) -> String {
    format!(
        "MSH|^~\\&|ORDO|POSOS|EHR|CHU|20261201120000||ORM^O01|Q{n:05}|P|2.5\rPID|1||IPP{n}^^^CH_EXEMPLE^PI\r"
    )
}

/// The node that holds the EHR destination's lease now, from the lease table.
async fn owner(client: &tokio_postgres::Client) -> Option<String> {
    client
        .query_opt(
            "SELECT node FROM destination_owners WHERE destination = 'ehr'
             AND expires_at > (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
            &[],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[test]
fn three_nodes_kill_9_the_owner_under_load_nothing_lost_one_sender_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestPostgres::start();
    let url = server.url();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The EHR behind the destination.
    let log = dir.path().join("ehr.log");
    let connections = dir.path().join("ehr-connections.log");
    let ehr = common::peer::PythonPeer::start(
        "python_hl7_receiver.py",
        &[log.to_str().unwrap(), "0", connections.to_str().unwrap()],
    );

    // The nodes, each with its own configuration (one database).
    let configs: Vec<PathBuf> = (1..=NODES)
        .map(|node| node_config(dir.path(), node, &url, ehr.addr))
        .collect();
    let mut nodes: Vec<Daemon> = configs.iter().map(|c| Daemon::start(c)).collect();
    let addrs: Arc<Mutex<Vec<std::net::SocketAddr>>> =
        Arc::new(Mutex::new(nodes.iter().map(|d| d.addr("adt-in")).collect()));

    // What the results mapped for the EHR, queued (as pushes would be) by a producer of the
    // database, QUEUED_PER_KILL at a time.
    let producer = Store::open_postgres(&PostgresSettings::from_url(&url).unwrap(), true).unwrap();
    let enqueue = |batch: usize| {
        rt.block_on(async {
            let items: Vec<OutboundItem> = (batch * QUEUED_PER_KILL..(batch + 1) * QUEUED_PER_KILL)
                .map(|n| OutboundItem {
                    destination: "ehr".to_owned(),
                    control_id: format!("Q{n:05}"),
                    payload: Bytes::from(ehr_message(n)),
                    source: format!("test-{n}"),
                })
                .collect();
            for chunk in items.chunks(100) {
                producer.enqueue(chunk.to_vec()).await.unwrap();
            }
        });
    };
    enqueue(0);

    // ADT load on the three nodes; each sender moves to another node when its node dies.
    let template = std::fs::read_to_string(repo_root().join("samples/adt/02-a01-admit.hl7"))
        .unwrap()
        .replace('\n', "\r");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (template, acked, stop, addrs) =
                (template.clone(), acked.clone(), stop.clone(), addrs.clone());
            rt.spawn(async move {
                let mut n = 0usize;
                let mut turn = sender;
                while !stop.load(Ordering::Relaxed) {
                    let addr = addrs.lock().unwrap()[turn % NODES];
                    turn += 1;
                    let Ok(mut client) = MllpClient::connect(addr, ClientSettings::default()).await
                    else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let control_id = format!("S{sender}N{n}");
                        n += 1;
                        let payload = template.replace("|SYN0002|", &format!("|{control_id}|"));
                        match client
                            .send(payload.as_bytes(), Duration::from_secs(10))
                            .await
                        {
                            Ok(answer) if String::from_utf8_lossy(&answer).contains("MSA|AA|") => {
                                acked.lock().unwrap().push(control_id);
                            }
                            // The node died mid-exchange: not acknowledged, move on.
                            _ => break,
                        }
                    }
                }
            })
        })
        .collect();

    let client = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    });
    let wait_owner = |what: &str| -> String {
        let started = Instant::now();
        loop {
            if let Some(owner) = rt.block_on(owner(&client)) {
                return owner;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: nobody owns `ehr`"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let mut failovers = Vec::new();
    for kill in 0..KILLS {
        if kill > 0 {
            enqueue(kill);
        }
        let owner = wait_owner("before a kill");
        // Let the owner deliver a while.
        let before = received(&log).len();
        let started = Instant::now();
        while received(&log).len() < before + 50 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "kill {kill}: `{owner}` delivered nothing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let index: usize = owner.trim_start_matches("ob-").parse::<usize>().unwrap() - 1;
        nodes[index].kill9();
        let killed = Instant::now();
        let seen = received(&log).len();
        // Another node takes the destination and delivers again.
        while received(&log).len() <= seen {
            assert!(
                killed.elapsed() < FAILOVER * 10,
                "kill {kill}: no delivery after killing `{owner}`"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let failover = killed.elapsed();
        let new_owner = wait_owner("after a kill");
        assert_ne!(
            new_owner, owner,
            "kill {kill}: the dead node cannot own `ehr`"
        );
        failovers.push(failover);
        // The killed node comes back (it waits its turn for the destination).
        nodes[index] = Daemon::start(&configs[index]);
        addrs.lock().unwrap()[index] = nodes[index].addr("adt-in");
    }

    // Everything queued arrives.
    let started = Instant::now();
    loop {
        let got: HashSet<String> = received(&log).into_iter().collect();
        if (0..QUEUED).all(|n| got.contains(&format!("Q{n:05}"))) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{} of {QUEUED} queued messages at the EHR",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for sender in senders {
            let _ = sender.await;
        }
    });

    // In order: each message first arrives after the one queued before it.
    let arrivals = received(&log);
    let mut first_seen = Vec::new();
    let mut known = HashSet::new();
    for id in &arrivals {
        if known.insert(id.clone()) {
            first_seen.push(id.clone());
        }
    }
    let expected: Vec<String> = (0..QUEUED).map(|n| format!("Q{n:05}")).collect();
    assert_eq!(first_seen, expected, "first arrivals out of queue order");
    let repeats = arrivals.len() - first_seen.len();
    // A worker records the ACKs it got in batches behind the next sends (at most 64 waiting,
    // `delivery::mllp`): those of a killed node are sent again by the next one, same MSH-10.
    assert!(
        repeats <= KILLS * 65,
        "{repeats} messages came twice: at most the ACKs not yet recorded at each kill (64) and the one in flight"
    );

    // One sender at a time.
    let most_at_once = std::fs::read_to_string(&connections)
        .unwrap()
        .lines()
        .map(|line| line.trim().parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert_eq!(
        most_at_once, 1,
        "two nodes were connected to the EHR at once"
    );

    // Failover within the bound: the lease, one claim interval, a delivery's retry.
    for failover in &failovers {
        assert!(
            *failover <= FAILOVER * 3,
            "failover took {failover:?} (failover_after {FAILOVER:?})"
        );
    }

    // Every acknowledged ADT is in the journal.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the load ran: {} ACKs", acked.len());
    let journaled: HashSet<String> = rt.block_on(async {
        client
            .query(
                "SELECT control_id FROM journal WHERE channel = 'adt-in'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    });
    let missing: Vec<&String> = acked.iter().filter(|id| !journaled.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not journaled: {missing:?}"
    );
    eprintln!(
        "cluster: {} ADT acknowledged over {NODES} nodes, {KILLS} kills, failovers {failovers:?}, {repeats} repeats at the EHR",
        acked.len()
    );
    drop(ehr);
}

/// Two nodes polling one shared inbox folder: one node at a time takes files (the inbox's
/// lease, `@inbox:NAME`); its SIGKILL mid-stream hands the folder to the other, and every file
/// is journaled once and archived, none left behind or taken twice.
#[test]
fn two_nodes_one_shared_inbox_each_file_journaled_once_across_a_kill() {
    const FILES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let server = TestPostgres::start();
    let url = server.url();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let configs: Vec<PathBuf> = (1..=2)
        .map(|node| {
            let channels = format!(
                r#"
[inbound.adt-files]
protocol = "file"
folder = "{share}"
patterns = ["*.hl7"]
ready = "stable"
stable_for = "50ms"
poll_interval = "20ms"
"#,
                share = share.display()
            );
            write_node_config(dir.path(), "files", node, &url, &channels)
        })
        .collect();
    let mut nodes: Vec<Daemon> = configs.iter().map(|c| Daemon::start(c)).collect();
    let template = std::fs::read_to_string(repo_root().join("samples/adt/02-a01-admit.hl7"))
        .unwrap()
        .replace('\n', "\r");
    let drop_files = |range: std::ops::Range<usize>| {
        for n in range {
            let text = template.replace("|SYN0002|", &format!("|F{n:04}|"));
            // Written aside, then renamed in: a file appears whole.
            let part = share.join(format!(".F{n:04}.part"));
            std::fs::write(&part, text).unwrap();
            std::fs::rename(&part, share.join(format!("F{n:04}.hl7"))).unwrap();
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    });
    let journaled = || -> (i64, i64) {
        let row = rt
            .block_on(client.query_one(
                "SELECT count(*), count(DISTINCT control_id) FROM journal WHERE channel = 'adt-files'",
                &[],
            ))
            .unwrap();
        (row.get(0), row.get(1))
    };
    let inbox_owner = || -> Option<String> {
        rt.block_on(client.query_opt(
            "SELECT node FROM destination_owners WHERE destination = '@inbox:adt-files'
             AND expires_at > (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
            &[],
        ))
        .unwrap()
        .map(|row| row.get(0))
    };

    drop_files(0..FILES / 2);
    let started = Instant::now();
    while journaled().0 < 20 {
        assert!(started.elapsed() < Duration::from_secs(60), "no file taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    let owner = inbox_owner().expect("the node taking files holds the inbox's lease");
    let index: usize = owner.trim_start_matches("ob-").parse::<usize>().unwrap() - 1;
    nodes[index].kill9();
    drop_files(FILES / 2..FILES);

    let started = Instant::now();
    loop {
        let (rows, distinct) = journaled();
        let left = std::fs::read_dir(&share)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".hl7"))
            .count();
        if distinct == FILES as i64 && left == 0 {
            assert_eq!(rows, FILES as i64, "a file was journaled twice");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{distinct} of {FILES} files journaled, {left} left in the share"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(
        inbox_owner().as_deref(),
        Some(owner.as_str()),
        "the dead node holds nothing"
    );
    let archived = walk(&share.join("archive"));
    assert_eq!(archived, FILES, "every file archived once");
}

/// Regular files under `folder`, recursively.
fn walk(folder: &Path) -> usize {
    std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path)
                    } else {
                        usize::from(path.extension().is_some_and(|x| x == "hl7"))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

//! Commit before ACK, under fire: many connections send while the daemon is killed with
//! SIGKILL, several times over the same database. Every message that was answered AA must be
//! in the journal afterwards. On both stores: the SQLite file, and a real PostgreSQL server
//! (`common::postgres`, issue 14).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, repo_root, write_config};
use ordobridge::mllp::client::{ClientSettings, MllpClient};
use ordobridge::store::settings::PostgresSettings;
use ordobridge::store::{JournalFilter, Store, StoreOptions};

const CONNECTIONS: usize = 24;
const ROUNDS: usize = 4;
/// ACKs to see in a round before pulling the plug.
const ACKS_BEFORE_KILL: usize = 400;

fn message(template: &str, control_id: &str) -> Vec<u8> {
    // The sample's MSH-10 is SYN0002; each message gets its own.
    template
        .replace("|SYN0002|", &format!("|{control_id}|"))
        .into_bytes()
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_message() {
    kill_9_under_load(None, false);
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_message_on_postgresql() {
    let server = common::postgres::TestPostgres::start();
    kill_9_under_load(Some(&server), false);
}

/// With `[store] intake_log`, an ACK waits for the log's `fdatasync`, not the journal's
/// commit: every message ACKed must still be in the journal once the next start (and the
/// final open) copied what the log held.
#[test]
fn kill_9_under_load_loses_no_acknowledged_message_with_the_intake_log() {
    kill_9_under_load(None, true);
}

/// The daemon killed under load `ROUNDS` times over one store: the SQLite file (through the
/// intake log if `intake_log`), or the database of `postgres`.
fn kill_9_under_load(postgres: Option<&common::postgres::TestPostgres>, intake_log: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "");
    // Said either way: the intake log is on by default on SQLite.
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replacen(
        "[store]\npath = \"data/ordobridge.db\"",
        &format!("[store]\npath = \"data/ordobridge.db\"\nintake_log = {intake_log}"),
        1,
    );
    assert!(
        text.contains(&format!("intake_log = {intake_log}")),
        "{text}"
    );
    std::fs::write(&config, text).expect("config");
    if let Some(server) = postgres {
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text.replacen(
            "[store]\npath = \"data/ordobridge.db\"",
            &format!(
                "[store]\nbackend = \"postgres\"\nurl = \"{}\"",
                server.url()
            ),
            1,
        );
        assert!(text.contains("backend = \"postgres\""), "{text}");
        std::fs::write(&config, text).expect("config");
    }
    let template = std::fs::read_to_string(repo_root().join("samples/adt/02-a01-admit.hl7"))
        .expect("sample")
        .replace('\n', "\r");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();

    for round in 0..ROUNDS {
        let mut daemon = Daemon::start(&config);
        let addr = daemon.addr("adt-in");
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for connection in 0..CONNECTIONS {
            let (template, acked, count, stop) =
                (template.clone(), acked.clone(), count.clone(), stop.clone());
            tasks.push(rt.spawn(async move {
                let Ok(mut client) = MllpClient::connect(addr, ClientSettings::default()).await
                else {
                    return;
                };
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let control_id = format!("R{round}C{connection}N{n}");
                    let payload = message(&template, &control_id);
                    match client.send(&payload, Duration::from_secs(10)).await {
                        Ok(answer) => {
                            let answer = String::from_utf8_lossy(&answer);
                            if answer.contains(&format!("MSA|AA|{control_id}")) {
                                acked.lock().expect("lock").push(control_id);
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // The daemon died under us: what was not answered will be resent.
                        Err(_) => return,
                    }
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while count.load(Ordering::Relaxed) < ACKS_BEFORE_KILL {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} ACKs in 60 s; daemon log:\n{}",
                count.load(Ordering::Relaxed),
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        daemon.kill9();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            rt.block_on(task).expect("client task");
        }
    }

    let store = match postgres {
        None => Store::open(
            &dir.path().join("data/ordobridge.db"),
            StoreOptions::default(),
        ),
        Some(server) => Store::open_postgres(
            &PostgresSettings::from_url(&server.url()).expect("url"),
            true,
        ),
    }
    .expect("reopen the store after the crashes");
    let journaled: HashSet<String> = store
        .list_journal(&JournalFilter {
            control_id: None,
            channel: None,
            limit: 0,
        })
        .expect("list journal")
        .into_iter()
        .filter(|row| row.status != "rejected")
        .map(|row| row.control_id)
        .collect();
    let acked = acked.lock().expect("lock");
    assert!(acked.len() >= ROUNDS * ACKS_BEFORE_KILL);
    let lost: Vec<&String> = acked.iter().filter(|id| !journaled.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages are missing from the journal, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

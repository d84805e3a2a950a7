//! Files under fire: a batch of files is being taken when the daemon is killed with SIGKILL,
//! twice; after the last restart every file is archived and every message is in the journal
//! exactly once (a file committed but not yet moved comes back as duplicates, not twice).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Daemon, write_config};
use ordobridge::store::{JournalFilter, Store, StoreOptions};

const FILES: usize = 300;

fn count_files(folder: &Path, extension: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| e.path())
        .map(|p| {
            if p.is_dir() {
                count_files(&p, extension)
            } else {
                usize::from(p.extension().is_some_and(|x| x == extension))
            }
        })
        .sum()
}

fn wait_for(what: &str, daemon: &Daemon, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; daemon log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn kill_9_during_a_batch_of_files_processes_each_file_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        r#"
[inbound.files]
protocol = "file"
folder = "in"
create_folder = true
patterns = ["*.hl7"]
format = "hl7"
ready = "stable"
stable_for = "10ms"
poll_interval = "10ms"
"#,
    );
    let inbox = dir.path().join("in");
    std::fs::create_dir_all(&inbox).expect("inbox");
    for n in 0..FILES {
        let message = format!(
            "MSH|^~\\&|DPI|CH|OB|POSOS|20261122101500||ADT^A01^ADT_A01|F{n:04}|P|2.5\rPID|1||{n}^^^CH_EXEMPLE^PI||DURAND^JEANNE\r"
        );
        std::fs::write(inbox.join(format!("m{n:04}.hl7")), message).expect("write file");
    }
    let archive = inbox.join("archive");
    for (round, archived_before_kill) in [(1, 60), (2, 160)] {
        let mut daemon = Daemon::start(&config);
        wait_for(&format!("round {round}: files archived"), &daemon, || {
            count_files(&archive, "hl7") >= archived_before_kill
        });
        daemon.kill9();
    }
    let daemon = Daemon::start(&config);
    wait_for("every file archived", &daemon, || {
        count_files(&archive, "hl7") == FILES
    });
    assert_eq!(
        count_files(&inbox.join("error"), "hl7"),
        0,
        "no file refused"
    );
    drop(daemon);

    let store = Store::open(
        &dir.path().join("data/ordobridge.db"),
        StoreOptions::default(),
    )
    .expect("store");
    let rows = store
        .list_journal(&JournalFilter {
            control_id: None,
            channel: Some("files".to_string()),
            limit: 0,
        })
        .expect("journal");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for row in &rows {
        *seen.entry(row.control_id.clone()).or_default() += 1;
    }
    assert_eq!(seen.len(), FILES, "every file's message is journaled");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "journaled more than once: {twice:?}");
}

//! The file-drop inbox and outbox over real temporary folders: a recording file handler, short
//! poll intervals, and every wait a poll with a timeout.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ordobridge::filedrop::{
    AfterSuccess, FileHandler, FileRejection, InboxFile, InboxSettings, InboxStats, NameVars,
    Outbox, OutboxSettings, Readiness, run_inbox,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything that should happen soon: a hang fails the test instead of
/// blocking it.
const PATIENCE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every few milliseconds until it holds; panics after [`PATIENCE`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the inbox has finished `n` more scans, so "nothing happened" is checked over
/// real polls rather than a guessed delay.
async fn wait_scans(stats: &InboxStats, n: u64) {
    let target = stats.snapshot().scans + n;
    wait_until("scans", || stats.snapshot().scans >= target).await;
}

/// Records every file offered; refuses names containing `bad`, panics on names containing
/// `panic`.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Recorder {
    fn names(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl FileHandler for Recorder {
    async fn handle(&self, file: InboxFile) -> Result<(), FileRejection> {
        assert_eq!(file.path.file_name().unwrap().to_str().unwrap(), file.name);
        self.seen
            .lock()
            .unwrap()
            .push((file.name.clone(), file.bytes.to_vec()));
        if file.name.contains("panic") {
            panic!("handler bug");
        }
        if file.name.contains("bad") {
            return Err(FileRejection::new(format!(
                "{}: MSH-9: expected a message type",
                file.name
            )));
        }
        Ok(())
    }
}

struct Dirs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        fs::create_dir(root.join("in")).unwrap();
        Self { _tmp: tmp, root }
    }
    fn inbox(&self) -> PathBuf {
        self.root.join("in")
    }
    fn archive(&self) -> PathBuf {
        self.root.join("archive")
    }
    fn errors(&self) -> PathBuf {
        self.root.join("error")
    }
    fn settings(&self, readiness: Readiness) -> InboxSettings {
        InboxSettings {
            folder: self.inbox(),
            patterns: vec!["*.hl7".into(), "*.HPR".into()],
            poll_interval: POLL,
            readiness,
            after_success: AfterSuccess::Archive {
                folder: self.archive(),
            },
            error_folder: self.errors(),
            max_file_bytes: 1024 * 1024,
        }
    }
    /// Whether `name` is in any day folder of the archive (the day may turn during a test).
    fn archived(&self, name: &str) -> bool {
        fs::read_dir(self.archive())
            .map(|days| days.flatten().any(|d| d.path().join(name).exists()))
            .unwrap_or(false)
    }
    fn write(&self, name: &str, bytes: &[u8]) {
        fs::write(self.inbox().join(name), bytes).unwrap();
    }
}

fn today() -> String {
    jiff::Zoned::now().date().strftime("%Y-%m-%d").to_string()
}

fn witness() -> Readiness {
    Readiness::Witness {
        suffixes: vec![".OK".into(), ".ok".into()],
    }
}

struct Running {
    stats: Arc<InboxStats>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("inbox did not stop")
            .unwrap();
    }
}

fn start<H: FileHandler>(settings: InboxSettings, handler: Arc<H>) -> Running {
    let stats = Arc::new(InboxStats::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let stats = Arc::clone(&stats);
        let shutdown = shutdown.clone();
        async move { run_inbox("test-in", settings, handler, stats, shutdown).await }
    });
    Running {
        stats,
        shutdown,
        task,
    }
}

#[tokio::test]
async fn ok_stable_mode_waits_for_a_slowly_written_file() {
    let dirs = Dirs::new();
    let handler = Arc::new(Recorder::default());
    let age = Duration::from_millis(800);
    let run = start(
        dirs.settings(Readiness::StableFor(age)),
        Arc::clone(&handler),
    );
    let path = dirs.inbox().join("slow.hl7");
    let mut file = File::create(&path).unwrap();
    let mut expected = Vec::new();
    for i in 0..6 {
        let chunk = format!("MSH|^~\\&|part {i}\r");
        file.write_all(chunk.as_bytes()).unwrap();
        file.flush().unwrap();
        expected.extend_from_slice(chunk.as_bytes());
        // The sender's pace, shorter than the age: the file must not look stable in between.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(handler.count(), 0, "taken while still being written");
    }
    drop(file);
    wait_until("the file to be archived", || dirs.archived("slow.hl7")).await;
    let seen = handler.seen.lock().unwrap().clone();
    assert_eq!(seen, vec![("slow.hl7".to_owned(), expected)]);
    assert!(!path.exists());
    run.stop().await;
}

#[tokio::test]
async fn ok_witness_mode_waits_for_the_witness_and_archives_it() {
    let dirs = Dirs::new();
    let handler = Arc::new(Recorder::default());
    let run = start(dirs.settings(witness()), Arc::clone(&handler));
    dirs.write("R1.HPR", b"H|~^\\&|\r");
    dirs.write("R2.hl7", b"MSH|");
    wait_scans(&run.stats, 5).await;
    assert_eq!(handler.count(), 0, "taken without its witness");
    dirs.write("R1.OK", b"");
    dirs.write("R2.hl7.ok", b"");
    wait_until("both files archived", || {
        dirs.archived("R1.HPR") && dirs.archived("R2.hl7")
    })
    .await;
    wait_until("witnesses archived", || {
        dirs.archived("R1.OK") && dirs.archived("R2.hl7.ok")
    })
    .await;
    assert_eq!(fs::read_dir(dirs.inbox()).unwrap().count(), 0);
    wait_until("two archived", || run.stats.snapshot().files_archived == 2).await;
    assert_eq!(run.stats.snapshot().files_taken, 2);
    run.stop().await;
}

#[tokio::test]
async fn ok_shared_witness_moves_with_the_last_file() {
    let dirs = Dirs::new();
    let handler = Arc::new(Recorder::default());
    dirs.write("A.HPR", b"H|");
    dirs.write("A.hl7", b"MSH|");
    dirs.write("A.OK", b"");
    let run = start(dirs.settings(witness()), Arc::clone(&handler));
    wait_until("both archived", || {
        dirs.archived("A.HPR") && dirs.archived("A.hl7") && dirs.archived("A.OK")
    })
    .await;
    assert_eq!(handler.count(), 2);
    run.stop().await;
}

#[tokio::test]
async fn ok_500_files_in_mtime_then_name_order() {
    let dirs = Dirs::new();
    let base = SystemTime::now() - Duration::from_secs(3600);
    let mut expected = Vec::new();
    for i in 0..500u64 {
        // Reverse mtime order to names, with pairs sharing an mtime to test the name order.
        let name = format!("F{i:04}.hl7");
        let mtime = base + Duration::from_secs(1000 - (i / 2) * 2);
        let path = dirs.inbox().join(&name);
        fs::write(&path, name.as_bytes()).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        expected.push((mtime, name));
    }
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, n)| n).collect();
    let handler = Arc::new(Recorder::default());
    let run = start(
        dirs.settings(Readiness::StableFor(Duration::from_millis(10))),
        Arc::clone(&handler),
    );
    wait_until("500 files", || handler.count() == 500).await;
    assert_eq!(handler.names(), expected);
    wait_until("500 archived", || {
        run.stats.snapshot().files_archived == 500
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn ok_rejected_file_goes_to_error_with_its_reason() {
    let dirs = Dirs::new();
    let handler = Arc::new(Recorder::default());
    let run = start(dirs.settings(witness()), Arc::clone(&handler));
    dirs.write("bad.hl7", b"NOT HL7");
    dirs.write("bad.OK", b"");
    let reason = dirs.errors().join("bad.hl7.reason");
    wait_until("the file in error/", || {
        dirs.errors().join("bad.hl7").exists()
    })
    .await;
    assert_eq!(
        fs::read_to_string(&reason).unwrap(),
        "bad.hl7: MSH-9: expected a message type\n"
    );
    assert_eq!(fs::read(dirs.errors().join("bad.hl7")).unwrap(), b"NOT HL7");
    wait_until("the witness in error/", || {
        dirs.errors().join("bad.OK").exists()
    })
    .await;
    assert_eq!(fs::read_dir(dirs.inbox()).unwrap().count(), 0);
    // The same name again: suffixed, the first one kept.
    dirs.write("bad.hl7", b"AGAIN");
    dirs.write("bad.OK", b"");
    wait_until("the second file in error/", || {
        dirs.errors().join("bad.hl7.1").exists()
    })
    .await;
    assert!(dirs.errors().join("bad.hl7.1.reason").exists());
    assert_eq!(fs::read(dirs.errors().join("bad.hl7")).unwrap(), b"NOT HL7");
    wait_until("two rejected", || run.stats.snapshot().files_rejected == 2).await;
    run.stop().await;
}

#[tokio::test]
async fn ok_archive_by_date_with_name_collisions() {
    let dirs = Dirs::new();
    let day = dirs.archive().join(today());
    fs::create_dir_all(&day).unwrap();
    fs::write(day.join("a.hl7"), b"older").unwrap();
    let handler = Arc::new(Recorder::default());
    let run = start(dirs.settings(witness()), Arc::clone(&handler));
    for round in 1..=2u8 {
        dirs.write("a.hl7", &[b'0' + round]);
        dirs.write("a.ok", b"");
        wait_until("archived", || {
            run.stats.snapshot().files_archived == u64::from(round)
        })
        .await;
    }
    // Written around midnight, the day may have turned: look in whichever day holds them.
    let day = [day, dirs.archive().join(today())]
        .into_iter()
        .find(|d| d.join("a.hl7.2").exists())
        .unwrap();
    assert_eq!(fs::read(day.join("a.hl7")).unwrap(), b"older");
    assert_eq!(fs::read(day.join("a.hl7.1")).unwrap(), b"1");
    assert_eq!(fs::read(day.join("a.hl7.2")).unwrap(), b"2");
    assert!(day.join("a.ok").exists() && day.join("a.ok.1").exists());
    run.stop().await;
}

#[tokio::test]
async fn ok_delete_after_success() {
    let dirs = Dirs::new();
    let handler = Arc::new(Recorder::default());
    let settings = InboxSettings {
        after_success: AfterSuccess::Delete,
        ..dirs.settings(witness())
    };
    let run = start(settings, Arc::clone(&handler));
    dirs.write("d.hl7", b"MSH|");
    dirs.write("d.OK", b"");
    wait_until("deleted", || run.stats.snapshot().files_deleted == 1).await;
    assert_eq!(fs::read_dir(dirs.inbox()).unwrap().count(), 0);
    assert!(!dirs.archive().exists());
    run.stop().await;
}

#[tokio::test]
async fn ok_dot_files_tmp_and_part_are_ignored() {
    let dirs = Dirs::new();
    let ignored = [".hidden.hl7", "x.hl7.tmp", "y.hl7.part", "z.txt", "w.TMP"];
    for name in ignored {
        dirs.write(name, b"MSH|");
    }
    fs::create_dir(dirs.inbox().join("sub.hl7")).unwrap();
    let handler = Arc::new(Recorder::default());
    let run = start(
        dirs.settings(Readiness::StableFor(Duration::from_millis(10))),
        Arc::clone(&handler),
    );
    wait_scans(&run.stats, 3).await;
    dirs.write("real.hl7", b"MSH|");
    wait_until("real.hl7 archived", || dirs.archived("real.hl7")).await;
    wait_scans(&run.stats, 3).await;
    assert_eq!(handler.names(), vec!["real.hl7".to_owned()]);
    for name in ignored {
        assert!(dirs.inbox().join(name).exists(), "{name} was moved");
    }
    run.stop().await;
}

#[tokio::test]
async fn ok_oversized_file_goes_to_error_unread() {
    let dirs = Dirs::new();
    let handler = Arc::new(Recorder::default());
    let settings = InboxSettings {
        max_file_bytes: 100,
        ..dirs.settings(witness())
    };
    let run = start(settings, Arc::clone(&handler));
    dirs.write("big.hl7", &[b'x'; 1000]);
    dirs.write("big.OK", b"");
    wait_until("big.hl7 in error/", || {
        dirs.errors().join("big.hl7").exists()
    })
    .await;
    assert_eq!(
        fs::read_to_string(dirs.errors().join("big.hl7.reason")).unwrap(),
        "file `big.hl7` is 1000 bytes, more than the limit of 100 bytes; not read\n"
    );
    wait_until("one rejected", || run.stats.snapshot().files_rejected == 1).await;
    assert_eq!(run.stats.snapshot().files_taken, 0);
    assert_eq!(handler.count(), 0);
    run.stop().await;
}

#[tokio::test]
async fn ok_panicking_handler_refuses_the_file_and_the_loop_goes_on() {
    let dirs = Dirs::new();
    let handler = Arc::new(Recorder::default());
    let run = start(dirs.settings(witness()), Arc::clone(&handler));
    dirs.write("panic.hl7", b"MSH|");
    dirs.write("panic.OK", b"");
    wait_until("panic.hl7 in error/", || {
        dirs.errors().join("panic.hl7").exists()
    })
    .await;
    assert_eq!(
        fs::read_to_string(dirs.errors().join("panic.hl7.reason")).unwrap(),
        "internal error: the file handler failed on `panic.hl7`\n"
    );
    dirs.write("next.hl7", b"MSH|");
    dirs.write("next.OK", b"");
    wait_until("next.hl7 archived", || dirs.archived("next.hl7")).await;
    run.stop().await;
}

/// Takes files in batches of at most 8, as the daemon's file channels take theirs (in one
/// transaction); each file is answered by the `Recorder`, so a name with `bad` is refused and
/// one with `panic` makes the whole batch fail.
#[derive(Default)]
struct Batcher {
    files: Recorder,
    batches: Mutex<Vec<usize>>,
}

impl FileHandler for Batcher {
    async fn handle(&self, file: InboxFile) -> Result<(), FileRejection> {
        self.files.handle(file).await
    }

    fn batch_limit(&self) -> usize {
        8
    }

    async fn handle_batch(&self, files: Vec<InboxFile>) -> Vec<Result<(), FileRejection>> {
        self.batches.lock().unwrap().push(files.len());
        let mut answers = Vec::with_capacity(files.len());
        for file in files {
            answers.push(self.files.handle(file).await);
        }
        answers
    }
}

#[tokio::test]
async fn ok_batches_keep_the_order_and_settle_each_file() {
    let dirs = Dirs::new();
    let base = SystemTime::now() - Duration::from_secs(3600);
    let mut names = Vec::new();
    for i in 0..40u64 {
        let name = match i {
            10 => "F0010-bad.hl7".to_owned(),
            25 => "F0025-panic.hl7".to_owned(),
            _ => format!("F{i:04}.hl7"),
        };
        let path = dirs.inbox().join(&name);
        fs::write(&path, name.as_bytes()).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(base + Duration::from_secs(i))
            .unwrap();
        names.push(name);
    }
    let handler = Arc::new(Batcher::default());
    let run = start(
        dirs.settings(Readiness::StableFor(Duration::from_millis(10))),
        Arc::clone(&handler),
    );
    wait_until("38 archived and 2 refused", || {
        let stats = run.stats.snapshot();
        stats.files_archived == 38 && stats.files_rejected == 2
    })
    .await;
    // The batch with the panicking file is offered again one file at a time: its first files
    // are seen twice (the real handler is idempotent), in the same order.
    let mut first_seen = Vec::new();
    for name in handler.files.names() {
        if !first_seen.contains(&name) {
            first_seen.push(name);
        }
    }
    assert_eq!(first_seen, names);
    let batches = handler.batches.lock().unwrap().clone();
    assert!(batches.iter().all(|&n| (1..=8).contains(&n)), "{batches:?}");
    assert!(batches.iter().any(|&n| n > 1), "{batches:?}");
    for name in &names {
        if name.contains("bad") || name.contains("panic") {
            assert!(dirs.errors().join(name).exists(), "{name} not in error/");
        } else {
            assert!(dirs.archived(name), "{name} not archived");
        }
    }
    assert_eq!(
        fs::read_to_string(dirs.errors().join("F0025-panic.hl7.reason")).unwrap(),
        "internal error: the file handler failed on `F0025-panic.hl7`\n"
    );
    assert_eq!(
        fs::read_to_string(dirs.errors().join("F0010-bad.hl7.reason")).unwrap(),
        "F0010-bad.hl7: MSH-9: expected a message type\n"
    );
    run.stop().await;
}

/// Whether `chmod 000` denies us (not when running as root).
fn chmod_denies(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join("probe");
    fs::create_dir(&probe).unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o000)).unwrap();
    let denied = fs::read_dir(&probe).is_err();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir(&probe).unwrap();
    denied
}

#[tokio::test]
async fn ok_unreadable_folder_is_counted_and_retried() {
    use std::os::unix::fs::PermissionsExt;
    let dirs = Dirs::new();
    let inbox = dirs.inbox();
    // As root chmod does not deny: a missing folder stands in for an unreadable one.
    let use_chmod = chmod_denies(&dirs.root);
    if use_chmod {
        fs::set_permissions(&inbox, fs::Permissions::from_mode(0o000)).unwrap();
    } else {
        fs::remove_dir(&inbox).unwrap();
    }
    let handler = Arc::new(Recorder::default());
    let run = start(dirs.settings(witness()), Arc::clone(&handler));
    wait_until("three failed scans", || {
        run.stats.snapshot().scan_errors >= 3
    })
    .await;
    let last = run.stats.last_error().unwrap();
    assert!(
        last.starts_with(&format!("cannot list inbox folder `{}`: ", inbox.display())),
        "{last}"
    );
    if use_chmod {
        fs::set_permissions(&inbox, fs::Permissions::from_mode(0o755)).unwrap();
    } else {
        fs::create_dir(&inbox).unwrap();
    }
    dirs.write("back.hl7", b"MSH|");
    dirs.write("back.OK", b"");
    wait_until("back.hl7 archived", || dirs.archived("back.hl7")).await;
    assert!(!run.task.is_finished());
    run.stop().await;
}

#[tokio::test]
async fn ok_file_not_archived_is_offered_again() {
    let dirs = Dirs::new();
    // A plain file where the archive folder should be: every archive attempt fails.
    fs::write(dirs.archive(), b"in the way").unwrap();
    let handler = Arc::new(Recorder::default());
    let run = start(dirs.settings(witness()), Arc::clone(&handler));
    dirs.write("again.hl7", b"MSH|");
    dirs.write("again.OK", b"");
    wait_until("offered twice", || handler.count() >= 2).await;
    assert!(run.stats.snapshot().file_errors >= 1);
    let last = run.stats.last_error().unwrap();
    let expected = format!(
        "cannot archive `{}` into `{}",
        dirs.inbox().join("again.hl7").display(),
        dirs.archive().display()
    );
    assert!(last.starts_with(&expected), "{last}");
    assert!(dirs.inbox().join("again.hl7").exists());
    // Once the archive is usable the committed file (offered again, deduped by the engine)
    // is archived with its witness.
    fs::remove_file(dirs.archive()).unwrap();
    wait_until("archived", || {
        dirs.archived("again.hl7") && dirs.archived("again.OK")
    })
    .await;
    assert!(handler.names().iter().all(|n| n == "again.hl7"));
    run.stop().await;
}

/// Blocks in the handler until released, to hold a file in flight.
#[derive(Default)]
struct Gate {
    started: Notify,
    release: Notify,
    done: Mutex<Vec<String>>,
    finished: AtomicBool,
}

impl FileHandler for Gate {
    async fn handle(&self, file: InboxFile) -> Result<(), FileRejection> {
        self.started.notify_one();
        self.release.notified().await;
        self.done.lock().unwrap().push(file.name);
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn ok_shutdown_finishes_the_file_in_flight() {
    let dirs = Dirs::new();
    dirs.write("a.hl7", b"MSH|a");
    dirs.write("b.hl7", b"MSH|b");
    let base = SystemTime::now() - Duration::from_secs(60);
    for (name, offset) in [("a.hl7", 0), ("b.hl7", 1)] {
        File::options()
            .write(true)
            .open(dirs.inbox().join(name))
            .unwrap()
            .set_modified(base + Duration::from_secs(offset))
            .unwrap();
    }
    dirs.write("a.OK", b"");
    dirs.write("b.OK", b"");
    let gate = Arc::new(Gate::default());
    let run = start(dirs.settings(witness()), Arc::clone(&gate));
    tokio::time::timeout(PATIENCE, gate.started.notified())
        .await
        .unwrap();
    run.shutdown.cancel();
    // The inbox must wait for the handler: give it a few turns to (wrongly) stop.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(!run.task.is_finished(), "stopped with a file in flight");
    gate.release.notify_one();
    tokio::time::timeout(PATIENCE, run.task)
        .await
        .unwrap()
        .unwrap();
    assert!(gate.finished.load(Ordering::SeqCst));
    assert_eq!(*gate.done.lock().unwrap(), vec!["a.hl7".to_owned()]);
    assert!(dirs.archived("a.hl7") && dirs.archived("a.OK"));
    assert!(dirs.inbox().join("b.hl7").exists() && dirs.inbox().join("b.OK").exists());
}

#[tokio::test]
async fn ok_invalid_settings_do_not_start() {
    let dirs = Dirs::new();
    let settings = InboxSettings {
        patterns: vec![],
        ..dirs.settings(witness())
    };
    let run = start(settings, Arc::new(Recorder::default()));
    tokio::time::timeout(PATIENCE, run.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        run.stats.last_error().as_deref(),
        Some("inbox settings: no file pattern given")
    );
}

// ---- outbox ----

fn vars(control_id: &str) -> NameVars {
    NameVars::now(control_id, "IPP1", 7)
}

/// A large file body whose completeness the reader can check: a size header and an end mark.
fn body(len: usize, fill: u8) -> Vec<u8> {
    let mut bytes = vec![fill; len];
    let header = format!("{len:012}");
    bytes[..12].copy_from_slice(header.as_bytes());
    let end = bytes.len() - 3;
    bytes[end..].copy_from_slice(b"END");
    bytes
}

fn is_complete(bytes: &[u8]) -> bool {
    let Some(header) = bytes.get(..12) else {
        return false;
    };
    let Ok(len) = std::str::from_utf8(header).unwrap_or("x").parse::<usize>() else {
        return false;
    };
    bytes.len() == len && bytes.ends_with(b"END")
}

#[test]
fn ok_outbox_reader_never_sees_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_path_buf();
    let outbox = Outbox::new(OutboxSettings {
        folder: folder.clone(),
        name_template: "{control_id}.HPR".into(),
        witness_suffix: Some(".OK".into()),
    })
    .unwrap();
    let writing = Arc::new(AtomicBool::new(true));
    let reader = std::thread::spawn({
        let folder = folder.clone();
        let writing = Arc::clone(&writing);
        move || {
            let mut checked = HashSet::new();
            let mut reads = 0u64;
            loop {
                let last_round = !writing.load(Ordering::SeqCst);
                for entry in fs::read_dir(&folder).unwrap().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".tmp") {
                        continue;
                    }
                    if let Some(stem) = name.strip_suffix(".OK") {
                        // The witness appears only after its complete data file.
                        let data = fs::read(folder.join(format!("{stem}.HPR"))).unwrap();
                        assert!(is_complete(&data), "witness before complete data: {name}");
                        continue;
                    }
                    let Ok(bytes) = fs::read(entry.path()) else {
                        continue;
                    };
                    reads += 1;
                    assert!(is_complete(&bytes), "partial file under final name: {name}");
                    checked.insert(name);
                }
                if last_round {
                    return (checked, reads);
                }
            }
        }
    });
    let mut written = Vec::new();
    for i in 0..8u8 {
        let bytes = body(3 * 1024 * 1024 + usize::from(i), b'a' + i);
        // Same control id every other time: collisions get suffixes.
        let path = outbox.write(&vars(&format!("C{}", i / 2)), &bytes).unwrap();
        written.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    writing.store(false, Ordering::SeqCst);
    let (checked, reads) = reader.join().unwrap();
    assert!(reads > 0);
    assert_eq!(checked.len(), 8);
    assert_eq!(
        written,
        [
            "C0.HPR", "C0-1.HPR", "C1.HPR", "C1-1.HPR", "C2.HPR", "C2-1.HPR", "C3.HPR", "C3-1.HPR"
        ]
    );
    for name in &written {
        let witness = folder.join(name.replace(".HPR", ".OK"));
        assert_eq!(fs::read(witness).unwrap(), b"");
    }
}

#[test]
fn ok_outbox_concurrent_writers_never_share_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(
        Outbox::new(OutboxSettings {
            folder: dir.path().to_path_buf(),
            name_template: "{control_id}.hl7".into(),
            witness_suffix: None,
        })
        .unwrap(),
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| outbox.write(&vars("SAME"), format!("{t}:{i}").as_bytes()))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap()
            })
        })
        .collect();
    let mut paths = HashSet::new();
    for thread in threads {
        for path in thread.join().unwrap() {
            assert!(paths.insert(path));
        }
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 100);
}

#[test]
fn err_outbox_template_names_the_unknown_variable() {
    let err = Outbox::new(OutboxSettings {
        folder: PathBuf::from("/out"),
        name_template: "{control_id}_{nda}.hl7".into(),
        witness_suffix: None,
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "outbox name template: unknown variable `nda` at byte offset 13; expected one of control_id, date, time, seq, ipp"
    );
}

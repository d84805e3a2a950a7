//! The intake log: MLLP messages made durable by one append and one `fdatasync` per batch,
//! acknowledged, then copied into the journal table behind the ACK.
//!
//! Without it, an ACK waits for a SQLite commit: the journal row, its five index leaves, the
//! census pages riding along, one 4 KiB frame each in the write-ahead log, then the log's
//! fsync, then a checkpoint copying the same pages again (5.6 KB written per 1.3 KB message:
//! docs/performance.md, "Where the MLLP time goes"). With it (`[store] intake_log = true`,
//! SQLite only):
//!
//! 1. **Appending.** A frame's records are written at the end of the current segment
//!    ([`Tail`]) and `fdatasync`ed before the call returns: the MLLP task ACKs then. Commit
//!    before ACK holds; the durable point is the segment. An append that finds the log idle
//!    (and the last turn a lone append: one sender at a time) is written on the caller's
//!    thread ([`IntakeLog::append_in_place`]); otherwise it is queued, and the **appender**
//!    thread writes everything queued since its last turn in one `write` and one `fdatasync`
//!    (group commit).
//! 2. **Copying.** The **applier** thread reads the durable records back (from the page
//!    cache) and hands them to the store's writer in batches of up to [`APPLY_RECORDS`],
//!    every [`APPLY_DELAY`], where they become journal rows like any other, with
//!    `intake_log.applied_seq` moved in the same transaction. Then it wakes the census
//!    processor and deletes the segments wholly copied. During a flood it waits (see
//!    [`FLOOD_RECORDS`]), so that the intake has the CPU; a launch hurries it
//!    ([`IntakeLog::wait_copied`]).
//! 3. **Recovering.** At every writable open by the log's owner ([`own`]: not a command beside
//!    the running daemon; the setting on or off), [`recover()`] copies what a stop left behind
//!    (records after `applied_seq`; a crash's torn tail, never acknowledged, ends the last
//!    segment) before anything else runs, then deletes the segments.
//!
//! Segments are files `<store file>-intake/<first sequence number>.log` (format:
//! [`record`]), allocated ahead and rotated past [`SEGMENT_BYTES`]. Appends wait (and the
//! senders behind them) when the records not yet copied reach [`MAX_BACKLOG_BYTES`], so a
//! journal that cannot keep up slows the intake down rather than filling the disk; they are
//! refused (AE) while the writer refuses the copies. Memory holds only the batch being written
//! and the batch being copied.
//!
//! What changes for a reader: an acknowledged message reaches the journal table a moment
//! after its ACK ([`APPLY_DELAY`]; during a flood, up to [`DEFER_MAX`] and the time to copy).
//! Duplicates are found when it is copied (an MLLP ACK does not depend on it).

mod append;
mod apply;
mod owner;
pub(crate) mod record;
mod recover;

pub(in crate::store) use self::owner::{Owner, own};
pub(in crate::store) use self::recover::recover;

use self::append::{Append, Appender, Segment, Tail, Turn, admit};
use self::apply::{Applier, LiveReader};

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::StoreError;
use super::writer::{Prepared, Request};

/// A segment is closed and a new one started once it holds this many bytes.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes logged and not yet copied into the journal past which the appender waits.
const MAX_BACKLOG_BYTES: u64 = 512 * 1024 * 1024;
/// Records the applier hands to the writer at once (one transaction, shared with others).
const APPLY_RECORDS: usize = 512;
/// How long the applier lets durable records gather before copying them. Copying each as it
/// came made the writer commit (and fsync) once per message again, beside the log's own
/// `fdatasync`: on one connection both queued on the disk and the ACK took longer than
/// without the log. Every 20 ms, one message in forty still waited behind the journal's
/// commit (p99 1.6–1.8 ms on one connection); every 100 ms, p99 0.5–0.9 ms and 1.05–1.18×
/// the rate (docs/performance.md). The journal table lags the ACK by this much more (a
/// launch does not wait for it: [`IntakeLog::wait_copied`]).
const APPLY_DELAY: Duration = Duration::from_millis(100);
/// Records made durable during one [`APPLY_DELAY`] from which the intake is busy (500
/// messages/s: one connection sending flat out, where a hospital's steady ADT runs at tens
/// per second). While busy, the applier copies every [`BUSY_WINDOWS`] windows (1 s) rather
/// than every window: the journal's commit, and the census's behind it, then share the disk
/// with the log's `fdatasync`s ten times less often (one connection's p99 0.85–1.69 ms
/// against 1.67–3.21: docs/performance.md).
const BUSY_RECORDS: u64 = 50;
/// Windows the applier waits while the intake is busy (see [`BUSY_RECORDS`]).
const BUSY_WINDOWS: u32 = 10;
/// Records made durable during one [`APPLY_DELAY`] that make a flood (5,000 messages/s; a
/// hospital's ADT runs at tens per second, an EHR replaying its queue after an outage at
/// thousands). During a flood the applier waits, so that the intake has the machine's CPU
/// (on two cores, copying and the census behind it halved the ACK rate:
/// docs/performance.md), until [`DEFER_BYTES`] wait or the oldest has waited [`DEFER_MAX`];
/// then it copies everything durable and starts waiting again.
const FLOOD_RECORDS: u64 = 500;
/// Windows in a row under [`FLOOD_RECORDS`] that end a flood (300 ms): one slow window (a
/// stall of this shared machine) made the applier copy in the middle of a flood, at the
/// intake's expense.
const QUIET_WINDOWS: u32 = 3;
/// Bytes logged and not copied past which the applier copies even during a flood.
const DEFER_BYTES: u64 = 64 * 1024 * 1024;
/// The longest the applier defers copying during a flood: the journal table and the census
/// lag the ACKs by this much at most, besides the time to copy the backlog.
const DEFER_MAX: Duration = Duration::from_secs(5);
/// Payload bytes the applier holds at once, whatever the record count.
const APPLY_BYTES: usize = 8 * 1024 * 1024;
/// Frames (appends) the appender writes in one turn at most.
const APPEND_BATCH: usize = 256;
/// How long the applier waits before trying a batch the writer refused again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long closing waits for the applier to copy what is durable (the rest is copied at the
/// next open): under the systemd unit's `TimeoutStopSec=30`, so the daemon still closes its
/// store itself rather than being killed.
const CLOSE_WAIT: Duration = Duration::from_secs(20);

pub(super) const APPLIED_SQL: &str = "SELECT applied_seq FROM intake_log WHERE id = 1";
const MARK_APPLIED_SQL: &str = "UPDATE intake_log SET applied_seq = ?1 WHERE id = 1";

/// Copies `records` (the log's, up to record `through`) into the journal and moves the
/// applied mark to `through`, in `transaction`: the writer's copy and recovery's. Their
/// outcomes go into `outcomes`.
pub(super) fn copy_into_journal(
    transaction: &rusqlite::Transaction<'_>,
    records: &[Prepared],
    through: u64,
    tally: &mut super::writer::Tally,
    outcomes: &mut Vec<super::JournalOutcome>,
) -> rusqlite::Result<()> {
    for record in records {
        outcomes.push(super::writer::journal_one(transaction, record, tally)?);
    }
    let through = i64::try_from(through).unwrap_or(i64::MAX);
    transaction
        .prepare_cached(MARK_APPLIED_SQL)?
        .execute([through])?;
    Ok(())
}

/// The folder of the intake log of the store at `path`: `<file name>-intake` beside it.
pub(crate) fn folder_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push("-intake");
    path.with_file_name(name)
}

/// The error of an I/O `action` on `file` (a segment, the folder, the lock) of the intake log
/// of the store at `path`: what opening, recovering, starting and migrating the log report.
pub(in crate::store) fn io_error_of(
    path: &Path,
) -> impl Fn(&Path, &'static str, io::Error) -> StoreError + '_ {
    move |file, action, source| StoreError::IntakeLog {
        path: path.to_path_buf(),
        file: file.to_path_buf(),
        action,
        source,
    }
}

fn segment_path(folder: &Path, first_seq: u64) -> PathBuf {
    folder.join(format!("{first_seq:020}.log"))
}

/// Records of the intake log of the store at `path` past `applied` (its applied mark): what
/// was acknowledged and is not in the journal table yet, as a process beside the daemon sees
/// it (a listing says that it lags). A record being written as it reads is not counted.
pub(crate) fn unapplied(path: &Path, applied: u64) -> Result<u64, StoreError> {
    let folder = folder_of(path);
    unapplied_in(&folder, applied)
        .map_err(|source| io_error_of(path)(&folder, "read its segments", source))
}

fn unapplied_in(folder: &Path, applied: u64) -> io::Result<u64> {
    let Some((first, last)) = segments(folder)?.pop() else {
        return Ok(0);
    };
    let segment = match File::open(&last) {
        Ok(segment) => segment,
        // Copied and deleted meanwhile (the next one may not exist yet).
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut durable = first.saturating_sub(1);
    let mut offset = 0;
    loop {
        match record::read_next(&segment, &mut offset) {
            Ok(Some((_, seq))) => durable = seq,
            Ok(None) | Err(record::ReadError::Bad(_)) => break,
            Err(record::ReadError::Io(error)) => return Err(error),
        }
    }
    Ok(durable.saturating_sub(applied))
}

/// The segments in `folder`, by first sequence number; other files are left alone.
pub(crate) fn segments(folder: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".log"))
            .and_then(|number| number.parse::<u64>().ok());
        if let Some(first) = first {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

fn sync_folder(folder: &Path) -> io::Result<()> {
    File::open(folder)?.sync_all()
}

/// What the appender, the applier and the handles share.
#[derive(Debug)]
struct Shared {
    /// The database file, named in errors.
    path: PathBuf,
    folder: PathBuf,
    progress: Mutex<Progress>,
    /// Signalled when `progress` changes, except `durable_*` after a turn while the applier
    /// is busy or letting records gather ([`Progress::applier_idle`]).
    changed: Condvar,
    /// Poked after each copy into the journal: the census processor's wake-up.
    journal_grew: Arc<Notify>,
    /// The log's lock, released once closing finds both threads stopped (or with the last
    /// handle), so that the store can be opened again.
    owner: Mutex<Option<Owner>>,
}

#[derive(Debug, Default)]
struct Progress {
    /// The last record made durable.
    durable_seq: u64,
    /// Record bytes made durable since the log started.
    durable_bytes: u64,
    /// Records made durable since the log started that are journaled `accepted`.
    durable_accepted: u64,
    /// The last record copied into the journal.
    applied_seq: u64,
    /// Record bytes copied into the journal since the log started.
    applied_bytes: u64,
    /// Records copied into the journal since the log started that are journaled `accepted`.
    applied_accepted: u64,
    /// The appender stopped: the applier stops once it copied everything durable.
    appender_stopped: bool,
    /// The applier stopped; with the reason when it stopped on an error.
    applier_stopped: Option<Option<String>>,
    /// The writer refused the applier's last batch (retried every [`RETRY_AFTER`]): why.
    /// Appends are refused meanwhile, so a store that cannot commit answers AE, as without
    /// the log, once it has failed one copy (what was logged before is kept and copied later).
    copy_failing: Option<String>,
    /// The applier waits for a first durable record: an append wakes it. Otherwise appends
    /// do not (it wakes up on its own every [`APPLY_DELAY`]; closing and a hurry wake it).
    applier_idle: bool,
    /// Turns written on a caller's thread ([`IntakeLog::append_in_place`]).
    in_place_turns: u64,
    /// [`MAX_BACKLOG_BYTES`] (a test lowers it).
    max_backlog_bytes: u64,
    /// Callers waiting for everything durable to be copied ([`IntakeLog::wait_copied`]): the
    /// applier copies at once rather than letting a batch gather.
    hurry: usize,
}

impl Progress {
    /// What is durable and not copied yet.
    fn backlog(&self) -> IntakeBacklog {
        IntakeBacklog {
            messages: self.durable_seq.saturating_sub(self.applied_seq),
            accepted: self.durable_accepted.saturating_sub(self.applied_accepted),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the intake log holds and has not copied into the journal yet
/// ([`crate::store::Store::intake_backlog`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntakeBacklog {
    /// Messages acknowledged (durable in the log), accepted or rejected.
    pub messages: u64,
    /// Those journaled `accepted`: the census will read them (a duplicate among them is
    /// counted until it is copied).
    pub accepted: u64,
}

/// A store's intake log (see the module docs): the handle appends through the appender
/// thread.
#[derive(Debug, Clone)]
pub(super) struct IntakeLog {
    appends: mpsc::Sender<Turn>,
    shared: Arc<Shared>,
    tail: Arc<Mutex<Tail>>,
}

impl IntakeLog {
    /// Starts the appender (on a new segment whose first record is `next_seq`) and the
    /// applier, which hands the records to the writer through `writer`.
    pub(super) fn start(
        path: &Path,
        owner: Option<Owner>,
        next_seq: u64,
        queue_capacity: usize,
        writer: mpsc::Sender<Request>,
        journal_grew: Arc<Notify>,
    ) -> Result<IntakeLog, StoreError> {
        let folder = folder_of(path);
        let io_error = io_error_of(path);
        let segment = Segment::create(&folder, next_seq).map_err(|source| {
            io_error(
                &segment_path(&folder, next_seq),
                "create the segment",
                source,
            )
        })?;
        let applied = next_seq.saturating_sub(1);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            folder,
            progress: Mutex::new(Progress {
                durable_seq: applied,
                applied_seq: applied,
                max_backlog_bytes: MAX_BACKLOG_BYTES,
                ..Progress::default()
            }),
            changed: Condvar::new(),
            journal_grew,
            owner: Mutex::new(owner),
        });
        let (appends, queue) = mpsc::channel(queue_capacity.max(1));
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(run)
                .map(drop)
                .map_err(|source| StoreError::Spawn {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let tail = Arc::new(Mutex::new(Tail {
            segment,
            next_seq,
            buffer: Vec::new(),
            closed: false,
            last_turn_appends: 0,
        }));
        let appender = Appender {
            shared: Arc::clone(&shared),
            tail: Arc::clone(&tail),
        };
        spawn("intake-append", Box::new(move || appender.run(queue)))?;
        let applier = Applier {
            shared: Arc::clone(&shared),
            writer,
            reader: LiveReader {
                folder: shared.folder.clone(),
                segment: None,
                next_seq,
            },
            finished: Vec::new(),
        };
        spawn("intake-apply", Box::new(move || applier.run()))?;
        Ok(IntakeLog {
            appends,
            shared,
            tail,
        })
    }

    /// Appends one frame's records; resolves once they are durable (ACK then).
    pub(super) async fn append(&self, records: Vec<Prepared>) -> Result<(), StoreError> {
        if let Some(written) = self.append_in_place(&records) {
            return written;
        }
        let (reply, answer) = oneshot::channel();
        let stopped = || self.stopped("the store is closing");
        self.appends
            .send(Turn::Append(Append { records, reply }))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Writes the records on the caller's thread when the log is idle (nobody queued, the
    /// tail free, the last turn a lone append) and the runtime can lend the thread
    /// ([`tokio::task::block_in_place`]): one connection's ACK then waits for its `fdatasync`
    /// only, not also for the appender thread to wake up and to wake it back
    /// (docs/performance.md). `None`: queue it.
    ///
    /// When the last turn carried several appends, senders are concurrent: an append written
    /// in place would hold the tail for its own `fdatasync` while the others queue behind it,
    /// one more `fdatasync` in the cycle of all. Over 64 connections that cost a median 9 % of
    /// the intake (−6 % to +20 % round by round: docs/performance.md); the appender's turns
    /// gather them instead.
    fn append_in_place(&self, records: &[Prepared]) -> Option<Result<(), StoreError>> {
        let flavor = tokio::runtime::Handle::try_current().ok()?.runtime_flavor();
        if flavor != tokio::runtime::RuntimeFlavor::MultiThread
            || self.appends.capacity() < self.appends.max_capacity()
        {
            return None;
        }
        let mut tail = self.tail.try_lock().ok()?;
        if tail.last_turn_appends > 1 {
            return None;
        }
        if tail.closed {
            return Some(Err(self.stopped("the store is closing")));
        }
        match admit(&self.shared.lock()) {
            Ok(true) => {}
            Ok(false) => return None, // the queue waits for room
            Err(reason) => return Some(Err(self.stopped(&reason))),
        }
        let written =
            tokio::task::block_in_place(|| tail.write(&self.shared, std::iter::once(records)));
        if written.is_ok() {
            self.shared.lock().in_place_turns += 1;
        }
        Some(written.map_err(|failed| failed.for_caller(&self.shared.path)))
    }

    fn stopped(&self, reason: &str) -> StoreError {
        StoreError::IntakeLogStopped {
            path: self.shared.path.clone(),
            reason: reason.to_owned(),
        }
    }

    /// Turns written on a caller's thread so far.
    #[cfg(test)]
    fn in_place_turns(&self) -> u64 {
        self.shared.lock().in_place_turns
    }

    /// Why new appends are refused (AE), while they are: copying into the journal fails, or
    /// stopped.
    pub(super) fn refusal(&self) -> Option<String> {
        admit(&self.shared.lock()).err()
    }

    /// Records logged and not yet in the journal.
    pub(super) fn backlog(&self) -> IntakeBacklog {
        self.shared.lock().backlog()
    }

    /// Waits (at most `timeout`) until every record durable now is in the journal table, the
    /// applier hurried meanwhile; whether it came to pass. A launch calls it so that an ADT
    /// acknowledged a moment ago is found.
    pub(super) async fn wait_copied(&self, timeout: Duration) -> bool {
        let shared = Arc::clone(&self.shared);
        let waited = tokio::task::spawn_blocking(move || {
            let mut progress = shared.lock();
            let target = progress.durable_seq;
            if progress.applied_seq >= target {
                return true;
            }
            progress.hurry += 1;
            shared.changed.notify_all();
            let (mut progress, _) = shared
                .changed
                .wait_timeout_while(progress, timeout, |progress| {
                    progress.applied_seq < target && progress.applier_stopped.is_none()
                })
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            progress.hurry -= 1;
            progress.applied_seq >= target
        })
        .await;
        waited.unwrap_or(false)
    }

    /// Takes no more appends, then waits (at most [`CLOSE_WAIT`]) until the applier copied
    /// everything durable into the journal; what it did not is copied at the next open.
    pub(super) async fn close(&self) {
        // An error: the appender is gone already.
        let _ = self.appends.send(Turn::Close).await;
        let shared = Arc::clone(&self.shared);
        let waited = tokio::task::spawn_blocking(move || {
            let progress = shared.lock();
            let (progress, timeout) = shared
                .changed
                .wait_timeout_while(progress, CLOSE_WAIT, |progress| {
                    progress.applier_stopped.is_none() || !progress.appender_stopped
                })
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let left = progress.backlog().messages;
            // Nothing writes any more (the appender marks the tail closed, under its lock,
            // before it stops) and nothing copies: another process may own the log now.
            if progress.applier_stopped.is_some() && progress.appender_stopped {
                drop(progress);
                shared
                    .owner
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
            }
            (timeout.timed_out(), left)
        })
        .await;
        if let Ok((true, left)) = waited {
            tracing::warn!(store = %self.shared.path.display(), left, "intake log: closing before every acknowledged message was copied into the journal; the rest is copied at the next start");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use rstest::rstest;

    use super::super::tests::record;
    use super::super::{JournalFilter, RecordStatus, Store, StoreOptions};
    use super::record::MAGIC;
    use super::*;

    const LOGGED: StoreOptions = StoreOptions {
        intake_log: true,
        ..StoreOptions::DEFAULT
    };
    const UNLOGGED: StoreOptions = StoreOptions {
        intake_log: false,
        ..StoreOptions::DEFAULT
    };

    fn control_ids(store: &Store) -> Vec<(String, String, i64)> {
        let mut rows: Vec<_> = store
            .list_journal(&JournalFilter {
                control_id: None,
                channel: None,
                limit: 0,
            })
            .unwrap()
            .into_iter()
            .map(|row| {
                let repeats = store
                    .journal_entry(row.id)
                    .unwrap()
                    .unwrap()
                    .duplicate_count;
                (row.control_id, row.status, repeats)
            })
            .collect();
        rows.sort();
        rows
    }

    /// Waits (5 s at most) until the journal table holds `count` rows.
    async fn wait_for_rows(store: &Store, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while control_ids(store).len() < count {
            assert!(Instant::now() < deadline, "{:?}", control_ids(store));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Writes a segment by hand, as the appender would: records `seqs` with control ids
    /// `C<seq>`, then `tail` (bytes a crash left, say).
    fn write_segment(path: &Path, seqs: std::ops::RangeInclusive<u64>, tail: &[u8]) -> PathBuf {
        let folder = folder_of(path);
        std::fs::create_dir_all(&folder).unwrap();
        let mut bytes = MAGIC.to_vec();
        for seq in seqs.clone() {
            let prepared = Prepared::new(record(&format!("C{seq}"), b"MSH|^~\\&|DPI|CHU"));
            record::encode(seq, &prepared, &mut bytes);
        }
        bytes.extend_from_slice(tail);
        let file = segment_path(&folder, *seqs.start());
        std::fs::write(&file, bytes).unwrap();
        file
    }

    /// Makes every journal insert of the store at `path` fail, as on a full disk, until the
    /// returned connection runs `DROP TRIGGER fail`.
    fn fail_journal_inserts(path: &Path) -> rusqlite::Connection {
        let db = rusqlite::Connection::open(path).unwrap();
        db.execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON journal BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;",
        )
        .unwrap();
        db
    }

    /// A temporary folder and the store file's path in it (kept while the folder lives).
    fn store_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        (dir, path)
    }

    fn c(seq: u64) -> (String, String, i64) {
        (format!("C{seq}"), "accepted".to_owned(), 0)
    }

    /// The runtime a test runs on: a current-thread one, where appends always go through
    /// the appender thread, or a multi-thread one, where a lone append is written in place.
    fn runtime(in_place: bool) -> tokio::runtime::Runtime {
        let mut builder = if in_place {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2);
            builder
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        builder.enable_all().build().unwrap()
    }

    /// Whether appends were written where `in_place` says they may be.
    fn assert_written_as(store: &Store, in_place: bool) {
        let turns = store.shared.intake.as_ref().unwrap().in_place_turns();
        assert_eq!(turns > 0, in_place, "{turns} turns written in place");
    }

    /// `ordobridge replay` or `prune` opens the store for writing beside the running daemon:
    /// it must leave the daemon's live log alone (it used to copy it and delete its segments,
    /// so that later acknowledged messages lived in deleted files only).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ok_a_command_beside_the_daemon_leaves_its_live_log_alone() {
        let (_dir, path) = store_path();
        let daemon = Store::open(&path, LOGGED).unwrap();
        for seq in 1..=3 {
            daemon
                .journal_intake(vec![record(&format!("C{seq}"), b"MSH|a")])
                .await
                .unwrap();
        }
        let live = segments(&folder_of(&path)).unwrap();
        assert_eq!(live.len(), 1);
        let command = Store::open(&path, UNLOGGED).unwrap();
        assert_eq!(segments(&folder_of(&path)).unwrap(), live);
        daemon
            .journal_intake(vec![record("C4", b"MSH|a")])
            .await
            .unwrap();
        wait_for_rows(&daemon, 4).await;
        assert_eq!(control_ids(&command), (1..=4).map(c).collect::<Vec<_>>());
        daemon.close().await;
        command.close().await;
    }

    /// What `ordobridge journal` counts beside the daemon: records past the applied mark, in
    /// the last segment (or before it, when it is new and empty), a torn tail not counted.
    #[rstest]
    #[case::none(&[], 0)]
    #[case::three(&[(1, 3, false)], 3)]
    #[case::a_torn_tail_not_counted(&[(1, 3, true)], 3)]
    #[case::a_new_empty_segment_after(&[(1, 3, false), (4, 3, false)], 3)]
    #[case::two_segments(&[(1, 3, false), (4, 5, false)], 5)]
    fn ok_a_reader_beside_the_daemon_counts_what_is_not_copied_yet(
        #[case] written: &[(u64, u64, bool)],
        #[case] expected: u64,
    ) {
        let (_dir, path) = store_path();
        drop(Store::open(&path, UNLOGGED).unwrap());
        for &(first, last, torn) in written {
            let tail: &[u8] = if torn { &[7, 0, 0, 0, 1] } else { &[] };
            write_segment(&path, first..=last, tail);
        }
        let reader = Store::open_read_only(&path).unwrap();
        assert_eq!(reader.intake_unapplied().unwrap(), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn err_a_second_logged_open_is_refused_until_the_first_closes() {
        let (_dir, path) = store_path();
        let first = Store::open(&path, LOGGED).unwrap();
        let err = Store::open(&path, LOGGED).unwrap_err();
        let lock = folder_of(&path).join("lock");
        assert_eq!(
            err.to_string(),
            format!(
                "store `{}`: its intake log is in use by another process (it kept the lock \
                 `{}` through the wait): stop the other ordobridge daemon running on this \
                 store first (a migration needs it stopped too), or give this daemon a store \
                 of its own (`[store] path`)",
                path.display(),
                lock.display()
            )
        );
        first.close().await;
        let again = Store::open(&path, LOGGED).unwrap();
        again.close().await;
    }

    /// A command (`prune`, `replay`) holds the log only while it recovers what a crash left:
    /// a daemon starting meanwhile waits for it rather than failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ok_a_daemon_starting_waits_for_a_command_recovering() {
        let (_dir, path) = store_path();
        let command = own(&path, false).unwrap().expect("free");
        let released = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(command);
        });
        let started = Instant::now();
        let daemon = Store::open(&path, LOGGED).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));
        released.join().unwrap();
        daemon.close().await;
    }

    #[rstest]
    #[case::queued(false)]
    #[case::in_place(true)]
    fn ok_logged_records_reach_the_journal_and_the_log_is_emptied_at_close(#[case] in_place: bool) {
        runtime(in_place).block_on(logged_records_reach_the_journal(in_place));
    }

    async fn logged_records_reach_the_journal(in_place: bool) {
        let (_dir, path) = store_path();
        let store = Store::open(&path, LOGGED).unwrap();
        let grew = store.journal_grew();
        let woken = grew.notified();
        let mut rejected = record("R1", b"MSH|junk");
        rejected.status = RecordStatus::Rejected {
            reason: "MSH-9 missing".to_owned(),
        };
        let journaled = store
            .journal_intake(vec![record("C1", b"MSH|a"), rejected])
            .await
            .unwrap();
        assert_eq!(journaled, super::super::Journaled::Logged);
        store
            .journal_intake(vec![record("C1", b"MSH|a")])
            .await
            .unwrap();
        wait_for_rows(&store, 2).await;
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("the census processor's wake-up");
        // The repeat is found when copied: counted on the first row, as without the log.
        let deadline = Instant::now() + Duration::from_secs(5);
        while store
            .intake_backlog()
            .is_some_and(|backlog| backlog.messages > 0)
        {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            control_ids(&store),
            vec![
                ("C1".to_owned(), "accepted".to_owned(), 1),
                ("R1".to_owned(), "rejected".to_owned(), 0)
            ]
        );
        assert_written_as(&store, in_place);
        store.close().await;
        assert_eq!(segments(&folder_of(&path)).unwrap(), vec![]);
        let err = store
            .journal_intake(vec![record("C2", b"MSH|b")])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "store `{}`: the intake log takes no more messages: the store is closing",
                path.display()
            )
        );
    }

    /// Concurrent senders are gathered by the appender, one sender at a time is written in
    /// place: after a turn that wrote several appends together, a lone append is queued (an
    /// append in place would hold the tail for its own `fdatasync` while the others wait:
    /// a median 9 % of the intake over 64 connections); after that lone turn, the next one is
    /// written in place again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ok_a_lone_append_after_a_turn_of_several_is_queued_then_in_place_again() {
        let (_dir, path) = store_path();
        let store = Store::open(&path, LOGGED).unwrap();
        let log = store.shared.intake.as_ref().unwrap();
        let append = |seq: u64| {
            let store = store.clone();
            async move {
                store
                    .journal_intake(vec![record(&format!("C{seq}"), b"MSH|a")])
                    .await
                    .unwrap();
            }
        };
        append(1).await;
        assert_eq!(
            log.in_place_turns(),
            1,
            "the first append finds the log idle"
        );
        // A turn of three appends, as the appender writes concurrent senders' together.
        let turn: Vec<Vec<Prepared>> = (2..=4)
            .map(|seq| vec![Prepared::new(record(&format!("C{seq}"), b"MSH|a"))])
            .collect();
        append::lock_tail(&log.tail)
            .write(&log.shared, turn.iter().map(Vec::as_slice))
            .unwrap();
        append(5).await;
        assert_eq!(log.in_place_turns(), 1, "queued after a turn of several");
        append(6).await;
        assert_eq!(log.in_place_turns(), 2, "in place after a lone turn");
        wait_for_rows(&store, 6).await;
        assert_eq!(control_ids(&store), (1..=6).map(c).collect::<Vec<_>>());
        store.close().await;
    }

    /// The backlog the census lag counts is the accepted records only: a rejected message
    /// (answered AR) is journaled `rejected` and the census never reads it. Journal inserts
    /// fail meanwhile, so that the records stay in the log while the backlog is read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ok_the_backlog_counts_the_accepted_records_apart() {
        let (_dir, path) = store_path();
        let store = Store::open(&path, LOGGED).unwrap();
        let db = fail_journal_inserts(&path);
        let mut refused = record("R", b"MSH|r");
        refused.status = RecordStatus::Rejected {
            reason: "MSH-10 is empty".to_owned(),
        };
        store
            .journal_intake(vec![
                refused,
                record("A1", b"MSH|1"),
                record("A2", b"MSH|2"),
            ])
            .await
            .unwrap();
        assert_eq!(
            store.intake_backlog(),
            Some(IntakeBacklog {
                messages: 3,
                accepted: 2
            })
        );
        db.execute_batch("DROP TRIGGER fail;").unwrap();
        assert!(store.intake_copied(Duration::from_secs(10)).await);
        assert_eq!(store.intake_backlog(), Some(IntakeBacklog::default()));
        store.close().await;
    }

    #[tokio::test]
    async fn ok_wait_copied_returns_once_the_journal_holds_what_was_acknowledged() {
        let (_dir, path) = store_path();
        let store = Store::open(&path, LOGGED).unwrap();
        for n in 0..3 {
            store
                .journal_intake(vec![record(&format!("C{n}"), b"MSH|a")])
                .await
                .unwrap();
        }
        assert!(store.intake_copied(Duration::from_secs(5)).await);
        // No polling: the rows are there when it returns.
        assert_eq!(control_ids(&store).len(), 3);
        assert_eq!(store.intake_backlog(), Some(IntakeBacklog::default()));
        store.close().await;
    }

    #[rstest]
    #[case::queued(false)]
    #[case::in_place(true)]
    fn err_appends_are_refused_while_the_journal_cannot_commit_then_taken_again(
        #[case] in_place: bool,
    ) {
        runtime(in_place).block_on(refused_while_the_journal_cannot_commit());
    }

    async fn refused_while_the_journal_cannot_commit() {
        let (_dir, path) = store_path();
        let store = Store::open(&path, LOGGED).unwrap();
        let db = fail_journal_inserts(&path);
        // Durable in the log, so acknowledged; the copy then fails and appends are refused.
        store
            .journal_intake(vec![record("C0", b"MSH|0")])
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut logged = vec!["C0".to_owned()];
        let refused = loop {
            assert!(Instant::now() < deadline, "never refused");
            let control_id = format!("C{}", logged.len());
            match store
                .journal_intake(vec![record(&control_id, b"MSH|n")])
                .await
            {
                Ok(_) => logged.push(control_id),
                Err(error) => break error,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let text = refused.to_string();
        assert!(store.intake_refusal().is_some(), "`/ready` says so");
        assert!(
            text.starts_with(&format!(
                "store `{}`: the intake log takes no more messages: copying it into the journal fails (tried again every second): store `{}`: batch of 1 request(s) not committed",
                path.display(),
                path.display()
            )),
            "{text}"
        );
        db.execute_batch("DROP TRIGGER fail;").unwrap();
        // Taken again once a copy succeeds; nothing acknowledged before was lost.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store
            .journal_intake(vec![record("AFTER", b"MSH|z")])
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "never taken again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(store.intake_copied(Duration::from_secs(5)).await);
        assert_eq!(store.intake_refusal(), None);
        let mut stored: Vec<String> = control_ids(&store).into_iter().map(|row| row.0).collect();
        logged.push("AFTER".to_owned());
        stored.sort();
        logged.sort();
        assert_eq!(stored, logged);
        store.close().await;
    }

    /// An append waiting for room (the records not yet copied at the bound) when a copy into
    /// the journal fails is refused then (AE), not left waiting until a copy succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn err_an_append_waiting_for_room_is_refused_once_a_copy_fails() {
        let (_dir, path) = store_path();
        let store = Store::open(&path, LOGGED).unwrap();
        let db = fail_journal_inserts(&path);
        let log = store.shared.intake.as_ref().unwrap();
        log.shared.lock().max_backlog_bytes = 1;
        store
            .journal_intake(vec![record("C0", b"MSH|0")])
            .await
            .unwrap();
        // C0's bytes fill the backlog: C1 waits for room, until C0's copy fails.
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            store.journal_intake(vec![record("C1", b"MSH|1")]),
        )
        .await
        .expect("still waiting for room after the copy failed");
        let text = waited.unwrap_err().to_string();
        assert!(
            text.starts_with(&format!(
                "store `{}`: the intake log takes no more messages: copying it into the journal fails (tried again every second)",
                path.display()
            )),
            "{text}"
        );
        db.execute_batch("DROP TRIGGER fail;").unwrap();
        assert!(store.intake_copied(Duration::from_secs(10)).await);
        assert_eq!(control_ids(&store), vec![c(0)]);
        store.close().await;
    }

    #[tokio::test]
    async fn ok_records_cross_segments_in_order() {
        let (_dir, path) = store_path();
        let store = Store::open(&path, LOGGED).unwrap();
        // 70 MB of frames: the appender starts a second segment.
        let big: &'static [u8] = Box::leak(vec![b'x'; 1024 * 1024].into_boxed_slice());
        for n in 0..70 {
            store
                .journal_intake(vec![record(&format!("B{n:02}"), big)])
                .await
                .unwrap();
        }
        wait_for_rows(&store, 70).await;
        let rows = store
            .list_journal(&JournalFilter {
                control_id: None,
                channel: None,
                limit: 0,
            })
            .unwrap();
        let mut by_id: Vec<_> = rows
            .into_iter()
            .map(|row| (row.id, row.control_id))
            .collect();
        by_id.sort();
        let in_order: Vec<_> = by_id
            .into_iter()
            .map(|(_, control_id)| control_id)
            .collect();
        let expected: Vec<_> = (0..70).map(|n| format!("B{n:02}")).collect();
        assert_eq!(in_order, expected);
        store.close().await;
    }

    #[rstest]
    // Records 1 to 5 logged; the journal already had `applied` of them.
    #[case::nothing_copied_yet(0, vec![c(1), c(2), c(3), c(4), c(5)])]
    #[case::some_copied(3, vec![c(4), c(5)])]
    #[case::all_copied(5, vec![])]
    #[tokio::test]
    async fn ok_open_copies_what_a_stop_left_after_the_applied_mark(
        #[case] applied: i64,
        #[case] expected: Vec<(String, String, i64)>,
    ) {
        let (_dir, path) = store_path();
        Store::open(&path, UNLOGGED).unwrap().close().await;
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute("UPDATE intake_log SET applied_seq = ?1", [applied])
            .unwrap();
        write_segment(&path, 1..=5, b"");
        // The log is copied at every open by its owner, the setting on or off.
        let store = Store::open(&path, UNLOGGED).unwrap();
        assert_eq!(control_ids(&store), expected);
        assert_eq!(segments(&folder_of(&path)).unwrap(), vec![]);
        // Numbering goes on after the last record: the next open copies the new ones.
        store.close().await;
        let store = Store::open(&path, LOGGED).unwrap();
        store
            .journal_intake(vec![record("C6", b"MSH|c")])
            .await
            .unwrap();
        wait_for_rows(&store, expected.len() + 1).await;
        store.close().await;
    }

    #[tokio::test]
    async fn ok_a_backup_carries_the_segments_and_its_restore_copies_them() {
        let (dir, path) = store_path();
        let store = Store::open(&path, UNLOGGED).unwrap();
        store.journal(record("C0", b"MSH|0")).await.unwrap();
        store.close().await;
        // What a running daemon's log holds between an ACK and the copy.
        write_segment(&path, 1..=3, b"");
        let dest = dir.path().join("backup.sqlite");
        let report = super::super::backup::backup(&path, &dest).unwrap();
        assert_eq!((report.journal_rows, report.intake_segments), (1, 1));
        let restored = Store::open(&dest, UNLOGGED).unwrap();
        let mut expected = vec![("C0".to_owned(), "accepted".to_owned(), 0)];
        expected.extend([c(1), c(2), c(3)]);
        assert_eq!(control_ids(&restored), expected);
        restored.close().await;
        // A second backup to the same name is refused before anything is written.
        let err = super::super::backup::backup(&path, &dest).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "`{}` already exists: choose a new file name (a backup never overwrites)",
                dest.display()
            )
        );
    }

    #[rstest]
    #[case::half_a_header(&[7, 0, 0])]
    #[case::a_header_and_half_its_payload(&[200, 0, 0, 0, 1, 2, 3, 4, 4, 0, 0, 0, 0, 0, 0, 0, 9, 9])]
    #[tokio::test]
    async fn ok_a_torn_tail_of_the_last_segment_is_dropped(#[case] tail: &[u8]) {
        let (_dir, path) = store_path();
        write_segment(&path, 1..=3, tail);
        let store = Store::open(&path, UNLOGGED).unwrap();
        assert_eq!(control_ids(&store), vec![c(1), c(2), c(3)]);
        store.close().await;
    }

    /// What `fallocate` leaves past the last record of a segment.
    const ZEROS: &[u8] = &[0; 4096];
    /// An append that failed, its bytes left behind (never acknowledged).
    const FAILED_APPEND: &[u8] = &[9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1];

    #[rstest]
    #[case::allocated_ahead(ZEROS, ZEROS)]
    #[case::a_failed_append_then_the_next_segment(FAILED_APPEND, b"")]
    #[tokio::test]
    async fn ok_a_segment_ends_where_the_next_one_begins(
        #[case] first_tail: &[u8],
        #[case] last_tail: &[u8],
    ) {
        let (_dir, path) = store_path();
        write_segment(&path, 1..=3, first_tail);
        write_segment(&path, 4..=5, last_tail);
        let store = Store::open(&path, UNLOGGED).unwrap();
        assert_eq!(control_ids(&store), vec![c(1), c(2), c(3), c(4), c(5)]);
        store.close().await;
    }

    #[tokio::test]
    async fn err_a_damaged_record_before_the_last_segment_refuses_to_open() {
        let (_dir, path) = store_path();
        let first = write_segment(&path, 1..=3, b"");
        write_segment(&path, 4..=5, b"");
        let mut bytes = std::fs::read(&first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&first, bytes).unwrap();
        let err = Store::open(&path, UNLOGGED).unwrap_err();
        let offset = {
            let mut two = MAGIC.to_vec();
            for seq in 1..=2 {
                let prepared = Prepared::new(record(&format!("C{seq}"), b"MSH|^~\\&|DPI|CHU"));
                record::encode(seq, &prepared, &mut two);
            }
            two.len()
        };
        assert_eq!(
            err.to_string(),
            format!(
                "store `{}`: intake log `{}` is damaged at byte {offset}: record 3: its checksum \
                 does not match (a torn or damaged write); the records from there on cannot be \
                 copied into the journal. Move the file out of its folder to start without them \
                 (they were acknowledged: have their senders resend them), or restore a backup",
                path.display(),
                first.display()
            )
        );
        // Nothing was deleted: the operator decides.
        assert_eq!(segments(&folder_of(&path)).unwrap().len(), 2);
    }
}

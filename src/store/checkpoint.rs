//! The checkpointer: copies the write-ahead log into the database file on a thread and a
//! connection of its own, so the writer does not stop committing for it.
//!
//! By default SQLite checkpoints on the connection that commits, right after the commit that
//! takes the log past its threshold: the writer thread then copies thousands of pages into the
//! database file and fsyncs it, and every ACK queued meanwhile waits. That was most of the
//! 64-connection p99 (13–21 ms where the median is 2.3 ms; 4.4–6.0 ms with no checkpoint at
//! all; 10.8–12.6 ms with this thread: docs/performance.md).
//!
//! Here the writer's commit hook wakes this thread once the log holds [`WAKE_AT`] pages; the
//! thread runs a passive checkpoint, which blocks neither the writer nor the readers. The
//! writer keeps committing meanwhile, so the log is never wholly copied by the time its next
//! transaction starts, and SQLite only starts the log again from its beginning when it is.
//! So once the thread is done, the writer's next commit looks at what is left: more than
//! [`WRITER_TAIL`] pages (written while the thread copied), the thread goes round again;
//! fewer, the writer runs a passive checkpoint itself, which copies only those (and fsyncs the
//! file), and its next transaction starts the log again. If the thread cannot keep up, the
//! writer checkpoints the whole log itself past [`WRITER_CHECKPOINT_AT`] pages, as before, so
//! the log stays bounded.
//!
//! Durability does not depend on it: a commit is durable once its frames are in the fsynced
//! log; a checkpoint only moves them into the database file (a crash in the middle of one
//! leaves the log authoritative).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// Log pages (4 KiB each) past which a commit wakes the checkpointer: 16 MiB. Larger
/// checkpoints copy each page that many commits rewrote (the journal's last leaves) once.
const WAKE_AT: i32 = 4_000;
/// Log pages past which the writer checkpoints itself (the checkpointer fell behind): 64 MiB.
const WRITER_CHECKPOINT_AT: i32 = 4 * WAKE_AT;
/// Log pages the writer copies itself to finish a checkpoint the thread began: more left
/// over, the thread goes round again (each round leaves fewer, the pages written meanwhile).
const WRITER_TAIL: i64 = 256;
/// How long the checkpointer's connection waits on a lock (a checkpoint of the writer itself).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the checkpoint of the current log stands (shared by the writer's hook and the
/// thread).
const IDLE: u8 = 0;
/// The thread was woken and copies the log.
const COPYING: u8 = 1;
/// The thread copied what the log held when it started: the writer copies the rest, or
/// wakes the thread again if more than [`WRITER_TAIL`] pages are left.
const COPIED: u8 = 2;

/// What the writer's hook and the thread share.
#[derive(Debug, Default)]
struct Progress {
    /// [`IDLE`], [`COPYING`] or [`COPIED`].
    state: AtomicU8,
    /// Log pages in the database file after the thread's last round.
    copied: AtomicI64,
}

/// Starts the checkpointer thread for the store at `path` and hooks `writer` (the writer's
/// connection) to wake it. The thread stops once `writer` is closed.
pub(super) fn start(writer: &mut Connection, path: &Path) -> Result<(), StoreError> {
    start_with(writer, path, WAKE_AT, WRITER_CHECKPOINT_AT)
}

/// [`start`] with its two thresholds, in log pages.
fn start_with(
    writer: &mut Connection,
    path: &Path,
    wake_at: i32,
    writer_checkpoint_at: i32,
) -> Result<(), StoreError> {
    let connection = open(path)?;
    // One pending wake-up is enough: the checkpoint copies whatever the log holds by then.
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    let progress = Arc::new(Progress::default());
    let thread_progress = Arc::clone(&progress);
    let thread_path = path.to_path_buf();
    std::thread::Builder::new()
        .name("store-checkpoint".to_owned())
        .spawn(move || run(&connection, &woken, &thread_progress, &thread_path))
        .map_err(|source| StoreError::Spawn {
            path: path.to_path_buf(),
            source,
        })?;
    // Replaces SQLite's own hook (`wal_autocheckpoint`). Never an error from here: SQLite
    // would report it as the statement's, though the commit happened.
    writer
        .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
            let state = &progress.state;
            if pages >= writer_checkpoint_at {
                writer_checkpoint(wal, pages);
                state.store(IDLE, Ordering::Release);
            } else if pages < wake_at {
                // The log started again (its pages only grow until it does): the thread's
                // last round was about the previous one.
                if state.load(Ordering::Acquire) == COPIED {
                    state.store(IDLE, Ordering::Release);
                }
            } else {
                let wake_thread = match state.load(Ordering::Acquire) {
                    IDLE => true,
                    COPIED => {
                        let left = i64::from(pages) - progress.copied.load(Ordering::Acquire);
                        if left <= WRITER_TAIL {
                            writer_checkpoint(wal, pages);
                            state.store(IDLE, Ordering::Release);
                        }
                        left > WRITER_TAIL
                    }
                    _ => false,
                };
                if wake_thread {
                    state.store(COPYING, Ordering::Release);
                    // Full: a wake-up is already pending. Gone: the thread stopped.
                    let _ = wake.try_send(());
                }
            }
            Ok(())
        }))
        .map_err(|source| StoreError::Configure {
            path: path.to_path_buf(),
            setting: "wal_hook (checkpointer)",
            source,
        })
}

/// A passive checkpoint on the writer's connection, right after its commit.
fn writer_checkpoint(wal: &mut rusqlite::hooks::Wal, pages: i32) {
    if let Err(error) = wal.checkpoint() {
        tracing::debug!(%error, pages, "the writer's checkpoint did not run; the next commit tries again");
    }
}

/// The checkpointer's connection: read-write, the busy timeout, nothing else (it never
/// migrates nor writes rows).
fn open(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|source| StoreError::Configure {
            path: path.to_path_buf(),
            setting: "busy_timeout",
            source,
        })?;
    Ok(connection)
}

/// Runs a passive checkpoint at each wake-up, until the writer's connection is closed.
fn run(connection: &Connection, woken: &mpsc::Receiver<()>, progress: &Progress, path: &Path) {
    while woken.recv().is_ok() {
        match passive(connection) {
            Ok(done) => {
                tracing::trace!(store = %path.display(), log = done.log, copied = done.copied, "checkpoint");
                progress.copied.store(done.copied, Ordering::Release);
            }
            Err(error) => {
                tracing::warn!(store = %path.display(), %error, "checkpoint failed; the writer checkpoints the log itself");
                progress.copied.store(i64::MAX, Ordering::Release);
            }
        }
        progress.state.store(COPIED, Ordering::Release);
    }
    tracing::debug!(store = %path.display(), "store checkpointer stopped");
}

/// What a passive checkpoint did: the log's pages, and how many of them are now in the
/// database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Copied {
    busy: bool,
    log: i64,
    copied: i64,
}

impl Copied {
    /// The whole log is in the database file.
    pub(super) fn all(self) -> bool {
        !self.busy && self.log == self.copied
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)` on `connection`: copies what it can without waiting for
/// the writer or the readers.
pub(super) fn passive(connection: &Connection) -> rusqlite::Result<Copied> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Copied {
            busy: row.get::<_, i64>(0)? != 0,
            log: row.get(1)?,
            copied: row.get(2)?,
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Pages in the log of the store at `path` (`-wal` file size / frame size).
    fn log_pages(path: &Path) -> u64 {
        let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
        std::fs::metadata(wal).map_or(0, |m| m.len()) / (4096 + 24)
    }

    /// Commits ~3 log pages each, `commits` times; the largest the log file grew.
    fn fill(writer: &Connection, path: &Path, commits: usize) -> u64 {
        writer
            .execute_batch("CREATE TABLE filler (id INTEGER PRIMARY KEY, body BLOB)")
            .unwrap();
        let body = vec![7u8; 4000];
        let mut largest = 0;
        for _ in 0..commits {
            // Never an error: the hook's checkpoints do not fail a commit.
            writer
                .execute("INSERT INTO filler (body) VALUES (?1)", [&body])
                .unwrap();
            largest = largest.max(log_pages(path));
        }
        let rows: i64 = writer
            .query_row("SELECT count(*) FROM filler", [], |row| row.get(0))
            .unwrap();
        assert_eq!(usize::try_from(rows).unwrap(), commits);
        largest
    }

    /// The log stays bounded however much is written (~3 pages per commit). `thread`: the
    /// thread copies the log and the writer finishes it, so the log starts again every few
    /// hundred pages though the writer's own threshold is out of reach and it commits without
    /// a pause (60× the thread's threshold written). `writer_alone`: a checkpointer that is
    /// never woken leaves the writer to checkpoint the log itself past its own threshold, as
    /// SQLite would.
    #[rstest::rstest]
    #[case::thread(200, i32::MAX, 4_000, 2_000)]
    #[case::writer_alone(i32::MAX, 200, 2_000, 400)]
    fn ok_the_log_stays_bounded(
        #[case] wake_at: i32,
        #[case] writer_checkpoint_at: i32,
        #[case] commits: usize,
        #[case] bound: u64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let mut writer = super::super::schema::open_writer(&path).unwrap();
        start_with(&mut writer, &path, wake_at, writer_checkpoint_at).unwrap();
        let largest = fill(&writer, &path, commits);
        assert!(largest < bound, "the log reached {largest} pages");
    }

    #[test]
    fn ok_passive_copies_the_whole_log_when_nothing_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let writer = super::super::schema::open_writer(&path).unwrap();
        writer
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let copied = passive(&open(&path).unwrap()).unwrap();
        assert!(copied.log > 0 && copied.all(), "{copied:?}");
    }
}

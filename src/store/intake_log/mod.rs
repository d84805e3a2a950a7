//! The intake log: MLLP messages made durable by one append and one `fdatasync` per batch,
//! acknowledged, then copied into the journal table behind the ACK.
//!
//! Without it, an ACK waits for a SQLite commit: the journal row, its five index leaves, the
//! census pages riding along, one 4 KiB frame each in the write-ahead log, then the log's
//! fsync, then a checkpoint copying the same pages again (5.6 KB written per 1.3 KB message:
//! README, "Where the MLLP time goes"). With it (`[store] intake_log = true`, SQLite only):
//!
//! 1. **Appending.** A frame's records are written at the end of the current segment
//!    ([`Tail`]) and `fdatasync`ed before the call returns: the MLLP task ACKs then. Commit
//!    before ACK holds; the durable point is the segment. An append that finds the log idle
//!    is written on the caller's thread ([`IntakeLog::append_in_place`]); otherwise it is
//!    queued, and the **appender** thread writes everything queued since its last turn in
//!    one `write` and one `fdatasync` (group commit).
//! 2. **Copying.** The **applier** thread reads the durable records back (from the page
//!    cache) and hands them to the store's writer in batches of up to [`APPLY_RECORDS`],
//!    every [`APPLY_DELAY`], where they become journal rows like any other, with
//!    `intake_log.applied_seq` moved in the same transaction. Then it wakes the census
//!    processor and deletes the segments wholly copied. During a flood it waits (see
//!    [`FLOOD_RECORDS`]), so that the intake has the CPU; a launch hurries it
//!    ([`IntakeLog::wait_copied`]).
//! 3. **Recovering.** At every open (the setting on or off), [`recover`] copies what a stop
//!    left behind (records after `applied_seq`; a crash's torn tail, never acknowledged, ends
//!    the last segment) before anything else runs, then deletes the segments.
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

pub(crate) mod record;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{Notify, mpsc, oneshot};

use self::record::{HEADER, Header, MAGIC};
use super::writer::{self, Prepared, Request, Tally};
use super::{JournalOutcome, StoreError};

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
/// the rate (README, performance). The journal table lags the ACK by this much more (a
/// launch does not wait for it: [`IntakeLog::wait_copied`]).
const APPLY_DELAY: Duration = Duration::from_millis(100);
/// Records made durable during one [`APPLY_DELAY`] that make a flood (5,000 messages/s; a
/// hospital's ADT runs at tens per second, an EHR replaying its queue after an outage at
/// thousands). During a flood the applier waits, so that the intake has the machine's CPU
/// (on two cores, copying and the census behind it halved the ACK rate: README,
/// performance), until [`DEFER_BYTES`] wait or the oldest has waited [`DEFER_MAX`]; then it
/// copies everything durable and starts waiting again.
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

const APPLIED_SQL: &str = "SELECT applied_seq FROM intake_log WHERE id = 1";
const MARK_APPLIED_SQL: &str = "UPDATE intake_log SET applied_seq = ?1 WHERE id = 1";

/// Moves the applied mark, in the transaction that copied the records up to `through`.
pub(super) fn mark_applied(
    transaction: &rusqlite::Transaction<'_>,
    through: u64,
) -> rusqlite::Result<()> {
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

fn segment_path(folder: &Path, first_seq: u64) -> PathBuf {
    folder.join(format!("{first_seq:020}.log"))
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

/// Copies into the journal what the intake log of the store at `path` holds beyond the
/// applied mark, then deletes its segments; the sequence number the next record gets. Runs
/// at every open, before the writer starts, whether or not the log is enabled.
pub(super) fn recover(connection: &mut Connection, path: &Path) -> Result<u64, StoreError> {
    let folder = folder_of(path);
    let sql_error = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let applied: i64 = connection
        .query_row(APPLIED_SQL, [], |row| row.get(0))
        .map_err(sql_error)?;
    let applied = u64::try_from(applied).unwrap_or(0);
    let io_error = |file: &Path, action, source| StoreError::IntakeLog {
        path: path.to_path_buf(),
        file: file.to_path_buf(),
        action,
        source,
    };
    let found =
        segments(&folder).map_err(|source| io_error(&folder, "list its segments", source))?;
    let mut last = applied;
    // The last record read, copied or not.
    let mut read = 0;
    let mut copied = 0usize;
    let mut pending = Vec::new();
    let count = found.len();
    for (place, (_, file)) in found.iter().enumerate() {
        let is_last = place + 1 == count;
        let mut reader =
            ScanReader::open(file).map_err(|source| io_error(file, "read the segment", source))?;
        loop {
            let offset = reader.offset;
            match reader.next() {
                Ok(Some((seq, prepared))) => {
                    read = seq;
                    if seq <= applied {
                        continue;
                    }
                    if seq != last + 1 {
                        return Err(StoreError::IntakeLogDamaged {
                            path: path.to_path_buf(),
                            file: file.clone(),
                            offset,
                            reason: format!("record {seq} follows record {last}"),
                        });
                    }
                    last = seq;
                    pending.push(prepared);
                    if pending.len() >= APPLY_RECORDS {
                        copied += pending.len();
                        apply_now(connection, &mut pending, last).map_err(sql_error)?;
                    }
                }
                Ok(None) => break,
                Err(Scan::Io(source)) => return Err(io_error(file, "read the segment", source)),
                Err(Scan::Bad(reason)) if is_last => {
                    tracing::warn!(file = %file.display(), offset, reason, "intake log: its last segment ends in a torn append (a crash during a write that was never acknowledged); that tail is dropped");
                    break;
                }
                // The next segment starts with the record that would come here: what follows
                // is the tail of an append that failed (never acknowledged).
                Err(Scan::Bad(reason))
                    if found
                        .get(place + 1)
                        .is_some_and(|(first, _)| *first == read + 1) =>
                {
                    tracing::warn!(file = %file.display(), offset, reason, "intake log: a segment ends in a failed append (never acknowledged); that tail is skipped");
                    break;
                }
                Err(Scan::Bad(reason)) => {
                    return Err(StoreError::IntakeLogDamaged {
                        path: path.to_path_buf(),
                        file: file.clone(),
                        offset,
                        reason,
                    });
                }
            }
        }
    }
    if !pending.is_empty() {
        copied += pending.len();
        apply_now(connection, &mut pending, last).map_err(sql_error)?;
    }
    for (_, file) in &found {
        std::fs::remove_file(file).map_err(|source| {
            io_error(file, "delete the segment copied into the journal", source)
        })?;
    }
    if !found.is_empty() {
        sync_folder(&folder).map_err(|source| io_error(&folder, "sync the folder", source))?;
    }
    if copied > 0 {
        tracing::info!(store = %path.display(), messages = copied, "intake log: messages acknowledged before the last stop copied into the journal");
    }
    Ok(last + 1)
}

/// One transaction copying `pending` (and moving the mark to `through`), at open.
fn apply_now(
    connection: &mut Connection,
    pending: &mut Vec<Prepared>,
    through: u64,
) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut tally = Tally::default();
    for prepared in pending.iter() {
        writer::journal_one(&transaction, prepared, &mut tally)?;
    }
    mark_applied(&transaction, through)?;
    transaction.commit()?;
    pending.clear();
    Ok(())
}

/// Why a segment could not be read on.
enum Scan {
    Io(io::Error),
    /// The record at the offset does not check: `reason` says how.
    Bad(String),
}

/// Reads one segment from its start, record by record (at open).
struct ScanReader {
    reader: io::BufReader<File>,
    offset: u64,
}

impl ScanReader {
    fn open(file: &Path) -> io::Result<ScanReader> {
        Ok(ScanReader {
            reader: io::BufReader::new(File::open(file)?),
            offset: 0,
        })
    }

    /// The next record and its sequence number; `None` at the end of the file.
    fn next(&mut self) -> Result<Option<(u64, Prepared)>, Scan> {
        if self.offset == 0 {
            let mut magic = [0u8; MAGIC.len()];
            match read_full(&mut self.reader, &mut magic).map_err(Scan::Io)? {
                0 => return Ok(None),
                n if n < magic.len() || &magic != MAGIC => {
                    return Err(Scan::Bad(
                        "the file does not start as an intake log segment".to_owned(),
                    ));
                }
                _ => {}
            }
            self.offset = MAGIC.len() as u64;
        }
        let mut header = [0u8; HEADER];
        match read_full(&mut self.reader, &mut header).map_err(Scan::Io)? {
            0 => return Ok(None),
            // Allocated ahead and never written: the end of the segment's records.
            HEADER if header == [0; HEADER] => return Ok(None),
            HEADER => {}
            n => {
                return Err(Scan::Bad(format!(
                    "the file ends {n} bytes into a record's header"
                )));
            }
        }
        let header = Header::parse(&header).ok_or_else(|| {
            Scan::Bad("a record's header announces an impossible length".to_owned())
        })?;
        let mut payload = vec![0u8; header.payload_len];
        let read = read_full(&mut self.reader, &mut payload).map_err(Scan::Io)?;
        if read < payload.len() {
            return Err(Scan::Bad(format!(
                "the file ends {read} bytes into record {}'s {} bytes",
                header.seq, header.payload_len
            )));
        }
        let prepared = record::decode(&header, Bytes::from(payload))
            .map_err(|error| Scan::Bad(format!("record {}: {error}", header.seq)))?;
        self.offset += (HEADER + header.payload_len) as u64;
        Ok(Some((header.seq, prepared)))
    }
}

/// Reads until `buf` is full or the end of the file; how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// One frame's records, answered once they are durable.
struct Append {
    records: Vec<Prepared>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// What the appender's queue carries.
enum Turn {
    Append(Append),
    /// Write what came before, refuse what comes after, stop.
    Close,
}

/// What the appender, the applier and the handles share.
#[derive(Debug)]
struct Shared {
    /// The database file, named in errors.
    path: PathBuf,
    folder: PathBuf,
    progress: Mutex<Progress>,
    /// Signalled whenever `progress` changes.
    changed: Condvar,
    /// Poked after each copy into the journal: the census processor's wake-up.
    journal_grew: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Progress {
    /// The last record made durable.
    durable_seq: u64,
    /// Record bytes made durable since the log started.
    durable_bytes: u64,
    /// The last record copied into the journal.
    applied_seq: u64,
    /// Record bytes copied into the journal since the log started.
    applied_bytes: u64,
    /// The appender stopped: the applier stops once it copied everything durable.
    appender_stopped: bool,
    /// The applier stopped; with the reason when it stopped on an error.
    applier_stopped: Option<Option<String>>,
    /// The writer refused the applier's last batch (retried every [`RETRY_AFTER`]): why.
    /// Appends are refused meanwhile, so a store that cannot commit answers AE, as without
    /// the log, once it has failed one copy (what was logged before is kept and copied later).
    copy_failing: Option<String>,
    /// Turns written on a caller's thread ([`IntakeLog::append_in_place`]).
    in_place_turns: u64,
    /// Callers waiting for everything durable to be copied ([`IntakeLog::wait_copied`]): the
    /// applier copies at once rather than letting a batch gather.
    hurry: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
        next_seq: u64,
        queue_capacity: usize,
        writer: mpsc::Sender<Request>,
        journal_grew: Arc<Notify>,
    ) -> Result<IntakeLog, StoreError> {
        let folder = folder_of(path);
        let io_error = |file: &Path, action, source| StoreError::IntakeLog {
            path: path.to_path_buf(),
            file: file.to_path_buf(),
            action,
            source,
        };
        std::fs::create_dir_all(&folder)
            .map_err(|source| io_error(&folder, "create the folder", source))?;
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
                ..Progress::default()
            }),
            changed: Condvar::new(),
            journal_grew,
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
    /// tail free) and the runtime can lend the thread ([`tokio::task::block_in_place`]):
    /// one connection's ACK then waits for its `fdatasync` only, not also for the appender
    /// thread to wake up and to wake it back (README, performance). `None`: queue it.
    fn append_in_place(&self, records: &[Prepared]) -> Option<Result<(), StoreError>> {
        let flavor = tokio::runtime::Handle::try_current().ok()?.runtime_flavor();
        if flavor != tokio::runtime::RuntimeFlavor::MultiThread
            || self.appends.capacity() < self.appends.max_capacity()
        {
            return None;
        }
        let mut tail = self.tail.try_lock().ok()?;
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
        Some(written)
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

    /// Records logged and not yet in the journal.
    pub(super) fn backlog(&self) -> u64 {
        let progress = self.shared.lock();
        progress.durable_seq.saturating_sub(progress.applied_seq)
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
                    progress.applier_stopped.is_none()
                })
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let left = progress.durable_seq.saturating_sub(progress.applied_seq);
            (timeout.timed_out(), left)
        })
        .await;
        if let Ok((true, left)) = waited {
            tracing::warn!(store = %self.shared.path.display(), left, "intake log: closing before every acknowledged message was copied into the journal; the rest is copied at the next start");
        }
    }
}

/// The segment the appender writes.
#[derive(Debug)]
struct Segment {
    file: File,
    first_seq: u64,
    /// Bytes written and synced.
    len: u64,
}

impl Segment {
    /// Creates the segment whose first record is `first_seq`, its magic written, and syncs
    /// it and the folder (a new file's name is durable once its folder is synced).
    ///
    /// Its [`SEGMENT_BYTES`] are allocated at once (`fallocate`, zeros to a reader): an
    /// append then writes into blocks the file has, and its `fdatasync` need not record a new
    /// size or new blocks (0.075–0.091 ms against 0.108–0.131 ms for an append growing the
    /// file, on the development machine). Where the file system cannot, appends grow it.
    fn create(folder: &Path, first_seq: u64) -> io::Result<Segment> {
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(segment_path(folder, first_seq))?;
        if let Err(error) =
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, SEGMENT_BYTES)
        {
            tracing::debug!(folder = %folder.display(), %error, "intake log: segment not allocated ahead; appends grow it");
        }
        file.write_all(MAGIC)?;
        file.sync_data()?;
        sync_folder(folder)?;
        Ok(Segment {
            file,
            first_seq,
            len: MAGIC.len() as u64,
        })
    }
}

/// The end of the log, where appends are written: by the appender thread, or by a caller
/// that finds the log idle ([`IntakeLog::append`]).
#[derive(Debug)]
struct Tail {
    segment: Segment,
    /// The sequence number of the next record.
    next_seq: u64,
    /// The turn's records, encoded (kept to reuse its allocation).
    buffer: Vec<u8>,
    /// The appender took a `Close`: nothing more is written.
    closed: bool,
}

impl Tail {
    /// Writes the records of `appends` and syncs them, then publishes them as durable; on
    /// failure the segment is cut back to what was durable before (nothing of the turn is
    /// stored, every sender gets AE).
    fn write<'a>(
        &mut self,
        shared: &Shared,
        appends: impl Iterator<Item = &'a [Prepared]>,
    ) -> Result<(), StoreError> {
        self.buffer.clear();
        let mut seq = self.next_seq;
        for records in appends {
            for prepared in records {
                record::encode(seq, prepared, &mut self.buffer);
                seq += 1;
            }
        }
        let failed = |tail: &Tail, action, source: io::Error| StoreError::IntakeLog {
            path: shared.path.clone(),
            file: segment_path(&shared.folder, tail.segment.first_seq),
            action,
            source,
        };
        if self.segment.len > MAGIC.len() as u64
            && self.segment.len + self.buffer.len() as u64 > SEGMENT_BYTES
        {
            self.segment = Segment::create(&shared.folder, self.next_seq)
                .map_err(|source| failed(self, "start a new segment", source))?;
        }
        let written = self
            .segment
            .file
            .write_all(&self.buffer)
            .and_then(|()| self.segment.file.sync_data());
        if let Err(source) = written {
            // Cut the torn turn off, so the next one does not follow garbage. If even that
            // fails, later appends fail too until a restart drops the tail.
            if let Err(error) = self
                .segment
                .file
                .set_len(self.segment.len)
                .and_then(|()| self.segment.file.sync_data())
            {
                tracing::error!(file = %segment_path(&shared.folder, self.segment.first_seq).display(), %error, "intake log: cannot cut a failed append off its segment");
            }
            use std::io::Seek;
            let _ = self
                .segment
                .file
                .seek(io::SeekFrom::Start(self.segment.len));
            return Err(failed(self, "append and fdatasync", source));
        }
        let bytes = self.buffer.len() as u64;
        self.segment.len += bytes;
        self.next_seq = seq;
        let mut progress = shared.lock();
        progress.durable_seq = seq - 1;
        progress.durable_bytes += bytes;
        drop(progress);
        shared.changed.notify_all();
        Ok(())
    }
}

/// Whether an append may be written now: `Err` with the reason when appends are refused,
/// `Ok(false)` while the backlog is full (wait for the applier).
fn admit(progress: &Progress) -> Result<bool, String> {
    if let Some(error) = &progress.copy_failing {
        return Err(format!(
            "copying it into the journal fails (tried again every second): {error}"
        ));
    }
    if let Some(reason) = &progress.applier_stopped {
        return Err(match reason {
            Some(reason) => format!("copying it into the journal stopped: {reason}"),
            None => "copying it into the journal stopped".to_owned(),
        });
    }
    Ok(progress.durable_bytes - progress.applied_bytes < MAX_BACKLOG_BYTES)
}

/// The appender thread (see the module docs).
struct Appender {
    shared: Arc<Shared>,
    tail: Arc<Mutex<Tail>>,
}

impl Appender {
    fn run(self, mut queue: mpsc::Receiver<Turn>) {
        let mut turns = Vec::with_capacity(APPEND_BATCH);
        let mut appends = Vec::with_capacity(APPEND_BATCH);
        let mut closing = false;
        while !closing && queue.blocking_recv_many(&mut turns, APPEND_BATCH) > 0 {
            for turn in turns.drain(..) {
                match turn {
                    Turn::Append(append) if !closing => appends.push(append),
                    Turn::Append(append) => self.refuse(append, "the store is closing"),
                    Turn::Close => closing = true,
                }
            }
            if appends.is_empty() {
                continue;
            }
            if let Err(reason) = self.wait_for_room() {
                for append in appends.drain(..) {
                    self.refuse(append, &reason);
                }
                continue;
            }
            let result = lock_tail(&self.tail).write(
                &self.shared,
                appends.iter().map(|append| append.records.as_slice()),
            );
            for append in appends.drain(..) {
                let answer = match &result {
                    Ok(()) => Ok(()),
                    Err(error) => Err(each_caller(error)),
                };
                let _ = append.reply.send(answer);
            }
        }
        // Closed, or every handle is gone: nothing more is written (callers writing in
        // place see it too); refuse what is still queued; the applier copies what is durable,
        // then stops.
        lock_tail(&self.tail).closed = true;
        queue.close();
        while let Some(turn) = queue.blocking_recv() {
            if let Turn::Append(append) = turn {
                self.refuse(append, "the store is closing");
            }
        }
        self.shared.lock().appender_stopped = true;
        self.shared.changed.notify_all();
    }

    fn refuse(&self, append: Append, reason: &str) {
        let _ = append.reply.send(Err(StoreError::IntakeLogStopped {
            path: self.shared.path.clone(),
            reason: reason.to_owned(),
        }));
    }

    /// Waits while the backlog is full; `Err` with the reason when appends must be refused.
    fn wait_for_room(&self) -> Result<(), String> {
        let mut progress = self.shared.lock();
        while !admit(&progress)? {
            progress = self
                .shared
                .changed
                .wait(progress)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(())
    }
}

/// The error of a failed turn, for each of its callers (an I/O error is not `Clone`).
fn each_caller(error: &StoreError) -> StoreError {
    match error {
        StoreError::IntakeLog {
            path,
            file,
            action,
            source,
        } => StoreError::IntakeLog {
            path: path.clone(),
            file: file.clone(),
            action,
            source: io::Error::new(source.kind(), source.to_string()),
        },
        other => StoreError::IntakeLogStopped {
            path: PathBuf::new(),
            reason: other.to_string(),
        },
    }
}

fn lock_tail(tail: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    tail.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the durable records of the live log, in order, across segments.
struct LiveReader {
    folder: PathBuf,
    /// The segment being read: its first sequence number, the file, where the next record
    /// starts.
    segment: Option<(u64, File, u64)>,
    next_seq: u64,
}

/// Where a [`LiveReader`] stands, to go back to after a batch the writer refused.
#[derive(Debug, Clone, Copy)]
struct Mark {
    segment: Option<(u64, u64)>,
    next_seq: u64,
}

impl LiveReader {
    fn mark(&self) -> Mark {
        Mark {
            segment: self
                .segment
                .as_ref()
                .map(|(first, _, offset)| (*first, *offset)),
            next_seq: self.next_seq,
        }
    }

    fn rewind(&mut self, mark: Mark) -> io::Result<()> {
        self.next_seq = mark.next_seq;
        self.segment = match mark.segment {
            Some((first, offset)) => Some((
                first,
                File::open(segment_path(&self.folder, first))?,
                offset,
            )),
            None => None,
        };
        Ok(())
    }

    /// The next record if it is durable (`durable` is the last durable sequence number),
    /// with its size; the segments it finished reading go into `finished`.
    fn next(
        &mut self,
        durable: u64,
        finished: &mut Vec<PathBuf>,
    ) -> Result<Option<(Prepared, usize)>, String> {
        if self.next_seq > durable {
            return Ok(None);
        }
        loop {
            let (first, file, offset) = match &mut self.segment {
                Some(segment) => segment,
                None => {
                    let path = segment_path(&self.folder, self.next_seq);
                    let file = File::open(&path).map_err(|error| {
                        format!(
                            "record {} is durable, but `{}` cannot be opened: {error}",
                            self.next_seq,
                            path.display()
                        )
                    })?;
                    self.segment
                        .insert((self.next_seq, file, MAGIC.len() as u64))
                }
            };
            let mut header = [0u8; HEADER];
            match file.read_exact_at(&mut header, *offset) {
                // Past what was written (allocated ahead, zeros): the record is the first of
                // the next segment, as at the end of the file.
                Ok(()) if header == [0; HEADER] => {
                    finished.push(segment_path(&self.folder, *first));
                    self.segment = None;
                    continue;
                }
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    // This segment is done: the record is the first of the next one.
                    finished.push(segment_path(&self.folder, *first));
                    self.segment = None;
                    continue;
                }
                Err(error) => return Err(format!("reading record {}: {error}", self.next_seq)),
            }
            let here = format!(
                "`{}` at byte {offset}",
                segment_path(&self.folder, *first).display()
            );
            let header = Header::parse(&header).ok_or_else(|| {
                format!("{here}: a record's header announces an impossible length")
            })?;
            if header.seq != self.next_seq {
                return Err(format!(
                    "{here}: record {} where {} was expected",
                    header.seq, self.next_seq
                ));
            }
            let mut payload = vec![0u8; header.payload_len];
            file.read_exact_at(&mut payload, *offset + HEADER as u64)
                .map_err(|error| format!("{here}: reading record {}: {error}", header.seq))?;
            let prepared = record::decode(&header, Bytes::from(payload))
                .map_err(|error| format!("{here}: record {}: {error}", header.seq))?;
            *offset += (HEADER + header.payload_len) as u64;
            self.next_seq += 1;
            return Ok(Some((prepared, HEADER + header.payload_len)));
        }
    }
}

/// The applier thread (see the module docs).
struct Applier {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Request>,
    reader: LiveReader,
    /// Segments read to their end, deleted once the batch holding their last records
    /// committed.
    finished: Vec<PathBuf>,
}

impl Applier {
    fn run(mut self) {
        let reason = loop {
            let Some(durable) = self.wait_for_work() else {
                break None; // the appender stopped, and everything durable is copied
            };
            // Everything durable now, batch by batch, before waiting again.
            let mut stopped = None;
            while self.reader.next_seq <= durable {
                match self.copy_one_batch(durable) {
                    Ok(()) => {}
                    Err(Stop::Damaged(reason)) => stopped = Some(reason),
                    Err(Stop::WriterGone) => {
                        stopped = Some("the store's writer stopped".to_owned());
                    }
                }
                if stopped.is_some() {
                    break;
                }
            }
            if stopped.is_some() {
                break stopped;
            }
        };
        if let Some(reason) = &reason {
            tracing::error!(store = %self.shared.path.display(), reason, "intake log: copying into the journal stopped; new MLLP messages are answered AE until a restart (which copies what is logged)");
        } else {
            self.delete_finished();
            // Closed with everything copied: the segment being written goes too.
            if let Ok(found) = segments(&self.shared.folder) {
                for (_, file) in found {
                    let _ = std::fs::remove_file(file);
                }
            }
        }
        self.shared.lock().applier_stopped = Some(reason);
        self.shared.changed.notify_all();
    }

    /// Waits until there is something to copy, and until it is time (see [`APPLY_DELAY`],
    /// [`FLOOD_RECORDS`]); the last durable record then, or `None` once the appender stopped
    /// and everything durable is copied.
    fn wait_for_work(&self) -> Option<u64> {
        let next = self.reader.next_seq;
        let progress = self.shared.lock();
        let mut progress = self
            .shared
            .changed
            .wait_while(progress, |progress| {
                progress.durable_seq < next && !progress.appender_stopped
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if progress.durable_seq < next {
            return None;
        }
        let since = std::time::Instant::now();
        let mut watch = FloodWatch::default();
        loop {
            let before = progress.durable_seq;
            progress = self
                .shared
                .changed
                .wait_timeout_while(progress, APPLY_DELAY, |progress| {
                    !progress.appender_stopped && progress.hurry == 0
                })
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            if progress.appender_stopped
                || progress.hurry > 0
                || watch.copy_now(
                    progress.durable_seq - before,
                    progress.durable_bytes - progress.applied_bytes,
                    since.elapsed(),
                )
            {
                return Some(progress.durable_seq);
            }
        }
    }

    /// Reads up to a batch of durable records and has the writer copy them, retrying while
    /// the writer refuses the transaction.
    fn copy_one_batch(&mut self, durable: u64) -> Result<(), Stop> {
        let start = self.reader.mark();
        loop {
            let mut records = Vec::new();
            let mut bytes = 0usize;
            while records.len() < APPLY_RECORDS && bytes < APPLY_BYTES {
                match self.reader.next(durable, &mut self.finished) {
                    Ok(Some((prepared, size))) => {
                        records.push(prepared);
                        bytes += size;
                    }
                    Ok(None) => break,
                    Err(reason) => return Err(Stop::Damaged(reason)),
                }
            }
            let through = self.reader.next_seq - 1;
            let count = records.len();
            let (reply, answer) = oneshot::channel();
            let request = Request::Apply {
                records,
                through,
                outcomes: Vec::with_capacity(count),
                reply,
            };
            self.writer
                .blocking_send(request)
                .map_err(|_| Stop::WriterGone)?;
            match answer.blocking_recv() {
                Ok(Ok(outcomes)) => {
                    for outcome in &outcomes {
                        if let JournalOutcome::Duplicate { id, .. } = outcome {
                            tracing::info!(
                                journal_id = id,
                                "duplicate message acknowledged again, not processed twice"
                            );
                        }
                    }
                    let mut progress = self.shared.lock();
                    progress.applied_seq = through;
                    progress.applied_bytes += bytes as u64;
                    progress.copy_failing = None;
                    drop(progress);
                    self.shared.changed.notify_all();
                    self.shared.journal_grew.notify_one();
                    self.delete_finished();
                    return Ok(());
                }
                Ok(Err(error)) => {
                    tracing::warn!(store = %self.shared.path.display(), %error, "intake log: copying a batch into the journal failed; new MLLP messages are answered AE until it succeeds; trying again in a second");
                    self.shared.lock().copy_failing = Some(error.to_string());
                    std::thread::sleep(RETRY_AFTER);
                    self.finished.clear();
                    self.reader.rewind(start).map_err(|error| {
                        Stop::Damaged(format!("going back to a batch to copy again: {error}"))
                    })?;
                }
                Err(_) => return Err(Stop::WriterGone),
            }
        }
    }

    fn delete_finished(&mut self) {
        for file in self.finished.drain(..) {
            if let Err(error) = std::fs::remove_file(&file) {
                tracing::warn!(file = %file.display(), %error, "intake log: cannot delete a segment copied into the journal (it is skipped at the next start)");
            }
        }
    }
}

/// Whether the intake floods, window by window ([`APPLY_DELAY`] each), since the applier
/// started waiting.
#[derive(Debug, Default)]
struct FloodWatch {
    /// A window held [`FLOOD_RECORDS`] or more.
    flooding: bool,
    /// Windows in a row under [`FLOOD_RECORDS`].
    quiet: u32,
}

impl FloodWatch {
    /// After a window in which `grew` records were made durable, with `backlog` bytes not
    /// yet copied, the oldest seen `waited` ago: whether to copy now. At once after a quiet
    /// first window; during a flood, once [`QUIET_WINDOWS`] in a row are quiet (a single
    /// slow window, a stall of the machine, does not end a flood), or the backlog or its age
    /// reaches its bound.
    fn copy_now(&mut self, grew: u64, backlog: u64, waited: Duration) -> bool {
        if grew >= FLOOD_RECORDS {
            self.flooding = true;
            self.quiet = 0;
        } else {
            self.quiet += 1;
        }
        let ended = if self.flooding {
            self.quiet >= QUIET_WINDOWS
        } else {
            self.quiet >= 1
        };
        ended || backlog >= DEFER_BYTES || waited >= DEFER_MAX
    }
}

enum Stop {
    Damaged(String),
    WriterGone,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use rstest::rstest;

    use super::super::tests::record;
    use super::super::{JournalFilter, RecordStatus, Store, StoreOptions};
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

    /// A temporary folder and the store file's path in it (kept while the folder lives).
    fn store_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        (dir, path)
    }

    fn c(seq: u64) -> (String, String, i64) {
        (format!("C{seq}"), "accepted".to_owned(), 0)
    }

    const MIB: u64 = 1024 * 1024;

    const F: u64 = FLOOD_RECORDS;

    #[rstest]
    // Records made durable in each window; whether the applier copies after each.
    #[case::ok_a_few_messages(&[1], &[true])]
    #[case::ok_one_connection_flat_out(&[F - 1], &[true])]
    #[case::ok_a_flood_waits(&[F, F, F], &[false, false, false])]
    #[case::ok_a_stall_does_not_end_a_flood(&[F, 0, F, 3, 2], &[false, false, false, false, false])]
    #[case::ok_a_flood_ends_after_quiet_windows(&[F, 0, 0, 0], &[false, false, false, true])]
    fn ok_copy_now_defers_only_during_a_flood(#[case] windows: &[u64], #[case] expected: &[bool]) {
        let mut watch = FloodWatch::default();
        let copies: Vec<bool> = windows
            .iter()
            .map(|grew| watch.copy_now(*grew, MIB, Duration::from_secs(1)))
            .collect();
        assert_eq!(copies, expected);
    }

    #[rstest]
    #[case::ok_a_flood_past_its_bytes(DEFER_BYTES, Duration::ZERO)]
    #[case::ok_a_flood_past_its_time(MIB, DEFER_MAX)]
    fn ok_a_flood_is_copied_past_its_bounds(#[case] backlog: u64, #[case] waited: Duration) {
        let mut watch = FloodWatch::default();
        assert!(watch.copy_now(F, backlog, waited));
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
        while store.intake_backlog() > Some(0) {
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
        assert_eq!(store.intake_backlog(), Some(0));
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
        // Every journal insert fails, as on a full disk.
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON journal BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;",
        )
        .unwrap();
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
        let mut stored: Vec<String> = control_ids(&store).into_iter().map(|row| row.0).collect();
        logged.push("AFTER".to_owned());
        stored.sort();
        logged.sort();
        assert_eq!(stored, logged);
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
        // The log is copied at every open, the setting on or off.
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

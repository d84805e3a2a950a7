//! Copying: the applier thread reads the durable records back and has the store's writer
//! turn them into journal rows, batch by batch, waiting during a flood (see the parent
//! module).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::record::{self, MAGIC, ReadError};
use super::{
    APPLY_BYTES, APPLY_DELAY, APPLY_RECORDS, BUSY_RECORDS, BUSY_WINDOWS, DEFER_BYTES, DEFER_MAX,
    FLOOD_RECORDS, QUIET_WINDOWS, RETRY_AFTER, Shared, segment_path, segments,
};
use crate::store::JournalOutcome;
use crate::store::writer::{Prepared, Request};

/// Reads the durable records of the live log, in order, across segments.
pub(super) struct LiveReader {
    pub(super) folder: PathBuf,
    /// The segment being read: its first sequence number, the file, where the next record
    /// starts.
    pub(super) segment: Option<(u64, File, u64)>,
    pub(super) next_seq: u64,
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
            let here = || {
                format!(
                    "`{}` at byte {offset}",
                    segment_path(&self.folder, *first).display()
                )
            };
            match record::read_at(file, *offset) {
                // Past what was written (the end of the file, or zeros allocated ahead): the
                // record is the first of the next segment.
                Ok(None) => {
                    finished.push(segment_path(&self.folder, *first));
                    self.segment = None;
                }
                Ok(Some((_, seq, _))) if seq != self.next_seq => {
                    return Err(format!(
                        "{}: record {seq} where {} was expected",
                        here(),
                        self.next_seq
                    ));
                }
                Ok(Some((prepared, _, size))) => {
                    *offset += size as u64;
                    self.next_seq += 1;
                    return Ok(Some((prepared, size)));
                }
                Err(ReadError::Bad(reason)) => return Err(format!("{}: {reason}", here())),
                Err(ReadError::Io(error)) => return Err(format!("{}: {error}", here())),
            }
        }
    }
}

/// The applier thread (see the module docs).
pub(super) struct Applier {
    pub(super) shared: Arc<Shared>,
    pub(super) writer: mpsc::Sender<Request>,
    pub(super) reader: LiveReader,
    /// Segments read to their end, deleted once the batch holding their last records
    /// committed.
    pub(super) finished: Vec<PathBuf>,
}

impl Applier {
    pub(super) fn run(mut self) {
        let reason = 'copying: loop {
            let Some(durable) = self.wait_for_work() else {
                break None; // the appender stopped, and everything durable is copied
            };
            // Everything durable now, batch by batch, before waiting again.
            while self.reader.next_seq <= durable {
                match self.copy_one_batch(durable) {
                    Ok(()) => {}
                    Err(Stop::Damaged(reason)) => break 'copying Some(reason),
                    Err(Stop::WriterGone) => {
                        break 'copying Some("the store's writer stopped".to_owned());
                    }
                }
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
        let mut progress = self.shared.lock();
        progress.applier_idle = true;
        let mut progress = self
            .shared
            .changed
            .wait_while(progress, |progress| {
                progress.durable_seq < next && !progress.appender_stopped
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        progress.applier_idle = false;
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
            let accepted = records.iter().filter(|record| record.accepted()).count() as u64;
            let (reply, answer) = oneshot::channel();
            let request = Request::Many {
                records,
                intake_through: Some(through),
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
                    progress.applied_accepted += accepted;
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
                    // An appender waiting for room (the backlog full) refuses its turn now.
                    self.shared.changed.notify_all();
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

/// Whether the intake is busy or floods, window by window ([`APPLY_DELAY`] each), since the
/// applier started waiting.
#[derive(Debug, Default)]
pub(super) struct FloodWatch {
    /// A window held [`FLOOD_RECORDS`] or more.
    flooding: bool,
    /// Windows in a row under [`FLOOD_RECORDS`].
    quiet: u32,
    /// Windows so far.
    windows: u32,
}

impl FloodWatch {
    /// After a window in which `grew` records were made durable, with `backlog` bytes not
    /// yet copied, the oldest seen `waited` ago: whether to copy now. At once after a window
    /// under [`BUSY_RECORDS`]; while busy, after [`BUSY_WINDOWS`]; during a flood, once
    /// [`QUIET_WINDOWS`] in a row are under [`FLOOD_RECORDS`] (a single slow window, a stall
    /// of the machine, does not end a flood); in any case once the backlog or its age
    /// reaches its bound.
    pub(super) fn copy_now(&mut self, grew: u64, backlog: u64, waited: Duration) -> bool {
        self.windows += 1;
        if grew >= FLOOD_RECORDS {
            self.flooding = true;
            self.quiet = 0;
        } else {
            self.quiet += 1;
        }
        let ended = if self.flooding {
            self.quiet >= QUIET_WINDOWS
        } else {
            grew < BUSY_RECORDS || self.windows >= BUSY_WINDOWS
        };
        ended || backlog >= DEFER_BYTES || waited >= DEFER_MAX
    }
}

enum Stop {
    Damaged(String),
    WriterGone,
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    const F: u64 = FLOOD_RECORDS;
    const B: u64 = BUSY_RECORDS;

    #[rstest]
    // Records made durable in each window; whether the applier copies after each.
    #[case::ok_a_few_messages(&[1], &[true])]
    #[case::ok_busy_waits_a_second(&[B; 10], &[false, false, false, false, false, false, false, false, false, true])]
    #[case::ok_one_connection_flat_out_is_busy(&[F - 1, F - 1, B - 1], &[false, false, true])]
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
}

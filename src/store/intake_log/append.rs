//! Appending: a frame's records written at the end of the current segment and synced, by the
//! appender thread (group commit) or in place by a caller that finds the log idle (see the
//! parent module).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};

use super::record::{self, MAGIC};
use super::{APPEND_BATCH, Progress, SEGMENT_BYTES, Shared, segment_path, sync_folder};
use crate::store::StoreError;
use crate::store::writer::Prepared;

/// One frame's records, answered once they are durable.
pub(super) struct Append {
    pub(super) records: Vec<Prepared>,
    pub(super) reply: oneshot::Sender<Result<(), StoreError>>,
}

/// What the appender's queue carries.
pub(super) enum Turn {
    Append(Append),
    /// Write what came before, refuse what comes after, stop.
    Close,
}

/// The segment the appender writes.
#[derive(Debug)]
pub(super) struct Segment {
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
    pub(super) fn create(folder: &Path, first_seq: u64) -> io::Result<Segment> {
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
/// that finds the log idle ([`super::IntakeLog::append`]).
#[derive(Debug)]
pub(super) struct Tail {
    pub(super) segment: Segment,
    /// The sequence number of the next record.
    pub(super) next_seq: u64,
    /// The turn's records, encoded (kept to reuse its allocation).
    pub(super) buffer: Vec<u8>,
    /// The appender took a `Close`: nothing more is written.
    pub(super) closed: bool,
    /// How many appends the last turn wrote together: more than one, senders are
    /// concurrent, and the next append is queued for the appender's group commit rather
    /// than written in place ([`super::IntakeLog::append_in_place`]).
    pub(super) last_turn_appends: usize,
}

impl Tail {
    /// Writes the records of `appends` and syncs them, then publishes them as durable; on
    /// failure the segment is cut back to what was durable before (nothing of the turn is
    /// stored, every sender gets AE).
    pub(super) fn write<'a>(
        &mut self,
        shared: &Shared,
        appends: impl Iterator<Item = &'a [Prepared]>,
    ) -> Result<(), WriteFailed> {
        self.buffer.clear();
        let mut seq = self.next_seq;
        let mut accepted = 0;
        self.last_turn_appends = 0;
        for records in appends {
            self.last_turn_appends += 1;
            for prepared in records {
                record::encode(seq, prepared, &mut self.buffer);
                seq += 1;
                accepted += u64::from(prepared.accepted());
            }
        }
        let failed = |tail: &Tail, action, source: io::Error| WriteFailed {
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
        progress.durable_accepted += accepted;
        // Only the applier waiting for a first record wants to know: waking it at every turn
        // of a flood, while it lets records gather, cost a context switch per turn.
        let wake = progress.applier_idle;
        drop(progress);
        if wake {
            shared.changed.notify_all();
        }
        Ok(())
    }
}

/// Whether an append may be written now: `Err` with the reason when appends are refused,
/// `Ok(false)` while the backlog is full (wait for the applier).
pub(super) fn admit(progress: &Progress) -> Result<bool, String> {
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
    Ok(progress.durable_bytes - progress.applied_bytes < progress.max_backlog_bytes)
}

/// The appender thread (see the module docs).
pub(super) struct Appender {
    pub(super) shared: Arc<Shared>,
    pub(super) tail: Arc<Mutex<Tail>>,
}

impl Appender {
    pub(super) fn run(self, mut queue: mpsc::Receiver<Turn>) {
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
                    Err(failed) => Err(failed.for_caller(&self.shared.path)),
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

/// A turn that could not be written: the segment, what failed, what the OS said.
#[derive(Debug)]
pub(super) struct WriteFailed {
    file: PathBuf,
    action: &'static str,
    source: io::Error,
}

impl WriteFailed {
    /// The error each caller of the turn gets (an I/O error is not `Clone`: its kind and
    /// text are).
    pub(super) fn for_caller(&self, path: &Path) -> StoreError {
        StoreError::IntakeLog {
            path: path.to_path_buf(),
            file: self.file.clone(),
            action: self.action,
            source: io::Error::new(self.source.kind(), self.source.to_string()),
        }
    }
}

pub(super) fn lock_tail(tail: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    tail.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

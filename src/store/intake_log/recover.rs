//! Recovery at open: what a stop left in the intake log past the applied mark is copied into
//! the journal before anything else runs, then the segments are deleted (see the parent
//! module).

use std::fs::File;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::record::{self, ReadError};
use super::{
    APPLIED_SQL, APPLY_RECORDS, copy_into_journal, folder_of, io_error_of, segments, sync_folder,
};
use crate::store::StoreError;
use crate::store::writer::{Prepared, Tally};

/// Copies into the journal what the intake log of the store at `path` holds beyond the
/// applied mark, then deletes its segments; the sequence number the next record gets. Runs
/// at every writable open by the log's owner (`owner::own`), before the writer starts,
/// whether or not the log is enabled.
pub(in crate::store) fn recover(
    connection: &mut Connection,
    path: &Path,
) -> Result<u64, StoreError> {
    let folder = folder_of(path);
    let sql_error = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let applied: i64 = connection
        .query_row(APPLIED_SQL, [], |row| row.get(0))
        .map_err(sql_error)?;
    let applied = u64::try_from(applied).unwrap_or(0);
    let io_error = io_error_of(path);
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
        let segment =
            File::open(file).map_err(|source| io_error(file, "read the segment", source))?;
        let mut offset = 0;
        loop {
            let here = offset;
            match record::read_next(&segment, &mut offset) {
                Ok(Some((prepared, seq))) => {
                    read = seq;
                    if seq <= applied {
                        continue;
                    }
                    if seq != last + 1 {
                        return Err(StoreError::IntakeLogDamaged {
                            path: path.to_path_buf(),
                            file: file.clone(),
                            offset: here,
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
                Err(ReadError::Io(source)) => {
                    return Err(io_error(file, "read the segment", source));
                }
                Err(ReadError::Bad(reason)) if is_last => {
                    tracing::warn!(file = %file.display(), offset = here, reason, "intake log: its last segment ends in a torn append (a crash during a write that was never acknowledged); that tail is dropped");
                    break;
                }
                // The next segment starts with the record that would come here: what follows
                // is the tail of an append that failed (never acknowledged).
                Err(ReadError::Bad(reason))
                    if found
                        .get(place + 1)
                        .is_some_and(|(first, _)| *first == read + 1) =>
                {
                    tracing::warn!(file = %file.display(), offset = here, reason, "intake log: a segment ends in a failed append (never acknowledged); that tail is skipped");
                    break;
                }
                Err(ReadError::Bad(reason)) => {
                    return Err(StoreError::IntakeLogDamaged {
                        path: path.to_path_buf(),
                        file: file.clone(),
                        offset: here,
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
    let mut outcomes = Vec::with_capacity(pending.len());
    copy_into_journal(
        &transaction,
        pending,
        through,
        &mut Tally::default(),
        &mut outcomes,
    )?;
    transaction.commit()?;
    pending.clear();
    Ok(())
}

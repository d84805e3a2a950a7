//! Recovery at open: what a stop left in the intake log past the applied mark is copied into
//! the journal before anything else runs, then the segments are deleted (see the parent
//! module).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use bytes::Bytes;
use rusqlite::{Connection, TransactionBehavior};

use super::record::{self, HEADER, Header, MAGIC};
use super::{APPLIED_SQL, APPLY_RECORDS, folder_of, mark_applied, segments, sync_folder};
use crate::store::StoreError;
use crate::store::writer::{self, Prepared, Tally};

/// Copies into the journal what the intake log of the store at `path` holds beyond the
/// applied mark, then deletes its segments; the sequence number the next record gets. Runs
/// at every open, before the writer starts, whether or not the log is enabled.
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

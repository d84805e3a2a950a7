//! The inbound file-drop channel: read the file's messages, commit them, and only then let
//! the inbox archive the file.
//!
//! A file is all or nothing: if any message of it is unreadable, none of it is accepted (the
//! unreadable ones are journaled as rejected for the record) and the file goes to `error/`
//! with a reason naming each bad message, to be fixed and dropped again. If the store cannot
//! commit, the file stays in the inbox and is offered again at the next poll. After a crash
//! between the commit and the move, the same file comes back: its messages are duplicates in
//! the journal (same sender, MSH-10 and content) and are not processed twice.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{debug, info};

use crate::config::{FileFormat, InboundChannel};
use crate::filedrop::{FileHandler, FileRejection, InboxFile};
use crate::hl7::Charset;
use crate::store::{JournalOutcome, Store, StoreError};

use super::intake::{Intake, Parsed, read_hl7};

/// The file handler of one file-drop channel.
pub struct FileInbound {
    channel: String,
    charset: Option<Charset>,
    /// Log refused messages' values at debug (else trace).
    log_phi: bool,
    format: FileFormat,
    store: Store,
    /// Poked after each commit, so the processor applies the new messages to the census.
    processed: Arc<Notify>,
}

impl FileInbound {
    pub fn new(
        channel: &InboundChannel,
        format: FileFormat,
        store: Store,
        processed: Arc<Notify>,
    ) -> Self {
        FileInbound {
            channel: channel.name.clone(),
            charset: channel.charset,
            log_phi: channel.log_phi,
            format,
            store,
            processed,
        }
    }

    /// The messages of a file, parsed and ready for the journal.
    fn read(&self, peer: &str, bytes: &Bytes) -> Result<Vec<Parsed>, FileRejection> {
        let intake = Intake {
            channel: &self.channel,
            charset: self.charset,
            log_phi: self.log_phi,
            peer,
        };
        match self.format {
            FileFormat::Hl7 => Ok(read_hl7(&intake, bytes)),
            FileFormat::Hprim => super::intake::read_hprim(&intake, bytes),
            FileFormat::Auto => match detect(bytes) {
                Some(FileFormat::Hprim) => super::intake::read_hprim(&intake, bytes),
                Some(_) => Ok(read_hl7(&intake, bytes)),
                None => Err(FileRejection::new(format!(
                    "channel `{}`: cannot tell the format of the file: it starts with neither `MSH`, `FHS`, `BHS` (HL7v2) nor `H` (HPRIM Santé); set `format` on the channel if the files are right",
                    self.channel
                ))),
            },
        }
    }
}

/// HL7v2 or HPRIM from the first bytes (after a BOM, blank lines and spaces).
fn detect(bytes: &[u8]) -> Option<FileFormat> {
    let start = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = start.trim_ascii_start();
    if start.starts_with(b"MSH") || start.starts_with(b"FHS") || start.starts_with(b"BHS") {
        Some(FileFormat::Hl7)
    } else if start.first() == Some(&b'H') && start.get(1).is_some_and(|b| b.is_ascii_punctuation())
    {
        Some(FileFormat::Hprim)
    } else {
        None
    }
}

/// How many ready files one transaction journals (see [`FileHandler::handle_batch`]).
const BATCH_FILES: usize = 64;

/// A file read and split into the records to journal: all of them, or (when any message is
/// refused) only the refused ones, for the record.
struct Prepared {
    records: Vec<crate::store::InboundRecord>,
    /// One line per refused message; empty when the file is accepted.
    refusals: Vec<String>,
}

impl FileInbound {
    /// Reads a file's messages and decides what of it is journaled (all or nothing).
    fn prepare(&self, file: &InboxFile) -> Result<Prepared, FileRejection> {
        let peer = format!("file:{}", file.name);
        let mut parsed = self.read(&peer, &file.bytes)?;
        let refusals: Vec<String> = parsed
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.refusal.as_ref().map(|r| {
                    format!(
                        "message {} (MSH-10 `{}`): {}",
                        i + 1,
                        p.record.control_id,
                        r.message
                    )
                })
            })
            .collect();
        // All or nothing: with any refusal, only the refused messages are journaled.
        let records = parsed
            .iter_mut()
            .filter(|p| refusals.is_empty() || p.refusal.is_some())
            .map(Parsed::take_record)
            .collect();
        Ok(Prepared { records, refusals })
    }

    /// The answer for a file once its records are committed.
    fn settled(
        &self,
        file: &InboxFile,
        refusals: &[String],
        outcomes: &[JournalOutcome],
    ) -> Result<(), FileRejection> {
        if !refusals.is_empty() {
            return Err(FileRejection::new(format!(
                "channel `{}`: file `{}` refused; nothing from it was accepted. Fix these messages and drop the file again:\n{}",
                self.channel,
                file.name,
                refusals.join("\n")
            )));
        }
        let duplicates = outcomes
            .iter()
            .filter(|o| matches!(o, JournalOutcome::Duplicate { .. }))
            .count();
        if duplicates > 0 {
            info!(file = %file.name, duplicates, "file holds messages already journaled; they are not processed twice");
        }
        debug!(file = %file.name, messages = outcomes.len(), "file journaled");
        Ok(())
    }

    /// The answer for a file whose records the journal could not commit.
    fn not_committed(&self, file: &InboxFile, error: &StoreError) -> FileRejection {
        FileRejection::retry_later(format!(
            "channel `{}`: the journal could not commit `{}`: {error}",
            self.channel, file.name
        ))
    }
}

impl FileHandler for FileInbound {
    async fn handle(&self, file: InboxFile) -> Result<(), FileRejection> {
        let prepared = self.prepare(&file)?;
        let outcomes = self
            .store
            .journal_many(prepared.records)
            .await
            .map_err(|e| self.not_committed(&file, &e))?;
        self.processed.notify_one();
        self.settled(&file, &prepared.refusals, &outcomes)
    }

    fn batch_limit(&self) -> usize {
        BATCH_FILES
    }

    /// The records of every file in ONE journal transaction (in file order), so a burst of
    /// small files costs one commit, not one per file; each file is still all or nothing.
    async fn handle_batch(&self, files: Vec<InboxFile>) -> Vec<Result<(), FileRejection>> {
        let mut prepared = Vec::with_capacity(files.len());
        let mut records = Vec::new();
        for file in &files {
            prepared.push(self.prepare(file).map(|p| {
                let count = p.records.len();
                records.extend(p.records);
                (count, p.refusals)
            }));
        }
        let committed = self.store.journal_many(records).await;
        if committed.is_ok() {
            self.processed.notify_one();
        }
        let mut outcomes = committed.as_deref().unwrap_or_default();
        files
            .iter()
            .zip(prepared)
            .map(|(file, prepared)| {
                let (count, refusals) = prepared?;
                match &committed {
                    Ok(_) => {
                        let (own, rest) = outcomes.split_at(count.min(outcomes.len()));
                        outcomes = rest;
                        self.settled(file, &refusals, own)
                    }
                    Err(e) => Err(self.not_committed(file, e)),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::hl7(b"MSH|^~\\&|A".as_slice(), Some(FileFormat::Hl7))]
    #[case::batch(b"FHS|^~\\&|A".as_slice(), Some(FileFormat::Hl7))]
    #[case::bom_and_blank(b"\xEF\xBB\xBF\r\nBHS|^~\\&".as_slice(), Some(FileFormat::Hl7))]
    #[case::hprim(b"H|~^\\&|FILE".as_slice(), Some(FileFormat::Hprim))]
    #[case::hprim_other_order(b"H|^~\\&|FILE".as_slice(), Some(FileFormat::Hprim))]
    #[case::neither(b"hello".as_slice(), None)]
    #[case::empty(b"".as_slice(), None)]
    fn detects_the_format(#[case] bytes: &[u8], #[case] expected: Option<FileFormat>) {
        assert_eq!(detect(bytes), expected);
    }
}

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
use crate::store::{JournalOutcome, Store};

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

impl FileHandler for FileInbound {
    async fn handle(&self, file: InboxFile) -> Result<(), FileRejection> {
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
        let outcomes = self.store.journal_many(records).await.map_err(|e| {
            FileRejection::retry_later(format!(
                "channel `{}`: the journal could not commit `{}`: {e}",
                self.channel, file.name
            ))
        })?;
        self.processed.notify_one();
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

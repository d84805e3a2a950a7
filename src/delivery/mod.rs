//! Outbound delivery: one worker per destination drains that destination's durable queue,
//! in enqueue order, over one of two transports:
//!
//! - [`mllp`]: a kept-alive MLLP connection; a message is delivered when the receiver ACKs it
//!   (AA/CA), retried on AE/CE, a timeout or a lost connection, dead-lettered on AR/CR.
//! - [`file`](mod@file): a drop folder (`tmp` → fsync → rename → witness, see
//!   [`crate::filedrop`]); a message is delivered once its file is durably in place, retried
//!   when the write fails.
//!
//! What both share, and what users trust:
//!
//! - **Order.** Nothing of a destination is sent while an earlier message of it is pending:
//!   a message in backoff holds back those behind it; a failing destination never holds up
//!   another (each has its own task).
//! - **One retry policy** ([`RetryPolicy`], `[outbound.NAME]` `retry_initial`, `retry_max`,
//!   `max_attempts`): exponential backoff with jitter; after `max_attempts` failed attempts
//!   (`0`: never) the message becomes a dead letter with the last failure as its reason
//!   (`gave up after N attempts: …`), and the next message goes. `ordobridge replay` puts
//!   dead letters back.
//! - **Waking up**: whoever enqueues calls `notify_one` on the destination's `Notify` after
//!   the commit; a poll interval catches anything else (a replay from the CLI).
//! - **Shutdown**: the attempt in flight and its store update finish, then the worker stops;
//!   a worker waiting (idle, in backoff) stops at once.

pub mod file;
pub mod mllp;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

pub use self::file::{FileDestinationSettings, run_file_destination};
pub use self::mllp::{
    DeliveryStats, DeliveryStatsSnapshot, DestinationSettings, run_destination,
    run_destination_with_tls,
};
use crate::filedrop::OutboxError;
use crate::hl7::{Message, ParseError};
use crate::mllp::MllpError;
pub use crate::retry::RetryPolicy;
use crate::store::{DeadLetter, DestinationDepth, OutboundItem};
use crate::text::{error_chain, readable};

/// Why a message could not be queued or delivered; the text (with its causes, see
/// [`error_chain`]) is what `last_error` and the dead-letter reason hold.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A payload handed to [`outbound_item`] is not an HL7v2 message.
    #[error("destination `{destination}`: payload is not an HL7v2 message")]
    Payload {
        /// The destination it was meant for.
        destination: String,
        /// What the parser said.
        #[source]
        source: ParseError,
    },
    /// A payload handed to [`outbound_item`] holds a byte MLLP reserves for framing, so it
    /// could never be sent.
    #[error(
        "destination `{destination}`: payload holds reserved MLLP byte `{}` at byte offset {offset}",
        readable(&[*byte])
    )]
    Unframeable {
        /// The destination it was meant for.
        destination: String,
        /// `0x0B` or `0x1C`.
        byte: u8,
        /// Its offset in the payload.
        offset: usize,
    },
    /// A payload handed to [`outbound_item`] has an empty MSH-10, so its ACK cannot be matched.
    #[error("destination `{destination}`: payload has no control id (MSH-10)")]
    NoControlId {
        /// The destination it was meant for.
        destination: String,
    },
    /// The exchange failed: timeout, connection lost, oversized or unframeable answer.
    #[error("cannot deliver `{control_id}` to {addr}")]
    Send {
        /// MSH-10 of the message.
        control_id: String,
        /// The receiver.
        addr: SocketAddr,
        /// What went wrong on the wire.
        #[source]
        source: MllpError,
    },
    /// The drop folder of a file destination refused the file (missing, not writable, full);
    /// nothing was left under the final name.
    #[error("cannot deliver `{control_id}` into `{}`", folder.display())]
    File {
        /// MSH-10 of the message.
        control_id: String,
        /// The destination's folder.
        folder: PathBuf,
        /// What the outbox said.
        #[source]
        source: OutboxError,
    },
    /// A message queued with a companion file (an HPRIM document with its PDF) met an MLLP
    /// destination, which cannot carry the file: the destination was a folder when the
    /// message was queued and was changed since.
    #[error(
        "`{control_id}` was queued with a document file for a file destination; destination `{destination}` now delivers over MLLP, which cannot carry the file: point the destination back to a folder and replay the dead letter, or send the document again"
    )]
    NeedsFolder {
        /// MSH-10 (or the HPRIM message's id) of the message.
        control_id: String,
        /// The destination it was queued for.
        destination: String,
    },
    /// The receiver could not be reached; the message was not sent.
    #[error("receiver {addr} unreachable")]
    Unreachable {
        /// The receiver.
        addr: SocketAddr,
        /// Why connecting failed.
        #[source]
        source: MllpError,
    },
    /// The answer does not parse as HL7v2.
    #[error("answer to `{control_id}` is not an HL7v2 message")]
    AckUnreadable {
        /// MSH-10 of the message sent.
        control_id: String,
        /// What the parser said.
        #[source]
        source: ParseError,
    },
    /// The answer has no MSA segment.
    #[error("answer to `{control_id}` has no MSA segment")]
    AckWithoutMsa {
        /// MSH-10 of the message sent.
        control_id: String,
    },
    /// MSA-2 names another message: a stale or misrouted answer.
    #[error("ACK for `{found}` while waiting for `{expected}`")]
    AckMismatch {
        /// MSA-2 as received (made readable).
        found: String,
        /// MSH-10 of the message sent.
        expected: String,
    },
    /// The receiver answered AE/CE (retried) or AR/CR (dead letter).
    #[error("receiver answered {code} to `{control_id}`{}", text_suffix(text))]
    Nack {
        /// MSA-1.
        code: String,
        /// MSH-10 of the message sent.
        control_id: String,
        /// MSA-3, else ERR-8, else ERR-3 (made readable, shortened); may be empty.
        text: String,
    },
    /// MSA-1 is not one of AA, AE, AR, CA, CE, CR.
    #[error("receiver answered unknown code `{code}` to `{control_id}`")]
    UnknownAckCode {
        /// MSA-1 (made readable).
        code: String,
        /// MSH-10 of the message sent.
        control_id: String,
    },
    /// The retry limit was reached; the last failure is the cause.
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<DeliveryError>,
    },
}

fn text_suffix(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// [`error_chain`] for logs at info level and above: the receiver's free text of a NACK
/// (MSA-3, ERR-8, ERR-3 may name the patient) is left out; the full chain is the dead-letter
/// or retry reason in the queue (`ordobridge queue`) and is logged at trace.
pub fn log_chain(error: &DeliveryError) -> String {
    match error {
        DeliveryError::Nack {
            code,
            control_id,
            text,
        } if !text.is_empty() => format!(
            "receiver answered {code} to `{control_id}` (its text is in the queue: `ordobridge queue`)"
        ),
        DeliveryError::GaveUp { attempts, last } => {
            format!("gave up after {attempts} attempts: {}", log_chain(last))
        }
        other => error_chain(other),
    }
}

/// Builds a queue item from an HL7v2 payload, taking the control id from its MSH-10 (which
/// the worker checks against MSA-2 and keeps across retries). Payloads that could never be
/// framed or matched to an ACK are refused here, before they reach the queue.
pub fn outbound_item(
    destination: &str,
    payload: Bytes,
    source: &str,
) -> Result<OutboundItem, DeliveryError> {
    if let Some(offset) = memchr::memchr2(0x0B, 0x1C, &payload) {
        return Err(DeliveryError::Unframeable {
            destination: destination.to_owned(),
            byte: payload.get(offset).copied().unwrap_or_default(),
            offset,
        });
    }
    let control_id = Message::parse(&payload)
        .map_err(|source| DeliveryError::Payload {
            destination: destination.to_owned(),
            source,
        })?
        .header()
        .control_id;
    if control_id.trim().is_empty() {
        return Err(DeliveryError::NoControlId {
            destination: destination.to_owned(),
        });
    }
    Ok(OutboundItem {
        destination: destination.to_owned(),
        control_id,
        payload,
        source: source.to_owned(),
    })
}

/// How long until wall-clock instant `at`; zero if it is past.
fn until_wall_clock(at: jiff::Timestamp) -> Duration {
    Duration::try_from(at.duration_since(jiff::Timestamp::now())).unwrap_or(Duration::ZERO)
}

/// The queue depth per destination as a table, for `ordobridge queue`.
pub fn render_overview(depths: &[DestinationDepth]) -> String {
    if depths.is_empty() {
        return "no outbound messages pending or dead\n".to_owned();
    }
    let rows = depths
        .iter()
        .map(|depth| {
            vec![
                readable(depth.destination.as_bytes()),
                depth.pending.to_string(),
                depth.dead.to_string(),
                depth
                    .oldest_pending_at
                    .map_or_else(|| "-".to_owned(), |at| format!("{at:.0}")),
            ]
        })
        .collect::<Vec<_>>();
    table(&["DESTINATION", "PENDING", "DEAD", "OLDEST PENDING"], &rows)
}

/// Dead letters as a table, for `ordobridge replay` (which takes the ids shown).
pub fn render_dead_letters(letters: &[DeadLetter]) -> String {
    if letters.is_empty() {
        return "no dead letters\n".to_owned();
    }
    let rows = letters
        .iter()
        .map(|letter| {
            vec![
                letter.id.to_string(),
                readable(letter.destination.as_bytes()),
                readable(letter.control_id.as_bytes()),
                letter.attempts.to_string(),
                letter
                    .dead_at
                    .map_or_else(|| "-".to_owned(), |at| format!("{at:.0}")),
                readable(letter.source.as_bytes()),
                readable(letter.reason.as_bytes()),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &[
            "ID",
            "DESTINATION",
            "CONTROL ID",
            "ATTEMPTS",
            "DEAD SINCE",
            "SOURCE",
            "REASON",
        ],
        &rows,
    )
}

/// Left-aligned columns separated by two spaces, no trailing blanks.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    push_line(&mut out, &widths, header.iter().copied());
    for row in rows {
        push_line(&mut out, &widths, row.iter().map(String::as_str));
    }
    out
}

fn push_line<'c>(out: &mut String, widths: &[usize], cells: impl Iterator<Item = &'c str>) {
    let mut text = String::new();
    for (cell, width) in cells.zip(widths) {
        let _ = write!(text, "{cell:<width$}  ");
    }
    out.push_str(text.trim_end());
    out.push('\n');
}

/// Time since `enqueued_at` (zero for a time in the future: a clock step back).
pub(crate) fn waited(enqueued_at: jiff::Timestamp) -> std::time::Duration {
    std::time::Duration::try_from(jiff::Timestamp::now().duration_since(enqueued_at))
        .unwrap_or_default()
}

/// The pause switch of every destination, by name: an operator pauses a destination (its
/// worker starts no new message; the one in flight finishes) and resumes it. Kept across
/// restarts of a destination's task (a reload); the console also commits each pause to the
/// store, and the engine sets the switches from it at start.
#[derive(Debug, Default)]
pub struct PauseSwitches {
    /// Locked only to find or add a switch.
    switches: std::sync::Mutex<std::collections::BTreeMap<String, Switch>>,
}

/// One destination's switch, and whether its worker waits on it now.
#[derive(Debug, Clone)]
struct Switch {
    paused: tokio::sync::watch::Sender<bool>,
    parked: Arc<std::sync::atomic::AtomicBool>,
}

/// What a destination's worker watches: the operator's switch. [`PauseReceiver::wait_resumed`]
/// marks the worker parked while it waits, so tests and the dashboard see a pause take hold.
#[derive(Debug)]
pub struct PauseReceiver {
    paused: tokio::sync::watch::Receiver<bool>,
    parked: Arc<std::sync::atomic::AtomicBool>,
}

impl PauseReceiver {
    /// A switch nobody turns: never paused.
    pub fn never() -> PauseReceiver {
        PauseReceiver::from(tokio::sync::watch::channel(false).1)
    }

    /// Whether the destination is paused now.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Parks the worker until the switch changes (or is dropped: then it never pauses again),
    /// or `shutdown` is cancelled (`false`).
    pub async fn wait_resumed(&mut self, shutdown: &CancellationToken) -> bool {
        use std::sync::atomic::Ordering;
        self.parked.store(true, Ordering::Release);
        let going_on = tokio::select! {
            biased;
            () = shutdown.cancelled() => false,
            changed = self.paused.changed() => {
                if changed.is_err() {
                    // The switch is gone: nobody can resume; stop waiting on it.
                    self.paused = tokio::sync::watch::channel(false).1;
                }
                true
            }
        };
        self.parked.store(false, Ordering::Release);
        going_on
    }
}

impl From<tokio::sync::watch::Receiver<bool>> for PauseReceiver {
    fn from(paused: tokio::sync::watch::Receiver<bool>) -> PauseReceiver {
        PauseReceiver {
            paused,
            parked: Arc::default(),
        }
    }
}

impl PauseSwitches {
    fn switch(&self, destination: &str) -> Switch {
        self.switches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(destination.to_string())
            .or_insert_with(|| Switch {
                paused: tokio::sync::watch::channel(false).0,
                parked: Arc::default(),
            })
            .clone()
    }

    /// What the worker of `destination` watches.
    pub fn receiver(&self, destination: &str) -> PauseReceiver {
        let switch = self.switch(destination);
        PauseReceiver {
            paused: switch.paused.subscribe(),
            parked: switch.parked,
        }
    }

    /// Pauses (`true`) or resumes `destination`; whether that changed anything.
    pub fn set(&self, destination: &str, paused: bool) -> bool {
        self.switch(destination).paused.send_replace(paused) != paused
    }

    /// Whether the worker of `destination` is parked on its pause now: nothing new leaves
    /// until it is resumed.
    pub fn is_parked(&self, destination: &str) -> bool {
        self.switches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(destination)
            .is_some_and(|s| s.parked.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Whether `destination` is paused.
    pub fn is_paused(&self, destination: &str) -> bool {
        self.switches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(destination)
            .is_some_and(|switch| *switch.paused.borrow())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn ok_outbound_item_takes_msh10() {
        let payload = Bytes::from_static(b"MSH|^~\\&|ORDO|POSOS|EHR|CHU|||ORM^O01|ORD-7|P|2.5\r");
        let item = outbound_item("ehr", payload.clone(), "bundle-1").unwrap();
        assert_eq!(item.control_id, "ORD-7");
        assert_eq!(item.destination, "ehr");
        assert_eq!(item.source, "bundle-1");
        assert_eq!(item.payload, payload);
    }

    #[rstest]
    #[case::err_no_control_id(
        &b"MSH|^~\\&|ORDO|POSOS|EHR|CHU|||ORM^O01||P|2.5\r"[..],
        "destination `ehr`: payload has no control id (MSH-10)"
    )]
    #[case::err_not_hl7(&b"H|~^\\&|"[..], "destination `ehr`: payload is not an HL7v2 message")]
    #[case::err_reserved_byte(
        &b"MSH|^~\\&|ORDO|POSOS|EHR|CHU|||ORM^O01|1|P|2.5\rNTE|1||\x1C\r"[..],
        "destination `ehr`: payload holds reserved MLLP byte `\\x1C` at byte offset 53"
    )]
    fn err_outbound_item(#[case] payload: &'static [u8], #[case] text: &str) {
        let err = outbound_item("ehr", Bytes::from_static(payload), "x").unwrap_err();
        assert_eq!(err.to_string(), text);
    }

    /// A payload enqueued without `outbound_item` that cannot be framed dies at once; an idle

    #[test]
    fn ok_error_chain_joins_causes() {
        let error = DeliveryError::GaveUp {
            attempts: 3,
            last: Box::new(DeliveryError::Send {
                control_id: "A1".to_owned(),
                addr: "127.0.0.1:2575".parse().unwrap(),
                source: MllpError::AckTimeout {
                    timeout: Duration::from_millis(50),
                },
            }),
        };
        assert_eq!(
            error_chain(&error),
            "gave up after 3 attempts: cannot deliver `A1` to 127.0.0.1:2575: \
             no response frame within the ack timeout of 50ms"
        );
    }

    #[rstest]
    #[case::nack_text_left_out(
        DeliveryError::Nack { code: "AE".into(), control_id: "A1".into(), text: "patient DUPONT 123456 inconnu".into() },
        "receiver answered AE to `A1` (its text is in the queue: `ordobridge queue`)",
        "receiver answered AE to `A1`: patient DUPONT 123456 inconnu"
    )]
    #[case::gave_up_nack(
        DeliveryError::GaveUp { attempts: 2, last: Box::new(DeliveryError::Nack { code: "AR".into(), control_id: "A1".into(), text: "DUPONT".into() }) },
        "gave up after 2 attempts: receiver answered AR to `A1` (its text is in the queue: `ordobridge queue`)",
        "gave up after 2 attempts: receiver answered AR to `A1`: DUPONT"
    )]
    #[case::nack_without_text(
        DeliveryError::Nack { code: "AE".into(), control_id: "A1".into(), text: String::new() },
        "receiver answered AE to `A1`",
        "receiver answered AE to `A1`"
    )]
    fn ok_log_chain_leaves_the_receiver_text_out(
        #[case] error: DeliveryError,
        #[case] logged: &str,
        #[case] stored: &str,
    ) {
        assert_eq!(log_chain(&error), logged);
        assert_eq!(error_chain(&error), stored);
    }

    #[test]
    fn ok_render_overview() {
        let at = jiff::Timestamp::from_microsecond(1_704_110_400_123_456).unwrap();
        let depths = [
            DestinationDepth {
                destination: "ehr-orders".to_owned(),
                pending: 12,
                dead: 1,
                oldest_pending_at: Some(at),
            },
            DestinationDepth {
                destination: "lab".to_owned(),
                pending: 0,
                dead: 3,
                oldest_pending_at: None,
            },
        ];
        assert_eq!(
            render_overview(&depths),
            "DESTINATION  PENDING  DEAD  OLDEST PENDING\n\
             ehr-orders   12       1     2024-01-01T12:00:00Z\n\
             lab          0        3     -\n"
        );
        assert_eq!(
            render_overview(&[]),
            "no outbound messages pending or dead\n"
        );
    }

    #[test]
    fn ok_render_dead_letters() {
        let letters = [DeadLetter {
            id: 7,
            destination: "ehr".to_owned(),
            enqueued_at: jiff::Timestamp::UNIX_EPOCH,
            control_id: "ORD-7".to_owned(),
            source: "bundle-1".to_owned(),
            attempts: 1,
            reason: "receiver answered AR to `ORD-7`: bad\rline".to_owned(),
            dead_at: Some(jiff::Timestamp::from_second(1_704_110_400).unwrap()),
        }];
        assert_eq!(
            render_dead_letters(&letters),
            "ID  DESTINATION  CONTROL ID  ATTEMPTS  DEAD SINCE            SOURCE    REASON\n\
             7   ehr          ORD-7       1         2024-01-01T12:00:00Z  bundle-1  \
             receiver answered AR to `ORD-7`: bad\\rline\n"
        );
        assert_eq!(render_dead_letters(&[]), "no dead letters\n");
    }
}

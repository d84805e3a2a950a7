//! The inbound MLLP channel: parse, commit, then acknowledge.
//!
//! Nothing is acknowledged AA/CA before its commit; if the store cannot commit, the answer is
//! AE/CE ("not stored") so the sender resends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use bytes::Bytes;
use tracing::{debug, error, info, trace};

use crate::config::InboundChannel;
use crate::hl7::ack::{AckError, AckOutcome, build_ack};
use crate::hl7::{Charset, ErrorCode};
use crate::mllp::codec::Inbound;
use crate::mllp::server::FrameHandler;
use crate::store::{JournalOutcome, Store};

use super::intake::{Intake, Parsed, read_hl7, refused};

/// The frame handler of one inbound MLLP channel: parse, commit, then acknowledge.
pub struct InboundMllp {
    channel: String,
    charset: Option<Charset>,
    log_phi: bool,
    store: Store,
    /// Poked after each commit, so the processor applies the new messages to the census.
    processed: Arc<Notify>,
    /// Makes every ACK control id unique (MSH-10 of the ACK), across restarts too: it starts
    /// from the start time in microseconds.
    ack_sequence: AtomicU64,
}

impl InboundMllp {
    pub fn new(channel: &InboundChannel, store: Store, processed: Arc<Notify>) -> Self {
        let start = jiff::Timestamp::now().as_microsecond();
        InboundMllp {
            channel: channel.name.clone(),
            charset: channel.charset,
            log_phi: channel.log_phi,
            store,
            processed,
            ack_sequence: AtomicU64::new(u64::try_from(start).unwrap_or(0)),
        }
    }

    fn intake<'a>(&'a self, peer: &'a str) -> Intake<'a> {
        Intake {
            channel: &self.channel,
            charset: self.charset,
            log_phi: self.log_phi,
            peer,
        }
    }

    fn next_ack_id(&self) -> String {
        format!("OB{}", self.ack_sequence.fetch_add(1, Ordering::Relaxed))
    }

    /// Builds the answer of one message once the fate of its journal write is known:
    /// `not_stored` says why it could not be committed.
    fn acknowledge(
        &self,
        pending: &Parsed,
        not_stored: Option<&str>,
        timestamp: &str,
    ) -> Option<Bytes> {
        let (outcome, error) = match (&pending.refusal, not_stored) {
            (Some(refusal), _) => (AckOutcome::Rejected, Some(refusal.clone())),
            (None, None) => (AckOutcome::Accepted, None),
            (None, Some(why)) => (
                AckOutcome::Error,
                Some(AckError {
                    code: ErrorCode::ApplicationInternal,
                    location: None,
                    message: format!(
                        "not stored: channel `{}` could not commit the message ({why}); send it again",
                        self.channel
                    ),
                }),
            ),
        };
        build_ack(
            &pending.request,
            outcome,
            error.as_ref(),
            &self.next_ack_id(),
            timestamp,
        )
        .map(Bytes::from)
    }
}

impl FrameHandler for InboundMllp {
    async fn handle(&self, peer: SocketAddr, item: Inbound) -> Vec<Bytes> {
        let started = std::time::Instant::now();
        let peer_text = peer.to_string();
        let intake = self.intake(&peer_text);
        let mut parsed: Vec<Parsed> = match item {
            Inbound::Frame(payload) => {
                if self.log_phi {
                    debug!(peer = %peer, body = %String::from_utf8_lossy(&payload), "frame received");
                } else {
                    trace!(peer = %peer, body = %String::from_utf8_lossy(&payload), "frame received");
                }
                read_hl7(&intake, &payload)
            }
            Inbound::Oversized { head, len } => {
                let reason = format!(
                    "channel `{}`: message of {len} bytes exceeds max_frame_size; only its first {} bytes were kept: raise `max_frame_size` if such messages are legitimate",
                    self.channel,
                    head.len()
                );
                vec![refused(
                    &intake,
                    head,
                    ErrorCode::ApplicationInternal,
                    reason,
                )]
            }
            Inbound::Interrupted { head } => {
                let reason = format!(
                    "channel `{}`: frame interrupted by a new start block (0x0B) before its end block (0x1C): the sender must resend the message whole",
                    self.channel
                );
                vec![refused(
                    &intake,
                    head,
                    ErrorCode::ApplicationInternal,
                    reason,
                )]
            }
        };
        let records = parsed
            .iter_mut()
            .map(|p| {
                debug!(peer = %peer, message_type = %p.record.message_type, control_id = %p.record.control_id, "journaling");
                p.take_record()
            })
            .collect();
        let stored = self.store.journal_many(records).await;
        let timestamp = hl7_now();
        match &stored {
            Ok(outcomes) => {
                self.processed.notify_one();
                for outcome in outcomes {
                    if let JournalOutcome::Duplicate { id, .. } = outcome {
                        info!(peer = %peer, journal_id = id, "duplicate message acknowledged again, not processed twice");
                    }
                }
            }
            Err(e) => {
                error!(peer = %peer, error = %e, "journal commit failed; answering AE/CE (not stored)")
            }
        }
        let store_error = stored.as_ref().err().map(ToString::to_string);
        let acks = parsed
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let not_stored = match &stored {
                    Ok(outcomes) if outcomes.get(i).is_some() => None,
                    Ok(_) => Some("the journal returned no outcome for it"),
                    Err(_) => store_error.as_deref(),
                };
                self.acknowledge(p, not_stored, &timestamp)
            })
            .collect();
        crate::metrics::observe_ack(&self.channel, started.elapsed());
        acks
    }
}

/// Now as an HL7 DTM with seconds and offset (`20261122101500+0100`), in the host's zone.
pub(super) fn hl7_now() -> String {
    jiff::Zoned::now().strftime("%Y%m%d%H%M%S%z").to_string()
}

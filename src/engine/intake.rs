//! Reading an inbound payload (an MLLP frame, a dropped file) into journal records: shared by
//! every channel kind so that a message is judged the same way whichever way it came.

use bytes::Bytes;
use tracing::{debug, trace, warn};

use crate::hl7::ack::{AckError, AckRequest};
use crate::hl7::{BatchError, Charset, ErrorCode, Message};
use crate::store::{InboundRecord, RecordStatus};

/// Where a payload came from, for the journal and the messages.
pub(super) struct Intake<'a> {
    pub channel: &'a str,
    /// The channel's charset override; `None` follows MSH-18.
    pub charset: Option<Charset>,
    /// The channel's `log_phi`: values quoted by a refusal are logged at debug, else trace.
    pub log_phi: bool,
    /// The peer address, or `file:NAME` for a dropped file.
    pub peer: &'a str,
}

/// One message of a payload, on its way to the journal and to its answer.
pub(super) struct Parsed {
    /// Taken (left empty) when the records go to the store.
    pub record: InboundRecord,
    /// What the acknowledgment echoes.
    pub request: AckRequest,
    /// Why the message was refused, before any storage; `None` when it parsed.
    pub refusal: Option<AckError>,
}

impl Parsed {
    /// Moves the record out, for `Store::journal_many`.
    pub(super) fn take_record(&mut self) -> InboundRecord {
        InboundRecord {
            channel: std::mem::take(&mut self.record.channel),
            received_at: self.record.received_at,
            peer: std::mem::take(&mut self.record.peer),
            sender: std::mem::take(&mut self.record.sender),
            message_type: std::mem::take(&mut self.record.message_type),
            control_id: std::mem::take(&mut self.record.control_id),
            raw: std::mem::take(&mut self.record.raw),
            status: std::mem::replace(&mut self.record.status, RecordStatus::Accepted),
        }
    }
}

/// Parses every HL7 message of a payload (one message, several MSH, or an FHS/BHS batch).
pub(super) fn read_hl7(intake: &Intake<'_>, payload: &Bytes) -> Vec<Parsed> {
    let received_at = jiff::Timestamp::now();
    let slices: Vec<&[u8]> = match crate::hl7::batch::split(payload) {
        Ok(batch) => batch.messages(),
        // A batch whose trailer count disagrees is refused whole: some messages are missing,
        // and the sender must resend the batch.
        Err(error @ (BatchError::CountMismatch { .. } | BatchError::BadCount { .. })) => {
            let reason = format!("channel `{}`: batch refused: {error}", intake.channel);
            return vec![refused(
                intake,
                payload.clone(),
                ErrorCode::SegmentSequence,
                reason,
            )];
        }
        // Otherwise the payload is read as one message; its parse error says why.
        Err(_) => vec![payload.as_ref()],
    };
    let single = slices.len() == 1;
    slices
        .into_iter()
        .map(|slice| {
            // A single message keeps the payload's buffer; several share it (no copy).
            let raw = if single {
                payload.clone()
            } else {
                payload.slice_ref(slice)
            };
            match Message::parse_with(slice, intake.charset) {
                // MSH-10 is required: without it the ACK has nothing to echo in MSA-2 and a
                // resent message cannot be told from a new one.
                Ok(message) if message.header_text(10).trim().is_empty() => {
                    let request = AckRequest::from_message(&message);
                    let text = "MSH-10 (message control id) is empty: it is required, so that the ACK can name the message and a resent copy is recognized; give every message a unique MSH-10";
                    let reason = format!("channel `{}`: {text}", intake.channel);
                    warn!(peer = %intake.peer, "message refused: empty MSH-10");
                    Parsed {
                        record: rejected_record(intake, &request, raw, reason),
                        refusal: Some(AckError {
                            code: crate::hl7::ErrorCode::RequiredFieldMissing,
                            location: Some(crate::hl7::ErrLocation {
                                segment: "MSH".to_string(),
                                sequence: 1,
                                field: 10,
                                component: 0,
                            }),
                            message: text.to_string(),
                        }),
                        request,
                    }
                }
                Ok(message) => {
                    // Only the MSH fields the journal keeps are decoded (not the whole header).
                    let application = message.header_text(3);
                    let facility = message.header_text(4);
                    let mut sender = String::with_capacity(application.len() + 1 + facility.len());
                    sender.push_str(&application);
                    sender.push('^');
                    sender.push_str(&facility);
                    Parsed {
                        record: InboundRecord {
                            channel: intake.channel.to_string(),
                            received_at,
                            peer: intake.peer.to_string(),
                            sender,
                            message_type: message.header_text(9).into_owned(),
                            control_id: message.header_text(10).into_owned(),
                            raw,
                            status: RecordStatus::Accepted,
                        },
                        request: AckRequest::from_message(&message),
                        refusal: None,
                    }
                }
                Err(parse_error) => {
                    let request = AckRequest::salvage(slice);
                    let reason = format!("channel `{}`: {parse_error}", intake.channel);
                    warn!(peer = %intake.peer, control_id = lossy(&request.control_id), error = %parse_error.without_values(), "message refused");
                    if intake.log_phi {
                        debug!(peer = %intake.peer, error = %parse_error, "message refused (with values)");
                    } else {
                        trace!(peer = %intake.peer, error = %parse_error, "message refused (with values)");
                    }
                    Parsed {
                        record: rejected_record(intake, &request, raw, reason),
                        refusal: Some(AckError {
                            code: parse_error.code(),
                            location: parse_error.location(),
                            message: parse_error.to_string(),
                        }),
                        request,
                    }
                }
            }
        })
        .collect()
}

/// A payload refused whole (oversized, interrupted, inconsistent batch): journaled as rejected
/// with what was kept, and answered AR/CR when its MSH can be read.
pub(super) fn refused(intake: &Intake<'_>, head: Bytes, code: ErrorCode, reason: String) -> Parsed {
    let request = AckRequest::salvage(&head);
    warn!(peer = %intake.peer, control_id = lossy(&request.control_id), %reason, "payload refused");
    Parsed {
        record: rejected_record(intake, &request, head, reason.clone()),
        refusal: Some(AckError {
            code,
            location: None,
            message: reason,
        }),
        request,
    }
}

fn rejected_record(
    intake: &Intake<'_>,
    request: &AckRequest,
    raw: Bytes,
    reason: String,
) -> InboundRecord {
    InboundRecord {
        channel: intake.channel.to_string(),
        received_at: jiff::Timestamp::now(),
        peer: intake.peer.to_string(),
        sender: format!(
            "{}^{}",
            lossy(&request.sending_application),
            lossy(&request.sending_facility)
        ),
        message_type: lossy(&request.message_type),
        control_id: lossy(&request.control_id),
        raw,
        status: RecordStatus::Rejected { reason },
    }
}

/// Header bytes salvaged from a message, for the journal and the logs.
pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Parses every HPRIM Santé message of a file (H … L, possibly several). HPRIM has no
/// acknowledgment: the request is empty and only the refusal reason matters.
pub(super) fn read_hprim(
    intake: &Intake<'_>,
    payload: &Bytes,
) -> Result<Vec<Parsed>, crate::filedrop::FileRejection> {
    let received_at = jiff::Timestamp::now();
    let messages = crate::hprim::parse_file(payload, intake.charset).map_err(|e| {
        crate::filedrop::FileRejection::new(format!(
            "channel `{}`: not a readable HPRIM Santé file: {e}",
            intake.channel
        ))
    })?;
    let file_name = intake.peer.strip_prefix("file:").unwrap_or(intake.peer);
    let count = messages.len();
    Ok(messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let header = message.header();
            let field = |n: usize, c: usize| {
                header
                    .as_ref()
                    .and_then(|h| h.component_text(n, c))
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            };
            // H.3 names the message (often the file name); several messages in one file
            // without a name are told apart by their rank.
            let control_id = field(3, 1).unwrap_or_else(|| {
                if count == 1 {
                    file_name.to_string()
                } else {
                    format!("{file_name}#{}", i + 1)
                }
            });
            Parsed {
                record: InboundRecord {
                    channel: intake.channel.to_string(),
                    received_at,
                    peer: intake.peer.to_string(),
                    sender: field(5, 1).unwrap_or_default(),
                    message_type: format!(
                        "HPRIM {}",
                        message.message_type().as_deref().unwrap_or("?")
                    ),
                    control_id,
                    raw: payload.slice_ref(message.raw()),
                    status: RecordStatus::Accepted,
                },
                request: AckRequest::default(),
                refusal: None,
            }
        })
        .collect())
}

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
use crate::store::{Journaled, Store};

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
    /// How many rejected frames are journaled per hour (`rejected_max_per_hour`).
    rejected_budget: RejectedBudget,
    /// `ordobridge_ack_latency_seconds` of this channel.
    ack_latency: prometheus_client::metrics::histogram::Histogram,
}

/// How much of the first rejected frame past the hourly budget is journaled.
const REJECTED_HEAD: usize = 4096;

/// Rejected frames journaled per clock hour: past the limit, the first one keeps its first
/// 4 KiB, the next ones are answered (AR) and counted but not journaled, so a sender spewing
/// junk cannot fill the disk. Accepted messages are never limited.
#[derive(Debug)]
pub(super) struct RejectedBudget {
    limit: u64,
    /// (the hour, as unix seconds / 3600; rejected frames seen in it). The lock is held for an
    /// increment.
    window: std::sync::Mutex<(i64, u64)>,
    /// Rejected frames answered but not journaled since start.
    pub(super) not_journaled: Arc<AtomicU64>,
}

/// What to do with one rejected frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RejectedAdmission {
    /// Journal it whole.
    Journal,
    /// The first one past the limit: journal its first 4 KiB and say why.
    JournalHead,
    /// Answer and count, do not journal.
    Count,
}

impl RejectedBudget {
    pub(super) fn new(limit: usize) -> RejectedBudget {
        RejectedBudget {
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            window: std::sync::Mutex::new((0, 0)),
            not_journaled: Arc::default(),
        }
    }

    /// The admission of one more rejected frame at `now_seconds` (unix time).
    pub(super) fn admit(&self, now_seconds: i64) -> RejectedAdmission {
        let hour = now_seconds.div_euclid(3600);
        let Ok(mut window) = self.window.lock() else {
            return RejectedAdmission::Journal;
        };
        if window.0 != hour {
            *window = (hour, 0);
        }
        window.1 += 1;
        let seen = window.1;
        drop(window);
        if seen <= self.limit {
            RejectedAdmission::Journal
        } else if seen == self.limit + 1 {
            RejectedAdmission::JournalHead
        } else {
            self.not_journaled.fetch_add(1, Ordering::Relaxed);
            RejectedAdmission::Count
        }
    }
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
            ack_latency: crate::metrics::ack_histogram(&channel.name),
            rejected_budget: RejectedBudget::new(match &channel.kind {
                crate::config::InboundKind::Mllp(mllp) => mllp.rejected_max_per_hour,
                crate::config::InboundKind::File(_) => usize::MAX,
            }),
        }
    }

    /// Rejected frames answered but not journaled (over `rejected_max_per_hour`), for
    /// `/status` and `/metrics`.
    pub fn rejected_not_journaled(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.rejected_budget.not_journaled)
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
        let mut id = String::with_capacity(22);
        id.push_str("OB");
        push_decimal(&mut id, self.ack_sequence.fetch_add(1, Ordering::Relaxed));
        id
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
        let peer_text = peer_text(peer);
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
        // Which parsed message went to the journal, at which place among the records: a
        // rejected frame past `rejected_max_per_hour` is answered but not journaled.
        let now_seconds = jiff::Timestamp::now().as_second();
        let mut places: Vec<Option<usize>> = Vec::with_capacity(parsed.len());
        let mut records = Vec::with_capacity(parsed.len());
        for p in parsed.iter_mut() {
            if p.refusal.is_some() {
                match self.rejected_budget.admit(now_seconds) {
                    RejectedAdmission::Journal => {}
                    RejectedAdmission::JournalHead => {
                        let mut record = p.take_record();
                        record.raw = record.raw.slice(..record.raw.len().min(REJECTED_HEAD));
                        if let crate::store::RecordStatus::Rejected { reason } = &mut record.status
                        {
                            reason.push_str(&format!(
                                " (`rejected_max_per_hour` reached: only the first {REJECTED_HEAD} bytes kept; further rejected frames this hour are answered and counted, not journaled)"
                            ));
                        }
                        tracing::warn!(peer = %peer, "rejected frames past rejected_max_per_hour: no longer journaled this hour");
                        places.push(Some(records.len()));
                        records.push(record);
                        continue;
                    }
                    RejectedAdmission::Count => {
                        places.push(None);
                        continue;
                    }
                }
            }
            debug!(peer = %peer, message_type = %p.record.message_type, control_id = %p.record.control_id, "journaling");
            places.push(Some(records.len()));
            records.push(p.take_record());
        }
        let stored = if records.is_empty() {
            Ok(Journaled::Committed(Vec::new()))
        } else {
            self.store.journal_intake(records).await
        };
        let timestamp = hl7_now();
        match &stored {
            Ok(intake) => {
                // Through the intake log the rows come later: the log wakes the census once
                // it copied them (`Store::journal_grew`). Woken now, it would read the journal
                // for nothing, once per frame.
                if matches!(intake, Journaled::Committed(_)) {
                    self.processed.notify_one();
                }
                for id in intake.duplicates() {
                    info!(peer = %peer, journal_id = id, "duplicate message acknowledged again, not processed twice");
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
                let place = places.get(i).copied().flatten();
                let not_stored = match &stored {
                    // Not journaled on purpose (over the hourly budget): refused anyway.
                    _ if place.is_none() && p.refusal.is_some() => None,
                    Ok(intake) if place.is_some_and(|at| intake.holds(at)) => None,
                    Ok(_) => Some("the journal returned no outcome for it"),
                    Err(_) => store_error.as_deref(),
                };
                self.acknowledge(p, not_stored, &timestamp)
            })
            .collect();
        self.ack_latency.observe(started.elapsed().as_secs_f64());
        acks
    }
}

/// `peer` as `SocketAddr`'s `Display` writes it (`127.0.0.1:5000`, `[::1]:5000`): IPv4 by
/// hand, without the formatting machinery (it runs for every frame), IPv6 through `Display`.
fn peer_text(peer: SocketAddr) -> String {
    let SocketAddr::V4(v4) = peer else {
        return peer.to_string();
    };
    let mut text = String::with_capacity(21);
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_decimal(&mut text, u64::from(octet));
    }
    text.push(':');
    push_decimal(&mut text, u64::from(v4.port()));
    text
}

/// Appends `n` in decimal, as `Display` writes it.
fn push_decimal(text: &mut String, n: u64) {
    let mut digits = [b'0'; 20];
    let mut rest = n;
    let mut len = 0;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
        len += 1;
        if rest == 0 {
            break;
        }
    }
    let start = digits.len() - len;
    text.extend(digits.iter().skip(start).map(|&d| char::from(d)));
}

/// Now as an HL7 DTM with seconds and offset (`20261122101500+0100`), in the host's zone.
///
/// Formatted once per second and thread: the text only changes with the second, and looking
/// up the zone and formatting cost more than the rest of an ACK.
pub(super) fn hl7_now() -> String {
    thread_local! {
        /// The last second formatted (unix seconds) and its text.
        static LAST: std::cell::RefCell<(i64, String)> =
            const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = jiff::Timestamp::now();
    let second = now.as_second();
    LAST.with_borrow_mut(|(last, text)| {
        if *last != second {
            *text = hl7_dtm(&now.to_zoned(jiff::tz::TimeZone::system()));
            *last = second;
        }
        text.clone()
    })
}

/// An instant as an HL7 DTM with seconds and offset, in its own zone.
fn hl7_dtm(at: &jiff::Zoned) -> String {
    at.strftime("%Y%m%d%H%M%S%z").to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// 10:00:00 on some day, in unix seconds.
    const TEN: i64 = 1_796_104_800;

    #[rstest::rstest]
    #[case::v4("127.0.0.1:2575")]
    #[case::v4_zeros("0.0.0.0:0")]
    #[case::v4_max("255.255.255.255:65535")]
    #[case::v4_mixed("10.20.3.100:50001")]
    #[case::v6("[::1]:2575")]
    #[case::v6_full("[2001:db8::8a2e:370:7334]:8080")]
    fn ok_peer_text_is_display(#[case] addr: &str) {
        let peer: SocketAddr = addr.parse().unwrap();
        assert_eq!(peer_text(peer), peer.to_string());
        assert_eq!(peer_text(peer), addr);
    }

    #[rstest::rstest]
    #[case(0)]
    #[case(7)]
    #[case(10)]
    #[case(1_796_104_800_123_456)]
    #[case(u64::MAX)]
    fn ok_push_decimal_is_display(#[case] n: u64) {
        let mut text = String::from("OB");
        push_decimal(&mut text, n);
        assert_eq!(text, format!("OB{n}"));
    }

    #[test]
    fn ok_hl7_now_is_the_zoned_now_to_the_second() {
        let before = hl7_dtm(&jiff::Zoned::now());
        let now = hl7_now();
        let after = hl7_dtm(&jiff::Zoned::now());
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
        assert_eq!(now.len(), "20261122101500+0100".len());
        // Within the same second, the cached text.
        assert!(hl7_now() >= now);
    }

    #[test]
    fn ok_hl7_dtm_has_seconds_and_offset() {
        let at = jiff::civil::date(2026, 11, 22)
            .at(10, 15, 0, 0)
            .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(1)))
            .unwrap();
        assert_eq!(hl7_dtm(&at), "20261122101500+0100");
    }

    #[test]
    fn ok_rejected_frames_within_the_hourly_budget_are_journaled() {
        let budget = RejectedBudget::new(2);
        assert_eq!(budget.admit(TEN), RejectedAdmission::Journal);
        assert_eq!(budget.admit(TEN + 1), RejectedAdmission::Journal);
        assert_eq!(budget.not_journaled.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn err_past_the_budget_one_head_then_counted_until_the_next_hour() {
        let budget = RejectedBudget::new(2);
        budget.admit(TEN);
        budget.admit(TEN);
        assert_eq!(budget.admit(TEN + 5), RejectedAdmission::JournalHead);
        assert_eq!(budget.admit(TEN + 6), RejectedAdmission::Count);
        assert_eq!(budget.admit(TEN + 3599), RejectedAdmission::Count);
        assert_eq!(budget.not_journaled.load(Ordering::Relaxed), 2);
        // A new hour, a new budget.
        assert_eq!(budget.admit(TEN + 3600), RejectedAdmission::Journal);
    }
}

//! Outbound delivery over MLLP: one worker per destination drains the durable queue, in order.
//!
//! # What a worker does
//!
//! It takes the oldest pending message of its destination (reading up to 32 ahead with
//! [`Store::pending_after`]), sends it on a kept-alive MLLP connection, waits for the answer
//! within the ACK timeout and reads MSA:
//!
//! | answer                                   | outcome                                        |
//! |------------------------------------------|------------------------------------------------|
//! | MSA-1 `AA`/`CA`, MSA-2 = the sent MSH-10 | delivered (the ACK bytes are stored)           |
//! | `AE`/`CE`, unknown code, unreadable ACK  | retried with backoff                           |
//! | MSA-2 ≠ the sent MSH-10                  | retried, logged "ACK for X while waiting for Y"|
//! | timeout, connection lost mid-exchange    | retried with backoff, reconnects               |
//! | `AR`/`CR`, or the retry limit reached    | dead letter, the next message goes             |
//!
//! A retry sends the same bytes (same MSH-10), so the receiver can de-duplicate: delivery is
//! at-least-once. A delivery is recorded behind the next exchange (the next message goes on
//! the wire while the commit runs, up to 64 waiting): a crash before the commit sends it
//! again, which at-least-once allows. Anything but a delivery makes the worker read the
//! queue again from its head. Nothing of a destination is sent while an earlier message of it is pending,
//! and a failing destination never holds up another (each has its own task).
//!
//! When the receiver cannot be reached at all (connect refused or timed out), the message was
//! not sent: the worker backs off and tries again without counting an attempt against the
//! message, so an EHR outage does not turn the whole queue into dead letters.
//!
//! # Waking up
//!
//! Whoever enqueues calls `notify_one` on the destination's [`Notify`] after the commit (the
//! permit is kept if the worker is busy, so no wake-up is lost); a poll interval catches
//! anything else (a replay from the CLI, another process).
//!
//! # Shutdown
//!
//! On cancellation the worker finishes the exchange in flight (send, ACK or timeout, and
//! its store update) and waits for the deliveries still being recorded, then stops; a worker waiting (idle, connecting, in backoff) stops at
//! once.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hl7::{Message, ParseError, readable, readable_prefix};
use crate::mllp::{ClientSettings, MllpClient, MllpError};
use crate::store::{
    DeadLetter, DestinationDepth, OutboundItem, OutboundMessage, Store, StoreError,
};

/// Most bytes of a receiver's error text kept in `last_error` and logs.
const MAX_REASON_BYTES: usize = 200;

/// How a destination backs off after a failed attempt: exponential, capped, with jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
    /// Factor between two successive waits; values below 1 are taken as 1.
    pub multiplier: f64,
    /// Attempts (sends that reached or may have reached the receiver) before a message becomes
    /// a dead letter; 0 means never give up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            multiplier: 2.0,
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th consecutive failure, before jitter:
    /// `initial × multiplier^(failures − 1)`, at most `max`.
    pub fn base_delay(&self, failures: u32) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let seconds = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The base delay with "equal jitter": somewhere in `[base / 2, base]`, picked by `unit`
    /// in `[0, 1)`, so destinations failing together do not retry in lockstep.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let base = self.base_delay(failures);
        let half = base / 2;
        // `mul_f64` panics on NaN: a bad `unit` counts as no jitter.
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        half + half.mul_f64(unit)
    }

    /// Whether a message that has now failed `attempts` times becomes a dead letter.
    pub fn gives_up(&self, attempts: u32) -> bool {
        self.max_attempts != 0 && attempts >= self.max_attempts
    }
}

/// Where and how one destination receives its messages.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationSettings {
    /// Destination name, as in the queue rows and the logs.
    pub name: String,
    /// The receiver's MLLP address.
    pub addr: SocketAddr,
    /// How long to wait for the ACK of one message.
    pub ack_timeout: Duration,
    /// How long opening the connection may take.
    pub connect_timeout: Duration,
    /// Backoff and dead-letter limit.
    pub retry: RetryPolicy,
    /// Safety net: how often an idle worker looks at the queue without being notified.
    pub poll_interval: Duration,
    /// Answers longer than this are refused (and the message retried).
    pub max_frame_bytes: usize,
    /// TLS towards the receiver (`[outbound.NAME.tls]`); `None` speaks plain TCP.
    pub tls: Option<crate::tls::ClientTlsSettings>,
}

impl DestinationSettings {
    /// Settings with the defaults: 30 s ACK timeout, 10 s connect timeout, 5 s poll,
    /// [`RetryPolicy::default`].
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        let client = ClientSettings::default();
        Self {
            name: name.into(),
            addr,
            ack_timeout: Duration::from_secs(30),
            connect_timeout: client.connect_timeout,
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_secs(5),
            max_frame_bytes: client.max_frame_bytes,
            tls: None,
        }
    }
}

/// Counters of one destination's worker, for metrics and tests.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    sent: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    connect_failures: AtomicU64,
    wrong_acks: AtomicU64,
    store_errors: AtomicU64,
}

/// A snapshot of [`DeliveryStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStatsSnapshot {
    /// Messages written to the receiver (each attempt counts).
    pub sent: u64,
    /// Messages acknowledged AA/CA.
    pub delivered: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Messages turned into dead letters.
    pub dead: u64,
    /// Connections that could not be opened.
    pub connect_failures: u64,
    /// ACKs whose MSA-2 named another message.
    pub wrong_acks: u64,
    /// Store reads or writes that failed (the worker backs off and goes on).
    pub store_errors: u64,
}

impl DeliveryStats {
    /// The current values.
    pub fn snapshot(&self) -> DeliveryStatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DeliveryStatsSnapshot {
            sent: get(&self.sent),
            delivered: get(&self.delivered),
            retried: get(&self.retried),
            dead: get(&self.dead),
            connect_failures: get(&self.connect_failures),
            wrong_acks: get(&self.wrong_acks),
            store_errors: get(&self.store_errors),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

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

/// An error and its causes joined with `": "`, as stored in `last_error` and logged.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let _ = write!(text, ": {error}");
        cause = error.source();
    }
    text
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

/// What an answer means for the message it answers.
#[derive(Debug)]
enum Verdict {
    /// AA/CA for this message.
    Delivered,
    /// Try again later (same bytes).
    Retry(DeliveryError),
    /// Refused for good: dead letter.
    Dead(DeliveryError),
}

/// Reads an answer to the message whose MSH-10 is `control_id`.
fn judge_ack(control_id: &str, ack: &[u8]) -> Verdict {
    let message = match Message::parse(ack) {
        Ok(message) => message,
        Err(source) => {
            return Verdict::Retry(DeliveryError::AckUnreadable {
                control_id: control_id.to_owned(),
                source,
            });
        }
    };
    let Some(msa) = message.segment("MSA", 1) else {
        return Verdict::Retry(DeliveryError::AckWithoutMsa {
            control_id: control_id.to_owned(),
        });
    };
    let text = |raw: Option<&[u8]>| {
        raw.map(|raw| message.decode(raw).trim().to_owned())
            .unwrap_or_default()
    };
    let code = text(msa.field(1));
    let acked = text(msa.field(2));
    if acked != control_id {
        return Verdict::Retry(DeliveryError::AckMismatch {
            found: readable_prefix(acked.as_bytes(), MAX_REASON_BYTES),
            expected: control_id.to_owned(),
        });
    }
    let nack = || {
        let err = message.segment("ERR", 1);
        let reason = [
            msa.field(3),
            err.and_then(|s| s.field(8)),
            err.and_then(|s| s.field(3)),
        ]
        .into_iter()
        .map(text)
        .find(|t| !t.is_empty())
        .unwrap_or_default();
        DeliveryError::Nack {
            code: code.clone(),
            control_id: control_id.to_owned(),
            text: readable_prefix(reason.as_bytes(), MAX_REASON_BYTES),
        }
    };
    match code.as_str() {
        "AA" | "CA" => Verdict::Delivered,
        "AE" | "CE" => Verdict::Retry(nack()),
        "AR" | "CR" => Verdict::Dead(nack()),
        _ => Verdict::Retry(DeliveryError::UnknownAckCode {
            code: readable_prefix(code.as_bytes(), 16),
            control_id: control_id.to_owned(),
        }),
    }
}

/// Delivers the queue of one destination until `shutdown` is cancelled (see the module docs).
///
/// Run exactly one per destination: order rests on it. Store failures are logged and
/// retried after the poll interval; the worker stops early only when a store write finds
/// the store closed (reads keep working after `Store::close`, so shut down with `shutdown`).
pub async fn run_destination(
    store: Store,
    settings: DestinationSettings,
    notify: Arc<Notify>,
    stats: Arc<DeliveryStats>,
    shutdown: CancellationToken,
) {
    let tls = match &settings.tls {
        None => None,
        Some(tls) => match tls.client(&format!("outbound/{}", settings.name)) {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::error!(destination = %settings.name, %error, "TLS settings unusable; the destination is not served");
                return;
            }
        },
    };
    // Never paused: the sender goes at once, the flag stays `false`.
    let (_, pause) = tokio::sync::watch::channel(false);
    run_destination_with_tls(store, settings, tls, notify, stats, pause, shutdown).await;
}

/// The pause switch of every destination, by name: an operator pauses a destination (its
/// worker starts no new message; the one in flight finishes) and resumes it. Kept across
/// restarts of a destination's task (a reload); memory only: a daemon restart resumes all.
#[derive(Debug, Default)]
pub struct PauseSwitches {
    /// Locked only to find or add a switch.
    switches:
        std::sync::Mutex<std::collections::BTreeMap<String, tokio::sync::watch::Sender<bool>>>,
}

impl PauseSwitches {
    fn switch(&self, destination: &str) -> tokio::sync::watch::Sender<bool> {
        self.switches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(destination.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(false).0)
            .clone()
    }

    /// What the worker of `destination` watches.
    pub fn receiver(&self, destination: &str) -> tokio::sync::watch::Receiver<bool> {
        self.switch(destination).subscribe()
    }

    /// Pauses (`true`) or resumes `destination`; whether that changed anything.
    pub fn set(&self, destination: &str, paused: bool) -> bool {
        self.switch(destination).send_replace(paused) != paused
    }

    /// Whether `destination` is paused.
    pub fn is_paused(&self, destination: &str) -> bool {
        self.switches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(destination)
            .is_some_and(|switch| *switch.borrow())
    }
}

/// [`run_destination`] with a TLS client built (and registered for reload) by the caller.
pub async fn run_destination_with_tls(
    store: Store,
    settings: DestinationSettings,
    tls: Option<crate::tls::ClientTls>,
    notify: Arc<Notify>,
    stats: Arc<DeliveryStats>,
    pause: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let mut worker = Worker {
        store,
        tls,
        settings,
        notify,
        stats,
        pause,
        shutdown,
        unreachable_streak: 0,
        ahead: VecDeque::new(),
        ahead_valid: false,
        marks: Vec::new(),
    };
    tracing::info!(
        destination = %worker.settings.name,
        addr = %worker.settings.addr,
        "delivery started"
    );
    let mut link = Link::Idle { client: None };
    loop {
        link = match worker.step(link).await {
            Link::Stopped => break,
            next => next,
        };
    }
    // The rows already ACKed are recorded before the worker says it stopped.
    if let Err(error) = worker.settle().await {
        tracing::error!(
            destination = %worker.settings.name,
            error = %error_chain(&error),
            "deliveries not recorded at shutdown; they will be sent again"
        );
    }
    tracing::info!(destination = %worker.settings.name, "delivery stopped");
}

/// The life of a destination's connection; each step consumes the old state.
#[derive(Debug)]
enum Link {
    /// Nothing in flight: look at the head of the queue, or wait for a wake-up.
    Idle {
        /// The kept-alive connection, if one is open and trusted.
        client: Option<MllpClient>,
    },
    /// Opening a connection to send `message`.
    Connecting {
        /// The head of the queue when connecting started.
        message: OutboundMessage,
    },
    /// `message` is being sent on `client`; its ACK must arrive before `deadline`.
    AwaitingAck {
        /// The connection carrying the exchange.
        client: MllpClient,
        /// What is sent.
        message: OutboundMessage,
        /// When the ACK timeout expires.
        deadline: Instant,
    },
    /// Nothing is sent before `until` (message in backoff, receiver unreachable, store
    /// failure).
    Backoff {
        /// When to look at the queue again.
        until: Instant,
        /// The connection to reuse afterwards, if still trusted.
        client: Option<MllpClient>,
    },
    /// Shut down (or the store is closed).
    Stopped,
}

/// One destination's worker: what every step needs.
struct Worker {
    store: Store,
    settings: DestinationSettings,
    /// The TLS client of `settings.tls`, reloadable.
    tls: Option<crate::tls::ClientTls>,
    notify: Arc<Notify>,
    stats: Arc<DeliveryStats>,
    /// `true` while an operator paused the destination: no new message is started (the one
    /// in flight finishes).
    pause: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
    /// Consecutive failures to connect: drives the backoff while the receiver is down.
    unreachable_streak: u32,
    /// Pending rows read ahead, oldest first: the next ones to send while deliveries keep
    /// succeeding.
    ahead: VecDeque<OutboundMessage>,
    /// Whether `ahead` may be used: only right after a successful delivery, so that a
    /// failed, retried or dead-lettered head is read again before anything behind it.
    ahead_valid: bool,
    /// Delivered rows whose `mark_delivered` is still committing (oldest first): the next
    /// message goes on the wire meanwhile. A crash before the commit only sends them again,
    /// with the same MSH-10 (at-least-once).
    marks: Vec<(i64, tokio::task::JoinHandle<Result<bool, StoreError>>)>,
}

/// How many pending rows a worker reads at once.
const READ_AHEAD: usize = 32;

/// How many delivered rows may wait for their commit before the worker waits for them.
const MAX_UNRECORDED: usize = 64;

impl Worker {
    async fn step(&mut self, link: Link) -> Link {
        match link {
            Link::Idle { client } => self.idle(client).await,
            Link::Connecting { message } => self.connect(message).await,
            Link::AwaitingAck {
                client,
                message,
                deadline,
            } => self.exchange(client, message, deadline).await,
            Link::Backoff { until, client } => {
                tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => Link::Stopped,
                    () = tokio::time::sleep_until(until) => Link::Idle { client },
                }
            }
            Link::Stopped => Link::Stopped,
        }
    }

    async fn idle(&mut self, client: Option<MllpClient>) -> Link {
        if self.shutdown.is_cancelled() {
            return Link::Stopped;
        }
        if *self.pause.borrow() {
            // Record what was delivered, then wait for the resume (or the shutdown).
            if let Err(error) = self.settle().await {
                return self.store_failed(&error, client);
            }
            self.ahead.clear();
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Link::Stopped,
                changed = self.pause.changed() => {
                    if changed.is_err() {
                        // The switch is gone: nobody can resume; stop waiting on it.
                        let (_, never) = tokio::sync::watch::channel(false);
                        self.pause = never;
                    }
                }
            }
            return Link::Idle { client };
        }
        if !std::mem::take(&mut self.ahead_valid) {
            self.ahead.clear();
        }
        if self.marks.len() >= MAX_UNRECORDED
            && let Err(error) = self.settle().await
        {
            return self.store_failed(&error, client);
        }
        if self.ahead.is_empty() {
            // Skip the rows sent whose delivery is still committing; from the head otherwise.
            let after = self.marks.last().map_or(0, |(id, _)| *id);
            match self
                .store
                .pending_after_async(&self.settings.name, after, READ_AHEAD)
                .await
            {
                Ok(rows) => self.ahead.extend(rows),
                Err(error) => return self.store_failed(&error, client),
            }
            if self.ahead.is_empty() && !self.marks.is_empty() {
                // Nothing more to send: record what was delivered, then look from the head
                // again (a replayed row may sit before the ones sent).
                if let Err(error) = self.settle().await {
                    return self.store_failed(&error, client);
                }
                return Link::Idle { client };
            }
        }
        let Some(message) = self.ahead.pop_front() else {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Link::Stopped,
                () = self.notify.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
            return Link::Idle { client };
        };
        let wait = until_wall_clock(message.next_attempt_at);
        if !wait.is_zero() {
            // Woken at the poll interval at the latest, to notice a replay or a clock change.
            let until = Instant::now() + wait.min(self.settings.poll_interval);
            return Link::Backoff { until, client };
        }
        match client {
            Some(client) => Link::AwaitingAck {
                client,
                deadline: Instant::now() + self.settings.ack_timeout,
                message,
            },
            None => Link::Connecting { message },
        }
    }

    async fn connect(&mut self, message: OutboundMessage) -> Link {
        let settings = ClientSettings {
            tls: self.tls.clone(),
            connect_timeout: self.settings.connect_timeout,
            max_frame_bytes: self.settings.max_frame_bytes,
        };
        let connected = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => return Link::Stopped,
            connected = MllpClient::connect(self.settings.addr, settings) => connected,
        };
        match connected {
            Ok(client) => {
                if self.unreachable_streak > 0 {
                    tracing::info!(
                        destination = %self.settings.name,
                        addr = %self.settings.addr,
                        failures = self.unreachable_streak,
                        "receiver reachable again"
                    );
                }
                self.unreachable_streak = 0;
                Link::AwaitingAck {
                    client,
                    deadline: Instant::now() + self.settings.ack_timeout,
                    message,
                }
            }
            Err(source) => {
                DeliveryStats::bump(&self.stats.connect_failures);
                self.unreachable_streak = self.unreachable_streak.saturating_add(1);
                let error = DeliveryError::Unreachable {
                    addr: self.settings.addr,
                    source,
                };
                let delay = self.backoff(self.unreachable_streak, message.id);
                // Warn once per outage; the rest is detail.
                if self.unreachable_streak == 1 {
                    tracing::warn!(
                        destination = %self.settings.name,
                        error = %error_chain(&error),
                        pending_id = message.id,
                        "receiver unreachable; retrying with backoff"
                    );
                } else {
                    tracing::debug!(
                        destination = %self.settings.name,
                        error = %error_chain(&error),
                        failures = self.unreachable_streak,
                        retry_in = ?delay,
                        "receiver still unreachable"
                    );
                }
                Link::Backoff {
                    until: Instant::now() + delay,
                    client: None,
                }
            }
        }
    }

    /// Sends `message` and records the outcome. Not interrupted by shutdown: the ACK (or
    /// its timeout) and the store update finish first.
    async fn exchange(
        &mut self,
        mut client: MllpClient,
        message: OutboundMessage,
        deadline: Instant,
    ) -> Link {
        let timeout = deadline.saturating_duration_since(Instant::now());
        DeliveryStats::bump(&self.stats.sent);
        let answer = client.send(&message.payload, timeout).await;
        let (verdict, client) = match answer {
            Ok(ack) => match judge_ack(&message.control_id, &ack) {
                Verdict::Delivered => {
                    return self.delivered(client, &message, ack).await;
                }
                // A NACK leaves the exchange in step: keep the connection.
                Verdict::Retry(error @ DeliveryError::Nack { .. }) => {
                    (Verdict::Retry(error), Some(client))
                }
                Verdict::Dead(error) => (Verdict::Dead(error), Some(client)),
                // Anything else (stale answer, garbage) may leave a late answer on the
                // wire: do not trust this connection with the next exchange.
                Verdict::Retry(error) => (Verdict::Retry(error), None),
            },
            Err(source) => {
                let permanent = matches!(source, MllpError::ReservedByte { .. });
                // The client reports the time that was left of the deadline; the operator
                // knows the configured timeout.
                let source = match source {
                    MllpError::AckTimeout { .. } => MllpError::AckTimeout {
                        timeout: self.settings.ack_timeout,
                    },
                    other => other,
                };
                let error = DeliveryError::Send {
                    control_id: message.control_id.clone(),
                    addr: self.settings.addr,
                    source,
                };
                // A payload holding a framing byte can never be sent: no point retrying.
                // (The client stays usable after that refusal; after any other failure it
                // is broken and dropped.)
                if permanent {
                    (Verdict::Dead(error), Some(client))
                } else {
                    (Verdict::Retry(error), None)
                }
            }
        };
        match verdict {
            Verdict::Dead(error) => self.dead(client, &message, &error).await,
            Verdict::Retry(error) => self.failed(client, &message, error).await,
            Verdict::Delivered => Link::Idle { client },
        }
    }

    async fn delivered(
        &mut self,
        client: MllpClient,
        message: &OutboundMessage,
        ack: Bytes,
    ) -> Link {
        // Recorded behind the next exchange (see `marks`); the store's group commit
        // gathers these marks into few transactions.
        tracing::debug!(
            destination = %self.settings.name,
            id = message.id,
            control_id = %message.control_id,
            "delivered"
        );
        crate::metrics::observe_delivery(&self.settings.name, waited(message.enqueued_at));
        let store = self.store.clone();
        let id = message.id;
        self.marks.push((
            id,
            tokio::spawn(async move { store.mark_delivered(id, ack).await }),
        ));
        self.ahead_valid = true;
        Link::Idle {
            client: Some(client),
        }
    }

    /// Waits until every delivered row is recorded. On a failure the rows not recorded
    /// stay pending and are sent again (a duplicate the receiver can detect by MSH-10),
    /// which is what at-least-once allows.
    async fn settle(&mut self) -> Result<(), StoreError> {
        let mut first_error = None;
        let mut lost = false;
        for (id, mark) in self.marks.drain(..) {
            match mark.await {
                Ok(Ok(_)) => DeliveryStats::bump(&self.stats.delivered),
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(join) => {
                    lost = true;
                    tracing::error!(
                        destination = %self.settings.name,
                        id,
                        error = %join,
                        "recording a delivery failed; it will be sent again"
                    );
                }
            }
        }
        if lost {
            // Read from the head again: the row not recorded goes before what was read ahead.
            self.ahead.clear();
            self.ahead_valid = false;
        }
        match first_error {
            Some(error) => {
                self.ahead.clear();
                self.ahead_valid = false;
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// A failed attempt: retry later, or give up once the limit is reached.
    async fn failed(
        &mut self,
        client: Option<MllpClient>,
        message: &OutboundMessage,
        error: DeliveryError,
    ) -> Link {
        if matches!(error, DeliveryError::AckMismatch { .. }) {
            DeliveryStats::bump(&self.stats.wrong_acks);
        }
        let attempts = message.attempts.saturating_add(1);
        if self.settings.retry.gives_up(attempts) {
            let error = DeliveryError::GaveUp {
                attempts,
                last: Box::new(error),
            };
            return self.dead(client, message, &error).await;
        }
        let delay = self.backoff(attempts, message.id);
        let next = jiff::Timestamp::now()
            .saturating_add(delay)
            .unwrap_or(jiff::Timestamp::MAX);
        let text = error_chain(&error);
        tracing::warn!(
            destination = %self.settings.name,
            id = message.id,
            control_id = %message.control_id,
            attempt = attempts,
            retry_in = ?delay,
            error = %log_chain(&error),
            "delivery failed; will retry"
        );
        tracing::trace!(destination = %self.settings.name, id = message.id, error = %text, "delivery failure in full");
        match self.store.mark_retry(message.id, &text, next).await {
            Ok(_) => {
                DeliveryStats::bump(&self.stats.retried);
                Link::Backoff {
                    until: Instant::now() + delay,
                    client,
                }
            }
            Err(error) => self.store_failed(&error, client),
        }
    }

    async fn dead(
        &mut self,
        client: Option<MllpClient>,
        message: &OutboundMessage,
        error: &DeliveryError,
    ) -> Link {
        let reason = error_chain(error);
        tracing::error!(
            destination = %self.settings.name,
            id = message.id,
            control_id = %message.control_id,
            reason = %log_chain(error),
            "message dead-lettered; the next one proceeds"
        );
        tracing::trace!(destination = %self.settings.name, id = message.id, reason = %reason, "dead letter reason in full");
        match self.store.mark_dead(message.id, &reason).await {
            Ok(_) => {
                DeliveryStats::bump(&self.stats.dead);
                Link::Idle { client }
            }
            Err(error) => self.store_failed(&error, client),
        }
    }

    /// Logs a store failure and waits a poll interval; stops if the store is closed.
    fn store_failed(&mut self, error: &StoreError, client: Option<MllpClient>) -> Link {
        DeliveryStats::bump(&self.stats.store_errors);
        if matches!(error, StoreError::Closed { .. }) {
            tracing::error!(
                destination = %self.settings.name,
                error = %error_chain(error),
                "store closed; delivery stops"
            );
            return Link::Stopped;
        }
        tracing::error!(
            destination = %self.settings.name,
            error = %error_chain(error),
            retry_in = ?self.settings.poll_interval,
            "delivery store access failed"
        );
        Link::Backoff {
            until: Instant::now() + self.settings.poll_interval,
            client,
        }
    }

    /// The jittered backoff after `failures` failures (of a message, or of connecting).
    fn backoff(&self, failures: u32, id: i64) -> Duration {
        // A fresh `RandomState` is seeded differently each time: cheap randomness for jitter.
        let hash = std::hash::RandomState::new().hash_one((id, failures));
        let unit = (hash >> 11) as f64 / (1_u64 << 53) as f64;
        self.settings.retry.delay(failures, unit)
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MSH: &str = "MSH|^~\\&|EHR|CHU|ORDO|POSOS|20240101120000||ACK|A9|P|2.5\r";

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            max_attempts: 3,
        }
    }

    #[rstest]
    #[case::ok_first(1, 100)]
    #[case::ok_second(2, 200)]
    #[case::ok_third(3, 400)]
    #[case::ok_capped(5, 1000)]
    #[case::ok_huge_exponent(u32::MAX, 1000)]
    #[case::ok_zero_failures(0, 100)]
    fn ok_base_delay_grows_and_caps(#[case] failures: u32, #[case] millis: u64) {
        assert_eq!(policy().base_delay(failures), Duration::from_millis(millis));
    }

    #[rstest]
    #[case::ok_low(0.0, 200)]
    #[case::ok_mid(0.5, 300)]
    #[case::ok_high(1.0, 400)]
    #[case::ok_clamped(7.0, 400)]
    #[case::ok_nan(f64::NAN, 200)]
    fn ok_jitter_stays_within_half_and_full(#[case] unit: f64, #[case] millis: u64) {
        let delay = policy().delay(3, unit);
        assert_eq!(delay, Duration::from_millis(millis));
    }

    #[test]
    fn ok_multiplier_below_one_is_constant() {
        let policy = RetryPolicy {
            multiplier: 0.5,
            ..policy()
        };
        assert_eq!(policy.base_delay(4), Duration::from_millis(100));
    }

    #[rstest]
    #[case::ok_below(2, 3, false)]
    #[case::ok_at(3, 3, true)]
    #[case::ok_above(4, 3, true)]
    #[case::ok_unlimited(1000, 0, false)]
    fn ok_gives_up_at_the_limit(#[case] attempts: u32, #[case] max: u32, #[case] gives_up: bool) {
        let policy = RetryPolicy {
            max_attempts: max,
            ..policy()
        };
        assert_eq!(policy.gives_up(attempts), gives_up);
    }

    fn verdict_text(verdict: Verdict) -> (&'static str, String) {
        match verdict {
            Verdict::Delivered => ("delivered", String::new()),
            Verdict::Retry(error) => ("retry", error_chain(&error)),
            Verdict::Dead(error) => ("dead", error_chain(&error)),
        }
    }

    #[rstest]
    #[case::ok_aa("MSA|AA|A1", "delivered", "")]
    #[case::ok_ca("MSA|CA|A1", "delivered", "")]
    #[case::ok_padded("MSA| AA |A1 ", "delivered", "")]
    #[case::err_ae("MSA|AE|A1|busy", "retry", "receiver answered AE to `A1`: busy")]
    #[case::err_ce_no_text("MSA|CE|A1", "retry", "receiver answered CE to `A1`")]
    #[case::err_ar_err8(
        "MSA|AR|A1\rERR||PID^1^3|101^Required field missing^HL70357|E||||unknown patient",
        "dead",
        "receiver answered AR to `A1`: unknown patient"
    )]
    #[case::err_cr_err3(
        "MSA|CR|A1\rERR||PID^1^3|101^Required field missing^HL70357|E",
        "dead",
        "receiver answered CR to `A1`: 101^Required field missing^HL70357"
    )]
    #[case::err_wrong_msa2("MSA|AA|A0", "retry", "ACK for `A0` while waiting for `A1`")]
    #[case::err_missing_msa2("MSA|AA", "retry", "ACK for `` while waiting for `A1`")]
    #[case::err_unknown_code("MSA|OK|A1", "retry", "receiver answered unknown code `OK` to `A1`")]
    #[case::err_no_msa("EVN|A01", "retry", "answer to `A1` has no MSA segment")]
    #[case::err_control_chars_in_text(
        "MSA|AE|A1|bad\x0Bbyte",
        "retry",
        "receiver answered AE to `A1`: bad\\x0Bbyte"
    )]
    fn judge_ack_cases(#[case] msa: &str, #[case] outcome: &str, #[case] text: &str) {
        let ack = format!("{MSH}{msa}\r");
        let (got, got_text) = verdict_text(judge_ack("A1", ack.as_bytes()));
        assert_eq!((got, got_text.as_str()), (outcome, text));
    }

    #[test]
    fn err_unparsable_ack_is_retried() {
        let (outcome, text) = verdict_text(judge_ack("A1", b"\x0Bgarbage"));
        assert_eq!(outcome, "retry");
        assert!(
            text.starts_with("answer to `A1` is not an HL7v2 message: "),
            "{text}"
        );
    }

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
    /// worker stops at once on shutdown.
    #[tokio::test]
    async fn err_unframeable_payload_is_dead_lettered_at_once() {
        use crate::store::{OutboundStatus, StoreOptions};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.sqlite"), StoreOptions::default()).unwrap();
        // A receiver that accepts and never answers: nothing must be sent to it anyway.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ids = store
            .enqueue(vec![OutboundItem {
                destination: "ehr".to_owned(),
                control_id: "A1".to_owned(),
                payload: Bytes::from_static(b"MSH|^~\\&|A|B|||||ORM^O01|A1|P|2.5\r\x0B"),
                source: "test".to_owned(),
            }])
            .await
            .unwrap();
        let stats = Arc::new(DeliveryStats::default());
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(run_destination(
            store.clone(),
            DestinationSettings::new("ehr", addr),
            Arc::new(Notify::new()),
            Arc::clone(&stats),
            shutdown.clone(),
        ));
        let (_socket, _) = listener.accept().await.unwrap();
        let first = *ids.first().unwrap();
        let (message, status) = loop {
            let (message, status) = store.outbound_message(first).unwrap().unwrap();
            if status != OutboundStatus::Pending {
                break (message, status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!((status, message.attempts), (OutboundStatus::Dead, 1));
        assert_eq!(
            message.last_error.unwrap(),
            format!(
                "cannot deliver `A1` to {addr}: payload holds reserved MLLP byte `\\x0B` \
                 at byte offset 34"
            )
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .unwrap()
            .unwrap();
        let stats = stats.snapshot();
        assert_eq!((stats.sent, stats.dead, stats.store_errors), (1, 1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ok_a_retry_inside_a_read_ahead_batch_holds_back_what_follows() {
        use crate::mllp::{Inbound, MllpCodec};
        use crate::store::{OutboundStatus, StoreOptions};
        use futures::{SinkExt, StreamExt};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.sqlite"), StoreOptions::default()).unwrap();
        // A receiver answering AE to the first two copies of FLAKY-3, AA to everything else.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut framed =
                        tokio_util::codec::Framed::new(stream, MllpCodec::new(1 << 20));
                    while let Some(Ok(Inbound::Frame(payload))) = framed.next().await {
                        let id = Message::parse(&payload)
                            .map(|m| m.header().control_id.to_string())
                            .unwrap_or_default();
                        let copies = {
                            let mut log = log.lock().unwrap();
                            log.push(id.clone());
                            log.iter().filter(|seen| **seen == id).count()
                        };
                        let code = if id == "FLAKY-3" && copies <= 2 {
                            "AE"
                        } else {
                            "AA"
                        };
                        let ack = format!("MSH|^~\\&|R|R|||||ACK|A{id}|P|2.5\rMSA|{code}|{id}\r");
                        if framed.send(ack.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        // One enqueue: the worker reads all five ahead.
        let items = ["MSG-1", "MSG-2", "FLAKY-3", "MSG-4", "MSG-5"].map(|id| OutboundItem {
            destination: "ehr".to_owned(),
            control_id: id.to_owned(),
            payload: Bytes::from(format!("MSH|^~\\&|A|B|||||ORM^O01|{id}|P|2.5\r")),
            source: "test".to_owned(),
        });
        let ids = store.enqueue(items.to_vec()).await.unwrap();
        let mut settings = DestinationSettings::new("ehr", addr);
        settings.retry = RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(20),
            multiplier: 1.0,
            max_attempts: 5,
        };
        let stats = Arc::new(DeliveryStats::default());
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(run_destination(
            store.clone(),
            settings,
            Arc::new(Notify::new()),
            Arc::clone(&stats),
            shutdown.clone(),
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ids
            .iter()
            .all(|id| store.outbound_message(*id).unwrap().unwrap().1 == OutboundStatus::Delivered)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "not delivered in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "MSG-1", "MSG-2", "FLAKY-3", "FLAKY-3", "FLAKY-3", "MSG-4", "MSG-5"
            ]
        );
        let stats = stats.snapshot();
        assert_eq!((stats.sent, stats.delivered, stats.retried), (7, 5, 2));
    }

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

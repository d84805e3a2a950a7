//! The MLLP transport: one worker per destination drains the durable queue, in order, over a
//! kept-alive MLLP connection.
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{DeliveryError, log_chain, until_wall_clock, waited};
use crate::hl7::Message;
use crate::mllp::{ClientSettings, MllpClient, MllpError};
use crate::retry::RetryPolicy;
use crate::store::{OutboundMessage, Store, StoreError};
use crate::text::{error_chain, readable_prefix};

/// Most bytes of a receiver's error text kept in `last_error` and logs.
const MAX_REASON_BYTES: usize = 200;

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
    let pause = super::PauseReceiver::never();
    run_destination_with_tls(store, settings, tls, notify, stats, pause, shutdown).await;
}

/// [`run_destination`] with a TLS client built (and registered for reload) by the caller.
pub async fn run_destination_with_tls(
    store: Store,
    settings: DestinationSettings,
    tls: Option<crate::tls::ClientTls>,
    notify: Arc<Notify>,
    stats: Arc<DeliveryStats>,
    pause: super::PauseReceiver,
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
        unsent: Vec::new(),
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
    pause: super::PauseReceiver,
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
    /// Delivered rows not yet handed to the store (newer than every row of `marks`): handed
    /// over [`MARK_BATCH`] at a time, or when nothing more is to be sent for [`MARK_DELAY`],
    /// so that a destination fed one message at a time (one client pushing) does not cost a
    /// commit per delivery in front of the next message's own commit (issue 15).
    unsent: Vec<(i64, Bytes)>,
}

/// How many pending rows a worker reads at once.
const READ_AHEAD: usize = 32;

/// How many delivered rows may wait for their commit before the worker waits for them.
const MAX_UNRECORDED: usize = 64;

/// How many delivered rows are handed to the store together (see `Worker::unsent`).
const MARK_BATCH: usize = 16;

/// How long delivered rows wait for the next message before they are recorded when there is
/// nothing more to send: a message pushed meanwhile is sent first, its mark joins theirs.
const MARK_DELAY: Duration = Duration::from_millis(20);

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
        if self.pause.is_paused() {
            // Record what was delivered, then wait for the resume (or the shutdown).
            if let Err(error) = self.settle().await {
                return self.store_failed(&error, client);
            }
            self.ahead.clear();
            if !self.pause.wait_resumed(&self.shutdown).await {
                return Link::Stopped;
            }
            return Link::Idle { client };
        }
        if !std::mem::take(&mut self.ahead_valid) {
            self.ahead.clear();
        }
        if self.marks.len() + self.unsent.len() >= MAX_UNRECORDED
            && let Err(error) = self.settle().await
        {
            return self.store_failed(&error, client);
        }
        if self.ahead.is_empty() {
            // Skip the rows sent whose delivery is still committing; from the head otherwise.
            let after = self
                .unsent
                .last()
                .map(|(id, _)| *id)
                .or_else(|| self.marks.last().map(|(id, _)| *id))
                .unwrap_or(0);
            match self
                .store
                .pending_after_async(&self.settings.name, after, READ_AHEAD)
                .await
            {
                Ok(rows) => self.ahead.extend(rows),
                Err(error) => return self.store_failed(&error, client),
            }
            if self.ahead.is_empty() && !(self.marks.is_empty() && self.unsent.is_empty()) {
                // Nothing more to send for now: marks not handed over yet wait a moment for
                // the next message (it is sent first, and they are recorded together).
                if !self.unsent.is_empty() {
                    tokio::select! {
                        biased;
                        () = self.shutdown.cancelled() => {}
                        () = self.notify.notified() => return Link::Idle { client },
                        () = tokio::time::sleep(MARK_DELAY) => {}
                    }
                }
                // Record what was delivered, then look from the head again (a replayed row
                // may sit before the ones sent).
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
        if crate::filedrop::companion::is_envelope(&message.payload) {
            let error = DeliveryError::NeedsFolder {
                control_id: message.control_id.clone(),
                destination: self.settings.name.clone(),
            };
            return self.dead(Some(client), &message, &error).await;
        }
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
        self.unsent.push((message.id, ack));
        if self.unsent.len() >= MARK_BATCH {
            self.hand_over();
        }
        self.ahead_valid = true;
        Link::Idle {
            client: Some(client),
        }
    }

    /// Hands the delivered rows of `unsent` to the store: each is recorded behind the next
    /// exchanges (see `marks`).
    fn hand_over(&mut self) {
        for (id, ack) in self.unsent.drain(..) {
            let store = self.store.clone();
            self.marks.push((
                id,
                tokio::spawn(async move { store.mark_delivered(id, ack).await }),
            ));
        }
    }

    /// Waits until every delivered row is recorded. On a failure the rows not recorded
    /// stay pending and are sent again (a duplicate the receiver can detect by MSH-10),
    /// which is what at-least-once allows.
    async fn settle(&mut self) -> Result<(), StoreError> {
        self.hand_over();
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
        self.settings.retry.jittered(failures, id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::OutboundItem;
    use rstest::rstest;

    const MSH: &str = "MSH|^~\\&|EHR|CHU|ORDO|POSOS|20240101120000||ACK|A9|P|2.5\r";

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

    /// Queues `payload` as `A1` for a receiver that accepts and never answers, and returns
    /// its dead letter (status and attempts checked), the receiver's address and the
    /// worker's counters.
    async fn dead_letter_of(
        payload: Bytes,
    ) -> (OutboundMessage, SocketAddr, DeliveryStatsSnapshot) {
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
                payload,
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
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .unwrap()
            .unwrap();
        (message, addr, stats.snapshot())
    }

    #[tokio::test]
    async fn err_unframeable_payload_is_dead_lettered_at_once() {
        let (message, addr, stats) = dead_letter_of(Bytes::from_static(
            b"MSH|^~\\&|A|B|||||ORM^O01|A1|P|2.5\r\x0B",
        ))
        .await;
        assert_eq!(
            message.last_error.unwrap(),
            format!(
                "cannot deliver `A1` to {addr}: payload holds reserved MLLP byte `\\x0B` \
                 at byte offset 34"
            )
        );
        assert_eq!((stats.sent, stats.dead, stats.store_errors), (1, 1, 0));
    }

    /// A destination changed from a folder to MLLP while documents (HPRIM + PDF) waited for
    /// it: they are dead-lettered with the way out, never sent as frames.
    #[tokio::test]
    async fn err_document_envelope_is_dead_lettered_not_sent_over_mllp() {
        let envelope =
            crate::filedrop::companion::encode(b"H|~^\\&|A1\r\nL|1\r\n", "pdf", b"%PDF-1.4");
        let (message, _, stats) = dead_letter_of(Bytes::from(envelope)).await;
        assert_eq!(
            message.last_error.unwrap(),
            "`A1` was queued with a document file for a file destination; destination `ehr` now \
             delivers over MLLP, which cannot carry the file: point the destination back to a \
             folder and replay the dead letter, or send the document again"
        );
        assert_eq!((stats.sent, stats.dead, stats.store_errors), (0, 1, 0));
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
}

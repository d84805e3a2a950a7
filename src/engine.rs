//! The wiring: one place a reader can follow from top to bottom.
//!
//! [`run`] loads nothing itself: it takes a validated [`Config`], opens the store, binds (or
//! takes already-bound) listeners, spawns one MLLP server per inbound channel, and waits for
//! the shutdown signal. Then it lets every connection finish the message in flight and its ACK,
//! and closes the store after the last commit.
//!
//! [`InboundMllp`] is the frame handler of one inbound channel: it parses, journals (commit),
//! and only then builds the acknowledgment. Nothing is acknowledged AA/CA before its commit;
//! if the store cannot commit, the answer is AE/CE ("not stored") so the sender resends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, trace, warn};

use crate::config::{Config, InboundChannel, InboundKind};
use crate::hl7::ack::{AckError, AckOutcome, AckRequest, build_ack};
use crate::hl7::{Charset, ErrorCode, Message};
use crate::mllp::codec::Inbound;
use crate::mllp::server::{FrameHandler, ServerSettings, ServerStats, serve};
use crate::store::{InboundRecord, JournalOutcome, RecordStatus, Store, StoreError, StoreOptions};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot open the store `{path}`: {source}")]
    Store {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "channel `{channel}`: cannot listen on {addr}: {source} (is another process using the port?)"
    )]
    Bind {
        channel: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("channel `{channel}`: the listener stopped: {source}")]
    Serve {
        channel: String,
        #[source]
        source: std::io::Error,
    },
}

/// Listeners bound before [`run`], by channel name: tests bind `127.0.0.1:0` and read the port.
pub type BoundListeners = BTreeMap<String, TcpListener>;

/// A running inbound channel as seen from outside (tests, future metrics).
#[derive(Debug, Clone)]
pub struct ChannelHandle {
    pub name: String,
    pub local_addr: SocketAddr,
    pub stats: Arc<ServerStats>,
}

/// Binds every MLLP listener of the configuration that is not already in `bound`.
pub async fn bind_listeners(
    config: &Config,
    mut bound: BoundListeners,
) -> Result<BoundListeners, EngineError> {
    for (name, channel) in &config.inbound {
        let InboundKind::Mllp(mllp) = &channel.kind;
        if bound.contains_key(name) {
            continue;
        }
        let listener = TcpListener::bind(mllp.bind)
            .await
            .map_err(|source| EngineError::Bind {
                channel: name.clone(),
                addr: mllp.bind,
                source,
            })?;
        bound.insert(name.clone(), listener);
    }
    Ok(bound)
}

/// Runs the daemon until `shutdown` is cancelled, then drains and returns.
///
/// `on_ready` is called once every listener is accepting, with their addresses (the binary
/// uses it to tell systemd; tests use it to learn the ports).
pub async fn run(
    config: Config,
    listeners: BoundListeners,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&[ChannelHandle]),
) -> Result<(), EngineError> {
    let store = Store::open(
        &config.store.path,
        StoreOptions {
            queue_capacity: config.store.queue_capacity,
            max_batch: config.store.max_batch,
        },
    )
    .map_err(|source| EngineError::Store {
        path: config.store.path.display().to_string(),
        source,
    })?;
    info!(path = %config.store.path.display(), "store open");

    let listeners = bind_listeners(&config, listeners).await?;
    let tracker = TaskTracker::new();
    let mut handles = Vec::new();
    let mut servers = Vec::new();
    for (name, listener) in listeners {
        let Some(channel) = config.inbound.get(&name) else {
            warn!(channel = %name, "a listener was given for a channel that is not configured; ignored");
            continue;
        };
        let InboundKind::Mllp(mllp) = &channel.kind;
        let local_addr = listener.local_addr().map_err(|source| EngineError::Bind {
            channel: name.clone(),
            addr: mllp.bind,
            source,
        })?;
        let stats = Arc::new(ServerStats::default());
        let settings = ServerSettings {
            max_connections: mllp.max_connections,
            max_frame_bytes: mllp.max_frame_bytes,
            read_timeout: mllp.read_timeout,
            idle_timeout: mllp.idle_timeout,
        };
        let handler = Arc::new(InboundMllp::new(channel, store.clone()));
        info!(channel = %name, addr = %local_addr, "MLLP listener ready");
        handles.push(ChannelHandle {
            name: name.clone(),
            local_addr,
            stats: stats.clone(),
        });
        let token = shutdown.child_token();
        let span = info_span!("channel", channel = %name);
        servers.push(
            tracker.spawn(
                async move {
                    serve(listener, settings, handler, stats, token)
                        .await
                        .map_err(|source| EngineError::Serve {
                            channel: name,
                            source,
                        })
                }
                .instrument(span),
            ),
        );
    }
    tracker.close();
    on_ready(&handles);

    shutdown.cancelled().await;
    info!("shutting down: finishing messages in flight");
    let mut result = Ok(());
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "listener failed");
                result = Err(e);
            }
            Err(e) => error!(error = %e, "listener task panicked"),
        }
    }
    tracker.wait().await;
    store.close().await;
    info!("stopped");
    result
}

/// The frame handler of one inbound MLLP channel: parse, commit, then acknowledge.
pub struct InboundMllp {
    channel: String,
    charset: Option<Charset>,
    log_phi: bool,
    store: Store,
    /// Makes every ACK control id unique (MSH-10 of the ACK), across restarts too: it starts
    /// from the start time in microseconds.
    ack_sequence: AtomicU64,
}

/// One message of a frame, on its way to the journal.
struct Pending {
    request: AckRequest,
    /// Why the message was refused, before any storage; `None` when it parsed.
    refusal: Option<AckError>,
}

impl InboundMllp {
    pub fn new(channel: &InboundChannel, store: Store) -> Self {
        let start = jiff::Timestamp::now().as_microsecond();
        InboundMllp {
            channel: channel.name.clone(),
            charset: channel.charset,
            log_phi: channel.log_phi,
            store,
            ack_sequence: AtomicU64::new(u64::try_from(start).unwrap_or(0)),
        }
    }

    /// Parses every message of a frame into a journal record and its ACK request.
    fn read_frame(&self, peer: SocketAddr, payload: &Bytes) -> Vec<(InboundRecord, Pending)> {
        let received_at = jiff::Timestamp::now();
        let slices: Vec<&[u8]> = match crate::hl7::batch::split(payload) {
            Ok(batch) => batch.messages(),
            // A batch whose trailer count disagrees is refused whole: some messages are
            // missing, and the sender must resend the batch.
            Err(
                error @ (crate::hl7::BatchError::CountMismatch { .. }
                | crate::hl7::BatchError::BadCount { .. }),
            ) => {
                let reason = format!("channel `{}`: batch refused: {error}", self.channel);
                let (record, pending) =
                    self.refuse_frame(peer, payload.clone(), ErrorCode::SegmentSequence, reason);
                return vec![(record, pending)];
            }
            // Otherwise the payload is answered as one message; its parse error says why.
            Err(_) => vec![payload.as_ref()],
        };
        let single = slices.len() == 1;
        slices
            .into_iter()
            .map(|slice| {
                // A single message keeps the frame's buffer (no copy); several share it too.
                let raw = if single {
                    payload.clone()
                } else {
                    payload.slice_ref(slice)
                };
                match Message::parse_with(slice, self.charset) {
                    Ok(message) => {
                        let header = message.header();
                        let record = InboundRecord {
                            channel: self.channel.clone(),
                            received_at,
                            peer: peer.to_string(),
                            sender: format!(
                                "{}^{}",
                                header.sending_application, header.sending_facility
                            ),
                            message_type: header.message_type.clone(),
                            control_id: header.control_id.clone(),
                            raw,
                            status: RecordStatus::Accepted,
                        };
                        let pending = Pending {
                            request: AckRequest::from_message(&message),
                            refusal: None,
                        };
                        (record, pending)
                    }
                    Err(parse_error) => {
                        let request = AckRequest::salvage(slice);
                        let reason = format!("channel `{}`: {parse_error}", self.channel);
                        warn!(peer = %peer, control_id = lossy(&request.control_id), error = %parse_error, "message refused");
                        let record = InboundRecord {
                            channel: self.channel.clone(),
                            received_at,
                            peer: peer.to_string(),
                            sender: request_sender(&request),
                            message_type: request_message_type(&request),
                            control_id: lossy(&request.control_id),
                            raw,
                            status: RecordStatus::Rejected {
                                reason: reason.clone(),
                            },
                        };
                        let refusal = AckError {
                            code: parse_error.code(),
                            location: parse_error.location(),
                            message: parse_error.to_string(),
                        };
                        (
                            record,
                            Pending {
                                request,
                                refusal: Some(refusal),
                            },
                        )
                    }
                }
            })
            .collect()
    }

    /// A frame refused whole (oversized, interrupted, inconsistent batch): journaled as
    /// rejected with what was kept, and answered AR/CR when its MSH can be read.
    fn refuse_frame(
        &self,
        peer: SocketAddr,
        head: Bytes,
        code: ErrorCode,
        reason: String,
    ) -> (InboundRecord, Pending) {
        let request = AckRequest::salvage(&head);
        warn!(peer = %peer, control_id = lossy(&request.control_id), %reason, "frame refused");
        let record = InboundRecord {
            channel: self.channel.clone(),
            received_at: jiff::Timestamp::now(),
            peer: peer.to_string(),
            sender: request_sender(&request),
            message_type: request_message_type(&request),
            control_id: lossy(&request.control_id),
            raw: head,
            status: RecordStatus::Rejected {
                reason: reason.clone(),
            },
        };
        let refusal = AckError {
            code,
            location: None,
            message: reason,
        };
        (
            record,
            Pending {
                request,
                refusal: Some(refusal),
            },
        )
    }

    fn next_ack_id(&self) -> String {
        format!("OB{}", self.ack_sequence.fetch_add(1, Ordering::Relaxed))
    }

    /// Builds the answer of one message once the fate of its journal write is known:
    /// `not_stored` says why it could not be committed.
    fn acknowledge(
        &self,
        pending: &Pending,
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
        let (records, pending): (Vec<InboundRecord>, Vec<Pending>) = match item {
            Inbound::Frame(payload) => {
                if self.log_phi {
                    debug!(peer = %peer, body = %String::from_utf8_lossy(&payload), "frame received");
                } else {
                    trace!(peer = %peer, body = %String::from_utf8_lossy(&payload), "frame received");
                }
                self.read_frame(peer, &payload).into_iter().unzip()
            }
            Inbound::Oversized { head, len } => {
                let reason = format!(
                    "channel `{}`: message of {len} bytes exceeds max_frame_size; only its first {} bytes were kept: raise `max_frame_size` if such messages are legitimate",
                    self.channel,
                    head.len()
                );
                let (record, pending) =
                    self.refuse_frame(peer, head, ErrorCode::ApplicationInternal, reason);
                (vec![record], vec![pending])
            }
            Inbound::Interrupted { head } => {
                let reason = format!(
                    "channel `{}`: frame interrupted by a new start block (0x0B) before its end block (0x1C): the sender must resend the message whole",
                    self.channel
                );
                let (record, pending) =
                    self.refuse_frame(peer, head, ErrorCode::ApplicationInternal, reason);
                (vec![record], vec![pending])
            }
        };
        for record in &records {
            debug!(peer = %peer, message_type = %record.message_type, control_id = %record.control_id, "journaling");
        }
        let stored = self.store.journal_many(records).await;
        let timestamp = hl7_now();
        match &stored {
            Ok(outcomes) => {
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
        pending
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
            .collect()
    }
}

/// Now as an HL7 DTM with seconds and offset (`20261122101500+0100`), in the host's zone.
fn hl7_now() -> String {
    jiff::Zoned::now().strftime("%Y%m%d%H%M%S%z").to_string()
}

/// Header bytes salvaged from a message, for the journal and the logs.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The journal's sender key: MSH-3^MSH-4.
fn request_sender(request: &AckRequest) -> String {
    format!(
        "{}^{}",
        lossy(&request.sending_application),
        lossy(&request.sending_facility)
    )
}

/// MSH-9 as far as it could be read.
fn request_message_type(request: &AckRequest) -> String {
    lossy(&request.message_type)
}

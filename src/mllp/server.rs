//! The MLLP server: an accept loop (`Listener`) and one task per connection (`Handler`)
//! that reads items in order, hands each to the caller's [`FrameHandler`] and writes back its
//! answers before reading the next.
//!
//! Bounded by design: a semaphore caps the connections (the next peer waits in the kernel
//! backlog until a slot frees), a connection reads only when it has no complete item buffered,
//! and the codec never buffers more than one maximum-size payload plus one read.
//!
//! Access: right after `accept`, before anything is read, a peer outside the allowed networks
//! or already holding `max_connections_per_peer` connections is closed, counted in
//! `refused_peers` and logged with its address only.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use super::MllpError;
use super::codec::{DEFAULT_MAX_FRAME_BYTES, Inbound, MllpCodec};
use crate::http::AllowList;
use crate::text::error_chain;
use crate::tls::{BoxedStream, PeerCertificate, ServerTls};

/// Connections one peer address may hold at once unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 32;

/// How much room a connection reserves in its read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Longest pause of the accept loop after repeated accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(64);

/// Limits of one MLLP listener, chosen per channel by the caller.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Connections served at once; further peers wait in the backlog until one closes.
    pub max_connections: usize,
    /// Payloads longer than this are discarded and reported as [`Inbound::Oversized`].
    pub max_frame_bytes: usize,
    /// How long a frame that has started may take to finish; also bounds writing an answer.
    pub read_timeout: Duration,
    /// How long a connection may stay silent between frames before it is closed.
    pub idle_timeout: Duration,
    /// Source networks allowed to connect; `None` lets any address in (the listener binds
    /// where the operator says, so this is the backwards-compatible default).
    pub allow: Option<AllowList>,
    /// Connections one peer address may hold at once; one more is closed right after
    /// `accept`, so one sender cannot take every slot of `max_connections`.
    pub max_connections_per_peer: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl ServerSettings {
    /// The defaults, the same for the library and the configuration (`[inbound.NAME]`).
    pub const DEFAULT: ServerSettings = ServerSettings {
        max_connections: 256,
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(15 * 60),
        allow: None,
        max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
    };

    fn validate(&self) -> io::Result<()> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        if self.max_connections == 0 {
            return Err(invalid("mllp server: max_connections must be at least 1"));
        }
        if self.max_connections > Semaphore::MAX_PERMITS {
            return Err(invalid("mllp server: max_connections is too large"));
        }
        if self.max_frame_bytes == 0 {
            return Err(invalid("mllp server: max_frame_bytes must be at least 1"));
        }
        if self.max_connections_per_peer == 0 {
            return Err(invalid(
                "mllp server: max_connections_per_peer must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What the server does with each inbound item; implemented by the wiring (journal, ACK).
pub trait FrameHandler: Send + Sync + 'static {
    /// Answers one inbound item; returns the payloads to send back, in order (usually one ACK;
    /// several for a frame holding several messages; none is allowed).
    fn handle(&self, peer: SocketAddr, item: Inbound) -> impl Future<Output = Vec<Bytes>> + Send;
}

/// Counters of one listener, shared with whoever reports metrics; all relaxed atomics.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections currently being served.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Complete frames received.
    pub frames: AtomicU64,
    /// Frames refused for their size.
    pub oversized: AtomicU64,
    /// Frames cut by a start block.
    pub interrupted: AtomicU64,
    /// Bytes skipped outside frames (garbage, NULs, stray line ends).
    pub skipped_bytes: AtomicU64,
    /// Frames whose end block was not followed by a CR (accepted anyway).
    pub missing_trailers: AtomicU64,
    /// Connections closed by the idle or mid-frame timeout.
    pub timeouts: AtomicU64,
    /// Connections that ended inside a frame.
    pub truncated: AtomicU64,
    /// Times the accept loop reached `max_connections` and paused accepting (the next peer
    /// waits in the backlog; it is not refused).
    pub limit_waits: AtomicU64,
    /// Failed `accept` calls (the loop backs off and goes on).
    pub accept_errors: AtomicU64,
    /// Connections ended by a read or write error.
    pub io_errors: AtomicU64,
    /// TLS listener: connections whose first byte was an MLLP start block (plain MLLP spoken
    /// to a TLS port), closed before any handshake.
    pub tls_plain_refused: AtomicU64,
    /// TLS listener: failed or timed-out handshakes (unknown CA, no client certificate, …).
    pub tls_handshake_failures: AtomicU64,
    /// Connections closed right after `accept`, unread: the peer is outside the allowed
    /// networks or already holds `max_connections_per_peer` connections.
    pub refused_peers: AtomicU64,
}

/// A plain copy of [`ServerStats`] at one instant, for reports and tests; the fields mean what
/// the same fields of [`ServerStats`] mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStatsSnapshot {
    pub connections_open: u64,
    pub connections_total: u64,
    pub frames: u64,
    pub oversized: u64,
    pub interrupted: u64,
    pub skipped_bytes: u64,
    pub missing_trailers: u64,
    pub timeouts: u64,
    pub truncated: u64,
    pub limit_waits: u64,
    pub accept_errors: u64,
    pub io_errors: u64,
    pub tls_plain_refused: u64,
    pub tls_handshake_failures: u64,
    pub refused_peers: u64,
}

impl ServerStats {
    /// Reads every counter (each one atomically, not all together).
    pub fn snapshot(&self) -> ServerStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStatsSnapshot {
            connections_open: get(&self.connections_open),
            connections_total: get(&self.connections_total),
            frames: get(&self.frames),
            oversized: get(&self.oversized),
            interrupted: get(&self.interrupted),
            skipped_bytes: get(&self.skipped_bytes),
            missing_trailers: get(&self.missing_trailers),
            timeouts: get(&self.timeouts),
            truncated: get(&self.truncated),
            limit_waits: get(&self.limit_waits),
            accept_errors: get(&self.accept_errors),
            io_errors: get(&self.io_errors),
            tls_plain_refused: get(&self.tls_plain_refused),
            tls_handshake_failures: get(&self.tls_handshake_failures),
            refused_peers: get(&self.refused_peers),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Serves MLLP on an already-bound listener until `shutdown` is cancelled, then waits for every
/// connection to finish its frame in flight; tests pass a `127.0.0.1:0` listener.
///
/// Fails only on invalid settings: accept and connection errors are logged and counted.
pub async fn serve<H: FrameHandler>(
    listener: TcpListener,
    settings: ServerSettings,
    handler: Arc<H>,
    stats: Arc<ServerStats>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_tls(listener, settings, None, handler, stats, shutdown).await
}

/// [`serve`], with TLS when `tls` is given: each connection runs its handshake (within the
/// read timeout) before its first frame, with the configuration current at accept.
pub async fn serve_tls<H: FrameHandler>(
    listener: TcpListener,
    settings: ServerSettings,
    tls: Option<ServerTls>,
    handler: Arc<H>,
    stats: Arc<ServerStats>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    settings.validate()?;
    let local = listener.local_addr().ok();
    info!(addr = ?local, max_connections = settings.max_connections, tls = tls.is_some(), "mllp listener started");
    let server = Listener {
        tls,
        limit: Arc::new(Semaphore::new(settings.max_connections)),
        listener,
        settings,
        handler,
        stats,
        shutdown,
        tracker: TaskTracker::new(),
        per_peer: Arc::new(Mutex::new(HashMap::new())),
    };
    server.run().await;
    // Close the listening socket before draining, so new peers are refused rather than left
    // in the backlog while the open connections finish.
    let Listener {
        tracker, listener, ..
    } = server;
    drop(listener);
    tracker.close();
    tracker.wait().await;
    info!(addr = ?local, "mllp listener stopped");
    Ok(())
}

/// The accept loop.
struct Listener<H> {
    listener: TcpListener,
    /// TLS configuration of the listener, reloadable; `None` for plain MLLP.
    tls: Option<ServerTls>,
    settings: ServerSettings,
    handler: Arc<H>,
    stats: Arc<ServerStats>,
    /// Stops accepting; each connection watches it between frames.
    shutdown: CancellationToken,
    /// One permit per open connection, taken before `accept` so the limit holds.
    limit: Arc<Semaphore>,
    /// Connection tasks, so `serve` can wait for them at shutdown.
    tracker: TaskTracker,
    /// Open connections per peer address, for `max_connections_per_peer`; an address leaves
    /// the map when its last connection ends.
    per_peer: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Why a peer is closed right after `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotAllowed,
    TooManyConnections,
}

impl<H: FrameHandler> Listener<H> {
    async fn run(&self) {
        loop {
            let Some(permit) = self.acquire_slot().await else {
                return;
            };
            let Some((socket, peer)) = self.accept().await else {
                return;
            };
            // Checked before anything is read or any handler is built: a refused peer is
            // closed (the socket dropped) and its slot freed at once.
            let peer_slot = match self.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    bump(&self.stats.refused_peers);
                    match refusal {
                        Refusal::NotAllowed => {
                            warn!(%peer, "mllp connection refused: address not in the channel's `allow` networks");
                        }
                        Refusal::TooManyConnections => {
                            warn!(%peer, max_connections_per_peer = self.settings.max_connections_per_peer, "mllp connection refused: this address already holds `max_connections_per_peer` connections");
                        }
                    }
                    drop(socket);
                    continue;
                }
            };
            if let Err(error) = socket.set_nodelay(true) {
                debug!(%peer, %error, "cannot set TCP_NODELAY");
            }
            bump(&self.stats.connections_open);
            bump(&self.stats.connections_total);
            debug!(%peer, "mllp connection accepted");
            self.spawn_connection(socket, peer, permit, peer_slot);
        }
    }

    /// Serves one accepted connection in its own task: the TLS handshake first when the
    /// listener has TLS, then the frames.
    fn spawn_connection(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        peer_slot: PeerSlot,
    ) {
        let slot = Slot {
            _permit: permit,
            stats: Arc::clone(&self.stats),
            _peer: peer_slot,
        };
        let handler = Arc::clone(&self.handler);
        let stats = Arc::clone(&self.stats);
        let shutdown = self.shutdown.clone();
        let settings = self.settings.clone();
        let tls = self.tls.clone();
        self.tracker.spawn(
            async move {
                let stream: BoxedStream = match tls {
                    None => Box::new(socket),
                    Some(tls) => {
                        let handshake =
                            handshake(socket, peer, &tls, settings.read_timeout, &stats);
                        let stream = tokio::select! {
                            biased;
                            () = shutdown.cancelled() => return,
                            stream = handshake => stream,
                        };
                        match stream {
                            Some(stream) => stream,
                            None => return,
                        }
                    }
                };
                let handler = Handler {
                    peer,
                    conn: Connection::new(stream, &settings),
                    handler,
                    stats,
                    shutdown,
                    _slot: slot,
                };
                handler.run().await;
            }
            .in_current_span(),
        );
    }

    /// Whether `ip` may open one more connection: in the allowed networks and under its
    /// per-peer limit; on success its count is taken until the returned guard drops.
    fn admit(&self, ip: IpAddr) -> Result<PeerSlot, Refusal> {
        if let Some(allow) = &self.settings.allow
            && !allow.allows(ip)
        {
            return Err(Refusal::NotAllowed);
        }
        // Held only to read and bump one count.
        let mut counts = self.per_peer.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip.to_canonical()).or_default();
        if *count >= self.settings.max_connections_per_peer {
            return Err(Refusal::TooManyConnections);
        }
        *count += 1;
        Ok(PeerSlot {
            ip: ip.to_canonical(),
            counts: Arc::clone(&self.per_peer),
        })
    }

    /// Waits for a free connection slot; `None` on shutdown.
    async fn acquire_slot(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() {
            return Some(permit);
        }
        bump(&self.stats.limit_waits);
        debug!(
            max_connections = self.settings.max_connections,
            "connection limit reached, waiting for a slot"
        );
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => None,
            permit = Arc::clone(&self.limit).acquire_owned() => permit.ok(),
        }
    }

    /// Accepts the next connection, backing off (1 s, 2 s, … 64 s) after errors such as
    /// running out of file descriptors; `None` on shutdown.
    async fn accept(&self) -> Option<(TcpStream, SocketAddr)> {
        let mut backoff = Duration::from_secs(1);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return None,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => return Some(pair),
                    Err(error) => {
                        bump(&self.stats.accept_errors);
                        warn!(%error, backoff_secs = backoff.as_secs(), "accept failed, backing off");
                    }
                },
            }
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
        }
    }
}

/// Runs the TLS handshake of one connection within `timeout`; `None` (logged with the peer
/// and the reason, counted) when it fails. A peer whose first byte is an MLLP start block
/// speaks plain MLLP to this TLS port: it is refused before any handshake.
async fn handshake(
    socket: TcpStream,
    peer: SocketAddr,
    tls: &ServerTls,
    timeout: Duration,
    stats: &ServerStats,
) -> Option<BoxedStream> {
    let config = tls.current();
    let attempt = async {
        let mut first = [0u8; 1];
        if socket.peek(&mut first).await? == 1 && first[0] == 0x0B {
            return Ok(Err(()));
        }
        tokio_rustls::TlsAcceptor::from(config)
            .accept(socket)
            .await
            .map(Ok)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(Ok(stream))) => {
            let names = PeerCertificate::from_connection(stream.get_ref().1).map(|c| c.names);
            debug!(%peer, client_names = ?names, "TLS handshake done");
            Some(Box::new(stream))
        }
        Ok(Ok(Err(()))) => {
            bump(&stats.tls_plain_refused);
            warn!(%peer, reason = "plain MLLP spoken to a TLS port: the peer sent an MLLP start block (0x0B) instead of a TLS handshake; configure TLS on the sender or send to the plain port", "TLS connection refused");
            None
        }
        Ok(Err(error)) => {
            bump(&stats.tls_handshake_failures);
            warn!(%peer, reason = %crate::tls::handshake_reason(&error), "TLS handshake failed");
            None
        }
        Err(_elapsed) => {
            bump(&stats.tls_handshake_failures);
            warn!(%peer, timeout = ?timeout, reason = "no TLS handshake within the read timeout", "TLS handshake failed");
            None
        }
    }
}

/// Releases a connection slot and its gauge when the connection task ends, even by a panic in
/// the frame handler.
struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<ServerStats>,
    _peer: PeerSlot,
}

/// One connection counted against its peer address; uncounted on drop.
struct PeerSlot {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        // Held only to decrement one count.
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection: read an item, let the frame handler answer it, write the answers, repeat.
///
/// At shutdown the item being handled is answered; a frame still being received is dropped
/// unanswered (the sender resends what was not acknowledged).
struct Handler<H> {
    peer: SocketAddr,
    conn: Connection,
    handler: Arc<H>,
    stats: Arc<ServerStats>,
    shutdown: CancellationToken,
    /// Held for the connection's lifetime.
    _slot: Slot,
}

impl<H: FrameHandler> Handler<H> {
    async fn run(mut self) {
        let peer = self.peer;
        loop {
            // Shutdown is only watched here, between frames: the frame in flight is answered.
            let read = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    debug!(%peer, "closing connection on shutdown");
                    break;
                }
                read = self.conn.read_item() => read,
            };
            self.sync_codec_counters();
            let item = match read {
                Ok(Some(item)) => item,
                Ok(None) => {
                    debug!(%peer, "peer closed the connection");
                    break;
                }
                Err(error) => {
                    self.log_read_error(&error);
                    break;
                }
            };
            match &item {
                Inbound::Frame(_) => bump(&self.stats.frames),
                Inbound::Oversized { len, .. } => {
                    bump(&self.stats.oversized);
                    warn!(%peer, len, max = self.conn.codec.max_frame_bytes(), "oversized frame discarded");
                }
                Inbound::Interrupted { head } => {
                    bump(&self.stats.interrupted);
                    warn!(%peer, head_len = head.len(), "frame interrupted by a start block");
                }
            }
            let answers = self.handler.handle(peer, item).await;
            if let Err(error) = self.conn.write_frames(&answers).await {
                match error {
                    MllpError::Io(_) => bump(&self.stats.io_errors),
                    MllpError::WriteTimeout { .. } => bump(&self.stats.timeouts),
                    _ => {}
                }
                warn!(%peer, error = %error_chain(&error), "cannot write answer, closing connection");
                break;
            }
        }
        self.sync_codec_counters();
    }

    fn log_read_error(&self, error: &MllpError) {
        let peer = self.peer;
        match error {
            MllpError::IdleTimeout { .. } => {
                bump(&self.stats.timeouts);
                debug!(%peer, %error, "closing idle connection");
            }
            MllpError::FrameTimeout { .. } => {
                bump(&self.stats.timeouts);
                warn!(%peer, %error, "closing connection");
            }
            MllpError::TruncatedFrame { .. } => {
                bump(&self.stats.truncated);
                warn!(%peer, %error, "closing connection");
            }
            other => {
                bump(&self.stats.io_errors);
                warn!(%peer, error = %error_chain(other), "closing connection");
            }
        }
    }

    /// Adds what the codec counted since the last call to the shared counters.
    fn sync_codec_counters(&mut self) {
        let skipped = self.conn.codec.skipped_bytes();
        let missing = self.conn.codec.missing_trailers();
        let (seen_skipped, seen_missing) = &mut self.conn.reported;
        self.stats
            .skipped_bytes
            .fetch_add(skipped - *seen_skipped, Ordering::Relaxed);
        self.stats
            .missing_trailers
            .fetch_add(missing - *seen_missing, Ordering::Relaxed);
        *seen_skipped = skipped;
        *seen_missing = missing;
    }
}

/// The socket, its read buffer and codec, with the timeouts applied read by read.
struct Connection {
    stream: BoxedStream,
    codec: MllpCodec,
    read_buf: BytesMut,
    write_buf: BytesMut,
    read_timeout: Duration,
    idle_timeout: Duration,
    /// When the frame in progress must be complete; set when a read starts mid-frame, so a
    /// peer trickling bytes cannot stretch a frame past the read timeout.
    frame_deadline: Option<Instant>,
    /// End of stream was seen: no more reads.
    eof: bool,
    /// Codec counters already added to the shared stats (skipped bytes, missing trailers).
    reported: (u64, u64),
}

impl Connection {
    fn new(stream: BoxedStream, settings: &ServerSettings) -> Self {
        Self {
            stream,
            codec: MllpCodec::new(settings.max_frame_bytes),
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::new(),
            read_timeout: settings.read_timeout,
            idle_timeout: settings.idle_timeout,
            frame_deadline: None,
            eof: false,
            reported: (0, 0),
        }
    }

    /// Reads the next item: `Ok(None)` on a clean end of stream. Cancel-safe: dropping the
    /// future loses no bytes, they stay in the read buffer.
    async fn read_item(&mut self) -> Result<Option<Inbound>, MllpError> {
        loop {
            if self.eof {
                return self.codec.decode_eof(&mut self.read_buf);
            }
            if let Some(item) = self.codec.decode(&mut self.read_buf)? {
                self.frame_deadline = None;
                return Ok(Some(item));
            }
            let (deadline, timeout_error) = if self.codec.in_frame() {
                let deadline = *self
                    .frame_deadline
                    .get_or_insert_with(|| Instant::now() + self.read_timeout);
                let error = MllpError::FrameTimeout {
                    timeout: self.read_timeout,
                };
                (deadline, error)
            } else {
                self.frame_deadline = None;
                let error = MllpError::IdleTimeout {
                    timeout: self.idle_timeout,
                };
                (Instant::now() + self.idle_timeout, error)
            };
            self.read_buf.reserve(READ_CHUNK);
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read_buf));
            match read.await {
                Err(_elapsed) => return Err(timeout_error),
                Ok(Ok(0)) => self.eof = true,
                // A TLS peer that closes without `close_notify` (most MLLP senders): an end
                // of stream like any other; mid-frame it is still reported as truncated.
                Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => self.eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error.into()),
            }
        }
    }

    /// Frames and writes every answer, bounded by the read timeout.
    async fn write_frames(&mut self, payloads: &[Bytes]) -> Result<(), MllpError> {
        if payloads.is_empty() {
            return Ok(());
        }
        self.write_buf.clear();
        for payload in payloads {
            self.codec.encode(payload.as_ref(), &mut self.write_buf)?;
        }
        let timeout = self.read_timeout;
        let Self {
            stream, write_buf, ..
        } = self;
        let write = async {
            stream.write_all(write_buf).await?;
            stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Err(_elapsed) => Err(MllpError::WriteTimeout { timeout }),
            Ok(result) => Ok(result?),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::no_connections(ServerSettings { max_connections: 0, ..ServerSettings::default() }, "mllp server: max_connections must be at least 1")]
    #[case::no_frame_room(ServerSettings { max_frame_bytes: 0, ..ServerSettings::default() }, "mllp server: max_frame_bytes must be at least 1")]
    fn err_invalid_settings(#[case] settings: ServerSettings, #[case] text: &str) {
        let err = settings.validate().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), text);
    }

    #[test]
    fn ok_default_settings_are_valid() {
        assert!(ServerSettings::default().validate().is_ok());
    }

    #[test]
    fn ok_error_chain_joins_sources() {
        let error = MllpError::Connect {
            addr: SocketAddr::from(([127, 0, 0, 1], 2575)),
            source: io::Error::new(io::ErrorKind::ConnectionRefused, "refused"),
        };
        assert_eq!(
            error_chain(&error),
            "cannot connect to 127.0.0.1:2575: refused"
        );
    }

    #[test]
    fn ok_snapshot_reads_counters() {
        let stats = ServerStats::default();
        bump(&stats.frames);
        bump(&stats.frames);
        bump(&stats.timeouts);
        let snap = stats.snapshot();
        assert_eq!(snap.frames, 2);
        assert_eq!(snap.timeouts, 1);
        assert_eq!(snap.connections_open, 0);
    }
}

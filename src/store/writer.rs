//! The one writer thread: owns the write connection and commits requests in groups.
//!
//! The loop blocks for the first request, takes whatever else is already queued (up to
//! `max_batch` requests), runs them all in one `BEGIN IMMEDIATE` … `COMMIT`, and only then
//! answers each request. One fsync thus covers a whole batch: under load, batches grow and the
//! cost per message falls; when idle, a lone message is committed at once.
//!
//! Census updates (the processor keeps many queued) are shared out (see [`Share`]): a few
//! beside a flood's requests in every transaction; beside one connection's lone messages, a
//! batch riding together every so often (its census pages written once, not at every
//! message); when nothing else waits, a transaction of census updates
//! grows while the queue stays empty, beyond `max_batch` (up to [`CENSUS_ALONE`]), and stops
//! the moment another request is queued, which joins it (see [`Feed`]). While journal inserts
//! keep coming, census updates do not commit alone: they wait (briefly, see [`Ride`]) for the
//! next request and ride in its transaction, so one connection pays one fsync per message.
//!
//! If anything in the transaction fails, it is rolled back and every request of the batch gets
//! the error (nothing of it is stored, so nobody ACKs it); the thread goes on with the next
//! batch. The thread stops when every sender is gone or a `Close` request arrived, after
//! committing and answering what was queued.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, TransactionBehavior};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::census::{self, CensusOutcome};
use super::hold::{self, DeliverOutcome, Delivery, NewHold};
use super::prune::{self, PruneCursor, Pruned, RetentionPlan};
use super::queue::{self, Change, PreparedItem};
use super::{EntryStatus, InboundRecord, JournalOutcome, RecordStatus, StoreError};
use crate::census::CensusUpdate;

/// Inserts a record unless an accepted or processed row has the same duplicate key (then
/// nothing changes and [`DUPLICATE_SQL`] runs). No `RETURNING` and no upsert: both make SQLite
/// build a temporary table at every insert; the id of a new row is `last_insert_rowid`.
const JOURNAL_SQL: &str = "INSERT INTO journal (channel, received_at, peer, sender, message_type,
        control_id, content_hash, raw, status, reason, duplicate_count, last_seen_at, kept)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?2, ?11)
    ON CONFLICT DO NOTHING";

/// A duplicate: the row it repeats is counted and its last sighting kept.
const DUPLICATE_SQL: &str = "UPDATE journal
    SET duplicate_count = duplicate_count + 1, last_seen_at = ?5
    WHERE channel = ?1 AND sender = ?2 AND control_id = ?3 AND content_hash = ?4 AND kept
    RETURNING id, status";

/// Only accepted rows become processed; rejected ones stay rejected.
const MARK_PROCESSED_SQL: &str =
    "UPDATE journal SET status = 'processed' WHERE id = ?1 AND status = 'accepted'";

/// A record with what the writer needs precomputed on the caller's task.
#[derive(Debug)]
pub(super) struct Prepared {
    record: InboundRecord,
    /// SHA-256 of `record.raw`.
    hash: [u8; 32],
    /// `record.received_at` in unix microseconds.
    received_at: i64,
}

impl Prepared {
    /// Whether the record is journaled `accepted` (one the census will read).
    pub(super) fn accepted(&self) -> bool {
        matches!(self.record.status, RecordStatus::Accepted)
    }

    /// Hashes the raw bytes: called on the caller's task to keep the writer lean.
    pub(super) fn new(record: InboundRecord) -> Self {
        let hash = Sha256::digest(&record.raw).into();
        let received_at = record.received_at.as_microsecond();
        Self {
            record,
            hash,
            received_at,
        }
    }

    /// A record read back from the intake log, with the hash and time written there.
    pub(super) fn from_parts(record: InboundRecord, hash: [u8; 32], received_at: i64) -> Self {
        Self {
            record,
            hash,
            received_at,
        }
    }

    pub(super) fn record(&self) -> &InboundRecord {
        &self.record
    }

    pub(super) fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    pub(super) fn received_at(&self) -> i64 {
        self.received_at
    }
}

/// Work for the writer thread, each with the channel its answer goes back on.
#[derive(Debug)]
pub(super) enum Request {
    /// One record (`Store::journal`); `outcome` is filled in the transaction, sent after it.
    One {
        record: Prepared,
        outcome: Option<JournalOutcome>,
        reply: oneshot::Sender<Result<JournalOutcome, StoreError>>,
    },
    /// Records of one frame or file (`Store::journal_many`), or records the intake log made
    /// durable (and their senders had ACKed); `outcomes` is allocated by the caller with room
    /// for all of them.
    Many {
        records: Vec<Prepared>,
        /// From the intake log: its applied mark moves to this record in the same
        /// transaction, so a restart copies none of them twice (see `intake_log`).
        intake_through: Option<u64>,
        outcomes: Vec<JournalOutcome>,
        reply: oneshot::Sender<Result<Vec<JournalOutcome>, StoreError>>,
    },
    /// `Store::mark_processed`.
    MarkProcessed {
        ids: Vec<i64>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// `Store::apply_census`: applied and the journal row marked processed in the batch's
    /// transaction; `outcome` is filled there, sent after the commit.
    Census {
        journal_id: i64,
        update: Box<CensusUpdate>,
        /// `Err` when this update alone failed: it was rolled back to its savepoint and the
        /// rest of the batch (other callers' journal inserts) still commits.
        outcome: Option<Result<CensusOutcome, Arc<rusqlite::Error>>>,
        reply: oneshot::Sender<Result<CensusOutcome, StoreError>>,
    },
    /// `Store::close`: answered once the queue is drained and the connection closed.
    Close { reply: oneshot::Sender<()> },
    /// `Store::enqueue`: `ids` is allocated by the caller with room for every item.
    Enqueue {
        items: Vec<PreparedItem>,
        ids: Vec<i64>,
        reply: oneshot::Sender<Result<Vec<i64>, StoreError>>,
    },
    /// `Store::hold`: `inserted` is filled in the transaction, sent after it.
    Hold {
        hold: NewHold,
        inserted: bool,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// `Store::deliver_bundle`: enqueue, mark processed and release in one transaction;
    /// `outcome` is filled there, sent after the commit.
    Deliver {
        delivery: Delivery,
        outcome: Option<DeliverOutcome>,
        reply: oneshot::Sender<Result<DeliverOutcome, StoreError>>,
    },
    /// `Store::journal_push`: journaled, then mapped and queued (or rejected) in the same
    /// transaction; `outcome` is filled there, sent after the commit.
    Push {
        record: Prepared,
        mapper: super::push::PushMapper,
        outcome: Option<super::push::PushOutcome>,
        reply: oneshot::Sender<Result<super::push::PushOutcome, StoreError>>,
    },
    /// `Store::reject_accepted`: `changed` is filled in the transaction, sent after it.
    Reject {
        journal_id: i64,
        reason: String,
        changed: bool,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// `Store::prune_step`: at most `limit` rows of each kind deleted by `plan` from `cursor`
    /// on, then up to `vacuum_pages` free pages given back; `pruned`, `next` (where the next
    /// step resumes) and `freed` are filled in the transaction, sent after it. The step runs
    /// under a savepoint: when it fails, it alone is rolled back (`failed`), and the journal
    /// inserts sharing its transaction still commit.
    Prune {
        plan: Option<RetentionPlan>,
        cursor: PruneCursor,
        limit: usize,
        vacuum_pages: u32,
        pruned: Pruned,
        next: PruneCursor,
        freed: u32,
        failed: Option<Arc<rusqlite::Error>>,
        reply: oneshot::Sender<Result<(Pruned, u32, PruneCursor), StoreError>>,
    },
    /// `Store::audit`: one row of the console's audit trail.
    Audit {
        entry: super::audit::AuditEntry,
        /// Unix microseconds.
        at: i64,
        /// A held bundle (its journal id) to release now, in the audit row's transaction;
        /// `changed` says whether it was still held.
        release_hold: Option<i64>,
        /// A destination paused (`true`) or resumed, recorded in the audit row's transaction.
        pause: Option<(String, bool)>,
        changed: bool,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// An outbound status change (`mark_delivered`, `mark_retry`, `mark_dead`, `replay`);
    /// `changed` (rows updated) is filled in the transaction, sent after it.
    Outbound {
        change: Change,
        changed: usize,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// Counters the writer bumps and `Store::stats` reads; relaxed atomics, no lock.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) batches: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) failed_batches: AtomicU64,
    pub(super) messages: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) last_batch_size: AtomicU64,
    pub(super) max_batch_size: AtomicU64,
}

/// The savepoint around each census update, and its release (prepared once, cached).
const SAVEPOINT_SQL: &str = "SAVEPOINT census_update";
const RELEASE_SQL: &str = "RELEASE census_update";

/// The savepoint around each prune step, its release and its rollback.
const PRUNE_SAVEPOINT_SQL: &str = "SAVEPOINT prune_step";
const PRUNE_RELEASE_SQL: &str = "RELEASE prune_step";
const PRUNE_ROLLBACK_SQL: &str = "ROLLBACK TO prune_step; RELEASE prune_step";

/// Starts the writer thread on an opened, migrated connection.
pub(super) fn spawn(
    connection: Connection,
    queue: mpsc::Receiver<Request>,
    path: PathBuf,
    max_batch: usize,
    counters: Arc<Counters>,
) -> Result<(), StoreError> {
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name("store-writer".to_owned())
        .spawn(move || run(connection, queue, thread_path, max_batch, &counters))
        .map(drop)
        .map_err(|source| StoreError::Spawn { path, source })
}

/// The writer loop (see the module docs).
fn run(
    mut connection: Connection,
    mut queue: mpsc::Receiver<Request>,
    path: PathBuf,
    max_batch: usize,
    counters: &Counters,
) {
    let mut batch = Vec::with_capacity(max_batch);
    // Census updates left for a later transaction (see `Share::share`), oldest first.
    let mut deferred: VecDeque<Request> = VecDeque::new();
    let mut closers = Vec::new();
    let mut ride = Ride::new(&path);
    let mut share = Share::default();
    loop {
        // Blocks for the first request when nothing waits, else takes only what is already
        // queued; up to `max_batch` either way. 0 once every sender is gone (or the queue was
        // closed) and the queue is empty.
        let received = if deferred.is_empty() {
            queue.blocking_recv_many(&mut batch, max_batch)
        } else {
            take_queued(&mut queue, &mut batch, max_batch)
        };
        if received == 0 && deferred.is_empty() {
            break;
        }
        // While journal inserts keep coming, census updates wait for the next one and ride in
        // its transaction rather than paying an fsync of their own (see [`Ride`]).
        while batch
            .iter()
            .all(|request| matches!(request, Request::Census { .. }))
        {
            let Some(until) = ride.wait_until(std::time::Instant::now()) else {
                break;
            };
            deferred.extend(batch.drain(..));
            let Some(request) = ride.recv_until(&mut queue, until) else {
                break;
            };
            batch.push(request);
            take_queued(&mut queue, &mut batch, max_batch.saturating_sub(1));
        }
        // A close request only stops new sends: what is queued still gets committed, and
        // the closer is answered once the connection is closed.
        for request in batch.extract_if(.., |request| matches!(request, Request::Close { .. })) {
            if let Request::Close { reply } = request {
                closers.push(reply);
                queue.close();
            }
        }
        let census_only = share.share(&mut batch, &mut deferred, std::time::Instant::now());
        if !batch.is_empty() {
            // Nothing else waited: the census may grow this transaction while nobody queues.
            let mut feed = census_only.then_some(Feed {
                queue: &mut queue,
                deferred: &mut deferred,
                closers: &mut closers,
                max_batch,
                taken: CENSUS_BESIDE_OTHERS,
                done: false,
            });
            // The feed may add other requests: the census rode along after all.
            commit_batch(&mut connection, &mut batch, &path, counters, feed.as_mut());
            let joined = feed.is_some_and(|feed| feed.done);
            ride.committed(!census_only || joined, deferred.is_empty());
        }
    }
    drop(connection);
    tracing::debug!(store = %path.display(), "store writer stopped");
    for closer in closers {
        let _ = closer.send(());
    }
}

/// Takes what is already queued, up to `max`, without waiting; how many were taken.
fn take_queued(queue: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>, max: usize) -> usize {
    let mut taken = 0;
    while taken < max {
        match queue.try_recv() {
            Ok(request) => {
                batch.push(request);
                taken += 1;
            }
            Err(_) => break,
        }
    }
    taken
}

/// How long after a transaction holding other requests (journal inserts, mostly) the census
/// waits for the next one to ride along. On one MLLP connection the next message arrives a
/// round trip after the ACK (~0.1–0.5 ms): a census update committed alone in between cost
/// an fsync of its own, which that message then waited behind (two fsyncs per message).
const CENSUS_RIDE_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);
/// The longest census updates wait for a ride while inserts keep coming: past it, they are
/// committed alone (and that transaction grows while nothing else is queued, see [`Feed`]),
/// so the census lags a steady intake by about this much at most, besides its backlog.
const CENSUS_MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// When census updates may wait for a ride (see [`CENSUS_RIDE_WINDOW`]) rather than be
/// committed alone: while the intake is busy, and not past [`CENSUS_MAX_WAIT`]. Idle or
/// catching up after a flood, nothing waits: the census commits at once, at its full rate.
struct Ride {
    /// The writer thread's timer; `None` if it could not be built (census updates then never
    /// wait, as before).
    timer: Option<tokio::runtime::Runtime>,
    /// When the last transaction holding other requests committed.
    last_other: Option<std::time::Instant>,
    /// Since when census updates wait without a census-only commit.
    census_since: Option<std::time::Instant>,
}

impl Ride {
    fn new(path: &std::path::Path) -> Self {
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .inspect_err(|error| {
                tracing::warn!(store = %path.display(), %error, "store writer: no timer, census updates are committed alone");
            })
            .ok();
        Self {
            timer,
            last_other: None,
            census_since: None,
        }
    }

    /// Until when census updates may wait for another request, if they may.
    fn wait_until(&mut self, now: std::time::Instant) -> Option<std::time::Instant> {
        self.timer.as_ref()?;
        let ride = self.last_other? + CENSUS_RIDE_WINDOW;
        let since = *self.census_since.get_or_insert(now);
        let until = ride.min(since + CENSUS_MAX_WAIT);
        (until > now).then_some(until)
    }

    /// The next request, waiting at most until `until`; `None` at the deadline, or if every
    /// sender is gone.
    fn recv_until(
        &self,
        queue: &mut mpsc::Receiver<Request>,
        until: std::time::Instant,
    ) -> Option<Request> {
        let timer = self.timer.as_ref()?;
        timer.block_on(async {
            tokio::time::timeout_at(until.into(), queue.recv())
                .await
                .ok()
                .flatten()
        })
    }

    /// A transaction committed (or failed): `other` when it held requests other than census
    /// updates, `drained` when no census update waits any more.
    fn committed(&mut self, other: bool, drained: bool) {
        let now = std::time::Instant::now();
        if other {
            self.last_other = Some(now);
        } else {
            // A census-only commit: what still waits counts from now.
            self.census_since = None;
        }
        if drained {
            self.census_since = None;
        }
    }
}

/// Census updates every transaction takes when some wait beside a flood (at least this many
/// other requests), or alone: the census catching up after a burst must not make every ACK
/// wait for hundreds of updates, nor stop while journal inserts flood in. A census update
/// costs about four journal inserts: beside a flood's 64 inserts, 8 updates take a third of
/// the writer (32 took two thirds, and the 64-connection intake fell by a fifth:
/// docs/performance.md).
const CENSUS_BESIDE_OTHERS: usize = 8;
/// Census updates that ride together beside a few other requests (fewer than
/// [`CENSUS_BESIDE_OTHERS`]: one MLLP connection, a handful of pushes). One update beside each
/// lone message rewrote the census pages it touches (the patient, the stay, the movement and
/// their indexes: about ten 4 KiB pages) at every commit; riding together, they are written
/// once for the batch (1.07–1.29× the one-connection intake: docs/performance.md).
const CENSUS_RIDE_BATCH: usize = 32;
/// A batch rides in at most one transaction of this many beside a few other requests: while
/// the census catches up behind one connection, ACKs share its cost as with
/// [`CENSUS_BESIDE_OTHERS`] per transaction, on average.
const CENSUS_RIDE_EVERY: usize = CENSUS_RIDE_BATCH / CENSUS_BESIDE_OTHERS;
/// Census updates one transaction takes at most when nothing else waits: one fsync for
/// hundreds of updates. The transaction stops growing the moment another request is queued
/// (see [`Feed`]), so a journal insert arriving meanwhile waits one census update, not this many.
const CENSUS_ALONE: usize = 512;

/// How the census updates waiting in `deferred` are shared out between transactions (see
/// [`Share::share`]).
#[derive(Debug)]
struct Share {
    /// Transactions with a few other requests and no census update since census updates last
    /// rode beside a few other requests.
    since_ride: usize,
    /// Since when the oldest deferred census update waits.
    waiting_since: Option<std::time::Instant>,
}

impl Default for Share {
    fn default() -> Self {
        Self {
            since_ride: CENSUS_RIDE_EVERY,
            waiting_since: None,
        }
    }
}

impl Share {
    /// Moves this transaction's census updates (the oldest first) from `deferred` into
    /// `batch`; the rest wait there, in order. Alone or beside a flood: the oldest
    /// [`CENSUS_BESIDE_OTHERS`]. Beside a few other requests: none until
    /// [`CENSUS_RIDE_BATCH`] wait (or the oldest has waited [`CENSUS_MAX_WAIT`]), then that
    /// many, in at most one transaction of [`CENSUS_RIDE_EVERY`]. True when the batch holds
    /// nothing but census updates: [`Feed`] may then grow it.
    fn share(
        &mut self,
        batch: &mut Vec<Request>,
        deferred: &mut VecDeque<Request>,
        now: std::time::Instant,
    ) -> bool {
        deferred.extend(batch.extract_if(.., |request| matches!(request, Request::Census { .. })));
        let census_only = batch.is_empty();
        let Some(waiting_since) =
            (!deferred.is_empty()).then(|| *self.waiting_since.get_or_insert(now))
        else {
            self.waiting_since = None;
            return census_only;
        };
        let take = if census_only || batch.len() >= CENSUS_BESIDE_OTHERS {
            CENSUS_BESIDE_OTHERS
        } else if self.since_ride + 1 >= CENSUS_RIDE_EVERY
            && (deferred.len() >= CENSUS_RIDE_BATCH || now >= waiting_since + CENSUS_MAX_WAIT)
        {
            self.since_ride = 0;
            CENSUS_RIDE_BATCH
        } else {
            self.since_ride += 1;
            0
        };
        let take = take.min(deferred.len());
        if take > 0 {
            // What still waits counts from now.
            self.waiting_since = (take < deferred.len()).then_some(now);
        }
        batch.extend(deferred.drain(..take));
        census_only
    }
}

/// Grows a census-only transaction while it runs: one more deferred census update at a time
/// (up to [`CENSUS_ALONE`]) as long as the writer's queue is empty. As soon as a request is
/// queued, it joins this transaction (with whatever else is queued, up to `max_batch`) and
/// no census update is added after it: the commit comes next, so an ACK waiting behind a
/// census catching up pays one census update and the fsync it would have paid anyway.
pub(super) struct Feed<'a> {
    queue: &'a mut mpsc::Receiver<Request>,
    deferred: &'a mut VecDeque<Request>,
    /// `Close` requests found in the queue: answered once the writer stops.
    closers: &'a mut Vec<oneshot::Sender<()>>,
    max_batch: usize,
    /// Census updates in the transaction so far.
    taken: usize,
    /// A request other than a census update joined: nothing more is added.
    done: bool,
}

impl Feed<'_> {
    /// Appends the next requests of this transaction to `batch`; false when there are none.
    fn refill(&mut self, batch: &mut Vec<Request>) -> bool {
        if self.done {
            return false;
        }
        if !self.queue.is_empty() {
            let before = batch.len();
            for _ in 0..self.max_batch {
                match self.queue.try_recv() {
                    Ok(Request::Close { reply }) => {
                        self.closers.push(reply);
                        self.queue.close();
                    }
                    // Later than every deferred one: in order behind them.
                    Ok(request @ Request::Census { .. }) => self.deferred.push_back(request),
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if batch.len() > before {
                self.done = true;
                return true;
            }
        }
        if self.taken >= CENSUS_ALONE {
            return false;
        }
        let Some(request) = self.deferred.pop_front() else {
            return false;
        };
        batch.push(request);
        self.taken += 1;
        true
    }
}

/// Runs one batch in one transaction, then answers (and empties) it.
/// `feed`, for a census-only batch, grows it while it runs (see [`Feed`]).
pub(super) fn commit_batch(
    connection: &mut Connection,
    batch: &mut Vec<Request>,
    path: &std::path::Path,
    counters: &Counters,
    feed: Option<&mut Feed<'_>>,
) {
    let started = std::time::Instant::now();
    counters.batches.fetch_add(1, Ordering::Relaxed);

    let mut tally = Tally::default();
    // Census updates first run without a savepoint each (they cost an eighth of an update);
    // if one fails, the whole transaction is rolled back and the batch (as the feed grew
    // it) runs again with a savepoint around every census update, so only the failing one
    // is left out.
    let result = match execute(connection, batch, &mut tally, Isolation::Optimistic, feed) {
        Err(Failed::CensusUpdate) => {
            reset(batch);
            tally = Tally::default();
            execute(
                connection,
                batch,
                &mut tally,
                Isolation::SavepointPerCensusUpdate,
                None,
            )
        }
        other => other,
    }
    .map_err(|failed| match failed {
        Failed::Sql(source) => source,
        // Not produced with savepoints: a census failure is kept in the request's outcome.
        Failed::CensusUpdate => rusqlite::Error::QueryReturnedNoRows,
    });
    crate::metrics::observe_commit(started.elapsed());
    let size = u64::try_from(batch.len()).unwrap_or(u64::MAX);
    counters.last_batch_size.store(size, Ordering::Relaxed);
    counters.max_batch_size.fetch_max(size, Ordering::Relaxed);
    let failure = match result {
        Ok(()) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters
                .messages
                .fetch_add(tally.messages, Ordering::Relaxed);
            counters
                .duplicates
                .fetch_add(tally.duplicates, Ordering::Relaxed);
            None
        }
        Err(source) => {
            counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            // `Transaction` rolls back on drop; if even that failed, make sure the next
            // batch does not start inside a dead transaction.
            if !connection.is_autocommit()
                && let Err(error) = connection.execute_batch("ROLLBACK")
            {
                tracing::error!(store = %path.display(), %error, "store rollback failed");
            }
            tracing::warn!(
                store = %path.display(),
                requests = batch.len(),
                error = %source,
                "store batch not committed"
            );
            Some(Arc::new(source))
        }
    };
    let requests = batch.len();
    let error = |source: &Arc<rusqlite::Error>| StoreError::NotCommitted {
        path: path.to_path_buf(),
        requests,
        source: Arc::clone(source),
    };
    // The answer of a request `execute` gave one outcome.
    fn answer<T>(
        failure: Option<&Arc<rusqlite::Error>>,
        outcome: Option<T>,
        error: impl Fn(&Arc<rusqlite::Error>) -> StoreError,
    ) -> Result<T, StoreError> {
        match (failure, outcome) {
            (None, Some(outcome)) => Ok(outcome),
            (Some(source), _) => Err(error(source)),
            // `execute` fills every outcome or fails: not reachable, but answer safely.
            (None, None) => Err(error(&Arc::new(rusqlite::Error::QueryReturnedNoRows))),
        }
    }
    // A failed send means the caller stopped waiting; what was committed stays committed.
    for request in batch.drain(..) {
        match request {
            Request::One { outcome, reply, .. } => {
                let _ = reply.send(answer(failure.as_ref(), outcome, error));
            }
            Request::Many {
                outcomes, reply, ..
            } => {
                let _ = reply.send(match &failure {
                    None => Ok(outcomes),
                    Some(source) => Err(error(source)),
                });
            }
            Request::MarkProcessed { reply, .. } => {
                let _ = reply.send(match &failure {
                    None => Ok(()),
                    Some(source) => Err(error(source)),
                });
            }
            Request::Census { outcome, reply, .. } => {
                let answer = match (&failure, outcome) {
                    (None, Some(Ok(outcome))) => Ok(outcome),
                    (None, Some(Err(source))) => Err(StoreError::NotCommitted {
                        path: path.to_path_buf(),
                        requests: 1,
                        source,
                    }),
                    (Some(source), _) => Err(error(source)),
                    // `execute` fills every outcome or fails: not reachable, but answer safely.
                    (None, None) => Err(error(&Arc::new(rusqlite::Error::QueryReturnedNoRows))),
                };
                let _ = reply.send(answer);
            }
            Request::Close { .. } => {}
            Request::Audit { changed, reply, .. } => {
                let _ = reply.send(match &failure {
                    None => Ok(changed),
                    Some(source) => Err(error(source)),
                });
            }
            Request::Enqueue { ids, reply, .. } => {
                let _ = reply.send(match &failure {
                    None => Ok(ids),
                    Some(source) => Err(error(source)),
                });
            }
            Request::Outbound { changed, reply, .. } => {
                let _ = reply.send(match &failure {
                    None => Ok(changed),
                    Some(source) => Err(error(source)),
                });
            }
            Request::Hold {
                inserted, reply, ..
            } => {
                let _ = reply.send(match &failure {
                    None => Ok(inserted),
                    Some(source) => Err(error(source)),
                });
            }
            Request::Deliver { outcome, reply, .. } => {
                let _ = reply.send(answer(failure.as_ref(), outcome, error));
            }
            Request::Push { outcome, reply, .. } => {
                let _ = reply.send(answer(failure.as_ref(), outcome, error));
            }
            Request::Reject { changed, reply, .. } => {
                let _ = reply.send(match &failure {
                    None => Ok(changed),
                    Some(source) => Err(error(source)),
                });
            }
            Request::Prune {
                pruned,
                next,
                freed,
                failed,
                reply,
                ..
            } => {
                let _ = reply.send(match (&failure, failed) {
                    (None, None) => Ok((pruned, freed, next)),
                    (None, Some(source)) => Err(StoreError::NotCommitted {
                        path: path.to_path_buf(),
                        requests: 1,
                        source,
                    }),
                    (Some(source), _) => Err(error(source)),
                });
            }
        }
    }
}

/// What a committed batch adds to the counters.
#[derive(Debug, Default)]
pub(super) struct Tally {
    messages: u64,
    duplicates: u64,
}

/// How census updates are isolated from the rest of a batch's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// No savepoint: the first failing census update aborts the batch ([`Failed::CensusUpdate`]).
    Optimistic,
    /// A savepoint around each census update: a failing one is rolled back alone.
    SavepointPerCensusUpdate,
}

/// Why a batch's transaction did not commit.
#[derive(Debug)]
enum Failed {
    /// A statement failed: the whole batch fails.
    Sql(rusqlite::Error),
    /// A census update failed in [`Isolation::Optimistic`] mode: run the batch again with
    /// savepoints.
    CensusUpdate,
}

impl From<rusqlite::Error> for Failed {
    fn from(source: rusqlite::Error) -> Self {
        Failed::Sql(source)
    }
}

/// Clears what a rolled-back attempt wrote into the requests, before the batch runs again.
fn reset(batch: &mut [Request]) {
    for request in batch.iter_mut() {
        match request {
            Request::One { outcome, .. } => *outcome = None,
            Request::Many { outcomes, .. } => outcomes.clear(),
            Request::Census { outcome, .. } => *outcome = None,
            Request::Enqueue { ids, .. } => ids.clear(),
            Request::Hold { inserted, .. } => *inserted = false,
            Request::Deliver { outcome, .. } => *outcome = None,
            Request::Push { outcome, .. } => *outcome = None,
            Request::Outbound { changed, .. } => *changed = 0,
            Request::Prune {
                pruned,
                cursor,
                next,
                freed,
                failed,
                ..
            } => {
                *pruned = Pruned::default();
                *next = *cursor;
                *freed = 0;
                *failed = None;
            }
            Request::Reject { changed, .. } => *changed = false,
            Request::Audit { changed, .. } => *changed = false,
            Request::MarkProcessed { .. } | Request::Close { .. } => {}
        }
    }
}

/// The transaction of one batch, grown by `feed` if given; outcomes go into the requests.
fn execute(
    connection: &mut Connection,
    batch: &mut Vec<Request>,
    tally: &mut Tally,
    isolation: Isolation,
    mut feed: Option<&mut Feed<'_>>,
) -> Result<(), Failed> {
    // IMMEDIATE: take the write lock at BEGIN, so a busy database fails (or waits) here,
    // not half-way through the batch.
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut next = 0;
    loop {
        while let Some(request) = batch.get_mut(next) {
            run_one(&transaction, request, tally, isolation)?;
            next += 1;
        }
        let refilled = feed.as_deref_mut().is_some_and(|feed| feed.refill(batch));
        if !refilled {
            break;
        }
    }
    Ok(transaction.commit()?)
}

/// One request inside the batch's transaction.
fn run_one(
    transaction: &rusqlite::Transaction<'_>,
    request: &mut Request,
    tally: &mut Tally,
    isolation: Isolation,
) -> Result<(), Failed> {
    match request {
        Request::One {
            record, outcome, ..
        } => {
            *outcome = Some(journal_one(transaction, record, tally)?);
        }
        Request::Many {
            records,
            intake_through,
            outcomes,
            ..
        } => match intake_through {
            Some(through) => {
                super::intake_log::copy_into_journal(
                    transaction,
                    records,
                    *through,
                    tally,
                    outcomes,
                )?;
            }
            None => {
                for record in records.iter() {
                    outcomes.push(journal_one(transaction, record, tally)?);
                }
            }
        },
        Request::MarkProcessed { ids, .. } => {
            let mut mark = transaction.prepare_cached(MARK_PROCESSED_SQL)?;
            for id in ids.iter() {
                mark.execute([id])?;
            }
        }
        Request::Census {
            journal_id,
            update,
            outcome,
            ..
        } => {
            if isolation == Isolation::Optimistic {
                match census::apply(transaction, *journal_id, update) {
                    Ok(applied) => *outcome = Some(Ok(applied)),
                    Err(e) => {
                        tracing::debug!(journal_id = *journal_id, error = %e, "census update failed: batch runs again with savepoints");
                        return Err(Failed::CensusUpdate);
                    }
                }
                return Ok(());
            }
            // A savepoint per census update: a bad update must not roll back the
            // journal inserts of other callers that share this transaction.
            transaction.prepare_cached(SAVEPOINT_SQL)?.execute([])?;
            match census::apply(transaction, *journal_id, update) {
                Ok(applied) => {
                    transaction.prepare_cached(RELEASE_SQL)?.execute([])?;
                    *outcome = Some(Ok(applied));
                }
                Err(e) => {
                    tracing::warn!(journal_id = *journal_id, error = %e, "census update rolled back alone");
                    transaction
                        .execute_batch("ROLLBACK TO census_update; RELEASE census_update")?;
                    *outcome = Some(Err(Arc::new(e)));
                }
            }
        }
        Request::Close { .. } => {}
        Request::Audit {
            entry,
            at,
            release_hold,
            pause,
            changed,
            ..
        } => {
            super::audit::insert(transaction, *at, entry)?;
            if let Some((destination, paused)) = pause {
                super::audit::pause(transaction, destination, *paused, *at, &entry.user)?;
            }
            if let Some(journal_id) = release_hold {
                *changed = transaction
                    .prepare_cached(super::audit::RELEASE_NOW_SQL)?
                    .execute(rusqlite::params![*journal_id, *at])?
                    > 0;
            }
        }
        Request::Enqueue { items, ids, .. } => {
            queue::insert(transaction, items, ids)?;
        }
        Request::Outbound {
            change, changed, ..
        } => {
            *changed = queue::apply(transaction, change)?;
        }
        Request::Hold { hold, inserted, .. } => {
            *inserted = hold::insert(transaction, hold)?;
        }
        Request::Deliver {
            delivery, outcome, ..
        } => {
            *outcome = Some(hold::deliver(transaction, delivery)?);
        }
        Request::Push {
            record,
            mapper,
            outcome,
            ..
        } => {
            let journaled = journal_one(transaction, record, tally)?;
            *outcome = Some(super::push::settle(transaction, journaled, mapper)?);
        }
        Request::Reject {
            journal_id,
            reason,
            changed,
            ..
        } => {
            *changed = transaction
                .prepare_cached(hold::REJECT_SQL)?
                .execute(rusqlite::params![*journal_id, reason.as_str()])?
                > 0;
        }
        Request::Prune {
            plan,
            cursor,
            limit,
            vacuum_pages,
            pruned,
            next,
            freed,
            failed,
            ..
        } => {
            if plan.is_none() && *vacuum_pages == 0 {
                return Ok(()); // a probe: the commit is the answer
            }
            transaction.execute_batch(PRUNE_SAVEPOINT_SQL)?;
            let step = || -> rusqlite::Result<(Pruned, PruneCursor, u32)> {
                let (pruned, next) = match plan.as_ref() {
                    Some(plan) => prune::prune(transaction, plan, *cursor, *limit)?,
                    None => (Pruned::default(), *cursor),
                };
                let freed = match *vacuum_pages {
                    0 => 0,
                    pages => prune::incremental_vacuum(transaction, pages)?,
                };
                Ok((pruned, next, freed))
            };
            match step() {
                Ok((done, resume, pages)) => {
                    transaction.execute_batch(PRUNE_RELEASE_SQL)?;
                    (*pruned, *next, *freed) = (done, resume, pages);
                }
                Err(source) => {
                    transaction.execute_batch(PRUNE_ROLLBACK_SQL)?;
                    *failed = Some(Arc::new(source));
                }
            }
        }
    }
    Ok(())
}

/// Inserts one record into the journal, or counts it as a duplicate of the row it repeats.
pub(super) fn journal_one(
    transaction: &rusqlite::Transaction<'_>,
    prepared: &Prepared,
    tally: &mut Tally,
) -> rusqlite::Result<JournalOutcome> {
    let record = &prepared.record;
    let (status, reason) = match &record.status {
        RecordStatus::Accepted => (EntryStatus::Accepted, None),
        RecordStatus::Rejected { reason } => (EntryStatus::Rejected, Some(reason.as_str())),
    };
    let inserted = transaction
        .prepare_cached(JOURNAL_SQL)?
        .execute(rusqlite::params![
            record.channel,
            prepared.received_at,
            record.peer,
            record.sender,
            record.message_type,
            record.control_id,
            &prepared.hash[..],
            &record.raw[..],
            status.as_str(),
            reason,
            status != EntryStatus::Rejected,
        ])?;
    tally.messages += 1;
    if inserted == 1 {
        return Ok(JournalOutcome::Stored {
            id: transaction.last_insert_rowid(),
        });
    }
    tally.duplicates += 1;
    transaction.prepare_cached(DUPLICATE_SQL)?.query_row(
        rusqlite::params![
            record.channel,
            record.sender,
            record.control_id,
            &prepared.hash[..],
            prepared.received_at,
        ],
        |row| {
            let id: i64 = row.get(0)?;
            let status = match row.get_ref(1)? {
                ValueRef::Text(text) => EntryStatus::from_bytes(text),
                _ => None,
            };
            // The CHECK constraint keeps `status` to known values; a file edited by hand
            // could still hold something else.
            let status = status.ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    "unknown journal status".into(),
                )
            })?;
            Ok(JournalOutcome::Duplicate { id, status })
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::schema;
    use super::super::tests::record;
    use super::*;

    type OneReply = oneshot::Receiver<Result<JournalOutcome, StoreError>>;

    fn one(record: InboundRecord) -> (Request, OneReply) {
        let (reply, answer) = oneshot::channel();
        let request = Request::One {
            record: Prepared::new(record),
            outcome: None,
            reply,
        };
        (request, answer)
    }

    fn rows(connection: &Connection) -> i64 {
        connection
            .query_row("SELECT count(*) FROM journal", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn ok_batch_answers_every_request_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let mut connection = schema::open_writer(&path).unwrap();
        let counters = Counters::default();
        let (first, mut first_answer) = one(record("1", b"MSH|1"));
        let (second, mut second_answer) = one(record("2", b"MSH|2"));
        let (again, mut again_answer) = one(record("1", b"MSH|1"));
        let mut batch = vec![first, second, again];
        commit_batch(&mut connection, &mut batch, &path, &counters, None);
        assert!(batch.is_empty());
        assert_eq!(
            first_answer.try_recv().unwrap().unwrap(),
            JournalOutcome::Stored { id: 1 }
        );
        assert_eq!(
            second_answer.try_recv().unwrap().unwrap(),
            JournalOutcome::Stored { id: 2 }
        );
        // A duplicate inside the same batch is seen too.
        assert_eq!(
            again_answer.try_recv().unwrap().unwrap(),
            JournalOutcome::Duplicate {
                id: 1,
                status: EntryStatus::Accepted
            }
        );
        assert_eq!(rows(&connection), 2);
        assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
        assert_eq!(counters.messages.load(Ordering::Relaxed), 3);
        assert_eq!(counters.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(counters.last_batch_size.load(Ordering::Relaxed), 3);
    }

    /// A writer connection on a fresh store whose inserts into `table` fail with "refused by
    /// test" when `condition` holds (a trigger), to provoke one failing request in a batch.
    fn writer_refusing(
        table: &str,
        condition: &str,
    ) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let connection = schema::open_writer(&path).unwrap();
        connection
            .execute_batch(&format!(
                "CREATE TRIGGER refuse_bad BEFORE INSERT ON {table} WHEN {condition}
                 BEGIN SELECT RAISE(ABORT, 'refused by test'); END;"
            ))
            .unwrap();
        (dir, path, connection)
    }

    #[test]
    fn err_one_failure_fails_the_whole_batch_then_writer_goes_on() {
        let (_dir, path, mut connection) = writer_refusing("journal", "NEW.control_id = 'BAD'");
        let counters = Counters::default();
        let (good, mut good_answer) = one(record("1", b"MSH|1"));
        let (bad, mut bad_answer) = one(record("BAD", b"MSH|bad"));
        let (many_reply, mut many_answer) = oneshot::channel();
        let many = Request::Many {
            records: vec![Prepared::new(record("3", b"MSH|3"))],
            intake_through: None,
            outcomes: Vec::with_capacity(1),
            reply: many_reply,
        };
        let (mark_reply, mut mark_answer) = oneshot::channel();
        let mark = Request::MarkProcessed {
            ids: vec![1],
            reply: mark_reply,
        };
        let mut batch = vec![good, many, bad, mark];
        commit_batch(&mut connection, &mut batch, &path, &counters, None);

        let expected = format!(
            "store `{}`: batch of 4 request(s) not committed",
            path.display()
        );
        let good_err = good_answer.try_recv().unwrap().unwrap_err();
        assert_eq!(good_err.to_string(), expected);
        let source = std::error::Error::source(&good_err).unwrap().to_string();
        assert!(source.contains("refused by test"), "{source}");
        assert_eq!(
            bad_answer.try_recv().unwrap().unwrap_err().to_string(),
            expected
        );
        assert_eq!(
            many_answer.try_recv().unwrap().unwrap_err().to_string(),
            expected
        );
        assert_eq!(
            mark_answer.try_recv().unwrap().unwrap_err().to_string(),
            expected
        );
        assert_eq!(rows(&connection), 0, "the good record was rolled back too");
        assert!(connection.is_autocommit());
        assert_eq!(counters.failed_batches.load(Ordering::Relaxed), 1);
        assert_eq!(counters.messages.load(Ordering::Relaxed), 0);

        let (good, mut good_answer) = one(record("1", b"MSH|1"));
        let mut batch = vec![good];
        commit_batch(&mut connection, &mut batch, &path, &counters, None);
        assert_eq!(
            good_answer.try_recv().unwrap().unwrap(),
            JournalOutcome::Stored { id: 1 }
        );
        assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
    }

    type CensusReply = oneshot::Receiver<Result<CensusOutcome, StoreError>>;

    fn identity(journal_id: i64, ipp: &str) -> (Request, CensusReply) {
        let (reply, answer) = oneshot::channel();
        let update = CensusUpdate::Identity(crate::census::Patient {
            ipp: ipp.to_owned(),
            ..crate::census::Patient::default()
        });
        let request = Request::Census {
            journal_id,
            update: Box::new(update),
            outcome: None,
            reply,
        };
        (request, answer)
    }

    /// Census updates run without savepoints first; when one fails, the batch runs again with
    /// a savepoint around each, so the failing update is left out alone and everything else in
    /// the batch (journal inserts, other census updates) commits once, not twice.
    #[test]
    fn ok_failing_census_update_is_left_out_alone_after_a_second_run() {
        let (_dir, path, mut connection) = writer_refusing("census_patients", "NEW.ipp = 'BAD'");
        let counters = Counters::default();
        let (first, mut first_answer) = one(record("1", b"MSH|1"));
        let (good, mut good_answer) = identity(1, "IPP1");
        let (second, mut second_answer) = one(record("2", b"MSH|2"));
        let (bad, mut bad_answer) = identity(2, "BAD");
        let mut batch = vec![first, good, second, bad];
        commit_batch(&mut connection, &mut batch, &path, &counters, None);

        assert_eq!(
            first_answer.try_recv().unwrap().unwrap(),
            JournalOutcome::Stored { id: 1 }
        );
        assert_eq!(
            second_answer.try_recv().unwrap().unwrap(),
            JournalOutcome::Stored { id: 2 }
        );
        assert_eq!(
            good_answer.try_recv().unwrap().unwrap().status,
            census::ApplyStatus::Applied
        );
        let bad_err = bad_answer.try_recv().unwrap().unwrap_err();
        let source = std::error::Error::source(&bad_err).unwrap().to_string();
        assert!(source.contains("refused by test"), "{source}");
        assert_eq!(rows(&connection), 2);
        let patients: i64 = connection
            .query_row("SELECT count(*) FROM census_patients", [], |row| row.get(0))
            .unwrap();
        assert_eq!(patients, 1, "the good update is applied once");
        assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
        assert_eq!(counters.failed_batches.load(Ordering::Relaxed), 0);
        assert_eq!(counters.messages.load(Ordering::Relaxed), 2, "counted once");
    }

    fn journal_ids(batch: &[Request]) -> Vec<i64> {
        batch
            .iter()
            .filter_map(|r| match r {
                Request::Census { journal_id, .. } => Some(*journal_id),
                _ => None,
            })
            .collect()
    }

    /// A prune step that fails (a trigger refuses to delete the census encounter) is rolled
    /// back alone, answered with its error; the journal insert in the same batch commits.
    #[test]
    fn err_failing_prune_step_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let mut connection = schema::open_writer(&path).unwrap();
        connection
            .execute_batch(
                "INSERT INTO census_patients (id, ipp, journal_id, updated_at) VALUES (1, 'P', 1, 0);
                 INSERT INTO census_encounters (nda, patient_id, status, discharge_at, journal_id)
                     VALUES ('V', 1, 'discharged', '2001-01-01T00:00:00', 1);
                 INSERT INTO census_movements (movement_id, encounter_id, event, status, movement_at, journal_id)
                     VALUES ('M', 1, 'A03', 'active', '2001-01-01T00:00:00', 1);
                 CREATE TRIGGER refuse_bad BEFORE DELETE ON census_encounters
                 BEGIN SELECT RAISE(ABORT, 'refused by test'); END;",
            )
            .unwrap();
        let counters = Counters::default();
        let (journal, mut journal_answer) = one(record("1", b"MSH|1"));
        let (reply, mut prune_answer) = oneshot::channel();
        let plan = RetentionPlan::at(
            jiff::Timestamp::now(),
            std::time::Duration::from_secs(86_400),
            std::time::Duration::from_secs(86_400),
        )
        .with_census(
            Some(std::time::Duration::from_secs(86_400)),
            &jiff::tz::TimeZone::UTC,
        );
        let prune = Request::Prune {
            plan: Some(plan),
            cursor: PruneCursor::default(),
            limit: 10,
            vacuum_pages: 0,
            pruned: Pruned::default(),
            next: PruneCursor::default(),
            freed: 0,
            failed: None,
            reply,
        };
        let mut batch = vec![journal, prune];
        commit_batch(&mut connection, &mut batch, &path, &counters, None);
        assert_eq!(
            journal_answer.try_recv().unwrap().unwrap(),
            JournalOutcome::Stored { id: 1 }
        );
        let err = prune_answer.try_recv().unwrap().unwrap_err();
        assert_eq!(
            crate::text::error_chain(&err),
            format!(
                "store `{}`: batch of 1 request(s) not committed: refused by test: Error code 1811: constraint failed",
                path.display()
            )
        );
        let movements: i64 = connection
            .query_row("SELECT count(*) FROM census_movements", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(
            movements, 1,
            "the movements deleted before the failure are back"
        );
        assert_eq!(rows(&connection), 1);
    }

    /// `count` census updates, journal ids `first..`, and their answers.
    fn census_updates(first: i64, count: i64) -> (Vec<Request>, Vec<CensusReply>) {
        (first..first + count)
            .map(|id| identity(id, "IPP1"))
            .unzip()
    }

    /// `count` journal inserts, and their answers.
    fn journal_inserts(count: usize) -> (Vec<Request>, Vec<OneReply>) {
        (0..count)
            .map(|n| one(record(&n.to_string(), b"MSH|1")))
            .unzip()
    }

    /// ACKs do not wait behind a census catching up: beside a flood's inserts, or alone, a
    /// transaction takes only a few census updates, in order.
    #[test]
    fn ok_census_shares_transactions_with_a_flood() {
        let now = std::time::Instant::now();
        let mut share = Share::default();
        let mut deferred = VecDeque::new();
        let (mut batch, _inserted) = journal_inserts(CENSUS_BESIDE_OTHERS);
        let (census, _answers) = census_updates(1, 100);
        batch.extend(census);
        assert!(!share.share(&mut batch, &mut deferred, now));
        assert_eq!(batch.len(), 2 * CENSUS_BESIDE_OTHERS);
        assert_eq!(
            journal_ids(&batch),
            (1..=8).collect::<Vec<i64>>(),
            "oldest first"
        );
        assert_eq!(deferred.len(), 100 - CENSUS_BESIDE_OTHERS);

        // Nothing else waits: the same start, and the feed may grow it.
        let mut batch = Vec::new();
        assert!(share.share(&mut batch, &mut deferred, now));
        assert_eq!(journal_ids(&batch), (9..=16).collect::<Vec<i64>>());
        assert_eq!(deferred.len(), 84);
        const { assert!(CENSUS_ALONE > CENSUS_BESIDE_OTHERS) };
    }

    /// Beside one connection's lone messages, census updates wait until a batch of them can
    /// ride together, so the census pages are written once for the batch; behind a backlog,
    /// a batch rides in one transaction of every few, so ACKs share the census as beside a
    /// flood, on average.
    #[test]
    fn ok_census_rides_in_batches_beside_lone_messages() {
        let now = std::time::Instant::now();
        let mut share = Share::default();
        let mut deferred = VecDeque::new();
        let mut answers = Vec::new();
        for id in 1..i64::try_from(CENSUS_RIDE_BATCH).unwrap() {
            let (mut batch, _inserted) = journal_inserts(1);
            let (update, answer) = identity(id, "IPP1");
            batch.push(update);
            answers.push(answer);
            assert!(!share.share(&mut batch, &mut deferred, now));
            assert_eq!(batch.len(), 1, "update {id} waits for a batch");
        }
        let (mut batch, _inserted) = journal_inserts(1);
        let (census, _answers) = census_updates(32, 100);
        batch.extend(census);
        assert!(!share.share(&mut batch, &mut deferred, now));
        assert_eq!(
            journal_ids(&batch),
            (1..=32).collect::<Vec<i64>>(),
            "a batch rides, oldest first"
        );
        // A backlog: the next batch rides CENSUS_RIDE_EVERY transactions later.
        for transaction in 1..CENSUS_RIDE_EVERY {
            let (mut batch, _inserted) = journal_inserts(1);
            assert!(!share.share(&mut batch, &mut deferred, now));
            assert_eq!(batch.len(), 1, "transaction {transaction} after a ride");
        }
        let (mut batch, _inserted) = journal_inserts(1);
        assert!(!share.share(&mut batch, &mut deferred, now));
        assert_eq!(journal_ids(&batch), (33..=64).collect::<Vec<i64>>());
    }

    /// A few census updates do not wait for a whole batch for ever: past CENSUS_MAX_WAIT
    /// they ride beside the next message.
    #[rstest::rstest]
    #[case::before_the_deadline(CENSUS_MAX_WAIT - std::time::Duration::from_millis(1), 0)]
    #[case::at_the_deadline(CENSUS_MAX_WAIT, 3)]
    fn ok_census_rides_once_it_waited_long_enough(
        #[case] after: std::time::Duration,
        #[case] riding: usize,
    ) {
        let start = std::time::Instant::now();
        let mut share = Share::default();
        let mut deferred = VecDeque::new();
        let (mut batch, _inserted) = journal_inserts(1);
        let (census, _answers) = census_updates(1, 3);
        batch.extend(census);
        assert!(!share.share(&mut batch, &mut deferred, start));
        assert_eq!(batch.len(), 1);
        let (mut batch, _inserted) = journal_inserts(1);
        assert!(!share.share(&mut batch, &mut deferred, start + after));
        assert_eq!(batch.len(), 1 + riding);
        assert_eq!(deferred.len(), 3 - riding);
    }

    /// A census-only transaction, and its feed: the writer's queue and the deferred updates.
    fn census_alone(
        deferred: &mut VecDeque<Request>,
        queue: &mut mpsc::Receiver<Request>,
        connection: &mut Connection,
        path: &std::path::Path,
        counters: &Counters,
    ) {
        let mut batch = Vec::new();
        assert!(Share::default().share(&mut batch, deferred, std::time::Instant::now()));
        let mut closers = Vec::new();
        let mut feed = Feed {
            queue,
            deferred,
            closers: &mut closers,
            max_batch: 512,
            taken: CENSUS_BESIDE_OTHERS,
            done: false,
        };
        commit_batch(connection, &mut batch, path, counters, Some(&mut feed));
        assert!(batch.is_empty());
    }

    /// Alone, a census catching up grows its transaction while nothing is queued: one commit
    /// for all of them, in order.
    #[test]
    fn ok_census_alone_takes_every_deferred_update_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let mut connection = schema::open_writer(&path).unwrap();
        let counters = Counters::default();
        let (_sender, mut queue) = mpsc::channel(8);
        let mut deferred = VecDeque::new();
        let mut answers = Vec::new();
        for id in 1..=100 {
            let (request, answer) = identity(id, &format!("IPP{id}"));
            deferred.push_back(request);
            answers.push(answer);
        }
        census_alone(&mut deferred, &mut queue, &mut connection, &path, &counters);
        assert!(deferred.is_empty());
        assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
        assert_eq!(counters.last_batch_size.load(Ordering::Relaxed), 100);
        for mut answer in answers {
            assert_eq!(
                answer.try_recv().unwrap().unwrap().status,
                census::ApplyStatus::Applied
            );
        }
    }

    /// A request queued while a census-only transaction runs joins it, and the census stops
    /// growing it: the request is committed after the first share of census updates, the
    /// later census updates wait in order (one queued meanwhile behind them).
    #[test]
    fn ok_census_alone_stops_growing_when_a_request_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let mut connection = schema::open_writer(&path).unwrap();
        let counters = Counters::default();
        let (sender, mut queue) = mpsc::channel(8);
        let mut deferred = VecDeque::new();
        for id in 1..=100 {
            deferred.push_back(identity(id, &format!("IPP{id}")).0);
        }
        let (journal, mut journal_answer) = one(record("1", b"MSH|1"));
        sender.try_send(journal).unwrap();
        sender.try_send(identity(101, "IPP101").0).unwrap();
        census_alone(&mut deferred, &mut queue, &mut connection, &path, &counters);
        assert_eq!(
            journal_answer.try_recv().unwrap().unwrap(),
            JournalOutcome::Stored { id: 1 }
        );
        assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
        assert_eq!(
            counters.last_batch_size.load(Ordering::Relaxed),
            1 + CENSUS_BESIDE_OTHERS as u64
        );
        let left: Vec<Request> = deferred.into_iter().collect();
        assert_eq!(journal_ids(&left), (9..=101).collect::<Vec<i64>>());
    }

    /// Census updates wait for a ride only while journal inserts keep coming: within
    /// [`CENSUS_RIDE_WINDOW`] of the last one's commit, never past [`CENSUS_MAX_WAIT`].
    #[test]
    fn ok_census_waits_for_the_next_insert_while_inserts_come() {
        let mut ride = Ride::new(std::path::Path::new("j.sqlite"));
        ride.committed(true, true);
        let now = std::time::Instant::now();
        let last = ride.last_other.unwrap();
        assert_eq!(ride.wait_until(now), Some(last + CENSUS_RIDE_WINDOW));
        // Riding along (an insert's transaction took some): the rest still waits.
        ride.committed(true, false);
        assert!(ride.wait_until(std::time::Instant::now()).is_some());
    }

    #[test]
    fn err_census_does_not_wait_when_idle_or_waiting_too_long() {
        let mut ride = Ride::new(std::path::Path::new("j.sqlite"));
        let now = std::time::Instant::now();
        assert_eq!(ride.wait_until(now), None, "no insert yet: commit at once");
        ride.last_other = Some(now);
        assert_eq!(
            ride.wait_until(now + CENSUS_RIDE_WINDOW),
            None,
            "intake idle for the window: commit at once"
        );
        // Inserts keep coming, but the census has waited its longest.
        ride.census_since = Some(now);
        ride.last_other = Some(now + CENSUS_MAX_WAIT);
        assert_eq!(ride.wait_until(now + CENSUS_MAX_WAIT), None);
        // A census-only commit: what waits counts from now again.
        ride.committed(false, false);
        assert_eq!(ride.census_since, None);
    }

    /// The wait ends with the request that came, or at the deadline with none.
    #[test]
    fn ok_ride_receives_a_queued_request_or_none_at_the_deadline() {
        let ride = Ride::new(std::path::Path::new("j.sqlite"));
        let (sender, mut queue) = mpsc::channel(8);
        let until = std::time::Instant::now() + std::time::Duration::from_millis(5);
        assert!(ride.recv_until(&mut queue, until).is_none());
        assert!(std::time::Instant::now() >= until);
        sender.try_send(identity(1, "IPP1").0).unwrap();
        let far = std::time::Instant::now() + std::time::Duration::from_secs(60);
        assert!(matches!(
            ride.recv_until(&mut queue, far),
            Some(Request::Census { journal_id: 1, .. })
        ));
        drop(sender);
        assert!(
            ride.recv_until(&mut queue, far).is_none(),
            "every sender gone"
        );
    }

    #[test]
    fn ok_prepared_hash_is_sha256_of_raw() {
        let prepared = Prepared::new(record("1", b"abc"));
        let hex: String = prepared.hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(prepared.received_at, 1_700_000_000_000_000);
    }
}

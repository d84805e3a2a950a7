//! The SQLite store: the journal of inbound messages, committed before anybody ACKs.
//!
//! # The invariant
//!
//! [`Store::journal`] resolves only after the transaction holding the record has committed on
//! a connection in WAL mode with `synchronous=FULL` (the WAL is fsynced at every commit). When
//! the commit fails, every caller of that batch gets a [`StoreError`], so the engine answers AE
//! ("not stored"), never AA.
//!
//! # Layout
//!
//! - `schema`: opening connections (WAL, `synchronous=FULL`, `foreign_keys=ON`,
//!   `busy_timeout`) and the versioned migrations recorded in `PRAGMA user_version`.
//! - `writer`: the one writer thread that owns the write connection and does group commit:
//!   it blocks for the first request, drains what is already queued (up to
//!   [`StoreOptions::max_batch`] requests), runs them in one transaction, commits, then answers
//!   each request.
//! - `read`: a small pool of read-only connections for listings and lookups; WAL lets them
//!   run beside the writer.
//! - `census`: the ADT census tables (schema version 2): [`Store::apply_census`] in the
//!   writer's transaction, [`Store::census_patient`] on the read pool.
//! - `queue`: the durable outbound queue (enqueue, next pending per destination, delivered /
//!   retry / dead, replay), written through the same writer thread.
//! - `hold`: pushed bundles held until their patient is known (schema version 4), released
//!   with their messages enqueued in one transaction ([`Store::deliver_bundle`]).
//!
//! # Duplicates
//!
//! An accepted message with the same channel, sender (MSH-3^MSH-4), control id (MSH-10) and
//! content hash (SHA-256 of the raw bytes) as an accepted or processed row is not stored
//! again: the row's `duplicate_count` is bumped and the caller gets
//! [`JournalOutcome::Duplicate`] with the first row's id, so it can ACK again without
//! processing twice. Rejected messages are journaled but never deduplicated, so a resend
//! after a fix goes through.
//!
//! # Shutdown
//!
//! Dropping every [`Store`] handle, or [`Store::close`], lets the writer finish the queued
//! requests, commit them and exit; `close` waits for that.

mod audit;
pub mod backup;
mod census;
mod checkpoint;
mod documents;
mod follow;
mod hold;
mod intake_log;
pub mod migrate;
pub mod ownership;
mod postgres;
mod prune;
mod push;
mod queue;
mod read;
mod schema;
pub mod settings;
mod writer;

pub use self::census::{
    Anomaly, AnomalyKind, AnomalyView, ApplyStatus, CensusOutcome, EncounterView, MovementView,
    PatientKey, PatientView, render,
};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

pub use self::audit::{AuditEntry, AuditRecord, LineageRow};
pub use self::documents::{
    CensusLookup, CensusRecord, DocumentTracking, MessageState, TrackedMessage,
};
pub use self::follow::PushFate;
pub use self::hold::{DeliverOutcome, HeldBundle, HoldOverview, ReleaseReason, UnsettledPush};
pub use self::intake_log::IntakeBacklog;
pub use self::postgres::Wakeup;
use self::prune::PruneCursor;
pub use self::prune::{CensusCutoff, ChannelCutoff, Pruned, RetentionPlan};
pub use self::push::{Mapped, PushMapper, PushOutcome};

/// The intake log's folder of the store file `path` (`<file>-intake`, beside it).
pub fn intake_log_folder(path: &Path) -> PathBuf {
    intake_log::folder_of(path)
}
pub use self::queue::{
    DeadLetter, DestinationDepth, OutboundItem, OutboundMessage, OutboundStatus, QueueHead,
};
pub use self::read::JournalSearch;
use self::read::Readers;
use self::writer::{Counters, Prepared, Request};
use crate::census::{CensusUpdate, Practitioner};

/// Tuning of the writer queue; the defaults suit one daemon with a few dozen connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Requests that may wait for the writer before `journal` callers wait in turn
    /// (backpressure instead of an unbounded heap). Values below 1 are taken as 1.
    pub queue_capacity: usize,
    /// Most requests committed in one transaction: bounds the latency a batch adds.
    /// A `journal_many` call counts as one request. Values below 1 are taken as 1. A
    /// transaction of census updates alone, which no caller waits behind, may grow past it
    /// (up to 512 updates) while nothing else is queued (see `writer`).
    pub max_batch: usize,
    /// MLLP messages are made durable in the intake log (one append and `fdatasync` per
    /// batch) and copied into the journal behind their ACK (see `intake_log`); SQLite only.
    pub intake_log: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl StoreOptions {
    /// The library's defaults, the configuration's too (`[store]`) but for `intake_log`: on
    /// by default in the daemon's configuration on SQLite, off here, where every command
    /// opening the store beside the daemon starts (only the daemon owns the log).
    pub const DEFAULT: StoreOptions = StoreOptions {
        queue_capacity: 4096,
        max_batch: 512,
        intake_log: false,
    };
}

/// What the engine decided about an inbound message, stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordStatus {
    /// Valid and going to be processed (and ACKed AA once committed).
    Accepted,
    /// Refused (AE/AR): journaled for the operator, never treated as a duplicate.
    Rejected {
        /// Why it was refused, as answered to the sender.
        reason: String,
    },
}

/// One inbound message as the engine hands it to the journal; the store computes the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    /// Configured channel name the message came in on.
    pub channel: String,
    /// When the message was received (stored as unix microseconds).
    pub received_at: jiff::Timestamp,
    /// Remote address (or file path) it came from.
    pub peer: String,
    /// MSH-3^MSH-4 as the engine gives it: part of the duplicate key.
    pub sender: String,
    /// MSH-9, for listings.
    pub message_type: String,
    /// MSH-10: part of the duplicate key.
    pub control_id: String,
    /// The message bytes exactly as received, before any charset decoding.
    pub raw: bytes::Bytes,
    /// Accepted or rejected (with the reason).
    pub status: RecordStatus,
}

/// Status of a journal row, as stored in its `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryStatus {
    /// Committed, not processed yet.
    Accepted,
    /// Refused by the engine; kept for the operator.
    Rejected,
    /// Handled by the engine (see [`Store::mark_processed`]).
    Processed,
}

impl EntryStatus {
    /// The text stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Processed => "processed",
        }
    }

    /// Reads the `status` column; `None` for a value this build does not know.
    pub fn from_bytes(text: &[u8]) -> Option<Self> {
        match text {
            b"accepted" => Some(Self::Accepted),
            b"rejected" => Some(Self::Rejected),
            b"processed" => Some(Self::Processed),
            _ => None,
        }
    }
}

impl std::fmt::Display for EntryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the journal did with a record; only returned once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalOutcome {
    /// A new row was committed with this id.
    Stored {
        /// Row id in `journal`.
        id: i64,
    },
    /// The same message was already journaled: ACK it again, do not process it twice.
    Duplicate {
        /// Id of the first row (its `duplicate_count` was bumped).
        id: i64,
        /// Status of that first row (`Accepted` or `Processed`).
        status: EntryStatus,
    },
}

/// How the records of one MLLP frame were made durable ([`Store::journal_intake`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Journaled {
    /// Committed to the journal table: one outcome per record, in order.
    Committed(Vec<JournalOutcome>),
    /// Made durable in the intake log: all of them, copied into the journal a moment later
    /// (duplicates are found then).
    Logged,
}

impl Journaled {
    /// Whether record `at` of the call is durable.
    pub fn holds(&self, at: usize) -> bool {
        match self {
            Journaled::Committed(outcomes) => at < outcomes.len(),
            Journaled::Logged => true,
        }
    }

    /// The ids of the journal rows the records repeat (only known when committed).
    pub fn duplicates(&self) -> impl Iterator<Item = i64> + '_ {
        let outcomes = match self {
            Journaled::Committed(outcomes) => outcomes.as_slice(),
            Journaled::Logged => &[],
        };
        outcomes.iter().filter_map(|outcome| match outcome {
            JournalOutcome::Duplicate { id, .. } => Some(*id),
            JournalOutcome::Stored { .. } => None,
        })
    }
}

impl JournalOutcome {
    /// Row id holding the message, whether just stored or stored before.
    pub fn id(self) -> i64 {
        match self {
            Self::Stored { id } | Self::Duplicate { id, .. } => id,
        }
    }
}

/// Which journal rows to list (CLI `journal list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalFilter {
    /// Only rows with this MSH-10.
    pub control_id: Option<String>,
    /// Only rows of this channel.
    pub channel: Option<String>,
    /// Most rows returned; 0 means no limit.
    pub limit: usize,
}

impl Default for JournalFilter {
    fn default() -> Self {
        Self {
            control_id: None,
            channel: None,
            limit: 100,
        }
    }
}

/// One journal row without its bytes: what a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSummary {
    /// Row id.
    pub id: i64,
    /// When the first copy was received.
    pub received_at: jiff::Timestamp,
    /// Channel name.
    pub channel: String,
    /// MSH-9.
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
    /// `accepted`, `rejected` or `processed`.
    pub status: String,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// Why a processed row was not used (the census could not use it); never patient data.
    pub note: Option<String>,
    /// Remote address or file path.
    pub peer: String,
    /// MSH-3^MSH-4.
    pub sender: String,
}

/// One journal row with its bytes: what `journal show` and a replay need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The listing fields.
    pub summary: JournalSummary,
    /// The message bytes exactly as received.
    pub raw: Vec<u8>,
    /// SHA-256 of `raw`.
    pub content_hash: [u8; 32],
    /// How many duplicates of it arrived after it.
    pub duplicate_count: i64,
    /// When the last copy (first or duplicate) arrived.
    pub last_seen_at: jiff::Timestamp,
}

/// A journal row waiting to be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprocessed {
    pub id: i64,
    pub channel: String,
    pub raw: Vec<u8>,
}

/// A snapshot of the writer's counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions attempted (one per batch).
    pub batches: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Transactions that failed and were rolled back.
    pub failed_batches: u64,
    /// Records committed (stored or duplicate).
    pub messages: u64,
    /// Records committed as duplicates of an earlier row.
    pub duplicates: u64,
    /// Requests in the last batch.
    pub last_batch_size: u64,
    /// Requests in the largest batch so far.
    pub max_batch_size: u64,
}

/// Everything that can go wrong in the store; each message names the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The folder that should hold the database could not be created.
    #[error("cannot create folder `{}` for store `{}`", folder.display(), path.display())]
    CreateFolder {
        /// The database file.
        path: PathBuf,
        /// The missing folder.
        folder: PathBuf,
        /// Why creation failed.
        #[source]
        source: io::Error,
    },
    /// SQLite could not open the file.
    #[error("cannot open store `{}`", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A connection setting (pragma) could not be applied.
    #[error("store `{}`: cannot set `{setting}`", path.display())]
    Configure {
        /// The database file.
        path: PathBuf,
        /// The setting, e.g. `journal_mode=WAL`.
        setting: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite refused WAL mode, without which commits and readers would block each other.
    #[error("store `{}`: journal_mode is `{mode}`, expected `wal`", path.display())]
    NotWal {
        /// The database file.
        path: PathBuf,
        /// The mode SQLite kept.
        mode: String,
    },
    /// The file's schema version is not one this build knows (written by a newer ordobridge?).
    #[error(
        "store `{}` has schema version {found}, this build knows versions 0 to {supported}; \
         was it written by a newer ordobridge?",
        path.display()
    )]
    SchemaVersion {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// Newest version this build can migrate to.
        supported: i64,
    },
    /// A store opened read-only (the CLI's listings) has an older schema: listings never
    /// migrate, the daemon does at its start.
    #[error(
        "store `{}` has schema version {found}, this build reads version {supported}: start \
         the daemon of this version once (`ordobridge run`), which migrates it; listings never \
         change the store",
        path.display()
    )]
    SchemaOutdated {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The version this build reads.
        supported: i64,
    },
    /// A write through a store opened read-only ([`Store::open_read_only`]).
    #[error("store `{}` is open read-only here: nothing can be written through it", path.display())]
    ReadOnly {
        /// The database file.
        path: PathBuf,
    },
    /// A migration script failed; its transaction was rolled back.
    #[error("store `{}`: migration to schema version {version} failed", path.display())]
    Migration {
        /// The database file.
        path: PathBuf,
        /// Version the failed script would have reached.
        version: i64,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The writer thread could not be started.
    #[error("store `{}`: cannot start the writer thread", path.display())]
    Spawn {
        /// The database file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The intake log (see `intake_log`) could not be set up, written or read: a message
    /// whose append failed is not stored (its sender gets AE and resends it).
    #[error("store `{}`: intake log `{}`: cannot {action}", path.display(), file.display())]
    IntakeLog {
        /// The database file.
        path: PathBuf,
        /// The segment or folder.
        file: PathBuf,
        /// What failed, e.g. `append and fdatasync`.
        action: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A record of the intake log that was made durable cannot be read back (not the torn
    /// tail of the last segment, which a crash leaves and which was never acknowledged).
    #[error(
        "store `{}`: intake log `{}` is damaged at byte {offset}: {reason}; the records from \
         there on cannot be copied into the journal. Move the file out of its folder to start \
         without them (they were acknowledged: have their senders resend them), or restore a \
         backup",
        path.display(),
        file.display()
    )]
    IntakeLogDamaged {
        /// The database file.
        path: PathBuf,
        /// The segment.
        file: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The intake log is needed (the daemon with the log enabled, a migration), and another
    /// process kept it (held its lock) past the wait: two processes appending to one log, or
    /// one recovering the other's live segments, would lose acknowledged messages.
    #[error(
        "store `{}`: its intake log is in use by another process (it kept the lock `{}` \
         through the wait): stop the other ordobridge daemon running on this store first (a \
         migration needs it stopped too), or give this daemon a store of its own \
         (`[store] path`)",
        path.display(),
        file.display()
    )]
    IntakeLogInUse {
        /// The database file.
        path: PathBuf,
        /// The lock file.
        file: PathBuf,
    },
    /// The intake log no longer takes messages: copying it into the journal stopped on an
    /// error (logged), or the store is closing. Nothing of the message is stored.
    #[error("store `{}`: the intake log takes no more messages: {reason}", path.display())]
    IntakeLogStopped {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The batch holding this request was rolled back: nothing of it is stored.
    #[error("store `{}`: batch of {requests} request(s) not committed", path.display())]
    NotCommitted {
        /// The database file.
        path: PathBuf,
        /// Requests in the failed batch (all got this error).
        requests: usize,
        /// What SQLite said (shared by every caller of the batch).
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// A read (listing, lookup) failed.
    #[error("store `{}`: read failed", path.display())]
    Read {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The blocking task running a read did not finish (runtime shutting down).
    #[error("store `{}`: read task did not finish", path.display())]
    ReadTask {
        /// The database file.
        path: PathBuf,
        /// Why the task ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The writer has stopped (after `close`): nothing was stored.
    #[error("store `{}` is closed", path.display())]
    Closed {
        /// The database file.
        path: PathBuf,
    },
    /// PostgreSQL: the backend's task applying census updates ended before answering one
    /// (the store closing with the daemon, or the task failed).
    #[error(
        "store `{}`: the census update got no answer: the task applying it ended (the store \
         is closing, or the task failed: see the log); it is not known to be stored, and the \
         census processor applies its journal row again, which is harmless if it was",
        path.display()
    )]
    CensusUnanswered {
        /// `postgres://user@host:port/db`.
        path: PathBuf,
    },
    /// PostgreSQL: the pool, its runtime or its TLS could not be set up.
    #[error("store `{}`: cannot set up the connection to PostgreSQL: {reason}", path.display())]
    PostgresSetup {
        /// `postgres://user@host:port/db`.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// PostgreSQL: no connection could be had (server down or refusing, TLS, password,
    /// every pooled connection busy): nothing of the operation is stored.
    #[error("store `{}`: no connection to PostgreSQL for `{operation}`", path.display())]
    PostgresConnect {
        /// `postgres://user@host:port/db`.
        path: PathBuf,
        /// The store operation, e.g. `journal`.
        operation: &'static str,
        /// What the pool said.
        #[source]
        source: Box<deadpool_postgres::PoolError>,
    },
    /// PostgreSQL: a statement or the commit failed; the transaction is rolled back, nothing
    /// of the operation is stored.
    #[error("store `{}`: `{operation}` failed on PostgreSQL", path.display())]
    Postgres {
        /// `postgres://user@host:port/db`.
        path: PathBuf,
        /// The store operation, e.g. `journal`.
        operation: &'static str,
        /// What PostgreSQL said.
        #[source]
        source: Box<tokio_postgres::Error>,
    },
    /// PostgreSQL: a migration script failed; its transaction was rolled back.
    #[error("store `{}`: migration to schema version {version} failed", path.display())]
    PostgresMigration {
        /// `postgres://user@host:port/db`.
        path: PathBuf,
        /// Version the failed script would have reached.
        version: i64,
        /// What PostgreSQL said.
        #[source]
        source: Box<tokio_postgres::Error>,
    },
    /// PostgreSQL: a value read back is not one this build takes (edited by hand?).
    #[error("store `{}`: `{operation}` read a bad value: {reason}", path.display())]
    PostgresValue {
        /// `postgres://user@host:port/db`.
        path: PathBuf,
        /// The store operation.
        operation: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An operation the PostgreSQL backend does not do yet: a SQLite read that reached the
    /// readers of a store on PostgreSQL (see `read::Source::Elsewhere`).
    #[error(
        "store `{}`: `{operation}` is not ported to the PostgreSQL backend yet: use \
         `backend = \"sqlite\"` for a configuration that needs it",
        path.display()
    )]
    Unported {
        /// `postgres://user@host:port/db`.
        path: PathBuf,
        /// The store operation, e.g. `apply_census`.
        operation: &'static str,
    },
}

/// A cheap, cloneable handle on one SQLite database: the journal and its writer thread.
///
/// Writes go through a bounded queue to the one writer thread; reads use their own
/// read-only connections. Cloning shares both.
#[derive(Debug, Clone)]
pub struct Store {
    /// Queue to the writer; the writer exits once every sender is gone (or on `close`).
    requests: mpsc::Sender<Request>,
    /// What handles share: the path, the reader pool, the writer's counters.
    shared: Arc<Shared>,
}

/// State shared by every clone of a [`Store`].
#[derive(Debug)]
struct Shared {
    /// Database file, named in every error.
    path: PathBuf,
    /// Idle read-only connections.
    readers: Readers,
    /// Written by the writer thread, read by [`Store::stats`].
    counters: Arc<Counters>,
    /// Opened by [`Store::open_read_only`]: no writer, writes are refused.
    read_only: bool,
    /// The PostgreSQL backend, when the store is one ([`Store::open_postgres`]): every method
    /// runs there instead of on SQLite.
    ///
    /// Why a field rather than an enum of backends or a trait: the SQLite paths (writer
    /// thread, readers) stay exactly as they are, in files other work edits, and each method
    /// of the facade starts with one dispatch line; a trait object would need async methods
    /// boxed on the hot path of every journal insert for no gain while there are two backends.
    postgres: Option<postgres::Postgres>,
    /// The intake log, when `StoreOptions::intake_log` is on (SQLite only).
    intake: Option<intake_log::IntakeLog>,
    /// Poked when journal rows arrive behind their ACK (from the intake log): the census
    /// processor's wake-up ([`Store::journal_grew`]).
    journal_grew: Arc<tokio::sync::Notify>,
}

impl Store {
    /// Opens (creating the file and its folder if needed) and migrates the database, then
    /// starts the writer thread.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let mut connection = schema::open_writer(path)?;
        // Whatever a stop left in the intake log is in the journal before anything runs,
        // unless another process (the running daemon, beside this command) owns the log.
        let owner = intake_log::own(path, options.intake_log)?;
        let next_seq = match owner {
            Some(_) => intake_log::recover(&mut connection, path)?,
            None => 1,
        };
        checkpoint::start(&mut connection, path)?;
        let (requests, queue) = mpsc::channel(options.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        writer::spawn(
            connection,
            queue,
            path.to_path_buf(),
            options.max_batch.max(1),
            Arc::clone(&counters),
        )?;
        let journal_grew = Arc::new(tokio::sync::Notify::new());
        let intake = options
            .intake_log
            .then(|| {
                intake_log::IntakeLog::start(
                    path,
                    owner,
                    next_seq,
                    options.queue_capacity,
                    requests.clone(),
                    Arc::clone(&journal_grew),
                )
            })
            .transpose()?;
        Ok(Store {
            requests,
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                readers: Readers::new(path.to_path_buf()),
                counters,
                read_only: false,
                postgres: None,
                intake,
                journal_grew,
            }),
        })
    }

    /// Opens a store on PostgreSQL (see `store::postgres`): connects, migrates (or, with
    /// `migrate` false, as the CLI's listings do, only checks the schema version). Blocking:
    /// call it at start, like [`Store::open`].
    pub fn open_postgres(
        settings: &settings::PostgresSettings,
        migrate: bool,
    ) -> Result<Store, StoreError> {
        let backend = postgres::Postgres::open(settings, migrate)?;
        let path = backend.path().to_path_buf();
        // Nobody receives: the SQLite writer is never used (every method dispatches first).
        let (requests, _) = mpsc::channel(1);
        Ok(Store {
            requests,
            shared: Arc::new(Shared {
                readers: Readers::elsewhere(path.clone()),
                path,
                counters: Arc::default(),
                read_only: !migrate,
                postgres: Some(backend),
                intake: None,
                journal_grew: Arc::default(),
            }),
        })
    }

    /// Opens the store `backend` names: the SQLite file at `path`, or PostgreSQL.
    pub fn open_backend(
        backend: &settings::Backend,
        path: &Path,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        match backend {
            settings::Backend::Sqlite => Store::open(path, options),
            settings::Backend::Postgres(settings) => Store::open_postgres(settings, true),
        }
    }

    /// [`Store::open_read_only`] for the store `backend` names.
    pub fn open_backend_read_only(
        backend: &settings::Backend,
        path: &Path,
    ) -> Result<Store, StoreError> {
        match backend {
            settings::Backend::Sqlite => Store::open_read_only(path),
            settings::Backend::Postgres(settings) => Store::open_postgres(settings, false),
        }
    }

    /// `sqlite` or `postgres`: which backend this handle runs on.
    pub fn backend_name(&self) -> &'static str {
        if self.shared.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Wakeups from every node on the same database (PostgreSQL `LISTEN/NOTIFY`, see
    /// `postgres::wakeups`): what was committed for a task this node runs (a destination's
    /// delivery, the census processor, the hold releaser), so it acts at once rather than at
    /// its next poll. The listening connection starts with the first subscriber. `None` on
    /// SQLite: one process, its tasks are woken in memory.
    pub fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        self.postgres().map(postgres::Postgres::wakeups)
    }

    /// The PostgreSQL backend, when this store is one.
    fn postgres(&self) -> Option<&postgres::Postgres> {
        self.shared.postgres.as_ref()
    }

    /// The PostgreSQL backend for a write: `Err` when the store was opened read-only.
    fn postgres_writer(&self) -> Result<Option<&postgres::Postgres>, StoreError> {
        match &self.shared.postgres {
            Some(_) if self.shared.read_only => Err(StoreError::ReadOnly {
                path: self.shared.path.clone(),
            }),
            postgres => Ok(postgres.as_ref()),
        }
    }

    /// Opens a store for reading only, as the CLI's listings (`journal`, `census`, `queue`)
    /// do: read-only connections, no writer thread, no migration, nothing written to the
    /// file, so it works beside the running daemon and on a file that is read-only on disk.
    ///
    /// A store of another schema version than this build's is refused (a newer one: by a
    /// newer ordobridge; an older one: the daemon migrates it at its start). A file that does
    /// not exist yet (the daemon never started) reads as an empty store and is not created.
    /// Writes through the handle fail with [`StoreError::ReadOnly`].
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let readers = if path.exists() {
            let (connection, immutable) = schema::open_listing(path)?;
            let readers = if immutable {
                Readers::immutable(path.to_path_buf())
            } else {
                Readers::new(path.to_path_buf())
            };
            readers.keep(connection);
            readers
        } else {
            Readers::empty(path.to_path_buf())
        };
        // Nobody receives: every write request is refused (see `closed`).
        let (requests, _) = mpsc::channel(1);
        Ok(Store {
            requests,
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                readers,
                counters: Arc::default(),
                read_only: true,
                postgres: None,
                intake: None,
                journal_grew: Arc::default(),
            }),
        })
    }

    /// The database file this handle writes to.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Journals a message; resolves only after the transaction holding it has committed.
    ///
    /// Waits while the writer queue is full. If the future is dropped after the request was
    /// queued, the record is still committed, but nobody learns it: ACK only on `Ok`.
    pub async fn journal(&self, record: InboundRecord) -> Result<JournalOutcome, StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.journal(record).await;
        }
        let record = Prepared::new(record);
        let (reply, answer) = oneshot::channel();
        self.send(Request::One {
            record,
            outcome: None,
            reply,
        })
        .await?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Several records from one frame or file, in the same transaction, answered together
    /// (outcomes in the order of `records`).
    pub async fn journal_many(
        &self,
        records: Vec<InboundRecord>,
    ) -> Result<Vec<JournalOutcome>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.journal_many(records).await;
        }
        // Hashing and the outcome vector are done here, on the caller's task, so the writer
        // thread neither hashes nor allocates.
        let outcomes = Vec::with_capacity(records.len());
        let records = records.into_iter().map(Prepared::new).collect();
        let (reply, answer) = oneshot::channel();
        self.send(Request::Many {
            records,
            intake_through: None,
            outcomes,
            reply,
        })
        .await?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Journals the records of one MLLP frame for its ACK: through the intake log when the
    /// store has one (durable when this resolves, in the journal table a moment later),
    /// else as [`Store::journal_many`].
    pub async fn journal_intake(
        &self,
        records: Vec<InboundRecord>,
    ) -> Result<Journaled, StoreError> {
        match &self.shared.intake {
            Some(intake) if !records.is_empty() => {
                let records = records.into_iter().map(Prepared::new).collect();
                intake.append(records).await.map(|()| Journaled::Logged)
            }
            _ => self.journal_many(records).await.map(Journaled::Committed),
        }
    }

    /// Poked when journal rows arrive behind their senders' ACK (copied from the intake
    /// log): whoever processes new rows (the census processor) waits on it too.
    pub fn journal_grew(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.shared.journal_grew)
    }

    /// Waits (at most `timeout`) until every message acknowledged through the intake log so
    /// far is in the journal table; whether it is (at once without an intake log).
    pub async fn intake_copied(&self, timeout: std::time::Duration) -> bool {
        match &self.shared.intake {
            Some(intake) => intake.wait_copied(timeout).await,
            None => true,
        }
    }

    /// Messages acknowledged through the intake log and not yet in the journal table, seen
    /// from any handle: the daemon's own store, or a command's beside it (`ordobridge
    /// journal` says that its listing lags; what a crash left counts until the next start).
    /// 0 on PostgreSQL, or when the log holds nothing.
    pub fn intake_unapplied(&self) -> Result<u64, StoreError> {
        if let Some(intake) = &self.shared.intake {
            return Ok(intake.backlog().messages);
        }
        if self.shared.postgres.is_some() {
            return Ok(0);
        }
        let applied: i64 = self.shared.readers.with(|connection| {
            connection.query_row(intake_log::APPLIED_SQL, [], |row| row.get(0))
        })?;
        intake_log::unapplied(&self.shared.path, u64::try_from(applied).unwrap_or(0))
    }

    /// Why the intake log refuses new messages (answered AE), while it does: copying into
    /// the journal fails (retried every second) or stopped. `None` when it takes them, or
    /// without a log.
    pub fn intake_refusal(&self) -> Option<String> {
        self.shared
            .intake
            .as_ref()
            .and_then(intake_log::IntakeLog::refusal)
    }

    /// Messages acknowledged and not yet in the journal table; `None` without an intake log.
    pub fn intake_backlog(&self) -> Option<IntakeBacklog> {
        self.shared
            .intake
            .as_ref()
            .map(intake_log::IntakeLog::backlog)
    }

    /// Marks accepted rows as processed, in the writer's next batch. Ids that are unknown,
    /// rejected or already processed are left as they are.
    pub async fn mark_processed(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.mark_processed(ids).await;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::MarkProcessed { ids, reply }).await?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Applies a census update and marks journal row `journal_id` processed, in one
    /// transaction of the writer; resolves after the commit. A row already processed is not
    /// applied again ([`ApplyStatus::AlreadyProcessed`]), so a replay after a crash is safe.
    pub async fn apply_census(
        &self,
        journal_id: i64,
        update: CensusUpdate,
    ) -> Result<CensusOutcome, StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.apply_census(journal_id, update).await;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Census {
            journal_id,
            update: Box::new(update),
            outcome: None,
            reply,
        })
        .await?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Queues census updates for several journal rows to the writer, in the given order, and
    /// returns without waiting: they share transactions (one fsync for many updates) instead
    /// of paying a commit each, and the caller can prepare the next ones meanwhile. Each
    /// update still succeeds or fails alone ([`PendingCensus::outcomes`], same order).
    pub async fn submit_census(&self, updates: Vec<(i64, CensusUpdate)>) -> PendingCensus {
        let mut answers = Vec::with_capacity(updates.len());
        if self.postgres().is_some() {
            match self.postgres_writer() {
                Ok(Some(postgres)) => {
                    answers.extend(postgres.submit_census(updates).into_iter().map(Ok))
                }
                // Read-only: each update answers the refusal; nothing is applied.
                _ => answers.extend(updates.iter().map(|_| {
                    Err(StoreError::ReadOnly {
                        path: self.shared.path.clone(),
                    })
                })),
            }
            return PendingCensus {
                answers,
                store: self.clone(),
            };
        }
        for (journal_id, update) in updates {
            let (reply, answer) = oneshot::channel();
            let sent = self
                .send(Request::Census {
                    journal_id,
                    update: Box::new(update),
                    outcome: None,
                    reply,
                })
                .await;
            answers.push(sent.map(|()| answer));
        }
        PendingCensus {
            answers,
            store: self.clone(),
        }
    }

    /// The census view of a patient by IPP, NDA or INS; a merged IPP gives the survivor
    /// (blocking: for the CLI or `spawn_blocking`).
    pub fn census_patient(&self, key: &PatientKey) -> Result<Option<PatientView>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.census_patient(key);
        }
        self.shared
            .readers
            .with(|connection| census::patient_view(connection, key))
    }

    /// [`Store::census_patient`] on the blocking pool, for async callers (launch, HTTP).
    pub async fn census_patient_async(
        &self,
        key: PatientKey,
    ) -> Result<Option<PatientView>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.census_patient_async(key).await;
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.census_patient(&key))
            .await
            .map_err(|source| self.read_task(source))?
    }

    /// A practitioner by RPPS as the ADT feed last named them (the launch takes user names
    /// from it) (blocking).
    pub fn census_practitioner(&self, rpps: &str) -> Result<Option<Practitioner>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.census_practitioner(rpps);
        }
        self.shared
            .readers
            .with(|connection| census::practitioner(connection, rpps))
    }

    /// Lists journal rows, newest first (blocking: for the CLI or `spawn_blocking`).
    pub fn list_journal(&self, filter: &JournalFilter) -> Result<Vec<JournalSummary>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.list_journal(filter);
        }
        self.shared
            .readers
            .with(|connection| read::list(connection, filter))
    }

    /// Lists journal rows matching every filter of `search`, newest first (blocking: for the
    /// CLI or `spawn_blocking`).
    pub fn search_journal(
        &self,
        search: &JournalSearch,
    ) -> Result<Vec<JournalSummary>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.search_journal(search);
        }
        self.shared
            .readers
            .with(|connection| read::search(connection, search))
    }

    /// Journal rows of the push endpoint's `channel` still `accepted`, received before
    /// `before` and not held: pushes that never finished (blocking; `limit` 0: no limit).
    pub fn unfinished_pushes(
        &self,
        channel: &str,
        before: jiff::Timestamp,
        limit: usize,
    ) -> Result<Vec<JournalSummary>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.unfinished_pushes(channel, before, limit);
        }
        self.shared
            .readers
            .with(|connection| read::unsettled(connection, channel, before, limit))
    }

    /// One journal row with its raw bytes, or `None` if there is no such id (blocking).
    pub fn journal_entry(&self, id: i64) -> Result<Option<JournalEntry>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.journal_entry(id);
        }
        self.shared
            .readers
            .with(|connection| read::entry(connection, id))
    }

    /// Accepted, not yet processed journal rows after `after_id`, oldest first (blocking
    /// pool), leaving out the rows of the channels in `skip` (their bodies are never read):
    /// what the census processor has left to do, also after a restart.
    pub async fn accepted_after(
        &self,
        after_id: i64,
        limit: usize,
        skip: [&'static str; 2],
    ) -> Result<Vec<Unprocessed>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.accepted_after(after_id, limit, skip).await;
        }
        self.read_blocking(move |connection| {
            read::accepted_after(connection, after_id, limit, skip)
        })
        .await
    }

    /// How many accepted journal rows after `after_id` the census has still to apply, leaving
    /// out the channels in `skip` (`ordobridge_census_lag_messages`); `None` on PostgreSQL,
    /// where another node may be applying them.
    pub async fn census_backlog(
        &self,
        after_id: i64,
        skip: [&'static str; 2],
    ) -> Result<Option<u64>, StoreError> {
        if self.postgres().is_some() {
            return Ok(None);
        }
        self.read_blocking(move |connection| read::census_backlog(connection, after_id, skip))
            .await
            .map(Some)
    }

    /// [`Store::list_journal`] on the blocking pool, for async callers (HTTP, engine).
    pub async fn list_journal_async(
        &self,
        filter: JournalFilter,
    ) -> Result<Vec<JournalSummary>, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.list_journal(&filter))
            .await
            .map_err(|source| self.read_task(source))?
    }

    /// [`Store::journal_entry`] on the blocking pool, for async callers (HTTP, engine).
    pub async fn journal_entry_async(&self, id: i64) -> Result<Option<JournalEntry>, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.journal_entry(id))
            .await
            .map_err(|source| self.read_task(source))?
    }

    /// One step of a prune on the writer: at most `limit` rows of each kind that `plan` lets go
    /// (none with `None`), then up to `vacuum_pages` free pages given back to the file system.
    /// Returns the rows deleted and the pages freed, after the commit.
    pub async fn prune_step(
        &self,
        plan: Option<RetentionPlan>,
        limit: usize,
        vacuum_pages: u32,
    ) -> Result<(Pruned, u32), StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.prune_step(plan, limit).await;
        }
        self.prune_from(plan, PruneCursor::default(), limit, vacuum_pages)
            .await
            .map(|(pruned, freed, _)| (pruned, freed))
    }

    /// [`Store::prune_step`] from `cursor` on; also returns where the next step resumes.
    async fn prune_from(
        &self,
        plan: Option<RetentionPlan>,
        cursor: PruneCursor,
        limit: usize,
        vacuum_pages: u32,
    ) -> Result<(Pruned, u32, PruneCursor), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Prune {
            plan,
            cursor,
            limit,
            vacuum_pages,
            pruned: Pruned::default(),
            next: cursor,
            freed: 0,
            failed: None,
            reply,
        })
        .await?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Commits an empty transaction through the writer: proof that the writer thread answers
    /// and the database takes a write lock (`/ready`, the systemd watchdog).
    pub async fn probe_commit(&self) -> Result<(), StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.probe_commit().await;
        }
        self.prune_step(None, 0, 0).await.map(|_| ())
    }

    /// Prunes everything `plan` lets go, `batch` rows of each kind per transaction (the writer
    /// serves journal inserts between them), then shrinks the file; returns the rows deleted
    /// and the pages freed. [`Store::prune_gently`] leaves the writer to intake most of the
    /// time.
    pub async fn prune(
        &self,
        plan: RetentionPlan,
        batch: usize,
    ) -> Result<(Pruned, u64), StoreError> {
        self.prune_gently(plan, batch, 0).await
    }

    /// [`Store::prune`] that pauses `pause_ratio` times as long as each step took before the
    /// next: the pruner of a running daemon takes at most 1/(1 + ratio) of the writer's time,
    /// so intake keeps its pace while a large backlog of old rows goes.
    pub async fn prune_gently(
        &self,
        plan: RetentionPlan,
        batch: usize,
        pause_ratio: u32,
    ) -> Result<(Pruned, u64), StoreError> {
        if let Some(postgres) = self.postgres_writer()? {
            return postgres.prune_gently(plan, batch, pause_ratio).await;
        }
        /// Pages given back per transaction (4 MiB with 4 KiB pages).
        const VACUUM_PAGES: u32 = 1024;
        let mut total = Pruned::default();
        let mut cursor = PruneCursor::default();
        loop {
            let started = std::time::Instant::now();
            let (pruned, _, next) = self
                .prune_from(Some(plan.clone()), cursor, batch.max(1), 0)
                .await?;
            cursor = next;
            total.add(pruned);
            if pruned.total() == 0 {
                break;
            }
            // Let the runtime serve other tasks (intake) between two transactions.
            if pause_ratio == 0 {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(started.elapsed() * pause_ratio).await;
            }
        }
        let mut freed = 0u64;
        if total.total() > 0 {
            loop {
                let (_, pages) = self.prune_step(None, 0, VACUUM_PAGES).await?;
                freed += u64::from(pages);
                if pages == 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            // The file shrinks once the log holding the vacuum is copied back: try now; under
            // load the writer's own checkpoints finish the job later.
            let path = self.shared.path.clone();
            let checkpointed = tokio::task::spawn_blocking(move || prune::checkpoint(&path))
                .await
                .map_err(|source| self.read_task(source))?;
            if let Err(e) = checkpointed {
                tracing::debug!(error = %e, "checkpoint after the prune did not run");
            }
        }
        Ok((total, freed))
    }

    /// The highest journal id committed (0 for an empty journal), on the blocking pool.
    pub async fn last_journal_id_async(&self) -> Result<i64, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.last_journal_id().await;
        }
        self.read_blocking(read::last_journal_id).await
    }

    /// What [`Store::prune`] would delete, without deleting (blocking).
    pub fn prunable(&self, plan: &RetentionPlan) -> Result<Pruned, StoreError> {
        self.prunable_by_channel(plan).map(|(pruned, _)| pruned)
    }

    /// [`Store::prunable`], and the journal rows of it by channel, by channel name
    /// (`ordobridge prune --dry-run`; blocking).
    pub fn prunable_by_channel(
        &self,
        plan: &RetentionPlan,
    ) -> Result<(Pruned, Vec<(String, usize)>), StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.prunable_by_channel(plan);
        }
        self.shared
            .readers
            .with(|connection| prune::count(connection, plan))
    }

    /// A snapshot of the writer's counters (commits, batches, messages, batch sizes).
    pub fn stats(&self) -> StoreStats {
        let counters = &self.shared.counters;
        StoreStats {
            batches: counters.batches.load(Ordering::Relaxed),
            commits: counters.commits.load(Ordering::Relaxed),
            failed_batches: counters.failed_batches.load(Ordering::Relaxed),
            messages: counters.messages.load(Ordering::Relaxed),
            duplicates: counters.duplicates.load(Ordering::Relaxed),
            last_batch_size: counters.last_batch_size.load(Ordering::Relaxed),
            max_batch_size: counters.max_batch_size.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer: requests already queued (from any clone) are committed and
    /// answered, later ones get [`StoreError::Closed`]; returns once the write connection is
    /// closed. Closing twice is harmless.
    pub async fn close(&self) {
        if let Some(postgres) = self.postgres() {
            postgres.close();
            return;
        }
        if let Some(intake) = &self.shared.intake {
            intake.close().await;
        }
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::Close { reply }).await.is_ok() {
            // An error here means the writer is already gone, which is what we wait for.
            let _ = answer.await;
        }
    }

    /// Queues a request, waiting while the queue is full.
    async fn send(&self, request: Request) -> Result<(), StoreError> {
        self.requests.send(request).await.map_err(|_| self.closed())
    }

    fn closed(&self) -> StoreError {
        let path = self.shared.path.clone();
        if self.shared.postgres.is_some() {
            // Every write dispatches to the backend before the SQLite writer: what is left
            // without an answer on PostgreSQL is a census update (`PendingCensus`).
            return StoreError::CensusUnanswered { path };
        }
        if self.shared.read_only {
            StoreError::ReadOnly { path }
        } else {
            StoreError::Closed { path }
        }
    }

    /// Runs `read` on a reader connection, on the blocking pool: how every async read of the
    /// store reaches SQLite.
    pub(super) async fn read_blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.shared.readers.with(read))
            .await
            .map_err(|source| self.read_task(source))?
    }

    fn read_task(&self, source: tokio::task::JoinError) -> StoreError {
        StoreError::ReadTask {
            path: self.shared.path.clone(),
            source,
        }
    }
}

/// Census updates queued by [`Store::submit_census`], answered after their commits.
#[must_use = "the outcomes say which updates failed"]
pub struct PendingCensus {
    answers: Vec<Result<oneshot::Receiver<Result<CensusOutcome, StoreError>>, StoreError>>,
    store: Store,
}

impl PendingCensus {
    /// Waits for every update's commit; one outcome per update, in submission order.
    pub async fn outcomes(self) -> Vec<Result<CensusOutcome, StoreError>> {
        let mut outcomes = Vec::with_capacity(self.answers.len());
        for answer in self.answers {
            outcomes.push(match answer {
                Ok(answer) => answer
                    .await
                    .map_err(|_| self.store.closed())
                    .and_then(|outcome| outcome),
                Err(e) => Err(e),
            });
        }
        outcomes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    pub(super) fn record(control_id: &str, raw: &'static [u8]) -> InboundRecord {
        InboundRecord {
            channel: "adt-in".to_owned(),
            received_at: jiff::Timestamp::from_microsecond(1_700_000_000_000_000)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            peer: "10.0.0.7:51234".to_owned(),
            sender: "DPI^CHU".to_owned(),
            message_type: "ADT^A01".to_owned(),
            control_id: control_id.to_owned(),
            raw: bytes::Bytes::from_static(raw),
            status: RecordStatus::Accepted,
        }
    }

    #[rstest]
    #[case::ok_accepted(EntryStatus::Accepted, "accepted")]
    #[case::ok_rejected(EntryStatus::Rejected, "rejected")]
    #[case::ok_processed(EntryStatus::Processed, "processed")]
    fn ok_status_text_round_trips(#[case] status: EntryStatus, #[case] text: &str) {
        assert_eq!(status.as_str(), text);
        assert_eq!(status.to_string(), text);
        assert_eq!(EntryStatus::from_bytes(text.as_bytes()), Some(status));
    }

    #[rstest]
    #[case::err_empty(b"")]
    #[case::err_duplicate(b"duplicate")]
    #[case::err_case(b"Accepted")]
    fn err_status_text_unknown(#[case] text: &[u8]) {
        assert_eq!(EntryStatus::from_bytes(text), None);
    }

    #[test]
    fn ok_outcome_id() {
        assert_eq!(JournalOutcome::Stored { id: 4 }.id(), 4);
        let duplicate = JournalOutcome::Duplicate {
            id: 9,
            status: EntryStatus::Processed,
        };
        assert_eq!(duplicate.id(), 9);
    }

    #[tokio::test]
    async fn err_read_only_store_reads_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let writer = Store::open(&path, StoreOptions::default()).unwrap();
        writer.journal(record("1", b"MSH|a")).await.unwrap();
        // Beside the running writer.
        let reader = Store::open_read_only(&path).unwrap();
        assert!(reader.journal_entry(1).unwrap().is_some());
        let err = reader.journal(record("2", b"MSH|b")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "store `{}` is open read-only here: nothing can be written through it",
                path.display()
            )
        );
        writer.close().await;
        // A store not created yet reads as empty and stays uncreated.
        let missing = dir.path().join("none/j.sqlite");
        let empty = Store::open_read_only(&missing).unwrap();
        assert!(empty.journal_entry(1).unwrap().is_none());
        assert!(empty.queue_overview().unwrap().is_empty());
        assert!(!missing.exists());
    }

    #[tokio::test]
    async fn ok_closed_store_refuses_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        let other = store.clone();
        let stored = store.journal(record("1", b"MSH|a")).await.unwrap();
        assert_eq!(stored, JournalOutcome::Stored { id: 1 });
        store.close().await;
        store.close().await;
        let err = other.journal(record("2", b"MSH|b")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("store `{}` is closed", path.display())
        );
        // Reads still work after the writer stopped.
        assert!(other.journal_entry(1).unwrap().is_some());
    }

    /// What a census update left without an answer on PostgreSQL says (`Store::closed`).
    #[test]
    fn err_census_unanswered_says_what_happens_next() {
        let err = StoreError::CensusUnanswered {
            path: PathBuf::from("postgres://ob@db.example:5432/ob"),
        };
        assert_eq!(
            err.to_string(),
            "store `postgres://ob@db.example:5432/ob`: the census update got no answer: the \
             task applying it ended (the store is closing, or the task failed: see the log); it \
             is not known to be stored, and the census processor applies its journal row again, \
             which is harmless if it was"
        );
    }

    #[tokio::test]
    async fn ok_empty_requests_skip_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("j.sqlite"), StoreOptions::default()).unwrap();
        assert_eq!(store.journal_many(Vec::new()).await.unwrap(), Vec::new());
        store.mark_processed(Vec::new()).await.unwrap();
        assert_eq!(store.stats().batches, 0);
    }

    #[tokio::test]
    async fn ok_zero_options_are_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            queue_capacity: 0,
            max_batch: 0,
            ..StoreOptions::DEFAULT
        };
        let store = Store::open(&dir.path().join("j.sqlite"), options).unwrap();
        let outcome = store.journal(record("1", b"MSH|a")).await.unwrap();
        assert_eq!(outcome, JournalOutcome::Stored { id: 1 });
        assert_eq!(store.stats().max_batch_size, 1);
    }
}

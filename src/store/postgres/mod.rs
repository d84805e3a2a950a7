//! The PostgreSQL backend of [`Store`](super::Store): several ordobridge nodes on one database.
//!
//! # How it keeps the invariant
//!
//! Every write is one transaction on a pooled connection (tokio-postgres + deadpool-postgres),
//! and the call resolves only after `COMMIT` returned: with `synchronous_commit` on (the
//! server's default), the WAL is flushed, so an ACK sent after it survives a crash of the node
//! or of the server. Concurrent transactions from many connections share WAL flushes on the
//! server: group commit comes from PostgreSQL itself, no writer thread is needed.
//!
//! # Why a runtime of its own
//!
//! The facade has blocking methods (the CLI's listings, reads that async callers run on the
//! blocking pool) beside async ones. The backend runs every operation on a small tokio runtime
//! it owns, where the pool's connections live: an async caller awaits the task, a blocking
//! caller waits for it; a connection never outlives the runtime that drives it.
//!
//! # Order
//!
//! Ids come from identity sequences, so two transactions may commit in the other order than
//! their ids. Where order is read by id it is made safe:
//! - outbound: an enqueue takes a transaction lock per destination before its insert, so a
//!   destination's ids commit in order (`queue`);
//! - the census processor's work list remembers the oldest transaction still running at its
//!   last read (`pg_snapshot_xmin`) and reads again the rows of transactions that were running
//!   then (`journal::accepted_after`).
//!
//! # What is ported
//!
//! The journal (insert with duplicate detection, `journal_many`, processed marks, the listings,
//! the census processor's work list), the outbound queue (enqueue, heads, read-ahead, delivered
//! / retry / dead, replay, overview, dead letters), the probe commit, destination leases
//! (`ownership`), the console's audit trail, a journal row's lineage and the destinations
//! paused from the console (`audit`), the census (`census`: applying updates, each once
//! whichever node tries, and the patient, practitioner and FHIR views), held bundles, their
//! release and the settling of pushes (`hold`: one transaction per delivery, guarded by row
//! locks, see there), documents and their tracking (`documents`), the console's journal
//! search and each channel's last message (`search`), the launch page's follow-up of a pushed
//! bundle (`follow`), retention with the channels' recorded
//! retentions (`prune`).
//!
//! # Wakeups
//!
//! What one node commits for work another node runs is announced with `NOTIFY` and heard by
//! each node's listening connection ([`Store::wakeups`](super::Store::wakeups), `wakeups`).
//!
//! # Adding an operation
//!
//! A store method runs here when its facade dispatches to [`Postgres`] before the SQLite
//! writer and readers (a SQLite read reaching the readers of a PostgreSQL store is refused,
//! `StoreError::Unported`): a migration here if it needs one, a method on [`Postgres`], the
//! dispatch line, its cases in `tests/store_backends.rs` (both backends). Several nodes run
//! the census processor and the hold releaser: give each a lease (`ownership`, e.g.
//! destination `@census`) or claim rows with `FOR UPDATE SKIP LOCKED` in the applying
//! transaction, so a row is applied once.

mod audit;
mod census;
mod copy;
mod documents;
mod follow;
mod hold;
mod journal;
mod ownership;
mod prune;
mod push;
mod queue;
mod schema;
mod search;
mod wakeups;

pub use self::wakeups::Wakeup;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use super::StoreError;
use super::settings::{PostgresSettings, PostgresTls};

/// The backend's handle: its runtime and what its tasks share.
#[derive(Debug)]
pub(super) struct Postgres {
    /// Owns the threads the connections run on; shut down without waiting when dropped (a
    /// store may be dropped inside an async task).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    inner: Arc<Inner>,
}

/// What the backend's tasks share.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) pool: Pool,
    /// `postgres://user@host:port/db`, named in every error (as the SQLite file is).
    pub(super) path: PathBuf,
    /// `pg_snapshot_xmin` of the census processor's last complete read (see
    /// `journal::accepted_after`); `None` before the first.
    pub(super) processor_horizon: Mutex<Option<i64>>,
    /// The task applying the latest census submission: the next one waits for its end
    /// (`census::submit_census`), so updates apply in the order they were submitted.
    pub(super) census_tail: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The wakeups this node sends to the others (`wakeups`).
    notifier: wakeups::Notifier,
    /// How the connection listening for them connects, and its broadcast (`wakeups`).
    listen: wakeups::ListenSettings,
    listening: wakeups::Listening,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Postgres {
    /// Builds the pool, connects once and migrates (`migrate`), or only checks that the
    /// schema is this build's (a listing never migrates).
    pub(super) fn open(settings: &PostgresSettings, migrate: bool) -> Result<Postgres, StoreError> {
        let path = PathBuf::from(&settings.target);
        let setup = |reason: String| StoreError::PostgresSetup {
            path: path.clone(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(|e| setup(format!("cannot start the runtime of the connections: {e}")))?;
        let mut config = settings.config.clone();
        if let Some(password) = &settings.password {
            config.password(password.expose());
        }
        let timeout_ms = settings.statement_timeout.as_millis().max(1);
        config.options(format!("-c statement_timeout={timeout_ms}"));
        config.application_name("ordobridge");
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mut listen = wakeups::ListenSettings {
            config: config.clone(),
            tls: None,
        };
        // A listening connection lost without a word (the server's host gone) is noticed.
        listen
            .config
            .keepalives_idle(std::time::Duration::from_secs(10))
            .application_name("ordobridge-wakeups");
        let manager = match &settings.tls {
            PostgresTls::Disable => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                listen
                    .config
                    .ssl_mode(tokio_postgres::config::SslMode::Disable);
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
            PostgresTls::VerifyFull { ca_file } => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = crate::tls::client::ClientTlsSettings {
                    ca: ca_file.clone(),
                    server_name: String::new(),
                    cert_and_key: None,
                };
                let (client, _) = tls
                    .build(crate::tls::files::now_unix())
                    .map_err(|e| setup(format!("TLS: {e}")))?;
                let connector = tokio_postgres_rustls::MakeRustlsConnect::new(client);
                listen
                    .config
                    .ssl_mode(tokio_postgres::config::SslMode::Require);
                listen.tls = Some(connector.clone());
                Manager::from_config(config, connector, manager_config)
            }
        };
        let pool = {
            // The pool's timers belong to the backend's runtime.
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(settings.pool_size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(std::time::Duration::from_secs(10)))
                .wait_timeout(Some(std::time::Duration::from_secs(30)))
                .build()
                .map_err(|e| setup(e.to_string()))?
        };
        let backend = Postgres {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            inner: Arc::new(Inner {
                pool,
                path,
                processor_horizon: Mutex::new(None),
                census_tail: Mutex::new(None),
                notifier: wakeups::Notifier::default(),
                listen,
                listening: wakeups::Listening::default(),
            }),
        };
        backend.block(move |inner| async move { schema::prepare(&inner, migrate).await })?;
        Ok(backend)
    }

    /// The name errors carry (`postgres://user@host:port/db`).
    pub(super) fn path(&self) -> &std::path::Path {
        &self.inner.path
    }

    /// Runs `operation` on the backend's runtime and waits for it (async callers).
    pub(super) async fn run<T, F, Fut>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let task = self.handle.spawn(operation(Arc::clone(&self.inner)));
        task.await.map_err(|source| StoreError::ReadTask {
            path: self.inner.path.clone(),
            source,
        })?
    }

    /// Runs `operation` on the backend's runtime and blocks this thread until it is done (the
    /// facade's blocking methods: CLI, `spawn_blocking`).
    pub(super) fn block<T, F, Fut>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        futures::executor::block_on(self.run(operation))
    }

    /// Runs the synchronous `operation` on a blocking thread of the backend's runtime and
    /// waits for it: code written once for both backends (the census rules) reaches its
    /// connection through `handle.block_on`, one statement at a time.
    pub(super) async fn run_blocking<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &tokio::runtime::Handle) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let handle = self.handle.clone();
        let task = self
            .handle
            .spawn_blocking(move || operation(&inner, &handle));
        task.await.map_err(|source| StoreError::ReadTask {
            path: self.inner.path.clone(),
            source,
        })?
    }

    /// Closes the pool (connections in use finish their operation, new ones are refused) and
    /// the connection listening for wakeups.
    pub(super) fn close(&self) {
        self.inner.listening.closed.cancel();
        self.inner.pool.close();
    }
}

impl Inner {
    /// A pooled connection for `operation`.
    pub(super) async fn connection(
        &self,
        operation: &'static str,
    ) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|source| StoreError::PostgresConnect {
                path: self.path.clone(),
                operation,
                source: Box::new(source),
            })
    }

    /// The error of a failed statement or commit of `operation`.
    pub(super) fn failed(
        &self,
        operation: &'static str,
    ) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        move |source| StoreError::Postgres {
            path: self.path.clone(),
            operation,
            source: Box::new(source),
        }
    }

    /// A value read back that this build cannot take (a negative count, a timestamp out of
    /// range, an unknown status).
    pub(super) fn corrupt(&self, operation: &'static str, reason: String) -> StoreError {
        StoreError::PostgresValue {
            path: self.path.clone(),
            operation,
            reason,
        }
    }

    /// Unix microseconds read back as a timestamp.
    pub(super) fn timestamp(
        &self,
        operation: &'static str,
        micros: i64,
    ) -> Result<jiff::Timestamp, StoreError> {
        jiff::Timestamp::from_microsecond(micros)
            .map_err(|e| self.corrupt(operation, format!("timestamp {micros} µs: {e}")))
    }
}

/// The values of a statement built at run time, each numbered by its place (`$1`, `$2`…).
#[derive(Default)]
pub(super) struct Params(Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>);

impl Params {
    /// Appends `value`; returns its parameter number.
    pub(super) fn bind(
        &mut self,
        value: impl tokio_postgres::types::ToSql + Sync + Send + 'static,
    ) -> usize {
        self.0.push(Box::new(value));
        self.0.len()
    }

    /// The values as a statement takes them.
    pub(super) fn refs(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        self.0
            .iter()
            .map(|value| value.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }

    /// How many values.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Starts a read-only transaction on one snapshot (REPEATABLE READ): for reads that must agree
/// with each other (a horizon and its rows, two counts, a view read in several statements).
pub(super) async fn snapshot(
    connection: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    connection
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// A limit where 0 means none, as PostgreSQL takes it (`LIMIT NULL` is no limit).
pub(super) fn limit(limit: usize) -> Option<i64> {
    match limit {
        0 => None,
        n => Some(i64::try_from(n).unwrap_or(i64::MAX)),
    }
}

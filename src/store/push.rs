//! A pushed bundle journaled, mapped and queued in ONE transaction (issue 15).
//!
//! [`Store::journal_push`] inserts the bundle's journal row and, when it is new, calls the
//! caller's mapper with the row's id (control ids `OB{id}-n` are derived from it) and the
//! census view of the bundle's patient, both inside the same transaction. The mapper decides
//! ([`Mapped`]): the messages are enqueued and the row marked `processed`; or the mapping
//! refuses the bundle and the row is marked `rejected` with its reason; or the bundle is held
//! (its patient is not in the census yet and holds are on): the row stays `accepted` and its
//! hold is recorded. One commit, before the caller answers the push: the delivery worker can
//! send as soon as it lands, where the two-step path ([`Store::journal`] then
//! [`Store::deliver_bundle`] or [`Store::hold`]) costs two commits in sequence.
//!
//! The census is read in the transaction, on the writer's connection, rather than by the
//! caller beforehand: one hand-off between threads less per push (the census read on the
//! blocking pool was ~90 µs of a ~850 µs push on one client), and the view the mapping uses is
//! the one committed beside its messages. A census that cannot be read fails this push only,
//! not the batch it shares a transaction with: its row is committed `accepted`, unmapped
//! ([`PushOutcome::Unsettled`]), and the caller settles it (answers 503, the sweeper maps it
//! later). Only an error that rolled the transaction back (I/O, disk full) fails the batch.
//!
//! A record that repeats a kept row (same channel, sender, control id and content) is not
//! mapped: the caller learns [`PushOutcome::Duplicate`] and settles it as after
//! [`Store::journal`] (held, already processed, or an unsettled row to settle).
//!
//! Both backends run it: on SQLite the mapper runs on the writer thread, in the batch's
//! transaction (a panic in it is caught and refuses the bundle, the batch goes on); on
//! PostgreSQL on the backend's task, between the insert and the commit, with the census read
//! just before the transaction. The mapper may run twice for one push when the SQLite batch is
//! run again (see `writer`): only the last run's result is committed, so it must have no side
//! effect beyond its answer.

use std::sync::Arc;

use rusqlite::Transaction;
use tokio::sync::oneshot;

use super::queue::{self, OutboundItem};
use super::writer::{Prepared, Request};
use super::{
    EntryStatus, InboundRecord, JournalOutcome, PatientKey, PatientView, RecordStatus, Store,
    StoreError,
};

/// What the mapper makes of a new journal row (see [`Store::journal_push`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// Enqueue these messages (none when no route made one); the row becomes `processed`.
    Queue(Vec<OutboundItem>),
    /// No route could map the bundle: the row becomes `rejected` with this reason.
    Refuse(String),
    /// Not now: the patient is not in the census yet. The row stays `accepted`, held for
    /// `partner_id` until `release_at` (see [`Store::hold`]), in the same commit.
    Hold {
        partner_id: String,
        release_at: jiff::Timestamp,
    },
}

/// What maps a pushed bundle once its journal id and its patient's census view are known.
type MapFn = dyn Fn(i64, Option<&PatientView>) -> Mapped + Send + Sync;

/// Maps a pushed bundle once its journal id is known, given the census view of `patient`
/// read in the same transaction.
#[derive(Clone)]
pub struct PushMapper {
    patient: Option<PatientKey>,
    map: Arc<MapFn>,
}

impl PushMapper {
    /// Wraps the mapping function (see [`Store::journal_push`]); `patient`: whose census view
    /// it is given (`None`: the bundle names nobody the census could know, the view is `None`).
    pub fn new(
        patient: Option<PatientKey>,
        map: impl Fn(i64, Option<&PatientView>) -> Mapped + Send + Sync + 'static,
    ) -> PushMapper {
        PushMapper {
            patient,
            map: Arc::new(map),
        }
    }

    /// Whose census view the mapper is given.
    pub(super) fn patient(&self) -> Option<&PatientKey> {
        self.patient.as_ref()
    }
}

impl std::fmt::Debug for PushMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushMapper")
    }
}

/// What [`Store::journal_push`] did; only returned once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// A new row `id`, marked `processed`, with its messages enqueued (outbound ids in item
    /// order; none when no route made a message); `known`: the census knew the patient.
    Queued { id: i64, ids: Vec<i64>, known: bool },
    /// A new row `id`, marked `rejected` with `reason` (the mapper's refusal).
    Refused { id: i64, reason: String },
    /// A new row `id`, committed `accepted` and held until `release_at` ([`Mapped::Hold`]).
    Held {
        id: i64,
        release_at: jiff::Timestamp,
    },
    /// A new row `id`, committed `accepted` and not mapped: the census could not be read
    /// (`error`). The caller settles it (see the module docs).
    Unsettled { id: i64, error: String },
    /// The same bundle was journaled before (row `id` in `status`): nothing mapped.
    Duplicate { id: i64, status: EntryStatus },
}

impl PushOutcome {
    /// The journal row holding the bundle.
    pub fn id(&self) -> i64 {
        match self {
            Self::Queued { id, .. }
            | Self::Refused { id, .. }
            | Self::Held { id, .. }
            | Self::Unsettled { id, .. }
            | Self::Duplicate { id, .. } => *id,
        }
    }
}

/// The reason stored when the mapper itself panicked (a bug of this build).
pub(super) const MAPPER_PANICKED: &str =
    "the mapping stopped on an internal error (a bug of ordobridge: see its log and report it)";

const PROCESSED_SQL: &str =
    "UPDATE journal SET status = 'processed' WHERE id = ?1 AND status = 'accepted'";

/// Runs the mapper, a panic turned into a refusal (the writer thread must survive it).
pub(super) fn map(mapper: &PushMapper, id: i64, census: Option<&PatientView>) -> Mapped {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (mapper.map)(id, census)))
        .unwrap_or_else(|_| {
            tracing::error!(journal_id = id, "push mapping panicked; bundle refused");
            Mapped::Refuse(MAPPER_PANICKED.to_owned())
        })
}

/// The SQLite half, in the writer's transaction, after the journal insert (see module docs).
pub(super) fn settle(
    transaction: &Transaction<'_>,
    journaled: JournalOutcome,
    mapper: &PushMapper,
) -> rusqlite::Result<PushOutcome> {
    let id = match journaled {
        JournalOutcome::Stored { id } => id,
        JournalOutcome::Duplicate { id, status } => {
            return Ok(PushOutcome::Duplicate { id, status });
        }
    };
    let census = match mapper.patient() {
        Some(key) => match super::census::patient_view(transaction, key) {
            Ok(view) => view,
            // A failed read changes nothing: the batch goes on, unless SQLite rolled the
            // transaction back (I/O error, disk full), which fails it like any statement.
            Err(error) if !transaction.is_autocommit() => {
                return Ok(PushOutcome::Unsettled {
                    id,
                    error: crate::text::error_chain(&error),
                });
            }
            Err(error) => return Err(error),
        },
        None => None,
    };
    match map(mapper, id, census.as_ref()) {
        Mapped::Queue(items) => {
            transaction.prepare_cached(PROCESSED_SQL)?.execute([id])?;
            let items = queue::prepare(items);
            let mut ids = Vec::with_capacity(items.len());
            queue::insert(transaction, &items, &mut ids)?;
            Ok(PushOutcome::Queued {
                id,
                ids,
                known: census.is_some(),
            })
        }
        Mapped::Refuse(reason) => {
            transaction
                .prepare_cached(super::hold::REJECT_SQL)?
                .execute(rusqlite::params![id, reason.as_str()])?;
            Ok(PushOutcome::Refused { id, reason })
        }
        Mapped::Hold {
            partner_id,
            release_at,
        } => {
            let inserted = super::hold::insert(
                transaction,
                &super::hold::NewHold {
                    journal_id: id,
                    partner_id,
                    held_at: queue::now_micros(),
                    release_at: release_at.as_microsecond(),
                },
            )?;
            // The row was inserted `accepted` in this transaction: nothing else holds it.
            debug_assert!(inserted, "journal row {id} held in its own transaction");
            Ok(PushOutcome::Held { id, release_at })
        }
    }
}

impl Store {
    /// Journals a pushed bundle and, when it is new, maps and queues it (or rejects it with
    /// the mapper's reason) in the same transaction; resolves after the commit (see the
    /// module docs). `record` is journaled `accepted` whatever its status says.
    pub async fn journal_push(
        &self,
        mut record: InboundRecord,
        mapper: PushMapper,
    ) -> Result<PushOutcome, StoreError> {
        record.status = RecordStatus::Accepted;
        if let Some(postgres) = self.postgres_writer()? {
            let census = match mapper.patient() {
                Some(key) => self
                    .census_patient_async(key.clone())
                    .await
                    .map_err(|error| crate::text::error_chain(&error)),
                None => Ok(None),
            };
            return postgres.journal_push(record, mapper, census).await;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Push {
            record: Prepared::new(record),
            mapper,
            outcome: None,
            reply,
        })
        .await?;
        answer.await.map_err(|_| self.closed())?
    }
}

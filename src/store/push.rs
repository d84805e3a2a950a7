//! A pushed bundle journaled, mapped and queued in ONE transaction (issue 15).
//!
//! [`Store::journal_push`] inserts the bundle's journal row and, when it is new, calls the
//! caller's mapper with the row's id inside the same transaction (control ids `OB{id}-n` are
//! derived from it): the messages are enqueued and the row marked `processed`, or, when the
//! mapping refuses the bundle, the row is marked `rejected` with the mapper's reason. One
//! commit, before the caller answers the push: the delivery worker can send as soon as it
//! lands, where the two-step path ([`Store::journal`] then [`Store::deliver_bundle`]) costs two
//! commits in sequence.
//!
//! A record that repeats a kept row (same channel, sender, control id and content) is not
//! mapped: the caller learns [`PushOutcome::Duplicate`] and settles it as after
//! [`Store::journal`] (held, already processed, or an unsettled row to settle).
//!
//! Both backends run it: on SQLite the mapper runs on the writer thread, in the batch's
//! transaction (a panic in it is caught and refuses the bundle, the batch goes on); on
//! PostgreSQL on the backend's task, between the insert and the commit. The mapper may run
//! twice for one push when the SQLite batch is run again (see `writer`): it must be a pure
//! function of the id.

use std::sync::Arc;

use rusqlite::Transaction;
use tokio::sync::oneshot;

use super::queue::{self, OutboundItem};
use super::writer::{Prepared, Request};
use super::{EntryStatus, InboundRecord, JournalOutcome, RecordStatus, Store, StoreError};

/// What maps a pushed bundle once its journal id is known.
type MapFn = dyn Fn(i64) -> Result<Vec<OutboundItem>, String> + Send + Sync;

/// Maps a pushed bundle once its journal id is known: the messages to enqueue, or why no
/// route could map it (stored as the row's `rejected` reason).
#[derive(Clone)]
pub struct PushMapper(Arc<MapFn>);

impl PushMapper {
    /// Wraps the mapping function (see [`Store::journal_push`]).
    pub fn new(
        map: impl Fn(i64) -> Result<Vec<OutboundItem>, String> + Send + Sync + 'static,
    ) -> PushMapper {
        PushMapper(Arc::new(map))
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
    /// order; none when no route made a message).
    Queued { id: i64, ids: Vec<i64> },
    /// A new row `id`, marked `rejected` with `reason` (the mapper's refusal).
    Refused { id: i64, reason: String },
    /// The same bundle was journaled before (row `id` in `status`): nothing mapped.
    Duplicate { id: i64, status: EntryStatus },
}

impl PushOutcome {
    /// The journal row holding the bundle.
    pub fn id(&self) -> i64 {
        match self {
            Self::Queued { id, .. } | Self::Refused { id, .. } | Self::Duplicate { id, .. } => *id,
        }
    }
}

/// The reason stored when the mapper itself panicked (a bug of this build).
pub(super) const MAPPER_PANICKED: &str =
    "the mapping stopped on an internal error (a bug of ordobridge: see its log and report it)";

const PROCESSED_SQL: &str =
    "UPDATE journal SET status = 'processed' WHERE id = ?1 AND status = 'accepted'";

/// Runs the mapper, a panic turned into a refusal (the writer thread must survive it).
pub(super) fn map(mapper: &PushMapper, id: i64) -> Result<Vec<OutboundItem>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (mapper.0)(id))).unwrap_or_else(|_| {
        tracing::error!(journal_id = id, "push mapping panicked; bundle refused");
        Err(MAPPER_PANICKED.to_owned())
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
    match map(mapper, id) {
        Ok(items) => {
            transaction.prepare_cached(PROCESSED_SQL)?.execute([id])?;
            let items = queue::prepare(items);
            let mut ids = Vec::with_capacity(items.len());
            queue::insert(transaction, &items, &mut ids)?;
            Ok(PushOutcome::Queued { id, ids })
        }
        Err(reason) => {
            transaction
                .prepare_cached(super::hold::REJECT_SQL)?
                .execute(rusqlite::params![id, reason.as_str()])?;
            Ok(PushOutcome::Refused { id, reason })
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
            return postgres.journal_push(record, mapper).await;
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

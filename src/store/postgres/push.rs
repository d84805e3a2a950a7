//! [`Store::journal_push`](crate::store::Store::journal_push) on PostgreSQL: the journal
//! insert, the mapping, then the enqueue and the `processed` mark (or the rejection, or the
//! hold) in one transaction, as on SQLite (`store::push`). The census view the mapper is
//! given (`census`) was read just before the transaction; when it could not be read, the row
//! is committed `accepted`, unmapped, as on SQLite.

use super::Postgres;
use super::journal::{JournalStatements, Prepared, insert_one};
use crate::store::hold::NewHold;
use crate::store::push::{Mapped, PushMapper, PushOutcome, map};
use crate::store::{InboundRecord, JournalOutcome, PatientView, StoreError, queue};

const PROCESSED_SQL: &str =
    "UPDATE journal SET status = 'processed' WHERE id = $1 AND status = 'accepted'";

/// A still-accepted row becomes rejected with its reason (`kept` follows the status).
const REJECT_SQL: &str = "UPDATE journal SET status = 'rejected', kept = false, reason = $2
    WHERE id = $1 AND status = 'accepted'";

impl Postgres {
    /// [`Store::journal_push`](crate::store::Store::journal_push): one transaction, answered
    /// after its commit.
    pub(in crate::store) async fn journal_push(
        &self,
        record: InboundRecord,
        mapper: PushMapper,
        census: Result<Option<PatientView>, String>,
    ) -> Result<PushOutcome, StoreError> {
        let prepared = Prepared::new(record);
        self.run(move |inner| async move {
            const OPERATION: &str = "journal_push";
            let failed = inner.failed(OPERATION);
            let mut connection = inner.connection(OPERATION).await?;
            let transaction = connection.transaction().await.map_err(&failed)?;
            let statements = JournalStatements::prepare(&transaction, &failed).await?;
            let id = match insert_one(&inner, &transaction, &statements, &prepared).await? {
                JournalOutcome::Stored { id } => id,
                JournalOutcome::Duplicate { id, status } => {
                    transaction.commit().await.map_err(&failed)?;
                    return Ok(PushOutcome::Duplicate { id, status });
                }
            };
            let census = match census {
                Ok(census) => census,
                Err(error) => {
                    transaction.commit().await.map_err(&failed)?;
                    return Ok(PushOutcome::Unsettled { id, error });
                }
            };
            let outcome = match map(&mapper, id, census.as_ref()) {
                Mapped::Queue(items) => {
                    transaction
                        .execute(PROCESSED_SQL, &[&id])
                        .await
                        .map_err(&failed)?;
                    let items = queue::prepare(items);
                    let rows: Vec<_> = items.iter().map(|item| item.row()).collect();
                    let ids = super::queue::insert(&transaction, &rows)
                        .await
                        .map_err(&failed)?;
                    transaction.commit().await.map_err(&failed)?;
                    inner.wake(super::queue::destinations(
                        items.iter().map(|item| item.destination()),
                    ));
                    PushOutcome::Queued {
                        id,
                        ids,
                        known: census.is_some(),
                    }
                }
                Mapped::Refuse(reason) => {
                    transaction
                        .execute(REJECT_SQL, &[&id, &reason])
                        .await
                        .map_err(&failed)?;
                    transaction.commit().await.map_err(&failed)?;
                    PushOutcome::Refused { id, reason }
                }
                Mapped::Hold {
                    partner_id,
                    release_at,
                } => {
                    let hold = NewHold {
                        journal_id: id,
                        partner_id,
                        held_at: queue::now_micros(),
                        release_at: release_at.as_microsecond(),
                    };
                    let inserted = super::hold::insert(&transaction, &hold)
                        .await
                        .map_err(&failed)?;
                    // Inserted `accepted` in this transaction: nothing else holds it.
                    debug_assert!(inserted, "journal row {id} held in its own transaction");
                    transaction.commit().await.map_err(&failed)?;
                    PushOutcome::Held { id, release_at }
                }
            };
            Ok(outcome)
        })
        .await
    }
}

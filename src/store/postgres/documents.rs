//! Document tracking on PostgreSQL (as SQLite's `store::documents`): what `$tracking` reads.
//! A document is delivered by `hold::deliver` (messages, processed mark and tracking in one
//! transaction).

use super::{Inner, Postgres};
use crate::store::documents::message_state;
use crate::store::{DocumentTracking, MessageState, StoreError, TrackedMessage};

const BY_JOURNAL_SQL: &str =
    "SELECT journal_id, transaction_id, accepted_at FROM documents WHERE journal_id = $1";
const BY_TRANSACTION_SQL: &str =
    "SELECT journal_id, transaction_id, accepted_at FROM documents WHERE transaction_id = $1";
/// Each message with its queue row, if it is still there (pruned rows read as unknown).
const MESSAGES_SQL: &str = "SELECT m.destination, m.outbound_id, o.status, o.attempts,
        o.delivered_at, o.dead_at, o.last_error,
        EXISTS (SELECT 1 FROM outbound b WHERE b.destination = o.destination
                AND b.status = 'pending' AND b.id < o.id)
    FROM document_messages m LEFT JOIN outbound o ON o.id = m.outbound_id
    WHERE m.journal_id = $1 ORDER BY m.outbound_id";

/// How a document is looked up.
enum Key {
    Journal(i64),
    Transaction(String),
}

impl Postgres {
    /// [`Store::document_by_journal`](crate::store::Store::document_by_journal).
    pub(in crate::store) async fn document_by_journal(
        &self,
        journal_id: i64,
    ) -> Result<Option<DocumentTracking>, StoreError> {
        self.tracking("document_by_journal", Key::Journal(journal_id))
            .await
    }

    /// [`Store::document_tracking`](crate::store::Store::document_tracking).
    pub(in crate::store) async fn document_tracking(
        &self,
        transaction_id: String,
    ) -> Result<Option<DocumentTracking>, StoreError> {
        self.tracking("document_tracking", Key::Transaction(transaction_id))
            .await
    }

    /// The document and its messages, read in one snapshot.
    async fn tracking(
        &self,
        operation: &'static str,
        key: Key,
    ) -> Result<Option<DocumentTracking>, StoreError> {
        self.run(move |inner| async move {
            let failed = inner.failed(operation);
            let mut connection = inner.connection(operation).await?;
            let transaction = super::snapshot(&mut connection).await.map_err(&failed)?;
            let document = match &key {
                Key::Journal(id) => transaction.query_opt(BY_JOURNAL_SQL, &[id]).await,
                Key::Transaction(id) => transaction.query_opt(BY_TRANSACTION_SQL, &[id]).await,
            }
            .map_err(&failed)?;
            let Some(document) = document else {
                return Ok(None);
            };
            let journal_id: i64 = document.get(0);
            let rows = transaction
                .query(MESSAGES_SQL, &[&journal_id])
                .await
                .map_err(&failed)?;
            transaction.commit().await.map_err(&failed)?;
            let messages = rows
                .iter()
                .map(|row| message(&inner, operation, row))
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Some(DocumentTracking {
                journal_id,
                transaction_id: document.get(1),
                accepted_at: inner.timestamp(operation, document.get(2))?,
                messages,
            }))
        })
        .await
    }
}

/// One tracked message; a queue row that is gone, or of a status this build does not know,
/// has no state (as on SQLite).
fn message(
    inner: &Inner,
    operation: &'static str,
    row: &tokio_postgres::Row,
) -> Result<TrackedMessage, StoreError> {
    let status: Option<&str> = row.get(2);
    let state = message_state(status, |status| -> Result<_, StoreError> {
        let attempts: i32 = row.get(3);
        let time = |micros: Option<i64>| {
            micros
                .map(|micros| inner.timestamp(operation, micros))
                .transpose()
        };
        Ok(MessageState {
            status,
            attempts: u32::try_from(attempts)
                .map_err(|_| inner.corrupt(operation, format!("count {attempts} out of range")))?,
            waiting_behind: row.get(7),
            delivered_at: time(row.get(4))?,
            dead_at: time(row.get(5))?,
            last_error: row.get(6),
        })
    })?;
    Ok(TrackedMessage {
        destination: row.get(0),
        outbound_id: row.get(1),
        state,
    })
}

//! The launch page's follow-up of a pushed bundle on PostgreSQL (as SQLite's `store::follow`,
//! same rows in the same order): the push journal rows naming a patient since the launch, and
//! what became of one of them.

use super::Postgres;
use crate::store::{EntryStatus, PushFate, StoreError};

/// Push journal rows received at or after `$1` whose bytes contain `$3` (the patient id) and
/// `$4` (the bundle id) when given: by `journal_channel_received`, so only the rows since the
/// launch are looked at (`position` on the bytes, as SQLite's `instr` on the blob).
const NAMING_SQL: &str = "SELECT id, raw FROM journal
    WHERE received_at >= $1 AND channel = $2 AND position($3::bytea IN raw) > 0
      AND ($4::bytea IS NULL OR position($4::bytea IN raw) > 0)
    ORDER BY id LIMIT $5";

/// The row and its hold, when it was held (one round trip).
const FATE_SQL: &str = "SELECT j.received_at, j.status, h.held_at, h.release_at, h.released_at
    FROM journal j LEFT JOIN push_holds h ON h.journal_id = j.id
    WHERE j.id = $1";

impl Postgres {
    /// [`Store::journal_naming`](crate::store::Store::journal_naming).
    pub(in crate::store) async fn journal_naming(
        &self,
        channel: &'static str,
        since: i64,
        needle: Vec<u8>,
        also: Option<Vec<u8>>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "journal_naming";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(NAMING_SQL, &[&since, &channel, &needle, &also, &limit])
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await
    }

    /// [`Store::push_fate`](crate::store::Store::push_fate): the row and its hold, then its
    /// outbound messages (as on SQLite, two reads outside a transaction: the page polls).
    pub(in crate::store) async fn push_fate(
        &self,
        journal_id: i64,
    ) -> Result<Option<PushFate>, StoreError> {
        const OPERATION: &str = "push_fate";
        let found = self
            .run(move |inner| async move {
                let connection = inner.connection(OPERATION).await?;
                let row = connection
                    .query_opt(FATE_SQL, &[&journal_id])
                    .await
                    .map_err(inner.failed(OPERATION))?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let status: &str = row.get(1);
                let status = EntryStatus::from_bytes(status.as_bytes()).ok_or_else(|| {
                    inner.corrupt(OPERATION, format!("journal status `{status}`"))
                })?;
                let held_at: Option<i64> = row.get(2);
                let release_at: Option<i64> = row.get(3);
                let released_at: Option<i64> = row.get(4);
                let hold = match (held_at, release_at) {
                    (Some(held_at), Some(release_at)) => Some((
                        inner.timestamp(OPERATION, held_at)?,
                        inner.timestamp(OPERATION, release_at)?,
                        released_at
                            .map(|micros| inner.timestamp(OPERATION, micros))
                            .transpose()?,
                    )),
                    _ => None,
                };
                Ok(Some((
                    inner.timestamp(OPERATION, row.get(0))?,
                    status,
                    hold,
                )))
            })
            .await?;
        let Some((received_at, status, hold)) = found else {
            return Ok(None);
        };
        Ok(Some(PushFate {
            received_at,
            status,
            hold,
            messages: self.lineage(journal_id).await?,
        }))
    }
}

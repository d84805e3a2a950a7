//! The console's audit trail and lineage reads on PostgreSQL (as SQLite's `store::audit`).

use bytes::Bytes;

use super::Postgres;
use crate::store::{AuditEntry, AuditRecord, LineageRow, OutboundStatus, StoreError};

pub(super) const AUDIT_SQL: &str =
    "INSERT INTO audit (at, \"user\", action, target, reason) VALUES ($1, $2, $3, $4, $5)";

const RECENT_SQL: &str =
    "SELECT id, at, \"user\", action, target, reason FROM audit ORDER BY id DESC LIMIT $1";

const LINEAGE_SQL: &str = "SELECT id, destination, enqueued_at, control_id, status, attempts,
        last_error, delivered_at, ack
    FROM outbound WHERE source = $1 ORDER BY id";

const PAUSE_SQL: &str = "INSERT INTO paused_destinations (destination, paused_at, \"user\")
    VALUES ($1, $2, $3) ON CONFLICT (destination) DO NOTHING";
const RESUME_SQL: &str = "DELETE FROM paused_destinations WHERE destination = $1";
/// By name in byte order, as SQLite lists them.
const PAUSED_SQL: &str =
    "SELECT destination FROM paused_destinations ORDER BY destination COLLATE \"C\"";

impl Postgres {
    /// [`Store::switch_destination`](crate::store::Store::switch_destination): the pause (or
    /// its end) and its audit row in one transaction, committed before it returns.
    pub(in crate::store) async fn switch_destination(
        &self,
        destination: String,
        paused: bool,
        entry: AuditEntry,
        at: i64,
    ) -> Result<(), StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "switch_destination";
            let failed = inner.failed(OPERATION);
            let mut connection = inner.connection(OPERATION).await?;
            let transaction = connection.transaction().await.map_err(&failed)?;
            transaction
                .execute(
                    AUDIT_SQL,
                    &[
                        &at,
                        &entry.user,
                        &entry.action,
                        &entry.target,
                        &entry.reason,
                    ],
                )
                .await
                .map_err(&failed)?;
            if paused {
                transaction
                    .execute(PAUSE_SQL, &[&destination, &at, &entry.user])
                    .await
            } else {
                transaction.execute(RESUME_SQL, &[&destination]).await
            }
            .map_err(&failed)?;
            transaction.commit().await.map_err(&failed)?;
            // The node delivering it (maybe another) reads the pauses again.
            inner.wake([super::wakeups::Wakeup::Pause(destination)]);
            Ok(())
        })
        .await
    }

    /// [`Store::paused_destinations`](crate::store::Store::paused_destinations) (blocking).
    pub(in crate::store) fn paused_destinations(&self) -> Result<Vec<String>, StoreError> {
        self.block(move |inner| async move {
            const OPERATION: &str = "paused_destinations";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(PAUSED_SQL, &[])
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    /// [`Store::audit`](crate::store::Store::audit): committed before it returns.
    pub(in crate::store) async fn audit(
        &self,
        entry: AuditEntry,
        at: i64,
    ) -> Result<(), StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "audit";
            let connection = inner.connection(OPERATION).await?;
            connection
                .execute(
                    AUDIT_SQL,
                    &[
                        &at,
                        &entry.user,
                        &entry.action,
                        &entry.target,
                        &entry.reason,
                    ],
                )
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(())
        })
        .await
    }

    /// [`Store::recent_audit`](crate::store::Store::recent_audit).
    pub(in crate::store) async fn recent_audit(
        &self,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |inner| async move {
            const OPERATION: &str = "recent_audit";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(RECENT_SQL, &[&limit])
                .await
                .map_err(inner.failed(OPERATION))?;
            rows.iter()
                .map(|row| {
                    Ok(AuditRecord {
                        id: row.get(0),
                        at: inner.timestamp(OPERATION, row.get(1))?,
                        entry: AuditEntry {
                            user: row.get(2),
                            action: row.get(3),
                            target: row.get(4),
                            reason: row.get(5),
                        },
                    })
                })
                .collect()
        })
        .await
    }

    /// [`Store::lineage`](crate::store::Store::lineage).
    pub(in crate::store) async fn lineage(
        &self,
        journal_id: i64,
    ) -> Result<Vec<LineageRow>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "lineage";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(LINEAGE_SQL, &[&format!("journal:{journal_id}")])
                .await
                .map_err(inner.failed(OPERATION))?;
            rows.iter()
                .map(|row| {
                    let status: &str = row.get(4);
                    let attempts: i32 = row.get(5);
                    let delivered_at: Option<i64> = row.get(7);
                    let ack: Option<Vec<u8>> = row.get(8);
                    Ok(LineageRow {
                        id: row.get(0),
                        destination: row.get(1),
                        enqueued_at: inner.timestamp(OPERATION, row.get(2))?,
                        control_id: row.get(3),
                        status: OutboundStatus::from_bytes(status.as_bytes()).ok_or_else(|| {
                            inner.corrupt(OPERATION, format!("outbound status `{status}`"))
                        })?,
                        attempts: u32::try_from(attempts).map_err(|_| {
                            inner.corrupt(OPERATION, format!("count {attempts} out of range"))
                        })?,
                        last_error: row.get(6),
                        delivered_at: delivered_at
                            .map(|micros| inner.timestamp(OPERATION, micros))
                            .transpose()?,
                        ack: ack.map(Bytes::from),
                    })
                })
                .collect()
        })
        .await
    }
}

//! Retention on PostgreSQL: what SQLite's `store::prune` lets go, deleted in bounded batches.
//!
//! # Short transactions, several nodes
//!
//! Each step is one transaction that deletes at most `limit` outbound rows and `limit` journal
//! rows, then commits: no long lock on the journal, intake runs beside it (it never touches a
//! row that may go: those are processed or rejected, and finished). The rows of a step are
//! chosen with `FOR UPDATE SKIP LOCKED`, which re-checks each row's condition on its latest
//! version (a dead letter replayed meanwhile is pending again and stays) and passes over a
//! row another transaction holds (a duplicate being counted on it: the next prune takes it).
//!
//! Every step first takes a transaction-level advisory lock ([`PRUNE_LOCK`]): when several
//! nodes prune at once their steps take turns, so the channel retentions they record never
//! cross and each row is deleted by one of them; a node waits at most one step of another.
//!
//! A step resumes where the previous one stopped (a [`Cursor`]): journal rows by reception
//! time through `journal_received_at` (only rows older than the latest cutoff are read), the
//! outbound queue by id. What is freed goes back to the tables' free space through
//! PostgreSQL's autovacuum: no page count is returned (0).
//!
//! # Not here yet
//!
//! Held bundles, documents and the census are not on PostgreSQL in this branch (other work
//! of issue 14): nothing feeds the census, so its retention has nothing to delete (a prune
//! is refused once its tables exist without their prune here); document tracking is refused;
//! a journal row has no held bundle to keep it. Once `push_holds` is there,
//! [`journal_condition`] keeps the rows of bundles still held and the step deletes released
//! holds, as SQLite does.

use std::fmt::Write as _;

use deadpool_postgres::GenericClient;

use super::{Inner, Params, Postgres};
use crate::store::StoreError;
use crate::store::prune::{NEVER, Pruned, RetentionPlan, with_recorded};

/// The advisory lock key of prune steps (`ordoprun` in ASCII).
const PRUNE_LOCK: i64 = 0x6f72_646f_7072_756e;

const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";

/// Records a channel's own retention (changed only when it differs).
const RECORD_SQL: &str = "INSERT INTO channel_retention (channel, retention_seconds, recorded_at)
    VALUES ($1, $2, $3)
    ON CONFLICT (channel) DO UPDATE
    SET retention_seconds = excluded.retention_seconds, recorded_at = excluded.recorded_at
    WHERE channel_retention.retention_seconds IS DISTINCT FROM excluded.retention_seconds";

/// Forgets the retentions of channels configured without one of their own.
const FORGET_SQL: &str = "DELETE FROM channel_retention WHERE channel = ANY($1)";

const RECORDED_SQL: &str = "SELECT channel, retention_seconds FROM channel_retention
    ORDER BY channel COLLATE \"C\"";

/// Whether the census is on this database (see `Postgres::refuse_unported`).
const CENSUS_TABLE_SQL: &str = "SELECT to_regclass('census_patients') IS NOT NULL";

/// Delivered or dead outbound rows finished before `$1`.
const OUTBOUND_CONDITION: &str =
    "((status = 'delivered' AND delivered_at < $1) OR (status = 'dead' AND dead_at < $1))";

/// Where the next step of one prune resumes: what lies before was looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    /// `(received_at, id)` of the last journal row deleted.
    journal_after: Option<(i64, i64)>,
    /// The highest outbound id deleted.
    outbound_after: i64,
}

impl Postgres {
    /// [`Store::prune_gently`](crate::store::Store::prune_gently): steps of `batch` rows of
    /// each kind until one deletes nothing, pausing `pause_ratio` times each step's time
    /// between them; returns the rows deleted and 0 pages (autovacuum reuses the space).
    pub(in crate::store) async fn prune_gently(
        &self,
        plan: RetentionPlan,
        batch: usize,
        pause_ratio: u32,
    ) -> Result<(Pruned, u64), StoreError> {
        self.refuse_unported(&plan).await?;
        let mut total = Pruned::default();
        let mut cursor = Cursor::default();
        loop {
            let started = std::time::Instant::now();
            let (pruned, next) = self.step(plan.clone(), cursor, batch.max(1)).await?;
            cursor = next;
            total.add(pruned);
            if pruned.total() == 0 {
                break;
            }
            if pause_ratio == 0 {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(started.elapsed() * pause_ratio).await;
            }
        }
        Ok((total, 0))
    }

    /// [`Store::prune_step`](crate::store::Store::prune_step): one step from the start; with
    /// no plan, a commit that proves the store takes writes (as on SQLite).
    pub(in crate::store) async fn prune_step(
        &self,
        plan: Option<RetentionPlan>,
        limit: usize,
    ) -> Result<(Pruned, u32), StoreError> {
        let Some(plan) = plan else {
            self.probe_commit().await?;
            return Ok((Pruned::default(), 0));
        };
        self.refuse_unported(&plan).await?;
        let (pruned, _) = self.step(plan, Cursor::default(), limit).await?;
        Ok((pruned, 0))
    }

    /// [`Store::prunable_by_channel`](crate::store::Store::prunable_by_channel) (blocking):
    /// the same conditions as a step, counted, with the recorded retentions read only.
    pub(in crate::store) fn prunable_by_channel(
        &self,
        plan: &RetentionPlan,
    ) -> Result<(Pruned, Vec<(String, usize)>), StoreError> {
        futures::executor::block_on(self.refuse_unported(plan))?;
        let plan = plan.clone();
        self.block(move |inner| async move {
            const OPERATION: &str = "prunable";
            let failed = inner.failed(OPERATION);
            let mut connection = inner.connection(OPERATION).await?;
            // One snapshot for both counts.
            let transaction = connection
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(&failed)?;
            let plan = remembered(&transaction, &plan).await.map_err(&failed)?;
            let mut params = Params::default();
            let condition = journal_condition(&plan, &mut params);
            let rows = transaction
                .query(
                    &format!(
                        "SELECT channel, count(*) FROM journal WHERE {condition}
                         GROUP BY channel ORDER BY channel COLLATE \"C\""
                    ),
                    &params.refs(),
                )
                .await
                .map_err(&failed)?;
            let by_channel = rows
                .iter()
                .map(|row| {
                    let n: i64 = row.get(1);
                    (row.get(0), usize::try_from(n).unwrap_or(0))
                })
                .collect::<Vec<(String, usize)>>();
            let outbound: i64 = transaction
                .query_one(
                    &format!("SELECT count(*) FROM outbound WHERE {OUTBOUND_CONDITION}"),
                    &[&plan.outbound_before],
                )
                .await
                .map_err(&failed)?
                .get(0);
            transaction.commit().await.map_err(&failed)?;
            let pruned = Pruned {
                journal: by_channel.iter().map(|(_, n)| n).sum(),
                outbound: usize::try_from(outbound).unwrap_or(0),
                ..Pruned::default()
            };
            Ok((pruned, by_channel))
        })
    }

    /// A plan this backend cannot carry out yet. Document tracking is not on PostgreSQL
    /// (`[documents]` is refused there). Nor is the census: nothing feeds it, so a census
    /// retention (two years by default) has nothing to delete, unless the census tables are
    /// there (a build with the census ported but not its prune): then the prune is refused
    /// rather than keep the census past its retention without a word.
    async fn refuse_unported(&self, plan: &RetentionPlan) -> Result<(), StoreError> {
        if plan.documents_before != NEVER {
            return Err(self.unported("prune of document tracking"));
        }
        if plan.census.is_some() {
            let census = self
                .run(|inner| async move {
                    const OPERATION: &str = "prune";
                    let connection = inner.connection(OPERATION).await?;
                    let row = connection
                        .query_one(CENSUS_TABLE_SQL, &[])
                        .await
                        .map_err(inner.failed(OPERATION))?;
                    Ok(row.get::<_, bool>(0))
                })
                .await?;
            if census {
                return Err(self.unported("prune of the census"));
            }
        }
        Ok(())
    }

    /// One step on the backend's runtime.
    async fn step(
        &self,
        plan: RetentionPlan,
        cursor: Cursor,
        limit: usize,
    ) -> Result<(Pruned, Cursor), StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |inner| async move { step(&inner, &plan, cursor, limit).await })
            .await
    }
}

/// Deletes at most `limit` rows of each kind that `plan` lets go, after `cursor`, in one
/// transaction; returns what went and where the next step resumes, after the commit.
async fn step(
    inner: &Inner,
    plan: &RetentionPlan,
    cursor: Cursor,
    limit: i64,
) -> Result<(Pruned, Cursor), StoreError> {
    const OPERATION: &str = "prune";
    let failed = inner.failed(OPERATION);
    let mut connection = inner.connection(OPERATION).await?;
    let transaction = connection.transaction().await.map_err(&failed)?;
    // Held until the commit: another node's step waits for this one (see the module docs).
    transaction
        .execute(LOCK_SQL, &[&PRUNE_LOCK])
        .await
        .map_err(&failed)?;
    let plan = remember(&transaction, plan).await.map_err(&failed)?;
    let mut next = cursor;
    // Outbound first: a journal row whose messages are all finished and old goes in the same
    // step as they do.
    let outbound = transaction
        .query(
            &format!(
                "WITH chosen AS MATERIALIZED (
                    SELECT id FROM outbound WHERE {OUTBOUND_CONDITION} AND id > $2
                    ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 DELETE FROM outbound o USING chosen WHERE o.id = chosen.id RETURNING o.id"
            ),
            &[&plan.outbound_before, &cursor.outbound_after, &limit],
        )
        .await
        .map_err(&failed)?;
    for row in &outbound {
        next.outbound_after = next.outbound_after.max(row.get(0));
    }
    let mut params = Params::default();
    let condition = journal_condition(&plan, &mut params);
    let (after_at, after_id) = cursor.journal_after.unwrap_or((i64::MIN, i64::MIN));
    let at = params.bind(after_at);
    let id = params.bind(after_id);
    let n = params.bind(limit);
    let journal = transaction
        .query(
            &format!(
                "WITH chosen AS MATERIALIZED (
                    SELECT id FROM journal WHERE {condition}
                        AND received_at >= ${at}::bigint
                        AND (received_at, id) > (${at}::bigint, ${id}::bigint)
                    ORDER BY received_at, id LIMIT ${n}::bigint FOR UPDATE SKIP LOCKED)
                 DELETE FROM journal j USING chosen WHERE j.id = chosen.id
                 RETURNING j.received_at, j.id"
            ),
            &params.refs(),
        )
        .await
        .map_err(&failed)?;
    for row in &journal {
        let key: (i64, i64) = (row.get(0), row.get(1));
        if next.journal_after.is_none_or(|last| key > last) {
            next.journal_after = Some(key);
        }
    }
    transaction.commit().await.map_err(&failed)?;
    let pruned = Pruned {
        journal: journal.len(),
        outbound: outbound.len(),
        ..Pruned::default()
    };
    Ok((pruned, next))
}

/// The condition on `journal` of the rows `plan` lets go, its values appended to `params`:
/// processed and rejected rows older than their channel's cutoff (else the store's), of which
/// no outbound message is still pending (`outbound_source`). `received_at` below the latest
/// cutoff lets `journal_received_at` bound what is read.
fn journal_condition(plan: &RetentionPlan, params: &mut Params) -> String {
    let journal_before = params.bind(plan.journal_before);
    let rejected_before = params.bind(plan.rejected_before);
    let latest = params.bind(plan.latest_journal_cutoff());
    let (mut processed, mut rejected) = (String::new(), String::new());
    if plan.channels.is_empty() {
        let _ = write!(processed, "${journal_before}::bigint");
        let _ = write!(rejected, "${rejected_before}::bigint");
    } else {
        processed.push_str("CASE channel");
        rejected.push_str("CASE channel");
        for own in &plan.channels {
            let channel = params.bind(own.channel.clone());
            let own_processed = params.bind(own.processed_before);
            let own_rejected = params.bind(own.rejected_before);
            let _ = write!(
                processed,
                " WHEN ${channel}::text THEN ${own_processed}::bigint"
            );
            let _ = write!(
                rejected,
                " WHEN ${channel}::text THEN ${own_rejected}::bigint"
            );
        }
        let _ = write!(processed, " ELSE ${journal_before}::bigint END");
        let _ = write!(rejected, " ELSE ${rejected_before}::bigint END");
    }
    format!(
        "received_at < ${latest}::bigint
        AND ((status = 'processed' AND received_at < {processed})
            OR (status = 'rejected' AND received_at < {rejected}))
        AND NOT EXISTS (SELECT 1 FROM outbound o
            WHERE o.source = 'journal:' || journal.id AND o.status = 'pending')"
    )
}

/// `plan` with the retentions recorded for channels it does not configure, after recording
/// its own channels' (and forgetting those of channels configured without one): SQLite's
/// `prune::remember`, in the step's transaction.
async fn remember(
    client: &impl GenericClient,
    plan: &RetentionPlan,
) -> Result<RetentionPlan, tokio_postgres::Error> {
    let Some(configured) = plan.configured() else {
        return Ok(plan.clone());
    };
    let mut own = plan.own_seconds();
    // The same order on every node: two steps never wait on each other's rows in a cycle
    // (the advisory lock already serializes them; this keeps it true without it).
    own.sort();
    let at = plan.made_at().as_microsecond();
    for (channel, seconds) in &own {
        client.execute(RECORD_SQL, &[channel, seconds, &at]).await?;
    }
    let mut forget: Vec<String> = configured
        .iter()
        .filter(|channel| !own.iter().any(|(name, _)| name == *channel))
        .cloned()
        .collect();
    forget.sort();
    if !forget.is_empty() {
        client.execute(FORGET_SQL, &[&forget]).await?;
    }
    remembered(client, plan).await
}

/// `plan` with the retentions recorded for channels it does not configure (reads only: the
/// dry run's view of [`remember`]).
async fn remembered(
    client: &impl GenericClient,
    plan: &RetentionPlan,
) -> Result<RetentionPlan, tokio_postgres::Error> {
    let Some(configured) = plan.configured() else {
        return Ok(plan.clone());
    };
    let recorded = client
        .query(RECORDED_SQL, &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    Ok(with_recorded(plan, configured, recorded))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ok_condition_numbers_each_channel_cutoff() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let day = Duration::from_secs(86_400);
        let plan = RetentionPlan::at(now, 90 * day, 30 * day)
            .with_channel("lab", Some(7 * day))
            .with_channel("archive", None);
        let mut params = Params::default();
        let condition = journal_condition(&plan, &mut params);
        assert_eq!(params.len(), 9);
        assert!(
            condition.contains(
                "CASE channel WHEN $4::text THEN $5::bigint WHEN $7::text THEN $8::bigint \
                 ELSE $1::bigint END"
            ),
            "{condition}"
        );
        assert!(
            condition.contains(
                "CASE channel WHEN $4::text THEN $6::bigint WHEN $7::text THEN $9::bigint \
                 ELSE $2::bigint END"
            ),
            "{condition}"
        );
        // `lab`'s 7 days is the latest of the cutoffs (its rejected rows go at 7 days too).
        let seven_days = now.as_microsecond() - 7 * 86_400 * 1_000_000;
        assert_eq!(plan.latest_journal_cutoff(), seven_days);
        let forever = RetentionPlan::keeping(now, None, None);
        assert_eq!(forever.latest_journal_cutoff(), i64::MIN);
    }
}

//! Retention on PostgreSQL: what SQLite's `store::prune` lets go, deleted in bounded batches.
//!
//! # Short transactions, several nodes
//!
//! Each step is one transaction that deletes at most `limit` rows of each kind, then
//! commits: no long lock on the journal, intake runs beside it (it never touches a
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
//! outbound queue by id, patients by `(updated_at, id)` through `census_patients_updated`
//! (those kept, e.g. with a current encounter, are not read again by the same prune). What is freed goes back to the tables' free space through
//! PostgreSQL's autovacuum: no page count is returned (0).
//!
//! # What goes, and with what
//!
//! SQLite's rules (`store::prune`), row for row: a journal row of which a bundle is still
//! held stays ([`journal_condition`]); a released hold goes once released before
//! `holds_before`; document tracking rows go with their message links once none of their
//! messages is pending; discharged encounters go with their movements, then patients left
//! without encounters and not named since, with the patients merged into them, their
//! identifiers and their anomalies ([`patients_condition`]). Each kind is chosen with
//! `FOR UPDATE SKIP LOCKED`, at most `limit` per step, oldest first, and deleted children
//! first, so no foreign key is ever checked against a row about to go.
//!
//! A census update racing with the prune of its encounter or patient (a message naming an
//! encounter discharged two years ago, as the prune takes it) waits on the prune's row lock,
//! then fails on the foreign key and is applied again (`census::lost_a_race`): it sees the
//! rows gone, as on SQLite when the prune's transaction came first.

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

/// Delivered or dead outbound rows finished before `$1`.
const OUTBOUND_CONDITION: &str =
    "((status = 'delivered' AND delivered_at < $1) OR (status = 'dead' AND dead_at < $1))";

/// Holds released before `$1`.
const HOLDS_CONDITION: &str = "released_at IS NOT NULL AND released_at < $1";

/// Document tracking rows (`d`) accepted before `$1` whose messages are all finished (or gone).
const DOCUMENTS_CONDITION: &str = "d.accepted_at < $1
    AND NOT EXISTS (SELECT 1 FROM document_messages m JOIN outbound o ON o.id = m.outbound_id
                    WHERE m.journal_id = d.journal_id AND o.status = 'pending')";

/// Encounters discharged before `$1` (`CensusCutoff::discharged_before`, compared byte by
/// byte: the column is `COLLATE "C"`), through `census_encounters_discharged`. An encounter
/// in any other state stays.
const ENCOUNTERS_CONDITION: &str = "status = 'discharged' AND discharge_at < $1::text";

/// When counting: an encounter that the same prune deletes does not keep its patient (`$2`
/// the `discharged_before` cutoff).
const ENCOUNTER_STAYS: &str =
    " AND NOT coalesce(e.status = 'discharged' AND e.discharge_at < $2::text, false)";

/// Where the next step of one prune resumes: what lies before was looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    /// `(received_at, id)` of the last journal row deleted.
    journal_after: Option<(i64, i64)>,
    /// The highest outbound id deleted.
    outbound_after: i64,
    /// `(updated_at, id)` of the last patient deleted.
    patient_after: Option<(i64, i64)>,
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
        let (pruned, _) = self.step(plan, Cursor::default(), limit).await?;
        Ok((pruned, 0))
    }

    /// [`Store::prunable_by_channel`](crate::store::Store::prunable_by_channel) (blocking):
    /// the same conditions as a step, counted, with the recorded retentions read only.
    pub(in crate::store) fn prunable_by_channel(
        &self,
        plan: &RetentionPlan,
    ) -> Result<(Pruned, Vec<(String, usize)>), StoreError> {
        let plan = plan.clone();
        self.block(move |inner| async move {
            const OPERATION: &str = "prunable";
            let failed = inner.failed(OPERATION);
            let mut connection = inner.connection(OPERATION).await?;
            // One snapshot for both counts.
            let transaction = super::snapshot(&mut connection).await.map_err(&failed)?;
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
            let mut pruned = Pruned {
                journal: by_channel.iter().map(|(_, n)| n).sum(),
                ..Pruned::default()
            };
            pruned.add(count_others(&transaction, &plan).await.map_err(&failed)?);
            transaction.commit().await.map_err(&failed)?;
            Ok((pruned, by_channel))
        })
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
    let mut pruned = Pruned {
        journal: journal.len(),
        outbound: outbound.len(),
        ..Pruned::default()
    };
    pruned.holds = transaction
        .execute(
            &format!(
                "WITH chosen AS MATERIALIZED (
                    SELECT journal_id FROM push_holds WHERE {HOLDS_CONDITION}
                    ORDER BY journal_id LIMIT $2 FOR UPDATE SKIP LOCKED)
                 DELETE FROM push_holds h USING chosen WHERE h.journal_id = chosen.journal_id"
            ),
            &[&plan.holds_before, &limit],
        )
        .await
        .map_err(&failed)
        .map(count)?;
    if plan.documents_before != NEVER {
        let chosen = ids(
            &transaction,
            &format!(
                "SELECT d.journal_id FROM documents d WHERE {DOCUMENTS_CONDITION}
                 ORDER BY d.journal_id LIMIT $2 FOR UPDATE OF d SKIP LOCKED"
            ),
            &[&plan.documents_before, &limit],
        )
        .await
        .map_err(&failed)?;
        transaction
            .execute(
                "DELETE FROM document_messages WHERE journal_id = ANY($1)",
                &[&chosen],
            )
            .await
            .map_err(&failed)?;
        pruned.documents = transaction
            .execute(
                "DELETE FROM documents WHERE journal_id = ANY($1)",
                &[&chosen],
            )
            .await
            .map_err(&failed)
            .map(count)?;
    }
    if let Some(census) = &plan.census {
        let chosen = ids(
            &transaction,
            &format!(
                "SELECT id FROM census_encounters WHERE {ENCOUNTERS_CONDITION}
                 ORDER BY discharge_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            &[&census.discharged_before, &limit],
        )
        .await
        .map_err(&failed)?;
        transaction
            .execute(
                "DELETE FROM census_movements WHERE encounter_id = ANY($1)",
                &[&chosen],
            )
            .await
            .map_err(&failed)?;
        pruned.census_encounters = transaction
            .execute(
                "DELETE FROM census_encounters WHERE id = ANY($1)",
                &[&chosen],
            )
            .await
            .map_err(&failed)
            .map(count)?;
        // Patients once the encounters are done: one whose last encounter goes in this prune
        // goes in it too, as the dry run counts.
        if i64::try_from(pruned.census_encounters).unwrap_or(i64::MAX) < limit {
            let (deleted, after) = prune_patients(
                &transaction,
                census.updated_before,
                cursor.patient_after,
                limit,
            )
            .await
            .map_err(&failed)?;
            pruned.census_patients = deleted;
            next.patient_after = after;
        }
    }
    transaction.commit().await.map_err(&failed)?;
    Ok((pruned, next))
}

/// Deletes at most `limit` patient groups (see [`patients_condition`]) after `after`, the
/// roots locked (`SKIP LOCKED`: one a census update holds stays for the next prune), with
/// their identifiers and anomalies first; returns the patients deleted and the new position.
async fn prune_patients(
    client: &impl GenericClient,
    updated_before: i64,
    after: Option<(i64, i64)>,
    limit: i64,
) -> Result<(usize, Option<(i64, i64)>), tokio_postgres::Error> {
    let (after_at, after_id) = after.unwrap_or((i64::MIN, i64::MIN));
    let chosen: Vec<(i64, i64)> = client
        .query(
            &format!(
                "SELECT p.updated_at, p.id FROM census_patients p WHERE {}
                    AND (p.updated_at, p.id) > ($2::bigint, $3::bigint)
                 ORDER BY p.updated_at, p.id LIMIT $4 FOR UPDATE OF p SKIP LOCKED",
                patients_condition("")
            ),
            &[&updated_before, &after_at, &after_id, &limit],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    if chosen.is_empty() {
        return Ok((0, after));
    }
    let roots: Vec<i64> = chosen.iter().map(|(_, id)| *id).collect();
    const GROUPS: &str =
        "SELECT id FROM census_patients WHERE id = ANY($1) OR merged_into = ANY($1)";
    client
        .execute(
            &format!("DELETE FROM census_identifiers WHERE patient_id IN ({GROUPS})"),
            &[&roots],
        )
        .await?;
    client
        .execute(
            &format!("DELETE FROM census_anomalies WHERE patient_id IN ({GROUPS})"),
            &[&roots],
        )
        .await?;
    // The groups in one statement: no `merged_into` points at a deleted row at its end.
    let deleted = client
        .execute(
            "DELETE FROM census_patients WHERE id = ANY($1) OR merged_into = ANY($1)",
            &[&roots],
        )
        .await?;
    Ok((count(deleted), chosen.last().copied().or(after)))
}

/// The first column of the rows of `sql`: the ids a step chose.
async fn ids(
    client: &impl GenericClient,
    sql: &str,
    values: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    Ok(client
        .query(sql, values)
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// The count `sql` reads.
async fn count_of(
    client: &impl GenericClient,
    sql: String,
    values: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<usize, tokio_postgres::Error> {
    let n: i64 = client.query_one(&sql, values).await?.get(0);
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Rows a statement changed, as [`Pruned`] counts them.
fn count(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}

/// What a prune of `plan` deletes besides the journal, counted (the dry run): the conditions
/// of [`step`]; a patient whose last encounters go in the same prune counts (the prune takes
/// patients once the encounters are gone).
async fn count_others(
    client: &impl GenericClient,
    plan: &RetentionPlan,
) -> Result<Pruned, tokio_postgres::Error> {
    let mut pruned = Pruned {
        outbound: count_of(
            client,
            format!("SELECT count(*) FROM outbound WHERE {OUTBOUND_CONDITION}"),
            &[&plan.outbound_before],
        )
        .await?,
        holds: count_of(
            client,
            format!("SELECT count(*) FROM push_holds WHERE {HOLDS_CONDITION}"),
            &[&plan.holds_before],
        )
        .await?,
        ..Pruned::default()
    };
    if plan.documents_before != NEVER {
        pruned.documents = count_of(
            client,
            format!("SELECT count(*) FROM documents d WHERE {DOCUMENTS_CONDITION}"),
            &[&plan.documents_before],
        )
        .await?;
    }
    if let Some(census) = &plan.census {
        pruned.census_encounters = count_of(
            client,
            format!("SELECT count(*) FROM census_encounters WHERE {ENCOUNTERS_CONDITION}"),
            &[&census.discharged_before],
        )
        .await?;
        let roots = format!(
            "SELECT p.id FROM census_patients p WHERE {}",
            patients_condition(ENCOUNTER_STAYS)
        );
        pruned.census_patients = count_of(
            client,
            format!(
                "SELECT count(*) FROM census_patients
                 WHERE id IN ({roots}) OR merged_into IN ({roots})"
            ),
            &[&census.updated_before, &census.discharged_before],
        )
        .await?;
    }
    Ok(pruned)
}

/// The patients (`p`) that may go with the patients merged into them (`$1` the
/// `updated_before` cutoff), read through `census_patients_updated`: SQLite's
/// `prune::prunable_patients`. `has_encounter` is a condition on `e` (an encounter of the
/// patient) that keeps the patient: any encounter when deleting (the encounters that go are
/// gone by then), one that stays when counting ([`ENCOUNTER_STAYS`]). A patient goes only
/// with the whole group merged into it, and only when none of the group was named by a
/// message since the cutoff (NULL counts as recent), has an encounter, has a patient merged
/// into it in turn (so no `merged_into` can dangle), or has a bundle still held under its IPP.
fn patients_condition(has_encounter: &str) -> String {
    format!(
        "p.updated_at < $1::bigint
      AND (p.merged_into IS NULL OR p.merged_into = p.id)
      AND NOT EXISTS (SELECT 1 FROM census_encounters e WHERE e.patient_id = p.id{has_encounter})
      AND NOT EXISTS (SELECT 1 FROM census_patients s
          WHERE s.merged_into = p.id AND s.id <> p.id
            AND (coalesce(s.updated_at >= $1::bigint, true)
              OR EXISTS (SELECT 1 FROM census_encounters e
                  WHERE e.patient_id = s.id{has_encounter})
              OR EXISTS (SELECT 1 FROM census_patients t
                  WHERE t.merged_into = s.id AND t.id <> s.id)))
      AND NOT EXISTS (SELECT 1 FROM push_holds h WHERE h.released_at IS NULL
          AND (h.partner_id = p.ipp
            OR h.partner_id IN (SELECT s.ipp FROM census_patients s WHERE s.merged_into = p.id)))"
    )
}

/// The condition on `journal` of the rows `plan` lets go, its values appended to `params`:
/// processed and rejected rows older than their channel's cutoff (else the store's), of which
/// no outbound message is still pending (`outbound_source`) and no pushed bundle is still
/// held (`push_holds`' key; a released hold does not keep it). `received_at` below the latest
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
            WHERE o.source = 'journal:' || journal.id AND o.status = 'pending')
        AND NOT EXISTS (SELECT 1 FROM push_holds h
            WHERE h.journal_id = journal.id AND h.released_at IS NULL)"
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

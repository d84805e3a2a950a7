//! Retention: deleting what is old enough and finished, in small transactions on the writer, so
//! intake never waits behind a long delete.
//!
//! What may go (journal times in microseconds since 1970, as stored):
//!
//! - a journal row received before its cutoff, **unless** it is still `accepted` (the census or
//!   the push has not finished with it), a pushed bundle of it is still held, or one of its
//!   outbound messages is still pending (neither delivered nor dead-lettered). The cutoff is
//!   the row's channel's ([`ChannelCutoff`]) when the channel has a retention of its own, else
//!   `journal_before` (processed rows) and `rejected_before` (rejected rows). A channel's own
//!   retention is recorded in the store (`channel_retention`) at every prune, and a channel
//!   removed from the configuration keeps the last one recorded, so removing a channel kept
//!   `forever` does not let the store's shorter retention take its rows;
//! - an outbound message delivered or dead-lettered before `outbound_before`;
//! - a released hold released before `holds_before`;
//! - with a [`CensusCutoff`]: an encounter discharged before `discharged_before`, with its
//!   movements; then a patient with no encounter left whom no message named since
//!   `updated_before` (`census_patients.updated_at`), with the patients merged into it, their
//!   identifiers and their anomalies, unless a bundle for one of their IPPs is still held.
//!
//! Never: an `accepted` row, a pending message, a held bundle, an encounter not discharged (a
//! current admission), a patient who still has an encounter.
//!
//! Each call deletes at most `limit` rows of each kind, oldest first; the pruner calls again
//! until nothing is left, and the writer serves journal inserts between calls. A
//! [`PruneCursor`] carries where the previous call stopped, so rows looked at and kept (a
//! channel kept longer, a patient with a current encounter) are not read again at every call
//! of the same prune. Patients are taken once the encounters are done, so a patient whose
//! last encounter goes in this prune goes in it too (as `prune --dry-run` counts). After a
//! prune, `PRAGMA incremental_vacuum` gives the freed pages back to the file system (the store
//! runs with `auto_vacuum = INCREMENTAL`).

use std::fmt::Write as _;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

/// The cutoff of a retention of "forever": no row is older.
pub(super) const NEVER: i64 = i64::MIN;

/// The cutoffs of one prune, computed from the retention settings and the current time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Processed journal rows received before this go (channels without a retention of
    /// their own).
    pub journal_before: i64,
    /// Rejected journal rows (junk frames, unreadable files) received before this go.
    pub rejected_before: i64,
    /// Delivered or dead outbound messages finished before this go.
    pub outbound_before: i64,
    /// Released holds released before this go.
    pub holds_before: i64,
    /// Document tracking rows accepted before this go (`[documents] tracking_retention`),
    /// once none of their messages is pending; [`NEVER`] keeps them.
    pub documents_before: i64,
    /// Channels with a retention of their own (`[inbound.NAME] retention`, `[push]
    /// retention`), by journal channel name.
    pub channels: Vec<ChannelCutoff>,
    /// The retentions behind [`RetentionPlan::channels`] (`None`: forever), as recorded in
    /// the store.
    own: Vec<(String, Option<Duration>)>,
    /// Every journal channel of the configuration, with or without a retention of its own;
    /// `None` when not known (a plan made without a configuration), which neither records
    /// nor applies recorded retentions.
    configured: Option<Vec<String>>,
    /// The census's cutoffs; `None` keeps the census.
    pub census: Option<CensusCutoff>,
    /// When the plan was made: what the channel and census cutoffs count back from.
    now: jiff::Timestamp,
}

/// The cutoffs of one channel with a retention of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCutoff {
    /// The journal's `channel`.
    pub channel: String,
    /// Its processed rows received before this go.
    pub processed_before: i64,
    /// Its rejected rows received before this go: the later of its own cutoff and the
    /// store's rejected cutoff (junk never stays longer than `rejected_retention`, nor
    /// longer than the channel's retention).
    pub rejected_before: i64,
}

/// The census's cutoffs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CensusCutoff {
    /// Encounters discharged before this civil date-time go. Written `YYYY-MM-DDTHH:MM:SS`,
    /// in the time zone the messages speak (the machine's), the form `discharge_at` is
    /// stored in (jiff's civil date-time, year on 4 digits), so text order is time order.
    pub discharged_before: String,
    /// Patients without encounters not named by a message since this (µs since 1970) go.
    pub updated_before: i64,
}

/// `now - age` in microseconds; [`NEVER`] for `None` ("forever").
fn cutoff(now: jiff::Timestamp, age: Option<Duration>) -> i64 {
    match age {
        None => NEVER,
        Some(age) => now
            .as_microsecond()
            .saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX)),
    }
}

impl RetentionPlan {
    /// The cutoffs `now - retention` (journal, outbound and holds alike) and
    /// `now - rejected_retention`; no channel of its own, the census kept.
    pub fn at(
        now: jiff::Timestamp,
        retention: Duration,
        rejected_retention: Duration,
    ) -> RetentionPlan {
        RetentionPlan::keeping(now, Some(retention), Some(rejected_retention))
    }

    /// [`RetentionPlan::at`] where `None` keeps rows forever.
    pub fn keeping(
        now: jiff::Timestamp,
        retention: Option<Duration>,
        rejected_retention: Option<Duration>,
    ) -> RetentionPlan {
        let journal_before = cutoff(now, retention);
        RetentionPlan {
            journal_before,
            rejected_before: cutoff(now, rejected_retention),
            outbound_before: journal_before,
            holds_before: journal_before,
            documents_before: NEVER,
            channels: Vec::new(),
            own: Vec::new(),
            configured: None,
            census: None,
            now,
        }
    }

    /// Names every journal channel of the configuration: the retention of those with one of
    /// their own is recorded in the store at each prune, and a channel recorded but no longer
    /// configured keeps its last recorded retention (see [`remember`]).
    #[must_use]
    pub fn with_configured_channels(mut self, channels: Vec<String>) -> RetentionPlan {
        self.configured = Some(channels);
        self
    }

    /// Keeps document tracking `retention` (`None`: forever).
    #[must_use]
    pub fn with_document_tracking(self, retention: Option<Duration>) -> RetentionPlan {
        RetentionPlan {
            documents_before: cutoff(self.now, retention),
            ..self
        }
    }

    /// Gives the journal rows of `channel` a retention of their own (`None`: forever), in
    /// place of the store's.
    #[must_use]
    pub fn with_channel(mut self, channel: &str, retention: Option<Duration>) -> RetentionPlan {
        let processed_before = cutoff(self.now, retention);
        let own = ChannelCutoff {
            channel: channel.to_owned(),
            processed_before,
            rejected_before: processed_before.max(self.rejected_before),
        };
        match self.channels.iter_mut().find(|c| c.channel == channel) {
            Some(existing) => *existing = own,
            None => self.channels.push(own),
        }
        self.own.retain(|(name, _)| name != channel);
        self.own.push((channel.to_owned(), retention));
        self
    }

    /// Prunes the census too: encounters discharged more than `retention` ago (a civil
    /// date-time in `zone`), then patients left without encounters and not named since.
    /// `None` (forever) keeps the census.
    #[must_use]
    pub fn with_census(
        mut self,
        retention: Option<Duration>,
        zone: &jiff::tz::TimeZone,
    ) -> RetentionPlan {
        self.census = retention.map(|age| {
            let updated_before = cutoff(self.now, Some(age));
            // A cutoff before year 0 (an absurd retention) keeps every encounter: no text is
            // below the empty one.
            let discharged_before = jiff::Timestamp::from_microsecond(updated_before)
                .ok()
                .map(|at| at.to_zoned(zone.clone()).datetime())
                .filter(|at| at.year() >= 0)
                .map(|at| at.strftime("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_default();
            CensusCutoff {
                discharged_before,
                updated_before,
            }
        });
        self
    }
}

/// What the PostgreSQL backend reads of a plan (its fields are this module's).
impl RetentionPlan {
    /// The channels with a retention of their own and that retention in seconds (`None`:
    /// forever), as `channel_retention` records them.
    pub(super) fn own_seconds(&self) -> Vec<(String, Option<i64>)> {
        self.own
            .iter()
            .map(|(channel, age)| {
                let seconds = age.map(|age| i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
                (channel.clone(), seconds)
            })
            .collect()
    }

    /// Every journal channel of the configuration (`None`: not known, see
    /// [`RetentionPlan::with_configured_channels`]).
    pub(super) fn configured(&self) -> Option<&[String]> {
        self.configured.as_deref()
    }

    /// When the plan was made.
    pub(super) fn made_at(&self) -> jiff::Timestamp {
        self.now
    }

    /// The latest of the journal cutoffs: no row received at or after it goes.
    pub(super) fn latest_journal_cutoff(&self) -> i64 {
        self.channels
            .iter()
            .flat_map(|own| [own.processed_before, own.rejected_before])
            .chain([self.journal_before, self.rejected_before])
            .max()
            .unwrap_or(NEVER)
    }
}

/// Rows deleted (or, for a dry run, that would be).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub journal: usize,
    pub outbound: usize,
    pub holds: usize,
    /// Encounters (their movements went with them, not counted).
    pub census_encounters: usize,
    /// Patients, merged ones included (their identifiers and anomalies went with them).
    pub census_patients: usize,
    /// Document tracking rows (`[documents] tracking_retention`).
    pub documents: usize,
}

impl Pruned {
    /// Rows of every kind.
    pub fn total(&self) -> usize {
        self.journal
            + self.outbound
            + self.holds
            + self.census_encounters
            + self.census_patients
            + self.documents
    }

    pub(super) fn add(&mut self, other: Pruned) {
        self.journal += other.journal;
        self.outbound += other.outbound;
        self.holds += other.holds;
        self.census_encounters += other.census_encounters;
        self.census_patients += other.census_patients;
        self.documents += other.documents;
    }
}

/// Where the next call of one prune resumes: what lies before was looked at and kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PruneCursor {
    /// The highest journal id deleted so far.
    journal_after: i64,
    /// `(updated_at, id)` of the last patient deleted so far.
    patient_after: Option<(i64, i64)>,
}

/// `plan` with the retentions recorded for channels it does not configure; records its own
/// channels' retentions first, and forgets those of channels configured without one (they
/// follow the store's retention again). Runs in the prune's transaction.
pub(super) fn remember(
    connection: &Connection,
    plan: &RetentionPlan,
) -> rusqlite::Result<RetentionPlan> {
    let Some(configured) = &plan.configured else {
        return Ok(plan.clone());
    };
    for (channel, retention) in &plan.own {
        connection
            .prepare_cached(
                "INSERT INTO channel_retention (channel, retention_seconds, recorded_at)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (channel) DO UPDATE
                 SET retention_seconds = excluded.retention_seconds,
                     recorded_at = excluded.recorded_at
                 WHERE retention_seconds IS NOT excluded.retention_seconds",
            )?
            .execute(params![
                channel,
                retention.map(|age| i64::try_from(age.as_secs()).unwrap_or(i64::MAX)),
                plan.now.as_microsecond()
            ])?;
    }
    for channel in configured {
        if !plan.own.iter().any(|(name, _)| name == channel) {
            connection
                .prepare_cached("DELETE FROM channel_retention WHERE channel = ?1")?
                .execute([channel])?;
        }
    }
    remembered(connection, plan)
}

/// `plan` with the retentions recorded for channels it does not configure (reads only: the
/// dry run's view of [`remember`]).
pub(super) fn remembered(
    connection: &Connection,
    plan: &RetentionPlan,
) -> rusqlite::Result<RetentionPlan> {
    let Some(configured) = &plan.configured else {
        return Ok(plan.clone());
    };
    let recorded: Vec<(String, Option<i64>)> = connection
        .prepare_cached(
            "SELECT channel, retention_seconds FROM channel_retention ORDER BY channel",
        )?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(with_recorded(plan, configured, recorded))
}

/// `plan` with the `recorded` retentions (`channel_retention` rows, seconds, `None`: forever)
/// of the channels not in `configured`; both backends' [`remembered`].
pub(super) fn with_recorded(
    plan: &RetentionPlan,
    configured: &[String],
    recorded: Vec<(String, Option<i64>)>,
) -> RetentionPlan {
    let mut plan = plan.clone();
    for (channel, seconds) in recorded {
        if configured.contains(&channel) {
            continue;
        }
        let age = seconds.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
        plan = plan.with_channel(&channel, age);
    }
    plan
}

/// The journal rows `plan` lets go, as `FROM … WHERE …` to which a caller may add `AND …`,
/// with its values: `?1` and `?2` the store's processed and rejected cutoffs, then per channel
/// of its own its name and its two cutoffs. The two `NOT IN` lists are small (pending
/// messages and waiting holds, both read through partial indexes) and evaluated once.
fn prunable_journal(plan: &RetentionPlan) -> (String, Vec<Value>) {
    let mut values = vec![
        Value::Integer(plan.journal_before),
        Value::Integer(plan.rejected_before),
    ];
    let (processed, rejected) = if plan.channels.is_empty() {
        ("?1".to_owned(), "?2".to_owned())
    } else {
        let mut processed = "CASE channel".to_owned();
        let mut rejected = "CASE channel".to_owned();
        for own in &plan.channels {
            let n = values.len();
            values.extend([
                Value::Text(own.channel.clone()),
                Value::Integer(own.processed_before),
                Value::Integer(own.rejected_before),
            ]);
            let _ = write!(processed, " WHEN ?{} THEN ?{}", n + 1, n + 2);
            let _ = write!(rejected, " WHEN ?{} THEN ?{}", n + 1, n + 3);
        }
        processed.push_str(" ELSE ?1 END");
        rejected.push_str(" ELSE ?2 END");
        (processed, rejected)
    };
    let sql = format!(
        "FROM journal
    WHERE ((status = 'processed' AND received_at < {processed})
        OR (status = 'rejected' AND received_at < {rejected}))
      AND ('journal:' || id) NOT IN (SELECT source FROM outbound WHERE status = 'pending')
      AND id NOT IN (SELECT journal_id FROM push_holds WHERE released_at IS NULL)"
    );
    (sql, values)
}

const PRUNABLE_OUTBOUND: &str = "FROM outbound
    WHERE (status = 'delivered' AND delivered_at < ?1) OR (status = 'dead' AND dead_at < ?1)";

const PRUNABLE_HOLDS: &str = "FROM push_holds WHERE released_at IS NOT NULL AND released_at < ?1";

/// Document tracking rows accepted before `?1` whose messages are all finished (or gone).
const PRUNABLE_DOCUMENTS: &str = "FROM documents d WHERE d.accepted_at < ?1
      AND NOT EXISTS (SELECT 1 FROM document_messages m JOIN outbound o ON o.id = m.outbound_id
                      WHERE m.journal_id = d.journal_id AND o.status = 'pending')";

/// Deletes at most `limit` document tracking rows (and their message links) that
/// `[documents] tracking_retention` lets go.
fn prune_documents(connection: &Connection, before: i64, limit: i64) -> rusqlite::Result<usize> {
    if before == NEVER {
        return Ok(0);
    }
    connection
        .prepare_cached(&format!(
            "DELETE FROM document_messages WHERE journal_id IN \
             (SELECT journal_id {PRUNABLE_DOCUMENTS} ORDER BY journal_id LIMIT ?2)"
        ))?
        .execute(params![before, limit])?;
    connection
        .prepare_cached(&format!(
            "DELETE FROM documents WHERE journal_id IN \
             (SELECT journal_id {PRUNABLE_DOCUMENTS} ORDER BY journal_id LIMIT ?2)"
        ))?
        .execute(params![before, limit])
}

/// Encounters discharged before `?1` (see [`CensusCutoff::discharged_before`]), through the
/// partial index `census_encounters_discharged`. An encounter in any other state (admitted,
/// on leave, pre-admitted, unknown, cancelled) stays.
const PRUNABLE_ENCOUNTERS: &str =
    "FROM census_encounters WHERE status = 'discharged' AND discharge_at < ?1";

/// The patients that may go with the patients merged into them (`?1` the `updated_before`
/// cutoff), read through `census_patients_updated`. `{has_encounter}` is a condition on `e`
/// (an encounter of the patient `x`) that keeps the patient: any encounter when deleting
/// (the encounters that go are gone by then), one that stays when counting. A patient goes
/// only with the whole group merged into it, and only when none of the group:
///
/// - was named by a message since the cutoff (`updated_at`, NULL counts as recent);
/// - has an encounter (an encounter's `patient_id` must not dangle);
/// - has a patient merged into it in turn (none should, merges are flattened: checked so a
///   `merged_into` can never dangle);
/// - has a bundle still held under its IPP (the schema links them by IPP only; a patient is
///   never pruned while a push waits for them).
///
/// A patient merged into another (`merged_into` set, not to itself) never goes alone: it
/// resolves its old IPP to the survivor, and goes with the survivor.
fn prunable_patients(has_encounter: &str) -> String {
    format!(
        "FROM census_patients p
    WHERE p.updated_at < ?1
      AND (p.merged_into IS NULL OR p.merged_into = p.id)
      AND NOT EXISTS (SELECT 1 FROM census_encounters e WHERE e.patient_id = p.id{has_encounter})
      AND NOT EXISTS (SELECT 1 FROM census_patients s
          WHERE s.merged_into = p.id AND s.id <> p.id
            AND (ifnull(s.updated_at >= ?1, 1)
              OR EXISTS (SELECT 1 FROM census_encounters e WHERE e.patient_id = s.id{has_encounter})
              OR EXISTS (SELECT 1 FROM census_patients t WHERE t.merged_into = s.id AND t.id <> s.id)))
      AND NOT EXISTS (SELECT 1 FROM push_holds h WHERE h.released_at IS NULL
          AND (h.partner_id = p.ipp
            OR h.partner_id IN (SELECT s.ipp FROM census_patients s WHERE s.merged_into = p.id)))"
    )
}

/// When counting: an encounter that the same prune deletes does not keep its patient (`?2`
/// the `discharged_before` cutoff).
const ENCOUNTER_STAYS: &str = " AND NOT ifnull(e.status = 'discharged' AND e.discharge_at < ?2, 0)";

/// A patient's group: the patient and the patients merged into it.
const GROUP: &str = "SELECT id FROM census_patients WHERE id = ?1 OR merged_into = ?1";

/// Deletes at most `limit` rows of each kind (in the caller's transaction), from `cursor` on;
/// returns what went and where the next call resumes.
pub(super) fn prune(
    connection: &Connection,
    plan: &RetentionPlan,
    cursor: PruneCursor,
    limit: usize,
) -> rusqlite::Result<(Pruned, PruneCursor)> {
    let plan = &remember(connection, plan)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut next = cursor;
    // Outbound first: a journal row whose messages are all finished and old goes in the same
    // call as they do.
    let outbound = connection
        .prepare_cached(&format!(
            "DELETE FROM outbound WHERE id IN (SELECT id {PRUNABLE_OUTBOUND} ORDER BY id LIMIT ?2)"
        ))?
        .execute(params![plan.outbound_before, limit])?;
    let (from, mut values) = prunable_journal(plan);
    let n = values.len();
    values.extend([Value::Integer(cursor.journal_after), Value::Integer(limit)]);
    let mut journal = 0;
    {
        let mut statement = connection.prepare_cached(&format!(
            "DELETE FROM journal WHERE id IN
                (SELECT id {from} AND id > ?{} ORDER BY id LIMIT ?{}) RETURNING id",
            n + 1,
            n + 2
        ))?;
        let mut rows = statement.query(params_from_iter(values))?;
        while let Some(row) = rows.next()? {
            journal += 1;
            next.journal_after = next.journal_after.max(row.get(0)?);
        }
    }
    let holds = connection
        .prepare_cached(&format!(
            "DELETE FROM push_holds WHERE journal_id IN (SELECT journal_id {PRUNABLE_HOLDS} ORDER BY journal_id LIMIT ?2)"
        ))?
        .execute(params![plan.holds_before, limit])?;
    let documents = prune_documents(connection, plan.documents_before, limit)?;
    let mut pruned = Pruned {
        journal,
        outbound,
        holds,
        documents,
        ..Pruned::default()
    };
    if let Some(census) = &plan.census {
        // The movements of the chosen encounters, then the encounters: the same choice twice
        // (nothing changes the encounters in between).
        let chosen = format!("SELECT id {PRUNABLE_ENCOUNTERS} ORDER BY discharge_at, id LIMIT ?2");
        connection
            .prepare_cached(&format!(
                "DELETE FROM census_movements WHERE encounter_id IN ({chosen})"
            ))?
            .execute(params![census.discharged_before, limit])?;
        pruned.census_encounters = connection
            .prepare_cached(&format!(
                "DELETE FROM census_encounters WHERE id IN ({chosen})"
            ))?
            .execute(params![census.discharged_before, limit])?;
        if i64::try_from(pruned.census_encounters).unwrap_or(i64::MAX) < limit {
            let (deleted, after) = prune_patients(connection, census, cursor.patient_after, limit)?;
            pruned.census_patients = deleted;
            next.patient_after = after;
        }
    }
    Ok((pruned, next))
}

/// Deletes at most `limit` patient groups (see [`prunable_patients`]) after `after`; returns
/// the patients deleted and the new position.
fn prune_patients(
    connection: &Connection,
    census: &CensusCutoff,
    after: Option<(i64, i64)>,
    limit: i64,
) -> rusqlite::Result<(usize, Option<(i64, i64)>)> {
    let (after_at, after_id) = after.unwrap_or((i64::MIN, i64::MIN));
    let chosen: Vec<(i64, i64)> = connection
        .prepare_cached(&format!(
            "SELECT p.updated_at, p.id {} AND (p.updated_at, p.id) > (?2, ?3)
             ORDER BY p.updated_at, p.id LIMIT ?4",
            prunable_patients("")
        ))?
        .query_map(
            params![census.updated_before, after_at, after_id, limit],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut deleted = 0;
    for (_, id) in &chosen {
        // Identifiers and anomalies first (the identifiers' foreign key), then the group in
        // one statement, so no `merged_into` points at a deleted row at any statement's end.
        connection
            .prepare_cached(&format!(
                "DELETE FROM census_identifiers WHERE patient_id IN ({GROUP})"
            ))?
            .execute([id])?;
        connection
            .prepare_cached(&format!(
                "DELETE FROM census_anomalies WHERE patient_id IN ({GROUP})"
            ))?
            .execute([id])?;
        deleted += connection
            .prepare_cached("DELETE FROM census_patients WHERE id = ?1 OR merged_into = ?1")?
            .execute([id])?;
    }
    Ok((deleted, chosen.last().copied().or(after)))
}

/// What [`prune`] would delete in all, without deleting (`ordobridge prune --dry-run`), and
/// the journal rows of it by channel.
pub(super) fn count(
    connection: &Connection,
    plan: &RetentionPlan,
) -> rusqlite::Result<(Pruned, Vec<(String, usize)>)> {
    let count = |sql: String, values: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<usize> {
        connection
            .query_row(&sql, values, |row| row.get::<_, i64>(0))
            .map(|n| usize::try_from(n).unwrap_or(0))
    };
    let plan = &remembered(connection, plan)?;
    let (from, values) = prunable_journal(plan);
    let by_channel: Vec<(String, usize)> = connection
        .prepare(&format!(
            "SELECT channel, count(*) {from} GROUP BY channel ORDER BY channel"
        ))?
        .query_map(params_from_iter(values), |row| {
            Ok((
                row.get(0)?,
                usize::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut pruned = Pruned {
        journal: by_channel.iter().map(|(_, n)| n).sum(),
        outbound: count(
            format!("SELECT count(*) {PRUNABLE_OUTBOUND}"),
            &[&plan.outbound_before],
        )?,
        holds: count(
            format!("SELECT count(*) {PRUNABLE_HOLDS}"),
            &[&plan.holds_before],
        )?,
        documents: count(
            format!("SELECT count(*) {PRUNABLE_DOCUMENTS}"),
            &[&plan.documents_before],
        )?,
        ..Pruned::default()
    };
    if let Some(census) = &plan.census {
        pruned.census_encounters = count(
            format!("SELECT count(*) {PRUNABLE_ENCOUNTERS}"),
            &[&census.discharged_before],
        )?;
        let roots = format!("SELECT p.id {}", prunable_patients(ENCOUNTER_STAYS));
        pruned.census_patients = count(
            format!(
                "SELECT count(*) FROM census_patients WHERE id IN ({roots}) OR merged_into IN ({roots})"
            ),
            &[&census.updated_before, &census.discharged_before],
        )?;
    }
    Ok((pruned, by_channel))
}

/// A passive checkpoint from a connection of its own (the writer's transactions cannot run
/// one): it copies the write-ahead log into the database file without blocking the writer, and
/// when it catches up with the whole log, SQLite truncates the file to its new size, so the
/// pages the vacuum gave back leave the disk. Returns whether the whole log was copied.
pub(super) fn checkpoint(path: &std::path::Path) -> rusqlite::Result<bool> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(super::checkpoint::passive(&connection)?.all())
}

/// Gives up to `pages` free pages back to the file system (needs `auto_vacuum = INCREMENTAL`);
/// returns the pages freed.
pub(super) fn incremental_vacuum(connection: &Connection, pages: u32) -> rusqlite::Result<u32> {
    let before: u32 = connection.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
    // The pragma returns no row per freed page we need; step it to the end.
    let mut statement = connection.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = statement.query([])?;
    while rows.next()?.is_some() {}
    drop(rows);
    let after: u32 = connection.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
    Ok(before.saturating_sub(after))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    const DAY: Duration = Duration::from_secs(86_400);

    /// 2026-12-01T10:00:00Z.
    fn now() -> jiff::Timestamp {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    fn ago(days: u32) -> i64 {
        now().as_microsecond() - i64::try_from((DAY * days).as_micros()).unwrap()
    }

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let connection = super::super::schema::open_writer(&dir.path().join("ob.db")).unwrap();
        (dir, connection)
    }

    fn journal(connection: &Connection, channel: &str, control_id: &str, days: u32, status: &str) {
        connection
            .execute(
                "INSERT INTO journal (channel, received_at, peer, sender, message_type,
                     control_id, content_hash, raw, status, last_seen_at, kept)
                 VALUES (?1, ?2, 'p', 's', 'ADT^A01', ?3, zeroblob(32), x'00', ?4, ?2, ?4 <> 'rejected')",
                params![channel, ago(days), control_id, status],
            )
            .unwrap();
    }

    fn strings(connection: &Connection, sql: &str) -> Vec<String> {
        connection
            .prepare(sql)
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Prunes to the end in steps of `limit`, as `Store::prune` does.
    fn prune_all(connection: &Connection, plan: &RetentionPlan, limit: usize) -> Pruned {
        let mut total = Pruned::default();
        let mut cursor = PruneCursor::default();
        loop {
            let (pruned, next) = prune(connection, plan, cursor, limit).unwrap();
            cursor = next;
            total.add(pruned);
            if pruned.total() == 0 {
                return total;
            }
        }
    }

    #[test]
    fn ok_channel_cutoffs() {
        let (_dir, connection) = store();
        for (channel, days, status) in [
            ("lab", 10, "processed"),
            ("lab", 3, "processed"),
            ("lab", 10, "rejected"),
            ("adt", 10, "processed"),
            ("adt", 100, "processed"),
            ("adt", 40, "rejected"),
            ("archive", 400, "processed"),
            ("archive", 40, "rejected"),
            ("gone", 100, "processed"),
            ("gone", 10, "processed"),
            ("lab", 10, "accepted"),
        ] {
            journal(
                &connection,
                channel,
                &format!("{channel}-{days}-{status}"),
                days,
                status,
            );
        }
        // `lab` 7 days, `archive` forever, `adt` and `gone` (no longer configured) the store's.
        let plan = RetentionPlan::at(now(), 90 * DAY, 30 * DAY)
            .with_channel("lab", Some(7 * DAY))
            .with_channel("archive", None);
        let (counted, by_channel) = count(&connection, &plan).unwrap();
        assert_eq!(
            by_channel,
            [
                ("adt".to_owned(), 2),
                ("archive".to_owned(), 1),
                ("gone".to_owned(), 1),
                ("lab".to_owned(), 2)
            ]
        );
        let pruned = prune_all(&connection, &plan, 1);
        assert_eq!(pruned, counted);
        assert_eq!(pruned.journal, 6);
        assert_eq!(
            strings(&connection, "SELECT control_id FROM journal ORDER BY id"),
            [
                "lab-3-processed",
                "adt-10-processed",
                "archive-400-processed",
                "gone-10-processed",
                "lab-10-accepted"
            ]
        );
    }

    /// A channel kept `forever` that leaves the configuration keeps `forever` (recorded at
    /// the prune before), as the dry run says; a channel configured again without a
    /// retention of its own follows the store's again.
    #[test]
    fn ok_removed_channel_keeps_its_last_retention() {
        let (_dir, connection) = store();
        journal(&connection, "archive", "A-400", 400, "processed");
        journal(&connection, "adt", "D-100", 100, "processed");
        let store_default = || RetentionPlan::at(now(), 90 * DAY, 30 * DAY);
        let with_archive = store_default()
            .with_configured_channels(vec!["adt".to_owned(), "archive".to_owned()])
            .with_channel("archive", None);
        assert_eq!(
            prune_all(&connection, &with_archive, 10).journal,
            1,
            "D-100 goes"
        );
        assert_eq!(
            strings(
                &connection,
                "SELECT channel || ':' || ifnull(retention_seconds, 'forever') FROM channel_retention"
            ),
            ["archive:forever"]
        );

        // `archive` removed from the configuration.
        let without_archive = store_default().with_configured_channels(vec!["adt".to_owned()]);
        let (counted, by_channel) = count(&connection, &without_archive).unwrap();
        assert_eq!((counted.journal, by_channel), (0, vec![]));
        assert_eq!(prune_all(&connection, &without_archive, 10).journal, 0);
        assert_eq!(
            strings(&connection, "SELECT control_id FROM journal"),
            ["A-400"]
        );

        // A plan that does not know the configuration neither records nor applies.
        assert_eq!(count(&connection, &store_default()).unwrap().0.journal, 1);

        // `archive` back, without a retention of its own: the store's 90 days.
        let archive_plain =
            store_default().with_configured_channels(vec!["adt".to_owned(), "archive".to_owned()]);
        assert_eq!(prune_all(&connection, &archive_plain, 10).journal, 1);
        assert_eq!(
            strings(&connection, "SELECT channel FROM channel_retention"),
            Vec::<String>::new()
        );
    }

    /// A recorded retention follows the configuration's changes: 7 days, then 365.
    #[test]
    fn ok_recorded_retention_is_the_last_configured() {
        let (_dir, connection) = store();
        journal(&connection, "lab", "L-20", 20, "processed");
        let configured = || vec!["lab".to_owned()];
        let plan = |days: u32| {
            RetentionPlan::at(now(), 90 * DAY, 30 * DAY)
                .with_configured_channels(configured())
                .with_channel("lab", Some(DAY * days))
        };
        assert_eq!(prune_all(&connection, &plan(365), 10).journal, 0);
        assert_eq!(prune_all(&connection, &plan(30), 10).journal, 0);
        assert_eq!(
            strings(
                &connection,
                "SELECT CAST(retention_seconds AS TEXT) FROM channel_retention"
            ),
            [(30 * 86_400).to_string()]
        );
        // Removed: 30 days recorded, the row is 20 days old and stays.
        let removed = RetentionPlan::at(now(), Duration::from_secs(1), 30 * DAY)
            .with_configured_channels(vec![]);
        assert_eq!(prune_all(&connection, &removed, 10).journal, 0);
    }

    #[rstest]
    #[case::ok_shorter_than_rejected(Some(7), 10, true)]
    #[case::ok_longer_still_drops_junk_at_rejected_retention(Some(365), 40, true)]
    #[case::ok_longer(Some(365), 20, false)]
    #[case::ok_forever_still_drops_junk(None, 40, true)]
    fn ok_channel_rejected_cutoff(
        #[case] channel_days: Option<u32>,
        #[case] row_days: u32,
        #[case] goes: bool,
    ) {
        let (_dir, connection) = store();
        journal(&connection, "lab", "R", row_days, "rejected");
        let plan = RetentionPlan::at(now(), 90 * DAY, 30 * DAY)
            .with_channel("lab", channel_days.map(|d| DAY * d));
        assert_eq!(prune_all(&connection, &plan, 10).journal, usize::from(goes));
    }

    /// The text `discharge_at` is written in (jiff's civil date-time) and the cutoff compare
    /// as times do: this pins the form the census pruner relies on.
    #[test]
    fn ok_census_cutoff_in_the_stored_form() {
        let plan = RetentionPlan::at(now(), 90 * DAY, 30 * DAY)
            .with_census(Some(730 * DAY), &jiff::tz::TimeZone::UTC);
        let census = plan.census.unwrap();
        assert_eq!(census.discharged_before, "2024-12-01T10:00:00");
        assert_eq!(census.updated_before, ago(730));
        let stored = |text: &str| text.parse::<jiff::civil::DateTime>().unwrap().to_string();
        assert_eq!(stored("2024-12-01T09:59:59"), "2024-12-01T09:59:59");
        assert!(stored("2024-12-01T09:59:59") < census.discharged_before);
        assert!(stored("2024-12-01T10:00:00.5") > census.discharged_before);
        assert!(stored("0987-01-01T00:00:00") < census.discharged_before);
        let paris = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        let plan =
            RetentionPlan::at(now(), 90 * DAY, 30 * DAY).with_census(Some(730 * DAY), &paris);
        assert_eq!(
            plan.census.unwrap().discharged_before,
            "2024-12-01T11:00:00"
        );
        let forever = RetentionPlan::at(now(), 90 * DAY, 30 * DAY).with_census(None, &paris);
        assert_eq!(forever.census, None);
    }

    /// A census as the census writer leaves it, with every kind of link.
    fn census(connection: &Connection) {
        let old = ago(800);
        let recent = ago(10);
        connection
            .execute_batch(&format!(
                "INSERT INTO census_patients (id, ipp, merged_into, journal_id, updated_at) VALUES
                    (1, 'GONE', NULL, 1, {old}),
                    (2, 'CURRENT', NULL, 1, {old}),
                    (3, 'RECENT', NULL, 1, {recent}),
                    (4, 'LONE', NULL, 1, {old}),
                    (5, 'SURVIVOR', NULL, 1, {old}),
                    (6, 'MERGED', 5, 1, {old}),
                    (7, 'KEPT-SURVIVOR', NULL, 1, {old}),
                    (8, 'RECENT-MERGE', 7, 1, {recent}),
                    (9, 'HELD', NULL, 1, {old}),
                    (10, 'ALIVE', NULL, 1, {recent}),
                    (11, 'OLD-STUB', 10, 1, {old}),
                    (12, 'SELF', 12, 1, {old}),
                    (13, 'NO-TIME', NULL, 1, NULL),
                    (14, 'LAST-YEAR', NULL, 1, {old});
                 INSERT INTO census_identifiers VALUES
                    (1, 'PI', 'CH', 'GONE'), (4, 'PI', 'CH', 'LONE'), (6, 'PI', 'CH', 'MERGED'),
                    (5, 'PI', 'CH', 'SURVIVOR'), (3, 'PI', 'CH', 'RECENT');
                 INSERT INTO census_anomalies (journal_id, patient_id, kind, text) VALUES
                    (1, 4, 'unknown_encounter', 'A02 for NDA N-LONE'),
                    (1, 6, 'merged_patient', 'IPP MERGED'),
                    (1, 3, 'out_of_order', 'kept');
                 INSERT INTO census_encounters (id, nda, patient_id, status, discharge_at, journal_id) VALUES
                    (1, 'N-GONE', 1, 'discharged', '2023-05-01T08:00:00', 1),
                    (2, 'N-CURRENT-OLD', 2, 'discharged', '2022-01-01T08:00:00', 1),
                    (3, 'N-CURRENT', 2, 'admitted', NULL, 1),
                    (4, 'N-LAST-YEAR', 14, 'discharged', '2025-12-01T08:00:00', 1),
                    (5, 'N-CANCEL', 2, 'cancelled', NULL, 1),
                    (6, 'N-NO-DATE', 2, 'discharged', NULL, 1);
                 INSERT INTO census_movements (movement_id, encounter_id, event, status, movement_at, journal_id) VALUES
                    ('M1', 1, 'A01', 'active', '2023-04-01T08:00:00', 1),
                    ('M2', 1, 'A03', 'active', '2023-05-01T08:00:00', 1),
                    ('M3', 2, 'A03', 'active', '2022-01-01T08:00:00', 1),
                    ('M4', 3, 'A01', 'active', '2026-11-30T08:00:00', 1),
                    ('M5', 4, 'A03', 'active', '2025-12-01T08:00:00', 1);
                 INSERT INTO push_holds (journal_id, partner_id, held_at, release_at) VALUES
                    (99, 'HELD', {recent}, {recent});"
            ))
            .unwrap();
    }

    #[test]
    fn ok_census_prune_keeps_links_whole() {
        let (_dir, connection) = store();
        census(&connection);
        let plan = RetentionPlan::at(now(), 90 * DAY, 30 * DAY)
            .with_census(Some(730 * DAY), &jiff::tz::TimeZone::UTC);
        let (counted, _) = count(&connection, &plan).unwrap();
        let pruned = prune_all(&connection, &plan, 1);
        assert_eq!(pruned, counted, "the dry run counts what the prune deletes");
        assert_eq!((pruned.census_encounters, pruned.census_patients), (2, 5));
        assert_eq!(
            strings(&connection, "SELECT nda FROM census_encounters ORDER BY id"),
            ["N-CURRENT", "N-LAST-YEAR", "N-CANCEL", "N-NO-DATE"]
        );
        assert_eq!(
            strings(
                &connection,
                "SELECT movement_id FROM census_movements ORDER BY seq"
            ),
            ["M4", "M5"]
        );
        // GONE (its encounter went first), LONE, SURVIVOR with MERGED, SELF.
        assert_eq!(
            strings(&connection, "SELECT ipp FROM census_patients ORDER BY id"),
            [
                "CURRENT",
                "RECENT",
                "KEPT-SURVIVOR",
                "RECENT-MERGE",
                "HELD",
                "ALIVE",
                "OLD-STUB",
                "NO-TIME",
                "LAST-YEAR"
            ]
        );
        assert_eq!(
            strings(
                &connection,
                "SELECT value FROM census_identifiers ORDER BY value"
            ),
            ["RECENT"],
            "identifiers went with their patients"
        );
        assert_eq!(
            strings(&connection, "SELECT text FROM census_anomalies"),
            ["kept"]
        );
        let dangling: i64 = connection
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0);
        // Nothing is left to go.
        assert_eq!(prune_all(&connection, &plan, 10).total(), 0);
    }

    #[test]
    fn ok_census_forever_is_not_touched() {
        let (_dir, connection) = store();
        census(&connection);
        let plan = RetentionPlan::at(now(), 90 * DAY, 30 * DAY);
        assert_eq!(prune_all(&connection, &plan, 10), Pruned::default());
        assert_eq!(count(&connection, &plan).unwrap().0, Pruned::default());
    }

    /// A patient merged into one that was itself merged (not produced by the census writer,
    /// which flattens merges) keeps its whole chain: no `merged_into` may dangle.
    #[test]
    fn ok_census_never_leaves_a_dangling_merge() {
        let (_dir, connection) = store();
        let old = ago(800);
        connection
            .execute_batch(&format!(
                "INSERT INTO census_patients (id, ipp, merged_into, journal_id, updated_at) VALUES
                    (1, 'ROOT', NULL, 1, {old}), (2, 'MID', 1, 1, {old}), (3, 'LEAF', 2, 1, {old}),
                    (4, 'A', 5, 1, {old}), (5, 'B', 4, 1, {old});"
            ))
            .unwrap();
        let plan = RetentionPlan::at(now(), 90 * DAY, 30 * DAY)
            .with_census(Some(730 * DAY), &jiff::tz::TimeZone::UTC);
        assert_eq!(prune_all(&connection, &plan, 10).census_patients, 0);
        assert_eq!(count(&connection, &plan).unwrap().0.census_patients, 0);
    }
}

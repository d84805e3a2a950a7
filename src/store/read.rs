//! Reads: listings and lookups on read-only connections, beside the writer (WAL).
//!
//! Connections are kept in a small idle pool so a CLI loop or the HTTP API does not reopen
//! the file for every call; the pool lock is held only to take or return a connection, never
//! while a query runs.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use rusqlite::types::Type;
use rusqlite::{Connection, Row};

use super::{
    EntryStatus, JournalEntry, JournalFilter, JournalSummary, StoreError, Unprocessed, schema,
};

/// Idle read connections kept for reuse; more may be open while a burst of reads runs.
const MAX_IDLE: usize = 4;

/// The listing columns, in the order [`summary`] reads them; a macro so the statements below
/// stay `&'static str` (no formatting per call).
/// A row of the push channel (`?1`) still `accepted` that no hold covers: its push ended with
/// an error answer, or its client went away, before it was mapped. The one definition behind
/// `ordobridge queue` (by age) and the engine's sweeper (by journal id).
macro_rules! unsettled_push {
    () => {
        "channel = ?1 AND status = 'accepted' AND NOT EXISTS (SELECT 1 FROM push_holds h \
         WHERE h.journal_id = journal.id AND h.released_at IS NULL)"
    };
}
pub(super) use unsettled_push;

/// The highest journal id committed (0 for an empty journal).
pub(super) fn last_journal_id(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row("SELECT coalesce(max(id), 0) FROM journal", [], |row| {
        row.get(0)
    })
}

macro_rules! summary_columns {
    () => {
        "id, received_at, channel, message_type, control_id, status, reason, peer, sender, note"
    };
}

/// How many columns [`summary`] reads; the columns after them are the caller's.
const SUMMARY_COLUMNS: usize = 10;

const ENTRY: &str = concat!(
    "SELECT ",
    summary_columns!(),
    ", raw, content_hash, duplicate_count, last_seen_at FROM journal WHERE id = ?1"
);

/// Which journal rows `ordobridge journal` lists: every filter given must hold.
///
/// The filters are SQL conditions (reception-time ranges use the `journal_received_at` index,
/// MSH-10 the `journal_control_id` one), except the IPP: SQL keeps the rows whose bytes hold
/// it, then each candidate is parsed and kept only when a PID-3 repetition's first component
/// is the IPP. The limit counts rows kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalSearch {
    /// MSH-10, channel and the limit (0: no limit).
    pub filter: JournalFilter,
    /// Received at or after.
    pub since: Option<jiff::Timestamp>,
    /// Received before.
    pub until: Option<jiff::Timestamp>,
    /// MSH-9 equal to this, or starting with it and a `^` (`ADT` matches `ADT^A01^ADT_A01`).
    pub message_type: Option<String>,
    /// Only rows with this status.
    pub status: Option<EntryStatus>,
    /// Only HL7 rows whose PID-3 holds this identifier (patient data: the CLI asks for
    /// `--show-phi`).
    pub ipp: Option<String>,
    /// Only HL7 rows whose visit number (PV1-19, else PID-18) is this (patient data).
    pub nda: Option<String>,
    /// Only rows whose raw bytes contain this text (a scan: bound it with `min_id` or a time
    /// range).
    pub text: Option<String>,
    /// Only rows with an id above this: bounds a full-text scan to the newest rows.
    pub min_id: Option<i64>,
    /// Paging: only rows listed after this one (its reception time and id) in the
    /// newest-first order.
    pub after: Option<(jiff::Timestamp, i64)>,
}

impl From<JournalFilter> for JournalSearch {
    fn from(filter: JournalFilter) -> Self {
        Self {
            filter,
            ..Self::default()
        }
    }
}

/// A pool of read-only connections on one database.
#[derive(Debug)]
pub(super) struct Readers {
    path: PathBuf,
    /// How a new connection is opened.
    source: Source,
    /// Locked only to push or pop a connection.
    idle: Mutex<Vec<Connection>>,
}

/// What the readers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The file, beside its writer (WAL).
    File,
    /// The file as immutable: read-only on disk, no writer at work (see
    /// `schema::open_listing`).
    Immutable,
    /// The file does not exist (a read-only store opened before the daemon's first start):
    /// an empty in-memory database of the current schema; nothing is created.
    Empty,
    /// No SQLite file: the store is on PostgreSQL, whose backend answers the reads it does; a
    /// SQLite read reaching here is one not ported there, and says so.
    Elsewhere,
}

impl Readers {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            source: Source::File,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Readers of a store file that does not exist: every read answers as an empty store.
    pub(super) fn empty(path: PathBuf) -> Self {
        Self {
            source: Source::Empty,
            ..Self::new(path)
        }
    }

    /// Readers of a store on PostgreSQL: every SQLite read is refused as not ported.
    pub(super) fn elsewhere(path: PathBuf) -> Self {
        Self {
            source: Source::Elsewhere,
            ..Self::new(path)
        }
    }

    /// Readers of a store file that is read-only on disk with no writer at work.
    pub(super) fn immutable(path: PathBuf) -> Self {
        Self {
            source: Source::Immutable,
            ..Self::new(path)
        }
    }

    /// Puts an open connection in the pool (the one a read-only open checked the schema on).
    pub(super) fn keep(&self, connection: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(connection);
    }

    /// Runs `read` on an idle connection (or a new one) and returns the connection to the
    /// pool afterwards.
    pub(super) fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // A panic while the lock was held cannot leave the Vec inconsistent: keep using it.
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let connection = match idle {
            Some(connection) => connection,
            None => match self.source {
                Source::File => schema::open_reader(&self.path)?,
                Source::Immutable => schema::open_immutable(&self.path)?,
                Source::Empty => schema::open_empty(&self.path)?,
                Source::Elsewhere => {
                    return Err(StoreError::Unported {
                        path: self.path.clone(),
                        operation: "a read of the SQLite readers",
                    });
                }
            },
        };
        let result = read(&connection).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        });
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
        result
    }
}

/// Journal rows matching `filter`, newest first (by reception time, then id).
pub(super) fn list(
    connection: &Connection,
    filter: &JournalFilter,
) -> rusqlite::Result<Vec<JournalSummary>> {
    search(connection, &JournalSearch::from(filter.clone()))
}

/// Below this many matching rows, a filter is read through its own index and sorted, rather
/// than by scanning the journal newest first (see [`sparse_index`]).
const SPARSE: i64 = 5_000;

/// A filter that has an index holding exactly (or a superset of) the rows it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IndexedFilter {
    /// MSH-9 `X` or `X^…`: both lie in [X, X_) (`^` is the character before `_`); the exact
    /// condition of the search drops the rest of that range (`XA`, `X ^`…).
    MessageType(String),
    /// The rejected rows (a partial index).
    Rejected,
    /// One channel (`journal_channel_received`, in reception order).
    Channel(String),
}

impl IndexedFilter {
    /// The filters of `search` that have an index, whatever their selectivity.
    fn of(search: &JournalSearch) -> Vec<IndexedFilter> {
        let mut filters = Vec::new();
        if let Some(prefix) = &search.message_type {
            filters.push(IndexedFilter::MessageType(prefix.clone()));
        }
        if search.status == Some(EntryStatus::Rejected) {
            filters.push(IndexedFilter::Rejected);
        }
        if let Some(channel) = &search.filter.channel {
            filters.push(IndexedFilter::Channel(channel.clone()));
        }
        filters
    }

    fn index(&self) -> &'static str {
        match self {
            IndexedFilter::MessageType(_) => "journal_type_time",
            IndexedFilter::Rejected => "journal_rejected",
            IndexedFilter::Channel(_) => "journal_channel_received",
        }
    }

    /// The condition in terms the index serves, its values appended to `values` (each
    /// parameter is numbered by its place there).
    fn condition(&self, values: &mut Vec<rusqlite::types::Value>) -> String {
        use rusqlite::types::Value;
        let mut bind = |value: String| {
            values.push(Value::Text(value));
            values.len()
        };
        match self {
            IndexedFilter::MessageType(prefix) => {
                let low = bind(prefix.clone());
                let high = bind(format!("{prefix}_"));
                format!("message_type >= ?{low} AND message_type < ?{high}")
            }
            // A partial index: its condition must appear literally for SQLite to use it.
            IndexedFilter::Rejected => "status = 'rejected'".to_owned(),
            IndexedFilter::Channel(channel) => format!("channel = ?{}", bind(channel.clone())),
        }
    }
}

/// The filter of `search` to read the journal by, through its index, when it keeps fewer
/// than [`SPARSE`] rows (the fewest of them); `None` when the newest-first scan is the fast
/// way (no such filter, or an MSH-10, which has its own index).
///
/// Why: the journal is read newest first through `journal_received_at` and stops after a
/// page. A filter that matches many rows fills the page after a few reads, but one that
/// matches a handful (a message type never received, the rejected rows of a clean week)
/// would read the whole journal. Counting a filter's rows up to [`SPARSE`] in its index reads
/// index entries only (a few milliseconds), and reading and sorting fewer than that is cheap.
fn sparse_filter(
    connection: &Connection,
    search: &JournalSearch,
    sparse_below: i64,
) -> rusqlite::Result<Option<IndexedFilter>> {
    if search.filter.control_id.is_some() {
        return Ok(None);
    }
    let mut fewest: Option<(i64, IndexedFilter)> = None;
    for filter in IndexedFilter::of(search) {
        let mut values = Vec::new();
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM journal INDEXED BY {} WHERE {} LIMIT {sparse_below})",
            filter.index(),
            filter.condition(&mut values)
        );
        let count: i64 = connection
            .prepare_cached(&sql)?
            .query_row(rusqlite::params_from_iter(values), |row| row.get(0))?;
        if count < sparse_below && fewest.as_ref().is_none_or(|(least, _)| count < *least) {
            fewest = Some((count, filter));
        }
    }
    Ok(fewest.map(|(_, filter)| filter))
}

/// Journal rows matching `search`, newest first (by reception time, then id).
pub(super) fn search(
    connection: &Connection,
    search: &JournalSearch,
) -> rusqlite::Result<Vec<JournalSummary>> {
    search_sparse_below(connection, search, SPARSE)
}

/// [`search`], a filter keeping fewer than `sparse_below` rows read through its index.
fn search_sparse_below(
    connection: &Connection,
    search: &JournalSearch,
    sparse_below: i64,
) -> rusqlite::Result<Vec<JournalSummary>> {
    let (sql, values) = statement(connection, search, sparse_below)?;
    let parsed = search.ipp.is_some() || search.nda.is_some();
    let limit = search.filter.limit;
    let mut statement = connection.prepare_cached(&sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(values))?;
    let mut summaries = Vec::new();
    while let Some(row) = rows.next()? {
        if limit > 0 && summaries.len() >= limit {
            break;
        }
        if parsed {
            let raw: Vec<u8> = row.get(SUMMARY_COLUMNS)?;
            if search
                .ipp
                .as_ref()
                .is_some_and(|ipp| !pid_3_holds(&raw, ipp))
                || search
                    .nda
                    .as_ref()
                    .is_some_and(|nda| !visit_number_is(&raw, nda))
            {
                continue;
            }
        }
        summaries.push(summary(row)?);
    }
    Ok(summaries)
}

/// The SQL of [`search_sparse_below`] and its values.
fn statement(
    connection: &Connection,
    search: &JournalSearch,
    sparse_below: i64,
) -> rusqlite::Result<(String, Vec<rusqlite::types::Value>)> {
    use rusqlite::types::Value;
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    // Each condition names its own parameter number, so their order does not matter.
    let bind = |values: &mut Vec<Value>, value: Value| {
        values.push(value);
        values.len()
    };
    // A sparse filter is read through its index (`INDEXED BY`); otherwise every filter's
    // column is written `+column`, which keeps SQLite from choosing its index and sorting
    // every match, and the newest-first scan serves the page.
    let sparse = sparse_filter(connection, search, sparse_below)?;
    let unindexed = if sparse.is_some() { "" } else { "+" };
    if let Some(sparse) = &sparse {
        conditions.push(sparse.condition(&mut values));
    }
    if let Some(control_id) = &search.filter.control_id {
        let n = bind(&mut values, Value::Text(control_id.clone()));
        conditions.push(format!("control_id = ?{n}"));
    }
    if let Some(channel) = &search.filter.channel {
        let n = bind(&mut values, Value::Text(channel.clone()));
        conditions.push(format!("{unindexed}channel = ?{n}"));
    }
    if let Some(since) = search.since {
        let n = bind(&mut values, Value::Integer(since.as_microsecond()));
        conditions.push(format!("received_at >= ?{n}"));
    }
    if let Some(until) = search.until {
        let n = bind(&mut values, Value::Integer(until.as_microsecond()));
        conditions.push(format!("received_at < ?{n}"));
    }
    if let Some(prefix) = &search.message_type {
        let whole = bind(&mut values, Value::Text(prefix.clone()));
        let with_caret = format!("{prefix}^");
        let length = i64::try_from(with_caret.chars().count()).unwrap_or(i64::MAX);
        let start = bind(&mut values, Value::Text(with_caret));
        let chars = bind(&mut values, Value::Integer(length));
        conditions.push(format!(
            "({unindexed}message_type = ?{whole} OR substr(message_type, 1, ?{chars}) = ?{start})"
        ));
    }
    if let Some(status) = search.status {
        let n = bind(&mut values, Value::Text(status.as_str().to_owned()));
        conditions.push(format!("{unindexed}status = ?{n}"));
    }
    // IPP and NDA: a cheap first cut on the bytes; the parse below decides.
    for needle in [&search.ipp, &search.nda, &search.text]
        .into_iter()
        .flatten()
    {
        let n = bind(&mut values, Value::Blob(needle.as_bytes().to_vec()));
        conditions.push(format!("instr(raw, ?{n}) > 0"));
    }
    if let Some(min_id) = search.min_id {
        let n = bind(&mut values, Value::Integer(min_id));
        conditions.push(format!("id > ?{n}"));
    }
    if let Some((at, id)) = search.after {
        let at = bind(&mut values, Value::Integer(at.as_microsecond()));
        let id = bind(&mut values, Value::Integer(id));
        conditions.push(format!(
            "(received_at < ?{at} OR (received_at = ?{at} AND id < ?{id}))"
        ));
    }
    let parsed = search.ipp.is_some() || search.nda.is_some();
    let mut sql = concat!("SELECT ", summary_columns!()).to_owned();
    if parsed {
        sql.push_str(", raw");
    }
    sql.push_str(" FROM journal");
    if let Some(sparse) = &sparse {
        sql.push_str(" INDEXED BY ");
        sql.push_str(sparse.index());
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY received_at DESC, id DESC");
    let limit = search.filter.limit;
    // Without an IPP or NDA every row SQL returns is kept: SQL applies the limit.
    if !parsed && limit > 0 {
        let n = bind(
            &mut values,
            Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        );
        sql.push_str(&format!(" LIMIT ?{n}"));
    }
    Ok((sql, values))
}

/// Whether an HL7 message has a PID segment with a PID-3 repetition whose first component
/// (CX-1) is `ipp`. Anything that does not parse as HL7 v2 does not match.
pub(crate) fn pid_3_holds(raw: &[u8], ipp: &str) -> bool {
    let Ok(message) = crate::hl7::Message::parse(raw) else {
        return false;
    };
    for occurrence in 1.. {
        if message.segment("PID", occurrence).is_none() {
            return false;
        }
        for repetition in 1.. {
            let Ok(path) =
                crate::hl7::Path::new("PID", occurrence, 3, Some(repetition), Some(1), None)
            else {
                return false;
            };
            match message.text(&path) {
                Some(value) if value.trim() == ipp => return true,
                Some(_) => {}
                None => break,
            }
        }
    }
    false
}

/// Whether an HL7 message's visit number (PV1-19, else PID-18; first component) is `nda`.
pub(crate) fn visit_number_is(raw: &[u8], nda: &str) -> bool {
    let Ok(message) = crate::hl7::Message::parse(raw) else {
        return false;
    };
    ["PV1-19.1", "PID-18.1"].iter().any(|path| {
        message
            .query(path)
            .ok()
            .flatten()
            .is_some_and(|value| value.trim() == nda)
    })
}

/// Rows of `channel` (the push endpoint's) still `accepted`, received before `before` and not
/// held: pushes that did not finish (the request failed after journaling, or its client went
/// away) and need an operator. Oldest first, at most `limit` (0: no limit).
///
/// `kept` (every row but the rejected ones) lets SQLite walk the duplicate index, whose first
/// column is the channel, instead of the whole journal.
pub(super) fn unsettled(
    connection: &Connection,
    channel: &str,
    before: jiff::Timestamp,
    limit: usize,
) -> rusqlite::Result<Vec<JournalSummary>> {
    let limit = match limit {
        0 => -1,
        limit => i64::try_from(limit).unwrap_or(i64::MAX),
    };
    let mut statement = connection.prepare_cached(UNSETTLED)?;
    let mut rows = statement.query(rusqlite::params![channel, before.as_microsecond(), limit])?;
    let mut summaries = Vec::new();
    while let Some(row) = rows.next()? {
        summaries.push(summary(row)?);
    }
    Ok(summaries)
}

const UNSETTLED: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM journal WHERE kept AND received_at < ?2 AND ",
    unsettled_push!(),
    " ORDER BY received_at, id LIMIT ?3"
);

/// Accepted (not yet processed) rows after `after_id` of every channel but the two in `skip`,
/// oldest first, with their raw bytes: the work list of the processor that feeds the census.
pub(super) fn accepted_after(
    connection: &Connection,
    after_id: i64,
    limit: usize,
    skip: [&str; 2],
) -> rusqlite::Result<Vec<Unprocessed>> {
    let mut statement = connection.prepare_cached(
        "SELECT id, channel, raw FROM journal WHERE status = 'accepted' AND id > ?1
         AND channel NOT IN (?3, ?4) ORDER BY id LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement.query_map(
        rusqlite::params![after_id, limit, skip[0], skip[1]],
        |row| {
            Ok(Unprocessed {
                id: row.get(0)?,
                channel: row.get(1)?,
                raw: row.get(2)?,
            })
        },
    )?;
    rows.collect()
}

/// Accepted rows after `after_id` outside the channels in `skip`: a range of the primary key
/// from the census's progress on, so it reads only the rows the census lags behind.
pub(super) fn census_backlog(
    connection: &Connection,
    after_id: i64,
    skip: [&str; 2],
) -> rusqlite::Result<u64> {
    connection
        .prepare_cached(
            "SELECT count(*) FROM journal WHERE id > ?1 AND status = 'accepted'
             AND channel NOT IN (?2, ?3)",
        )?
        .query_row(rusqlite::params![after_id, skip[0], skip[1]], |row| {
            row.get::<_, i64>(0)
        })
        .map(|count| u64::try_from(count).unwrap_or(0))
}

pub(super) fn entry(connection: &Connection, id: i64) -> rusqlite::Result<Option<JournalEntry>> {
    let mut statement = connection.prepare_cached(ENTRY)?;
    let mut rows = statement.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(JournalEntry {
        summary: summary(row)?,
        raw: row.get(SUMMARY_COLUMNS)?,
        content_hash: row.get(SUMMARY_COLUMNS + 1)?,
        duplicate_count: row.get(SUMMARY_COLUMNS + 2)?,
        last_seen_at: timestamp(row, SUMMARY_COLUMNS + 3)?,
    }))
}

fn summary(row: &Row<'_>) -> rusqlite::Result<JournalSummary> {
    Ok(JournalSummary {
        id: row.get(0)?,
        received_at: timestamp(row, 1)?,
        channel: row.get(2)?,
        message_type: row.get(3)?,
        control_id: row.get(4)?,
        status: row.get(5)?,
        reason: row.get(6)?,
        peer: row.get(7)?,
        sender: row.get(8)?,
        note: row.get(9)?,
    })
}

/// Reads a unix-microseconds column; a value outside jiff's range is a conversion error.
fn timestamp(row: &Row<'_>, column: usize) -> rusqlite::Result<jiff::Timestamp> {
    let micros: i64 = row.get(column)?;
    jiff::Timestamp::from_microsecond(micros).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(column, Type::Integer, error.into())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{RecordStatus, Store, StoreOptions, tests::record};
    use super::*;
    use rstest::rstest;

    fn filter(control_id: Option<&str>, channel: Option<&str>, limit: usize) -> JournalFilter {
        JournalFilter {
            control_id: control_id.map(str::to_owned),
            channel: channel.map(str::to_owned),
            limit,
        }
    }

    #[rstest]
    #[case::ok_all(filter(None, None, 0), &[4, 3, 2, 1])]
    #[case::ok_limit(filter(None, None, 2), &[4, 3])]
    #[case::ok_control_id(filter(Some("A"), None, 10), &[3, 1])]
    #[case::ok_channel(filter(None, Some("lab-in"), 10), &[4, 2])]
    #[case::ok_both(filter(Some("A"), Some("lab-in"), 10), &[])]
    #[case::ok_both_match(filter(Some("B"), Some("lab-in"), 10), &[2])]
    #[tokio::test]
    async fn ok_list_filters(#[case] filter: JournalFilter, #[case] ids: &[i64]) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("j.sqlite"), StoreOptions::default()).unwrap();
        for (n, (control_id, channel)) in [
            ("A", "adt-in"),
            ("B", "lab-in"),
            ("A", "adt-in"),
            ("C", "lab-in"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut record = record(control_id, b"MSH|x");
            record.channel = channel.to_owned();
            record.raw = bytes::Bytes::from(format!("MSH|{n}"));
            record.received_at =
                jiff::Timestamp::from_second(1_700_000_000 + i64::try_from(n).unwrap()).unwrap();
            store.journal(record).await.unwrap();
        }
        let listed: Vec<i64> = store
            .list_journal(&filter)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(listed, ids);
        let listed: Vec<i64> = store
            .list_journal_async(filter)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(listed, ids);
    }

    /// Five rows, one per minute from 2023-11-14T22:13:20Z (ids 1 to 5).
    async fn searchable() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("j.sqlite"), StoreOptions::default()).unwrap();
        let rows: [(&str, &str, &str, RecordStatus); 5] = [
            // PID-3 holds 4711 (second repetition).
            (
                "ADT^A01^ADT_A01",
                "MSH|^~\\&|A|B|||20260101||ADT^A01^ADT_A01|1|P|2.5\rPID|1||999^^^X^NH~4711^^^CH^PI\r",
                "one",
                RecordStatus::Accepted,
            ),
            // 4711 only as a visit number: not a match for --ipp.
            (
                "ADT^A08",
                "MSH|^~\\&|A|B|||20260101||ADT^A08|2|P|2.5\rPID|1||1234^^^CH^PI\rPV1|1|I|||||||||||||||||4711\r",
                "two",
                RecordStatus::Accepted,
            ),
            (
                "ADTX^A01",
                "MSH|^~\\&|A|B|||20260101||ADTX^A01|3|P|2.5\rPID|1||4711^^^CH^PI\r",
                "three",
                RecordStatus::Rejected {
                    reason: "bad".to_owned(),
                },
            ),
            (
                "ORU^R01",
                "MSH|^~\\&|A|B|||20260101||ORU^R01|4|P|2.5\rPID|1||4711^^^CH^PI\r",
                "four",
                RecordStatus::Accepted,
            ),
            // Not HL7 v2 at all, but holds the bytes.
            ("ADT", "H|4711", "five", RecordStatus::Accepted),
        ];
        for (n, (message_type, raw, control_id, status)) in rows.into_iter().enumerate() {
            let mut record = record(control_id, b"");
            record.message_type = message_type.to_owned();
            record.raw = bytes::Bytes::from(raw.to_owned());
            record.status = status;
            record.received_at =
                jiff::Timestamp::from_second(1_700_000_000 + 60 * i64::try_from(n).unwrap())
                    .unwrap();
            store.journal(record).await.unwrap();
        }
        (dir, store)
    }

    fn at(text: &str) -> Option<jiff::Timestamp> {
        Some(text.parse().unwrap())
    }

    #[rstest]
    #[case::ok_everything(JournalSearch::default(), &[5, 4, 3, 2, 1])]
    #[case::ok_since_inclusive(
        JournalSearch { since: at("2023-11-14T22:15:20Z"), ..Default::default() },
        &[5, 4, 3]
    )]
    #[case::ok_until_exclusive(
        JournalSearch { until: at("2023-11-14T22:15:20Z"), ..Default::default() },
        &[2, 1]
    )]
    #[case::ok_range(
        JournalSearch {
            since: at("2023-11-14T22:14:20Z"),
            until: at("2023-11-14T22:16:20Z"),
            ..Default::default()
        },
        &[3, 2]
    )]
    #[case::ok_type_family(
        JournalSearch { message_type: Some("ADT".to_owned()), ..Default::default() },
        &[5, 2, 1]
    )]
    #[case::ok_type_event(
        JournalSearch { message_type: Some("ADT^A01".to_owned()), ..Default::default() },
        &[1]
    )]
    #[case::ok_type_underscore_is_not_a_wildcard(
        JournalSearch { message_type: Some("ADT^A01^ADT%".to_owned()), ..Default::default() },
        &[]
    )]
    #[case::ok_status(
        JournalSearch { status: Some(EntryStatus::Rejected), ..Default::default() },
        &[3]
    )]
    #[case::ok_ipp_in_pid_3_only(
        JournalSearch { ipp: Some("4711".to_owned()), ..Default::default() },
        &[4, 3, 1]
    )]
    #[case::ok_ipp_limit_counts_kept_rows(
        JournalSearch {
            ipp: Some("4711".to_owned()),
            filter: JournalFilter { limit: 2, ..Default::default() },
            ..Default::default()
        },
        &[4, 3]
    )]
    #[case::ok_ipp_and_type(
        JournalSearch {
            ipp: Some("4711".to_owned()),
            message_type: Some("ADT".to_owned()),
            ..Default::default()
        },
        &[1]
    )]
    #[case::ok_ipp_other_repetition(
        JournalSearch { ipp: Some("999".to_owned()), ..Default::default() },
        &[1]
    )]
    #[case::ok_ipp_partial_value_is_no_match(
        JournalSearch { ipp: Some("471".to_owned()), ..Default::default() },
        &[]
    )]
    #[case::ok_limit_without_ipp(
        JournalSearch {
            status: Some(EntryStatus::Accepted),
            filter: JournalFilter { limit: 3, ..Default::default() },
            ..Default::default()
        },
        &[5, 4, 2]
    )]
    #[case::ok_nda_in_pv1_19(
        JournalSearch { nda: Some("4711".to_owned()), ..Default::default() },
        &[2]
    )]
    #[case::ok_text_in_raw(
        JournalSearch { text: Some("ORU^R01".to_owned()), ..Default::default() },
        &[4]
    )]
    #[case::ok_min_id_bounds_the_scan(
        JournalSearch { text: Some("4711".to_owned()), min_id: Some(3), ..Default::default() },
        &[5, 4]
    )]
    #[case::ok_page_after(
        JournalSearch { after: at("2023-11-14T22:15:20Z").map(|t| (t, 3)), ..Default::default() },
        &[2, 1]
    )]
    #[tokio::test]
    async fn ok_search_filters(#[case] mut search: JournalSearch, #[case] ids: &[i64]) {
        if search.filter == JournalFilter::default() {
            search.filter.limit = 0;
        }
        let (dir, store) = searchable().await;
        let listed: Vec<i64> = store
            .search_journal(&search)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(listed, ids);
        // The same rows whether the filters are read through their own index (each keeps
        // fewer than 6 rows here) or by the newest-first scan.
        let reader = schema::open_reader(&dir.path().join("j.sqlite")).unwrap();
        for sparse_below in [0, 6] {
            let listed: Vec<i64> = search_sparse_below(&reader, &search, sparse_below)
                .unwrap()
                .iter()
                .map(|s| s.id)
                .collect();
            assert_eq!(listed, ids, "sparse below {sparse_below}");
        }
    }

    /// The plan of a search: a filter that keeps few rows is read through its index, one
    /// that keeps many by the newest-first scan (which stops after a page).
    #[rstest]
    #[case::ok_rare_type_by_its_index(
        JournalSearch { message_type: Some("ORM".to_owned()), ..Default::default() },
        "journal_type_time"
    )]
    #[case::ok_common_type_newest_first(
        JournalSearch { message_type: Some("ADT".to_owned()), ..Default::default() },
        "journal_received_at"
    )]
    #[case::ok_rejected_by_its_index(
        JournalSearch { status: Some(EntryStatus::Rejected), ..Default::default() },
        "journal_rejected"
    )]
    #[case::ok_rare_channel_by_its_index(
        JournalSearch {
            filter: JournalFilter { channel: Some("rare".to_owned()), ..Default::default() },
            ..Default::default()
        },
        "journal_channel_received"
    )]
    #[case::ok_fewest_of_two_filters(
        JournalSearch {
            message_type: Some("ORU".to_owned()),
            status: Some(EntryStatus::Rejected),
            ..Default::default()
        },
        "journal_type_time"
    )]
    #[tokio::test]
    async fn ok_search_plan_by_selectivity(#[case] search: JournalSearch, #[case] index: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        // 20 ADT rows (two rejected), 1 ORU; "few" is below 5 here.
        let mut records = Vec::new();
        for n in 0..21 {
            let (channel, message_type) = if n == 20 {
                ("rare", "ORU^R01")
            } else {
                ("adt", "ADT^A01")
            };
            let mut record = record(&format!("c{n}"), b"");
            record.channel = channel.to_owned();
            record.message_type = message_type.to_owned();
            if n == 3 || n == 4 {
                record.status = RecordStatus::Rejected {
                    reason: "bad".to_owned(),
                };
            }
            records.push(record);
        }
        for record in records {
            store.journal(record).await.unwrap();
        }
        let reader = schema::open_reader(&path).unwrap();
        let (sql, values) = statement(&reader, &search, 5).unwrap();
        let plan: Vec<String> = reader
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(rusqlite::params_from_iter(values), |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.first()
                .is_some_and(|step| step.contains(&format!("INDEX {index}"))),
            "{plan:?}"
        );
    }

    #[test]
    fn ok_time_range_uses_the_received_at_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let _writer = schema::open_writer(&path).unwrap();
        let reader = schema::open_reader(&path).unwrap();
        let plan: Vec<String> = reader
            .prepare(concat!(
                "EXPLAIN QUERY PLAN SELECT ",
                summary_columns!(),
                " FROM journal WHERE received_at >= ?1 AND received_at < ?2",
                " ORDER BY received_at DESC, id DESC LIMIT ?3"
            ))
            .unwrap()
            .query_map(rusqlite::params![0, 1, 2], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("journal_received_at")),
            "{plan:?}"
        );
    }

    #[test]
    fn ok_unsettled_pushes_walk_the_channel_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let _writer = schema::open_writer(&path).unwrap();
        let reader = schema::open_reader(&path).unwrap();
        let plan: Vec<String> = reader
            .prepare(&format!("EXPLAIN QUERY PLAN {UNSETTLED}"))
            .unwrap()
            .query_map(rusqlite::params!["posos-push", 0, 1], |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // By channel, through either index that starts with it (the duplicate index, or the
        // `(channel, received_at)` one of migration 12, which SQLite prefers): never a scan.
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX journal_duplicate")
                    || step.contains("USING INDEX journal_channel_received (channel=?")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn ok_unsettled_pushes_are_accepted_old_and_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("j.sqlite"), StoreOptions::default()).unwrap();
        let mut ids = Vec::new();
        // accepted old, accepted old (then held), accepted recent, processed old, other channel
        for (n, channel) in ["push", "push", "push", "push", "adt-in"]
            .into_iter()
            .enumerate()
        {
            let mut record = record(&format!("P{n}"), b"");
            record.channel = channel.to_owned();
            record.raw = bytes::Bytes::from(format!("{{\"n\": {n}}}"));
            let second = if n == 2 { 1_700_000_900 } else { 1_700_000_000 };
            record.received_at =
                jiff::Timestamp::from_second(second + i64::try_from(n).unwrap()).unwrap();
            ids.push(store.journal(record).await.unwrap().id());
        }
        store.mark_processed(vec![ids[3]]).await.unwrap();
        let db = rusqlite::Connection::open(dir.path().join("j.sqlite")).unwrap();
        db.execute(
            "INSERT INTO push_holds (journal_id, partner_id, held_at, release_at) VALUES (?1, 'X', 0, 0)",
            [ids[1]],
        )
        .unwrap();
        let before = jiff::Timestamp::from_second(1_700_000_600).unwrap();
        let listed: Vec<i64> = store
            .unfinished_pushes("push", before, 0)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(listed, [ids[0]]);
    }

    #[rstest]
    #[case::ok_first_repetition(b"MSH|^~\\&|A\rPID|1||42^^^CH^PI\r", "42", true)]
    #[case::ok_second_pid(b"MSH|^~\\&|A\rPID|1||1\rPID|2||42\r", "42", true)]
    #[case::ok_escaped_value(b"MSH|^~\\&|A\rPID|1||4\\T\\2\r", "4&2", true)]
    #[case::err_other_field(b"MSH|^~\\&|A\rPID|1|42|7\r", "42", false)]
    #[case::err_other_component(b"MSH|^~\\&|A\rPID|1||7^42\r", "42", false)]
    #[case::err_no_pid(b"MSH|^~\\&|A\rNK1|1||42\r", "42", false)]
    #[case::err_not_hl7(b"H|42", "42", false)]
    fn pid_3(#[case] raw: &[u8], #[case] ipp: &str, #[case] holds: bool) {
        assert_eq!(pid_3_holds(raw, ipp), holds);
    }

    #[tokio::test]
    async fn ok_entry_round_trips_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("j.sqlite"), StoreOptions::default()).unwrap();
        let sent = record("MSG00001", b"MSH|^~\\&|DPI|CHU\r\x0B\x1C");
        let id = store.journal(sent.clone()).await.unwrap().id();
        let entry = store.journal_entry_async(id).await.unwrap().unwrap();
        assert_eq!(entry.summary.id, id);
        assert_eq!(entry.summary.received_at, sent.received_at);
        assert_eq!(entry.summary.channel, "adt-in");
        assert_eq!(entry.summary.message_type, "ADT^A01");
        assert_eq!(entry.summary.control_id, "MSG00001");
        assert_eq!(entry.summary.status, "accepted");
        assert_eq!(entry.summary.reason, None);
        assert_eq!(entry.summary.note, None);
        assert_eq!(entry.summary.peer, "10.0.0.7:51234");
        assert_eq!(entry.summary.sender, "DPI^CHU");
        assert_eq!(entry.raw, sent.raw.to_vec());
        assert_eq!(
            entry.content_hash,
            <[u8; 32]>::from(sha2::Sha256::digest(&sent.raw))
        );
        assert_eq!(entry.duplicate_count, 0);
        assert_eq!(entry.last_seen_at, sent.received_at);
        assert_eq!(store.journal_entry(id + 1).unwrap(), None);
    }

    #[test]
    fn err_timestamp_out_of_range_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let writer = schema::open_writer(&path).unwrap();
        writer
            .execute_batch(
                "INSERT INTO journal (channel, received_at, peer, sender, message_type,
                 control_id, content_hash, raw, status, last_seen_at, kept)
                 VALUES ('c', 9223372036854775807, 'p', 's', 'ADT^A01', '1', zeroblob(32),
                 x'00', 'accepted', 0, 1)",
            )
            .unwrap();
        let readers = Readers::new(path.clone());
        let err = readers.with(|c| entry(c, 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("store `{}`: read failed", path.display())
        );
    }

    #[test]
    fn ok_pool_reuses_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let _writer = schema::open_writer(&path).unwrap();
        let readers = Readers::new(path);
        for _ in 0..10 {
            readers
                .with(|c| list(c, &JournalFilter::default()))
                .unwrap();
        }
        assert_eq!(readers.idle.lock().unwrap().len(), 1);
    }

    use sha2::Digest;
}

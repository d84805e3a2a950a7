//! The console's journal search and the dashboard's last message per channel on PostgreSQL
//! (as SQLite's `read::search` and `follow::last_received`, same rows in the same order).
//!
//! # The plan
//!
//! SQLite needs `read::sparse_filter` to choose between the newest-first scan and a filter's
//! own index; PostgreSQL's planner makes that choice from its statistics, given the same
//! indexes (schema script 6): `journal_type_time` (MSH-9 in byte order, so `X^…` is the
//! range `[X^, X_)`, as SQLite's prefix), `journal_rejected` (partial: the status is written as a literal so
//! the planner can prove it), `journal_channel_received`, and `journal_received_at` for the
//! newest-first scan and time ranges.
//!
//! # Text, IPP and NDA
//!
//! The raw message is `bytea`: the first cut is `position(needle IN raw)` on the bytes, as
//! SQLite's `instr` on the blob (no trigram index: the console bounds such a search to the
//! newest rows with `min_id`, or to a time range). The IPP and NDA are then confirmed by
//! parsing each candidate here, and the limit counts the rows kept: candidates are read
//! through a portal, [`FETCH`] rows at a time, so a search that finds its page early reads
//! no further.

use std::collections::BTreeMap;

use tokio_postgres::types::ToSql;

use super::{Params, Postgres, journal};
use crate::store::read::{pid_3_holds, visit_number_is};
use crate::store::{JournalSearch, JournalSummary, StoreError};

/// Candidate rows read per round trip when the IPP or NDA is confirmed by parsing.
const FETCH: i32 = 256;

/// Each channel's last message: one probe of `journal_channel_received` per channel.
const LAST_RECEIVED_SQL: &str = "SELECT c.channel,
        (SELECT max(j.received_at) FROM journal j WHERE j.channel = c.channel)
    FROM unnest($1::text[]) AS c(channel)";

/// A statement's conditions and their values.
#[derive(Default)]
struct Statement {
    conditions: Vec<String>,
    values: Params,
}

impl Statement {
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> usize {
        self.values.bind(value)
    }
}

/// The SQL of `search` and its values; `parsed` when the raw bytes are read to confirm an
/// IPP or NDA (then SQL has no limit: the caller counts the rows it keeps).
fn statement(search: &JournalSearch) -> (String, Statement, bool) {
    let mut s = Statement::default();
    if let Some(control_id) = &search.filter.control_id {
        let n = s.bind(control_id.clone());
        s.conditions.push(format!("control_id = ${n}::text"));
    }
    if let Some(channel) = &search.filter.channel {
        let n = s.bind(channel.clone());
        s.conditions.push(format!("channel = ${n}::text"));
    }
    if let Some(since) = search.since {
        let n = s.bind(since.as_microsecond());
        s.conditions.push(format!("received_at >= ${n}::bigint"));
    }
    if let Some(until) = search.until {
        let n = s.bind(until.as_microsecond());
        s.conditions.push(format!("received_at < ${n}::bigint"));
    }
    if let Some(prefix) = &search.message_type {
        // `X`, or `X^…`: exactly the range [X^, X_) in byte order (`^` is the byte before
        // `_`). Two index ranges the planner estimates from its statistics (a function such
        // as `starts_with` it could not, and it then chose to sort a common type's rows).
        let whole = s.bind(prefix.clone());
        let start = s.bind(format!("{prefix}^"));
        let high = s.bind(format!("{prefix}_"));
        s.conditions.push(format!(
            "(message_type COLLATE \"C\" = ${whole}::text \
             OR (message_type COLLATE \"C\" >= ${start}::text \
                 AND message_type COLLATE \"C\" < ${high}::text))"
        ));
    }
    if let Some(status) = search.status {
        // A literal (one of three fixed words), so a partial index on it can be proven.
        s.conditions.push(format!("status = '{}'", status.as_str()));
    }
    for needle in [&search.ipp, &search.nda, &search.text]
        .into_iter()
        .flatten()
    {
        let n = s.bind(needle.as_bytes().to_vec());
        s.conditions
            .push(format!("position(${n}::bytea IN raw) > 0"));
    }
    if let Some(min_id) = search.min_id {
        let n = s.bind(min_id);
        s.conditions.push(format!("id > ${n}::bigint"));
    }
    if let Some((at, id)) = search.after {
        let at = s.bind(at.as_microsecond());
        let id = s.bind(id);
        s.conditions.push(format!(
            "(received_at < ${at}::bigint OR (received_at = ${at}::bigint AND id < ${id}::bigint))"
        ));
    }
    let parsed = search.ipp.is_some() || search.nda.is_some();
    let mut sql = format!("SELECT {}", journal::SUMMARY_COLUMNS_SQL);
    if parsed {
        sql.push_str(", raw");
    }
    sql.push_str(" FROM journal");
    if !s.conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&s.conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY received_at DESC, id DESC");
    let limit = search.filter.limit;
    if !parsed && limit > 0 {
        let n = s.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        sql.push_str(&format!(" LIMIT ${n}::bigint"));
    }
    (sql, s, parsed)
}

/// Whether a candidate's bytes confirm the IPP and NDA of `search`.
fn confirmed(search: &JournalSearch, raw: &[u8]) -> bool {
    search.ipp.as_ref().is_none_or(|ipp| pid_3_holds(raw, ipp))
        && search
            .nda
            .as_ref()
            .is_none_or(|nda| visit_number_is(raw, nda))
}

impl Postgres {
    /// [`Store::search_journal`](crate::store::Store::search_journal) (blocking).
    pub(in crate::store) fn search_journal(
        &self,
        search: &JournalSearch,
    ) -> Result<Vec<JournalSummary>, StoreError> {
        let search = search.clone();
        self.block(move |inner| async move {
            const OPERATION: &str = "search_journal";
            let failed = inner.failed(OPERATION);
            let (sql, statement, parsed) = statement(&search);
            let mut connection = inner.connection(OPERATION).await?;
            if !parsed {
                let rows = connection
                    .query(&sql, &statement.values.refs())
                    .await
                    .map_err(&failed)?;
                return rows
                    .iter()
                    .map(|row| journal::summary(&inner, OPERATION, row))
                    .collect();
            }
            // A portal lives in a transaction: read-only, its rows fetched a batch at a time.
            let transaction = connection
                .build_transaction()
                .read_only(true)
                .start()
                .await
                .map_err(&failed)?;
            let portal = transaction
                .bind(sql.as_str(), &statement.values.refs())
                .await
                .map_err(&failed)?;
            let limit = search.filter.limit;
            let mut kept = Vec::new();
            'fetch: loop {
                let rows = transaction
                    .query_portal(&portal, FETCH)
                    .await
                    .map_err(&failed)?;
                for row in &rows {
                    if limit > 0 && kept.len() >= limit {
                        break 'fetch;
                    }
                    let raw: &[u8] = row.get(journal::SUMMARY_COLUMNS);
                    if confirmed(&search, raw) {
                        kept.push(journal::summary(&inner, OPERATION, row)?);
                    }
                }
                if rows.len() < usize::try_from(FETCH).unwrap_or(usize::MAX) {
                    break;
                }
            }
            transaction.commit().await.map_err(&failed)?;
            Ok(kept)
        })
    }

    /// [`Store::last_received`](crate::store::Store::last_received).
    pub(in crate::store) async fn last_received(
        &self,
        channels: Vec<String>,
    ) -> Result<BTreeMap<String, jiff::Timestamp>, StoreError> {
        self.run(move |inner| async move {
            const OPERATION: &str = "last_received";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(LAST_RECEIVED_SQL, &[&channels])
                .await
                .map_err(inner.failed(OPERATION))?;
            let mut found = BTreeMap::new();
            for row in &rows {
                let last: Option<i64> = row.get(1);
                if let Some(micros) = last {
                    found.insert(row.get(0), inner.timestamp(OPERATION, micros)?);
                }
            }
            Ok(found)
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{EntryStatus, JournalFilter};

    /// The statement pins the forms the indexes are chosen by.
    #[test]
    fn ok_statement_of_every_filter() {
        let search = JournalSearch {
            filter: JournalFilter {
                control_id: Some("C1".into()),
                channel: Some("adt-in".into()),
                limit: 51,
            },
            since: Some(jiff::Timestamp::from_second(10).unwrap()),
            until: Some(jiff::Timestamp::from_second(20).unwrap()),
            message_type: Some("ADT".into()),
            status: Some(EntryStatus::Rejected),
            text: Some("Martin".into()),
            min_id: Some(7),
            after: Some((jiff::Timestamp::from_second(15).unwrap(), 9)),
            ..JournalSearch::default()
        };
        let (sql, statement, parsed) = statement(&search);
        assert!(!parsed);
        assert_eq!(statement.values.len(), 12);
        assert!(
            sql.contains(
                "(message_type COLLATE \"C\" = $5::text OR (message_type COLLATE \"C\" >= \
                 $6::text AND message_type COLLATE \"C\" < $7::text))"
            ),
            "{sql}"
        );
        assert!(sql.contains("status = 'rejected'"), "{sql}");
        assert!(sql.contains("position($8::bytea IN raw) > 0"), "{sql}");
        assert!(
            sql.ends_with("ORDER BY received_at DESC, id DESC LIMIT $12::bigint"),
            "{sql}"
        );
    }

    #[test]
    fn ok_ipp_reads_the_bytes_without_a_sql_limit() {
        let search = JournalSearch {
            ipp: Some("4711".into()),
            filter: JournalFilter {
                limit: 2,
                ..JournalFilter::default()
            },
            ..JournalSearch::default()
        };
        let (sql, _, parsed) = statement(&search);
        assert!(parsed);
        assert!(sql.contains(", raw FROM journal"), "{sql}");
        assert!(!sql.contains("LIMIT"), "{sql}");
    }
}

//! What the launch page follows: the pushed bundle of a launch (found by the patient id it
//! carries and the time it came) and its fate: journal row, hold, outbound messages.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension};

use super::queue::micros_to_timestamp;
use super::{EntryStatus, LineageRow, Store, StoreError};

/// Push journal rows received at or after `?1` whose bytes contain `?3` (the patient id) and
/// `?4` (the bundle id) when given: by the `received_at` index, so only the rows since the
/// launch are looked at.
const NAMING_SQL: &str = "SELECT id, raw FROM journal
    WHERE received_at >= ?1 AND channel = ?2 AND instr(raw, ?3) > 0
      AND (?4 IS NULL OR instr(raw, ?4) > 0)
    ORDER BY id LIMIT ?5";

const ROW_SQL: &str = "SELECT received_at, status FROM journal WHERE id = ?1";

const HOLD_SQL: &str =
    "SELECT held_at, release_at, released_at FROM push_holds WHERE journal_id = ?1";

/// A journal row of a pushed bundle, as the launch page needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFate {
    pub received_at: Timestamp,
    pub status: EntryStatus,
    /// `(held_at, release_at, released_at)` when the bundle was held.
    pub hold: Option<(Timestamp, Timestamp, Option<Timestamp>)>,
    /// Its outbound messages, oldest first.
    pub messages: Vec<LineageRow>,
}

fn fate(connection: &Connection, journal_id: i64) -> rusqlite::Result<Option<PushFate>> {
    let row = connection
        .prepare_cached(ROW_SQL)?
        .query_row([journal_id], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })
        .optional()?;
    let Some((received_at, status)) = row else {
        return Ok(None);
    };
    let status = EntryStatus::from_bytes(status.as_bytes()).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            "unknown journal status".into(),
        )
    })?;
    let hold = connection
        .prepare_cached(HOLD_SQL)?
        .query_row([journal_id], |row| {
            let released: Option<i64> = row.get(2)?;
            Ok((
                micros_to_timestamp(row.get(0)?, 0)?,
                micros_to_timestamp(row.get(1)?, 1)?,
                released.map(|m| micros_to_timestamp(m, 2)).transpose()?,
            ))
        })
        .optional()?;
    Ok(Some(PushFate {
        received_at: micros_to_timestamp(received_at, 0)?,
        status,
        hold,
        messages: super::audit::lineage(connection, journal_id)?,
    }))
}

const LAST_RECEIVED_SQL: &str = "SELECT max(received_at) FROM journal WHERE channel = ?1";

impl Store {
    /// When each of `channels` last journaled a message (absent: never, or pruned), by the
    /// `(channel, received_at)` index: one index probe per channel (blocking pool).
    pub async fn last_received(
        &self,
        channels: Vec<String>,
    ) -> Result<std::collections::BTreeMap<String, Timestamp>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.last_received(channels).await;
        }
        self.read_blocking(move |connection| {
            let mut statement = connection.prepare_cached(LAST_RECEIVED_SQL)?;
            let mut found = std::collections::BTreeMap::new();
            for channel in channels {
                let last: Option<i64> = statement.query_row([&channel], |row| row.get(0))?;
                if let Some(micros) = last {
                    found.insert(channel, micros_to_timestamp(micros, 0)?);
                }
            }
            Ok(found)
        })
        .await
    }

    /// Up to `limit` rows of `channel` received at or after `since` whose bytes contain
    /// `needle` (and `also`, when given), oldest first, with their bytes (blocking pool; on
    /// PostgreSQL, `postgres::follow`). The
    /// caller confirms each by reading it.
    pub async fn journal_naming(
        &self,
        channel: &'static str,
        since: Timestamp,
        needle: Vec<u8>,
        also: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if let Some(postgres) = self.postgres() {
            return postgres
                .journal_naming(channel, since.as_microsecond(), needle, also, limit)
                .await;
        }
        self.read_blocking(move |connection| {
            let mut statement = connection.prepare_cached(NAMING_SQL)?;
            let rows = statement.query_map(
                rusqlite::params![since.as_microsecond(), channel, needle, also, limit],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            rows.collect()
        })
        .await
    }

    /// What became of the pushed bundle of journal row `journal_id`; `None` once pruned
    /// (blocking pool).
    pub async fn push_fate(&self, journal_id: i64) -> Result<Option<PushFate>, StoreError> {
        if let Some(postgres) = self.postgres() {
            return postgres.push_fate(journal_id).await;
        }
        self.read_blocking(move |connection| fate(connection, journal_id))
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{InboundRecord, OutboundItem, RecordStatus, StoreOptions};
    use super::*;

    fn push(raw: &str, control_id: &str, at: Timestamp) -> InboundRecord {
        InboundRecord {
            channel: "posos-push".into(),
            received_at: at,
            peer: "127.0.0.1:1".into(),
            sender: "posos".into(),
            message_type: "FHIR Bundle".into(),
            control_id: control_id.into(),
            raw: raw.as_bytes().to_vec().into(),
            status: RecordStatus::Accepted,
        }
    }

    #[tokio::test]
    async fn ok_naming_then_fate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("f.sqlite"), StoreOptions::default()).unwrap();
        let before: Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
        let launch: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let after: Timestamp = "2026-12-01T10:00:05Z".parse().unwrap();
        store
            .journal(push(r#"{"id":"B0","p":"IPP7"}"#, "G0", before))
            .await
            .unwrap();
        let other = store
            .journal(push(r#"{"id":"B1","p":"IPP8"}"#, "G1", after))
            .await
            .unwrap()
            .id();
        let mine = store
            .journal(push(r#"{"id":"B2","p":"IPP7"}"#, "G2", after))
            .await
            .unwrap()
            .id();
        let found = store
            .journal_naming("posos-push", launch, b"IPP7".to_vec(), None, 10)
            .await
            .unwrap();
        assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), [mine]);
        let by_bundle = store
            .journal_naming(
                "posos-push",
                launch,
                b"IPP".to_vec(),
                Some(b"B1".to_vec()),
                10,
            )
            .await
            .unwrap();
        assert_eq!(by_bundle.iter().map(|f| f.0).collect::<Vec<_>>(), [other]);

        let fate = store.push_fate(mine).await.unwrap().unwrap();
        assert_eq!(fate.status, EntryStatus::Accepted);
        assert_eq!(fate.hold, None);
        assert!(fate.messages.is_empty());
        store
            .deliver_bundle(
                mine,
                vec![OutboundItem {
                    destination: "ehr".into(),
                    control_id: "OB1-1".into(),
                    payload: b"MSH|^~\\&|".to_vec().into(),
                    source: format!("journal:{mine}"),
                }],
                None,
            )
            .await
            .unwrap();
        let fate = store.push_fate(mine).await.unwrap().unwrap();
        assert_eq!(fate.status, EntryStatus::Processed);
        assert_eq!(fate.messages.len(), 1);
        assert!(store.push_fate(9999).await.unwrap().is_none());
        let last = store
            .last_received(vec!["posos-push".into(), "adt-in".into()])
            .await
            .unwrap();
        assert_eq!(last.get("posos-push"), Some(&after));
        assert_eq!(last.get("adt-in"), None);
    }
}

//! The PostgreSQL schema: versioned migrations recorded in their own table.
//!
//! `ordobridge_schema` holds one row per applied script. Each script runs in one transaction
//! with its row, under a transaction advisory lock, so two nodes starting together migrate
//! once; a database with a version beyond [`MIGRATIONS`] (written by a newer build) is refused
//! before anything is written. Append only: a released script is never edited.
//!
//! Columns mirror SQLite's (times in unix microseconds, bytes as `bytea`), so a site's rows
//! copy over as they are.

use super::Inner;
use crate::store::StoreError;

/// The advisory lock key of migrations (any constant; `ordobridge` in ASCII, cut to 63 bits).
const MIGRATION_LOCK: i64 = 0x6f72_646f_6272_6964;

/// The schema, one script per version: index 0 takes an empty database to version 1.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the journal and the outbound queue (SQLite versions 1, 3, 5, 6 and 9 in one).
    // `xid`: the transaction that inserted the row, for the census processor's work list.
    "CREATE TABLE journal (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        channel text NOT NULL,
        received_at bigint NOT NULL,
        peer text NOT NULL,
        sender text NOT NULL,
        message_type text NOT NULL,
        control_id text NOT NULL,
        content_hash bytea NOT NULL CHECK (octet_length(content_hash) = 32),
        raw bytea NOT NULL,
        status text NOT NULL CHECK (status IN ('accepted', 'rejected', 'processed')),
        reason text,
        duplicate_count bigint NOT NULL DEFAULT 0,
        last_seen_at bigint NOT NULL,
        kept boolean NOT NULL CHECK (kept = (status <> 'rejected')),
        note text,
        xid xid8 NOT NULL DEFAULT pg_current_xact_id()
    );
    -- Duplicate detection: rejected rows never take part, so a fixed resend goes through.
    CREATE UNIQUE INDEX journal_duplicate
        ON journal (channel, sender, control_id, content_hash) WHERE kept;
    CREATE INDEX journal_control_id ON journal (control_id);
    CREATE INDEX journal_received_at ON journal (received_at);
    -- The census processor's work list: accepted rows only (few), by id.
    CREATE INDEX journal_accepted ON journal (id) WHERE status = 'accepted';
    CREATE TABLE outbound (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        destination text NOT NULL,
        enqueued_at bigint NOT NULL,
        control_id text NOT NULL,
        payload bytea NOT NULL,
        source text NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at bigint NOT NULL,
        last_error text,
        delivered_at bigint,
        ack bytea,
        dead_at bigint
    );
    CREATE INDEX outbound_pending ON outbound (destination, id) WHERE status = 'pending';
    CREATE INDEX outbound_dead ON outbound (destination, id) WHERE status = 'dead';
    CREATE INDEX outbound_source ON outbound (source);",
    // 2: who delivers each destination (see `ownership`): a lease on the server's clock,
    // renewed by its node; `epoch` counts the owners, so a late renewal of a lease taken over
    // fails.
    "CREATE TABLE destination_owners (
        destination text PRIMARY KEY,
        node text NOT NULL,
        epoch bigint NOT NULL,
        expires_at bigint NOT NULL,
        renewed_at bigint NOT NULL
    );",
    // 3: the console's audit trail (SQLite version 9); `user` is a keyword here.
    "CREATE TABLE audit (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at bigint NOT NULL,
        \"user\" text NOT NULL,
        action text NOT NULL,
        target text NOT NULL,
        reason text NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);",
    // Script 6 in the merged order (issue 14's console and retention; SQLite versions 10, 11
    // and 12): the console's searches by a filter few rows match, read through its own index
    // (a message type by its MSH-9, in byte order as SQLite compares; the rejected rows; one
    // channel, also each channel's last message for the dashboard); the retention each channel
    // with one of its own had at the last prune (`prune::remember`; NULL: forever); the
    // destinations paused from the console (a pause survives a restart).
    "CREATE INDEX journal_type_time ON journal (message_type COLLATE \"C\", received_at);
    CREATE INDEX journal_rejected ON journal (received_at) WHERE status = 'rejected';
    CREATE INDEX journal_channel_received ON journal (channel, received_at);
    CREATE TABLE channel_retention (
        channel text PRIMARY KEY,
        retention_seconds bigint,
        recorded_at bigint NOT NULL
    );
    CREATE TABLE paused_destinations (
        destination text PRIMARY KEY,
        paused_at bigint NOT NULL,
        \"user\" text NOT NULL
    );",
];

/// Newest schema version this build knows.
pub(crate) fn supported_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Migrates the database to [`supported_version`] (`migrate`), or checks that it is there.
pub(super) async fn prepare(inner: &Inner, migrate: bool) -> Result<(), StoreError> {
    const OPERATION: &str = "migrate";
    let failed = inner.failed(OPERATION);
    let mut connection = inner.connection(OPERATION).await?;
    let supported = supported_version();
    if !migrate {
        let exists: bool = connection
            .query_one("SELECT to_regclass('ordobridge_schema') IS NOT NULL", &[])
            .await
            .map_err(&failed)?
            .get(0);
        let found = if exists {
            current(&connection).await.map_err(&failed)?
        } else {
            0
        };
        return check(inner, found, supported, true);
    }
    connection
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS ordobridge_schema (
                version integer PRIMARY KEY,
                applied_at bigint NOT NULL
            )",
        )
        .await
        .map_err(&failed)?;
    let transaction = connection.transaction().await.map_err(&failed)?;
    // Held until the commit: a second node starting now waits, then finds the work done.
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(&failed)?;
    let found = current(&transaction).await.map_err(&failed)?;
    check(inner, found, supported, false)?;
    for (index, script) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        transaction.batch_execute(script).await.map_err(|source| {
            StoreError::PostgresMigration {
                path: inner.path.clone(),
                version: i64::from(version),
                source: Box::new(source),
            }
        })?;
        transaction
            .execute(
                "INSERT INTO ordobridge_schema (version, applied_at) VALUES ($1, $2)",
                &[&version, &jiff::Timestamp::now().as_microsecond()],
            )
            .await
            .map_err(&failed)?;
    }
    transaction.commit().await.map_err(&failed)
}

async fn current(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM ordobridge_schema",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Refuses a newer schema, and an older one when only reading (listings never migrate).
fn check(inner: &Inner, found: i64, supported: i64, read_only: bool) -> Result<(), StoreError> {
    if found > supported || found < 0 {
        return Err(StoreError::SchemaVersion {
            path: inner.path.clone(),
            found,
            supported,
        });
    }
    if read_only && found < supported {
        return Err(StoreError::SchemaOutdated {
            path: inner.path.clone(),
            found,
            supported,
        });
    }
    Ok(())
}

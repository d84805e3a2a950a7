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
    // 4: the ADT census (SQLite versions 2 and 7; see `store::census`). Journal ids carry no
    // foreign key: the census outlives a pruned journal. Civil times are ISO 8601 text,
    // compared and sorted byte by byte (`COLLATE "C"`) as SQLite and the rules do.
    "CREATE TABLE census_patients (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ipp text NOT NULL UNIQUE,
        merged_into bigint REFERENCES census_patients (id),
        legal_family text,
        legal_given text,
        used_family text,
        used_given text,
        birth_date text,
        sex text,
        reliability text,
        -- Only for a validated identity (PID-32 = VALI).
        ins text,
        ins_oid text,
        -- Hash of the identity fields: an unchanged identity is not rewritten.
        identity_hash bigint,
        journal_id bigint NOT NULL,
        -- When a message last named the patient (unix µs, to the day): census retention.
        updated_at bigint
    );
    CREATE INDEX census_patients_ins ON census_patients (ins) WHERE ins IS NOT NULL;
    CREATE INDEX census_patients_merged ON census_patients (merged_into)
        WHERE merged_into IS NOT NULL;
    CREATE INDEX census_patients_updated ON census_patients (updated_at);
    CREATE TABLE census_identifiers (
        patient_id bigint NOT NULL REFERENCES census_patients (id),
        id_type text NOT NULL,
        authority text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (patient_id, id_type, authority, value)
    );
    CREATE TABLE census_practitioners (
        rpps text PRIMARY KEY,
        family text,
        given text,
        prefix text,
        journal_id bigint NOT NULL
    );
    CREATE TABLE census_encounters (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        nda text NOT NULL UNIQUE,
        patient_id bigint NOT NULL REFERENCES census_patients (id),
        status text NOT NULL,
        class text,
        unit text,
        -- Practitioners as JSON objects (id, family, given, prefix, rpps).
        attending text,
        admitting text,
        referring text,
        admit_at text COLLATE \"C\",
        discharge_at text COLLATE \"C\",
        last_movement_at text COLLATE \"C\",
        journal_id bigint NOT NULL
    );
    CREATE INDEX census_encounters_patient ON census_encounters (patient_id);
    CREATE INDEX census_encounters_discharged ON census_encounters (discharge_at)
        WHERE status = 'discharged';
    CREATE TABLE census_movements (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        movement_id text NOT NULL UNIQUE,
        encounter_id bigint NOT NULL REFERENCES census_encounters (id),
        event text NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'cancelled')),
        movement_at text COLLATE \"C\" NOT NULL,
        class text,
        unit text,
        attending text,
        admitting text,
        referring text,
        admit_at text COLLATE \"C\",
        discharge_at text COLLATE \"C\",
        journal_id bigint NOT NULL,
        updated_journal_id bigint,
        cancel_journal_id bigint
    );
    CREATE INDEX census_movements_encounter ON census_movements (encounter_id, movement_at);
    CREATE TABLE census_anomalies (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        journal_id bigint NOT NULL,
        patient_id bigint,
        kind text NOT NULL,
        text text NOT NULL
    );
    CREATE INDEX census_anomalies_patient ON census_anomalies (patient_id);",
    // 5 (issue 14, holds and documents): pushed bundles held until their patient is known
    // (SQLite version 4) and documents sent into the EHR with the outbound row of each
    // destination (SQLite version 8). No foreign keys, as on SQLite: the journal and the queue
    // are pruned on their own schedule.
    "CREATE TABLE push_holds (
        journal_id bigint PRIMARY KEY,
        partner_id text NOT NULL,
        held_at bigint NOT NULL,
        release_at bigint NOT NULL,
        released_at bigint,
        released_reason text CHECK (released_reason IN ('patient known', 'hold expired')),
        CHECK ((released_at IS NULL) = (released_reason IS NULL))
    );
    -- What is still held, by deadline; partial, so released rows (the bulk) cost nothing.
    CREATE INDEX push_holds_waiting ON push_holds (release_at) WHERE released_at IS NULL;
    CREATE TABLE documents (
        journal_id bigint PRIMARY KEY,
        transaction_id text NOT NULL UNIQUE,
        accepted_at bigint NOT NULL
    );
    CREATE INDEX documents_accepted_at ON documents (accepted_at);
    CREATE TABLE document_messages (
        journal_id bigint NOT NULL,
        outbound_id bigint NOT NULL,
        destination text NOT NULL,
        PRIMARY KEY (journal_id, outbound_id)
    );",
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

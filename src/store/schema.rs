//! Opening connections with the settings the commit-before-ACK invariant needs, and the
//! versioned migrations.
//!
//! Migrations are an ordered list of SQL scripts; `PRAGMA user_version` records how many have
//! been applied. Each script runs in its own transaction together with the version bump, so a
//! failed script leaves the database at the previous version. A file whose version is beyond
//! the list (written by a newer build) is refused before anything is written to it.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// How long a connection waits on a lock held by another connection before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one script per version: index 0 takes an empty file to version 1.
/// Append only: a released script is never edited.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the journal of inbound messages.
    "CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        peer TEXT NOT NULL,
        sender TEXT NOT NULL,
        message_type TEXT NOT NULL,
        control_id TEXT NOT NULL,
        content_hash BLOB NOT NULL CHECK (length(content_hash) = 32),
        raw BLOB NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected', 'processed')),
        reason TEXT,
        duplicate_count INTEGER NOT NULL DEFAULT 0,
        last_seen_at INTEGER NOT NULL
    );
    -- Duplicate detection: rejected rows never take part, so a fixed resend goes through.
    CREATE UNIQUE INDEX journal_duplicate
        ON journal (channel, sender, control_id, content_hash)
        WHERE status <> 'rejected';
    CREATE INDEX journal_control_id ON journal (control_id);
    CREATE INDEX journal_received_at ON journal (received_at);",
    // 2: the ADT census (see `store::census`). Journal ids carry no foreign key: the census
    // must outlive a pruned journal.
    "CREATE TABLE census_patients (
        id INTEGER PRIMARY KEY,
        ipp TEXT NOT NULL UNIQUE,
        merged_into INTEGER REFERENCES census_patients (id),
        legal_family TEXT,
        legal_given TEXT,
        used_family TEXT,
        used_given TEXT,
        birth_date TEXT,
        sex TEXT,
        reliability TEXT,
        -- Only for a validated identity (PID-32 = VALI).
        ins TEXT,
        ins_oid TEXT,
        -- Hash of the identity fields: an unchanged identity is not rewritten.
        identity_hash INTEGER,
        journal_id INTEGER NOT NULL
    );
    CREATE INDEX census_patients_ins ON census_patients (ins) WHERE ins IS NOT NULL;
    CREATE INDEX census_patients_merged ON census_patients (merged_into)
        WHERE merged_into IS NOT NULL;
    CREATE TABLE census_identifiers (
        patient_id INTEGER NOT NULL REFERENCES census_patients (id),
        id_type TEXT NOT NULL,
        authority TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (patient_id, id_type, authority, value)
    ) WITHOUT ROWID;
    CREATE TABLE census_practitioners (
        rpps TEXT PRIMARY KEY,
        family TEXT,
        given TEXT,
        prefix TEXT,
        journal_id INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE census_encounters (
        id INTEGER PRIMARY KEY,
        nda TEXT NOT NULL UNIQUE,
        patient_id INTEGER NOT NULL REFERENCES census_patients (id),
        status TEXT NOT NULL,
        class TEXT,
        unit TEXT,
        -- Practitioners as JSON objects (id, family, given, prefix, rpps).
        attending TEXT,
        admitting TEXT,
        referring TEXT,
        admit_at TEXT,
        discharge_at TEXT,
        last_movement_at TEXT,
        journal_id INTEGER NOT NULL
    );
    CREATE INDEX census_encounters_patient ON census_encounters (patient_id);
    CREATE TABLE census_movements (
        seq INTEGER PRIMARY KEY,
        movement_id TEXT NOT NULL UNIQUE,
        encounter_id INTEGER NOT NULL REFERENCES census_encounters (id),
        event TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'cancelled')),
        movement_at TEXT NOT NULL,
        class TEXT,
        unit TEXT,
        attending TEXT,
        admitting TEXT,
        referring TEXT,
        admit_at TEXT,
        discharge_at TEXT,
        journal_id INTEGER NOT NULL,
        updated_journal_id INTEGER,
        cancel_journal_id INTEGER
    );
    CREATE INDEX census_movements_encounter ON census_movements (encounter_id, movement_at);
    CREATE TABLE census_anomalies (
        id INTEGER PRIMARY KEY,
        journal_id INTEGER NOT NULL,
        patient_id INTEGER,
        kind TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX census_anomalies_patient ON census_anomalies (patient_id);",
    // 3: the outbound queue (see `queue`).
    "CREATE TABLE outbound (
        id INTEGER PRIMARY KEY,
        destination TEXT NOT NULL,
        enqueued_at INTEGER NOT NULL,
        control_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        delivered_at INTEGER,
        ack BLOB,
        dead_at INTEGER
    );
    -- The head of each destination (oldest pending by id), and the dead letters to list;
    -- partial, so delivered rows (the bulk) cost nothing here.
    CREATE INDEX outbound_pending ON outbound (destination, id) WHERE status = 'pending';
    CREATE INDEX outbound_dead ON outbound (destination, id) WHERE status = 'dead';",
    // 4: pushed bundles held until their patient is known (see `hold`). No foreign key to
    // the journal, like the census: a pruned journal must not block the table.
    "CREATE TABLE push_holds (
        journal_id INTEGER PRIMARY KEY,
        partner_id TEXT NOT NULL,
        held_at INTEGER NOT NULL,
        release_at INTEGER NOT NULL,
        released_at INTEGER,
        released_reason TEXT CHECK (released_reason IN ('patient known', 'hold expired')),
        CHECK ((released_at IS NULL) = (released_reason IS NULL))
    );
    -- What is still held, by deadline; partial, so released rows (the bulk) cost nothing.
    CREATE INDEX push_holds_waiting ON push_holds (release_at) WHERE released_at IS NULL;",
    // 5: the journal and the outbound queue rebuilt for speed, same rows and columns. Their
    // `status IN (…)` checks made SQLite build a temporary table at every insert and status
    // change; the duplicate index depended on `status`, so marking a row processed rewrote its
    // index entry. Now the checks compare with `=`, and the duplicate index filters on `kept`
    // (`status <> 'rejected'`, fixed at insert: a row is never rejected later).
    "CREATE TABLE journal_v5 (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        peer TEXT NOT NULL,
        sender TEXT NOT NULL,
        message_type TEXT NOT NULL,
        control_id TEXT NOT NULL,
        content_hash BLOB NOT NULL CHECK (length(content_hash) = 32),
        raw BLOB NOT NULL,
        status TEXT NOT NULL
            CHECK (status = 'accepted' OR status = 'rejected' OR status = 'processed'),
        reason TEXT,
        duplicate_count INTEGER NOT NULL DEFAULT 0,
        last_seen_at INTEGER NOT NULL,
        kept INTEGER NOT NULL CHECK (kept = (status <> 'rejected'))
    );
    INSERT INTO journal_v5 (id, channel, received_at, peer, sender, message_type, control_id,
        content_hash, raw, status, reason, duplicate_count, last_seen_at, kept)
        SELECT id, channel, received_at, peer, sender, message_type, control_id, content_hash,
            raw, status, reason, duplicate_count, last_seen_at, status <> 'rejected'
        FROM journal;
    DROP TABLE journal;
    ALTER TABLE journal_v5 RENAME TO journal;
    CREATE UNIQUE INDEX journal_duplicate
        ON journal (channel, sender, control_id, content_hash) WHERE kept;
    CREATE INDEX journal_control_id ON journal (control_id);
    CREATE INDEX journal_received_at ON journal (received_at);
    CREATE TABLE outbound_v5 (
        id INTEGER PRIMARY KEY,
        destination TEXT NOT NULL,
        enqueued_at INTEGER NOT NULL,
        control_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status = 'pending' OR status = 'delivered' OR status = 'dead'),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        delivered_at INTEGER,
        ack BLOB,
        dead_at INTEGER
    );
    INSERT INTO outbound_v5 SELECT * FROM outbound;
    DROP TABLE outbound;
    ALTER TABLE outbound_v5 RENAME TO outbound;
    CREATE INDEX outbound_pending ON outbound (destination, id) WHERE status = 'pending';
    CREATE INDEX outbound_dead ON outbound (destination, id) WHERE status = 'dead';",
    // 6: a note on a journal row the census could not use (no IPP of the configured authority,
    // a bad date, …): the row is `processed` and says why, with no patient value in it.
    "ALTER TABLE journal ADD COLUMN note TEXT;",
    // 7: census retention (see `prune`). `updated_at` (µs since 1970): when a message last
    // named the patient, kept to the day. A patient of an older store takes the time of its
    // journal row while that row is still there, else the migration's: it is kept a whole
    // retention from now. The pruner finds patients by it, and discharged encounters by
    // discharge time (a partial index: current admissions, the bulk of the work, cost nothing).
    "ALTER TABLE census_patients ADD COLUMN updated_at INTEGER;
    UPDATE census_patients SET updated_at = ifnull(
        (SELECT received_at FROM journal WHERE journal.id = census_patients.journal_id),
        CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
    CREATE INDEX census_patients_updated ON census_patients (updated_at);
    CREATE INDEX census_encounters_discharged ON census_encounters (discharge_at)
        WHERE status = 'discharged';",
    // 8: documents sent into the EHR (`$send-to-ehr`) and the outbound messages each became,
    // for `$tracking` (see `documents`). No foreign keys: the journal and the queue are pruned
    // on their own schedule; a tracked message that is gone reads as `unknown`.
    "CREATE TABLE documents (
        journal_id INTEGER PRIMARY KEY,
        transaction_id TEXT NOT NULL UNIQUE,
        accepted_at INTEGER NOT NULL
    );
    CREATE INDEX documents_accepted_at ON documents (accepted_at);
    CREATE TABLE document_messages (
        journal_id INTEGER NOT NULL,
        outbound_id INTEGER NOT NULL,
        destination TEXT NOT NULL,
        PRIMARY KEY (journal_id, outbound_id)
    ) WITHOUT ROWID;",
    // 9: the console's audit trail (who viewed a raw message or acted, when, on what, why),
    // and the outbound rows of a journal row (the console's lineage) found by index.
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE INDEX outbound_source ON outbound (source);",
    // 10: the console's searches by a filter few rows match (see `read::sparse_filter`):
    // a message type by its MSH-9, the rejected rows.
    "CREATE INDEX journal_type_time ON journal (message_type, received_at);
    CREATE INDEX journal_rejected ON journal (received_at) WHERE status = 'rejected';",
    // 11: the retention each channel with one of its own had at the last prune, so a channel
    // removed from the configuration keeps it (see `prune::remember`); NULL: forever.
    "CREATE TABLE channel_retention (
        channel TEXT PRIMARY KEY,
        retention_seconds INTEGER,
        recorded_at INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 12: destinations an operator paused from the console, so a pause survives a restart
    // (the row goes when the destination is resumed); each channel's last message time for
    // the dashboard, found by index (`max(received_at)` of one channel).
    "CREATE TABLE paused_destinations (
        destination TEXT PRIMARY KEY,
        paused_at INTEGER NOT NULL,
        user TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX journal_channel_received ON journal (channel, received_at);",
    // 13: how far the intake log (`intake_log`) was copied into the journal: its records up
    // to `applied_seq` are rows already, so a restart copies only those after it.
    "CREATE TABLE intake_log (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        applied_seq INTEGER NOT NULL
    );
    INSERT INTO intake_log (id, applied_seq) VALUES (1, 0);",
];

/// Prepared statements kept per connection: the census alone uses about 30.
const STATEMENT_CACHE: usize = 64;

/// Newest schema version this build knows.
pub(super) fn supported_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Opens the write connection: creates the parent folder and the file if missing, sets WAL,
/// `synchronous=FULL`, `foreign_keys=ON` and the busy timeout, then migrates.
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    create_parent(path)?;
    let mut connection = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    configure_writer(&connection, path)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    migrate(&mut connection, path)?;
    incremental_auto_vacuum(&connection, path)?;
    Ok(connection)
}

/// Puts the store in `auto_vacuum = INCREMENTAL`, so that pages freed by the pruner can be
/// given back to the file system (`PRAGMA incremental_vacuum`). A store created before this
/// setting is rewritten once by `VACUUM` (as long as copying the file; take a backup first).
fn incremental_auto_vacuum(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    /// `PRAGMA auto_vacuum` value of INCREMENTAL.
    const INCREMENTAL: i64 = 2;
    let setting = |setting, source| StoreError::Configure {
        path: path.to_path_buf(),
        setting,
        source,
    };
    let mode: i64 = connection
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .map_err(|source| setting("auto_vacuum", source))?;
    if mode != INCREMENTAL {
        connection
            .execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            .map_err(|source| setting("auto_vacuum=INCREMENTAL (VACUUM)", source))?;
    }
    Ok(())
}

/// Opens a read-only connection on an existing store (the writer created and migrated it).
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection =
        Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let setting = |setting, source| StoreError::Configure {
        path: path.to_path_buf(),
        setting,
        source,
    };
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|source| setting("busy_timeout", source))?;
    plan_once(&connection).map_err(|source| setting("SQLITE_DBCONFIG_ENABLE_QPSG", source))?;
    query_only(&connection, path)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

/// One plan per statement, whatever the values bound to it (`SQLITE_DBCONFIG_ENABLE_QPSG`),
/// on every connection, the writer's and the readers'.
///
/// Without it, SQLite compiles a cached statement again at every new binding whenever a bound
/// value could change its plan: any `LIMIT ?` (each page the delivery workers read ahead, the
/// census processor's reads, the console's lists), or a bound value compared with a partial
/// index's condition. That was 8 % of the writer's time under a 64-connection flood, and
/// 7 % of the CPU of a push at one client (the delivery worker's `pending_after`), all in
/// `sqlite3Reprepare`. No statement here needs a plan chosen by value: where a query must use a
/// partial index, its condition is written literally (`read::IndexedFilter::condition`), and
/// `column = ?` still implies a partial index's `column IS NOT NULL`.
fn plan_once(connection: &Connection) -> rusqlite::Result<()> {
    connection
        .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(drop)
}

/// Checks, on a connection of a store opened read-only, that its schema is the one this
/// build reads: a read-only open never migrates, so an older store is refused with what to do,
/// like a newer one.
pub(super) fn check_version(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let supported = supported_version();
    if found > supported || found < 0 {
        return Err(StoreError::SchemaVersion {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    if found < supported {
        return Err(StoreError::SchemaOutdated {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    Ok(())
}

/// The first connection of a store opened read-only, its schema checked; `true` when the file
/// is read as immutable.
///
/// A reader of a WAL store needs its `-shm` (created when missing): in a folder the reader
/// may not write, with no `-wal` beside the file (so no writer at work: a writer keeps one
/// while it runs), the file is read as immutable instead, without any lock or side file.
pub(super) fn open_listing(path: &Path) -> Result<(Connection, bool), StoreError> {
    let refused = |error: &StoreError| match error {
        StoreError::Open { source, .. }
        | StoreError::Read { source, .. }
        | StoreError::Configure { source, .. } => matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
        ),
        _ => false,
    };
    let attempt = open_reader(path).and_then(|connection| {
        check_version(&connection, path)?;
        Ok(connection)
    });
    match attempt {
        Ok(connection) => Ok((connection, false)),
        Err(error) if refused(&error) && !side_file(path, "-wal").exists() => {
            let connection = open_immutable(path)?;
            check_version(&connection, path)?;
            Ok((connection, true))
        }
        Err(error) => Err(error),
    }
}

/// `PATH-wal`, `PATH-shm`.
fn side_file(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// A read-only connection that takes the file as immutable (no locks, no `-shm`, no `-wal`):
/// only for a file no writer is at work on.
pub(super) fn open_immutable(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3F"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    let connection =
        Connection::open_with_flags(&uri, flags).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    plan_once(&connection).map_err(|source| StoreError::Configure {
        path: path.to_path_buf(),
        setting: "SQLITE_DBCONFIG_ENABLE_QPSG",
        source,
    })?;
    query_only(&connection, path)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

/// `PRAGMA query_only`: a reader's connection refuses any write, whatever the file allows.
fn query_only(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    connection
        .pragma_update(None, "query_only", true)
        .map_err(|source| StoreError::Configure {
            path: path.to_path_buf(),
            setting: "query_only=ON",
            source,
        })
}

/// A read-only connection on an empty in-memory database of the current schema: what a
/// read-only store whose file does not exist yet reads from.
pub(super) fn open_empty(path: &Path) -> Result<Connection, StoreError> {
    let open = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let connection = Connection::open_in_memory().map_err(open)?;
    for script in MIGRATIONS {
        connection.execute_batch(script).map_err(open)?;
    }
    query_only(&connection, path)?;
    Ok(connection)
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    let Some(folder) = path.parent() else {
        return Ok(());
    };
    if folder.as_os_str().is_empty() || folder.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(folder).map_err(|source| StoreError::CreateFolder {
        path: path.to_path_buf(),
        folder: folder.to_path_buf(),
        source,
    })
}

fn configure_writer(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let setting = |setting, source| StoreError::Configure {
        path: path.to_path_buf(),
        setting,
        source,
    };
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|source| setting("busy_timeout", source))?;
    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|source| setting("journal_mode=WAL", source))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // FULL: the WAL is fsynced at every commit, so a committed (and ACKed) message survives
    // a power cut, not only a process crash.
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(|source| setting("synchronous=FULL", source))?;
    connection
        .pragma_update(None, "foreign_keys", true)
        .map_err(|source| setting("foreign_keys=ON", source))?;
    // The savepoint around each census update keeps its undo pages in a sub-journal: in
    // memory, not in a temporary file written and read back by the kernel at every update
    // (it holds the pages one batch changes: a few MiB at most).
    connection
        .pragma_update(None, "temp_store", "MEMORY")
        .map_err(|source| setting("temp_store=MEMORY", source))?;
    plan_once(connection).map_err(|source| setting("SQLITE_DBCONFIG_ENABLE_QPSG", source))?;
    // A checkpoint every 4,000 WAL pages (16 MiB) rather than 1,000: it copies each changed
    // page once however many commits rewrote it (the journal's and its indexes' last leaves):
    // fewer, larger checkpoints copy fewer pages. `Store::open` then hands checkpoints to a
    // thread of their own (`store::checkpoint`); this is the setting of any other writer
    // connection.
    connection
        .pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(|source| setting("wal_autocheckpoint", source))?;
    Ok(())
}

/// `PRAGMA wal_autocheckpoint` of the writer (see `configure_writer`).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 4_000;

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let migration = |version, source| StoreError::Migration {
        path: path.to_path_buf(),
        version,
        source,
    };
    let found: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| migration(0, source))?;
    let supported = supported_version();
    if !(0..=supported).contains(&found) {
        return Err(StoreError::SchemaVersion {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    let pending = MIGRATIONS
        .iter()
        .zip(1_i64..)
        .skip_while(|(_, version)| *version <= found);
    for (script, version) in pending {
        apply(connection, script, version).map_err(|source| migration(version, source))?;
        tracing::info!(store = %path.display(), version, "store schema migrated");
    }
    Ok(())
}

/// One script and its version bump in one transaction (rolled back on drop if either fails).
fn apply(connection: &mut Connection, script: &str, version: i64) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    transaction.execute_batch(script)?;
    transaction.pragma_update(None, "user_version", version)?;
    transaction.commit()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn user_version(connection: &Connection) -> i64 {
        connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn ok_migrates_empty_file_and_sets_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/folder/store.sqlite");
        let connection = open_writer(&path).unwrap();
        assert_eq!(user_version(&connection), supported_version());
        let mode: String = connection
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let synchronous: i64 = connection
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(synchronous, 2, "synchronous=FULL");
        let foreign_keys: bool = connection
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert!(foreign_keys);
        let indexes: Vec<String> = connection
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'journal'
                 ORDER BY name",
            )
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            [
                "journal_channel_received",
                "journal_control_id",
                "journal_duplicate",
                "journal_received_at",
                "journal_rejected",
                "journal_type_time"
            ]
        );
    }

    /// A cached statement with a `LIMIT ?` is compiled once, not again at every new binding
    /// (`plan_once`), on the writer's and on a reader's connection, and the delivery workers'
    /// read still goes through its partial index.
    #[test]
    fn ok_statements_are_not_compiled_again_at_each_binding() {
        const PENDING: &str = "SELECT id FROM outbound
            WHERE destination = ?1 AND status = 'pending' AND id > ?2 ORDER BY id LIMIT ?3";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let writer = open_writer(&path).unwrap();
        let reader = open_reader(&path).unwrap();
        for (name, connection) in [("writer", &writer), ("reader", &reader)] {
            let mut statement = connection.prepare_cached(PENDING).unwrap();
            for (after, limit) in [(0, 64), (10, 64), (20, 16)] {
                let rows: Vec<i64> = statement
                    .query_map(rusqlite::params!["ehr", after, limit], |row| row.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert!(rows.is_empty());
            }
            assert_eq!(
                statement.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{name}: compiled again at a new binding"
            );
            let plan: String = connection
                .query_row(
                    &format!("EXPLAIN QUERY PLAN {PENDING}"),
                    rusqlite::params!["ehr", 0, 64],
                    |row| row.get(3),
                )
                .unwrap();
            assert!(plan.contains("outbound_pending"), "{name}: {plan}");
        }
    }

    #[test]
    fn ok_outbound_table_and_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let connection = open_writer(&dir.path().join("store.sqlite")).unwrap();
        let indexes: Vec<String> = connection
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbound'
                 ORDER BY name",
            )
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            ["outbound_dead", "outbound_pending", "outbound_source"]
        );
        let err = connection
            .execute_batch(
                "INSERT INTO outbound (destination, enqueued_at, control_id, payload, source,
                 status, next_attempt_at) VALUES ('ehr', 0, '1', x'00', '', 'lost', 0)",
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("CHECK constraint failed"), "{err}");
    }

    #[test]
    fn ok_push_holds_table_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let connection = open_writer(&dir.path().join("store.sqlite")).unwrap();
        let indexes: Vec<String> = connection
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'push_holds'
                 AND sql IS NOT NULL ORDER BY name",
            )
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes, ["push_holds_waiting"]);
        assert!(supported_version() >= 4);
    }

    /// A version-4 store keeps every journal and queue row through migration 5; `kept` is
    /// derived from the status, and duplicate detection still ignores rejected rows.
    #[test]
    fn ok_migration_5_keeps_rows_and_duplicate_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let mut old = Connection::open(&path).unwrap();
        for (script, version) in MIGRATIONS.iter().zip(1_i64..).take(4) {
            apply(&mut old, script, version).unwrap();
        }
        old.execute_batch(
            "INSERT INTO journal (channel, received_at, peer, sender, message_type, control_id,
                 content_hash, raw, status, reason, last_seen_at) VALUES
             ('c', 1, 'p', 's', 'ADT^A01', '1', zeroblob(32), x'01', 'processed', NULL, 1),
             ('c', 2, 'p', 's', 'ADT^A01', '2', zeroblob(32), x'02', 'rejected', 'bad', 2),
             ('c', 3, 'p', 's', 'ADT^A01', '3', zeroblob(32), x'03', 'accepted', NULL, 3);
             INSERT INTO outbound (destination, enqueued_at, control_id, payload, source, status,
                 next_attempt_at) VALUES ('ehr', 0, 'OB1', x'00', 'journal:1', 'pending', 0);",
        )
        .unwrap();
        drop(old);

        let connection = open_writer(&path).unwrap();
        assert_eq!(user_version(&connection), supported_version());
        let kept: Vec<(String, String, i64)> = connection
            .prepare("SELECT control_id, status, kept FROM journal ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            kept,
            [
                ("1".into(), "processed".into(), 1),
                ("2".into(), "rejected".into(), 0),
                ("3".into(), "accepted".into(), 1),
            ]
        );
        let queued: i64 = connection
            .query_row(
                "SELECT count(*) FROM outbound WHERE status = 'pending'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(queued, 1);
        let insert = "INSERT INTO journal (channel, received_at, peer, sender, message_type,
                control_id, content_hash, raw, status, last_seen_at, kept)
            VALUES ('c', 4, 'p', 's', 'ADT^A01', ?1, zeroblob(32), x'04', 'accepted', 4, 1)
            ON CONFLICT DO NOTHING";
        assert_eq!(connection.execute(insert, ["1"]).unwrap(), 0, "a duplicate");
        assert_eq!(
            connection.execute(insert, ["2"]).unwrap(),
            1,
            "a resend of a rejected message is new"
        );
        let err = connection
            .execute_batch(
                "INSERT INTO journal (channel, received_at, peer, sender, message_type,
                 control_id, content_hash, raw, status, last_seen_at, kept)
                 VALUES ('c', 5, 'p', 's', 'ADT^A01', '5', zeroblob(32), x'05', 'rejected', 5, 1)",
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("CHECK constraint failed"), "{err}");
    }

    /// A version-6 store: migration 7 dates each patient from its journal row while the row
    /// is there, else from the migration (kept a whole retention from now).
    #[test]
    fn ok_migration_7_dates_existing_patients() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let mut old = Connection::open(&path).unwrap();
        for (script, version) in MIGRATIONS.iter().zip(1_i64..).take(6) {
            apply(&mut old, script, version).unwrap();
        }
        old.execute_batch(
            "INSERT INTO journal (id, channel, received_at, peer, sender, message_type, control_id,
                 content_hash, raw, status, last_seen_at, kept)
             VALUES (5, 'c', 1234, 'p', 's', 'ADT^A28', '5', zeroblob(32), x'05', 'processed', 1234, 1);
             INSERT INTO census_patients (ipp, journal_id) VALUES ('JOURNALED', 5), ('PRUNED', 4);",
        )
        .unwrap();
        drop(old);
        let before = jiff::Timestamp::now().as_microsecond();
        let connection = open_writer(&path).unwrap();
        let dated: Vec<(String, i64)> = connection
            .prepare("SELECT ipp, updated_at FROM census_patients ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(dated[0], ("JOURNALED".to_owned(), 1234));
        assert_eq!(dated[1].0, "PRUNED");
        // julianday() keeps about a millisecond.
        assert!(
            (dated[1].1 - before).abs() < 60_000_000,
            "{dated:?} vs {before}"
        );
    }

    #[test]
    fn ok_reopen_does_not_reapply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let connection = open_writer(&path).unwrap();
        connection
            .execute_batch(
                "INSERT INTO journal (channel, received_at, peer, sender, message_type,
                 control_id, content_hash, raw, status, last_seen_at, kept)
                 VALUES ('c', 0, 'p', 's', 'ADT^A01', '1', zeroblob(32), x'00', 'accepted', 0, 1)",
            )
            .unwrap();
        drop(connection);
        // Re-running script 1 would fail (`table journal already exists`) or lose the row.
        let connection = open_writer(&path).unwrap();
        let rows: i64 = connection
            .query_row("SELECT count(*) FROM journal", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(user_version(&connection), supported_version());
    }

    #[rstest]
    #[case::err_newer(supported_version() + 1)]
    #[case::err_negative(-1)]
    fn err_unknown_schema_version_refused(#[case] version: i64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", version)
            .unwrap();
        let err = open_writer(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "store `{}` has schema version {version}, this build knows versions 0 to {}; \
                 was it written by a newer ordobridge?",
                path.display(),
                supported_version()
            )
        );
        // Nothing was applied.
        let connection = Connection::open(&path).unwrap();
        assert_eq!(user_version(&connection), version);
    }

    #[test]
    fn err_failed_migration_rolls_back_and_names_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        // A table in the way makes script 1 fail half-way.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE journal_x (a); CREATE INDEX journal_control_id ON journal_x (a);",
            )
            .unwrap();
        let err = open_writer(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "store `{}`: migration to schema version 1 failed",
                path.display()
            )
        );
        let connection = Connection::open(&path).unwrap();
        assert_eq!(user_version(&connection), 0);
        let journal: i64 = connection
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'journal'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(journal, 0, "the half-applied script was rolled back");
    }

    #[test]
    fn err_not_a_database_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = open_writer(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("store `{}`: cannot set `journal_mode=WAL`", path.display())
        );
    }

    #[test]
    fn err_folder_cannot_be_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"").unwrap();
        let path = file.join("store.sqlite");
        let err = open_writer(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot create folder `{}` for store `{}`",
                file.display(),
                path.display()
            )
        );
    }

    #[test]
    fn ok_reader_is_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let _writer = open_writer(&path).unwrap();
        let reader = open_reader(&path).unwrap();
        let err = reader
            .execute_batch("DELETE FROM journal")
            .unwrap_err()
            .to_string();
        assert!(err.contains("readonly"), "{err}");
    }
}

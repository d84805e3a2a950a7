//! `ordobridge migrate --from sqlite:PATH --to postgres:URL`: a site's store copied from its
//! SQLite file into PostgreSQL, to run several nodes (issue 14).
//!
//! - **What is copied**: every table of the SQLite store (journal, census, outbound queues,
//!   holds, documents, audit trail, retention memory, pauses), column by column into the
//!   PostgreSQL table of the same name, which mirrors it (`postgres::schema`). A SQLite table
//!   or column with no PostgreSQL counterpart stops the copy before anything is written: it
//!   would be lost.
//! - **Consistent**: the SQLite file is read in one read transaction, a snapshot; stop the
//!   daemon first so nothing arrives after it.
//! - **Idempotent and resumable**: rows go in batches, each its own transaction, in key order,
//!   inserted with `ON CONFLICT DO NOTHING` under their SQLite ids; a table keyed by an integer
//!   id resumes after the highest id already copied. Running it again after an interruption
//!   finishes the copy; running it after a complete copy copies nothing.
//! - **Verified**: each table's row count must be equal on both sides at the end; identity
//!   sequences are moved past the copied ids, so new rows never reuse one.
//! - **Analyzed**: `ANALYZE` at the end, so the planner knows the copied tables at once.
//! - **Refused while nodes run** on the PostgreSQL database (a live lease): copying under them
//!   would mix two histories.

use std::path::{Path, PathBuf};

use rusqlite::types::Value;

use super::postgres::Postgres;
use super::settings::PostgresSettings;
use super::{StoreError, schema};

/// Rows per batch at most; batches also stop at [`BATCH_BYTES`].
const BATCH_ROWS: usize = 500;
/// Bytes per batch at most (documents and raw messages can be large).
const BATCH_BYTES: usize = 8 << 20;
/// PostgreSQL takes at most 65,535 parameters per statement.
const MAX_PARAMETERS: usize = 65_535;

/// Why a migration stopped; what it copied before stays (run again to finish).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("`{}`: cannot read table `{table}`: {source}", path.display())]
    Read {
        path: PathBuf,
        table: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "table `{table}` of `{}` has no counterpart in PostgreSQL: this build cannot copy it (use the ordobridge that wrote the file, or report it)",
        path.display()
    )]
    MissingTable { path: PathBuf, table: String },
    #[error(
        "`{}` holds {segments} intake log segment(s) not copied into its journal yet (the daemon was stopped abruptly): start the daemon on the SQLite store and stop it once, so it copies them, then run the migration again",
        folder.display()
    )]
    IntakeLogPending { folder: PathBuf, segments: usize },
    #[error(
        "column `{table}.{column}` of `{}` has no counterpart in PostgreSQL: this build cannot copy it",
        path.display()
    )]
    MissingColumn {
        path: PathBuf,
        table: String,
        column: String,
    },
    #[error(
        "`{}`: table `{table}`, row {row}, column `{column}`: {reason}",
        path.display()
    )]
    Value {
        path: PathBuf,
        table: String,
        row: i64,
        column: String,
        reason: String,
    },
    #[error(
        "`{target}`: node(s) {nodes} hold leases on this database: stop every node before migrating into it"
    )]
    NodesRunning { target: String, nodes: String },
    #[error(
        "verification failed: table `{table}` has {sqlite} row(s) in `{}` and {postgres} in `{target}`; the PostgreSQL database held other rows before the copy, or the SQLite file changed: copy into an empty database with the daemon stopped",
        path.display()
    )]
    Count {
        path: PathBuf,
        target: String,
        table: String,
        sqlite: i64,
        postgres: i64,
    },
}

/// What was copied of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    pub table: String,
    /// Rows in the SQLite snapshot (and, verified, in PostgreSQL).
    pub rows: i64,
    /// Rows written by this run (the rest were there from an earlier run).
    pub copied: u64,
}

/// A PostgreSQL column and how SQLite values go into it.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) kind: ColumnKind,
}

/// The PostgreSQL types the store's tables use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColumnKind {
    BigInt,
    Integer,
    SmallInt,
    Boolean,
    Text,
    Bytes,
    Double,
}

impl ColumnKind {
    /// From `information_schema.columns.data_type`; `None`: not a type the store writes.
    pub(super) fn from_data_type(data_type: &str) -> Option<ColumnKind> {
        Some(match data_type {
            "bigint" => ColumnKind::BigInt,
            "integer" => ColumnKind::Integer,
            "smallint" => ColumnKind::SmallInt,
            "boolean" => ColumnKind::Boolean,
            "text" | "character varying" => ColumnKind::Text,
            "bytea" => ColumnKind::Bytes,
            "double precision" | "real" => ColumnKind::Double,
            _ => return None,
        })
    }
}

/// A PostgreSQL table as the copy sees it.
#[derive(Debug, Clone)]
pub(super) struct TargetTable {
    /// Columns by name, with their types; columns PostgreSQL fills itself (a default, e.g.
    /// `journal.xid`) are listed only when SQLite has them.
    pub(super) columns: Vec<Column>,
    /// Columns with a default: may be absent from SQLite.
    pub(super) defaulted: Vec<String>,
    /// The single integer key column, when the table has one: the copy resumes after its
    /// highest value.
    pub(super) integer_key: Option<String>,
    /// Whether a column is `GENERATED ALWAYS AS IDENTITY` (needs `OVERRIDING SYSTEM VALUE`).
    pub(super) identity: Vec<String>,
    /// The other tables its foreign keys name: copied before it.
    pub(super) parents: Vec<String>,
    /// Its columns with a foreign key to its own table.
    pub(super) self_references: Vec<String>,
}

/// A value for PostgreSQL, converted from SQLite's.
#[derive(Debug, Clone)]
pub(super) enum PgValue {
    Null,
    BigInt(i64),
    Integer(i32),
    SmallInt(i16),
    Boolean(bool),
    Text(String),
    Bytes(Vec<u8>),
    Double(f64),
}

impl PgValue {
    /// `value` as `kind` takes it, or why not.
    fn convert(value: Value, kind: ColumnKind) -> Result<PgValue, String> {
        let number = |n: i64, name: &str| format!("{n} does not fit PostgreSQL's {name}");
        Ok(match (value, kind) {
            (Value::Null, _) => PgValue::Null,
            (Value::Integer(n), ColumnKind::BigInt) => PgValue::BigInt(n),
            (Value::Integer(n), ColumnKind::Integer) => {
                PgValue::Integer(i32::try_from(n).map_err(|_| number(n, "integer"))?)
            }
            (Value::Integer(n), ColumnKind::SmallInt) => {
                PgValue::SmallInt(i16::try_from(n).map_err(|_| number(n, "smallint"))?)
            }
            (Value::Integer(0), ColumnKind::Boolean) => PgValue::Boolean(false),
            (Value::Integer(1), ColumnKind::Boolean) => PgValue::Boolean(true),
            (Value::Integer(n), ColumnKind::Boolean) => {
                return Err(format!("{n} is not a boolean (0 or 1)"));
            }
            (Value::Integer(n), ColumnKind::Double) => PgValue::Double(n as f64),
            (Value::Real(x), ColumnKind::Double) => PgValue::Double(x),
            (Value::Text(text), ColumnKind::Text) => PgValue::Text(text),
            (Value::Blob(bytes), ColumnKind::Text) => PgValue::Text(
                String::from_utf8(bytes).map_err(|e| format!("text that is not UTF-8: {e}"))?,
            ),
            (Value::Blob(bytes), ColumnKind::Bytes) => PgValue::Bytes(bytes),
            (Value::Text(text), ColumnKind::Bytes) => PgValue::Bytes(text.into_bytes()),
            (value, kind) => {
                return Err(format!(
                    "a SQLite {} cannot go into a PostgreSQL {kind:?} column",
                    value.data_type()
                ));
            }
        })
    }

    /// Roughly how many bytes it sends (batches stop at [`BATCH_BYTES`]).
    fn size(&self) -> usize {
        match self {
            PgValue::Text(text) => text.len(),
            PgValue::Bytes(bytes) => bytes.len(),
            _ => 8,
        }
    }
}

impl tokio_postgres::types::ToSql for PgValue {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            PgValue::Null => Ok(tokio_postgres::types::IsNull::Yes),
            PgValue::BigInt(n) => n.to_sql(ty, out),
            PgValue::Integer(n) => n.to_sql(ty, out),
            PgValue::SmallInt(n) => n.to_sql(ty, out),
            PgValue::Boolean(b) => b.to_sql(ty, out),
            PgValue::Text(text) => text.to_sql(ty, out),
            PgValue::Bytes(bytes) => bytes.to_sql(ty, out),
            PgValue::Double(x) => x.to_sql(ty, out),
        }
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        // Each value was converted for its column's type (`ColumnKind`).
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// `name` as an SQL identifier, in double quotes (both databases take them; the audit table
/// has a column named `user`); a name holding a quote is refused, never escaped.
pub(super) fn quoted(name: &str) -> Result<String, StoreError> {
    if name.is_empty() || name.contains('"') || name.contains('\0') {
        return Err(StoreError::PostgresValue {
            path: PathBuf::from("(migrate)"),
            operation: "migrate: identifier",
            reason: format!("`{name}` is not a table or column name this build writes"),
        });
    }
    Ok(format!("\"{name}\""))
}

/// The tables in an order where each comes after the tables its foreign keys name (the
/// census's patients before their encounters, encounters before movements); otherwise by name.
fn parents_first(
    mut plans: Vec<(String, TargetTable, Vec<Column>)>,
) -> Vec<(String, TargetTable, Vec<Column>)> {
    let mut ordered = Vec::with_capacity(plans.len());
    while !plans.is_empty() {
        let waiting: Vec<String> = plans.iter().map(|(table, ..)| table.clone()).collect();
        // A table whose parents are all copied (a cycle, which the store has none of, would
        // go by name rather than loop).
        let next = plans
            .iter()
            .position(|(_, target, _)| !target.parents.iter().any(|p| waiting.contains(p)))
            .unwrap_or(0);
        ordered.push(plans.remove(next));
    }
    ordered
}

/// Copies the store at `sqlite` into the PostgreSQL database of `target` (migrated to this
/// build's schema first), table by table; `progress` hears of each table once it is copied.
pub fn copy_sqlite_to_postgres(
    sqlite: &Path,
    target: &PostgresSettings,
    mut progress: impl FnMut(&TableCopy),
) -> Result<Vec<TableCopy>, MigrateError> {
    // Messages acknowledged through the intake log and not yet journal rows would be lost.
    // Owning the log first: a daemon still running on the store keeps it (the error says to
    // stop it), and none can start and append while the copy runs.
    let _owner = super::intake_log::own(sqlite, true)?;
    let intake = super::intake_log::folder_of(sqlite);
    let pending = super::intake_log::segments(&intake).map_err(|source| {
        super::intake_log::io_error_of(sqlite)(&intake, "list its segments", source)
    })?;
    if !pending.is_empty() {
        return Err(MigrateError::IntakeLogPending {
            folder: intake,
            segments: pending.len(),
        });
    }
    let (mut connection, _) = schema::open_listing(sqlite)?;
    let postgres = Postgres::open(target, true)?;
    let live = postgres.live_lease_holders()?;
    if !live.is_empty() {
        return Err(MigrateError::NodesRunning {
            target: target.target.clone(),
            nodes: live.join(", "),
        });
    }
    let read = |table: &str| {
        let table = table.to_owned();
        move |source| MigrateError::Read {
            path: sqlite.to_path_buf(),
            table,
            source,
        }
    };
    // One read transaction: every table from the same snapshot.
    let snapshot = connection.transaction().map_err(read("(snapshot)"))?;
    let tables: Vec<String> = {
        let mut statement = snapshot
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .map_err(read("sqlite_master"))?;
        statement
            .query_map([], |row| row.get(0))
            .and_then(Iterator::collect)
            .map_err(read("sqlite_master"))?
    };
    // Every table and column must have somewhere to go before anything is written.
    let mut plans = Vec::with_capacity(tables.len());
    for table in &tables {
        // Where the SQLite store's intake log was copied up to: nothing PostgreSQL needs.
        if table == "intake_log" {
            continue;
        }
        let Some(target_table) = postgres.target_table(table)? else {
            return Err(MigrateError::MissingTable {
                path: sqlite.to_path_buf(),
                table: table.clone(),
            });
        };
        let sqlite_columns: Vec<String> = {
            let mut statement = snapshot
                .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                .map_err(read(table))?;
            statement
                .query_map([table], |row| row.get(0))
                .and_then(Iterator::collect)
                .map_err(read(table))?
        };
        let mut columns = Vec::with_capacity(sqlite_columns.len());
        for name in &sqlite_columns {
            match target_table.columns.iter().find(|c| &c.name == name) {
                Some(column) => columns.push(column.clone()),
                None => {
                    return Err(MigrateError::MissingColumn {
                        path: sqlite.to_path_buf(),
                        table: table.clone(),
                        column: name.clone(),
                    });
                }
            }
        }
        for column in &target_table.columns {
            if !sqlite_columns.contains(&column.name)
                && !target_table.defaulted.contains(&column.name)
            {
                return Err(MigrateError::Value {
                    path: sqlite.to_path_buf(),
                    table: table.clone(),
                    row: 0,
                    column: column.name.clone(),
                    reason: "PostgreSQL requires this column and SQLite has no such column: this build cannot copy the table".to_string(),
                });
            }
        }
        plans.push((table.clone(), target_table, columns));
    }

    let plans = parents_first(plans);
    let mut report = Vec::with_capacity(plans.len());
    for (table, target_table, columns) in plans {
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let selected = names
            .iter()
            .map(|name| quoted(name))
            .collect::<Result<Vec<_>, _>>()?
            .join(", ");
        let from = quoted(&table)?;
        let key = target_table
            .integer_key
            .as_ref()
            .filter(|key| names.contains(&key.as_str()));
        // A column referring to its own table (a merged patient to the patient it was merged
        // into) may name a row further on: it is copied empty, then set once every row is in.
        let deferred: Vec<usize> = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| target_table.self_references.contains(&c.name))
            .map(|(index, _)| index)
            .collect();
        if !deferred.is_empty() && key.is_none() {
            return Err(MigrateError::Value {
                path: sqlite.to_path_buf(),
                table: table.clone(),
                row: 0,
                column: columns[deferred[0]].name.clone(),
                reason: "refers to its own table, which has no integer key to set it by"
                    .to_string(),
            });
        }
        let after = match key {
            Some(key) => postgres.max_key(&table, key)?,
            None => None,
        };
        // Without an integer key (a table keyed by several columns, `WITHOUT ROWID` on
        // SQLite), every row is offered again; the ones there already are skipped.
        let select = match (key, after) {
            (Some(key), Some(_)) => {
                let key = quoted(key)?;
                format!("SELECT {selected} FROM {from} WHERE {key} > ?1 ORDER BY {key}")
            }
            (Some(key), None) => format!("SELECT {selected} FROM {from} ORDER BY {}", quoted(key)?),
            (None, _) => format!("SELECT {selected} FROM {from}"),
        };
        let key_index = key.and_then(|key| names.iter().position(|name| name == key));
        let mut statement = snapshot.prepare(&select).map_err(read(&table))?;
        let mut rows = match after {
            Some(after) => statement.query([after]),
            None => statement.query([]),
        }
        .map_err(read(&table))?;
        let per_batch = BATCH_ROWS.min(MAX_PARAMETERS / columns.len().max(1));
        let overriding = !target_table.identity.is_empty();
        let mut copied = 0u64;
        let mut batch: Vec<Vec<PgValue>> = Vec::with_capacity(per_batch);
        let mut batch_bytes = 0usize;
        let mut ordinal = 0i64;
        while let Some(row) = rows.next().map_err(read(&table))? {
            ordinal += 1;
            let mut values = Vec::with_capacity(columns.len());
            for (index, column) in columns.iter().enumerate() {
                let value: Value = row.get(index).map_err(read(&table))?;
                let value = PgValue::convert(value, column.kind).map_err(|reason| {
                    // The row by its key when it has one, else by its rank in the copy.
                    let row = key_index
                        .and_then(|k| row.get::<_, i64>(k).ok())
                        .unwrap_or(ordinal);
                    MigrateError::Value {
                        path: sqlite.to_path_buf(),
                        table: table.clone(),
                        row,
                        column: column.name.clone(),
                        reason,
                    }
                })?;
                batch_bytes += value.size();
                values.push(if deferred.contains(&index) {
                    PgValue::Null
                } else {
                    value
                });
            }
            batch.push(values);
            if batch.len() >= per_batch || batch_bytes >= BATCH_BYTES {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(per_batch));
                copied += postgres.insert_rows(&table, &names, overriding, full)?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            copied += postgres.insert_rows(&table, &names, overriding, batch)?;
        }
        drop(rows);
        drop(statement);
        if let Some(key) = key {
            for &index in &deferred {
                let column = &columns[index].name;
                let pairs: Vec<(i64, i64)> = {
                    let mut statement = snapshot
                        .prepare(&format!(
                            "SELECT {}, {} FROM {from} WHERE {} IS NOT NULL",
                            quoted(key)?,
                            quoted(column)?,
                            quoted(column)?
                        ))
                        .map_err(read(&table))?;
                    statement
                        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                        .and_then(Iterator::collect)
                        .map_err(read(&table))?
                };
                for chunk in pairs.chunks(BATCH_ROWS * 10) {
                    postgres.set_references(&table, key, column, chunk)?;
                }
            }
        }
        for column in &target_table.identity {
            postgres.advance_identity(&table, column)?;
        }
        let sqlite_rows: i64 = snapshot
            .query_row(&format!("SELECT count(*) FROM {from}"), [], |row| {
                row.get(0)
            })
            .map_err(read(&table))?;
        let postgres_rows = postgres.count_rows(&table)?;
        if sqlite_rows != postgres_rows {
            return Err(MigrateError::Count {
                path: sqlite.to_path_buf(),
                target: target.target.clone(),
                table,
                sqlite: sqlite_rows,
                postgres: postgres_rows,
            });
        }
        let copy = TableCopy {
            table,
            rows: sqlite_rows,
            copied,
        };
        progress(&copy);
        report.push(copy);
    }
    // Fresh statistics: the planner picks the console's indexes from them (a table just
    // loaded, before autovacuum's first analyze, is read by scans).
    postgres.analyze()?;
    Ok(report)
}

//! The PostgreSQL side of `ordobridge migrate` (see `store::migrate`): what a table looks
//! like here, batches of rows inserted under their SQLite keys, identity sequences moved past
//! them, counts.

use super::Postgres;
use crate::store::StoreError;
use crate::store::migrate::{Column, ColumnKind, PgValue, TargetTable, quoted};

impl Postgres {
    /// The nodes holding a live lease on this database (a running cluster), by name.
    pub(in crate::store) fn live_lease_holders(&self) -> Result<Vec<String>, StoreError> {
        self.block(move |inner| async move {
            const OPERATION: &str = "migrate: live leases";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(
                    "SELECT DISTINCT node FROM destination_owners
                     WHERE expires_at > (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
                     ORDER BY node",
                    &[],
                )
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    /// `table` as it is in this database's schema; `None` when it has no such table.
    pub(in crate::store) fn target_table(
        &self,
        table: &str,
    ) -> Result<Option<TargetTable>, StoreError> {
        let table = table.to_owned();
        self.block(move |inner| async move {
            const OPERATION: &str = "migrate: table columns";
            let connection = inner.connection(OPERATION).await?;
            let rows = connection
                .query(
                    "SELECT column_name::text, data_type::text, column_default IS NOT NULL
                            OR is_identity = 'YES', is_identity = 'YES'
                     FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1
                     ORDER BY ordinal_position",
                    &[&table],
                )
                .await
                .map_err(inner.failed(OPERATION))?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut target = TargetTable {
                columns: Vec::with_capacity(rows.len()),
                defaulted: Vec::new(),
                integer_key: None,
                identity: Vec::new(),
                parents: Vec::new(),
                self_references: Vec::new(),
            };
            for row in &rows {
                let name: String = row.get(0);
                let data_type: String = row.get(1);
                if row.get::<_, bool>(2) {
                    target.defaulted.push(name.clone());
                }
                if row.get::<_, bool>(3) {
                    target.identity.push(name.clone());
                }
                // A type the store does not write (e.g. `journal.xid`) must have a default:
                // it is never copied.
                if let Some(kind) = ColumnKind::from_data_type(&data_type) {
                    target.columns.push(Column { name, kind });
                }
            }
            let key = connection
                .query(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                     FROM pg_index i
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                     WHERE i.indrelid = to_regclass(quote_ident($1)) AND i.indisprimary",
                    &[&table],
                )
                .await
                .map_err(inner.failed(OPERATION))?;
            if let [only] = key.as_slice() {
                let kind: String = only.get(1);
                if kind == "bigint" || kind == "integer" {
                    target.integer_key = Some(only.get(0));
                }
            }
            let references = connection
                .query(
                    "SELECT c.confrelid::regclass::text, a.attname::text
                     FROM pg_constraint c
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
                     WHERE c.contype = 'f' AND c.conrelid = to_regclass(quote_ident($1))",
                    &[&table],
                )
                .await
                .map_err(inner.failed(OPERATION))?;
            for reference in &references {
                let (parent, column): (String, String) = (reference.get(0), reference.get(1));
                if parent == table {
                    target.self_references.push(column);
                } else if !target.parents.contains(&parent) {
                    target.parents.push(parent);
                }
            }
            Ok(Some(target))
        })
    }

    /// Sets `table.column` of the rows keyed by the first of each pair to the second, in one
    /// transaction (references to rows of the same table, set once every row is copied).
    pub(in crate::store) fn set_references(
        &self,
        table: &str,
        key: &str,
        column: &str,
        pairs: &[(i64, i64)],
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE {table} AS t SET {column} = v.target
             FROM (SELECT unnest($1::bigint[]) AS key, unnest($2::bigint[]) AS target) AS v
             WHERE t.{key} = v.key AND t.{column} IS DISTINCT FROM v.target",
            table = quoted(table)?,
            column = quoted(column)?,
            key = quoted(key)?
        );
        let keys: Vec<i64> = pairs.iter().map(|(k, _)| *k).collect();
        let targets: Vec<i64> = pairs.iter().map(|(_, t)| *t).collect();
        self.block(move |inner| async move {
            const OPERATION: &str = "migrate: references within a table";
            let connection = inner.connection(OPERATION).await?;
            connection
                .execute(&sql, &[&keys, &targets])
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(())
        })
    }

    /// The highest `key` in `table`; `None` when it is empty.
    pub(in crate::store) fn max_key(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<i64>, StoreError> {
        let sql = format!(
            "SELECT max({})::bigint FROM {}",
            quoted(key)?,
            quoted(table)?
        );
        self.block(move |inner| async move {
            const OPERATION: &str = "migrate: resume point";
            let connection = inner.connection(OPERATION).await?;
            let row = connection
                .query_one(&sql, &[])
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(row.get(0))
        })
    }

    /// Inserts `rows` (values in the order of `columns`) in one transaction, skipping rows
    /// already there; answers how many were new.
    pub(in crate::store) fn insert_rows(
        &self,
        table: &str,
        columns: &[&str],
        overriding: bool,
        rows: Vec<Vec<PgValue>>,
    ) -> Result<u64, StoreError> {
        let names = columns
            .iter()
            .map(|c| quoted(c))
            .collect::<Result<Vec<_>, _>>()?;
        let width = columns.len();
        let mut sql = format!("INSERT INTO {} ({})", quoted(table)?, names.join(", "));
        if overriding {
            sql.push_str(" OVERRIDING SYSTEM VALUE");
        }
        sql.push_str(" VALUES ");
        for row in 0..rows.len() {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for column in 0..width {
                if column > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", row * width + column + 1));
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        self.block(move |inner| async move {
            const OPERATION: &str = "migrate: insert rows";
            let mut connection = inner.connection(OPERATION).await?;
            let transaction = connection
                .transaction()
                .await
                .map_err(inner.failed(OPERATION))?;
            let parameters: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = rows
                .iter()
                .flatten()
                .map(|value| value as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let inserted = transaction
                .execute(&sql, &parameters)
                .await
                .map_err(inner.failed(OPERATION))?;
            transaction
                .commit()
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(inserted)
        })
    }

    /// Moves the identity sequence of `table.column` past its highest value, so the next row
    /// gets a new id.
    pub(in crate::store) fn advance_identity(
        &self,
        table: &str,
        column: &str,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), max({column}), true) FROM {table} HAVING max({column}) IS NOT NULL",
            column = quoted(column)?,
            table = quoted(table)?
        );
        let (table, column) = (table.to_owned(), column.to_owned());
        self.block(move |inner| async move {
            const OPERATION: &str = "migrate: identity sequence";
            let connection = inner.connection(OPERATION).await?;
            connection
                .query(&sql, &[&table, &column])
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(())
        })
    }

    /// How many rows `table` holds.
    pub(in crate::store) fn count_rows(&self, table: &str) -> Result<i64, StoreError> {
        let sql = format!("SELECT count(*) FROM {}", quoted(table)?);
        self.block(move |inner| async move {
            const OPERATION: &str = "migrate: count rows";
            let connection = inner.connection(OPERATION).await?;
            let row = connection
                .query_one(&sql, &[])
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(row.get(0))
        })
    }

    /// Fresh planner statistics for every table.
    pub(in crate::store) fn analyze(&self) -> Result<(), StoreError> {
        self.block(move |inner| async move {
            const OPERATION: &str = "migrate: analyze";
            let connection = inner.connection(OPERATION).await?;
            connection
                .batch_execute("ANALYZE")
                .await
                .map_err(inner.failed(OPERATION))?;
            Ok(())
        })
    }
}

//! Writing simulated runs: SQL text with literal values (one transaction per ETL run), which both
//! SQLite and PostgreSQL accept as it is.

use std::fmt::Write as _;
use std::str::FromStr;

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Row;
use sqlx::{Postgres, Sqlite, Transaction};
use tokio::sync::Mutex;

use super::{date_time_key, rng::hash, timestamp_text, RunWork, Val};
use crate::db::{self, DbError, DbUrl, Dialect};

const SQLITE_SCHEMA: &str = include_str!("../../sql_scripts/make_gim_sqlite.sql");
const POSTGRES_SCHEMA: &str = include_str!("../../sql_scripts/make_gim_postgresql.sql");

/// `simulate --partitioned`: fact tables partitioned by range of `start_date_time_key`, with their keys.
const PARTITIONED: &[(&str, &str)] = &[
    ("interaction_fact", "interaction_id"),
    ("interaction_resource_fact", "interaction_resource_id"),
    ("mediation_segment_fact", "mediation_segment_id"),
    ("irf_user_data_cust_1", "interaction_resource_id"),
];
/// `simulate --partitioned`: fact tables with an inheritance child `<table>_hist`.
const INHERITED: &[(&str, &str)] = &[
    ("sm_res_session_fact", "sm_res_session_fact_key"),
    ("sm_res_state_fact", "sm_res_state_fact_key"),
];

/// The `CREATE TABLE IF NOT EXISTS <table> (...);` block of a schema script.
fn create_block(script: &str, table: &str) -> Option<String> {
    let start = script.find(&format!("CREATE TABLE IF NOT EXISTS {table} ("))?;
    let end = start + script[start..].find("\n);")? + 3;
    Some(script[start..end].to_string())
}
const ROWS_PER_STATEMENT: usize = 500;

fn push_literal(out: &mut String, v: &Val) {
    match v {
        Val::Null => out.push_str("NULL"),
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Text(t) => {
            out.push('\'');
            for c in t.chars() {
                if c == '\'' {
                    out.push('\'');
                }
                out.push(c);
            }
            out.push('\'');
        }
    }
}

/// A multi-row INSERT with literal values.
fn insert_sql(table: &str, columns: &[&str], rows: &[Vec<Val>]) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                sql.push(',');
            }
            push_literal(&mut sql, v);
        }
        sql.push(')');
    }
    sql
}

/// Rows as COPY CSV: NULL unquoted and empty, text always quoted (so '' stays an empty string).
fn copy_csv(rows: &[Vec<Val>]) -> String {
    let mut out = String::with_capacity(rows.len() * 128);
    for row in rows {
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            match v {
                Val::Null => {}
                Val::Int(i) => {
                    let _ = write!(out, "{i}");
                }
                Val::Text(t) => {
                    out.push('"');
                    for c in t.chars() {
                        if c == '"' {
                            out.push('"');
                        }
                        out.push(c);
                    }
                    out.push('"');
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The run's updates as statements: `UPDATE t SET c = v.column2, ... FROM (VALUES ...) AS v WHERE
/// t.key = v.column1`, which SQLite (3.33+) and PostgreSQL both accept, then its other statements.
fn update_statements(work: &RunWork) -> Vec<String> {
    let mut out = Vec::new();
    for (table, batch) in &work.updates {
        let sets: Vec<String> = batch
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = v.column{}", i + 2))
            .collect();
        for rows in batch.rows.chunks(ROWS_PER_STATEMENT) {
            let mut values = String::new();
            for (i, row) in rows.iter().enumerate() {
                if i > 0 {
                    values.push(',');
                }
                values.push('(');
                for (j, v) in row.iter().enumerate() {
                    if j > 0 {
                        values.push(',');
                    }
                    push_literal(&mut values, v);
                }
                values.push(')');
            }
            out.push(format!(
                "UPDATE {table} SET {} FROM (VALUES {values}) AS v WHERE {table}.{} = v.column1",
                sets.join(", "),
                batch.key
            ));
        }
    }
    out.extend(work.statements.iter().cloned());
    out
}

/// [`update_statements`] for MariaDB/MySQL, which has no `UPDATE ... FROM (VALUES ...)`:
/// `UPDATE t JOIN (SELECT ... UNION ALL SELECT ...) v ON t.key = v.c1 SET t.c = v.c2, ...`.
fn mysql_update_statements(work: &RunWork) -> Vec<String> {
    let mut out = Vec::new();
    for (table, batch) in &work.updates {
        let sets: Vec<String> = batch
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{table}.{c} = v.c{}", i + 2))
            .collect();
        for rows in batch.rows.chunks(ROWS_PER_STATEMENT) {
            let mut values = String::new();
            for (i, row) in rows.iter().enumerate() {
                values.push_str(if i == 0 {
                    "SELECT "
                } else {
                    " UNION ALL SELECT "
                });
                for (j, v) in row.iter().enumerate() {
                    if j > 0 {
                        values.push(',');
                    }
                    push_literal(&mut values, v);
                    if i == 0 {
                        let _ = write!(values, " AS c{}", j + 1);
                    }
                }
            }
            out.push(format!(
                "UPDATE {table} JOIN ({values}) AS v ON {table}.{} = v.c1 SET {}",
                batch.key,
                sets.join(", ")
            ));
        }
    }
    out.extend(work.statements.iter().cloned());
    out
}

/// The simulator's SQL names tables in upper case, as GIM's documents do; MariaDB/MySQL table names
/// are case-sensitive on Linux and the schema's are lower case.
fn lower_table_names(sql: &str) -> String {
    let tables = &crate::schema::simulated().tables;
    let mut out = String::with_capacity(sql.len());
    let mut word = String::new();
    let mut quoted = false;
    let flush = |word: &mut String, out: &mut String| {
        let lower = word.to_ascii_lowercase();
        if *word != lower && (lower == "ctl_audit_log" || tables.iter().any(|t| t.name == lower)) {
            out.push_str(&lower);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in sql.chars() {
        if !quoted && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        flush(&mut word, &mut out);
        if c == '\'' {
            // A doubled quote inside a literal closes and reopens it: the state stays right.
            quoted = !quoted;
        }
        out.push(c);
    }
    flush(&mut word, &mut out);
    out
}

/// The simulated source schema for MariaDB/MySQL, from the PostgreSQL script: each column's type in
/// the MariaDB spelling (a `varchar` over 255 characters as TEXT, for InnoDB's row size), tables
/// InnoDB in utf8mb4 with a binary collation.
fn mysql_schema() -> String {
    let mut out = String::new();
    for line in POSTGRES_SCHEMA.lines() {
        let trimmed = line.trim_start();
        let is_column =
            line.starts_with("    ") && !trimmed.starts_with("--") && !trimmed.is_empty();
        if is_column {
            let mut parts = trimmed.splitn(3, char::is_whitespace);
            let name = parts.next().unwrap_or_default();
            let rest = parts.collect::<Vec<_>>().join(" ");
            let rest = rest.trim_start();
            let (ty, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let (ty, comma) = match ty.strip_suffix(',') {
                Some(t) => (t, ","),
                None => (ty, ""),
            };
            let my = ty
                .parse::<crate::schema::SqlType>()
                .map(|t| match ty {
                    "timestamp(3)" => "DATETIME(3)".to_string(),
                    _ => t.mysql(),
                })
                .unwrap_or_else(|_| ty.to_string());
            out.push_str(&format!("    {name} {my}{comma} {tail}\n"));
        } else if line.starts_with(");") {
            out.push_str(") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// What the database already holds, for continuing the history.
pub struct History {
    pub max_audit_key: i64,
    pub max_created_ts: Option<i64>,
    pub in_flight: Vec<i64>,
    pub open_interactions: Vec<(i64, i64)>,
}

/// The database the simulator writes to, through one transaction for the whole call: a call adds
/// its days or, when it fails (or is killed), nothing.
pub enum SimDb {
    Sqlite(DbUrl, Mutex<Transaction<'static, Sqlite>>),
    Postgres(DbUrl, Mutex<Transaction<'static, Postgres>>),
    /// MariaDB/MySQL: one connection in one transaction (its DDL commits by itself: the schema of a
    /// failed call stays, empty).
    Mysql(DbUrl, Mutex<mysql_async::Conn>),
}

macro_rules! in_transaction {
    ($tx:expr, $url:expr, $stmts:expr) => {{
        let mut tx = $tx.lock().await;
        for sql in $stmts {
            sqlx::raw_sql(sql)
                .execute(&mut **tx)
                .await
                .map_err(|e| DbError::query($url, "writing simulated rows", e))?;
        }
    }};
}

impl SimDb {
    pub async fn connect(url: &DbUrl) -> Result<SimDb> {
        Ok(match url.dialect() {
            Dialect::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url.expose())
                    .map_err(|e| DbError::connect(url, e))?
                    .create_if_missing(true)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
                    .map_err(|e| DbError::connect(url, e))?;
                let tx = pool
                    .begin()
                    .await
                    .map_err(|e| DbError::query(url, "starting a transaction", e))?;
                SimDb::Sqlite(url.clone(), Mutex::new(tx))
            }
            Dialect::Postgres => {
                let pool = db::postgres::pool(url, 1, 15).await?;
                let tx = pool
                    .begin()
                    .await
                    .map_err(|e| DbError::query(url, "starting a transaction", e))?;
                SimDb::Postgres(url.clone(), Mutex::new(tx))
            }
            Dialect::Mysql => {
                let mut conn = db::mysql::connect(url).await?;
                conn.query_drop("START TRANSACTION")
                    .await
                    .map_err(|e| db::mysql::error(url, "starting a transaction", e))?;
                SimDb::Mysql(url.clone(), Mutex::new(conn))
            }
        })
    }

    /// Commits everything the call wrote.
    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            SimDb::Sqlite(url, tx) => tx
                .into_inner()
                .commit()
                .await
                .map_err(|e| DbError::query(&url, "committing", e)),
            SimDb::Postgres(url, tx) => tx
                .into_inner()
                .commit()
                .await
                .map_err(|e| DbError::query(&url, "committing", e)),
            SimDb::Mysql(url, conn) => {
                let mut conn = conn.into_inner();
                conn.query_drop("COMMIT")
                    .await
                    .map_err(|e| db::mysql::error(&url, "committing", e))?;
                let _ = conn.disconnect().await;
                Ok(())
            }
        }
    }

    fn url(&self) -> &DbUrl {
        match self {
            SimDb::Sqlite(u, _) | SimDb::Postgres(u, _) | SimDb::Mysql(u, _) => u,
        }
    }

    /// Runs `statements` in one transaction.
    pub async fn execute(&self, statements: &[String]) -> Result<(), DbError> {
        match self {
            SimDb::Sqlite(url, tx) => in_transaction!(tx, url, statements),
            SimDb::Postgres(url, tx) => in_transaction!(tx, url, statements),
            SimDb::Mysql(url, conn) => {
                let mut conn = conn.lock().await;
                for sql in statements {
                    conn.query_drop(lower_table_names(sql))
                        .await
                        .map_err(|e| db::mysql::error(url, "writing simulated rows", e))?;
                }
            }
        }
        Ok(())
    }

    pub async fn create_schema(&self) -> Result<()> {
        let script = match self {
            SimDb::Sqlite(..) => SQLITE_SCHEMA.to_string(),
            SimDb::Postgres(..) => POSTGRES_SCHEMA.to_string(),
            SimDb::Mysql(..) => mysql_schema(),
        };
        self.execute(&[script])
            .await
            .with_context(|| format!("creating the source schema in {}", self.url()))
    }

    /// Creates the fact tables as a partitioned PostgreSQL Info Mart has them, before the rest of the
    /// schema (whose `CREATE TABLE IF NOT EXISTS` then leaves them be): interaction, resource,
    /// mediation and user-data facts partitioned by range of `start_date_time_key` (primary key =
    /// the table's key plus that column, as PostgreSQL requires); the two agent-activity facts with
    /// an inheritance child `<table>_hist` each.
    pub async fn create_partitioned_schema(&self) -> Result<()> {
        let SimDb::Postgres(url, tx) = self else {
            anyhow::bail!("simulate --partitioned applies to PostgreSQL sources only");
        };
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND relname = 'interaction_fact'",
        )
        .fetch_optional(&mut **tx.lock().await)
        .await
        .map_err(|e| DbError::query(url, "reading the catalog", e))?;
        if exists.is_some() {
            return Ok(()); // an existing schema stays as it is
        }
        let mut ddl = Vec::new();
        for (table, key) in PARTITIONED {
            let block = create_block(POSTGRES_SCHEMA, table)
                .with_context(|| format!("{table} is not in make_gim_postgresql.sql"))?;
            let body = block
                .replacen("NOT NULL PRIMARY KEY", "NOT NULL", 1)
                .trim_end()
                .trim_end_matches(';')
                .trim_end()
                .trim_end_matches(')')
                .trim_end()
                .to_string();
            ddl.push(format!(
                "{body},\n    PRIMARY KEY ({key}, start_date_time_key)\n) PARTITION BY RANGE (start_date_time_key)"
            ));
            ddl.push(format!(
                "CREATE TABLE {table}_pdefault PARTITION OF {table} DEFAULT"
            ));
        }
        for (table, key) in INHERITED {
            let block = create_block(POSTGRES_SCHEMA, table)
                .with_context(|| format!("{table} is not in make_gim_postgresql.sql"))?;
            ddl.push(block.trim_end().trim_end_matches(';').to_string());
            ddl.push(format!(
                "CREATE TABLE {table}_hist (PRIMARY KEY ({key})) INHERITS ({table})"
            ));
        }
        self.execute(&ddl)
            .await
            .with_context(|| format!("creating the partitioned fact tables in {url}"))
    }

    /// The declaratively partitioned tables of the simulated schema that exist in this database.
    pub async fn partitioned_tables(&self) -> Result<Vec<String>> {
        let SimDb::Postgres(url, tx) = self else {
            return Ok(Vec::new());
        };
        Ok(sqlx::query_scalar(
            "SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'p' ORDER BY 1",
        )
        .fetch_all(&mut **tx.lock().await)
        .await
        .map_err(|e| DbError::query(url, "reading the catalog", e))?)
    }

    /// One range partition per day (`<table>_pYYYYMMDD`) for `days` days from `from`, where missing.
    pub async fn add_day_partitions(&self, tables: &[String], from: i64, days: u32) -> Result<()> {
        let mut ddl = Vec::new();
        for table in tables {
            for d in 0..i64::from(days) {
                let lo = from + d * 86_400;
                let day = chrono::DateTime::from_timestamp(lo, 0)
                    .map(|t| t.format("%Y%m%d").to_string())
                    .unwrap_or_default();
                ddl.push(format!(
                    "CREATE TABLE IF NOT EXISTS {table}_p{day} PARTITION OF {table} FOR VALUES FROM ({lo}) TO ({})",
                    lo + 86_400
                ));
            }
        }
        self.execute(&ddl).await?;
        Ok(())
    }

    /// Moves the rows of the inheritance parents that started before `before` into their `_hist`
    /// children (PostgreSQL with the partitioned schema only).
    pub async fn move_to_inheritance_children(&self, before: i64) -> Result<()> {
        let SimDb::Postgres(url, tx) = self else {
            return Ok(());
        };
        for (table, _) in INHERITED {
            let child = format!("{table}_hist");
            let has: Option<String> = sqlx::query_scalar(
                "SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND relname = $1",
            )
            .bind(&child)
            .fetch_optional(&mut **tx.lock().await)
            .await
            .map_err(|e| DbError::query(url, "reading the catalog", e))?;
            if has.is_some() {
                self.execute(&[format!(
                    "WITH moved AS (DELETE FROM ONLY {table} WHERE start_ts < {before} RETURNING *) \
                     INSERT INTO {child} SELECT * FROM moved"
                )])
                .await?;
            }
        }
        Ok(())
    }

    async fn ints(&self, sql: &str) -> Result<Vec<Vec<Option<i64>>>, DbError> {
        let err = |e| DbError::query(self.url(), "reading the simulated history", e);
        macro_rules! fetch {
            ($tx:expr) => {{
                let rows = sqlx::query(sql)
                    .fetch_all(&mut **$tx.lock().await)
                    .await
                    .map_err(err)?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<i64>, _>(i))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)
            }};
        }
        match self {
            SimDb::Sqlite(_, tx) => fetch!(tx),
            SimDb::Postgres(_, tx) => fetch!(tx),
            SimDb::Mysql(url, conn) => {
                let sql = lower_table_names(&sql.replace(" AS BIGINT)", " AS SIGNED)"));
                let rows: Vec<mysql_async::Row> = conn
                    .lock()
                    .await
                    .query(sql)
                    .await
                    .map_err(|e| db::mysql::error(url, "reading the simulated history", e))?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        r.unwrap()
                            .into_iter()
                            .map(|v| mysql_async::from_value_opt::<Option<i64>>(v).ok().flatten())
                            .collect()
                    })
                    .collect())
            }
        }
    }

    pub async fn history(&self) -> Result<History> {
        let top = self
            .ints("SELECT CAST(MAX(AUDIT_KEY) AS BIGINT), CAST(MAX(CREATED_TS) AS BIGINT) FROM CTL_AUDIT_LOG")
            .await?;
        let in_flight = self
            .ints("SELECT CAST(AUDIT_KEY AS BIGINT) FROM CTL_AUDIT_LOG WHERE INSERTED IS NULL ORDER BY 1")
            .await?;
        let open = self
            .ints("SELECT CAST(INTERACTION_ID AS BIGINT), CAST(START_TS AS BIGINT) FROM INTERACTION_FACT WHERE END_TS IS NULL ORDER BY 1")
            .await?;
        Ok(History {
            max_audit_key: top.first().and_then(|r| r[0]).unwrap_or(0),
            max_created_ts: top.first().and_then(|r| r[1]),
            in_flight: in_flight.iter().filter_map(|r| r[0]).collect(),
            open_interactions: open.iter().filter_map(|r| Some((r[0]?, r[1]?))).collect(),
        })
    }

    /// Whether the database (PostgreSQL: the current schema) has a table of this name, in any case.
    pub async fn has_table(&self, name: &str) -> Result<bool> {
        let name = name.to_ascii_lowercase().replace('\'', "");
        let sql = match self {
            SimDb::Sqlite(..) => format!(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND lower(name) = '{name}'"
            ),
            SimDb::Postgres(..) => format!(
                "SELECT COUNT(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND lower(c.relname) = '{name}' AND c.relkind IN ('r', 'p')"
            ),
            SimDb::Mysql(..) => format!(
                "SELECT COUNT(*) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND LOWER(TABLE_NAME) = '{name}'"
            ),
        };
        let rows = self.ints(&sql).await?;
        Ok(rows.first().and_then(|r| r[0]).unwrap_or(0) > 0)
    }

    pub async fn max_id(&self, table: &str, column: &str) -> Result<i64> {
        let rows = self
            .ints(&format!(
                "SELECT CAST(MAX({column}) AS BIGINT) FROM {table}"
            ))
            .await?;
        Ok(rows.first().and_then(|r| r[0]).unwrap_or(0))
    }

    pub async fn agents(&self) -> Result<Vec<i64>> {
        let rows = self
            .ints("SELECT CAST(RESOURCE_KEY AS BIGINT) FROM RESOURCE_ WHERE RESOURCE_TYPE_CODE = 'AGENT' ORDER BY 1")
            .await?;
        Ok(rows.iter().filter_map(|r| r[0]).collect())
    }

    /// Writes one ETL run: its audit row, its inserts and its updates, in one transaction. PostgreSQL
    /// gets the inserts through COPY; SQLite through multi-row INSERTs.
    pub(super) async fn write_run(
        &self,
        key: i64,
        created_ts: i64,
        inserted_ts: Option<i64>,
        work: &RunWork,
    ) -> Result<()> {
        let min_start = work
            .min_start
            .map(date_time_key)
            .unwrap_or(date_time_key(created_ts));
        let max_start = work.max_start.map(date_time_key).unwrap_or(min_start);
        let audit = format!(
            "INSERT INTO CTL_AUDIT_LOG (AUDIT_KEY, JOB_ID, CREATED, INSERTED, PROCESSING_STATUS_KEY, \
             MIN_START_DATE_TIME_KEY, MAX_START_DATE_TIME_KEY, MAX_CHUNK_TS, DATA_SOURCE_KEY, ROW_COUNT, CREATED_TS) \
             VALUES ({key}, '{:016x}', '{}', {}, 0, {min_start}, {max_start}, {}, 1, {}, {created_ts})",
            hash(0x6a6f62, key as u64),
            timestamp_text(created_ts),
            inserted_ts
                .map(|t| format!("'{}'", timestamp_text(t)))
                .unwrap_or_else(|| "NULL".into()),
            work.max_ts.map(|t| t.to_string()).unwrap_or_else(|| "NULL".into()),
            work.rows
        );
        let updates = match self {
            SimDb::Mysql(..) => mysql_update_statements(work),
            _ => update_statements(work),
        };
        match self {
            SimDb::Mysql(..) => {
                let mut stmts = vec![audit];
                for (table, batch) in &work.inserts {
                    for rows in batch.rows.chunks(ROWS_PER_STATEMENT) {
                        stmts.push(insert_sql(table, batch.columns, rows));
                    }
                }
                stmts.extend(updates);
                self.execute(&stmts).await?;
            }
            SimDb::Sqlite(url, tx) => {
                let mut stmts = vec![audit];
                for (table, batch) in &work.inserts {
                    for rows in batch.rows.chunks(ROWS_PER_STATEMENT) {
                        stmts.push(insert_sql(table, batch.columns, rows));
                    }
                }
                stmts.extend(updates);
                in_transaction!(tx, url, &stmts);
            }
            SimDb::Postgres(url, tx) => {
                let err = |e| DbError::query(url, "writing simulated rows", e);
                let mut tx = tx.lock().await;
                sqlx::raw_sql(&audit)
                    .execute(&mut **tx)
                    .await
                    .map_err(err)?;
                for (table, batch) in &work.inserts {
                    let mut copy = tx
                        .copy_in_raw(&format!(
                            "COPY {table} ({}) FROM STDIN WITH (FORMAT csv)",
                            batch.columns.join(", ")
                        ))
                        .await
                        .map_err(err)?;
                    copy.send(copy_csv(&batch.rows).as_bytes())
                        .await
                        .map_err(err)?;
                    copy.finish().await.map_err(err)?;
                }
                for sql in &updates {
                    sqlx::raw_sql(sql).execute(&mut **tx).await.map_err(err)?;
                }
            }
        }
        Ok(())
    }

    /// Finishes an in-flight key: its last changes, then INSERTED.
    pub(super) async fn settle(&self, key: i64, inserted_ts: i64, work: &RunWork) -> Result<()> {
        let mut stmts = match self {
            SimDb::Mysql(..) => mysql_update_statements(work),
            _ => update_statements(work),
        };
        stmts.push(format!(
            "UPDATE CTL_AUDIT_LOG SET INSERTED = '{}' WHERE AUDIT_KEY = {key}",
            timestamp_text(inserted_ts)
        ));
        self.execute(&stmts).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_names_are_lowered_outside_literals_only() {
        assert_eq!(
            super::lower_table_names(
                "UPDATE CTL_AUDIT_LOG SET X = 'TENANT''s CTL_AUDIT_LOG' WHERE TENANT_KEY = 1"
            ),
            "UPDATE ctl_audit_log SET X = 'TENANT''s CTL_AUDIT_LOG' WHERE TENANT_KEY = 1"
        );
    }
}

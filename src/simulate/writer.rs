//! Writing simulated runs: SQL text with literal values (one transaction per ETL run), which both
//! SQLite and PostgreSQL accept as it is.

use std::fmt::Write as _;
use std::str::FromStr;

use anyhow::{Context, Result};
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
                return Err(DbError::Unexportable {
                    url: url.to_string(),
                    reason:
                        "simulate writes SQLite and PostgreSQL Info Marts; MariaDB/MySQL not yet"
                            .into(),
                }
                .into())
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
        }
    }

    fn url(&self) -> &DbUrl {
        match self {
            SimDb::Sqlite(u, _) | SimDb::Postgres(u, _) => u,
        }
    }

    /// Runs `statements` in one transaction.
    pub async fn execute(&self, statements: &[String]) -> Result<(), DbError> {
        match self {
            SimDb::Sqlite(url, tx) => in_transaction!(tx, url, statements),
            SimDb::Postgres(url, tx) => in_transaction!(tx, url, statements),
        }
        Ok(())
    }

    pub async fn create_schema(&self) -> Result<()> {
        let script = match self {
            SimDb::Sqlite(..) => SQLITE_SCHEMA,
            SimDb::Postgres(..) => POSTGRES_SCHEMA,
        };
        self.execute(&[script.to_string()])
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
        let updates = update_statements(work);
        match self {
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
        let mut stmts = update_statements(work);
        stmts.push(format!(
            "UPDATE CTL_AUDIT_LOG SET INSERTED = '{}' WHERE AUDIT_KEY = {key}",
            timestamp_text(inserted_ts)
        ));
        self.execute(&stmts).await?;
        Ok(())
    }
}

//! Writing simulated runs: SQL text with literal values (one transaction per ETL run), which both
//! SQLite and PostgreSQL accept as it is.

use std::fmt::Write as _;
use std::str::FromStr;

use anyhow::{Context, Result};
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use super::{date_time_key, rng::hash, timestamp_text, RunWork, Val};
use crate::db::{self, DbError, DbUrl, Dialect};

const SQLITE_SCHEMA: &str = include_str!("../../sql_scripts/make_gim_sqlite.sql");
const POSTGRES_SCHEMA: &str = include_str!("../../sql_scripts/make_gim_postgresql.sql");
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

/// The database the simulator writes to.
pub enum SimDb {
    Sqlite(DbUrl, SqlitePool),
    Postgres(DbUrl, PgPool),
}

macro_rules! in_transaction {
    ($pool:expr, $url:expr, $stmts:expr) => {{
        let mut tx = $pool
            .begin()
            .await
            .map_err(|e| DbError::query($url, "starting a transaction", e))?;
        for sql in $stmts {
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| DbError::query($url, "writing simulated rows", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| DbError::query($url, "committing", e))?;
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
                SimDb::Sqlite(url.clone(), pool)
            }
            Dialect::Postgres => {
                SimDb::Postgres(url.clone(), db::postgres::pool(url, 2, 15).await?)
            }
        })
    }

    fn url(&self) -> &DbUrl {
        match self {
            SimDb::Sqlite(u, _) | SimDb::Postgres(u, _) => u,
        }
    }

    /// Runs `statements` in one transaction.
    pub async fn execute(&self, statements: &[String]) -> Result<(), DbError> {
        match self {
            SimDb::Sqlite(url, pool) => in_transaction!(pool, url, statements),
            SimDb::Postgres(url, pool) => in_transaction!(pool, url, statements),
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

    async fn ints(&self, sql: &str) -> Result<Vec<Vec<Option<i64>>>, DbError> {
        let err = |e| DbError::query(self.url(), "reading the simulated history", e);
        macro_rules! fetch {
            ($pool:expr) => {{
                let rows = sqlx::query(sql).fetch_all($pool).await.map_err(err)?;
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
            SimDb::Sqlite(_, pool) => fetch!(pool),
            SimDb::Postgres(_, pool) => fetch!(pool),
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
            SimDb::Sqlite(url, pool) => {
                let mut stmts = vec![audit];
                for (table, batch) in &work.inserts {
                    for rows in batch.rows.chunks(ROWS_PER_STATEMENT) {
                        stmts.push(insert_sql(table, batch.columns, rows));
                    }
                }
                stmts.extend(updates);
                in_transaction!(pool, url, &stmts);
            }
            SimDb::Postgres(url, pool) => {
                let err = |e| DbError::query(url, "writing simulated rows", e);
                let mut tx = pool.begin().await.map_err(err)?;
                sqlx::raw_sql(&audit).execute(&mut *tx).await.map_err(err)?;
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
                    sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(err)?;
                }
                tx.commit().await.map_err(err)?;
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

    pub async fn close(self) {
        match self {
            SimDb::Sqlite(_, p) => p.close().await,
            SimDb::Postgres(_, p) => p.close().await,
        }
    }
}

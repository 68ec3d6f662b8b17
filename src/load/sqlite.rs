//! SQLite target: rows staged with batched prepared inserts in a temporary table, then merged.

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use super::{
    check_loaded_sha1, check_removal, check_rows, merge_sql, open_csv, plan::FolderPlan,
    remove_missing_sql, removed_json, schema_changes_json, stage_columns, LedgerEntry, LoadRefused,
    Removed, TablePlan, TargetDb, TargetLocked, APPLIED_INSERT, CATALOG_UPSERT, LEDGER_SELECT,
};
use crate::db::{self, DbError, DbUrl, Dialect, Table};
use crate::package::checkpoint;

pub struct SqliteTarget {
    url: DbUrl,
    pool: SqlitePool,
    file: Option<PathBuf>,
    lock: Option<File>,
}

impl SqliteTarget {
    pub async fn connect(url: &DbUrl) -> Result<Self> {
        let opts = db::sqlite::options(url)?.create_if_missing(true);
        let file = Some(opts.get_filename().to_path_buf()).filter(|p| p.as_os_str() != ":memory:");
        // One connection: temporary staging tables live on the connection that merges them.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(|e| DbError::connect(url, e))?;
        Ok(SqliteTarget {
            url: url.clone(),
            pool,
            file,
            lock: None,
        })
    }
}

#[async_trait::async_trait(?Send)]
impl TargetDb for SqliteTarget {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn lock(&mut self) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let path = PathBuf::from(format!("{}.gim-export-load.lock", file.display()));
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => {
                self.lock = Some(f);
                Ok(())
            }
            Err(TryLockError::WouldBlock) => Err(TargetLocked(self.url.to_string()).into()),
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .map_err(|e| DbError::query(&self.url, "changing the target schema", e))?;
        Ok(())
    }

    /// The first column of every row of `sql`, as text.
    async fn strings(&self, sql: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar::<_, String>(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| DbError::query(&self.url, "reading the loader's catalog", e))?)
    }

    fn url(&self) -> &DbUrl {
        &self.url
    }

    async fn tables(&self) -> Result<Vec<Table>> {
        Ok(db::sqlite::read_tables(&self.pool, &self.url).await?)
    }

    async fn ledger(&self) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(LEDGER_SELECT)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| DbError::query(&self.url, "reading the ledger", e))?;
        rows.iter()
            .map(|r| Ok(super::ledger_entry!(r)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| DbError::query(&self.url, "reading the ledger", e).into())
    }

    async fn apply(
        &self,
        zip_path: &Path,
        schema: &FolderPlan,
        plans: &[TablePlan],
        clear: &[String],
        entry: &LedgerEntry,
        encoding: &'static encoding_rs::Encoding,
    ) -> Result<(BTreeMap<String, u64>, Removed)> {
        let mut rows = BTreeMap::new();
        let mut removed = Removed::new();
        let err = |what: &str| DbError::on(&self.url, what);
        let mut zip = zip::ZipArchive::new(File::open(zip_path)?)?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(err("starting a transaction"))?;
        // The folder's schema changes first: undone with the rest if anything fails.
        for ddl in &schema.ddl {
            sqlx::raw_sql(ddl)
                .execute(&mut *tx)
                .await
                .map_err(err("changing the target schema"))?;
        }
        let catalog_sql = CATALOG_UPSERT.to_string();
        for row in &schema.catalog {
            sqlx::query(&catalog_sql)
                .bind(&row.table)
                .bind(&row.column)
                .bind(&row.sql_type)
                .bind(row.origin)
                .bind(&entry.folder)
                .execute(&mut *tx)
                .await
                .map_err(err("writing the loader's catalog"))?;
        }
        for plan in plans {
            let what = format!("loading table {}", plan.table);
            sqlx::raw_sql(&format!(
                "DROP TABLE IF EXISTS temp.gx_stage; \
                 CREATE TEMP TABLE gx_stage AS SELECT {} FROM main.{} WHERE 0;",
                stage_columns(plan),
                db::quote_ident(&plan.table)
            ))
            .execute(&mut *tx)
            .await
            .map_err(err(&what))?;

            let insert = format!(
                "INSERT INTO gx_stage ({}) VALUES ({})",
                stage_columns(plan),
                vec!["?"; plan.columns.len()].join(",")
            );
            super::progress::table(&plan.table);
            let mut raw = open_csv(&mut zip, &plan.entry).map_err(|e| LoadRefused::Table {
                folder: entry.folder.clone(),
                table: plan.table.clone(),
                reason: format!("cannot read zip entry {}: {e:#}", plan.entry),
            })?;
            let mut csv = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(crate::encoding::decoding_reader(&mut raw, encoding));
            let refused = |reason: String| LoadRefused::Table {
                folder: entry.folder.clone(),
                table: plan.table.clone(),
                reason,
            };
            let header: Vec<String> = csv
                .headers()
                .map_err(|e| refused(e.to_string()))?
                .iter()
                .map(String::from)
                .collect();
            let header: Vec<String> = header
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect();
            if header != plan.columns {
                return Err(refused("the header changed while loading".into()).into());
            }
            let check = super::RecordCheck::new(plan, schema.limits.max_field_bytes);
            let mut seq: i64 = 0;
            let mut records = csv.records();
            // Whether the keys are integers that strictly ascend, as exports write them: then no key
            // repeats and the merge needs no dedupe (a window sort over the whole stage).
            let mut order = super::KeyOrder::new(plan);
            {
                // The stage is filled through SQLite's own API on the transaction's connection: a
                // prepared single-row INSERT, bound and stepped per row, without sqlx's worker
                // channel and its copy of every value (which made this loader 4x slower than the
                // exporter reading the same file).
                let mut handle = tx.lock_handle().await.map_err(err(&what))?;
                // SAFETY: the handle is sqlx's open connection, locked for this scope so that no
                // other statement runs on it; `from_handle` borrows it (it does not close it on
                // drop), and the statement and the borrowing connection are dropped before the lock.
                let conn =
                    unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }
                        .map_err(|e| DbError::Query {
                        url: self.url.to_string(),
                        what: what.clone(),
                        reason: e.to_string(),
                        transient: false,
                    })?;
                let sql_err = |e: rusqlite::Error| DbError::Query {
                    url: self.url.to_string(),
                    what: what.clone(),
                    reason: e.to_string(),
                    transient: matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ),
                };
                let mut stmt = conn.prepare(&insert).map_err(sql_err)?;
                while let Some(rec) = records
                    .next()
                    .transpose()
                    .map_err(|e| refused(crate::format::describe_csv_error(&e)))?
                {
                    // SQLite stores anything anywhere: refuse what PostgreSQL would.
                    check.record(&rec).map_err(refused)?;
                    order.see(|i| rec.get(i));
                    stmt.execute(rusqlite::params_from_iter(
                        rec.iter().map(|f| (!f.is_empty()).then_some(f)),
                    ))
                    .map_err(sql_err)?;
                    seq += 1;
                    if seq % 500 == 0 {
                        super::progress::advance(500);
                        checkpoint();
                    }
                }
                super::progress::advance(seq as u64 % 500);
                drop(stmt);
                drop(conn);
            }
            checkpoint();
            drop(records);
            drop(csv);
            check_loaded_sha1(&entry.folder, plan, &raw.hex())?;
            check_rows(&entry.folder, plan, seq as u64, &schema.limits)?;
            rows.insert(plan.table.clone(), seq as u64);
            sqlx::raw_sql(&merge_sql(plan, "gx_stage", !order.ascending(), "rowid"))
                .execute(&mut *tx)
                .await
                .map_err(err(&what))?;
            if plan.remove_missing {
                let key: Vec<String> = plan
                    .primary_key
                    .iter()
                    .map(|k| db::quote_ident(k))
                    .collect();
                let key = key.join(", ");
                sqlx::raw_sql(&format!(
                    "CREATE INDEX temp.gx_stage_key ON gx_stage ({key})"
                ))
                .execute(&mut *tx)
                .await
                .map_err(err(&what))?;
                let total: i64 = sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM main.{}",
                    db::quote_ident(&plan.table)
                ))
                .fetch_one(&mut *tx)
                .await
                .map_err(err(&what))?;
                let gone = sqlx::query(&remove_missing_sql(plan, "gx_stage"))
                    .execute(&mut *tx)
                    .await
                    .map_err(err(&what))?
                    .rows_affected();
                check_removal(
                    &entry.folder,
                    &plan.table,
                    gone,
                    total as u64,
                    schema.max_removal_percent,
                )?;
                removed.insert(plan.table.clone(), gone);
            }
            sqlx::raw_sql("DROP TABLE temp.gx_stage")
                .execute(&mut *tx)
                .await
                .map_err(err(&what))?;
            checkpoint();
        }
        for table in clear {
            let gone = sqlx::query(&format!("DELETE FROM {}", db::quote_ident(table)))
                .execute(&mut *tx)
                .await
                .map_err(err(&format!("emptying table {table}")))?
                .rows_affected();
            check_removal(&entry.folder, table, gone, gone, schema.max_removal_percent)?;
            removed.insert(table.clone(), gone);
        }
        for d in &schema.deletes {
            let mut gone = 0;
            for sql in &d.statements {
                gone += sqlx::query(sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(err(&format!("deleting the repair's keys from {}", d.table)))?
                    .rows_affected();
            }
            *removed.entry(d.table.to_ascii_lowercase()).or_default() += gone;
        }
        sqlx::query(&super::ledger_upsert(
            "strftime('%Y-%m-%d %H:%M:%f', 'now')",
        ))
        .bind(&entry.folder)
        .bind(entry.hwm_from.audit_key)
        .bind(entry.hwm_from.created_ts)
        .bind(entry.hwm_to.audit_key)
        .bind(entry.hwm_to.created_ts)
        .bind(entry.max_data_ts)
        .bind(serde_json::to_string(&rows)?)
        .bind(entry.zip_sha1.as_deref())
        .bind(i64::from(entry.generation))
        .bind(schema_changes_json(schema))
        .bind(removed_json(&removed))
        .bind(entry.restart_after)
        .execute(&mut *tx)
        .await
        .map_err(err("writing the ledger"))?;
        sqlx::query(APPLIED_INSERT)
            .bind(&entry.folder)
            .execute(&mut *tx)
            .await
            .map_err(err("writing the history of applications"))?;
        checkpoint();
        tx.commit().await.map_err(err("committing"))?;
        checkpoint();
        Ok((rows, removed))
    }

    async fn close(self: Box<Self>) {
        self.pool.close().await;
    }
}

//! PostgreSQL target: rows staged with `COPY ... FROM STDIN` into a temporary table, then merged; a
//! session advisory lock keeps a second loader out.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row};

use super::{
    analyze_for_anti_join_sql, check_loaded_sha1, check_removal, check_rows, merge_sql,
    plan::FolderPlan, remove_missing_sql, removed_json, schema_changes_json, stage_columns,
    stream_csv, LedgerEntry, LoadRefused, Removed, TablePlan, TargetDb, TargetLocked,
    APPLIED_INSERT, CATALOG_UPSERT, LEDGER_SELECT,
};
use crate::db::{self, DbError, DbUrl, Dialect, Table};
use crate::package::checkpoint;

/// The advisory lock key every gim-export loader takes on its target.
pub const LOAD_LOCK_KEY: i64 = 0x6769_6d2d_6c6f_6164; // "gim-load"

pub struct PgTarget {
    url: DbUrl,
    pool: PgPool,
    lock: Option<PoolConnection<Postgres>>,
    /// Rows last staged per stage table: past a few thousand the stage is truncated rather than
    /// emptied row by row (a temporary table is never vacuumed).
    staged: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// The temporary stage of a table shape: kept for the session and reused by every folder that loads
/// the table with the same columns and types. Creating and dropping a temporary table costs a few
/// catalog writes, which a folder of 200 small tables paid 200 times.
fn stage_name(plan: &TablePlan) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let shape = format!(
        "{}|{}|{}",
        plan.table,
        plan.columns.join(","),
        plan.column_types.join(",")
    );
    for b in shape.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("gx_s_{h:016x}")
}

impl PgTarget {
    pub async fn connect(url: &DbUrl) -> Result<Self> {
        Ok(PgTarget {
            url: url.clone(),
            pool: db::postgres::pool(url, 3, 15).await?,
            lock: None,
            staged: Default::default(),
        })
    }
}

#[async_trait::async_trait(?Send)]
impl TargetDb for PgTarget {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn lock(&mut self) -> Result<()> {
        let err = |e| DbError::query(&self.url, "taking the load lock", e);
        let mut conn = self.pool.acquire().await.map_err(err)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOAD_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await
            .map_err(err)?;
        if !got {
            return Err(TargetLocked(self.url.to_string()).into());
        }
        self.lock = Some(conn);
        Ok(())
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
        Ok(db::postgres::read_tables(&self.pool, &self.url).await?)
    }

    async fn ledger(&self) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            &LEDGER_SELECT
                .replace(
                    "folder, hwm_from_audit_key,",
                    "folder::text, hwm_from_audit_key::bigint,",
                )
                .replace("hwm_to_audit_key,", "hwm_to_audit_key::bigint,")
                .replace(
                    "zip_sha1, COALESCE(chain_generation, 0)",
                    "zip_sha1::text, COALESCE(chain_generation, 0)::bigint",
                )
                .replace("restart_after_audit_key", "restart_after_audit_key::bigint"),
        )
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
        let mut tx = db::within_timeout(&self.url, "starting a transaction", self.pool.begin())
            .await?
            .map_err(err("starting a transaction"))?;
        // The folder's schema changes first: undone with the rest if anything fails.
        for ddl in &schema.ddl {
            db::within_timeout(
                &self.url,
                "writing to the target",
                sqlx::raw_sql(ddl).execute(&mut *tx),
            )
            .await?
            .map_err(err("changing the target schema"))?;
        }
        let catalog_sql = numbered(CATALOG_UPSERT);
        for row in &schema.catalog {
            db::within_timeout(
                &self.url,
                "writing to the target",
                sqlx::query(&catalog_sql)
                    .bind(&row.table)
                    .bind(&row.column)
                    .bind(&row.sql_type)
                    .bind(row.origin)
                    .bind(&entry.folder)
                    .execute(&mut *tx),
            )
            .await?
            .map_err(err("writing the loader's catalog"))?;
        }
        // Small tables first, all in one round trip; whatever the batch does not take goes the staged
        // way below, which also gives the precise refusal when the batch fails.
        let done = self
            .apply_small(&mut tx, zip_path, schema, plans, entry, encoding)
            .await?;
        for (i, n) in &done {
            rows.insert(plans[*i].table.clone(), *n);
        }
        for (_, plan) in plans
            .iter()
            .enumerate()
            .filter(|(i, _)| !done.contains_key(i))
        {
            // A table with no rows yet (a first load) takes the CSV straight from COPY: no stage,
            // no upsert, each row written once.
            if let Some(n) = self
                .copy_into_empty(&mut tx, zip_path, schema, plan, entry, encoding)
                .await?
            {
                rows.insert(plan.table.clone(), n);
                checkpoint();
                continue;
            }
            let what = format!("loading table {}", plan.table);
            let cols = stage_columns(plan);
            let stage = stage_name(plan);
            let big = self
                .staged
                .lock()
                .ok()
                .and_then(|m| m.get(&stage).copied())
                .is_some_and(|n| n > 5_000);
            // One round trip: the stage exists (created once per session), and is empty.
            db::within_timeout(
                &self.url,
                "writing to the target",
                sqlx::raw_sql(&format!(
                    "SET LOCAL client_min_messages = warning; \
                     CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {cols} FROM {} WITH NO DATA; {}",
                    db::quote_ident(&plan.table),
                    if big {
                        format!("TRUNCATE {stage}")
                    } else {
                        format!("DELETE FROM {stage}")
                    }
                ))
                .execute(&mut *tx),
            )
            .await?
            .map_err(err(&what))?;
            // What the folder holds that PostgreSQL refuses (a bad number, a value too long, an empty
            // key) is a refusal of the folder, not a database failure.
            let content = |e: sqlx::Error| -> anyhow::Error {
                match &e {
                    sqlx::Error::Database(d)
                        if d.code()
                            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")) =>
                    {
                        let at = d
                            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                            .and_then(|p| p.r#where())
                            .map(|w| format!(" ({w})"))
                            .unwrap_or_default();
                        LoadRefused::Table {
                            folder: entry.folder.clone(),
                            table: plan.table.clone(),
                            reason: format!("{}{at}", d.message()),
                        }
                        .into()
                    }
                    _ => err(&what)(e).into(),
                }
            };
            super::progress::table(&plan.table);
            let (mut chunks, hasher) = stream_csv(
                zip_path,
                &plan.entry,
                encoding,
                schema.limits.max_field_bytes,
            );
            let copied: Result<u64> = async {
                let mut copy = db::within_timeout(
                    &self.url,
                    &what,
                    tx.copy_in_raw(&format!(
                        "COPY {stage} ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)"
                    )),
                )
                .await?
                .map_err(content)?;
                while let Some(chunk) = chunks.recv().await {
                    db::within_timeout(&self.url, &what, copy.send(chunk))
                        .await?
                        .map_err(content)?;
                    checkpoint();
                }
                db::within_timeout(&self.url, &what, copy.finish())
                    .await?
                    .map_err(content)
            }
            .await;
            drop(chunks);
            // A zip entry that cannot be read whole (bad CRC, a method we do not read, a lying
            // size) is the folder's fault too; it explains a failed COPY better than the COPY does.
            let digest = match hasher.await.context("CSV reader thread failed")? {
                Ok(d) => d,
                Err(e) => {
                    return Err(LoadRefused::Table {
                        folder: entry.folder.clone(),
                        table: plan.table.clone(),
                        reason: format!("cannot read zip entry {}: {e:#}", plan.entry),
                    }
                    .into())
                }
            };
            let n = copied?;
            check_loaded_sha1(&entry.folder, plan, &digest)?;
            check_rows(&entry.folder, plan, n, &schema.limits)?;
            rows.insert(plan.table.clone(), n);
            if let Ok(mut m) = self.staged.lock() {
                m.insert(stage.clone(), n);
            }
            // Exports hold each key once: merge as staged, and sort out duplicates only when
            // PostgreSQL finds some (cardinality_violation) in a file made by other hands.
            // One round trip for the savepoint, the merge and its release.
            match db::within_timeout(
                &self.url,
                "writing to the target",
                sqlx::raw_sql(&format!(
                    "SAVEPOINT gx_merge; {}; RELEASE SAVEPOINT gx_merge",
                    skip_unchanged(&merge_sql(plan, &stage, false, "ctid"), plan)
                ))
                .execute(&mut *tx),
            )
            .await?
            {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("21000") => {
                    db::within_timeout(
                        &self.url,
                        "writing to the target",
                        sqlx::raw_sql(&format!(
                            "ROLLBACK TO SAVEPOINT gx_merge; {}; RELEASE SAVEPOINT gx_merge",
                            skip_unchanged(&merge_sql(plan, &stage, true, "ctid"), plan)
                        ))
                        .execute(&mut *tx),
                    )
                    .await?
                    .map_err(content)?;
                }
                Err(e) => return Err(content(e)),
            }
            if plan.remove_missing {
                // Statistics for both sides first (see analyze_for_anti_join_sql).
                db::within_timeout(
                    &self.url,
                    "writing to the target",
                    sqlx::raw_sql(&analyze_for_anti_join_sql(plan, &stage)).execute(&mut *tx),
                )
                .await?
                .map_err(err(&what))?;
                let total: i64 = sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM {}",
                    db::quote_ident(&plan.table)
                ))
                .fetch_one(&mut *tx)
                .await
                .map_err(err(&what))?;
                let gone = db::within_timeout(
                    &self.url,
                    "writing to the target",
                    sqlx::query(&remove_missing_sql(plan, &stage)).execute(&mut *tx),
                )
                .await?
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
            checkpoint();
        }
        for table in clear {
            let gone = db::within_timeout(
                &self.url,
                "writing to the target",
                sqlx::query(&format!("DELETE FROM {}", db::quote_ident(table))).execute(&mut *tx),
            )
            .await?
            .map_err(err(&format!("emptying table {table}")))?
            .rows_affected();
            check_removal(&entry.folder, table, gone, gone, schema.max_removal_percent)?;
            removed.insert(table.clone(), gone);
        }
        for d in &schema.deletes {
            let what = format!("deleting the repair's keys from {}", d.table);
            let mut gone = 0;
            for sql in &d.statements {
                gone += db::within_timeout(
                    &self.url,
                    "writing to the target",
                    sqlx::query(sql).execute(&mut *tx),
                )
                .await?
                .map_err(err(&what))?
                .rows_affected();
            }
            *removed.entry(d.table.to_ascii_lowercase()).or_default() += gone;
        }
        sqlx::query(&numbered(&super::ledger_upsert("now()::timestamp(3)")))
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
        sqlx::query(&numbered(APPLIED_INSERT))
            .bind(&entry.folder)
            .execute(&mut *tx)
            .await
            .map_err(err("writing the history of applications"))?;
        checkpoint();
        db::within_timeout(&self.url, "committing", tx.commit())
            .await?
            .map_err(err("committing"))?;
        checkpoint();
        Ok((rows, removed))
    }

    async fn close(mut self: Box<Self>) {
        if let Some(mut conn) = self.lock.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LOAD_LOCK_KEY)
                .execute(&mut *conn)
                .await;
        }
        self.pool.close().await;
    }
}

impl PgTarget {
    /// `COPY table FROM STDIN` straight into a target table that holds no rows, inside a savepoint.
    /// Returns the rows copied; `None` when the table holds rows, is a full resync's, or is small
    /// (the batch takes those), and when the COPY fails (rolled back to the savepoint: the staged
    /// path then runs, dedupes a repeated key and names the line of a refused value). A checksum or
    /// row count that does not hold refuses the folder, as on the staged path.
    async fn copy_into_empty(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        zip_path: &Path,
        schema: &FolderPlan,
        plan: &TablePlan,
        entry: &LedgerEntry,
        encoding: &'static encoding_rs::Encoding,
    ) -> Result<Option<u64>> {
        if plan.remove_missing || plan.declared_rows.is_some_and(|n| n < 5_000) {
            return Ok(None);
        }
        let what = format!("loading table {}", plan.table);
        let t = db::quote_ident(&plan.table);
        let empty: bool = sqlx::query_scalar(&format!("SELECT NOT EXISTS (SELECT 1 FROM {t})"))
            .fetch_one(&mut **tx)
            .await
            .map_err(DbError::on(&self.url, &what))?;
        if !empty {
            return Ok(None);
        }
        sqlx::raw_sql("SAVEPOINT gx_direct")
            .execute(&mut **tx)
            .await
            .map_err(DbError::on(&self.url, &what))?;
        super::progress::table(&plan.table);
        let (mut chunks, hasher) = stream_csv(
            zip_path,
            &plan.entry,
            encoding,
            schema.limits.max_field_bytes,
        );
        let copied: Result<Result<u64, sqlx::Error>> = async {
            let mut copy = match db::within_timeout(
                &self.url,
                &what,
                tx.copy_in_raw(&format!(
                    "COPY {t} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)",
                    stage_columns(plan)
                )),
            )
            .await?
            {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            while let Some(chunk) = chunks.recv().await {
                if let Err(e) = db::within_timeout(&self.url, &what, copy.send(chunk)).await? {
                    return Ok(Err(e));
                }
                checkpoint();
            }
            Ok(db::within_timeout(&self.url, &what, copy.finish()).await?)
        }
        .await;
        drop(chunks);
        let digest = hasher.await.context("CSV reader thread failed")?;
        let n = match (copied?, digest) {
            (Ok(n), Ok(digest)) => {
                check_loaded_sha1(&entry.folder, plan, &digest)?;
                check_rows(&entry.folder, plan, n, &schema.limits)?;
                n
            }
            (Err(sqlx::Error::Database(d)), Ok(_))
                if d.code()
                    .is_some_and(|c| c.starts_with("22") || c.starts_with("23")) =>
            {
                tracing::debug!(
                    "table {}: COPY into the empty table refused ({}); staging it",
                    plan.table,
                    d.message()
                );
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT gx_direct")
                    .execute(&mut **tx)
                    .await
                    .map_err(DbError::on(&self.url, &what))?;
                return Ok(None);
            }
            (Err(e), Ok(_)) => return Err(DbError::on(&self.url, &what)(e).into()),
            (_, Err(e)) => {
                return Err(LoadRefused::Table {
                    folder: entry.folder.clone(),
                    table: plan.table.clone(),
                    reason: format!("cannot read zip entry {}: {e:#}", plan.entry),
                }
                .into())
            }
        };
        sqlx::raw_sql("RELEASE SAVEPOINT gx_direct")
            .execute(&mut **tx)
            .await
            .map_err(DbError::on(&self.url, &what))?;
        tracing::debug!("table {}: {n} rows copied into the empty table", plan.table);
        Ok(Some(n))
    }

    /// Merges the folder's small tables (see [`small`](super::small)) in one batch of statements, one
    /// round trip, inside a savepoint. Returns the row count of each table it merged, by plan index;
    /// none when the batch fails (rolled back to the savepoint: the staged path then reports why).
    async fn apply_small(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        zip_path: &Path,
        schema: &FolderPlan,
        plans: &[TablePlan],
        entry: &LedgerEntry,
        encoding: &'static encoding_rs::Encoding,
    ) -> Result<BTreeMap<usize, u64>> {
        let tables =
            super::small::read_all(zip_path, plans, encoding, schema.limits.max_field_bytes)
                .await?;
        if tables.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut batch = String::from(
            "SAVEPOINT gx_small; SET LOCAL standard_conforming_strings = on; \
             SET LOCAL client_min_messages = warning;",
        );
        let mut done = BTreeMap::new();
        for t in &tables {
            if let Some(sql) = super::merge_values_sql(&plans[t.plan], &t.rows)
                .map(|sql| skip_unchanged(&sql, &plans[t.plan]))
            {
                batch.push('\n');
                batch.push_str(&sql);
                batch.push(';');
            }
            done.insert(t.plan, t.rows.len() as u64);
        }
        batch.push_str("\nRELEASE SAVEPOINT gx_small");
        let ran = db::within_timeout(
            &self.url,
            "writing to the target",
            sqlx::raw_sql(&batch).execute(&mut **tx),
        )
        .await?;
        match ran {
            Ok(_) => {
                tracing::debug!(
                    "folder {}: {} small table(s) merged in one batch",
                    entry.folder,
                    tables.len()
                );
                for t in &tables {
                    super::progress::table(&plans[t.plan].table);
                    super::progress::advance(t.rows.len() as u64);
                }
                checkpoint();
                Ok(done)
            }
            // What the rows hold that PostgreSQL refuses, or a key given twice: the staged path
            // dedupes, or says which line is wrong.
            Err(sqlx::Error::Database(d))
                if d.code().is_some_and(|c| {
                    c.starts_with("22") || c.starts_with("23") || c == "21000"
                }) =>
            {
                tracing::debug!(
                    "folder {}: the small-table batch was refused ({}); staging each table",
                    entry.folder,
                    d.message()
                );
                db::within_timeout(
                    &self.url,
                    "writing to the target",
                    sqlx::raw_sql("ROLLBACK TO SAVEPOINT gx_small").execute(&mut **tx),
                )
                .await?
                .map_err(DbError::on(&self.url, "writing to the target"))?;
                Ok(BTreeMap::new())
            }
            Err(e) => Err(DbError::on(&self.url, "writing to the target")(e).into()),
        }
    }
}

/// The upsert leaves a row that already holds the same values alone: `DO UPDATE ... WHERE (target
/// columns) IS DISTINCT FROM (incoming)`. A folder loaded again, a re-export's overlap or a full resync
/// then writes no new row versions (no heap, index or WAL traffic) for what did not change.
fn skip_unchanged(sql: &str, plan: &TablePlan) -> String {
    if !sql.contains(" DO UPDATE SET ") {
        return sql.to_string();
    }
    let t = db::quote_ident(&plan.table);
    let (mine, theirs): (Vec<String>, Vec<String>) = plan
        .columns
        .iter()
        .filter(|c| !plan.primary_key.contains(c))
        .map(|c| {
            let c = db::quote_ident(c);
            (format!("{t}.{c}"), format!("excluded.{c}"))
        })
        .unzip();
    format!(
        "{sql} WHERE ({}) IS DISTINCT FROM ({})",
        mine.join(", "),
        theirs.join(", ")
    )
}

/// `?` placeholders as PostgreSQL's `$1, $2, ...`.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(ch);
        }
    }
    out
}

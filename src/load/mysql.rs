//! MariaDB/MySQL target: rows streamed from the zip into `LOAD DATA LOCAL INFILE` (no file on disk)
//! into a temporary stage, merged with `INSERT ... SELECT ... ON DUPLICATE KEY UPDATE` in file order,
//! the ledger in the same InnoDB transaction; `GET_LOCK` keeps a second loader out.
//!
//! MariaDB and MySQL commit implicitly before any `CREATE TABLE` or `ALTER TABLE`, so a folder's schema
//! changes cannot share its transaction: they run just before it, after the loader's catalog has
//! recorded them (committed). A failure after them leaves only additions (a table, a column, a wider
//! type) that the catalog already accounts for; the next run finds them in place and plans nothing.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use tokio::sync::Mutex;

use super::{
    check_loaded_sha1, check_removal, check_rows, plan::FolderPlan, remove_missing_sql,
    removed_json, schema_changes_json, stream_checked_csv, upsert_sql, LedgerEntry, LoadRefused,
    RecordRefused, Removed, TablePlan, TargetDb, TargetLocked, APPLIED_INSERT, CATALOG_UPSERT,
    LEDGER_SELECT, LEDGER_UPSERT, NEXT_APPLY_SEQ,
};
use crate::db::{self, quote_ident, DbError, DbUrl, Dialect, Table};
use crate::package::checkpoint;
use crate::schema::SqlType;

pub struct MyTarget {
    url: DbUrl,
    /// One connection: the stage tables are temporary (per session), and the lock is the session's.
    conn: Mutex<Option<Conn>>,
    lock_name: String,
    /// The server's `max_allowed_packet`: no statement the loader sends may be larger.
    max_packet: usize,
}

/// `ON CONFLICT (key) DO UPDATE SET c = excluded.c` as MariaDB/MySQL writes it:
/// `ON DUPLICATE KEY UPDATE c = VALUES(c)` (`VALUES()` is what both servers accept).
fn on_duplicate_key(sql: &str) -> String {
    let Some(at) = sql.find(" ON CONFLICT (") else {
        return sql.to_string();
    };
    let (head, tail) = sql.split_at(at);
    let close = tail.find(')').expect("ON CONFLICT (...) is closed");
    let action = tail[close + 1..].trim_start();
    let updates = if let Some(sets) = action.strip_prefix("DO UPDATE SET ") {
        let mut out = String::new();
        let mut rest = sets;
        while let Some(i) = rest.find("excluded.") {
            out.push_str(&rest[..i]);
            let after = &rest[i + "excluded.".len()..];
            let end = after.find([',', ' ']).unwrap_or(after.len());
            out.push_str(&format!("VALUES({})", &after[..end]));
            rest = &after[end..];
        }
        out.push_str(rest);
        out
    } else {
        // DO NOTHING: a key-only table; updating a key column to itself is a no-op.
        let key = &tail["ON CONFLICT (".len() + 1..close];
        let first = key.split(',').next().unwrap_or(key).trim();
        format!("{first} = {first}")
    };
    format!("{head} ON DUPLICATE KEY UPDATE {updates}")
}

/// The temporary stage of a table for one folder: an auto-increment row number first (the file's
/// order, which decides between two lines of one key), then the table's columns as the CSV has them
/// (types copied from the table, no constraints), with an index on the key when a full resync's
/// anti-join will look rows up by key (without it the anti-join is a nested loop: rows x rows).
fn stage_sql(plan: &TablePlan, stage: &str) -> String {
    let cols = super::stage_columns(plan);
    let key = if plan.remove_missing {
        let k: Vec<String> = plan.primary_key.iter().map(|c| quote_ident(c)).collect();
        format!(", KEY gx_key ({})", k.join(", "))
    } else {
        String::new()
    };
    format!(
        "DROP TEMPORARY TABLE IF EXISTS {stage}; \
         CREATE TEMPORARY TABLE {stage} (gx_row BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY{key}) \
         ENGINE=InnoDB SELECT {cols} FROM {t} WHERE 1 = 0",
        t = quote_ident(&plan.table)
    )
}

/// `LOAD DATA LOCAL INFILE` of the CSV into the stage: fields through user variables so that an
/// empty field is NULL (`NULLIF`; the export format writes NULL and the empty string alike), binary
/// columns from PostgreSQL's hex form.
fn load_data_sql(plan: &TablePlan, stage: &str, binary: &[String]) -> String {
    let vars: Vec<String> = (0..plan.columns.len()).map(|i| format!("@v{i}")).collect();
    let sets: Vec<String> = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if binary.contains(c) {
                format!(
                    "{} = IF(@v{i} = '', NULL, UNHEX(SUBSTRING(@v{i}, 3)))",
                    quote_ident(c)
                )
            } else {
                format!("{} = NULLIF(@v{i}, '')", quote_ident(c))
            }
        })
        .collect();
    // NO_BACKSLASH_ESCAPES: the line terminator is a real newline inside the quotes.
    format!(
        "LOAD DATA LOCAL INFILE 'gim-export.csv' INTO TABLE {stage} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' \
         LINES TERMINATED BY '\n' IGNORE 1 LINES ({}) SET {}",
        vars.join(", "),
        sets.join(", ")
    )
}

/// The merge: every staged row in order (greatest version last, then the file's order), each
/// inserted or, for a key already there (in the table or earlier in the stage), updated. The last
/// write of a key wins, which dedupes a key repeated within a folder as the other targets do.
///
/// With `unique_keys` (the reading thread saw the keys strictly increase) no key repeats: the rows go
/// in the stage's own order (its primary key), with no sort.
fn merge_sql(plan: &TablePlan, stage: &str, unique_keys: bool) -> String {
    let cols = super::stage_columns(plan);
    let order = match &plan.version_column {
        // As the other targets: the greatest version wins, a missing version over any other.
        Some(v) if !unique_keys => {
            format!("{} IS NULL, {}, gx_row", quote_ident(v), quote_ident(v))
        }
        _ => "gx_row".to_string(),
    };
    on_duplicate_key(&upsert_sql(
        plan,
        &format!("SELECT {cols} FROM {stage} ORDER BY {order}"),
    ))
}

/// The data row a server message names ("... at row 2"), as text ("?" when it names none).
fn row_of(message: &str) -> String {
    message
        .rsplit_once(" row ")
        .map(|(_, n)| n.trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// The plan with the types its values are checked against: a `varchar(n)` of the model that this
/// dialect declares as TEXT (over 255 characters) is checked as `varchar(n)`, so a value too long is
/// refused here as on the other targets.
fn checked_types(plan: &TablePlan) -> TablePlan {
    let model = crate::target::model_table(&plan.table, Dialect::Postgres).or_else(|| {
        crate::target::is_custom_user_data_table(&plan.table).then(|| {
            crate::target::custom_table_from_header(&plan.table, &plan.columns, Dialect::Postgres)
        })
    });
    let mut plan = plan.clone();
    for (c, t) in plan.columns.iter().zip(plan.column_types.iter_mut()) {
        if t.eq_ignore_ascii_case("TEXT") {
            if let Some(SqlType::Varchar(n)) =
                model.as_ref().and_then(|m| m.column(c)).map(|c| c.ty)
            {
                *t = format!("VARCHAR({n})");
            }
        }
    }
    plan
}

impl MyTarget {
    pub async fn connect(url: &DbUrl) -> Result<Self> {
        let mut conn = db::mysql::connect(url).await?;
        let database = conn
            .query_first::<Option<String>, _>("SELECT DATABASE()")
            .await
            .map_err(|e| db::mysql::error(url, "reading the database name", e))?
            .flatten();
        let Some(database) = database else {
            return Err(DbError::Connect {
                url: url.to_string(),
                reason: "the URL names no database (mysql://USER@HOST/DATABASE)".into(),
                transient: false,
            }
            .into());
        };
        let max_packet = conn
            .query_first::<u64, _>("SELECT @@max_allowed_packet")
            .await
            .map_err(|e| db::mysql::error(url, "reading max_allowed_packet", e))?
            .unwrap_or(4 * 1024 * 1024) as usize;
        // GET_LOCK names are server-wide: one lock per database (at most 64 characters).
        let mut lock_name = format!("gim-export-load:{database}");
        lock_name.truncate(64);
        Ok(MyTarget {
            url: url.clone(),
            conn: Mutex::new(Some(conn)),
            lock_name,
            max_packet,
        })
    }

    async fn run(&self, what: &str, sql: &str) -> Result<()> {
        let mut guard = self.conn.lock().await;
        let conn = guard.as_mut().context("the connection is closed")?;
        db::within_timeout(&self.url, what, conn.query_drop(sql))
            .await?
            .map_err(|e| db::mysql::error(&self.url, what, e))?;
        Ok(())
    }

    /// Writes the catalog rows of the folder's schema changes, committed, then runs the changes
    /// (each commits implicitly): see the module's comment.
    async fn change_schema(
        &self,
        conn: &mut Conn,
        schema: &FolderPlan,
        folder: &str,
    ) -> Result<()> {
        if schema.catalog.is_empty() && schema.ddl.is_empty() {
            return Ok(());
        }
        let catalog_sql = on_duplicate_key(CATALOG_UPSERT);
        for row in &schema.catalog {
            let params: Vec<Value> = vec![
                row.table.clone().into(),
                row.column.clone().into(),
                row.sql_type.clone().into(),
                row.origin.into(),
                folder.into(),
            ];
            conn.exec_drop(catalog_sql.as_str(), params)
                .await
                .map_err(|e| db::mysql::error(&self.url, "writing the loader's catalog", e))?;
        }
        for ddl in &schema.ddl {
            db::within_timeout(
                &self.url,
                "changing the target schema",
                conn.query_drop(ddl),
            )
            .await?
            .map_err(|e| db::mysql::error(&self.url, "changing the target schema", e))?;
            checkpoint();
        }
        Ok(())
    }

    /// After a failed folder, takes back the tables and columns its schema changes added (empty: the
    /// rows rolled back) and their catalog rows, as the other targets' rollback does. Best effort: on a
    /// lost connection they stay, recorded in the catalog, and the next run finds them in place. A
    /// widened column stays wider.
    async fn undo_schema(&self, conn: &mut Conn, schema: &FolderPlan, folder: &str) {
        if schema.ddl.is_empty() {
            return;
        }
        // Only what this folder's statements created or added: never an adopted table.
        let ran = |needle: String| schema.ddl.iter().any(|d| d.starts_with(&needle));
        let created: Vec<&str> = schema
            .catalog
            .iter()
            .filter(|r| {
                r.column.is_empty()
                    && r.origin != "adopted"
                    && ran(format!(
                        "CREATE TABLE IF NOT EXISTS {} ",
                        quote_ident(&r.table)
                    ))
            })
            .map(|r| r.table.as_str())
            .collect();
        let mut undo = Vec::new();
        for t in &created {
            // Never a table holding rows (it was created by this folder, whose rows rolled back).
            let empty = conn
                .query_first::<i64, _>(format!("SELECT 1 FROM {} LIMIT 1", quote_ident(t)))
                .await
                .is_ok_and(|r| r.is_none());
            if empty {
                undo.push((
                    format!("DROP TABLE IF EXISTS {}", quote_ident(t)),
                    t.to_string(),
                    None,
                ));
            }
        }
        for r in schema.catalog.iter().filter(|r| {
            !r.column.is_empty()
                && !created.contains(&r.table.as_str())
                && r.origin != "widened"
                && r.origin != "adopted"
                && ran(format!(
                    "ALTER TABLE {} ADD COLUMN {} ",
                    quote_ident(&r.table),
                    quote_ident(&r.column)
                ))
        }) {
            undo.push((
                format!(
                    "ALTER TABLE {} DROP COLUMN IF EXISTS {}",
                    quote_ident(&r.table),
                    quote_ident(&r.column)
                ),
                r.table.clone(),
                Some(r.column.clone()),
            ));
        }
        for (sql, table, column) in undo {
            if let Err(e) = conn.query_drop(&sql).await {
                tracing::warn!("could not take back a schema change of {folder} ({sql}): {e}");
                return;
            }
            // Its catalog rows go with it (a whole table's, or one column's).
            let forget = match &column {
                None => conn
                    .exec_drop(
                        "DELETE FROM gim_export_catalog WHERE table_name = ? AND folder = ?",
                        (table, folder.to_string()),
                    )
                    .await,
                Some(c) => conn
                    .exec_drop(
                        "DELETE FROM gim_export_catalog WHERE table_name = ? AND column_name = ? AND folder = ?",
                        (table, c.clone(), folder.to_string()),
                    )
                    .await,
            };
            if let Err(e) = forget {
                tracing::warn!("could not take back the catalog rows of {folder}: {e}");
                return;
            }
        }
    }

    /// Stages and merges one table (`plan` with [`checked_types`]); returns the rows the CSV held, and the rows a full resync removed.
    #[allow(clippy::too_many_arguments)]
    async fn load_table(
        &self,
        conn: &mut Conn,
        zip_path: &Path,
        schema: &FolderPlan,
        plan: &TablePlan,
        binary: &[String],
        entry: &LedgerEntry,
        encoding: &'static encoding_rs::Encoding,
    ) -> Result<(u64, Option<u64>)> {
        let what = format!("loading table {}", plan.table);
        let url = &self.url;
        let stage = "gx_stage";
        let content = |e: mysql_async::Error| -> anyhow::Error {
            if db::mysql::is_content_error(&e) {
                LoadRefused::Table {
                    folder: entry.folder.clone(),
                    table: plan.table.clone(),
                    reason: match &e {
                        mysql_async::Error::Server(s) => s.message.clone(),
                        other => other.to_string(),
                    },
                }
                .into()
            } else {
                db::mysql::error(url, &what, e).into()
            }
        };
        db::within_timeout(url, &what, conn.query_drop(stage_sql(plan, stage)))
            .await?
            .map_err(|e| db::mysql::error(url, &what, e))?;
        super::progress::table(&plan.table);
        // MariaDB converts what PostgreSQL refuses (1.5 into an integer, silently): every record is
        // checked on the reading thread as the SQLite loader checks it.
        let (chunks, hasher) =
            stream_checked_csv(zip_path, plan, encoding, schema.limits.max_field_bytes);
        let data = futures::stream::unfold(chunks, |mut rx| async move {
            rx.recv()
                .await
                .map(|chunk| (Ok(bytes::Bytes::from(chunk)), rx))
        })
        .boxed();
        // The handler must be Sync; the stream is only Send: a mutex makes the pair Sync.
        let data = std::sync::Mutex::new(data);
        conn.set_infile_handler(async move {
            data.into_inner()
                .map_err(|_| std::io::Error::other("the CSV stream was poisoned").into())
        });
        let loaded = db::within_timeout(
            url,
            &what,
            conn.query_drop(load_data_sql(plan, stage, binary)),
        )
        .await?;
        let n = conn.affected_rows();
        // A zip entry that cannot be read whole is the folder's fault; it explains a failed LOAD
        // DATA better than the server does.
        let (digest, ascending) = match hasher.await.context("CSV reader thread failed")? {
            Ok(d) => d,
            Err(e) => {
                return Err(LoadRefused::Table {
                    folder: entry.folder.clone(),
                    table: plan.table.clone(),
                    reason: match e.downcast_ref::<RecordRefused>() {
                        Some(r) => r.0.clone(),
                        None => format!("cannot read zip entry {}: {e:#}", plan.entry),
                    },
                }
                .into())
            }
        };
        loaded.map_err(content)?;
        // LOAD DATA LOCAL runs as LOAD DATA IGNORE (the server cannot stop the client's stream): what
        // strict mode would refuse (a bad number, a value too long, a short row) comes back as a
        // warning with the value converted or cut. Any warning is a refusal, never a silent change.
        if conn.get_warnings() > 0 {
            let warnings: Vec<(String, u32, String)> = conn
                .query("SHOW WARNINGS LIMIT 3")
                .await
                .map_err(|e| db::mysql::error(url, &what, e))?;
            if let Some((_, code, message)) = warnings.into_iter().next() {
                return Err(LoadRefused::Table {
                    folder: entry.folder.clone(),
                    table: plan.table.clone(),
                    reason: format!("{message} (data row {}; error {code})", row_of(&message)),
                }
                .into());
            }
        }
        check_loaded_sha1(&entry.folder, plan, &digest)?;
        check_rows(&entry.folder, plan, n, &schema.limits)?;
        checkpoint();
        db::within_timeout(
            url,
            &what,
            conn.query_drop(merge_sql(plan, stage, ascending)),
        )
        .await?
        .map_err(content)?;
        let mut gone = None;
        if plan.remove_missing {
            let total: Option<u64> = conn
                .query_first(format!("SELECT COUNT(*) FROM {}", quote_ident(&plan.table)))
                .await
                .map_err(|e| db::mysql::error(url, &what, e))?;
            db::within_timeout(url, &what, conn.query_drop(remove_missing_sql(plan, stage)))
                .await?
                .map_err(|e| db::mysql::error(url, &what, e))?;
            let removed = conn.affected_rows();
            check_removal(
                &entry.folder,
                &plan.table,
                removed,
                total.unwrap_or(0),
                schema.max_removal_percent,
            )?;
            gone = Some(removed);
        }
        conn.query_drop(format!("DROP TEMPORARY TABLE IF EXISTS {stage}"))
            .await
            .map_err(|e| db::mysql::error(url, &what, e))?;
        checkpoint();
        Ok((n, gone))
    }

    /// Merges the folder's small tables (see [`small`](super::small)) as one multi-statement batch
    /// of `INSERT ... VALUES ... ON DUPLICATE KEY UPDATE`, one round trip, inside a savepoint: a
    /// 200-table folder otherwise pays a stage, a `LOAD DATA` and a merge per table. Only tables
    /// without binary columns whose integer keys ascend (no key repeats, so the order of the upsert
    /// cannot matter) and whose every value passes the [`RecordCheck`](super::RecordCheck); when
    /// the server refuses a value the batch is rolled back to the savepoint and the staged path
    /// takes over (and names the line at fault). Returns the row count of each table it merged, by plan index.
    #[allow(clippy::too_many_arguments)]
    async fn apply_small(
        &self,
        conn: &mut Conn,
        zip_path: &Path,
        schema: &FolderPlan,
        plans: &[TablePlan],
        binary: &[Vec<String>],
        entry: &LedgerEntry,
        encoding: &'static encoding_rs::Encoding,
    ) -> Result<BTreeMap<usize, u64>> {
        // Half the server's max_allowed_packet (4 MiB on older servers), at most 4 MiB.
        let batch_bytes = (self.max_packet / 2).min(4 * 1024 * 1024);
        let candidates: Vec<TablePlan> = plans
            .iter()
            .zip(binary)
            .map(|(p, b)| {
                let mut p = p.clone();
                if !b.is_empty() {
                    p.declared_rows = None; // binary columns: not a candidate
                }
                p
            })
            .collect();
        let limit = schema.limits.max_field_bytes;
        let tables = super::small::read_all(zip_path, &candidates, encoding, limit).await?;
        let mut batch = String::from("SAVEPOINT gx_small;");
        let mut done = BTreeMap::new();
        for t in &tables {
            let plan = &candidates[t.plan];
            let check = super::RecordCheck::new(plan, limit);
            let mut order = super::KeyOrder::new(plan);
            let plain = t.rows.iter().all(|r| {
                order.see(|i| r[i].as_deref());
                let rec: csv::StringRecord = r.iter().map(|v| v.as_deref().unwrap_or("")).collect();
                check.record(&rec).is_ok()
            }) && order.ascending();
            if !plain || batch.len() > batch_bytes {
                continue;
            }
            // The format cannot tell NULL from the empty string: both load as NULL, as LOAD DATA does.
            let rows: Vec<Vec<Option<String>>> = t
                .rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| v.clone().filter(|v| !v.is_empty()))
                        .collect()
                })
                .collect();
            if let Some(sql) = super::merge_values_sql(plan, &rows) {
                batch.push('\n');
                batch.push_str(&on_duplicate_key(&sql));
                batch.push(';');
            }
            done.insert(t.plan, t.rows.len() as u64);
        }
        if done.is_empty() {
            return Ok(done);
        }
        batch.push_str("\nRELEASE SAVEPOINT gx_small");
        let ran =
            db::within_timeout(&self.url, "writing to the target", conn.query_drop(&batch)).await?;
        // A plain INSERT in strict mode fails where LOAD DATA LOCAL would only warn; the values
        // passed the RecordCheck before.
        match ran {
            Ok(()) => {
                tracing::debug!(
                    "folder {}: {} small table(s) merged in one batch",
                    entry.folder,
                    done.len()
                );
                for i in done.keys() {
                    super::progress::table(&plans[*i].table);
                }
                checkpoint();
                Ok(done)
            }
            Err(e) if db::mysql::is_content_error(&e) => {
                tracing::debug!(
                    "folder {}: the small-table batch was refused ({e}); staging each table",
                    entry.folder
                );
                conn.query_drop("ROLLBACK TO SAVEPOINT gx_small")
                    .await
                    .map_err(|e| db::mysql::error(&self.url, "writing to the target", e))?;
                Ok(BTreeMap::new())
            }
            Err(e) => Err(db::mysql::error(&self.url, "writing to the target", e).into()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_in(
        &self,
        conn: &mut Conn,
        zip_path: &Path,
        schema: &FolderPlan,
        plans: &[TablePlan],
        clear: &[String],
        entry: &LedgerEntry,
        encoding: &'static encoding_rs::Encoding,
    ) -> Result<(BTreeMap<String, u64>, Removed)> {
        let mut rows = BTreeMap::new();
        let mut removed = Removed::new();
        let url = &self.url;
        let err = |what: &'static str| move |e| db::mysql::error(url, what, e);
        // The plans with the types values are checked against (see checked_types), once.
        let plans: Vec<TablePlan> = plans.iter().map(checked_types).collect();
        let plans = plans.as_slice();
        // Binary columns, from the target's declared types (the plan carries them).
        let binary: Vec<Vec<String>> = plans
            .iter()
            .map(|p| {
                p.columns
                    .iter()
                    .zip(&p.column_types)
                    .filter(|(_, t)| t.to_ascii_uppercase().contains("BLOB"))
                    .map(|(c, _)| c.clone())
                    .collect()
            })
            .collect();
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(err("starting a transaction"))?;
        let done = self
            .apply_small(conn, zip_path, schema, plans, &binary, entry, encoding)
            .await?;
        for (i, n) in &done {
            rows.insert(plans[*i].table.clone(), *n);
        }
        for (_, (plan, bin)) in plans
            .iter()
            .zip(&binary)
            .enumerate()
            .filter(|(i, _)| !done.contains_key(i))
        {
            let (n, gone) = self
                .load_table(conn, zip_path, schema, plan, bin, entry, encoding)
                .await?;
            rows.insert(plan.table.clone(), n);
            if let Some(g) = gone {
                removed.insert(plan.table.clone(), g);
            }
        }
        for table in clear {
            conn.query_drop(format!("DELETE FROM {}", quote_ident(table)))
                .await
                .map_err(err("emptying a table"))?;
            let gone = conn.affected_rows();
            check_removal(&entry.folder, table, gone, gone, schema.max_removal_percent)?;
            removed.insert(table.clone(), gone);
        }
        for d in &schema.deletes {
            let mut gone = 0;
            for sql in &d.statements {
                conn.query_drop(sql)
                    .await
                    .map_err(err("deleting a repair's keys"))?;
                gone += conn.affected_rows();
            }
            *removed.entry(d.table.to_ascii_lowercase()).or_default() += gone;
        }
        // The next application number, read in the transaction (the loader holds the lock).
        // (MariaDB refuses a subquery on the table an INSERT writes: it is read first.)
        let seq: Option<i64> = conn
            .query_first(format!("SELECT CAST(({NEXT_APPLY_SEQ}) AS SIGNED)"))
            .await
            .map_err(err("reading the ledger"))?;
        let ledger_sql = on_duplicate_key(
            &LEDGER_UPSERT
                .replace("NOW_TS", "UTC_TIMESTAMP(6)")
                .replace("(NEXT_APPLY_SEQ)", "?"),
        );
        let params: Vec<Value> = vec![
            entry.folder.clone().into(),
            entry.hwm_from.audit_key.into(),
            entry.hwm_from.created_ts.into(),
            entry.hwm_to.audit_key.into(),
            entry.hwm_to.created_ts.into(),
            entry.max_data_ts.into(),
            serde_json::to_string(&rows)?.into(),
            entry.zip_sha1.clone().into(),
            i64::from(entry.generation).into(),
            seq.unwrap_or(1).into(),
            schema_changes_json(schema).into(),
            removed_json(&removed).into(),
            entry.restart_after.into(),
        ];
        conn.exec_drop(ledger_sql.as_str(), params)
            .await
            .map_err(err("writing the ledger"))?;
        conn.exec_drop(APPLIED_INSERT, (entry.folder.clone(),))
            .await
            .map_err(err("writing the history of applications"))?;
        checkpoint();
        db::within_timeout(url, "committing", conn.query_drop("COMMIT"))
            .await?
            .map_err(err("committing"))?;
        checkpoint();
        Ok((rows, removed))
    }
}

#[async_trait::async_trait(?Send)]
impl TargetDb for MyTarget {
    fn dialect(&self) -> Dialect {
        Dialect::Mysql
    }

    fn url(&self) -> &DbUrl {
        &self.url
    }

    async fn lock(&mut self) -> Result<()> {
        let mut guard = self.conn.lock().await;
        let conn = guard.as_mut().context("the connection is closed")?;
        let got: Option<Option<i64>> = conn
            .exec_first("SELECT GET_LOCK(?, 0)", (self.lock_name.clone(),))
            .await
            .map_err(|e| db::mysql::error(&self.url, "taking the load lock", e))?;
        if got.flatten() != Some(1) {
            return Err(TargetLocked(self.url.to_string()).into());
        }
        Ok(())
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        self.run("changing the target schema", sql).await
    }

    async fn strings(&self, sql: &str) -> Result<Vec<String>> {
        let mut guard = self.conn.lock().await;
        let conn = guard.as_mut().context("the connection is closed")?;
        Ok(conn
            .query::<String, _>(sql)
            .await
            .map_err(|e| db::mysql::error(&self.url, "reading the loader's catalog", e))?)
    }

    async fn tables(&self) -> Result<Vec<Table>> {
        let mut guard = self.conn.lock().await;
        let conn = guard.as_mut().context("the connection is closed")?;
        Ok(db::mysql::read_tables(conn, &self.url).await?)
    }

    async fn ledger(&self) -> Result<Vec<LedgerEntry>> {
        let mut guard = self.conn.lock().await;
        let conn = guard.as_mut().context("the connection is closed")?;
        let sql = LEDGER_SELECT
            .replace("hwm_from_audit_key,", "CAST(hwm_from_audit_key AS SIGNED),")
            .replace("hwm_to_audit_key,", "CAST(hwm_to_audit_key AS SIGNED),")
            .replace(
                "restart_after_audit_key FROM",
                "CAST(restart_after_audit_key AS SIGNED) FROM",
            );
        let rows: Vec<mysql_async::Row> = conn
            .query(sql)
            .await
            .map_err(|e| db::mysql::error(&self.url, "reading the ledger", e))?;
        let bad = |i: usize| DbError::Query {
            url: self.url.to_string(),
            what: "reading the ledger".into(),
            reason: format!(
                "column {} of a ledger row is not what gim-export writes",
                i + 1
            ),
            transient: false,
        };
        rows.into_iter()
            .map(|mut r| {
                let mut int = |i: usize| -> Result<Option<i64>, DbError> {
                    r.take_opt::<Option<i64>, usize>(i)
                        .unwrap_or(Ok(None))
                        .map_err(|_| bad(i))
                };
                let (a, b, c, d, e) = (int(1)?, int(2)?, int(3)?, int(4)?, int(5)?);
                let (g, restart) = (int(7)?, int(8)?);
                let folder: Option<String> = r.take_opt(0).and_then(Result::ok);
                let zip_sha1: Option<String> = r
                    .take_opt::<Option<String>, usize>(6)
                    .and_then(Result::ok)
                    .flatten();
                Ok(LedgerEntry {
                    folder: folder.ok_or_else(|| bad(0))?,
                    hwm_from: crate::audit::HighWaterMark {
                        audit_key: a.ok_or_else(|| bad(1))?,
                        created_ts: b.ok_or_else(|| bad(2))?,
                    },
                    hwm_to: crate::audit::HighWaterMark {
                        audit_key: c.ok_or_else(|| bad(3))?,
                        created_ts: d.ok_or_else(|| bad(4))?,
                    },
                    max_data_ts: e.ok_or_else(|| bad(5))?,
                    zip_sha1,
                    generation: g.and_then(|g| u32::try_from(g).ok()).unwrap_or(0),
                    restart_after: restart,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()
            .map_err(Into::into)
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
        let mut guard = self.conn.lock().await;
        let conn = guard.as_mut().context("the connection is closed")?;
        self.change_schema(conn, schema, &entry.folder).await?;
        let result = self
            .apply_in(conn, zip_path, schema, plans, clear, entry, encoding)
            .await;
        if result.is_err() {
            // Whatever the folder wrote goes; a connection already lost rolled back by itself.
            let _ = conn.query_drop("ROLLBACK").await;
            self.undo_schema(conn, schema, &entry.folder).await;
        }
        result
    }

    async fn close(self: Box<Self>) {
        if let Some(mut conn) = self.conn.lock().await.take() {
            let _ = conn
                .exec_drop("SELECT RELEASE_LOCK(?)", (self.lock_name.clone(),))
                .await;
            let _ = conn.disconnect().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_conflict_becomes_on_duplicate_key_update() {
        assert_eq!(
            on_duplicate_key(
                "INSERT INTO \"t\" (\"a\", \"b\") SELECT 1 ON CONFLICT (\"a\") DO UPDATE SET \"b\" = excluded.\"b\", \"c\" = excluded.\"c\""
            ),
            "INSERT INTO \"t\" (\"a\", \"b\") SELECT 1 ON DUPLICATE KEY UPDATE \"b\" = VALUES(\"b\"), \"c\" = VALUES(\"c\")"
        );
        assert_eq!(
            on_duplicate_key(
                "INSERT INTO \"t\" (\"a\") VALUES (1) ON CONFLICT (\"a\", \"b\") DO NOTHING"
            ),
            "INSERT INTO \"t\" (\"a\") VALUES (1) ON DUPLICATE KEY UPDATE \"a\" = \"a\""
        );
        assert!(on_duplicate_key(CATALOG_UPSERT).ends_with(
            "ON DUPLICATE KEY UPDATE sql_type = VALUES(sql_type), origin = VALUES(origin), folder = VALUES(folder)"
        ));
    }
}

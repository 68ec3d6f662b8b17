//! The loader: merge export folders, in order, into the target database by primary key.
//!
//! It never applies half an export (one transaction per export, the ledger row inside it), never
//! applies one twice (the ledger says what is applied), and never applies one it cannot prove whole and
//! next in the chain (the verifier's checks and the hwm chain, before anything is written).

pub mod mysql;
pub mod plan;
pub mod postgres;
pub mod small;
pub mod sqlite;

pub use plan::{SchemaPolicy, TablePlan};

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::audit::HighWaterMark;
use crate::db::{quote_ident, DbUrl, Dialect, Table};
use crate::format::{ExportName, HashingReader};
use crate::target;
use crate::verify;

/// A validated load configuration.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub input: PathBuf,
    pub target: DbUrl,
    /// For an empty target: start from this folder instead of the first one found.
    pub from_folder: Option<String>,
    /// What the loader may change in the target's schema beyond the GIM model.
    pub schema_changes: SchemaPolicy,
    /// Existing target tables, neither GIM tables nor created by the loader, that folders may write to.
    pub adopt_tables: BTreeSet<String>,
    /// A full resync may remove at most this share (percent) of a table's rows.
    pub max_resync_removal: u32,
    /// Apply the first folder of a restarted chain (a new chain generation) over what the target holds.
    pub accept_restart: bool,
    pub limits: LoadLimits,
    /// Tries again after a transient database failure, this many times.
    pub max_retries: u32,
    /// The first wait before trying again; it doubles each time (at most 10 minutes).
    pub retry_delay_seconds: u64,
    /// `--input s3://...`: complete folders are copied from there into `input` before each pass.
    pub remote: Option<std::sync::Arc<crate::deliver::s3::S3>>,
}

/// One applied export.
#[derive(Clone, Debug)]
pub struct Applied {
    pub folder: String,
    pub rows: BTreeMap<String, u64>,
    /// Rows removed by a full resync.
    pub removed: Removed,
    /// Schema changes this folder needed (tables created, columns added or widened).
    pub schema_changes: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub applied: Vec<Applied>,
    pub already_applied: usize,
    /// Folders of a chain that a restart replaced: never applied.
    pub superseded: Vec<String>,
    pub migrations: Vec<String>,
}

/// A ledger row as read by either backend (columns: folder, hwm-from key and created-ts, hwm-to key and
/// created-ts, max-data-ts).
macro_rules! ledger_entry {
    ($r:expr) => {
        $crate::load::LedgerEntry {
            folder: $r.try_get(0)?,
            hwm_from: $crate::audit::HighWaterMark {
                audit_key: $r.try_get(1)?,
                created_ts: $r.try_get(2)?,
            },
            hwm_to: $crate::audit::HighWaterMark {
                audit_key: $r.try_get(3)?,
                created_ts: $r.try_get(4)?,
            },
            max_data_ts: $r.try_get(5)?,
            zip_sha1: $r.try_get(6)?,
            generation: {
                let g: i64 = $r.try_get(7)?;
                u32::try_from(g).unwrap_or(0)
            },
            restart_after: $r.try_get(8)?,
        }
    };
}
pub(crate) use ledger_entry;

/// A row of the ledger: an export the target holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub folder: String,
    pub hwm_from: HighWaterMark,
    pub hwm_to: HighWaterMark,
    pub max_data_ts: i64,
    /// The applied zip's SHA-1 (absent in rows written before restarts existed).
    pub zip_sha1: Option<String>,
    /// The chain the export belongs to (0 before any restart).
    pub generation: u32,
    /// On the first export of a restarted chain: the audit key the chain it replaced had reached.
    pub restart_after: Option<i64>,
}

/// The ledger's columns in the order [`ledger_entry!`] reads them, ordered as the exports were applied.
pub const LEDGER_SELECT: &str =
    "SELECT folder, hwm_from_audit_key, hwm_from_created_ts, hwm_to_audit_key, \
     hwm_to_created_ts, max_data_ts, zip_sha1, COALESCE(chain_generation, 0), restart_after_audit_key \
     FROM gim_export_ledger ORDER BY (apply_seq IS NOT NULL), apply_seq, folder";

/// Records an applied export (replacing the row of an earlier export of the same name, which a
/// restarted chain supersedes). Placeholders `?`; PostgreSQL's backend renumbers them.
pub const LEDGER_UPSERT: &str = "INSERT INTO gim_export_ledger (folder, hwm_from_audit_key, hwm_from_created_ts, \
     hwm_to_audit_key, hwm_to_created_ts, max_data_ts, row_counts, loaded_at, zip_sha1, chain_generation, apply_seq, \
     schema_changes, removed_counts, restart_after_audit_key) \
     VALUES (?, ?, ?, ?, ?, ?, ?, NOW_TS, ?, ?, (NEXT_APPLY_SEQ), ?, ?, ?) \
     ON CONFLICT (folder) DO UPDATE SET hwm_from_audit_key = excluded.hwm_from_audit_key, \
     hwm_from_created_ts = excluded.hwm_from_created_ts, hwm_to_audit_key = excluded.hwm_to_audit_key, \
     hwm_to_created_ts = excluded.hwm_to_created_ts, max_data_ts = excluded.max_data_ts, \
     row_counts = excluded.row_counts, loaded_at = excluded.loaded_at, zip_sha1 = excluded.zip_sha1, \
     chain_generation = excluded.chain_generation, apply_seq = excluded.apply_seq, \
     schema_changes = excluded.schema_changes, removed_counts = excluded.removed_counts, \
     restart_after_audit_key = excluded.restart_after_audit_key";

/// The next application number: past every number the ledger and the history hold (ledger rows
/// deleted by hand to reload folders must not make a number the history already has).
pub const NEXT_APPLY_SEQ: &str = "SELECT COALESCE(MAX(gx_seq.s), 0) + 1 FROM \
     (SELECT apply_seq AS s FROM gim_export_ledger UNION ALL SELECT apply_seq FROM gim_export_applied) gx_seq";

/// [`LEDGER_UPSERT`] with the dialect's current time (`now`) and the next application number.
pub fn ledger_upsert(now: &str) -> String {
    LEDGER_UPSERT
        .replace("NOW_TS", now)
        .replace("NEXT_APPLY_SEQ", NEXT_APPLY_SEQ)
}

/// Keeps the ledger row just written as one more application (placeholder `?`: the folder): the
/// ledger holds one row per folder name, the history every time a folder was applied.
pub const APPLIED_INSERT: &str =
    "INSERT INTO gim_export_applied (apply_seq, folder, chain_generation, \
     hwm_from_audit_key, hwm_to_audit_key, row_counts, removed_counts, zip_sha1, loaded_at) \
     SELECT apply_seq, folder, chain_generation, hwm_from_audit_key, hwm_to_audit_key, row_counts, \
     removed_counts, zip_sha1, loaded_at FROM gim_export_ledger WHERE folder = ?";

/// Records a table or column the loader created, added or widened (placeholders `?`).
pub const CATALOG_UPSERT: &str =
    "INSERT INTO gim_export_catalog (table_name, column_name, sql_type, origin, folder) \
     VALUES (?, ?, ?, ?, ?) ON CONFLICT (table_name, column_name) DO UPDATE SET \
     sql_type = excluded.sql_type, origin = excluded.origin, folder = excluded.folder";

/// The ledger's `removed_counts` value: rows a full resync removed per table, as JSON, or NULL.
pub fn removed_json(removed: &Removed) -> Option<String> {
    (!removed.is_empty()).then(|| serde_json::to_string(removed).expect("counts serialize"))
}

/// The ledger's `schema_changes` value for a folder: the changes as a JSON list, or NULL.
pub fn schema_changes_json(schema: &plan::FolderPlan) -> Option<String> {
    (!schema.changes.is_empty())
        .then(|| serde_json::to_string(&schema.changes).expect("strings serialize"))
}

/// The load stopped before applying a folder; nothing of it (or of any later folder) was written.
#[derive(Debug, thiserror::Error)]
pub enum LoadRefused {
    #[error("{folder}: not applied: {problems}")]
    Damaged { folder: String, problems: String },
    #[error(
        "{folder}: not applied: its hwm-from is audit key {from} but the target's last export {last_folder} ends at audit key {last}: the exports covering audit keys {last}..{from} are missing"
    )]
    ChainBroken {
        folder: String,
        from: i64,
        last: i64,
        last_folder: String,
    },
    #[error("{folder}: not applied: {table}.csv: {reason}")]
    Table {
        folder: String,
        table: String,
        reason: String,
    },
    #[error(
        "{folder}: not applied: it restarts the chain from audit key {from} (data from {from_ts}), but the target's last export {last_folder} ends at audit key {last} (data to {last_ts}): load the exports between them first. If there are none (the sender restarted from a date after this target's data), the rows between are in no folder: ask the sender for export --full-resync (or a restart from an earlier date), which this target can follow"
    )]
    RestartGap {
        folder: String,
        from: i64,
        from_ts: i64,
        last: i64,
        last_ts: i64,
        last_folder: String,
    },
    #[error(
        "{folder}: not applied: it starts chain generation {generation} ({kind}) in place of generation {old_generation}, which the target follows up to {last_folder}; a restart is accepted only when asked for: check that the sender restarted its chain, then load with --accept-restart"
    )]
    RestartNotAccepted {
        folder: String,
        kind: String,
        generation: u32,
        old_generation: u32,
        last_folder: String,
    },
    #[error(
        "{folder}: not applied: it claims to start chain generation {generation} after audit key {after}, but the target already holds up to audit key {last} ({last_folder}): a restart that does not fit what the target holds (forged, or from another sender)"
    )]
    RestartInconsistent {
        folder: String,
        generation: u32,
        after: i64,
        last: i64,
        last_folder: String,
    },
    #[error(
        "{folder}: not applied: it belongs to chain generation {generation} and reaches audit key {reaches}, past audit key {replaced_up_to} where generation {current} (started by {restart_folder}) replaced that chain; the target follows generation {current}: one of the two chains is not the sender's (a forged restart, or folders from another sender)"
    )]
    OlderChainContinues {
        folder: String,
        generation: u32,
        reaches: i64,
        current: u32,
        restart_folder: String,
        replaced_up_to: i64,
    },
    #[error(
        "{folder}: not applied: a folder of this name and chain was already applied with zip SHA-1 {applied}, and this copy's zip is {found}: it is not the folder the target holds (a replayed or altered copy); remove it from the input"
    )]
    ChangedReplay {
        folder: String,
        applied: String,
        found: String,
    },
    #[error("--from {0}: no such export folder in the input")]
    FromNotFound(String),
    #[error("--from applies only to an empty target; {target} already holds exports up to {last}")]
    FromOnLoadedTarget { target: String, last: String },
}

/// Another loader holds the target.
#[derive(Debug, thiserror::Error)]
#[error("another gim-export load is running on {0}")]
pub struct TargetLocked(pub String);

/// Rows a full resync removed, by table.
pub type Removed = BTreeMap<String, u64>;

/// The statement that removes the rows of `plan.table` whose key is not among the staged rows.
/// What runs before [`remove_missing_sql`] on PostgreSQL: statistics for both sides. Without them the
/// planner sees an empty stage (a temporary table has none) and a target as small as before its
/// load, and picks a nested loop whose cost grows with rows x rows; with them it takes a hash
/// anti-join, linear in the rows.
pub fn analyze_for_anti_join_sql(plan: &TablePlan, stage: &str) -> String {
    format!("ANALYZE {stage}; ANALYZE {}", quote_ident(&plan.table))
}

pub fn remove_missing_sql(plan: &TablePlan, stage: &str) -> String {
    let t = quote_ident(&plan.table);
    let on: Vec<String> = plan
        .primary_key
        .iter()
        .map(|k| format!("gx.{k} = {t}.{k}", k = quote_ident(k)))
        .collect();
    format!(
        "DELETE FROM {t} WHERE NOT EXISTS (SELECT 1 FROM {stage} gx WHERE {})",
        on.join(" AND ")
    )
}

/// The merge statement, the same in both dialects: one row per primary key (the greatest version, then
/// the last in the file), inserted or updated by primary key. Without `dedupe` the staged rows go in as
/// they are (faster; PostgreSQL rejects it when a key appears twice). `row_order` is the column that
/// follows the file's order in the freshly filled stage table (`ctid` on PostgreSQL, `rowid` on SQLite).
/// Every name is quoted, so a column called `order` is a column.
pub fn merge_sql(plan: &TablePlan, stage: &str, dedupe: bool, row_order: &str) -> String {
    let q: Vec<String> = plan.columns.iter().map(|c| quote_ident(c)).collect();
    let cols = q.join(", ");
    let pk: Vec<String> = plan.primary_key.iter().map(|c| quote_ident(c)).collect();
    let pk = pk.join(", ");
    let order = match &plan.version_column {
        Some(v) => format!("{} DESC, {row_order} DESC", quote_ident(v)),
        None => format!("{row_order} DESC"),
    };
    let source = if dedupe {
        format!("SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {pk} ORDER BY {order}) AS gx_rn FROM {stage}) gx WHERE gx_rn = 1")
    } else {
        // `WHERE true` keeps SQLite's parser from reading ON CONFLICT as a join clause.
        format!("SELECT {cols} FROM {stage} WHERE true")
    };
    upsert_sql(plan, &source)
}

/// `INSERT INTO table (columns) <source> ON CONFLICT (key) DO UPDATE ...`: the upsert every merge ends
/// in, from a `SELECT` of a stage or from `VALUES`.
pub(crate) fn upsert_sql(plan: &TablePlan, source: &str) -> String {
    let q: Vec<String> = plan.columns.iter().map(|c| quote_ident(c)).collect();
    let cols = q.join(", ");
    let pk: Vec<String> = plan.primary_key.iter().map(|c| quote_ident(c)).collect();
    let pk = pk.join(", ");
    let updates: Vec<String> = plan
        .columns
        .iter()
        .filter(|c| !plan.primary_key.contains(c))
        .map(|c| format!("{c} = excluded.{c}", c = quote_ident(c)))
        .collect();
    let action = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    format!(
        "INSERT INTO {t} ({cols}) {source} ON CONFLICT ({pk}) {action}",
        t = quote_ident(&plan.table)
    )
}

/// The merge of rows given inline (see [`small`]): `INSERT ... VALUES ... ON CONFLICT`, each value a
/// quoted literal that the database reads with the column's own input function, as `COPY` would. The
/// same upsert as [`merge_sql`] without `dedupe`: a key given twice fails (cardinality violation), and
/// the caller takes the staged path. `None` when there are no rows.
pub fn merge_values_sql(plan: &TablePlan, rows: &[Vec<Option<String>>]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let mut values = String::from("VALUES ");
    for (n, row) in rows.iter().enumerate() {
        if n > 0 {
            values.push(',');
        }
        values.push('(');
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                values.push(',');
            }
            match v {
                None => values.push_str("NULL"),
                Some(v) => {
                    values.push('\'');
                    values.push_str(&v.replace('\'', "''"));
                    values.push('\'');
                }
            }
        }
        values.push(')');
    }
    Some(upsert_sql(plan, &values))
}

/// Keys per `DELETE` statement of a repair folder's deletions.
pub const DELETE_BATCH: usize = 500;

/// `DELETE FROM table WHERE key IN (...)` (or `(a = .. AND b = ..) OR ...` for a composite key) for
/// each batch of `keys`, each value a quoted literal read with the column's own type, as
/// [`merge_values_sql`] gives them: the same text works on SQLite, PostgreSQL and MariaDB.
pub fn delete_keys_sql(table: &str, columns: &[String], keys: &[Vec<String>]) -> Vec<String> {
    let lit = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let t = quote_ident(table);
    keys.chunks(DELETE_BATCH)
        .map(|batch| {
            let cond = if columns.len() == 1 {
                let list: Vec<String> = batch.iter().map(|k| lit(&k[0])).collect();
                format!("{} IN ({})", quote_ident(&columns[0]), list.join(", "))
            } else {
                let ors: Vec<String> = batch
                    .iter()
                    .map(|k| {
                        let ands: Vec<String> = columns
                            .iter()
                            .zip(k)
                            .map(|(c, v)| format!("{} = {}", quote_ident(c), lit(v)))
                            .collect();
                        format!("({})", ands.join(" AND "))
                    })
                    .collect();
                ors.join(" OR ")
            };
            format!("DELETE FROM {t} WHERE {cond}")
        })
        .collect()
}

/// The stage table for `plan`: the target table's columns that the CSV has, in file order, no rows.
pub fn stage_columns(plan: &TablePlan) -> String {
    let q: Vec<String> = plan.columns.iter().map(|c| quote_ident(c)).collect();
    q.join(", ")
}

/// Export folders in `input` (one folder, or a directory of them), in name order.
pub fn input_folders(input: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !input.is_dir() {
        anyhow::bail!(crate::outdir::OutputError::Io {
            path: input.to_path_buf(),
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let own = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if ExportName::parse(&own).is_some() {
        return Ok(vec![(own, input.to_path_buf())]);
    }
    Ok(crate::outdir::list_exports(input)?
        .into_iter()
        .map(|(n, p)| (n.folder(), p))
        .collect())
}

/// What a target database must do for the loader. One implementation per backend, one file each
/// (`load/<backend>.rs`); [`Target::connect`] is the registry that picks one by URL. Dialect
/// differences (quoting, types, catalog queries, how rows are staged and merged) live in the backend.
#[async_trait::async_trait(?Send)]
pub trait TargetDb: Send + Sync {
    fn url(&self) -> &DbUrl;
    fn dialect(&self) -> Dialect;
    /// Takes the target for this run (one loader at a time), or fails at once with [`TargetLocked`].
    async fn lock(&mut self) -> Result<()>;
    /// Runs statements (schema changes), in one batch.
    async fn execute(&self, sql: &str) -> Result<()>;
    /// The first column of every row of `sql`, as text.
    async fn strings(&self, sql: &str) -> Result<Vec<String>>;
    /// The catalog: every table with its columns and primary key.
    async fn tables(&self) -> Result<Vec<Table>>;
    /// The ledger of applied folders, in order of application.
    async fn ledger(&self) -> Result<Vec<LedgerEntry>>;
    /// Applies one export in one transaction, its ledger row included (see [`Target::apply`]).
    async fn apply(
        &self,
        zip_path: &Path,
        schema: &plan::FolderPlan,
        plans: &[TablePlan],
        clear: &[String],
        ledger: &LedgerEntry,
        encoding: &'static encoding_rs::Encoding,
    ) -> Result<(BTreeMap<String, u64>, Removed)>;
    /// Releases the lock and the connections.
    async fn close(self: Box<Self>);
}

/// The target database, one of the backends.
pub struct Target(Box<dyn TargetDb>);

macro_rules! dispatch {
    ($self:expr, $t:ident => $e:expr) => {{
        let $t = &$self.0;
        $e
    }};
}

impl Target {
    /// The registry of target backends: the one for the URL's dialect, connected.
    pub async fn connect(url: &DbUrl) -> Result<Target> {
        Ok(Target(match url.dialect() {
            Dialect::Sqlite => Box::new(sqlite::SqliteTarget::connect(url).await?),
            Dialect::Postgres => Box::new(postgres::PgTarget::connect(url).await?),
            Dialect::Mysql => Box::new(mysql::MyTarget::connect(url).await?),
        }))
    }
    pub fn dialect(&self) -> Dialect {
        self.0.dialect()
    }
    /// Takes the target for this run, or fails at once with [`TargetLocked`].
    pub async fn lock(&mut self) -> Result<()> {
        let url = self.url().clone();
        crate::db::within_timeout(&url, "taking the load lock", self.0.lock()).await?
    }
    /// The target's URL (password masked when displayed).
    pub fn url(&self) -> &DbUrl {
        dispatch!(self, t => t.url())
    }
    /// Creates the model's tables and adds its columns where the target lacks them (what the target
    /// script does, statement by statement, in one transaction); returns what it changed. A target
    /// that already has everything costs one catalog read.
    pub async fn ensure_schema(&self) -> Result<Vec<String>> {
        let existing: BTreeMap<String, Table> = self
            .tables()
            .await?
            .into_iter()
            .map(|t| (t.lower_name(), t))
            .collect();
        let mut sql = Vec::new();
        let mut changes = Vec::new();
        for def in target::model(self.dialect()) {
            match existing.get(&def.name) {
                None => {
                    sql.push(target::create_table_sql(&def, self.dialect()));
                    changes.push(format!("created table {}", def.name));
                }
                Some(have) => {
                    for c in def
                        .columns
                        .iter()
                        .filter(|c| have.column(&c.name).is_none())
                    {
                        sql.push(target::add_column_sql(&def.name, &c.name, &c.sql_type));
                        changes.push(format!(
                            "added column {}.{} {}",
                            def.name, c.name, c.sql_type
                        ));
                    }
                }
            }
        }
        if !sql.is_empty() {
            self.execute(&format!("BEGIN;\n{};\nCOMMIT;", sql.join(";\n")))
                .await?;
        }
        Ok(changes)
    }
    pub async fn tables(&self) -> Result<Vec<Table>> {
        crate::db::within_timeout(self.url(), "reading the catalog", async {
            dispatch!(self, t => t.tables().await)
        })
        .await?
    }
    pub async fn ledger(&self) -> Result<Vec<LedgerEntry>> {
        crate::db::within_timeout(self.url(), "reading the ledger", async {
            dispatch!(self, t => t.ledger().await)
        })
        .await?
    }
    /// The tables the loader created or adopted, from its catalog.
    pub async fn catalog_tables(&self) -> Result<BTreeSet<String>> {
        let sql = "SELECT table_name FROM gim_export_catalog WHERE column_name = ''";
        let names = crate::db::within_timeout(self.url(), "reading the loader's catalog", async {
            dispatch!(self, t => t.strings(sql).await)
        })
        .await??;
        Ok(names.into_iter().collect())
    }
    pub async fn execute(&self, sql: &str) -> Result<()> {
        crate::db::within_timeout(self.url(), "changing the target schema", async {
            dispatch!(self, t => t.execute(sql).await)
        })
        .await?
    }
    /// Applies one export in one transaction, its ledger row included; returns the rows read per table.
    /// `schema` holds the folder's schema changes (run first, in the same transaction) and the
    /// catalog rows that record them; `plans` the tables to load.
    pub async fn apply(
        &self,
        zip_path: &Path,
        schema: &plan::FolderPlan,
        plans: &[TablePlan],
        clear: &[String],
        ledger: &LedgerEntry,
        encoding: &'static encoding_rs::Encoding,
    ) -> Result<(BTreeMap<String, u64>, Removed)> {
        dispatch!(self, t => t.apply(zip_path, schema, plans, clear, ledger, encoding).await)
    }
    pub async fn close(self) {
        self.0.close().await
    }
}

/// Where a target stands against the folders of an input directory (for `status --target` and the
/// loader's metrics).
#[derive(Clone, Debug, Default)]
pub struct TargetPosition {
    /// Folders in the target's ledger.
    pub applied: usize,
    /// The last folder applied.
    pub last: Option<LedgerEntry>,
    /// Folders in the input directory, after the last applied one, not in the ledger: waiting.
    pub waiting: Vec<String>,
}

/// Reads the target's ledger (without taking the load lock, and without creating a SQLite file that
/// is not there) and compares it with the folders of `input`.
pub async fn position(input: &Path, url: &DbUrl) -> Result<TargetPosition> {
    let on_disk: Vec<String> = input_folders(input)
        .map(|f| f.into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    let ledger = if url.dialect() == Dialect::Sqlite
        && !crate::db::sqlite::options(url)?.get_filename().exists()
    {
        Vec::new()
    } else {
        let target = Target::connect(url).await?;
        let has_ledger = target
            .tables()
            .await
            .map(|t| t.iter().any(|t| t.lower_name() == target::LEDGER_TABLE));
        let ledger = match has_ledger {
            Ok(true) => target.ledger().await,
            Ok(false) => Ok(Vec::new()),
            Err(e) => Err(e),
        };
        target.close().await;
        ledger?
    };
    let names: HashSet<&str> = ledger.iter().map(|e| e.folder.as_str()).collect();
    let last = ledger.last().cloned();
    let waiting = on_disk
        .into_iter()
        .filter(|n| !names.contains(n.as_str()))
        .filter(|n| last.as_ref().is_none_or(|l| n.as_str() > l.folder.as_str()))
        .collect();
    Ok(TargetPosition {
        applied: ledger.len(),
        last,
        waiting,
    })
}

/// The progress bar of the folder being loaded (on a terminal): rows of the folder's declared total,
/// the table being merged, rows per second and the time left.
pub(crate) mod progress {
    use std::sync::Mutex;

    static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

    pub fn active() -> bool {
        BAR.lock().is_ok_and(|b| b.is_some())
    }

    /// Starts the bar of a folder; `total_rows` from its extracted.xml (0 when it declares none).
    pub fn start(folder: &str, total_rows: u64) {
        if !crate::logging::progress_enabled() {
            return;
        }
        let bar = crate::logging::bars().add(if total_rows > 0 {
            indicatif::ProgressBar::new(total_rows)
        } else {
            indicatif::ProgressBar::new_spinner()
        });
        let template = if total_rows > 0 {
            "{spinner} {prefix} {msg:<26} {human_pos:>11}/{human_len} rows {rate:>12} eta {eta}"
        } else {
            "{spinner} {prefix} {msg:<26} {human_pos:>11} rows {rate:>12} {elapsed}"
        };
        bar.set_style(crate::logging::bar_style(template));
        bar.set_prefix(folder.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        if let Ok(mut b) = BAR.lock() {
            *b = Some(bar);
        }
    }

    pub fn table(name: &str) {
        if let Ok(b) = BAR.lock() {
            if let Some(b) = b.as_ref() {
                b.set_message(name.to_string());
            }
        }
    }

    pub fn advance(rows: u64) {
        if rows == 0 {
            return;
        }
        if let Ok(b) = BAR.lock() {
            if let Some(b) = b.as_ref() {
                b.inc(rows);
            }
        }
    }

    pub fn finish() {
        if let Ok(mut b) = BAR.lock() {
            if let Some(b) = b.take() {
                b.finish_and_clear();
            }
        }
    }
}

/// What a load reports as it happens (so that a result reaches the user even when a later folder
/// fails).
#[derive(Debug)]
pub enum LoadEvent<'a> {
    /// The target schema was created or migrated to the GIM model.
    Migrated(&'a [String]),
    /// A folder was applied and committed.
    Applied(&'a Applied),
}

/// Loads every folder of `config.input` not yet in the target, telling `events` as it goes. A
/// transient database failure (connection lost, timeout, deadlock) is tried again up to
/// `config.max_retries` times, waiting `retry_delay_seconds`, doubled each time (at most 10
/// minutes): each folder is one transaction, so a retry starts at the first folder not committed.
pub async fn run(
    config: &LoadConfig,
    events: &mut (dyn FnMut(LoadEvent<'_>) + Send),
) -> Result<LoadReport> {
    let mut retry = crate::db::Retry::new(config.max_retries, config.retry_delay_seconds);
    let mut report = LoadReport::default();
    loop {
        // Folders committed by an earlier attempt are in the ledger now: not "already applied".
        let applied_before = report.applied.len();
        report.already_applied = 0;
        match run_once(config, events, &mut report).await {
            Ok(()) => {
                report.already_applied = report.already_applied.saturating_sub(applied_before);
                return Ok(report);
            }
            Err(e) => {
                if !retry.again(&e).await {
                    return Err(e);
                }
            }
        }
    }
}

async fn run_once(
    config: &LoadConfig,
    events: &mut (dyn FnMut(LoadEvent<'_>) + Send),
    report: &mut LoadReport,
) -> Result<()> {
    if let Some(remote) = &config.remote {
        remote.mirror(&config.input).await?;
    }
    let folders = input_folders(&config.input)?;
    if folders.is_empty() {
        // Nothing to apply: leave the target as it is (no schema created in an empty database).
        return Ok(());
    }
    let mut target = Target::connect(&config.target).await?;
    target.lock().await?;
    let migrations = target.ensure_schema().await?;
    for m in &migrations {
        info!(migration = %m, "target schema migrated");
    }
    if !migrations.is_empty() {
        events(LoadEvent::Migrated(&migrations));
    }
    report.migrations.extend(migrations);
    let ledger = target.ledger().await?;
    let mut last: Option<LedgerEntry> = ledger.last().cloned();
    if let (Some(_), Some(l)) = (&config.from_folder, &last) {
        return Err(LoadRefused::FromOnLoadedTarget {
            target: config.target.to_string(),
            last: l.folder.clone(),
        }
        .into());
    }
    if let Some(from) = &config.from_folder {
        if !folders.iter().any(|(n, _)| n == from) {
            return Err(LoadRefused::FromNotFound(from.clone()).into());
        }
    }

    // What is new: a folder whose name the ledger lacks, or that differs from the export applied
    // under that name (its zip, or its chain: a restarted chain can reuse a name and even the bytes).
    let applied: BTreeMap<&str, &LedgerEntry> =
        ledger.iter().map(|e| (e.folder.as_str(), e)).collect();
    let mut candidates: Vec<Candidate> = Vec::new();
    for (name, path) in &folders {
        let meta = ExportName::parse(name).and_then(|n| crate::outdir::read_meta(path, &n).ok());
        let zip_sha1 = read_zip_sha1(path, name, meta.as_ref());
        if let Some(done) = applied.get(name.as_str()) {
            // The same name in the same chain with other bytes is not the folder the target holds:
            // a replay (an older version put back) or a forgery. (A restarted chain may reuse a name:
            // its generation differs.)
            if let (Some(sha), Some(m)) = (&done.zip_sha1, &meta) {
                if m.generation == done.generation && zip_sha1.as_ref() != Some(sha) {
                    return Err(LoadRefused::ChangedReplay {
                        folder: name.clone(),
                        applied: sha.clone(),
                        found: zip_sha1.clone().unwrap_or_else(|| "none".into()),
                    }
                    .into());
                }
            }
            let same = match &done.zip_sha1 {
                None => true, // applied before the ledger kept checksums
                Some(sha) => {
                    zip_sha1.as_ref() == Some(sha)
                        && meta
                            .as_ref()
                            .is_none_or(|m| m.generation == done.generation)
                }
            };
            if same {
                report.already_applied += 1;
                continue;
            }
        }
        if config.from_folder.as_ref().is_some_and(|f| name < f) {
            continue;
        }
        candidates.push(Candidate {
            name: name.clone(),
            path: path.clone(),
            meta,
            zip_sha1,
        });
    }

    let mut catalog_cache: Option<TargetCatalog> = None;
    while let Some(i) = next_folder(&candidates, last.as_ref()) {
        if crate::signals::stop_requested() {
            target.close().await;
            return Err(crate::signals::stopped(format!(
                "the load stopped after {} folder(s); run again to go on",
                report.applied.len()
            ))
            .into());
        }
        let Candidate {
            name,
            path,
            zip_sha1,
            ..
        } = candidates.remove(i);
        let check = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                verify::check_folder_at(&path, verify::Depth::Structure)
            })
            .await?
        };
        if !check.is_ok() {
            return Err(LoadRefused::Damaged {
                folder: name.clone(),
                problems: summarize(&check.problems),
            }
            .into());
        }
        let meta = check
            .meta
            .clone()
            .expect("a folder that passed has metadata");
        let encoding = crate::encoding::OutputEncoding::of_export(meta.encoding.as_deref())
            .map_err(|e| LoadRefused::Damaged {
                folder: name.clone(),
                problems: e,
            })?;
        // An encrypted folder's zip was decrypted by the check (and is removed with it).
        let zip_path = check.zip_path();
        let full: Option<&Vec<String>> = meta
            .restart
            .as_ref()
            .filter(|r| r.kind == crate::format::RestartKind::Full)
            .and(meta.full_tables.as_ref());
        let folder_plan = plan_folder_load(
            &target,
            &mut catalog_cache,
            &zip_path,
            &name,
            &meta,
            encoding,
            config,
        )
        .await?;
        let mut folder_plan = folder_plan;
        folder_plan.max_removal_percent = config.max_resync_removal;
        folder_plan.limits = config.limits;
        let mut plans = folder_plan.tables.clone();
        for p in &mut plans {
            p.remove_missing = full.is_some_and(|f| f.contains(&p.table));
        }
        // Tables the full resync holds with no rows at all: everything in them goes, but only in
        // tables the loader owns (GIM tables, custom user-data tables, those in its catalog), never
        // its own ledger or catalog.
        let clear: Vec<String> = match full {
            None => Vec::new(),
            Some(f) => {
                let present: HashSet<String> = target
                    .tables()
                    .await?
                    .iter()
                    .map(|t| t.lower_name())
                    .collect();
                let catalog = target.catalog_tables().await?;
                let mut clear = Vec::new();
                for t in f.iter().map(|t| t.to_ascii_lowercase()) {
                    if !present.contains(&t) || plans.iter().any(|p| p.table == t) {
                        continue;
                    }
                    let owned = !target::is_loader_table(&t)
                        && (crate::schema::model().table(&t).is_some()
                            || target::is_custom_user_data_table(&t)
                            || catalog.contains(&t));
                    if !owned {
                        return Err(LoadRefused::Table {
                            folder: name.clone(),
                            table: t.clone(),
                            reason: "its <full-tables> names a table the loader does not own; a full resync empties only tables the loader owns".into(),
                        }
                        .into());
                    }
                    clear.push(t);
                }
                clear
            }
        };
        let entry = LedgerEntry {
            folder: name.clone(),
            hwm_from: meta.hwm_from,
            hwm_to: meta.hwm_to,
            max_data_ts: meta.max_data_ts,
            zip_sha1,
            generation: meta.generation,
            restart_after: meta.restart.as_ref().map(|r| r.after.audit_key),
        };
        if let (Some(r), Some(l)) = (&meta.restart, &last) {
            // A generation switch is rare and replaces what the target follows: it must be asked
            // for, and it must fit what the target holds.
            if r.after.audit_key < l.hwm_to.audit_key
                || (r.after.audit_key == l.hwm_to.audit_key
                    && r.after.created_ts != l.hwm_to.created_ts)
            {
                return Err(LoadRefused::RestartInconsistent {
                    folder: name.clone(),
                    generation: meta.generation,
                    after: r.after.audit_key,
                    last: l.hwm_to.audit_key,
                    last_folder: l.folder.clone(),
                }
                .into());
            }
            if !config.accept_restart {
                return Err(LoadRefused::RestartNotAccepted {
                    folder: name.clone(),
                    kind: r.kind.as_str().to_string(),
                    generation: meta.generation,
                    old_generation: l.generation,
                    last_folder: l.folder.clone(),
                }
                .into());
            }
            warn!(
                folder = %name,
                kind = r.kind.as_str(),
                generation = meta.generation,
                replaces_generation = l.generation,
                replaces_after = %l.folder,
                "a restarted chain replaces the one the target followed (--accept-restart)"
            );
        }
        tracing::debug!(
            folder = %name,
            hwm_from = meta.hwm_from.audit_key,
            hwm_to = meta.hwm_to.audit_key,
            generation = meta.generation,
            tables = plans.len(),
            clear = clear.len(),
            schema_changes = folder_plan.changes.len(),
            "folder planned"
        );
        let started = std::time::Instant::now();
        for c in &folder_plan.changes {
            info!(folder = %name, change = %c, "target schema changed");
        }
        progress::start(&name, meta.tables.iter().map(|t| t.rows).sum());
        let applying = target.apply(&zip_path, &folder_plan, &plans, &clear, &entry, encoding);
        // A second stop request abandons the folder: its transaction rolls back.
        let applied = tokio::select! {
            r = applying => r,
            _ = crate::signals::abandoned() => Err(anyhow::Error::new(crate::signals::stopped(
                format!("{name} was abandoned (rolled back); run again to go on"),
            ))),
        };
        progress::finish();
        let (rows, removed) = match applied {
            Ok(r) => r,
            Err(e) if e.downcast_ref::<crate::signals::Stopped>().is_some() => {
                target.close().await;
                return Err(e);
            }
            // A refusal names the folder already; anything else gets it here.
            Err(e) if e.downcast_ref::<LoadRefused>().is_some() => return Err(e),
            Err(e) => return Err(e.context(format!("{name}: not applied"))),
        };
        for (table, n) in &rows {
            tracing::debug!(folder = %name, table = %table, rows = n, "table merged");
        }
        info!(
            folder = %name,
            tables = plans.len(),
            rows = rows.values().sum::<u64>(),
            removed = removed.values().sum::<u64>(),
            seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            "applied"
        );
        report.applied.push(Applied {
            folder: name.clone(),
            rows,
            removed,
            schema_changes: folder_plan.changes.clone(),
        });
        if !folder_plan.ddl.is_empty() || !folder_plan.catalog.is_empty() {
            catalog_cache = None; // the folder changed the schema or the catalog: read them again
        }
        events(LoadEvent::Applied(
            report.applied.last().expect("just pushed"),
        ));
        last = Some(entry);
    }

    // What is left could not be placed after the target's last export.
    let tip = last.as_ref();
    let restarts: Vec<LedgerEntry> = {
        let mut r: Vec<LedgerEntry> = target
            .ledger()
            .await?
            .into_iter()
            .filter(|e| e.restart_after.is_some())
            .collect();
        r.sort_by_key(|e| e.generation);
        r
    };
    let mut blocking: Option<LoadRefused> = None;
    for c in &candidates {
        let refusal = match (&c.meta, tip) {
            (None, _) => {
                let check = verify::check_folder_at(&c.path, verify::Depth::Structure);
                Some(LoadRefused::Damaged {
                    folder: c.name.clone(),
                    problems: if check.problems.is_empty() {
                        "its metadata cannot be read".into()
                    } else {
                        summarize(&check.problems)
                    },
                })
            }
            (Some(m), Some(t)) if m.generation < t.generation => {
                // A folder of a chain a restart replaced is expected (an inbox keeps them); one that
                // goes past where that chain was replaced means one of the chains is not genuine.
                let restart = restarts.iter().find(|r| r.generation > m.generation);
                match restart.and_then(|r| r.restart_after.map(|a| (r, a))) {
                    Some((r, after)) if m.hwm_to.audit_key > after => {
                        Some(LoadRefused::OlderChainContinues {
                            folder: c.name.clone(),
                            generation: m.generation,
                            reaches: m.hwm_to.audit_key,
                            current: t.generation,
                            restart_folder: r.folder.clone(),
                            replaced_up_to: after,
                        })
                    }
                    _ => {
                        info!(folder = %c.name, "replaced by a restarted chain: skipped");
                        report.superseded.push(c.name.clone());
                        None
                    }
                }
            }
            (Some(m), Some(t))
                if m.generation == t.generation && m.hwm_to.audit_key <= t.hwm_to.audit_key =>
            {
                if m.repair.is_some() {
                    warn!(folder = %c.name, last = %t.folder, "a repair made for an earlier position of the target, which has moved past it: skipped (run compare --repair again)");
                } else {
                    warn!(folder = %c.name, last = %t.folder, "older than the last applied export and not in the ledger: skipped");
                }
                None
            }
            (Some(m), Some(t)) if m.restart.is_some() => Some(LoadRefused::RestartGap {
                folder: c.name.clone(),
                from: m.hwm_from.audit_key,
                from_ts: m.max_data_ts_from.unwrap_or(m.max_data_ts),
                last: t.hwm_to.audit_key,
                last_ts: t.max_data_ts,
                last_folder: t.folder.clone(),
            }),
            (Some(m), Some(t)) => Some(LoadRefused::ChainBroken {
                folder: c.name.clone(),
                from: m.hwm_from.audit_key,
                last: t.hwm_to.audit_key,
                last_folder: t.folder.clone(),
            }),
            (Some(_), None) => None,
        };
        if blocking.is_none() {
            blocking = refusal;
        }
    }
    if let Some(r) = blocking {
        target.close().await;
        return Err(r.into());
    }
    target.close().await;
    Ok(())
}

/// The target's tables and the loader's catalog of the tables it owns, read once and kept while no
/// folder changes the schema: on a 200-table target the catalog cost more than a small folder's rows.
struct TargetCatalog {
    tables: BTreeMap<String, Table>,
    owned: BTreeSet<String>,
}

/// An input folder not applied yet.
struct Candidate {
    name: String,
    path: PathBuf,
    /// `None` when extracted.xml cannot be read (the folder is refused when its turn would come).
    meta: Option<crate::format::ExportMetadata>,
    /// What its `.zip.sha1` names (the structure check proves the zip matches before it is applied).
    zip_sha1: Option<String>,
}

/// The zip checksum a folder's `.zip.sha1` names (an encrypted folder's extracted.xml, `meta`, gives
/// its zip's).
fn read_zip_sha1(
    path: &Path,
    name: &str,
    meta: Option<&crate::format::ExportMetadata>,
) -> Option<String> {
    let n = ExportName::parse(name)?;
    if let Some(enc) = meta.and_then(|m| m.encrypted.as_ref()) {
        return Some(enc.zip_sha1.clone());
    }
    let text = std::fs::read_to_string(path.join(n.zip_sha1_file())).ok()?;
    crate::format::parse_sha1_line(&text, name)
        .ok()
        .map(|(d, _)| d)
}

/// The candidate to apply after `last`: the next export of its chain, or the first export of a later
/// chain (a restart) that starts at or before where the target stands, the latest chain first. An
/// empty target starts with the first folder in name order.
fn next_folder(candidates: &[Candidate], last: Option<&LedgerEntry>) -> Option<usize> {
    let Some(t) = last else {
        return candidates
            .iter()
            .position(|c| c.meta.is_some())
            .filter(|&i| {
                // A damaged folder first in line is refused, not passed over.
                candidates[..i].iter().all(|c| c.meta.is_some())
            });
    };
    let mut best: Option<(u32, usize)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let Some(m) = &c.meta else { continue };
        let follows = if m.generation == t.generation {
            m.restart.is_none() && m.hwm_from == t.hwm_to
        } else {
            m.generation > t.generation
                && m.restart.is_some()
                && m.hwm_from.audit_key <= t.hwm_to.audit_key
                && m.max_data_ts_from.unwrap_or(i64::MIN) <= t.max_data_ts
        };
        if follows && best.is_none_or(|(g, _)| m.generation > g) {
            best = Some((m.generation, i));
        }
    }
    best.map(|(_, i)| i)
}

/// Plans one folder (see [`plan`]): reads each CSV's header, classifies the values of the columns the
/// model does not type, and decides the target tables and the schema changes, or refuses the folder
/// with the table and the reason. Nothing is written here.
async fn plan_folder_load(
    target: &Target,
    cache: &mut Option<TargetCatalog>,
    zip_path: &Path,
    folder: &str,
    meta: &crate::format::ExportMetadata,
    encoding: &'static encoding_rs::Encoding,
    config: &LoadConfig,
) -> Result<plan::FolderPlan> {
    if cache.is_none() {
        *cache = Some(TargetCatalog {
            tables: target
                .tables()
                .await?
                .into_iter()
                .map(|t| (t.lower_name(), t))
                .collect(),
            owned: target.catalog_tables().await?,
        });
    }
    let known = cache.as_ref().expect("just filled");
    let ctx = plan::PlanContext {
        dialect: target.dialect(),
        policy: config.schema_changes,
        catalog: known.owned.clone(),
        adopt: config.adopt_tables.clone(),
    };
    let existing: BTreeMap<String, Table> = known.tables.clone();
    let dialect = target.dialect();
    let xml_keys: BTreeMap<String, Vec<String>> = meta
        .tables
        .iter()
        .map(|t| (t.name.to_ascii_lowercase(), t.key.clone()))
        .collect();
    let xml_rows: BTreeMap<String, u64> = meta
        .tables
        .iter()
        .map(|t| (t.name.to_ascii_lowercase(), t.rows))
        .collect();
    let limits = config.limits;
    let zip_path = zip_path.to_path_buf();
    let folder_name = folder.to_string();
    let repair = meta.repair.clone();
    tokio::task::spawn_blocking(move || -> Result<plan::FolderPlan> {
        // A zip whose entries cannot be read (an unsupported method, a bad CRC) is the folder's fault.
        let damaged = |e: anyhow::Error| LoadRefused::Damaged {
            folder: folder_name.clone(),
            problems: format!("{e:#}"),
        };
        let mut entries = read_headers(&zip_path, encoding, &limits).map_err(damaged)?;
        let (deletions, rest): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|e| crate::format::delete_table_of(&e.entry).is_some());
        entries = rest;
        let deletes = plan_deletes(
            &zip_path,
            &folder_name,
            repair.as_ref(),
            &deletions,
            &existing,
            encoding,
        )?;
        for e in &mut entries {
            e.xml_key = xml_keys.get(&e.table).cloned().unwrap_or_default();
            e.xml_rows = xml_rows.get(&e.table).copied();
        }
        let mut classes = BTreeMap::new();
        for e in &entries {
            let columns = plan::columns_to_classify(e, existing.get(&e.table), dialect);
            if !columns.is_empty() {
                classes.insert(
                    e.table.clone(),
                    classify(&zip_path, e, &columns, encoding)
                        .with_context(|| format!("reading {}", e.entry))
                        .map_err(damaged)?,
                );
            }
        }
        let mut plan = plan::plan_folder(&entries, &existing, &classes, &ctx).map_err(|r| {
            anyhow::Error::from(LoadRefused::Table {
                folder: folder_name.clone(),
                table: r.table,
                reason: r.reason,
            })
        })?;
        plan.deletes = deletes;
        Ok(plan)
    })
    .await?
}

/// A repair folder's deletion lists (`<table>.delete.csv`), read and checked: only in a folder whose
/// metadata says it is a repair and lists the file, over the table's whole primary key, with the
/// checksum its `.sha1` names. A table the target does not have has nothing to delete.
fn plan_deletes(
    zip_path: &Path,
    folder: &str,
    repair: Option<&crate::format::Repair>,
    entries: &[plan::CsvEntry],
    existing: &BTreeMap<String, Table>,
    encoding: &'static encoding_rs::Encoding,
) -> Result<Vec<plan::DeletePlan>> {
    let damaged = |problems: String| LoadRefused::Damaged {
        folder: folder.to_string(),
        problems,
    };
    let mut out = Vec::new();
    // Every deletion list the metadata names must be in the zip: a missing one is not "nothing to delete".
    for d in repair.iter().flat_map(|r| &r.deletes) {
        if !entries
            .iter()
            .any(|e| e.entry.eq_ignore_ascii_case(&d.file))
        {
            return Err(damaged(format!(
                "its <repair> lists {} but the zip has no such entry",
                d.file
            ))
            .into());
        }
    }
    for e in entries {
        let table = crate::format::delete_table_of(&e.entry).expect("partitioned on it");
        let Some(r) = repair else {
            return Err(damaged(format!(
                "entry {} is a list of keys to delete, but the folder is not a repair folder (no <repair> in its metadata)",
                e.entry
            ))
            .into());
        };
        let Some(listed) = r
            .deletes
            .iter()
            .find(|d| d.file.eq_ignore_ascii_case(&e.entry))
        else {
            return Err(damaged(format!(
                "entry {} is not listed in the metadata's <repair>",
                e.entry
            ))
            .into());
        };
        let refuse = |reason: String| LoadRefused::Table {
            folder: folder.to_string(),
            table: table.clone(),
            reason,
        };
        let Some(target) = existing.get(&table) else {
            continue;
        };
        let key: BTreeSet<String> = target
            .primary_key
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect();
        let given: BTreeSet<String> = e.header.iter().cloned().collect();
        if key.is_empty() || key != given || given.len() != e.header.len() {
            return Err(refuse(format!(
                "{} names the columns {} but the target's primary key is {}: a repair deletes by the whole key only",
                e.entry,
                e.header.join(","),
                if key.is_empty() {
                    "missing".to_string()
                } else {
                    key.iter().cloned().collect::<Vec<_>>().join(",")
                }
            ))
            .into());
        }
        let mut zip = zip::ZipArchive::new(std::fs::File::open(zip_path)?)?;
        let file = zip.by_name(&e.entry)?;
        let mut raw = crate::format::HashingReader::new(file);
        let mut keys: Vec<Vec<String>> = Vec::new();
        {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(crate::encoding::decoding_reader(&mut raw, encoding));
            for rec in reader.records() {
                let rec = rec.map_err(|err| {
                    damaged(format!(
                        "{}: {}",
                        e.entry,
                        crate::format::describe_csv_error(&err)
                    ))
                })?;
                keys.push(rec.iter().map(String::from).collect());
            }
        }
        std::io::copy(&mut raw, &mut std::io::sink())?;
        let digest = raw.hex();
        if digest != e.sha1 || digest != listed.sha1 {
            return Err(damaged(format!(
                "{}: checksum mismatch (data {digest}, its .sha1 says {}, the metadata {})",
                e.entry, e.sha1, listed.sha1
            ))
            .into());
        }
        if keys.len() as u64 != listed.rows {
            return Err(damaged(format!(
                "{}: {} keys, the metadata says {}",
                e.entry,
                keys.len(),
                listed.rows
            ))
            .into());
        }
        // The target's own spelling of the key columns.
        let columns: Vec<String> = e
            .header
            .iter()
            .map(|h| {
                target
                    .columns
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case(h))
                    .map_or_else(|| h.clone(), |c| c.name.clone())
            })
            .collect();
        out.push(plan::DeletePlan {
            table: target.name.clone(),
            keys: keys.len() as u64,
            statements: delete_keys_sql(&target.name, &columns, &keys),
        });
    }
    Ok(out)
}

/// A folder's problems on one line: the first ten, then how many more (a crafted zip of 300,000
/// entries must not make a 39 MB message).
pub fn summarize(problems: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = problems[..problems.len().min(SHOWN)].join("; ");
    if problems.len() > SHOWN {
        text.push_str(&format!("; and {} more problem(s)", problems.len() - SHOWN));
    }
    text
}

/// The widest class of the values of `columns` in one CSV (a column with no value: `None`).
fn classify(
    zip_path: &Path,
    entry: &plan::CsvEntry,
    columns: &[String],
    encoding: &'static encoding_rs::Encoding,
) -> Result<plan::ValueClasses> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(zip_path)?)?;
    let file = zip.by_name(&entry.entry)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(crate::encoding::decoding_reader(file, encoding));
    let at: Vec<(usize, &String)> = columns
        .iter()
        .filter_map(|c| entry.header.iter().position(|h| h == c).map(|i| (i, c)))
        .collect();
    let mut widest: Vec<Option<crate::schema::Inferred>> = vec![None; at.len()];
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record)? {
        for (slot, (i, _)) in widest.iter_mut().zip(&at) {
            if *slot == Some(crate::schema::Inferred::Text) {
                continue;
            }
            if let Some(v) = record.get(*i).filter(|v| !v.is_empty()) {
                let class = crate::schema::Inferred::of(v);
                *slot = Some(slot.map_or(class, |s| s.max(class)));
            }
        }
    }
    Ok(at
        .iter()
        .zip(widest)
        .map(|((_, c), w)| ((*c).clone(), w))
        .collect())
}

/// The header of every CSV in a zip (names folded to lower case) and the checksum its `.sha1` names.
fn read_headers(
    zip_path: &Path,
    encoding: &'static encoding_rs::Encoding,
    limits: &LoadLimits,
) -> Result<Vec<plan::CsvEntry>> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(zip_path)?)?;
    let mut out = Vec::new();
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()?;
    for entry in &names {
        let Some(table) = crate::format::csv_table_of(entry) else {
            continue;
        };
        // The checksum entry beside it, in whatever case it was written.
        let sha_entry = names
            .iter()
            .find(|n| crate::format::sha1_target_of(n) == Some(entry.as_str()))
            .cloned()
            .unwrap_or_else(|| format!("{entry}.sha1"));
        let mut sha = String::new();
        zip.by_name(&sha_entry)?.read_to_string(&mut sha)?;
        let (digest, _) = crate::format::parse_sha1_line(&sha, entry)?;
        let file = zip
            .by_name(entry)
            .with_context(|| format!("entry {entry}"))?;
        if file.size()
            > limits
                .max_zip_ratio
                .saturating_mul(file.compressed_size().max(1))
        {
            anyhow::bail!(
                "entry {entry}: {} bytes compressed into {} is more than --max-zip-ratio {} to 1 (a zip bomb?)",
                file.size(),
                file.compressed_size(),
                limits.max_zip_ratio
            );
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(crate::encoding::decoding_reader(file, encoding));
        let header: Vec<String> = reader
            .headers()
            .with_context(|| format!("entry {entry}: its header"))?
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        out.push(plan::CsvEntry {
            entry: entry.clone(),
            table,
            header,
            sha1: digest,
            xml_key: Vec::new(),
            xml_rows: None,
        });
    }
    out.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(out)
}

/// Streams one CSV out of the zip on a blocking thread (decompressing and hashing while the database
/// takes the previous chunks), in chunks through a bounded channel. The thread returns the CSV's SHA-1.
pub fn stream_csv(
    zip_path: &Path,
    entry: &str,
    encoding: &'static encoding_rs::Encoding,
    max_field_bytes: u64,
) -> (
    tokio::sync::mpsc::Receiver<Vec<u8>>,
    tokio::task::JoinHandle<Result<String>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let (zip_path, entry) = (zip_path.to_path_buf(), entry.to_string());
    let handle = tokio::task::spawn_blocking(move || {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path)?)?;
        let mut raw = open_csv(&mut zip, &entry)?;
        let mut reader = crate::encoding::decoding_reader(&mut raw, encoding);
        let mut meter = FieldMeter::default();
        // Rows for the progress bar, only when one is drawn (the header is the first record).
        let mut records = progress::active().then(crate::format::CsvRecordCounter::default);
        let mut counted = 0u64;
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            let mut filled = 0;
            while filled < buf.len() {
                let n = reader.read(&mut buf[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            meter.feed(&buf);
            if let Some(r) = records.as_mut() {
                r.feed(&buf);
                let now = r.records().saturating_sub(1);
                progress::advance(now - counted.min(now));
                counted = now;
            }
            if meter.longest > max_field_bytes {
                anyhow::bail!("a field is longer than {max_field_bytes} bytes (--max-field-bytes)");
            }
            if tx.blocking_send(buf).is_err() {
                break; // the loader stopped; it reports its own error
            }
        }
        drop(reader);
        Ok(raw.hex())
    });
    (rx, handle)
}

/// The checks a target that would take anything makes of each CSV record, as PostgreSQL would refuse
/// it: the header's width, no empty primary-key field, numbers where the declared type wants them,
/// no text longer than its `varchar`, no field over `--max-field-bytes`. Messages name line and column.
pub struct RecordCheck<'a> {
    plan: &'a TablePlan,
    rules: Vec<plan::FieldRule>,
    is_key: Vec<bool>,
    max_field_bytes: u64,
}

impl<'a> RecordCheck<'a> {
    pub fn new(plan: &'a TablePlan, max_field_bytes: u64) -> Self {
        RecordCheck {
            rules: plan
                .column_types
                .iter()
                .map(|t| plan::FieldRule::of(t))
                .collect(),
            is_key: plan
                .columns
                .iter()
                .map(|c| plan.primary_key.contains(c))
                .collect(),
            plan,
            max_field_bytes,
        }
    }

    pub fn record(&self, rec: &csv::StringRecord) -> Result<(), String> {
        let line = rec.position().map_or(0, |p| p.line());
        let plan = self.plan;
        if rec.len() != plan.columns.len() {
            return Err(format!(
                "line {line}: {} fields where the header has {}",
                rec.len(),
                plan.columns.len()
            ));
        }
        for (i, f) in rec.iter().enumerate() {
            if f.len() as u64 > self.max_field_bytes {
                return Err(format!(
                    "line {line}, column {}: a field is longer than {} bytes (--max-field-bytes)",
                    plan.columns[i], self.max_field_bytes
                ));
            }
            if f.is_empty() {
                if self.is_key[i] {
                    return Err(format!(
                        "line {line}: primary-key column {} is empty",
                        plan.columns[i]
                    ));
                }
            } else if let Err(why) = self.rules[i].check(f) {
                return Err(format!(
                    "line {line}, column {} ({}): {why}",
                    plan.columns[i], plan.column_types[i]
                ));
            }
        }
        Ok(())
    }
}

/// Whether a file's keys are integers in strictly ascending order, as exports write them, seen one
/// record at a time in constant memory: then no key repeats, and a merge needs neither a dedupe nor
/// an order. Any other key (a text, an empty field, a step back) makes it false for good.
pub struct KeyOrder {
    key_at: Vec<usize>,
    last: Vec<i128>,
    key: Vec<i128>,
    ascending: bool,
}

impl KeyOrder {
    pub fn new(plan: &TablePlan) -> Self {
        let key_at: Vec<usize> = plan
            .primary_key
            .iter()
            .filter_map(|k| plan.columns.iter().position(|c| c == k))
            .collect();
        KeyOrder {
            ascending: key_at.len() == plan.primary_key.len(),
            key_at,
            last: Vec::new(),
            key: Vec::new(),
        }
    }

    /// Takes the next record's fields (`field(i)` is column `i`, `None` when empty).
    pub fn see<'r>(&mut self, field: impl Fn(usize) -> Option<&'r str>) {
        if !self.ascending {
            return;
        }
        self.key.clear();
        self.key.extend(
            self.key_at
                .iter()
                .filter_map(|&i| field(i).and_then(|v| v.parse::<i128>().ok())),
        );
        self.ascending =
            self.key.len() == self.key_at.len() && (self.last.is_empty() || self.key > self.last);
        std::mem::swap(&mut self.last, &mut self.key);
    }

    pub fn ascending(&self) -> bool {
        self.ascending
    }
}

/// A CSV's content refused by [`RecordCheck`] while streaming (see [`stream_checked_csv`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RecordRefused(pub String);

/// [`stream_csv`] for a target whose server would convert rather than refuse (MariaDB/MySQL rounds
/// `1.5` into an integer without a word): every record is parsed and checked with [`RecordCheck`] on
/// the reading thread, beside the server's work; the first bad record ends the stream with a
/// [`RecordRefused`] error. The thread returns the CSV's SHA-1 and whether its keys were integers in
/// strictly increasing order (as exports write them): then no key repeats, and a merge needs no sort.
pub fn stream_checked_csv(
    zip_path: &Path,
    plan: &TablePlan,
    encoding: &'static encoding_rs::Encoding,
    max_field_bytes: u64,
) -> (tokio::sync::mpsc::Receiver<Vec<u8>>, CheckedStream) {
    /// Keeps what the CSV reader reads, to forward it as it was.
    struct Capture<R> {
        inner: R,
        taken: Vec<u8>,
    }
    impl<R: Read> Read for Capture<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let (zip_path, plan) = (zip_path.to_path_buf(), plan.clone());
    let handle = tokio::task::spawn_blocking(move || {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path)?)?;
        let mut raw = open_csv(&mut zip, &plan.entry)?;
        let check = RecordCheck::new(&plan, max_field_bytes);
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(Capture {
                inner: crate::encoding::decoding_reader(&mut raw, encoding),
                taken: Vec::with_capacity(CHUNK + 64 * 1024),
            });
        csv.headers()?;
        let mut order = KeyOrder::new(&plan);
        let mut rec = csv::StringRecord::new();
        let mut counted = 0u64;
        loop {
            let more = csv
                .read_record(&mut rec)
                .map_err(|e| RecordRefused(crate::format::describe_csv_error(&e)))?;
            if more {
                check.record(&rec).map_err(RecordRefused)?;
                counted += 1;
                order.see(|i| rec.get(i));
            }
            // Forward what has been read and checked; the CSV reader's look-ahead goes with it and
            // is checked with the next records before the stream ends.
            if !more || csv.get_ref().taken.len() >= CHUNK {
                let chunk = std::mem::take(&mut csv.get_mut().taken);
                if progress::active() {
                    progress::advance(counted);
                    counted = 0;
                }
                if !chunk.is_empty() && tx.blocking_send(chunk).is_err() {
                    break; // the loader stopped; it reports its own error
                }
            }
            if !more {
                break;
            }
        }
        drop(csv);
        Ok((raw.hex(), order.ascending()))
    });
    (rx, handle)
}

/// The reading thread of [`stream_checked_csv`]: the CSV's SHA-1, and whether its keys ascended.
pub type CheckedStream = tokio::task::JoinHandle<Result<(String, bool)>>;

/// Chunk size of [`stream_checked_csv`].
const CHUNK: usize = 256 * 1024;

/// Opens one CSV of the zip as a hashing reader (the checksum is compared again as the rows load, so a
/// file changed after the check cannot slip in).
pub fn open_csv<'a>(
    zip: &'a mut zip::ZipArchive<std::fs::File>,
    entry: &str,
) -> Result<HashingReader<DeclaredSize<zip::read::ZipFile<'a, std::fs::File>>>> {
    let file = zip.by_name(entry)?;
    let declared = file.size();
    Ok(HashingReader::new(DeclaredSize {
        inner: file,
        declared,
        read: 0,
    }))
}

/// A zip entry's reader that fails when the entry gives more bytes than its header declares (a lying
/// size must not let a small zip turn into gigabytes).
pub struct DeclaredSize<R> {
    inner: R,
    declared: u64,
    read: u64,
}

impl<R: Read> Read for DeclaredSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.declared {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the entry holds more than the {} bytes its header declares",
                    self.declared
                ),
            ));
        }
        Ok(n)
    }
}

/// Limits on what one folder may make the loader read (a zip bomb, a field of gigabytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadLimits {
    /// Bytes in one CSV field.
    pub max_field_bytes: u64,
    /// A CSV's uncompressed size over its compressed size.
    pub max_zip_ratio: u64,
    /// Rows in one CSV when the folder's XML declares no count for it (when it does, the count must
    /// match exactly).
    pub max_rows: u64,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_field_bytes: 16 * 1024 * 1024,
            max_zip_ratio: 200,
            max_rows: 100_000_000,
        }
    }
}

/// Checks a table's loaded row count against what the folder declared, or the undeclared limit.
pub fn check_rows(folder: &str, plan: &TablePlan, rows: u64, limits: &LoadLimits) -> Result<()> {
    let reason = match plan.declared_rows {
        Some(d) if d != rows => Some(format!(
            "it holds {rows} rows but the folder's extracted.xml declares {d}"
        )),
        None if rows > limits.max_rows => Some(format!(
            "it holds more than {} rows (--max-rows) and the folder declares no count",
            limits.max_rows
        )),
        _ => None,
    };
    match reason {
        Some(reason) => Err(LoadRefused::Table {
            folder: folder.to_string(),
            table: plan.table.clone(),
            reason,
        }
        .into()),
        None => Ok(()),
    }
}

/// Tracks the longest field in CSV bytes as they pass (quotes toggle; commas and newlines outside
/// quotes end a field), across any split of the input.
#[derive(Debug, Default)]
pub struct FieldMeter {
    in_quotes: bool,
    current: u64,
    pub longest: u64,
}

impl FieldMeter {
    pub fn feed(&mut self, buf: &[u8]) {
        for &b in buf {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b',' | b'\n' if !self.in_quotes => {
                    self.longest = self.longest.max(self.current);
                    self.current = 0;
                    continue;
                }
                _ => {}
            }
            self.current += 1;
        }
        self.longest = self.longest.max(self.current);
    }
}

/// Refuses a full resync (rolling it back) that would remove more than `max_percent` of a table's
/// rows: a forged or mistaken `<full-tables>` must not empty a warehouse table unnoticed.
pub fn check_removal(
    folder: &str,
    table: &str,
    gone: u64,
    total: u64,
    max_percent: u32,
) -> Result<()> {
    if max_percent >= 100 || gone == 0 {
        return Ok(());
    }
    if gone * 100 > u64::from(max_percent) * total.max(1) {
        return Err(LoadRefused::Table {
            folder: folder.to_string(),
            table: table.to_string(),
            reason: format!(
                "its full resync would remove {gone} of the table's {total} rows, more than --max-resync-removal {max_percent}%; nothing was removed (if the source really lost them, load with --max-resync-removal 100)"
            ),
        }
        .into());
    }
    Ok(())
}

/// Refuses the export (rolling back what was staged) when the bytes loaded are not the bytes the
/// `.sha1` beside the CSV names.
pub fn check_loaded_sha1(folder: &str, plan: &TablePlan, actual: &str) -> Result<()> {
    if actual != plan.expected_sha1 {
        return Err(LoadRefused::Table {
            folder: folder.to_string(),
            table: plan.table.clone(),
            reason: format!(
                "checksum mismatch (data {actual}, {}.sha1 says {})",
                plan.entry, plan.expected_sha1
            ),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_of_problems_is_summarized_on_one_short_line() {
        let many: Vec<String> = (0..300_000).map(|i| format!("entry {i} is bad")).collect();
        let text = summarize(&many);
        assert!(text.len() < 400, "{}", text.len());
        assert!(
            text.starts_with("entry 0 is bad; entry 1 is bad")
                && text.ends_with("and 299990 more problem(s)"),
            "{text}"
        );
        assert_eq!(summarize(&["one".to_string()]), "one");
    }

    #[test]
    fn the_field_meter_finds_the_longest_field_across_splits_and_quotes() {
        let mut m = FieldMeter::default();
        m.feed(b"a,\"bb,\n");
        m.feed(b"b\",c\nddddd\n");
        assert_eq!(m.longest, 7); // `"bb,\nb"`: seven bytes with its quotes
    }
}

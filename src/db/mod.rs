//! Database access for both sides: URLs, dialects, the catalog, and what the exporter reads.
//!
//! One file per backend ([`sqlite`], [`postgres`]); this module holds what they share and the
//! [`Source`] enum that dispatches to them.

pub mod mysql;
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::audit::AuditEntry;

static IO_TIMEOUT_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(600);

/// Sets how long a streaming database connection may pass no data before it counts as dead
/// (`--db-timeout`).
pub fn set_io_timeout(seconds: u64) {
    IO_TIMEOUT_SECS.store(seconds.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// See [`set_io_timeout`].
pub fn io_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(IO_TIMEOUT_SECS.load(std::sync::atomic::Ordering::Relaxed))
}

/// Awaits `fut`, or fails as a dead connection (transient) when it makes no progress within
/// [`io_timeout`].
pub async fn within_timeout<T, E>(
    url: &DbUrl,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, DbError> {
    tokio::time::timeout(io_timeout(), fut)
        .await
        .map_err(|_| DbError::Query {
            url: url.to_string(),
            what: what.to_string(),
            reason: format!(
                "no data from the server for {} s: the connection seems dead (--db-timeout)",
                io_timeout().as_secs()
            ),
            transient: true,
        })
}

/// The SQL dialect of a database URL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded default.
    #[default]
    Sqlite,
    Postgres,
    /// MariaDB and MySQL (one protocol, one dialect).
    Mysql,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgresql",
            Dialect::Mysql => "mysql",
        }
    }
}

impl FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" | "pg" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::Mysql),
            other => Err(format!(
                "unknown dialect {other:?}: expected sqlite, postgresql or mysql (also for MariaDB)"
            )),
        }
    }
}

/// A database URL: `sqlite://file.db`, `postgres://user@host/db` or `mysql://user@host/db` (`mariadb://`). Displays with the password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    url: String,
    dialect: Dialect,
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<DbUrl, String> {
        let lower = url.to_ascii_lowercase();
        let dialect = if lower.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Dialect::Postgres
        } else if lower.starts_with("mysql://") || lower.starts_with("mariadb://") {
            Dialect::Mysql
        } else {
            return Err(format!(
                "unsupported database URL {}: expected sqlite://FILE, postgres://USER@HOST/DB or mysql://USER@HOST/DB (mariadb:// too)",
                redact(url)
            ));
        };
        Ok(DbUrl {
            url: url.to_string(),
            dialect,
        })
    }
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }
    /// The URL with its password: only for connecting, never for messages.
    pub fn expose(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}
impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({self})")
    }
}

/// Masks the password in `scheme://user:password@host/...` and in a `password=` query parameter.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find('/')
            .map(|i| rest_start + i)
            .unwrap_or(out.len());
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "****");
            }
        }
    }
    if let Some(p) = out.to_ascii_lowercase().find("password=") {
        let start = p + "password=".len();
        let end = out[start..]
            .find('&')
            .map(|i| start + i)
            .unwrap_or(out.len());
        out.replace_range(start..end, "****");
    }
    out
}

/// A failure talking to a database; the message names the database (password masked).
///
/// The database's own message is kept as text rather than as an error source: sqlx repeats its
/// source in its own message, and the whole chain is printed once at the top.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        url: String,
        reason: String,
        transient: bool,
    },
    #[error("{url}: {what}: {reason}")]
    Query {
        url: String,
        what: String,
        reason: String,
        /// The kind of failure that may pass if tried again (connection lost, timeout, deadlock).
        transient: bool,
    },
    #[error("{url} has no CTL_AUDIT_LOG table: is this a Genesys Info Mart database?")]
    NoAuditLog { url: String },
    #[error("{url}: the exporter's role may not SELECT from {tables}: grant it (GRANT SELECT ON ... TO ...) or leave the tables out with --exclude; nothing was exported")]
    Unreadable { url: String, tables: String },
    #[error("{url}: {reason}")]
    Unexportable { url: String, reason: String },
}

impl DbError {
    pub(crate) fn query(url: &DbUrl, what: impl Into<String>, source: sqlx::Error) -> DbError {
        DbError::Query {
            url: url.to_string(),
            what: what.into(),
            reason: reason(&source),
            transient: is_transient(&source),
        }
    }

    /// A mapper for `map_err` that names the database and what was being done.
    pub(crate) fn on(url: &DbUrl, what: &str) -> impl Fn(sqlx::Error) -> DbError {
        let (url, what) = (url.clone(), what.to_string());
        move |e| DbError::query(&url, what.clone(), e)
    }

    /// Worth another try: the database could not be reached, or the failure is of a passing kind.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Connect { transient, .. } | DbError::Query { transient, .. } => *transient,
            _ => false,
        }
    }
    pub(crate) fn connect(url: &DbUrl, source: sqlx::Error) -> DbError {
        DbError::Connect {
            url: url.to_string(),
            reason: reason(&source),
            transient: is_transient(&source),
        }
    }
}

/// Connection failures, timeouts, and PostgreSQL's connection-exception (08), operator-intervention
/// (57P01-57P03), serialization (40001), deadlock (40P01) and too-many-connections (53300) states.
/// `--max-retries` / `--retry-delay`: how a run tries again after a transient database failure.
pub struct Retry {
    max: u32,
    first_delay_seconds: u64,
    attempt: u32,
}

impl Retry {
    pub fn new(max: u32, first_delay_seconds: u64) -> Retry {
        Retry {
            max,
            first_delay_seconds,
            attempt: 0,
        }
    }

    /// Whether `e` is worth another try: a transient failure, tries left, no stop asked for. If so,
    /// says so and waits (the first delay, doubled each time, at most 10 minutes).
    pub async fn again(&mut self, e: &anyhow::Error) -> bool {
        if self.attempt >= self.max || !is_transient_failure(e) || crate::signals::stop_requested()
        {
            return false;
        }
        let delay = self
            .first_delay_seconds
            .saturating_mul(1 << self.attempt.min(16))
            .min(600);
        self.attempt += 1;
        tracing::warn!(
            attempt = self.attempt,
            of = self.max,
            delay_seconds = delay,
            "transient failure, trying again: {e:#}"
        );
        crate::signals::sleep_unless_stopped(std::time::Duration::from_secs(delay)).await;
        true
    }
}

/// A failure that may pass when tried again: a transient database error anywhere in its chain.
pub fn is_transient_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<DbError>()
            .is_some_and(DbError::is_transient)
    })
}

fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        // A host name that does not resolve will not resolve on the next try either.
        sqlx::Error::Io(io) => !is_name_lookup_failure(io),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08")
                || c.starts_with("57P")
                || ["40001", "40P01", "53300"].contains(&c.as_ref())
        }),
        _ => false,
    }
}

/// A failed DNS look-up (std reports getaddrinfo's failures with no kind of their own).
fn is_name_lookup_failure(io: &std::io::Error) -> bool {
    let text = io.to_string();
    text.contains("failed to lookup address") || text.contains("Name or service not known")
}

/// The shortest honest text of a sqlx error: the database's message, or the I/O failure.
fn reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused: nothing accepts connections at that host and port (is the server running?)"
                .to_string()
        }
        sqlx::Error::Io(io) if is_name_lookup_failure(io) => {
            format!("the host name does not resolve ({io})")
        }
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_string(),
        other => other.to_string(),
    }
}

/// How the exporter treats a column's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Integer,
    Text,
    /// `bytea` / `BLOB`: written in PostgreSQL's hex form (`\x0a1b`), which the folder's XML says.
    Binary,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The name as the catalog spells it.
    pub name: String,
    pub kind: ColumnKind,
    /// The declared type as the catalog gives it (`numeric(19,0)`, `VARCHAR(255)`, ...).
    pub sql_type: String,
}

/// A table as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The name as the catalog spells it.
    pub name: String,
    pub columns: Vec<Column>,
    /// Primary-key columns, in key order (catalog spelling).
    pub primary_key: Vec<String>,
    /// What rows are read from when not the table itself: an export view (quoted, maybe
    /// schema-qualified).
    pub read_from: Option<String>,
    /// The connected role may `SELECT` from it (PostgreSQL's catalog lists tables it may not).
    pub readable: bool,
}

/// `--use-export-views`: read each table through a view named prefix + table name, in `schema` or
/// the current one. The views decide the columns; the tables give the primary keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportViews {
    pub prefix: String,
    pub schema: Option<String>,
}

/// `--use-export-views` found nothing to read.
#[derive(Debug, thiserror::Error)]
#[error("--use-export-views: no view named {prefix}<table> for any exportable table{}", schema.as_ref().map(|s| format!(" in schema {s}")).unwrap_or_default())]
pub struct NoExportViews {
    pub prefix: String,
    pub schema: Option<String>,
}

impl Table {
    /// The relation rows are read from, quoted for SQL.
    pub fn relation(&self) -> String {
        self.read_from
            .clone()
            .unwrap_or_else(|| quote_ident(&self.name))
    }
    pub fn lower_name(&self) -> String {
        self.name.to_ascii_lowercase()
    }
    pub fn column(&self, lower: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(lower))
    }
    /// Exportable tables carry `CREATE_AUDIT_KEY`.
    pub fn is_exportable(&self) -> bool {
        self.column("create_audit_key").is_some()
    }
    /// The binary columns (lower case): their values are written as hex.
    pub fn binary_columns(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Binary)
            .map(|c| c.name.to_ascii_lowercase())
            .collect()
    }
    /// The CSV header: lower-case column names in catalog order.
    pub fn header(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|c| c.name.to_ascii_lowercase())
            .collect()
    }
}

/// `"name"` with inner quotes doubled: safe for any catalog name in SQLite and PostgreSQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every row of a table, whatever its audit keys (`compare` reads tables whole).
pub const ALL_ROWS: [(i64, i64); 1] = [(i64::MIN, i64::MAX)];

/// Whether `ranges` asks for every row ([`ALL_ROWS`]).
pub fn is_all_rows(ranges: &[(i64, i64)]) -> bool {
    ranges == ALL_ROWS
}

/// The `WHERE` condition selecting the rows created or updated by the keys in `ranges`.
pub fn window_predicate(table: &Table, ranges: &[(i64, i64)]) -> String {
    if is_all_rows(ranges) {
        return "1 = 1".to_string();
    }
    let preds: Vec<String> = ["create_audit_key", "update_audit_key"]
        .iter()
        .filter_map(|c| key_predicate(table, c, ranges))
        .collect();
    if preds.is_empty() {
        return "1 = 0".to_string();
    }
    preds.join(" OR ")
}

/// `column` (if the table has it) within `ranges`: `(c BETWEEN 1 AND 5 OR c = 7)`.
pub fn key_predicate(table: &Table, column: &str, ranges: &[(i64, i64)]) -> Option<String> {
    let col = quote_ident(&table.column(column)?.name);
    if ranges.is_empty() {
        return Some("1 = 0".to_string());
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|(lo, hi)| {
            if lo == hi {
                format!("{col} = {lo}")
            } else {
                format!("{col} BETWEEN {lo} AND {hi}")
            }
        })
        .collect();
    Some(format!("({})", parts.join(" OR ")))
}

/// `ORDER BY` for a table: its primary key, or every column when it has none.
pub fn order_by(table: &Table) -> String {
    let cols: Vec<String> = if table.primary_key.is_empty() {
        table.columns.iter().map(|c| quote_ident(&c.name)).collect()
    } else {
        table.primary_key.iter().map(|c| quote_ident(c)).collect()
    };
    cols.join(", ")
}

/// Rows of one key segment as a database sums them up (`compare`): how many, and the sum of a hash
/// of each row's text. Two databases of one dialect give the same sum for the same rows, so equal
/// segments are confirmed without reading their rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSum {
    /// `(key - lo) / width`.
    pub bucket: i64,
    pub rows: i64,
    /// The sum of the rows' hashes, as decimal text (it can pass 2^63).
    pub sum: String,
}

/// Which segments to sum: rows with `lo <= key < hi` (and `scope`, an SQL condition), grouped into
/// buckets of `width` keys.
#[derive(Clone, Copy, Debug)]
pub struct SegmentQuery<'a> {
    pub key: &'a str,
    pub lo: i64,
    pub hi: i64,
    pub width: i64,
    pub scope: Option<&'a str>,
}

/// Where a table's CSV bytes go: a bounded channel to the thread that hashes and compresses them.
pub type CsvChunks = mpsc::Sender<Bytes>;

/// What a source Info Mart must answer for the exporter. One implementation per backend, one file
/// each (`db/<backend>.rs`); [`Source::connect`] is the registry that picks one by URL. Dialect
/// differences (catalog queries, snapshots, how rows leave the server) live in the backend.
#[async_trait::async_trait]
pub trait SourceDb: Send + Sync {
    fn url(&self) -> &DbUrl;
    /// Pins one consistent view of the database for the audit log and every table (ending the
    /// previous one); a backend whose reads are consistent by themselves does nothing.
    async fn begin_snapshot(&self) -> Result<(), DbError>;
    /// Audit log entries with a key above `after`, plus the listed `also` keys.
    async fn read_audit_log(&self, after: i64, also: &[i64]) -> Result<Vec<AuditEntry>, DbError>;
    /// Every table with its columns and primary key.
    async fn tables(&self) -> Result<Vec<Table>, DbError>;
    /// Every view (for `--use-export-views`), in `schema` where the backend has schemas.
    async fn views(&self, schema: Option<&str>) -> anyhow::Result<Vec<Table>>;
    /// Streams the rows of `table` changed by the keys in `ranges`, in primary-key order, as CSV
    /// records (no header) into `out`. NULL and empty text are both written as an empty field.
    async fn copy_rows_csv(
        &self,
        table: &Table,
        ranges: &[(i64, i64)],
        out: &CsvChunks,
    ) -> Result<(), DbError>;
    /// The one integer `sql` returns.
    async fn count(&self, sql: &str, what: &str) -> Result<i64, DbError>;
    /// The name of the row hash [`SourceDb::segment_sums`] computes (two sides' sums compare only
    /// when it is the same); `None` when the backend cannot hash rows in the database.
    fn row_hash(&self) -> Option<&'static str> {
        None
    }
    /// The smallest and largest value of the integer column `key` (`None`: no rows).
    async fn key_bounds(&self, _table: &Table, _key: &str) -> Result<Option<(i64, i64)>, DbError> {
        Ok(None)
    }
    /// Per-bucket row counts and hash sums (see [`SegmentSum`]); buckets without rows are absent.
    async fn segment_sums(
        &self,
        _table: &Table,
        _q: &SegmentQuery<'_>,
    ) -> Result<Vec<SegmentSum>, DbError> {
        Ok(Vec::new())
    }
    /// Releases the snapshot and the connections.
    async fn close(self: Box<Self>);
}

/// A source Info Mart, read-only: one of the backends.
pub struct Source(Box<dyn SourceDb>);

impl Source {
    /// The registry of source backends: the one for the URL's dialect, connected with room for
    /// `connections` concurrent table readers.
    pub async fn connect(url: &DbUrl, connections: u32) -> Result<Source, DbError> {
        Ok(Source(match url.dialect() {
            Dialect::Sqlite => Box::new(sqlite::SqliteSource::connect(url, connections).await?),
            Dialect::Postgres => Box::new(postgres::PgSource::connect(url, connections).await?),
            Dialect::Mysql => Box::new(mysql::MySource::connect(url).await?),
        }))
    }

    pub fn url(&self) -> &DbUrl {
        self.0.url()
    }

    /// Pins one consistent view of the database for the audit log and every table.
    pub async fn begin_snapshot(&self) -> Result<(), DbError> {
        within_timeout(self.url(), "starting a snapshot", self.0.begin_snapshot()).await?
    }

    /// Audit log entries with a key above `after`, plus the listed `also` keys, sorted by key.
    pub async fn read_audit_log(
        &self,
        after: i64,
        also: &[i64],
    ) -> Result<Vec<AuditEntry>, DbError> {
        let mut log = within_timeout(
            self.url(),
            "reading CTL_AUDIT_LOG",
            self.0.read_audit_log(after, also),
        )
        .await??;
        log.sort_by_key(|e| e.audit_key);
        log.dedup_by_key(|e| e.audit_key);
        Ok(log)
    }

    /// The exportable tables as the export views present them: for each table with a view named
    /// prefix + name (any case), the view's columns, the table's primary key, read from the view.
    pub async fn export_view_tables(&self, views: &ExportViews) -> anyhow::Result<Vec<Table>> {
        let base = self.tables().await?;
        let found = self.0.views(views.schema.as_deref()).await?;
        let mut out = Vec::new();
        for t in base.iter().filter(|t| t.is_exportable()) {
            let want = format!("{}{}", views.prefix, t.name).to_ascii_lowercase();
            let Some(v) = found.iter().find(|v| v.name.to_ascii_lowercase() == want) else {
                tracing::debug!(table = %t.name, "no export view: not exported");
                continue;
            };
            out.push(Table {
                name: t.name.clone(),
                columns: v.columns.clone(),
                primary_key: t.primary_key.clone(),
                readable: v.readable,
                read_from: Some(match &views.schema {
                    Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&v.name)),
                    None => quote_ident(&v.name),
                }),
            });
        }
        if out.is_empty() {
            return Err(NoExportViews {
                prefix: views.prefix.clone(),
                schema: views.schema.clone(),
            }
            .into());
        }
        Ok(out)
    }

    /// Every table of the source schema with its columns and primary key, sorted by lower-case name.
    pub async fn tables(&self) -> Result<Vec<Table>, DbError> {
        let mut tables =
            within_timeout(self.url(), "reading the catalog", self.0.tables()).await??;
        tables.sort_by_key(|t| t.lower_name());
        Ok(tables)
    }

    /// Streams the rows of `table` changed by the keys in `ranges` (see [`SourceDb::copy_rows_csv`]).
    pub async fn copy_rows_csv(
        &self,
        table: &Table,
        ranges: &[(i64, i64)],
        out: &CsvChunks,
    ) -> Result<(), DbError> {
        self.0.copy_rows_csv(table, ranges, out).await
    }

    /// How many rows of `table` the keys in `ranges` changed (for `--dry-run`).
    pub async fn count_rows(&self, table: &Table, ranges: &[(i64, i64)]) -> Result<i64, DbError> {
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {}",
            table.relation(),
            window_predicate(table, ranges)
        );
        self.0
            .count(&sql, &format!("counting rows of {}", table.name))
            .await
    }

    /// See [`SourceDb::row_hash`].
    pub fn row_hash(&self) -> Option<&'static str> {
        self.0.row_hash()
    }

    /// See [`SourceDb::key_bounds`].
    pub async fn key_bounds(
        &self,
        table: &Table,
        key: &str,
    ) -> Result<Option<(i64, i64)>, DbError> {
        within_timeout(
            self.url(),
            "reading key bounds",
            self.0.key_bounds(table, key),
        )
        .await?
    }

    /// See [`SourceDb::segment_sums`].
    pub async fn segment_sums(
        &self,
        table: &Table,
        q: &SegmentQuery<'_>,
    ) -> Result<Vec<SegmentSum>, DbError> {
        within_timeout(
            self.url(),
            "summing key segments",
            self.0.segment_sums(table, q),
        )
        .await?
    }

    /// Releases the snapshot and the connections.
    pub async fn close(self) {
        self.0.close().await
    }
}

/// Size of one CSV chunk handed to the compressing thread.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redact("postgres://gim:s3cret@db.example:5432/gim"),
            "postgres://gim:****@db.example:5432/gim"
        );
        assert_eq!(
            redact("postgres://h/db?user=a&password=x&sslmode=require"),
            "postgres://h/db?user=a&password=****&sslmode=require"
        );
        assert_eq!(redact("sqlite://infomart.db"), "sqlite://infomart.db");
        let u = DbUrl::parse("postgresql://a:b@h/d").unwrap();
        assert_eq!(
            format!("{u} {u:?}"),
            "postgresql://a:****@h/d DbUrl(postgresql://a:****@h/d)"
        );
        assert!(DbUrl::parse("mysql://x").is_ok_and(|u| u.dialect() == Dialect::Mysql));
        assert!(DbUrl::parse("mariadb://a:b@h/d")
            .is_ok_and(|u| u.to_string() == "mariadb://a:****@h/d"));
        assert!(DbUrl::parse("oracle://x").is_err());
    }

    #[test]
    fn predicate_covers_both_audit_keys() {
        let t = Table {
            read_from: None,
            readable: true,
            name: "T".into(),
            columns: vec![
                Column {
                    name: "ID".into(),
                    kind: ColumnKind::Integer,
                    sql_type: "integer".into(),
                },
                Column {
                    name: "CREATE_AUDIT_KEY".into(),
                    kind: ColumnKind::Integer,
                    sql_type: "integer".into(),
                },
                Column {
                    name: "UPDATE_AUDIT_KEY".into(),
                    kind: ColumnKind::Integer,
                    sql_type: "integer".into(),
                },
            ],
            primary_key: vec!["ID".into()],
        };
        assert_eq!(
            window_predicate(&t, &[(1, 3), (7, 7)]),
            "(\"CREATE_AUDIT_KEY\" BETWEEN 1 AND 3 OR \"CREATE_AUDIT_KEY\" = 7) OR (\"UPDATE_AUDIT_KEY\" BETWEEN 1 AND 3 OR \"UPDATE_AUDIT_KEY\" = 7)"
        );
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}

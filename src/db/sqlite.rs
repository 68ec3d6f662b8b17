//! SQLite: the embedded default source, for the demo and small sites.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use super::{
    key_predicate, order_by, quote_ident, window_predicate, Column, ColumnKind, CsvChunks, DbError,
    DbUrl, Table, CHUNK_BYTES,
};
use crate::audit::AuditEntry;
use crate::format::push_csv_field;

pub struct SqliteSource {
    pub(crate) url: DbUrl,
    pub(crate) pool: SqlitePool,
    /// Read-only rusqlite connections for the table reads, kept for the run: opening one parses the
    /// whole schema, which on a 200-table Info Mart cost more than reading a 15-minute window.
    readers: std::sync::Arc<std::sync::Mutex<Vec<rusqlite::Connection>>>,
}

/// Connect options for an existing SQLite file (never created by a reader).
pub fn options(url: &DbUrl) -> Result<SqliteConnectOptions, DbError> {
    SqliteConnectOptions::from_str(url.expose())
        .map(|o| o.busy_timeout(Duration::from_secs(30)))
        .map_err(|e| DbError::connect(url, e))
}

impl SqliteSource {
    pub async fn connect(url: &DbUrl, connections: u32) -> Result<Self, DbError> {
        let opts = options(url)?.read_only(true).create_if_missing(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(|e| DbError::connect(url, e))?;
        Ok(SqliteSource {
            url: url.clone(),
            pool,
            readers: Default::default(),
        })
    }
}

#[async_trait::async_trait]
impl super::SourceDb for SqliteSource {
    fn url(&self) -> &DbUrl {
        &self.url
    }

    async fn begin_snapshot(&self) -> Result<(), DbError> {
        Ok(())
    }

    async fn views(&self, schema: Option<&str>) -> anyhow::Result<Vec<Table>> {
        if schema.is_some() {
            return Err(crate::cmd::ConfigError(
                "--export-views-schema applies to PostgreSQL sources; SQLite has one schema".into(),
            )
            .into());
        }
        Ok(read_relations(&self.pool, &self.url, "view").await?)
    }

    async fn count(&self, sql: &str, what: &str) -> Result<i64, DbError> {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| DbError::query(&self.url, what, e))
    }

    async fn close(self: Box<Self>) {
        self.pool.close().await
    }

    async fn read_audit_log(&self, after: i64, also: &[i64]) -> Result<Vec<AuditEntry>, DbError> {
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type IN ('table','view') AND lower(name) = 'ctl_audit_log'",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| DbError::query(&self.url, "reading the catalog", e))?;
        if exists.is_none() {
            return Err(DbError::NoAuditLog {
                url: self.url.to_string(),
            });
        }
        let also_list = also
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT AUDIT_KEY, CREATED_TS, \
             CASE WHEN INSERTED IS NULL THEN NULL ELSE CAST(strftime('%s', INSERTED) AS INTEGER) END, \
             MAX_CHUNK_TS FROM CTL_AUDIT_LOG WHERE AUDIT_KEY > ?{} ORDER BY AUDIT_KEY",
            if also.is_empty() {
                String::new()
            } else {
                format!(" OR AUDIT_KEY IN ({also_list})")
            }
        );
        let rows = sqlx::query(&sql)
            .bind(after)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| DbError::query(&self.url, "reading CTL_AUDIT_LOG", e))?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    audit_key: r.try_get(0)?,
                    created_ts: r.try_get(1)?,
                    inserted_ts: r.try_get(2)?,
                    max_chunk_ts: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| DbError::query(&self.url, "reading CTL_AUDIT_LOG", e))
    }

    async fn tables(&self) -> Result<Vec<Table>, DbError> {
        read_tables(&self.pool, &self.url).await
    }

    /// Streams the rows through a blocking rusqlite cursor on its own thread: sqlx-sqlite hands
    /// every row across a channel from its worker, several times the cost of reading it here.
    async fn copy_rows_csv(
        &self,
        table: &Table,
        ranges: &[(i64, i64)],
        out: &CsvChunks,
    ) -> Result<(), DbError> {
        let sql = window_query(table, ranges);
        let path = options(&self.url)?.get_filename().to_path_buf();
        let url = self.url.clone();
        let what = format!("reading table {}", table.name);
        let out = out.clone();
        let names = ValueNames::of(table);
        let readers = std::sync::Arc::clone(&self.readers);
        let read = tokio::task::spawn_blocking(move || {
            let idle = readers.lock().ok().and_then(|mut r| r.pop());
            let conn = match idle {
                Some(c) => c,
                None => open_reader(&path)?,
            };
            let r = read_csv_blocking(&conn, &sql, &out, &names);
            if r.is_ok() {
                if let Ok(mut idle) = readers.lock() {
                    idle.push(conn);
                }
            }
            r
        });
        match read.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ReadFailure::Value(reason))) => Err(DbError::Unexportable {
                url: url.to_string(),
                reason,
            }),
            Ok(Err(ReadFailure::Sql(e))) => Err(DbError::Query {
                url: url.to_string(),
                what,
                transient: matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ),
                reason: e.to_string(),
            }),
            Err(e) => Err(DbError::Query {
                url: url.to_string(),
                what,
                reason: format!("reader thread failed: {e}"),
                transient: false,
            }),
        }
    }
}

/// The rows of `table` changed by the keys in `ranges`, in primary-key order. Rows created in the
/// window, then rows only updated in it: two index range scans whose union needs no in-memory set of
/// row ids (which `a OR b` would build: memory in proportion to the window), sorted by SQLite's
/// sorter, which spills to temporary files.
fn window_query(table: &Table, ranges: &[(i64, i64)]) -> String {
    let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let from = format!("SELECT {} FROM {}", cols.join(", "), table.relation());
    if super::is_all_rows(ranges) {
        // The whole table in key order: the primary key's own order, no sort.
        return format!("{from} ORDER BY {}", order_by(table));
    }
    let created = key_predicate(table, "create_audit_key", ranges);
    let updated = key_predicate(table, "update_audit_key", ranges);
    let body = match (created, updated) {
        (Some(c), Some(u)) => format!("{from} WHERE {c} UNION ALL {from} WHERE {u} AND NOT {c}"),
        (Some(p), None) | (None, Some(p)) => format!("{from} WHERE {p}"),
        (None, None) => format!("{from} WHERE {}", window_predicate(table, ranges)),
    };
    format!("{body} ORDER BY {}", order_by(table))
}

/// Why a table's rows could not be read.
enum ReadFailure {
    Sql(rusqlite::Error),
    /// A value no receiver could load (names table, key and column).
    Value(String),
}

impl From<rusqlite::Error> for ReadFailure {
    fn from(e: rusqlite::Error) -> Self {
        ReadFailure::Sql(e)
    }
}

/// Names for messages about one value: the table, its columns, where its key columns are.
struct ValueNames {
    table: String,
    columns: Vec<String>,
    key: Vec<usize>,
}

impl ValueNames {
    fn of(t: &Table) -> ValueNames {
        ValueNames {
            table: t.lower_name(),
            columns: t.header(),
            key: t
                .primary_key
                .iter()
                .filter_map(|k| {
                    t.columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(k))
                })
                .collect(),
        }
    }

    fn refuse(&self, row: &rusqlite::Row, column: usize, what: &str) -> ReadFailure {
        let key: Vec<String> = self
            .key
            .iter()
            .map(|&i| {
                let v = match row.get_ref(i) {
                    Ok(rusqlite::types::ValueRef::Integer(v)) => v.to_string(),
                    Ok(rusqlite::types::ValueRef::Text(t)) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                    _ => "?".into(),
                };
                format!("{}={v}", self.columns[i])
            })
            .collect();
        ReadFailure::Value(format!(
            "table {}, row with primary key {}, column {}: {what}; nothing was exported (fix the value at the source, or leave the table out with --exclude)",
            self.table,
            key.join(", "),
            self.columns[column]
        ))
    }
}

/// Runs `sql` on a read-only connection and sends the rows as CSV chunks: integers in decimal, text
/// as is, NULL and empty text as an empty field, binary values in PostgreSQL's hex form (`\x0a1b`,
/// what a PostgreSQL source's COPY writes for bytea). Text that is not UTF-8 or holds a NUL cannot be
/// loaded anywhere: the export stops, naming table, key and column.
/// A read-only connection for table reads.
fn open_reader(path: &Path) -> Result<rusqlite::Connection, ReadFailure> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // The ORDER BY sorts through temporary storage: on disk, so memory stays flat at any table size.
    conn.pragma_update(None, "temp_store", "FILE")?;
    Ok(conn)
}

fn read_csv_blocking(
    conn: &rusqlite::Connection,
    sql: &str,
    out: &CsvChunks,
    names: &ValueNames,
) -> Result<(), ReadFailure> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.column_count();
    let mut rows = stmt.query([])?;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES + 4096);
    let mut int = itoa::Buffer::new();
    while let Some(row) = rows.next()? {
        for i in 0..n {
            match row.get_ref(i)? {
                ValueRef::Null => push_csv_field(&mut buf, b"", i == 0),
                ValueRef::Integer(v) => push_csv_field(&mut buf, int.format(v).as_bytes(), i == 0),
                ValueRef::Real(v) => push_csv_field(&mut buf, v.to_string().as_bytes(), i == 0),
                ValueRef::Text(t) => {
                    if std::str::from_utf8(t).is_err() {
                        return Err(names.refuse(row, i, "the text is not valid UTF-8"));
                    }
                    if t.contains(&0) {
                        return Err(names.refuse(row, i, "the text holds a NUL character"));
                    }
                    push_csv_field(&mut buf, t, i == 0)
                }
                ValueRef::Blob(b) => {
                    let mut hex = String::with_capacity(2 + 2 * b.len());
                    hex.push_str("\\x");
                    for byte in b {
                        hex.push_str(&format!("{byte:02x}"));
                    }
                    push_csv_field(&mut buf, hex.as_bytes(), i == 0)
                }
            }
        }
        buf.push(b'\n');
        if buf.len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES + 4096));
            if out.blocking_send(Bytes::from(full)).is_err() {
                return Ok(()); // the writer stopped; it reports its own error
            }
        }
    }
    if !buf.is_empty() {
        let _ = out.blocking_send(Bytes::from(buf));
    }
    Ok(())
}

/// Every table of a SQLite database with its columns and primary key.
pub async fn read_tables(pool: &SqlitePool, url: &DbUrl) -> Result<Vec<Table>, DbError> {
    read_relations(pool, url, "table").await
}

/// Every relation of `kind` (`table` or `view`) with its columns and primary key (none for a view).
pub async fn read_relations(
    pool: &SqlitePool,
    url: &DbUrl,
    kind: &str,
) -> Result<Vec<Table>, DbError> {
    let err = |e| DbError::query(url, "reading the catalog", e);
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .bind(kind)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let info = sqlx::query(&format!("PRAGMA table_info({})", quote_ident(&name)))
            .fetch_all(pool)
            .await
            .map_err(err)?;
        let mut columns = Vec::new();
        let mut pk: Vec<(i64, String)> = Vec::new();
        for r in &info {
            let col: String = r.try_get("name").map_err(err)?;
            let decl: String = r.try_get("type").map_err(err)?;
            let pk_pos: i64 = r.try_get("pk").map_err(err)?;
            if pk_pos > 0 {
                pk.push((pk_pos, col.clone()));
            }
            columns.push(Column {
                name: col,
                kind: kind_of(&decl),
                sql_type: decl,
            });
        }
        pk.sort();
        tables.push(Table {
            name,
            columns,
            primary_key: pk.into_iter().map(|(_, c)| c).collect(),
            read_from: None,
            readable: true,
        });
    }
    Ok(tables)
}

/// A column's kind from its declared SQLite type (type affinity rules).
fn kind_of(decl: &str) -> ColumnKind {
    let d = decl.to_ascii_uppercase();
    if d.contains("INT") {
        ColumnKind::Integer
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        ColumnKind::Text
    } else if d.contains("BLOB") {
        ColumnKind::Binary
    } else {
        ColumnKind::Other
    }
}

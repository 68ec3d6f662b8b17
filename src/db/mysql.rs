//! MariaDB and MySQL (one protocol): connecting, the session every gim-export connection runs in,
//! errors, and the catalog. Through `mysql_async`, whose per-connection `LOCAL INFILE` handler lets the
//! loader stream a zip entry into `LOAD DATA LOCAL INFILE` without a file on disk (sqlx has none).

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::{
    order_by, quote_ident, window_predicate, Column, ColumnKind, CsvChunks, DbError, DbUrl,
    SegmentQuery, SegmentSum, Table, CHUNK_BYTES,
};
use crate::audit::AuditEntry;
use crate::schema::SqlType;

/// The session of every connection: ANSI quotes (so the SQL the backends share, with `"name"`
/// identifiers, is read the same), strict mode (a value that does not fit is an error, never a silent
/// truncation or a zero date), no backslash escapes (a `\` in data is a `\`), utf8mb4, UTC.
pub const SESSION_SQL: &str =
    "SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES,NO_ZERO_IN_DATE,\
NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_BACKSLASH_ESCAPES', \
time_zone = '+00:00'; SET NAMES utf8mb4 COLLATE utf8mb4_bin";

/// Connects to `url` (`mysql://` or `mariadb://`) and sets up the session ([`SESSION_SQL`]).
pub async fn connect(url: &DbUrl) -> Result<Conn, DbError> {
    let raw = url.expose();
    let rest = raw.split_once("://").map(|(_, r)| r).unwrap_or(raw);
    let opts =
        mysql_async::Opts::from_url(&format!("mysql://{rest}")).map_err(|e| DbError::Connect {
            url: url.to_string(),
            reason: format!("bad URL: {e}"),
            transient: false,
        })?;
    let opts = mysql_async::OptsBuilder::from_opts(opts).stmt_cache_size(0);
    let mut conn = super::within_timeout(url, "connecting", Conn::new(opts))
        .await
        .map_err(|e| DbError::Connect {
            url: url.to_string(),
            reason: e.to_string(),
            transient: true,
        })?
        .map_err(|e| connect_error(url, e))?;
    conn.query_drop(SESSION_SQL)
        .await
        .map_err(|e| error(url, "setting up the session", e))?;
    Ok(conn)
}

fn connect_error(url: &DbUrl, e: mysql_async::Error) -> DbError {
    let transient = is_transient(&e);
    DbError::Connect {
        url: url.to_string(),
        reason: reason(&e),
        transient,
    }
}

/// A failure of `what` on `url`, with whether another try may succeed.
pub fn error(url: &DbUrl, what: &str, e: mysql_async::Error) -> DbError {
    DbError::Query {
        url: url.to_string(),
        what: what.to_string(),
        transient: is_transient(&e),
        reason: reason(&e),
    }
}

/// The server's error code, when the server refused.
pub fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Errors that say what the rows hold is wrong (a bad number or date, a value too long or out of
/// range, a NULL key, a row of the wrong width), not that the database failed.
pub fn is_content_error(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => {
            s.state.starts_with("22")
                || s.state.starts_with("23")
                || [
                    1048, 1261, 1262, 1263, 1264, 1265, 1292, 1366, 1367, 1406, 1411,
                ]
                .contains(&s.code)
        }
        _ => false,
    }
}

/// Lost connections, lock waits, deadlocks and too many connections may pass.
fn is_transient(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) => true,
        mysql_async::Error::Driver(d) => matches!(
            d,
            mysql_async::DriverError::ConnectionClosed | mysql_async::DriverError::PoolDisconnected
        ),
        mysql_async::Error::Server(s) => [1040, 1053, 1205, 1213, 2006, 2013].contains(&s.code),
        _ => false,
    }
}

fn reason(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} (error {})", s.message, s.code),
        mysql_async::Error::Io(io) if io.to_string().contains("refused") => {
            "connection refused: nothing accepts connections at that host and port (is the server running?)"
                .to_string()
        }
        other => other.to_string(),
    }
}

/// A column of `information_schema.COLUMNS`: table, column, data type (lower case), column type,
/// character length, numeric precision and scale.
type CatalogRow = (
    String,
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    Option<u64>,
);

/// Every base table of the connection's database with its columns and primary key. Types are given
/// in the spelling [`SqlType::mysql`] renders, so the loader compares them with what it would create.
pub async fn read_tables(conn: &mut Conn, url: &DbUrl) -> Result<Vec<Table>, DbError> {
    read_relations(conn, url, "BASE TABLE").await
}

/// [`read_tables`] for relations of `table_type` (`BASE TABLE`, `VIEW`; a view has no key).
pub async fn read_relations(
    conn: &mut Conn,
    url: &DbUrl,
    table_type: &str,
) -> Result<Vec<Table>, DbError> {
    let cols: Vec<CatalogRow> = conn
        .exec(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME, LOWER(c.DATA_TYPE), c.COLUMN_TYPE, \
             c.CHARACTER_MAXIMUM_LENGTH, c.NUMERIC_PRECISION, c.NUMERIC_SCALE \
             FROM information_schema.COLUMNS c JOIN information_schema.TABLES t \
             ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA = DATABASE() AND t.TABLE_TYPE = ? \
             ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
            (table_type.to_string(),),
        )
        .await
        .map_err(|e| error(url, "reading the catalog", e))?;
    let keys: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = DATABASE() AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY TABLE_NAME, ORDINAL_POSITION",
        )
        .await
        .map_err(|e| error(url, "reading the catalog", e))?;
    let mut tables: Vec<Table> = Vec::new();
    for (table, name, data_type, column_type, chars, precision, scale) in cols {
        let ty = match data_type.as_str() {
            "smallint" => Some(SqlType::SmallInt),
            "int" | "mediumint" => Some(SqlType::Integer),
            "bigint" => Some(SqlType::BigInt),
            "decimal" => precision.map(|p| {
                if p > 38 {
                    SqlType::Numeric(None)
                } else {
                    SqlType::Numeric(Some((p as u8, scale.unwrap_or(0) as u8)))
                }
            }),
            "varchar" => chars.map(|n| SqlType::Varchar(n as u32)),
            "char" => chars.map(|n| SqlType::Char(n as u32)),
            "longtext" | "mediumtext" => Some(SqlType::Text),
            "datetime" => Some(SqlType::Timestamp),
            "date" => Some(SqlType::Date),
            "double" => Some(SqlType::Float8),
            "longblob" => Some(SqlType::Bytea),
            _ => None,
        };
        let sql_type = ty
            .map(SqlType::mysql)
            .unwrap_or_else(|| column_type.to_ascii_uppercase());
        let kind = match data_type.as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => ColumnKind::Integer,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                ColumnKind::Text
            }
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                ColumnKind::Binary
            }
            _ => ColumnKind::Other,
        };
        if tables.last().is_none_or(|t| t.name != table) {
            tables.push(Table {
                name: table.clone(),
                columns: Vec::new(),
                primary_key: Vec::new(),
                read_from: None,
                readable: true,
            });
        }
        if let Some(t) = tables.last_mut() {
            t.columns.push(Column {
                name,
                kind,
                sql_type,
            });
        }
    }
    for (table, column) in keys {
        if let Some(t) = tables.iter_mut().find(|t| t.name == table) {
            t.primary_key.push(column);
        }
    }
    Ok(tables)
}

/// A MariaDB/MySQL source Info Mart, read-only: one connection in one consistent snapshot
/// (`START TRANSACTION WITH CONSISTENT SNAPSHOT`, `REPEATABLE READ`, read only) for the audit log and
/// every table. MariaDB has no snapshot that other sessions can join, so tables are read one after
/// the other on that connection; rows stream in key order through the text protocol, never a table in
/// memory, and are written as the other sources write them (same bytes for the same history).
pub struct MySource {
    pub(crate) url: DbUrl,
    conn: tokio::sync::Mutex<Conn>,
}

impl MySource {
    pub async fn connect(url: &DbUrl) -> Result<Self, DbError> {
        Ok(MySource {
            url: url.clone(),
            conn: tokio::sync::Mutex::new(connect(url).await?),
        })
    }
}

#[async_trait::async_trait]
impl super::SourceDb for MySource {
    fn url(&self) -> &DbUrl {
        &self.url
    }

    async fn views(&self, schema: Option<&str>) -> anyhow::Result<Vec<Table>> {
        if schema.is_some() {
            return Err(crate::cmd::ConfigError(
                "--export-views-schema applies to PostgreSQL sources; on MariaDB/MySQL the views are read from the URL's database"
                    .into(),
            )
            .into());
        }
        Ok(read_relations(&mut *self.conn.lock().await, &self.url, "VIEW").await?)
    }

    /// Ends the previous snapshot and starts a new one.
    async fn begin_snapshot(&self) -> Result<(), DbError> {
        let mut conn = self.conn.lock().await;
        let err = |e| error(&self.url, "starting a snapshot", e);
        conn.query_drop("ROLLBACK").await.map_err(err)?;
        conn.query_drop("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(err)?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn read_audit_log(&self, after: i64, also: &[i64]) -> Result<Vec<AuditEntry>, DbError> {
        let mut conn = self.conn.lock().await;
        let err = |e| error(&self.url, "reading CTL_AUDIT_LOG", e);
        let table: Option<String> = conn
            .query_first(
                "SELECT TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND LOWER(TABLE_NAME) = 'ctl_audit_log'",
            )
            .await
            .map_err(err)?;
        let Some(table) = table else {
            return Err(DbError::NoAuditLog {
                url: self.url.to_string(),
            });
        };
        let also = if also.is_empty() {
            String::new()
        } else {
            let keys: Vec<String> = also.iter().map(i64::to_string).collect();
            format!(" OR audit_key IN ({})", keys.join(","))
        };
        let rows: Vec<(i64, i64, Option<i64>, Option<i64>)> = conn
            .query(format!(
                "SELECT CAST(audit_key AS SIGNED), CAST(created_ts AS SIGNED), \
                 CAST(UNIX_TIMESTAMP(inserted) AS SIGNED), CAST(max_chunk_ts AS SIGNED) \
                 FROM {} WHERE audit_key > {after}{also} ORDER BY audit_key",
                quote_ident(&table)
            ))
            .await
            .map_err(err)?;
        Ok(rows
            .into_iter()
            .map(
                |(audit_key, created_ts, inserted_ts, max_chunk_ts)| AuditEntry {
                    audit_key,
                    created_ts,
                    inserted_ts,
                    max_chunk_ts,
                },
            )
            .collect())
    }

    async fn tables(&self) -> Result<Vec<Table>, DbError> {
        read_tables(&mut *self.conn.lock().await, &self.url).await
    }

    async fn copy_rows_csv(
        &self,
        table: &Table,
        ranges: &[(i64, i64)],
        out: &CsvChunks,
    ) -> Result<(), DbError> {
        let what = format!("reading table {}", table.name);
        let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {}",
            cols.join(", "),
            table.relation(),
            window_predicate(table, ranges),
            order_by(table)
        );
        // How each column's text is written: as it comes, as hex (binary), or as a time whose zero
        // fraction PostgreSQL would not print.
        let shapes: Vec<Shape> = table
            .columns
            .iter()
            .map(|c| {
                let t = c.sql_type.to_ascii_uppercase();
                if c.kind == ColumnKind::Binary {
                    Shape::Hex
                } else if t.starts_with("DATETIME") || t.starts_with("TIMESTAMP") {
                    Shape::Time
                } else {
                    Shape::Plain
                }
            })
            .collect();
        let mut conn = self.conn.lock().await;
        let mut result = super::within_timeout(&self.url, &what, conn.query_iter(sql))
            .await?
            .map_err(|e| error(&self.url, &what, e))?;
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES + 4096);
        let mut hex = Vec::new();
        while let Some(row) = super::within_timeout(&self.url, &what, result.next())
            .await?
            .map_err(|e| error(&self.url, &what, e))?
        {
            for (i, shape) in shapes.iter().enumerate() {
                let field: &[u8] = match row.as_ref(i) {
                    Some(mysql_async::Value::Bytes(b)) => b,
                    _ => b"",
                };
                let field = match shape {
                    Shape::Plain => field,
                    Shape::Time => trim_zero_fraction(field),
                    Shape::Hex if field.is_empty() => field,
                    Shape::Hex => {
                        hex.clear();
                        hex.extend_from_slice(b"\\x");
                        for b in field {
                            hex.extend_from_slice(format!("{b:02x}").as_bytes());
                        }
                        &hex
                    }
                };
                crate::format::push_csv_field(&mut buf, field, i == 0);
            }
            buf.push(b'\n');
            if buf.len() >= CHUNK_BYTES {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES + 4096));
                if out.send(bytes::Bytes::from(full)).await.is_err() {
                    // The writer stopped (it reports its own error); the rest is read and dropped.
                    break;
                }
            }
        }
        drop(result);
        if !buf.is_empty() {
            let _ = out.send(bytes::Bytes::from(buf)).await;
        }
        Ok(())
    }

    async fn count(&self, sql: &str, what: &str) -> Result<i64, DbError> {
        let n: Option<i64> = self
            .conn
            .lock()
            .await
            .query_first(sql)
            .await
            .map_err(|e| error(&self.url, what, e))?;
        Ok(n.unwrap_or(0))
    }

    fn row_hash(&self) -> Option<&'static str> {
        Some("mysql: md5 of each column's length:text (NULL as empty), first 60 bits")
    }

    async fn key_bounds(&self, table: &Table, key: &str) -> Result<Option<(i64, i64)>, DbError> {
        let k = quote_ident(key);
        let row: Option<(Option<i64>, Option<i64>)> = self
            .conn
            .lock()
            .await
            .query_first(format!(
                "SELECT CAST(MIN({k}) AS SIGNED), CAST(MAX({k}) AS SIGNED) FROM {}",
                table.relation()
            ))
            .await
            .map_err(|e| error(&self.url, "reading key bounds", e))?;
        Ok(row.and_then(|(lo, hi)| lo.zip(hi)))
    }

    async fn segment_sums(
        &self,
        table: &Table,
        q: &SegmentQuery<'_>,
    ) -> Result<Vec<SegmentSum>, DbError> {
        let k = quote_ident(q.key);
        // Each value as `length:text`, so that no two rows give one string; NULL as empty.
        let values: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                let v = format!("COALESCE({}, '')", quote_ident(&c.name));
                format!("CONCAT(LENGTH({v}), ':', {v})")
            })
            .collect();
        let sql = format!(
            "SELECT CAST(({k} - {lo}) DIV {w} AS SIGNED), CAST(COUNT(*) AS SIGNED), \
             CAST(COALESCE(SUM(CAST(CONV(SUBSTRING(MD5(CONCAT_WS(',', {values})), 1, 15), 16, 10) AS UNSIGNED)), 0) AS CHAR) \
             FROM {rel} WHERE {k} >= {lo} AND {k} < {hi}{scope} GROUP BY 1",
            lo = q.lo,
            hi = q.hi,
            w = q.width,
            values = values.join(", "),
            rel = table.relation(),
            scope = q.scope.map(|s| format!(" AND ({s})")).unwrap_or_default(),
        );
        let rows: Vec<(i64, i64, String)> =
            self.conn.lock().await.query(sql).await.map_err(|e| {
                error(
                    &self.url,
                    &format!("summing key segments of {}", table.name),
                    e,
                )
            })?;
        Ok(rows
            .into_iter()
            .map(|(bucket, rows, sum)| SegmentSum { bucket, rows, sum })
            .collect())
    }

    async fn close(self: Box<Self>) {
        let mut conn = self.conn.into_inner();
        let _ = conn.query_drop("ROLLBACK").await;
        let _ = conn.disconnect().await;
    }
}

enum Shape {
    Plain,
    Time,
    Hex,
}

/// `2024-01-01 10:00:00.000` as PostgreSQL prints it: `2024-01-01 10:00:00` (fraction without its
/// trailing zeros, none when it is zero).
fn trim_zero_fraction(v: &[u8]) -> &[u8] {
    let Some(dot) = v.iter().rposition(|&b| b == b'.') else {
        return v;
    };
    if !v[dot + 1..].iter().all(u8::is_ascii_digit) {
        return v;
    }
    let mut end = v.len();
    while end > dot + 1 && v[end - 1] == b'0' {
        end -= 1;
    }
    if end == dot + 1 {
        end = dot;
    }
    &v[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_postgresql_prints_them() {
        assert_eq!(
            trim_zero_fraction(b"2024-01-01 10:00:00.000"),
            b"2024-01-01 10:00:00"
        );
        assert_eq!(
            trim_zero_fraction(b"2024-01-01 10:00:00.120"),
            b"2024-01-01 10:00:00.12"
        );
        assert_eq!(
            trim_zero_fraction(b"2024-01-01 10:00:00"),
            b"2024-01-01 10:00:00"
        );
    }
}

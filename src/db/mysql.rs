//! MariaDB and MySQL (one protocol): connecting, the session every gim-export connection runs in,
//! errors, and the catalog. Through `mysql_async`, whose per-connection `LOCAL INFILE` handler lets the
//! loader stream a zip entry into `LOAD DATA LOCAL INFILE` without a file on disk (sqlx has none).

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::{Column, ColumnKind, DbError, DbUrl, Table};
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
    let cols: Vec<CatalogRow> = conn
        .query(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME, LOWER(c.DATA_TYPE), c.COLUMN_TYPE, \
             c.CHARACTER_MAXIMUM_LENGTH, c.NUMERIC_PRECISION, c.NUMERIC_SCALE \
             FROM information_schema.COLUMNS c JOIN information_schema.TABLES t \
             ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA = DATABASE() AND t.TABLE_TYPE = 'BASE TABLE' \
             ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
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

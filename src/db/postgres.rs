//! PostgreSQL: what real Info Marts run on. Rows leave the server through `COPY ... TO STDOUT`.

use std::time::Duration;

use bytes::BytesMut;
use futures::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, Postgres, Row};

use super::{
    order_by, quote_ident, window_predicate, Column, ColumnKind, CsvChunks, DbError, DbUrl,
    SegmentQuery, SegmentSum, Table, CHUNK_BYTES,
};
use crate::audit::AuditEntry;

pub struct PgSource {
    pub(crate) url: DbUrl,
    pub(crate) pool: PgPool,
    /// The connection that holds the exported snapshot open.
    snapshot_conn: tokio::sync::Mutex<Option<PoolConnection<Postgres>>>,
    /// The exported snapshot's name, which table readers join.
    snapshot_id: std::sync::Mutex<Option<String>>,
}

/// Connect options from a URL, with a bounded connect time and the session settings the CSV relies on.
pub fn options(url: &DbUrl) -> Result<PgConnectOptions, DbError> {
    let opts: PgConnectOptions = url.expose().parse().map_err(|e| DbError::connect(url, e))?;
    Ok(opts.application_name("gim-export").options([
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        // The server notices a client whose network path died (no RST) within about a minute,
        // ends its session and so releases its locks and snapshot.
        ("tcp_keepalives_idle", "30"),
        ("tcp_keepalives_interval", "10"),
        ("tcp_keepalives_count", "3"),
    ]))
}

/// A pool for `url`; connection failures surface within `acquire` seconds.
pub async fn pool(url: &DbUrl, connections: u32, acquire: u64) -> Result<PgPool, DbError> {
    let opts = options(url)?;
    // One direct connection first: the pool retries a refused connection until its acquire timeout
    // and then says only "timed out"; this says what happened, at once.
    match tokio::time::timeout(
        Duration::from_secs(acquire),
        sqlx::ConnectOptions::connect(&opts),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
        }
        Ok(Err(e)) => return Err(DbError::connect(url, e)),
        Err(_) => {
            return Err(DbError::connect(url, sqlx::Error::PoolTimedOut));
        }
    }
    PgPoolOptions::new()
        .max_connections(connections.max(1))
        .acquire_timeout(Duration::from_secs(acquire))
        .connect_with(opts)
        .await
        .map_err(|e| DbError::connect(url, e))
}

impl PgSource {
    /// Rows of `sql`, read in the snapshot when one is open: in a transaction of its own that imports
    /// it, so that a failing statement does not end the snapshot the other reads share.
    async fn snapshot_rows(
        &self,
        sql: &str,
        what: &str,
        settings: &[&str],
    ) -> Result<Vec<PgRow>, DbError> {
        let err = |e| DbError::query(&self.url, what, e);
        let mut conn = self.pool.acquire().await.map_err(err)?;
        let mut tx = conn.begin().await.map_err(err)?;
        let snapshot = self.snapshot_id.lock().expect("snapshot id lock").clone();
        if let Some(id) = snapshot {
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(err)?;
            tx.execute(format!("SET TRANSACTION SNAPSHOT '{}'", id.replace('\'', "''")).as_str())
                .await
                .map_err(err)?;
        }
        for set in settings {
            tx.execute(*set).await.map_err(err)?;
        }
        let rows = sqlx::query(sql).fetch_all(&mut *tx).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(rows)
    }

    pub async fn connect(url: &DbUrl, connections: u32) -> Result<Self, DbError> {
        // One extra connection holds the snapshot while the others read tables.
        let pool = pool(url, connections + 1, 15).await?;
        Ok(PgSource {
            url: url.clone(),
            pool,
            snapshot_conn: Default::default(),
            snapshot_id: Default::default(),
        })
    }
}

#[async_trait::async_trait]
impl super::SourceDb for PgSource {
    fn url(&self) -> &DbUrl {
        &self.url
    }

    async fn views(&self, schema: Option<&str>) -> anyhow::Result<Vec<Table>> {
        Ok(read_relations(&self.pool, &self.url, "VIEW", schema).await?)
    }

    /// Starts a new snapshot (ending the previous one) that the audit log and every table are read in.
    async fn begin_snapshot(&self) -> Result<(), DbError> {
        let err = |e| DbError::query(&self.url, "starting a snapshot", e);
        let mut slot = self.snapshot_conn.lock().await;
        if let Some(mut old) = slot.take() {
            let _ = old.execute("ROLLBACK").await;
        }
        let mut conn = self.pool.acquire().await.map_err(err)?;
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(err)?;
        let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut *conn)
            .await
            .map_err(err)?;
        *slot = Some(conn);
        *self.snapshot_id.lock().expect("snapshot id lock") = Some(id);
        Ok(())
    }

    async fn read_audit_log(&self, after: i64, also: &[i64]) -> Result<Vec<AuditEntry>, DbError> {
        let url = self.url.clone();
        let err = move |e| DbError::query(&url, "reading CTL_AUDIT_LOG", e);
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND lower(table_name) = 'ctl_audit_log'",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(err.clone())?;
        let Some(table) = exists else {
            return Err(DbError::NoAuditLog {
                url: self.url.to_string(),
            });
        };
        let sql = format!(
            "SELECT audit_key::bigint, created_ts::bigint, \
             floor(extract(epoch FROM inserted))::bigint, max_chunk_ts::bigint \
             FROM {} WHERE audit_key > $1 OR audit_key = ANY($2) ORDER BY audit_key",
            quote_ident(&table)
        );
        let q = sqlx::query(&sql).bind(after).bind(also);
        let mut slot = self.snapshot_conn.lock().await;
        let rows = match slot.as_mut() {
            Some(conn) => q.fetch_all(&mut **conn).await,
            None => q.fetch_all(&self.pool).await,
        }
        .map_err(err.clone())?;
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
            .map_err(err)
    }

    async fn tables(&self) -> Result<Vec<Table>, DbError> {
        read_tables(&self.pool, &self.url).await
    }

    async fn copy_rows_csv(
        &self,
        table: &Table,
        ranges: &[(i64, i64)],
        out: &CsvChunks,
    ) -> Result<(), DbError> {
        let what = format!("reading table {}", table.name);
        let err = |e| DbError::query(&self.url, &what, e);
        // Empty strings become NULL so that both print as an empty field, as in the SQLite path.
        let cols: Vec<String> = table
            .columns
            .iter()
            .map(|c| match c.kind {
                ColumnKind::Text => format!("NULLIF({0}, '') AS {0}", quote_ident(&c.name)),
                _ => quote_ident(&c.name),
            })
            .collect();
        let sql = format!(
            "COPY (SELECT {} FROM {} WHERE {} ORDER BY {}) TO STDOUT WITH (FORMAT csv)",
            cols.join(", "),
            table.relation(),
            window_predicate(table, ranges),
            order_by(table)
        );
        let mut conn = self.pool.acquire().await.map_err(err)?;
        let mut tx = conn.begin().await.map_err(err)?;
        let snapshot = self.snapshot_id.lock().expect("snapshot id lock").clone();
        if let Some(id) = snapshot {
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(err)?;
            tx.execute(format!("SET TRANSACTION SNAPSHOT '{}'", id.replace('\'', "''")).as_str())
                .await
                .map_err(err)?;
        }
        {
            // The server sends one message per row: gather them into large chunks.
            let mut stream = tx.copy_out_raw(&sql).await.map_err(err)?;
            let mut buf = BytesMut::with_capacity(CHUNK_BYTES + 4096);
            while let Some(row) = super::within_timeout(&self.url, &what, stream.try_next())
                .await?
                .map_err(err)?
            {
                buf.extend_from_slice(&row);
                if buf.len() >= CHUNK_BYTES {
                    let full =
                        std::mem::replace(&mut buf, BytesMut::with_capacity(CHUNK_BYTES + 4096));
                    if out.send(full.freeze()).await.is_err() {
                        break; // the writer stopped; it reports its own error
                    }
                }
            }
            if !buf.is_empty() {
                let _ = out.send(buf.freeze()).await;
            }
        }
        tx.rollback().await.map_err(err)?;
        Ok(())
    }

    async fn count(&self, sql: &str, what: &str) -> Result<i64, DbError> {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| DbError::query(&self.url, what, e))
    }

    fn row_hash(&self) -> Option<&'static str> {
        Some("postgres: xor of each value's 64-bit hash by type, seeded by position; NULL and empty text alike")
    }

    async fn key_bounds(&self, table: &Table, key: &str) -> Result<Option<(i64, i64)>, DbError> {
        let k = quote_ident(key);
        let sql = format!(
            "SELECT min({k})::bigint, max({k})::bigint FROM {}",
            table.relation()
        );
        let rows = self.snapshot_rows(&sql, "reading key bounds", &[]).await?;
        let r = rows.first();
        let lo: Option<i64> = r.and_then(|r| r.try_get(0).ok()).flatten();
        let hi: Option<i64> = r.and_then(|r| r.try_get(1).ok()).flatten();
        Ok(lo.zip(hi))
    }

    async fn segment_sums(
        &self,
        table: &Table,
        q: &SegmentQuery<'_>,
    ) -> Result<Vec<SegmentSum>, DbError> {
        let k = quote_ident(q.key);
        // Each value hashed by PostgreSQL's own 64-bit hash functions for its type (those hash
        // partitioning relies on: stable across versions), seeded by its position, NULL (and empty
        // text) as the position itself, the row's hash their exclusive or: no value is printed as
        // text, which is what made a hash of the row's text cost as much as reading it.
        let values: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let col = quote_ident(&c.name);
                let t = c.sql_type.to_ascii_lowercase();
                let h = match c.kind {
                    ColumnKind::Text => format!("hashtextextended(NULLIF({col}, ''), {i})"),
                    ColumnKind::Integer => format!("hashint8extended({col}::bigint, {i})"),
                    _ if t.starts_with("numeric") || t.starts_with("decimal") => {
                        format!("hash_numeric_extended({col}, {i})")
                    }
                    _ => format!("hashtextextended({col}::text, {i})"),
                };
                format!("coalesce({h}, {i})")
            })
            .collect();
        let sql = format!(
            "SELECT ({k}::bigint - {lo}) / {w}, count(*)::bigint, \
             coalesce(sum({values}), 0)::text \
             FROM {rel} WHERE {k} >= {lo} AND {k} < {hi}{scope} GROUP BY 1",
            lo = q.lo,
            hi = q.hi,
            w = q.width,
            values = values.join(" # "),
            rel = table.relation(),
            scope = q.scope.map(|s| format!(" AND ({s})")).unwrap_or_default(),
        );
        let what = format!("summing key segments of {}", table.name);
        // At most 64 groups: hashed in memory. (Misjudging their number, the planner would rather sort
        // the whole rows, spilling them to disk, five times slower.)
        self.snapshot_rows(&sql, &what, &["SET LOCAL enable_sort = off"])
            .await?
            .iter()
            .map(|r| {
                Ok(SegmentSum {
                    bucket: r.try_get(0)?,
                    rows: r.try_get(1)?,
                    sum: r.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| DbError::query(&self.url, &what, e))
    }

    async fn close(self: Box<Self>) {
        if let Some(mut conn) = self.snapshot_conn.lock().await.take() {
            let _ = conn.execute("ROLLBACK").await;
        }
        self.pool.close().await;
    }
}

/// Every table of the current schema with its columns and primary key: one per logical table (see
/// [`read_relations`]).
pub async fn read_tables(pool: &PgPool, url: &DbUrl) -> Result<Vec<Table>, DbError> {
    read_relations(pool, url, "BASE TABLE", None).await
}

/// Every relation of `table_type` (`BASE TABLE`, `VIEW`) in `schema` (default: the current one) with
/// its columns and primary key (none for a view), from `pg_catalog` (which, unlike
/// `information_schema`, also lists the tables this role may not read: those are refused by name,
/// never skipped).
///
/// A partitioned table is one table: its partitions (`relispartition`) are not listed, and neither is
/// an inheritance child of a table that has `CREATE_AUDIT_KEY`, because reading the parent (without
/// `ONLY`) already returns the rows of every child. Its primary key includes the partition column,
/// as PostgreSQL requires.
pub async fn read_relations(
    pool: &PgPool,
    url: &DbUrl,
    table_type: &str,
    schema: Option<&str>,
) -> Result<Vec<Table>, DbError> {
    let err = |e| DbError::query(url, "reading the catalog", e);
    let kinds: Vec<String> = match table_type {
        "VIEW" => vec!["v".into(), "m".into()],
        _ => vec!["r".into(), "p".into()],
    };
    let cols = sqlx::query(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)::text, \
                t.typname::text, has_table_privilege(c.oid, 'SELECT') \
         FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         JOIN pg_type t ON t.oid = a.atttypid \
         WHERE n.nspname = COALESCE($2, current_schema()) \
           AND c.relkind::text = ANY($1) \
           AND NOT c.relispartition \
           AND NOT EXISTS ( \
               SELECT 1 FROM pg_inherits i \
               JOIN pg_attribute pa ON pa.attrelid = i.inhparent AND NOT pa.attisdropped \
                AND lower(pa.attname) = 'create_audit_key' \
               WHERE i.inhrelid = c.oid) \
         ORDER BY c.relname, a.attnum",
    )
    .bind(&kinds)
    .bind(schema)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    let pks = sqlx::query(
        "SELECT c.relname::text, a.attname::text \
         FROM pg_constraint k \
         JOIN pg_class c ON c.oid = k.conrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum \
         WHERE k.contype = 'p' AND n.nspname = current_schema() AND NOT c.relispartition \
         ORDER BY c.relname, u.ord",
    )
    .fetch_all(pool)
    .await
    .map_err(err)?;
    let mut tables: Vec<Table> = Vec::new();
    let mut unreadable: Vec<String> = Vec::new();
    for r in &cols {
        let table: String = r.try_get(0).map_err(err)?;
        let name: String = r.try_get(1).map_err(err)?;
        let sql_type: String = r.try_get(2).map_err(err)?;
        let type_name: String = r.try_get(3).map_err(err)?;
        let readable: bool = r.try_get(4).map_err(err)?;
        if tables.last().map(|t| t.name != table).unwrap_or(true) {
            if !readable {
                unreadable.push(table.clone());
            }
            tables.push(Table {
                name: table,
                columns: Vec::new(),
                primary_key: Vec::new(),
                read_from: None,
                readable,
            });
        }
        let kind = match type_name.as_str() {
            "int2" | "int4" | "int8" => ColumnKind::Integer,
            "varchar" | "bpchar" | "text" => ColumnKind::Text,
            "bytea" => ColumnKind::Binary,
            _ => ColumnKind::Other,
        };
        tables
            .last_mut()
            .expect("pushed above")
            .columns
            .push(Column {
                name,
                kind,
                sql_type,
            });
    }
    for r in &pks {
        let table: String = r.try_get(0).map_err(err)?;
        let column: String = r.try_get(1).map_err(err)?;
        if let Some(t) = tables.iter_mut().find(|t| t.name == table) {
            t.primary_key.push(column);
        }
    }
    Ok(tables)
}

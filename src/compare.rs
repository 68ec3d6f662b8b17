//! `compare`: are the source's settled rows and the target's rows the same?
//!
//! Only what the target should hold is compared: rows whose newest audit key (`update_audit_key`,
//! else `create_audit_key`) is at or below the hwm-to of the target's last applied export, and not a
//! key still in flight in the source. Both sides are read in primary-key order with the exporter's
//! own readers, so each row is the text an export would carry (NULL and empty text alike), and merged
//! as two sorted streams: memory stays flat whatever the table size, and every differing key is found
//! exactly (missing in the target, extra in the target, or different values, with the columns).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::audit::AuditKeySet;
use crate::db::{DbUrl, SegmentQuery, SegmentSum, Source, Table};
use crate::load::Target;

/// One table's result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableDiff {
    pub table: String,
    /// Source rows the target should hold.
    pub source_rows: u64,
    /// Target rows compared (those whose key is in scope on the source side, or absent there).
    pub target_rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// The first differing keys (capped), each with what differs.
    pub examples: Vec<Difference>,
}

impl TableDiff {
    pub fn in_sync(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    /// The primary key, as `col=value` pairs joined by `,`.
    pub key: String,
    /// `missing` (in the target), `extra` (in the target), or `different`.
    pub kind: &'static str,
    /// For `different`: the columns whose values differ.
    pub columns: Vec<String>,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The target's last applied export and its hwm-to: what is compared.
    pub last_folder: Option<String>,
    pub up_to_audit_key: i64,
    /// Source keys at or below it still in flight (their rows are left out on both sides).
    pub in_flight: usize,
    pub tables: Vec<TableDiff>,
    /// The repair folder written (`--repair`), if anything differed.
    pub repair: Option<crate::repair::RepairWritten>,
}

impl Report {
    pub fn in_sync(&self) -> bool {
        self.tables.iter().all(TableDiff::in_sync)
    }
}

/// How tables are compared (`compare --method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Key-segment sums inside the databases where both sides can compute them alike, else rows.
    #[default]
    Auto,
    /// Read every row of both sides and merge them.
    Rows,
}

/// What to compare and how.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only these tables (lower case); empty: every exportable source table the target has.
    pub only: Vec<String>,
    /// Differing keys listed per table.
    pub max_examples: usize,
    pub method: Method,
    pub repair: Option<crate::repair::RepairOptions>,
}

/// Compares every exportable source table that the target also has (or those `only` names).
pub async fn run(source_url: &DbUrl, target_url: &DbUrl, options: &Options) -> Result<Report> {
    let (only, max_examples, repair) =
        (&options.only, options.max_examples, options.repair.as_ref());
    let target = Target::connect(target_url).await?;
    let ledger = target.ledger().await.with_context(|| {
        format!("{target_url}: no ledger of applied exports (is it a gim-export target?)")
    })?;
    let target_tables = target.tables().await?;
    target.close().await;
    let last = ledger.last().cloned();
    let hwm = last.as_ref().map(|l| l.hwm_to.audit_key).unwrap_or(0);
    let mut folder = repair
        .map(|o| crate::repair::RepairFolder::begin(o, &ledger))
        .transpose()?;
    let bar = progress_bar();

    // Reading the target with the exporter's reader: the same text for the same values.
    let src = Source::connect(source_url, 1).await?;
    src.begin_snapshot().await?;
    let in_flight: AuditKeySet = src
        .read_audit_log(0, &[])
        .await?
        .iter()
        .filter(|e| !e.is_settled() && e.audit_key <= hwm)
        .map(|e| e.audit_key)
        .collect();
    let dst = Source::connect(target_url, 1).await?;
    let scope = Scope {
        hwm,
        in_flight: &in_flight,
        max_examples,
        bar: bar.clone(),
        method: options.method,
    };
    let mut tables = Vec::new();
    for st in src.tables().await?.iter().filter(|t| t.is_exportable()) {
        let name = st.lower_name();
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let Some(tt) = target_tables.iter().find(|t| t.lower_name() == name) else {
            continue;
        };
        if let Some(b) = &bar {
            b.set_message(name.clone());
        }
        tables.push(
            compare_table(&src, &dst, st, tt, &scope, folder.as_mut())
                .await
                .with_context(|| format!("comparing table {name}"))?,
        );
    }
    src.close().await;
    dst.close().await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // A repair that would empty a large share of a table is more likely a warehouse keeping what the
    // Info Mart purged than rows to delete: refused, nothing written.
    if let (Some(o), Some(_)) = (repair, &folder) {
        if !o.keep_extra {
            for t in &tables {
                if t.extra > crate::repair::REMOVAL_FLOOR
                    && t.extra * 100 > u64::from(o.max_removal_percent) * t.target_rows.max(1)
                {
                    anyhow::bail!(crate::cmd::ConfigError(format!(
                        "compare --repair: table {} would lose {} of its {} rows in the target, more than --max-repair-removal {}%; no repair folder written. If the warehouse keeps rows the Info Mart has purged, give --repair-keep-extra; if the source really lost them, raise --max-repair-removal",
                        t.table, t.extra, t.target_rows, o.max_removal_percent
                    )));
                }
            }
        }
    }
    let repair = match folder {
        Some(f) => tokio::task::spawn_blocking(move || f.publish())
            .await
            .context("the repair writer failed")??,
        None => None,
    };
    Ok(Report {
        last_folder: last.map(|l| l.folder),
        up_to_audit_key: hwm,
        in_flight: in_flight.len(),
        tables,
        repair,
    })
}

/// A spinner on a terminal: the table being compared, rows read on both sides, and the rate.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !crate::logging::progress_enabled() {
        return None;
    }
    let bar = crate::logging::bars().add(indicatif::ProgressBar::new_spinner());
    bar.set_style(crate::logging::bar_style(
        "{spinner} compare {msg:<28} {human_pos:>11} rows {rate:>12} {elapsed}",
    ));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(bar)
}

/// The columns both sides have, in the source's order (the key first as the source orders it).
fn common(st: &Table, tt: &Table) -> (Table, Table) {
    let cols: Vec<(crate::db::Column, crate::db::Column)> = st
        .columns
        .iter()
        .filter_map(|c| {
            tt.columns
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(&c.name))
                .map(|t| (c.clone(), t.clone()))
        })
        .collect();
    let pick = |t: &Table, side: usize| Table {
        columns: cols
            .iter()
            .map(|(a, b)| if side == 0 { a.clone() } else { b.clone() })
            .collect(),
        ..t.clone()
    };
    (pick(st, 0), pick(tt, 1))
}

/// What every table is compared within.
struct Scope<'a> {
    /// The target's last applied hwm-to.
    hwm: i64,
    in_flight: &'a AuditKeySet,
    max_examples: usize,
    bar: Option<indicatif::ProgressBar>,
    method: Method,
}

async fn compare_table(
    src: &Source,
    dst: &Source,
    st: &Table,
    tt: &Table,
    scope: &Scope<'_>,
    repair: Option<&mut crate::repair::RepairFolder>,
) -> Result<TableDiff> {
    let (st, mut tt) = common(st, tt);
    // The target's key as the source declares it (a target table may have been created keyless).
    tt.primary_key = st
        .primary_key
        .iter()
        .filter_map(|k| {
            tt.columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(k))
                .map(|c| c.name.clone())
        })
        .collect();
    let header: Vec<String> = st.header();
    let key_at: Vec<usize> = st
        .primary_key
        .iter()
        .filter_map(|k| header.iter().position(|h| h.eq_ignore_ascii_case(k)))
        .collect();
    anyhow::ensure!(
        !key_at.is_empty() && key_at.len() == st.primary_key.len(),
        "table {} has no primary key to compare by",
        st.name
    );
    let name = st.lower_name();
    let (mut sink, handles) = match &repair {
        Some(f) => {
            let key: Vec<String> = key_at.iter().map(|&i| header[i].clone()).collect();
            let (sink, handles) = f.table(&name, &header, &key, &st.binary_columns()).split();
            (Some(sink), Some(handles))
        }
        None => (None, None),
    };
    let shape = Shape {
        name: name.clone(),
        header,
        key_at,
    };

    // Inside the databases first, where both sides can sum their rows the same way: only the key
    // ranges whose sums differ are read and merged.
    let segmented = match segment(src, dst, &st, &tt, scope).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(table = %name, error = %format!("{e:#}"), "key segments could not be summed; reading every row");
            None
        }
    };
    let ranges: Vec<Option<(i64, i64)>> = match &segmented {
        Some(s) => s.leaves.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let mut d = TableDiff {
        table: name.clone(),
        ..Default::default()
    };
    for range in ranges {
        let (part, back) = merge_range(src, dst, &st, &tt, &shape, range, scope, sink).await?;
        sink = back;
        d.source_rows += part.source_rows;
        d.target_rows += part.target_rows;
        d.missing += part.missing;
        d.extra += part.extra;
        d.different += part.different;
        let room = scope.max_examples.saturating_sub(d.examples.len());
        d.examples.extend(part.examples.into_iter().take(room));
    }
    if let Some(s) = &segmented {
        // Outside the merged ranges every row matched: counted from the sums.
        d.source_rows = s.source_rows;
        d.target_rows += s.target_rows.saturating_sub(s.leaf_target_rows);
        tracing::debug!(
            table = %name,
            rows = s.source_rows,
            queries = s.queries,
            ranges_read = s.leaves.len(),
            rows_read = s.leaf_target_rows,
            "compared by key-segment sums"
        );
    }
    if let Some(s) = sink {
        tokio::task::spawn_blocking(move || s.finish())
            .await
            .context("the repair writer failed")??;
    }
    if let (Some(f), Some(h)) = (repair, handles) {
        f.add(h).await?;
    }
    Ok(d)
}

/// What the merge needs of a table: its name, CSV header and where the key columns are.
struct Shape {
    name: String,
    header: Vec<String>,
    key_at: Vec<usize>,
}

/// Reads both sides (within `range` of the single integer key, or whole) and merges them.
#[allow(clippy::too_many_arguments)]
async fn merge_range(
    src: &Source,
    dst: &Source,
    st: &Table,
    tt: &Table,
    shape: &Shape,
    range: Option<(i64, i64)>,
    scope: &Scope<'_>,
    sink: Option<crate::repair::RepairSink>,
) -> Result<(TableDiff, Option<crate::repair::RepairSink>)> {
    let within = |t: &Table| -> Table {
        match range {
            None => t.clone(),
            Some((lo, hi)) => {
                let k = crate::db::quote_ident(&t.primary_key[0]);
                Table {
                    read_from: Some(format!(
                        "(SELECT * FROM {} WHERE {k} >= {lo} AND {k} < {hi}) gx_range",
                        t.relation()
                    )),
                    ..t.clone()
                }
            }
        }
    };
    let (st, tt) = (within(st), within(tt));
    let version_at: Vec<usize> = ["update_audit_key", "create_audit_key"]
        .iter()
        .filter_map(|c| shape.header.iter().position(|h| h == c))
        .collect();
    let all = crate::db::ALL_ROWS;
    let (stx, srx) = tokio::sync::mpsc::channel(4);
    let (ttx, trx) = tokio::sync::mpsc::channel(4);
    let (name, header, key_at) = (
        shape.name.clone(),
        shape.header.clone(),
        shape.key_at.clone(),
    );
    let (hwm, max_examples, bar) = (scope.hwm, scope.max_examples, scope.bar.clone());
    let in_flight = scope.in_flight.clone();
    let merge = tokio::task::spawn_blocking(move || {
        let mut sink = sink;
        let d = merge_streams(
            &name,
            ChannelReader::new(srx),
            ChannelReader::new(trx),
            &header,
            &key_at,
            &version_at,
            |v| v > hwm || in_flight.contains(v),
            max_examples,
            sink.as_mut(),
            bar.as_ref(),
        );
        d.map(|d| (d, sink))
    });
    let (a, b) = tokio::join!(
        async {
            let r = src.copy_rows_csv(&st, &all, &stx).await;
            drop(stx);
            r
        },
        async {
            let r = dst.copy_rows_csv(&tt, &all, &ttx).await;
            drop(ttx);
            r
        }
    );
    a?;
    b?;
    merge.await.context("compare thread failed")?
}

/// An integer column, or a decimal one without a fraction (`numeric(19,0)`, as Info Marts key facts).
fn integral(c: &crate::db::Column) -> bool {
    let t = c.sql_type.to_ascii_lowercase().replace(' ', "");
    c.kind == crate::db::ColumnKind::Integer
        || ((t.starts_with("numeric(") || t.starts_with("decimal("))
            && (t.ends_with(",0)") || !t.contains(',')))
}

/// Buckets per summed range, and the most rows a range may hold to be read rather than split.
const BUCKETS: i128 = 64;
const LEAF_ROWS: i64 = 5_000;

/// What the key-segment sums found.
#[derive(Debug, Default)]
struct Segmented {
    /// In-scope source rows and all target rows.
    source_rows: u64,
    target_rows: u64,
    /// The key ranges `[lo, hi)` whose sums differ, small enough to read, in key order.
    leaves: Vec<(i64, i64)>,
    /// Target rows in those ranges.
    leaf_target_rows: u64,
    queries: u64,
}

/// Sums key segments inside both databases and splits the ones that differ until they are small:
/// `None` when the two sides cannot sum rows alike (other dialects or column types, a composite
/// or non-integer key, too many keys in flight), and the table is read whole.
async fn segment(
    src: &Source,
    dst: &Source,
    st: &Table,
    tt: &Table,
    scope: &Scope<'_>,
) -> Result<Option<Segmented>> {
    let same_hash = src.row_hash().is_some() && src.row_hash() == dst.row_hash();
    let integer_key = st.primary_key.len() == 1
        && tt.primary_key.len() == 1
        && [st, tt]
            .iter()
            .all(|t| t.column(&t.primary_key[0]).is_some_and(integral));
    let same_types = st.columns.len() == tt.columns.len()
        && st.columns.iter().zip(&tt.columns).all(|(a, b)| {
            a.kind == b.kind && a.sql_type.trim().eq_ignore_ascii_case(b.sql_type.trim())
        });
    if scope.method == Method::Rows
        || !(same_hash && integer_key && same_types)
        || scope.in_flight.len() > 10_000
    {
        return Ok(None);
    }
    let (sk, tk) = (&st.primary_key[0], &tt.primary_key[0]);
    // The rows compare counts: newest audit key settled and at or below the target's hwm-to.
    let version: Vec<String> = ["update_audit_key", "create_audit_key"]
        .iter()
        .filter_map(|c| st.column(c).map(|c| crate::db::quote_ident(&c.name)))
        .collect();
    let source_scope = match version.len() {
        0 => None,
        _ => {
            let newest = if version.len() == 1 {
                version[0].clone()
            } else {
                format!("COALESCE({})", version.join(", "))
            };
            let flying: Vec<String> = scope.in_flight.iter().map(|k| k.to_string()).collect();
            let not_in = if flying.is_empty() {
                String::new()
            } else {
                format!(" AND {newest} NOT IN ({})", flying.join(", "))
            };
            Some(format!(
                "{newest} IS NULL OR ({newest} <= {}{not_in})",
                scope.hwm
            ))
        }
    };
    let (sb, tb) = (src.key_bounds(st, sk).await?, dst.key_bounds(tt, tk).await?);
    let (lo, max) = match (sb, tb) {
        (None, None) => return Ok(Some(Segmented::default())),
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) => (a.0.min(b.0), a.1.max(b.1)),
    };
    let Some(hi) = max.checked_add(1) else {
        return Ok(None);
    };
    if i128::from(hi) - i128::from(lo) > i128::from(i64::MAX) {
        return Ok(None);
    }
    let mut out = Segmented::default();
    let mut todo = vec![(lo, hi)];
    let mut first = true;
    while let Some((lo, hi)) = todo.pop() {
        let width = ((i128::from(hi) - i128::from(lo) + BUCKETS - 1) / BUCKETS).max(1) as i64;
        let q = |key, scope| SegmentQuery {
            key,
            lo,
            hi,
            width,
            scope,
        };
        let (qs, qt) = (q(sk, source_scope.as_deref()), q(tk, None));
        let (s, t) = tokio::try_join!(src.segment_sums(st, &qs), dst.segment_sums(tt, &qt))?;
        out.queries += 2;
        if first {
            out.source_rows = s.iter().map(|x| x.rows as u64).sum();
            out.target_rows = t.iter().map(|x| x.rows as u64).sum();
            if let Some(b) = &scope.bar {
                b.inc(out.source_rows + out.target_rows);
            }
            first = false;
        }
        let by_bucket = |v: &[SegmentSum]| -> BTreeMap<i64, (i64, String)> {
            v.iter()
                .map(|x| (x.bucket, (x.rows, x.sum.clone())))
                .collect()
        };
        let (s, t) = (by_bucket(&s), by_bucket(&t));
        let buckets: std::collections::BTreeSet<i64> = s.keys().chain(t.keys()).copied().collect();
        for b in buckets {
            let (sv, tv) = (s.get(&b), t.get(&b));
            if sv == tv {
                continue;
            }
            let sub_lo = lo + b * width;
            let sub_hi = sub_lo.saturating_add(width).min(hi);
            let rows = sv.map_or(0, |v| v.0).max(tv.map_or(0, |v| v.0));
            if rows <= LEAF_ROWS || width == 1 {
                out.leaves.push((sub_lo, sub_hi));
                out.leaf_target_rows += tv.map_or(0, |v| v.0 as u64);
            } else {
                todo.push((sub_lo, sub_hi));
            }
        }
    }
    out.leaves.sort();
    // Neighbouring ranges are read in one go.
    let mut joined: Vec<(i64, i64)> = Vec::new();
    for (lo, hi) in out.leaves.drain(..) {
        match joined.last_mut() {
            Some(last) if last.1 == lo => last.1 = hi,
            _ => joined.push((lo, hi)),
        }
    }
    out.leaves = joined;
    Ok(Some(out))
}

/// Reads the byte chunks a source reader sends, as one stream.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    chunk: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Self {
        ChannelReader {
            rx,
            chunk: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        Ok(n)
    }
}

/// An integer field's value (`-?[0-9]+`), else `None` (compared as bytes).
fn integer(field: &[u8]) -> Option<i128> {
    let (neg, digits) = match field.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() || digits.len() > 38 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: i128 = 0;
    for d in digits {
        v = v * 10 + i128::from(d - b'0');
    }
    Some(if neg { -v } else { v })
}

/// One side's rows as they come, read into reused buffers, each key parsed once.
struct Cursor<R: Read> {
    reader: csv::Reader<R>,
    row: csv::ByteRecord,
    /// The key fields of `row` as integers where they are.
    keys: Vec<Option<i128>>,
    live: bool,
    /// The row before, to check the order.
    prev: csv::ByteRecord,
    prev_keys: Vec<Option<i128>>,
    has_prev: bool,
    side: &'static str,
}

/// Orders two keys: integer fields as numbers (as the databases order them), others as bytes.
fn key_order(
    a: &csv::ByteRecord,
    ak: &[Option<i128>],
    b: &csv::ByteRecord,
    bk: &[Option<i128>],
    key_at: &[usize],
) -> Ordering {
    for (n, &i) in key_at.iter().enumerate() {
        let o = match (ak[n], bk[n]) {
            (Some(p), Some(q)) => p.cmp(&q),
            _ => a[i].cmp(&b[i]),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

impl<R: Read> Cursor<R> {
    fn new(source: R, side: &'static str) -> Self {
        Cursor {
            reader: csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(source),
            row: csv::ByteRecord::new(),
            keys: Vec::new(),
            live: false,
            prev: csv::ByteRecord::new(),
            prev_keys: Vec::new(),
            has_prev: false,
            side,
        }
    }

    /// Moves to the next row (the current one becomes the previous), checking the key order.
    fn advance(&mut self, table: &str, key_at: &[usize]) -> Result<()> {
        if self.live {
            std::mem::swap(&mut self.row, &mut self.prev);
            std::mem::swap(&mut self.keys, &mut self.prev_keys);
            self.has_prev = true;
        }
        self.live = self
            .reader
            .read_byte_record(&mut self.row)
            .with_context(|| format!("reading the {}'s rows of {table}", self.side))?;
        if !self.live {
            return Ok(());
        }
        anyhow::ensure!(
            key_at.iter().all(|&i| i < self.row.len()),
            "the {}'s rows of {table} have fewer fields than the header",
            self.side
        );
        self.keys.clear();
        self.keys
            .extend(key_at.iter().map(|&i| integer(&self.row[i])));
        if self.has_prev
            && key_order(&self.prev, &self.prev_keys, &self.row, &self.keys, key_at)
                != Ordering::Less
        {
            anyhow::bail!(
                "the {}'s rows of {table} do not come in key order: compare needs integer keys or a binary collation",
                self.side
            );
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn merge_streams<R: Read>(
    table: &str,
    source: R,
    target: R,
    header: &[String],
    key_at: &[usize],
    version_at: &[usize],
    out_of_scope: impl Fn(i64) -> bool,
    max_examples: usize,
    mut repair: Option<&mut crate::repair::RepairSink>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<TableDiff> {
    let (mut s, mut t) = (Cursor::new(source, "source"), Cursor::new(target, "target"));
    let mut d = TableDiff {
        table: table.to_string(),
        ..Default::default()
    };
    let key_text = |r: &csv::ByteRecord| {
        key_at
            .iter()
            .map(|&i| format!("{}={}", header[i], String::from_utf8_lossy(&r[i])))
            .collect::<Vec<_>>()
            .join(",")
    };
    // A source row is in scope when its newest audit key is settled and at or below the hwm.
    let in_scope = |r: &csv::ByteRecord| {
        let newest = version_at
            .iter()
            .find_map(|&i| r.get(i).and_then(integer))
            .and_then(|v| i64::try_from(v).ok());
        !newest.is_some_and(&out_of_scope)
    };
    let note = |d: &mut TableDiff, key: String, kind: &'static str, columns: Vec<String>| {
        if d.examples.len() < max_examples {
            d.examples.push(Difference { key, kind, columns });
        }
    };
    s.advance(table, key_at)?;
    t.advance(table, key_at)?;
    let mut read: u64 = 0;
    loop {
        read += 1;
        if read.is_multiple_of(1024) {
            if let Some(bar) = bar {
                bar.inc(1024);
            }
        }
        let order = match (s.live, t.live) {
            (false, false) => {
                if let Some(bar) = bar {
                    bar.inc(read % 1024);
                }
                break;
            }
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (true, true) => key_order(&s.row, &s.keys, &t.row, &t.keys, key_at),
        };
        match order {
            Ordering::Less => {
                if in_scope(&s.row) {
                    d.source_rows += 1;
                    d.missing += 1;
                    if d.examples.len() < max_examples {
                        note(&mut d, key_text(&s.row), "missing", Vec::new());
                    }
                    if let Some(r) = repair.as_deref_mut() {
                        r.row(s.row.iter())?;
                    }
                }
                s.advance(table, key_at)?;
            }
            Ordering::Greater => {
                d.target_rows += 1;
                d.extra += 1;
                if d.examples.len() < max_examples {
                    note(&mut d, key_text(&t.row), "extra", Vec::new());
                }
                if let Some(r) = repair.as_deref_mut() {
                    r.delete(key_at.iter().map(|&i| &t.row[i]))?;
                }
                t.advance(table, key_at)?;
            }
            Ordering::Equal => {
                if in_scope(&s.row) {
                    d.source_rows += 1;
                    d.target_rows += 1;
                    if s.row.iter().ne(t.row.iter()) {
                        d.different += 1;
                        if d.examples.len() < max_examples {
                            let columns: Vec<String> = (0..header.len())
                                .filter(|&i| s.row.get(i) != t.row.get(i))
                                .map(|i| header[i].clone())
                                .collect();
                            note(&mut d, key_text(&s.row), "different", columns);
                        }
                        if let Some(r) = repair.as_deref_mut() {
                            r.row(s.row.iter())?;
                        }
                    }
                }
                s.advance(table, key_at)?;
                t.advance(table, key_at)?;
            }
        }
    }
    Ok(d)
}

/// The report as text: a line per table, then the differing keys.
pub fn text(r: &Report) -> String {
    let mut out = format!(
        "compared up to audit key {} (the target's last export: {}){}\n",
        r.up_to_audit_key,
        r.last_folder.as_deref().unwrap_or("none"),
        if r.in_flight > 0 {
            format!("; {} key(s) still in flight left out", r.in_flight)
        } else {
            String::new()
        }
    );
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for t in &r.tables {
        *totals.entry("tables").or_default() += 1;
        out.push_str(&format!(
            "{:<32} {:>10} source {:>10} target  {}\n",
            t.table,
            t.source_rows,
            t.target_rows,
            if t.in_sync() {
                "in sync".to_string()
            } else {
                format!(
                    "DIFFERENT: {} missing in target, {} extra in target, {} with other values",
                    t.missing, t.extra, t.different
                )
            }
        ));
        for e in &t.examples {
            out.push_str(&format!(
                "    {} {}{}\n",
                e.kind,
                e.key,
                if e.columns.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.columns.join(", "))
                }
            ));
        }
        let shown = t.examples.len() as u64;
        let all = t.missing + t.extra + t.different;
        if all > shown {
            out.push_str(&format!("    ... and {} more\n", all - shown));
        }
    }
    let bad = r.tables.iter().filter(|t| !t.in_sync()).count();
    out.push_str(&if bad == 0 {
        format!("in sync: {} table(s)\n", r.tables.len())
    } else {
        format!("{bad} of {} table(s) differ\n", r.tables.len())
    });
    if let Some(w) = &r.repair {
        out.push_str(&format!(
            "repair folder written: {} ({} row(s) to write, {} key(s) to delete); load it with: gim-export load --input {}\n",
            w.path.display(),
            w.rows,
            w.deletes,
            w.path.parent().map(|p| p.display().to_string()).unwrap_or_default()
        ));
    }
    out
}

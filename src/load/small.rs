//! Small tables, read whole: a 15-minute folder of a real Info Mart holds about 200 tables, most with a
//! handful of rows. Staging each through its own `COPY` costs several round trips and statements per
//! table; a target can instead merge every small table of a folder in one batch of statements.
//!
//! Only plain files take this path. Anything the strict reader here does not recognise as the plain
//! CSV our exports write (a carriage return outside quotes, a `\.` line, a stray quote, a row of the wrong width, a file
//! over the size cap, a checksum that does not hold, an entry that cannot be read) goes the usual way,
//! whose messages (line numbers, reasons) stay the single source of every refusal.

use std::io::Read;
use std::path::Path;

use anyhow::Result;

use super::{open_csv, TablePlan};

/// A table is small when its CSV holds at most this many bytes...
pub const SMALL_BYTES: u64 = 256 * 1024;
/// ... and the folder declares at most this many rows for it.
pub const SMALL_ROWS: u64 = 2_000;

/// One small table's rows, read and checked: every field as text, `None` where the file leaves it
/// empty and unquoted (what `COPY ... CSV` reads as NULL).
#[derive(Debug, PartialEq)]
pub struct SmallTable {
    /// Index into the folder's table plans.
    pub plan: usize,
    pub rows: Vec<Vec<Option<String>>>,
}

/// Whether a table may be read whole: its row count is declared and small, and it is not a full
/// resync (whose anti-join wants a stage).
pub fn candidate(plan: &TablePlan) -> bool {
    !plan.remove_missing && plan.declared_rows.is_some_and(|n| n <= SMALL_ROWS)
}

/// Reads the candidate tables of one zip in one pass (one open, no thread per table). A table is
/// returned only when its bytes hash to the expected SHA-1, its row count is the declared one, no field
/// is longer than `max_field_bytes`, and the strict reader accepts it; the others are left to the
/// usual path.
pub fn read(
    zip_path: &Path,
    plans: &[TablePlan],
    encoding: &'static encoding_rs::Encoding,
    max_field_bytes: u64,
) -> Result<Vec<SmallTable>> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(zip_path)?)?;
    let mut out = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        if !candidate(plan) {
            continue;
        }
        let Ok(size) = zip.by_name(&plan.entry).map(|f| f.size()) else {
            continue;
        };
        if size > SMALL_BYTES {
            continue;
        }
        let Ok(mut raw) = open_csv(&mut zip, &plan.entry) else {
            continue;
        };
        let mut text = String::new();
        let read = crate::encoding::decoding_reader(&mut raw, encoding).read_to_string(&mut text);
        if read.is_err() || raw.hex() != plan.expected_sha1 {
            continue;
        }
        let Some(rows) = parse(&text, plan.columns.len(), max_field_bytes) else {
            tracing::debug!(
                "table {}: not plain CSV as this reader takes it; staged",
                plan.table
            );
            continue;
        };
        if Some(rows.len() as u64) != plan.declared_rows {
            continue;
        }
        out.push(SmallTable { plan: i, rows });
    }
    Ok(out)
}

/// [`read`] on a blocking thread, for a loader's async apply; nothing to read when no plan is a
/// [`candidate`].
pub async fn read_all(
    zip_path: &Path,
    plans: &[TablePlan],
    encoding: &'static encoding_rs::Encoding,
    max_field_bytes: u64,
) -> Result<Vec<SmallTable>> {
    if !plans.iter().any(candidate) {
        return Ok(Vec::new());
    }
    let (zip, owned) = (zip_path.to_path_buf(), plans.to_vec());
    tokio::task::spawn_blocking(move || read(&zip, &owned, encoding, max_field_bytes))
        .await
        .map_err(|e| anyhow::anyhow!("small-table reader thread failed: {e}"))?
}

/// The rows of a plain CSV after its header line, as `COPY ... (FORMAT csv, HEADER true)` reads them,
/// or `None` for anything that is not plain: a carriage return outside quotes, a `\.` line, a quote inside an unquoted
/// field or after a closing quote, a quoted header, a row of another width than `width`, a field over
/// `max_field_bytes`.
pub fn parse(text: &str, width: usize, max_field_bytes: u64) -> Option<Vec<Vec<Option<String>>>> {
    let (header, body) = match text.find('\n') {
        Some(n) => (&text[..n], &text[n + 1..]),
        None => (text, ""),
    };
    if header.contains(['"', '\r']) {
        return None;
    }
    let b = body.as_bytes();
    let mut rows = Vec::new();
    let mut row: Vec<Option<String>> = Vec::with_capacity(width);
    let mut i = 0;
    while i < b.len() {
        // At the start of a field.
        let (field, next) = if b[i] == b'"' {
            let mut value = String::new();
            let mut j = i + 1;
            loop {
                let k = j + body[j..].find('"')?;
                value.push_str(&body[j..k]);
                if b.get(k + 1) == Some(&b'"') {
                    value.push('"');
                    j = k + 2;
                } else {
                    j = k + 1;
                    break;
                }
            }
            (Some(value), j)
        } else {
            let end = body[i..].find([',', '\n']).map_or(b.len(), |n| i + n);
            let value = &body[i..end];
            if value.contains(['"', '\r']) || (row.is_empty() && value == "\\.") {
                return None;
            }
            ((!value.is_empty()).then(|| value.to_string()), end)
        };
        if field
            .as_ref()
            .is_some_and(|f| f.len() as u64 > max_field_bytes)
        {
            return None;
        }
        row.push(field);
        match b.get(next) {
            Some(b',') => {
                i = next + 1;
                if i == b.len() {
                    // A trailing comma at the end of the file: one more empty field.
                    row.push(None);
                }
            }
            Some(b'\n') | None => {
                if row.len() != width {
                    return None;
                }
                rows.push(std::mem::replace(&mut row, Vec::with_capacity(width)));
                i = next + 1;
            }
            Some(_) => return None,
        }
    }
    if !row.is_empty() {
        if row.len() != width {
            return None;
        }
        rows.push(row);
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn plain_rows_with_quotes_commas_newlines_and_nulls() {
        let text = "a,b,c\n1,,x\n2,\"\",\"he said \"\"hi\"\", then\r\nleft\"\n3,z,\n";
        let rows = parse(text, 3, 1000).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![s("1"), None, s("x")],
                vec![s("2"), s(""), s("he said \"hi\", then\r\nleft")],
                vec![s("3"), s("z"), None],
            ]
        );
    }

    #[test]
    fn a_last_line_without_newline_and_an_empty_body() {
        assert_eq!(
            parse("a,b\n1,2", 2, 10).unwrap(),
            vec![vec![s("1"), s("2")]]
        );
        assert_eq!(parse("a,b\n", 2, 10).unwrap(), Vec::<Vec<_>>::new());
        assert_eq!(parse("", 2, 10).unwrap(), Vec::<Vec<_>>::new());
        assert_eq!(parse("a,b\n1,", 2, 10).unwrap(), vec![vec![s("1"), None]]);
    }

    #[test]
    fn anything_not_plain_is_left_to_copy() {
        for text in [
            "a,b\r\n1,2\r\n",       // carriage returns
            "a,b\n1,2\n\\.\n",      // COPY's end-of-data marker
            "a,b\n1,x\"y\n",        // a quote inside an unquoted field
            "a,b\n1,\"x\"y\n",      // text after a closing quote
            "a,b\n1,\"open\n",      // an unclosed quote
            "a,b\n1,2,3\n",         // too wide
            "a,b\n1\n",             // too narrow
            "a,b\n\n",              // an empty line
            "\"a\",b\n1,2\n",       // a quoted header
            "a,b\n1,12345678901\n", // a field over the cap
        ] {
            assert_eq!(parse(text, 2, 10), None, "{text:?}");
        }
    }
}

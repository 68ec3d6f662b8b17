//! The export folder format: the contract between the sending and the receiving side.
//!
//! ```text
//! export_<hwm-to, 19 digits>_<max-data-ts as YYYY_MM_DD_HH_MI_SS GMT>/
//!     export_XXX.zip            <table>.csv and <table>.csv.sha1 for each table with changes
//!     export_XXX.zip.sha1       `sha1sum -c` line for the zip
//!     export_XXX.extracted.xml  <info> metadata: created-ts, versions, hwm-from, hwm-to, max-data-ts, ...
//! ```
//!
//! Everything here is pure: names, checksum lines, the XML. The exporter, the verifier and the loader
//! all read and write the format through this module.

use std::fmt::Write as _;
use std::io::Write;

use chrono::{DateTime, NaiveDateTime, Utc};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use sha1::{Digest, Sha1};

use crate::audit::{AuditKeySet, HighWaterMark};

/// Every export folder's name starts with this.
pub const FOLDER_PREFIX: &str = "export_";
/// Audit keys are numeric(19): padded to 19 digits, folder names sort in export order.
pub const KEY_DIGITS: usize = 19;
const TS_FORMAT: &str = "%Y_%m_%d_%H_%M_%S";
/// Between an export's name and a repair folder's number: `export_XXX_<ts>_repair_001`.
pub const REPAIR_INFIX: &str = "_repair_";

/// A problem with the format of an export folder or one of its files.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{file}: not a valid extracted.xml: {reason}")]
    Xml { file: String, reason: String },
    #[error("{file}: not a sha1sum line (expected `<40 hex digits>  <file name>`)")]
    Sha1Line { file: String },
}

/// The name of one export: its `hwm-to` audit key and its `max-data-ts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExportName {
    pub hwm_to: i64,
    pub max_data_ts: i64,
    /// A repair folder (`compare --repair`): its number among the repairs made after the export
    /// `hwm_to`/`max_data_ts` names, from 1; 0 for an export. `_repair_NNN` follows the export's
    /// name, so the repair sorts right after the export it repairs and before the next one.
    pub repair: u32,
}

impl ExportName {
    /// `export_0000000000000200074_2018_03_14_05_42_37`
    pub fn folder(&self) -> String {
        let ts = DateTime::<Utc>::from_timestamp(self.max_data_ts, 0)
            .unwrap_or_default()
            .format(TS_FORMAT);
        let repair = if self.repair > 0 {
            format!("{REPAIR_INFIX}{:03}", self.repair)
        } else {
            String::new()
        };
        format!(
            "{FOLDER_PREFIX}{:0width$}_{ts}{repair}",
            self.hwm_to,
            width = KEY_DIGITS
        )
    }

    /// The export a repair folder repairs (itself for an export).
    pub fn export(&self) -> ExportName {
        ExportName { repair: 0, ..*self }
    }
    pub fn zip_file(&self) -> String {
        format!("{}.zip", self.folder())
    }
    pub fn zip_sha1_file(&self) -> String {
        format!("{}.zip.sha1", self.folder())
    }
    pub fn xml_file(&self) -> String {
        format!("{}.extracted.xml", self.folder())
    }
    /// An encrypted folder's zip (`--encrypt-to`): CMS EnvelopedData, DER.
    pub fn p7m_file(&self) -> String {
        format!("{}.zip.p7m", self.folder())
    }
    pub fn p7m_sha1_file(&self) -> String {
        format!("{}.zip.p7m.sha1", self.folder())
    }
    /// A signed folder's detached signatures (`--sign-with`): CMS SignedData, DER, over the zip and
    /// over extracted.xml.
    pub fn zip_sig_file(&self) -> String {
        format!("{}.zip.sig", self.folder())
    }
    pub fn xml_sig_file(&self) -> String {
        format!("{}.extracted.xml.sig", self.folder())
    }

    /// Reads a folder name back; `None` for anything that is not exactly an export folder name.
    pub fn parse(folder: &str) -> Option<ExportName> {
        let rest = folder.strip_prefix(FOLDER_PREFIX)?;
        let (key, ts) = rest.split_once('_')?;
        let (ts, repair) = match ts.split_once(REPAIR_INFIX) {
            Some((ts, n)) if n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()) => {
                (ts, n.parse::<u32>().ok().filter(|&n| n > 0)?)
            }
            Some(_) => return None,
            None => (ts, 0),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hwm_to: i64 = key.parse().ok()?;
        let when = NaiveDateTime::parse_from_str(ts, TS_FORMAT).ok()?;
        let name = ExportName {
            hwm_to,
            max_data_ts: when.and_utc().timestamp(),
            repair,
        };
        // Only the canonical spelling counts (no shorter padding, no trailing text).
        (name.folder() == folder).then_some(name)
    }
}

/// The file name of a table's CSV inside the zip.
pub fn csv_file_name(table: &str) -> String {
    format!("{}.csv", table.to_ascii_lowercase())
}

/// The file name of a repair folder's list of keys to delete from a table: `<table>.delete.csv`
/// (the key columns, a header line, a row per key). Table names have no dots, so it cannot be taken
/// for a table's CSV by a reader that knows the suffix.
pub fn delete_file_name(table: &str) -> String {
    format!("{}{DELETE_SUFFIX}", table.to_ascii_lowercase())
}

pub const DELETE_SUFFIX: &str = ".delete.csv";

/// The table a deletion list (`<table>.delete.csv`, any case) is for.
pub fn delete_table_of(entry: &str) -> Option<String> {
    let n = entry.len();
    let s = DELETE_SUFFIX.len();
    (n > s && entry.is_char_boundary(n - s) && entry[n - s..].eq_ignore_ascii_case(DELETE_SUFFIX))
        .then(|| entry[..n - s].to_ascii_lowercase())
}

/// The table a zip entry holds, lower case, when the entry is a CSV (`<table>.csv`, matched in any
/// case: an Oracle or SQL Server Info Mart may name its tables in upper case).
pub fn csv_table_of(entry: &str) -> Option<String> {
    let n = entry.len();
    (n > 4 && entry.is_char_boundary(n - 4) && entry[n - 4..].eq_ignore_ascii_case(".csv"))
        .then(|| entry[..n - 4].to_ascii_lowercase())
}

/// The CSV entry a checksum entry (`<table>.csv.sha1`, any case) belongs to.
pub fn sha1_target_of(entry: &str) -> Option<&str> {
    let n = entry.len();
    (n > 5 && entry.is_char_boundary(n - 5) && entry[n - 5..].eq_ignore_ascii_case(".sha1"))
        .then(|| &entry[..n - 5])
        .filter(|csv| csv_table_of(csv).is_some())
}

/// A zip entry name the receiver may extract: a plain file name, no directories, no tricks.
pub fn is_safe_entry_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Appends one CSV field: RFC 4180 quoting, exactly where PostgreSQL's `COPY ... CSV` quotes (a
/// delimiter, a quote, CR or LF in the value), so both source paths give the same bytes.
pub fn push_csv_field(out: &mut Vec<u8>, field: &[u8], first: bool) {
    if !first {
        out.push(b',');
    }
    if field
        .iter()
        .any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        out.push(b'"');
        for &b in field {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field);
    }
}

/// A whole CSV record with its `\n` terminator.
pub fn csv_record<S: AsRef<str>>(fields: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        push_csv_field(&mut out, f.as_ref().as_bytes(), i == 0);
    }
    out.push(b'\n');
    out
}

/// Counts CSV records in bytes written to it: newlines outside quoted fields (quotes toggle, a doubled
/// quote toggles twice). Works across any split of the input.
#[derive(Debug, Default)]
pub struct CsvRecordCounter {
    in_quotes: bool,
    records: u64,
}

impl CsvRecordCounter {
    pub fn records(&self) -> u64 {
        self.records
    }
    pub fn feed(&mut self, buf: &[u8]) {
        for &b in buf {
            if b == b'"' {
                self.in_quotes = !self.in_quotes;
            } else if b == b'\n' && !self.in_quotes {
                self.records += 1;
            }
        }
    }
}

impl Write for CsvRecordCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lower-case hex of a SHA-1 digest.
pub fn hex(digest: &[u8]) -> String {
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A `sha1sum` line for `file`: `<hex>  <file>\n`, which `sha1sum -c` accepts.
/// The SHA-1 of `bytes`, lower-case hex.
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex(&Sha1::digest(bytes))
}

pub fn sha1_line(hex_digest: &str, file: &str) -> String {
    format!("{hex_digest}  {file}\n")
}

/// Reads a one-line `sha1sum` file: the digest and the file name it names.
pub fn parse_sha1_line(text: &str, file: &str) -> Result<(String, String), FormatError> {
    let bad = || FormatError::Sha1Line {
        file: file.to_string(),
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let line = lines.next().ok_or_else(bad)?;
    if lines.next().is_some() {
        return Err(bad());
    }
    let (digest, name) = line.split_once(' ').ok_or_else(bad)?;
    let name = name.strip_prefix(['*', ' ']).unwrap_or(name);
    if digest.len() != 40 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
        return Err(bad());
    }
    Ok((digest.to_ascii_lowercase(), name.to_string()))
}

/// A writer that hashes (SHA-1), checksums (CRC-32) and counts the bytes passing through it.
pub struct HashingWriter<W> {
    inner: W,
    sha1: Sha1,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            sha1: Sha1::new(),
            bytes: 0,
        }
    }
    /// The inner writer, the hex SHA-1 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.sha1.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha1.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes (SHA-1) the bytes read through it.
pub struct HashingReader<R> {
    inner: R,
    sha1: Sha1,
}

impl<R: std::io::Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            sha1: Sha1::new(),
        }
    }
    /// The hex SHA-1 of everything read so far.
    pub fn hex(&self) -> String {
        hex(&self.sha1.clone().finalize())
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha1.update(&buf[..n]);
        Ok(n)
    }
}

/// A `a,b` attribute as lower-case column names (none when absent).
fn column_list(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// What the metadata says of one table's CSV (an extra element; readers may ignore it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSummary {
    /// Lower-case table name.
    pub name: String,
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha1: String,
    /// The source's primary key (lower case, key order), written as `key="a,b"`; empty when the
    /// source table has none or the folder did not say (older folders, other writers).
    pub key: Vec<String>,
    /// Binary columns (lower case), whose values are PostgreSQL hex text (`\x0a1b`); written as
    /// `binary-hex="a,b"` when there are any.
    pub binary_hex: Vec<String>,
}

/// `export_XXX.extracted.xml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportMetadata {
    pub created_ts: i64,
    pub gim_schema_version: String,
    pub gim_version: String,
    pub hwm_from: HighWaterMark,
    pub hwm_to: HighWaterMark,
    pub max_data_ts: i64,
    // Extras beyond the Genesys format; all optional when reading.
    /// The previous export's `max-data-ts` (or the chain's start): the window is (from, max-data-ts].
    pub max_data_ts_from: Option<i64>,
    pub chunk_seconds: Option<i64>,
    pub start_ts: Option<i64>,
    pub audit_keys: Option<AuditKeySet>,
    pub pending_audit_keys: Option<AuditKeySet>,
    /// Which chain this export belongs to: 0 for the first, one more at each `--restart`,
    /// `--reexport-last` or `--full-resync`. Written only when above 0.
    pub generation: u32,
    /// On the first export of a restarted chain: what it replaces.
    pub restart: Option<Restart>,
    /// `--full-resync`: the tables this export holds in full; a loader removes the target rows of
    /// these tables that it does not hold.
    pub full_tables: Option<Vec<String>>,
    /// The CSVs' character set (WHATWG name); absent means UTF-8.
    pub encoding: Option<String>,
    /// Which tables the chain exports: part of the chain, so that a run with another selection is
    /// noticed (absent in folders of other writers and older versions).
    pub selection: Option<TableSelection>,
    /// A repair folder (`compare --repair`): what it repairs, and the keys it deletes.
    pub repair: Option<Repair>,
    /// `--encrypt-to`: the zip is in `.zip.p7m`, for these certificates.
    pub encrypted: Option<Encrypted>,
    /// `--sign-with`: `.zip.sig` and `.extracted.xml.sig` hold detached signatures by this certificate.
    pub signed: Option<Signed>,
    pub tables: Vec<TableSummary>,
}

/// `<encrypted zip-sha1= zip-bytes= cipher=>` with a `<recipient sha256= subject=/>` per certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted {
    /// The zip inside (deterministic, unlike the encrypted file): checked after decrypting.
    pub zip_sha1: String,
    pub zip_bytes: u64,
    pub cipher: String,
    pub recipients: Vec<Recipient>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// SHA-256 of the certificate (DER), lower-case hex.
    pub fingerprint: String,
    pub subject: String,
}

/// `<signed signer-sha256= subject= zip-sha1=/>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub signer_fingerprint: String,
    pub subject: String,
    /// The signed zip's checksum: the signed extracted.xml names its own zip, so a zip and an XML
    /// signed for two different folders cannot be paired.
    pub zip_sha1: String,
}

/// `<repair number= of-folder= made-ts=>` with a `<delete .../>` per table that loses rows: written by
/// `compare --repair`. The folder's `<tables>` hold the source's rows for keys that are missing or
/// different in the target; each `<delete>` names a `<table>.delete.csv` of keys the target holds and
/// the source does not. hwm-from equals hwm-to (the export repaired): the repair takes no place in
/// the audit-key chain, it sits between the export it repairs and the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    pub number: u32,
    /// The export (the target's last applied folder) after which the repair was made.
    pub of_folder: String,
    pub made_ts: i64,
    /// The deletion lists: `name` is the table, `file` its `<table>.delete.csv`, `key` its columns.
    pub deletes: Vec<TableSummary>,
}

/// `--include` / `--exclude` as an export applied them, and the tables they selected (lower case,
/// sorted): `<selected-tables>`, `<include-tables>`, `<exclude-tables>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableSelection {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub tables: Vec<String>,
}

impl TableSelection {
    /// Patterns lower-cased, sorted and without repeats, so that the same selection compares equal
    /// however it was typed.
    pub fn new(include: &[String], exclude: &[String], tables: &[String]) -> TableSelection {
        let norm = |v: &[String]| {
            let mut v: Vec<String> = v
                .iter()
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        TableSelection {
            include: norm(include),
            exclude: norm(exclude),
            tables: norm(tables),
        }
    }

    /// Same patterns (the tables they select may still differ as the source changes).
    pub fn same_patterns(&self, other: &TableSelection) -> bool {
        self.include == other.include && self.exclude == other.exclude
    }

    /// `--include a,b --exclude c`, or `every table`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.include.is_empty() {
            parts.push(format!("--include {}", self.include.join(",")));
        }
        if !self.exclude.is_empty() {
            parts.push(format!("--exclude {}", self.exclude.join(",")));
        }
        if parts.is_empty() {
            "every table (no --include or --exclude)".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Why a chain was restarted (`<restart kind=...>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartKind {
    /// `--restart` (with or without `--start-date`): a new chain from a date or from the beginning.
    Restart,
    /// `--reexport-last`: the chain again from an earlier export's high-water mark.
    Reexport,
    /// `--full-resync`: every row of every table in one export.
    Full,
}

impl RestartKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartKind::Restart => "restart",
            RestartKind::Reexport => "reexport",
            RestartKind::Full => "full-resync",
        }
    }
    pub fn parse(s: &str) -> Option<RestartKind> {
        [
            RestartKind::Restart,
            RestartKind::Reexport,
            RestartKind::Full,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// `<restart kind="..." after-audit-key="..." after-created-ts="..."/>`: this export starts chain
/// `generation`, which replaces the chain whose newest export ended at `after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    pub kind: RestartKind,
    pub after: HighWaterMark,
    /// Why the chain was restarted when the exporter did it by itself (`--resync-on-broken-chain`):
    /// the `reason` attribute.
    pub reason: Option<String>,
}

impl ExportMetadata {
    pub fn name(&self) -> ExportName {
        ExportName {
            hwm_to: self.hwm_to.audit_key,
            max_data_ts: self.max_data_ts,
            repair: self.repair.as_ref().map_or(0, |r| r.number),
        }
    }

    /// The XML text: deterministic, two-space indented, UTF-8, with a trailing newline.
    pub fn to_xml(&self) -> String {
        let mut w = quick_xml::Writer::new_with_indent(Vec::new(), b' ', 2);
        // Writing into a Vec cannot fail.
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        let _ = w.write_event(Event::Start(BytesStart::new("info")));
        let text = |w: &mut quick_xml::Writer<Vec<u8>>, tag: &str, value: &str| {
            let _ = w.write_event(Event::Start(BytesStart::new(tag)));
            let _ = w.write_event(Event::Text(BytesText::new(value)));
            let _ = w.write_event(Event::End(BytesEnd::new(tag)));
        };
        let hwm = |w: &mut quick_xml::Writer<Vec<u8>>, tag: &str, h: HighWaterMark| {
            let mut e = BytesStart::new(tag);
            e.push_attribute(("audit-key", h.audit_key.to_string().as_str()));
            e.push_attribute(("created-ts", h.created_ts.to_string().as_str()));
            let _ = w.write_event(Event::Empty(e));
        };
        text(&mut w, "created-ts", &self.created_ts.to_string());
        text(&mut w, "gim-schema-version", &self.gim_schema_version);
        text(&mut w, "gim-version", &self.gim_version);
        hwm(&mut w, "hwm-from", self.hwm_from);
        hwm(&mut w, "hwm-to", self.hwm_to);
        text(&mut w, "max-data-ts", &self.max_data_ts.to_string());
        if let Some(v) = self.max_data_ts_from {
            text(&mut w, "max-data-ts-from", &v.to_string());
        }
        if let Some(v) = self.chunk_seconds {
            text(&mut w, "chunk-size-seconds", &v.to_string());
        }
        if let Some(v) = self.start_ts {
            text(&mut w, "start-ts", &v.to_string());
        }
        if let Some(v) = &self.audit_keys {
            text(&mut w, "audit-keys", &v.to_string());
        }
        if let Some(v) = &self.pending_audit_keys {
            text(&mut w, "pending-audit-keys", &v.to_string());
        }
        if self.generation > 0 {
            text(&mut w, "chain-generation", &self.generation.to_string());
        }
        if let Some(r) = &self.restart {
            let mut e = BytesStart::new("restart");
            e.push_attribute(("kind", r.kind.as_str()));
            e.push_attribute(("after-audit-key", r.after.audit_key.to_string().as_str()));
            e.push_attribute(("after-created-ts", r.after.created_ts.to_string().as_str()));
            if let Some(reason) = &r.reason {
                e.push_attribute(("reason", reason.as_str()));
            }
            let _ = w.write_event(Event::Empty(e));
        }
        if let Some(v) = &self.full_tables {
            text(&mut w, "full-tables", &v.join(" "));
        }
        if let Some(v) = &self.encoding {
            text(&mut w, "encoding", v);
        }
        if let Some(sel) = &self.selection {
            text(&mut w, "selected-tables", &sel.tables.join(" "));
            if !sel.include.is_empty() {
                text(&mut w, "include-tables", &sel.include.join(" "));
            }
            if !sel.exclude.is_empty() {
                text(&mut w, "exclude-tables", &sel.exclude.join(" "));
            }
        }
        let summary = |w: &mut quick_xml::Writer<Vec<u8>>, tag: &str, t: &TableSummary| {
            let mut e = BytesStart::new(tag);
            e.push_attribute(("name", t.name.as_str()));
            e.push_attribute(("file", t.file.as_str()));
            e.push_attribute(("rows", t.rows.to_string().as_str()));
            e.push_attribute(("bytes", t.bytes.to_string().as_str()));
            e.push_attribute(("sha1", t.sha1.as_str()));
            if !t.key.is_empty() {
                e.push_attribute(("key", t.key.join(",").as_str()));
            }
            if !t.binary_hex.is_empty() {
                e.push_attribute(("binary-hex", t.binary_hex.join(",").as_str()));
            }
            let _ = w.write_event(Event::Empty(e));
        };
        if let Some(r) = &self.repair {
            let mut e = BytesStart::new("repair");
            e.push_attribute(("number", r.number.to_string().as_str()));
            e.push_attribute(("of-folder", r.of_folder.as_str()));
            e.push_attribute(("made-ts", r.made_ts.to_string().as_str()));
            if r.deletes.is_empty() {
                let _ = w.write_event(Event::Empty(e));
            } else {
                let _ = w.write_event(Event::Start(e));
                for t in &r.deletes {
                    summary(&mut w, "delete", t);
                }
                let _ = w.write_event(Event::End(BytesEnd::new("repair")));
            }
        }
        if let Some(enc) = &self.encrypted {
            let mut e = BytesStart::new("encrypted");
            e.push_attribute(("zip-sha1", enc.zip_sha1.as_str()));
            e.push_attribute(("zip-bytes", enc.zip_bytes.to_string().as_str()));
            e.push_attribute(("cipher", enc.cipher.as_str()));
            let _ = w.write_event(Event::Start(e));
            for r in &enc.recipients {
                let mut e = BytesStart::new("recipient");
                e.push_attribute(("sha256", r.fingerprint.as_str()));
                e.push_attribute(("subject", r.subject.as_str()));
                let _ = w.write_event(Event::Empty(e));
            }
            let _ = w.write_event(Event::End(BytesEnd::new("encrypted")));
        }
        if let Some(sig) = &self.signed {
            let mut e = BytesStart::new("signed");
            e.push_attribute(("signer-sha256", sig.signer_fingerprint.as_str()));
            e.push_attribute(("subject", sig.subject.as_str()));
            e.push_attribute(("zip-sha1", sig.zip_sha1.as_str()));
            let _ = w.write_event(Event::Empty(e));
        }
        let _ = w.write_event(Event::Start(BytesStart::new("tables")));
        for t in &self.tables {
            summary(&mut w, "table", t);
        }
        let _ = w.write_event(Event::End(BytesEnd::new("tables")));
        let _ = w.write_event(Event::End(BytesEnd::new("info")));
        let mut out = String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8");
        out.push('\n');
        out
    }

    /// Reads `extracted.xml`. Unknown elements are ignored; the Genesys fields are required.
    pub fn from_xml(text: &str, file: &str) -> Result<ExportMetadata, FormatError> {
        let err = |reason: String| FormatError::Xml {
            file: file.to_string(),
            reason,
        };
        let mut reader = quick_xml::Reader::from_str(text);
        reader.config_mut().trim_text(true);
        let mut path: Vec<String> = Vec::new();
        let mut fields: std::collections::HashMap<String, String> = Default::default();
        let mut hwms: std::collections::HashMap<String, HighWaterMark> = Default::default();
        let mut tables = Vec::new();
        let mut restart = None;
        let mut repair: Option<Repair> = None;
        let mut encrypted: Option<Encrypted> = None;
        let mut signed: Option<Signed> = None;
        let mut saw_info_end = false;

        let attrs = |e: &BytesStart| -> Result<std::collections::HashMap<String, String>, String> {
            let mut m = std::collections::HashMap::new();
            for a in e.attributes() {
                let a = a.map_err(|e| e.to_string())?;
                let k = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                let v = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
                m.insert(k, v);
            }
            Ok(m)
        };
        let int = |m: &std::collections::HashMap<String, String>, k: &str, tag: &str| {
            m.get(k)
                .ok_or_else(|| format!("<{tag}> has no {k} attribute"))?
                .parse::<i64>()
                .map_err(|_| format!("<{tag}> {k} is not an integer"))
        };
        let summary = |e: &BytesStart, tag: &str| -> Result<TableSummary, String> {
            let m = attrs(e)?;
            let get = |k: &str| {
                m.get(k)
                    .cloned()
                    .ok_or_else(|| format!("<{tag}> has no {k} attribute"))
            };
            let num = |k: &str| {
                get(k)?
                    .parse::<u64>()
                    .map_err(|_| format!("<{tag}> {k} is not a count"))
            };
            Ok(TableSummary {
                name: get("name")?,
                file: get("file")?,
                rows: num("rows")?,
                bytes: num("bytes")?,
                sha1: get("sha1")?,
                binary_hex: column_list(m.get("binary-hex")),
                key: column_list(m.get("key")),
            })
        };

        loop {
            let ev = reader
                .read_event()
                .map_err(|e| err(format!("at byte {}: {e}", reader.buffer_position())))?;
            let (e, opens) = match ev {
                Event::Start(e) => (e, true),
                Event::Empty(e) => (e, false),
                Event::Text(t) => {
                    if path.len() == 2 {
                        let v = t.unescape().map_err(|e| err(e.to_string()))?.into_owned();
                        fields.insert(path[1].clone(), v);
                    }
                    continue;
                }
                Event::End(_) => {
                    if path.len() == 1 {
                        saw_info_end = true;
                    }
                    path.pop();
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            if path.is_empty() && tag != "info" {
                return Err(err(format!("the root element is <{tag}>, not <info>")));
            }
            if path.len() == 1 {
                // An element with no text (`<x></x>` or `<x/>`) is present and empty.
                fields.entry(tag.clone()).or_default();
            }
            match (path.len(), tag.as_str()) {
                (1, "hwm-from") | (1, "hwm-to") => {
                    let m = attrs(&e).map_err(err)?;
                    let h = HighWaterMark {
                        audit_key: int(&m, "audit-key", &tag).map_err(err)?,
                        created_ts: int(&m, "created-ts", &tag).map_err(err)?,
                    };
                    hwms.insert(tag.clone(), h);
                }
                (1, "restart") => {
                    let m = attrs(&e).map_err(err)?;
                    let kind = m
                        .get("kind")
                        .and_then(|k| RestartKind::parse(k))
                        .ok_or_else(|| err("<restart> has no known kind attribute".into()))?;
                    restart = Some(Restart {
                        kind,
                        after: HighWaterMark {
                            audit_key: int(&m, "after-audit-key", &tag).map_err(err)?,
                            created_ts: int(&m, "after-created-ts", &tag).map_err(err)?,
                        },
                        reason: m.get("reason").cloned(),
                    });
                }
                (1, "repair") => {
                    let m = attrs(&e).map_err(err)?;
                    let number = int(&m, "number", &tag).map_err(err)?;
                    repair = Some(Repair {
                        number: u32::try_from(number)
                            .ok()
                            .filter(|&n| (1..1000).contains(&n))
                            .ok_or_else(|| err("<repair> number is not 1 to 999".into()))?,
                        of_folder: m
                            .get("of-folder")
                            .cloned()
                            .ok_or_else(|| err("<repair> has no of-folder attribute".into()))?,
                        made_ts: int(&m, "made-ts", &tag).map_err(err)?,
                        deletes: Vec::new(),
                    });
                }
                (2, "table") if path[1] == "tables" => {
                    tables.push(summary(&e, "table").map_err(err)?);
                }
                (1, "encrypted") => {
                    let m = attrs(&e).map_err(err)?;
                    let get = |k: &str| {
                        m.get(k)
                            .cloned()
                            .ok_or_else(|| err(format!("<encrypted> has no {k} attribute")))
                    };
                    encrypted = Some(Encrypted {
                        zip_sha1: get("zip-sha1")?,
                        zip_bytes: get("zip-bytes")?
                            .parse()
                            .map_err(|_| err("<encrypted> zip-bytes is not a count".into()))?,
                        cipher: get("cipher")?,
                        recipients: Vec::new(),
                    });
                }
                (2, "recipient") if path[1] == "encrypted" => {
                    let m = attrs(&e).map_err(err)?;
                    if let Some(enc) = encrypted.as_mut() {
                        enc.recipients.push(Recipient {
                            fingerprint: m.get("sha256").cloned().unwrap_or_default(),
                            subject: m.get("subject").cloned().unwrap_or_default(),
                        });
                    }
                }
                (1, "signed") => {
                    let m = attrs(&e).map_err(err)?;
                    signed = Some(Signed {
                        signer_fingerprint: m.get("signer-sha256").cloned().unwrap_or_default(),
                        subject: m.get("subject").cloned().unwrap_or_default(),
                        zip_sha1: m.get("zip-sha1").cloned().unwrap_or_default(),
                    });
                }
                (2, "delete") if path[1] == "repair" => {
                    let d = summary(&e, "delete").map_err(err)?;
                    if let Some(r) = repair.as_mut() {
                        r.deletes.push(d);
                    }
                }
                _ => {}
            }
            if opens {
                path.push(tag);
            }
        }
        if !saw_info_end {
            return Err(err("the document ends before </info>".into()));
        }
        let req = |k: &str| {
            fields
                .get(k)
                .cloned()
                .ok_or_else(|| err(format!("<{k}> is missing")))
        };
        let req_int = |k: &str| {
            req(k)?
                .trim()
                .parse::<i64>()
                .map_err(|_| err(format!("<{k}> is not an integer")))
        };
        let opt_int = |k: &str| -> Result<Option<i64>, FormatError> {
            fields
                .get(k)
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| err(format!("<{k}> is not an integer")))
                })
                .transpose()
        };
        let opt_keys = |k: &str| -> Result<Option<AuditKeySet>, FormatError> {
            fields
                .get(k)
                .map(|v| v.parse::<AuditKeySet>().map_err(|e| err(e.to_string())))
                .transpose()
        };
        let hwm = |k: &str| {
            hwms.get(k)
                .copied()
                .ok_or_else(|| err(format!("<{k}> is missing")))
        };
        Ok(ExportMetadata {
            created_ts: req_int("created-ts")?,
            gim_schema_version: req("gim-schema-version")?,
            gim_version: req("gim-version")?,
            hwm_from: hwm("hwm-from")?,
            hwm_to: hwm("hwm-to")?,
            max_data_ts: req_int("max-data-ts")?,
            max_data_ts_from: opt_int("max-data-ts-from")?,
            chunk_seconds: opt_int("chunk-size-seconds")?,
            start_ts: opt_int("start-ts")?,
            audit_keys: opt_keys("audit-keys")?,
            pending_audit_keys: opt_keys("pending-audit-keys")?,
            generation: match opt_int("chain-generation")? {
                None => 0,
                Some(g) => u32::try_from(g)
                    .map_err(|_| err("<chain-generation> is out of range".into()))?,
            },
            restart,
            full_tables: fields
                .get("full-tables")
                .map(|v| v.split_whitespace().map(String::from).collect()),
            encoding: fields
                .get("encoding")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            selection: fields.get("selected-tables").map(|t| {
                let words = |k: &str| -> Vec<String> {
                    fields
                        .get(k)
                        .map(|v| v.split_whitespace().map(String::from).collect())
                        .unwrap_or_default()
                };
                TableSelection::new(
                    &words("include-tables"),
                    &words("exclude-tables"),
                    &t.split_whitespace().map(String::from).collect::<Vec<_>>(),
                )
            }),
            repair,
            encrypted,
            signed,
            tables,
        })
    }
}

/// A CSV reader's error as a refusal says it: the line first, in the words the loaders use.
pub fn describe_csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "line {}: {len} fields where the header has {expected_len}",
            pos.as_ref().map_or(0, |p| p.line())
        ),
        csv::ErrorKind::Utf8 { pos, err } => format!(
            "line {}: not valid UTF-8 (field {})",
            pos.as_ref().map_or(0, |p| p.line()),
            err.field() + 1
        ),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ExportMetadata {
        ExportMetadata {
            created_ts: 1521091600,
            gim_schema_version: "8.5.009.15".into(),
            gim_version: "gim-export 0.1.0".into(),
            hwm_from: HighWaterMark {
                audit_key: 13,
                created_ts: 1520919983,
            },
            hwm_to: HighWaterMark {
                audit_key: 200074,
                created_ts: 1520995485,
            },
            max_data_ts: 1521006157,
            max_data_ts_from: Some(1520919000),
            chunk_seconds: Some(86400),
            start_ts: None,
            audit_keys: Some("14-200074".parse().unwrap()),
            pending_audit_keys: Some(AuditKeySet::new()),
            generation: 0,
            restart: None,
            full_tables: None,
            encoding: None,
            selection: None,
            repair: None,
            encrypted: None,
            signed: None,
            tables: vec![TableSummary {
                name: "interaction_fact".into(),
                file: "interaction_fact.csv".into(),
                rows: 3,
                bytes: 120,
                sha1: "da39a3ee5e6b4b0d3255bfef95601890afd80709".into(),
                key: vec!["interaction_id".into()],
                binary_hex: Vec::new(),
            }],
        }
    }

    #[test]
    fn folder_names_pad_and_parse_back() {
        let n = ExportName {
            hwm_to: 200074,
            max_data_ts: 1521006157,
            repair: 0,
        };
        assert_eq!(n.folder(), "export_0000000000000200074_2018_03_14_05_42_37");
        assert_eq!(ExportName::parse(&n.folder()), Some(n));
        assert_eq!(ExportName::parse("export_200074_2018_03_14_05_42_37"), None);
        assert_eq!(
            ExportName::parse("export_0000000000000200074_2018_03_14"),
            None
        );
        assert_eq!(ExportName::parse("other"), None);
        let later = ExportName {
            hwm_to: 1_000_000,
            max_data_ts: 1,
            repair: 0,
        };
        assert!(later.folder() > n.folder());
    }

    #[test]
    fn a_repair_folder_sorts_after_the_export_it_repairs_and_before_the_next() {
        let export = ExportName {
            hwm_to: 200074,
            max_data_ts: 1521006157,
            repair: 0,
        };
        let repair = ExportName {
            repair: 2,
            ..export
        };
        assert_eq!(
            repair.folder(),
            "export_0000000000000200074_2018_03_14_05_42_37_repair_002"
        );
        assert_eq!(ExportName::parse(&repair.folder()), Some(repair));
        assert_eq!(repair.export(), export);
        let next = ExportName {
            max_data_ts: export.max_data_ts + 1,
            ..export
        };
        let mut names = [next.folder(), repair.folder(), export.folder()];
        names.sort();
        assert_eq!(names, [export.folder(), repair.folder(), next.folder()]);
        assert!(export < repair && repair < next);
        for bad in [
            "_repair_000",
            "_repair_01",
            "_repair_0001",
            "_repair_x01",
            "_repair",
        ] {
            assert_eq!(
                ExportName::parse(&format!("{}{bad}", export.folder())),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            delete_table_of("Agent_Fact.DELETE.csv").as_deref(),
            Some("agent_fact")
        );
        assert_eq!(delete_table_of("agent_fact.csv"), None);
        assert_eq!(delete_file_name("Agent_Fact"), "agent_fact.delete.csv");

        let mut m = sample();
        m.repair = Some(Repair {
            number: 2,
            of_folder: export.folder(),
            made_ts: 1521090000,
            deletes: vec![TableSummary {
                name: "interaction_fact".into(),
                file: delete_file_name("interaction_fact"),
                rows: 2,
                bytes: 30,
                sha1: "da39a3ee5e6b4b0d3255bfef95601890afd80709".into(),
                key: vec!["interaction_id".into()],
                binary_hex: Vec::new(),
            }],
        });
        let xml = m.to_xml();
        assert!(xml.contains("<repair number=\"2\""), "{xml}");
        let back = ExportMetadata::from_xml(&xml, "x").unwrap();
        assert_eq!(back, m);
        assert_eq!(back.name().repair, 2);
    }

    #[test]
    fn xml_round_trips_and_reads_the_vendor_example() {
        let m = sample();
        let xml = m.to_xml();
        assert!(xml.contains("<hwm-from audit-key=\"13\" created-ts=\"1520919983\"/>"));
        assert_eq!(ExportMetadata::from_xml(&xml, "x").unwrap(), m);

        let vendor = "<info>\n<created-ts>1521091600</created-ts>\n<gim-schema-version>8.5.009.15</gim-schema-version>\n<gim-version>8.5.009.20</gim-version>\n<hwm-from audit-key=\"13\" created-ts=\"1520919983\"/>\n<hwm-to audit-key=\"200074\" created-ts=\"1520995485\"/>\n<max-data-ts>1521006157</max-data-ts>\n</info>";
        let v = ExportMetadata::from_xml(vendor, "vendor").unwrap();
        assert_eq!(v.hwm_to.audit_key, 200074);
        assert_eq!(v.chunk_seconds, None);
        assert!(v.tables.is_empty());
        assert_eq!((v.generation, v.restart, v.encoding), (0, None, None));
    }

    #[test]
    fn restart_generation_and_encoding_round_trip() {
        let mut m = sample();
        m.generation = 2;
        m.restart = Some(Restart {
            kind: RestartKind::Full,
            after: HighWaterMark {
                audit_key: 99,
                created_ts: 1_700_000_000,
            },
            reason: Some("the newest folder is damaged".into()),
        });
        m.full_tables = Some(vec!["interaction_fact".into(), "tenant".into()]);
        m.encoding = Some("windows-1252".into());
        m.selection = Some(TableSelection::new(
            &["IRF_*".into(), "interaction_fact".into()],
            &[],
            &["irf_user_data_cust_1".into(), "interaction_fact".into()],
        ));
        let xml = m.to_xml();
        assert!(
            xml.contains(
                "<selected-tables>interaction_fact irf_user_data_cust_1</selected-tables>"
            ) && xml.contains("<include-tables>interaction_fact irf_*</include-tables>")
                && !xml.contains("exclude-tables"),
            "{xml}"
        );
        assert!(
            xml.contains("<chain-generation>2</chain-generation>"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<restart kind=\"full-resync\" after-audit-key=\"99\" after-created-ts=\"1700000000\" reason=\"the newest folder is damaged\"/>"
            ),
            "{xml}"
        );
        assert_eq!(ExportMetadata::from_xml(&xml, "x").unwrap(), m);
        let bad = xml.replace("full-resync", "sideways");
        let e = ExportMetadata::from_xml(&bad, "f.xml").unwrap_err();
        assert!(e.to_string().contains("<restart>"), "{e}");
    }

    #[test]
    fn xml_errors_name_the_file_and_the_field() {
        let xml = sample().to_xml();
        let truncated = &xml[..xml.len() / 2];
        let e = ExportMetadata::from_xml(truncated, "export_1.extracted.xml").unwrap_err();
        assert!(e.to_string().contains("export_1.extracted.xml"), "{e}");
        let missing = xml.replace("<max-data-ts>1521006157</max-data-ts>", "");
        let e = ExportMetadata::from_xml(&missing, "f.xml").unwrap_err();
        assert!(e.to_string().contains("<max-data-ts> is missing"), "{e}");
    }

    #[test]
    fn csv_fields_quote_like_postgres() {
        let rec = csv_record(&["1", "a,b", "say \"hi\"", "line\nbreak", "", " x ", "é"]);
        assert_eq!(
            String::from_utf8(rec).unwrap(),
            "1,\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\",, x ,é\n"
        );
    }

    #[test]
    fn record_counter_ignores_newlines_in_quotes() {
        let mut c = CsvRecordCounter::default();
        c.feed(b"1,\"a\nb\",x\n2,\"say \"\"hi");
        c.feed(b"\"\"\n\",y\n");
        assert_eq!(c.records(), 2);
    }

    #[test]
    fn sha1_lines() {
        let line = sha1_line("da39a3ee5e6b4b0d3255bfef95601890afd80709", "a.csv");
        assert_eq!(line, "da39a3ee5e6b4b0d3255bfef95601890afd80709  a.csv\n");
        let (d, f) = parse_sha1_line(&line, "a.csv.sha1").unwrap();
        assert_eq!(
            (d.as_str(), f.as_str()),
            ("da39a3ee5e6b4b0d3255bfef95601890afd80709", "a.csv")
        );
        assert!(parse_sha1_line("zz  a.csv", "f").is_err());
    }

    #[test]
    fn entry_names_must_be_plain_files() {
        assert!(is_safe_entry_name("interaction_fact.csv"));
        for bad in [
            "../x.csv",
            "a/b.csv",
            "/etc/passwd",
            "a\\b.csv",
            "",
            "..",
            ".hidden",
            "a b.csv",
        ] {
            assert!(!is_safe_entry_name(bad), "{bad}");
        }
    }
}

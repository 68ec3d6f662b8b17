//! Writing an export folder to disk: table CSVs compressed as they stream, the zip, its checksum and
//! the metadata, each fsync'd, in a staging directory that is renamed into place in one step.
//!
//! The zip is deterministic: entries sorted by name, fixed timestamps (the export's `max-data-ts`),
//! fixed permissions, one compression level. Each table is compressed on its own thread into a
//! one-entry "part" zip; the parts are then copied, still compressed, into the final zip.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use tokio::sync::mpsc;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::encoding::Transcoder;
use crate::format::{self, ExportMetadata, ExportName, HashingWriter, TableSummary};

/// Environment variable for crash tests only: the process aborts at the Nth write checkpoint.
pub const ABORT_AFTER_ENV: &str = "GIM_EXPORT_TEST_ABORT_AFTER_WRITES";
static CHECKPOINTS: AtomicU64 = AtomicU64::new(0);

/// Marks one completed write; under [`ABORT_AFTER_ENV`] the process dies here, as a crash would.
pub fn checkpoint() {
    let n = CHECKPOINTS.fetch_add(1, Ordering::SeqCst) + 1;
    if let Ok(limit) = std::env::var(ABORT_AFTER_ENV) {
        if limit.parse::<u64>().is_ok_and(|l| n >= l) {
            eprintln!("gim-export: test abort at write checkpoint {n}");
            std::process::abort();
        }
    }
}

/// A writer that, once a write has failed, drops what comes after and keeps the first error.
///
/// The zip writer finalizes itself when dropped after a failure (a full disk) and prints what went
/// wrong straight to stderr, past the logger; behind this wrapper that last attempt writes nowhere
/// and succeeds quietly, and the first error is the one reported.
pub struct QuietAfterError<W: Write> {
    inner: W,
    failed: Option<io::ErrorKind>,
}

impl<W: Write> QuietAfterError<W> {
    pub fn new(inner: W) -> Self {
        QuietAfterError {
            inner,
            failed: None,
        }
    }
    /// The inner writer, or the error that poisoned it.
    pub fn into_inner(self) -> io::Result<W> {
        match self.failed {
            None => Ok(self.inner),
            Some(kind) => Err(io::Error::new(kind, "an earlier write failed")),
        }
    }
}

impl<W: Write> Write for QuietAfterError<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Ok(buf.len());
        }
        self.inner
            .write(buf)
            .inspect_err(|e| self.failed = Some(e.kind()))
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.inner
            .flush()
            .inspect_err(|e| self.failed = Some(e.kind()))
    }
}

impl<W: Write + io::Seek> io::Seek for QuietAfterError<W> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        if self.failed.is_some() {
            return Ok(0);
        }
        self.inner
            .seek(pos)
            .inspect_err(|e| self.failed = Some(e.kind()))
    }
}

/// How entries are written into the zip.
#[derive(Clone, Copy, Debug)]
pub struct ZipStyle {
    pub level: i64,
    pub time: zip::DateTime,
}

impl ZipStyle {
    /// Entries dated at `ts` (UTC), compressed at `level` (1 fastest .. 9 smallest).
    pub fn new(level: i64, ts: i64) -> ZipStyle {
        let t = DateTime::<Utc>::from_timestamp(ts, 0).unwrap_or_default();
        let time = zip::DateTime::from_date_and_time(
            t.year().clamp(1980, 2107) as u16,
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
        )
        .unwrap_or_default();
        ZipStyle { level, time }
    }
    fn options(&self, compress: bool) -> SimpleFileOptions {
        let o = SimpleFileOptions::default()
            .last_modified_time(self.time)
            .unix_permissions(0o644);
        if compress {
            o.compression_method(CompressionMethod::Deflated)
                .compression_level(Some(self.level))
                .large_file(true)
        } else {
            o.compression_method(CompressionMethod::Stored)
        }
    }
}

/// One table's CSV, compressed into a part file.
#[derive(Clone, Debug)]
pub struct TablePart {
    pub summary: TableSummary,
    pub part_path: PathBuf,
    /// Characters written as `?` under `--on-unmappable replace`.
    pub replaced: u64,
}

/// Hands bytes on in blocks of exactly `BLOCK` bytes (the last one shorter), however they arrive.
///
/// A deflate stream depends on how its input was split into writes; PostgreSQL delivers one row per
/// message and SQLite our own buffers. Fixed blocks make the zip the same bytes from either source.
struct FixedBlocks<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

const BLOCK: usize = 128 * 1024;

impl<W: Write> FixedBlocks<W> {
    fn new(inner: W) -> Self {
        FixedBlocks {
            inner,
            buf: Vec::with_capacity(BLOCK),
        }
    }
    /// Writes what is buffered and returns the inner writer.
    fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for FixedBlocks<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let take = (BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == BLOCK {
                self.inner.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // flushing would cut a block short; `finish` writes the rest
    }
}

/// What a table part is of: the table's name, CSV header and primary key (lower case).
#[derive(Clone, Copy, Debug)]
pub struct PartShape<'a> {
    pub table: &'a str,
    pub header: &'a [String],
    pub key: &'a [String],
    /// Binary columns, written as hex.
    pub binary: &'a [String],
    /// Set when the run failed elsewhere: the writer stops at its next chunk (its receiver dropped,
    /// the table's reader stops too) instead of writing the rest of a part nobody will publish.
    pub abandoned: &'a std::sync::atomic::AtomicBool,
}

/// Receives a table's CSV chunks and writes them, header first, into a one-entry zip at `part_path`,
/// hashing as the bytes pass. Blocking: run it on its own thread. Returns `None` for a table with
/// no rows (the part file is removed).
pub fn write_table_part(
    mut chunks: mpsc::Receiver<Bytes>,
    shape: PartShape<'_>,
    part_path: &Path,
    style: ZipStyle,
    mut transcoder: Option<Transcoder>,
    progress: Option<indicatif::ProgressBar>,
) -> io::Result<Option<TablePart>> {
    let PartShape {
        table,
        header,
        key,
        binary,
        abandoned,
    } = shape;
    let file_name = format::csv_file_name(table);
    // Nothing changed in most tables of a short window: no part file at all until a row comes.
    let Some(first) = chunks.blocking_recv() else {
        return Ok(None);
    };
    let file = File::create(part_path).map_err(|e| with_path(e, part_path))?;
    let mut zip = ZipWriter::new(QuietAfterError::new(BufWriter::with_capacity(
        256 * 1024,
        file,
    )));
    zip.start_file(file_name.as_str(), style.options(true))
        .map_err(zip_io)?;
    let mut out = HashingWriter::new(FixedBlocks::new(zip));
    let mut counter = format::CsvRecordCounter::default();
    let header = format::csv_record(header);
    match transcoder.as_mut() {
        Some(t) => t.write(&header, &mut out)?,
        None => out.write_all(&header)?,
    }
    let mut first = Some(first);
    while let Some(chunk) = first.take().or_else(|| chunks.blocking_recv()) {
        if abandoned.load(std::sync::atomic::Ordering::Relaxed)
            || crate::signals::abandon_requested()
        {
            return Err(io::Error::other("abandoned: the export failed elsewhere"));
        }
        counter.feed(&chunk);
        if let Some(bar) = &progress {
            bar.set_position(counter.records());
        }
        match transcoder.as_mut() {
            Some(t) => t.write(&chunk, &mut out)?,
            None => out.write_all(&chunk)?,
        }
        checkpoint();
    }
    let (blocks, sha1, bytes) = out.finish();
    let rows = counter.records();
    let writer = blocks.finish()?.finish().map_err(zip_io)?;
    let file = writer
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    if rows == 0 {
        drop(file);
        fs::remove_file(part_path).map_err(|e| with_path(e, part_path))?;
        return Ok(None);
    }
    // No fsync: a part file is scratch inside the staging folder, which a crash discards; the
    // folder's zip, assembled from the parts, is the file that is synced.
    checkpoint();
    Ok(Some(TablePart {
        summary: TableSummary {
            name: table.to_ascii_lowercase(),
            file: file_name,
            rows,
            bytes,
            sha1,
            key: key.to_vec(),
            binary_hex: binary.to_vec(),
        },
        part_path: part_path.to_path_buf(),
        replaced: transcoder.map_or(0, |t| t.replaced),
    }))
}

/// Writes `export_XXX.zip`, `.zip.sha1` and `.extracted.xml` into `staging` from the parts (sorted by
/// table name in `meta.tables`), fsyncs them, and removes the part files.
pub fn write_folder(
    staging: &Path,
    name: &ExportName,
    parts: &[TablePart],
    meta: &ExportMetadata,
    style: ZipStyle,
) -> io::Result<()> {
    let zip_path = staging.join(name.zip_file());
    let file = File::create(&zip_path).map_err(|e| with_path(e, &zip_path))?;
    let mut zip = ZipWriter::new(QuietAfterError::new(BufWriter::with_capacity(
        256 * 1024,
        file,
    )));
    let mut sorted: Vec<&TablePart> = parts.iter().collect();
    sorted.sort_by(|a, b| a.summary.file.cmp(&b.summary.file));
    for part in sorted {
        let mut archive = ZipArchive::new(File::open(&part.part_path)?).map_err(zip_io)?;
        let entry = archive.by_index_raw(0).map_err(zip_io)?;
        zip.raw_copy_file(entry).map_err(zip_io)?;
        let sha_name = format!("{}.sha1", part.summary.file);
        zip.start_file(sha_name.as_str(), style.options(false))
            .map_err(zip_io)?;
        zip.write_all(format::sha1_line(&part.summary.sha1, &part.summary.file).as_bytes())?;
    }
    let file = zip
        .finish()
        .map_err(zip_io)?
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    checkpoint();

    let zip_sha1 = sha1_of_file(&zip_path)?;
    write_synced(
        &staging.join(name.zip_sha1_file()),
        format::sha1_line(&zip_sha1, &name.zip_file()).as_bytes(),
    )?;
    write_synced(&staging.join(name.xml_file()), meta.to_xml().as_bytes())?;
    for part in parts {
        fs::remove_file(&part.part_path).map_err(|e| with_path(e, &part.part_path))?;
    }
    sync_dir(staging)?;
    Ok(())
}

/// The SHA-1 (hex) of a file's bytes.
pub fn sha1_of_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path).map_err(|e| with_path(e, path))?;
    let mut h = HashingWriter::new(io::sink());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.write_all(&buf[..n])?;
    }
    Ok(h.finish().1)
}

/// Writes a whole file and fsyncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path).map_err(|e| with_path(e, path))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    checkpoint();
    Ok(())
}

/// Replaces `path` atomically: write a temporary file beside it, fsync, rename, fsync the directory.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    if let Err(e) = write_synced(&tmp, bytes) {
        // A full disk must not leave a half-written temporary file behind.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| with_path(e, path))?;
    sync_dir(dir)
}

/// fsync on a directory, so that a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, dir))
}

/// An I/O error that names its path.
pub fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn zip_io(e: zip::result::ZipError) -> io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_blocks_do_not_depend_on_how_bytes_arrive() {
        let data: Vec<u8> = (0..(BLOCK * 2 + 77)).map(|i| (i % 251) as u8).collect();
        let mut a = Recorder::default();
        let mut w = FixedBlocks::new(&mut a);
        w.write_all(&data).unwrap();
        w.finish().unwrap();
        let mut b = Recorder::default();
        let mut w = FixedBlocks::new(&mut b);
        for piece in data.chunks(333) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(a.writes, b.writes);
        assert_eq!(a.writes, vec![BLOCK, BLOCK, 77]);
    }

    #[derive(Default)]
    struct Recorder {
        writes: Vec<usize>,
    }
    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}

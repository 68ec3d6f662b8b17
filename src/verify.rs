//! Checking export folders as a receiver would: checksums, metadata, entry names, the hwm chain and
//! the span of each window. Every problem is reported with the folder's name; nothing stops at the
//! first one. The loader runs the same checks before it applies a folder.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::format::{self, ExportMetadata, ExportName};
use crate::outdir;
use crate::window::DEFAULT_CHUNK_SECONDS;

/// Verification found problems (the details were reported already).
#[derive(Debug, thiserror::Error)]
#[error("verification failed: {problems} problem(s) in {folders} export folder(s)")]
pub struct VerifyFailed {
    pub problems: usize,
    pub folders: usize,
}

/// What one folder holds and what is wrong with it.
#[derive(Debug, Default)]
pub struct FolderCheck {
    pub folder: String,
    pub path: PathBuf,
    pub meta: Option<ExportMetadata>,
    /// Rows per CSV (lower-case table name), counted from the data.
    pub rows: BTreeMap<String, u64>,
    pub problems: Vec<String>,
    /// An encrypted folder's zip, decrypted (while the check lives).
    pub plain_zip: Option<PlainZip>,
}

impl FolderCheck {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The folder's zip: the decrypted copy of an encrypted folder's, else the one in the folder.
    pub fn zip_path(&self) -> PathBuf {
        match &self.plain_zip {
            Some(p) => p.path.clone(),
            None => ExportName::parse(&self.folder)
                .map(|n| self.path.join(n.zip_file()))
                .unwrap_or_else(|| self.path.clone()),
        }
    }
}

/// How far [`check_folder_at`] looks into the zip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Everything, every CSV decompressed and hashed: what a receiver runs.
    Full,
    /// Everything but the CSVs' contents: for the loader, which hashes each CSV as it streams it into
    /// the database and rolls back on a mismatch, so the data is read once.
    Structure,
}

/// Checks one export folder on its own (not its place in the chain), fully.
pub fn check_folder(path: &Path) -> FolderCheck {
    check_folder_at(path, Depth::Full)
}

/// Checks one export folder on its own (not its place in the chain).
pub fn check_folder_at(path: &Path, depth: Depth) -> FolderCheck {
    let folder = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let mut check = FolderCheck {
        folder: folder.clone(),
        path: path.to_path_buf(),
        ..Default::default()
    };
    let Some(name) = ExportName::parse(&folder) else {
        check.problems.push(
            "not an export folder name (export_<19-digit audit key>_YYYY_MM_DD_HH_MI_SS)".into(),
        );
        return check;
    };

    // extracted.xml
    let xml_path = path.join(name.xml_file());
    match fs::read_to_string(&xml_path) {
        Ok(text) => match ExportMetadata::from_xml(&text, &name.xml_file()) {
            Ok(meta) => {
                if meta.name() != name {
                    check.problems.push(format!(
                        "{}: hwm-to {} and max-data-ts {} give the name {}, not this folder's",
                        name.xml_file(),
                        meta.hwm_to.audit_key,
                        meta.max_data_ts,
                        meta.name().folder()
                    ));
                }
                // An inverted range would move a receiver's chain backwards and wedge it.
                if meta.hwm_to.audit_key < meta.hwm_from.audit_key {
                    check.problems.push(format!(
                        "{}: hwm-to audit key {} is below hwm-from audit key {}: an inverted range",
                        name.xml_file(),
                        meta.hwm_to.audit_key,
                        meta.hwm_from.audit_key
                    ));
                } else if meta.hwm_to.audit_key == meta.hwm_from.audit_key
                    && meta.repair.is_none()
                    && meta.tables.iter().any(|t| t.rows > 0)
                {
                    check.problems.push(format!(
                        "{}: hwm-from and hwm-to are both audit key {}, yet it lists rows: a zero-width range holds no data",
                        name.xml_file(),
                        meta.hwm_to.audit_key
                    ));
                }
                check.meta = Some(meta);
            }
            Err(e) => check.problems.push(e.to_string()),
        },
        Err(e) => check
            .problems
            .push(format!("{}: cannot read: {e}", name.xml_file())),
    }

    // export_XXX.zip.sha1 against the zip; for an encrypted folder, .zip.p7m.sha1 against the
    // encrypted file, then the zip inside against the checksum extracted.xml gives it.
    let opening = crate::crypto::Opening::current();
    let encrypted = check.meta.as_ref().and_then(|m| m.encrypted.clone());
    let mut zip_path = path.join(name.zip_file());
    let mut zip_bytes: Option<Vec<u8>> = None;
    match &encrypted {
        None => {
            checksum_file(
                path,
                &name.zip_file(),
                &name.zip_sha1_file(),
                &mut check.problems,
            );
        }
        Some(enc) => {
            let file = name.p7m_file();
            if checksum_file(path, &file, &name.p7m_sha1_file(), &mut check.problems) {
                let for_whom: Vec<&str> = enc
                    .recipients
                    .iter()
                    .map(|r| r.fingerprint.as_str())
                    .collect();
                match fs::read(path.join(&file))
                    .map_err(|e| format!("cannot read: {e}"))
                    .and_then(|p7m| opening.decrypt(&p7m))
                {
                    Ok(zip) => {
                        let digest = format::sha1_hex(&zip);
                        if digest != enc.zip_sha1 {
                            check.problems.push(format!(
                                "{file}: the zip inside has checksum {digest}, extracted.xml says {}",
                                enc.zip_sha1
                            ));
                        } else {
                            match PlainZip::write(&check.folder, &zip) {
                                Ok(p) => {
                                    zip_path = p.path.clone();
                                    check.plain_zip = Some(p);
                                }
                                Err(e) => check
                                    .problems
                                    .push(format!("{file}: writing the decrypted zip: {e}")),
                            }
                        }
                        zip_bytes = Some(zip);
                    }
                    Err(reason) => check.problems.push(format!(
                        "{file}: encrypted for the certificate(s) {}: {reason}",
                        for_whom.join(", ")
                    )),
                }
            }
        }
    }

    // --trust: the zip and extracted.xml signed by a trusted certificate.
    if !opening.trust.is_empty() {
        let zip = zip_bytes.or_else(|| fs::read(&zip_path).ok());
        // The signed extracted.xml names its zip: a zip signed for another folder does not pass.
        if let (Some(z), Some(meta)) = (&zip, &check.meta) {
            let actual = format::sha1_hex(z);
            match meta.signed.as_ref().map(|s| s.zip_sha1.as_str()) {
                Some(named) if named == actual => {}
                Some(named) => check.problems.push(format!(
                    "{}: the signed metadata names a zip with checksum {named}, this folder's is {actual}: the zip belongs to another folder",
                    name.xml_file()
                )),
                None => check.problems.push(format!(
                    "{}: no <signed> element naming the zip: the folder is not signed, and --trust takes only signed folders",
                    name.xml_file()
                )),
            }
        }
        let mut verify_sig = |sig_file: String, data: Option<Vec<u8>>, what: &str| {
            let Some(data) = data else { return };
            match fs::read(path.join(&sig_file)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => check.problems.push(format!(
                    "{sig_file} is missing: the folder is not signed, and --trust takes only signed folders"
                )),
                Err(e) => check.problems.push(format!("{sig_file}: cannot read: {e}")),
                Ok(sig) => {
                    if let Err(reason) = opening.verify(&sig, &data) {
                        check
                            .problems
                            .push(format!("{sig_file}: the signature over {what} does not hold: {reason}"));
                    }
                }
            }
        };
        verify_sig(name.zip_sig_file(), zip, &name.zip_file());
        verify_sig(
            name.xml_sig_file(),
            fs::read(path.join(name.xml_file())).ok(),
            &name.xml_file(),
        );
    }

    if zip_path.is_file() {
        check_zip(&zip_path, &name, depth, &mut check);
    }

    // The window's span.
    if let Some(meta) = &check.meta {
        let full = meta
            .restart
            .as_ref()
            .is_some_and(|r| r.kind == format::RestartKind::Full);
        if let Some(from) = meta.max_data_ts_from.filter(|_| !full) {
            let chunk = meta.chunk_seconds.unwrap_or(DEFAULT_CHUNK_SECONDS);
            if meta.max_data_ts < from {
                check.problems.push(format!(
                    "max-data-ts {} is before max-data-ts-from {from}",
                    meta.max_data_ts
                ));
            } else if meta.max_data_ts - from > chunk {
                check.problems.push(format!(
                    "the export spans {} s of data, more than its chunk size {chunk} s",
                    meta.max_data_ts - from
                ));
            }
        }
    }
    check
}

/// Checks `file` in `dir` against its `sha1sum` line in `sha_file`; false (with the problem noted)
/// when it does not hold.
fn checksum_file(dir: &Path, file: &str, sha_file: &str, problems: &mut Vec<String>) -> bool {
    let before = problems.len();
    match fs::read_to_string(dir.join(sha_file)) {
        Ok(text) => match format::parse_sha1_line(&text, sha_file) {
            Ok((digest, named)) => {
                if named != file {
                    problems.push(format!("{sha_file}: names {named}, not {file}"));
                }
                match crate::package::sha1_of_file(&dir.join(file)) {
                    Ok(actual) if actual == digest => {}
                    Ok(actual) => problems.push(format!(
                        "{file}: checksum mismatch (file {actual}, expected {digest}): the file is damaged or incomplete"
                    )),
                    Err(e) => problems.push(format!("{file}: cannot read: {e}")),
                }
            }
            Err(e) => problems.push(e.to_string()),
        },
        Err(e) => problems.push(format!("{sha_file}: cannot read: {e}")),
    }
    problems.len() == before
}

/// An encrypted folder's zip, decrypted into a private file (mode 0600) in the temporary directory,
/// removed when the check that made it is dropped.
#[derive(Debug)]
pub struct PlainZip {
    pub path: PathBuf,
}

impl PlainZip {
    fn write(folder: &str, bytes: &[u8]) -> std::io::Result<PlainZip> {
        use std::io::Write;
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            ".gim-export-{}-{}-{folder}.zip",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&path)?;
        let plain = PlainZip { path };
        f.write_all(bytes)?;
        Ok(plain)
    }
}

impl Drop for PlainZip {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Checks the zip's entries: safe names, every CSV beside its `.sha1`, and the checksums.
fn check_zip(zip_path: &Path, name: &ExportName, depth: Depth, check: &mut FolderCheck) {
    let zip_name = name.zip_file();
    let file = match File::open(zip_path) {
        Ok(f) => f,
        Err(e) => {
            check.problems.push(format!("{zip_name}: cannot open: {e}"));
            return;
        }
    };
    let mut archive = match zip::ZipArchive::new(io::BufReader::new(file)) {
        Ok(a) => a,
        Err(e) => {
            check
                .problems
                .push(format!("{zip_name}: not a readable zip: {e}"));
            return;
        }
    };
    let encoding = match crate::encoding::OutputEncoding::of_export(
        check.meta.as_ref().and_then(|m| m.encoding.as_deref()),
    ) {
        Ok(e) => e,
        Err(e) => {
            check.problems.push(format!("{}: {e}", name.xml_file()));
            encoding_rs::UTF_8
        }
    };
    // CSV name -> its SHA-1 (None when the contents were not read).
    let mut csv_sha: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut sha_files: BTreeMap<String, String> = BTreeMap::new();
    let mut tables_seen: BTreeMap<String, String> = BTreeMap::new();
    let mut names_seen: std::collections::BTreeSet<String> = Default::default();
    // The zip reader keeps one entry per name; the central directory may list more.
    if let Some(listed) = central_directory_names(zip_path) {
        let mut seen = std::collections::BTreeSet::new();
        let twice: std::collections::BTreeSet<&str> = listed
            .iter()
            .filter(|n| !seen.insert(n.as_str()))
            .map(String::as_str)
            .collect();
        for n in twice {
            check.problems.push(format!(
                "{zip_name}: entry {n:?} appears more than once; only one copy could be checked"
            ));
        }
    }
    for i in 0..archive.len() {
        let mut entry = match archive.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                check.problems.push(format!("{zip_name}: entry {i}: {e}"));
                continue;
            }
        };
        let entry_name = match entry.name() {
            Ok(n) => n.to_string(),
            Err(e) => {
                check.problems.push(format!("{zip_name}: entry {i}: {e}"));
                continue;
            }
        };
        // A second entry of one name would load while the first was checked (or the reverse).
        if !names_seen.insert(entry_name.clone()) {
            check.problems.push(format!(
                "{zip_name}: entry {entry_name:?} appears more than once"
            ));
            continue;
        }
        if !format::is_safe_entry_name(&entry_name) {
            check.problems.push(format!(
                "{zip_name}: entry {entry_name:?} is not a plain file name (paths are refused)"
            ));
            continue;
        }
        if let Some(csv) = format::sha1_target_of(&entry_name) {
            let mut text = String::new();
            if let Err(e) = entry.read_to_string(&mut text) {
                check
                    .problems
                    .push(format!("{zip_name}: {entry_name}: {e}"));
                continue;
            }
            match format::parse_sha1_line(&text, &entry_name) {
                Ok((digest, file)) if file == csv => {
                    sha_files.insert(csv.to_string(), digest);
                }
                Ok((_, file)) => check
                    .problems
                    .push(format!("{zip_name}: {entry_name} names {file}, not {csv}")),
                Err(e) => check.problems.push(format!("{zip_name}: {e}")),
            }
        } else if let Some(table) = format::csv_table_of(&entry_name) {
            // Names are matched in any case: two entries for one table cannot both load.
            if let Some(other) = tables_seen.insert(table.clone(), entry_name.clone()) {
                check.problems.push(format!(
                    "{zip_name}: entries {other:?} and {entry_name:?} both hold table {table}"
                ));
            }
            if depth == Depth::Structure {
                csv_sha.insert(entry_name, None);
                continue;
            }
            // Hash the bytes as stored; count records in the text they encode.
            let mut raw = format::HashingReader::new(&mut entry);
            let mut counter = format::CsvRecordCounter::default();
            let copied = io::copy(
                &mut crate::encoding::decoding_reader(&mut raw, encoding),
                &mut counter,
            );
            if let Err(e) = copied {
                check
                    .problems
                    .push(format!("{zip_name}: {entry_name}: cannot decompress: {e}"));
                continue;
            }
            let digest = raw.hex();
            if counter.records() == 0 {
                check
                    .problems
                    .push(format!("{zip_name}: {entry_name} has no header line"));
            }
            check
                .rows
                .insert(table, counter.records().saturating_sub(1));
            csv_sha.insert(entry_name, Some(digest));
        } else {
            check
                .problems
                .push(format!("{zip_name}: unexpected entry {entry_name:?}"));
        }
    }
    for (csv, digest) in &csv_sha {
        match sha_files.get(csv) {
            None => check
                .problems
                .push(format!("{zip_name}: {csv} has no {csv}.sha1")),
            Some(expected) if digest.as_ref().is_some_and(|d| d != expected) => {
                check.problems.push(format!(
                    "{zip_name}: {csv}: checksum mismatch (data {}, {csv}.sha1 says {expected})",
                    digest.as_deref().unwrap_or_default()
                ))
            }
            Some(_) => {}
        }
    }
    for csv in sha_files.keys() {
        if !csv_sha.contains_key(csv) {
            check
                .problems
                .push(format!("{zip_name}: {csv}.sha1 has no {csv}"));
        }
    }
    if let Some(meta) = check.meta.as_ref().filter(|_| depth == Depth::Full) {
        for t in &meta.tables {
            match check.rows.get(&t.name) {
                None => check.problems.push(format!(
                    "{}: lists table {} but the zip has no {}",
                    name.xml_file(),
                    t.name,
                    t.file
                )),
                Some(rows) if *rows != t.rows => check.problems.push(format!(
                    "{}: table {} has {rows} rows, the metadata says {}",
                    name.xml_file(),
                    t.name,
                    t.rows
                )),
                Some(_) => {}
            }
            if csv_sha
                .get(&t.file)
                .is_some_and(|d| d.as_ref().is_some_and(|d| *d != t.sha1))
            {
                check.problems.push(format!(
                    "{}: table {} checksum differs from the metadata",
                    name.xml_file(),
                    t.name
                ));
            }
        }
        for d in meta.repair.iter().flat_map(|r| &r.deletes) {
            let listed = format::csv_table_of(&d.file).and_then(|t| check.rows.get(&t));
            match listed {
                None => check.problems.push(format!(
                    "{}: lists keys to delete from {} but the zip has no {}",
                    name.xml_file(),
                    d.name,
                    d.file
                )),
                Some(rows) if *rows != d.rows => check.problems.push(format!(
                    "{}: {} has {rows} keys, the metadata says {}",
                    name.xml_file(),
                    d.file,
                    d.rows
                )),
                Some(_) => {}
            }
        }
    }
    // A deletion list belongs in a repair folder, listed in its <repair>.
    if let Some(meta) = check.meta.as_ref() {
        for csv in csv_sha.keys() {
            if format::delete_table_of(csv).is_some()
                && !meta
                    .repair
                    .as_ref()
                    .is_some_and(|r| r.deletes.iter().any(|d| d.file.eq_ignore_ascii_case(csv)))
            {
                check.problems.push(format!(
                    "{zip_name}: {csv} is a list of keys to delete, but the metadata's <repair> does not list it"
                ));
            }
        }
    }
}

/// The entry names the zip's central directory lists, duplicates included (the zip reader keeps one
/// entry per name). `None` when the directory cannot be found; the zip reader reports that.
fn central_directory_names(path: &Path) -> Option<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let tail = len.min(65_557 + 20);
    f.seek(SeekFrom::Start(len - tail)).ok()?;
    let mut buf = vec![0u8; tail as usize];
    f.read_exact(&mut buf).ok()?;
    let eocd = (0..buf.len().saturating_sub(21))
        .rev()
        .find(|&i| buf[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])?;
    let u16_at = |b: &[u8], i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let u32_at =
        |b: &[u8], i: usize| u64::from(u32::from_le_bytes(b[i..i + 4].try_into().unwrap()));
    let (mut total, mut size, mut offset) = (
        u16_at(&buf, eocd + 10),
        u32_at(&buf, eocd + 12),
        u32_at(&buf, eocd + 16),
    );
    if total == 0xffff || size == 0xffff_ffff || offset == 0xffff_ffff {
        // Zip64: the locator just before the record gives the zip64 record's offset.
        let loc = eocd.checked_sub(20)?;
        if buf[loc..loc + 4] != [0x50, 0x4b, 0x06, 0x07] {
            return None;
        }
        let at = u64::from_le_bytes(buf[loc + 8..loc + 16].try_into().ok()?);
        f.seek(SeekFrom::Start(at)).ok()?;
        let mut rec = [0u8; 56];
        f.read_exact(&mut rec).ok()?;
        if rec[..4] != [0x50, 0x4b, 0x06, 0x06] {
            return None;
        }
        total = u64::from_le_bytes(rec[32..40].try_into().ok()?);
        size = u64::from_le_bytes(rec[40..48].try_into().ok()?);
        offset = u64::from_le_bytes(rec[48..56].try_into().ok()?);
    }
    if offset.checked_add(size)? > len {
        return None;
    }
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut dir = vec![0u8; usize::try_from(size).ok()?];
    f.read_exact(&mut dir).ok()?;
    let mut names = Vec::new();
    let mut at = 0usize;
    while at + 46 <= dir.len() && dir[at..at + 4] == [0x50, 0x4b, 0x01, 0x02] {
        let (name_len, extra, comment) = (
            u16_at(&dir, at + 28) as usize,
            u16_at(&dir, at + 30) as usize,
            u16_at(&dir, at + 32) as usize,
        );
        let name = dir.get(at + 46..at + 46 + name_len)?;
        names.push(String::from_utf8_lossy(name).into_owned());
        at += 46 + name_len + extra + comment;
    }
    (names.len() as u64 == total).then_some(names)
}

/// Checks that each folder follows the one before it in its chain: hwm-from equals the previous
/// hwm-to, and the data window starts where the previous one ended. Folders of different chains
/// (`chain-generation`, after a restart) are checked each against their own chain; the first folder
/// of a restarted chain follows nothing. Problems are added to the later folder.
pub fn check_chain(checks: &mut [FolderCheck]) {
    // Index of the last folder seen, per generation.
    let mut last: BTreeMap<u32, usize> = BTreeMap::new();
    for i in 0..checks.len() {
        let Some(c) = checks[i].meta.clone() else {
            continue;
        };
        let prev = last.insert(c.generation, i);
        if c.restart.is_some() || (i > 0 && checks[i - 1].meta.is_none()) {
            continue;
        }
        let Some(p_idx) = prev else {
            continue;
        };
        let (before, after) = checks.split_at_mut(i);
        let prev = &before[p_idx];
        let cur = &mut after[0];
        let Some(p) = &prev.meta else {
            continue;
        };
        if c.hwm_from != p.hwm_to {
            cur.problems.push(format!(
                "chain broken: hwm-from (audit key {}, created-ts {}) does not match hwm-to (audit key {}, created-ts {}) of {}: an export between audit keys {} and {} is missing",
                c.hwm_from.audit_key,
                c.hwm_from.created_ts,
                p.hwm_to.audit_key,
                p.hwm_to.created_ts,
                prev.folder,
                p.hwm_to.audit_key,
                c.hwm_from.audit_key
            ));
        }
        if let Some(from) = c.max_data_ts_from {
            if from != p.max_data_ts {
                cur.problems.push(format!(
                    "chain broken: max-data-ts-from {from} does not match max-data-ts {} of {}",
                    p.max_data_ts, prev.folder
                ));
            }
        }
    }
}

/// Checks `input`: one export folder, or a directory of them (in name order, chained).
pub fn check_input(input: &Path) -> Result<Vec<FolderCheck>, outdir::OutputError> {
    if !input.is_dir() {
        return Err(outdir::OutputError::Io {
            path: input.to_path_buf(),
            error: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let own_name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A decrypted zip is removed as soon as its folder is checked.
    let checked = |p: &Path| FolderCheck {
        plain_zip: None,
        ..check_folder(p)
    };
    if ExportName::parse(&own_name).is_some() {
        return Ok(vec![checked(input)]);
    }
    let mut checks: Vec<FolderCheck> = outdir::list_exports(input)?
        .into_iter()
        .map(|(_, p)| checked(&p))
        .collect();
    check_chain(&mut checks);
    Ok(checks)
}

//! Helpers that damage export folders the way transfers, disks and attackers do.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use gim_export::format::{self, ExportMetadata, HashingWriter};

/// Which checksums to recompute after an edit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Every checksum and the metadata: only the content itself is wrong.
    All,
    /// Only the zip's checksum: the CSV checksums inside no longer match.
    ZipOnly,
}

fn folder_name(folder: &Path) -> String {
    folder.file_name().unwrap().to_string_lossy().into_owned()
}

/// Rewrites the zip of an export folder through `edit` (entries as name and bytes, in order).
pub fn rewrite(folder: &Path, fix: Fix, edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) {
    let name = folder_name(folder);
    let zip_path = folder.join(format!("{name}.zip"));
    let mut entries = Vec::new();
    {
        let mut zip = zip::ZipArchive::new(fs::File::open(&zip_path).unwrap()).unwrap();
        for i in 0..zip.len() {
            let mut e = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            entries.push((e.name().unwrap().to_string(), bytes));
        }
    }
    edit(&mut entries);
    let xml_path = folder.join(format!("{name}.extracted.xml"));
    if fix == Fix::All {
        let mut meta =
            ExportMetadata::from_xml(&fs::read_to_string(&xml_path).unwrap(), &name).unwrap();
        let csvs: Vec<(String, Vec<u8>)> = entries
            .iter()
            .filter(|(n, _)| n.ends_with(".csv"))
            .cloned()
            .collect();
        for (csv, bytes) in &csvs {
            let mut h = HashingWriter::new(format::CsvRecordCounter::default());
            h.write_all(bytes).unwrap();
            let (counter, digest, len) = h.finish();
            let line = format::sha1_line(&digest, csv);
            match entries
                .iter_mut()
                .find(|(n, _)| *n == format!("{csv}.sha1"))
            {
                Some(e) => e.1 = line.into_bytes(),
                None => entries.push((format!("{csv}.sha1"), line.into_bytes())),
            }
            if let Some(t) = meta.tables.iter_mut().find(|t| t.file == *csv) {
                t.sha1 = digest;
                t.rows = counter.records() - 1;
                t.bytes = len;
            }
        }
        meta.tables
            .retain(|t| csvs.iter().any(|(n, _)| *n == t.file));
        fs::write(&xml_path, meta.to_xml()).unwrap();
    }
    let mut out = zip::ZipWriter::new(fs::File::create(&zip_path).unwrap());
    for (n, bytes) in &entries {
        out.start_file(n.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(bytes).unwrap();
    }
    out.finish().unwrap();
    let digest = gim_export::package::sha1_of_file(&zip_path).unwrap();
    fs::write(
        folder.join(format!("{name}.zip.sha1")),
        format::sha1_line(&digest, &format!("{name}.zip")),
    )
    .unwrap();
}

/// Rewrites one entry's bytes, every checksum kept consistent.
pub fn rewrite_entry(folder: &Path, entry: &str, edit: impl FnOnce(&[u8]) -> Vec<u8>) {
    rewrite(folder, Fix::All, |entries| {
        let e = entries.iter_mut().find(|(n, _)| n == entry).expect("entry");
        e.1 = edit(&e.1);
    });
}

//! The CSVs' character set (`--encoding`): any WHATWG label, UTF-8 by default.
//!
//! Rows are produced as UTF-8 and transcoded as they stream into the zip; the checksums and byte
//! counts are of the encoded bytes, the files a receiver gets. encoding_rs encodes every WHATWG
//! encoding but UTF-16 (whose encoder the standard defines as UTF-8), so UTF-16LE/BE are written here.
//! A character the encoding lacks stops the export with the table, primary key and column, unless
//! `--on-unmappable replace` writes `?` for it.

use std::io::{self, Read, Write};

use encoding_rs::{EncoderResult, Encoding, UTF_16BE, UTF_16LE, UTF_8};

/// What to do with a character the output encoding cannot represent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnUnmappable {
    /// Stop the export, naming the table, primary key and column.
    #[default]
    Error,
    /// Write `?` instead, and report how many were replaced.
    Replace,
}

/// The output encoding.
#[derive(Clone, Copy, Debug)]
pub struct OutputEncoding {
    pub encoding: &'static Encoding,
    pub on_unmappable: OnUnmappable,
}

impl Default for OutputEncoding {
    fn default() -> Self {
        OutputEncoding {
            encoding: UTF_8,
            on_unmappable: OnUnmappable::Error,
        }
    }
}

impl OutputEncoding {
    /// From a WHATWG label (`windows-1252`, `latin1`, `iso-8859-15`, `utf-16le`, ...).
    pub fn from_label(label: &str, on_unmappable: OnUnmappable) -> Option<OutputEncoding> {
        let encoding = Encoding::for_label(label.trim().as_bytes())?;
        // "replacement" is a decoder-only encoding: nothing can be written in it.
        if encoding == encoding_rs::REPLACEMENT {
            return None;
        }
        Some(OutputEncoding {
            encoding,
            on_unmappable,
        })
    }

    pub fn is_utf8(&self) -> bool {
        self.encoding == UTF_8
    }

    /// The name written in extracted.xml; `None` for UTF-8 (the format's default).
    pub fn xml_name(&self) -> Option<String> {
        (!self.is_utf8()).then(|| self.encoding.name().to_string())
    }

    /// The encoding named in extracted.xml (`None`: UTF-8).
    pub fn of_export(name: Option<&str>) -> Result<&'static Encoding, String> {
        match name {
            None => Ok(UTF_8),
            Some(n) => Encoding::for_label(n.as_bytes())
                .filter(|e| *e != encoding_rs::REPLACEMENT)
                .ok_or_else(|| format!("<encoding> {n:?} is not a known character set")),
        }
    }
}

/// A character the output encoding cannot represent, placed in the data.
#[derive(Debug, thiserror::Error)]
#[error("table {table}, row with primary key {key}, column {column}: character {ch:?} (U+{code:04X}) cannot be written in {encoding}; choose another --encoding, or --on-unmappable replace to write '?' instead")]
pub struct Unmappable {
    pub table: String,
    pub key: String,
    pub column: String,
    pub ch: char,
    pub code: u32,
    pub encoding: String,
}

/// Transcodes one table's UTF-8 CSV stream into the output encoding, following the CSV structure
/// just enough (quotes, commas, line ends) to say where an unmappable character sits.
pub struct Transcoder {
    table: String,
    header: Vec<String>,
    primary_key: Vec<usize>,
    out: OutputEncoding,
    encoder: Option<encoding_rs::Encoder>,
    /// The current record's UTF-8 bytes so far (for the error message only).
    record: Vec<u8>,
    in_quotes: bool,
    field: usize,
    /// UTF-8 bytes of a character cut by a chunk boundary.
    carry: Vec<u8>,
    buf: Vec<u8>,
    pub replaced: u64,
}

impl Transcoder {
    /// `None` for UTF-8: the bytes pass through untouched.
    pub fn new(
        out: OutputEncoding,
        table: &str,
        header: &[String],
        primary_key: &[usize],
    ) -> Option<Transcoder> {
        if out.is_utf8() {
            return None;
        }
        let utf16 = out.encoding == UTF_16LE || out.encoding == UTF_16BE;
        Some(Transcoder {
            table: table.to_string(),
            header: header.to_vec(),
            primary_key: primary_key.to_vec(),
            out,
            encoder: (!utf16).then(|| out.encoding.new_encoder()),
            record: Vec::new(),
            in_quotes: false,
            field: 0,
            carry: Vec::new(),
            buf: vec![0; 64 * 1024],
            replaced: 0,
        })
    }

    /// Transcodes `chunk` (UTF-8, cut anywhere) into `w`.
    pub fn write<W: Write>(&mut self, chunk: &[u8], w: &mut W) -> io::Result<()> {
        let joined;
        let data: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            let mut v = std::mem::take(&mut self.carry);
            v.extend_from_slice(chunk);
            joined = v;
            &joined
        };
        // Keep an incomplete trailing character for the next chunk.
        let cut = match std::str::from_utf8(data) {
            Ok(_) => data.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "table {}: the source produced invalid UTF-8 at byte {}",
                        self.table,
                        e.valid_up_to()
                    ),
                ))
            }
        };
        let (text, rest) = data.split_at(cut);
        let text = std::str::from_utf8(text).expect("checked above");
        self.carry.extend_from_slice(rest);
        self.encode(text, w)
    }

    fn encode<W: Write>(&mut self, mut text: &str, w: &mut W) -> io::Result<()> {
        if self.encoder.is_none() {
            // UTF-16: every character is representable.
            let le = self.out.encoding == UTF_16LE;
            let mut bytes = Vec::with_capacity(text.len() * 2);
            for unit in text.encode_utf16() {
                bytes.extend_from_slice(&if le {
                    unit.to_le_bytes()
                } else {
                    unit.to_be_bytes()
                });
            }
            return w.write_all(&bytes);
        }
        while !text.is_empty() {
            let (result, read, written) = self
                .encoder
                .as_mut()
                .expect("checked above")
                .encode_from_utf8_without_replacement(text, &mut self.buf, false);
            w.write_all(&self.buf[..written])?;
            let (done, next) = text.split_at(read);
            self.track(done.as_bytes());
            text = next;
            match result {
                EncoderResult::InputEmpty => break,
                EncoderResult::OutputFull => {}
                EncoderResult::Unmappable(ch) => {
                    if self.out.on_unmappable == OnUnmappable::Replace {
                        self.replaced += 1;
                        w.write_all(b"?")?;
                        // `read` already covers the character.
                        continue;
                    }
                    // `done` ends with the character: the record so far says where it is.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        self.unmappable(ch),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Follows the CSV structure over UTF-8 bytes that were written.
    fn track(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.record.push(b);
            match (self.in_quotes, b) {
                (true, b'"') => self.in_quotes = false,
                (true, _) => {}
                (false, b'"') => self.in_quotes = true,
                (false, b',') => self.field += 1,
                (false, b'\n') => {
                    self.field = 0;
                    self.record.clear();
                }
                _ => {}
            }
        }
    }

    fn unmappable(&self, ch: char) -> Unmappable {
        // The record up to the character: parse what is complete of it for the key values.
        let mut fields: Vec<String> = Vec::new();
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(self.record.as_slice());
        if let Some(Ok(rec)) = rdr.records().next() {
            fields = rec.iter().map(String::from).collect();
        }
        let key = self
            .primary_key
            .iter()
            .map(|&i| {
                let col = self.header.get(i).map(String::as_str).unwrap_or("?");
                match fields.get(i) {
                    // A key field after the character is not known yet.
                    Some(v) if i < self.field => format!("{col}={v}"),
                    _ => format!("{col}=(later in the row)"),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        Unmappable {
            table: self.table.clone(),
            key,
            column: self
                .header
                .get(self.field)
                .cloned()
                .unwrap_or_else(|| format!("#{}", self.field + 1)),
            ch,
            code: ch as u32,
            encoding: self.out.encoding.name().to_string(),
        }
    }
}

/// A reader that decodes an export's CSV (in `encoding`) back into UTF-8.
pub fn decoding_reader<'a, R: Read + Send + 'a>(
    inner: R,
    encoding: &'static Encoding,
) -> Box<dyn Read + Send + 'a> {
    if encoding == UTF_8 {
        Box::new(inner)
    } else {
        Box::new(
            encoding_rs_io::DecodeReaderBytesBuilder::new()
                .encoding(Some(encoding))
                .bom_override(false)
                .build(inner),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(label: &str, mode: OnUnmappable) -> OutputEncoding {
        OutputEncoding::from_label(label, mode).unwrap()
    }

    fn header() -> Vec<String> {
        vec!["id".into(), "name".into(), "note".into()]
    }

    #[test]
    fn labels_follow_whatwg() {
        assert_eq!(
            enc("latin1", OnUnmappable::Error).encoding.name(),
            "windows-1252"
        );
        assert_eq!(
            enc("ISO-8859-15", OnUnmappable::Error).encoding.name(),
            "ISO-8859-15"
        );
        assert_eq!(
            enc("utf-16le", OnUnmappable::Error).encoding.name(),
            "UTF-16LE"
        );
        assert!(OutputEncoding::from_label("klingon", OnUnmappable::Error).is_none());
        assert!(OutputEncoding::from_label("replacement", OnUnmappable::Error).is_none());
        assert!(Transcoder::new(OutputEncoding::default(), "t", &header(), &[0]).is_none());
    }

    #[test]
    fn transcodes_across_chunk_boundaries() {
        let text = "id,name,note\n1,Zoë,\"a,\"\"é\"\"\nx\"\n2,Ærø,€\n";
        let mut t = Transcoder::new(
            enc("windows-1252", OnUnmappable::Error),
            "t",
            &header(),
            &[0],
        )
        .unwrap();
        let mut out = Vec::new();
        for piece in text.as_bytes().chunks(3) {
            t.write(piece, &mut out).unwrap();
        }
        let (expected, _, bad) = encoding_rs::WINDOWS_1252.encode(text);
        assert!(!bad);
        assert_eq!(out, expected.into_owned());

        let mut t16 =
            Transcoder::new(enc("utf-16be", OnUnmappable::Error), "t", &header(), &[0]).unwrap();
        let mut out16 = Vec::new();
        for piece in text.as_bytes().chunks(1) {
            t16.write(piece, &mut out16).unwrap();
        }
        let back: Vec<u16> = out16
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(String::from_utf16(&back).unwrap(), text);
    }

    #[test]
    fn unmappable_names_table_key_and_column_or_is_replaced() {
        let text = "id,name,note\n1,ok,fine\n42,\"Ω, \"\"x\"\"\",later\n";
        let mut t = Transcoder::new(
            enc("iso-8859-1", OnUnmappable::Error),
            "resource_",
            &header(),
            &[0],
        )
        .unwrap();
        let e = t.write(text.as_bytes(), &mut Vec::new()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("table resource_"), "{msg}");
        assert!(msg.contains("primary key id=42"), "{msg}");
        assert!(msg.contains("column name"), "{msg}");
        assert!(msg.contains("U+03A9"), "{msg}");

        let mut r = Transcoder::new(
            enc("iso-8859-1", OnUnmappable::Replace),
            "t",
            &header(),
            &[0],
        )
        .unwrap();
        let mut out = Vec::new();
        r.write(text.as_bytes(), &mut out).unwrap();
        assert_eq!(r.replaced, 1);
        assert_eq!(out, text.replace('Ω', "?").into_bytes());
    }

    #[test]
    fn decoding_reader_gives_back_utf8() {
        let (bytes, _, _) = encoding_rs::ISO_8859_15.encode("id\n€uro\n");
        let mut s = String::new();
        decoding_reader(&bytes[..], encoding_rs::ISO_8859_15)
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "id\n€uro\n");
    }
}

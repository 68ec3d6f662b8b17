//! Folders that cross networks: the zip encrypted to the receivers' certificates (CMS EnvelopedData,
//! AES-256-CBC) and signed by the sender (detached CMS SignedData over the zip and over extracted.xml),
//! in forms a receiver checks with nothing but stock `openssl cms`:
//!
//! ```text
//! openssl cms -decrypt -binary -inform DER -in export_XXX.zip.p7m -inkey key.pem -recip cert.pem -out export_XXX.zip
//! openssl cms -verify -binary -inform DER -in export_XXX.zip.sig -content export_XXX.zip -CAfile sender.pem -out /dev/null
//! ```
//!
//! The zip inside stays byte-for-byte deterministic; the encrypted file cannot be (a random content key
//! and IV each time). OpenSSL's CMS functions, as the `openssl` crate exposes them, take and return
//! whole buffers: encrypting, decrypting and signing hold the zip in memory (a day's zip is some tens
//! of MB).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;

use crate::format::{Encrypted, ExportMetadata, ExportName, Recipient, Signed};

/// The cipher of every encrypted zip.
pub const CIPHER_NAME: &str = "aes-256-cbc";

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path, flag: &str) -> Result<Vec<X509>> {
    let pem = std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))?;
    let certs = X509::stack_from_pem(&pem)
        .with_context(|| format!("{flag} {}: not a PEM certificate", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{flag} {}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
        path.display()
    );
    Ok(certs)
}

/// Reads a PEM private key (unencrypted).
pub fn read_key(path: &Path, flag: &str) -> Result<PKey<Private>> {
    let pem = std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))?;
    PKey::private_key_from_pem(&pem).with_context(|| {
        format!(
            "{flag} {}: not an unencrypted PEM private key",
            path.display()
        )
    })
}

/// A certificate's SHA-256 fingerprint, lower-case hex (`openssl x509 -noout -fingerprint -sha256`
/// prints the same digits in upper case with colons).
pub fn fingerprint(cert: &X509) -> String {
    cert.digest(MessageDigest::sha256())
        .map(|d| crate::format::hex(&d))
        .unwrap_or_default()
}

fn subject(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                e.data().to_string().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the sender does to each folder: `--encrypt-to` and `--sign-with`/`--sign-cert`.
#[derive(Clone, Default)]
pub struct Sealing {
    pub recipients: Vec<X509>,
    pub signer: Option<(PKey<Private>, X509)>,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing")
            .field(
                "recipients",
                &self.recipients.iter().map(fingerprint).collect::<Vec<_>>(),
            )
            .field("signer", &self.signer.as_ref().map(|(_, c)| fingerprint(c)))
            .finish()
    }
}

impl Sealing {
    pub fn new(
        encrypt_to: &[PathBuf],
        sign_with: Option<&Path>,
        sign_cert: Option<&Path>,
    ) -> Result<Sealing> {
        let mut recipients = Vec::new();
        for p in encrypt_to {
            recipients.extend(read_certs(p, "--encrypt-to")?);
        }
        let signer = match (sign_with, sign_cert) {
            (None, None) => None,
            (Some(k), Some(c)) => {
                let key = read_key(k, "--sign-with")?;
                let cert = read_certs(c, "--sign-cert")?.remove(0);
                let matches = cert
                    .public_key()
                    .map(|p| p.public_eq(&key))
                    .unwrap_or(false);
                anyhow::ensure!(
                    matches,
                    "--sign-with {} is not the key of --sign-cert {}",
                    k.display(),
                    c.display()
                );
                Some((key, cert))
            }
            _ => anyhow::bail!("--sign-with and --sign-cert go together"),
        };
        Ok(Sealing { recipients, signer })
    }

    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty() && self.signer.is_none()
    }

    /// Seals a folder written in `staging`: signs the zip, encrypts it (the `.zip` and `.zip.sha1`
    /// give way to `.zip.p7m` and `.zip.p7m.sha1`), records both in `meta`, rewrites extracted.xml and
    /// signs it. Files are synced; the caller syncs the directory when it publishes.
    pub fn seal(&self, staging: &Path, name: &ExportName, meta: &mut ExportMetadata) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let zip_path = staging.join(name.zip_file());
        let zip =
            std::fs::read(&zip_path).with_context(|| format!("reading {}", zip_path.display()))?;
        if let Some((key, cert)) = &self.signer {
            let sig = sign(&zip, key, cert)?;
            crate::package::write_synced(&staging.join(name.zip_sig_file()), &sig)?;
            meta.signed = Some(Signed {
                signer_fingerprint: fingerprint(cert),
                subject: subject(cert),
                zip_sha1: crate::format::sha1_hex(&zip),
            });
        }
        if !self.recipients.is_empty() {
            let p7m = encrypt(&zip, &self.recipients)?;
            let p7m_path = staging.join(name.p7m_file());
            crate::package::write_synced(&p7m_path, &p7m)?;
            let p7m_sha1 = crate::format::sha1_hex(&p7m);
            crate::package::write_synced(
                &staging.join(name.p7m_sha1_file()),
                crate::format::sha1_line(&p7m_sha1, &name.p7m_file()).as_bytes(),
            )?;
            meta.encrypted = Some(Encrypted {
                zip_sha1: crate::format::sha1_hex(&zip),
                zip_bytes: zip.len() as u64,
                cipher: CIPHER_NAME.into(),
                recipients: self
                    .recipients
                    .iter()
                    .map(|c| Recipient {
                        fingerprint: fingerprint(c),
                        subject: subject(c),
                    })
                    .collect(),
            });
            std::fs::remove_file(&zip_path)?;
            std::fs::remove_file(staging.join(name.zip_sha1_file()))?;
        }
        let xml = meta.to_xml();
        crate::package::replace_file(&staging.join(name.xml_file()), xml.as_bytes())?;
        if let Some((key, cert)) = &self.signer {
            let sig = sign(xml.as_bytes(), key, cert)?;
            crate::package::write_synced(&staging.join(name.xml_sig_file()), &sig)?;
        }
        Ok(())
    }
}

/// CMS EnvelopedData (DER) of `data` for every certificate in `to`.
pub fn encrypt(data: &[u8], to: &[X509]) -> Result<Vec<u8>> {
    let mut certs = Stack::new()?;
    for c in to {
        certs.push(c.clone())?;
    }
    let cms = CmsContentInfo::encrypt(&certs, data, Cipher::aes_256_cbc(), CMSOptions::BINARY)
        .context("encrypting (CMS EnvelopedData)")?;
    Ok(cms.to_der()?)
}

/// Detached CMS SignedData (DER) over `data`, the signer's certificate included.
pub fn sign(data: &[u8], key: &PKey<Private>, cert: &X509) -> Result<Vec<u8>> {
    let cms = CmsContentInfo::sign(
        Some(cert),
        Some(key),
        None,
        Some(data),
        CMSOptions::BINARY | CMSOptions::DETACHED,
    )
    .context("signing (CMS SignedData)")?;
    Ok(cms.to_der()?)
}

/// What the receiver holds: `--decrypt-key`/`--decrypt-cert` and `--trust`.
#[derive(Default)]
pub struct Opening {
    pub key: Option<(PKey<Private>, X509)>,
    pub trust: Vec<X509>,
}

static OPENING: OnceLock<Opening> = OnceLock::new();

impl Opening {
    pub fn new(
        decrypt_key: Option<&Path>,
        decrypt_cert: Option<&Path>,
        trust: &[PathBuf],
    ) -> Result<Opening> {
        let key = match (decrypt_key, decrypt_cert) {
            (None, None) => None,
            (Some(k), Some(c)) => Some((
                read_key(k, "--decrypt-key")?,
                read_certs(c, "--decrypt-cert")?.remove(0),
            )),
            _ => anyhow::bail!(
                "--decrypt-key and --decrypt-cert go together (the certificate names the recipient)"
            ),
        };
        let mut certs = Vec::new();
        for p in trust {
            certs.extend(read_certs(p, "--trust")?);
        }
        Ok(Opening { key, trust: certs })
    }

    /// Sets what this process's `verify` and `load` open folders with (once).
    pub fn install(self) {
        let _ = OPENING.set(self);
    }

    /// What was installed (nothing: no key, no trust).
    pub fn current() -> &'static Opening {
        OPENING.get_or_init(Opening::default)
    }

    /// The zip of an encrypted folder.
    pub fn decrypt(&self, p7m: &[u8]) -> Result<Vec<u8>, String> {
        let Some((key, cert)) = &self.key else {
            return Err("give --decrypt-key and --decrypt-cert to open it".into());
        };
        let cms = CmsContentInfo::from_der(p7m)
            .map_err(|e| format!("not a CMS EnvelopedData file: {e}"))?;
        cms.decrypt(key, cert).map_err(|e| {
            format!(
                "cannot be decrypted with --decrypt-key for the certificate {} ({e})",
                fingerprint(cert)
            )
        })
    }

    /// Checks a detached signature over `data` against the trusted certificates.
    pub fn verify(&self, sig: &[u8], data: &[u8]) -> Result<(), String> {
        let mut cms =
            CmsContentInfo::from_der(sig).map_err(|e| format!("not a CMS SignedData file: {e}"))?;
        let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
        for c in &self.trust {
            store.add_cert(c.clone()).map_err(|e| e.to_string())?;
        }
        let store = store.build();
        cms.verify(None, Some(&store), Some(data), None, CMSOptions::BINARY)
            .map_err(|e| format!("not signed by a certificate given to --trust ({e})"))
    }
}

//! `s3://bucket/prefix` on any S3-compatible store, through `object_store`.
//!
//! A folder is the objects `prefix/<folder>/<file>`. There is no rename on S3: the folder's checksum
//! object (`<folder>.zip.sha1`, or `<folder>.zip.p7m.sha1` when encrypted) is written last and marks
//! the folder complete; a reader (`load`/`verify --input s3://...`) takes only folders that have it.
//! Large files go up in multipart uploads and come down streamed to disk, never whole in memory.
//!
//! Endpoint, region and credentials: `--s3-endpoint`/`--s3-region`, else the usual `AWS_*`
//! variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use tokio::io::AsyncWriteExt;

use super::{Destination, Options};
use crate::format::ExportName;

/// Files up to this size go up in one request; larger ones in parts of this size.
const PART: usize = 8 * 1024 * 1024;

pub struct S3 {
    pub url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3({})", self.url)
    }
}

/// The endpoint and region options, for the receiving side too.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

impl S3 {
    pub fn parse(dest: &str, options: &Options) -> Result<S3> {
        S3::open(
            dest,
            &S3Options {
                endpoint: options.s3_endpoint.clone(),
                region: options.s3_region.clone(),
            },
        )
    }

    /// `s3://bucket/prefix`, configured from `options` and the `AWS_*` environment.
    pub fn open(url: &str, options: &S3Options) -> Result<S3> {
        let rest = url
            .strip_prefix("s3://")
            .with_context(|| format!("{url}: not an s3://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!bucket.is_empty(), "{url}: no bucket");
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        if let Some(e) = &endpoint {
            // A self-hosted store (MinIO, SeaweedFS, rclone) on plain http, addressed by path.
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let region = options
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        b = b.with_region(region);
        let store = b
            .build()
            .with_context(|| format!("{url}: configuring the S3 client"))?;
        Ok(S3 {
            url: format!("s3://{bucket}/{}", prefix.trim_matches('/')),
            store: Arc::new(store),
            prefix: ObjectPath::from(prefix.trim_matches('/')),
        })
    }

    fn object(&self, folder: &str, file: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in [folder, file] {
            p = p.child(part);
        }
        p
    }

    async fn upload(&self, file: &Path, to: &ObjectPath) -> Result<()> {
        let len = tokio::fs::metadata(file).await?.len();
        if len as usize <= PART {
            let bytes = tokio::fs::read(file).await?;
            self.store.put(to, bytes.into()).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(to).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut f = tokio::fs::File::open(file).await?;
        let mut buf = vec![0u8; PART];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf).await?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(2).await?;
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        Ok(())
    }

    /// The folders under the prefix that are complete (their checksum object is there), in name order.
    pub async fn complete_folders(&self) -> Result<Vec<String>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .with_context(|| format!("listing {}", self.url))?;
        let mut out = Vec::new();
        for dir in listing.common_prefixes {
            let Some(name) = dir.filename().map(str::to_string) else {
                continue;
            };
            let Some(n) = ExportName::parse(&name) else {
                continue;
            };
            let files = self.store.list_with_delimiter(Some(&dir)).await?;
            let has = |f: &str| {
                files
                    .objects
                    .iter()
                    .any(|o| o.location.filename() == Some(f))
            };
            if has(&n.zip_sha1_file()) || has(&n.p7m_sha1_file()) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Downloads one folder into `dir/<folder>` (streamed to disk), through a partial directory.
    pub async fn download(&self, folder: &str, dir: &Path) -> Result<()> {
        let prefix = self.prefix.child(folder);
        let files = self.store.list_with_delimiter(Some(&prefix)).await?;
        let partial = dir.join(format!(".{folder}.partial-{}", std::process::id()));
        let _ = tokio::fs::remove_dir_all(&partial).await;
        tokio::fs::create_dir_all(&partial).await?;
        for o in files.objects {
            let Some(name) = o.location.filename().map(str::to_string) else {
                continue;
            };
            anyhow::ensure!(
                crate::format::is_safe_entry_name(&name),
                "{}: object {name:?} is not a plain file name",
                self.url
            );
            let mut stream = self.store.get(&o.location).await?.into_stream();
            let mut f = tokio::fs::File::create(partial.join(&name)).await?;
            while let Some(chunk) = stream.try_next().await? {
                f.write_all(&chunk).await?;
            }
            f.sync_all().await?;
        }
        let target = dir.join(folder);
        let _ = tokio::fs::remove_dir_all(&target).await;
        tokio::fs::rename(&partial, &target).await?;
        Ok(())
    }

    /// Whether `local/file` holds the bytes of the store's object for `folder/file`.
    async fn same_object(&self, folder: &str, local: &Path, file: &str) -> Result<bool> {
        let Ok(mine) = tokio::fs::read(local.join(file)).await else {
            return Ok(false);
        };
        match self.store.get(&self.object(folder, file)).await {
            Ok(r) => Ok(r.bytes().await?.as_ref() == mine.as_slice()),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies every complete folder not already in `dir` there; returns the folders `dir` holds from
    /// the store, in name order.
    pub async fn mirror(&self, dir: &Path) -> Result<Vec<String>> {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let folders = self.complete_folders().await?;
        for f in &folders {
            let n = ExportName::parse(f).expect("listed");
            let local = dir.join(f);
            // Taken already when the local copy's completion marker and extracted.xml are the
            // store's (a folder reissued under the same name differs in one or both).
            let mut same = false;
            for m in [n.zip_sha1_file(), n.p7m_sha1_file()] {
                if local.join(&m).is_file() {
                    same = self.same_object(f, &local, &m).await?
                        && self.same_object(f, &local, &n.xml_file()).await?;
                    break;
                }
            }
            if !same {
                tracing::info!(folder = %f, from = %self.url, "downloading");
                self.download(f, dir)
                    .await
                    .with_context(|| format!("downloading {f} from {}", self.url))?;
            }
        }
        Ok(folders)
    }
}

impl Destination for S3 {
    fn label(&self) -> String {
        self.url.clone()
    }

    fn put_folder(&self, folder: &Path, name: &str) -> Result<()> {
        let files = super::files_in_order(folder, name)?;
        let run = async {
            // A folder of this name already there (a reissued folder): its completion marker goes
            // first, so no reader takes a mix of old and new objects, and objects the new folder
            // lacks go too.
            let prefix = self.prefix.child(name);
            let existing = self.store.list_with_delimiter(Some(&prefix)).await?;
            if !existing.objects.is_empty() {
                let n = ExportName::parse(name)
                    .with_context(|| format!("{name}: not an export folder"))?;
                let markers = [n.zip_sha1_file(), n.p7m_sha1_file()];
                let keep: Vec<String> = files
                    .iter()
                    .filter_map(|f| f.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .collect();
                let mut objects = existing.objects;
                objects.sort_by_key(|o| {
                    !markers
                        .iter()
                        .any(|m| o.location.filename() == Some(m.as_str()))
                });
                for o in objects {
                    let fname = o.location.filename().unwrap_or_default().to_string();
                    if markers.contains(&fname) || !keep.contains(&fname) {
                        self.store
                            .delete(&o.location)
                            .await
                            .with_context(|| format!("removing {}", o.location))?;
                    }
                }
            }
            for file in &files {
                let fname = file
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let to = self.object(name, &fname);
                self.upload(file, &to)
                    .await
                    .with_context(|| format!("uploading {} to {to}", file.display()))?;
            }
            Ok::<(), anyhow::Error>(())
        };
        // The delivery pass runs on a blocking thread of the export's runtime.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(run),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(run),
        }
    }
}

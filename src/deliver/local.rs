//! A local or mounted directory: the folder is copied under `.<name>.partial-<pid>`, synced, and
//! renamed into place, so a receiver reading the directory sees it whole or not at all.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Destination;

pub struct Local {
    dir: PathBuf,
}

impl Local {
    pub fn new(dir: &str) -> Local {
        // One spelling per directory: /mnt/x and /mnt/x/ are the same destination in the record.
        let trimmed = dir.trim_end_matches('/');
        Local {
            dir: PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed }),
        }
    }
}

impl Destination for Local {
    fn label(&self) -> String {
        self.dir.display().to_string()
    }

    fn put_folder(&self, folder: &Path, name: &str) -> Result<()> {
        // A destination that is not there is down (an unmounted share), not to be created.
        anyhow::ensure!(
            self.dir.is_dir(),
            "{}: no such directory (is it mounted?)",
            self.dir.display()
        );
        let target = self.dir.join(name);
        let n = crate::format::ExportName::parse(name)
            .with_context(|| format!("{name}: not an export folder"))?;
        if target.is_dir() && super::identity(folder, &n) == super::identity(&target, &n) {
            return Ok(()); // delivered before (the record was not written)
        }
        let partial = self
            .dir
            .join(format!(".{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir(&partial).with_context(|| format!("creating {}", partial.display()))?;
        for file in super::files_in_order(folder, name)? {
            let to = partial.join(file.file_name().expect("a file"));
            std::fs::copy(&file, &to)
                .with_context(|| format!("copying {} to {}", file.display(), to.display()))?;
            std::fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", to.display()))?;
        }
        crate::package::sync_dir(&partial)?;
        if target.exists() {
            // Another folder of that name (a restarted chain reuses names): replaced whole.
            let old = self.dir.join(format!(".{name}.old-{}", std::process::id()));
            std::fs::rename(&target, &old)
                .with_context(|| format!("moving {} aside", target.display()))?;
            std::fs::rename(&partial, &target)
                .with_context(|| format!("renaming into {}", target.display()))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&partial, &target)
                .with_context(|| format!("renaming into {}", target.display()))?;
        }
        crate::package::sync_dir(&self.dir)?;
        Ok(())
    }
}

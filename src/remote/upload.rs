//! Writing a dataset to `s3://`: staged in a local directory by the usual
//! writers, then uploaded with `index.json` last.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use super::store::Store;
use super::RemoteOptions;
use crate::shard::INDEX_FILE;
use crate::{Error, Result};

/// A dataset on its way to an object store.
#[derive(Debug)]
pub(crate) struct Upload {
    store: Store,
    dest: PathBuf,
    staging: PathBuf,
    overwrite: bool,
    /// Keep the staging directory when dropped (after a failed upload, so
    /// that nothing written is lost).
    keep: bool,
}

impl Upload {
    /// Checks the destination (the bucket answers; no dataset there unless
    /// `overwrite`) and creates the staging directory.
    pub(crate) fn new(dest: &Path, overwrite: bool, options: &RemoteOptions) -> Result<Upload> {
        let store = Store::connect(dest, options)?;
        let exists = store
            .exists(INDEX_FILE)
            .map_err(|e| Error::format(dest, e))?;
        if exists && !overwrite {
            return Err(Error::invalid(
                "output",
                format!(
                    "{} already holds a dataset ({INDEX_FILE}); pass --force to replace it",
                    dest.display()
                ),
            ));
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let staging = options
            .resolved_cache_dir()?
            .join("uploads")
            .join(format!("{}-{nanos}", std::process::id()));
        fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(Upload {
            store,
            dest: dest.to_path_buf(),
            staging,
            overwrite,
            keep: false,
        })
    }

    /// The local staging directory.
    pub(crate) fn staging(&self) -> &Path {
        &self.staging
    }

    /// Uploads every file of the staging directory: with `overwrite`, the
    /// destination's `index.json` is deleted first (no reader sees an old
    /// index over new shards); then the data files by multipart upload;
    /// then `index.json`. Removes the staging directory on success and
    /// keeps it (and says where) on failure.
    pub(crate) fn finish(mut self, progress: bool) -> Result<String> {
        let result = self.upload(progress);
        if let Err(e) = result {
            self.keep = true;
            return Err(Error::Pipeline(format!(
                "uploading to {} failed; the dataset is kept in {}: {e}",
                self.dest.display(),
                self.staging.display()
            )));
        }
        Ok(self.store.url())
    }

    fn upload(&self, progress: bool) -> Result<()> {
        let index = self.staging.join(INDEX_FILE);
        if !index.is_file() {
            return Err(Error::format(
                &index,
                "the writer did not finish (no index.json); nothing was uploaded",
            ));
        }
        let mut files = Vec::new();
        let mut total = 0;
        for entry in fs::read_dir(&self.staging).map_err(|e| Error::io(&self.staging, e))? {
            let entry = entry.map_err(|e| Error::io(&self.staging, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
            if meta.is_file() && !name.starts_with('.') && name != INDEX_FILE {
                total += meta.len();
                files.push(name);
            }
        }
        files.sort();
        if self.overwrite {
            self.store
                .delete(INDEX_FILE)
                .map_err(|e| Error::format(self.store.url_of(INDEX_FILE), e))?;
        }
        let bar = if progress {
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "upload {bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            )
        } else {
            ProgressBar::hidden()
        };
        for name in &files {
            let sent = |n: u64| bar.inc(n);
            self.store
                .put_file(name, &self.staging.join(name), &sent)
                .map_err(|e| Error::format(self.store.url_of(name), e))?;
        }
        let text = fs::read(&index).map_err(|e| Error::io(&index, e))?;
        self.store
            .put(INDEX_FILE, text)
            .map_err(|e| Error::format(self.store.url_of(INDEX_FILE), e))?;
        bar.finish_and_clear();
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

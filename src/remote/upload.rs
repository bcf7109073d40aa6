//! Writing a dataset to `s3://`: staged in a local directory by the usual
//! writers, then uploaded with `index.json` last.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use super::store::Store;
use super::RemoteOptions;
use crate::shard::INDEX_FILE;
use crate::{Error, Result};

/// A dataset on its way to an object store.
#[derive(Debug)]
pub(crate) struct Upload {
    store: Arc<Store>,
    dest: PathBuf,
    staging: PathBuf,
    overwrite: bool,
    /// Keep the staging directory when dropped (after a failed upload, so
    /// that nothing written is lost).
    keep: bool,
    /// The thread uploading finished shards while the writer runs.
    streamer: Option<Streamer>,
}

/// Uploads each shard the writer finishes (it appears under its final
/// name only once complete) and deletes the local copy, so the staging
/// directory holds only the shards not yet uploaded.
#[derive(Debug)]
struct Streamer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<()>>,
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
            store: Arc::new(store),
            dest: dest.to_path_buf(),
            staging,
            overwrite,
            keep: false,
            streamer: None,
        })
    }

    /// Starts uploading shards (`shard-*.safetensors`) as soon as the
    /// writer has renamed them into place, deleting each local copy once it
    /// is up. For writers that never read their shards back (`pack`).
    pub(crate) fn stream_shards(&mut self) -> Result<()> {
        if self.streamer.is_some() {
            return Ok(());
        }
        self.drop_old_index()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (store, staging, done) = (self.store.clone(), self.staging.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("metaug-upload".into())
            .spawn(move || loop {
                // Read the flag first: a shard renamed before it was set is
                // then seen by this last pass.
                let last = done.load(Ordering::SeqCst);
                for name in finished_shards(&staging)? {
                    let path = staging.join(&name);
                    store
                        .put_file(&name, &path, &|_| {})
                        .map_err(|e| Error::format(store.url_of(&name), e))?;
                    fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
                if last {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            })
            .map_err(|e| Error::Pipeline(format!("cannot start the upload thread: {e}")))?;
        self.streamer = Some(Streamer { stop, thread });
        Ok(())
    }

    /// With `overwrite`, deletes the destination's `index.json` (before any
    /// shard is replaced, so no reader sees an old index over new shards).
    fn drop_old_index(&self) -> Result<()> {
        if self.overwrite {
            self.store
                .delete(INDEX_FILE)
                .map_err(|e| Error::format(self.store.url_of(INDEX_FILE), e))?;
        }
        Ok(())
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
        let streamed = match self.streamer.take() {
            Some(s) => {
                s.stop.store(true, Ordering::SeqCst);
                s.thread
                    .join()
                    .unwrap_or_else(|_| Err(Error::Pipeline("the upload thread panicked".into())))
            }
            None => Ok(()),
        };
        let result = streamed.and_then(|()| self.upload(progress));
        if let Err(e) = result {
            self.keep = true;
            return Err(Error::Pipeline(format!(
                "uploading to {} failed; what was not uploaded is kept in {}: {e}",
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
        self.drop_old_index()?;
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

/// The shard files the writer has finished in `dir`, in name order.
fn finished_shards(dir: &Path) -> Result<Vec<String>> {
    let suffix = format!(".{}", crate::shard::SHARD_EXTENSION);
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let name = entry.map_err(|e| Error::io(dir, e))?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("shard-") && name.ends_with(&suffix) {
            out.push(name.into_owned());
        }
    }
    out.sort();
    Ok(out)
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(s) = self.streamer.take() {
            s.stop.store(true, Ordering::SeqCst);
            let _ = s.thread.join();
        }
        if !self.keep {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

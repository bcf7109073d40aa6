//! Writing a dataset to `s3://`: staged in a local directory by the usual
//! writers, then uploaded with `index.json` last.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use super::store::Store;
use super::RemoteOptions;
use crate::shard::{ShardHook, INDEX_FILE};
use crate::{Error, Result};

/// A dataset on its way to an object store.
#[derive(Debug)]
pub(crate) struct Upload {
    store: Arc<Store>,
    dest: PathBuf,
    staging: PathBuf,
    overwrite: bool,
    /// Whether the old `index.json` is already deleted (see
    /// [`Upload::drop_old_index`]).
    index_dropped: bool,
    /// Keep the staging directory when dropped (after a failed upload, so
    /// that nothing written is lost).
    keep: bool,
    /// The thread uploading finished shards while the writer runs.
    streamer: Option<Streamer>,
}

/// Uploads each shard the writer hands over (through its
/// [`ShardHook`]) and deletes the local copy. The hand-over waits while one
/// shard is uploading and another is queued, so the staging directory holds
/// at most about three shards, whatever the speed of the network.
#[derive(Debug)]
struct Streamer {
    /// `Some(path)`: a shard to upload; `None`: no more.
    tx: SyncSender<Option<PathBuf>>,
    thread: JoinHandle<Result<()>>,
    /// The upload thread's error, for the writer to report.
    failed: Arc<Mutex<Option<String>>>,
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
            index_dropped: false,
            keep: false,
            streamer: None,
        })
    }

    /// A hook for the writer: each shard it finishes is uploaded by a
    /// background thread, and its local copy deleted, while the writer goes
    /// on. For writers that never read their shards back (`pack`).
    pub(crate) fn shard_hook(&mut self) -> Result<ShardHook> {
        if self.streamer.is_none() {
            self.drop_old_index()?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<Option<PathBuf>>(1);
            let failed = Arc::new(Mutex::new(None));
            let (store, failure) = (self.store.clone(), failed.clone());
            let thread = std::thread::Builder::new()
                .name("metaug-upload".into())
                .spawn(move || {
                    let result = (|| -> Result<()> {
                        while let Ok(Some(path)) = rx.recv() {
                            let name = path
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            store
                                .put_file(&name, &path, &|_| {})
                                .map_err(|e| Error::format(store.url_of(&name), e))?;
                            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                        }
                        Ok(())
                    })();
                    if let Err(e) = &result {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    }
                    result
                })
                .map_err(|e| Error::Pipeline(format!("cannot start the upload thread: {e}")))?;
            self.streamer = Some(Streamer { tx, thread, failed });
        }
        let streamer = self.streamer.as_ref().expect("started above");
        let (tx, failed) = (streamer.tx.clone(), streamer.failed.clone());
        Ok(ShardHook(Arc::new(move |path: &Path| {
            tx.send(Some(path.to_path_buf())).map_err(|_| {
                let why = failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
                Error::Pipeline(format!(
                    "uploading a shard failed: {}",
                    why.unwrap_or_else(|| "the upload thread stopped".into())
                ))
            })
        })))
    }

    /// With `overwrite`, deletes the destination's `index.json` (before any
    /// shard is replaced, so no reader sees an old index over new shards).
    fn drop_old_index(&mut self) -> Result<()> {
        if self.overwrite && !self.index_dropped {
            self.store
                .delete(INDEX_FILE)
                .map_err(|e| Error::format(self.store.url_of(INDEX_FILE), e))?;
            self.index_dropped = true;
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
                // Ends the thread after the shards already handed over.
                let _ = s.tx.send(None);
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

    fn upload(&mut self, progress: bool) -> Result<()> {
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

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(s) = self.streamer.take() {
            let _ = s.tx.send(None);
            let _ = s.thread.join();
        }
        if !self.keep {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

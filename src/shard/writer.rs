//! Writing a dataset: records are buffered one shard at a time and each
//! shard is written atomically; `index.json` is written last.
//!
//! A run killed at any point leaves at most some complete shards and a
//! temporary file (`.NAME.tmp`), never an `index.json`: until the index
//! exists, [`Dataset::open`](super::Dataset::open) refuses the directory.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{encode_header, shard_file_name, Encoding, ShardArrays, SHARD_EXTENSION};
use super::index::{DatasetIndex, ShardEntry, DATASET_FORMAT, DATASET_VERSION, INDEX_FILE};
use crate::{Error, Result};

/// Default shard size: 64 MiB of payload per shard.
pub const DEFAULT_SHARD_SIZE: u64 = 64 << 20;

/// Called with each shard's path once the shard is complete (renamed
/// into place and recorded); an error stops the writer. The writer never
/// reads a shard back, so the hook may move or delete it (an `s3://`
/// output uploads it and deletes the local copy).
#[derive(Clone)]
pub struct ShardHook(pub Arc<ShardHookFn>);

/// The function a [`ShardHook`] calls.
pub type ShardHookFn = dyn Fn(&Path) -> Result<()> + Send + Sync;

impl std::fmt::Debug for ShardHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardHook")
    }
}

/// Options of a [`DatasetWriter`].
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Encoding of every record.
    pub encoding: Encoding,
    /// Class names; every label must index into them.
    pub classes: Vec<String>,
    /// A shard is closed before its payload bytes would exceed this (a
    /// single larger record gets a shard of its own). Memory use is bounded
    /// by about this much plus 36 bytes per record of the shard.
    pub shard_size: u64,
    /// Replace an existing dataset in the directory (its `index.json` is
    /// removed first, then its shard files). Without it, a directory that
    /// already holds a dataset is an error.
    pub overwrite: bool,
    /// Called after each shard is written (see [`ShardHook`]).
    pub after_shard: Option<ShardHook>,
}

impl WriterOptions {
    /// Options with the given encoding and classes, the default shard size,
    /// and no overwriting.
    pub fn new(encoding: Encoding, classes: Vec<String>) -> Self {
        WriterOptions {
            encoding,
            classes,
            shard_size: DEFAULT_SHARD_SIZE,
            overwrite: false,
            after_shard: None,
        }
    }
}

/// Writes records into shards of a dataset directory.
///
/// ```no_run
/// use metaug::shard::{DatasetWriter, Encoding, WriterOptions};
/// let options = WriterOptions::new(Encoding::Raw, vec!["zero".into(), "one".into()]);
/// let mut writer = DatasetWriter::create("out", options)?;
/// writer.push(&[0u8; 4], 1, [2, 2, 1])?;
/// let index = writer.finish()?;
/// assert_eq!(index.total_records, 1);
/// # Ok::<(), metaug::Error>(())
/// ```
pub struct DatasetWriter {
    dir: PathBuf,
    options: WriterOptions,
    current: ShardArrays,
    entries: Vec<ShardEntry>,
}

impl DatasetWriter {
    /// Creates `dir` if needed and prepares to write a dataset into it.
    pub fn create(dir: impl AsRef<Path>, options: WriterOptions) -> Result<DatasetWriter> {
        let dir = dir.as_ref().to_path_buf();
        if options.shard_size == 0 {
            return Err(Error::invalid("shard size", "must be at least 1 byte"));
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let ours = our_files(&dir)?;
        if !ours.is_empty() {
            if !options.overwrite {
                return Err(Error::invalid(
                    "output directory",
                    format!(
                        "{} already holds a dataset ({}); pass --force to replace it",
                        dir.display(),
                        ours[0].display()
                    ),
                ));
            }
            // Index first, so that no state in between looks complete.
            let index = dir.join(INDEX_FILE);
            if index.exists() {
                fs::remove_file(&index).map_err(|e| Error::io(&index, e))?;
                sync_dir(&dir)?;
            }
            for path in ours.iter().filter(|p| **p != index) {
                fs::remove_file(path).map_err(|e| Error::io(path, e))?;
            }
            sync_dir(&dir)?;
        }
        Ok(DatasetWriter {
            dir,
            options,
            current: ShardArrays::new(),
            entries: Vec::new(),
        })
    }

    /// Appends one record: its payload (in the dataset's encoding), label
    /// and decoded shape `[height, width, channels]`. May write a shard.
    pub fn push(&mut self, payload: &[u8], label: i64, shape: [u32; 3]) -> Result<()> {
        let classes = self.options.classes.len() as u64;
        if u64::try_from(label).map_or(true, |l| l >= classes) {
            return Err(Error::invalid(
                "label",
                format!("{label} is not one of the {classes} classes"),
            ));
        }
        if shape.contains(&0) {
            return Err(Error::invalid(
                "shape",
                format!("{shape:?} has a zero dimension"),
            ));
        }
        match self.options.encoding {
            Encoding::Raw => {
                let need = shape.iter().map(|&d| d as u128).product::<u128>();
                if need != payload.len() as u128 {
                    return Err(Error::invalid(
                        "record",
                        format!(
                            "raw payload of {} bytes does not match shape {shape:?}",
                            payload.len()
                        ),
                    ));
                }
            }
            enc => {
                if Encoding::sniff(payload) != Some(enc) {
                    return Err(Error::invalid(
                        "record",
                        format!("payload is not a {enc} file (by its first bytes)"),
                    ));
                }
            }
        }
        let size = self.current.bytes.len() as u64 + payload.len() as u64;
        if self.current.len() > 0 && size > self.options.shard_size {
            self.flush()?;
        }
        self.current.push(payload, label, shape);
        Ok(())
    }

    /// Number of records pushed so far.
    pub fn records(&self) -> u64 {
        self.entries.iter().map(|e| e.records).sum::<u64>() + self.current.len() as u64
    }

    /// Writes the buffered records as the next shard.
    fn flush(&mut self) -> Result<()> {
        let arrays = std::mem::replace(&mut self.current, ShardArrays::new());
        let name = shard_file_name(self.entries.len());
        let count = arrays.len() as u64;
        let small = arrays.tensor_bytes();
        let header = encode_header(
            self.options.encoding,
            count,
            &small,
            arrays.bytes.len() as u64,
        );
        let path = write_atomically(&self.dir, &name, |w| {
            w.write_all(&header)?;
            for (_, data) in &small {
                w.write_all(data)?;
            }
            w.write_all(&arrays.bytes)
        })?;
        let bytes = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
        self.entries.push(ShardEntry {
            file: name,
            records: count,
            bytes,
        });
        if let Some(hook) = &self.options.after_shard {
            (hook.0)(&path)?;
        }
        Ok(())
    }

    /// Writes the last shard, then `index.json`, and returns the index.
    pub fn finish(mut self) -> Result<DatasetIndex> {
        if self.current.len() > 0 {
            self.flush()?;
        }
        let index = DatasetIndex {
            format: DATASET_FORMAT.into(),
            version: DATASET_VERSION,
            encoding: self.options.encoding,
            classes: self.options.classes.clone(),
            total_records: self.entries.iter().map(|e| e.records).sum(),
            total_bytes: self.entries.iter().map(|e| e.bytes).sum(),
            shards: std::mem::take(&mut self.entries),
        };
        index.write(&self.dir)?;
        Ok(index)
    }
}

/// The files of a previous dataset in `dir`: `index.json`, `shard-*.safetensors`
/// and our temporary files. Nothing else is ever touched.
fn our_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let shard = name.starts_with("shard-") && name.ends_with(&format!(".{SHARD_EXTENSION}"));
        let temp = name.starts_with('.') && name.ends_with(".tmp");
        if name == INDEX_FILE || shard || temp {
            out.push(entry.path());
        }
    }
    // Index first (reported in errors), the rest in name order.
    out.sort_by_key(|p| (p.file_name() != Some(INDEX_FILE.as_ref()), p.clone()));
    Ok(out)
}

/// Writes `dir/name` so that it appears complete or not at all: the data
/// goes to `dir/.name.tmp`, which is flushed, fsynced and renamed over
/// `name`; then the directory is fsynced so the rename is durable.
pub(crate) fn write_atomically(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<PathBuf> {
    let temp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&temp)?);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(&temp, e));
    }
    fs::rename(&temp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Fsyncs a directory so that renames and removals in it are durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

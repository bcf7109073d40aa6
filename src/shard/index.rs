//! `index.json`: the table of contents of a dataset directory.
//!
//! ```json
//! {
//!   "classes": ["0", "1"],
//!   "encoding": "raw",
//!   "format": "metaug-dataset",
//!   "shards": [{"bytes": 1234, "file": "shard-00000.safetensors", "records": 2}],
//!   "total_bytes": 1234,
//!   "total_records": 2,
//!   "version": 1
//! }
//! ```
//!
//! `bytes` is the size of the shard file; `total_bytes` and `total_records`
//! are the sums over shards. Keys are written sorted, with no timestamp, so
//! the same dataset always gives the same file.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{Encoding, SHARD_EXTENSION};
use super::writer::write_atomically;
use crate::{Error, Result};

/// Name of the index file in a dataset directory.
pub const INDEX_FILE: &str = "index.json";
/// Value of the `format` field of `index.json`.
pub const DATASET_FORMAT: &str = "metaug-dataset";
/// Version of the `index.json` layout.
pub const DATASET_VERSION: u32 = 1;
/// Largest `index.json` a reader accepts, in bytes.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// The parsed `index.json` of a dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetIndex {
    /// Always [`DATASET_FORMAT`].
    pub format: String,
    /// Always [`DATASET_VERSION`].
    pub version: u32,
    /// The encoding of every record.
    pub encoding: Encoding,
    /// Class names; label `i` names `classes[i]`.
    pub classes: Vec<String>,
    /// Sum of the shards' record counts.
    pub total_records: u64,
    /// Sum of the shards' file sizes.
    pub total_bytes: u64,
    /// The shards, in record order.
    pub shards: Vec<ShardEntry>,
}

/// One shard as listed in `index.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// File name inside the dataset directory (no directory part).
    pub file: String,
    /// Number of records in the shard.
    pub records: u64,
    /// Size of the shard file in bytes.
    pub bytes: u64,
}

impl DatasetIndex {
    /// The error for a dataset location without its `index.json` at `path`.
    pub(crate) fn missing(path: &Path) -> Error {
        Error::format(
            path,
            "missing index.json: not a metaug dataset, or packing did not finish",
        )
    }

    /// Reads and validates `dir/index.json` (see [`DatasetIndex::validate`]).
    pub fn load(dir: &Path) -> Result<DatasetIndex> {
        let path = dir.join(INDEX_FILE);
        let file = std::fs::File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DatasetIndex::missing(&path)
            } else {
                Error::io(&path, e)
            }
        })?;
        let mut text = Vec::new();
        file.take(MAX_INDEX_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| Error::io(&path, e))?;
        if text.len() as u64 > MAX_INDEX_BYTES {
            return Err(Error::format(
                &path,
                format!("larger than the limit of {MAX_INDEX_BYTES} bytes"),
            ));
        }
        DatasetIndex::parse(&path, &text)
    }

    /// Parses and validates the bytes of an `index.json` (see
    /// [`DatasetIndex::validate`]); `path` names the file in errors. Inputs
    /// over [`MAX_INDEX_BYTES`] are refused.
    pub fn parse(path: &Path, text: &[u8]) -> Result<DatasetIndex> {
        if text.len() as u64 > MAX_INDEX_BYTES {
            return Err(Error::format(
                path,
                format!("larger than the limit of {MAX_INDEX_BYTES} bytes"),
            ));
        }
        let index: DatasetIndex = serde_json::from_slice(text)
            .map_err(|e| Error::format(path, format!("not a valid index: {e}")))?;
        index.validate(path)?;
        Ok(index)
    }

    /// Checks the index on its own: format and version, safe and unique
    /// shard file names, unique class names, and totals that match the
    /// per-shard numbers. `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |what: String| Error::format(path, what);
        if self.format != DATASET_FORMAT {
            return Err(bad(format!(
                "format is {:?}, expected {DATASET_FORMAT:?}",
                self.format
            )));
        }
        if self.version != DATASET_VERSION {
            return Err(bad(format!(
                "unsupported index version {} (this build reads version {DATASET_VERSION})",
                self.version
            )));
        }
        let mut names = HashSet::new();
        for class in &self.classes {
            if !names.insert(class.as_str()) {
                return Err(bad(format!("class {class:?} is listed twice")));
            }
        }
        let mut files = HashSet::new();
        let (mut records, mut bytes) = (0u64, 0u64);
        for entry in &self.shards {
            let name = entry.file.as_str();
            let plain = Path::new(name).file_name().and_then(|f| f.to_str()) == Some(name);
            if !plain || name.starts_with('.') || !name.ends_with(&format!(".{SHARD_EXTENSION}")) {
                return Err(bad(format!(
                    "shard file name {name:?} is not a plain *.{SHARD_EXTENSION} name in the dataset directory"
                )));
            }
            if !files.insert(name) {
                return Err(bad(format!("shard {name:?} is listed twice")));
            }
            records = records
                .checked_add(entry.records)
                .ok_or_else(|| bad("record counts overflow".into()))?;
            bytes = bytes
                .checked_add(entry.bytes)
                .ok_or_else(|| bad("shard sizes overflow".into()))?;
        }
        if records != self.total_records {
            return Err(bad(format!(
                "count mismatch: total_records is {} but the shards list {records} records",
                self.total_records
            )));
        }
        if bytes != self.total_bytes {
            return Err(bad(format!(
                "total_bytes is {} but the shards add up to {bytes}",
                self.total_bytes
            )));
        }
        if records > 0 && self.classes.is_empty() {
            return Err(bad("the dataset has records but no classes".into()));
        }
        Ok(())
    }

    /// The JSON text written to disk: sorted keys, two-space indent, final newline.
    pub fn to_json(&self) -> String {
        // Through serde_json::Value, whose objects keep keys sorted.
        let value = serde_json::to_value(self).expect("an index serialises");
        let mut text = serde_json::to_string_pretty(&sorted(value)).expect("a value serialises");
        text.push('\n');
        text
    }

    /// Writes `dir/index.json` atomically (temporary file, fsync, rename,
    /// fsync of the directory). Returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let text = self.to_json();
        write_atomically(dir, INDEX_FILE, |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })
    }
}

/// `value` with every object's keys in sorted order, whatever serde_json's
/// features (with `preserve_order`, objects keep insertion order).
fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

//! The [`Dataset`]: `index.json` and every shard it lists, validated
//! together, from a local directory or (feature `s3`) an `s3://` location.

use std::path::{Path, PathBuf};

use super::format::Encoding;
use super::index::{DatasetIndex, INDEX_FILE};
use super::reader::{ReadMode, Record, Shard};
use crate::remote::{self, RemoteOptions};
use crate::{Error, Result};

/// Options of [`Dataset::open_with`].
///
/// ```no_run
/// use metaug::shard::{Dataset, OpenOptions, ReadMode};
/// let options = OpenOptions { read_mode: ReadMode::Pread, ..Default::default() };
/// let dataset = Dataset::open_with("/nfs/datasets/fashion-mnist", options)?;
/// # Ok::<(), metaug::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// How shard files are read (default [`ReadMode::Mmap`]). Object-store
    /// datasets always read as [`ReadMode::Pread`].
    pub read_mode: ReadMode,
    /// How `s3://` datasets are read (cache, retries); see
    /// [`crate::remote`].
    pub remote: RemoteOptions,
}

/// A dataset: the directory's `index.json` and its validated shards.
///
/// `Send + Sync`: share it between decode threads by reference or `Arc`.
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    index: DatasetIndex,
    shards: Vec<Shard>,
    read_mode: ReadMode,
    /// `starts[s]` is the global index of shard `s`'s first record;
    /// `starts[shards.len()]` is the total.
    starts: Vec<u64>,
}

impl Dataset {
    /// Opens the dataset in `dir` in [`ReadMode::Mmap`]: reads and validates
    /// `index.json`, then opens and validates every shard it lists, checking
    /// that each shard's encoding, record count and file size agree with
    /// `index.json` and that every label names one of its classes.
    ///
    /// `dir` may be `s3://bucket/prefix` (feature `s3`; see
    /// [`crate::remote`]): the same checks, over ranged GETs.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset> {
        Dataset::open_with(dir, OpenOptions::default())
    }

    /// Opens the dataset in `dir` as [`Dataset::open`] does, with `options`
    /// (the [`ReadMode`]). The mode travels with the dataset: the loader,
    /// precompute and inspect read records the way it was opened.
    pub fn open_with(dir: impl AsRef<Path>, options: OpenOptions) -> Result<Dataset> {
        let dir = dir.as_ref().to_path_buf();
        let index_path = dir.join(INDEX_FILE);
        let (index, opened) = if remote::is_remote(&dir) {
            let (index, shards) = remote::open_dataset(&dir, &options.remote)?;
            (index, Some(shards))
        } else {
            (DatasetIndex::load(&dir)?, None)
        };
        let mut opened = opened.map(Vec::into_iter);
        let mut shards = Vec::with_capacity(index.shards.len());
        let mut starts = Vec::with_capacity(index.shards.len() + 1);
        let mut start = 0u64;
        for (ordinal, entry) in index.shards.iter().enumerate() {
            let shard = match opened.as_mut().and_then(Iterator::next) {
                Some(shard) => shard,
                None => Shard::open_with(dir.join(&entry.file), ordinal, options.read_mode)?,
            };
            let path = shard.path();
            if shard.encoding() != index.encoding {
                return Err(Error::format(
                    path,
                    format!(
                        "encoding is {} but {} says {}",
                        shard.encoding(),
                        index_path.display(),
                        index.encoding
                    ),
                ));
            }
            if shard.len() != entry.records {
                return Err(Error::format(
                    path,
                    format!(
                        "count mismatch: the shard holds {} records but {} says {}",
                        shard.len(),
                        index_path.display(),
                        entry.records
                    ),
                ));
            }
            if shard.file_bytes() != entry.bytes {
                return Err(Error::format(
                    path,
                    format!(
                        "the file is {} bytes but {} says {}",
                        shard.file_bytes(),
                        index_path.display(),
                        entry.bytes
                    ),
                ));
            }
            let classes = index.classes.len() as u64;
            for i in 0..shard.len() {
                let label = shard.label(i)?;
                if u64::try_from(label).map_or(true, |l| l >= classes) {
                    return Err(Error::record(
                        path,
                        i,
                        format!("label {label} is not one of the {classes} classes of index.json"),
                    ));
                }
            }
            starts.push(start);
            // Sums were checked against total_records by DatasetIndex::load.
            start += shard.len();
            shards.push(shard);
        }
        starts.push(start);
        let read_mode = if remote::is_remote(&dir) {
            ReadMode::Pread
        } else {
            options.read_mode
        };
        Ok(Dataset {
            dir,
            index,
            shards,
            read_mode,
            starts,
        })
    }

    /// How the shards are read (chosen at open).
    pub fn read_mode(&self) -> ReadMode {
        self.read_mode
    }

    /// Total number of records.
    pub fn len(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Whether the dataset holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class names; label `i` is `classes()[i]`.
    pub fn classes(&self) -> &[String] {
        &self.index.classes
    }

    /// The encoding of every record.
    pub fn encoding(&self) -> Encoding {
        self.index.encoding
    }

    /// The dataset's `index.json`, as read.
    pub fn index(&self) -> &DatasetIndex {
        &self.index
    }

    /// The dataset's shards, in order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The file of shard number `shard`. Panics if `shard` is not below
    /// `shards().len()` (shard numbers come from [`Record::shard`]).
    pub fn shard_path(&self, shard: usize) -> &Path {
        self.shards[shard].path()
    }

    /// The dataset directory (or its `s3://` URL).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shard and in-shard index of global record `global_index`.
    pub fn locate(&self, global_index: u64) -> Result<(usize, u64)> {
        if global_index >= self.len() {
            return Err(Error::invalid(
                "record index",
                format!(
                    "{global_index} is out of range for {} ({} records)",
                    self.dir.display(),
                    self.len()
                ),
            ));
        }
        // starts is sorted; the last start <= global_index is its shard
        // (empty shards share a start with the next one, which wins).
        let shard = self.starts.partition_point(|&s| s <= global_index) - 1;
        Ok((shard, global_index - self.starts[shard]))
    }

    /// Record `global_index` (counting across shards in order), borrowed
    /// from the memory map, after checking its crc32c. Only in
    /// [`ReadMode::Mmap`] (an error in pread mode); code that should work
    /// in both modes calls [`Dataset::read_record`].
    pub fn record(&self, global_index: u64) -> Result<Record<'_>> {
        let (shard, index) = self.locate(global_index)?;
        self.shards[shard].record(index)
    }

    /// Record `global_index` in either read mode, after checking its
    /// crc32c: borrowed from the map in [`ReadMode::Mmap`] (`buf` untouched),
    /// read into `buf` in [`ReadMode::Pread`]. Keep one buffer per thread
    /// and pass it to every call. See [`Shard::read_record`].
    pub fn read_record<'a>(
        &'a self,
        global_index: u64,
        buf: &'a mut Vec<u8>,
    ) -> Result<Record<'a>> {
        let (shard, index) = self.locate(global_index)?;
        self.shards[shard].read_record(index, buf)
    }

    /// The label of record `global_index`, without reading its payload.
    pub fn label(&self, global_index: u64) -> Result<i64> {
        let (shard, index) = self.locate(global_index)?;
        self.shards[shard].label(index)
    }

    /// The stored shape of record `global_index`, without reading its payload.
    pub fn shape(&self, global_index: u64) -> Result<[u32; 3]> {
        let (shard, index) = self.locate(global_index)?;
        self.shards[shard].shape(index)
    }
}

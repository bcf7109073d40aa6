//! Reading shards: a memory-mapped [`Shard`], and the [`Dataset`] of all
//! shards listed in `index.json`. Records are borrowed from the map, never
//! copied, and each record's crc32c is checked when it is handed out.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::format::Encoding;
use super::header::{self, le_i64, le_u32, le_u64, Layout};
use super::index::{DatasetIndex, INDEX_FILE};
use crate::{Error, Result};

/// One record of a dataset, borrowed from the shard's memory map.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// The payload (JPEG, PNG or raw pixels), borrowed from the map.
    pub bytes: &'a [u8],
    /// The class label.
    pub label: i64,
    /// Height, width and channels of the decoded image, as stored.
    pub shape: [u32; 3],
    /// How `bytes` is encoded.
    pub encoding: Encoding,
    /// Index of the shard in the dataset.
    pub shard: usize,
    /// Index of the record inside its shard.
    pub index: u64,
}

/// One validated, memory-mapped shard file.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    ordinal: usize,
    map: Mmap,
    layout: Layout,
}

impl Shard {
    /// Opens and validates the shard at `path`; `ordinal` is its index in its
    /// dataset (reported in each [`Record::shard`]).
    ///
    /// Validates the whole header (see the module docs of [`crate::shard`]),
    /// the checksums of the `offsets`, `labels`, `shapes` and `crc32c`
    /// tensors, and every record's offsets and shape. Payload checksums are
    /// checked per record by [`Shard::record`].
    pub fn open(path: impl AsRef<Path>, ordinal: usize) -> Result<Shard> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::format(path, "missing shard file")
            } else {
                Error::io(path, e)
            }
        })?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < 8 {
            // Also avoids mapping an empty file, which mmap(2) refuses.
            return Err(Error::format(
                path,
                format!(
                    "truncated: the file is {len} bytes, too short for the 8-byte header length"
                ),
            ));
        }
        // SAFETY: the map is read-only and we rely on the dataset contract that
        // shards are immutable once written (written to a temporary name,
        // fsynced and renamed; never modified in place). The file's length was
        // read above and is checked against the map below; every later access
        // goes through bounds-checked slices of `map` whose ranges were
        // validated against that length. If another process truncated or
        // rewrote the file despite the contract, reads could fault (SIGBUS) or
        // see changed bytes; changed bytes are still caught by the checksums.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if map.len() as u64 != len {
            return Err(Error::format(
                path,
                format!(
                    "file changed size while opening ({len} then {} bytes)",
                    map.len()
                ),
            ));
        }
        let layout = header::parse(path, &map)?;
        let shard = Shard {
            path: path.to_path_buf(),
            ordinal,
            map,
            layout,
        };
        shard.check_records()?;
        Ok(shard)
    }

    /// Checks offsets (start at 0, never decrease, end at the payload total)
    /// and shapes (no zero dimension; raw records hold exactly h*w*c bytes).
    fn check_records(&self) -> Result<()> {
        let total = self.layout.bytes.len() as u64;
        let offsets = &self.map[self.layout.offsets.clone()];
        let shapes = &self.map[self.layout.shapes.clone()];
        let n = self.layout.count as usize;
        let first = le_u64(offsets, 0).unwrap_or(0);
        if first != 0 {
            return Err(Error::format(
                &self.path,
                format!("offsets start at {first}, expected 0"),
            ));
        }
        let mut prev = 0u64;
        for i in 0..n {
            let end = le_u64(offsets, i + 1).unwrap_or(u64::MAX);
            let rec = i as u64;
            if end < prev {
                return Err(Error::record(
                    &self.path,
                    rec,
                    format!("offsets decrease: record ends at {end}, before its start {prev}"),
                ));
            }
            if end > total {
                return Err(Error::record(
                    &self.path,
                    rec,
                    format!("offset {end} is out of range: the shard holds {total} payload bytes"),
                ));
            }
            let shape = read_shape(shapes, i).unwrap_or([0; 3]);
            if shape.contains(&0) {
                return Err(Error::record(
                    &self.path,
                    rec,
                    format!("shape {shape:?} has a zero dimension"),
                ));
            }
            let len = end - prev;
            let pixels = shape.iter().map(|&d| d as u128).product::<u128>();
            if self.layout.encoding == Encoding::Raw && pixels != len as u128 {
                return Err(Error::record(
                    &self.path,
                    rec,
                    format!("raw record holds {len} bytes but its shape {shape:?} needs {pixels}"),
                ));
            }
            prev = end;
        }
        if prev != total {
            return Err(Error::format(
                &self.path,
                format!("offsets end at {prev} but tensor \"bytes\" holds {total} bytes"),
            ));
        }
        Ok(())
    }

    /// The shard's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.layout.count
    }

    /// Whether the shard holds no record.
    pub fn is_empty(&self) -> bool {
        self.layout.count == 0
    }

    /// The encoding of every record in the shard.
    pub fn encoding(&self) -> Encoding {
        self.layout.encoding
    }

    /// Size of the file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// Sum of the record payload sizes in bytes.
    pub fn payload_bytes(&self) -> u64 {
        self.layout.bytes.len() as u64
    }

    fn out_of_range(&self, index: u64) -> Error {
        Error::invalid(
            "record index",
            format!(
                "{index} is out of range for {} ({} records)",
                self.path.display(),
                self.layout.count
            ),
        )
    }

    /// The label of record `index`, without reading its payload.
    pub fn label(&self, index: u64) -> Result<i64> {
        let labels = &self.map[self.layout.labels.clone()];
        usize::try_from(index)
            .ok()
            .filter(|_| index < self.layout.count)
            .and_then(|i| le_i64(labels, i))
            .ok_or_else(|| self.out_of_range(index))
    }

    /// The stored shape `[height, width, channels]` of record `index`.
    pub fn shape(&self, index: u64) -> Result<[u32; 3]> {
        let shapes = &self.map[self.layout.shapes.clone()];
        usize::try_from(index)
            .ok()
            .filter(|_| index < self.layout.count)
            .and_then(|i| read_shape(shapes, i))
            .ok_or_else(|| self.out_of_range(index))
    }

    /// Record `index` of this shard, borrowed from the map, after checking
    /// its payload against its stored crc32c.
    pub fn record(&self, index: u64) -> Result<Record<'_>> {
        let i = usize::try_from(index)
            .ok()
            .filter(|_| index < self.layout.count)
            .ok_or_else(|| self.out_of_range(index))?;
        let offsets = &self.map[self.layout.offsets.clone()];
        let bytes = &self.map[self.layout.bytes.clone()];
        // Validated at open; checked again so that no index can panic.
        let payload = match (le_u64(offsets, i), le_u64(offsets, i + 1)) {
            (Some(start), Some(end)) if start <= end => usize::try_from(start)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(s, e)| bytes.get(s..e)),
            _ => None,
        }
        .ok_or_else(|| Error::record(&self.path, index, "offsets out of range"))?;
        let stored = le_u32(&self.map[self.layout.crcs.clone()], i)
            .ok_or_else(|| Error::record(&self.path, index, "checksum entry out of range"))?;
        let actual = crc32c::crc32c(payload);
        if stored != actual {
            return Err(Error::record(
                &self.path,
                index,
                format!("checksum mismatch: stored crc32c {stored:08x}, payload has {actual:08x}"),
            ));
        }
        Ok(Record {
            bytes: payload,
            label: self.label(index)?,
            shape: self.shape(index)?,
            encoding: self.layout.encoding,
            shard: self.ordinal,
            index,
        })
    }
}

fn read_shape(shapes: &[u8], i: usize) -> Option<[u32; 3]> {
    let base = i.checked_mul(3)?;
    Some([
        le_u32(shapes, base)?,
        le_u32(shapes, base + 1)?,
        le_u32(shapes, base + 2)?,
    ])
}

/// A dataset: the directory's `index.json` and its validated shards.
///
/// `Send + Sync`: share it between decode threads by reference or `Arc`.
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    index: DatasetIndex,
    shards: Vec<Shard>,
    /// `starts[s]` is the global index of shard `s`'s first record;
    /// `starts[shards.len()]` is the total.
    starts: Vec<u64>,
}

impl Dataset {
    /// Opens the dataset in `dir`: reads and validates `index.json`, then
    /// opens and validates every shard it lists, checking that each shard's
    /// encoding, record count and file size agree with `index.json` and that
    /// every label names one of its classes.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset> {
        let dir = dir.as_ref().to_path_buf();
        let index = DatasetIndex::load(&dir)?;
        let index_path = dir.join(INDEX_FILE);
        let mut shards = Vec::with_capacity(index.shards.len());
        let mut starts = Vec::with_capacity(index.shards.len() + 1);
        let mut start = 0u64;
        for (ordinal, entry) in index.shards.iter().enumerate() {
            let shard = Shard::open(dir.join(&entry.file), ordinal)?;
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
        Ok(Dataset {
            dir,
            index,
            shards,
            starts,
        })
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

    /// The dataset directory.
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

    /// Record `global_index` (counting across shards in order), after
    /// checking its crc32c.
    pub fn record(&self, global_index: u64) -> Result<Record<'_>> {
        let (shard, index) = self.locate(global_index)?;
        self.shards[shard].record(index)
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

//! What `metaug inspect` reports: a [`Summary`] of a dataset, and a
//! [`VerifyReport`] from checking every record.

use std::fmt;

use rayon::prelude::*;

use super::dataset::Dataset;
use super::format::Encoding;
use super::reader::Record;
use crate::{Error, Result};

/// Counts and sizes of a dataset, computed from its shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The record encoding.
    pub encoding: Encoding,
    /// Total number of records.
    pub records: u64,
    /// Each class name with its number of records, in label order.
    pub classes: Vec<(String, u64)>,
    /// The shards, in order.
    pub shards: Vec<ShardSummary>,
    /// Sum of the shard file sizes.
    pub file_bytes: u64,
    /// Sum of the record payload sizes.
    pub payload_bytes: u64,
    /// Smallest `[height, width]` (each taken separately); `None` when empty.
    pub min_size: Option<[u32; 2]>,
    /// Largest `[height, width]` (each taken separately); `None` when empty.
    pub max_size: Option<[u32; 2]>,
    /// The distinct channel counts, sorted.
    pub channels: Vec<u32>,
}

/// One shard of a [`Summary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSummary {
    /// File name in the dataset directory.
    pub file: String,
    /// Number of records.
    pub records: u64,
    /// Size of the file.
    pub file_bytes: u64,
    /// Sum of the record payload sizes.
    pub payload_bytes: u64,
}

/// The outcome of [`Dataset::verify`].
#[derive(Debug)]
pub struct VerifyReport {
    /// Number of records checked.
    pub checked: u64,
    /// One error per bad record, in record order; each names the shard
    /// file and the record's index in it.
    pub bad: Vec<Error>,
}

impl VerifyReport {
    /// Whether every record passed.
    pub fn ok(&self) -> bool {
        self.bad.is_empty()
    }
}

impl Dataset {
    /// Counts records per class and per shard and the range of image sizes,
    /// from the labels and shapes (payloads are not read).
    pub fn summary(&self) -> Summary {
        let mut counts = vec![0u64; self.classes().len()];
        let mut min = [u32::MAX; 2];
        let mut max = [0u32; 2];
        let mut channels = Vec::new();
        let mut shards = Vec::with_capacity(self.shards().len());
        for (shard, entry) in self.shards().iter().zip(&self.index().shards) {
            for i in 0..shard.len() {
                // Labels and shapes were validated at open, so these hold.
                if let Ok(label) = shard.label(i) {
                    if let Some(c) = usize::try_from(label).ok().and_then(|l| counts.get_mut(l)) {
                        *c += 1;
                    }
                }
                if let Ok([h, w, c]) = shard.shape(i) {
                    min = [min[0].min(h), min[1].min(w)];
                    max = [max[0].max(h), max[1].max(w)];
                    if !channels.contains(&c) {
                        channels.push(c);
                    }
                }
            }
            shards.push(ShardSummary {
                file: entry.file.clone(),
                records: shard.len(),
                file_bytes: shard.file_bytes(),
                payload_bytes: shard.payload_bytes(),
            });
        }
        channels.sort_unstable();
        let empty = self.is_empty();
        Summary {
            encoding: self.encoding(),
            records: self.len(),
            classes: self.classes().iter().cloned().zip(counts).collect(),
            file_bytes: shards.iter().map(|s| s.file_bytes).sum(),
            payload_bytes: shards.iter().map(|s| s.payload_bytes).sum(),
            shards,
            min_size: (!empty).then_some(min),
            max_size: (!empty).then_some(max),
            channels,
        }
    }

    /// Reads every record (checking its crc32c) and passes it to
    /// `decode_check`, in parallel. Every failure is collected, not only the
    /// first; an error from `decode_check` that does not already name a
    /// record is wrapped into [`Error::Record`] with the shard file and index.
    pub fn verify<F>(&self, decode_check: F) -> VerifyReport
    where
        F: Fn(&Record<'_>) -> Result<()> + Sync,
    {
        let check = |buf: &mut Vec<u8>, g: u64| -> Option<Error> {
            let record = match self.read_record(g, buf) {
                Ok(r) => r,
                Err(e) => return Some(e),
            };
            match decode_check(&record) {
                Ok(()) => None,
                Err(e @ Error::Record { .. }) => Some(e),
                Err(e) => Some(Error::record(
                    self.shard_path(record.shard),
                    record.index,
                    e.to_string(),
                )),
            }
        };
        // Small datasets are not worth waking the thread pool for.
        // One payload buffer per worker (used in pread mode only).
        let bad: Vec<Error> = if self.len() < 1024 {
            let mut buf = Vec::new();
            (0..self.len()).filter_map(|g| check(&mut buf, g)).collect()
        } else {
            (0..self.len())
                .into_par_iter()
                .map_init(Vec::new, |buf, g| check(buf, g))
                .flatten()
                .collect()
        };
        VerifyReport {
            checked: self.len(),
            bad,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "records:  {}", self.records)?;
        writeln!(f, "encoding: {}", self.encoding)?;
        match (self.min_size, self.max_size) {
            (Some([h0, w0]), Some([h1, w1])) => {
                let chans: Vec<String> = self.channels.iter().map(u32::to_string).collect();
                writeln!(
                    f,
                    "sizes:    height {h0}..={h1}, width {w0}..={w1}, channels {}",
                    chans.join(",")
                )?;
            }
            _ => writeln!(f, "sizes:    (no records)")?,
        }
        writeln!(
            f,
            "bytes:    {} in files, {} of payload",
            self.file_bytes, self.payload_bytes
        )?;
        writeln!(f, "classes:  {}", self.classes.len())?;
        for (label, (name, count)) in self.classes.iter().enumerate() {
            writeln!(f, "  {label:>4}  {count:>9}  {name}")?;
        }
        writeln!(f, "shards:   {}", self.shards.len())?;
        for s in &self.shards {
            writeln!(
                f,
                "  {}  {:>9} records  {:>12} bytes",
                s.file, s.records, s.file_bytes
            )?;
        }
        Ok(())
    }
}

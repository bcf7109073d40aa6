//! [`ReadMode`]: how a shard's bytes are read (memory map or positioned
//! reads), with its command-line name.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// How a dataset's shard files are read. Chosen when the dataset is opened
/// ([`Dataset::open_with`](crate::shard::Dataset::open_with)) and kept for its lifetime.
///
/// | | [`Mmap`](ReadMode::Mmap) (default) | [`Pread`](ReadMode::Pread) |
/// | --- | --- | --- |
/// | payload | borrowed from the map, no copy | one copy into a caller's buffer |
/// | file truncated underneath | **SIGBUS: the process dies** | error naming the shard and record |
/// | file replaced by rename | old file keeps being read | old file keeps being read |
/// | open files | none after open | one per shard |
/// | use on | local disks, tmpfs | NFS, Lustre, GPFS, anything shared |
///
/// Both modes read and validate the header and the per-record tables
/// (offsets, labels, shapes, checksums) at open, check the file's size
/// against `index.json`, and check each payload's crc32c when it is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// Memory-map each shard; records borrow from the map (zero copy,
    /// fastest). Relies on shards never being truncated or rewritten in
    /// place while open: touching a page past the end of a file that shrank
    /// raises SIGBUS, which kills the process.
    #[default]
    Mmap,
    /// Read each record with a positioned read (`pread(2)`) into a reusable
    /// caller buffer. A file that shrank gives a short read, reported as an
    /// error naming the shard and record; nothing is mapped.
    Pread,
}

impl ReadMode {
    /// The name used on the command line: `mmap` or `pread`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadMode::Mmap => "mmap",
            ReadMode::Pread => "pread",
        }
    }
}

impl fmt::Display for ReadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReadMode {
    type Err = Error;

    /// Parses `mmap` or `pread`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mmap" => Ok(ReadMode::Mmap),
            "pread" => Ok(ReadMode::Pread),
            _ => Err(Error::invalid(
                "read mode",
                format!("{s:?} is not one of mmap, pread"),
            )),
        }
    }
}

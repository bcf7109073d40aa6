//! Reading shards: a validated [`Shard`] in either [`ReadMode`], from a
//! local file or (feature `s3`) an object store. Each record's crc32c is
//! checked when it is handed out.

mod check;
mod mode;
mod open;
mod records;

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::format::Encoding;
use super::header::{le_u32, Layout};

pub use mode::ReadMode;
pub use records::Record;

/// Where a shard's bytes come from.
enum Source {
    /// The whole file, mapped; the tables are read from the map.
    Mmap(Mmap),
    /// The open file, and the four per-record tables read into memory.
    Pread { file: File, tables: Vec<u8> },
    /// An object in an object store, read through the dataset's block
    /// cache, and the four tables read into memory at open.
    #[cfg(feature = "s3")]
    Remote {
        object: crate::remote::RemoteObject,
        tables: Vec<u8>,
    },
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Mmap(map) => write!(f, "Mmap({} bytes)", map.len()),
            Source::Pread { tables, .. } => write!(f, "Pread({} table bytes)", tables.len()),
            #[cfg(feature = "s3")]
            Source::Remote { object, tables } => {
                write!(f, "Remote({object:?}, {} table bytes)", tables.len())
            }
        }
    }
}

/// Where the per-record tables lie in [`Shard::tables`].
#[derive(Clone, Debug)]
struct Tables {
    offsets: Range<usize>,
    labels: Range<usize>,
    shapes: Range<usize>,
    crcs: Range<usize>,
}

/// One validated shard file, read in either [`ReadMode`].
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    ordinal: usize,
    file_len: u64,
    source: Source,
    /// Where each tensor lies in the file.
    layout: Layout,
    /// Where each table lies in [`Shard::tables`]'s bytes.
    tables: Tables,
}

impl Shard {
    /// The bytes the [`Tables`] ranges point into: the map, or the tables
    /// read at open.
    fn table_bytes(&self) -> &[u8] {
        match &self.source {
            Source::Mmap(map) => map,
            Source::Pread { tables, .. } => tables,
            #[cfg(feature = "s3")]
            Source::Remote { tables, .. } => tables,
        }
    }

    fn offsets(&self) -> &[u8] {
        &self.table_bytes()[self.tables.offsets.clone()]
    }

    fn labels(&self) -> &[u8] {
        &self.table_bytes()[self.tables.labels.clone()]
    }

    fn shapes(&self) -> &[u8] {
        &self.table_bytes()[self.tables.shapes.clone()]
    }

    fn crcs(&self) -> &[u8] {
        &self.table_bytes()[self.tables.crcs.clone()]
    }

    /// The shard's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How this shard is read. Object-store shards read as
    /// [`ReadMode::Pread`]: each record is copied into the caller's buffer.
    pub fn read_mode(&self) -> ReadMode {
        match self.source {
            Source::Mmap(_) => ReadMode::Mmap,
            Source::Pread { .. } => ReadMode::Pread,
            #[cfg(feature = "s3")]
            Source::Remote { .. } => ReadMode::Pread,
        }
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

    /// Size of the file in bytes, when it was opened.
    pub fn file_bytes(&self) -> u64 {
        self.file_len
    }

    /// Sum of the record payload sizes in bytes.
    pub fn payload_bytes(&self) -> u64 {
        self.layout.bytes.len() as u64
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

//! Opening a shard: the file, then the header and the per-record tables,
//! mapped ([`ReadMode::Mmap`]) or read into memory ([`ReadMode::Pread`], an
//! object store), and validated.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::Mmap;

use super::{ReadMode, Shard, Source, Tables};
use crate::shard::header::{self, Layout};
use crate::{Error, Result};

#[cfg(doc)]
use super::Record;

/// Opens `path` for reading, as a regular file, and returns it with its length.
fn open_file(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::format(path, "missing shard file")
        } else {
            Error::io(path, e)
        }
    })?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::format(
            path,
            "not a regular file (a shard must be a plain file)",
        ));
    }
    Ok((file, meta.len()))
}

/// `file[at..at + buf.len()]` into `buf`; a short read (the file ends
/// first) is `UnexpectedEof`.
pub(super) fn read_at(file: &File, buf: &mut [u8], at: usize) -> std::io::Result<()> {
    file.read_exact_at(buf, at as u64)
}

impl Shard {
    /// Opens and validates the shard at `path` in [`ReadMode::Mmap`];
    /// `ordinal` is its index in its dataset (reported in each
    /// [`Record::shard`]). See [`Shard::open_with`].
    pub fn open(path: impl AsRef<Path>, ordinal: usize) -> Result<Shard> {
        Shard::open_with(path, ordinal, ReadMode::Mmap)
    }

    /// Opens and validates the shard at `path`, to be read in `mode`.
    ///
    /// Validates the whole header (see the module docs of [`crate::shard`]),
    /// the checksums of the `offsets`, `labels`, `shapes` and `crc32c`
    /// tensors, and every record's offsets and shape. Payload checksums are
    /// checked per record when it is read. In [`ReadMode::Pread`] the header
    /// and the four tables are read into memory (they lie inside the file,
    /// so this is bounded by its size) and the file stays open.
    pub fn open_with(path: impl AsRef<Path>, ordinal: usize, mode: ReadMode) -> Result<Shard> {
        let path = path.as_ref();
        let (file, len) = open_file(path)?;
        let (source, layout, tables) = match mode {
            ReadMode::Mmap => {
                if len < 8 {
                    // Also avoids mapping an empty file, which mmap(2) refuses.
                    header::data_start(path, &[], len)?;
                }
                // SAFETY: the map is read-only and we rely on the dataset
                // contract that shards are immutable once written (written to
                // a temporary name, fsynced and renamed; never modified in
                // place). The file's length was read above and is checked
                // against the map below; every later access goes through
                // bounds-checked slices of `map` whose ranges were validated
                // against that length. If another process truncated the file
                // despite the contract, a read past its new end raises SIGBUS
                // (this is what ReadMode::Pread exists for); bytes rewritten
                // in place are still caught by the checksums.
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
                let tables = Tables {
                    offsets: layout.offsets.clone(),
                    labels: layout.labels.clone(),
                    shapes: layout.shapes.clone(),
                    crcs: layout.crcs.clone(),
                };
                (Source::Mmap(map), layout, tables)
            }
            ReadMode::Pread => {
                let (tables, data) = read_tables(path, len, |buf, at, what| {
                    read_at(&file, buf, at).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            Error::format(
                                path,
                                format!(
                                    "truncated while opening: the file ended inside the {what}"
                                ),
                            )
                        } else {
                            Error::io(path, e)
                        }
                    })
                })?;
                let (layout, tables) = tables;
                (Source::Pread { file, tables: data }, layout, tables)
            }
        };
        let shard = Shard {
            path: path.to_path_buf(),
            ordinal,
            file_len: len,
            source,
            layout,
            tables,
        };
        shard.check_records()?;
        Ok(shard)
    }

    /// Opens and validates a shard in an object store, as
    /// [`ReadMode::Pread`] does a file: the header and the four tables are
    /// read (through the dataset's block cache) and kept in memory.
    #[cfg(feature = "s3")]
    pub(crate) fn open_remote(
        object: crate::remote::RemoteObject,
        ordinal: usize,
    ) -> Result<Shard> {
        let path = object.url();
        let len = object.len();
        let ((layout, tables), data) = read_tables(&path, len, |buf, at, what| {
            object
                .read_at(buf, at as u64)
                .map_err(|e| Error::format(&path, format!("reading the {what}: {e}")))
        })?;
        let shard = Shard {
            path,
            ordinal,
            file_len: len,
            source: Source::Remote {
                object,
                tables: data,
            },
            layout,
            tables,
        };
        shard.check_records()?;
        Ok(shard)
    }
}

/// Reads the header and the four per-record tables of a shard of `len`
/// bytes with `read(buf, offset, what)`, into one buffer, and validates
/// them. Every read lies inside the `len` bytes (the header's length is
/// bounded by [`MAX_HEADER_BYTES`](crate::shard::MAX_HEADER_BYTES) and by `len`),
/// so nothing here allocates more than the shard's size.
fn read_tables(
    path: &Path,
    len: u64,
    mut read: impl FnMut(&mut [u8], usize, &str) -> Result<()>,
) -> Result<((Layout, Tables), Vec<u8>)> {
    let mut prefix = [0u8; 8];
    if len >= 8 {
        read(&mut prefix, 0, "length prefix")?;
    }
    let data_start = header::data_start(path, &prefix, len)?;
    let mut head = vec![0u8; data_start];
    read(&mut head, 0, "header")?;
    let header = header::parse_header(path, &head, len)?;
    let layout = header.layout.clone();
    // The tables lie inside the file (checked by parse_header), so
    // together they are at most its length.
    let spans = [
        &layout.offsets,
        &layout.labels,
        &layout.shapes,
        &layout.crcs,
    ];
    let total: usize = spans.iter().map(|r| r.len()).sum();
    let mut data = vec![0u8; total];
    let mut ranges = Vec::with_capacity(4);
    let mut at = 0;
    for span in spans {
        let range = at..at + span.len();
        read(&mut data[range.clone()], span.start, "record tables")?;
        ranges.push(range);
        at += span.len();
    }
    let tables = Tables {
        offsets: ranges[0].clone(),
        labels: ranges[1].clone(),
        shapes: ranges[2].clone(),
        crcs: ranges[3].clone(),
    };
    header::check_tables(
        path,
        &header,
        [
            &tables.offsets,
            &tables.labels,
            &tables.shapes,
            &tables.crcs,
        ]
        .map(|r| &data[r.clone()]),
    )?;
    Ok(((layout, tables), data))
}

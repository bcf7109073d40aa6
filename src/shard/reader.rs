//! Reading shards: a validated [`Shard`] in either [`ReadMode`], from a
//! local file or (feature `s3`) an object store. Each record's crc32c is
//! checked when it is handed out.

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use memmap2::Mmap;

use super::format::Encoding;
use super::header::{self, le_i64, le_u32, le_u64, Layout};
use crate::{Error, Result};

/// How a dataset's shard files are read. Chosen when the dataset is opened
/// ([`Dataset::open_with`]) and kept for its lifetime.
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

/// One record of a dataset: its payload, borrowed from the shard's memory
/// map ([`ReadMode::Mmap`]) or from the caller's buffer ([`ReadMode::Pread`]),
/// and its stored fields.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// The payload (JPEG, PNG or raw pixels).
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
fn read_at(file: &File, buf: &mut [u8], at: usize) -> std::io::Result<()> {
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

    /// Checks offsets (start at 0, never decrease, end at the payload total)
    /// and shapes (no zero dimension; raw records hold exactly h*w*c bytes).
    fn check_records(&self) -> Result<()> {
        let total = self.layout.bytes.len() as u64;
        let offsets = self.offsets();
        let shapes = self.shapes();
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

    /// `index` as a usize below the record count.
    fn checked_index(&self, index: u64) -> Result<usize> {
        usize::try_from(index)
            .ok()
            .filter(|_| index < self.layout.count)
            .ok_or_else(|| self.out_of_range(index))
    }

    /// The label of record `index`, without reading its payload.
    pub fn label(&self, index: u64) -> Result<i64> {
        let i = self.checked_index(index)?;
        le_i64(self.labels(), i).ok_or_else(|| self.out_of_range(index))
    }

    /// The stored shape `[height, width, channels]` of record `index`.
    pub fn shape(&self, index: u64) -> Result<[u32; 3]> {
        let i = self.checked_index(index)?;
        read_shape(self.shapes(), i).ok_or_else(|| self.out_of_range(index))
    }

    /// Where the payload of record `i` lies in the file.
    fn payload_span(&self, i: usize, index: u64) -> Result<Range<usize>> {
        let offsets = self.offsets();
        let bytes = &self.layout.bytes;
        // Validated at open; checked again so that no index can panic.
        match (le_u64(offsets, i), le_u64(offsets, i + 1)) {
            (Some(start), Some(end)) if start <= end && end <= bytes.len() as u64 => {
                // end <= bytes.len(), a usize, so both fit.
                Some(bytes.start + start as usize..bytes.start + end as usize)
            }
            _ => None,
        }
        .ok_or_else(|| Error::record(&self.path, index, "offsets out of range"))
    }

    /// Record `index` of this shard, borrowed from the map, after checking
    /// its payload against its stored crc32c. Only in [`ReadMode::Mmap`]:
    /// in [`ReadMode::Pread`] this is an error; [`Shard::read_record`] works
    /// in both modes.
    pub fn record(&self, index: u64) -> Result<Record<'_>> {
        match &self.source {
            Source::Mmap(map) => {
                let i = self.checked_index(index)?;
                let span = self.payload_span(i, index)?;
                // The span lies inside the file, which is the map.
                self.finish(map.get(span).unwrap_or_default(), i, index)
            }
            _ => Err(self.needs_mmap()),
        }
    }

    fn needs_mmap(&self) -> Error {
        Error::invalid(
            "read mode",
            format!(
                "{} is read in pread mode (or from an object store): records cannot be \
                 borrowed from a map; use read_record",
                self.path.display()
            ),
        )
    }

    /// Record `index` of this shard in either [`ReadMode`], after checking
    /// its payload against its stored crc32c. In [`ReadMode::Mmap`] the
    /// payload is borrowed from the map and `buf` is not touched; in
    /// [`ReadMode::Pread`] it is read into `buf` (resized to the payload's
    /// length; reuse one buffer per thread to avoid allocations).
    ///
    /// In pread mode a file that shrank since it was opened gives an
    /// [`Error::Record`] naming the shard and record ("short read"), and any
    /// other read error is reported the same way.
    pub fn read_record<'a>(&'a self, index: u64, buf: &'a mut Vec<u8>) -> Result<Record<'a>> {
        let file = match &self.source {
            Source::Mmap(_) => return self.record(index),
            Source::Pread { file, .. } => file,
            #[cfg(feature = "s3")]
            Source::Remote { object, .. } => {
                let i = self.checked_index(index)?;
                let span = self.payload_span(i, index)?;
                buf.resize(span.len(), 0);
                object
                    .read_at(buf, span.start as u64)
                    .map_err(|e| Error::record(&self.path, index, e))?;
                return self.finish(buf, i, index);
            }
        };
        let i = self.checked_index(index)?;
        let span = self.payload_span(i, index)?;
        // Resizing only writes the bytes past the old length; the read
        // overwrites all of them.
        buf.resize(span.len(), 0);
        if let Err(e) = read_at(file, buf, span.start) {
            let what = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                let now = file
                    .metadata()
                    .map_or_else(|_| "unknown".to_string(), |m| m.len().to_string());
                format!(
                    "short read: the payload is file bytes {}..{} but the file is now {now} bytes \
                     ({} when opened); was the shard truncated or rewritten?",
                    span.start, span.end, self.file_len
                )
            } else {
                format!("read failed: {e}")
            };
            return Err(Error::record(&self.path, index, what));
        }
        self.finish(buf, i, index)
    }

    /// Checks `payload` (record `i`) against its crc32c and builds the record.
    fn finish<'a>(&'a self, payload: &'a [u8], i: usize, index: u64) -> Result<Record<'a>> {
        let stored = le_u32(self.crcs(), i)
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

/// Reads the header and the four per-record tables of a shard of `len`
/// bytes with `read(buf, offset, what)`, into one buffer, and validates
/// them. Every read lies inside the `len` bytes (the header's length is
/// bounded by [`MAX_HEADER_BYTES`](super::MAX_HEADER_BYTES) and by `len`),
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

fn read_shape(shapes: &[u8], i: usize) -> Option<[u32; 3]> {
    let base = i.checked_mul(3)?;
    Some([
        le_u32(shapes, base)?,
        le_u32(shapes, base + 1)?,
        le_u32(shapes, base + 2)?,
    ])
}

//! Record access: [`Record`], index checks, where a payload lies, and the
//! payload borrowed from the map or read into a buffer, checked against its
//! crc32c.

use std::ops::Range;

use super::open::read_at;
use super::{read_shape, Shard, Source};
use crate::shard::format::Encoding;
use crate::shard::header::{le_i64, le_u32, le_u64};
use crate::{Error, Result};

#[cfg(doc)]
use super::ReadMode;

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

impl Shard {
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

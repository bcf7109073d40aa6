//! Validation of a shard's safetensors header, trusting none of it.
//!
//! Every number read from the file is checked against the file's length
//! before it is used; nothing is allocated from a number the file states
//! (the JSON text itself is bounded by [`MAX_HEADER_BYTES`]).
//!
//! The header is validated from its own bytes ([`parse_header`]), so that a
//! reader without a memory map needs only the first `8 + N` bytes of the
//! file; the four per-record tables are then checked against the metadata
//! checksums by [`check_tables`].

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::format::{
    crc_key, Encoding, MAX_HEADER_BYTES, M_COUNT, M_ENCODING, M_FORMAT, M_VERSION, SHARD_FORMAT,
    SHARD_VERSION, T_BYTES, T_CRC32C, T_LABELS, T_OFFSETS, T_SHAPES,
};
use crate::{Error, Result};

/// Where each tensor of a validated shard lies in the file, and its metadata.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub encoding: Encoding,
    pub count: u64,
    pub bytes: Range<usize>,
    pub offsets: Range<usize>,
    pub labels: Range<usize>,
    pub shapes: Range<usize>,
    pub crcs: Range<usize>,
}

/// The tensors of a v1 shard: name, dtype, element size, rank.
const TENSORS: [(&str, &str, u64); 5] = [
    (T_BYTES, "U8", 1),
    (T_OFFSETS, "U64", 8),
    (T_LABELS, "I64", 8),
    (T_SHAPES, "U32", 4),
    (T_CRC32C, "U32", 4),
];

/// A JSON object whose keys must be unique (serde_json keeps the last of
/// duplicate keys silently; a shard with two `labels` entries is corrupt).
struct UniqueObject(BTreeMap<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(UniqueObject(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// One tensor entry of the header.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Reads a little-endian u64 at element `i` of `data` (no alignment needed).
pub(crate) fn le_u64(data: &[u8], i: usize) -> Option<u64> {
    let start = i.checked_mul(8)?;
    let b = data.get(start..start.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Reads a little-endian u32 at element `i` of `data` (no alignment needed).
pub(crate) fn le_u32(data: &[u8], i: usize) -> Option<u32> {
    let start = i.checked_mul(4)?;
    let b = data.get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// Reads a little-endian i64 at element `i` of `data` (no alignment needed).
pub(crate) fn le_i64(data: &[u8], i: usize) -> Option<i64> {
    le_u64(data, i).map(|x| x as i64)
}

/// The checksums the metadata states for the four per-record tables, to be
/// checked by [`check_tables`] once the tables are read.
#[derive(Clone, Debug)]
pub(crate) struct Header {
    pub layout: Layout,
    /// Metadata crc32c of `offsets`, `labels`, `shapes`, `crc32c`, in that order.
    table_crcs: [u32; 4],
}

/// Names of the four per-record tables, in the order of [`Header`]'s checksums.
const TABLES: [&str; 4] = [T_OFFSETS, T_LABELS, T_SHAPES, T_CRC32C];

/// Reads the 8-byte length prefix (`prefix` holds the file's first bytes,
/// at most 8 used) and returns where the tensor data starts (`8 + N`),
/// after checking `N` against [`MAX_HEADER_BYTES`] and the file length.
pub(crate) fn data_start(path: &Path, prefix: &[u8], file_len: u64) -> Result<usize> {
    let bad = |what: String| Error::format(path, what);
    let prefix = prefix.get(..8).filter(|_| file_len >= 8).ok_or_else(|| {
        bad(format!(
            "truncated: the file is {file_len} bytes, too short for the 8-byte header length"
        ))
    })?;
    let header_len = u64::from_le_bytes(prefix.try_into().expect("8 bytes"));
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes"
        )));
    }
    if header_len > file_len - 8 {
        return Err(bad(format!(
            "truncated: the header claims {header_len} bytes but the file holds only {} after the length prefix",
            file_len - 8
        )));
    }
    // header_len <= MAX_HEADER_BYTES, so this fits in usize.
    Ok(8 + header_len as usize)
}

/// Parses and validates the header of the shard at `path` whose first
/// bytes are `head` (the length prefix and the JSON text: exactly
/// [`data_start`] bytes) and whose length is `file_len`, returning where each
/// tensor lies in the file. Checks the JSON, the metadata, every tensor's
/// presence, dtype and shape, and that the data offsets tile the data area
/// exactly up to the end of the file. The tables' checksums are checked
/// afterwards by [`check_tables`], once the tables are at hand.
pub(crate) fn parse_header(path: &Path, head: &[u8], file_len: u64) -> Result<Header> {
    let bad = |what: String| Error::format(path, what);
    let data_start = data_start(path, head, file_len)?;
    if usize::try_from(file_len).is_err() {
        return Err(bad(format!(
            "the file is {file_len} bytes, more than this platform can address"
        )));
    }
    let text = head
        .get(8..data_start)
        .ok_or_else(|| bad("truncated: the header is shorter than its length prefix".into()))?;
    let text = std::str::from_utf8(text).map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
    let UniqueObject(mut entries) = serde_json::from_str(text)
        .map_err(|e| bad(format!("header is not a valid JSON object: {e}")))?;

    let metadata = entries
        .remove("__metadata__")
        .ok_or_else(|| bad("header has no __metadata__".into()))?;
    let metadata: BTreeMap<String, String> = serde_json::from_value(metadata)
        .map_err(|e| bad(format!("__metadata__ is not a map of strings: {e}")))?;
    let meta = |key: &str| {
        metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| bad(format!("metadata has no {key:?}")))
    };
    let format = meta(M_FORMAT)?;
    if format != SHARD_FORMAT {
        return Err(bad(format!(
            "metadata format is {format:?}, expected {SHARD_FORMAT:?}"
        )));
    }
    let version = meta(M_VERSION)?;
    if version != SHARD_VERSION.to_string() {
        return Err(bad(format!(
            "unsupported shard version {version:?} (this build reads version {SHARD_VERSION})"
        )));
    }
    let encoding: Encoding = meta(M_ENCODING)?
        .parse()
        .map_err(|e| bad(format!("metadata encoding: {e}")))?;
    let count_text = meta(M_COUNT)?;
    let meta_count: u64 = count_text
        .parse()
        .map_err(|_| bad(format!("metadata count {count_text:?} is not a number")))?;

    // Every tensor present, nothing else, right dtype.
    for name in entries.keys() {
        if !TENSORS.iter().any(|t| t.0 == name) {
            return Err(bad(format!("unexpected tensor {name:?}")));
        }
    }
    let mut parsed: BTreeMap<&str, TensorEntry> = BTreeMap::new();
    for (name, dtype, _) in TENSORS {
        let value = entries
            .remove(name)
            .ok_or_else(|| bad(format!("missing tensor {name:?}")))?;
        let entry: TensorEntry = serde_json::from_value(value)
            .map_err(|e| bad(format!("tensor {name:?}: malformed entry: {e}")))?;
        if entry.dtype != dtype {
            return Err(bad(format!(
                "tensor {name:?} has dtype {}, expected {dtype}",
                entry.dtype
            )));
        }
        parsed.insert(name, entry);
    }

    // Shapes: ranks first, then counts agree between tensors and metadata.
    let rank = |name: &str, want: usize| -> Result<&[u64]> {
        let shape = &parsed[name].shape;
        if shape.len() != want {
            return Err(bad(format!(
                "tensor {name:?} has shape {shape:?}, expected rank {want}"
            )));
        }
        Ok(shape)
    };
    rank(T_BYTES, 1)?;
    let n = rank(T_LABELS, 1)?[0];
    let n_offsets = rank(T_OFFSETS, 1)?[0];
    let shapes_shape = rank(T_SHAPES, 2)?;
    let n_crc = rank(T_CRC32C, 1)?[0];
    if n_offsets != n.saturating_add(1) {
        return Err(bad(format!(
            "count mismatch: tensor \"offsets\" has {n_offsets} entries, expected labels count + 1 = {}",
            n as u128 + 1
        )));
    }
    if shapes_shape[0] != n || shapes_shape[1] != 3 {
        return Err(bad(format!(
            "count mismatch: tensor \"shapes\" has shape {shapes_shape:?}, expected [{n}, 3] (labels count)"
        )));
    }
    if n_crc != n {
        return Err(bad(format!(
            "count mismatch: tensor \"crc32c\" has {n_crc} entries but \"labels\" has {n}"
        )));
    }
    if meta_count != n {
        return Err(bad(format!(
            "count mismatch: metadata count is {meta_count} but the tensors hold {n} records"
        )));
    }

    // Data offsets: each tensor's byte length matches its shape, and together
    // they tile [0, data_len) with no gap, no overlap, nothing after.
    let data_len = file_len - data_start as u64;
    let mut spans: Vec<(u64, u64, &str)> = Vec::with_capacity(TENSORS.len());
    for (name, _, size) in TENSORS {
        let entry = &parsed[name];
        let [begin, end] = entry.data_offsets;
        if begin > end {
            return Err(bad(format!(
                "tensor {name:?} data offsets [{begin}, {end}] are reversed"
            )));
        }
        if end > data_len {
            return Err(bad(format!(
                "truncated: tensor {name:?} ends at data byte {end} but the file holds only {data_len} bytes of data"
            )));
        }
        let elements = entry
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let want = elements.and_then(|e| e.checked_mul(size));
        if want != Some(end - begin) {
            return Err(bad(format!(
                "tensor {name:?} spans {} bytes but its shape {:?} needs {}",
                end - begin,
                entry.shape,
                want.map_or("more than 2^64".to_string(), |w| w.to_string())
            )));
        }
        spans.push((begin, end, name));
    }
    spans.sort_unstable();
    let mut at = 0u64;
    for &(begin, end, name) in &spans {
        if begin != at {
            return Err(bad(format!(
                "tensor {name:?} starts at data byte {begin}, expected {at} (gap or overlap)"
            )));
        }
        at = end;
    }
    if at != data_len {
        return Err(bad(format!(
            "tensor data ends at byte {at} but the data area is {data_len} bytes (trailing bytes)"
        )));
    }

    // All spans are inside the file, whose length fits in usize (checked
    // above), so these conversions and additions hold.
    let range = |name: &str| {
        let [b, e] = parsed[name].data_offsets;
        data_start + b as usize..data_start + e as usize
    };
    let layout = Layout {
        encoding,
        count: n,
        bytes: range(T_BYTES),
        offsets: range(T_OFFSETS),
        labels: range(T_LABELS),
        shapes: range(T_SHAPES),
        crcs: range(T_CRC32C),
    };

    let mut table_crcs = [0u32; 4];
    for (crc, name) in table_crcs.iter_mut().zip(TABLES) {
        let key = crc_key(name);
        let text = meta(&key)?;
        if text.len() != 8 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad(format!(
                "metadata {key:?} = {text:?} is not 8 lowercase hex digits"
            )));
        }
        *crc = u32::from_str_radix(text, 16).expect("8 hex digits");
    }
    Ok(Header { layout, table_crcs })
}

/// Checks the `offsets`, `labels`, `shapes` and `crc32c` tables (their bytes,
/// in that order) against the checksums in the metadata.
pub(crate) fn check_tables(path: &Path, header: &Header, tables: [&[u8]; 4]) -> Result<()> {
    for ((name, data), want) in TABLES.into_iter().zip(tables).zip(header.table_crcs) {
        let actual = crc32c::crc32c(data);
        if actual != want {
            return Err(Error::format(
                path,
                format!(
                    "checksum mismatch in tensor {name:?}: metadata says {want:08x}, data has {actual:08x}"
                ),
            ));
        }
    }
    Ok(())
}

/// Parses and validates a whole shard held in memory (`file` is every byte
/// of it): [`parse_header`], then [`check_tables`].
pub(crate) fn parse(path: &Path, file: &[u8]) -> Result<Layout> {
    let header = parse_header(path, file, file.len() as u64)?;
    let l = &header.layout;
    let tables = [&l.offsets, &l.labels, &l.shapes, &l.crcs].map(|r| &file[r.clone()]);
    check_tables(path, &header, tables)?;
    Ok(header.layout)
}

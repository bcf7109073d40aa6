//! Names and constants of shard format v1, and the encoding of its header.
//!
//! A shard is a safetensors file: an 8-byte little-endian header length `N`,
//! `N` bytes of JSON (padded with spaces to a multiple of 8), then the tensor
//! data. Our writer lays the data out as `offsets`, `labels`, `shapes`,
//! `crc32c`, `bytes` (descending alignment), so every array starts 8-byte
//! aligned in the file; the reader does not rely on that.
//!
//! The `__metadata__` map holds (all values are strings, as safetensors wants):
//!
//! | key | value |
//! | --- | --- |
//! | `format` | `metaug-shard` |
//! | `version` | `1` |
//! | `encoding` | `raw`, `png` or `jpeg` |
//! | `count` | number of records `n`, decimal |
//! | `crc32c_offsets` | crc32c of the `offsets` tensor's bytes, 8 lowercase hex digits |
//! | `crc32c_labels` | same for `labels` |
//! | `crc32c_shapes` | same for `shapes` |
//! | `crc32c_crc32c` | same for the `crc32c` tensor (the per-record checksums) |
//!
//! Each record's payload is checked against its entry of the `crc32c` tensor
//! when it is read, so no byte of a shard goes unchecked.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Value of the `format` metadata key of a shard.
pub const SHARD_FORMAT: &str = "metaug-shard";
/// Version of the shard format this crate reads and writes.
pub const SHARD_VERSION: u32 = 1;
/// Extension of shard files.
pub const SHARD_EXTENSION: &str = "safetensors";

/// Largest JSON header a reader accepts, in bytes. A v1 header is well
/// under a kilobyte; the limit keeps a lying length from costing memory.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Tensor names of a v1 shard.
pub(crate) const T_BYTES: &str = "bytes";
pub(crate) const T_OFFSETS: &str = "offsets";
pub(crate) const T_LABELS: &str = "labels";
pub(crate) const T_SHAPES: &str = "shapes";
pub(crate) const T_CRC32C: &str = "crc32c";

/// Metadata keys of a v1 shard.
pub(crate) const M_FORMAT: &str = "format";
pub(crate) const M_VERSION: &str = "version";
pub(crate) const M_ENCODING: &str = "encoding";
pub(crate) const M_COUNT: &str = "count";

/// Metadata key holding the crc32c of tensor `name`.
pub(crate) fn crc_key(name: &str) -> String {
    format!("crc32c_{name}")
}

/// How the records of a dataset are stored. A dataset has one encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Raw pixels, `height * width * channels` bytes, row-major HWC.
    Raw,
    /// A PNG file, byte for byte.
    Png,
    /// A JPEG file, byte for byte.
    Jpeg,
}

impl Encoding {
    /// The name used in metadata, `index.json` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Png => "png",
            Encoding::Jpeg => "jpeg",
        }
    }

    /// Detects PNG or JPEG from the first bytes of a file (its magic number).
    /// Raw pixels have no magic, so this never returns [`Encoding::Raw`].
    pub fn sniff(bytes: &[u8]) -> Option<Encoding> {
        const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
        const JPEG: &[u8] = b"\xff\xd8\xff";
        if bytes.starts_with(PNG) {
            Some(Encoding::Png)
        } else if bytes.starts_with(JPEG) {
            Some(Encoding::Jpeg)
        } else {
            None
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "raw" => Ok(Encoding::Raw),
            "png" => Ok(Encoding::Png),
            "jpeg" => Ok(Encoding::Jpeg),
            _ => Err(Error::invalid(
                "encoding",
                format!("{s:?} is not one of raw, png, jpeg"),
            )),
        }
    }
}

/// The shard file name of shard number `ordinal`: `shard-00000.safetensors`.
pub fn shard_file_name(ordinal: usize) -> String {
    format!("shard-{ordinal:05}.{SHARD_EXTENSION}")
}

/// The per-record arrays of one shard, in memory (what the writer buffers).
#[derive(Default)]
pub(crate) struct ShardArrays {
    /// Payloads back to back.
    pub bytes: Vec<u8>,
    /// `n + 1` offsets into `bytes` (starts with 0).
    pub offsets: Vec<u64>,
    /// One label per record.
    pub labels: Vec<i64>,
    /// One `[height, width, channels]` per record.
    pub shapes: Vec<[u32; 3]>,
    /// One crc32c per record payload.
    pub crcs: Vec<u32>,
}

impl ShardArrays {
    /// An empty shard (offsets = `[0]`).
    pub fn new() -> Self {
        ShardArrays {
            offsets: vec![0],
            ..Default::default()
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Appends one record.
    pub fn push(&mut self, payload: &[u8], label: i64, shape: [u32; 3]) {
        self.bytes.extend_from_slice(payload);
        self.offsets.push(self.bytes.len() as u64);
        self.labels.push(label);
        self.shapes.push(shape);
        self.crcs.push(crc32c::crc32c(payload));
    }

    /// The little-endian bytes of each array, in file order, with names.
    pub fn tensor_bytes(&self) -> [(&'static str, Vec<u8>); 4] {
        let le64 = |v: &[u64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let labels: Vec<u8> = self.labels.iter().flat_map(|x| x.to_le_bytes()).collect();
        let shapes: Vec<u8> = self
            .shapes
            .iter()
            .flat_map(|s| s.iter().flat_map(|x| x.to_le_bytes()))
            .collect();
        let crcs: Vec<u8> = self.crcs.iter().flat_map(|x| x.to_le_bytes()).collect();
        [
            (T_OFFSETS, le64(&self.offsets)),
            (T_LABELS, labels),
            (T_SHAPES, shapes),
            (T_CRC32C, crcs),
        ]
    }
}

/// Builds the safetensors header (length prefix included) for a shard whose
/// small arrays are `small` (in file order, as from
/// [`ShardArrays::tensor_bytes`]) followed by `bytes_len` payload bytes.
/// Keys are sorted and nothing varies between runs, so the same records give
/// the same header bytes.
pub(crate) fn encode_header(
    encoding: Encoding,
    count: u64,
    small: &[(&'static str, Vec<u8>); 4],
    bytes_len: u64,
) -> Vec<u8> {
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    // BTreeMaps serialise with sorted keys whatever serde_json's features.
    let mut metadata: BTreeMap<String, Value> = BTreeMap::new();
    metadata.insert(M_FORMAT.into(), SHARD_FORMAT.into());
    metadata.insert(M_VERSION.into(), SHARD_VERSION.to_string().into());
    metadata.insert(M_ENCODING.into(), encoding.as_str().into());
    metadata.insert(M_COUNT.into(), count.to_string().into());

    let mut header: BTreeMap<String, Value> = BTreeMap::new();
    let mut offset = 0u64;
    for (name, data) in small {
        metadata.insert(
            crc_key(name),
            format!("{:08x}", crc32c::crc32c(data)).into(),
        );
        let (dtype, shape) = match *name {
            T_OFFSETS => ("U64", json!([count + 1])),
            T_LABELS => ("I64", json!([count])),
            T_SHAPES => ("U32", json!([count, 3])),
            _ => ("U32", json!([count])),
        };
        let end = offset + data.len() as u64;
        header.insert(
            (*name).into(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    header.insert(
        T_BYTES.into(),
        json!({"dtype": "U8", "shape": [bytes_len], "data_offsets": [offset, offset + bytes_len]}),
    );
    header.insert("__metadata__".into(), json!(metadata));

    let mut text = serde_json::to_vec(&header).expect("a map of strings and numbers serialises");
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out
}

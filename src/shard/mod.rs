//! The on-disk shard format: safetensors shards and the dataset `index.json`.
//!
//! A dataset is a directory holding `index.json` ([`DatasetIndex`]) and the
//! shard files it lists (`shard-00000.safetensors`, ...). A shard is a plain
//! safetensors file with five tensors (any safetensors reader opens it):
//!
//! | tensor | dtype | shape | content |
//! | --- | --- | --- | --- |
//! | `bytes` | U8 | `[total]` | record payloads back to back |
//! | `offsets` | U64 | `[n + 1]` | record `i` is `bytes[offsets[i]..offsets[i+1]]` |
//! | `labels` | I64 | `[n]` | class labels |
//! | `shapes` | U32 | `[n, 3]` | height, width, channels of each decoded image |
//! | `crc32c` | U32 | `[n]` | crc32c of each payload |
//!
//! and `__metadata__` with `format=metaug-shard`, `version=1`,
//! `encoding=raw|png|jpeg`, `count=n` and the crc32c (8 lowercase hex digits)
//! of the `offsets`, `labels`, `shapes` and `crc32c` tensors under the keys
//! `crc32c_offsets`, `crc32c_labels`, `crc32c_shapes`, `crc32c_crc32c`.
//!
//! [`Dataset::open`] trusts nothing: the header length is bounded by
//! [`MAX_HEADER_BYTES`] and the file, the JSON is parsed and every tensor's
//! presence, dtype, shape and data offsets are checked (the tensors must tile
//! the data area up to the end of the file), counts must agree between
//! tensors, with the metadata and with `index.json`, the metadata checksums
//! are verified, offsets must start at 0, never decrease and end at the
//! payload total, and every label must name a class. Numbers are read with
//! `from_le_bytes`, never by casting possibly unaligned bytes. Each record's
//! payload crc32c is checked when [`Dataset::read_record`] (or
//! [`Dataset::record`]) hands it out.
//!
//! # Read modes: what each one risks
//!
//! The [`ReadMode`] is chosen when the dataset is opened
//! ([`Dataset::open_with`]) and travels with it to the loader, precompute
//! and inspect. Both modes check each shard's size against `index.json` at
//! open, validate the header and tables, and check every payload's crc32c.
//!
//! - **[`ReadMode::Mmap`]** (the default): each shard is memory-mapped and
//!   records are borrowed from the map: zero copies, the fastest path. The
//!   risk: if a shard file is **truncated** (or rewritten in place to a
//!   shorter length) while the dataset is open, the next access to a page
//!   past its new end raises **SIGBUS and the process dies**; no error can
//!   be returned. On a local filesystem a file replaced by rename or deleted
//!   is harmless (the old file stays mapped); on NFS, a file that another
//!   client deletes or replaces can go stale, and a mapped page that must be
//!   fetched again raises SIGBUS too. Use it on local disks, where nothing
//!   else touches the shards.
//! - **[`ReadMode::Pread`]**: the header and the per-record tables are read
//!   into memory at open, and each record is read with one positioned read
//!   (`pread(2)`) into a caller's reusable buffer: **one copy per record**,
//!   and one open file per shard. A file that shrank gives a short read,
//!   reported as [`Error::Record`](crate::Error::Record) naming the shard and
//!   record ("short read"); an I/O error (for example `ESTALE` on NFS) is
//!   reported the same way. No signal, no crash. **Recommended on network and
//!   parallel filesystems (NFS, Lustre, GPFS)**, where another client can
//!   change a file underneath you.
//!
//! [`Dataset::record`] borrows from the map and so works in mmap mode only;
//! [`Dataset::read_record`] works in both and is what the crate's own
//! readers use:
//!
//! ```no_run
//! use metaug::shard::{Dataset, OpenOptions, ReadMode};
//! let options = OpenOptions { read_mode: ReadMode::Pread, ..Default::default() };
//! let dataset = Dataset::open_with("/nfs/fashion-mnist", options)?;
//! let mut buf = Vec::new(); // reused for every record
//! for i in 0..dataset.len() {
//!     let record = dataset.read_record(i, &mut buf)?;
//!     assert_eq!(record.bytes.len(), 784);
//! }
//! # Ok::<(), metaug::Error>(())
//! ```
//!
//! [`DatasetWriter`] writes shards of bounded size atomically (temporary
//! name, fsync, rename, fsync of the directory) and `index.json` last, so a
//! killed run never leaves a dataset that looks complete; the same records
//! always give the same bytes.
//!
//! ```no_run
//! let dataset = metaug::shard::Dataset::open("data/fashion-mnist-train")?;
//! let record = dataset.record(0)?;
//! println!("{} bytes, label {}, shape {:?}", record.bytes.len(), record.label, record.shape);
//! # Ok::<(), metaug::Error>(())
//! ```

mod dataset;
mod format;
mod header;
mod index;
mod reader;
mod summary;
mod writer;

pub use dataset::{Dataset, OpenOptions};
pub use format::{
    shard_file_name, Encoding, MAX_HEADER_BYTES, SHARD_EXTENSION, SHARD_FORMAT, SHARD_VERSION,
};
pub use index::{
    DatasetIndex, ShardEntry, DATASET_FORMAT, DATASET_VERSION, INDEX_FILE, MAX_INDEX_BYTES,
};
pub use reader::{ReadMode, Record, Shard};
pub use summary::{ShardSummary, Summary, VerifyReport};
pub use writer::{DatasetWriter, ShardHook, ShardHookFn, WriterOptions, DEFAULT_SHARD_SIZE};

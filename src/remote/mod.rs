//! Datasets in S3-compatible object stores: `s3://bucket/prefix` wherever a
//! dataset directory is taken ([`Dataset::open`](crate::shard::Dataset::open),
//! the CLI's `DIR` arguments, `pack -o`, `precompute --out`).
//!
//! The store is reached through the `object_store` crate, behind the cargo
//! feature `s3` (off by default). Without it, an `s3://` path is a clear
//! error naming the feature.
//!
//! # Reading
//!
//! At open, `index.json` is read whole (at most
//! [`MAX_INDEX_BYTES`](crate::shard::MAX_INDEX_BYTES)), each shard is `HEAD`ed
//! for its size and ETag, and each shard's header and per-record tables are
//! read by ranged GETs and validated exactly as for a local file. Records
//! then come through a **block cache on local disk**:
//!
//! - a shard is cut into blocks of [`RemoteOptions::block_bytes`]; a record
//!   read fetches the blocks it overlaps (one ranged GET each, one fetch per
//!   block however many threads want it), writes them into the cache
//!   directory (temporary name, then rename) and copies the record out;
//! - the blocks on disk are held under [`RemoteOptions::cache_limit`] by
//!   evicting the least recently used ones, and survive the process: the next
//!   run over the same shard versions starts warm;
//! - memory stays bounded: a fetching thread holds one block, a reading
//!   thread the record it reads (into the caller's buffer, as in
//!   [`ReadMode::Pread`](crate::shard::ReadMode::Pread));
//! - `cache_limit: Some(0)` turns the disk cache off: each record is then one
//!   ranged GET of exactly its bytes.
//!
//! Why blocks rather than whole shards or per-batch GETs: the loader shuffles
//! the whole dataset each epoch, so the first batch touches nearly every
//! shard. Whole-shard caching would download the whole dataset before the
//! first batch, and thrash once the dataset is larger than the cache; bare
//! per-record GETs pay a round trip per record every epoch. Blocks bound both
//! the first-batch latency and the read amplification (at most one block per
//! record when the cache is too small) and, once warm, read at local-disk
//! speed.
//!
//! **Consistency.** Every GET carries `If-Match` with the ETag seen at open.
//! A shard replaced in the store since is an error naming it the first time
//! a byte of it is fetched; bytes already cached belong to the version
//! opened (the cache directory is keyed by ETag), and every record's crc32c
//! is checked as for a local file, so a run never mixes two versions.
//!
//! **Failures.** Transient errors (connection refused or reset, timeouts,
//! 5xx, 429) are retried with exponential backoff for up to
//! [`RemoteOptions::retry_timeout`]; each request has a timeout, so a server
//! that stops answering gives an error, never a hang. Missing credentials, a
//! missing bucket or object, and a short read are errors that say so.
//!
//! # Configuration
//!
//! The standard AWS environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
//! (`AWS_SESSION_TOKEN`), `AWS_REGION`, `AWS_ENDPOINT_URL` for a non-AWS server
//! (an `http://` endpoint is allowed as given), or `AWS_SKIP_SIGNATURE=true`
//! for a public bucket. The cache directory and limit default to
//! `$METAUG_CACHE_DIR` (else `$XDG_CACHE_HOME/metaug`, else
//! `~/.cache/metaug`) and `$METAUG_CACHE_LIMIT` (bytes, with an optional
//! `K`/`M`/`G`/`T` suffix; else 16G).
//!
//! # Writing
//!
//! [`OutputDir`]: a dataset for `s3://` is written into a local staging
//! directory by the ordinary writers, then uploaded: every shard with a
//! multipart upload, `index.json` last, so a reader never sees an index
//! whose shards are not all there. The staging directory is removed after.
//! With [`OutputDir::shard_hook`] (what `pack` does) each shard is
//! uploaded, and its local copy deleted, as soon as the writer finishes it;
//! the writer waits when two shards are pending, so the staging directory
//! holds at most about three shards, not the whole dataset.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

#[cfg(feature = "s3")]
mod cache;
#[cfg(feature = "s3")]
mod dataset;
#[cfg(feature = "s3")]
mod store;
#[cfg(feature = "s3")]
mod upload;

#[cfg(feature = "s3")]
pub(crate) use dataset::{open_dataset, RemoteObject};

/// The URL scheme of object-store datasets.
pub const S3_SCHEME: &str = "s3://";

/// Default size of a cache block: 4 MiB.
pub const DEFAULT_BLOCK_BYTES: u64 = 4 << 20;

/// Default limit of the cache directory: 16 GiB.
pub const DEFAULT_CACHE_LIMIT: u64 = 16 << 30;

/// Whether `path` names an object-store dataset (`s3://...`).
pub fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with(S3_SCHEME))
}

/// How `s3://` datasets are read: the local block cache and the retry
/// policy. Ignored for local datasets. See the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteOptions {
    /// The S3 endpoint, e.g. `http://127.0.0.1:9000` for a local server;
    /// `None`: `$AWS_ENDPOINT_URL`, else AWS itself.
    pub endpoint: Option<String>,
    /// Root of the block cache; `None`: `$METAUG_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/metaug`, else `~/.cache/metaug`.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the blocks of one opened dataset keep on disk; `None`:
    /// `$METAUG_CACHE_LIMIT`, else [`DEFAULT_CACHE_LIMIT`]. `Some(0)`: no
    /// disk cache, one ranged GET per record.
    pub cache_limit: Option<u64>,
    /// Size of a cache block (and of a GET on a cache miss).
    pub block_bytes: u64,
    /// How long transient errors are retried, with backoff, before a read
    /// fails.
    pub retry_timeout: Duration,
    /// Timeout of one request (connect, send, receive the body).
    pub request_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            endpoint: None,
            cache_dir: None,
            cache_limit: None,
            block_bytes: DEFAULT_BLOCK_BYTES,
            retry_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RemoteOptions {
    /// The cache root: the option, else the environment (see the field).
    pub fn resolved_cache_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.cache_dir {
            return Ok(dir.clone());
        }
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(dir) = env("METAUG_CACHE_DIR") {
            return Ok(PathBuf::from(dir));
        }
        if let Some(dir) = env("XDG_CACHE_HOME") {
            return Ok(PathBuf::from(dir).join("metaug"));
        }
        if let Some(home) = env("HOME") {
            return Ok(PathBuf::from(home).join(".cache").join("metaug"));
        }
        Err(Error::invalid(
            "cache directory",
            "none given and neither METAUG_CACHE_DIR, XDG_CACHE_HOME nor HOME is set",
        ))
    }

    /// The cache limit: the option, else `$METAUG_CACHE_LIMIT`, else the
    /// default.
    pub fn resolved_cache_limit(&self) -> Result<u64> {
        if let Some(limit) = self.cache_limit {
            return Ok(limit);
        }
        match std::env::var("METAUG_CACHE_LIMIT") {
            Ok(v) if !v.is_empty() => parse_bytes(&v).ok_or_else(|| {
                Error::invalid(
                    "METAUG_CACHE_LIMIT",
                    format!("{v:?} is not a size such as 500M or 16G"),
                )
            }),
            _ => Ok(DEFAULT_CACHE_LIMIT),
        }
    }
}

/// `123`, `500K`, `64M`, `16G`, `2T` (powers of 1024) as bytes.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last()? {
        (i, 'K' | 'k') => (&t[..i], 10),
        (i, 'M' | 'm') => (&t[..i], 20),
        (i, 'G' | 'g') => (&t[..i], 30),
        (i, 'T' | 't') => (&t[..i], 40),
        _ => (t, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1u64 << shift)
}

/// The error for an `s3://` path in a build without the `s3` feature.
#[cfg(not(feature = "s3"))]
fn needs_feature(path: &Path) -> Error {
    Error::invalid(
        "dataset location",
        format!(
            "{} is an object-store URL, but this build of metaug has no S3 support: \
             rebuild with `--features s3`",
            path.display()
        ),
    )
}

#[cfg(not(feature = "s3"))]
pub(crate) fn open_dataset(
    dir: &Path,
    _options: &RemoteOptions,
) -> Result<(crate::shard::DatasetIndex, Vec<crate::shard::Shard>)> {
    Err(needs_feature(dir))
}

/// Where a writer puts a dataset: a local directory, or, for `s3://`, a
/// local staging directory uploaded by [`OutputDir::finish`] (shards by
/// multipart upload, `index.json` last) and then removed.
#[derive(Debug)]
pub struct OutputDir {
    local: PathBuf,
    #[cfg(feature = "s3")]
    remote: Option<upload::Upload>,
}

impl OutputDir {
    /// The output `dest`. For `s3://`: fails early when the destination
    /// already holds a dataset (its `index.json`) and `overwrite` is false,
    /// and stages under the cache directory of `options`.
    pub fn new(dest: &Path, overwrite: bool, options: &RemoteOptions) -> Result<OutputDir> {
        if !is_remote(dest) {
            return Ok(OutputDir {
                local: dest.to_path_buf(),
                #[cfg(feature = "s3")]
                remote: None,
            });
        }
        #[cfg(feature = "s3")]
        {
            let upload = upload::Upload::new(dest, overwrite, options)?;
            Ok(OutputDir {
                local: upload.staging().to_path_buf(),
                remote: Some(upload),
            })
        }
        #[cfg(not(feature = "s3"))]
        {
            let _ = (overwrite, options);
            Err(needs_feature(dest))
        }
    }

    /// The local directory to write into (the destination itself, or the
    /// staging directory).
    pub fn local(&self) -> &Path {
        &self.local
    }

    /// For an `s3://` output, a hook to give the writer
    /// ([`WriterOptions::after_shard`](crate::shard::WriterOptions::after_shard),
    /// or the pack options' `after_shard`): each shard is uploaded by a
    /// background thread as soon as it is written, and its local copy
    /// deleted. The writer waits while one shard uploads and another is
    /// queued, so the staging directory holds at most about three shards.
    /// `None` for a local output. Only for writers that never read their
    /// shards back (`pack`, not `precompute`).
    pub fn shard_hook(&mut self) -> Result<Option<crate::shard::ShardHook>> {
        #[cfg(feature = "s3")]
        if let Some(upload) = &mut self.remote {
            return upload.shard_hook().map(Some);
        }
        Ok(None)
    }

    /// Uploads a staged dataset (nothing to do for a local one), with a
    /// progress bar when `progress` is set; returns the destination's name.
    pub fn finish(self, progress: bool) -> Result<String> {
        #[cfg(feature = "s3")]
        if let Some(upload) = self.remote {
            return upload.finish(progress);
        }
        let _ = progress;
        Ok(self.local.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("4K"), Some(4096));
        assert_eq!(parse_bytes("16G"), Some(16 << 30));
        assert_eq!(parse_bytes(" 2 t "), Some(2 << 40));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_bytes("99999999999T"), None);
    }

    #[test]
    fn only_s3_urls_are_remote() {
        assert!(is_remote(Path::new("s3://bucket/prefix")));
        assert!(!is_remote(Path::new("data/s3://x")));
        assert!(!is_remote(Path::new("/tmp/dataset")));
    }
}

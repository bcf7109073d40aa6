//! Opening an `s3://` dataset: its `index.json`, then each shard as a
//! [`RemoteObject`] read through the dataset's [`BlockCache`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use super::cache::{BlockCache, CachedObject};
use super::store::Store;
use super::RemoteOptions;
use crate::shard::{DatasetIndex, Shard, INDEX_FILE, MAX_INDEX_BYTES};
use crate::{Error, Result};

/// One shard object, pinned to the version (ETag) seen at open.
pub(crate) struct RemoteObject {
    store: Arc<Store>,
    /// The dataset's cache and this object's place in it; `None` without a
    /// disk cache (or when the store gave no ETag to key it by).
    cache: Option<(Arc<BlockCache>, CachedObject)>,
    name: String,
    etag: Option<String>,
    len: u64,
}

impl std::fmt::Debug for RemoteObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RemoteObject({}, {} bytes)",
            self.url().display(),
            self.len
        )
    }
}

impl RemoteObject {
    /// `s3://bucket/prefix/name`.
    pub(crate) fn url(&self) -> PathBuf {
        self.store.url_of(&self.name)
    }

    /// Size in bytes, from the HEAD at open.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Bytes `at..at + buf.len()` into `buf`, from the cache or the store;
    /// the error says what went wrong (the caller names the object).
    pub(crate) fn read_at(&self, buf: &mut [u8], at: u64) -> std::result::Result<(), String> {
        let fetch = |range: std::ops::Range<u64>| {
            self.store
                .get_range(&self.name, range, self.etag.as_deref())
        };
        match &self.cache {
            Some((cache, object)) => cache.read(*object, buf, at, &fetch),
            None => {
                let bytes = fetch(at..at + buf.len() as u64)?;
                buf.copy_from_slice(&bytes);
                Ok(())
            }
        }
    }
}

/// Reads `index.json` of the dataset at `dir` (`s3://bucket/prefix`) and
/// opens every shard it lists (in parallel: a HEAD and the header and table
/// reads each). The caller checks the shards against the index.
pub(crate) fn open_dataset(
    dir: &Path,
    options: &RemoteOptions,
) -> Result<(DatasetIndex, Vec<Shard>)> {
    let store = Arc::new(Store::connect(dir, options)?);
    let index_url = store.url_of(INDEX_FILE);
    let text = store.get_small(INDEX_FILE, MAX_INDEX_BYTES).map_err(|e| {
        if e.starts_with("missing object") {
            DatasetIndex::missing(&index_url)
        } else {
            Error::format(&index_url, e)
        }
    })?;
    let index = DatasetIndex::parse(&index_url, &text)?;
    let limit = options.resolved_cache_limit()?;
    let cache = if limit == 0 {
        None
    } else {
        let mut root = options.resolved_cache_dir()?.join("s3");
        // parse_url refused `.` and `..` segments, so this stays inside.
        for part in store.url()["s3://".len()..].split('/') {
            root.push(part);
        }
        Some(Arc::new(BlockCache::new(root, limit, options.block_bytes)?))
    };
    let shards = index
        .shards
        .par_iter()
        .enumerate()
        .map(|(ordinal, entry)| {
            let url = store.url_of(&entry.file);
            let (len, etag) = store
                .head(&entry.file)
                .map_err(|e| Error::format(&url, e))?;
            let cache = match (&cache, &etag) {
                (Some(cache), Some(etag)) => {
                    Some((cache.clone(), cache.register(&entry.file, etag, len)?))
                }
                _ => None,
            };
            let object = RemoteObject {
                store: store.clone(),
                cache,
                name: entry.file.clone(),
                etag,
                len,
            };
            Shard::open_remote(object, ordinal)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((index, shards))
}

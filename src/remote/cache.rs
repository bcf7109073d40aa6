//! The local block cache of one opened object-store dataset: fixed-size
//! blocks of shard objects as files under a directory, fetched once each
//! (other threads wanting the same block wait for it), evicted least
//! recently used above a byte limit.
//!
//! Layout: `ROOT/<object>.<etag>.<block size>/<block number>.blk`. The ETag
//! in the directory name keeps blocks of different versions of an object
//! apart; the block size keeps caches of different block sizes apart. A
//! block is written to `<n>.blk.<pid>-<counter>.tmp` and renamed, so a block file
//! that exists is complete; blocks found at start (a previous run) are used
//! when their size is right and removed otherwise.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::{Error, Result};

/// A block: which object (by its directory in the cache) and which block.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BlockId {
    object: usize,
    index: u64,
}

#[derive(Debug)]
enum Slot {
    /// On disk; `used` orders the least recently used first.
    Present { bytes: u64, used: u64 },
    /// Being fetched by some thread.
    Fetching,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<BlockId, Slot>,
    /// Bytes of the present blocks.
    bytes: u64,
    /// A counter that stamps each use.
    clock: u64,
}

/// One object's blocks in a [`BlockCache`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct CachedObject {
    id: usize,
    len: u64,
}

/// The block cache of one dataset.
#[derive(Debug)]
pub(crate) struct BlockCache {
    root: PathBuf,
    limit: u64,
    block: u64,
    /// The directory of each registered object.
    objects: Mutex<Vec<PathBuf>>,
    state: Mutex<State>,
    fetched: Condvar,
}

impl BlockCache {
    /// A cache under `root` holding at most `limit` bytes of blocks of
    /// `block` bytes (`limit` may be below one block: then every block is
    /// dropped once read).
    pub(crate) fn new(root: PathBuf, limit: u64, block: u64) -> Result<BlockCache> {
        if block == 0 {
            return Err(Error::invalid(
                "cache block size",
                "must be at least 1 byte",
            ));
        }
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        Ok(BlockCache {
            root,
            limit,
            block,
            objects: Mutex::new(Vec::new()),
            state: Mutex::new(State::default()),
            fetched: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while holding the lock left the map
        // consistent (each change is one insert or remove).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers object `name` (version `etag`, `len` bytes) and adopts its
    /// complete blocks left on disk by an earlier run.
    pub(crate) fn register(&self, name: &str, etag: &str, len: u64) -> Result<CachedObject> {
        let tag: String = etag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(80)
            .collect();
        let dir = self.root.join(format!("{name}.{tag}.{}", self.block));
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let id = {
            let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
            objects.push(dir.clone());
            objects.len() - 1
        };
        let object = CachedObject { id, len };
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let index = name
                .strip_suffix(".blk")
                .and_then(|n| n.parse::<u64>().ok());
            let size = entry.metadata().map(|m| m.len()).ok();
            match (index, size) {
                (Some(index), Some(size)) if Some(size) == self.block_len(object, index) => {
                    found.push((index, size));
                }
                // Temporary files of a killed run, blocks of a wrong size.
                _ => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let mut state = self.lock();
        for (index, bytes) in found {
            state.bytes += bytes;
            state.slots.insert(
                BlockId { object: id, index },
                Slot::Present { bytes, used: 0 },
            );
        }
        self.evict(&mut state);
        Ok(object)
    }

    /// The length of block `index` of `object`, `None` past its end.
    fn block_len(&self, object: CachedObject, index: u64) -> Option<u64> {
        let start = index.checked_mul(self.block)?;
        (start < object.len).then(|| (object.len - start).min(self.block))
    }

    fn block_path(&self, id: &BlockId) -> PathBuf {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects[id.object].join(format!("{}.blk", id.index))
    }

    /// Reads bytes `at..at + buf.len()` of `object` into `buf`, fetching
    /// each missing block with `fetch(byte range)`.
    pub(crate) fn read(
        &self,
        object: CachedObject,
        buf: &mut [u8],
        at: u64,
        fetch: &dyn Fn(std::ops::Range<u64>) -> std::result::Result<Vec<u8>, String>,
    ) -> std::result::Result<(), String> {
        let end = at + buf.len() as u64;
        if end > object.len {
            return Err(format!(
                "bytes {at}..{end} are past the object's end ({})",
                object.len
            ));
        }
        let mut pos = at;
        while pos < end {
            let index = pos / self.block;
            let block_start = index * self.block;
            let take = (end - pos).min(block_start + self.block - pos);
            let out = &mut buf[(pos - at) as usize..(pos - at + take) as usize];
            self.read_block(object, index, pos - block_start, out, fetch)?;
            pos += take;
        }
        Ok(())
    }

    /// `out` from offset `offset` of block `index`.
    fn read_block(
        &self,
        object: CachedObject,
        index: u64,
        offset: u64,
        out: &mut [u8],
        fetch: &dyn Fn(std::ops::Range<u64>) -> std::result::Result<Vec<u8>, String>,
    ) -> std::result::Result<(), String> {
        let id = BlockId {
            object: object.id,
            index,
        };
        let path = self.block_path(&id);
        // A block can be evicted between finding it and opening its file:
        // then it is fetched again (bounded: each round either reads or
        // fetches).
        for _ in 0..4 {
            if self.claim(&id)? {
                // This thread fetches.
                let len = self.block_len(object, index).unwrap_or(0);
                let start = index * self.block;
                let data = match fetch(start..start + len) {
                    Ok(d) => d,
                    Err(e) => {
                        self.release(&id, None);
                        return Err(e);
                    }
                };
                out.copy_from_slice(&data[offset as usize..offset as usize + out.len()]);
                let stored = self.store(&path, &data);
                self.release(&id, stored.then_some(len));
                return Ok(());
            }
            match File::open(&path) {
                Ok(file) => {
                    return file
                        .read_exact_at(out, offset)
                        .map_err(|e| format!("cache file {}: {e}", path.display()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let mut state = self.lock();
                    if let Some(Slot::Present { bytes, .. }) = state.slots.get(&id) {
                        state.bytes -= *bytes;
                        state.slots.remove(&id);
                    }
                }
                Err(e) => return Err(format!("cache file {}: {e}", path.display())),
            }
        }
        Err(format!("block {index} kept being evicted before it could be read; is the cache limit far too small?"))
    }

    /// Whether the caller must fetch block `id` (it is then marked
    /// fetching); `false` when it is present (its use is stamped). Waits
    /// while another thread fetches it.
    fn claim(&self, id: &BlockId) -> std::result::Result<bool, String> {
        let mut state = self.lock();
        loop {
            state.clock += 1;
            let now = state.clock;
            match state.slots.get_mut(id) {
                Some(Slot::Present { used, .. }) => {
                    *used = now;
                    return Ok(false);
                }
                Some(Slot::Fetching) => {
                    state = self.fetched.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                None => {
                    state.slots.insert(id.clone(), Slot::Fetching);
                    return Ok(true);
                }
            }
        }
    }

    /// Ends a fetch: the block is present with `bytes`, or (`None`) not
    /// cached. Evicts down to the limit and wakes the waiters.
    fn release(&self, id: &BlockId, bytes: Option<u64>) {
        let mut state = self.lock();
        match bytes {
            Some(bytes) => {
                state.clock += 1;
                let used = state.clock;
                state.bytes += bytes;
                state
                    .slots
                    .insert(id.clone(), Slot::Present { bytes, used });
            }
            None => {
                state.slots.remove(id);
            }
        }
        self.evict(&mut state);
        drop(state);
        self.fetched.notify_all();
    }

    /// Writes a fetched block; `false` (and nothing left behind) when the
    /// cache cannot hold it or the write fails: the read still succeeds.
    fn store(&self, path: &Path, data: &[u8]) -> bool {
        if data.len() as u64 > self.limit {
            return false;
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = path.with_file_name(format!(
            "{name}.{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let ok = fs::write(&temp, data).is_ok() && fs::rename(&temp, path).is_ok();
        if !ok {
            let _ = fs::remove_file(&temp);
        }
        ok
    }

    /// Removes least recently used present blocks until the total is
    /// within the limit.
    fn evict(&self, state: &mut State) {
        while state.bytes > self.limit {
            let oldest = state
                .slots
                .iter()
                .filter_map(|(id, s)| match s {
                    Slot::Present { used, .. } => Some((*used, id.clone())),
                    Slot::Fetching => None,
                })
                .min_by_key(|(used, _)| *used);
            let Some((_, id)) = oldest else { break };
            if let Some(Slot::Present { bytes, .. }) = state.slots.remove(&id) {
                state.bytes -= bytes;
            }
            let _ = fs::remove_file(self.block_path(&id));
        }
    }

    /// Bytes of blocks on disk now.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn object_bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn reads_span_blocks_fetch_once_and_stay_under_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let data = object_bytes(1000);
        let fetches = AtomicUsize::new(0);
        let fetch = |r: std::ops::Range<u64>| {
            fetches.fetch_add(1, Ordering::Relaxed);
            Ok(data[r.start as usize..r.end as usize].to_vec())
        };
        let cache = BlockCache::new(dir.path().into(), 300, 100).unwrap();
        let obj = cache.register("shard-0", "\"abc\"", 1000).unwrap();
        let mut buf = vec![0u8; 250];
        cache.read(obj, &mut buf, 40, &fetch).unwrap();
        assert_eq!(buf, data[40..290]);
        assert_eq!(fetches.load(Ordering::Relaxed), 3);
        // Warm: no fetch.
        cache.read(obj, &mut buf[..50], 210, &fetch).unwrap();
        assert_eq!(&buf[..50], &data[210..260]);
        assert_eq!(fetches.load(Ordering::Relaxed), 3);
        // The last block is short; the limit evicts the oldest.
        let mut tail = vec![0u8; 30];
        cache.read(obj, &mut tail, 970, &fetch).unwrap();
        assert_eq!(tail, data[970..]);
        assert!(cache.bytes() <= 300, "{} bytes cached", cache.bytes());
        assert!(cache.read(obj, &mut tail, 980, &fetch).is_err());
    }

    #[test]
    fn a_second_cache_on_the_same_directory_starts_warm() {
        let dir = tempfile::tempdir().unwrap();
        let data = object_bytes(500);
        let fetch = |r: std::ops::Range<u64>| Ok(data[r.start as usize..r.end as usize].to_vec());
        let cache = BlockCache::new(dir.path().into(), 10_000, 128).unwrap();
        let obj = cache.register("s", "e1", 500).unwrap();
        let mut buf = vec![0u8; 500];
        cache.read(obj, &mut buf, 0, &fetch).unwrap();
        drop(cache);
        let fail = |_: std::ops::Range<u64>| Err("offline".to_string());
        let warm = BlockCache::new(dir.path().into(), 10_000, 128).unwrap();
        let obj = warm.register("s", "e1", 500).unwrap();
        let mut again = vec![0u8; 500];
        warm.read(obj, &mut again, 0, &fail).unwrap();
        assert_eq!(again, data);
        // Another ETag is another version: nothing cached for it.
        let other = warm.register("s", "e2", 500).unwrap();
        let err = warm.read(other, &mut again[..10], 0, &fail).unwrap_err();
        assert_eq!(err, "offline");
    }

    #[test]
    fn a_failed_fetch_leaves_no_block_and_the_next_read_retries() {
        let dir = tempfile::tempdir().unwrap();
        let data = object_bytes(300);
        let cache = BlockCache::new(dir.path().into(), 10_000, 100).unwrap();
        let obj = cache.register("s", "e", 300).unwrap();
        let mut buf = vec![0u8; 10];
        let fail = |_: std::ops::Range<u64>| Err("down".to_string());
        assert!(cache.read(obj, &mut buf, 5, &fail).is_err());
        let fetch = |r: std::ops::Range<u64>| Ok(data[r.start as usize..r.end as usize].to_vec());
        cache.read(obj, &mut buf, 5, &fetch).unwrap();
        assert_eq!(buf, data[5..15]);
    }

    #[test]
    fn threads_wanting_one_block_fetch_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let data = object_bytes(4096);
        let fetches = AtomicUsize::new(0);
        let fetch = |r: std::ops::Range<u64>| {
            fetches.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(data[r.start as usize..r.end as usize].to_vec())
        };
        let cache = BlockCache::new(dir.path().into(), 1 << 20, 4096).unwrap();
        let obj = cache.register("s", "e", 4096).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (cache, fetch, data) = (&cache, &fetch, &data);
                s.spawn(move || {
                    let mut buf = vec![0u8; 64];
                    cache.read(obj, &mut buf, t * 1000, fetch).unwrap();
                    assert_eq!(buf, data[(t * 1000) as usize..(t * 1000 + 64) as usize]);
                });
            }
        });
        assert_eq!(fetches.load(Ordering::Relaxed), 1);
    }
}

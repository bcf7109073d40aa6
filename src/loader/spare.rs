//! Batch buffers kept from one loader to the next in the same process.
//!
//! A loader's batch buffers are tens of megabytes (64 samples of 224×224×3
//! f32 are 38.5 MB), so they are fresh memory maps: the first write to each
//! 4 KiB page faults, and the kernel zeroes it. On the 2-core test machine
//! that is about 20 ms of CPU time per buffer, paid by the decode threads
//! during a new loader's first batches (about 1 % of an 8-epoch run on the
//! JPEG photos). A loader that is done, or dropped, leaves its buffers here,
//! and the next loader takes them before mapping new ones: a training
//! script that builds a loader per epoch or per phase pays the faults once.
//!
//! What is kept is bounded: at most [`MAX_BUFFERS`] buffers and
//! [`MAX_BYTES`] in all, the most recently left ones; older ones are freed
//! to make room. [`release_spare_buffers`] frees them all.

use std::sync::{Mutex, MutexGuard};

use super::batch::HostBuffer;

/// At most this many buffers are kept.
pub const MAX_BUFFERS: usize = 4;
/// At most this many bytes of buffers are kept.
pub const MAX_BYTES: usize = 512 << 20;

static SPARES: Mutex<SparePool> = Mutex::new(SparePool::new(MAX_BUFFERS, MAX_BYTES));

fn spares() -> MutexGuard<'static, SparePool> {
    // A panic while holding the lock leaves a valid pool (each method
    // changes it by one push or one removal), so the poison is ignored.
    SPARES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A kept buffer that holds `len` bytes without growing, if there is one.
pub(crate) fn take(len: usize) -> Option<HostBuffer> {
    spares().take(len)
}

/// Keeps `buf` for a later loader if there is room; frees it otherwise.
pub(crate) fn keep(buf: HostBuffer) {
    let dropped = spares().keep(buf);
    // freed outside the lock (an munmap of tens of megabytes)
    drop(dropped);
}

/// Frees the batch buffers that finished loaders left for the next one in
/// this process; returns the bytes released. Loaders still running keep
/// theirs.
///
/// A loader that is done, or dropped, leaves up to 4 of its batch buffers
/// (512 MiB at most, the latest ones) to the next loader built in the
/// process, which then writes its first batches to memory already mapped
/// instead of faulting in and zeroing fresh pages (about 20 ms of CPU per
/// 38 MB buffer on a 2-core VM). Call this to give that memory back, e.g.
/// once the last loader of a program is done.
pub fn release_spare_buffers() -> usize {
    let bufs = std::mem::take(&mut spares().bufs);
    bufs.iter().map(HostBuffer::capacity).sum()
}

/// The bounded set of kept buffers.
struct SparePool {
    bufs: Vec<HostBuffer>,
    max_buffers: usize,
    max_bytes: usize,
}

impl SparePool {
    const fn new(max_buffers: usize, max_bytes: usize) -> Self {
        SparePool {
            bufs: Vec::new(),
            max_buffers,
            max_bytes,
        }
    }

    fn bytes(&self) -> usize {
        self.bufs.iter().map(HostBuffer::capacity).sum()
    }

    /// The smallest kept buffer with room for `len` bytes, taken out.
    fn take(&mut self, len: usize) -> Option<HostBuffer> {
        let (at, _) = self
            .bufs
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())?;
        Some(self.bufs.swap_remove(at))
    }

    /// Keeps `buf`, the oldest kept buffers making room for it if the
    /// bounds require (the latest loader's buffers are the likeliest to fit
    /// the next one); returns what is not kept, to be freed.
    fn keep(&mut self, buf: HostBuffer) -> Vec<HostBuffer> {
        if buf.capacity() == 0 || buf.capacity() > self.max_bytes {
            return vec![buf];
        }
        self.bufs.push(buf);
        let mut out = Vec::new();
        while self.bufs.len() > self.max_buffers || self.bytes() > self.max_bytes {
            out.push(self.bufs.remove(0));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_smallest_buffer_that_fits_and_keeps_the_latest_within_bounds() {
        let mut pool = SparePool::new(2, 10 << 20);
        assert!(pool.take(1).is_none());
        assert_eq!(pool.keep(HostBuffer::default()).len(), 1, "nothing to keep");
        assert_eq!(pool.keep(HostBuffer::zeroed(11 << 20)).len(), 1, "too big");
        assert!(pool.keep(HostBuffer::zeroed(4 << 20)).is_empty());
        assert!(pool.keep(HostBuffer::zeroed(1 << 20)).is_empty());
        let small = pool.take(1000).expect("a buffer that fits");
        assert!(small.capacity() >= 1000 && small.capacity() < 4 << 20);
        assert!(pool.take(5 << 20).is_none(), "none is large enough");
        assert!(pool.keep(small).is_empty());
        // a third buffer: over the count, the oldest (4 MiB) goes
        let freed = pool.keep(HostBuffer::zeroed(2 << 20));
        assert_eq!(freed.len(), 1);
        assert!(freed[0].capacity() >= 4 << 20);
        // 1 + 2 MiB kept; with 9 more, the count drops the 1 MiB one and
        // the bytes (11 MiB) the 2 MiB one
        let freed = pool.keep(HostBuffer::zeroed(9 << 20));
        assert_eq!(freed.len(), 2);
        assert_eq!(pool.bufs.len(), 1);
        assert!(pool.take(9 << 20).is_some());
        assert!(pool.bufs.is_empty());
    }

    #[test]
    fn a_kept_buffer_is_reused_with_its_memory() {
        // The global pool: other tests may add buffers too, so look for
        // this one by its address.
        let mut buf = HostBuffer::zeroed(3 << 20);
        buf.bytes_mut()[5] = 1;
        let at = buf.bytes().as_ptr();
        keep(buf);
        let mut found = None;
        let mut others = Vec::new();
        while let Some(b) = take(3 << 20) {
            if b.bytes().as_ptr() == at {
                found = Some(b);
                break;
            }
            others.push(b);
        }
        others.into_iter().for_each(keep);
        let b = found.expect("the kept buffer");
        assert_eq!(b.bytes()[5], 1, "same memory, contents as left");
    }
}

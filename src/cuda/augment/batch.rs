//! [`DeviceBatch`], an augmented batch in device memory, and the pool its
//! buffer returns to when it is dropped.

use std::sync::{Arc, Mutex, Weak};

use cudarc::driver::CudaView;

use crate::cuda::backend::Backend;
use crate::cuda::device::Device;
use crate::cuda::spec::{DType, Layout};
use crate::ops::Size;
use crate::Result;

#[cfg(doc)]
use super::GpuAugmenter;

const POOL_MAX: usize = 4;

pub(super) struct PooledBuffer<B: Backend> {
    pub(super) buf: B::Buf<u8>,
    pub(super) wait: Vec<B::Event>,
}

pub(super) type Pool<B> = Mutex<Vec<PooledBuffer<B>>>;

/// An augmented batch in device memory.
///
/// The batch is written by a kernel on [`stream`](Self::stream); work queued on
/// that stream after [`GpuAugmenter::augment_batch`] returned sees it complete.
/// Work on another stream must first [`wait_on`](Self::wait_on) it, and if it
/// reads the batch there, call [`release_after`](Self::release_after) before
/// dropping it: the buffer is reused for a later batch, and that batch's kernel
/// waits only for what those events cover.
pub struct DeviceBatch<B: Backend = Device> {
    pub(super) device: B,
    pub(super) buf: Option<B::Buf<u8>>,
    pub(super) bytes: usize,
    pub(super) batch: usize,
    pub(super) size: Size,
    pub(super) channels: u32,
    pub(super) dtype: DType,
    pub(super) layout: Layout,
    pub(super) stream: Arc<B::Stream>,
    pub(super) ready: B::Event,
    pub(super) release: Vec<B::Event>,
    pub(super) pool: Weak<Pool<B>>,
}

impl<B: Backend> std::fmt::Debug for DeviceBatch<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBatch")
            .field("shape", &self.shape())
            .field("dtype", &self.dtype)
            .field("layout", &self.layout)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl<B: Backend> DeviceBatch<B> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.batch
    }

    /// Whether the batch has no samples (never, for batches from
    /// [`GpuAugmenter::augment_batch`]).
    pub fn is_empty(&self) -> bool {
        self.batch == 0
    }

    /// Bytes of the batch (`len × sample bytes`).
    pub fn num_bytes(&self) -> usize {
        self.bytes
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// `[B, C, H, W]` for NCHW, `[B, H, W, C]` for NHWC.
    pub fn shape(&self) -> [usize; 4] {
        let (b, c, h, w) = (
            self.batch,
            self.channels as usize,
            self.size.height as usize,
            self.size.width as usize,
        );
        match self.layout {
            Layout::Nchw => [b, c, h, w],
            Layout::Nhwc => [b, h, w, c],
        }
    }

    /// The stream the batch is written on.
    pub fn stream(&self) -> &Arc<B::Stream> {
        &self.stream
    }

    /// Completes when the batch is written.
    pub fn ready_event(&self) -> &B::Event {
        &self.ready
    }

    /// Makes `stream` wait until the batch is written.
    pub fn wait_on(&self, stream: &B::Stream) -> Result<()> {
        self.device.wait(stream, &self.ready)
    }

    /// Declares that work queued on `stream` so far reads the batch: its
    /// buffer is not rewritten before that work completes.
    pub fn release_after(&mut self, stream: &B::Stream) -> Result<()> {
        let e = self.device.new_event()?;
        self.device.record(&e, stream)?;
        self.release.push(e);
        Ok(())
    }

    /// The raw device address of the first byte, for other libraries
    /// (DLPack, a framework's `from_blob`). Valid while `self` lives; see the
    /// type's docs for ordering.
    pub fn device_ptr(&self) -> u64 {
        self.buf.as_ref().map_or(0, |b| self.device.address(b))
    }

    /// Ends the batch and hands its buffer over to work on `consumer`, for
    /// a library that takes ownership of device memory (a framework tensor
    /// wrapping it without a copy).
    ///
    /// `consumer` first waits for the batch's kernel and for every reader
    /// declared with [`release_after`](Self::release_after), so whatever is
    /// queued on it from now on (the new owner's reads, and the buffer's
    /// free if it is freed on `consumer`) comes after them. The buffer
    /// leaves the augmenter's pool for good: no later batch is written into
    /// it, however long the new owner keeps it; the augmenter allocates a
    /// fresh buffer instead. Its first [`num_bytes`](Self::num_bytes) bytes
    /// are the batch (the allocation may be larger).
    ///
    /// An error (the batch holds no buffer, or the waits could not be
    /// queued) drops the batch as usual.
    pub fn into_buffer_for(mut self, consumer: &B::Stream) -> Result<B::Buf<u8>> {
        let no_buffer =
            || crate::Error::invalid("device batch", "the batch holds no device buffer");
        if self.buf.is_none() {
            return Err(no_buffer());
        }
        // the kernel (and anything else queued on the batch's stream)
        let written = self.device.new_event()?;
        self.device.record(&written, &self.stream)?;
        self.device.wait(consumer, &written)?;
        for e in &self.release {
            self.device.wait(consumer, e)?;
        }
        // `Drop` then finds no buffer: nothing goes back to the pool
        self.buf.take().ok_or_else(no_buffer)
    }

    /// Copies the batch to the host (waits for it): little-endian elements in
    /// the batch's layout, `num_bytes()` bytes.
    pub fn to_host(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.bytes];
        if let Some(b) = &self.buf {
            self.device.download_into(&self.stream, b, &mut out)?;
        }
        Ok(out)
    }
}

impl DeviceBatch<Device> {
    /// The batch's bytes as a cudarc view.
    pub fn view(&self) -> Option<CudaView<'_, u8>> {
        self.buf.as_ref().map(|b| b.slice(..self.bytes))
    }
}

impl<B: Backend> Drop for DeviceBatch<B> {
    fn drop(&mut self) {
        let Some(buf) = self.buf.take() else { return };
        let mut wait = std::mem::take(&mut self.release);
        // Work already queued on the batch's own stream is covered by this event.
        let own = self
            .device
            .new_event()
            .and_then(|e| self.device.record(&e, &self.stream).map(|()| e));
        let pool = self.pool.upgrade();
        if let (Ok(e), Some(pool)) = (own, pool) {
            wait.push(e);
            let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < POOL_MAX {
                pool.push(PooledBuffer { buf, wait });
                return;
            }
        }
        // Freed: in the batch stream's order, after the readers on other streams.
        for e in &wait {
            let _ = self.device.wait(&self.stream, e);
        }
        drop(buf);
    }
}

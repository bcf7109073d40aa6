//! A batch as the training loop receives it, and the host buffers behind
//! it, which go back to the loader for reuse when the batch is dropped.

use std::borrow::Cow;

use crossbeam_channel::Sender;

use crate::cuda::DeviceBatch;
use crate::error::Result;
use crate::loader::plan::Position;
use crate::ops::{DType, Layout, OutputSpec};

/// Bytes of alignment of a [`HostBuffer`]: a cache line, so that a sample
/// whose size is a multiple of 64 starts on a line and whole-line stores
/// (streaming stores included) never split.
pub const HOST_ALIGN: usize = 64;

/// Words of slack allocated so that the bytes can start on a
/// [`HOST_ALIGN`] boundary.
const SLACK_WORDS: usize = HOST_ALIGN / 8;

/// A host byte buffer aligned to [`HOST_ALIGN`] bytes, so that it can be
/// viewed as `f32`, `f16` or `u8` without copying.
#[derive(Debug, Default)]
pub struct HostBuffer {
    /// The allocation; the bytes start `start` words into it.
    words: Vec<u64>,
    start: usize,
    len: usize,
}

impl HostBuffer {
    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        let mut b = HostBuffer::default();
        b.resize(len);
        b
    }

    /// Sets the length to `len` bytes, reusing the allocation when it is
    /// large enough. New bytes are zero; kept bytes keep their values.
    pub fn resize(&mut self, len: usize) {
        let words = len.div_ceil(8) + SLACK_WORDS;
        if self.words.is_empty() {
            // A fresh zeroed allocation: the allocator's zero pages, touched
            // first by the workers that write the samples (in parallel),
            // not a memset of the whole batch on the loader thread.
            self.words = vec![0; words];
            self.start = Self::aligned_start(&self.words);
            self.len = len;
            return;
        }
        let kept = self.len.min(len);
        let old_start = self.start;
        if words > self.words.len() {
            self.words.resize(words, 0);
        }
        // A reallocation may have moved the words to another alignment.
        self.start = Self::aligned_start(&self.words);
        if self.start != old_start {
            let kept_words = kept.div_ceil(8);
            self.words
                .copy_within(old_start..old_start + kept_words, self.start);
        }
        // Bytes past the kept ones read as zero, as promised.
        let from = self.start * 8 + kept;
        let to = self.start * 8 + len;
        bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[from..to].fill(0);
        self.len = len;
    }

    /// The first word of `words` on a [`HOST_ALIGN`] boundary.
    fn aligned_start(words: &[u64]) -> usize {
        let skip = words.as_ptr().align_offset(HOST_ALIGN);
        // A `u64` pointer is 8-aligned, so at most 7 words are skipped.
        debug_assert!(skip < SLACK_WORDS);
        skip
    }

    /// Bytes the buffer can hold without reallocating.
    pub fn capacity(&self) -> usize {
        self.words.len().saturating_sub(SLACK_WORDS) * 8
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.words.is_empty() {
            return &[];
        }
        &bytemuck::cast_slice(&self.words[self.start..])[..self.len]
    }

    /// The bytes, mutable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        if self.words.is_empty() {
            return &mut [];
        }
        &mut bytemuck::cast_slice_mut(&mut self.words[self.start..])[..self.len]
    }
}

/// Where a batch's images are.
#[derive(Debug)]
pub(crate) enum Images {
    Host(HostBuffer),
    Device(DeviceBatch),
    /// Made by the CUDA path on the CPU emulator (tests).
    Emulated(DeviceBatch<crate::cuda::Emulator>),
}

/// One batch of augmented samples: images in host memory (CPU device) or in
/// CUDA device memory (CUDA device), labels and sample indices on the host.
#[derive(Debug)]
pub struct Batch {
    images: Images,
    labels: Vec<i64>,
    indices: Vec<u64>,
    spec: OutputSpec,
    position: Position,
    skipped: Vec<u64>,
    recycle: Option<Sender<HostBuffer>>,
}

impl Batch {
    pub(crate) fn new(
        images: Images,
        labels: Vec<i64>,
        indices: Vec<u64>,
        spec: OutputSpec,
        position: Position,
        skipped: Vec<u64>,
        recycle: Option<Sender<HostBuffer>>,
    ) -> Self {
        Batch {
            images,
            labels,
            indices,
            spec,
            position,
            skipped,
            recycle,
        }
    }

    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The image tensor's shape: `[n, C, H, W]` (NCHW) or `[n, H, W, C]` (NHWC).
    pub fn shape(&self) -> [usize; 4] {
        let (n, c) = (self.len(), self.spec.channels as usize);
        let (h, w) = (
            self.spec.size.height as usize,
            self.spec.size.width as usize,
        );
        match self.spec.layout {
            Layout::Nchw => [n, c, h, w],
            Layout::Nhwc => [n, h, w, c],
        }
    }

    /// The element type of [`Batch::image_bytes`].
    pub fn dtype(&self) -> DType {
        self.spec.dtype
    }

    /// The output spec the batch was made with.
    pub fn spec(&self) -> &OutputSpec {
        &self.spec
    }

    fn host(&self) -> &[u8] {
        match &self.images {
            Images::Host(b) => b.bytes(),
            Images::Device(_) | Images::Emulated(_) => &[],
        }
    }

    /// The images as raw bytes in the batch's dtype and layout, for a batch
    /// in host memory; empty for a device batch (see [`Batch::device`] and
    /// [`Batch::to_host_bytes`]).
    pub fn image_bytes(&self) -> &[u8] {
        self.host()
    }

    /// The images as `f32`, for a host batch of dtype F32.
    pub fn images_f32(&self) -> Option<&[f32]> {
        let ok = self.spec.dtype == DType::F32 && !self.is_device();
        ok.then(|| bytemuck::cast_slice(self.host()))
    }

    /// The images as `f16`, for a host batch of dtype F16.
    pub fn images_f16(&self) -> Option<&[half::f16]> {
        let ok = self.spec.dtype == DType::F16 && !self.is_device();
        ok.then(|| bytemuck::cast_slice(self.host()))
    }

    /// The images as `u8`, for a host batch of dtype U8.
    pub fn images_u8(&self) -> Option<&[u8]> {
        let ok = self.spec.dtype == DType::U8 && !self.is_device();
        ok.then(|| self.host())
    }

    /// True when the images are in CUDA device memory.
    pub fn is_device(&self) -> bool {
        matches!(self.images, Images::Device(_) | Images::Emulated(_))
    }

    /// The device buffer (with its stream, ready event and raw device
    /// pointer for other libraries), for a batch made on a CUDA device.
    pub fn device(&self) -> Option<&DeviceBatch> {
        match &self.images {
            Images::Device(d) => Some(d),
            Images::Host(_) | Images::Emulated(_) => None,
        }
    }

    /// The device buffer, mutable (to declare the streams that read it).
    pub fn device_mut(&mut self) -> Option<&mut DeviceBatch> {
        match &mut self.images {
            Images::Device(d) => Some(d),
            Images::Host(_) | Images::Emulated(_) => None,
        }
    }

    /// The device buffer by value, for a batch made on a CUDA device (to
    /// hand its memory to another library: see
    /// [`DeviceBatch::into_buffer_for`]); the batch itself (boxed)
    /// otherwise. The labels and indices go with the rest of the batch:
    /// read them first.
    pub fn into_device(mut self) -> std::result::Result<DeviceBatch, Box<Batch>> {
        match std::mem::replace(&mut self.images, Images::Host(HostBuffer::default())) {
            Images::Device(d) => Ok(d),
            other => {
                self.images = other;
                Err(Box::new(self))
            }
        }
    }

    /// The image bytes on the host wherever the batch lives: borrowed for a
    /// host batch, copied back (after the batch is ready) for a device batch.
    pub fn to_host_bytes(&self) -> Result<Cow<'_, [u8]>> {
        match &self.images {
            Images::Host(b) => Ok(Cow::Borrowed(b.bytes())),
            Images::Device(d) => d.to_host().map(Cow::Owned),
            Images::Emulated(d) => d.to_host().map(Cow::Owned),
        }
    }

    /// The class label of each sample.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The global dataset index of each sample.
    pub fn indices(&self) -> &[u64] {
        &self.indices
    }

    /// Where this batch sits in the stream (its epoch and batch index).
    pub fn position(&self) -> Position {
        self.position
    }

    /// Global indices of the records of this batch that were bad and skipped
    /// (only with [`crate::loader::BadRecords::Skip`]).
    pub fn skipped(&self) -> &[u64] {
        &self.skipped
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let (Some(tx), Images::Host(buf)) = (self.recycle.take(), &mut self.images) {
            // The loader may be gone, or its pool full: then the buffer
            // is kept for the next loader, or freed (see `spare`). (Device
            // buffers go back to their own pool.)
            if let Err(e) = tx.try_send(std::mem::take(buf)) {
                super::spare::keep(e.into_inner());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_buffer_is_aligned_and_resizes() {
        let mut b = HostBuffer::zeroed(13);
        assert_eq!(b.bytes().len(), 13);
        assert_eq!(b.bytes().as_ptr() as usize % HOST_ALIGN, 0);
        b.bytes_mut()[12] = 7;
        b.resize(40);
        assert_eq!(b.bytes()[12], 7);
        assert_eq!(b.len(), 40);
        b.resize(4);
        assert_eq!(b.bytes().len(), 4);
        // Growing far past the allocation keeps the kept bytes, zeroes the
        // new ones (also those that were written before a shrink) and stays
        // aligned, whatever the reallocation does.
        b.bytes_mut()[3] = 9;
        for len in [1 << 10, 1 << 16, 1 << 20, 3 << 20] {
            b.resize(len);
            assert_eq!(b.bytes().as_ptr() as usize % HOST_ALIGN, 0);
            assert_eq!(&b.bytes()[..4], &[0, 0, 0, 9]);
            assert!(b.bytes()[4..].iter().all(|&x| x == 0), "new bytes are zero");
            b.bytes_mut()[len - 1] = 1;
            b.resize(4);
            b.resize(len);
            assert_eq!(b.bytes()[len - 1], 0);
        }
    }
}

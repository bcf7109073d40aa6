//! A batch as the training loop receives it, and the host buffers behind
//! it, which go back to the loader for reuse when the batch is dropped.

use crossbeam_channel::Sender;

use crate::loader::plan::Position;
use crate::ops::{DType, Layout, OutputSpec};

/// A host byte buffer aligned to 8 bytes, so that it can be viewed as
/// `f32`, `f16` or `u8` without copying.
#[derive(Debug, Default)]
pub struct HostBuffer {
    words: Vec<u64>,
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
        self.words.resize(len.div_ceil(8), 0);
        self.len = len;
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
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    /// The bytes, mutable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

/// One batch of augmented samples.
#[derive(Debug)]
pub struct Batch {
    images: HostBuffer,
    labels: Vec<i64>,
    indices: Vec<u64>,
    spec: OutputSpec,
    position: Position,
    skipped: Vec<u64>,
    recycle: Option<Sender<HostBuffer>>,
}

impl Batch {
    pub(crate) fn new(
        images: HostBuffer,
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

    /// The images, as raw bytes in the batch's dtype and layout.
    pub fn image_bytes(&self) -> &[u8] {
        self.images.bytes()
    }

    /// The images as `f32`, when the dtype is F32.
    pub fn images_f32(&self) -> Option<&[f32]> {
        (self.spec.dtype == DType::F32).then(|| bytemuck::cast_slice(self.images.bytes()))
    }

    /// The images as `f16`, when the dtype is F16.
    pub fn images_f16(&self) -> Option<&[half::f16]> {
        (self.spec.dtype == DType::F16).then(|| bytemuck::cast_slice(self.images.bytes()))
    }

    /// The images as `u8`, when the dtype is U8.
    pub fn images_u8(&self) -> Option<&[u8]> {
        (self.spec.dtype == DType::U8).then(|| self.images.bytes())
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
        if let Some(tx) = self.recycle.take() {
            // The loader may be gone, or its pool full: then the buffer is
            // simply freed.
            let _ = tx.try_send(std::mem::take(&mut self.images));
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
        assert_eq!(b.bytes().as_ptr() as usize % 8, 0);
        b.bytes_mut()[12] = 7;
        b.resize(40);
        assert_eq!(b.bytes()[12], 7);
        assert_eq!(b.len(), 40);
        b.resize(4);
        assert_eq!(b.bytes().len(), 4);
    }
}

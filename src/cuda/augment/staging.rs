//! The staging buffer's layout: a batch's pixels, parameter rows, source
//! offsets, window sizes and origins, and sample indices, packed into one
//! upload.

use super::{pack_window_params, PARAMS_PER_SAMPLE};
use crate::cuda::spec::ImageView;
use crate::ops::{SampleParams, Size, SourceWindow};
use crate::{Error, Result};

const ALIGN: usize = 16;

/// u32s per sample in the size array: the window's height, width, and its
/// origin's row and column in the map's frame.
pub(super) const HW_PER_SAMPLE: usize = 4;

/// Byte offsets of the regions of one staging buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StagingLayout {
    pub(super) pixels: usize,
    pub(super) params: usize,
    pub(super) offsets: usize,
    pub(super) hw: usize,
    pub(super) samples: usize,
    pub(super) total: usize,
}

impl StagingLayout {
    pub(super) fn new(pixel_bytes: usize, batch: usize) -> Result<StagingLayout> {
        let overflow = || Error::invalid("batch", "staging size overflows usize");
        let up = |x: usize| x.checked_next_multiple_of(ALIGN).ok_or_else(overflow);
        let add = |a: usize, b: usize| a.checked_add(b).ok_or_else(overflow);
        let params = up(pixel_bytes)?;
        let offsets = up(add(params, batch * PARAMS_PER_SAMPLE * 4)?)?;
        let hw = up(add(offsets, batch * 8)?)?;
        let samples = up(add(hw, batch * HW_PER_SAMPLE * 4)?)?;
        let total = up(add(samples, batch * 4)?)?;
        Ok(StagingLayout {
            pixels: pixel_bytes,
            params,
            offsets,
            hw,
            samples,
            total,
        })
    }

    /// Writes the batch into `h` (at least `total` bytes): the images back to
    /// back, then the parameter rows, source offsets, window sizes and
    /// origins, and sample indices.
    pub(super) fn pack(
        &self,
        h: &mut [u8],
        images: &[ImageView<'_>],
        windows: &[SourceWindow],
        params: &[SampleParams],
        sample_indices: &[u64],
        out: Size,
    ) {
        let h = &mut h[..self.total];
        let mut at = 0usize;
        let mut offsets = Vec::with_capacity(images.len());
        for img in images {
            h[at..at + img.data.len()].copy_from_slice(img.data);
            offsets.push(at as u64);
            at += img.data.len();
        }
        h[self.pixels..self.params].fill(0);
        for (k, ((p, img), window)) in params.iter().zip(images).zip(windows).enumerate() {
            let row = pack_window_params(p, window, out);
            let o = self.params + k * PARAMS_PER_SAMPLE * 4;
            for (d, v) in h[o..o + PARAMS_PER_SAMPLE * 4].chunks_exact_mut(4).zip(row) {
                d.copy_from_slice(&v.to_le_bytes());
            }
            let o = self.offsets + k * 8;
            h[o..o + 8].copy_from_slice(&offsets[k].to_le_bytes());
            let o = self.hw + k * HW_PER_SAMPLE * 4;
            let [ox, oy] = window.origin;
            for (d, v) in h[o..o + HW_PER_SAMPLE * 4]
                .chunks_exact_mut(4)
                .zip([img.height, img.width, oy, ox])
            {
                d.copy_from_slice(&v.to_le_bytes());
            }
            let o = self.samples + k * 4;
            // PhiloxStream::new truncates the sample index to 32 bits.
            h[o..o + 4].copy_from_slice(&(sample_indices[k] as u32).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_layout_is_aligned_and_disjoint() {
        for (px, b) in [(0, 1), (1, 1), (147, 3), (150_528 * 256, 256)] {
            let l = StagingLayout::new(px, b).unwrap();
            for o in [l.params, l.offsets, l.hw, l.samples, l.total] {
                assert_eq!(o % ALIGN, 0);
            }
            assert!(l.pixels <= l.params);
            assert!(l.params + b * 32 <= l.offsets);
            assert!(l.offsets + b * 8 <= l.hw);
            assert!(l.hw + b * 8 <= l.samples);
            assert!(l.samples + b * 4 <= l.total);
        }
        assert!(StagingLayout::new(usize::MAX - 3, 1).is_err());
    }
}

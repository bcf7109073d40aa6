//! The checks a batch passes before any CUDA call: lengths, batch size,
//! output size, each image's channels, sides and data length, and each
//! window against its frame.

use crate::cuda::spec::{ImageView, OutputSpec};
use crate::ops::{SampleParams, Size, SourceWindow};
use crate::{Error, Result};

/// Most samples in one batch (the kernel grid's y dimension).
pub const MAX_BATCH: usize = 65_535;

/// Largest source side the kernels accept (coordinates are compared as f32).
pub const MAX_SOURCE_SIDE: u32 = 1 << 24;

/// Checks that there is one window per image and that each lies, with its
/// image's size, inside its frame (below 2^24 a side, as the kernels need).
pub(super) fn check_windows(images: &[ImageView<'_>], windows: &[SourceWindow]) -> Result<()> {
    if windows.len() != images.len() {
        return Err(Error::invalid(
            "batch",
            format!("{} images and {} windows", images.len(), windows.len()),
        ));
    }
    for (k, (img, w)) in images.iter().zip(windows).enumerate() {
        w.check(Size::new(img.height, img.width))
            .map_err(|e| Error::invalid(format!("image {k} of the batch"), e))?;
    }
    Ok(())
}

/// Validates a batch; returns its size.
pub(super) fn check_batch(
    images: &[ImageView<'_>],
    params: &[SampleParams],
    sample_indices: &[u64],
    spec: &OutputSpec,
) -> Result<usize> {
    spec.validate()?;
    let b = images.len();
    if params.len() != b || sample_indices.len() != b {
        return Err(Error::invalid(
            "batch",
            format!(
                "{b} images, {} parameter sets and {} sample indices; give one of each per image",
                params.len(),
                sample_indices.len()
            ),
        ));
    }
    if b == 0 || b > MAX_BATCH {
        return Err(Error::invalid(
            "batch",
            format!("{b} samples (expected 1..={MAX_BATCH})"),
        ));
    }
    let per_sample = spec.channels as u64 * spec.size.height as u64 * spec.size.width as u64;
    if per_sample > u32::MAX as u64 {
        return Err(Error::invalid(
            "output size",
            "channels × height × width must be below 2^32",
        ));
    }
    for (k, img) in images.iter().enumerate() {
        let what = || format!("image {k} of the batch");
        if img.channels != spec.channels {
            return Err(Error::invalid(
                what(),
                format!(
                    "{} channels, the output has {}",
                    img.channels, spec.channels
                ),
            ));
        }
        if img.height == 0
            || img.width == 0
            || img.height >= MAX_SOURCE_SIDE
            || img.width >= MAX_SOURCE_SIDE
        {
            return Err(Error::invalid(
                what(),
                format!(
                    "size {}x{} (each side must be in 1..{MAX_SOURCE_SIDE})",
                    img.height, img.width
                ),
            ));
        }
        let (h, w, c) = (img.height as u64, img.width as u64, img.channels as u64);
        if h * w * c != img.data.len() as u64 {
            return Err(Error::invalid(
                what(),
                format!(
                    "{} bytes of pixels for {h}x{w}x{c} (expected {})",
                    img.data.len(),
                    h * w * c
                ),
            ));
        }
        if (h + 1) * (w + 1) * c >= 1 << 31 {
            return Err(Error::invalid(
                what(),
                format!("{h}x{w}x{c} is too large for one image (2^31 bytes)"),
            ));
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::*;

    #[test]
    fn batches_are_checked_before_any_cuda_call() {
        let px = vec![0u8; 4 * 5 * 3];
        let img = ImageView {
            height: 4,
            width: 5,
            channels: 3,
            data: &px,
        };
        let p = [SampleParams::IDENTITY];
        assert_eq!(check_batch(&[img], &p, &[0], &spec(3)).unwrap(), 1);
        // lengths disagree
        assert!(check_batch(&[img], &p, &[0, 1], &spec(3)).is_err());
        assert!(check_batch(&[], &[], &[], &spec(3)).is_err());
        // channels differ from the spec
        assert!(check_batch(&[img], &p, &[0], &spec(1)).is_err());
        // data length lies
        let short = ImageView {
            data: &px[1..],
            ..img
        };
        assert!(check_batch(&[short], &p, &[0], &spec(3)).is_err());
        let empty = ImageView {
            height: 0,
            data: &[],
            ..img
        };
        assert!(check_batch(&[empty], &p, &[0], &spec(3)).is_err());
        let huge = ImageView {
            height: MAX_SOURCE_SIDE,
            ..img
        };
        assert!(check_batch(&[huge], &p, &[0], &spec(3)).is_err());
        // invalid spec
        let mut bad = spec(3);
        bad.std[1] = 0.0;
        assert!(check_batch(&[img], &p, &[0], &bad).is_err());
    }
}

//! The scalar reference: [`augment_reference`] and its window variant,
//! one output element at a time straight from the contract's formulas.

use super::sampler::{sample_at, Sampler};
use super::{check_args, check_window};
use crate::decode::ImageView;
use crate::ops::geometry::{SampleParams, Size, SourceWindow};
use crate::ops::output::{write_run, OutputSpec};
use crate::ops::philox::PhiloxStream;

#[cfg(doc)]
use super::{augment_into, augment_window_into};

/// The scalar reference: the same result as [`augment_into`], computed one
/// output element at a time straight from the contract's formulas (slow; for
/// tests and for checking other implementations).
///
/// # Panics
/// As [`augment_into`].
pub fn augment_reference(
    src: ImageView<'_>,
    params: &SampleParams,
    noise: PhiloxStream,
    spec: &OutputSpec,
    out: &mut [u8],
) {
    augment_window_reference(
        src,
        &SourceWindow::whole(src.size()),
        params,
        noise,
        spec,
        out,
    )
}

/// [`augment_reference`] from a window of the source image, as
/// [`augment_window_into`] (slow; for tests).
///
/// # Panics
/// As [`augment_window_into`].
pub fn augment_window_reference(
    src: ImageView<'_>,
    window: &SourceWindow,
    params: &SampleParams,
    noise: PhiloxStream,
    spec: &OutputSpec,
    out: &mut [u8],
) {
    check_args(&src, spec, out);
    let origin = check_window(&src, window);
    let m = window.matrix(&params.geometry, spec.size);
    let sampler = Sampler::new(&src, &m, origin);
    let Size {
        height: h_out,
        width: w_out,
    } = spec.size;
    let g = params.flip;
    let dsize = spec.dtype.size();
    for c in 0..spec.channels {
        for i in 0..h_out {
            for j in 0..w_out {
                let (ci, iu, ju) = (c as usize, i as usize, j as usize);
                let mirror = (w_out - 1 - j) as usize;
                let mut s = if g == 0.0 {
                    sample_at(&sampler, ci, iu, ju)
                } else if g == 1.0 {
                    sample_at(&sampler, ci, iu, mirror)
                } else {
                    (1.0 - g) * sample_at(&sampler, ci, iu, ju)
                        + g * sample_at(&sampler, ci, iu, mirror)
                };
                if params.sigma > 0.0 {
                    let e = (c as u64 * h_out as u64 + i as u64) * w_out as u64 + j as u64;
                    s += params.sigma * noise.normals((e / 4) as u32)[(e % 4) as usize];
                }
                let y = (s - spec.mean[ci]) / spec.std[ci];
                let k = spec.layout.offset(spec.size, spec.channels, c, i, j) * dsize;
                write_run(&[y], spec.dtype, 1, &mut out[k..k + dsize]);
            }
        }
    }
}

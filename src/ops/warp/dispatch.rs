//! The fast path: [`augment_into`], [`augment_window_into`] and the portable
//! build for tests, the run-time dispatch between the CPU builds (AVX-512,
//! AVX2, portable), and the row-by-row body the AVX2 and portable builds
//! share.

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::sampler::{Plane, Sampler};
use super::scratch::{Scratch, SCRATCH};
use super::{check_args, check_window};
use crate::decode::ImageView;
use crate::ops::geometry::{SampleParams, SourceWindow};
use crate::ops::noise::fill_normals;
use crate::ops::output::{write_run, Layout, OutputSpec};
use crate::ops::philox::PhiloxStream;

#[cfg(doc)]
use super::augment_reference;

/// Writes one augmented sample (exactly `spec.sample_bytes()` bytes) into
/// `out`. `noise` is the sample's [`STREAM_NOISE`](crate::ops::philox::STREAM_NOISE)
/// stream; it is only used when `params.sigma > 0`.
///
/// The result is bit for bit that of [`augment_reference`] except for the
/// noise, drawn by the vectorised [`fill_normals`] (within
/// [`MAX_NORMAL_ERROR`](crate::ops::noise::MAX_NORMAL_ERROR) of
/// `PhiloxStream::normals` per element). On x86-64 CPUs with AVX2 a second
/// build of the same code is picked at run time, which also samples eight
/// columns at a time with gathers (same operations, no FMA: the same bits).
///
/// `spec` should have passed [`OutputSpec::validate`].
///
/// # Panics
/// If `src.channels != spec.channels`, `src.data` does not hold
/// `height × width × channels` bytes, `spec` has not one mean and std per
/// channel, or `out.len() != spec.sample_bytes()`: caller bugs, not data
/// errors.
pub fn augment_into(
    src: ImageView<'_>,
    params: &SampleParams,
    noise: PhiloxStream,
    spec: &OutputSpec,
    out: &mut [u8],
) {
    augment_window_into(
        src,
        &SourceWindow::whole(src.size()),
        params,
        noise,
        spec,
        out,
    )
}

/// [`augment_into`] for a sample whose decoded pixels `src` are a window of
/// its source image (see [`SourceWindow`]): the map is the whole image's
/// (scaled when `window.shrink > 0`) and taps are read from the window.
/// Taps outside the window read zero, as outside the image: a window that
/// holds every pixel the map reads inside the image (see
/// [`footprint`](crate::ops::geometry::footprint)) gives, with
/// `shrink = 0`, bit for bit the sample of the whole image.
///
/// # Panics
/// As [`augment_into`], and if the window does not lie inside its frame.
pub fn augment_window_into(
    src: ImageView<'_>,
    window: &SourceWindow,
    params: &SampleParams,
    noise: PhiloxStream,
    spec: &OutputSpec,
    out: &mut [u8],
) {
    check_args(&src, spec, out);
    let origin = check_window(&src, window);
    if spec.sample_elements() == 0 {
        return;
    }
    let m = window.matrix(&params.geometry, spec.size);
    #[cfg(target_arch = "x86_64")]
    if avx512::handles(&src, params, spec) && avx512::available() {
        // SAFETY: both conditions of `avx512::augment` were just checked.
        unsafe { avx512::augment(&src, &m, origin, params, &noise, spec, out) };
        return;
    }
    SCRATCH.with(|cell| {
        let scratch = &mut cell.borrow_mut();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `augment_avx2` only requires AVX2, which the CPU was
            // just found to support.
            unsafe { augment_avx2(&src, &m, origin, params, &noise, spec, out, scratch) };
            return;
        }
        augment_body::<false>(&src, &m, origin, params, &noise, spec, out, scratch);
    });
}

/// [`augment_into`] without the AVX2 code (the path of CPUs without it), so
/// that tests can check it on any machine.
#[doc(hidden)]
pub fn augment_into_portable(
    src: ImageView<'_>,
    params: &SampleParams,
    noise: PhiloxStream,
    spec: &OutputSpec,
    out: &mut [u8],
) {
    check_args(&src, spec, out);
    if spec.sample_elements() == 0 {
        return;
    }
    let m = SourceWindow::whole(src.size()).matrix(&params.geometry, spec.size);
    SCRATCH.with(|cell| {
        augment_body::<false>(
            &src,
            &m,
            [0, 0],
            params,
            &noise,
            spec,
            out,
            &mut cell.borrow_mut(),
        )
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn augment_avx2(
    src: &ImageView<'_>,
    m: &[f32; 6],
    origin: [i32; 2],
    params: &SampleParams,
    noise: &PhiloxStream,
    spec: &OutputSpec,
    out: &mut [u8],
    scratch: &mut Scratch,
) {
    augment_body::<true>(src, m, origin, params, noise, spec, out, scratch)
}

/// The whole sample, row by row. `AVX2` is true only when called from
/// [`augment_avx2`], i.e. on a CPU with AVX2.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn augment_body<const AVX2: bool>(
    src: &ImageView<'_>,
    m: &[f32; 6],
    origin: [i32; 2],
    params: &SampleParams,
    noise: &PhiloxStream,
    spec: &OutputSpec,
    out: &mut [u8],
    scratch: &mut Scratch,
) {
    let (h_out, w_out) = (spec.size.height as usize, spec.size.width as usize);
    let c_n = spec.channels as usize;
    let g = params.flip;
    let blend = g != 0.0 && g != 1.0;
    let sigma = params.sigma;
    let dsize = spec.dtype.size();
    scratch.reserve(c_n, w_out);
    let sampler = Sampler::new(src, m, origin);
    for i in 0..h_out {
        if blend {
            sampler.row::<AVX2>(i, w_out, false, scratch, Plane::Sampled);
            let (rows, sampled) = (&mut scratch.rows, &scratch.sampled);
            for c in 0..c_n {
                let s = &sampled[c * w_out..(c + 1) * w_out];
                let r = &mut rows[c * w_out..(c + 1) * w_out];
                for j in 0..w_out {
                    r[j] = (1.0 - g) * s[j] + g * s[w_out - 1 - j];
                }
            }
        } else {
            sampler.row::<AVX2>(i, w_out, g == 1.0, scratch, Plane::Rows);
        }
        for c in 0..c_n {
            let r = &mut scratch.rows[c * w_out..(c + 1) * w_out];
            if sigma > 0.0 {
                let eps = &mut scratch.eps[..w_out];
                fill_normals(noise, ((c * h_out + i) * w_out) as u64, eps);
                for (s, z) in r.iter_mut().zip(eps.iter()) {
                    *s += sigma * *z;
                }
            }
            let (mean, std) = (spec.mean[c], spec.std[c]);
            for s in r.iter_mut() {
                *s = (*s - mean) / std;
            }
            let (start, stride) = match spec.layout {
                Layout::Nchw => ((c * h_out + i) * w_out, 1),
                Layout::Nhwc => (i * w_out * c_n + c, c_n),
            };
            let start = start * dsize;
            let end = start + ((w_out - 1) * stride + 1) * dsize;
            write_run(r, spec.dtype, stride, &mut out[start..end]);
        }
    }
}

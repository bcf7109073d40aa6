//! The fused augmentation: one inverse affine map, one bilinear sample per
//! output pixel, the flip gate, Gaussian noise, normalisation and conversion,
//! written straight into the output slice.
//!
//! The arithmetic is the contract's, in f32 and in this order, with no fused
//! multiply-add anywhere (the CUDA kernels must mirror it: NVRTC contracts
//! `a*b + c` into an FMA unless told `--fmad=false` or written with
//! `__fmul_rn`/`__fadd_rn`):
//!
//! 1. `m = affine_matrix(&params.geometry, src_size, spec.size)`;
//!    `x = m[0]*j + m[1]*i + m[2]`, `y = m[3]*j + m[4]*i + m[5]`
//!    (left to right: `(m[0]*j + m[1]*i) + m[2]`).
//! 2. `x0 = floor(x)`, `y0 = floor(y)`, `fx = x - x0`, `fy = y - y0`,
//!    `v = (1-fy)*((1-fx)*p00 + fx*p01) + fy*((1-fx)*p10 + fx*p11)` with
//!    pixels `u8 / 255.0`, zero outside the image.
//! 3. `s = (1-g)*S(i, j) + g*S(i, W_out-1-j)`; one `S` when `g` is 0 or 1.
//! 4. If `sigma > 0`: `s = s + sigma*eps[e]`, `e = (c*H_out + i)*W_out + j`.
//! 5. `y = (s - mean[c]) / std[c]` (a division, not a product by `1/std`).
//! 6. Convert (see [`crate::ops::output`]).
//!
//! [`augment_into`] is the fast path, row by row, in per-thread scratch
//! buffers reused from sample to sample (no allocation per sample once they
//! have grown):
//! - the source coordinates, fractions and corners of every column of the row
//!   (`m[1]*i` and `m[4]*i` computed once per row, the rest vectorised; a
//!   per-pixel sum, never an accumulated step, so no rounding drift);
//! - the four neighbours of each column: eight columns at a time with AVX2
//!   gathers and one `vdivps` per tap when all eight are inside the image,
//!   else column by column (a 256-entry table for `u8 / 255.0`, checked
//!   loads at the border, zeros outside);
//! - the flip (sampling mirrored columns, or blending two rows for `0 < g < 1`),
//!   noise drawn eight Philox blocks at a time ([`fill_normals`]),
//!   normalisation, and conversion written straight into `out`.
//!
//! On CPUs with AVX-512 (F, BW, VBMI) the most common job, a three-channel
//! image to f32 NCHW with a flip gate of 0 or 1, takes a third build fused
//! end to end, sixteen pixels at a time (`warp/avx512.rs`); it gives the
//! same bits as the portable build (tested).
//!
//! [`augment_reference`] evaluates the same formulas one element at a time,
//! literally (slow). Without noise the two agree bit for bit, on the AVX2
//! build and on the portable one; with noise they differ only by the
//! last-bit rounding of the fast Box–Muller (see [`crate::ops::noise`]).

mod arith;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod dispatch;
mod reference;
mod sampler;
mod scratch;

use crate::decode::ImageView;
use crate::ops::geometry::SourceWindow;
use crate::ops::output::OutputSpec;

#[cfg(doc)]
use crate::ops::noise::fill_normals;

#[doc(hidden)]
pub use dispatch::augment_into_portable;
pub use dispatch::{augment_into, augment_window_into};
pub use reference::{augment_reference, augment_window_reference};

// The AVX-512 build (`avx512`, `avx512/axis_aligned`) reaches these as
// `super::` and `crate::ops::warp::`.
#[cfg(target_arch = "x86_64")]
pub(crate) use arith::floor;
#[cfg(target_arch = "x86_64")]
use arith::unit;
#[cfg(target_arch = "x86_64")]
use sampler::sample_at3;
#[cfg(target_arch = "x86_64")]
pub(crate) use sampler::Sampler;

fn check_args(src: &ImageView<'_>, spec: &OutputSpec, out: &[u8]) {
    assert_eq!(
        src.channels, spec.channels,
        "source has {} channels, output spec {}",
        src.channels, spec.channels
    );
    assert_eq!(
        src.data.len() as u64,
        src.height as u64 * src.width as u64 * src.channels as u64,
        "source data length does not match its shape"
    );
    assert!(
        spec.mean.len() == spec.channels as usize && spec.std.len() == spec.channels as usize,
        "one mean and one std per channel"
    );
    assert_eq!(out.len(), spec.sample_bytes(), "output slice length");
}

/// The window's origin as i32, checked to lie (with the pixels) inside its
/// frame, whose sides are below 2^24 so that every coordinate is exact in f32.
fn check_window(src: &ImageView<'_>, window: &SourceWindow) -> [i32; 2] {
    if let Err(e) = window.check(src.size()) {
        panic!("{e}");
    }
    window.origin.map(|o| o as i32)
}

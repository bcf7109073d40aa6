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

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
mod avx512;

use crate::decode::ImageView;
use crate::ops::geometry::{SampleParams, Size, SourceWindow};
use crate::ops::noise::fill_normals;
use crate::ops::output::{write_run, Layout, OutputSpec};
use crate::ops::philox::PhiloxStream;

/// `UNIT[v] = v as f32 / 255.0`: a source byte in [0, 1], bit for bit the
/// contract's division (a table look-up instead of four divisions a tap).
static UNIT: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut v = 0;
    while v < 256 {
        t[v] = v as f32 / 255.0;
        v += 1;
    }
    t
};

/// A source byte in [0, 1]: `v as f32 / 255.0`.
#[inline(always)]
fn unit(v: u8) -> f32 {
    UNIT[v as usize]
}

/// Per-thread buffers, grown to the largest row seen and then reused.
#[derive(Default)]
struct Scratch {
    /// The row being built, C planes of `W_out`.
    rows: Vec<f32>,
    /// Unflipped samples, for a blended flip.
    sampled: Vec<f32>,
    /// One channel's noise.
    eps: Vec<f32>,
    /// Per output column: `fx`, `fy`.
    fx: Vec<f32>,
    fy: Vec<f32>,
    /// Per output column: the corner `x0`, `y0` (saturated at ±2^30).
    x0: Vec<i32>,
    y0: Vec<i32>,
    /// Per output column: the byte offset of the top-left neighbour when all
    /// four neighbours are inside (with [`GATHER_MARGIN`] bytes to spare
    /// after the bottom-right one), else -1.
    off: Vec<i32>,
}

/// Bytes that may be read past the bottom-right neighbour's last channel by
/// a 4-byte load at the neighbour's offset.
const GATHER_MARGIN: usize = 4;

impl Scratch {
    fn reserve(&mut self, c: usize, w: usize) {
        fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
            if v.len() < n {
                v.resize(n, T::default());
            }
        }
        grow(&mut self.rows, c * w);
        grow(&mut self.sampled, c * w);
        grow(&mut self.eps, w);
        grow(&mut self.fx, w);
        grow(&mut self.fy, w);
        grow(&mut self.x0, w);
        grow(&mut self.y0, w);
        grow(&mut self.off, w);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

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

/// The window's origin as i32, checked to lie (with the pixels) inside its
/// frame, whose sides are below 2^24 so that every coordinate is exact in f32.
fn check_window(src: &ImageView<'_>, window: &SourceWindow) -> [i32; 2] {
    if let Err(e) = window.check(src.size()) {
        panic!("{e}");
    }
    window.origin.map(|o| o as i32)
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
fn augment_body<const AVX2: bool>(
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

/// Which scratch plane a sampled row goes to.
#[derive(Clone, Copy)]
enum Plane {
    Rows,
    Sampled,
}

/// Bilinear sampling of one source window through one affine map: the
/// map's integer corners are moved by the window's origin, the fractions
/// are the map's own, and taps outside the window read zero.
pub(crate) struct Sampler<'a> {
    data: &'a [u8],
    w: i64,
    h: i64,
    c: usize,
    m: [f32; 6],
    /// The window's top-left in the map's frame (`[x, y]`, below 2^24).
    origin: [i32; 2],
}

impl<'a> Sampler<'a> {
    pub(crate) fn new(src: &ImageView<'a>, m: &[f32; 6], origin: [i32; 2]) -> Self {
        Sampler {
            data: src.data,
            w: src.width as i64,
            h: src.height as i64,
            c: src.channels as usize,
            m: *m,
            origin,
        }
    }

    /// Samples output row `i` into `plane` (C planes of `w_out`); with
    /// `mirror`, column `j` holds the sample of column `w_out - 1 - j`.
    #[inline(always)]
    fn row<const AVX2: bool>(
        &self,
        i: usize,
        w_out: usize,
        mirror: bool,
        s: &mut Scratch,
        plane: Plane,
    ) {
        // Offsets are kept in i32 and corners saturate at ±2^30: images of
        // 2^31 bytes or 2^30 pixels a side (never produced by `decode`) take
        // the element-by-element path.
        if self.data.len() >= i32::MAX as usize || self.w >= 1 << 30 || self.h >= 1 << 30 {
            let dst = match plane {
                Plane::Rows => &mut s.rows,
                Plane::Sampled => &mut s.sampled,
            };
            for j in 0..w_out {
                let jj = if mirror { w_out - 1 - j } else { j };
                for c in 0..self.c {
                    dst[c * w_out + j] = sample_at(self, c, i, jj);
                }
            }
            return;
        }
        self.coords(i, w_out, mirror, s);
        match self.c {
            1 => self.blend_row::<1, AVX2>(w_out, s, plane),
            3 => self.blend_row::<3, AVX2>(w_out, s, plane),
            _ => {
                let dst = match plane {
                    Plane::Rows => &mut s.rows,
                    Plane::Sampled => &mut s.sampled,
                };
                for j in 0..w_out {
                    for c in 0..self.c {
                        let p = |dy, dx| self.pixel(c, s.y0[j] as i64 + dy, s.x0[j] as i64 + dx);
                        dst[c * w_out + j] =
                            bilinear(s.fx[j], s.fy[j], p(0, 0), p(0, 1), p(1, 0), p(1, 1));
                    }
                }
            }
        }
    }

    /// Step 1 for a row: source coordinates, fractions, integer corners and
    /// the interior offset of each output column (vectorisable).
    #[inline(always)]
    fn coords(&self, i: usize, w_out: usize, mirror: bool, s: &mut Scratch) {
        let m = &self.m;
        let fi = i as f32;
        let (bx, by) = (m[1] * fi, m[4] * fi);
        let (w, h) = (self.w as i32, self.h as i32);
        let [ox, oy] = self.origin;
        let cc = self.c as i32;
        // The last offset with GATHER_MARGIN bytes after its bottom-right
        // neighbour's channels: o + (w + 1)·C + MARGIN <= len.
        let last = self.data.len() as i64 - (self.w + 1) * self.c as i64 - GATHER_MARGIN as i64;
        let last = last.clamp(-1, i32::MAX as i64) as i32;
        let (fx, fy) = (&mut s.fx[..w_out], &mut s.fy[..w_out]);
        let (x0s, y0s, off) = (&mut s.x0[..w_out], &mut s.y0[..w_out], &mut s.off[..w_out]);
        // Column j samples source column jj = j, or w_out-1-j when mirrored
        // (exact in f32: integers below 2^24).
        let (j0, dj) = if mirror {
            ((w_out - 1) as f32, -1.0f32)
        } else {
            (0.0, 1.0)
        };
        for j in 0..w_out {
            let fj = j0 + dj * (j as i32 as f32);
            let x = m[0] * fj + bx + m[2];
            let y = m[3] * fj + by + m[5];
            let (xf, yf) = (floor(x), floor(y));
            fx[j] = x - xf;
            fy[j] = y - yf;
            // corners saturate at ±2^30 and origins are below 2^24: no wrap
            let (x0, y0) = (corner(xf) - ox, corner(yf) - oy);
            x0s[j] = x0;
            y0s[j] = y0;
            let inside = x0 >= 0 && y0 >= 0 && x0 < w - 1 && y0 < h - 1;
            // in range: inside means y0·w + x0 < w·h, and w·h·C < 2^31
            let o = (y0.wrapping_mul(w).wrapping_add(x0)).wrapping_mul(cc);
            off[j] = if inside && o <= last { o } else { -1 };
        }
    }

    /// Steps 2 for a row: the four neighbours of every column, blended.
    #[inline(always)]
    fn blend_row<const C: usize, const AVX2: bool>(
        &self,
        w_out: usize,
        s: &mut Scratch,
        plane: Plane,
    ) {
        let dst = match plane {
            Plane::Rows => &mut s.rows,
            Plane::Sampled => &mut s.sampled,
        };
        let (fx, fy, off) = (&s.fx[..w_out], &s.fy[..w_out], &s.off[..w_out]);
        let (x0, y0) = (&s.x0[..w_out], &s.y0[..w_out]);
        let mut j = 0;
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            let stride = self.w as usize * C;
            while j + 8 <= w_out {
                if off[j..j + 8].iter().all(|o| *o >= 0) {
                    // SAFETY: AVX2 is available (AVX2 is only true inside
                    // `augment_avx2`); every offset is >= 0 and, by
                    // `coords`, a 4-byte load at o + stride + C stays inside
                    // `data`, which bounds every gather; `j + 8 <= w_out`
                    // bounds the reads of fx/fy/off and the writes to dst.
                    unsafe { avx2::blend8::<C>(self.data, stride, off, fx, fy, dst, w_out, j) };
                } else {
                    for jj in j..j + 8 {
                        self.blend_one::<C>(
                            jj, w_out, off[jj], x0[jj], y0[jj], fx[jj], fy[jj], dst,
                        );
                    }
                }
                j += 8;
            }
        }
        for jj in j..w_out {
            self.blend_one::<C>(jj, w_out, off[jj], x0[jj], y0[jj], fx[jj], fy[jj], dst);
        }
    }

    /// One column: its four neighbours (straight loads inside, checked at
    /// the border, zeros outside) blended into `dst[c·w_out + j]`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn blend_one<const C: usize>(
        &self,
        j: usize,
        w_out: usize,
        o: i32,
        x0: i32,
        y0: i32,
        fx: f32,
        fy: f32,
        dst: &mut [f32],
    ) {
        let mut p = [[0.0f32; C]; 4];
        if o >= 0 {
            let o = o as usize;
            let stride = self.w as usize * C;
            let top = &self.data[o..o + 2 * C];
            let bot = &self.data[o + stride..o + stride + 2 * C];
            for c in 0..C {
                p[0][c] = unit(top[c]);
                p[1][c] = unit(top[C + c]);
                p[2][c] = unit(bot[c]);
                p[3][c] = unit(bot[C + c]);
            }
        } else {
            let (x0, y0) = (x0 as i64, y0 as i64);
            let outside = x0 < -1 || y0 < -1 || x0 >= self.w || y0 >= self.h;
            if !outside {
                for (pk, (dy, dx)) in p.iter_mut().zip([(0, 0), (0, 1), (1, 0), (1, 1)]) {
                    for (c, v) in pk.iter_mut().enumerate() {
                        *v = self.pixel(c, y0 + dy, x0 + dx);
                    }
                }
            }
        }
        for c in 0..C {
            dst[c * w_out + j] = bilinear(fx, fy, p[0][c], p[1][c], p[2][c], p[3][c]);
        }
    }

    /// Pixel `(y, x)` of channel `c` in [0, 1], zero outside the image.
    #[inline(always)]
    fn pixel(&self, c: usize, y: i64, x: i64) -> f32 {
        if x < 0 || y < 0 || x >= self.w || y >= self.h {
            0.0
        } else {
            unit(self.data[(y as usize * self.w as usize + x as usize) * self.c + c])
        }
    }
}

/// Eight columns at once with AVX2 gathers.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Eight bytes (in i32 lanes) to `v as f32 / 255.0`: the contract's
    /// division itself, eight at a time (faster here than the table look-up
    /// of the scalar path, and than a product in f64).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unit8(v: __m256i) -> __m256 {
        _mm256_div_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(255.0))
    }

    /// Byte `k` (0..4) of each i32 lane, as [`unit8`].
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn byte(v: __m256i, k: usize) -> __m256 {
        let shifted = _mm256_srlv_epi32(v, _mm256_set1_epi32(8 * k as i32));
        unit8(_mm256_and_si256(shifted, _mm256_set1_epi32(0xff)))
    }

    /// Four bytes at `base + o[l] + delta` for the 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn gather(base: *const u8, o: __m256i, delta: usize) -> __m256i {
        let idx = _mm256_add_epi32(o, _mm256_set1_epi32(delta as i32));
        _mm256_i32gather_epi32::<1>(base as *const i32, idx)
    }

    /// Columns `j..j + 8` of a row: neighbours gathered, converted and
    /// blended with the contract's formula, written to `dst[c·w_out + j..]`.
    ///
    /// # Safety
    /// AVX2 must be available; `j + 8 <= w_out` with `off`, `fx`, `fy` at
    /// least `w_out` long and `dst` at least `C·w_out`; every `off[j..j+8]`
    /// is >= 0 with `off + stride + C + 4 <= data.len()`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn blend8<const C: usize>(
        data: &[u8],
        stride: usize,
        off: &[i32],
        fx: &[f32],
        fy: &[f32],
        dst: &mut [f32],
        w_out: usize,
        j: usize,
    ) {
        debug_assert!(j + 8 <= w_out && off.len() >= w_out && dst.len() >= C * w_out);
        let base = data.as_ptr();
        let o = _mm256_loadu_si256(off.as_ptr().add(j) as *const __m256i);
        // Lane bytes: top0 = p00 channels (+ next), top1 = p01 channels.
        let top0 = gather(base, o, 0);
        let top1 = gather(base, o, C);
        let bot0 = gather(base, o, stride);
        let bot1 = gather(base, o, stride + C);
        let fx = _mm256_loadu_ps(fx.as_ptr().add(j));
        let fy = _mm256_loadu_ps(fy.as_ptr().add(j));
        let one = _mm256_set1_ps(1.0);
        let (gx, gy) = (_mm256_sub_ps(one, fx), _mm256_sub_ps(one, fy));
        for c in 0..C {
            let (p00, p01) = (byte(top0, c), byte(top1, c));
            let (p10, p11) = (byte(bot0, c), byte(bot1, c));
            // (1-fy)*((1-fx)*p00 + fx*p01) + fy*((1-fx)*p10 + fx*p11)
            let t = _mm256_add_ps(_mm256_mul_ps(gx, p00), _mm256_mul_ps(fx, p01));
            let b = _mm256_add_ps(_mm256_mul_ps(gx, p10), _mm256_mul_ps(fx, p11));
            let v = _mm256_add_ps(_mm256_mul_ps(gy, t), _mm256_mul_ps(fy, b));
            _mm256_storeu_ps(dst.as_mut_ptr().add(c * w_out + j), v);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn unit8_is_the_division_for_every_byte() {
            if !std::arch::is_x86_feature_detected!("avx2") {
                eprintln!("no AVX2 on this CPU: skipped");
                return;
            }
            for v0 in (0..256).step_by(8) {
                let lanes: [i32; 8] = std::array::from_fn(|l| (v0 + l) as i32);
                let mut got = [0f32; 8];
                // SAFETY: AVX2 checked above; 8 lanes read and written.
                unsafe {
                    let v = _mm256_loadu_si256(lanes.as_ptr() as *const __m256i);
                    _mm256_storeu_ps(got.as_mut_ptr(), unit8(v));
                }
                for l in 0..8 {
                    assert_eq!(got[l], lanes[l] as f32 / 255.0, "{}", lanes[l]);
                }
            }
        }
    }
}

/// `x.floor()`, bit for bit (signed zero, infinities and NaN included),
/// without the libm call that `floor` is on baseline x86-64, and in a form
/// the compiler vectorises (selects, no saturating casts).
#[inline(always)]
pub(crate) fn floor(x: f32) -> f32 {
    // From 2^23 on every f32 is an integer (and NaN fails the test).
    let small = x.abs() < 8_388_608.0;
    let xc = if small { x } else { 0.0 };
    // SAFETY: |xc| < 2^23, so it is finite and in i32's range.
    let t = unsafe { xc.to_int_unchecked::<i32>() } as f32;
    let t = if t > xc { t - 1.0 } else { t.copysign(xc) };
    if small {
        t
    } else {
        x
    }
}

/// An integral `xf` (a [`floor`] result) as i32, saturated to ±2^30; NaN
/// gives -2^30. Either way such a corner is far outside any image.
#[inline(always)]
fn corner(xf: f32) -> i32 {
    const LIM: f32 = 1_073_741_824.0;
    // Not `clamp`: `clamp` keeps NaN, `max` turns it into -LIM.
    #[allow(clippy::manual_clamp)]
    let c = xf.max(-LIM).min(LIM);
    // SAFETY: `max`/`min` return the non-NaN operand, so c is in [-2^30, 2^30].
    unsafe { c.to_int_unchecked::<i32>() }
}

/// The contract's bilinear blend of four neighbours.
#[inline(always)]
fn bilinear(fx: f32, fy: f32, p00: f32, p01: f32, p10: f32, p11: f32) -> f32 {
    (1.0 - fy) * ((1.0 - fx) * p00 + fx * p01) + fy * ((1.0 - fx) * p10 + fx * p11)
}

/// The bilinear neighbourhood of output pixel `(i, j)`, literally as the
/// contract writes it: fractions `fx`, `fy` and the top-left corner `x0`,
/// `y0` (saturated as i64; [`floor`] is `f32::floor` bit for bit).
fn neighbourhood(s: &Sampler<'_>, i: usize, j: usize) -> (f32, f32, i64, i64) {
    let m = &s.m;
    let (fj, fi) = (j as f32, i as f32);
    let x = m[0] * fj + m[1] * fi + m[2];
    let y = m[3] * fj + m[4] * fi + m[5];
    let (xf, yf) = (floor(x), floor(y));
    let [ox, oy] = s.origin.map(i64::from);
    (
        x - xf,
        y - yf,
        (xf as i64).saturating_sub(ox),
        (yf as i64).saturating_sub(oy),
    )
}

/// The contract's blend of channel `c` over a [`neighbourhood`].
fn sample_channel(s: &Sampler<'_>, c: usize, (fx, fy, x0, y0): (f32, f32, i64, i64)) -> f32 {
    let (x1, y1) = (x0.saturating_add(1), y0.saturating_add(1));
    bilinear(
        fx,
        fy,
        s.pixel(c, y0, x0),
        s.pixel(c, y0, x1),
        s.pixel(c, y1, x0),
        s.pixel(c, y1, x1),
    )
}

/// `S_c(i, j)`: the bilinear sample of channel `c` for output pixel `(i, j)`.
fn sample_at(s: &Sampler<'_>, c: usize, i: usize, j: usize) -> f32 {
    sample_channel(s, c, neighbourhood(s, i, j))
}

/// `[S_0(i, j), S_1(i, j), S_2(i, j)]`: [`sample_at`] for the three channels
/// of a pixel, its neighbourhood computed once.
fn sample_at3(s: &Sampler<'_>, i: usize, j: usize) -> [f32; 3] {
    let n = neighbourhood(s, i, j);
    std::array::from_fn(|c| sample_channel(s, c, n))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_matches_std() {
        let specials = [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            8_388_607.5,
            -8_388_607.5,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
        ];
        for x in specials {
            assert_eq!(floor(x).to_bits(), x.floor().to_bits(), "{x}");
        }
        assert!(floor(f32::NAN).is_nan());
        let mut bits = 0u32;
        while let Some(b) = bits.checked_add(7919) {
            let x = f32::from_bits(b);
            if !x.is_nan() {
                assert_eq!(floor(x).to_bits(), x.floor().to_bits(), "{x}");
            }
            bits = b;
        }
    }
}

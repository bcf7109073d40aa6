//! The warp for the most common job, fused end to end with AVX-512: a
//! three-channel byte image to f32 NCHW output, flip gate 0 or 1. Sixteen
//! output pixels at a time go from source coordinates to normalised floats
//! stored in the output planes without touching a scratch row.
//!
//! Axis-aligned maps (crop, flip and resize, no rotation) are done
//! separably, each source row blended horizontally once ([`axis_aligned`]).
//! Other maps go block by block:
//!
//! - coordinates, `floor`, fractions and corners as in `Sampler::coords`;
//! - the two source rows of each pixel's neighbourhood read as one 8-byte
//!   word each (`R G B` of the left neighbour, `R G B` of the right one):
//!   from one 128-byte window per row when the sixteen words of a row fit
//!   in it, else by plain loads when every pixel's neighbours are inside,
//!   else by masked 64-bit gathers; then spread to one pixel per 32-bit
//!   lane and channel by byte permutes (`vpermt2b`, AVX-512 VBMI);
//! - `u8 / 255.0`, the bilinear blend, `+ sigma·eps`, `(s - mean) / std`:
//!   the contract's operations in its order, no FMA, so every value is bit
//!   for bit the portable build's.
//!
//! Pixels with every neighbour outside the image are zeros in the same
//! formula; pixels on the border (some neighbours in, some out, or too close
//! to the end of the buffer for an 8-byte read) are masked off the gathers
//! and then computed one element at a time with the reference formulas, as
//! are the last `W_out % 16` pixels of a row. Other jobs (one channel,
//! u8/f16, NHWC, a blended flip) take the general path.
//!
//! Large samples in cache-line aligned buffers (a loader batch) are written
//! with streaming stores, whole lines only.

use std::arch::x86_64::*;
use std::cell::RefCell;

mod axis_aligned;

use axis_aligned::Separable;

use super::{sample_at3, Sampler};
use crate::decode::ImageView;
use crate::ops::geometry::SampleParams;
use crate::ops::noise::fill_normals;
use crate::ops::output::{DType, Layout, OutputSpec};
use crate::ops::philox::PhiloxStream;

/// Rows of noise drawn at once per channel.
const NOISE_ROWS: usize = 8;

/// Samples at least this large are written with streaming stores.
const STREAM_MIN_BYTES: usize = 256 << 10;

thread_local! {
    /// NOISE_ROWS rows of noise per channel, reused from sample to sample.
    static EPS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether [`augment`] takes this job (the CPU check aside).
pub(super) fn handles(src: &ImageView<'_>, params: &SampleParams, spec: &OutputSpec) -> bool {
    src.channels == 3
        && spec.channels == 3
        && spec.dtype == DType::F32
        && spec.layout == Layout::Nchw
        && (params.flip == 0.0 || params.flip == 1.0)
        && spec.size.width >= 16
        // offsets and their 8-byte reads stay well inside i32, and every
        // pixel coordinate is exact in f32
        && src.data.len() < (i32::MAX as usize) / 2
        && src.width < 1 << 24
        && src.height < 1 << 24
}

/// Whether this CPU runs [`augment`].
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vbmi")
}

/// The whole sample; `out` is `spec.sample_bytes()` long (checked by the
/// caller, as is the rest of `check_args`).
///
/// # Safety
/// [`available`] and [`handles`] must hold.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub(super) unsafe fn augment(
    src: &ImageView<'_>,
    m: &[f32; 6],
    origin: [i32; 2],
    params: &SampleParams,
    noise: &PhiloxStream,
    spec: &OutputSpec,
    out: &mut [u8],
) {
    let m = *m;
    let sampler = Sampler::new(src, &m, origin);
    let (h_out, w_out) = (spec.size.height as usize, spec.size.width as usize);
    let (w, h) = (src.width as i32, src.height as i32);
    let stride = src.width as usize * 3;
    let sigma = params.sigma;
    let mirror = params.flip == 1.0;
    // An 8-byte read at o + stride must end inside the image.
    let last = src.data.len() as i64 - stride as i64 - 8;
    let consts = Consts::new(&m, origin, mirror, w_out, w, h, last, stride);
    // Streaming stores for large samples: their batch is far bigger than
    // any cache, so a normal store's read of each output line is wasted
    // and evicts the decoder's working set. Only whole aligned lines are
    // streamed (rows start on a line, and border lanes are fixed up in
    // registers before the store), so no line is written both ways.
    let stream = (out.as_ptr() as usize).is_multiple_of(64)
        && w_out.is_multiple_of(16)
        && out.len() >= STREAM_MIN_BYTES;
    let mut separable = Separable::plan(
        src.data,
        (w, h),
        &m,
        origin,
        (consts.j0, consts.dj),
        (h_out, w_out),
    );
    EPS.with(|cell| {
        let eps = &mut *cell.borrow_mut();
        let plane = NOISE_ROWS * w_out;
        if sigma > 0.0 && eps.len() < 3 * plane {
            eps.resize(3 * plane, 0.0);
        }
        let norm = std::array::from_fn(|c| (spec.mean[c], spec.std[c]));
        for i in 0..h_out {
            // The noise of NOISE_ROWS rows of a channel at once (contiguous
            // elements): fewer partly used Philox groups than row by row.
            if sigma > 0.0 && i % NOISE_ROWS == 0 {
                let rows = NOISE_ROWS.min(h_out - i);
                for c in 0..3 {
                    let e = ((c * h_out + i) * w_out) as u64;
                    fill_normals(noise, e, &mut eps[c * plane..c * plane + rows * w_out]);
                }
            }
            let eps: [&[f32]; 3] = if sigma > 0.0 {
                let at = (i % NOISE_ROWS) * w_out;
                std::array::from_fn(|c| &eps[c * plane + at..c * plane + at + w_out])
            } else {
                [&[][..]; 3]
            };
            let row = Row {
                i,
                mirror,
                sigma,
                eps,
                norm,
                h_out,
                w_out,
            };
            let rows = separable.as_mut().map(|sep| sep.row(i));
            let mut j = 0;
            while j + 16 <= w_out {
                let (mut vals, ok) = match rows {
                    Some((gy, fy, top, bottom)) => {
                        (vertical16(gy, fy, top, bottom, &row, j), 0xffff)
                    }
                    // SAFETY: the target features are enabled; `j + 16 <=
                    // w_out` keeps the `eps` reads inside their rows (empty
                    // or `w_out` long); gathers are bounded by `Consts::last`.
                    None => unsafe { block16(&consts, src.data, &row, j) },
                };
                if ok != 0xffff {
                    let mut lanes = [[0f32; 16]; 3];
                    for (c, lane) in lanes.iter_mut().enumerate() {
                        // SAFETY: 16 f32 written to a 16-f32 array.
                        unsafe { _mm512_storeu_ps(lane.as_mut_ptr(), vals[c]) };
                    }
                    for l in (0..16).filter(|l| ok & (1 << l) == 0) {
                        let v = pixel_values(&sampler, &row, j + l);
                        for c in 0..3 {
                            lanes[c][l] = v[c];
                        }
                    }
                    for (c, lane) in lanes.iter().enumerate() {
                        // SAFETY: 16 f32 read from a 16-f32 array.
                        vals[c] = unsafe { _mm512_loadu_ps(lane.as_ptr()) };
                    }
                }
                for (c, &v) in vals.iter().enumerate() {
                    let p = out.as_mut_ptr().wrapping_add(row.offset(c, j)) as *mut f32;
                    // SAFETY: the 64 bytes at `p` are row i, columns j..j+16
                    // of plane c, inside `out` (j + 16 <= w_out); when
                    // streaming they are one whole line (`stream` holds
                    // only for an aligned `out` and w_out % 16 == 0).
                    unsafe {
                        if stream {
                            _mm512_stream_ps(p, v)
                        } else {
                            _mm512_storeu_ps(p, v)
                        }
                    }
                }
                j += 16;
            }
            for jj in j..w_out {
                pixel(&sampler, &row, jj, out);
            }
        }
    });
    if stream {
        // Streaming stores are weakly ordered: fence them before the
        // sample is handed over.
        _mm_sfence();
    }
}

/// One output row `i` of the sample: what its pixels share.
struct Row<'a> {
    i: usize,
    mirror: bool,
    sigma: f32,
    /// The row's noise, per channel (empty when `sigma` is 0).
    eps: [&'a [f32]; 3],
    /// Per channel `(mean, std)`.
    norm: [(f32, f32); 3],
    h_out: usize,
    w_out: usize,
}

impl Row<'_> {
    /// The byte offset in the sample of channel `c`, column `j` (f32 NCHW).
    fn offset(&self, c: usize, j: usize) -> usize {
        ((c * self.h_out + self.i) * self.w_out + j) * 4
    }
}

/// Per-sample constants of the vector path.
struct Consts {
    m: [f32; 6],
    /// Column `j` samples `j0 + dj·j` (mirrored when the flip gate is 1).
    j0: f32,
    dj: f32,
    /// The window's origin in the map's frame, as f32 (exact: below 2^24).
    ox: f32,
    oy: f32,
    w: i32,
    h: i32,
    /// The largest offset whose bottom 8-byte read stays inside the data.
    last: i64,
    stride: i32,
    /// Byte-permute tables of [`byte16`], for bytes 0..6 of the words.
    pick: [__m512i; 6],
}

impl Consts {
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        m: &[f32; 6],
        origin: [i32; 2],
        mirror: bool,
        w_out: usize,
        w: i32,
        h: i32,
        last: i64,
        stride: usize,
    ) -> Self {
        let (j0, dj) = if mirror {
            ((w_out - 1) as f32, -1.0)
        } else {
            (0.0, 1.0)
        };
        let pick = word_picks();
        Consts {
            m: *m,
            j0,
            dj,
            ox: origin[0] as f32,
            oy: origin[1] as f32,
            w,
            h,
            last,
            stride: stride as i32,
            pick,
        }
    }
}

/// The byte-permute tables of [`byte16`] for eight-byte words: `[k]` takes
/// byte `k` of each pixel's word (pixels 0..8 in `a`, 8..16 in `b`).
#[target_feature(enable = "avx512f")]
fn word_picks() -> [__m512i; 6] {
    // lane l takes byte 8l + k of the 128 bytes of (a, b); the other three
    // bytes of the lane are zeroed by the mask
    std::array::from_fn(|k| {
        let idx: [u8; 64] = std::array::from_fn(|t| if t % 4 == 0 { (2 * t + k) as u8 } else { 0 });
        // SAFETY: 64 bytes read from a 64-byte array.
        unsafe { _mm512_loadu_si512(idx.as_ptr() as *const _) }
    })
}

/// The 8-byte words at byte offsets `o` (top row: lanes 0..8, 8..16) and
/// `o + stride` (bottom row) of `data`, one masked load per word: lane `l`
/// of a load from `at - 8l` with only lane `l` enabled reads the 8 bytes at
/// `at` and merges them in place. With all sixteen lanes to read this beats
/// four 64-bit gathers (rotation-only sample 107 µs against 118 µs) and
/// scalar loads put together by inserts (109 µs).
///
/// # Safety
/// Every `o[l] >= 0` and `o[l] + stride + 8 <= data.len()`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_words(data: &[u8], o: __m512i, stride: usize) -> [__m512i; 4] {
    let mut offsets = [0i32; 16];
    // SAFETY: 16 i32 written to a 16-i32 array.
    unsafe { _mm512_storeu_si512(offsets.as_mut_ptr() as *mut _, o) };
    let p = data.as_ptr();
    let mut words = [_mm512_setzero_si512(); 4];
    for (l, &at) in offsets.iter().enumerate() {
        let at = at as usize;
        let (v, lane) = (l / 8, l % 8);
        // The base pointers may lie before `data` (wrapping arithmetic, no
        // access): only the enabled lane is read, at base + 8·lane.
        let top = p.wrapping_add(at).wrapping_sub(8 * lane) as *const i64;
        let bottom = p.wrapping_add(at + stride).wrapping_sub(8 * lane) as *const i64;
        // SAFETY: the one lane enabled reads bytes at .. at + 8 and
        // at + stride .. at + stride + 8, inside `data` (at >= 0 and
        // at + stride + 8 <= data.len(), the caller's promise); masked-off
        // lanes read nothing (AVX-512 masked loads suppress their access).
        unsafe {
            words[v] = _mm512_mask_loadu_epi64(words[v], 1 << lane, top);
            words[2 + v] = _mm512_mask_loadu_epi64(words[2 + v], 1 << lane, bottom);
        }
    }
    words
}

/// `v / 255.0` for sixteen bytes in i32 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn unit16(v: __m512i) -> __m512 {
    _mm512_div_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(255.0))
}

/// One byte of the eight-byte word of each of sixteen pixels (pixels 0..8
/// in `a`, 8..16 in `b`), picked by `pick` (see `Consts::pick`), one pixel
/// per 32-bit lane, as [`unit16`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn byte16(a: __m512i, b: __m512i, pick: __m512i) -> __m512 {
    let low_bytes: __mmask64 = 0x1111_1111_1111_1111;
    unit16(_mm512_maskz_permutex2var_epi8(low_bytes, a, pick, b))
}

/// Sixteen pixels `j..j + 16` of row `i`, all channels: their output values
/// per channel, and the mask of the lanes computed right: those with all
/// four neighbours inside (gathered) or all four outside (zeros); the others
/// (on the border, too near the end of the data for an 8-byte read, or with
/// non-finite coordinates) hold garbage and need the element-by-element
/// path.
///
/// # Safety
/// As in [`augment`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn block16(k: &Consts, data: &[u8], row: &Row<'_>, j: usize) -> ([__m512; 3], __mmask16) {
    let m = &k.m;
    let fi = row.i as f32;
    let (bx, by) = (m[1] * fi, m[4] * fi);
    let lanes = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    );
    let s = _mm512_set1_ps;
    // fj = j0 + dj·(j + l), exact (integers below 2^24)
    let jl = _mm512_add_ps(s(j as f32), lanes);
    let fj = _mm512_add_ps(s(k.j0), _mm512_mul_ps(s(k.dj), jl));
    // x = m0·fj + bx + m2, y = m3·fj + by + m5, left to right
    let x = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(s(m[0]), fj), s(bx)), s(m[2]));
    let y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(s(m[3]), fj), s(by)), s(m[5]));
    let xf = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(x);
    let yf = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(y);
    // The corners in the window (exact: integers; the origin is below 2^24
    // and a corner that is not below 2^24 is far outside either way).
    let (xw, yw) = (_mm512_sub_ps(xf, s(k.ox)), _mm512_sub_ps(yf, s(k.oy)));
    // Inside: 0 <= x0 < w - 1 and 0 <= y0 < h - 1, tested in f32 (exact:
    // integers; NaN fails every comparison).
    let inside = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(xw, s(0.0))
        & _mm512_cmp_ps_mask::<_CMP_GE_OQ>(yw, s(0.0))
        & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(xw, s((k.w - 1) as f32))
        & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(yw, s((k.h - 1) as f32));
    // Far outside: all four neighbours outside the image, so every tap is
    // 0 and the vector formula gives the reference's value from zeroed
    // words (finite coordinates only: NaN and infinities go element by
    // element).
    let lim = s(1_073_741_824.0);
    let finite = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(xw), lim)
        & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(yw), lim);
    let outside = finite
        & (_mm512_cmp_ps_mask::<_CMP_LT_OQ>(xw, s(-1.0))
            | _mm512_cmp_ps_mask::<_CMP_GE_OQ>(xw, s(k.w as f32))
            | _mm512_cmp_ps_mask::<_CMP_LT_OQ>(yw, s(-1.0))
            | _mm512_cmp_ps_mask::<_CMP_GE_OQ>(yw, s(k.h as f32)));
    if inside | outside == 0 {
        return ([_mm512_setzero_ps(); 3], 0);
    }
    let (x0, y0) = (_mm512_cvtps_epi32(xw), _mm512_cvtps_epi32(yw));
    // o = (y0·w + x0)·3: below w·h·3 < 2^30 in the lanes inside (see
    // `handles`); other lanes may wrap, and are masked off
    let o = _mm512_mullo_epi32(
        _mm512_add_epi32(_mm512_mullo_epi32(y0, _mm512_set1_epi32(k.w)), x0),
        _mm512_set1_epi32(3),
    );
    let last = _mm512_set1_epi32(k.last.clamp(-1, i32::MAX as i64) as i32);
    // the lanes gathered
    let ok = inside & _mm512_cmple_epi32_mask(o, last);
    let done = ok | outside;
    if done == 0 {
        return ([_mm512_setzero_ps(); 3], 0);
    }
    let fx = _mm512_sub_ps(x, xf);
    let fy = _mm512_sub_ps(y, yf);
    // The four 8-byte words of each pixel, top row in (top_a, top_b) and
    // bottom row in (bot_a, bot_b), and the byte-permute index of each of
    // the six bytes of a word into them.
    let (top_a, top_b, bot_a, bot_b, pick);
    let (omin, omax) = (_mm512_reduce_min_epi32(o), _mm512_reduce_max_epi32(o));
    if ok == 0xffff && omax - omin <= 120 && omin as i64 <= k.last - 120 {
        // All sixteen words lie in the 128 bytes from `omin` (one source
        // row and a downscale of at most about 2.5): two plain loads a row
        // instead of two gathers.
        let at = data.as_ptr().add(omin as usize);
        let below = at.add(k.stride as usize);
        // SAFETY: omin >= 0 and omin + stride + 128 <= data.len()
        // (omin <= last - 120, last = len - stride - 8).
        unsafe {
            top_a = _mm512_loadu_si512(at as *const _);
            top_b = _mm512_loadu_si512(at.add(64) as *const _);
            bot_a = _mm512_loadu_si512(below as *const _);
            bot_b = _mm512_loadu_si512(below.add(64) as *const _);
        }
        // byte k of pixel l's word is byte o[l] - omin + k of the window
        // (the index's low byte; the mask keeps only that byte of a lane)
        let rel = _mm512_sub_epi32(o, _mm512_set1_epi32(omin));
        let mut p = [rel; 6];
        for (b, p) in p.iter_mut().enumerate() {
            *p = _mm512_add_epi32(rel, _mm512_set1_epi32(b as i32));
        }
        pick = p;
    } else {
        let base = data.as_ptr() as *const i64;
        let (o_a, o_b) = (_mm512_castsi512_si256(o), _mm512_extracti64x4_epi64::<1>(o));
        let (ok_a, ok_b) = (ok as __mmask8, (ok >> 8) as __mmask8);
        let st = _mm256_set1_epi32(k.stride);
        let zero = _mm512_setzero_si512();
        if ok == 0xffff {
            // SAFETY: every lane is in `ok`, so o >= 0 and o + stride + 8
            // <= data.len() in each (as for the gathers below).
            [top_a, top_b, bot_a, bot_b] = unsafe { load_words(data, o, k.stride as usize) };
        } else {
            // SAFETY: in every lane gathered (mask `ok`), o >= 0 (x0, y0 >=
            // 0) and o + stride + 8 <= data.len() (o <= last), so all four
            // 8-byte reads are inside `data`; the other lanes read nothing.
            unsafe {
                top_a = _mm512_mask_i32gather_epi64::<1>(zero, ok_a, o_a, base);
                top_b = _mm512_mask_i32gather_epi64::<1>(zero, ok_b, o_b, base);
                bot_a =
                    _mm512_mask_i32gather_epi64::<1>(zero, ok_a, _mm256_add_epi32(o_a, st), base);
                bot_b =
                    _mm512_mask_i32gather_epi64::<1>(zero, ok_b, _mm256_add_epi32(o_b, st), base);
            }
        }
        pick = k.pick;
    }
    let one = s(1.0);
    let (gx, gy) = (_mm512_sub_ps(one, fx), _mm512_sub_ps(one, fy));
    let mut vals = [_mm512_setzero_ps(); 3];
    for c in 0..3 {
        let (left, right) = (pick[c], pick[c + 3]);
        let (p00, p01) = (byte16(top_a, top_b, left), byte16(top_a, top_b, right));
        let (p10, p11) = (byte16(bot_a, bot_b, left), byte16(bot_a, bot_b, right));
        // (1-fy)*((1-fx)*p00 + fx*p01) + fy*((1-fx)*p10 + fx*p11)
        let t = _mm512_add_ps(_mm512_mul_ps(gx, p00), _mm512_mul_ps(fx, p01));
        let b = _mm512_add_ps(_mm512_mul_ps(gx, p10), _mm512_mul_ps(fx, p11));
        let v = _mm512_add_ps(_mm512_mul_ps(gy, t), _mm512_mul_ps(fy, b));
        vals[c] = finish(v, row, c, j);
    }
    (vals, done)
}

/// Sixteen sampled values of channel `c`, columns `j..j + 16` of `row`, to
/// output values: `+ sigma·eps`, then `(s - mean) / std`.
#[inline]
#[target_feature(enable = "avx512f")]
fn finish(mut v: __m512, row: &Row<'_>, c: usize, j: usize) -> __m512 {
    let s = _mm512_set1_ps;
    if row.sigma > 0.0 {
        // each eps row is w_out long when sigma > 0
        let e = &row.eps[c][j..j + 16];
        // SAFETY: 16 f32 read from a 16-f32 slice.
        let e = unsafe { _mm512_loadu_ps(e.as_ptr()) };
        v = _mm512_add_ps(v, _mm512_mul_ps(s(row.sigma), e));
    }
    let (mean, std) = row.norm[c];
    _mm512_div_ps(_mm512_sub_ps(v, s(mean)), s(std))
}

/// Sixteen pixels `j..j + 16` of `row`, all channels, from the H rows `top`
/// and `bottom` of an axis-aligned map (see [`axis_aligned`]).
#[inline]
#[target_feature(enable = "avx512f")]
fn vertical16(
    gy: f32,
    fy: f32,
    top: &[f32],
    bottom: &[f32],
    row: &Row<'_>,
    j: usize,
) -> [__m512; 3] {
    let width = top.len() / 3;
    let mut vals = [_mm512_setzero_ps(); 3];
    // (a loop, not `from_fn`: its closure, having target features that
    // `from_fn` lacks, would not be inlined)
    for (c, val) in vals.iter_mut().enumerate() {
        let (t, b) = (&top[c * width + j..][..16], &bottom[c * width + j..][..16]);
        // SAFETY: 16 f32 read from 16-f32 slices.
        let (t, b) = unsafe { (_mm512_loadu_ps(t.as_ptr()), _mm512_loadu_ps(b.as_ptr())) };
        // (1-fy)*t + fy*b
        let v = _mm512_add_ps(
            _mm512_mul_ps(_mm512_set1_ps(gy), t),
            _mm512_mul_ps(_mm512_set1_ps(fy), b),
        );
        *val = finish(v, row, c, j);
    }
    vals
}

/// Pixel `(i, j)`, all channels, element by element (the reference
/// formulas; the same bits as [`block16`]).
#[inline]
fn pixel_values(sampler: &Sampler<'_>, row: &Row<'_>, j: usize) -> [f32; 3] {
    let jj = if row.mirror { row.w_out - 1 - j } else { j };
    let sampled = sample_at3(sampler, row.i, jj);
    std::array::from_fn(|c| {
        let (mean, std) = row.norm[c];
        let mut v = sampled[c];
        if row.sigma > 0.0 {
            v += row.sigma * row.eps[c][j];
        }
        (v - mean) / std
    })
}

/// Pixel `(i, j)`, all channels, into `out`.
#[inline]
fn pixel(sampler: &Sampler<'_>, row: &Row<'_>, j: usize, out: &mut [u8]) {
    for (c, y) in pixel_values(sampler, row, j).into_iter().enumerate() {
        let at = row.offset(c, j);
        out[at..at + 4].copy_from_slice(&y.to_ne_bytes());
    }
}

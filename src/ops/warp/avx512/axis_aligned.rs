//! The AVX-512 warp of an axis-aligned map (crop, flip and resize, no
//! rotation), done separably.
//!
//! Without rotation `m[1]` and `m[3]` are zero, so `x` depends on the output
//! column only and `y` on the output row only. The contract's blend
//!
//! `(1 - fy)·((1 - fx)·p00 + fx·p01) + fy·((1 - fx)·p10 + fx·p11)`
//!
//! then splits into a horizontal blend of one source row,
//! `H_y(j) = (1 - fx)·p(y, x0) + fx·p(y, x0 + 1)`, computed once per source
//! row and column and kept while output rows read that source row (a crop
//! that is scaled up reads each one for several output rows), and a
//! vertical blend `(1 - fy)·H_y0(j) + fy·H_y0+1(j)` per output pixel. These
//! are the reference's operations in its order, so the bits are the same.
//! Taps outside the image are zeros in the same formula, so border pixels
//! take the same path as the others.
//!
//! Everything about columns (coordinates, fractions, which taps are inside,
//! where their bytes are) is planned once per sample; a source row's bytes
//! are then read by two plain 64-byte loads per 16 columns when their taps
//! fit in 128 bytes (downscales up to about 2.5), by 64-bit gathers
//! otherwise, and lane by lane in the rare leftovers (a tap left of the
//! image's first column in a gathered block, the last bytes of the image).

use std::arch::x86_64::*;

use super::{byte16, word_picks};
use crate::ops::warp::{floor, unit};

/// Where the taps of 16 columns are read from in a source row.
enum Taps {
    /// No tap of these columns is inside the image: their H is 0.
    None,
    /// Bytes `start .. start + 128` of the row hold every tap inside; each
    /// lane's `R G B R G B` (left tap, then right) starts at byte `rel` of
    /// them.
    Window { start: usize, rel: __m512i },
    /// One 8-byte word per lane at byte `off` of the row (lanes `lanes`,
    /// whose left tap is inside), spread by [`word_picks`].
    Gather { off: __m512i, lanes: __mmask16 },
}

/// Sixteen output columns `16b ..` of the sample.
struct Block {
    /// `1 - fx` and `fx` per lane.
    gx: __m512,
    fx: __m512,
    /// Lanes whose left (`x0`) / right (`x0 + 1`) tap is inside the image.
    left: __mmask16,
    right: __mmask16,
    taps: Taps,
}

/// The per-sample plan of the columns, and the two cached H rows.
pub(super) struct Separable<'a> {
    data: &'a [u8],
    w: i64,
    h: i64,
    stride: usize,
    blocks: Vec<Block>,
    /// Per column: `fx` and `x0` (for the lane-by-lane leftovers).
    fx: Vec<f32>,
    x0: Vec<i64>,
    /// `m[3]`, `m[4]`, `m[5]` of the map (rows), and column 0's `fj`.
    my: [f32; 3],
    /// The window's first row in the map's frame.
    oy: i64,
    fj0: f32,
    /// [`word_picks`], for gathered words.
    picks: Picks,
    /// Columns covered by blocks (`16 × blocks`), and the H rows: `rows[r]`
    /// holds 3 planes of `width` for source row `keys[r]`.
    width: usize,
    rows: [Vec<f32>; 2],
    keys: [Option<i64>; 2],
}

/// The words' pick tables, built once per sample (see [`word_picks`]).
type Picks = [__m512i; 6];

impl<'a> Separable<'a> {
    /// The plan for `m` (output `w_out` wide, the first `blocks·16` columns
    /// vectorised), or `None` when the map is not axis-aligned or a
    /// coordinate is not a small finite number (the general path then
    /// takes the sample).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) fn plan(
        data: &'a [u8],
        (w, h): (i32, i32),
        m: &[f32; 6],
        [ox, oy]: [i32; 2],
        (j0, dj): (f32, f32),
        (h_out, w_out): (usize, usize),
    ) -> Option<Self> {
        if m[1] != 0.0 || m[3] != 0.0 {
            return None;
        }
        let small = |v: f32| v.is_finite() && v.abs() < 1_073_741_824.0;
        // x of column j exactly as the general path computes it: `m[1]·fi`
        // is a zero of `m[1]`'s sign for every row (fi >= 0).
        let bx = m[1] * 0.0;
        let mut fx = Vec::with_capacity(w_out);
        let mut x0 = Vec::with_capacity(w_out);
        for j in 0..w_out {
            let fj = j0 + dj * j as f32;
            let x = m[0] * fj + bx + m[2];
            let xf = floor(x);
            if !small(xf) {
                return None;
            }
            fx.push(x - xf);
            x0.push(xf as i64 - ox as i64);
        }
        // y is monotonic in the row, so its ends bound it.
        for i in [0, h_out.saturating_sub(1)] {
            let y = m[3] * j0 + m[4] * i as f32 + m[5];
            if !small(floor(y)) {
                return None;
            }
        }
        let stride = w as usize * 3;
        let blocks = (0..w_out / 16)
            .map(|b| plan_block(&fx[16 * b..16 * b + 16], &x0[16 * b..16 * b + 16], w))
            .collect::<Vec<_>>();
        let width = 16 * blocks.len();
        Some(Separable {
            data,
            w: w as i64,
            h: h as i64,
            stride,
            blocks,
            fx,
            x0,
            my: [m[3], m[4], m[5]],
            oy: oy as i64,
            fj0: j0,
            picks: word_picks(),
            width,
            rows: [vec![0.0; 3 * width], vec![0.0; 3 * width]],
            keys: [None, None],
        })
    }

    /// Output row `i`'s `(1 - fy, fy)` and the H rows of `y0` and `y0 + 1`
    /// (3 planes of `16 × blocks` each), computed or taken from the cache.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) fn row(&mut self, i: usize) -> (f32, f32, &[f32], &[f32]) {
        let [m3, m4, m5] = self.my;
        let y = m3 * self.fj0 + m4 * i as f32 + m5;
        let yf = floor(y);
        let fy = y - yf;
        let y0 = yf as i64 - self.oy;
        // Moving down one source row: the old bottom row is the new top.
        if self.keys[0] != Some(y0) && self.keys[1] == Some(y0) {
            self.rows.swap(0, 1);
            self.keys.swap(0, 1);
        }
        for (slot, want) in [(0, y0), (1, y0 + 1)] {
            if self.keys[slot] != Some(want) {
                let mut buf = std::mem::take(&mut self.rows[slot]);
                self.fill(want, &mut buf);
                self.rows[slot] = buf;
                self.keys[slot] = Some(want);
            }
        }
        (1.0 - fy, fy, &self.rows[0], &self.rows[1])
    }

    /// H of source row `y` (3 planes of `self.width`) into `out`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    fn fill(&self, y: i64, out: &mut [f32]) {
        let width = self.width;
        if y < 0 || y >= self.h {
            out.fill(0.0);
            return;
        }
        let row = y as usize * self.stride;
        let len = self.data.len();
        let zero = _mm512_setzero_ps();
        for (b, blk) in self.blocks.iter().enumerate() {
            let words = match &blk.taps {
                Taps::None => None,
                Taps::Window { start, rel } if row + start + 128 <= len => {
                    // SAFETY: bytes row + start .. row + start + 128 are
                    // inside `data` (checked just above).
                    let (a, bb) = unsafe {
                        let at = self.data.as_ptr().add(row + start);
                        (
                            _mm512_loadu_si512(at as *const _),
                            _mm512_loadu_si512(at.add(64) as *const _),
                        )
                    };
                    // byte k of a lane's six is byte rel + k of the window
                    // (the index's low byte; `byte16` keeps only that one)
                    // (a loop: a closure passed to `from_fn` would not be
                    // inlined, having target features its caller lacks)
                    let mut pick = [*rel; 6];
                    for (k, p) in pick.iter_mut().enumerate() {
                        *p = _mm512_add_epi32(*rel, _mm512_set1_epi32(k as i32));
                    }
                    Some((a, bb, pick, blk.left | blk.right))
                }
                // Too near the end of the data for a 128-byte read: every
                // lane goes element by element below.
                Taps::Window { .. } => Some((
                    _mm512_setzero_si512(),
                    _mm512_setzero_si512(),
                    self.picks,
                    0,
                )),
                Taps::Gather { off, lanes } => {
                    // lanes whose 8 bytes end inside the data
                    let end = _mm512_add_epi32(*off, _mm512_set1_epi32(8));
                    let room = (len - row).min(i32::MAX as usize) as i32;
                    let lanes = *lanes & _mm512_cmple_epi32_mask(end, _mm512_set1_epi32(room));
                    let (o_a, o_b) = (
                        _mm512_castsi512_si256(*off),
                        _mm512_extracti64x4_epi64::<1>(*off),
                    );
                    let base = self.data[row..].as_ptr() as *const i64;
                    let z = _mm512_setzero_si512();
                    // SAFETY: in every lane read (mask `lanes`), off >= 0
                    // (the left tap is inside) and off + 8 <= len - row
                    // (just checked), so the 8 bytes are inside `data`.
                    let (a, bb) = unsafe {
                        (
                            _mm512_mask_i32gather_epi64::<1>(z, lanes as __mmask8, o_a, base),
                            _mm512_mask_i32gather_epi64::<1>(
                                z,
                                (lanes >> 8) as __mmask8,
                                o_b,
                                base,
                            ),
                        )
                    };
                    Some((a, bb, self.picks, lanes))
                }
            };
            for c in 0..3 {
                let h = match words {
                    None => zero,
                    Some((a, bb, pick, _)) => {
                        let pl = _mm512_maskz_mov_ps(blk.left, byte16(a, bb, pick[c]));
                        let pr = _mm512_maskz_mov_ps(blk.right, byte16(a, bb, pick[c + 3]));
                        _mm512_add_ps(_mm512_mul_ps(blk.gx, pl), _mm512_mul_ps(blk.fx, pr))
                    }
                };
                let at = c * width + 16 * b;
                // SAFETY: `at + 16 <= 3 × width = out.len()` (b < blocks).
                unsafe { _mm512_storeu_ps(out[at..at + 16].as_mut_ptr(), h) };
            }
            // The lanes with a tap inside that were not read above (none
            // for `Taps::None`, which has no tap inside).
            let done = words.map_or(0, |(.., read)| read);
            let mut rest = (blk.left | blk.right) & !done;
            while rest != 0 {
                let l = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                let j = 16 * b + l;
                let v = self.scalar(y, j);
                for (c, v) in v.into_iter().enumerate() {
                    out[c * width + j] = v;
                }
            }
        }
    }

    /// H of source row `y` (inside the image), column `j`, per channel, one
    /// element at a time.
    fn scalar(&self, y: i64, j: usize) -> [f32; 3] {
        let (fx, x0) = (self.fx[j], self.x0[j]);
        let tap = |x: i64, c: usize| {
            if x < 0 || x >= self.w {
                0.0
            } else {
                unit(self.data[(y as usize * self.w as usize + x as usize) * 3 + c])
            }
        };
        std::array::from_fn(|c| (1.0 - fx) * tap(x0, c) + fx * tap(x0 + 1, c))
    }
}

/// The plan of 16 columns with fractions `fx` and left taps `x0`, in an
/// image `w` pixels wide.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn plan_block(fx: &[f32], x0: &[i64], w: i32) -> Block {
    let w = w as i64;
    let (mut left, mut right) = (0u16, 0u16);
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    let mut gx = [0f32; 16];
    for l in 0..16 {
        gx[l] = 1.0 - fx[l];
        let off = x0[l] * 3;
        if (0..w).contains(&x0[l]) {
            left |= 1 << l;
            lo = lo.min(off);
            hi = hi.max(off + 3);
        }
        if (0..w).contains(&(x0[l] + 1)) {
            right |= 1 << l;
            lo = lo.min(off + 3);
            hi = hi.max(off + 6);
        }
    }
    // SAFETY: 16 f32 read from 16-f32 slices.
    let (gxv, fxv) = unsafe { (_mm512_loadu_ps(gx.as_ptr()), _mm512_loadu_ps(fx.as_ptr())) };
    let taps = if left | right == 0 {
        Taps::None
    } else if hi - lo <= 128 {
        // lo >= 0: a left tap inside has x0 >= 0, a right one x0 >= -1.
        let start = lo as usize;
        let rel: [i32; 16] = std::array::from_fn(|l| (x0[l] * 3 - lo) as i32);
        // SAFETY: 16 i32 read from a 16-i32 array.
        let rel = unsafe { _mm512_loadu_si512(rel.as_ptr() as *const _) };
        Taps::Window { start, rel }
    } else {
        // Offsets of lanes with x0 < 0 are never read (not in `lanes`).
        let off: [i32; 16] = std::array::from_fn(|l| (x0[l].max(0) * 3) as i32);
        // SAFETY: 16 i32 read from a 16-i32 array.
        let off = unsafe { _mm512_loadu_si512(off.as_ptr() as *const _) };
        Taps::Gather { off, lanes: left }
    };
    Block {
        gx: gxv,
        fx: fxv,
        left,
        right,
        taps,
    }
}

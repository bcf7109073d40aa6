//! Bilinear sampling of a source window through one affine map: a row at a
//! time for the fast path (coordinates vectorised, eight columns gathered
//! at a time with AVX2), and an element at a time, literally as the
//! contract writes it, for the reference and the border.

use super::arith::{bilinear, corner, floor, unit};
#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::scratch::{Scratch, GATHER_MARGIN};
use crate::decode::ImageView;

/// Which scratch plane a sampled row goes to.
#[derive(Clone, Copy)]
pub(super) enum Plane {
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
    pub(super) fn row<const AVX2: bool>(
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
pub(super) fn sample_at(s: &Sampler<'_>, c: usize, i: usize, j: usize) -> f32 {
    sample_channel(s, c, neighbourhood(s, i, j))
}

/// `[S_0(i, j), S_1(i, j), S_2(i, j)]`: [`sample_at`] for the three channels
/// of a pixel, its neighbourhood computed once.
pub(super) fn sample_at3(s: &Sampler<'_>, i: usize, j: usize) -> [f32; 3] {
    let n = neighbourhood(s, i, j);
    std::array::from_fn(|c| sample_channel(s, c, n))
}

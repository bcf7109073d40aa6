//! One worker's scratch buffers for the per-sample passes: the source
//! planes with a zero border, and the plan, work arrays and sums of one tile
//! of output rows.

use super::{AugmentShape, SampleKey};
use crate::meta::float::Float;
use crate::ops::noise::fill_normals;

/// Output elements a worker plans and samples at once: whole output rows,
/// as many as fit this (at least one). Long loops vectorise with few
/// remainders (a 28-pixel row alone leaves 4 of every 28 to scalar code),
/// and the tile's work arrays, about 12 × this × 4 bytes in f32, stay in L1.
const TILE_ELEMENTS: usize = 256;

/// Zero pixels around each padded source plane ([`Scratch::pad_planes`]).
pub(super) const BORDER: usize = 2;

/// Scratch buffers of one worker: the sample's source planes with a zero
/// border, the sampling plan of one tile of output rows and the per-element
/// work arrays and sums (all `tile` long).
///
/// The border makes the bilinear sample branch-free and mask-free: a
/// corner's row and column are clamped into `[−2, H]` and `[−2, W]`, which
/// moves a neighbour outside the image only onto other outside (zero)
/// pixels, so "a neighbour outside the image counts 0" holds by reading,
/// and the four corners are one index `k` and `k + 1`, `k + W + 4`,
/// `k + W + 5` in the padded plane. Every loop below except the loads is
/// straight-line arithmetic over arrays (vectorisable).
///
/// Every element gets the operations it would get row by row, in the same
/// order: the tiling changes no bit of the output or of the image gradient.
/// The parameter gradient's sums run over tile positions first, then over
/// the positions (in f64): the same order in every build.
pub(super) struct Scratch<F> {
    /// Output width.
    pub(super) wo: usize,
    /// Rows per tile.
    pub(super) rows: usize,
    /// The padded source planes, `[C, H + 4, W + 4]` (border zero).
    pub(super) padded: Vec<F>,
    /// Their gradient, same layout (for the image gradient).
    pub(super) padded_grad: Vec<F>,
    /// Padded width `W + 4`.
    pub(super) pw: usize,
    /// Padded plane length `(H + 4)·(W + 4)`.
    pub(super) plane_len: usize,
    /// Column `j` of each tile element (the tile's rows side by side).
    pub(super) cols: Vec<F>,
    /// Row `i` of each tile element, for the tile at hand.
    pub(super) rowf: Vec<F>,
    pub(super) fx: Vec<F>,
    pub(super) fy: Vec<F>,
    /// Flat index of each element's top-left corner in the padded plane,
    /// at most `plane_len − pw − 2` (so all four corners are inside).
    pub(super) idx: Vec<i32>,
    pub(super) px: [Vec<F>; 4],
    pub(super) view: Vec<F>,
    pub(super) gs: Vec<F>,
    pub(super) dx: Vec<F>,
    pub(super) dy: Vec<F>,
    /// Rows reversed (the flip's mirror): one output row in the forward
    /// pass, the tile's rows of the output gradient in the VJP.
    pub(super) rev: Vec<F>,
    pub(super) eps32: Vec<f32>,
    pub(super) eps: Vec<F>,
    /// Per tile position, sums over a sample's tiles (VJP to the
    /// parameters): `Σ dx`, `Σ dy`, `Σ i·dx`, `Σ i·dy`, and the flip terms.
    pub(super) acc: [Vec<F>; 5],
}

impl<F: Float> Scratch<F> {
    pub(super) fn new(shape: &AugmentShape) -> Self {
        let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
        let (h, w) = (shape.src.height as usize, shape.src.width as usize);
        let rows = (TILE_ELEMENTS / wo.max(1)).clamp(1, ho.max(1));
        let tile = rows * wo;
        let (pw, ph) = (w + 2 * BORDER, h + 2 * BORDER);
        let z = |n: usize| vec![F::ZERO; n];
        Scratch {
            wo,
            rows,
            padded: z(shape.channels * ph * pw),
            padded_grad: Vec::new(),
            pw,
            plane_len: ph * pw,
            cols: (0..tile).map(|e| F::from_f64((e % wo) as f64)).collect(),
            rowf: z(tile),
            fx: z(tile),
            fy: z(tile),
            idx: vec![0; tile],
            px: std::array::from_fn(|_| z(tile)),
            view: z(tile),
            gs: z(tile),
            dx: z(tile),
            dy: z(tile),
            rev: z(tile),
            eps32: Vec::new(),
            eps: Vec::new(),
            acc: std::array::from_fn(|_| z(tile)),
        }
    }

    /// Copies the sample's `[C, H, W]` planes into the padded planes'
    /// interiors (the borders stay zero).
    pub(super) fn pad_planes(&mut self, img: &[F], h: usize, w: usize) {
        let pw = self.pw;
        for (src, dst) in img
            .chunks_exact(h * w)
            .zip(self.padded.chunks_exact_mut(self.plane_len))
        {
            for (s, d) in src
                .chunks_exact(w)
                .zip(dst[BORDER * pw..].chunks_exact_mut(pw))
            {
                d[BORDER..BORDER + w].copy_from_slice(s);
            }
        }
    }

    /// Zeroes the padded gradient planes.
    pub(super) fn clear_grad(&mut self) {
        self.padded_grad.clear();
        self.padded_grad.resize(self.padded.len(), F::ZERO);
    }

    /// Writes the padded gradient planes' interiors to `gi` (`[C, H, W]`).
    pub(super) fn unpad_grad(&self, gi: &mut [F], h: usize, w: usize) {
        let pw = self.pw;
        for (dst, src) in gi
            .chunks_exact_mut(h * w)
            .zip(self.padded_grad.chunks_exact(self.plane_len))
        {
            for (d, s) in dst
                .chunks_exact_mut(w)
                .zip(src[BORDER * pw..].chunks_exact(pw))
            {
                d.copy_from_slice(&s[BORDER..BORDER + w]);
            }
        }
    }

    /// CONTRACT.md step 1 and the corners of step 2 for output rows
    /// `i0..i0 + nr`: `x = (m[0]·j + m[1]·i) + m[2]` (as `crate::ops::warp`),
    /// `y` likewise, `x0 = floor(x)`, `fx = x − x0`; the top-left corner's
    /// flat index in the padded plane, in `F` (exact: below 2^24, see
    /// `check_shapes`), so that the loop vectorises. Returns the tile's
    /// length.
    #[inline(always)]
    pub(super) fn plan(&mut self, m: &[F; 6], i0: usize, nr: usize, h: usize, w: usize) -> usize {
        let l = nr * self.wo;
        self.fill_row_indices(i0, nr);
        // clamped as an integer too, which is what the unchecked loads
        // rely on (the float clamps already keep it there)
        let last = i32::try_from(self.plane_len - self.pw - 2).unwrap_or(i32::MAX);
        let b = F::from_f64(BORDER as f64);
        let (pw, wl, hl) = (
            F::from_f64(self.pw as f64),
            F::from_f64(w as f64),
            F::from_f64(h as f64),
        );
        let (cols, rowf) = (&self.cols[..l], &self.rowf[..l]);
        let (fx, fy, idx) = (&mut self.fx[..l], &mut self.fy[..l], &mut self.idx[..l]);
        // `max` then `min`: NaN goes to −2 (its weights are NaN anyway)
        let clamp = |v: F, last: F| v.max(-b).min(last);
        for e in 0..l {
            let (fj, fi) = (cols[e], rowf[e]);
            let x = m[0] * fj + m[1] * fi + m[2];
            let y = m[3] * fj + m[4] * fi + m[5];
            let (x0, y0) = (x.floor(), y.floor());
            fx[e] = x - x0;
            fy[e] = y - y0;
            let k = (clamp(y0, hl) + b) * pw + (clamp(x0, wl) + b);
            idx[e] = (k.to_index() as i32).min(last);
        }
        l
    }

    /// The four neighbours of the first `l` planned elements in channel
    /// `c`'s padded plane (zero outside the image).
    #[inline(always)]
    pub(super) fn gather(&mut self, c: usize, l: usize) {
        let plane = &self.padded[c * self.plane_len..(c + 1) * self.plane_len];
        // SAFETY: `plan` filled the first `l` indices (of `tile ≥ l` long
        // arrays) and clamped each into `[0, plane_len − pw − 2]`, so
        // `index + pw + 1` is inside the plane.
        unsafe { F::gather_corners(plane, &self.idx[..l], self.pw, &mut self.px) };
    }

    /// CONTRACT.md step 2, operation for operation, for the gathered
    /// elements.
    #[inline(always)]
    pub(super) fn blend(&self, out: &mut [F]) {
        let one = F::ONE;
        let l = out.len();
        let [p0, p1, p2, p3] = &self.px;
        let (p0, p1, p2, p3) = (&p0[..l], &p1[..l], &p2[..l], &p3[..l]);
        let (fx, fy) = (&self.fx[..l], &self.fy[..l]);
        for e in 0..l {
            let (fx, fy) = (fx[e], fy[e]);
            out[e] = (one - fy) * ((one - fx) * p0[e] + fx * p1[e])
                + fy * ((one - fx) * p2[e] + fx * p3[e]);
        }
    }

    /// Adds `gs·(∂v/∂x, ∂v/∂y)` of the first `l` gathered elements to `dx`,
    /// `dy`.
    #[inline(always)]
    pub(super) fn slopes(&mut self, l: usize) {
        let [p0, p1, p2, p3] = &self.px;
        let (p0, p1, p2, p3) = (&p0[..l], &p1[..l], &p2[..l], &p3[..l]);
        let (fx, fy, gs) = (&self.fx[..l], &self.fy[..l], &self.gs[..l]);
        let (dx, dy) = (&mut self.dx[..l], &mut self.dy[..l]);
        for e in 0..l {
            let (sx, sy) = slope(fx[e], fy[e], [p0[e], p1[e], p2[e], p3[e]]);
            dx[e] += gs[e] * sx;
            dy[e] += gs[e] * sy;
        }
    }

    /// The slopes `(∂v/∂x, ∂v/∂y)` of the first `l` gathered elements into
    /// `sx`, `sy` ([`slope`], as [`Scratch::slopes`] takes them).
    #[inline(always)]
    pub(super) fn slopes_into(&self, sx: &mut [F], sy: &mut [F]) {
        let l = sx.len();
        let [p0, p1, p2, p3] = &self.px;
        let (p0, p1, p2, p3) = (&p0[..l], &p1[..l], &p2[..l], &p3[..l]);
        let (fx, fy, sy) = (&self.fx[..l], &self.fy[..l], &mut sy[..l]);
        for e in 0..l {
            (sx[e], sy[e]) = slope(fx[e], fy[e], [p0[e], p1[e], p2[e], p3[e]]);
        }
    }

    /// `rowf`: each of the tile's `nr` rows filled with its output row
    /// index `i0 + r`.
    #[inline(always)]
    pub(super) fn fill_row_indices(&mut self, i0: usize, nr: usize) {
        let wo = self.wo;
        for r in 0..nr {
            self.rowf[r * wo..(r + 1) * wo].fill(F::from_f64((i0 + r) as f64));
        }
    }

    /// Zeroes `acc`, the per-tile-position sums of a sample's parameter VJP.
    #[inline(always)]
    pub(super) fn clear_acc(&mut self) {
        let tile = self.rows * self.wo;
        for a in self.acc.iter_mut() {
            a[..tile].fill(F::ZERO);
        }
    }

    /// `rev`: the tile's output gradient `gyt` (`l` elements, rows of
    /// `wo`) mirrored within each row, `gy(i, W−1−j)` at `(i, j)` (written
    /// out: through `reversed` the VJP measured 6% slower).
    #[inline(always)]
    pub(super) fn mirror_rows(&mut self, gyt: &[F]) {
        let wo = self.wo;
        let rev = &mut self.rev[..gyt.len()];
        for (r, g) in rev.chunks_exact_mut(wo).zip(gyt.chunks_exact(wo)) {
            for (a, &b) in r.iter_mut().zip(g.iter().rev()) {
                *a = b;
            }
        }
    }

    /// Adds a finished tile's slope-weighted gradients `dx`, `dy` (first
    /// `l`) to `acc`'s sums: `c_x`, `c_y` and, weighted by the row index,
    /// `i·c_x`, `i·c_y`.
    #[inline(always)]
    pub(super) fn close_tile(&mut self, l: usize) {
        let [cx, cy, cxi, cyi, _] = &mut self.acc;
        let (dx, dy, fi) = (&self.dx[..l], &self.dy[..l], &self.rowf[..l]);
        let (cx, cy, cxi, cyi) = (&mut cx[..l], &mut cy[..l], &mut cxi[..l], &mut cyi[..l]);
        for e in 0..l {
            cx[e] += dx[e];
            cy[e] += dy[e];
            cxi[e] += fi[e] * dx[e];
            cyi[e] += fi[e] * dy[e];
        }
    }

    /// Adds `gs · weight k` to neighbour `k` of each of the first `l`
    /// planned elements in channel `c`'s padded gradient plane, in order.
    #[inline(always)]
    pub(super) fn scatter(&mut self, c: usize, l: usize) {
        let one = F::ONE;
        let pw = self.pw;
        let plane = &mut self.padded_grad[c * self.plane_len..(c + 1) * self.plane_len];
        let (fx, fy, gs, idx) = (&self.fx[..l], &self.fy[..l], &self.gs[..l], &self.idx[..l]);
        for e in 0..l {
            let (fx, fy, d) = (fx[e], fy[e], gs[e]);
            let k = idx[e] as usize;
            plane[k] += d * ((one - fy) * (one - fx));
            plane[k + 1] += d * ((one - fy) * fx);
            plane[k + pw] += d * (fy * (one - fx));
            plane[k + pw + 1] += d * (fy * fx);
        }
    }

    /// The noise of sample `key` into `self.eps` (`len` values).
    pub(super) fn draw(&mut self, key: &SampleKey, len: usize) {
        self.eps32.resize(len, 0.0);
        fill_normals(&key.noise(), 0, &mut self.eps32);
        self.eps.clear();
        self.eps.extend(self.eps32.iter().map(|&z| F::from_f32(z)));
    }
}

/// The bilinear sample's slopes `(∂v/∂x, ∂v/∂y)` at fractions `(fx, fy)`
/// between the corners `p = [top-left, top-right, bottom-left,
/// bottom-right]`.
#[inline(always)]
fn slope<F: Float>(fx: F, fy: F, p: [F; 4]) -> (F, F) {
    let one = F::ONE;
    let sx = (one - fy) * (p[1] - p[0]) + fy * (p[3] - p[2]);
    let sy = (one - fx) * (p[2] - p[0]) + fx * (p[3] - p[1]);
    (sx, sy)
}

/// The tiles of an `ho`-row output, `rows` rows each (the last may have
/// fewer): `(first row, rows)`.
pub(super) fn tiles(rows: usize, ho: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..ho).step_by(rows).map(move |i0| (i0, rows.min(ho - i0)))
}

/// `row` reversed into `buf` (`row[W−1−j]` at `j`): the flip's mirror
/// read as a copy, so that the arithmetic on it is elementwise
/// (vectorised) rather than an indexed loop running backwards.
#[inline(always)]
pub(super) fn reversed<'a, F: Float>(row: &[F], buf: &'a mut [F]) -> &'a [F] {
    let buf = &mut buf[..row.len()];
    for (r, &v) in buf.iter_mut().zip(row.iter().rev()) {
        *r = v;
    }
    buf
}

//! The augmentation of CONTRACT.md ("Augmentation and output", steps 1–4)
//! as a differentiable node: forward, and its vector-Jacobian product with
//! respect to the input images and to every sample's physical parameters.
//!
//! Images are `[B, C, H, W]` in `[0, 1]`; the output is `[B, C, H_out, W_out]`
//! before normalisation (mean 0, std 1: the node does not normalise).
//! Per-sample parameters are a `[B, 7]` tensor in the order of [`Param`]:
//! `area, aspect, cx, cy, angle, flip, sigma`.
//!
//! The parameter gradient goes through the 6 affine coefficients: the
//! derivative of a bilinear sample in its position `(x, y)` gives
//! `∂out/∂m`, and [`affine_with_jacobian`] chains `m` to the physical
//! parameters with the formula of [`crate::ops::geometry::affine_matrix_f64`].
//! The bilinear sample is only piecewise smooth: it has a kink wherever a
//! sample position crosses an integer, and the crop size has one where it is
//! clamped at 1.

use std::rc::Rc;

use rayon::prelude::*;

use super::float::Float;
use super::tape::{CustomOp, Tape, Var};
use super::tensor::Tensor;
use crate::ops::geometry::{Geometry, SampleParams, Size};
use crate::ops::noise::fill_normals;
use crate::ops::philox::{PhiloxStream, STREAM_NOISE};

/// The per-sample physical parameters, in their column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Param {
    /// Crop area fraction.
    Area = 0,
    /// Crop aspect ratio.
    Aspect = 1,
    /// Crop centre x, normalised.
    Cx = 2,
    /// Crop centre y, normalised.
    Cy = 3,
    /// Rotation, radians.
    Angle = 4,
    /// Flip gate in [0, 1].
    Flip = 5,
    /// Noise standard deviation (gate included).
    Sigma = 6,
}

/// Number of physical parameters per sample.
pub const NUM_PARAMS: usize = 7;

/// The Philox address of one sample's noise: `(seed, epoch, sample)` on
/// stream [`STREAM_NOISE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleKey {
    /// The run's seed.
    pub seed: u64,
    /// The epoch.
    pub epoch: u64,
    /// Global index of the sample in the dataset.
    pub sample: u64,
}

impl SampleKey {
    /// The noise stream of this sample.
    pub fn noise(&self) -> PhiloxStream {
        PhiloxStream::new(self.seed, self.epoch, self.sample, STREAM_NOISE)
    }
}

/// Shapes of one augmentation: channels, source size and output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentShape {
    /// Image channels.
    pub channels: usize,
    /// Source image size.
    pub src: Size,
    /// Output size.
    pub out: Size,
}

/// A sample's parameters as a row of the `[B, 7]` parameter tensor.
pub fn params_row(p: &SampleParams) -> [f32; NUM_PARAMS] {
    let g = &p.geometry;
    [
        g.area,
        g.aspect,
        g.center[0],
        g.center[1],
        g.angle,
        p.flip,
        p.sigma,
    ]
}

/// The inverse of [`params_row`].
pub fn sample_params(row: &[f32; NUM_PARAMS]) -> SampleParams {
    SampleParams {
        geometry: Geometry {
            area: row[0],
            aspect: row[1],
            center: [row[2], row[3]],
            angle: row[4],
        },
        flip: row[5],
        sigma: row[6],
    }
}

/// The 6 affine coefficients of `affine_matrix_f64` for geometric parameters
/// `g = [area, aspect, cx, cy, angle]` (in f64), and their Jacobian
/// `jac[r][q] = ∂m[r]/∂g[q]` (zero through a clamped crop size).
pub fn affine_with_jacobian(g: [f64; 5], src: Size, out: Size) -> ([f64; 6], [[f64; 5]; 6]) {
    let [s, r, cx, cy, theta] = g;
    let (wi, hi) = (src.width as f64, src.height as f64);
    let (wo, ho) = (out.width as f64, out.height as f64);
    // crop size, as Geometry::crop_size
    let (cw_raw, ch_raw) = ((s * r).sqrt(), (s / r).sqrt());
    let (cw, ch) = (cw_raw.min(1.0), ch_raw.min(1.0));
    let (dcw_ds, dcw_dr) = if cw_raw < 1.0 {
        (cw / (2.0 * s), cw / (2.0 * r))
    } else {
        (0.0, 0.0)
    };
    let (dch_ds, dch_dr) = if ch_raw < 1.0 {
        (ch / (2.0 * s), -ch / (2.0 * r))
    } else {
        (0.0, 0.0)
    };
    let a = cw * wi / 2.0;
    let b = ch * hi / 2.0;
    let cxp = (cx + 1.0) * wi / 2.0;
    let cyp = (cy + 1.0) * hi / 2.0;
    let (sin, cos) = theta.sin_cos();
    let (su, tu) = (2.0 / wo, 1.0 / wo - 1.0);
    let (sv, tv) = (2.0 / ho, 1.0 / ho - 1.0);
    let m = [
        cos * a * su,
        -sin * b * sv,
        cxp - 0.5 + cos * a * tu - sin * b * tv,
        sin * a * su,
        cos * b * sv,
        cyp - 0.5 + sin * a * tu + cos * b * tv,
    ];
    let dm_da = [cos * su, 0.0, cos * tu, sin * su, 0.0, sin * tu];
    let dm_db = [0.0, -sin * sv, -sin * tv, 0.0, cos * sv, cos * tv];
    let dm_dt = [
        -sin * a * su,
        -cos * b * sv,
        -sin * a * tu - cos * b * tv,
        cos * a * su,
        -sin * b * sv,
        cos * a * tu - sin * b * tv,
    ];
    let (da_ds, da_dr) = (dcw_ds * wi / 2.0, dcw_dr * wi / 2.0);
    let (db_ds, db_dr) = (dch_ds * hi / 2.0, dch_dr * hi / 2.0);
    let mut jac = [[0.0; 5]; 6];
    for k in 0..6 {
        jac[k][0] = dm_da[k] * da_ds + dm_db[k] * db_ds;
        jac[k][1] = dm_da[k] * da_dr + dm_db[k] * db_dr;
        jac[k][4] = dm_dt[k];
    }
    jac[2][2] = wi / 2.0;
    jac[5][3] = hi / 2.0;
    (m, jac)
}

/// Output elements a worker plans and samples at once: whole output rows,
/// as many as fit this (at least one). Long loops vectorise with few
/// remainders (a 28-pixel row alone leaves 4 of every 28 to scalar code),
/// and the tile's work arrays, about 12 × this × 4 bytes in f32, stay in L1.
const TILE_ELEMENTS: usize = 256;

/// Zero pixels around each padded source plane ([`Scratch::pad_planes`]).
const BORDER: usize = 2;

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
struct Scratch<F> {
    /// Output width.
    wo: usize,
    /// Rows per tile.
    rows: usize,
    /// The padded source planes, `[C, H + 4, W + 4]` (border zero).
    padded: Vec<F>,
    /// Their gradient, same layout (for the image gradient).
    padded_grad: Vec<F>,
    /// Padded width `W + 4`.
    pw: usize,
    /// Padded plane length `(H + 4)·(W + 4)`.
    plane_len: usize,
    /// Column `j` of each tile element (the tile's rows side by side).
    cols: Vec<F>,
    /// Row `i` of each tile element, for the tile at hand.
    rowf: Vec<F>,
    fx: Vec<F>,
    fy: Vec<F>,
    /// Flat index of each element's top-left corner in the padded plane,
    /// at most `plane_len − pw − 2` (so all four corners are inside).
    idx: Vec<i32>,
    px: [Vec<F>; 4],
    view: Vec<F>,
    gs: Vec<F>,
    dx: Vec<F>,
    dy: Vec<F>,
    /// Rows reversed (the flip's mirror): one output row in the forward
    /// pass, the tile's rows of the output gradient in the VJP.
    rev: Vec<F>,
    eps32: Vec<f32>,
    eps: Vec<F>,
    /// Per tile position, sums over a sample's tiles (VJP to the
    /// parameters): `Σ dx`, `Σ dy`, `Σ i·dx`, `Σ i·dy`, and the flip terms.
    acc: [Vec<F>; 5],
}

impl<F: Float> Scratch<F> {
    fn new(shape: &AugmentShape) -> Self {
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
    fn pad_planes(&mut self, img: &[F], h: usize, w: usize) {
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
    fn clear_grad(&mut self) {
        self.padded_grad.clear();
        self.padded_grad.resize(self.padded.len(), F::ZERO);
    }

    /// Writes the padded gradient planes' interiors to `gi` (`[C, H, W]`).
    fn unpad_grad(&self, gi: &mut [F], h: usize, w: usize) {
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
    fn plan(&mut self, m: &[F; 6], i0: usize, nr: usize, h: usize, w: usize) -> usize {
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
    fn gather(&mut self, c: usize, l: usize) {
        let plane = &self.padded[c * self.plane_len..(c + 1) * self.plane_len];
        // SAFETY: `plan` filled the first `l` indices (of `tile ≥ l` long
        // arrays) and clamped each into `[0, plane_len − pw − 2]`, so
        // `index + pw + 1` is inside the plane.
        unsafe { F::gather_corners(plane, &self.idx[..l], self.pw, &mut self.px) };
    }

    /// CONTRACT.md step 2, operation for operation, for the gathered
    /// elements.
    #[inline(always)]
    fn blend(&self, out: &mut [F]) {
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
    fn slopes(&mut self, l: usize) {
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
    fn slopes_into(&self, sx: &mut [F], sy: &mut [F]) {
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
    fn fill_row_indices(&mut self, i0: usize, nr: usize) {
        let wo = self.wo;
        for r in 0..nr {
            self.rowf[r * wo..(r + 1) * wo].fill(F::from_f64((i0 + r) as f64));
        }
    }

    /// Zeroes `acc`, the per-tile-position sums of a sample's parameter VJP.
    #[inline(always)]
    fn clear_acc(&mut self) {
        let tile = self.rows * self.wo;
        for a in self.acc.iter_mut() {
            a[..tile].fill(F::ZERO);
        }
    }

    /// `rev`: the tile's output gradient `gyt` (`l` elements, rows of
    /// `wo`) mirrored within each row, `gy(i, W−1−j)` at `(i, j)` (written
    /// out: through `reversed` the VJP measured 6% slower).
    #[inline(always)]
    fn mirror_rows(&mut self, gyt: &[F]) {
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
    fn close_tile(&mut self, l: usize) {
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
    fn scatter(&mut self, c: usize, l: usize) {
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
    fn draw(&mut self, key: &SampleKey, len: usize) {
        self.eps32.resize(len, 0.0);
        fill_normals(&key.noise(), 0, &mut self.eps32);
        self.eps.clear();
        self.eps.extend(self.eps32.iter().map(|&z| F::from_f32(z)));
    }
}

/// The tiles of an `ho`-row output, `rows` rows each (the last may have
/// fewer): `(first row, rows)`.
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

fn tiles(rows: usize, ho: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..ho).step_by(rows).map(move |i0| (i0, rows.min(ho - i0)))
}

/// `row` reversed into `buf` (`row[W−1−j]` at `j`): the flip's mirror
/// read as a copy, so that the arithmetic on it is elementwise
/// (vectorised) rather than an indexed loop running backwards.
#[inline(always)]
fn reversed<'a, F: Float>(row: &[F], buf: &'a mut [F]) -> &'a [F] {
    let buf = &mut buf[..row.len()];
    for (r, &v) in buf.iter_mut().zip(row.iter().rev()) {
        *r = v;
    }
    buf
}

fn row_params<F: Float>(params: &Tensor<F>, b: usize) -> [f64; NUM_PARAMS] {
    let row = &params.data()[b * NUM_PARAMS..(b + 1) * NUM_PARAMS];
    std::array::from_fn(|q| row[q].to_f64())
}

fn coefficients<F: Float>(p: &[f64; NUM_PARAMS], shape: &AugmentShape) -> [F; 6] {
    // For f32 the parameters are f32 values, so this is `affine_matrix`:
    // coefficients in f64 from the f32 geometry, rounded once.
    let (m, _) = affine_with_jacobian([p[0], p[1], p[2], p[3], p[4]], shape.src, shape.out);
    m.map(F::from_f64)
}

/// The noise of one sample, `len` normals in CHW order: `eps[e]` is element
/// `e % 4` of block `e / 4` of the sample's [`STREAM_NOISE`] stream, drawn by
/// the loader's vectorised Box–Muller ([`fill_normals`], within
/// [`MAX_NORMAL_ERROR`](crate::ops::noise::MAX_NORMAL_ERROR) of
/// `PhiloxStream::normals`), so the node's noise is the loader's, bit for bit.
pub fn noise<F: Float>(key: &SampleKey, len: usize) -> Vec<F> {
    let mut z = vec![0f32; len];
    fill_normals(&key.noise(), 0, &mut z);
    z.into_iter().map(F::from_f32).collect()
}

/// Batches of at least this many output elements spread their samples
/// over rayon's threads; smaller ones run on the calling thread. A batch of
/// 128 samples of 28×28 (100 k elements) is far below: on the shared
/// 2-core machine the fork-join hop cost more than it saved (measured: the
/// MAML meta step 4.2 ms on one thread, 6.0 ms on two).
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 20;

/// Runs `f(state, b, chunk)` on every `len`-element chunk of `data`, each
/// chunk on its own (so the result does not depend on the threads), over
/// rayon's threads when `parallel`, with `init()` making a worker's state.
pub(crate) fn for_each_chunk<T: Send, S>(
    data: &mut [T],
    len: usize,
    parallel: bool,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    if len == 0 {
        return;
    }
    if parallel {
        data.par_chunks_mut(len)
            .enumerate()
            .with_min_len(4)
            .for_each_init(init, |s, (b, c)| f(s, b, c));
    } else {
        let mut s = init();
        for (b, c) in data.chunks_mut(len).enumerate() {
            f(&mut s, b, c);
        }
    }
}

/// [`for_each_chunk`] over two arrays in step: `f(state, b, a_b, c_b)`
/// with `a_b` the `b`-th `a_len`-element chunk of `a` and `c_b` the `b`-th
/// `c_len`-element chunk of `c`.
#[allow(clippy::too_many_arguments)]
fn for_each_chunk_pair<T: Send, U: Send, S>(
    a: &mut [T],
    a_len: usize,
    c: &mut [U],
    c_len: usize,
    parallel: bool,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T], &mut [U]) + Sync + Send,
) {
    if a_len == 0 || c_len == 0 {
        return;
    }
    if parallel {
        a.par_chunks_mut(a_len)
            .zip(c.par_chunks_mut(c_len))
            .enumerate()
            .with_min_len(4)
            .for_each_init(init, |s, (b, (x, y))| f(s, b, x, y));
    } else {
        let mut s = init();
        for (b, (x, y)) in a.chunks_mut(a_len).zip(c.chunks_mut(c_len)).enumerate() {
            f(&mut s, b, x, y);
        }
    }
}

/// Each sample's noise (`[B, C·H_out·W_out]`, zeros where not drawn),
/// drawn where `want(b)`, samples in parallel, and which were drawn.
fn batch_noise<F: Float>(
    keys: &[SampleKey],
    len: usize,
    want: impl Fn(usize) -> bool + Sync,
) -> (Vec<F>, Vec<bool>) {
    let drawn: Vec<bool> = (0..keys.len()).map(&want).collect();
    let mut eps = vec![F::ZERO; keys.len() * len];
    let parallel = eps.len() >= PARALLEL_MIN_ELEMENTS;
    for_each_chunk(
        &mut eps,
        len,
        parallel,
        Vec::new,
        |z: &mut Vec<f32>, b, out| {
            if drawn[b] {
                z.resize(len, 0.0);
                fill_normals(&keys[b].noise(), 0, z);
                for (o, &v) in out.iter_mut().zip(z.iter()) {
                    *o = F::from_f32(v);
                }
            }
        },
    );
    (eps, drawn)
}

/// Elements of one sample's output, `C·H_out·W_out`.
fn out_len(shape: &AugmentShape) -> usize {
    shape.channels * shape.out.height as usize * shape.out.width as usize
}

fn check_shapes<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
) -> usize {
    let s = images.shape();
    assert_eq!(s.len(), 4, "images must be [B, C, H, W]");
    assert_eq!(
        &s[1..],
        [
            shape.channels,
            shape.src.height as usize,
            shape.src.width as usize
        ],
        "image shape"
    );
    // flat pixel indices (of the padded planes) are computed exactly in f32
    let pad = 2 * BORDER as u64;
    assert!(
        (shape.src.height as u64 + pad) * (shape.src.width as u64 + pad) <= 1 << 24,
        "source image larger than 2^24 pixels (its border included)"
    );
    assert_eq!(params.shape(), [s[0], NUM_PARAMS], "params must be [B, 7]");
    assert_eq!(keys.len(), s[0], "one key per sample");
    s[0]
}

/// Forward: augments every sample of `images` (`[B, C, H, W]`) with its row
/// of `params` (`[B, 7]`) and the noise addressed by its key.
pub fn augment_forward<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
) -> Tensor<F> {
    let plane_out = shape.channels * shape.out.height as usize * shape.out.width as usize;
    let sigma = |b: usize| params.data()[b * NUM_PARAMS + Param::Sigma as usize];
    let (eps, _) = batch_noise::<F>(keys, plane_out, |b| sigma(b) > F::ZERO);
    forward_impl(images, params, keys, shape, &eps, false).0
}

/// Calls `$f(args)` through its widest build the CPU runs: `$f` +
/// `_avx512` (AVX-512F and VL), `_avx2`, or the baseline `$f`. The same
/// operations in all (Rust does not fuse a multiply and an add into an
/// FMA), so the same bits; only the vector width differs (measured on the
/// 128×28×28 batch, one thread: forward 176 → 158 µs, parameter VJP with
/// its noise 384 → 360 µs from the AVX2 build to the AVX-512 one).
macro_rules! dispatch {
    ($f:ident($($a:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                // SAFETY: the `_avx512` build requires AVX-512F and VL
                // (and the AVX2 they imply), which the CPU was just found
                // to support.
                unsafe { paste_build!($f, avx512)($($a),*) }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the `_avx2` build only requires AVX2, which the
                // CPU was just found to support.
                unsafe { paste_build!($f, avx2)($($a),*) }
            } else {
                $f($($a),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $f($($a),*)
        }
    }};
}

macro_rules! paste_build {
    (forward_sample, avx2) => {
        forward_sample_avx2
    };
    (vjp_sample, avx2) => {
        vjp_sample_avx2
    };
    (forward_sample, avx512) => {
        forward_sample_avx512
    };
    (vjp_sample, avx512) => {
        vjp_sample_avx512
    };
    (vjp_saved_sample, avx2) => {
        vjp_saved_sample_avx2
    };
    (vjp_saved_sample, avx512) => {
        vjp_saved_sample_avx512
    };
}

/// The `_avx2` and `_avx512` builds of [`forward_sample`] and
/// [`vjp_sample`]: the same generic code, compiled for those features
/// (without features: the baseline, as the tests compare it).
macro_rules! builds {
    ($forward:ident, $vjp:ident, $vjp_saved:ident $(, $features:literal)?) => {
        $(#[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)])?
        unsafe fn $forward<F: Float>(
            s: &mut Scratch<F>,
            img: &[F],
            pr: &[F],
            eps: &[F],
            shape: &AugmentShape,
            o: &mut [F],
            save: Option<&mut [F]>,
        ) {
            forward_sample(s, img, pr, eps, shape, o, save)
        }

        $(#[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)])?
        unsafe fn $vjp_saved<F: Float>(
            s: &mut Scratch<F>,
            p: &[f64; NUM_PARAMS],
            key: &SampleKey,
            eps: Option<&[F]>,
            shape: &AugmentShape,
            gyb: &[F],
            saved: &[F],
        ) -> [F; NUM_PARAMS] {
            vjp_saved_sample(s, p, key, eps, shape, gyb, saved)
        }

        $(#[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)])?
        #[allow(clippy::too_many_arguments)]
        unsafe fn $vjp<F: Float>(
            s: &mut Scratch<F>,
            img: &[F],
            p: &[f64; NUM_PARAMS],
            key: &SampleKey,
            eps: Option<&[F]>,
            shape: &AugmentShape,
            gyb: &[F],
            gi: Option<&mut [F]>,
            want_params: bool,
        ) -> [F; NUM_PARAMS] {
            vjp_sample(s, img, p, key, eps, shape, gyb, gi, want_params)
        }
    };
}

builds!(
    forward_sample_avx2,
    vjp_sample_avx2,
    vjp_saved_sample_avx2,
    "avx2"
);
builds!(
    forward_sample_avx512,
    vjp_sample_avx512,
    vjp_saved_sample_avx512,
    "avx512f,avx512vl"
);

/// One sample's forward (steps 1–4) into `o`, `[C, H_out, W_out]`; with
/// `save` (`3·C·H_out·W_out` long), also what the parameter VJP reads
/// ([`Saved`]): the unflipped view and its slopes.
#[inline(always)]
fn forward_sample<F: Float>(
    s: &mut Scratch<F>,
    img: &[F],
    pr: &[F],
    eps: &[F],
    shape: &AugmentShape,
    o: &mut [F],
    mut save: Option<&mut [F]>,
) {
    let (h, w) = (shape.src.height as usize, shape.src.width as usize);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let p: [f64; NUM_PARAMS] = std::array::from_fn(|q| pr[q].to_f64());
    let m = coefficients::<F>(&p, shape);
    let (g, sigma) = (pr[Param::Flip as usize], pr[Param::Sigma as usize]);
    s.pad_planes(img, h, w);
    for (i0, nr) in tiles(s.rows, ho) {
        let l = s.plan(&m, i0, nr, h, w);
        for c in 0..shape.channels {
            // the tile's rows of channel c are contiguous in the output
            let at = (c * ho + i0) * wo;
            let out = &mut o[at..at + l];
            s.gather(c, l);
            s.blend(out);
            if let Some(sv) = save.as_deref_mut() {
                let n = out_len(shape);
                let (view, slopes) = sv.split_at_mut(n);
                let (sx, sy) = slopes.split_at_mut(n);
                view[at..at + l].copy_from_slice(out);
                s.slopes_into(&mut sx[at..at + l], &mut sy[at..at + l]);
            }
            if g == F::ONE {
                for row in out.chunks_exact_mut(wo) {
                    row.reverse();
                }
            } else if g != F::ZERO {
                for row in out.chunks_exact_mut(wo) {
                    let rev = reversed(row, &mut s.rev);
                    for (v, &r) in row.iter_mut().zip(rev) {
                        *v = (F::ONE - g) * *v + g * r;
                    }
                }
            }
            if sigma > F::ZERO {
                for (r, &e) in out.iter_mut().zip(&eps[at..at + l]) {
                    *r += sigma * e;
                }
            }
        }
    }
}

/// The forward pass with each sample's noise given (`[B, C·H_out·W_out]`,
/// read where `sigma > 0`). Samples in parallel, each computed alone, so the
/// result does not depend on the number of threads.
fn forward_impl<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
    eps: &[F],
    save: bool,
) -> (Tensor<F>, Option<Saved<F>>) {
    let batch = check_shapes(images, params, keys, shape);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let plane_out = out_len(shape);
    let plane_in = images.len() / batch.max(1);
    let mut out = vec![F::ZERO; batch * plane_out];
    let parallel = out.len() >= PARALLEL_MIN_ELEMENTS;
    let sample = |s: &mut Scratch<F>, b: usize, o: &mut [F], sv: Option<&mut [F]>| {
        let img = &images.data()[b * plane_in..(b + 1) * plane_in];
        let pr = &params.data()[b * NUM_PARAMS..(b + 1) * NUM_PARAMS];
        let eps = &eps[b * plane_out..(b + 1) * plane_out];
        dispatch!(forward_sample(s, img, pr, eps, shape, o, sv));
    };
    let saved = if save && plane_out > 0 {
        let mut data = vec![F::ZERO; 3 * out.len()];
        for_each_chunk_pair(
            &mut out,
            plane_out,
            &mut data,
            3 * plane_out,
            parallel,
            || Scratch::new(shape),
            |s, b, o, sv| sample(s, b, o, Some(sv)),
        );
        Some(Saved { data })
    } else {
        for_each_chunk(
            &mut out,
            plane_out,
            parallel,
            || Scratch::new(shape),
            |s, b, o| sample(s, b, o, None),
        );
        None
    };
    (Tensor::new(&[batch, shape.channels, ho, wo], out), saved)
}

/// Vector-Jacobian product of [`augment_forward`]: given the output gradient
/// `gy`, the gradient with respect to the images (if `want_images`) and to
/// the `[B, 7]` parameters (if `want_params`).
pub fn augment_vjp<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
    gy: &Tensor<F>,
    want_images: bool,
    want_params: bool,
) -> (Option<Tensor<F>>, Option<Tensor<F>>) {
    let plane_out = shape.channels * shape.out.height as usize * shape.out.width as usize;
    let (eps, drawn) = batch_noise::<F>(keys, plane_out, |_| want_params);
    let noise = BatchNoise { eps, drawn };
    vjp_impl(
        images,
        params,
        keys,
        shape,
        gy,
        want_images,
        want_params,
        &noise,
        None,
    )
}

/// Each sample's noise, as drawn for the forward pass.
struct BatchNoise<F> {
    /// `[B, C·H_out·W_out]`.
    eps: Vec<F>,
    /// Whether sample `b`'s noise is in `eps` (else it is drawn again).
    drawn: Vec<bool>,
}

impl<F> BatchNoise<F> {
    /// Sample `b`'s noise (`len` elements) if it was kept.
    fn of(&self, b: usize, len: usize) -> Option<&[F]> {
        self.drawn
            .get(b)
            .copied()
            .unwrap_or(false)
            .then(|| &self.eps[b * len..(b + 1) * len])
    }
}

/// The gradient of one sample: into `gi` (its image's gradient) when given,
/// and the parameters' gradient when `want_params`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn vjp_sample<F: Float>(
    s: &mut Scratch<F>,
    img: &[F],
    p: &[f64; NUM_PARAMS],
    key: &SampleKey,
    eps: Option<&[F]>,
    shape: &AugmentShape,
    gyb: &[F],
    gi: Option<&mut [F]>,
    want_params: bool,
) -> [F; NUM_PARAMS] {
    let (h, w) = (shape.src.height as usize, shape.src.width as usize);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let m = coefficients::<F>(p, shape);
    let g = F::from_f64(p[Param::Flip as usize]);
    // partial sums per tile position, reduced once per sample: the loops
    // stay elementwise over whole tiles (vectorised) instead of chains of
    // dependent additions or row-long loops
    s.clear_acc();
    s.pad_planes(img, h, w);
    if gi.is_some() {
        s.clear_grad();
    }
    for (i0, nr) in tiles(s.rows, ho) {
        let l = s.plan(&m, i0, nr, h, w);
        s.dx[..l].fill(F::ZERO);
        s.dy[..l].fill(F::ZERO);
        for c in 0..shape.channels {
            let at = (c * ho + i0) * wo;
            let gyt = &gyb[at..at + l];
            s.mirror_rows(gyt);
            // gradient with respect to the unflipped view S
            let (gs, rev) = (&mut s.gs[..l], &s.rev[..l]);
            for e in 0..l {
                gs[e] = (F::ONE - g) * gyt[e] + g * rev[e];
            }
            s.gather(c, l);
            if want_params {
                s.slopes(l);
                let mut view = std::mem::take(&mut s.view);
                let v = &mut view[..l];
                s.blend(v);
                // flip: ∂out/∂g = Σ gy(i, j)·(S(i, W−1−j) − S(i, j))
                //              = Σ S(i, j)·(gy(i, W−1−j) − gy(i, j))
                let (fl, rev) = (&mut s.acc[4][..l], &s.rev[..l]);
                for e in 0..l {
                    fl[e] += v[e] * (rev[e] - gyt[e]);
                }
                s.view = view;
            }
            if gi.is_some() {
                s.scatter(c, l);
            }
        }
        if want_params {
            s.close_tile(l);
        }
    }
    if let Some(gi) = gi {
        s.unpad_grad(gi, h, w);
    }
    if want_params {
        param_row(s, p, key, eps, shape, gyb)
    } else {
        [F::ZERO; NUM_PARAMS]
    }
}

/// What the forward pass keeps for the parameter VJP, per sample
/// `[3, C·H_out·W_out]`: the unflipped view `S` and its slopes `∂S/∂x`,
/// `∂S/∂y` in the sample position. With them the VJP to the parameters
/// reads three arrays instead of planning, gathering and blending again
/// (measured on 128 samples of 28×28, one thread: the parameter VJP ~3×
/// faster, the forward ~15% slower).
struct Saved<F> {
    /// `[B, 3, C·H_out·W_out]`.
    data: Vec<F>,
}

/// At most this many elements are kept for the parameter VJP (three per output
/// element): larger batches recompute in the VJP instead. 2^22 is 16 MiB in
/// f32, 3 × 128 samples of 104×104.
pub const SAVE_MAX_ELEMENTS: usize = 1 << 22;

/// The parameter gradient of one sample from what its forward pass saved
/// (`saved`, [`Saved`]'s layout): the same sums in the same order as
/// [`vjp_sample`], so the same bits.
#[inline(always)]
fn vjp_saved_sample<F: Float>(
    s: &mut Scratch<F>,
    p: &[f64; NUM_PARAMS],
    key: &SampleKey,
    eps: Option<&[F]>,
    shape: &AugmentShape,
    gyb: &[F],
    saved: &[F],
) -> [F; NUM_PARAMS] {
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let g = F::from_f64(p[Param::Flip as usize]);
    let n = out_len(shape);
    let (view, slopes) = saved.split_at(n);
    let (sxs, sys) = slopes.split_at(n);
    s.clear_acc();
    for (i0, nr) in tiles(s.rows, ho) {
        let l = nr * wo;
        s.fill_row_indices(i0, nr);
        s.dx[..l].fill(F::ZERO);
        s.dy[..l].fill(F::ZERO);
        for c in 0..shape.channels {
            let at = (c * ho + i0) * wo;
            let gyt = &gyb[at..at + l];
            s.mirror_rows(gyt);
            let (sx, sy, v) = (&sxs[at..at + l], &sys[at..at + l], &view[at..at + l]);
            let (dx, dy) = (&mut s.dx[..l], &mut s.dy[..l]);
            let (fl, rev) = (&mut s.acc[4][..l], &s.rev[..l]);
            for e in 0..l {
                let d = (F::ONE - g) * gyt[e] + g * rev[e];
                dx[e] += d * sx[e];
                dy[e] += d * sy[e];
                fl[e] += v[e] * (rev[e] - gyt[e]);
            }
        }
        s.close_tile(l);
    }
    param_row(s, p, key, eps, shape, gyb)
}

/// The parameter gradient of one sample from the per-tile-position sums in
/// `s.acc` and the noise (`eps`, or drawn again from `key`).
#[inline(always)]
fn param_row<F: Float>(
    s: &mut Scratch<F>,
    p: &[f64; NUM_PARAMS],
    key: &SampleKey,
    eps: Option<&[F]>,
    shape: &AugmentShape,
    gyb: &[F],
) -> [F; NUM_PARAMS] {
    let tile = s.rows * s.wo;
    let mut row = [F::ZERO; NUM_PARAMS];
    // dm[k] = Σ_{i,j} (∂x/∂m_k or ∂y/∂m_k)·slope: x = m0·j + m1·i + m2
    // sums in locals, over slices of one length (no bounds checks): the
    // same additions in the same order as an array of sums
    let (mut d0, mut d1, mut d2, mut d3, mut d4, mut d5) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    let mut dflip = 0f64;
    let [cx, cy, cxi, cyi, fl] = &s.acc;
    let (cols, cx, cy, cxi, cyi, fl) = (
        &s.cols[..tile],
        &cx[..tile],
        &cy[..tile],
        &cxi[..tile],
        &cyi[..tile],
        &fl[..tile],
    );
    for e in 0..tile {
        let fj = cols[e].to_f64();
        let (cx, cy) = (cx[e].to_f64(), cy[e].to_f64());
        d0 += cx * fj;
        d1 += cxi[e].to_f64();
        d2 += cx;
        d3 += cy * fj;
        d4 += cyi[e].to_f64();
        d5 += cy;
        dflip += fl[e].to_f64();
    }
    let dm = [d0, d1, d2, d3, d4, d5];
    let (_, jac) = affine_with_jacobian([p[0], p[1], p[2], p[3], p[4]], shape.src, shape.out);
    for q in 0..5 {
        row[q] = F::from_f64((0..6).map(|k| jac[k][q] * dm[k]).sum());
    }
    row[Param::Flip as usize] = F::from_f64(dflip);
    let eps = match eps {
        Some(e) => e,
        None => {
            s.draw(key, gyb.len());
            &s.eps
        }
    };
    // eight interleaved partial sums (vectorised)
    let mut acc = [F::ZERO; 8];
    let (ga, ea) = (gyb.chunks_exact(8), eps[..gyb.len()].chunks_exact(8));
    let mut dsigma: F = ga
        .remainder()
        .iter()
        .zip(ea.remainder())
        .map(|(&a, &e)| a * e)
        .sum();
    for (gc, ec) in ga.zip(ea) {
        for t in 0..8 {
            acc[t] += gc[t] * ec[t];
        }
    }
    dsigma += acc.iter().copied().sum::<F>();
    row[Param::Sigma as usize] = dsigma;
    row
}

#[allow(clippy::too_many_arguments)]
fn vjp_impl<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
    gy: &Tensor<F>,
    want_images: bool,
    want_params: bool,
    noise: &BatchNoise<F>,
    saved: Option<&Saved<F>>,
) -> (Option<Tensor<F>>, Option<Tensor<F>>) {
    let batch = check_shapes(images, params, keys, shape);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let plane_out = shape.channels * ho * wo;
    let plane_in = images.len() / batch.max(1);
    assert_eq!(gy.len(), batch * plane_out, "gradient shape");
    if !want_images && !want_params {
        return (None, None);
    }
    let sample = |s: &mut Scratch<F>, b: usize, gi: Option<&mut [F]>| {
        dispatch!(vjp_sample(
            s,
            &images.data()[b * plane_in..(b + 1) * plane_in],
            &row_params(params, b),
            &keys[b],
            noise.of(b, plane_out),
            shape,
            &gy.data()[b * plane_out..(b + 1) * plane_out],
            gi,
            want_params,
        ))
    };
    let mut rows = vec![[F::ZERO; NUM_PARAMS]; batch];
    let parallel = batch * plane_out >= PARALLEL_MIN_ELEMENTS;
    if let Some(saved) = saved.filter(|_| want_params && !want_images) {
        assert_eq!(saved.data.len(), 3 * gy.len(), "saved forward values");
        for_each_chunk(
            &mut rows,
            1,
            parallel,
            || Scratch::new(shape),
            |s, b, r| {
                r[0] = dispatch!(vjp_saved_sample(
                    s,
                    &row_params(params, b),
                    &keys[b],
                    noise.of(b, plane_out),
                    shape,
                    &gy.data()[b * plane_out..(b + 1) * plane_out],
                    &saved.data[3 * b * plane_out..3 * (b + 1) * plane_out],
                ))
            },
        );
        let g_par = Tensor::new(&[batch, NUM_PARAMS], rows.into_iter().flatten().collect());
        return (None, Some(g_par));
    }
    let mut g_img = want_images.then(|| Tensor::zeros(images.shape()));
    match g_img.as_mut() {
        Some(t) if plane_in > 0 => for_each_chunk_pair(
            t.data_mut(),
            plane_in,
            &mut rows,
            1,
            parallel,
            || Scratch::new(shape),
            |s, b, g, r| r[0] = sample(s, b, Some(g)),
        ),
        _ => for_each_chunk(
            &mut rows,
            1,
            parallel,
            || Scratch::new(shape),
            |s, b, r| r[0] = sample(s, b, None),
        ),
    }
    let g_par = want_params
        .then(|| Tensor::new(&[batch, NUM_PARAMS], rows.into_iter().flatten().collect()));
    (g_img, g_par)
}

/// The augmentation as a [`CustomOp`] of the tape.
struct AugmentOp<F> {
    inputs: [Var; 2],
    keys: Rc<[SampleKey]>,
    shape: AugmentShape,
    noise: BatchNoise<F>,
    saved: Option<Saved<F>>,
}

impl<F: Float> CustomOp<F> for AugmentOp<F> {
    fn name(&self) -> &'static str {
        "augment"
    }
    fn inputs(&self) -> &[Var] {
        &self.inputs
    }
    fn vjp(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        gy: &Tensor<F>,
        wanted: &[bool],
    ) -> Vec<Option<Tensor<F>>> {
        let (gi, gp) = vjp_impl(
            inputs[0],
            inputs[1],
            &self.keys,
            &self.shape,
            gy,
            wanted[0],
            wanted[1],
            &self.noise,
            self.saved.as_ref(),
        );
        vec![gi, gp]
    }
}

impl<F: Float> Tape<F> {
    /// Records the augmentation of `images` (`[B, C, H, W]`) with per-sample
    /// `params` (`[B, 7]`, see [`Param`]) and noise keys; differentiable in
    /// both inputs (once: see [`CustomOp`]).
    ///
    /// Each sample's noise is drawn once here and kept for the backward
    /// pass: every sample's when the parameters require a gradient (`∂/∂σ`
    /// needs the noise even where `σ = 0`), else only where `σ > 0`. When
    /// the parameters require a gradient, the unflipped view and its two
    /// slopes are kept too (three arrays the size of the output, up to
    /// [`SAVE_MAX_ELEMENTS`] in all), so that the parameter VJP need not
    /// sample the images again.
    pub fn augment(
        &mut self,
        images: Var,
        params: Var,
        keys: Rc<[SampleKey]>,
        shape: AugmentShape,
    ) -> Var {
        let plane_out = shape.channels * shape.out.height as usize * shape.out.width as usize;
        let all = self.requires_grad(params);
        let pv = self.value(params);
        let (eps, drawn) = batch_noise::<F>(&keys, plane_out, |b| {
            all || pv.data()[b * NUM_PARAMS + Param::Sigma as usize] > F::ZERO
        });
        // what the parameter VJP reads, kept when it will be wanted
        let save = all && 3 * eps.len() <= SAVE_MAX_ELEMENTS;
        let (value, saved) = forward_impl(self.value(images), pv, &keys, &shape, &eps, save);
        let op = AugmentOp {
            inputs: [images, params],
            keys,
            shape,
            noise: BatchNoise { eps, drawn },
            saved,
        };
        self.custom(Rc::new(op), value)
    }
}

#[cfg(test)]
mod tests {
    //! Every build of the per-sample passes (baseline, AVX2, AVX-512) gives
    //! the same bits: output, image gradient and parameter gradient.

    use super::*;
    use crate::meta::rng::SplitMix;

    type Forward = unsafe fn(
        &mut Scratch<f32>,
        &[f32],
        &[f32],
        &[f32],
        &AugmentShape,
        &mut [f32],
        Option<&mut [f32]>,
    );
    type VjpSaved = unsafe fn(
        &mut Scratch<f32>,
        &[f64; NUM_PARAMS],
        &SampleKey,
        Option<&[f32]>,
        &AugmentShape,
        &[f32],
        &[f32],
    ) -> [f32; NUM_PARAMS];
    type Vjp = unsafe fn(
        &mut Scratch<f32>,
        &[f32],
        &[f64; NUM_PARAMS],
        &SampleKey,
        Option<&[f32]>,
        &AugmentShape,
        &[f32],
        Option<&mut [f32]>,
        bool,
    ) -> [f32; NUM_PARAMS];

    /// The builds this CPU runs, the baseline first.
    type Build = (&'static str, Forward, Vjp, VjpSaved);

    fn builds() -> Vec<Build> {
        builds!(forward_base, vjp_base, vjp_saved_base);
        #[allow(unused_mut)]
        let mut v: Vec<Build> = vec![("baseline", forward_base, vjp_base, vjp_saved_base)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push((
                    "avx2",
                    forward_sample_avx2,
                    vjp_sample_avx2,
                    vjp_saved_sample_avx2,
                ));
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                v.push((
                    "avx512",
                    forward_sample_avx512,
                    vjp_sample_avx512,
                    vjp_saved_sample_avx512,
                ));
            }
        }
        v
    }

    #[test]
    fn every_build_gives_the_same_bits() {
        let mut rng = SplitMix::new(7);
        let builds = builds();
        eprintln!(
            "builds compared: {:?}",
            builds.iter().map(|b| b.0).collect::<Vec<_>>()
        );
        for (c, h, w, ho, wo) in [(1, 28, 28, 28, 28), (3, 13, 9, 17, 31), (2, 5, 40, 3, 7)] {
            let shape = AugmentShape {
                channels: c,
                src: Size::new(h as u32, w as u32),
                out: Size::new(ho as u32, wo as u32),
            };
            let n_out = c * ho * wo;
            for trial in 0..8 {
                let img: Vec<f32> = (0..c * h * w).map(|_| rng.uniform() as f32).collect();
                let pr: [f32; NUM_PARAMS] = [
                    rng.range(0.2, 1.0) as f32,
                    rng.range(0.7, 1.4) as f32,
                    rng.range(-0.2, 1.2) as f32,
                    rng.range(-0.2, 1.2) as f32,
                    rng.range(-3.2, 3.2) as f32,
                    [0.0, 1.0, rng.uniform() as f32][trial % 3],
                    rng.range(0.0, 0.3) as f32,
                ];
                let p64 = pr.map(f64::from);
                let key = SampleKey {
                    seed: 3,
                    epoch: trial as u64,
                    sample: 11,
                };
                let eps: Vec<f32> = noise(&key, n_out);
                let gy: Vec<f32> = (0..n_out).map(|_| rng.range(-1.0, 1.0) as f32).collect();
                let mut results = Vec::new();
                for (name, forward, vjp, vjp_saved) in &builds {
                    let mut s = Scratch::new(&shape);
                    let mut out = vec![0f32; n_out];
                    let mut saved_out = vec![0f32; n_out];
                    let mut saved = vec![0f32; 3 * n_out];
                    let mut gi = vec![0f32; c * h * w];
                    // SAFETY: `builds` lists only the builds this CPU runs.
                    let (gp, gp_saved) = unsafe {
                        forward(&mut s, &img, &pr, &eps, &shape, &mut out, None);
                        forward(
                            &mut s,
                            &img,
                            &pr,
                            &eps,
                            &shape,
                            &mut saved_out,
                            Some(&mut saved),
                        );
                        let gp = vjp(
                            &mut s,
                            &img,
                            &p64,
                            &key,
                            Some(&eps),
                            &shape,
                            &gy,
                            Some(&mut gi),
                            true,
                        );
                        let gp_saved = vjp_saved(&mut s, &p64, &key, None, &shape, &gy, &saved);
                        (gp, gp_saved)
                    };
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    // saving changes neither the output nor the gradient
                    assert_eq!(bits(&saved_out), bits(&out), "{name}: output when saving");
                    assert_eq!(
                        bits(&gp_saved),
                        bits(&gp),
                        "{name}: parameter gradient from the saved values, shape {shape:?}"
                    );
                    results.push((name, bits(&out), bits(&gi), bits(&gp)));
                }
                for r in &results[1..] {
                    let base = &results[0];
                    assert_eq!(r.1, base.1, "{}: output, shape {shape:?}", r.0);
                    assert_eq!(r.2, base.2, "{}: image gradient, shape {shape:?}", r.0);
                    assert_eq!(r.3, base.3, "{}: parameter gradient, shape {shape:?}", r.0);
                }
            }
        }
    }
}

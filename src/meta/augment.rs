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

/// Scratch buffers of one worker: the sampling plan of one output row and
/// the per-column work arrays (all `W_out` long, `view` `C·W_out`).
///
/// The plan makes the bilinear sample branch-free: each of the four
/// neighbours of a column has a flat index clamped into the image and a mask
/// (1 inside, 0 outside), so `p = plane[index] · mask` is the contract's
/// "a neighbour outside the image counts 0" for finite pixels, and every
/// loop below except the loads is straight-line arithmetic over arrays
/// (vectorisable).
struct Scratch<F> {
    cols: Vec<F>,
    fx: Vec<F>,
    fy: Vec<F>,
    idx: [Vec<u32>; 4],
    mask: [Vec<F>; 4],
    px: [Vec<F>; 4],
    view: Vec<F>,
    gs: Vec<F>,
    dx: Vec<F>,
    dy: Vec<F>,
    eps32: Vec<f32>,
    eps: Vec<F>,
    /// Per-column sums over a sample's rows (VJP to the parameters):
    /// `Σ_i dx`, `Σ_i dy`, `Σ_i i·dx`, `Σ_i i·dy`, and the flip terms.
    col: [Vec<F>; 5],
}

impl<F: Float> Scratch<F> {
    fn new(shape: &AugmentShape) -> Self {
        let wo = shape.out.width as usize;
        let z = || vec![F::ZERO; wo];
        Scratch {
            cols: (0..wo).map(|j| F::from_f64(j as f64)).collect(),
            fx: z(),
            fy: z(),
            idx: std::array::from_fn(|_| vec![0; wo]),
            mask: std::array::from_fn(|_| z()),
            px: std::array::from_fn(|_| z()),
            view: vec![F::ZERO; shape.channels * wo],
            gs: z(),
            dx: z(),
            dy: z(),
            eps32: Vec::new(),
            eps: Vec::new(),
            col: std::array::from_fn(|_| z()),
        }
    }

    /// CONTRACT.md step 1 and the corners of step 2 for output row `i`:
    /// `x = (m[0]·j + m[1]·i) + m[2]` (as `crate::ops::warp`), `y` likewise,
    /// `x0 = floor(x)`, `fx = x − x0`; the corners' clamped flat indices
    /// and masks, all in `F` (exact: indices are below 2^24, see
    /// `check_shapes`), so that the loop vectorises.
    #[inline(always)]
    fn plan(&mut self, m: &[F; 6], i: usize, h: usize, w: usize) {
        let fi = F::from_f64(i as f64);
        let (bx, by) = (m[1] * fi, m[4] * fi);
        let (zero, one) = (F::ZERO, F::ONE);
        let wf = F::from_f64(w as f64);
        let (wl, hl) = (F::from_f64(w as f64 - 1.0), F::from_f64(h as f64 - 1.0));
        let wo = self.cols.len();
        let (fx, fy) = (&mut self.fx[..wo], &mut self.fy[..wo]);
        let [i0, i1, i2, i3] = &mut self.idx;
        let [m0, m1, m2, m3] = &mut self.mask;
        let (i0, i1, i2, i3) = (&mut i0[..wo], &mut i1[..wo], &mut i2[..wo], &mut i3[..wo]);
        let (m0, m1, m2, m3) = (&mut m0[..wo], &mut m1[..wo], &mut m2[..wo], &mut m3[..wo]);
        let inside = |v: F, last: F| (v >= zero) & (v <= last);
        // `max` then `min`: NaN goes to 0 (its masks are 0 anyway)
        let clamp = |v: F, last: F| v.max(zero).min(last);
        for (j, &fj) in self.cols.iter().enumerate() {
            let x = m[0] * fj + bx + m[2];
            let y = m[3] * fj + by + m[5];
            let (x0, y0) = (x.floor(), y.floor());
            fx[j] = x - x0;
            fy[j] = y - y0;
            let (x1, y1) = (x0 + one, y0 + one);
            let (vx0, vx1) = (inside(x0, wl), inside(x1, wl));
            let (vy0, vy1) = (inside(y0, hl), inside(y1, hl));
            let (cx0, cx1) = (clamp(x0, wl), clamp(x1, wl));
            let (ry0, ry1) = (clamp(y0, hl) * wf, clamp(y1, hl) * wf);
            i0[j] = (ry0 + cx0).to_index();
            i1[j] = (ry0 + cx1).to_index();
            i2[j] = (ry1 + cx0).to_index();
            i3[j] = (ry1 + cx1).to_index();
            let mask = |v: bool| if v { one } else { zero };
            m0[j] = mask(vy0 & vx0);
            m1[j] = mask(vy0 & vx1);
            m2[j] = mask(vy1 & vx0);
            m3[j] = mask(vy1 & vx1);
        }
    }

    /// The four neighbours of every column of the planned row in `plane`,
    /// zero outside the image.
    #[inline(always)]
    fn gather(&mut self, plane: &[F]) {
        // `plan` keeps indices inside the plane; the `min` only lets the
        // compiler drop the bounds checks
        let Some(last) = plane.len().checked_sub(1) else {
            return;
        };
        for k in 0..4 {
            let (idx, mask) = (&self.idx[k], &self.mask[k]);
            for ((p, &ix), &mk) in self.px[k].iter_mut().zip(idx).zip(mask) {
                *p = plane[(ix as usize).min(last)] * mk;
            }
        }
    }

    /// CONTRACT.md step 2, operation for operation, for the gathered row.
    #[inline(always)]
    fn blend(&self, out: &mut [F]) {
        let one = F::ONE;
        let [p0, p1, p2, p3] = &self.px;
        for j in 0..out.len() {
            let (fx, fy) = (self.fx[j], self.fy[j]);
            out[j] = (one - fy) * ((one - fx) * p0[j] + fx * p1[j])
                + fy * ((one - fx) * p2[j] + fx * p3[j]);
        }
    }

    /// Adds `gs·(∂v/∂x, ∂v/∂y)` of the gathered row to `dx`, `dy`.
    #[inline(always)]
    fn slopes(&mut self) {
        let one = F::ONE;
        let [p0, p1, p2, p3] = &self.px;
        for j in 0..self.gs.len() {
            let (fx, fy, d) = (self.fx[j], self.fy[j], self.gs[j]);
            let sx = (one - fy) * (p1[j] - p0[j]) + fy * (p3[j] - p2[j]);
            let sy = (one - fx) * (p2[j] - p0[j]) + fx * (p3[j] - p1[j]);
            self.dx[j] += d * sx;
            self.dy[j] += d * sy;
        }
    }

    /// `plane[neighbour k] += gs · weight k · mask k` for the planned row.
    #[inline(always)]
    fn scatter(&self, plane: &mut [F]) {
        let one = F::ONE;
        for j in 0..self.gs.len() {
            let (fx, fy, d) = (self.fx[j], self.fy[j], self.gs[j]);
            let wts = [
                (one - fy) * (one - fx),
                (one - fy) * fx,
                fy * (one - fx),
                fy * fx,
            ];
            for k in 0..4 {
                plane[self.idx[k][j] as usize] += d * wts[k] * self.mask[k][j];
            }
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
    // flat pixel indices are computed exactly in f32
    assert!(
        (shape.src.height as u64) * (shape.src.width as u64) <= 1 << 24,
        "source image larger than 2^24 pixels"
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
    forward_impl(images, params, keys, shape, &eps)
}

/// Calls `$f(args)`, through its AVX2 build (`$f` + `_avx2`) on CPUs that
/// have AVX2: the same operations (no FMA), so the same bits, with the
/// per-column loops vectorised 8 wide instead of 4.
macro_rules! dispatch {
    ($f:ident($($a:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the `_avx2` build only requires AVX2, which the
                // CPU was just found to support.
                unsafe { paste_avx2!($f)($($a),*) }
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

macro_rules! paste_avx2 {
    (forward_sample) => {
        forward_sample_avx2
    };
    (vjp_sample) => {
        vjp_sample_avx2
    };
}

/// One sample's forward (steps 1–4) into `o`, `[C, H_out, W_out]`.
#[inline(always)]
fn forward_sample<F: Float>(
    s: &mut Scratch<F>,
    img: &[F],
    pr: &[F],
    eps: &[F],
    shape: &AugmentShape,
    o: &mut [F],
) {
    let (h, w) = (shape.src.height as usize, shape.src.width as usize);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let p: [f64; NUM_PARAMS] = std::array::from_fn(|q| pr[q].to_f64());
    let m = coefficients::<F>(&p, shape);
    let (g, sigma) = (pr[Param::Flip as usize], pr[Param::Sigma as usize]);
    for i in 0..ho {
        s.plan(&m, i, h, w);
        for c in 0..shape.channels {
            s.gather(&img[c * h * w..(c + 1) * h * w]);
            let mut view = std::mem::take(&mut s.view);
            s.blend(&mut view[c * wo..(c + 1) * wo]);
            s.view = view;
        }
        for c in 0..shape.channels {
            let at = (c * ho + i) * wo;
            let row = &mut o[at..at + wo];
            let v = &s.view[c * wo..(c + 1) * wo];
            if g == F::ZERO {
                row.copy_from_slice(v);
            } else if g == F::ONE {
                for (r, &x) in row.iter_mut().zip(v.iter().rev()) {
                    *r = x;
                }
            } else {
                for j in 0..wo {
                    row[j] = (F::ONE - g) * v[j] + g * v[wo - 1 - j];
                }
            }
            if sigma > F::ZERO {
                for (r, &e) in row.iter_mut().zip(&eps[at..at + wo]) {
                    *r += sigma * e;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn forward_sample_avx2<F: Float>(
    s: &mut Scratch<F>,
    img: &[F],
    pr: &[F],
    eps: &[F],
    shape: &AugmentShape,
    o: &mut [F],
) {
    forward_sample(s, img, pr, eps, shape, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn vjp_sample_avx2<F: Float>(
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

/// The forward pass with each sample's noise given (`[B, C·H_out·W_out]`,
/// read where `sigma > 0`). Samples in parallel, each computed alone, so the
/// result does not depend on the number of threads.
fn forward_impl<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
    eps: &[F],
) -> Tensor<F> {
    let batch = check_shapes(images, params, keys, shape);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let plane_out = shape.channels * ho * wo;
    let plane_in = images.len() / batch.max(1);
    let mut out = vec![F::ZERO; batch * plane_out];
    let parallel = out.len() >= PARALLEL_MIN_ELEMENTS;
    for_each_chunk(
        &mut out,
        plane_out,
        parallel,
        || Scratch::new(shape),
        |s, b, o| {
            let img = &images.data()[b * plane_in..(b + 1) * plane_in];
            let pr = &params.data()[b * NUM_PARAMS..(b + 1) * NUM_PARAMS];
            let eps = &eps[b * plane_out..(b + 1) * plane_out];
            dispatch!(forward_sample(s, img, pr, eps, shape, o));
        },
    );
    Tensor::new(&[batch, shape.channels, ho, wo], out)
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
    )
}

/// Each sample's noise, as drawn for the forward pass.
struct BatchNoise<F> {
    /// `[B, C·H_out·W_out]`.
    eps: Vec<F>,
    /// Whether sample `b`'s noise is in `eps` (else it is drawn again).
    drawn: Vec<bool>,
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
    mut gi: Option<&mut [F]>,
    want_params: bool,
) -> [F; NUM_PARAMS] {
    let (h, w) = (shape.src.height as usize, shape.src.width as usize);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let m = coefficients::<F>(p, shape);
    let g = F::from_f64(p[Param::Flip as usize]);
    // per-column partial sums, reduced once per sample: the per-row loops
    // stay elementwise (vectorised) instead of chains of dependent additions
    for c in s.col.iter_mut() {
        c.fill(F::ZERO);
    }
    for i in 0..ho {
        s.plan(&m, i, h, w);
        s.dx.fill(F::ZERO);
        s.dy.fill(F::ZERO);
        for c in 0..shape.channels {
            let at = (c * ho + i) * wo;
            let gyr = &gyb[at..at + wo];
            // gradient with respect to the unflipped view S
            for j in 0..wo {
                s.gs[j] = (F::ONE - g) * gyr[j] + g * gyr[wo - 1 - j];
            }
            s.gather(&img[c * h * w..(c + 1) * h * w]);
            if want_params {
                s.slopes();
                let mut view = std::mem::take(&mut s.view);
                let v = &mut view[..wo];
                s.blend(v);
                // flip: ∂out/∂g = S(i, W−1−j) − S(i, j)
                let fl = &mut s.col[4][..wo];
                for j in 0..wo {
                    fl[j] += gyr[j] * (v[wo - 1 - j] - v[j]);
                }
                s.view = view;
            }
            if let Some(gi) = gi.as_mut() {
                s.scatter(&mut gi[c * h * w..(c + 1) * h * w]);
            }
        }
        if want_params {
            let fi = F::from_f64(i as f64);
            let [cx, cy, cxi, cyi, _] = &mut s.col;
            let (dx, dy) = (&s.dx[..wo], &s.dy[..wo]);
            let (cx, cy, cxi, cyi) = (&mut cx[..wo], &mut cy[..wo], &mut cxi[..wo], &mut cyi[..wo]);
            for j in 0..wo {
                cx[j] += dx[j];
                cy[j] += dy[j];
                cxi[j] += fi * dx[j];
                cyi[j] += fi * dy[j];
            }
        }
    }
    let mut row = [F::ZERO; NUM_PARAMS];
    if want_params {
        // dm[k] = Σ_{i,j} (∂x/∂m_k or ∂y/∂m_k)·slope: x = m0·j + m1·i + m2
        let mut dm = [0f64; 6];
        let mut dflip = 0f64;
        for j in 0..wo {
            let fj = s.cols[j].to_f64();
            let (cx, cy) = (s.col[0][j].to_f64(), s.col[1][j].to_f64());
            dm[0] += cx * fj;
            dm[1] += s.col[2][j].to_f64();
            dm[2] += cx;
            dm[3] += cy * fj;
            dm[4] += s.col[3][j].to_f64();
            dm[5] += cy;
            dflip += s.col[4][j].to_f64();
        }
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
    }
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
        let eps = noise
            .drawn
            .get(b)
            .copied()
            .unwrap_or(false)
            .then(|| &noise.eps[b * plane_out..(b + 1) * plane_out]);
        dispatch!(vjp_sample(
            s,
            &images.data()[b * plane_in..(b + 1) * plane_in],
            &row_params(params, b),
            &keys[b],
            eps,
            shape,
            &gy.data()[b * plane_out..(b + 1) * plane_out],
            gi,
            want_params,
        ))
    };
    let mut g_img = want_images.then(|| Tensor::zeros(images.shape()));
    let mut rows = vec![[F::ZERO; NUM_PARAMS]; batch];
    let parallel = batch * plane_out >= PARALLEL_MIN_ELEMENTS;
    match g_img.as_mut() {
        Some(t) if plane_in > 0 => {
            let gi = t.data_mut();
            if parallel {
                gi.par_chunks_mut(plane_in)
                    .zip(rows.par_iter_mut())
                    .enumerate()
                    .with_min_len(4)
                    .for_each_init(
                        || Scratch::new(shape),
                        |s, (b, (g, r))| *r = sample(s, b, Some(g)),
                    );
            } else {
                let mut s = Scratch::new(shape);
                for (b, (g, r)) in gi.chunks_mut(plane_in).zip(rows.iter_mut()).enumerate() {
                    *r = sample(&mut s, b, Some(g));
                }
            }
        }
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
    /// needs the noise even where `σ = 0`), else only where `σ > 0`.
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
        let value = forward_impl(self.value(images), pv, &keys, &shape, &eps);
        let op = AugmentOp {
            inputs: [images, params],
            keys,
            shape,
            noise: BatchNoise { eps, drawn },
        };
        self.custom(Rc::new(op), value)
    }
}

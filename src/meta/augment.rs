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

use super::float::Float;
use super::tape::{CustomOp, Tape, Var};
use super::tensor::Tensor;
use crate::ops::geometry::{Geometry, SampleParams, Size};
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

/// One bilinear sample: the top-left neighbour, the fractional offsets,
/// and whether all four neighbours are inside the image (the fast path).
struct Tap<F> {
    x0: i64,
    y0: i64,
    fx: F,
    fy: F,
    interior: bool,
    h: usize,
    w: usize,
}

impl<F: Float> Tap<F> {
    #[inline]
    fn new(x: F, y: F, h: usize, w: usize) -> Self {
        // neighbours are range-checked, so a saturated floor is harmless
        let (x0, y0) = (x.floor_i64(), y.floor_i64());
        let interior = x0 >= 0 && y0 >= 0 && x0 + 1 < w as i64 && y0 + 1 < h as i64;
        Tap {
            x0,
            y0,
            fx: x - F::from_f64(x0 as f64),
            fy: y - F::from_f64(y0 as f64),
            interior,
            h,
            w,
        }
    }

    /// Flat index of neighbour `k` (0: top-left, 1: top-right, 2: bottom-left,
    /// 3: bottom-right), `None` outside the image.
    #[inline]
    fn index(&self, k: usize) -> Option<usize> {
        let (yy, xx) = (
            self.y0.saturating_add((k / 2) as i64),
            self.x0.saturating_add((k % 2) as i64),
        );
        if yy >= 0 && xx >= 0 && (yy as u64) < self.h as u64 && (xx as u64) < self.w as u64 {
            Some(yy as usize * self.w + xx as usize)
        } else {
            None
        }
    }

    #[inline]
    fn pixels(&self, plane: &[F]) -> [F; 4] {
        if self.interior {
            let b = self.y0 as usize * self.w + self.x0 as usize;
            [
                plane[b],
                plane[b + 1],
                plane[b + self.w],
                plane[b + self.w + 1],
            ]
        } else {
            std::array::from_fn(|k| self.index(k).map_or(F::ZERO, |i| plane[i]))
        }
    }

    /// `plane[neighbour k] += d · weight k` for the neighbours inside.
    #[inline]
    fn scatter(&self, plane: &mut [F], d: F) {
        let wts = self.weights();
        if self.interior {
            let b = self.y0 as usize * self.w + self.x0 as usize;
            plane[b] += d * wts[0];
            plane[b + 1] += d * wts[1];
            plane[b + self.w] += d * wts[2];
            plane[b + self.w + 1] += d * wts[3];
        } else {
            for (k, wt) in wts.into_iter().enumerate() {
                if let Some(i) = self.index(k) {
                    plane[i] += d * wt;
                }
            }
        }
    }

    /// CONTRACT.md step 2, operation for operation.
    #[inline]
    fn value(&self, p: [F; 4]) -> F {
        let one = F::ONE;
        (one - self.fy) * ((one - self.fx) * p[0] + self.fx * p[1])
            + self.fy * ((one - self.fx) * p[2] + self.fx * p[3])
    }

    /// `(∂v/∂x, ∂v/∂y)`.
    #[inline]
    fn slopes(&self, p: [F; 4]) -> (F, F) {
        let one = F::ONE;
        (
            (one - self.fy) * (p[1] - p[0]) + self.fy * (p[3] - p[2]),
            (one - self.fx) * (p[2] - p[0]) + self.fx * (p[3] - p[1]),
        )
    }

    #[inline]
    fn weights(&self) -> [F; 4] {
        let one = F::ONE;
        [
            (one - self.fy) * (one - self.fx),
            (one - self.fy) * self.fx,
            self.fy * (one - self.fx),
            self.fy * self.fx,
        ]
    }
}

/// The source position of output pixel `(i, j)` (CONTRACT.md step 1).
#[inline]
fn position<F: Float>(m: &[F; 6], i: usize, j: usize) -> (F, F) {
    let (fi, fj) = (F::from_f64(i as f64), F::from_f64(j as f64));
    (m[0] * fj + m[1] * fi + m[2], m[3] * fj + m[4] * fi + m[5])
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

/// The noise of one sample, `C·H_out·W_out` normals in CHW order.
pub fn noise<F: Float>(key: &SampleKey, len: usize) -> Vec<F> {
    let stream = key.noise();
    let mut out = Vec::with_capacity(len);
    let mut block = 0u32;
    while out.len() < len {
        for z in stream.normals(block) {
            if out.len() < len {
                out.push(F::from_f32(z));
            }
        }
        block = block.wrapping_add(1);
    }
    out
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
    assert_eq!(params.shape(), [s[0], NUM_PARAMS], "params must be [B, 7]");
    assert_eq!(keys.len(), s[0], "one key per sample");
    s[0]
}

/// The bilinear view `S` of one sample, all channels, `[C, H_out, W_out]`.
fn sample_view<F: Float>(img: &[F], m: &[F; 6], shape: &AugmentShape, out: &mut [F]) {
    let (h, w) = (shape.src.height as usize, shape.src.width as usize);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    for i in 0..ho {
        for j in 0..wo {
            let (x, y) = position(m, i, j);
            let tap = Tap::new(x, y, h, w);
            for c in 0..shape.channels {
                let plane = &img[c * h * w..(c + 1) * h * w];
                out[(c * ho + i) * wo + j] = tap.value(tap.pixels(plane));
            }
        }
    }
}

/// Forward: augments every sample of `images` (`[B, C, H, W]`) with its row
/// of `params` (`[B, 7]`) and the noise addressed by its key.
pub fn augment_forward<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
) -> Tensor<F> {
    forward_impl(images, params, keys, shape, false).0
}

/// The forward pass; with `keep_noise`, also each sample's noise when it was
/// drawn (for the backward pass to reuse).
fn forward_impl<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
    keep_noise: bool,
) -> (Tensor<F>, Vec<Option<Vec<F>>>) {
    let batch = check_shapes(images, params, keys, shape);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let plane_out = shape.channels * ho * wo;
    let plane_in = images.len() / batch.max(1);
    let mut out = vec![F::ZERO; batch * plane_out];
    let mut view = vec![F::ZERO; plane_out];
    let mut kept = Vec::with_capacity(if keep_noise { batch } else { 0 });
    for b in 0..batch {
        let p = row_params(params, b);
        let m = coefficients::<F>(&p, shape);
        let img = &images.data()[b * plane_in..(b + 1) * plane_in];
        sample_view(img, &m, shape, &mut view);
        let o = &mut out[b * plane_out..(b + 1) * plane_out];
        let g = params.data()[b * NUM_PARAMS + Param::Flip as usize];
        if g == F::ZERO {
            o.copy_from_slice(&view);
        } else {
            for (row_o, row_v) in o.chunks_mut(wo).zip(view.chunks(wo)) {
                for j in 0..wo {
                    row_o[j] = if g == F::ONE {
                        row_v[wo - 1 - j]
                    } else {
                        (F::ONE - g) * row_v[j] + g * row_v[wo - 1 - j]
                    };
                }
            }
        }
        let sigma = params.data()[b * NUM_PARAMS + Param::Sigma as usize];
        let mut eps = None;
        if sigma > F::ZERO {
            let e = noise::<F>(&keys[b], plane_out);
            for (v, &e) in o.iter_mut().zip(&e) {
                *v += sigma * e;
            }
            eps = Some(e);
        }
        if keep_noise {
            kept.push(eps);
        }
    }
    (Tensor::new(&[batch, shape.channels, ho, wo], out), kept)
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
    vjp_impl(
        images,
        params,
        keys,
        shape,
        gy,
        want_images,
        want_params,
        &[],
    )
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
    kept_noise: &[Option<Vec<F>>],
) -> (Option<Tensor<F>>, Option<Tensor<F>>) {
    let batch = check_shapes(images, params, keys, shape);
    let (h, w) = (shape.src.height as usize, shape.src.width as usize);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let plane_out = shape.channels * ho * wo;
    let plane_in = images.len() / batch.max(1);
    assert_eq!(gy.len(), batch * plane_out, "gradient shape");
    let mut g_img = want_images.then(|| Tensor::zeros(images.shape()));
    let mut g_par = want_params.then(|| Tensor::zeros(params.shape()));
    let mut gs = vec![F::ZERO; plane_out];
    let mut view = vec![F::ZERO; plane_out];
    #[allow(clippy::needless_range_loop)]
    for b in 0..batch {
        let p = row_params(params, b);
        let m = coefficients::<F>(&p, shape);
        let img = &images.data()[b * plane_in..(b + 1) * plane_in];
        let gyb = &gy.data()[b * plane_out..(b + 1) * plane_out];
        let g = params.data()[b * NUM_PARAMS + Param::Flip as usize];
        // gradient with respect to the unflipped view S
        for (row_s, row_y) in gs.chunks_mut(wo).zip(gyb.chunks(wo)) {
            for j in 0..wo {
                row_s[j] = (F::ONE - g) * row_y[j] + g * row_y[wo - 1 - j];
            }
        }
        // one pass over the output: the view S (for the flip), the scatter
        // to the image, and ∂/∂m through the bilinear slopes (in f64)
        let mut dm = [0f64; 6];
        let mut gi = g_img
            .as_mut()
            .map(|t| &mut t.data_mut()[b * plane_in..(b + 1) * plane_in]);
        for i in 0..ho {
            let (mut sx_i, mut sy_i, mut sxj_i, mut syj_i) = (F::ZERO, F::ZERO, F::ZERO, F::ZERO);
            for j in 0..wo {
                let (x, y) = position(&m, i, j);
                let tap = Tap::new(x, y, h, w);
                let (mut dx, mut dy) = (F::ZERO, F::ZERO);
                for c in 0..shape.channels {
                    let plane = &img[c * h * w..(c + 1) * h * w];
                    let px = tap.pixels(plane);
                    let o = (c * ho + i) * wo + j;
                    let d = gs[o];
                    if want_params {
                        view[o] = tap.value(px);
                        let (sx, sy) = tap.slopes(px);
                        dx += d * sx;
                        dy += d * sy;
                    }
                    if let Some(gi) = gi.as_mut() {
                        tap.scatter(&mut gi[c * h * w..(c + 1) * h * w], d);
                    }
                }
                let fj = F::from_f64(j as f64);
                sx_i += dx;
                sy_i += dy;
                sxj_i += dx * fj;
                syj_i += dy * fj;
            }
            let fi = i as f64;
            let (sx, sy) = (sx_i.to_f64(), sy_i.to_f64());
            dm[0] += sxj_i.to_f64();
            dm[1] += sx * fi;
            dm[2] += sx;
            dm[3] += syj_i.to_f64();
            dm[4] += sy * fi;
            dm[5] += sy;
        }
        if let Some(g_par) = g_par.as_mut() {
            let (_, jac) =
                affine_with_jacobian([p[0], p[1], p[2], p[3], p[4]], shape.src, shape.out);
            let row = &mut g_par.data_mut()[b * NUM_PARAMS..(b + 1) * NUM_PARAMS];
            for q in 0..5 {
                row[q] = F::from_f64((0..6).map(|k| jac[k][q] * dm[k]).sum());
            }
            // flip: ∂out/∂g = S(i, W−1−j) − S(i, j)
            let mut dflip = 0f64;
            for (row_v, row_y) in view.chunks(wo).zip(gyb.chunks(wo)) {
                let mut acc = F::ZERO;
                for j in 0..wo {
                    acc += row_y[j] * (row_v[wo - 1 - j] - row_v[j]);
                }
                dflip += acc.to_f64();
            }
            row[Param::Flip as usize] = F::from_f64(dflip);
            let fresh;
            let eps = match kept_noise.get(b) {
                Some(Some(e)) => e,
                _ => {
                    fresh = noise::<F>(&keys[b], plane_out);
                    &fresh
                }
            };
            let dsigma: F = gyb.iter().zip(eps).map(|(&a, &e)| a * e).sum();
            row[Param::Sigma as usize] = F::from_f64(dsigma.to_f64());
        }
    }
    (g_img, g_par)
}

/// The augmentation as a [`CustomOp`] of the tape.
struct AugmentOp<F> {
    inputs: [Var; 2],
    keys: Rc<[SampleKey]>,
    shape: AugmentShape,
    noise: Vec<Option<Vec<F>>>,
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
    pub fn augment(
        &mut self,
        images: Var,
        params: Var,
        keys: Rc<[SampleKey]>,
        shape: AugmentShape,
    ) -> Var {
        let (value, noise) =
            forward_impl(self.value(images), self.value(params), &keys, &shape, true);
        let op = AugmentOp {
            inputs: [images, params],
            keys,
            shape,
            noise,
        };
        self.custom(Rc::new(op), value)
    }
}

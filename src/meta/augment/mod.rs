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
//!
//! The node in four parts: `jacobian` (the affine coefficients and their
//! derivatives in the physical parameters), `scratch` (one worker's padded
//! planes and tile buffers), `sample` (one sample's forward and VJP, built
//! for every CPU width) and `batch` (the batch passes, samples spread over
//! rayon's threads). This file holds the types, the noise and the tape node.

mod batch;
mod jacobian;
mod sample;
mod scratch;

use std::rc::Rc;

use super::float::Float;
use super::tape::{CustomOp, Tape, Var};
use super::tensor::Tensor;
use crate::ops::geometry::{Geometry, SampleParams, Size};
use crate::ops::noise::fill_normals;
use crate::ops::philox::{PhiloxStream, STREAM_NOISE};

pub(crate) use batch::for_each_chunk;
pub use batch::{augment_forward, augment_vjp};
use batch::{batch_noise, forward_impl, vjp_impl};
pub use jacobian::affine_with_jacobian;

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

/// Elements of one sample's output, `C·H_out·W_out`.
fn out_len(shape: &AugmentShape) -> usize {
    shape.channels * shape.out.height as usize * shape.out.width as usize
}

/// Batches of at least this many output elements spread their samples
/// over rayon's threads; smaller ones run on the calling thread. A batch of
/// 128 samples of 28×28 (100 k elements) is far below: on the shared
/// 2-core machine the fork-join hop cost more than it saved (measured: the
/// MAML meta step 4.2 ms on one thread, 6.0 ms on two).
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 20;

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

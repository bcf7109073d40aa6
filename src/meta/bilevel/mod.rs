//! The bilevel problem shared by MAML and Reptile:
//! `min_φ L_val(w_k(φ))`, `w_{j+1} = w_j − α ∇_w L_train(w_j; A(x_j; φ, u_j))`,
//! where `A` is the relaxed augmentation, and Adam for φ; and the two ways
//! of solving it:
//! - [`maml`]: the exact second-order hypergradient through k inner steps;
//! - [`reptile`]: the first-order estimate (finite-difference mixed term).

use std::rc::Rc;

mod lead;
pub mod maml;
pub mod reptile;

use crate::meta::augment::{AugmentShape, SampleKey};
use crate::meta::float::Float;
use crate::meta::model::Arch;
use crate::meta::relaxed::{Family, NUM_DRAWS, NUM_PHI};
use crate::meta::tape::{Tape, Var};
use crate::meta::tensor::Tensor;

/// One inner-step batch: raw images, labels, and each sample's Philox
/// address (noise keys and parameter draws).
#[derive(Clone, Debug)]
pub struct TrainBatch<F: Float> {
    /// `[B, C, H, W]` in `[0, 1]`.
    pub images: Tensor<F>,
    /// One label per image.
    pub labels: Vec<usize>,
    /// Noise keys.
    pub keys: Rc<[SampleKey]>,
    /// The twelve uniforms of each sample.
    pub draws: Rc<[[f32; NUM_DRAWS]]>,
}

/// The validation batch: flattened, unaugmented inputs and labels.
#[derive(Clone, Debug)]
pub struct ValBatch<F: Float> {
    /// `[N, D]`.
    pub x: Tensor<F>,
    /// One label per row.
    pub labels: Vec<usize>,
}

/// The inner problem's settings.
#[derive(Clone, Copy, Debug)]
pub struct Inner {
    /// Inner SGD step size α.
    pub alpha: f64,
    /// Relaxation temperature τ.
    pub tau: f64,
    /// The policy family φ is read in.
    pub family: Family,
    /// Augmentation shapes.
    pub shape: AugmentShape,
    /// The task model.
    pub model: Arch,
    /// Terms of the Neumann series `Σ_{i<K} (I − αH₀)^i` that stands in
    /// for the inverse Hessian at the first inner step (the current
    /// weights): the validation gradient is carried back through `K`
    /// further steps of the linearised inner dynamics (`w₀`'s Hessian on
    /// the first batch, weights held), a longer horizon than the `k`
    /// unrolled steps at the cost of `K − 1` Hessian-vector products. 1 is
    /// the plain `k`-step hypergradient.
    pub neumann: usize,
}

/// Records the relaxed augmentation `A(x; φ, u)` of `batch`'s images on
/// `tape` for the var `phi`: `[B, C, H_out, W_out]`.
pub fn augmented_images<F: Float>(
    tape: &mut Tape<F>,
    phi: Var,
    batch: &TrainBatch<F>,
    inner: &Inner,
) -> Var {
    let images = tape.constant(batch.images.clone());
    let params = tape.relaxed_params(inner.family, phi, inner.tau, batch.draws.clone());
    tape.augment(images, params, batch.keys.clone(), inner.shape)
}

/// [`augmented_images`] as the model's input rows, `[B, C·H_out·W_out]`.
pub fn augmented_rows<F: Float>(
    tape: &mut Tape<F>,
    phi: Var,
    batch: &TrainBatch<F>,
    inner: &Inner,
) -> Var {
    let x = augmented_images(tape, phi, batch, inner);
    let n = batch.labels.len();
    let d = tape.value(x).len() / n.max(1);
    tape.reshape(x, &[n, d])
}

/// Records `L_train(w; A(x; φ, u))` on `tape` for vars `w` and `phi`.
pub fn train_loss<F: Float>(
    tape: &mut Tape<F>,
    w: &[Var],
    phi: Var,
    batch: &TrainBatch<F>,
    inner: &Inner,
) -> Var {
    let x = augmented_rows(tape, phi, batch, inner);
    inner.model.loss(tape, w, x, &batch.labels)
}

/// Records `L_val(w)` on `tape`.
pub fn val_loss<F: Float>(tape: &mut Tape<F>, w: &[Var], val: &ValBatch<F>, inner: &Inner) -> Var {
    let x = tape.constant(val.x.clone());
    inner.model.loss(tape, w, x, &val.labels)
}

/// φ as a tensor of the tape's float type.
pub fn phi_tensor<F: Float>(phi: &[f64; NUM_PHI]) -> Tensor<F> {
    Tensor::new(&[NUM_PHI], phi.iter().map(|&v| F::from_f64(v)).collect())
}

/// A `[7]` tensor as an array of f64.
pub fn phi_array<F: Float>(t: &Tensor<F>) -> [f64; NUM_PHI] {
    std::array::from_fn(|k| t.data()[k].to_f64())
}

/// Adam on φ.
#[derive(Clone, Debug)]
pub struct Adam {
    /// Step size of each entry of φ.
    pub lr: [f64; NUM_PHI],
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    m: [f64; NUM_PHI],
    v: [f64; NUM_PHI],
    t: i32,
}

impl Adam {
    /// Adam with step size `lr` and the usual `β = (0.9, 0.999)`, `ε = 1e-8`.
    pub fn new(lr: f64) -> Self {
        Adam::per_entry([lr; NUM_PHI])
    }

    /// Adam with step size `lr[k]` for entry `k` of φ (say a larger one for
    /// the magnitudes than for the op logits), otherwise as [`Adam::new`].
    pub fn per_entry(lr: [f64; NUM_PHI]) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: [0.0; NUM_PHI],
            v: [0.0; NUM_PHI],
            t: 0,
        }
    }

    /// The displacement Adam takes for gradient `g` (updating its moments);
    /// non-finite gradients are skipped.
    pub fn delta(&mut self, g: &[f64; NUM_PHI]) -> [f64; NUM_PHI] {
        if g.iter().any(|v| !v.is_finite()) {
            return [0.0; NUM_PHI];
        }
        self.t = self.t.saturating_add(1);
        let c1 = 1.0 - self.beta1.powi(self.t);
        let c2 = 1.0 - self.beta2.powi(self.t);
        std::array::from_fn(|k| {
            self.m[k] = self.beta1 * self.m[k] + (1.0 - self.beta1) * g[k];
            self.v[k] = self.beta2 * self.v[k] + (1.0 - self.beta2) * g[k] * g[k];
            -self.lr[k] * (self.m[k] / c1) / ((self.v[k] / c2).sqrt() + self.eps)
        })
    }

    /// `φ ← φ + delta(g)`.
    pub fn step(&mut self, phi: &mut [f64; NUM_PHI], g: &[f64; NUM_PHI]) {
        let d = self.delta(g);
        for k in 0..NUM_PHI {
            phi[k] += d[k];
        }
    }
}

//! Reptile-style first-order meta-learning of φ: no double backward.
//!
//! The mixed term of the hypergradient, `−α ∂²L_train/∂φ∂w · v`, is
//! estimated per inner step by a central finite difference of first-order
//! gradients, `−α [∇_φ L_train(w_j + εv) − ∇_φ L_train(w_j − εv)] / 2ε`.
//!
//! Two choices of `v` are offered ([`Estimator`]):
//! - [`Estimator::Greedy`], as DESIGN.md words it: `v = ∇_w L_val(w_{j+1})`
//!   at every step. It equals the exact hypergradient for `k = 1`, but for
//!   `k > 1` it is the gradient of a different objective (the sum of
//!   one-step look-aheads), and its cosine with the exact hypergradient drops
//!   as `αk` grows;
//! - [`Estimator::Adjoint`] (the default): `v` is the reverse-mode adjoint
//!   `v_k = ∇_w L_val(w_k)`, `v_j = v_{j+1} − α H_j v_{j+1}`, where the
//!   Hessian-vector product `H_j v` comes from the *same* two gradient
//!   evaluations (their `w` part). Still first order only, same cost per step,
//!   and it matches the exact hypergradient for every `k`.
//!
//! The finite differences are taken with the ReLU activation pattern of
//! `w_j` frozen: the exact hypergradient differentiates the network with
//! ReLU'' = 0, while a finite difference across a 784-256 layer crosses
//! thousands of kinks whatever ε, which adds O(1) delta terms (measured: the
//! cosine with the exact hypergradient falls to 0.18 at ‖εv‖ = 10⁻² in f64
//! as in f32 without freezing; with freezing it is 1.0000 at 10⁻³–10⁻² in f32).
//!
//! After the k inner steps, `(w, φ)` move toward their adapted values:
//! `θ ← θ + β(θ_k − θ)`, with `φ_k = φ + Adam(ĝ)`.

use super::{
    augmented_images, phi_tensor, train_loss, val_loss, Adam, Inner, TrainBatch, ValBatch,
};
use crate::meta::float::Float;
use crate::meta::model::Arch;
use crate::meta::relaxed::NUM_PHI;
use crate::meta::tape::{Tape, Var};
use crate::meta::tensor::Tensor;

mod mlp;
#[cfg(test)]
mod tests;

/// Which vector the mixed-term finite difference is taken along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Estimator {
    /// `v = ∇_w L_val(w_{j+1})` at each step (DESIGN.md, literally).
    Greedy,
    /// `v` = the reverse-mode adjoint of `w_{j+1}`, propagated with
    /// finite-difference Hessian-vector products.
    Adjoint,
}

/// Gradients of `L_train(w; A(x; φ))`: in `w` (if `want_w`) and in φ.
pub fn train_grads<F: Float>(
    w: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batch: &TrainBatch<F>,
    inner: &Inner,
    want_w: bool,
    want_phi: bool,
) -> (Option<Vec<Tensor<F>>>, [f64; NUM_PHI]) {
    let mut tape = Tape::new();
    let ws: Vec<Var> = w.iter().map(|t| tape.leaf(t.clone(), want_w)).collect();
    let p = tape.leaf(phi_tensor(phi), want_phi);
    let loss = train_loss(&mut tape, &ws, p, batch, inner);
    let (gw, gp) = leaf_grads(&mut tape, loss, &ws, want_w, want_phi.then_some(p));
    let gphi = gp.map_or([0.0; NUM_PHI], |t| {
        std::array::from_fn(|k| t.data()[k].to_f64())
    });
    (gw, gphi)
}

/// The gradients of `loss` in the weight leaves `ws` (if `want_w`) and in
/// the leaf `extra` (if any), as values.
fn leaf_grads<F: Float>(
    tape: &mut Tape<F>,
    loss: Var,
    ws: &[Var],
    want_w: bool,
    extra: Option<Var>,
) -> (Option<Vec<Tensor<F>>>, Option<Tensor<F>>) {
    let mut xs = if want_w { ws.to_vec() } else { Vec::new() };
    xs.extend(extra);
    let g = tape.grad(loss, &xs, false);
    let gw = want_w.then(|| {
        g[..ws.len()]
            .iter()
            .map(|v| tape.value(*v).clone())
            .collect()
    });
    let gx = extra.map(|_| tape.value(g[g.len() - 1]).clone());
    (gw, gx)
}

/// `L_val(w)` and its gradient in `w`.
pub fn val_grads<F: Float>(
    w: &[Tensor<F>],
    val: &ValBatch<F>,
    inner: &Inner,
) -> (f64, Vec<Tensor<F>>) {
    let mut tape = Tape::new();
    let ws: Vec<Var> = w.iter().map(|t| tape.param(t.clone())).collect();
    let loss = val_loss(&mut tape, &ws, val, inner);
    let g = tape.grad(loss, &ws, false);
    (
        tape.item(loss).to_f64(),
        g.iter().map(|v| tape.value(*v).clone()).collect(),
    )
}

fn offset<F: Float>(w: &[Tensor<F>], v: &[Tensor<F>], e: f64) -> Vec<Tensor<F>> {
    w.iter()
        .zip(v)
        .map(|(a, b)| {
            let mut a = a.clone();
            a.axpy(F::from_f64(e), b);
            a
        })
        .collect()
}

/// The outcome of the first-order inner loop.
#[derive(Clone, Debug)]
pub struct FirstOrder<F: Float> {
    /// The hypergradient estimate.
    pub grad: [f64; NUM_PHI],
    /// `L_val(w_k)`.
    pub val_loss: f64,
    /// The adapted weights `w_k`.
    pub adapted: Vec<Tensor<F>>,
}

/// One inner step's augmented batch, kept on its own tape so that a
/// gradient with respect to the images can be pulled back to φ later.
struct Augmented<F: Float> {
    tape: Tape<F>,
    phi: Var,
    x: Var,
}

impl<F: Float> Augmented<F> {
    fn new(phi: &[f64; NUM_PHI], batch: &TrainBatch<F>, inner: &Inner) -> Self {
        let mut tape = Tape::new();
        let p = tape.param(phi_tensor(phi));
        // `[B, C, H, W]`, read as `[B, C·H·W]` rows (no reshape node: it
        // would copy the batch, forward and back)
        let x = augmented_images(&mut tape, p, batch, inner);
        Augmented { tape, phi: p, x }
    }

    /// The augmented rows, `[B, C·H·W]` row-major.
    fn rows(&self) -> &[F] {
        self.tape.value(self.x).data()
    }

    /// `(∂x/∂φ)ᵀ gx` for `gx` of the rows' shape.
    fn pull_back(&mut self, gx: Tensor<F>) -> [f64; NUM_PHI] {
        let shape = self.tape.value(self.x).shape().to_vec();
        let seed = self.tape.constant(gx.reshape(&shape));
        let g = self.tape.grad_seeded(self.x, seed, &[self.phi], false);
        let t = self.tape.value(g[0]);
        std::array::from_fn(|k| t.data()[k].to_f64())
    }

    /// The augmented rows as an `[n, C·H·W]` tensor.
    fn matrix(&self, n: usize) -> Tensor<F> {
        let rows = self.rows();
        Tensor::new(&[n, rows.len() / n.max(1)], rows.to_vec())
    }
}

/// Runs the `k = batches.len()` inner SGD steps from `w0` (first order) and
/// estimates `dL_val(w_k)/dφ` without double backward. `radius` is the
/// finite difference's step length in weight space, `‖εv‖`.
///
/// The MLP with the plain look-ahead takes the hand-written passes of
/// `mlp::first_order` (the first layer's part of `‖v‖` estimated); every
/// other model, and the Neumann series, the tape form (`first_order_tape`).
pub fn first_order_hypergradient<F: Float>(
    w0: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
    estimator: Estimator,
    radius: f64,
) -> FirstOrder<F> {
    match inner.model {
        Arch::Mlp(act) if inner.neumann <= 1 => {
            mlp::first_order(act, w0, phi, batches, val, inner, estimator, radius)
        }
        _ => {
            let exact = |v: &[Tensor<F>]| norm(v);
            first_order_tape(w0, phi, batches, val, inner, estimator, radius, &exact)
        }
    }
}

fn norm<F: Float>(v: &[Tensor<F>]) -> f64 {
    v.iter().map(Tensor::norm_sq).sum::<f64>().sqrt()
}

/// Gradients of the task loss on ready inputs `x`: in `w` (if `want_w`) and
/// in `x` (if `want_x`).
/// With `frozen` ReLU masks the loss is the polynomial autodiff
/// differentiates; the masks recorded at `w` are returned otherwise.
#[allow(clippy::type_complexity)]
fn model_grads<F: Float>(
    w: &[Tensor<F>],
    x: &Tensor<F>,
    labels: &[usize],
    inner: &Inner,
    want_w: bool,
    want_x: bool,
    frozen: Option<&[Tensor<F>]>,
) -> (Option<Vec<Tensor<F>>>, Option<Tensor<F>>, Vec<Tensor<F>>) {
    let mut tape = Tape::new();
    let ws: Vec<Var> = w.iter().map(|t| tape.leaf(t.clone(), want_w)).collect();
    let xv = tape.leaf(x.clone(), want_x);
    let (logits, masks) = inner.model.forward_frozen(&mut tape, &ws, xv, frozen);
    let loss = tape.cross_entropy(logits, labels);
    let (gw, gx) = leaf_grads(&mut tape, loss, &ws, want_w, want_x.then_some(xv));
    (gw, gx, masks)
}

/// [`first_order_hypergradient`] for any architecture, with the tape: runs
/// the `k = batches.len()` inner SGD steps from `w0` (first order) and
/// estimates `dL_val(w_k)/dφ` without double backward, the ReLU patterns of
/// each `w_j` frozen at `w_j ± εv`; `norm_of(v)` is `‖v‖` as the step
/// length uses it. `radius` is the finite difference's step length in
/// weight space, `‖εv‖`.
///
/// The φ-gradient is linear in the gradient with respect to the augmented
/// images, so the central difference is taken on `∇_x L_train` and pulled
/// back through the augmentation once (the same number, computed with one
/// augmentation and one vector-Jacobian product per step instead of two).
#[allow(clippy::too_many_arguments)]
fn first_order_tape<F: Float>(
    w0: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
    estimator: Estimator,
    radius: f64,
    norm_of: &dyn Fn(&[Tensor<F>]) -> f64,
) -> FirstOrder<F> {
    let alpha = F::from_f64(inner.alpha);
    let mut ws = vec![w0.to_vec()];
    let mut augmented = Vec::with_capacity(batches.len());
    let mut masks = Vec::with_capacity(batches.len());
    for batch in batches {
        let aug = Augmented::new(phi, batch, inner);
        let w = &ws[ws.len() - 1];
        let (g, _, m) = model_grads(
            w,
            &aug.matrix(batch.labels.len()),
            &batch.labels,
            inner,
            true,
            false,
            None,
        );
        masks.push(m);
        let mut next = w.clone();
        for (p, gp) in next.iter_mut().zip(g.unwrap_or_default()) {
            p.axpy(-alpha, &gp);
        }
        ws.push(next);
        augmented.push(aug);
    }
    let k = batches.len();
    let (val_loss, mut v) = val_grads(&ws[k], val, inner);
    let mut grad = [0.0; NUM_PHI];
    for j in (0..k).rev() {
        if estimator == Estimator::Greedy && j + 1 < k {
            v = val_grads(&ws[j + 1], val, inner).1;
        }
        let aug = &mut augmented[j];
        let labels = &batches[j].labels;
        let x = aug.matrix(labels.len());
        let frozen = Some(&masks[j][..]);
        if j == 0 && inner.neumann > 1 {
            // v ← Σ_{i<K} (I − αH₀)^i v, each H₀v by a central difference
            let mut term = v.clone();
            for _ in 1..inner.neumann {
                let nt = norm_of(&term);
                if nt == 0.0 || !nt.is_finite() {
                    break;
                }
                let e = radius / nt;
                let at = |s: f64| {
                    model_grads(
                        &offset(&ws[0], &term, s),
                        &x,
                        labels,
                        inner,
                        true,
                        false,
                        frozen,
                    )
                    .0
                };
                if let (Some(gp), Some(gm)) = (at(e), at(-e)) {
                    let c = F::from_f64(-inner.alpha / (2.0 * e));
                    for ((ti, a), b) in term.iter_mut().zip(&gp).zip(&gm) {
                        ti.axpy(c, a);
                        ti.axpy(-c, b);
                    }
                }
                for (vi, ti) in v.iter_mut().zip(&term) {
                    vi.axpy(F::ONE, ti);
                }
            }
        }
        let nv = norm_of(&v);
        if nv == 0.0 || !nv.is_finite() {
            continue;
        }
        let e = radius / nv;
        let propagate = estimator == Estimator::Adjoint && j > 0;
        let (gp, xp, _) = model_grads(
            &offset(&ws[j], &v, e),
            &x,
            labels,
            inner,
            propagate,
            true,
            frozen,
        );
        let (gm, xm, _) = model_grads(
            &offset(&ws[j], &v, -e),
            &x,
            labels,
            inner,
            propagate,
            true,
            frozen,
        );
        if let (Some(xp), Some(xm)) = (xp, xm) {
            // −α [∇_x L(w+εv) − ∇_x L(w−εv)] / 2ε, then through A to φ
            let c = F::from_f64(-inner.alpha / (2.0 * e));
            let dx = xp.zip(&xm, |a, b| c * (a - b));
            let g = aug.pull_back(dx);
            for q in 0..NUM_PHI {
                grad[q] += g[q];
            }
        }
        if let (Some(gp), Some(gm)) = (gp, gm) {
            // v ← v − α H_j v, with H_j v ≈ (∇_w L(w+εv) − ∇_w L(w−εv)) / 2ε
            let c = F::from_f64(-inner.alpha / (2.0 * e));
            for ((vi, a), b) in v.iter_mut().zip(&gp).zip(&gm) {
                vi.axpy(c, a);
                vi.axpy(-c, b);
            }
        }
    }
    FirstOrder {
        grad,
        val_loss,
        adapted: ws.pop().unwrap_or_default(),
    }
}

/// One online Reptile meta step: k first-order inner steps from the
/// model's weights, the hypergradient estimate, `φ_k = φ + Adam(ĝ)`, then
/// `θ ← θ + β(θ_k − θ)` for both the weights and φ. Returns the estimate.
#[allow(clippy::too_many_arguments)]
pub fn reptile_step<F: Float>(
    params: &mut [Tensor<F>],
    phi: &mut [f64; NUM_PHI],
    adam: &mut Adam,
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
    beta: f64,
    radius: f64,
) -> FirstOrder<F> {
    let out =
        first_order_hypergradient(params, phi, batches, val, inner, Estimator::Adjoint, radius);
    let d = adam.delta(&out.grad);
    for k in 0..NUM_PHI {
        phi[k] += beta * d[k];
    }
    interpolate_weights(params, &out.adapted, beta);
    out
}

/// Reptile's move of the weights: `θ ← θ + β(θ_k − θ)` towards the adapted
/// weights `adapted` (θ_k itself when β = 1).
pub fn interpolate_weights<F: Float>(params: &mut [Tensor<F>], adapted: &[Tensor<F>], beta: f64) {
    let b = F::from_f64(beta);
    for (w, wk) in params.iter_mut().zip(adapted) {
        if beta == 1.0 {
            // θ_k itself (θ + 1·(θ_k − θ) may round away from it)
            w.data_mut().copy_from_slice(wk.data());
            continue;
        }
        for (a, &c) in w.data_mut().iter_mut().zip(wk.data()) {
            *a += b * (c - *a);
        }
    }
}

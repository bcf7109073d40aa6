//! MAML, second order: the exact hypergradient `dL_val(w_k(φ))/dφ` by
//! reverse mode through `k` unrolled inner SGD steps recorded with
//! `create_graph`, so that the mixed term `∂²L_train/∂w∂x · ∂x/∂φ` is
//! included.

use super::bilevel::{phi_array, phi_tensor, train_loss, val_loss, Inner, TrainBatch, ValBatch};
use super::float::Float;
use super::relaxed::NUM_PHI;
use super::tape::{Tape, Var};
use super::tensor::Tensor;

/// Records the `k = batches.len()` inner steps from `w0` and returns the
/// adapted weights' vars. With `create_graph` each step's gradient is
/// differentiable, so the result depends on φ through every step.
pub fn unroll<F: Float>(
    tape: &mut Tape<F>,
    w0: &[Var],
    phi: Var,
    batches: &[TrainBatch<F>],
    inner: &Inner,
    create_graph: bool,
) -> Vec<Var> {
    let mut w = w0.to_vec();
    let alpha = F::from_f64(inner.alpha);
    for batch in batches {
        let loss = train_loss(tape, &w, phi, batch, inner);
        let g = tape.grad(loss, &w, create_graph);
        w = w
            .iter()
            .zip(&g)
            .map(|(&wi, &gi)| tape.sgd_step(wi, gi, alpha))
            .collect();
    }
    w
}

/// `L_val(w_k(φ))`, forward only (what finite differences evaluate).
pub fn val_loss_after<F: Float>(
    w0: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
) -> f64 {
    let mut tape = Tape::new();
    let w: Vec<Var> = w0.iter().map(|t| tape.param(t.clone())).collect();
    let phi = tape.constant(phi_tensor(phi));
    let wk = unroll(&mut tape, &w, phi, batches, inner, false);
    let l = val_loss(&mut tape, &wk, val, inner);
    tape.item(l).to_f64()
}

/// The exact hypergradient: returns `L_val(w_k(φ))` and `dL_val/dφ`.
pub fn hypergradient<F: Float>(
    w0: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
) -> (f64, [f64; NUM_PHI]) {
    let mut tape = Tape::new();
    // w0 must be differentiable for the inner gradients to exist; the final
    // gradient is taken with respect to φ alone.
    let w: Vec<Var> = w0.iter().map(|t| tape.param(t.clone())).collect();
    let phi = tape.param(phi_tensor(phi));
    let wk = unroll(&mut tape, &w, phi, batches, inner, true);
    let l = val_loss(&mut tape, &wk, val, inner);
    let g = tape.grad(l, &[phi], false);
    (tape.item(l).to_f64(), phi_array(tape.value(g[0])))
}

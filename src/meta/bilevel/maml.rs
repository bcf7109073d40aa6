//! MAML, second order: the exact hypergradient `dL_val(w_k(φ))/dφ` by
//! reverse mode through `k` inner SGD steps whose gradients are recorded
//! with `create_graph`, so that the mixed term `∂²L_train/∂w∂x · ∂x/∂φ` is
//! included.
//!
//! [`hypergradient`] (what training uses) runs the reverse mode one step's
//! tape at a time ([`hypergradient_stepwise`]); for the MLP it keeps the
//! first layer of the validation gradient as the product `x_valᵀδ_val`.
//! [`hypergradient_unrolled`] unrolls all steps on one tape and
//! differentiates through it, the definition as the engine reads it. They
//! agree to rounding (tested in f64); for the MLP the first costs 137 M
//! multiply-adds per meta step where the second costs 180 M (k = 1, MLP
//! 784-256-10, batches of 128).

use super::lead::{gemm, Lead};
use super::{
    augmented_rows, phi_array, phi_tensor, train_loss, val_loss, Inner, TrainBatch, ValBatch,
};
use crate::meta::float::Float;
use crate::meta::mlp::{Activation, Mlp};
use crate::meta::model::Arch;
use crate::meta::relaxed::NUM_PHI;
use crate::meta::tape::{Tape, Var};
use crate::meta::tensor::Tensor;

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

/// The exact hypergradient by unrolling all `k` inner steps on one tape
/// with `create_graph` and differentiating `L_val(w_k(φ))` in φ: the
/// definition, written as directly as the engine allows. Returns
/// `L_val(w_k(φ))` and `dL_val/dφ`. [`hypergradient`] computes the same
/// number with fewer products; this one is its reference in the tests.
pub fn hypergradient_unrolled<F: Float>(
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

/// The exact hypergradient `dL_val(w_k(φ))/dφ` and `L_val(w_k(φ))`, by
/// reverse mode over the inner steps, one step's tape at a time.
///
/// With `v_k = ∇_w L_val(w_k)` and, going back, `v_j = v_{j+1} − α H_j v_{j+1}`
/// (`H_j` the Hessian of `L_train` at step `j` in `w`),
///
/// `dL_val/dφ = −α Σ_j ∂/∂φ ⟨∇_w L_train(w_j; A(x_j; φ)), v_{j+1}⟩`,
///
/// where `w_j` and `v_{j+1}` are held fixed in the inner product: the chain
/// rule through `w_{j+1} = w_j − α ∇_w L_train(w_j; φ)`, the same number as
/// [`hypergradient_unrolled`] (to rounding), differentiated by the same
/// engine: each step's gradient is recorded with `create_graph`, and the
/// inner product is differentiated again in φ (and in `w_j` for `H_j v`).
///
/// Why not unroll: differentiating `L_val` through `w_{j+1}` makes the tape
/// form `∂L_val/∂W₀` of the first layer (`x_valᵀδ_val`, `[d₀, d₁]`) and
/// push it back through `xᵀδ` with two more products of that size. Here the
/// first layer's term of the inner product is taken with `v`'s first layer
/// kept as the product it is, `⟨xᵀδ, x_valᵀδ_val⟩ = ⟨x·x_valᵀ, δ·δ_valᵀ⟩`,
/// whose products are `n×n_val` (for k = 1, MLP 784-256-10, batches of 128:
/// 137 M multiply-adds against 180 M). The first layer's weight gradient
/// `xᵀδ` is only computed as a value, for `w_{j+1}`.
pub fn hypergradient<F: Float>(
    w0: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
) -> (f64, [f64; NUM_PHI]) {
    match inner.model {
        Arch::Mlp(act) if inner.neumann <= 1 => {
            hypergradient_mlp(w0, phi, batches, val, inner, act)
        }
        _ => hypergradient_stepwise(w0, phi, batches, val, inner),
    }
}

/// The step-by-step reverse mode of [`hypergradient`] for any
/// architecture: each inner step's gradient `g_j = ∇_w L_train(w_j; φ)` is
/// recorded with `create_graph` on a tape of its own, and going back
/// `⟨g_j, v_{j+1}⟩` is differentiated in φ (the step's share of the
/// hypergradient, times `−α`) and in `w_j` (`H_j v_{j+1}`, for `v_j`).
/// One step's double-backward graph is alive at a time during the reverse
/// sweep; the forward sweep keeps all `k`.
///
/// With [`Inner::neumann`] `K > 1`, the vector paired with the first step's
/// gradient is `Σ_{i<K} (I − αH₀)^i v₁` instead of `v₁`: `K − 1`
/// Hessian-vector products on the first step's tape.
pub fn hypergradient_stepwise<F: Float>(
    w0: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
) -> (f64, [f64; NUM_PHI]) {
    let a = F::from_f64(-inner.alpha);
    let mut steps = Vec::with_capacity(batches.len());
    let mut w = w0.to_vec();
    for batch in batches {
        let mut tape = Tape::new();
        let wv: Vec<Var> = w.iter().map(|t| tape.param(t.clone())).collect();
        let p = tape.param(phi_tensor(phi));
        let loss = train_loss(&mut tape, &wv, p, batch, inner);
        let g = tape.grad(loss, &wv, true);
        for (t, gi) in w.iter_mut().zip(&g) {
            t.axpy(a, tape.value(*gi));
        }
        steps.push((tape, p, wv, g));
    }
    let (val_loss, mut v) = super::reptile::val_grads(&w, val, inner);
    let mut grad = [0.0; NUM_PHI];
    while let Some((mut t, p, wv, g)) = steps.pop() {
        let want_hv = !steps.is_empty();
        let s = if !want_hv && inner.neumann > 1 {
            neumann_product(&mut t, &g, &wv, &mut v, inner)
        } else {
            inner_product(&mut t, &g, &v)
        };
        let Some(s) = s else { break };
        let mut wanted = vec![p];
        if want_hv {
            wanted.extend(&wv);
        }
        let gr = t.grad(s, &wanted, false);
        let g_phi = phi_array(t.value(gr[0]));
        for q in 0..NUM_PHI {
            grad[q] -= inner.alpha * g_phi[q];
        }
        if want_hv {
            for (vi, h) in v.iter_mut().zip(&gr[1..]) {
                vi.axpy(a, t.value(*h));
            }
        }
    }
    (val_loss, grad)
}

/// `Σ_i ⟨g_i, v_i⟩` on tape `t`, the `v_i` held constant; `None` for no
/// terms.
pub(crate) fn inner_product<F: Float>(t: &mut Tape<F>, g: &[Var], v: &[Tensor<F>]) -> Option<Var> {
    let mut s = None;
    for (gi, vi) in g.iter().zip(v) {
        let c = t.constant(vi.clone());
        let d = t.dot(*gi, c);
        s = Some(s.map_or(d, |s| t.add(s, d)));
    }
    s
}

/// `⟨g, Σ_{i<K} (I − αH)^i v⟩` on tape `t`, where `g` is the step's
/// gradient (recorded with `create_graph` in the leaves `w`) and `H v` is
/// `∂⟨g, v⟩/∂w`; `v` is left as the series' last term.
fn neumann_product<F: Float>(
    t: &mut Tape<F>,
    g: &[Var],
    w: &[Var],
    v: &mut [Tensor<F>],
    inner: &Inner,
) -> Option<Var> {
    let a = F::from_f64(-inner.alpha);
    let mut sum: Vec<Tensor<F>> = v.to_vec();
    for _ in 1..inner.neumann {
        let s = inner_product(t, g, v)?;
        let hv = t.grad(s, w, false);
        for ((vi, h), si) in v.iter_mut().zip(&hv).zip(sum.iter_mut()) {
            vi.axpy(a, t.value(*h));
            si.axpy(F::ONE, vi);
        }
    }
    inner_product(t, g, &sum)
}

/// [`hypergradient`] for the MLP, its first layer kept as a product.
fn hypergradient_mlp<F: Float>(
    w0: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
    act: Activation,
) -> (f64, [f64; NUM_PHI]) {
    let alpha = inner.alpha;
    let k = batches.len();
    // forward: the inner steps, each kept on its own tape
    let mut steps: Vec<Step<F>> = Vec::with_capacity(k);
    let mut w = w0.to_vec();
    for (j, batch) in batches.iter().enumerate() {
        let (step, next) = Step::record(&w, phi, batch, inner, act, j > 0);
        steps.push(step);
        w = next;
    }
    // v_k, its first layer as x_valᵀδ_val
    let (val_loss, delta_val, mut rest) = val_gradient(&w, val, act);
    let (d0, d1) = w0[0].dims2();
    let mut lead = Lead::Outer {
        x: val.x.data(),
        delta: delta_val.into_data(),
        n: val.labels.len(),
    };
    let mut grad = [0.0; NUM_PHI];
    for j in (0..k).rev() {
        let step = &mut steps[j];
        let (g_phi, hv) = step.differentiate(&lead, &rest, j > 0);
        for q in 0..NUM_PHI {
            grad[q] -= alpha * g_phi[q];
        }
        if let Some(hv) = hv {
            // v_j = v_{j+1} − α H_j v_{j+1}
            let a = F::from_f64(-alpha);
            let mut v0 = lead.into_dense(d0, d1);
            v0.axpy(a, &hv[0]);
            lead = Lead::Dense(v0);
            for (r, h) in rest.iter_mut().zip(&hv[1..]) {
                r.axpy(a, h);
            }
        }
    }
    (val_loss, grad)
}

/// `L_val(w)`, the gradient `δ_val` of its first layer's pre-activation
/// (so that `∂L_val/∂W₀ = x_valᵀδ_val`) and its gradient in every other
/// parameter (`[b₀, W₁, b₁, …]`).
fn val_gradient<F: Float>(
    w: &[Tensor<F>],
    val: &ValBatch<F>,
    act: Activation,
) -> (f64, Tensor<F>, Vec<Tensor<F>>) {
    let mut tape = Tape::new();
    let w0 = tape.constant(w[0].clone());
    let rest: Vec<Var> = w[1..].iter().map(|t| tape.param(t.clone())).collect();
    let x = tape.constant(val.x.clone());
    let y = tape.matmul(x, w0);
    let z0 = tape.add_bias(y, rest[0]);
    let logits = Mlp::forward_from_first(act, &mut tape, &rest[1..], z0);
    let loss = tape.cross_entropy(logits, &val.labels);
    let mut wanted = vec![z0];
    wanted.extend(&rest);
    let g = tape.grad(loss, &wanted, false);
    let delta = tape.value(g[0]).clone();
    let rest = g[1..].iter().map(|v| tape.value(*v).clone()).collect();
    (tape.item(loss).to_f64(), delta, rest)
}

/// One inner step, recorded for the backward pass: the training loss at
/// `w_j` on the augmented batch and its gradient with `create_graph`.
struct Step<F: Float> {
    tape: Tape<F>,
    phi: Var,
    /// `w_j`'s leaves, `[W₀, b₀, W₁, b₁, …]` (`W₀` differentiable only when
    /// `H_j v` is wanted).
    w: Vec<Var>,
    /// The augmented inputs, `[n, d₀]`.
    x: Var,
    /// `δ = ∂L_train/∂z₀`, `[n, d₁]`: the first layer's weight gradient is
    /// `xᵀδ`.
    delta: Var,
    /// `∂L_train/∂[b₀, W₁, b₁, …]`.
    rest: Vec<Var>,
}

impl<F: Float> Step<F> {
    /// Records step `j` at weights `w` and returns it with `w_{j+1}`.
    fn record(
        w: &[Tensor<F>],
        phi: &[f64; NUM_PHI],
        batch: &TrainBatch<F>,
        inner: &Inner,
        act: Activation,
        want_hv: bool,
    ) -> (Self, Vec<Tensor<F>>) {
        let mut tape = Tape::new();
        let wv: Vec<Var> = w
            .iter()
            .enumerate()
            .map(|(i, t)| tape.leaf(t.clone(), i > 0 || want_hv))
            .collect();
        let p = tape.param(phi_tensor(phi));
        let x = augmented_rows(&mut tape, p, batch, inner);
        let (n, d0) = tape.value(x).dims2();
        let y = tape.matmul(x, wv[0]);
        let z0 = tape.add_bias(y, wv[1]);
        let logits = Mlp::forward_from_first(act, &mut tape, &wv[2..], z0);
        let loss = tape.cross_entropy(logits, &batch.labels);
        let mut wanted = vec![z0];
        wanted.extend(&wv[1..]);
        let g = tape.grad(loss, &wanted, true);
        let (delta, rest) = (g[0], g[1..].to_vec());
        // w_{j+1} = w_j − α ∇L: the first layer as W₀ − α·xᵀδ
        let a = F::from_f64(-inner.alpha);
        let mut next = w.to_vec();
        let d1 = w[0].dims2().1;
        gemm(
            d0,
            n,
            d1,
            a,
            tape.value(x).data(),
            true,
            tape.value(delta).data(),
            false,
            F::ONE,
            next[0].data_mut(),
        );
        for (t, v) in next[1..].iter_mut().zip(&rest) {
            t.axpy(a, tape.value(*v));
        }
        let step = Step {
            tape,
            phi: p,
            w: wv,
            x,
            delta,
            rest,
        };
        (step, next)
    }

    /// `∂/∂φ ⟨∇_w L_train(w_j; φ), v⟩` and, if `want_hv`, `H_j v` (`∂/∂w_j`
    /// of the same inner product), for `v = (lead, rest)`.
    #[allow(clippy::type_complexity)]
    fn differentiate(
        &mut self,
        lead: &Lead<F>,
        rest: &[Tensor<F>],
        want_hv: bool,
    ) -> ([f64; NUM_PHI], Option<Vec<Tensor<F>>>) {
        let t = &mut self.tape;
        // the first layer's term
        let mut s = match lead {
            Lead::Outer { x, delta, n } => {
                // ⟨xᵀδ, x_valᵀδ_val⟩ = ⟨x·x_valᵀ, δ·δ_valᵀ⟩
                let n = *n;
                let xv = t.constant(Tensor::new(&[n, x.len() / n.max(1)], x.to_vec()));
                let dv = t.constant(Tensor::new(&[n, delta.len() / n.max(1)], delta.clone()));
                let gx = t.matmul_t(self.x, xv, false, true);
                let gd = t.matmul_t(self.delta, dv, false, true);
                t.dot(gx, gd)
            }
            Lead::Dense(v0) => {
                // ⟨xᵀδ, V₀⟩ = ⟨x·V₀, δ⟩
                let v0 = t.constant(v0.clone());
                let xv = t.matmul(self.x, v0);
                t.dot(xv, self.delta)
            }
        };
        for (g, v) in self.rest.iter().zip(rest) {
            let c = t.constant(v.clone());
            let d = t.dot(*g, c);
            s = t.add(s, d);
        }
        let mut wanted = vec![self.phi];
        if want_hv {
            wanted.extend(&self.w);
        }
        let g = t.grad(s, &wanted, false);
        let g_phi = phi_array(t.value(g[0]));
        let hv = want_hv.then(|| g[1..].iter().map(|v| t.value(*v).clone()).collect());
        (g_phi, hv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::gradcheck::MetaProblem;

    /// The step-by-step reverse mode gives the unrolled tape's number, in
    /// f64 to rounding, for ReLU and tanh and k = 1, 2, 3 (the adjoint's
    /// `H_j v` and the dense first layer only enter for k > 1).
    #[test]
    fn matches_the_unrolled_hypergradient() {
        for act in [Activation::Relu, Activation::Tanh] {
            for k in 1..=3 {
                for seed in 0..3 {
                    let mut p = MetaProblem::random(seed, k);
                    p.inner.model = Arch::Mlp(act);
                    let (l1, g1) = hypergradient(&p.w0, &p.phi, &p.batches, &p.val, &p.inner);
                    let (l2, g2) =
                        hypergradient_unrolled(&p.w0, &p.phi, &p.batches, &p.val, &p.inner);
                    assert!((l1 - l2).abs() <= 1e-12 * l2.abs(), "{act:?} k {k}: loss");
                    let scale = g2.iter().map(|v| v.abs()).fold(0.0, f64::max);
                    assert!(
                        scale > 1e-6,
                        "{act:?} k {k} seed {seed}: a zero hypergradient"
                    );
                    for q in 0..NUM_PHI {
                        let err = (g1[q] - g2[q]).abs() / scale;
                        assert!(
                            err < 1e-10,
                            "{act:?} k {k} seed {seed}: φ[{q}] {} against {} (rel {err:e})",
                            g1[q],
                            g2[q]
                        );
                    }
                }
            }
        }
    }

    /// The generic step-by-step reverse mode gives the unrolled tape's
    /// number for the CNN (ReLU, and a channel permutation in front) and
    /// for the MLP, k = 1, 2, 3, in f64.
    #[test]
    fn the_stepwise_reverse_mode_matches_the_unrolled_one_for_every_model() {
        for cnn in [true, false] {
            for k in 1..=3 {
                let seed = 10 + k as u64;
                let p = if cnn {
                    MetaProblem::random_cnn(seed, k)
                } else {
                    MetaProblem::random(seed, k)
                };
                let (l1, g1) = hypergradient_stepwise(&p.w0, &p.phi, &p.batches, &p.val, &p.inner);
                let (l2, g2) = hypergradient_unrolled(&p.w0, &p.phi, &p.batches, &p.val, &p.inner);
                assert!((l1 - l2).abs() <= 1e-12 * l2.abs(), "cnn {cnn} k {k}: loss");
                let scale = g2.iter().map(|v| v.abs()).fold(0.0, f64::max);
                assert!(scale > 1e-6, "cnn {cnn} k {k}: a zero hypergradient");
                for q in 0..NUM_PHI {
                    let err = (g1[q] - g2[q]).abs() / scale;
                    assert!(
                        err < 1e-10,
                        "cnn {cnn} k {k}: φ[{q}] {} against {}",
                        g1[q],
                        g2[q]
                    );
                }
            }
        }
    }

    /// The Neumann form against a dense reference: on a softmax regression
    /// (148 weights) the Hessian `H₀` is formed column by column, `p = Σ_{i<K}
    /// (I − αH₀)^i v₁` by dense products, and `−α ∂/∂φ ⟨g₀, p⟩` taken with `p`
    /// held; K = 1 is the plain hypergradient.
    #[test]
    fn the_neumann_series_matches_a_dense_reference() {
        use crate::meta::mlp::Mlp;
        let mut p = MetaProblem::random(7, 1);
        p.w0 = Mlp::<f64>::new(&[36, 4], Activation::Tanh, 3).params;
        p.inner.model = Arch::Mlp(Activation::Tanh);
        let plain = hypergradient(&p.w0, &p.phi, &p.batches, &p.val, &p.inner).1;
        for k in [1, 2, 5] {
            p.inner.neumann = k;
            let got = hypergradient(&p.w0, &p.phi, &p.batches, &p.val, &p.inner).1;
            // the reference
            let mut t = Tape::new();
            let wv: Vec<Var> = p.w0.iter().map(|x| t.param(x.clone())).collect();
            let phi = t.param(phi_tensor(&p.phi));
            let loss = train_loss(&mut t, &wv, phi, &p.batches[0], &p.inner);
            let g = t.grad(loss, &wv, true);
            let w1: Vec<Tensor<f64>> =
                p.w0.iter()
                    .zip(&g)
                    .map(|(w, gi)| {
                        let mut w = w.clone();
                        w.axpy(-p.inner.alpha, t.value(*gi));
                        w
                    })
                    .collect();
            let v1 = super::super::reptile::val_grads(&w1, &p.val, &p.inner).1;
            let flat = |v: &[Tensor<f64>]| {
                v.iter()
                    .flat_map(|x| x.data().to_vec())
                    .collect::<Vec<f64>>()
            };
            let unflat = |x: &[f64]| {
                let mut at = 0;
                p.w0.iter()
                    .map(|w| {
                        let part = Tensor::new(w.shape(), x[at..at + w.len()].to_vec());
                        at += w.len();
                        part
                    })
                    .collect::<Vec<_>>()
            };
            let n = flat(&p.w0).len();
            // H column by column: ∂⟨g, e_c⟩/∂w
            let mut h = vec![0.0; n * n];
            for c in 0..n {
                let mut e = vec![0.0; n];
                e[c] = 1.0;
                let s = inner_product(&mut t, &g, &unflat(&e)).unwrap();
                let col = t.grad(s, &wv, false);
                let col = flat(&col.iter().map(|v| t.value(*v).clone()).collect::<Vec<_>>());
                for r in 0..n {
                    h[r * n + c] = col[r];
                }
            }
            let mut term = flat(&v1);
            let mut sum = term.clone();
            for _ in 1..k {
                let hv: Vec<f64> = (0..n)
                    .map(|r| (0..n).map(|c| h[r * n + c] * term[c]).sum())
                    .collect();
                for i in 0..n {
                    term[i] -= p.inner.alpha * hv[i];
                    sum[i] += term[i];
                }
            }
            let s = inner_product(&mut t, &g, &unflat(&sum)).unwrap();
            let gp = t.grad(s, &[phi], false);
            let want: Vec<f64> = t
                .value(gp[0])
                .data()
                .iter()
                .map(|v| -p.inner.alpha * v)
                .collect();
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for q in 0..NUM_PHI {
                assert!(
                    (got[q] - want[q]).abs() < 1e-10 * scale,
                    "K {k}, φ[{q}]: {} against {}",
                    got[q],
                    want[q]
                );
            }
            if k == 1 {
                assert_eq!(got, plain);
            } else {
                let diff = (0..NUM_PHI)
                    .map(|q| (got[q] - plain[q]).abs())
                    .fold(0.0, f64::max);
                assert!(diff > 1e-6 * scale, "K {k} changed nothing");
            }
        }
    }
}

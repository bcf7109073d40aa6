//! The first-order estimate for the MLP with its passes written out by hand,
//! so that the two gradient evaluations at `w_j ± εv` share their work with
//! each other and with the inner step (see [`first_order`]).

use super::{offset, Augmented, Estimator, FirstOrder};
use crate::meta::bilevel::lead::{gemm, Lead};
use crate::meta::bilevel::{Inner, TrainBatch, ValBatch};
use crate::meta::engine::{mean_cross_entropy, softmax_rows};
use crate::meta::float::Float;
use crate::meta::mlp::Activation;
use crate::meta::relaxed::NUM_PHI;
use crate::meta::tensor::Tensor;

/// `x·W + b` for `x: [n, d_in]`, `W: [d_in, d_out]`, `b: [d_out]`.
pub(super) fn affine<F: Float>(x: &[F], n: usize, w: &Tensor<F>, b: &Tensor<F>) -> Vec<F> {
    let (di, dout) = w.dims2();
    let mut z = vec![F::ZERO; n * dout];
    gemm(
        n,
        di,
        dout,
        F::ONE,
        x,
        false,
        w.data(),
        false,
        F::ZERO,
        &mut z,
    );
    for row in z.chunks_mut(dout) {
        for (v, &c) in row.iter_mut().zip(b.data()) {
            *v += c;
        }
    }
    z
}

/// `[n, m] → [m]`, summing over rows.
pub(super) fn sum_rows<F: Float>(x: &[F], m: usize) -> Vec<F> {
    let mut out = vec![F::ZERO; m];
    for row in x.chunks(m) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
    out
}

/// One forward pass of the MLP ([`Mlp::forward`]'s arithmetic) on `n`
/// ready input rows, kept for its backward pass: every layer's
/// pre-activation `z_l = h_l·W_l + b_l` (`h_0` the inputs, not kept; the
/// last `z` the logits) and every hidden output `h_{l+1} = act(z_l)`.
///
/// With ReLU, the activation pattern is read from `frozen` pre-activations
/// when given ([`Mlp::forward_frozen`]: the output is then polynomial in the
/// weights), from the pass's own otherwise (plain ReLU).
pub(super) struct Pass<F> {
    pub(super) n: usize,
    pub(super) z: Vec<Vec<F>>,
    pub(super) h: Vec<Vec<F>>,
}

impl<F: Float> Pass<F> {
    /// The pass on inputs `x` with parameters `w` (all layers).
    pub(super) fn new(act: Activation, w: &[Tensor<F>], x: &[F], n: usize) -> Self {
        let z0 = affine(x, n, &w[0], &w[1]);
        Self::from_first(act, z0, n, &w[2..], None)
    }

    /// The pass from the first layer's pre-activation `z0`, with `tail` the
    /// parameters of the layers after it.
    pub(super) fn from_first(
        act: Activation,
        z0: Vec<F>,
        n: usize,
        tail: &[Tensor<F>],
        frozen: Option<&[Vec<F>]>,
    ) -> Self {
        let mut z = vec![z0];
        let mut h = Vec::with_capacity(tail.len() / 2);
        for l in 0..tail.len() / 2 {
            let zl = &z[l];
            let hl: Vec<F> = match act {
                Activation::Relu => {
                    let pattern = frozen.map_or(&zl[..], |f| &f[l][..]);
                    zl.iter()
                        .zip(pattern)
                        .map(|(&v, &r)| if r > F::ZERO { v } else { F::ZERO })
                        .collect()
                }
                Activation::Tanh => zl.iter().map(|v| v.tanh()).collect(),
            };
            let next = affine(&hl, n, &tail[2 * l], &tail[2 * l + 1]);
            h.push(hl);
            z.push(next);
        }
        Pass { n, z, h }
    }

    /// The mean cross-entropy of the logits ([`Tape::cross_entropy`]'s
    /// arithmetic, rounded to `F`).
    pub(super) fn loss(&self, labels: &[usize]) -> f64 {
        let logits = &self.z[self.z.len() - 1];
        let k = logits.len() / self.n.max(1);
        F::from_f64(mean_cross_entropy(logits, self.n, k, labels)).to_f64()
    }

    /// Backward pass of the loss: the gradient of the first layer's
    /// pre-activation, and (if `want_tail`) the gradients of the `tail`
    /// parameters (empty otherwise). `frozen` as given to the forward.
    pub(super) fn backward(
        &self,
        act: Activation,
        tail: &[Tensor<F>],
        labels: &[usize],
        frozen: Option<&[Vec<F>]>,
        want_tail: bool,
    ) -> (Vec<F>, Vec<Tensor<F>>) {
        let n = self.n;
        let layers = self.z.len();
        let logits = &self.z[layers - 1];
        let classes = logits.len() / n.max(1);
        assert_eq!(labels.len(), n, "one label per row");
        // (softmax(z) − onehot) / n
        let mut dz = softmax_rows(&Tensor::new(&[n, classes], logits.clone())).into_data();
        let s = F::ONE / F::from_f64(n.max(1) as f64);
        for (row, &y) in dz.chunks_mut(classes).zip(labels) {
            assert!(y < classes, "label {y} out of range for {classes} classes");
            row[y] -= F::ONE;
            for v in row.iter_mut() {
                *v *= s;
            }
        }
        let mut grads = Vec::new();
        for l in (1..layers).rev() {
            let (w, hl) = (&tail[2 * (l - 1)], &self.h[l - 1]);
            let (di, dout) = w.dims2();
            if want_tail {
                let mut gw = vec![F::ZERO; di * dout];
                gemm(di, n, dout, F::ONE, hl, true, &dz, false, F::ZERO, &mut gw);
                grads.push(Tensor::new(&[dout], sum_rows(&dz, dout)));
                grads.push(Tensor::new(&[di, dout], gw));
            }
            let mut dh = vec![F::ZERO; n * di];
            gemm(
                n,
                dout,
                di,
                F::ONE,
                &dz,
                false,
                w.data(),
                true,
                F::ZERO,
                &mut dh,
            );
            match act {
                Activation::Relu => {
                    let pattern = frozen.map_or(&self.z[l - 1][..], |f| &f[l - 1][..]);
                    for (d, &r) in dh.iter_mut().zip(pattern) {
                        *d = if r > F::ZERO { *d } else { F::ZERO };
                    }
                }
                Activation::Tanh => {
                    for (d, &y) in dh.iter_mut().zip(hl) {
                        *d *= F::ONE - y * y;
                    }
                }
            }
            dz = dh;
        }
        grads.reverse();
        (dz, grads)
    }
}

/// The pass at `w` on inputs `x` (plain ReLU), the gradient `δ` of its
/// first layer's pre-activation, and the loss's gradient in every parameter
/// but the first layer's weights (which is `xᵀδ`).
pub(super) fn grads_but_lead<F: Float>(
    act: Activation,
    w: &[Tensor<F>],
    x: &[F],
    labels: &[usize],
) -> (Pass<F>, Vec<F>, Vec<Tensor<F>>) {
    let pass = Pass::new(act, w, x, labels.len());
    let (dz0, tail) = pass.backward(act, &w[2..], labels, None, true);
    let d1 = w[1].len();
    let mut rest = vec![Tensor::new(&[d1], sum_rows(&dz0, d1))];
    rest.extend(tail);
    (pass, dz0, rest)
}

/// The pass at `w` on inputs `x` (plain ReLU) and the loss's gradient in
/// every parameter.
pub(super) fn weight_grads<F: Float>(
    act: Activation,
    w: &[Tensor<F>],
    x: &[F],
    labels: &[usize],
) -> (Pass<F>, Vec<Tensor<F>>) {
    let (pass, dz0, rest) = grads_but_lead(act, w, x, labels);
    let (d0, d1) = w[0].dims2();
    let mut gw = vec![F::ZERO; d0 * d1];
    gemm(
        d0,
        labels.len(),
        d1,
        F::ONE,
        x,
        true,
        &dz0,
        false,
        F::ZERO,
        &mut gw,
    );
    let mut g = vec![Tensor::new(&[d0, d1], gw)];
    g.extend(rest);
    (pass, g)
}

/// Random projections for [`lead_norm_sq`]'s estimate.
pub(super) const NORM_PROBES: usize = 16;

/// `[d₁, NORM_PROBES]` signs ±1, the same on every call (a fixed seed).
pub(super) fn norm_probes<F: Float>(d1: usize) -> Vec<F> {
    let mut rng = crate::meta::rng::SplitMix::new(0x5eed_0f9e_0be5);
    (0..d1 * NORM_PROBES)
        .map(|_| if rng.below(2) == 0 { F::ONE } else { -F::ONE })
        .collect()
}

/// The unit vector along the mean row of `x` (`[n, d₀]`), zero if that is
/// zero: the direction [`lead_norm_sq`] takes exactly.
pub(super) fn mean_direction<F: Float>(x: &[F], d0: usize) -> Vec<F> {
    // the column sums in F (a direction needs no more), normalised in f64
    let u = sum_rows(x, d0);
    let norm = u
        .iter()
        .map(|a| a.to_f64() * a.to_f64())
        .sum::<f64>()
        .sqrt();
    u.iter()
        .map(|&a| F::from_f64(if norm > 0.0 { a.to_f64() / norm } else { 0.0 }))
        .collect()
}

/// An estimate of `‖V₀‖²`, the squared norm of the first layer's weights
/// in the direction `v`, as the finite difference's step length uses it.
///
/// `‖V₀‖² = ‖uᵀV₀‖² + ‖(I − uuᵀ)V₀‖²`: the part along `u` (the unit mean
/// of the validation inputs, [`mean_direction`]) exactly, the rest by
/// random projections (Hutchinson, `E‖Mr‖² = ‖M‖²` for random signs `r`).
/// With inputs that are all positive (pixels), `V₀ = xᵀδ` leans heavily on
/// the mean direction, and projections alone would be off by ±30%; the
/// remainder has no such dominant direction.
///
/// Estimated, not exact, because for `V₀ = xᵀδ` kept factored the exact
/// `⟨x·xᵀ, δ·δᵀ⟩` costs two `n×n` products (for `n = 128`, `d₀ = 784`,
/// `d₁ = 256`: 17 M multiply-adds, 11% of a Reptile step's products)
/// and the estimate about 2 M. The step length only needs the right scale,
/// and the estimate is a fixed function of `V₀` and `u` (a fixed seed), so
/// runs repeat bit for bit.
pub(super) fn lead_norm_sq<F: Float>(v0: &Tensor<F>, u: &[F]) -> f64 {
    let (d0, d1) = v0.dims2();
    let mut u_v0 = vec![F::ZERO; d1];
    gemm(
        1,
        d0,
        d1,
        F::ONE,
        u,
        false,
        v0.data(),
        false,
        F::ZERO,
        &mut u_v0,
    );
    let mut p = vec![F::ZERO; d0 * NORM_PROBES];
    gemm(
        d0,
        d1,
        NORM_PROBES,
        F::ONE,
        v0.data(),
        false,
        &norm_probes::<F>(d1),
        false,
        F::ZERO,
        &mut p,
    );
    remainder_estimate(&u_v0, u, p)
}

/// `‖uᵀV₀‖² + (‖P‖² − ‖uᵀP‖²) / NORM_PROBES` for `P = V₀·R`: the
/// estimate of [`lead_norm_sq`] from its parts.
pub(super) fn remainder_estimate<F: Float>(u_v0: &[F], u: &[F], p: Vec<F>) -> f64 {
    let d0 = u.len();
    let mut u_p = vec![F::ZERO; NORM_PROBES];
    gemm(
        1,
        d0,
        NORM_PROBES,
        F::ONE,
        u,
        false,
        &p,
        false,
        F::ZERO,
        &mut u_p,
    );
    let sq = |v: &[F]| v.iter().map(|a| a.to_f64() * a.to_f64()).sum::<f64>();
    // the projections' part is a sum of squares: negative only by rounding
    sq(u_v0) + ((sq(&p) - sq(&u_p)) / NORM_PROBES as f64).max(0.0)
}

impl<F: Float> Lead<'_, F> {
    /// [`lead_norm_sq`] of `V₀`, through `x` and `δ` where factored.
    pub(super) fn norm_sq(&self, u: &[F], d0: usize, d1: usize) -> f64 {
        match self {
            Lead::Dense(t) => lead_norm_sq(t, u),
            Lead::Outer { x, delta, n } => {
                let n = *n;
                // uᵀV₀ = (x·u)ᵀδ
                let mut xu = vec![F::ZERO; n];
                gemm(n, d0, 1, F::ONE, x, false, u, false, F::ZERO, &mut xu);
                let mut u_v0 = vec![F::ZERO; d1];
                gemm(
                    1,
                    n,
                    d1,
                    F::ONE,
                    &xu,
                    false,
                    delta,
                    false,
                    F::ZERO,
                    &mut u_v0,
                );
                // P = xᵀ(δR)
                let r = norm_probes::<F>(d1);
                let mut dr = vec![F::ZERO; n * NORM_PROBES];
                gemm(
                    n,
                    d1,
                    NORM_PROBES,
                    F::ONE,
                    delta,
                    false,
                    &r,
                    false,
                    F::ZERO,
                    &mut dr,
                );
                let mut p = vec![F::ZERO; d0 * NORM_PROBES];
                gemm(
                    d0,
                    n,
                    NORM_PROBES,
                    F::ONE,
                    x,
                    true,
                    &dr,
                    false,
                    F::ZERO,
                    &mut p,
                );
                remainder_estimate(&u_v0, u, p)
            }
        }
    }

    /// `y·V₀` for `y: [m, d₀]`.
    pub(super) fn left(&self, y: &[F], m: usize, d0: usize, d1: usize) -> Vec<F> {
        let mut out = vec![F::ZERO; m * d1];
        match self {
            Lead::Dense(t) => gemm(
                m,
                d0,
                d1,
                F::ONE,
                y,
                false,
                t.data(),
                false,
                F::ZERO,
                &mut out,
            ),
            Lead::Outer { x, delta, n } => {
                let mut yx = vec![F::ZERO; m * n];
                gemm(m, d0, *n, F::ONE, y, false, x, true, F::ZERO, &mut yx);
                gemm(
                    m,
                    *n,
                    d1,
                    F::ONE,
                    &yx,
                    false,
                    delta,
                    false,
                    F::ZERO,
                    &mut out,
                );
            }
        }
        out
    }

    /// `out ← b·V₀ᵀ + out` for `b: [m, d₁]`.
    pub(super) fn add_right_t(&self, b: &[F], m: usize, d0: usize, d1: usize, out: &mut [F]) {
        match self {
            Lead::Dense(t) => gemm(m, d1, d0, F::ONE, b, false, t.data(), true, F::ONE, out),
            Lead::Outer { x, delta, n } => {
                let mut bd = vec![F::ZERO; m * n];
                gemm(m, d1, *n, F::ONE, b, false, delta, true, F::ZERO, &mut bd);
                gemm(m, *n, d0, F::ONE, &bd, false, x, false, F::ONE, out);
            }
        }
    }
}

/// [`super::first_order_hypergradient`] for the MLP with activation `act`:
/// `radius` is `‖εv‖` with the first layer's part of `‖v‖` estimated
/// (`lead_norm_sq`).
///
/// The φ-gradient is linear in the gradient with respect to the augmented
/// images, so the central difference is taken on `∇_x L_train` and pulled
/// back through the augmentation once (the same number, computed with one
/// augmentation and one vector-Jacobian product per step instead of two).
///
/// The model's passes are written out by hand (`Pass`) so that the two
/// gradient evaluations at `w_j ± εv` share the work they have in common
/// with each other and with the inner step at `w_j`. For the first layer
/// (`x·W₀ + b₀`, the only dense product with the 784-wide input), with
/// `(V₀, c₀)` the first layer's part of `v`:
/// - its pre-activation at `w_j ± εv` is `z₀ ± ε(x·V₀ + c₀)`, `z₀` being the
///   inner step's at `w_j`: one product `x·V₀` instead of two forwards;
/// - the difference of the input gradients, with `δ±` the gradients of the
///   two pre-activations, is
///   `δ₊(W₀ + εV₀)ᵀ − δ₋(W₀ − εV₀)ᵀ = (δ₊ − δ₋)W₀ᵀ + ε(δ₊ + δ₋)V₀ᵀ`;
/// - the difference of its weight gradients (the adjoint's `H_j v`) is
///   `xᵀ(δ₊ − δ₋)`: one product instead of two;
/// - where `v` is a validation gradient, `V₀ = x_valᵀδ_val` is used in that
///   factored form (`Lead`).
///
/// The layers after the first (256-10 here) are evaluated at `w_j ± εv`
/// directly. All of this is the same function of `w_j ± εv` as a plain
/// evaluation, up to rounding.
#[allow(clippy::too_many_arguments)]
pub(super) fn first_order<F: Float>(
    act: Activation,
    w0: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
    estimator: Estimator,
    radius: f64,
) -> FirstOrder<F> {
    let alpha = F::from_f64(inner.alpha);
    let k = batches.len();
    let (d0, d1) = w0[0].dims2();
    // ws[j] = w_{j+1}; w_0 is borrowed
    let mut ws: Vec<Vec<Tensor<F>>> = Vec::with_capacity(k);
    let mut steps = Vec::with_capacity(k);
    for (j, batch) in batches.iter().enumerate() {
        let aug = Augmented::new(phi, batch, inner);
        let w = if j == 0 { w0 } else { &ws[j - 1][..] };
        let (pass, mut g) = weight_grads(act, w, aug.rows(), &batch.labels);
        // w_{j+1} = w_j − α g, written over g
        for (gp, p) in g.iter_mut().zip(w) {
            for (a, &b) in gp.data_mut().iter_mut().zip(p.data()) {
                *a = b + -alpha * *a;
            }
        }
        ws.push(g);
        steps.push((aug, pass));
    }
    // v = (V₀, rest): rest = [c₀, W₁, b₁, …]
    let val_grads = |w: &[Tensor<F>]| {
        let (pass, delta, rest) = grads_but_lead(act, w, val.x.data(), &val.labels);
        let lead = Lead::Outer {
            x: val.x.data(),
            delta,
            n: val.labels.len(),
        };
        (pass, lead, rest)
    };
    let (val_pass, mut lead, mut rest) = val_grads(if k == 0 { w0 } else { &ws[k - 1] });
    let u = mean_direction(val.x.data(), d0);
    let val_loss = val_pass.loss(&val.labels);
    let mut grad = [0.0; NUM_PHI];
    for j in (0..k).rev() {
        if estimator == Estimator::Greedy && j + 1 < k {
            (_, lead, rest) = val_grads(&ws[j]);
        }
        let nv = (lead.norm_sq(&u, d0, d1) + rest.iter().map(Tensor::norm_sq).sum::<f64>()).sqrt();
        if nv == 0.0 || !nv.is_finite() {
            continue;
        }
        let e = radius / nv;
        let propagate = estimator == Estimator::Adjoint && j > 0;
        let w: &[Tensor<F>] = if j == 0 { w0 } else { &ws[j - 1] };
        let (aug, pass) = &mut steps[j];
        let labels = &batches[j].labels;
        let n = labels.len();
        let c = F::from_f64(-inner.alpha / (2.0 * e));
        let dx = {
            let x = aug.rows();
            // the first layer's pre-activation at w_j ± εv
            let mut q0 = lead.left(x, n, d0, d1);
            for row in q0.chunks_mut(d1) {
                for (q, &b) in row.iter_mut().zip(rest[0].data()) {
                    *q += b;
                }
            }
            let ef = F::from_f64(e);
            let zp: Vec<F> = pass.z[0]
                .iter()
                .zip(&q0)
                .map(|(&z, &q)| z + ef * q)
                .collect();
            let zm: Vec<F> = pass.z[0]
                .iter()
                .zip(&q0)
                .map(|(&z, &q)| z - ef * q)
                .collect();
            let frozen = Some(&pass.z[..]);
            let (tp, tm) = (
                offset(&w[2..], &rest[1..], e),
                offset(&w[2..], &rest[1..], -e),
            );
            let pp = Pass::from_first(act, zp, n, &tp, frozen);
            let pm = Pass::from_first(act, zm, n, &tm, frozen);
            let (dp, gp) = pp.backward(act, &tp, labels, frozen, propagate);
            let (dm, gm) = pm.backward(act, &tm, labels, frozen, propagate);
            // −α [∇_x L(w+εv) − ∇_x L(w−εv)] / 2ε
            //   = c (δ₊ − δ₋) W₀ᵀ − (α/2) (δ₊ + δ₋) V₀ᵀ,  c = −α / 2ε
            let half = F::from_f64(-inner.alpha / 2.0);
            let a: Vec<F> = dp.iter().zip(&dm).map(|(&p, &m)| c * (p - m)).collect();
            let b: Vec<F> = dp.iter().zip(&dm).map(|(&p, &m)| half * (p + m)).collect();
            let mut dx = vec![F::ZERO; n * d0];
            gemm(
                n,
                d1,
                d0,
                F::ONE,
                &a,
                false,
                w[0].data(),
                true,
                F::ZERO,
                &mut dx,
            );
            lead.add_right_t(&b, n, d0, d1, &mut dx);
            if propagate {
                // v ← v − α H_j v, H_j v ≈ (∇_w L(w+εv) − ∇_w L(w−εv)) / 2ε:
                // for the first layer c·xᵀ(δ₊ − δ₋) = xᵀa (and its bias Σ_rows a)
                let mut v0 = std::mem::replace(&mut lead, Lead::Dense(Tensor::zeros(&[0])))
                    .into_dense(d0, d1);
                gemm(d0, n, d1, F::ONE, x, true, &a, false, F::ONE, v0.data_mut());
                lead = Lead::Dense(v0);
                for (vi, s) in rest[0].data_mut().iter_mut().zip(sum_rows(&a, d1)) {
                    *vi += s;
                }
                for ((vi, p), m) in rest[1..].iter_mut().zip(&gp).zip(&gm) {
                    vi.axpy(c, p);
                    vi.axpy(-c, m);
                }
            }
            Tensor::new(&[n, d0], dx)
        };
        let g = aug.pull_back(dx);
        for q in 0..NUM_PHI {
            grad[q] += g[q];
        }
    }
    FirstOrder {
        grad,
        val_loss,
        adapted: ws.pop().unwrap_or_else(|| w0.to_vec()),
    }
}

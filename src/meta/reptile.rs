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

use super::bilevel::{
    augmented_images, phi_tensor, train_loss, val_loss, Adam, Inner, TrainBatch, ValBatch,
};
use super::engine::{mean_cross_entropy, softmax_rows};
use super::float::Float;
use super::lead::{gemm, Lead};
use super::mlp::Activation;
use super::model::Arch;
use super::relaxed::NUM_PHI;
use super::tape::{Tape, Var};
use super::tensor::Tensor;

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
}

/// `x·W + b` for `x: [n, d_in]`, `W: [d_in, d_out]`, `b: [d_out]`.
fn affine<F: Float>(x: &[F], n: usize, w: &Tensor<F>, b: &Tensor<F>) -> Vec<F> {
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
fn sum_rows<F: Float>(x: &[F], m: usize) -> Vec<F> {
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
struct Pass<F> {
    n: usize,
    z: Vec<Vec<F>>,
    h: Vec<Vec<F>>,
}

impl<F: Float> Pass<F> {
    /// The pass on inputs `x` with parameters `w` (all layers).
    fn new(act: Activation, w: &[Tensor<F>], x: &[F], n: usize) -> Self {
        let z0 = affine(x, n, &w[0], &w[1]);
        Self::from_first(act, z0, n, &w[2..], None)
    }

    /// The pass from the first layer's pre-activation `z0`, with `tail` the
    /// parameters of the layers after it.
    fn from_first(
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
    fn loss(&self, labels: &[usize]) -> f64 {
        let logits = &self.z[self.z.len() - 1];
        let k = logits.len() / self.n.max(1);
        F::from_f64(mean_cross_entropy(logits, self.n, k, labels)).to_f64()
    }

    /// Backward pass of the loss: the gradient of the first layer's
    /// pre-activation, and (if `want_tail`) the gradients of the `tail`
    /// parameters (empty otherwise). `frozen` as given to the forward.
    fn backward(
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
fn grads_but_lead<F: Float>(
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
fn weight_grads<F: Float>(
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
const NORM_PROBES: usize = 16;

/// `[d₁, NORM_PROBES]` signs ±1, the same on every call (a fixed seed).
fn norm_probes<F: Float>(d1: usize) -> Vec<F> {
    let mut rng = super::rng::SplitMix::new(0x5eed_0f9e_0be5);
    (0..d1 * NORM_PROBES)
        .map(|_| if rng.below(2) == 0 { F::ONE } else { -F::ONE })
        .collect()
}

/// The unit vector along the mean row of `x` (`[n, d₀]`), zero if that is
/// zero: the direction [`lead_norm_sq`] takes exactly.
fn mean_direction<F: Float>(x: &[F], d0: usize) -> Vec<F> {
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
fn lead_norm_sq<F: Float>(v0: &Tensor<F>, u: &[F]) -> f64 {
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
fn remainder_estimate<F: Float>(u_v0: &[F], u: &[F], p: Vec<F>) -> f64 {
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
    fn norm_sq(&self, u: &[F], d0: usize, d1: usize) -> f64 {
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
    fn left(&self, y: &[F], m: usize, d0: usize, d1: usize) -> Vec<F> {
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
    fn add_right_t(&self, b: &[F], m: usize, d0: usize, d1: usize, out: &mut [F]) {
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

/// Runs the `k = batches.len()` inner SGD steps from `w0` (first order) and
/// estimates `dL_val(w_k)/dφ` without double backward. `radius` is the
/// finite difference's step length in weight space, `‖εv‖` (with the first
/// layer's part of `‖v‖` estimated: `lead_norm_sq`).
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
pub fn first_order_hypergradient<F: Float>(
    w0: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
    estimator: Estimator,
    radius: f64,
) -> FirstOrder<F> {
    let act = match inner.model {
        Arch::Mlp(act) if inner.neumann <= 1 => act,
        _ => {
            let exact = |v: &[Tensor<F>]| norm(v);
            return first_order_tape(w0, phi, batches, val, inner, estimator, radius, &exact);
        }
    };
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

impl<F: Float> Augmented<F> {
    /// The augmented rows as an `[n, C·H·W]` tensor.
    fn matrix(&self, n: usize) -> Tensor<F> {
        let rows = self.rows();
        Tensor::new(&[n, rows.len() / n.max(1)], rows.to_vec())
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
/// length uses it. `radius` is the
/// finite difference's step length in weight space, `‖εv‖`.
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
    let b = F::from_f64(beta);
    for (w, wk) in params.iter_mut().zip(&out.adapted) {
        if beta == 1.0 {
            // θ_k itself (θ + 1·(θ_k − θ) may round away from it)
            w.data_mut().copy_from_slice(wk.data());
            continue;
        }
        for (a, &c) in w.data_mut().iter_mut().zip(wk.data()) {
            *a += b * (c - *a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! The hand-written passes against the tape, and the estimator against
    //! its previous, tape-only implementation (two full gradient evaluations
    //! at `w ± εv`), kept here as the reference.

    use super::*;
    use crate::meta::gradcheck::{random, MetaProblem};
    use crate::meta::rng::SplitMix;

    /// The tape form with the MLP fast path's norm of `v` (exact but for
    /// the first layer's estimate), so that both take the same `ε`.
    fn reference<F: Float>(
        w0: &[Tensor<F>],
        phi: &[f64; NUM_PHI],
        batches: &[TrainBatch<F>],
        val: &ValBatch<F>,
        inner: &Inner,
        estimator: Estimator,
        radius: f64,
    ) -> FirstOrder<F> {
        let u = mean_direction(val.x.data(), w0[0].dims2().0);
        let norm_of = |v: &[Tensor<F>]| (lead_norm_sq(&v[0], &u) + norm(&v[1..]).powi(2)).sqrt();
        first_order_tape(w0, phi, batches, val, inner, estimator, radius, &norm_of)
    }

    fn max_rel(a: &[f64], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
        a.iter()
            .zip(b)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs() / scale))
    }

    #[test]
    fn hand_written_pass_matches_the_tape() {
        let mut rng = SplitMix::new(3);
        let n = 7;
        let labels: Vec<usize> = (0..n).map(|_| rng.below(4)).collect();
        let x = random(&mut rng, &[n, 9], -1.0, 1.0);
        for act in [Activation::Relu, Activation::Tanh] {
            let w = crate::meta::mlp::Mlp::<f64>::new(&[9, 6, 5, 4], act, 11).params;
            let inner = Inner {
                alpha: 0.1,
                tau: 0.5,
                shape: crate::meta::augment::AugmentShape {
                    channels: 1,
                    src: crate::ops::Size::new(3, 3),
                    out: crate::ops::Size::new(3, 3),
                },
                model: Arch::Mlp(act),
                neumann: 1,
            };
            // unfrozen: weight gradients and loss
            let (pass, g) = weight_grads(act, &w, x.data(), &labels);
            let (tg, _, masks) = model_grads(&w, &x, &labels, &inner, true, false, None);
            for (a, b) in g.iter().zip(tg.unwrap()) {
                assert_eq!(a.shape(), b.shape());
                assert!(max_rel(&a.cast::<f64>().into_data(), b.data()) < 1e-12);
            }
            let mut tape = Tape::new();
            let ws: Vec<Var> = w.iter().map(|t| tape.constant(t.clone())).collect();
            let xv = tape.constant(x.clone());
            let loss = crate::meta::mlp::Mlp::loss(act, &mut tape, &ws, xv, &labels);
            assert!((pass.loss(&labels) - tape.item(loss)).abs() < 1e-12);
            // frozen at w, evaluated at another point: tail gradients and
            // the first layer's pre-activation gradient, through xᵀδ and δW₀ᵀ
            let u: Vec<Tensor<f64>> = w
                .iter()
                .map(|t| random(&mut rng, t.shape(), -0.3, 0.3))
                .collect();
            let w2 = offset(&w, &u, 1.0);
            let z0 = affine(x.data(), n, &w2[0], &w2[1]);
            let frozen = (act == Activation::Relu).then_some(&pass.z[..]);
            let p2 = Pass::from_first(act, z0, n, &w2[2..], frozen);
            let (d0, tail) = p2.backward(act, &w2[2..], &labels, frozen, true);
            let fm = (act == Activation::Relu).then_some(&masks[..]);
            let (tg, tx, _) = model_grads(&w2, &x, &labels, &inner, true, true, fm);
            let tg = tg.unwrap();
            for (a, b) in tail.iter().zip(&tg[2..]) {
                assert!(max_rel(a.data(), b.data()) < 1e-12);
            }
            let mut gx = vec![0.0; n * 9];
            gemm(n, 6, 9, 1.0, &d0, false, w2[0].data(), true, 0.0, &mut gx);
            assert!(max_rel(&gx, tx.unwrap().data()) < 1e-12);
            let mut gw = vec![0.0; 9 * 6];
            gemm(9, n, 6, 1.0, x.data(), true, &d0, false, 0.0, &mut gw);
            assert!(max_rel(&gw, tg[0].data()) < 1e-12);
        }
    }

    #[test]
    fn lead_norm_estimate_is_near_the_exact_norm_factored_or_dense() {
        // the bench's shapes: validation inputs in [0, 1], δ of a softmax
        // gradient through 256 ReLUs (signed, sparse-ish)
        let (n, d0, d1) = (128, 784, 256);
        let mut worst = 0f64;
        for seed in 0..4 {
            let mut rng = SplitMix::new(90 + seed);
            let x = random(&mut rng, &[n, d0], 0.0, 1.0);
            // δ = (g·W₁ᵀ) ⊙ relu′: rank 10 (the classes) before the mask
            let g = random(&mut rng, &[n, 10], -1e-2, 1e-2);
            let w1 = random(&mut rng, &[d1, 10], -0.1, 0.1);
            let mut delta = vec![0.0; n * d1];
            gemm(
                n,
                10,
                d1,
                1.0,
                g.data(),
                false,
                w1.data(),
                true,
                0.0,
                &mut delta,
            );
            for v in delta.iter_mut() {
                if rng.below(2) == 0 {
                    *v = 0.0;
                }
            }
            let lead = Lead::Outer {
                x: x.data(),
                delta,
                n,
            };
            let u = mean_direction(x.data(), d0);
            let estimate = lead.norm_sq(&u, d0, d1);
            let dense = lead.into_dense(d0, d1);
            let exact = dense.norm_sq();
            let from_dense = lead_norm_sq(&dense, &u);
            assert!(((from_dense - estimate) / exact).abs() < 1e-4);
            worst = worst.max((estimate / exact).sqrt().ln().abs());
        }
        // ‖εv‖ within 5% of the radius asked for (measured: within 0.7%)
        assert!(
            worst < 0.05f64.ln_1p(),
            "norm off by a factor {}",
            worst.exp()
        );
    }

    #[test]
    fn estimator_matches_its_tape_reference() {
        for k in 1..=3 {
            let p = MetaProblem::random(40 + k as u64, k);
            for est in [Estimator::Adjoint, Estimator::Greedy] {
                for radius in [1e-4, 1e-2] {
                    let a = first_order_hypergradient(
                        &p.w0, &p.phi, &p.batches, &p.val, &p.inner, est, radius,
                    );
                    let b = reference(&p.w0, &p.phi, &p.batches, &p.val, &p.inner, est, radius);
                    let err = max_rel(&a.grad, &b.grad);
                    assert!(err < 1e-6, "k = {k}, {est:?}, radius {radius}: {err:e}");
                    assert!((a.val_loss - b.val_loss).abs() < 1e-12);
                    for (x, y) in a.adapted.iter().zip(&b.adapted) {
                        assert!(max_rel(x.data(), y.data()) < 1e-12);
                    }
                }
            }
        }
    }
}

//! The finite-difference machinery: norm-wise relative errors and cosines,
//! scalar functions written on a tape, their reverse-mode and
//! central-difference gradients, the second-order `⟨∇f, v⟩`, and random
//! inputs.

use crate::meta::rng::SplitMix;
use crate::meta::tape::{Tape, Var};
use crate::meta::tensor::Tensor;

use super::EPS;

/// `‖a − b‖ / max(‖a‖, ‖b‖)`, 0 when both vanish.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_err of different lengths");
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = na.max(nb);
    if scale <= 1e-300 {
        0.0
    } else {
        d / scale
    }
}

/// Cosine of the angle between two vectors (0 if one vanishes).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// A scalar function of some tensors, written on a tape.
pub type Scalar<'a> = dyn Fn(&mut Tape<f64>, &[Var]) -> Var + 'a;

/// Evaluates `f` at `inputs` (forward only).
pub fn eval(f: &Scalar<'_>, inputs: &[Tensor<f64>]) -> f64 {
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.param(t.clone())).collect();
    let y = f(&mut tape, &vars);
    tape.item(y)
}

/// Reverse-mode gradient of `f` at `inputs`, all inputs concatenated.
pub fn analytic_grad(f: &Scalar<'_>, inputs: &[Tensor<f64>]) -> Vec<f64> {
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.param(t.clone())).collect();
    let y = f(&mut tape, &vars);
    let grads = tape.grad(y, &vars, false);
    grads
        .iter()
        .flat_map(|g| tape.value(*g).data().to_vec())
        .collect()
}

/// Central-difference gradient of `f` at `inputs` with step `eps`, all
/// inputs concatenated.
pub fn numeric_grad(f: &Scalar<'_>, inputs: &[Tensor<f64>], eps: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut x = inputs.to_vec();
    for i in 0..x.len() {
        for e in 0..x[i].len() {
            let v = x[i].data()[e];
            x[i].data_mut()[e] = v + eps;
            let fp = eval(f, &x);
            x[i].data_mut()[e] = v - eps;
            let fm = eval(f, &x);
            x[i].data_mut()[e] = v;
            out.push((fp - fm) / (2.0 * eps));
        }
    }
    out
}

/// Relative error between the reverse-mode and the central-difference
/// gradients of `f`.
pub fn grad_error(f: &Scalar<'_>, inputs: &[Tensor<f64>]) -> f64 {
    rel_err(&analytic_grad(f, inputs), &numeric_grad(f, inputs, EPS))
}

/// The second-order version of `f`: `⟨∇f(x), v⟩` with the gradient taken
/// with `create_graph`, so that its own gradient (a Hessian-vector product)
/// exercises every backward rule's backward.
pub fn directional<'a>(
    f: &'a Scalar<'a>,
    v: Vec<Tensor<f64>>,
) -> impl Fn(&mut Tape<f64>, &[Var]) -> Var + 'a {
    move |tape: &mut Tape<f64>, xs: &[Var]| {
        let y = f(tape, xs);
        let gs = tape.grad(y, xs, true);
        let mut total = None;
        for (g, v) in gs.iter().zip(&v) {
            let c = tape.constant(v.clone());
            let d = tape.dot(*g, c);
            total = Some(match total {
                Some(t) => tape.add(t, d),
                None => d,
            });
        }
        total.expect("at least one input")
    }
}

/// A random tensor with entries uniform in `[lo, hi)`.
pub fn random(rng: &mut SplitMix, shape: &[usize], lo: f64, hi: f64) -> Tensor<f64> {
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.range(lo, hi)).collect())
}

/// Random entries bounded away from zero (for ReLU's kink).
pub(super) fn away_from_zero(rng: &mut SplitMix, shape: &[usize]) -> Tensor<f64> {
    random(rng, shape, 0.1, 1.0).map(|v| if rng_sign(v) { v } else { -v })
}

fn rng_sign(v: f64) -> bool {
    // a deterministic pseudo-random sign from the value's low bits
    (v.to_bits() >> 7) & 1 == 0
}

/// `⟨R, y⟩` for a fixed random `R`: makes any op's output a scalar whose
/// gradient is a generic vector-Jacobian product.
pub(super) fn project(tape: &mut Tape<f64>, y: Var, seed: u64) -> Var {
    let mut rng = SplitMix::new(seed);
    let shape = tape.value(y).shape().to_vec();
    let r = random(&mut rng, &shape, -1.0, 1.0);
    let r = tape.constant(r);
    tape.dot(y, r)
}

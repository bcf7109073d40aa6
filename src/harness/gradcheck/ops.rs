//! The per-op cases: every op of the tape on small random inputs, its
//! gradient and its double backward against central differences.

use std::rc::Rc;

use crate::meta::rng::SplitMix;
use crate::meta::tape::{Tape, Var};
use crate::meta::tensor::Tensor;

use super::finite_diff::{away_from_zero, project};
use super::{directional, grad_error, random, Check, Scalar};

type OpCase = (&'static str, Vec<Tensor<f64>>, Box<Scalar<'static>>);

fn op_cases(rng: &mut SplitMix) -> Vec<OpCase> {
    let (n, k, m) = (3, 4, 5);
    let mut cases: Vec<OpCase> = Vec::new();
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = if ta { [k, n] } else { [n, k] };
        let b = if tb { [m, k] } else { [k, m] };
        let name = match (ta, tb) {
            (false, false) => "matmul",
            (true, false) => "matmul(aᵀ, b)",
            (false, true) => "matmul(a, bᵀ)",
            (true, true) => "matmul(aᵀ, bᵀ)",
        };
        cases.push((
            name,
            vec![random(rng, &a, -1.0, 1.0), random(rng, &b, -1.0, 1.0)],
            Box::new(move |t: &mut Tape<f64>, v: &[Var]| {
                let y = t.matmul_t(v[0], v[1], ta, tb);
                project(t, y, 1)
            }),
        ));
    }
    let pair = |rng: &mut SplitMix| {
        vec![
            random(rng, &[n, k], -1.0, 1.0),
            random(rng, &[n, k], -1.0, 1.0),
        ]
    };
    cases.push((
        "add",
        pair(rng),
        Box::new(|t, v| {
            let y = t.add(v[0], v[1]);
            project(t, y, 2)
        }),
    ));
    cases.push((
        "sub",
        pair(rng),
        Box::new(|t, v| {
            let y = t.sub(v[0], v[1]);
            project(t, y, 3)
        }),
    ));
    cases.push((
        "mul",
        pair(rng),
        Box::new(|t, v| {
            let y = t.mul(v[0], v[1]);
            let y2 = t.mul(y, v[0]);
            project(t, y2, 4)
        }),
    ));
    cases.push((
        "scale_shift",
        vec![random(rng, &[n, k], -1.0, 1.0)],
        Box::new(|t, v| {
            let y = t.scale_shift(v[0], -1.7, 0.3);
            let y = t.mul(y, y);
            project(t, y, 5)
        }),
    ));
    cases.push((
        "mul_scalar",
        vec![random(rng, &[n, k], -1.0, 1.0), random(rng, &[], 0.5, 1.5)],
        Box::new(|t, v| {
            let y = t.mul_scalar(v[0], v[1]);
            let y = t.mul(y, y);
            project(t, y, 6)
        }),
    ));
    cases.push((
        "add_bias",
        vec![
            random(rng, &[n, k], -1.0, 1.0),
            random(rng, &[k], -1.0, 1.0),
        ],
        Box::new(|t, v| {
            let y = t.add_bias(v[0], v[1]);
            let y = t.mul(y, y);
            project(t, y, 7)
        }),
    ));
    cases.push((
        "sum_rows",
        vec![random(rng, &[n, k], -1.0, 1.0)],
        Box::new(|t, v| {
            let y = t.sum_rows(v[0]);
            let y = t.mul(y, y);
            project(t, y, 8)
        }),
    ));
    cases.push((
        "sum_cols",
        vec![random(rng, &[n, k], -1.0, 1.0)],
        Box::new(|t, v| {
            let y = t.sum_cols(v[0]);
            let y = t.mul(y, y);
            project(t, y, 9)
        }),
    ));
    cases.push((
        "broadcast_rows",
        vec![random(rng, &[k], -1.0, 1.0)],
        Box::new(move |t, v| {
            let y = t.broadcast_rows(v[0], n);
            let y = t.mul(y, y);
            project(t, y, 10)
        }),
    ));
    cases.push((
        "broadcast_cols",
        vec![random(rng, &[n], -1.0, 1.0)],
        Box::new(move |t, v| {
            let y = t.broadcast_cols(v[0], k);
            let y = t.mul(y, y);
            project(t, y, 11)
        }),
    ));
    cases.push((
        "sum",
        vec![random(rng, &[n, k], -1.0, 1.0)],
        Box::new(|t, v| {
            let y = t.sum(v[0]);
            t.mul(y, y)
        }),
    ));
    cases.push((
        "mean",
        vec![random(rng, &[n, k], -1.0, 1.0)],
        Box::new(|t, v| {
            let y = t.mean(v[0]);
            t.mul(y, y)
        }),
    ));
    cases.push((
        "expand",
        vec![random(rng, &[], -1.0, 1.0)],
        Box::new(move |t, v| {
            let y = t.expand(v[0], &[n, k]);
            let y = t.mul(y, y);
            project(t, y, 12)
        }),
    ));
    cases.push((
        "relu",
        vec![away_from_zero(rng, &[n, k])],
        Box::new(|t, v| {
            let y = t.relu(v[0]);
            let y = t.mul(y, y);
            project(t, y, 13)
        }),
    ));
    cases.push((
        "tanh",
        vec![random(rng, &[n, k], -2.0, 2.0)],
        Box::new(|t, v| {
            let y = t.tanh(v[0]);
            project(t, y, 14)
        }),
    ));
    cases.push((
        "softmax",
        vec![random(rng, &[n, k], -2.0, 2.0)],
        Box::new(|t, v| {
            let y = t.softmax(v[0]);
            project(t, y, 15)
        }),
    ));
    cases.push((
        "cross_entropy",
        vec![random(rng, &[n, k], -2.0, 2.0)],
        Box::new(|t, v| t.cross_entropy(v[0], &[1, 3, 0])),
    ));
    // im2col of 2 images 3×4 with 2 channels (3×3 patches, zero padding
    // 1) and its adjoint; squared so that the double backward is not zero.
    let patches = Rc::new(crate::meta::engine::IndexMap::patches(2, 3, 4, 2, 3, 1, 1));
    let p = patches.clone();
    cases.push((
        "gather (im2col 3×3, padding 1)",
        vec![random(rng, &p.in_shape, -1.0, 1.0)],
        Box::new(move |t, v| {
            let y = t.gather(v[0], &p);
            let y = t.mul(y, y);
            project(t, y, 17)
        }),
    ));
    let p = patches;
    cases.push((
        "scatter_add (col2im)",
        vec![random(rng, &p.out_shape, -1.0, 1.0)],
        Box::new(move |t, v| {
            let y = t.scatter_add(v[0], &p);
            let y = t.mul(y, y);
            project(t, y, 18)
        }),
    ));
    cases.push((
        "reshape",
        vec![random(rng, &[n, k], -1.0, 1.0)],
        Box::new(move |t, v| {
            let y = t.reshape(v[0], &[k * n]);
            let y = t.mul(y, y);
            project(t, y, 16)
        }),
    ));
    cases
}

/// Each op's gradient, and its double backward (the gradient of
/// `⟨∇f, v⟩`), against central differences.
pub fn check_ops(seed: u64) -> Vec<Check> {
    let mut rng = SplitMix::new(seed);
    let mut out = Vec::new();
    for (name, inputs, f) in op_cases(&mut rng) {
        out.push(Check::rel(
            format!("op {name}: gradient"),
            grad_error(&*f, &inputs),
        ));
        let v: Vec<Tensor<f64>> = inputs
            .iter()
            .map(|t| random(&mut rng, t.shape(), -1.0, 1.0))
            .collect();
        let g = directional(&*f, v);
        out.push(Check::rel(
            format!("op {name}: double backward"),
            grad_error(&g, &inputs),
        ));
    }
    out
}

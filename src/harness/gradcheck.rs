//! Finite-difference checks of every gradient of the engine, in f64 with
//! central differences: each op's gradient and double backward, a
//! Hessian-vector product, the CNN, the augmentation node, the relaxed sampler, the
//! whole φ → image chain, the MAML hypergradient and the Reptile estimate.
//!
//! Errors are norm-wise: `‖a − b‖₂ / max(‖a‖₂, ‖b‖₂)` over all the entries
//! of a gradient, `0` when both are zero.

use std::rc::Rc;

use crate::meta::augment::{AugmentShape, SampleKey, NUM_PARAMS};
use crate::meta::model::Arch;
use crate::meta::relaxed::{NUM_DRAWS, NUM_PHI};
use crate::meta::rng::SplitMix;
use crate::meta::tape::{Tape, Var};
use crate::meta::tensor::Tensor;
use crate::ops::geometry::Size;

/// Finite-difference step of the op checks.
pub const EPS: f64 = 1e-6;
/// Tolerance on relative errors.
pub const REL_TOL: f64 = 1e-4;
/// Lower bound on the cosine between the Reptile estimate and the exact
/// hypergradient.
pub const COS_TOL: f64 = 0.99;

/// How a check's value is judged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Criterion {
    /// Passes when the value is at most the bound (a relative error).
    AtMost(f64),
    /// Passes when the value is at least the bound (a cosine).
    AtLeast(f64),
    /// Reported only.
    Info,
}

/// The outcome of one check.
#[derive(Clone, Debug)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// The measured relative error or cosine.
    pub value: f64,
    /// How the value is judged.
    pub criterion: Criterion,
}

impl Check {
    /// A relative-error check with tolerance [`REL_TOL`].
    pub fn rel(name: impl Into<String>, value: f64) -> Self {
        Check {
            name: name.into(),
            value,
            criterion: Criterion::AtMost(REL_TOL),
        }
    }

    /// Whether the check passes (NaN never does).
    pub fn passed(&self) -> bool {
        match self.criterion {
            Criterion::AtMost(t) => self.value <= t,
            Criterion::AtLeast(t) => self.value >= t,
            Criterion::Info => true,
        }
    }
}

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
fn away_from_zero(rng: &mut SplitMix, shape: &[usize]) -> Tensor<f64> {
    random(rng, shape, 0.1, 1.0).map(|v| if rng_sign(v) { v } else { -v })
}

fn rng_sign(v: f64) -> bool {
    // a deterministic pseudo-random sign from the value's low bits
    (v.to_bits() >> 7) & 1 == 0
}

/// `⟨R, y⟩` for a fixed random `R`: makes any op's output a scalar whose
/// gradient is a generic vector-Jacobian product.
fn project(tape: &mut Tape<f64>, y: Var, seed: u64) -> Var {
    let mut rng = SplitMix::new(seed);
    let shape = tape.value(y).shape().to_vec();
    let r = random(&mut rng, &shape, -1.0, 1.0);
    let r = tape.constant(r);
    tape.dot(y, r)
}

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

/// A small random augmentation problem: images, parameters away from the
/// kinks (crop size below 1, non-integer sample positions), keys.
pub struct AugmentProblem {
    /// Shapes.
    pub shape: AugmentShape,
    /// `[B, C, H, W]` in `[0, 1]`.
    pub images: Tensor<f64>,
    /// `[B, 7]` physical parameters.
    pub params: Tensor<f64>,
    /// Noise keys.
    pub keys: Rc<[SampleKey]>,
    /// Philox draws for the relaxed sampler.
    pub draws: Rc<[[f32; NUM_DRAWS]]>,
    /// A random φ.
    pub phi: Tensor<f64>,
}

impl AugmentProblem {
    /// A problem of `batch` samples, 2 channels, 7×6 source, 5×4 output.
    pub fn random(seed: u64, batch: usize) -> Self {
        let mut rng = SplitMix::new(seed);
        let shape = AugmentShape {
            channels: 2,
            src: Size::new(7, 6),
            out: Size::new(5, 4),
        };
        let images = random(&mut rng, &[batch, 2, 7, 6], 0.0, 1.0);
        let mut params = Vec::new();
        for _ in 0..batch {
            params.extend([
                rng.range(0.3, 0.7),
                rng.range(0.8, 1.25),
                rng.range(-0.3, 0.3),
                rng.range(-0.3, 0.3),
                rng.range(-0.6, 0.6),
                rng.range(0.1, 0.9),
                rng.range(0.01, 0.1),
            ]);
        }
        let keys: Vec<SampleKey> = (0..batch as u64)
            .map(|i| SampleKey {
                seed,
                epoch: 1,
                sample: 100 + i,
            })
            .collect();
        let draws: Vec<[f32; NUM_DRAWS]> = (0..batch as u64)
            .map(|i| crate::meta::relaxed::draws(seed, 1, 100 + i))
            .collect();
        let phi = random(&mut rng, &[NUM_PHI], -1.0, 1.0);
        AugmentProblem {
            shape,
            images,
            params: Tensor::new(&[batch, NUM_PARAMS], params),
            keys: keys.into(),
            draws: draws.into(),
            phi,
        }
    }
}

/// The augmentation node's VJP to the images and to the parameters, the
/// relaxed sampler's Jacobian, and the whole φ → augmented image chain.
pub fn check_augment(seed: u64) -> Vec<Check> {
    let p = AugmentProblem::random(seed, 3);
    let (keys, shape) = (p.keys.clone(), p.shape);
    let params = p.params.clone();
    let to_image = move |t: &mut Tape<f64>, v: &[Var]| {
        let par = t.constant(params.clone());
        let y = t.augment(v[0], par, keys.clone(), shape);
        project(t, y, 21)
    };
    let (keys, images) = (p.keys.clone(), p.images.clone());
    let to_params = move |t: &mut Tape<f64>, v: &[Var]| {
        let img = t.constant(images.clone());
        let y = t.augment(img, v[0], keys.clone(), shape);
        project(t, y, 22)
    };
    let mut out = vec![
        Check::rel(
            "augment: VJP to the image",
            grad_error(&to_image, std::slice::from_ref(&p.images)),
        ),
        Check::rel(
            "augment: VJP to the parameters",
            grad_error(&to_params, std::slice::from_ref(&p.params)),
        ),
    ];
    for tau in [0.5, 1.0] {
        let draws = p.draws.clone();
        let relaxed = move |t: &mut Tape<f64>, v: &[Var]| {
            let y = t.relaxed_params(v[0], tau, draws.clone());
            project(t, y, 23)
        };
        out.push(Check::rel(
            format!("relaxed φ → parameters (τ = {tau})"),
            grad_error(&relaxed, std::slice::from_ref(&p.phi)),
        ));
    }
    let (keys, images, draws) = (p.keys.clone(), p.images.clone(), p.draws.clone());
    let chain = move |t: &mut Tape<f64>, v: &[Var]| {
        let img = t.constant(images.clone());
        let par = t.relaxed_params(v[0], 0.5, draws.clone());
        let y = t.augment(img, par, keys.clone(), shape);
        project(t, y, 24)
    };
    out.push(Check::rel(
        "chain φ → augmented image",
        grad_error(&chain, std::slice::from_ref(&p.phi)),
    ));
    out
}

/// Double-backward Hessian-vector product of an MLP's loss (ReLU and tanh)
/// in its weights against central differences of its gradient.
pub fn check_hvp(seed: u64) -> Vec<Check> {
    use crate::meta::mlp::{Activation, Mlp};
    let mut out = Vec::new();
    for act in [Activation::Tanh, Activation::Relu] {
        let mut rng = SplitMix::new(seed);
        let model = Mlp::<f64>::new(&[6, 8, 4], act, seed);
        let x = random(&mut rng, &[5, 6], -1.0, 1.0);
        let labels = [0, 3, 1, 2, 1];
        let v: Vec<Tensor<f64>> = model
            .params
            .iter()
            .map(|p| random(&mut rng, p.shape(), -1.0, 1.0))
            .collect();
        // analytic: ∇⟨∇L, v⟩
        let mut tape = Tape::new();
        let ws: Vec<Var> = model.params.iter().map(|p| tape.param(p.clone())).collect();
        let xv = tape.constant(x.clone());
        let loss = Arch::Mlp(act).loss(&mut tape, &ws, xv, &labels);
        let g = tape.grad(loss, &ws, true);
        let mut gv = None;
        for (gi, vi) in g.iter().zip(&v) {
            let c = tape.constant(vi.clone());
            let d = tape.dot(*gi, c);
            gv = Some(match gv {
                Some(t) => tape.add(t, d),
                None => d,
            });
        }
        let hv = tape.grad(gv.expect("layers"), &ws, false);
        let hv: Vec<f64> = hv
            .iter()
            .flat_map(|h| tape.value(*h).data().to_vec())
            .collect();
        // numeric: (∇L(w+εv) − ∇L(w−εv)) / 2ε
        let grad_at = |e: f64| {
            let mut m = model.clone();
            for (p, vi) in m.params.iter_mut().zip(&v) {
                p.axpy(e, vi);
            }
            crate::meta::model::loss_and_grads(&m.params, &x, &labels, &|t, p, x| {
                Arch::Mlp(act).forward(t, p, x)
            })
            .1
            .iter()
            .flat_map(|t| t.data().to_vec())
            .collect::<Vec<f64>>()
        };
        let (gp, gm) = (grad_at(EPS), grad_at(-EPS));
        let fd: Vec<f64> = gp
            .iter()
            .zip(&gm)
            .map(|(a, b)| (a - b) / (2.0 * EPS))
            .collect();
        out.push(Check::rel(
            format!("Hessian-vector product (double backward, {act:?} MLP)"),
            rel_err(&hv, &fd),
        ));
    }
    out
}

/// The CNN's loss (conv 3×3 → ReLU → 2×2 average pool, twice, then a
/// linear layer) on a tiny problem: its gradient in the weights, and its
/// double backward (the gradient of `⟨∇L, v⟩`, a Hessian-vector product),
/// against central differences.
pub fn check_cnn(seed: u64) -> Vec<Check> {
    use crate::meta::model::cnn::{Cnn, CnnShape};
    let mut rng = SplitMix::new(seed);
    let shape = CnnShape {
        height: 4,
        width: 8,
        channels: 2,
        conv1: 3,
        conv2: 2,
        classes: 3,
    };
    let model = Cnn::<f64>::new(shape, seed);
    let x = random(&mut rng, &[3, 4 * 8 * 2], -1.0, 1.0);
    let labels = [2, 0, 1];
    let f = move |t: &mut Tape<f64>, w: &[Var]| {
        let xv = t.constant(x.clone());
        crate::meta::model::Arch::Cnn(shape).loss(t, w, xv, &labels)
    };
    let v: Vec<Tensor<f64>> = model
        .params
        .iter()
        .map(|p| random(&mut rng, p.shape(), -1.0, 1.0))
        .collect();
    let g = directional(&f, v);
    vec![
        Check::rel(
            format!("CNN loss ({} weights): gradient", model.num_params()),
            grad_error(&f, &model.params),
        ),
        Check::rel(
            "CNN loss: double backward (Hessian-vector product)",
            grad_error(&g, &model.params),
        ),
    ]
}

/// A small random bilevel problem: `k` train batches of relaxed-augmented
/// 8×8 images, a validation batch, a ReLU MLP 36-12-4, and φ.
pub struct MetaProblem {
    /// Initial weights.
    pub w0: Vec<Tensor<f64>>,
    /// φ.
    pub phi: [f64; NUM_PHI],
    /// One batch per inner step.
    pub batches: Vec<crate::meta::bilevel::TrainBatch<f64>>,
    /// Validation batch.
    pub val: crate::meta::bilevel::ValBatch<f64>,
    /// Inner settings.
    pub inner: crate::meta::bilevel::Inner,
}

impl MetaProblem {
    /// A random problem with `k` inner steps: 8×8 grey images cropped to
    /// 6×6, a ReLU MLP 36-12-4.
    pub fn random(seed: u64, k: usize) -> Self {
        use crate::meta::mlp::{Activation, Mlp};
        let act = Activation::Relu;
        Self::build(seed, k, 1, Arch::Mlp(act), |classes| {
            Mlp::<f64>::new(&[36, 12, classes], act, seed).params
        })
    }

    /// A random problem with `k` inner steps for the CNN: 8×8 images of
    /// two channels cropped to 6×6, conv 3 and 2 channels, 4 classes.
    pub fn random_cnn(seed: u64, k: usize) -> Self {
        use crate::meta::model::cnn::{Cnn, CnnShape};
        let shape = CnnShape {
            height: 6,
            width: 6,
            channels: 2,
            conv1: 3,
            conv2: 2,
            classes: 4,
        };
        Self::build(seed, k, 2, Arch::Cnn(shape), |_| {
            Cnn::<f64>::new(shape, seed).params
        })
    }

    fn build(
        seed: u64,
        k: usize,
        channels: usize,
        model: Arch,
        weights: impl FnOnce(usize) -> Vec<Tensor<f64>>,
    ) -> Self {
        use crate::meta::bilevel::{Inner, TrainBatch, ValBatch};
        let mut rng = SplitMix::new(seed);
        let shape = AugmentShape {
            channels,
            src: Size::new(8, 8),
            out: Size::new(6, 6),
        };
        let (b, classes) = (8usize, 4usize);
        let batches = (0..k)
            .map(|j| {
                let keys: Vec<SampleKey> = (0..b as u64)
                    .map(|i| SampleKey {
                        seed,
                        epoch: j as u64,
                        sample: i,
                    })
                    .collect();
                let draws: Vec<[f32; NUM_DRAWS]> = keys
                    .iter()
                    .map(|k| crate::meta::relaxed::draws(k.seed, k.epoch, k.sample))
                    .collect();
                TrainBatch {
                    images: random(&mut rng, &[b, channels, 8, 8], 0.0, 1.0),
                    labels: (0..b).map(|_| rng.below(classes)).collect(),
                    keys: keys.into(),
                    draws: draws.into(),
                }
            })
            .collect();
        let val = ValBatch {
            x: random(&mut rng, &[16, 36 * channels], 0.0, 1.0),
            labels: (0..16).map(|_| rng.below(classes)).collect(),
        };
        let phi = std::array::from_fn(|_| rng.range(-1.0, 1.0));
        MetaProblem {
            w0: weights(classes),
            phi,
            batches,
            val,
            inner: Inner {
                alpha: 0.3,
                tau: 0.5,
                shape,
                model,
                neumann: 1,
            },
        }
    }

    /// The exact hypergradient (MAML machinery).
    pub fn exact(&self) -> [f64; NUM_PHI] {
        crate::meta::maml::hypergradient(&self.w0, &self.phi, &self.batches, &self.val, &self.inner)
            .1
    }

    /// Central differences of `L_val(w_k(φ))` over a sweep of steps, the
    /// entrywise median over the sweep.
    pub fn finite_difference(&self) -> [f64; NUM_PHI] {
        let steps = [1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7];
        let f = |phi: &[f64; NUM_PHI]| {
            crate::meta::maml::val_loss_after(&self.w0, phi, &self.batches, &self.val, &self.inner)
        };
        std::array::from_fn(|q| {
            let mut est: Vec<f64> = steps
                .iter()
                .map(|&e| {
                    let (mut p, mut m) = (self.phi, self.phi);
                    p[q] += e;
                    m[q] -= e;
                    (f(&p) - f(&m)) / (2.0 * e)
                })
                .collect();
            est.sort_by(|a, b| a.total_cmp(b));
            (est[est.len() / 2 - 1] + est[est.len() / 2]) / 2.0
        })
    }
}

/// The exact MAML hypergradient against finite differences of
/// `L_val(w_k(φ))`, for `k = 1, 2, 3`.
pub fn check_hypergradient(seed: u64) -> Vec<Check> {
    let mut out: Vec<Check> = (1..=3)
        .map(|k| {
            let p = MetaProblem::random(seed + k as u64, k);
            Check::rel(
                format!("MAML hypergradient vs finite differences (k = {k})"),
                rel_err(&p.exact(), &p.finite_difference()),
            )
        })
        .collect();
    out.extend((1..=2).map(|k| {
        let p = MetaProblem::random_cnn(seed + k as u64, k);
        Check::rel(
            format!("MAML hypergradient through the CNN vs finite differences (k = {k})"),
            rel_err(&p.exact(), &p.finite_difference()),
        )
    }));
    out
}

/// Cosine between the first-order (Reptile) estimates and the exact
/// hypergradient, `k = 1, 2, 3`: the adjoint estimator is checked; the
/// greedy one (DESIGN.md's literal `v`) is reported.
pub fn check_reptile(seed: u64) -> Vec<Check> {
    use crate::meta::reptile::{first_order_hypergradient, Estimator};
    let mut out = Vec::new();
    for k in 1..=3 {
        let p = MetaProblem::random(seed + k as u64, k);
        let exact = p.exact();
        for est in [Estimator::Adjoint, Estimator::Greedy] {
            let g =
                first_order_hypergradient(&p.w0, &p.phi, &p.batches, &p.val, &p.inner, est, 1e-4)
                    .grad;
            out.push(Check {
                name: format!("Reptile {est:?} estimate: cosine with exact (k = {k})"),
                value: cosine(&g, &exact),
                criterion: if est == Estimator::Adjoint {
                    Criterion::AtLeast(COS_TOL)
                } else {
                    Criterion::Info
                },
            });
        }
    }
    for (k, neumann) in [(1, 1), (2, 1), (1, 4)] {
        let mut p = MetaProblem::random_cnn(seed + k as u64, k);
        p.inner.neumann = neumann;
        let g = first_order_hypergradient(
            &p.w0,
            &p.phi,
            &p.batches,
            &p.val,
            &p.inner,
            Estimator::Adjoint,
            1e-4,
        )
        .grad;
        out.push(Check {
            name: if neumann > 1 {
                format!(
                    "Reptile through the CNN, Neumann K = {neumann}: cosine with exact (k = {k})"
                )
            } else {
                format!("Reptile estimate through the CNN: cosine with exact (k = {k})")
            },
            value: cosine(&g, &p.exact()),
            criterion: Criterion::AtLeast(COS_TOL),
        });
    }
    out
}

/// The Reptile estimate in f32 at the training radius (‖εv‖ = 10⁻²) on a
/// 784-64-10 ReLU MLP, 28×28 images, batch 32, against the f32 exact
/// hypergradient: what online training relies on.
pub fn check_reptile_f32(seed: u64) -> Check {
    use crate::meta::bilevel::{Inner, TrainBatch, ValBatch};
    use crate::meta::mlp::{Activation, Mlp};
    use crate::meta::reptile::{first_order_hypergradient, Estimator};
    let mut rng = SplitMix::new(seed);
    let b = 32;
    let model = Mlp::<f32>::new(&[784, 64, 10], Activation::Relu, seed);
    let keys: Vec<SampleKey> = (0..b as u64)
        .map(|i| SampleKey {
            seed,
            epoch: 0,
            sample: i,
        })
        .collect();
    let draws: Vec<[f32; NUM_DRAWS]> = keys
        .iter()
        .map(|k| crate::meta::relaxed::draws(k.seed, k.epoch, k.sample))
        .collect();
    let batch = TrainBatch {
        images: random(&mut rng, &[b, 1, 28, 28], 0.0, 1.0).cast(),
        labels: (0..b).map(|_| rng.below(10)).collect(),
        keys: keys.into(),
        draws: draws.into(),
    };
    let val = ValBatch {
        x: random(&mut rng, &[b, 784], 0.0, 1.0).cast(),
        labels: (0..b).map(|_| rng.below(10)).collect(),
    };
    let inner = Inner {
        alpha: 0.1,
        tau: 0.5,
        shape: AugmentShape {
            channels: 1,
            src: Size::new(28, 28),
            out: Size::new(28, 28),
        },
        model: Arch::Mlp(Activation::Relu),
        neumann: 1,
    };
    let phi = std::array::from_fn(|_| rng.range(-1.0, 1.0));
    let batches = [batch.clone(), batch];
    let exact = crate::meta::maml::hypergradient(&model.params, &phi, &batches, &val, &inner).1;
    let est = first_order_hypergradient(
        &model.params,
        &phi,
        &batches,
        &val,
        &inner,
        Estimator::Adjoint,
        1e-2,
    )
    .grad;
    Check {
        name: "Reptile estimate in f32, 784-64-10, k = 2: cosine with exact".into(),
        value: cosine(&est, &exact),
        criterion: Criterion::AtLeast(COS_TOL),
    }
}

/// Every check, in the order `metaug gradcheck` prints them.
pub fn run_all(seed: u64) -> Vec<Check> {
    let mut out = check_ops(seed);
    out.extend(check_hvp(seed));
    out.extend(check_cnn(seed));
    out.extend(check_augment(seed));
    out.extend(check_hypergradient(seed));
    out.extend(check_reptile(seed));
    out.push(check_reptile_f32(seed));
    out
}

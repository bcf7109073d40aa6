//! The bilevel checks: a small random [`MetaProblem`], the exact MAML
//! hypergradient against finite differences, and the first-order
//! (Reptile) estimates against the exact hypergradient, in f64 and f32.

use crate::meta::augment::{AugmentShape, SampleKey};
use crate::meta::model::Arch;
use crate::meta::relaxed::{NUM_DRAWS, NUM_PHI};
use crate::meta::rng::SplitMix;
use crate::meta::tensor::Tensor;
use crate::ops::geometry::Size;

use super::{cosine, random, rel_err, Check, Criterion, COS_TOL};

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
                family: crate::meta::relaxed::Family::Independent,
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
    // the one-op family: φ's logits through a Gumbel-softmax over the ops
    out.extend((1..=2).map(|k| {
        let mut p = MetaProblem::random_cnn(seed + 10 + k as u64, k);
        p.inner.family = crate::meta::relaxed::Family::OneOp;
        Check::rel(
            format!("MAML hypergradient, CNN, one-op vs finite differences (k = {k})"),
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
        family: crate::meta::relaxed::Family::Independent,
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

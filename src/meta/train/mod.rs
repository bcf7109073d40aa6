//! Online training: the task model (the CNN or an MLP) trains on
//! (hard-)augmented batches while φ adapts beside it.
//!
//! Protocol, per training step `t` (batch `B` from a per-epoch shuffle;
//! sample `s` of epoch `e` has Philox address `(seed, e, s)`):
//! - with a fixed policy, an SGD step on the batch augmented in hard mode
//!   (the loader's semantics, same draws);
//! - with **MAML**, every `every` steps a meta step first: the exact
//!   hypergradient of `L_val(w_k(φ))` from the current weights, its `k` inner
//!   steps on the current batch (relaxed) and `k − 1` further random batches,
//!   and a random validation batch; Adam moves φ. The SGD step then uses the
//!   updated φ in hard mode;
//! - with **Reptile**, every `every` steps the training step *is* the meta
//!   step: `k` first-order inner steps on relaxed-augmented batches, the
//!   first-order hypergradient, and the interpolation `θ ← θ + β(θ_k − θ)` of
//!   weights and φ. Other steps are hard-mode SGD steps as above;
//! - with a delayed start (`MetaConfig::meta_start` > 0), φ is held at its
//!   start for that fraction of the steps (hard-mode SGD steps) and the meta
//!   steps begin after it, every `every` steps from there;
//! - with `MetaConfig::knots` > 1 the learned φ is a function of training
//!   progress, φ(t) with `t = step / steps` ([`PhiSchedule`]): each step reads
//!   φ(t), each meta step's hypergradient moves the knots around `t`.
//!
//! Hard-mode augmentation (the loader's semantics) is in `hard`, the
//! TrivialAugment-style baseline in `trivial`.

use std::rc::Rc;

mod config;
mod hard;
mod trivial;

pub use config::{LrSchedule, MetaConfig, Method, ModelKind, TrainConfig};
pub use hard::{augment_hard, augment_hard_bytes, image_bytes};
pub use trivial::trivial_augment_phis;

use super::augment::{AugmentShape, SampleKey};
use super::bilevel::{Inner, TrainBatch, ValBatch};
use super::maml;
use super::model::{Arch, Model};
use super::relaxed::{draws, Family, NUM_PHI};
use super::reptile;
use super::rng::SplitMix;
use super::schedule::PhiSchedule;
use super::tensor::Tensor;
use hard::never_applies;
use trivial::trivial_augment_batch;

/// A labelled image set in `[0, 1]`, `[N, C, H, W]`.
#[derive(Clone, Debug)]
pub struct ImageSet {
    /// Images.
    pub images: Tensor<f32>,
    /// One label per image, below `classes`.
    pub labels: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Floats per image.
    pub fn dim(&self) -> usize {
        self.images.len() / self.len().max(1)
    }

    /// `(C, H, W)`.
    pub fn chw(&self) -> (usize, usize, usize) {
        let s = self.images.shape();
        (s[1], s[2], s[3])
    }

    /// Rows `idx` as `[n, C, H, W]` images and their labels.
    pub fn gather(&self, idx: &[usize]) -> (Tensor<f32>, Vec<usize>) {
        let d = self.dim();
        let (c, h, w) = self.chw();
        let mut out = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            out.extend_from_slice(&self.images.data()[i * d..(i + 1) * d]);
        }
        (
            Tensor::new(&[idx.len(), c, h, w], out),
            idx.iter().map(|&i| self.labels[i]).collect(),
        )
    }

    /// All images flattened to `[N, D]`.
    pub fn flat(&self) -> Tensor<f32> {
        self.images.clone().reshape(&[self.len(), self.dim()])
    }
}

/// What a run returns.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The trained model.
    pub model: Model<f32>,
    /// φ at the end (the fixed policy when nothing was learned).
    pub phi: [f64; NUM_PHI],
    /// The learned φ(t)'s knots, `t = 0` first (one when φ is constant;
    /// empty without meta-learning).
    pub knots: Vec<[f64; NUM_PHI]>,
    /// φ after every meta step (empty without meta-learning).
    pub history: Vec<[f64; NUM_PHI]>,
}

/// Per-epoch shuffled batches, drawn with the run's seed.
struct Batches {
    order: Vec<usize>,
    pos: usize,
    epoch: u64,
    seed: u64,
}

impl Batches {
    fn new(n: usize, seed: u64) -> Self {
        let mut b = Batches {
            order: (0..n).collect(),
            pos: n,
            epoch: 0,
            seed,
        };
        b.pos = b.order.len();
        b
    }

    /// The next batch's indices and its epoch.
    fn next(&mut self, size: usize) -> (Vec<usize>, u64) {
        if self.pos + size > self.order.len() {
            self.epoch += 1;
            SplitMix::new(self.seed ^ self.epoch.wrapping_mul(0x9E37)).shuffle(&mut self.order);
            self.pos = 0;
        }
        let size = size.min(self.order.len());
        let idx = self.order[self.pos..self.pos + size].to_vec();
        self.pos += size;
        (idx, self.epoch)
    }
}

/// The per-sample Philox addresses of a batch.
pub(super) fn keys(seed: u64, epoch: u64, idx: &[usize]) -> Vec<SampleKey> {
    idx.iter()
        .map(|&i| SampleKey {
            seed,
            epoch,
            sample: i as u64,
        })
        .collect()
}

/// Trains an MLP on `train` for `cfg.steps` steps, with the fixed policy
/// `phi` (hard mode) or, when `meta` is set, learning φ online from
/// `meta.phi_init` against `val`. `progress(step, φ)` is called after every
/// meta step.
pub fn train(
    train: &ImageSet,
    val: &ImageSet,
    cfg: &TrainConfig,
    phi: [f64; NUM_PHI],
    meta: Option<&MetaConfig>,
    progress: &mut dyn FnMut(usize, &[f64; NUM_PHI]),
) -> Trained {
    run(
        train,
        val,
        cfg,
        Fixed::Policy(phi, Family::Independent),
        meta,
        None,
        progress,
    )
}

/// Trains with a TrivialAugment-style baseline instead of a policy: each
/// sample of each step gets one of {identity, crop, rotate, flip, noise},
/// chosen uniformly, at a uniformly random magnitude (no search). See
/// [`trivial_augment_phis`] for the ranges.
pub fn train_trivial_augment(train: &ImageSet, cfg: &TrainConfig) -> Trained {
    run(
        train,
        train,
        cfg,
        Fixed::Trivial,
        None,
        None,
        &mut |_, _| {},
    )
}

/// The fixed augmentation of a run without meta-learning.
#[derive(Clone, Copy, Debug)]
enum Fixed {
    /// One policy for every sample, in its family.
    Policy([f64; NUM_PHI], Family),
    /// TrivialAugment-style: one op per sample.
    Trivial,
}

/// The step of the first meta step (φ is held at its start before it).
pub fn meta_start_step(meta: &MetaConfig, steps: usize) -> usize {
    ((meta.meta_start.clamp(0.0, 1.0) * steps as f64) as usize).min(steps)
}

/// A fixed two-phase schedule, no meta-learning: policy `first` (in
/// `family`) for the first `at` steps, then `then` (hard mode both; `at`
/// ≥ `cfg.steps` holds `first` throughout). The control of delayed
/// meta-learning (`MetaConfig::meta_start`): the same start, without the
/// learning.
pub fn train_switch(
    train: &ImageSet,
    cfg: &TrainConfig,
    family: Family,
    first: [f64; NUM_PHI],
    at: usize,
    then: [f64; NUM_PHI],
) -> Trained {
    run(
        train,
        train,
        cfg,
        Fixed::Policy(first, family),
        None,
        Some((at, then)),
        &mut |_, _| {},
    )
}

fn run(
    train: &ImageSet,
    val: &ImageSet,
    cfg: &TrainConfig,
    fixed: Fixed,
    meta: Option<&MetaConfig>,
    switch: Option<(usize, [f64; NUM_PHI])>,
    progress: &mut dyn FnMut(usize, &[f64; NUM_PHI]),
) -> Trained {
    let (c, h, w) = train.chw();
    let shape = AugmentShape {
        channels: c,
        src: crate::ops::Size::new(h as u32, w as u32),
        out: crate::ops::Size::new(h as u32, w as u32),
    };
    let arch = cfg.model.arch(train.chw(), train.classes);
    let mut model = match arch {
        Arch::Mlp(act) => Model::mlp(&[train.dim(), cfg.hidden, train.classes], act, cfg.seed),
        Arch::Cnn(shape) => Model::cnn(shape, cfg.seed),
    };
    let family = match (meta, fixed) {
        (Some(m), _) => m.family,
        (None, Fixed::Policy(_, family)) => family,
        (None, Fixed::Trivial) => Family::Independent,
    };
    let mut phi = match (meta, fixed) {
        (Some(m), _) => m.phi_init,
        (None, Fixed::Policy(phi, _)) => phi,
        (None, Fixed::Trivial) => {
            let off = f64::NEG_INFINITY;
            [off, 0.0, off, 0.0, off, off, 0.0]
        }
    };
    let mut schedule = meta.map(|m| PhiSchedule::new(m.phi_init, m.knots, m.adam()));
    let mut history = Vec::new();
    let mut batches = Batches::new(train.len(), cfg.seed);
    let mut rng = SplitMix::new(cfg.seed ^ 0xA11CE);
    let val_flat = val.flat();
    // the loader's sources for hard mode, converted once
    let bytes = image_bytes(&train.images);
    // the first meta step (φ stays at its start until then)
    let start = meta.map_or(0, |m| meta_start_step(m, cfg.steps));
    for step in 0..cfg.steps {
        if let Some((_, then)) = switch.filter(|s| s.0 == step) {
            phi = then;
        }
        let lr = cfg.lr_at(step);
        // training progress, where φ(t) is read
        let t = step as f64 / cfg.steps as f64;
        if let Some(s) = schedule.as_ref().filter(|_| step >= start) {
            phi = s.at(t);
        }
        let (idx, epoch) = batches.next(cfg.batch);
        let (images, labels) = train.gather(&idx);
        let ks = keys(cfg.seed, epoch, &idx);
        if let Some(m) =
            meta.filter(|m| m.every > 0 && step >= start && (step - start).is_multiple_of(m.every))
        {
            let inner = Inner {
                alpha: lr,
                tau: m.tau,
                family,
                shape,
                model: arch,
                neumann: m.neumann,
            };
            let mut inner_batches = vec![relaxed_batch(images.clone(), labels.clone(), ks.clone())];
            for j in 1..m.inner_steps.max(1) {
                let extra: Vec<usize> = (0..cfg.batch).map(|_| rng.below(train.len())).collect();
                let (im, lb) = train.gather(&extra);
                // address the extra batches in an epoch of their own
                let e = u64::MAX - (step * m.inner_steps + j) as u64;
                inner_batches.push(relaxed_batch(im, lb, keys(cfg.seed, e, &extra)));
            }
            let vidx: Vec<usize> = (0..m.val_batch.min(val.len()))
                .map(|_| rng.below(val.len()))
                .collect();
            let d = val.dim();
            let vx: Vec<f32> = vidx
                .iter()
                .flat_map(|&i| val_flat.data()[i * d..(i + 1) * d].iter().copied())
                .collect();
            let vb = ValBatch {
                x: Tensor::new(&[vidx.len(), d], vx),
                labels: vidx.iter().map(|&i| val.labels[i]).collect(),
            };
            let schedule = schedule.as_mut().expect("a schedule when meta-learning");
            match m.method {
                Method::Maml => {
                    let (_, g) =
                        maml::hypergradient(&model.params, &phi, &inner_batches, &vb, &inner);
                    schedule.step(t, &g, 1.0);
                }
                Method::Reptile => {
                    // reptile::reptile_step, with φ(t)'s knots for φ
                    let out = reptile::first_order_hypergradient(
                        &model.params,
                        &phi,
                        &inner_batches,
                        &vb,
                        &inner,
                        reptile::Estimator::Adjoint,
                        m.radius,
                    );
                    schedule.step(t, &out.grad, m.beta);
                    reptile::interpolate_weights(&mut model.params, &out.adapted, m.beta);
                }
            }
            phi = schedule.at(t);
            history.push(phi);
            progress(step, &phi);
            if m.method == Method::Reptile {
                continue; // the Reptile step trained the weights
            }
        }
        let x = match (&bytes, fixed) {
            (_, Fixed::Trivial) if meta.is_none() => {
                trivial_augment_batch(train, bytes.as_deref(), &idx, &ks, &shape)
            }
            (Some(b), _) if !never_applies(&phi) => {
                augment_hard_bytes(b, &idx, &ks, &phi, family, &shape)
            }
            _ => augment_hard(&images, &ks, &phi, family, &shape),
        };
        model.sgd_step(&x, &labels, lr as f32);
    }
    Trained {
        model,
        phi,
        knots: schedule.map(|s| s.knots().to_vec()).unwrap_or_default(),
        history,
    }
}

fn relaxed_batch(images: Tensor<f32>, labels: Vec<usize>, ks: Vec<SampleKey>) -> TrainBatch<f32> {
    let d: Vec<_> = ks
        .iter()
        .map(|k| draws(k.seed, k.epoch, k.sample))
        .collect();
    TrainBatch {
        images,
        labels,
        keys: Rc::from(ks),
        draws: Rc::from(d),
    }
}

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
//!   steps begin after it, every `every` steps from there.

use std::rc::Rc;

use super::augment::{augment_forward, params_row, AugmentShape, SampleKey, NUM_PARAMS};
use super::bilevel::{Adam, Inner, TrainBatch, ValBatch};
use super::maml;
use super::mlp::Activation;
use super::model::cnn::CnnShape;
use super::model::{Arch, Model};
use super::relaxed::{draws, NUM_PHI};
use super::reptile;
use super::rng::SplitMix;
use super::tensor::Tensor;
use crate::decode::ImageView;
use crate::ops::{augment_into, OutputSpec};
use crate::policy::Policy;

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

/// Which meta-learning method adapts φ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Exact second-order hypergradient, Adam on φ.
    Maml,
    /// First-order estimate, Reptile interpolation.
    Reptile,
}

/// Settings of online policy learning.
#[derive(Clone, Debug)]
pub struct MetaConfig {
    /// The method.
    pub method: Method,
    /// One meta step every `every` training steps.
    pub every: usize,
    /// Inner steps `k` per meta step.
    pub inner_steps: usize,
    /// Adam step size on φ.
    pub meta_lr: f64,
    /// Relaxation temperature τ.
    pub tau: f64,
    /// Validation batch size of a meta step.
    pub val_batch: usize,
    /// Reptile interpolation factor β.
    pub beta: f64,
    /// Reptile finite-difference radius `‖εv‖`.
    pub radius: f64,
    /// φ at the start.
    pub phi_init: [f64; NUM_PHI],
    /// Fraction of the training steps taken before the first meta step
    /// (φ is held at `phi_init` until then, hard mode); 0 starts at once.
    pub meta_start: f64,
    /// Neumann terms for the inverse Hessian at the current weights
    /// ([`Inner::neumann`]); 1: the plain `k`-step hypergradient.
    pub neumann: usize,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            method: Method::Maml,
            every: 4,
            inner_steps: 1,
            meta_lr: 0.05,
            tau: 0.5,
            val_batch: 256,
            beta: 1.0,
            radius: 1e-2,
            phi_init: [0.0; NUM_PHI],
            meta_start: 0.0,
            neumann: 1,
        }
    }
}

/// The task model trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ModelKind {
    /// Conv 3×3 (16) → ReLU → pool, conv 3×3 (32) → ReLU → pool, linear
    /// ([`CnnShape::fashion_mnist`]'s widths, for the images' size): the
    /// experiment's model.
    Cnn,
    /// One hidden ReLU layer of [`TrainConfig::hidden`] units: the
    /// default of a bare [`TrainConfig`] (and of `learn-policy`), the
    /// cheaper model.
    #[default]
    Mlp,
}

impl ModelKind {
    /// The architecture for images `(C, H, W)` and `classes` classes.
    pub fn arch(self, (c, h, w): (usize, usize, usize), classes: usize) -> Arch {
        match self {
            ModelKind::Mlp => Arch::Mlp(Activation::Relu),
            ModelKind::Cnn => Arch::Cnn(CnnShape {
                height: h,
                width: w,
                channels: c,
                classes,
                ..CnnShape::fashion_mnist()
            }),
        }
    }
}

/// Settings of one training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The task model.
    pub model: ModelKind,
    /// SGD steps.
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// SGD step size (also the inner step size α of the meta step); the
    /// peak of the schedule.
    pub lr: f64,
    /// How the step size moves over the run.
    pub lr_schedule: LrSchedule,
    /// Hidden width of the MLP.
    pub hidden: usize,
    /// Seed of the initialisation, the batch order and the Philox draws.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelKind::default(),
            steps: 400,
            batch: 128,
            lr: 0.1,
            lr_schedule: LrSchedule::Constant,
            hidden: 256,
            seed: 0,
        }
    }
}

/// The SGD step size over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LrSchedule {
    /// `lr` at every step.
    #[default]
    Constant,
    /// `lr · ½(1 + cos(π t / T))`: from `lr` at the first step towards 0 at
    /// the last, so that the last steps are small and the final weights
    /// settle instead of stopping at one point of a noisy walk.
    Cosine,
}

impl TrainConfig {
    /// The step size at `step` (0-based) of `self.steps`.
    pub fn lr_at(&self, step: usize) -> f64 {
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let t = step as f64 / self.steps.max(1) as f64;
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// What a run returns.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The trained model.
    pub model: Model<f32>,
    /// φ at the end (the fixed policy when nothing was learned).
    pub phi: [f64; NUM_PHI],
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
fn keys(seed: u64, epoch: u64, idx: &[usize]) -> Vec<SampleKey> {
    idx.iter()
        .map(|&i| SampleKey {
            seed,
            epoch,
            sample: i as u64,
        })
        .collect()
}

/// True when φ can never apply any op (the `none` policy): augmentation
/// is then the identity and is skipped.
fn never_applies(phi: &[f64; NUM_PHI]) -> bool {
    [0, 2, 4, 5].iter().all(|&k| phi[k] == f64::NEG_INFINITY)
}

/// The loader's policy for φ (hard mode does not use τ).
fn hard_policy(phi: &[f64; NUM_PHI]) -> Policy {
    Policy {
        phi: phi.map(|v| v as f32),
        tau: crate::policy::DEFAULT_TAU,
    }
}

/// Images `[N, C, H, W]` whose every value is a byte / 255 (as loaded
/// images are), as the loader's sources: `[N, H, W, C]` bytes. `None` when
/// some value is not on that grid.
pub fn image_bytes(images: &Tensor<f32>) -> Option<Vec<u8>> {
    let s = images.shape();
    if s.len() != 4 {
        return None;
    }
    let (c, hw) = (s[1], s[2] * s[3]);
    let mut out = vec![0u8; images.len()];
    for (src, dst) in images.data().chunks(c * hw).zip(out.chunks_mut(c * hw)) {
        for (ch, plane) in src.chunks(hw).enumerate() {
            for (k, &v) in plane.iter().enumerate() {
                let q = (v * 255.0).round();
                if !(0.0..=255.0).contains(&q) || q as u8 as f32 / 255.0 != v {
                    return None;
                }
                dst[k * c + ch] = q as u8;
            }
        }
    }
    Some(out)
}

/// Hard-mode augmentation of a batch (loader semantics) to `[n, D]`.
///
/// One source of truth with the loader: parameters from
/// [`Policy::hard_params`](crate::policy::Policy::hard_params) on the
/// sample's draws and, for images of bytes / 255, the loader's own
/// [`augment_into`] (f32 output, mean 0, std 1); large batches spread
/// over threads (see [`PARALLEL_MIN_ELEMENTS`](super::augment::PARALLEL_MIN_ELEMENTS)).
/// Other images go through the meta node's forward, the same formulas on
/// f32 pixels.
pub fn augment_hard(
    images: &Tensor<f32>,
    keys: &[SampleKey],
    phi: &[f64; NUM_PHI],
    shape: &AugmentShape,
) -> Tensor<f32> {
    let n = keys.len();
    let d = images.len() / n.max(1);
    if never_applies(phi) {
        return images.clone().reshape(&[n, d]);
    }
    match image_bytes(images) {
        Some(bytes) => {
            let rows: Vec<usize> = (0..n).collect();
            augment_hard_bytes(&bytes, &rows, keys, phi, shape)
        }
        None => {
            let policy = hard_policy(phi);
            let params: Vec<f32> = keys
                .iter()
                .flat_map(|k| params_row(&policy.sample_hard(k.seed, k.epoch, k.sample)))
                .collect();
            let params = Tensor::new(&[n, NUM_PARAMS], params);
            let out = augment_forward(images, &params, keys, shape);
            let d_out = out.len() / n.max(1);
            out.reshape(&[n, d_out])
        }
    }
}

/// [`augment_hard`] of rows `rows` of the `[N, H, W, C]` source bytes
/// (from [`image_bytes`]), with the loader's [`augment_into`].
pub fn augment_hard_bytes(
    bytes: &[u8],
    rows: &[usize],
    keys: &[SampleKey],
    phi: &[f64; NUM_PHI],
    shape: &AugmentShape,
) -> Tensor<f32> {
    assert_eq!(rows.len(), keys.len(), "one key per row");
    let (c, src) = (shape.channels, shape.src);
    let plane_in = c * src.height as usize * src.width as usize;
    let spec = OutputSpec::new(shape.out, c as u32);
    let d_out = spec.sample_elements();
    let n = rows.len();
    let mut out = vec![0f32; n * d_out];
    let policy = hard_policy(phi);
    let parallel = out.len() >= super::augment::PARALLEL_MIN_ELEMENTS;
    super::augment::for_each_chunk(
        &mut out,
        d_out,
        parallel,
        || (),
        |_, b, o| {
            let (r, k) = (rows[b], &keys[b]);
            let view = ImageView {
                height: src.height,
                width: src.width,
                channels: c as u32,
                data: &bytes[r * plane_in..(r + 1) * plane_in],
            };
            let params = policy.sample_hard(k.seed, k.epoch, k.sample);
            augment_into(view, &params, k.noise(), &spec, bytemuck::cast_slice_mut(o));
            // augment_into writes little-endian f32
            for v in o.iter_mut() {
                *v = f32::from_bits(u32::from_le(v.to_bits()));
            }
        },
    );
    Tensor::new(&[n, d_out], out)
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
    run(train, val, cfg, Fixed::Policy(phi), meta, None, progress)
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

/// TrivialAugment's five choices as one-op policies (op probability 1,
/// the others 0); hard mode then draws the magnitude uniformly: crop area
/// in `[0.35, 1]` (the `default` policy's strongest), rotation in ±30°,
/// flip, noise σ in `[0, 0.1]`. The first is the identity.
pub fn trivial_augment_phis() -> [[f64; NUM_PHI]; 5] {
    let off = f64::NEG_INFINITY;
    let on = f64::INFINITY;
    // magnitudes: min area 0.35, 30°, σ ≤ 0.1
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let base = [
        off,
        logit(0.35),
        off,
        logit(30.0 / 180.0),
        off,
        off,
        0.1f64.exp_m1().ln(),
    ];
    std::array::from_fn(|op| {
        let mut phi = base;
        if let Some(&gate) = [0usize, 2, 4, 5].get(op.wrapping_sub(1)) {
            phi[gate] = on;
        }
        phi
    })
}

/// Which of [`trivial_augment_phis`] sample `k` gets: uniform over the
/// five, from a hash of its Philox address (independent of its draws).
fn trivial_choice(k: &SampleKey) -> usize {
    let mut h = SplitMix::new(
        k.seed ^ k.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.sample.rotate_left(29) ^ 0x7A,
    );
    h.below(5)
}

/// The fixed augmentation of a run without meta-learning.
#[derive(Clone, Copy, Debug)]
enum Fixed {
    /// One policy for every sample.
    Policy([f64; NUM_PHI]),
    /// TrivialAugment-style: one op per sample.
    Trivial,
}

/// The step of the first meta step (φ is held at its start before it).
pub fn meta_start_step(meta: &MetaConfig, steps: usize) -> usize {
    ((meta.meta_start.clamp(0.0, 1.0) * steps as f64) as usize).min(steps)
}

/// A fixed two-phase schedule, no meta-learning: policy `first` for the
/// first `at` steps, then `then` (hard mode both). The control of delayed
/// meta-learning (`MetaConfig::meta_start`): the same start, without the
/// learning.
pub fn train_switch(
    train: &ImageSet,
    cfg: &TrainConfig,
    first: [f64; NUM_PHI],
    at: usize,
    then: [f64; NUM_PHI],
) -> Trained {
    run(
        train,
        train,
        cfg,
        Fixed::Policy(first),
        None,
        Some((at, then)),
        &mut |_, _| {},
    )
}

/// The TrivialAugment-style batch: rows grouped by their op, each group
/// augmented in hard mode with its one-op policy, put back in order.
fn trivial_augment_batch(
    train: &ImageSet,
    bytes: Option<&[u8]>,
    idx: &[usize],
    ks: &[SampleKey],
    shape: &AugmentShape,
) -> Tensor<f32> {
    let phis = trivial_augment_phis();
    let n = idx.len();
    let mut out: Option<Vec<f32>> = None;
    let mut d_out = 0;
    for (op, phi) in phis.iter().enumerate() {
        let members: Vec<usize> = (0..n).filter(|&b| trivial_choice(&ks[b]) == op).collect();
        if members.is_empty() {
            continue;
        }
        let rows: Vec<usize> = members.iter().map(|&b| idx[b]).collect();
        let keys: Vec<SampleKey> = members.iter().map(|&b| ks[b]).collect();
        let x = match bytes {
            Some(b) if !never_applies(phi) => augment_hard_bytes(b, &rows, &keys, phi, shape),
            _ => augment_hard(&train.gather(&rows).0, &keys, phi, shape),
        };
        d_out = x.len() / members.len();
        let buf = out.get_or_insert_with(|| vec![0.0; n * d_out]);
        for (r, &b) in members.iter().enumerate() {
            buf[b * d_out..(b + 1) * d_out].copy_from_slice(&x.data()[r * d_out..(r + 1) * d_out]);
        }
    }
    Tensor::new(&[n, d_out], out.unwrap_or_default())
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
    let mut phi = match (meta, fixed) {
        (Some(m), _) => m.phi_init,
        (None, Fixed::Policy(phi)) => phi,
        (None, Fixed::Trivial) => {
            let off = f64::NEG_INFINITY;
            [off, 0.0, off, 0.0, off, off, 0.0]
        }
    };
    let mut adam = Adam::new(meta.map_or(0.0, |m| m.meta_lr));
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
        let (idx, epoch) = batches.next(cfg.batch);
        let (images, labels) = train.gather(&idx);
        let ks = keys(cfg.seed, epoch, &idx);
        if let Some(m) =
            meta.filter(|m| m.every > 0 && step >= start && (step - start).is_multiple_of(m.every))
        {
            let inner = Inner {
                alpha: lr,
                tau: m.tau,
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
            match m.method {
                Method::Maml => {
                    let (_, g) =
                        maml::hypergradient(&model.params, &phi, &inner_batches, &vb, &inner);
                    adam.step(&mut phi, &g);
                }
                Method::Reptile => {
                    reptile::reptile_step(
                        &mut model.params,
                        &mut phi,
                        &mut adam,
                        &inner_batches,
                        &vb,
                        &inner,
                        m.beta,
                        m.radius,
                    );
                }
            }
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
            (Some(b), _) if !never_applies(&phi) => augment_hard_bytes(b, &idx, &ks, &phi, &shape),
            _ => augment_hard(&images, &ks, &phi, &shape),
        };
        model.sgd_step(&x, &labels, lr as f32);
    }
    Trained {
        model,
        phi,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The cosine schedule starts at `lr`, is half-way at the middle, ends
    /// near 0 and never rises; the constant one is `lr` throughout.
    #[test]
    fn cosine_step_size_falls_from_lr_to_zero() {
        let cfg = TrainConfig {
            steps: 100,
            lr: 0.2,
            lr_schedule: LrSchedule::Cosine,
            ..TrainConfig::default()
        };
        assert_eq!(cfg.lr_at(0), 0.2);
        assert!((cfg.lr_at(50) - 0.1).abs() < 1e-12);
        assert!(cfg.lr_at(99) > 0.0 && cfg.lr_at(99) < 0.2 * 1e-3);
        assert!((1..100).all(|t| cfg.lr_at(t) < cfg.lr_at(t - 1)));
        let flat = TrainConfig {
            lr_schedule: LrSchedule::Constant,
            ..cfg
        };
        assert!((0..100).all(|t| flat.lr_at(t) == 0.2));
    }

    /// Every sample of a TrivialAugment-style batch is its one-op policy's
    /// hard augmentation, and every op is chosen.
    #[test]
    fn trivial_augment_gives_each_sample_one_op() {
        let mut rng = SplitMix::new(5);
        let n = 200;
        let set = ImageSet {
            images: Tensor::new(
                &[n, 1, 8, 8],
                (0..n * 64).map(|_| rng.below(256) as f32 / 255.0).collect(),
            ),
            labels: vec![0; n],
            classes: 1,
        };
        let shape = AugmentShape {
            channels: 1,
            src: crate::ops::Size::new(8, 8),
            out: crate::ops::Size::new(8, 8),
        };
        let idx: Vec<usize> = (0..n).collect();
        let ks = keys(9, 3, &idx);
        let bytes = image_bytes(&set.images).unwrap();
        let out = trivial_augment_batch(&set, Some(&bytes), &idx, &ks, &shape);
        let phis = trivial_augment_phis();
        let mut counts = [0usize; 5];
        for b in 0..n {
            let op = trivial_choice(&ks[b]);
            counts[op] += 1;
            let want = augment_hard_bytes(&bytes, &[b], &ks[b..=b], &phis[op], &shape);
            assert_eq!(
                &out.data()[b * 64..(b + 1) * 64],
                want.data(),
                "sample {b}, op {op}"
            );
        }
        // 200 uniform draws over 5: each near 40
        assert!(counts.iter().all(|&c| (20..=60).contains(&c)), "{counts:?}");
        // the identity choice leaves the image as it is (normalised as the
        // loader does: not the raw pixels, but the same for every op-free row)
        let none = augment_hard_bytes(&bytes, &[0], &ks[..1], &phis[0], &shape);
        let plain = augment_hard(&set.gather(&[0]).0, &ks[..1], &phis[0], &shape);
        assert_eq!(none.data(), plain.data());
    }
}

//! Online training: the task MLP trains on (hard-)augmented batches while
//! φ adapts beside it.
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
use super::mlp::{Activation, Mlp};
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
        }
    }
}

/// Settings of one training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// SGD steps.
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// SGD step size (also the inner step size α of the meta step).
    pub lr: f64,
    /// Hidden width of the MLP.
    pub hidden: usize,
    /// Seed of the initialisation, the batch order and the Philox draws.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 400,
            batch: 128,
            lr: 0.1,
            hidden: 256,
            seed: 0,
        }
    }
}

/// What a run returns.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The trained model.
    pub model: Mlp<f32>,
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
    run(train, val, cfg, phi, meta, None, progress)
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
        first,
        None,
        Some((at, then)),
        &mut |_, _| {},
    )
}

fn run(
    train: &ImageSet,
    val: &ImageSet,
    cfg: &TrainConfig,
    phi: [f64; NUM_PHI],
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
    let mut model = Mlp::<f32>::new(
        &[train.dim(), cfg.hidden, train.classes],
        Activation::Relu,
        cfg.seed,
    );
    let mut phi = meta.map_or(phi, |m| m.phi_init);
    let mut adam = Adam::new(meta.map_or(0.0, |m| m.meta_lr));
    let mut history = Vec::new();
    let mut batches = Batches::new(train.len(), cfg.seed);
    let mut rng = SplitMix::new(cfg.seed ^ 0xA11CE);
    let val_flat = val.flat();
    let lr = cfg.lr as f32;
    // the loader's sources for hard mode, converted once
    let bytes = image_bytes(&train.images);
    // the first meta step (φ stays at its start until then)
    let start = meta.map_or(0, |m| meta_start_step(m, cfg.steps));
    for step in 0..cfg.steps {
        if let Some((_, then)) = switch.filter(|s| s.0 == step) {
            phi = then;
        }
        let (idx, epoch) = batches.next(cfg.batch);
        let (images, labels) = train.gather(&idx);
        let ks = keys(cfg.seed, epoch, &idx);
        if let Some(m) =
            meta.filter(|m| m.every > 0 && step >= start && (step - start).is_multiple_of(m.every))
        {
            let inner = Inner {
                alpha: cfg.lr,
                tau: m.tau,
                shape,
                activation: Activation::Relu,
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
                        &mut model,
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
        let x = match &bytes {
            Some(b) if !never_applies(&phi) => augment_hard_bytes(b, &idx, &ks, &phi, &shape),
            _ => augment_hard(&images, &ks, &phi, &shape),
        };
        model.sgd_step(&x, &labels, lr);
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

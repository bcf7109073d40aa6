//! The settings of a training run ([`TrainConfig`]) and of the policy
//! learning beside it ([`MetaConfig`]).

use crate::meta::bilevel::Adam;
use crate::meta::mlp::Activation;
use crate::meta::model::cnn::CnnShape;
use crate::meta::model::Arch;
use crate::meta::relaxed::{Family, NUM_PHI};
use crate::policy::MAGNITUDES;

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
    /// Adam step size on φ's magnitudes (the smallest crop area, the largest
    /// angle and the largest noise σ); `None`: `meta_lr`, like the logits.
    pub magnitude_lr: Option<f64>,
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
    /// The family the learned φ is read in ([`Family::OneOp`]: one op per
    /// sample, TrivialAugment's structure, with learned op weights and
    /// magnitudes).
    pub family: Family,
    /// Fraction of the training steps taken before the first meta step
    /// (φ is held at `phi_init` until then, hard mode); 0 starts at once.
    pub meta_start: f64,
    /// Neumann terms for the inverse Hessian at the current weights
    /// ([`Inner::neumann`](crate::meta::bilevel::Inner::neumann)); 1: the
    /// plain `k`-step hypergradient.
    pub neumann: usize,
    /// Knots of the learned φ(t) over the run
    /// ([`PhiSchedule`](crate::meta::schedule::PhiSchedule)): 1 learns one φ
    /// for every step; `K` > 1 learns φ at `K` evenly spaced points of
    /// training progress, linear between them, each meta step moving the two
    /// knots around its step.
    pub knots: usize,
}

impl MetaConfig {
    /// The optimiser of φ: `meta_lr` on the op logits, `magnitude_lr` (or
    /// `meta_lr`) on the magnitudes.
    pub fn adam(&self) -> Adam {
        let mut lr = [self.meta_lr; NUM_PHI];
        if let Some(m) = self.magnitude_lr {
            for k in MAGNITUDES {
                lr[k] = m;
            }
        }
        Adam::per_entry(lr)
    }
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            method: Method::Maml,
            every: 4,
            inner_steps: 1,
            meta_lr: 0.05,
            magnitude_lr: None,
            tau: 0.5,
            val_batch: 256,
            beta: 1.0,
            radius: 1e-2,
            phi_init: [0.0; NUM_PHI],
            family: Family::Independent,
            meta_start: 0.0,
            neumann: 1,
            knots: 1,
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

    /// `magnitude_lr` sets the step size of the three magnitudes only:
    /// Adam's first step moves each entry by its own step size (the sign
    /// against the gradient's), and without it every entry takes `meta_lr`.
    #[test]
    fn magnitude_step_size_moves_the_magnitudes_only() {
        let g = [0.3, -2.0, 0.1, -0.5, 4.0, -7.0, 0.02];
        for magnitude_lr in [None, Some(0.04)] {
            let cfg = MetaConfig {
                meta_lr: 0.005,
                magnitude_lr,
                ..MetaConfig::default()
            };
            let d = cfg.adam().delta(&g);
            for k in 0..NUM_PHI {
                let want = match magnitude_lr {
                    Some(m) if MAGNITUDES.contains(&k) => m,
                    _ => 0.005,
                };
                let moved = d[k].abs();
                assert!(d[k] * g[k] < 0.0, "entry {k} moves downhill");
                assert!(
                    (moved - want).abs() < 1e-6 * want,
                    "entry {k}: {moved} vs {want}"
                );
            }
        }
        assert_eq!(
            MAGNITUDES.map(|k| crate::policy::PHI_NAMES[k]),
            [
                "crop_raw_min_area",
                "rotate_raw_max_angle",
                "noise_raw_max_sigma"
            ]
        );
    }
}

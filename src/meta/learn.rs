//! `learn_policy`: learn φ online on a labelled image set (the library side
//! of `metaug learn-policy`), and save it in the policy file format.

use super::relaxed::NUM_PHI;
use super::rng::SplitMix;
use super::tensor::Tensor;
use super::train::{train, ImageSet, MetaConfig, TrainConfig};
use crate::{Error, Result};

/// Settings of [`learn_policy`].
#[derive(Clone, Debug)]
pub struct LearnConfig {
    /// The task model's training (steps, batch, lr, width, seed).
    pub train: TrainConfig,
    /// The meta-learning method and its settings (φ starts at `phi_init`).
    pub meta: MetaConfig,
    /// Fraction of the images held out as the validation set of `L_val`.
    pub val_fraction: f64,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            train: TrainConfig::default(),
            meta: MetaConfig {
                phi_init: super::presets::phi_init(),
                ..MetaConfig::default()
            },
            val_fraction: 0.2,
        }
    }
}

/// A learned policy.
#[derive(Clone, Debug, PartialEq)]
pub struct LearnedPolicy {
    /// φ, CONTRACT.md order.
    pub phi: [f32; NUM_PHI],
    /// The temperature it was learned at.
    pub tau: f32,
    /// The family φ is read in.
    pub family: crate::policy::Family,
    /// φ after every meta step.
    pub history: Vec<[f32; NUM_PHI]>,
}

/// Most classes accepted.
const MAX_CLASSES: usize = 100_000;

/// Learns an augmentation policy on `images` (`[N, C, H, W]` in `[0, 1]`)
/// with `labels`: a random `val_fraction` of them is held out for `L_val`,
/// the rest trains an MLP while φ adapts online (see [`super::train`]).
/// `progress(step, φ)` is called after every meta step.
pub fn learn_policy(
    images: &Tensor<f32>,
    labels: &[usize],
    config: &LearnConfig,
    progress: &mut dyn FnMut(usize, &[f32; NUM_PHI]),
) -> Result<LearnedPolicy> {
    let s = images.shape();
    if s.len() != 4 || s[0] != labels.len() {
        return Err(Error::invalid(
            "images",
            format!(
                "expected [N, C, H, W] with N = {} labels, got {s:?}",
                labels.len()
            ),
        ));
    }
    let n = labels.len();
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    if !(2..=MAX_CLASSES).contains(&classes) {
        return Err(Error::invalid(
            "labels",
            format!("need between 2 and {MAX_CLASSES} classes, got {classes}"),
        ));
    }
    if !(config.val_fraction > 0.0 && config.val_fraction < 1.0) {
        return Err(Error::invalid("val_fraction", "must be in (0, 1)"));
    }
    let n_val = ((n as f64 * config.val_fraction).round() as usize).clamp(1, n.saturating_sub(1));
    if n < 2 || config.train.batch == 0 || config.meta.tau <= 0.0 || config.meta.every == 0 {
        return Err(Error::invalid(
            "config",
            "need ≥ 2 images, batch > 0, tau > 0 and every > 0",
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix::new(config.train.seed ^ 0x7A1).shuffle(&mut order);
    let set = ImageSet {
        images: images.clone(),
        labels: labels.to_vec(),
        classes,
    };
    let pick = |idx: &[usize]| {
        let (images, labels) = set.gather(idx);
        ImageSet {
            images,
            labels,
            classes,
        }
    };
    let (val, tr) = (pick(&order[..n_val]), pick(&order[n_val..]));
    let out = train(
        &tr,
        &val,
        &config.train,
        config.meta.phi_init,
        Some(&config.meta),
        &mut |step, phi| progress(step, &phi.map(|v| v as f32)),
    );
    Ok(LearnedPolicy {
        phi: out.phi.map(|v| v as f32),
        tau: config.meta.tau as f32,
        family: config.meta.family,
        history: out.history.iter().map(|p| p.map(|v| v as f32)).collect(),
    })
}

impl LearnedPolicy {
    /// The learned policy, ready for the loader (hard mode) or to save.
    pub fn policy(&self) -> crate::policy::Policy {
        crate::policy::Policy {
            phi: self.phi,
            tau: self.tau,
            family: self.family,
        }
    }
}

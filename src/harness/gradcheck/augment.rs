//! The augmentation node and the relaxed sampler: a small random
//! [`AugmentProblem`], the node's VJPs, the sampler's Jacobian and the
//! whole φ → augmented image chain.

use std::rc::Rc;

use crate::meta::augment::{AugmentShape, SampleKey, NUM_PARAMS};
use crate::meta::relaxed::{Family, NUM_DRAWS, NUM_PHI};
use crate::meta::rng::SplitMix;
use crate::meta::tape::{Tape, Var};
use crate::meta::tensor::Tensor;
use crate::ops::geometry::Size;

use super::finite_diff::project;
use super::{grad_error, random, Check};

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
    for family in [Family::Independent, Family::OneOp] {
        for tau in [0.5, 1.0] {
            let draws = p.draws.clone();
            let relaxed = move |t: &mut Tape<f64>, v: &[Var]| {
                let y = t.relaxed_params(family, v[0], tau, draws.clone());
                project(t, y, 23)
            };
            out.push(Check::rel(
                format!("relaxed φ → parameters ({}, τ = {tau})", family.name()),
                grad_error(&relaxed, std::slice::from_ref(&p.phi)),
            ));
        }
    }
    for family in [Family::Independent, Family::OneOp] {
        let (keys, images, draws) = (p.keys.clone(), p.images.clone(), p.draws.clone());
        let chain = move |t: &mut Tape<f64>, v: &[Var]| {
            let img = t.constant(images.clone());
            let par = t.relaxed_params(family, v[0], 0.5, draws.clone());
            let y = t.augment(img, par, keys.clone(), shape);
            project(t, y, 24)
        };
        out.push(Check::rel(
            format!("chain φ → augmented image ({})", family.name()),
            grad_error(&chain, std::slice::from_ref(&p.phi)),
        ));
    }
    out
}

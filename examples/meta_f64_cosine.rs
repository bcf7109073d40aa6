//! Cosine between the f64 Reptile estimate and the f64 exact hypergradient
//! on the bench problem (784-256-10, batch 128), for several radii.
use std::rc::Rc;

use metaug::meta::augment::{AugmentShape, SampleKey};
use metaug::meta::bilevel::{Inner, TrainBatch, ValBatch};
use metaug::meta::gradcheck::cosine;
use metaug::meta::mlp::{Activation, Mlp};
use metaug::meta::relaxed::draws;
use metaug::meta::reptile::{first_order_hypergradient, Estimator};
use metaug::meta::rng::SplitMix;
use metaug::meta::{maml, Tensor};
use metaug::ops::Size;

fn main() {
    let mut rng = SplitMix::new(1);
    let b = 128;
    let model = Mlp::<f64>::new(&[784, 256, 10], Activation::Relu, 0);
    let images = Tensor::new(
        &[b, 1, 28, 28],
        (0..b * 784).map(|_| rng.uniform()).collect(),
    );
    let keys: Vec<SampleKey> = (0..b as u64)
        .map(|i| SampleKey {
            seed: 1,
            epoch: 1,
            sample: i,
        })
        .collect();
    let d: Vec<_> = keys
        .iter()
        .map(|k| draws(k.seed, k.epoch, k.sample))
        .collect();
    let labels: Vec<usize> = (0..b).map(|_| rng.below(10)).collect();
    let val = ValBatch {
        x: Tensor::new(&[b, 784], (0..b * 784).map(|_| rng.uniform()).collect()),
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
        activation: Activation::Relu,
    };
    let batch = TrainBatch {
        images,
        labels,
        keys: Rc::from(keys),
        draws: Rc::from(d),
    };
    let phi = metaug::meta::experiment::phi_init();
    let bs = vec![batch.clone(), batch.clone()];
    for k in [1usize, 2] {
        let exact = maml::hypergradient(&model.params, &phi, &bs[..k], &val, &inner).1;
        for r in [1e-6, 1e-4, 1e-2] {
            let est = first_order_hypergradient(
                &model.params,
                &phi,
                &bs[..k],
                &val,
                &inner,
                Estimator::Adjoint,
                r,
            )
            .grad;
            println!("k={k} radius={r:e}: cosine {:.5}", cosine(&exact, &est));
        }
    }
}

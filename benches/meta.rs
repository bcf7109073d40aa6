//! One meta step (k = 1, MLP 784-256-10, batch 128) against a plain
//! training step on the same batch, for MAML and Reptile.
//!
//! Run briefly: `cargo bench --bench meta -- --warm-up-time 1 --measurement-time 3`.

use std::rc::Rc;

use criterion::{criterion_group, criterion_main, Criterion};
use metaug::meta::augment::{AugmentShape, SampleKey};
use metaug::meta::bilevel::{Adam, Inner, TrainBatch, ValBatch};
use metaug::meta::experiment::phi_init;
use metaug::meta::mlp::{Activation, Mlp};
use metaug::meta::relaxed::draws;
use metaug::meta::rng::SplitMix;
use metaug::meta::{maml, reptile, Tensor};
use metaug::ops::Size;

fn problem() -> (Mlp<f32>, TrainBatch<f32>, ValBatch<f32>, Inner) {
    let mut rng = SplitMix::new(1);
    let b = 128;
    let model = Mlp::<f32>::new(&[784, 256, 10], Activation::Relu, 0);
    let images = Tensor::new(
        &[b, 1, 28, 28],
        (0..b * 784).map(|_| rng.uniform() as f32).collect(),
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
        x: Tensor::new(
            &[b, 784],
            (0..b * 784).map(|_| rng.uniform() as f32).collect(),
        ),
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
    (
        model,
        TrainBatch {
            images,
            labels,
            keys: Rc::from(keys),
            draws: Rc::from(d),
        },
        val,
        inner,
    )
}

fn bench(c: &mut Criterion) {
    let (model, batch, val, inner) = problem();
    let flat = batch.images.clone().reshape(&[128, 784]);
    let mut g = c.benchmark_group("meta_k1_mlp784-256-10_b128");
    g.bench_function("plain_step", |bch| {
        let mut m = model.clone();
        bch.iter(|| m.sgd_step(&flat, &batch.labels, 0.1))
    });
    g.bench_function("plain_step_with_hard_augmentation_default_policy", |bch| {
        let mut m = model.clone();
        let phi = metaug::meta::experiment::phi_default();
        bch.iter(|| {
            let x =
                metaug::meta::train::augment_hard(&batch.images, &batch.keys, &phi, &inner.shape);
            m.sgd_step(&x, &batch.labels, 0.1)
        })
    });
    g.bench_function("maml_meta_step", |bch| {
        let mut phi = phi_init();
        let mut adam = Adam::new(0.05);
        bch.iter(|| {
            let (_, gr) = maml::hypergradient(
                &model.params,
                &phi,
                std::slice::from_ref(&batch),
                &val,
                &inner,
            );
            adam.step(&mut phi, &gr);
        })
    });
    g.bench_function("reptile_meta_step", |bch| {
        let mut m = model.clone();
        let mut phi = phi_init();
        let mut adam = Adam::new(0.05);
        bch.iter(|| {
            reptile::reptile_step(
                &mut m,
                &mut phi,
                &mut adam,
                std::slice::from_ref(&batch),
                &val,
                &inner,
                1.0,
                1e-2,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! One meta step (k = 1, MLP 784-256-10, batch 128) against a plain
//! training step on the same batch, for MAML and Reptile.
//!
//! Run briefly: `cargo bench --bench meta -- --warm-up-time 1 --measurement-time 3`.

use std::rc::Rc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use metaug::meta::augment::{AugmentShape, SampleKey};
use metaug::meta::bilevel::{Adam, Inner, TrainBatch, ValBatch};
use metaug::meta::experiment::phi_init;
use metaug::meta::mlp::{Activation, Mlp};
use metaug::meta::relaxed::draws;
use metaug::meta::rng::SplitMix;
use metaug::meta::train::{augment_hard_bytes, image_bytes};
use metaug::meta::{maml, reptile, Tensor};
use metaug::ops::Size;

fn problem() -> (Mlp<f32>, TrainBatch<f32>, ValBatch<f32>, Inner) {
    let mut rng = SplitMix::new(1);
    let b = 128;
    let model = Mlp::<f32>::new(&[784, 256, 10], Activation::Relu, 0);
    // images of bytes / 255, as loaded data
    let images = Tensor::new(
        &[b, 1, 28, 28],
        (0..b * 784)
            .map(|_| rng.below(256) as f32 / 255.0)
            .collect(),
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
    // Every step starts from the same weights (a clone, not timed): steps
    // chained on one batch would drive the weights anywhere, denormals
    // included, and time that instead.
    g.bench_function("plain_step", |bch| {
        bch.iter_batched(
            || model.clone(),
            |mut m| m.sgd_step(&flat, &batch.labels, 0.1),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("plain_step_with_hard_augmentation_default_policy", |bch| {
        // what the training loop does on a step without a meta step: the
        // loader's augmentation of the batch (sources converted to bytes
        // once per run, as `train` does), then the SGD step
        let phi = metaug::meta::experiment::phi_default();
        let bytes = image_bytes(&batch.images).expect("images of bytes / 255");
        let rows: Vec<usize> = (0..batch.labels.len()).collect();
        bch.iter_batched(
            || model.clone(),
            |mut m| {
                let x = augment_hard_bytes(&bytes, &rows, &batch.keys, &phi, &inner.shape);
                m.sgd_step(&x, &batch.labels, 0.1)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("maml_meta_step", |bch| {
        bch.iter_batched(
            || (phi_init(), Adam::new(0.05)),
            |(mut phi, mut adam)| {
                let (_, gr) = maml::hypergradient(
                    &model.params,
                    &phi,
                    std::slice::from_ref(&batch),
                    &val,
                    &inner,
                );
                adam.step(&mut phi, &gr);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("reptile_meta_step", |bch| {
        bch.iter_batched(
            || (model.clone(), phi_init(), Adam::new(0.05)),
            |(mut m, mut phi, mut adam)| {
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
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

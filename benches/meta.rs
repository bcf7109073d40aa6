//! One meta step (k = 1, batch 128) against a plain training step on the
//! same batch, for MAML and Reptile, with each task model: the MLP
//! 784-256-10 and the CNN (conv 16, conv 32, linear; 20,490 weights).
//!
//! Criterion times each step alone (`meta_k1_{mlp784-256-10,cnn16-32}_b128/*`),
//! one after the other. Then the acceptance summaries (issue 5 for the
//! MLP, issue 18 for the CNN) time them interleaved: every iteration takes one plain step, one MAML step and one
//! Reptile step, so that the host's changing speed hits all three alike;
//! a warm-up round, then 7 rounds of 40 iterations, the ratios of each
//! round's summed times, and their medians (goals: MAML ≤ 5×, Reptile ≤ 4× the plain step).
//!
//! glibc's malloc is told to keep freed memory first, as the `metaug`
//! command does (`meta::allocator`).
//!
//! Run briefly: `cargo bench --bench meta -- --warm-up-time 1 --measurement-time 3`;
//! the summary alone: `cargo bench --bench meta -- nomatch`.

use std::rc::Rc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use metaug::harness::experiment::phi_init;
use metaug::meta::augment::{AugmentShape, SampleKey};
use metaug::meta::bilevel::{Adam, Inner, TrainBatch, ValBatch};
use metaug::meta::mlp::Activation;
use metaug::meta::model::cnn::CnnShape;
use metaug::meta::model::{Arch, Model};
use metaug::meta::relaxed::draws;
use metaug::meta::rng::SplitMix;
use metaug::meta::train::{augment_hard_bytes, image_bytes};
use metaug::meta::{maml, reptile, Tensor};
use metaug::ops::Size;

/// The two task models, with the name of their benchmark group.
fn models() -> [(&'static str, Model<f32>); 2] {
    [
        (
            "mlp784-256-10",
            Model::mlp(&[784, 256, 10], Activation::Relu, 0),
        ),
        ("cnn16-32", Model::cnn(CnnShape::fashion_mnist(), 0)),
    ]
}

fn problem(arch: Arch) -> (TrainBatch<f32>, ValBatch<f32>, Inner) {
    let mut rng = SplitMix::new(1);
    let b = 128;
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
        family: metaug::meta::relaxed::Family::Independent,
        shape: AugmentShape {
            channels: 1,
            src: Size::new(28, 28),
            out: Size::new(28, 28),
        },
        model: arch,
        neumann: 1,
    };
    (
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

/// One MAML meta step (exact hypergradient, Adam on φ).
fn maml_step(model: &Model<f32>, batch: &TrainBatch<f32>, val: &ValBatch<f32>, inner: &Inner) {
    let (mut phi, mut adam) = (phi_init(), Adam::new(0.05));
    let (_, gr) = maml::hypergradient(&model.params, &phi, std::slice::from_ref(batch), val, inner);
    adam.step(&mut phi, &gr);
    black_box(phi);
}

/// One Reptile meta step (first order; it also trains the weights).
fn reptile_meta_step(
    m: &mut Model<f32>,
    batch: &TrainBatch<f32>,
    val: &ValBatch<f32>,
    inner: &Inner,
) {
    let (mut phi, mut adam) = (phi_init(), Adam::new(0.05));
    reptile::reptile_step(
        &mut m.params,
        &mut phi,
        &mut adam,
        std::slice::from_ref(batch),
        val,
        inner,
        1.0,
        1e-2,
    );
    black_box(phi);
}

fn bench(c: &mut Criterion, name: &str, model: &Model<f32>) {
    let (batch, val, inner) = problem(model.arch);
    let flat = batch.images.clone().reshape(&[128, 784]);
    let mut g = c.benchmark_group(format!("meta_k1_{name}_b128"));
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
        let phi = metaug::harness::experiment::phi_default();
        let bytes = image_bytes(&batch.images).expect("images of bytes / 255");
        let rows: Vec<usize> = (0..batch.labels.len()).collect();
        bch.iter_batched(
            || model.clone(),
            |mut m| {
                let x = augment_hard_bytes(
                    &bytes,
                    &rows,
                    &batch.keys,
                    &phi,
                    inner.family,
                    &inner.shape,
                );
                m.sgd_step(&x, &batch.labels, 0.1)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("maml_meta_step", |bch| {
        bch.iter(|| maml_step(model, &batch, &val, &inner))
    });
    g.bench_function("reptile_meta_step", |bch| {
        bch.iter_batched(
            || model.clone(),
            |mut m| reptile_meta_step(&mut m, &batch, &val, &inner),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The step-cost figures of issue 5 (MLP) and 18 (CNN), the three steps
/// interleaved (see the module doc). The weights are cloned outside the
/// timed regions.
fn acceptance(name: &str, model: &Model<f32>, iterations: usize) {
    const ROUNDS: usize = 7;
    let (batch, val, inner) = problem(model.arch);
    let flat = batch.images.clone().reshape(&[128, 784]);
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    let (mut maml_ratios, mut reptile_ratios) = (Vec::new(), Vec::new());
    let mut plain_ms = Vec::new();
    for round in 0..=ROUNDS {
        let (mut plain, mut maml, mut reptile) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for _ in 0..iterations {
            let mut m = model.clone();
            plain += timed(&mut || {
                black_box(m.sgd_step(&flat, &batch.labels, 0.1));
            });
            maml += timed(&mut || maml_step(model, &batch, &val, &inner));
            let mut m = model.clone();
            reptile += timed(&mut || reptile_meta_step(&mut m, &batch, &val, &inner));
        }
        if round == 0 {
            continue; // warm-up: the allocator's and caches' first pass
        }
        plain_ms.push(plain.as_secs_f64() * 1e3 / iterations as f64);
        maml_ratios.push(maml.as_secs_f64() / plain.as_secs_f64());
        reptile_ratios.push(reptile.as_secs_f64() / plain.as_secs_f64());
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "\nacceptance, k = 1, {name}, batch 128, steps interleaved, {ROUNDS} rounds of {iterations}; load average {}:",
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    println!(
        "  plain step: {:.3} ms (rounds {})",
        median(&plain_ms),
        list(&plain_ms)
    );
    for (name, ratios, goal) in [
        ("MAML meta step", &maml_ratios, 5.0),
        ("Reptile meta step", &reptile_ratios, 4.0),
    ] {
        let r = median(ratios);
        println!(
            "  {name} / plain step = {r:.2} (rounds {}) — goal <= {goal}: {}",
            list(ratios),
            if r <= goal { "met" } else { "MISSED" }
        );
    }
}

fn main() {
    // As the `metaug` command does (see `meta::allocator`); it applies to
    // the plain step as much as to the meta steps.
    metaug::meta::allocator::keep_freed_memory();
    let mut c = Criterion::default().configure_from_args();
    for (name, model) in models() {
        bench(&mut c, name, &model);
    }
    c.final_summary();
    for ((name, model), iterations) in models().iter().zip([40, 10]) {
        acceptance(name, model, iterations);
    }
}

//! Times the pieces of a meta step (development aid).
use std::rc::Rc;
use std::time::Instant;

use metaug::meta::augment::{augment_forward, augment_vjp, noise, AugmentShape, SampleKey};
use metaug::meta::relaxed::{draws, relaxed_params};
use metaug::meta::Tensor;
use metaug::ops::Size;

fn min_time(n: usize, mut f: impl FnMut()) -> std::time::Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let b = 128;
    let images = Tensor::new(
        &[b, 1, 28, 28],
        (0..b * 784)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0)
            .collect(),
    );
    let keys: Vec<SampleKey> = (0..b as u64)
        .map(|i| SampleKey {
            seed: 1,
            epoch: 1,
            sample: i,
        })
        .collect();
    let phi = metaug::meta::experiment::phi_init();
    let mut params = Vec::new();
    for k in &keys {
        params.extend(
            relaxed_params(&phi, 0.5, &draws(k.seed, k.epoch, k.sample))
                .0
                .map(|v| v as f32),
        );
    }
    let params = Tensor::new(&[b, 7], params);
    let shape = AugmentShape {
        channels: 1,
        src: Size::new(28, 28),
        out: Size::new(28, 28),
    };
    let keys: Rc<[SampleKey]> = keys.into();
    let n = 30;
    println!(
        "noise: {:?}",
        min_time(n, || {
            for k in keys.iter() {
                std::hint::black_box(noise::<f32>(k, 784));
            }
        })
    );
    let gy = augment_forward(&images, &params, &keys, &shape);
    println!(
        "forward: {:?}",
        min_time(n, || {
            std::hint::black_box(augment_forward(&images, &params, &keys, &shape));
        })
    );
    println!(
        "vjp params (noise recomputed): {:?}",
        min_time(n, || {
            std::hint::black_box(augment_vjp(
                &images, &params, &keys, &shape, &gy, false, true,
            ));
        })
    );
}

#[allow(dead_code)]
fn unused() {}

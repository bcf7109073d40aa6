//! Precompute: augmented shards written offline (`metaug precompute`), one
//! copy of a dataset per iteration into a fresh directory, on 2 threads.
//!
//! - `precompute/fmnist_raw_28x28_u8_default`: Fashion-MNIST train (60,000)
//!   to 28×28 u8, default policy;
//! - `precompute/photos_jpeg_224x224x3_u8_default`: the 300 JPEG photos to
//!   224×224×3 u8 (decode + augment + write + fsync).
//!
//! Images/s; bytes written per image are printed so that MB/s follow.
//! `cargo bench --bench precompute` (about 40 s).

mod common;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use criterion::{SamplingMode, Throughput};
use metaug::ops::{DType, Layout, OutputSpec, Size};
use metaug::policy::Policy;
use metaug::precompute::{precompute, Part, PrecomputeConfig};
use metaug::shard::{Dataset, Encoding};

fn main() {
    let mut c = common::short(3);
    let sets = [
        (
            "fmnist_raw_28x28_u8_default",
            common::fashion_mnist(Encoding::Raw),
            28u32,
            1u32,
        ),
        (
            "photos_jpeg_224x224x3_u8_default",
            common::photos_jpeg(),
            224,
            3,
        ),
    ];
    let mut g = c.benchmark_group("precompute");
    g.sampling_mode(SamplingMode::Flat);
    for (name, dir, side, channels) in sets {
        let Some(dir) = dir else {
            println!("precompute/{name}: skipped: data missing");
            continue;
        };
        let ds = Dataset::open(&dir).expect("open");
        let cfg = PrecomputeConfig {
            policy: Policy::default_policy(),
            copies: 1,
            spec: OutputSpec {
                size: Size::new(side, side),
                channels,
                dtype: DType::U8,
                layout: Layout::Nchw,
                mean: vec![0.0; channels as usize],
                std: vec![1.0; channels as usize],
            },
            seed: 3,
            shard_items: 4096,
            part: Part::WHOLE,
            threads: 2,
        };
        let stop = AtomicBool::new(false);
        println!(
            "precompute/{name}: {} bytes written per image",
            cfg.spec.sample_bytes()
        );
        g.throughput(Throughput::Elements(ds.len()));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let out = tempfile::tempdir().expect("tempdir");
                    let t = Instant::now();
                    let s = precompute(&ds, out.path(), &cfg, &stop, &|_| {}).expect("precompute");
                    total += t.elapsed();
                    assert!(s.complete);
                }
                total
            })
        });
    }
    g.finish();
    c.final_summary();
}

//! CPU augmentation throughput (the fused warp with the default policy, and
//! each op alone in `cpu_augment_op`) and, for comparison, JPEG decode of
//! real photos (`benches/decode.rs` has decode per encoding).
//!
//! `cargo bench --bench augment -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::io::Read;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use metaug::decode::{decode_into, probe_bytes, DecodeLimits, Encoding, ImageView};
use metaug::ops::philox::{PhiloxStream, STREAM_NOISE};
use metaug::ops::{augment_into, DType, Geometry, OutputSpec, SampleParams, Size};
use metaug::policy::Policy;

const SEED: u64 = 17;
const SAMPLES: usize = 1024;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// The first `n` Fashion-MNIST test images (28×28 grey), or a synthetic
/// pattern when the data folder is missing.
fn fashion_mnist(n: usize) -> Vec<u8> {
    let path = data_dir().join("fashion-mnist/t10k-images-idx3-ubyte.gz");
    let mut raw = Vec::new();
    if let Ok(f) = std::fs::File::open(&path) {
        flate2::read::GzDecoder::new(f)
            .take((16 + n * 784) as u64)
            .read_to_end(&mut raw)
            .expect("read fashion-mnist");
        raw.drain(..16);
        raw
    } else {
        (0..n * 784).map(|k| (k * 37 % 251) as u8).collect()
    }
}

fn jpeg_photos() -> Vec<Vec<u8>> {
    let dir = data_dir().join("photos-jpeg");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == "JPEG"));
    names.sort();
    names
        .into_iter()
        .take(8)
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn decode(bytes: &[u8], buf: &mut Vec<u8>) -> (u32, u32) {
    let l = DecodeLimits::default();
    let [h, w, c] = probe_bytes(bytes, Encoding::Jpeg, &l).unwrap();
    let v = decode_into(bytes, Encoding::Jpeg, [h, w, c], 3, &l, buf).unwrap();
    (v.height, v.width)
}

fn params(policy: &Policy) -> Vec<SampleParams> {
    (0..SAMPLES as u64)
        .map(|s| policy.sample_hard(SEED, 0, s))
        .collect()
}

fn bench_augment(c: &mut Criterion) {
    let policy = Policy::default_policy();
    let ps = params(&policy);

    let mut group = c.benchmark_group("cpu_augment");
    group.throughput(Throughput::Elements(1));

    // Fashion-MNIST: 28x28 grey -> 28x28 f32, default policy.
    let fm = fashion_mnist(256);
    let spec = OutputSpec::new(Size::new(28, 28), 1).with_normalization(vec![0.286], vec![0.353]);
    let mut out = vec![0u8; spec.sample_bytes()];
    group.bench_function("fmnist_28x28_f32_default", |b| {
        let mut k = 0usize;
        b.iter(|| {
            let img = &fm[(k % 256) * 784..(k % 256 + 1) * 784];
            let src = ImageView::new(28, 28, 1, img).unwrap();
            let noise = PhiloxStream::new(SEED, 0, k as u64, STREAM_NOISE);
            augment_into(src, &ps[k % SAMPLES], noise, &spec, &mut out);
            k += 1;
            black_box(&out);
        })
    });

    // A 500x375 photo -> 224x224x3 f32, default policy, and the two extremes.
    let photos = jpeg_photos();
    let mut buf = Vec::new();
    let (h, w) = photos
        .first()
        .map(|p| decode(p, &mut buf))
        .unwrap_or_else(|| {
            buf = (0..375 * 500 * 3).map(|k| (k * 31 % 253) as u8).collect();
            (375, 500)
        });
    let spec = OutputSpec::new(Size::new(224, 224), 3)
        .with_normalization(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]);
    let mut out = vec![0u8; spec.sample_bytes()];
    let src = ImageView::new(h, w, 3, &buf).unwrap();
    let resize_only = vec![SampleParams::IDENTITY];
    let all_noisy: Vec<SampleParams> = ps
        .iter()
        .map(|p| SampleParams { sigma: 0.025, ..*p })
        .collect();
    for (name, ps) in [
        ("photo_to_224x224x3_f32_default", &ps),
        ("photo_to_224x224x3_f32_resize_only", &resize_only),
        ("photo_to_224x224x3_f32_always_noise", &all_noisy),
    ] {
        group.bench_function(BenchmarkId::new(name, format!("{h}x{w}")), |b| {
            let mut k = 0usize;
            b.iter(|| {
                let noise = PhiloxStream::new(SEED, 0, k as u64, STREAM_NOISE);
                augment_into(src, &ps[k % ps.len()], noise, &spec, &mut out);
                k += 1;
                black_box(&out);
            })
        });
    }
    group.bench_function("photo_to_224x224x3_u8_default", |b| {
        let spec = spec.clone().with_dtype(DType::U8);
        let mut out = vec![0u8; spec.sample_bytes()];
        let mut k = 0usize;
        b.iter(|| {
            let noise = PhiloxStream::new(SEED, 0, k as u64, STREAM_NOISE);
            augment_into(src, &ps[k % SAMPLES], noise, &spec, &mut out);
            k += 1;
            black_box(&out);
        })
    });
    group.finish();

    // Each op alone (the others off), same photo -> 224x224x3 f32: what one
    // op adds to the resize-only warp above. Crop and rotate only change the
    // map (same cost per output pixel, different source locality); flip 1.0
    // mirrors the map, a flip gate of 0.5 (relaxed mode) samples twice;
    // noise draws one normal per element.
    let op = |geometry: Geometry, flip: f32, sigma: f32| SampleParams {
        geometry,
        flip,
        sigma,
    };
    let crop = Geometry {
        area: 0.5,
        aspect: 1.2,
        center: [0.2, -0.1],
        ..Geometry::IDENTITY
    };
    let rotate = Geometry {
        angle: 10f32.to_radians(),
        ..Geometry::IDENTITY
    };
    let id = Geometry::IDENTITY;
    let mut per_op = c.benchmark_group("cpu_augment_op");
    per_op.throughput(Throughput::Elements(1));
    for (name, p) in [
        ("crop_only", op(crop, 0.0, 0.0)),
        ("rotate_only", op(rotate, 0.0, 0.0)),
        ("flip_only", op(id, 1.0, 0.0)),
        ("flip_gate_half", op(id, 0.5, 0.0)),
        ("noise_only", op(id, 0.0, 0.025)),
    ] {
        per_op.bench_function(
            BenchmarkId::new(format!("photo_to_224x224x3_f32_{name}"), format!("{h}x{w}")),
            |b| {
                let mut k = 0u64;
                b.iter(|| {
                    let noise = PhiloxStream::new(SEED, 0, k, STREAM_NOISE);
                    augment_into(src, &p, noise, &spec, &mut out);
                    k += 1;
                    black_box(&out);
                })
            },
        );
    }
    per_op.finish();

    let mut group = c.benchmark_group("cpu_augment_bytes");
    group.throughput(Throughput::Bytes(spec.sample_bytes() as u64));
    group.bench_function("photo_to_224x224x3_f32_default", |b| {
        let mut k = 0usize;
        b.iter(|| {
            let noise = PhiloxStream::new(SEED, 0, k as u64, STREAM_NOISE);
            augment_into(src, &ps[k % SAMPLES], noise, &spec, &mut out);
            k += 1;
            black_box(&out);
        })
    });
    group.finish();

    c.bench_function("policy_sample_hard", |b| {
        let mut k = 0u64;
        b.iter(|| {
            k += 1;
            black_box(policy.sample_hard(SEED, 0, k))
        })
    });
}

fn bench_decode(c: &mut Criterion) {
    let photos = jpeg_photos();
    if photos.is_empty() {
        eprintln!(
            "no photos in {}: skipping JPEG decode",
            data_dir().display()
        );
        return;
    }
    let mut group = c.benchmark_group("cpu_decode");
    group.throughput(Throughput::Elements(photos.len() as u64));
    let mut buf = Vec::new();
    group.bench_function(format!("jpeg_rgb_{}_photos", photos.len()), |b| {
        b.iter(|| {
            for p in &photos {
                black_box(decode(p, &mut buf));
            }
        })
    });
    group.finish();
    let total: usize = photos.iter().map(|p| p.len()).sum();
    let mut group = c.benchmark_group("cpu_decode_bytes");
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function(format!("jpeg_rgb_{}_photos", photos.len()), |b| {
        b.iter(|| {
            for p in &photos {
                black_box(decode(p, &mut buf));
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short by default so that a whole `cargo bench` stays within minutes on
    // 2 cores; command-line flags override.
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(20);
    targets = bench_augment, bench_decode
}
criterion_main!(benches);

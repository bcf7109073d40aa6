//! GPU benchmarks: the fused augmentation kernel on 256 × 3 × 224 × 224
//! (u8 224×224 sources in, f32 NCHW out, default-policy-like parameters)
//! against a device-to-device copy moving the same bytes, measured in the same
//! run. Prints `skipped: no CUDA device (...)` and exits 0 without a GPU.
//!
//! Bytes counted for both: source bytes read once + output bytes written once.
//! The kernel is timed alone (`GpuAugmenter::relaunch_last`, inputs already on
//! the device), rotating among 3 uploaded batches so that the 38 MB of
//! sources are not simply served from L2. Criterion times with `iter_custom`
//! and a stream synchronise before reading the clock; the closing summary
//! times with CUDA events (median of 30) and prints the kernel / copy
//! bandwidth ratio (target ≥ 0.60).
//!
//! Run on a GPU machine: `cargo bench --bench gpu`, or the bundled binary
//! `.gpu/bin/bench-gpu --bench` (see kernels/README.md).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use cudarc::driver::sys::CUevent_flags;
use metaug::cuda::{DType, Device, DeviceBatch, GpuAugmenter, ImageView, Layout, OutputSpec};
use metaug::ops::{Geometry, SampleParams, Size};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const B: usize = 256;
const SIDE: u32 = 224;
const SETS: usize = 3;

fn default_policy_params(rng: &mut StdRng) -> SampleParams {
    let mut g = Geometry::IDENTITY;
    if rng.random::<f32>() < 0.8 {
        g.area = rng.random_range(0.35..1.0);
        g.aspect = rng.random_range(0.75..1.333);
    }
    let (cw, ch) = g.crop_size();
    g.center = [
        ((1.0 - cw) * rng.random_range(-1.0..1.0)) as f32,
        ((1.0 - ch) * rng.random_range(-1.0..1.0)) as f32,
    ];
    if rng.random::<f32>() < 0.5 {
        g.angle = 15f32.to_radians() * rng.random_range(-1.0..1.0);
    }
    SampleParams {
        geometry: g,
        flip: if rng.random::<f32>() < 0.5 { 1.0 } else { 0.0 },
        sigma: if rng.random::<f32>() < 0.3 {
            0.05 * rng.random::<f32>()
        } else {
            0.0
        },
    }
}

struct Setup {
    augs: Vec<GpuAugmenter>,
    outs: Vec<DeviceBatch>,
    src_bytes: usize,
    out_bytes: usize,
}

fn setup(dev: &Device) -> Setup {
    let spec = OutputSpec {
        size: Size::new(SIDE, SIDE),
        channels: 3,
        dtype: DType::F32,
        layout: Layout::Nchw,
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
    };
    let mut rng = StdRng::seed_from_u64(2024);
    let mut augs = Vec::new();
    let mut outs = Vec::new();
    let n = (SIDE * SIDE * 3) as usize;
    for set in 0..SETS {
        let pixels: Vec<Vec<u8>> = (0..B)
            .map(|_| (0..n).map(|_| rng.random()).collect())
            .collect();
        let views: Vec<ImageView<'_>> = pixels
            .iter()
            .map(|p| ImageView {
                height: SIDE,
                width: SIDE,
                channels: 3,
                data: p,
            })
            .collect();
        let params: Vec<SampleParams> = (0..B).map(|_| default_policy_params(&mut rng)).collect();
        let samples: Vec<u64> = (0..B as u64).map(|k| k + (set * B) as u64).collect();
        let mut aug = GpuAugmenter::new(dev).expect("augmenter");
        let out = aug
            .augment_batch(&views, &params, &samples, 7, 0, &spec)
            .expect("augment");
        out.to_host().expect("first batch");
        augs.push(aug);
        outs.push(out);
    }
    Setup {
        augs,
        outs,
        src_bytes: B * n,
        out_bytes: B * n * 4,
    }
}

fn median_ms(mut f: impl FnMut() -> f32) -> f32 {
    let mut v: Vec<f32> = (0..30).map(|_| f()).collect();
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dev = match Device::new(0) {
        Ok(d) => d,
        Err(e) => {
            println!("gpu benches: skipped: no CUDA device ({e})");
            return;
        }
    };
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut s = setup(&dev);
    let bytes = s.src_bytes + s.out_bytes;
    let stream = s.augs[0].compute_stream().clone();
    let copy_len = bytes / 2;
    let copy_src = stream.alloc_zeros::<u8>(copy_len).expect("alloc");
    let mut copy_dst = stream.alloc_zeros::<u8>(copy_len).expect("alloc");

    let mut g = c.benchmark_group("cuda");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("augment_u8_to_f32_nchw_256x3x224x224", |b| {
        b.iter_custom(|iters| {
            for d in &s.outs {
                d.stream().synchronize().unwrap();
            }
            let t = Instant::now();
            for k in 0..iters as usize {
                let i = k % SETS;
                s.augs[i].relaunch_last(&mut s.outs[i]).unwrap();
            }
            for d in &s.outs {
                d.stream().synchronize().unwrap();
            }
            t.elapsed()
        })
    });
    g.bench_function("dtod_copy_same_bytes", |b| {
        b.iter_custom(|iters| {
            stream.synchronize().unwrap();
            let t = Instant::now();
            for _ in 0..iters {
                stream.memcpy_dtod(&copy_src, &mut copy_dst).unwrap();
            }
            stream.synchronize().unwrap();
            t.elapsed()
        })
    });
    g.finish();

    // Event-timed medians and the ratio, on one stream per measurement.
    let timed = |s: &mut Setup, k: usize| -> f32 {
        let i = k % SETS;
        let st = s.augs[i].compute_stream().clone();
        let a = st
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .unwrap();
        s.augs[i].relaunch_last(&mut s.outs[i]).unwrap();
        let b = st
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .unwrap();
        a.elapsed_ms(&b).unwrap()
    };
    let mut k = 0;
    let kernel_ms = median_ms(|| {
        k += 1;
        timed(&mut s, k)
    });
    let copy_ms = median_ms(|| {
        let a = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .unwrap();
        stream.memcpy_dtod(&copy_src, &mut copy_dst).unwrap();
        let b = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .unwrap();
        a.elapsed_ms(&b).unwrap()
    });
    let gbs = |ms: f32| bytes as f64 / (ms as f64 * 1e-3) / 1e9;
    println!(
        "device: {} | bytes moved per batch: {:.1} MB (read {:.1} + write {:.1})",
        dev.name(),
        bytes as f64 / 1e6,
        s.src_bytes as f64 / 1e6,
        s.out_bytes as f64 / 1e6
    );
    println!(
        "fused kernel: {kernel_ms:.3} ms = {:.0} GB/s | dtod copy: {copy_ms:.3} ms = {:.0} GB/s | ratio {:.2} (target >= 0.60)",
        gbs(kernel_ms),
        gbs(copy_ms),
        copy_ms / kernel_ms
    );
}

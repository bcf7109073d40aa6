//! The GPU path without the CPU augmentation reference: discovery, Philox
//! against `ops::philox`, exact properties of the fused kernel (identity,
//! mirror, noise), and the loader plumbing (double-buffered staging, output
//! pool, streams and events). Tests run on the CPU emulator of the CUDA
//! execution model (`emulated`) and on a GPU where one is found (`gpu`, which
//! prints `skipped: no CUDA device (...)` and passes without one).

mod cuda_common;

use cuda_common::*;
use metaug::cuda::{
    philox_draws, Backend, DType, Device, DeviceBatch, GpuAugmenter, ImageView, Layout, OutputSpec,
};
use metaug::ops::philox::{PhiloxStream, STREAM_NOISE, STREAM_PARAMS};
use metaug::ops::{SampleParams, Size};
use metaug::Error;
use rand::rngs::StdRng;
use rand::Rng;

fn spec(size: Size, c: u32, dtype: DType, layout: Layout) -> OutputSpec {
    OutputSpec {
        size,
        channels: c,
        dtype,
        layout,
        mean: vec![0.0; c as usize],
        std: vec![1.0; c as usize],
    }
}

#[test]
fn discovery_is_an_error_or_a_device_never_a_panic() {
    match Device::new(0) {
        Ok(d) => {
            eprintln!("device 0: {d:?}, arch {}", d.arch());
            assert!(d.compute_capability().0 >= 7);
        }
        Err(Error::Cuda(msg)) => eprintln!("no device: {msg}"),
        Err(e) => panic!("wrong error kind: {e}"),
    }
    assert!(Device::new(1 << 20).is_err());
}

on_emulator_and_gpu!(
    philox_on_the_device_matches_the_cpu,
    identity_mirror_and_noise_are_exact,
    overlapping_batches_never_clobber_each_other,
    a_handed_over_buffer_leaves_the_pool,
    relaunch_reproduces_the_last_batch,
    bad_batches_are_errors,
);

fn philox_on_the_device_matches_the_cpu<B: Backend>(dev: B, rng: &mut StdRng, _: Scale) {
    for stream in [STREAM_PARAMS, STREAM_NOISE] {
        let (seed, epoch, sample) = (
            rng.random::<u64>(),
            rng.random::<u32>() as u64,
            rng.random::<u64>(),
        );
        let first = rng.random_range(0..1u32 << 20);
        let n = 5000u32;
        let (words, normals, normals_at) =
            philox_draws(&dev, seed, epoch, sample, stream, first, n).unwrap();
        let cpu = PhiloxStream::new(seed, epoch, sample, stream);
        let mut worst = 0f32;
        for t in 0..n {
            let w = cpu.block(first + t);
            let z = cpu.normals(first + t);
            for k in 0..4 {
                let i = (4 * t) as usize + k;
                assert_eq!(words[i], w[k], "block {} word {k}", first + t);
                let d = (normals[i] - z[k]).abs();
                assert!(
                    d <= 4e-6 * (1.0 + z[k].abs()),
                    "normal {i}: gpu {} cpu {}",
                    normals[i],
                    z[k]
                );
                worst = worst.max(d);
                assert_eq!(
                    normals_at[i].to_bits(),
                    normals[i].to_bits(),
                    "normal_at {i}"
                );
            }
        }
        case_checked();
        eprintln!("philox stream {stream}: words exact, normals max |gpu - cpu| = {worst:e}");
    }
}

/// One batch: pixels, params, indices.
struct Batch {
    pixels: Vec<Vec<u8>>,
    dims: Vec<(u32, u32)>,
    params: Vec<SampleParams>,
    samples: Vec<u64>,
}

impl Batch {
    fn random(rng: &mut StdRng, n: usize, c: u32, max_side: u32, ops: Ops) -> Batch {
        let dims: Vec<(u32, u32)> = (0..n)
            .map(|_| {
                (
                    rng.random_range(1..=max_side),
                    rng.random_range(1..=max_side),
                )
            })
            .collect();
        Batch {
            pixels: dims
                .iter()
                .map(|&(h, w)| random_pixels(rng, h, w, c))
                .collect(),
            params: (0..n).map(|_| random_params(rng, ops)).collect(),
            samples: (0..n).map(|_| rng.random::<u64>() >> 16).collect(),
            dims,
        }
    }

    fn views(&self, c: u32) -> Vec<ImageView<'_>> {
        self.pixels
            .iter()
            .zip(&self.dims)
            .map(|(p, &(h, w))| ImageView {
                height: h,
                width: w,
                channels: c,
                data: p,
            })
            .collect()
    }

    fn run<B: Backend>(
        &self,
        gpu: &mut GpuAugmenter<B>,
        s: &OutputSpec,
        seed: u64,
        epoch: u64,
    ) -> DeviceBatch<B> {
        gpu.augment_batch(
            &self.views(s.channels),
            &self.params,
            &self.samples,
            seed,
            epoch,
            s,
        )
        .unwrap()
    }
}

fn identity_mirror_and_noise_are_exact<B: Backend>(dev: B, rng: &mut StdRng, _: Scale) {
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    aug.poison_outputs(Some(0xFF));
    for (h, w) in [(1, 1), (5, 8), (13, 17), (64, 48)] {
        for c in [1u32, 3] {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let px = random_pixels(rng, h, w, c);
                let img = ImageView {
                    height: h,
                    width: w,
                    channels: c,
                    data: &px,
                };
                let size = Size::new(h, w);
                let (hh, ww, cc) = (h as usize, w as usize, c as usize);
                // u8 identity: the source bytes, permuted into the layout.
                let s = spec(size, c, DType::U8, layout);
                let b = aug
                    .augment_batch(&[img], &[SampleParams::IDENTITY], &[0], 1, 0, &s)
                    .unwrap();
                let out = b.to_host().unwrap();
                for i in 0..hh {
                    for j in 0..ww {
                        for ch in 0..cc {
                            let want = px[(i * ww + j) * cc + ch];
                            assert_eq!(
                                out[offset(layout, ch, i, j, cc, hh, ww)],
                                want,
                                "u8 identity {h}x{w}x{c} {layout:?}"
                            );
                        }
                    }
                }
                // f32 mirror with noise: p(i, W-1-j)/255 + sigma*eps, eps in CHW order.
                let s = spec(size, c, DType::F32, layout);
                let sigma = 0.1f32;
                let (seed, epoch, sample) = (rng.random::<u64>(), 2u64, rng.random::<u32>() as u64);
                let p = SampleParams {
                    flip: 1.0,
                    sigma,
                    ..SampleParams::IDENTITY
                };
                let b = aug
                    .augment_batch(&[img], &[p], &[sample], seed, epoch, &s)
                    .unwrap();
                let out = to_f32(&b.to_host().unwrap(), DType::F32);
                let noise = PhiloxStream::new(seed, epoch, sample, STREAM_NOISE);
                for ch in 0..cc {
                    for i in 0..hh {
                        for j in 0..ww {
                            let e = (ch * hh + i) * ww + j;
                            let eps = noise.normals((e / 4) as u32)[e % 4];
                            let want =
                                px[(i * ww + (ww - 1 - j)) * cc + ch] as f32 / 255.0 + sigma * eps;
                            let got = out[offset(layout, ch, i, j, cc, hh, ww)];
                            assert!((got - want).abs() <= 1e-5, "mirror+noise {h}x{w}x{c} {layout:?} ({ch},{i},{j}): {got} vs {want}");
                        }
                    }
                }
                case_checked();
            }
        }
    }
}

/// Runs `batches` through one augmenter with every batch alive at once, then
/// checks each against the same batch run alone on a fresh augmenter.
fn overlapping_batches_never_clobber_each_other<B: Backend>(dev: B, rng: &mut StdRng, _: Scale) {
    let s = OutputSpec {
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        ..spec(Size::new(40, 36), 3, DType::F16, Layout::Nchw)
    };
    // Growing sizes force staging reallocation between batches.
    let batches: Vec<Batch> = [(4, 16), (9, 64), (2, 200), (33, 48), (1, 7), (17, 120)]
        .iter()
        .map(|&(n, side)| Batch::random(rng, n, 3, side, Ops::All))
        .collect();
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    aug.poison_outputs(Some(0xFF));
    let live: Vec<DeviceBatch<B>> = batches
        .iter()
        .enumerate()
        .map(|(k, b)| b.run(&mut aug, &s, 99, k as u64))
        .collect();
    for (k, (b, d)) in batches.iter().zip(&live).enumerate() {
        let mut alone = GpuAugmenter::new(&dev).unwrap();
        let want = b.run(&mut alone, &s, 99, k as u64).to_host().unwrap();
        assert_eq!(d.to_host().unwrap(), want, "batch {k}");
        assert_eq!(d.shape(), [b.pixels.len(), 3, 40, 36]);
        assert_eq!(d.num_bytes(), b.pixels.len() * 3 * 40 * 36 * 2);
        assert_ne!(d.device_ptr(), 0);
    }
    // Drop them in a scrambled order, then run again: pooled buffers are reused
    // (poisoned first), results unchanged.
    let mut live = live;
    live.swap(0, 3);
    drop(live);
    for (k, b) in batches.iter().enumerate().rev() {
        let got = b.run(&mut aug, &s, 99, k as u64).to_host().unwrap();
        let mut alone = GpuAugmenter::new(&dev).unwrap();
        assert_eq!(
            got,
            b.run(&mut alone, &s, 99, k as u64).to_host().unwrap(),
            "batch {k} again"
        );
    }
}

/// A buffer handed over with `into_buffer_for` (what the candle zero-copy
/// path does with a batch) leaves the augmenter's pool: it keeps the batch's
/// bytes while later batches are made and dropped, none of them is written
/// into it, and the pool goes on reusing the buffers it still has.
fn a_handed_over_buffer_leaves_the_pool<B: Backend>(dev: B, rng: &mut StdRng, _: Scale) {
    let s = spec(Size::new(24, 20), 3, DType::F32, Layout::Nchw);
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    aug.poison_outputs(Some(0xFF));
    let batches: Vec<Batch> = (0..6)
        .map(|_| Batch::random(rng, 4, 3, 48, Ops::All))
        .collect();
    // the pool at work: a dropped batch's buffer is the next batch's
    let d = batches[0].run(&mut aug, &s, 7, 0);
    let ptr = d.device_ptr();
    drop(d);
    let d = batches[1].run(&mut aug, &s, 7, 1);
    assert_eq!(d.device_ptr(), ptr, "a dropped batch's buffer is reused");
    // a reader on another stream, declared; then the buffer handed over
    let want = d.to_host().unwrap();
    let bytes = d.num_bytes();
    let reader = dev.new_stream().unwrap();
    let mut d = d;
    d.wait_on(&reader).unwrap();
    d.release_after(&reader).unwrap();
    let consumer = dev.new_stream().unwrap();
    let held = d.into_buffer_for(&consumer).unwrap();
    assert_eq!(
        dev.address(&held),
        ptr,
        "the batch's own memory, not a copy"
    );
    let read = |buf: &_| {
        let mut out = vec![0u8; bytes];
        dev.download_into(&consumer, buf, &mut out).unwrap();
        out
    };
    assert_eq!(read(&held), want, "the handed-over bytes are the batch");
    case_checked();
    let mut reused = None;
    for (k, b) in batches.iter().enumerate().skip(2) {
        let d = b.run(&mut aug, &s, 7, k as u64);
        assert_ne!(
            d.device_ptr(),
            ptr,
            "batch {k} written into the held buffer"
        );
        assert_eq!(*reused.get_or_insert(d.device_ptr()), d.device_ptr());
        drop(d);
        assert_eq!(read(&held), want, "the held buffer after batch {k}");
        case_checked();
    }
    // its new owner frees it, on the consumer's stream
    drop(held);
    dev.sync_stream(&consumer).unwrap();
}

#[test]
fn a_consumer_on_another_stream_orders_with_events() {
    let Some(dev) = gpu("a_consumer_on_another_stream_orders_with_events") else {
        return;
    };
    let rng = &mut rng("a_consumer_on_another_stream_orders_with_events");
    let s = spec(Size::new(224, 224), 3, DType::F32, Layout::Nchw);
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    let consumer = dev.new_stream().unwrap();
    let mut prev: Option<Vec<u8>> = None;
    for k in 0..6 {
        let b = Batch::random(rng, 8, 3, 256, Ops::All);
        let mut d = b.run(&mut aug, &s, 5, k);
        // The consumer copies the batch on its own stream, then releases it.
        d.wait_on(&consumer).unwrap();
        let copy = consumer.clone_dtod(&d.view().unwrap()).unwrap();
        d.release_after(&consumer).unwrap();
        let own = d.to_host().unwrap();
        drop(d);
        let copied = consumer.clone_dtoh(&copy).unwrap();
        consumer.synchronize().unwrap();
        assert_eq!(
            copied, own,
            "batch {k}: the consumer saw the finished batch"
        );
        if let Some(p) = &prev {
            assert_ne!(p, &own);
        }
        prev = Some(own);
    }
}

fn relaunch_reproduces_the_last_batch<B: Backend>(dev: B, rng: &mut StdRng, _: Scale) {
    let s = spec(Size::new(31, 29), 1, DType::U8, Layout::Nhwc);
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    let b = Batch::random(rng, 5, 1, 50, Ops::All);
    let first = b.run(&mut aug, &s, 1, 2);
    let want = first.to_host().unwrap();
    let mut second = b.run(&mut aug, &s, 1, 2);
    aug.poison_outputs(Some(0x5A));
    aug.relaunch_last(&mut second).unwrap();
    assert_eq!(second.to_host().unwrap(), want);
}

fn bad_batches_are_errors<B: Backend>(dev: B, _: &mut StdRng, _: Scale) {
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    let s = spec(Size::new(8, 8), 3, DType::F32, Layout::Nchw);
    let px = vec![0u8; 4 * 4 * 3];
    let img = ImageView {
        height: 4,
        width: 4,
        channels: 3,
        data: &px,
    };
    let p = [SampleParams::IDENTITY];
    assert!(aug.augment_batch(&[img], &p, &[], 0, 0, &s).is_err());
    assert!(aug.augment_batch(&[], &[], &[], 0, 0, &s).is_err());
    let grey = ImageView { channels: 1, ..img };
    assert!(aug.augment_batch(&[grey], &p, &[0], 0, 0, &s).is_err());
    let lying = ImageView { height: 5, ..img };
    assert!(aug.augment_batch(&[lying], &p, &[0], 0, 0, &s).is_err());
    let mut fresh = GpuAugmenter::new(&dev).unwrap();
    let mut out = aug.augment_batch(&[img], &p, &[0], 0, 0, &s).unwrap();
    assert!(fresh.relaunch_last(&mut out).is_err());
    // Still usable after errors.
    assert_eq!(out.to_host().unwrap().len(), 3 * 8 * 8 * 4);
}

#[test]
#[ignore = "heavy: 512 samples of 256x256 through every dtype and layout"]
fn large_batches_through_every_variant() {
    let Some(dev) = gpu("large_batches_through_every_variant") else {
        return;
    };
    let rng = &mut rng("large_batches_through_every_variant");
    let b = Batch::random(rng, 512, 3, 256, Ops::All);
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    aug.poison_outputs(Some(0xFF));
    for dtype in [DType::U8, DType::F16, DType::F32] {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for size in [Size::new(224, 224), Size::new(97, 131)] {
                let s = spec(size, 3, dtype, layout);
                let a = b.run(&mut aug, &s, 3, 4).to_host().unwrap();
                let mut alone = GpuAugmenter::new(&dev).unwrap();
                alone.poison_outputs(Some(0x00));
                let z = b.run(&mut alone, &s, 3, 4).to_host().unwrap();
                assert_eq!(a, z, "{dtype:?} {layout:?} {size:?}: poison-independent");
            }
        }
    }
}

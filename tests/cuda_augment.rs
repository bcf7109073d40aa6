//! The fused forward kernel (`kernels/augment.cu`) against the CPU reference
//! `ops::augment_into`, on fresh random images and parameters: each op alone
//! and all together, u8/f16/f32, NCHW/NHWC, 1 and 3 channels, odd widths
//! (scalar path) and widths divisible by 4 (vector path), 1×1 and large
//! images, batches of 1 to 512 (1, 7 and 64 on the emulator). Outputs are
//! poisoned before each run. Every test runs on the CPU emulator of the CUDA
//! execution model (`emulated`) and, where a GPU is found, on it (`gpu`).
//! Windows (region and scaled decode): each sample's pixels cut to the
//! footprint of its map (plus a random margin), uploaded alone with its
//! origin, against `ops::augment_window_into` and, at full scale, against
//! the whole image's result.

mod cuda_common;

use cuda_common::*;
use metaug::cuda::{Backend, DType, GpuAugmenter, ImageView, Layout, OutputSpec};
use metaug::ops::philox::{PhiloxStream, STREAM_NOISE};
use metaug::ops::{augment_into, augment_window_into, footprint, SampleParams, Size, SourceWindow};
use rand::rngs::StdRng;
use rand::Rng;

const DTYPES: [DType; 3] = [DType::U8, DType::F16, DType::F32];
const LAYOUTS: [Layout; 2] = [Layout::Nchw, Layout::Nhwc];

fn random_spec(rng: &mut StdRng, size: Size, c: u32, dtype: DType, layout: Layout) -> OutputSpec {
    OutputSpec {
        size,
        channels: c,
        dtype,
        layout,
        mean: (0..c).map(|_| rng.random_range(0.0..0.7)).collect(),
        std: (0..c).map(|_| rng.random_range(0.15..1.0)).collect(),
    }
}

/// Runs one batch on the GPU (poisoned with 0xFF, and for u8 also 0x00) and
/// on the CPU, and compares sample by sample.
#[allow(clippy::too_many_arguments)]
fn check<B: Backend>(
    what: &str,
    aug: &mut GpuAugmenter<B>,
    images: &[ImageView<'_>],
    params: &[SampleParams],
    samples: &[u64],
    seed: u64,
    epoch: u64,
    spec: &OutputSpec,
) {
    let sb = spec.sample_bytes();
    let mut cpu = vec![0u8; images.len() * sb];
    for (k, img) in images.iter().enumerate() {
        let noise = PhiloxStream::new(seed, epoch, samples[k], STREAM_NOISE);
        augment_into(
            *img,
            &params[k],
            noise,
            spec,
            &mut cpu[k * sb..(k + 1) * sb],
        );
    }
    let range = spec.std.iter().map(|s| 1.0 / s).fold(0f32, f32::max);
    let poisons: &[u8] = if spec.dtype == DType::U8 {
        &[0xFF, 0x00]
    } else {
        &[0xFF]
    };
    for &poison in poisons {
        aug.poison_outputs(Some(poison));
        let batch = aug
            .augment_batch(images, params, samples, seed, epoch, spec)
            .unwrap();
        let gpu = batch.to_host().unwrap();
        assert_eq!(gpu.len(), cpu.len());
        for k in 0..images.len() {
            let tag = format!(
                "{what} sample {k} ({}x{} -> {:?}, {:?}) poison {poison:#x}",
                images[k].height, images[k].width, spec.size, params[k]
            );
            assert_close(
                &tag,
                &gpu[k * sb..(k + 1) * sb],
                &cpu[k * sb..(k + 1) * sb],
                spec.dtype,
                range,
            );
        }
        case_checked();
    }
}

struct Owned {
    pixels: Vec<Vec<u8>>,
    dims: Vec<(u32, u32)>,
    c: u32,
}

impl Owned {
    fn random(rng: &mut StdRng, n: usize, c: u32, sides: std::ops::RangeInclusive<u32>) -> Owned {
        let dims: Vec<(u32, u32)> = (0..n)
            .map(|_| {
                (
                    rng.random_range(sides.clone()),
                    rng.random_range(sides.clone()),
                )
            })
            .collect();
        let pixels = dims
            .iter()
            .map(|&(h, w)| random_pixels(rng, h, w, c))
            .collect();
        Owned { pixels, dims, c }
    }

    fn views(&self) -> Vec<ImageView<'_>> {
        self.pixels
            .iter()
            .zip(&self.dims)
            .map(|(p, &(h, w))| ImageView {
                height: h,
                width: w,
                channels: self.c,
                data: p,
            })
            .collect()
    }
}

on_emulator_and_gpu!(
    each_op_alone_and_together_in_every_dtype_and_layout,
    tiny_odd_and_large_images,
    batches_of_1_to_512,
    windows_of_images,
);

/// The rows `r.y..r.y + r.height`, columns `r.x..r.x + r.width` of an HWC image.
fn cut(px: &[u8], w: u32, c: u32, r: metaug::ops::Rect) -> Vec<u8> {
    let mut out = Vec::with_capacity((r.width * r.height * c) as usize);
    for y in r.y..r.y + r.height {
        let at = ((y * w + r.x) * c) as usize;
        out.extend_from_slice(&px[at..at + (r.width * c) as usize]);
    }
    out
}

fn windows_of_images<B: Backend>(dev: B, rng: &mut StdRng, _: Scale) {
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    for shrink in [0u8, 1, 3] {
        for dtype in DTYPES {
            let n = 5;
            let c = [1, 3][rng.random_range(0..2)];
            let layout = LAYOUTS[rng.random_range(0..2)];
            let size = [Size::new(21, 35), Size::new(16, 24)][rng.random_range(0..2)];
            let spec = random_spec(rng, size, c, dtype, layout);
            let (mut cuts, mut windows, mut params, mut wholes) = (vec![], vec![], vec![], vec![]);
            for _ in 0..n {
                // the decoded frame, and the full image it is a 1/2^shrink of
                let (h, w) = (rng.random_range(8..=90), rng.random_range(8..=90));
                let px = random_pixels(rng, h, w, c);
                let p = random_params(rng, Ops::All);
                let mut window = SourceWindow {
                    full: Size::new(h << shrink, w << shrink),
                    shrink,
                    origin: [0, 0],
                };
                let m = window.matrix(&p.geometry, spec.size);
                let need = footprint(&m, spec.size, Size::new(h, w)).unwrap_or(metaug::ops::Rect {
                    x: 0,
                    y: 0,
                    width: 1,
                    height: 1,
                });
                // a random margin around the footprint, inside the frame
                let x0 = need.x - rng.random_range(0..=need.x.min(3));
                let y0 = need.y - rng.random_range(0..=need.y.min(3));
                let x1 = (need.x + need.width + rng.random_range(0..3)).min(w);
                let y1 = (need.y + need.height + rng.random_range(0..3)).min(h);
                let r = metaug::ops::Rect {
                    x: x0,
                    y: y0,
                    width: x1 - x0,
                    height: y1 - y0,
                };
                window.origin = [r.x, r.y];
                cuts.push((cut(&px, w, c, r), r));
                windows.push(window);
                params.push(p);
                wholes.push((px, h, w));
            }
            let views: Vec<ImageView<'_>> = cuts
                .iter()
                .map(|(px, r)| ImageView {
                    height: r.height,
                    width: r.width,
                    channels: c,
                    data: px,
                })
                .collect();
            let samples: Vec<u64> = (0..n as u64).map(|k| 40 + k).collect();
            let (seed, epoch) = (rng.random(), 2);
            let sb = spec.sample_bytes();
            let mut cpu = vec![0u8; n * sb];
            for k in 0..n {
                let noise = PhiloxStream::new(seed, epoch, samples[k], STREAM_NOISE);
                let out = &mut cpu[k * sb..(k + 1) * sb];
                augment_window_into(views[k], &windows[k], &params[k], noise, &spec, out);
                if shrink == 0 {
                    // the window holds every pixel the map reads: the whole
                    // image gives the same bits
                    let (px, h, w) = &wholes[k];
                    let whole = ImageView {
                        height: *h,
                        width: *w,
                        channels: c,
                        data: px,
                    };
                    let mut again = vec![0u8; sb];
                    let noise = PhiloxStream::new(seed, epoch, samples[k], STREAM_NOISE);
                    augment_into(whole, &params[k], noise, &spec, &mut again);
                    assert!(
                        again == cpu[k * sb..(k + 1) * sb],
                        "window {k} differs from its whole image"
                    );
                }
            }
            aug.poison_outputs(Some(0xFF));
            let batch = aug
                .augment_windows(&views, &windows, &params, &samples, seed, epoch, &spec)
                .unwrap();
            let gpu = batch.to_host().unwrap();
            let range = spec.std.iter().map(|s| 1.0 / s).fold(0f32, f32::max);
            for k in 0..n {
                assert_close(
                    &format!(
                        "window {k} shrink {shrink} {dtype:?} {layout:?} c{c} ({:?})",
                        windows[k]
                    ),
                    &gpu[k * sb..(k + 1) * sb],
                    &cpu[k * sb..(k + 1) * sb],
                    dtype,
                    range,
                );
            }
            case_checked();
        }
    }
}

fn each_op_alone_and_together_in_every_dtype_and_layout<B: Backend>(
    dev: B,
    rng: &mut StdRng,
    _: Scale,
) {
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    for ops in EACH_OP {
        for c in [1, 3] {
            for dtype in DTYPES {
                for layout in LAYOUTS {
                    // an odd width (scalar path) and a width divisible by 4 (vector path)
                    for size in [Size::new(37, 29), Size::new(24, 32)] {
                        let imgs = Owned::random(rng, 3, c, 1..=80);
                        let params: Vec<_> = (0..3).map(|_| random_params(rng, ops)).collect();
                        let samples: Vec<u64> = (0..3).map(|_| rng.random::<u64>()).collect();
                        let spec = random_spec(rng, size, c, dtype, layout);
                        let (seed, epoch) = (rng.random(), rng.random_range(0..100));
                        check(
                            &format!("{ops:?} c{c} {dtype:?} {layout:?}"),
                            &mut aug,
                            &imgs.views(),
                            &params,
                            &samples,
                            seed,
                            epoch,
                            &spec,
                        );
                    }
                }
            }
        }
    }
}

fn tiny_odd_and_large_images<B: Backend>(dev: B, rng: &mut StdRng, _: Scale) {
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    let cases: [((u32, u32), (u32, u32)); 7] = [
        ((1, 1), (1, 1)),
        ((1, 1), (7, 5)),
        ((3, 2), (1, 1)),
        ((1, 97), (13, 1)),
        ((333, 1), (2, 3)),
        ((768, 1024), (512, 512)),
        ((2000, 1500), (224, 224)),
    ];
    for ((h, w), (ho, wo)) in cases {
        for dtype in DTYPES {
            for ops in [Ops::Identity, Ops::All] {
                let px = random_pixels(rng, h, w, 3);
                let img = ImageView {
                    height: h,
                    width: w,
                    channels: 3,
                    data: &px,
                };
                let p = random_params(rng, ops);
                let layout = LAYOUTS[rng.random_range(0..2)];
                let spec = random_spec(rng, Size::new(ho, wo), 3, dtype, layout);
                check(
                    &format!("{h}x{w} -> {ho}x{wo} {ops:?} {dtype:?}"),
                    &mut aug,
                    &[img],
                    &[p],
                    &[rng.random()],
                    rng.random(),
                    1,
                    &spec,
                );
            }
        }
    }
}

fn batches_of_1_to_512<B: Backend>(dev: B, rng: &mut StdRng, scale: Scale) {
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    let sizes: &[usize] = match scale {
        Scale::Emulated => &[1, 7, 64],
        Scale::Gpu => &[1, 2, 7, 31, 64, 256, 512],
    };
    for &n in sizes {
        let imgs = Owned::random(rng, n, 3, 1..=48);
        let params: Vec<_> = (0..n).map(|_| random_params(rng, Ops::All)).collect();
        let samples: Vec<u64> = (0..n as u64).map(|k| 1_000_000 + 7 * k).collect();
        let dtype = DTYPES[rng.random_range(0..3)];
        let layout = LAYOUTS[rng.random_range(0..2)];
        let spec = random_spec(rng, Size::new(20, 16), 3, dtype, layout);
        check(
            &format!("batch {n} {dtype:?} {layout:?}"),
            &mut aug,
            &imgs.views(),
            &params,
            &samples,
            42,
            7,
            &spec,
        );
    }
}

#[test]
#[ignore = "heavy: 256 x 3 x 224 x 224 against the CPU reference in every dtype and layout"]
fn full_size_batches_in_every_variant() {
    let Some(dev) = gpu("full_size_batches_in_every_variant") else {
        return;
    };
    let mut aug = GpuAugmenter::new(&dev).unwrap();
    let rng = &mut rng("full_size_batches_in_every_variant");
    let imgs = Owned::random(rng, 256, 3, 160..=320);
    let params: Vec<_> = (0..256).map(|_| random_params(rng, Ops::All)).collect();
    let samples: Vec<u64> = (0..256).collect();
    for dtype in DTYPES {
        for layout in LAYOUTS {
            let spec = random_spec(rng, Size::new(224, 224), 3, dtype, layout);
            check(
                &format!("256x3x224x224 {dtype:?} {layout:?}"),
                &mut aug,
                &imgs.views(),
                &params,
                &samples,
                rng.random(),
                0,
                &spec,
            );
        }
    }
}

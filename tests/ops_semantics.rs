//! Semantics of the fused CPU augmentation (`metaug::ops`): identities,
//! exact permutations, crops, noise statistics, determinism, dtype/layout
//! agreement, and the fast path against the element-by-element reference.

use metaug::decode::ImageView;
use metaug::ops::noise::MAX_NORMAL_ERROR;
use metaug::ops::philox::{PhiloxStream, STREAM_NOISE};
use metaug::ops::warp::augment_into_portable;
use metaug::ops::{
    augment_into, augment_reference, sample_to_chw_f32, DType, Geometry, Layout, OutputSpec,
    SampleParams, Size,
};
use rand::{Rng, SeedableRng};

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn random_image(r: &mut impl Rng, h: u32, w: u32, c: u32) -> Vec<u8> {
    (0..h * w * c).map(|_| r.random()).collect()
}

fn noise(sample: u64) -> PhiloxStream {
    PhiloxStream::new(11, 2, sample, STREAM_NOISE)
}

fn run(img: &[u8], h: u32, w: u32, p: &SampleParams, spec: &OutputSpec, sample: u64) -> Vec<u8> {
    let src = ImageView::new(h, w, spec.channels, img).unwrap();
    let mut out = vec![0xAB; spec.sample_bytes()];
    augment_into(src, p, noise(sample), spec, &mut out);
    out
}

fn run_ref(
    img: &[u8],
    h: u32,
    w: u32,
    p: &SampleParams,
    spec: &OutputSpec,
    sample: u64,
) -> Vec<u8> {
    let src = ImageView::new(h, w, spec.channels, img).unwrap();
    let mut out = vec![0xCD; spec.sample_bytes()];
    augment_reference(src, p, noise(sample), spec, &mut out);
    out
}

/// HWC u8 image -> CHW u8, the layout of a u8 NCHW sample.
fn chw(img: &[u8], h: u32, w: u32, c: u32) -> Vec<u8> {
    let (h, w, c) = (h as usize, w as usize, c as usize);
    let mut out = vec![0; img.len()];
    for ch in 0..c {
        for i in 0..h {
            for j in 0..w {
                out[(ch * h + i) * w + j] = img[(i * w + j) * c + ch];
            }
        }
    }
    out
}

fn u8_spec(h: u32, w: u32, c: u32) -> OutputSpec {
    OutputSpec::new(Size::new(h, w), c).with_dtype(DType::U8)
}

fn random_params(r: &mut impl Rng, with_noise: bool) -> SampleParams {
    let area = r.random_range(0.1f32..1.0);
    let aspect = r.random_range(0.5f32..2.0);
    let flip = match r.random_range(0..3) {
        0 => 0.0,
        1 => 1.0,
        _ => r.random_range(0.0f32..1.0),
    };
    SampleParams {
        geometry: Geometry {
            area,
            aspect,
            center: [r.random_range(-0.6..0.6), r.random_range(-0.6..0.6)],
            angle: r.random_range(-3.2f32..3.2),
        },
        flip,
        sigma: if with_noise {
            r.random_range(0.0f32..0.2)
        } else {
            0.0
        },
    }
}

#[test]
fn identity_at_equal_size_returns_the_image() {
    let mut r = rng(1);
    for (h, w, c) in [(28, 28, 1), (17, 31, 3), (1, 1, 1), (5, 2, 3)] {
        let img = random_image(&mut r, h, w, c);
        let out = run(&img, h, w, &SampleParams::IDENTITY, &u8_spec(h, w, c), 0);
        assert_eq!(out, chw(&img, h, w, c), "{h}x{w}x{c}");
        let nhwc = u8_spec(h, w, c).with_layout(Layout::Nhwc);
        assert_eq!(run(&img, h, w, &SampleParams::IDENTITY, &nhwc, 0), img);
        // f32: exactly v / 255
        let f = run(
            &img,
            h,
            w,
            &SampleParams::IDENTITY,
            &OutputSpec::new(Size::new(h, w), c),
            0,
        );
        let want: Vec<f32> = chw(&img, h, w, c)
            .iter()
            .map(|v| *v as f32 / 255.0)
            .collect();
        assert_eq!(
            sample_to_chw_f32(&f, &OutputSpec::new(Size::new(h, w), c)),
            want
        );
    }
}

#[test]
fn flip_mirrors_columns_and_two_flips_are_the_identity() {
    let mut r = rng(2);
    let (h, w, c) = (9, 13, 3);
    let img = random_image(&mut r, h, w, c);
    let spec = u8_spec(h, w, c).with_layout(Layout::Nhwc);
    let flipped = run(
        &img,
        h,
        w,
        &SampleParams {
            flip: 1.0,
            ..SampleParams::IDENTITY
        },
        &spec,
        0,
    );
    for i in 0..h as usize {
        for j in 0..w as usize {
            for ch in 0..c as usize {
                let mirror = w as usize - 1 - j;
                assert_eq!(
                    flipped[(i * w as usize + j) * 3 + ch],
                    img[(i * w as usize + mirror) * 3 + ch]
                );
            }
        }
    }
    let back = run(
        &flipped,
        h,
        w,
        &SampleParams {
            flip: 1.0,
            ..SampleParams::IDENTITY
        },
        &spec,
        0,
    );
    assert_eq!(back, img);
}

#[test]
fn quarter_turn_of_a_square_is_a_pixel_permutation() {
    let mut r = rng(3);
    for (n, c) in [(8u32, 1u32), (28, 1), (15, 3)] {
        let img = random_image(&mut r, n, n, c);
        let p = SampleParams {
            geometry: Geometry {
                angle: std::f32::consts::FRAC_PI_2,
                ..Geometry::IDENTITY
            },
            ..SampleParams::IDENTITY
        };
        let spec = u8_spec(n, n, c).with_layout(Layout::Nhwc);
        let out = run(&img, n, n, &p, &spec, 0);
        let n = n as usize;
        let c = c as usize;
        for i in 0..n {
            for j in 0..n {
                for ch in 0..c {
                    // output (i, j) reads source (row j, column n-1-i)
                    assert_eq!(
                        out[(i * n + j) * c + ch],
                        img[(j * n + n - 1 - i) * c + ch],
                        "{n} {i} {j}"
                    );
                }
            }
        }
        // four quarter turns: the identity
        let mut cur = img.clone();
        for _ in 0..4 {
            cur = run(&cur, n as u32, n as u32, &p, &spec, 0);
        }
        assert_eq!(cur, img);
    }
}

#[test]
fn crop_of_an_integer_box_returns_its_pixels() {
    // a 12x8 (h x w) box at (x=5, y=3) of a 20x16 image, resized to 12x8
    let mut r = rng(4);
    let (h, w, c) = (20u32, 16u32, 3u32);
    let (bx, by, bw, bh) = (5u32, 3u32, 8u32, 12u32);
    let img = random_image(&mut r, h, w, c);
    let (cw, ch) = (bw as f64 / w as f64, bh as f64 / h as f64);
    let geometry = Geometry {
        area: (cw * ch) as f32,
        aspect: (cw / ch) as f32,
        center: [
            ((bx as f64 + bw as f64 / 2.0) * 2.0 / w as f64 - 1.0) as f32,
            ((by as f64 + bh as f64 / 2.0) * 2.0 / h as f64 - 1.0) as f32,
        ],
        angle: 0.0,
    };
    let p = SampleParams {
        geometry,
        ..SampleParams::IDENTITY
    };
    let spec = u8_spec(bh, bw, c).with_layout(Layout::Nhwc);
    let out = run(&img, h, w, &p, &spec, 0);
    for i in 0..bh {
        for j in 0..bw {
            for k in 0..c {
                let got = out[((i * bw + j) * c + k) as usize];
                let want = img[(((by + i) * w + bx + j) * c + k) as usize];
                assert_eq!(got, want, "({i}, {j}, {k})");
            }
        }
    }
}

#[test]
fn outside_the_image_is_zero() {
    let img = vec![200u8; 10 * 10];
    let p = SampleParams {
        geometry: Geometry {
            center: [5.0, 5.0],
            ..Geometry::IDENTITY
        },
        ..SampleParams::IDENTITY
    };
    let out = run(&img, 10, 10, &p, &u8_spec(10, 10, 1), 0);
    assert!(out.iter().all(|v| *v == 0));
}

#[test]
fn noise_has_the_requested_sigma_and_is_deterministic() {
    let (h, w, c) = (64u32, 64u32, 3u32);
    let img = vec![128u8; (h * w * c) as usize];
    let spec = OutputSpec::new(Size::new(h, w), c);
    let clean = sample_to_chw_f32(&run(&img, h, w, &SampleParams::IDENTITY, &spec, 0), &spec);
    for sigma in [0.01f32, 0.1, 0.5] {
        let p = SampleParams {
            sigma,
            ..SampleParams::IDENTITY
        };
        let a = run(&img, h, w, &p, &spec, 5);
        assert_eq!(a, run(&img, h, w, &p, &spec, 5), "same stream, same noise");
        assert_ne!(
            a,
            run(&img, h, w, &p, &spec, 6),
            "another sample, other noise"
        );
        let a = sample_to_chw_f32(&a, &spec);
        let d: Vec<f64> = a.iter().zip(&clean).map(|(x, y)| (x - y) as f64).collect();
        let n = d.len() as f64;
        let mean = d.iter().sum::<f64>() / n;
        let sd = (d.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
        assert!(
            mean.abs() < 0.03 * sigma as f64,
            "sigma {sigma}: mean {mean}"
        );
        assert!(
            (sd / sigma as f64 - 1.0).abs() < 0.03,
            "sigma {sigma}: sd {sd}"
        );
    }
}

#[test]
fn noise_is_counted_in_chw_order_whatever_the_layout() {
    let (h, w, c) = (6u32, 7u32, 3u32);
    let img = vec![100u8; (h * w * c) as usize];
    let p = SampleParams {
        sigma: 0.1,
        ..SampleParams::IDENTITY
    };
    let spec = OutputSpec::new(Size::new(h, w), c);
    let out = sample_to_chw_f32(&run(&img, h, w, &p, &spec, 9), &spec);
    let s = noise(9);
    for (e, v) in out.iter().enumerate() {
        let eps = s.normals((e / 4) as u32)[e % 4];
        let want = 100.0f32 / 255.0 + 0.1 * eps;
        assert!(
            (v - want).abs() <= 0.1 * MAX_NORMAL_ERROR + 1e-7,
            "{e}: {v} vs {want}"
        );
    }
    let nhwc = spec.clone().with_layout(Layout::Nhwc);
    assert_eq!(
        sample_to_chw_f32(&run(&img, h, w, &p, &nhwc, 9), &nhwc),
        out
    );
}

#[test]
fn dtypes_and_layouts_agree() {
    let mut r = rng(6);
    for case in 0..20 {
        let c = if case % 2 == 0 { 1 } else { 3 };
        let (h, w) = (r.random_range(1..40), r.random_range(1..40));
        let (ho, wo) = (r.random_range(1..40), r.random_range(1..40));
        let img = random_image(&mut r, h, w, c);
        let p = random_params(&mut r, true);
        let mean: Vec<f32> = (0..c).map(|_| r.random_range(0.0..1.0)).collect();
        let std: Vec<f32> = (0..c).map(|_| r.random_range(0.2..2.0)).collect();
        let base = OutputSpec::new(Size::new(ho, wo), c).with_normalization(mean, std);
        let f32s = sample_to_chw_f32(&run(&img, h, w, &p, &base, case), &base);
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for dtype in [DType::F32, DType::F16, DType::U8] {
                let spec = base.clone().with_dtype(dtype).with_layout(layout);
                let got = sample_to_chw_f32(&run(&img, h, w, &p, &spec, case), &spec);
                for (k, (a, b)) in got.iter().zip(&f32s).enumerate() {
                    let ok = match dtype {
                        DType::F32 => a == b,
                        DType::F16 => (a - b).abs() <= b.abs() * 1e-3 + 1e-4,
                        // u8 saturates outside [0, 1]
                        DType::U8 => (a - b.clamp(0.0, 1.0)).abs() <= 0.5 / 255.0 + 1e-6,
                    };
                    assert!(
                        ok,
                        "case {case} {dtype:?} {layout:?} element {k}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn fast_path_matches_the_reference() {
    let mut r = rng(7);
    for case in 0..66u64 {
        let c = if case % 3 == 0 { 1 } else { 3 };
        // mostly small shapes (every border case), a few large ones (long
        // runs of interior columns, sampled eight at a time)
        let hi = if case >= 60 { 300 } else { 50 };
        let (h, w) = (r.random_range(1..hi), r.random_range(1..hi));
        let (ho, wo) = (r.random_range(1..hi / 2), r.random_range(1..hi / 2));
        let img = random_image(&mut r, h, w, c);
        let with_noise = case % 2 == 1;
        let p = random_params(&mut r, with_noise);
        let layout = if case % 4 < 2 {
            Layout::Nchw
        } else {
            Layout::Nhwc
        };
        for dtype in [DType::F32, DType::U8, DType::F16] {
            let spec = OutputSpec::new(Size::new(ho, wo), c)
                .with_normalization(vec![0.25; c as usize], vec![0.5; c as usize])
                .with_dtype(dtype)
                .with_layout(layout);
            let fast = run(&img, h, w, &p, &spec, case);
            let slow = run_ref(&img, h, w, &p, &spec, case);
            // the build for CPUs without AVX2 gives the same bytes
            let mut portable = vec![0xEF; spec.sample_bytes()];
            let src = ImageView::new(h, w, c, &img).unwrap();
            augment_into_portable(src, &p, noise(case), &spec, &mut portable);
            assert_eq!(
                portable, fast,
                "case {case} {dtype:?}: portable build differs"
            );
            if !with_noise {
                assert_eq!(fast, slow, "case {case} {dtype:?}: not bit-identical");
                continue;
            }
            // the noise differs by the last bit of ln/sin/cos only
            let (a, b) = (
                sample_to_chw_f32(&fast, &spec),
                sample_to_chw_f32(&slow, &spec),
            );
            let tol = match dtype {
                DType::F32 => p.sigma * MAX_NORMAL_ERROR / 0.5 + 1e-6,
                DType::F16 => 2e-3 * 8.0,
                DType::U8 => 1.0 / 255.0 + 1e-6,
            };
            for (k, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (x - y).abs() <= tol,
                    "case {case} {dtype:?} element {k}: {x} vs {y}"
                );
            }
        }
    }
}

/// `augment_into` (whatever build this CPU runs) of an RGB image to f32
/// NCHW with ImageNet normalisation gives the portable build's bytes.
fn assert_matches_portable(
    img: &[u8],
    (h, w): (u32, u32),
    p: &SampleParams,
    (ho, wo): (u32, u32),
    case: u64,
) {
    let spec = OutputSpec::new(Size::new(ho, wo), 3)
        .with_normalization(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]);
    let fast = run(img, h, w, p, &spec, case);
    let src = ImageView::new(h, w, 3, img).unwrap();
    let mut portable = vec![0xEF; spec.sample_bytes()];
    augment_into_portable(src, p, noise(case), &spec, &mut portable);
    assert!(
        fast == portable,
        "case {case}: {h}x{w} -> {ho}x{wo} {p:?}: builds differ"
    );
}

/// The fused sixteen-pixel path (AVX-512 CPUs; three channels, f32 NCHW,
/// flip 0 or 1) gives exactly the portable build's bytes, with and without
/// noise, on shapes that put many blocks half across the border (rotations,
/// zoom-outs), fully inside (zoom-ins), and sources of one or two rows.
#[test]
fn sixteen_pixel_path_matches_the_portable_build() {
    let mut r = rng(21);
    for case in 0..120u64 {
        let (h, w) = match case % 4 {
            0 => (r.random_range(1..4), r.random_range(1..300)),
            1 => (r.random_range(1..300), r.random_range(1..4)),
            _ => (r.random_range(2..260), r.random_range(2..260)),
        };
        let (ho, wo) = (r.random_range(1..70), r.random_range(16..140));
        let img = random_image(&mut r, h, w, 3);
        let mut p = random_params(&mut r, case % 2 == 1);
        p.flip = (case % 3 == 0) as u32 as f32;
        if case % 5 == 0 {
            p.geometry.angle = 0.0; // long interior runs
        }
        assert_matches_portable(&img, (h, w), &p, (ho, wo), case);
    }
}

#[test]
fn axis_aligned_maps_match_the_portable_build() {
    // No rotation: the AVX-512 build blends each source row once and then
    // the rows (separably). Crops reaching past every edge, strong down-
    // and upscales (windowed and gathered source reads), tiny images (reads
    // near the end of the data), flips and noise: the portable bytes.
    let mut r = rng(23);
    for case in 0..300u64 {
        let (h, w) = match case % 6 {
            0 => (r.random_range(1..5), r.random_range(1..40)),
            1 => (r.random_range(1..40), r.random_range(1..5)),
            2 => (r.random_range(200..700), r.random_range(400..1300)),
            _ => (r.random_range(2..300), r.random_range(2..300)),
        };
        let (ho, wo) = (r.random_range(1..90), r.random_range(16..240));
        let img = random_image(&mut r, h, w, 3);
        let p = SampleParams {
            geometry: Geometry {
                area: r.random_range(0.02f32..1.0),
                aspect: r.random_range(0.3f32..3.0),
                center: [r.random_range(-1.6..1.6), r.random_range(-1.6..1.6)],
                angle: if case % 7 == 0 { -0.0 } else { 0.0 },
            },
            flip: (case % 2) as f32,
            sigma: if case % 3 == 0 {
                r.random_range(0.0f32..0.2)
            } else {
                0.0
            },
        };
        assert_matches_portable(&img, (h, w), &p, (ho, wo), case);
    }
}

#[test]
fn large_samples_in_aligned_buffers_give_the_portable_bytes() {
    // Large f32 NCHW samples written to a cache-line aligned buffer take
    // the streaming-store path on CPUs with AVX-512 (border lanes fixed up
    // in registers first); unaligned and small outputs take plain stores.
    // Every path must give the portable build's bytes.
    let mut r = rng(22);
    for case in 0..12u64 {
        let (h, w) = (r.random_range(60..420), r.random_range(60..420));
        let (ho, wo) = [(224, 224), (160, 176), (200, 160), (256, 250)][case as usize % 4];
        let img = random_image(&mut r, h, w, 3);
        let mut p = random_params(&mut r, case % 2 == 0);
        p.flip = (case % 3 == 0) as u32 as f32;
        let spec = OutputSpec::new(Size::new(ho, wo), 3)
            .with_normalization(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]);
        let src = ImageView::new(h, w, 3, &img).unwrap();
        let mut portable = vec![0xEF; spec.sample_bytes()];
        augment_into_portable(src, &p, noise(case), &spec, &mut portable);
        let mut aligned = metaug::loader::HostBuffer::zeroed(spec.sample_bytes() + 64);
        assert_eq!(aligned.bytes().as_ptr() as usize % 64, 0);
        for skip in [0, 4] {
            let out = &mut aligned.bytes_mut()[skip..skip + spec.sample_bytes()];
            augment_into(src, &p, noise(case), &spec, out);
            assert!(
                *out == portable[..],
                "case {case} (offset {skip}): {h}x{w} -> {ho}x{wo} {p:?}: builds differ"
            );
        }
    }
}

#[test]
fn blended_flip_is_the_blend_of_the_two_views() {
    let mut r = rng(8);
    let (h, w, c) = (12u32, 10u32, 3u32);
    let img = random_image(&mut r, h, w, c);
    let spec = OutputSpec::new(Size::new(8, 9), c);
    let mut p = random_params(&mut r, false);
    p.flip = 0.0;
    let a = sample_to_chw_f32(&run(&img, h, w, &p, &spec, 0), &spec);
    p.flip = 1.0;
    let b = sample_to_chw_f32(&run(&img, h, w, &p, &spec, 0), &spec);
    p.flip = 0.3;
    let m = sample_to_chw_f32(&run(&img, h, w, &p, &spec, 0), &spec);
    for k in 0..m.len() {
        assert!((m[k] - (0.7 * a[k] + 0.3 * b[k])).abs() < 1e-6);
    }
}

#[test]
fn any_thread_gives_the_same_bytes() {
    let mut r = rng(9);
    let img = random_image(&mut r, 30, 40, 3);
    let p = random_params(&mut r, true);
    let spec = OutputSpec::new(Size::new(24, 24), 3);
    let here = run(&img, 30, 40, &p, &spec, 3);
    let there = std::thread::scope(|s| s.spawn(|| run(&img, 30, 40, &p, &spec, 3)).join().unwrap());
    assert_eq!(here, there);
}

#[test]
fn absurd_parameters_do_not_panic() {
    let mut r = rng(10);
    let img = random_image(&mut r, 17, 23, 3);
    let spec = OutputSpec::new(Size::new(16, 24), 3);
    let weird = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -1e30,
        0.0,
        1e-30,
    ];
    for (k, v) in weird.iter().enumerate() {
        for field in 0..6 {
            let mut p = SampleParams::IDENTITY;
            match field {
                0 => p.geometry.area = *v,
                1 => p.geometry.aspect = *v,
                2 => p.geometry.center = [*v, 0.5],
                3 => p.geometry.angle = *v,
                4 => p.flip = *v,
                _ => p.sigma = *v,
            }
            let fast = run(&img, 17, 23, &p, &spec, k as u64);
            let slow = run_ref(&img, 17, 23, &p, &spec, k as u64);
            if field != 5 {
                // no noise involved: the same bits, NaN included
                assert_eq!(fast, slow, "field {field} = {v}");
            }
        }
    }
}

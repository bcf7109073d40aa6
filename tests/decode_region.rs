//! Region-of-interest decoding (issue 20): a sample augmented from the JPEG
//! region its map reads is bit for bit the sample augmented from the full
//! decode, on every one of the 300 ImageNet photos, for every policy op
//! alone and together, many seeds, on each CPU code path (AVX-512 f32 NCHW,
//! AVX2 u8 NHWC, the scalar reference); and the loader's batch digests with
//! region decode equal its digests with whole-image decode. The scaled mode
//! is checked to stay close to the full decode and to decode fewer pixels.

mod common;

use metaug::decode::{
    decode_bytes, decode_bytes_region, DecodeLimits, DecodeScale, Encoding, Pixels, RegionDecode,
};
use metaug::ops::philox::STREAM_NOISE;
use metaug::ops::{
    augment_into, augment_reference, augment_window_into, augment_window_reference, DType, Layout,
    OutputSpec, PhiloxStream, SampleParams, Size, SourceWindow,
};
use metaug::policy::Policy;
use rayon::prelude::*;

/// A photo: its file name, bytes and declared shape.
type Photo = (String, Vec<u8>, [u32; 3]);

/// The photos, or `None` (with a message) when `../shared/data` is not there.
fn photos() -> Option<Vec<Photo>> {
    let dir = common::shared_data().join("photos-jpeg");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("{} not found: skipped", dir.display());
        return None;
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "JPEG"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 300, "the photo set has 300 JPEGs");
    let limits = DecodeLimits::default();
    Some(
        files
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                let shape = metaug::decode::probe_bytes(&bytes, Encoding::Jpeg, &limits).unwrap();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    bytes,
                    shape,
                )
            })
            .collect(),
    )
}

/// Each op alone at a large magnitude, all of them, and the default policy.
fn policies() -> Vec<(&'static str, Policy)> {
    let only = |crop: f64, rot: f64, flip: f64, noise: f64| {
        Policy::from_values((crop, 0.08), (rot, 45.0), flip, (noise, 0.1), 0.5).unwrap()
    };
    vec![
        ("crop", only(1.0, 0.0, 0.0, 0.0)),
        ("rotate", only(0.0, 1.0, 0.0, 0.0)),
        ("flip", only(0.0, 0.0, 1.0, 0.0)),
        ("noise", only(0.0, 0.0, 0.0, 1.0)),
        ("all", only(1.0, 1.0, 1.0, 1.0)),
        ("default", Policy::default_policy()),
    ]
}

/// The whole image decoded, with `channels` channels.
fn full_decode(bytes: &[u8], shape: [u32; 3], channels: u32) -> Pixels<'_> {
    decode_bytes(
        bytes,
        Encoding::Jpeg,
        shape,
        channels,
        &DecodeLimits::default(),
    )
    .unwrap()
}

/// The region of `bytes` that `params` reads for `spec`, decoded, and where
/// it sits in the image.
fn region_decode<'a>(
    bytes: &'a [u8],
    shape: [u32; 3],
    params: &SampleParams,
    spec: &OutputSpec,
    mode: RegionDecode,
) -> (Pixels<'a>, SourceWindow) {
    decode_bytes_region(
        bytes,
        Encoding::Jpeg,
        shape,
        spec.channels,
        &DecodeLimits::default(),
        &params.geometry,
        spec.size,
        mode,
    )
    .unwrap()
}

/// Augments `full` (the whole decode of `bytes`, with `spec.channels`
/// channels, decoded once per photo by the caller) and the region decode of
/// `bytes`; returns both outputs and the decoded pixel counts (full, region).
#[allow(clippy::too_many_arguments)]
fn both(
    full: &Pixels,
    bytes: &[u8],
    shape: [u32; 3],
    params: &SampleParams,
    noise: PhiloxStream,
    spec: &OutputSpec,
    mode: RegionDecode,
    reference: bool,
) -> (Vec<u8>, Vec<u8>, u64, u64) {
    assert_eq!(full.view().channels, spec.channels);
    let mut a = vec![0u8; spec.sample_bytes()];
    let mut b = vec![0u8; spec.sample_bytes()];
    let (region, window) = region_decode(bytes, shape, params, spec, mode);
    if reference {
        augment_reference(full.view(), params, noise, spec, &mut a);
        augment_window_reference(region.view(), &window, params, noise, spec, &mut b);
    } else {
        augment_into(full.view(), params, noise, spec, &mut a);
        augment_window_into(region.view(), &window, params, noise, spec, &mut b);
    }
    (a, b, pixel_count(full), pixel_count(&region))
}

/// How many pixels a decode holds.
fn pixel_count(pixels: &Pixels) -> u64 {
    let v = pixels.view();
    v.height as u64 * v.width as u64
}

#[test]
fn region_decode_is_bit_exact_on_every_photo() {
    let Some(photos) = photos() else { return };
    let specs = [
        // the AVX-512 path (where the CPU has it), ImageNet-style
        OutputSpec::new(Size::new(224, 224), 3)
            .with_normalization(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
        // the AVX2 / portable path, odd sizes, u8 HWC
        OutputSpec::new(Size::new(61, 83), 3)
            .with_dtype(DType::U8)
            .with_layout(Layout::Nhwc),
        // grey output (RGB -> luma after the region decode)
        OutputSpec::new(Size::new(32, 32), 1),
    ];
    let policies = policies();
    // The photos in parallel (rayon): this is the suite's longest test, and
    // it would otherwise run on one core after the others have finished.
    let (full_px, region_px, cases) = photos
        .par_iter()
        .enumerate()
        .map(|(k, (file, bytes, shape))| {
            let (mut full_px, mut region_px, mut cases) = (0u64, 0u64, 0u64);
            let (rgb, grey) = (full_decode(bytes, *shape, 3), full_decode(bytes, *shape, 1));
            for (p, (name, policy)) in policies.iter().enumerate() {
                // fresh seeds for every photo and policy, two per spec
                for (s, spec) in specs.iter().enumerate() {
                    let full = if spec.channels == 1 { &grey } else { &rgb };
                    for r in 0..2u64 {
                        let seed =
                            0x5eed ^ (p as u64) << 40 ^ (k as u64) << 8 ^ (s as u64) << 4 ^ r;
                        let params = policy.sample_hard(seed, 3, k as u64);
                        let noise = PhiloxStream::new(seed, 3, k as u64, STREAM_NOISE);
                        let (a, b, f, g) = both(
                            full,
                            bytes,
                            *shape,
                            &params,
                            noise,
                            spec,
                            RegionDecode::default(),
                            false,
                        );
                        assert!(
                            a == b,
                            "{file}: policy {name}, spec {s}, seed {seed:#x}: region decode \
                             differs from full decode ({params:?})"
                        );
                        full_px += f;
                        region_px += g;
                        cases += 1;
                    }
                }
            }
            (full_px, region_px, cases)
        })
        .reduce(|| (0, 0, 0), |x, y| (x.0 + y.0, x.1 + y.1, x.2 + y.2));
    assert_eq!(cases, 300 * 6 * 3 * 2);
    eprintln!(
        "{cases} samples bit-exact; decoded {:.3} of the full images' pixels",
        region_px as f64 / full_px as f64
    );
    assert!(region_px < full_px, "region decode saved no pixels");
}

/// The photos rewritten with a restart marker after every MCU: every one
/// keeps its pixels, and region decode then reads only the region's MCUs
/// (a virtual JPEG), bit for bit what the full decode of the original gives
/// after augmentation.
#[test]
fn region_decode_of_photos_cut_at_every_mcu_is_bit_exact() {
    let Some(photos) = photos() else { return };
    let limits = DecodeLimits::default();
    let spec = OutputSpec::new(Size::new(61, 83), 3)
        .with_dtype(DType::U8)
        .with_layout(Layout::Nhwc);
    let policies = policies();
    // The photos in parallel, as in the test above.
    let (bytes_before, bytes_after, cut_px, crop_px, cases) = photos
        .par_iter()
        .enumerate()
        .map(|(k, (file, bytes, shape))| {
            let cut = metaug::decode::with_restart_markers(bytes, &limits)
                .unwrap()
                .unwrap_or_else(|| panic!("{file}: restart markers changed the pixels"));
            assert!(metaug::decode::cuts_at_every_mcu(&cut, &limits), "{file}");
            let (mut cut_px, mut crop_px, mut cases) = (0u64, 0u64, 0u64);
            let full = full_decode(bytes, *shape, 3);
            for (p, (name, policy)) in policies.iter().enumerate() {
                let seed = 0xc07 ^ (p as u64) << 40 ^ (k as u64) << 8;
                let params = policy.sample_hard(seed, 1, k as u64);
                let noise = PhiloxStream::new(seed, 1, k as u64, STREAM_NOISE);
                // `want`: the original's full decode, augmented
                let (want, got, _, g) = both(
                    &full,
                    &cut,
                    *shape,
                    &params,
                    noise,
                    &spec,
                    RegionDecode::default(),
                    false,
                );
                assert!(
                    got == want,
                    "{file}: policy {name}, seed {seed:#x}: the virtual JPEG's sample differs \
                     from the original's full decode ({params:?})"
                );
                // the crop path's region of the original, for its pixel count
                let (crop, _) =
                    region_decode(bytes, *shape, &params, &spec, RegionDecode::default());
                cut_px += g;
                crop_px += pixel_count(&crop);
                cases += 1;
            }
            (bytes.len(), cut.len(), cut_px, crop_px, cases)
        })
        .reduce(
            || (0, 0, 0, 0, 0),
            |x, y| (x.0 + y.0, x.1 + y.1, x.2 + y.2, x.3 + y.3, x.4 + y.4),
        );
    assert_eq!(cases, 300 * 6);
    eprintln!(
        "{cases} samples bit-exact; files {:.3} of the originals' bytes; decoded {:.3} of the \
         crop path's pixels",
        bytes_after as f64 / bytes_before as f64,
        cut_px as f64 / crop_px as f64
    );
    assert!(cut_px >= crop_px, "whole MCUs hold at least the crop");
}

#[test]
fn region_decode_matches_the_scalar_reference() {
    let Some(photos) = photos() else { return };
    let spec = OutputSpec::new(Size::new(40, 56), 3).with_dtype(DType::F16);
    let policy = &policies()[4].1;
    for (k, (file, bytes, shape)) in photos.iter().enumerate().step_by(7) {
        let params = policy.sample_hard(99, 0, k as u64);
        let noise = PhiloxStream::new(99, 0, k as u64, STREAM_NOISE);
        let (a, b, _, _) = both(
            &full_decode(bytes, *shape, spec.channels),
            bytes,
            *shape,
            &params,
            noise,
            &spec,
            RegionDecode::default(),
            true,
        );
        assert!(a == b, "{file}: reference path differs ({params:?})");
    }
}

#[test]
fn scaled_decode_is_close_and_smaller() {
    let Some(photos) = photos() else { return };
    let spec = OutputSpec::new(Size::new(112, 112), 3).with_dtype(DType::U8);
    let policy = Policy::default_policy();
    let auto = RegionDecode {
        crop: true,
        scale: DecodeScale::Auto,
    };
    let (mut sum, mut n, mut max, mut scaled) = (0u64, 0u64, 0u8, 0usize);
    let (mut full_px, mut region_px) = (0u64, 0u64);
    for (k, (_, bytes, shape)) in photos.iter().enumerate() {
        let params = SampleParams {
            sigma: 0.0,
            ..policy.sample_hard(7, 0, k as u64)
        };
        let noise = PhiloxStream::new(7, 0, k as u64, STREAM_NOISE);
        let full = full_decode(bytes, *shape, spec.channels);
        let (a, b, f, g) = both(&full, bytes, *shape, &params, noise, &spec, auto, false);
        if f > g * 3 {
            scaled += 1;
        }
        full_px += f;
        region_px += g;
        for (x, y) in a.iter().zip(&b) {
            let d = x.abs_diff(*y);
            sum += d as u64;
            n += 1;
            max = max.max(d);
        }
    }
    let mean = sum as f64 / n as f64;
    eprintln!(
        "scaled decode: {scaled} of 300 photos at a reduced scale, {:.3} of the pixels, \
         mean |diff| {mean:.3} / 255, max {max}",
        region_px as f64 / full_px as f64
    );
    assert!(
        scaled > 100,
        "only {scaled} photos were decoded at a reduced scale"
    );
    // Bilinear resampling of the full image aliases where the DCT-scaled
    // image is filtered: a few levels apart on average, more at edges.
    assert!(
        mean < 8.0,
        "mean difference {mean} / 255 from the full decode"
    );
}

/// The scaled map is aligned: at scale 1/2 the DCT-scaled decode is close
/// to the full decode averaged over 2×2 blocks (what a 1/2 IDCT
/// approximates), sampled through the same scaled map, and much closer to
/// it than to the full-resolution sample. A half-pixel shift of the map
/// would break the first.
#[test]
fn scaled_map_is_aligned_with_a_box_downscale() {
    let Some(photos) = photos() else { return };
    let spec = OutputSpec::new(Size::new(112, 112), 3).with_dtype(DType::U8);
    let l = DecodeLimits::default();
    let g = metaug::ops::Geometry {
        area: 0.8,
        aspect: 1.1,
        center: [0.05, -0.03],
        angle: 0.1,
    };
    let params = SampleParams {
        geometry: g,
        flip: 0.0,
        sigma: 0.0,
    };
    let noise = || PhiloxStream::new(0, 0, 0, STREAM_NOISE);
    let mean_diff = |x: &[u8], y: &[u8]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| p.abs_diff(*q) as f64)
            .sum::<f64>()
            / x.len() as f64
    };
    let (mut to_box, mut to_full, mut n) = (0.0, 0.0, 0.0);
    for (_, bytes, shape) in &photos {
        let auto = RegionDecode {
            crop: true,
            scale: DecodeScale::Auto,
        };
        let (r, w) =
            decode_bytes_region(bytes, Encoding::Jpeg, *shape, 3, &l, &g, spec.size, auto).unwrap();
        if w.shrink != 1 || shape[0] % 2 != 0 || shape[1] % 2 != 0 {
            continue;
        }
        let full = full_decode(bytes, *shape, 3);
        let v = full.view();
        let (h2, w2) = (v.height as usize / 2, v.width as usize / 2);
        let at = |y: usize, x: usize, c: usize| v.data[(y * v.width as usize + x) * 3 + c] as u32;
        let mut boxed = vec![0u8; h2 * w2 * 3];
        for i in 0..h2 {
            for j in 0..w2 {
                for c in 0..3 {
                    let s = at(2 * i, 2 * j, c)
                        + at(2 * i, 2 * j + 1, c)
                        + at(2 * i + 1, 2 * j, c)
                        + at(2 * i + 1, 2 * j + 1, c);
                    boxed[(i * w2 + j) * 3 + c] = ((s + 2) / 4) as u8;
                }
            }
        }
        let whole_half = metaug::ops::SourceWindow {
            origin: [0, 0],
            ..w
        };
        let boxed = metaug::decode::ImageView::new(h2 as u32, w2 as u32, 3, &boxed).unwrap();
        let (mut a, mut b, mut c) = (
            vec![0u8; spec.sample_bytes()],
            vec![0; spec.sample_bytes()],
            vec![0; spec.sample_bytes()],
        );
        augment_window_into(boxed, &whole_half, &params, noise(), &spec, &mut a);
        augment_window_into(r.view(), &w, &params, noise(), &spec, &mut b);
        augment_into(v, &params, noise(), &spec, &mut c);
        to_box += mean_diff(&a, &b);
        to_full += mean_diff(&c, &b);
        n += 1.0;
    }
    let (to_box, to_full) = (to_box / n, to_full / n);
    eprintln!("{n} photos at 1/2: mean |diff| to the 2x2 box {to_box:.3}, to full resolution {to_full:.3}");
    assert!(n >= 20.0, "only {n} photos decoded at 1/2");
    assert!(
        to_box < 2.5 && to_box < 0.5 * to_full,
        "{to_box} vs {to_full}"
    );
}

/// The loader over all 300 photos, 2 epochs, default policy, 224×224 f32:
/// every batch's SHA-256 (images, labels, indices) with region decode equals
/// the one with whole-image decode (the same decoder), on 2 threads; and so
/// does region decode of the photos packed with `restart_markers` (virtual
/// JPEGs of each sample's MCUs).
#[test]
fn loader_digests_with_region_decode_equal_whole_decode() {
    let Some(_) = photos() else { return };
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("in");
    std::fs::create_dir_all(&flat).unwrap();
    let src = common::shared_data().join("photos-jpeg");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "JPEG") {
            std::os::unix::fs::symlink(&p, flat.join(p.file_name().unwrap())).unwrap();
        }
    }
    let pack = |name: &str, restart_markers: bool| {
        let options = metaug::pack::FolderOptions {
            flat: true,
            restart_markers,
            ..metaug::pack::FolderOptions::default()
        };
        let out = dir.path().join(name);
        metaug::pack::pack_folder(&flat, &out, &options).unwrap();
        std::sync::Arc::new(metaug::shard::Dataset::open(out).unwrap())
    };
    let (plain, cut) = (pack("packed", false), pack("packed-rst", true));
    let limits = DecodeLimits::default();
    for i in 0..cut.len() {
        let r = cut.record(i).unwrap();
        assert!(
            metaug::decode::cuts_at_every_mcu(r.bytes, &limits),
            "record {i}"
        );
    }
    let digests = |ds: &std::sync::Arc<metaug::shard::Dataset>, mode: RegionDecode| {
        metaug::loader::Loader::builder(ds.clone())
            .batch_size(64)
            .size(224, 224)
            .channels(3)
            .normalize(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
            .policy(Policy::default_policy())
            .region_decode(mode)
            .threads(2)
            .seed(11)
            .epochs(2)
            .build()
            .unwrap()
            .map(|b| common::batch_digest(&b.unwrap()))
            .collect::<Vec<[u8; 32]>>()
    };
    let region = digests(&plain, RegionDecode::default());
    let whole = digests(&plain, RegionDecode::WHOLE);
    assert_eq!(region.len(), 10);
    assert_eq!(
        region, whole,
        "batch digests differ between region and whole decode"
    );
    let virtual_region = digests(&cut, RegionDecode::default());
    assert_eq!(
        virtual_region, whole,
        "batch digests of the photos packed with restart markers differ"
    );
}

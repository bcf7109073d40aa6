//! `metaug::policy`: hard sampling statistics and bounds, determinism,
//! and the policy file (round trip and rejection of bad files).

use std::collections::HashMap;

use metaug::ops::philox::{PhiloxStream, STREAM_PARAMS};
use metaug::ops::{Geometry, SampleParams};
use metaug::policy::{self, draws, Family, Policy, N_PHI};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const N: u64 = 40_000;

fn within(count: u64, p: f64, n: u64) -> bool {
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (count as f64 - n as f64 * p).abs() <= 4.0 * sd + 1.0
}

#[test]
fn draws_are_the_three_params_blocks() {
    let u = draws(5, 2, 77);
    let s = PhiloxStream::new(5, 2, 77, STREAM_PARAMS);
    for b in 0..3 {
        assert_eq!(u[4 * b..4 * b + 4], s.uniforms(b as u32));
    }
}

#[test]
fn hard_frequencies_match_the_probabilities() {
    for policy in [
        Policy::default_policy(),
        Policy::from_values((0.1, 0.5), (0.9, 30.0), 0.25, (0.6, 0.1), 0.5).unwrap(),
    ] {
        let (mut crop, mut rot, mut flip, mut noise) = (0, 0, 0, 0);
        for s in 0..N {
            let p = policy.sample_hard(11, 3, s);
            crop += (p.geometry.area != 1.0 || p.geometry.aspect != 1.0) as u64;
            rot += (p.geometry.angle != 0.0) as u64;
            flip += (p.flip == 1.0) as u64;
            noise += (p.sigma > 0.0) as u64;
        }
        for (name, count, p) in [
            ("crop", crop, policy.crop_p()),
            ("rotate", rot, policy.rotate_p()),
            ("flip", flip, policy.flip_p()),
            ("noise", noise, policy.noise_p()),
        ] {
            assert!(
                within(count, p as f64, N),
                "{name}: {count} of {N} for p = {p}"
            );
        }
    }
}

#[test]
fn hard_magnitudes_stay_in_bounds() {
    let policy = Policy::default_policy();
    let (s_min, max_deg, max_sigma) = (
        policy.crop_min_area(),
        policy.rotate_max_degrees(),
        policy.noise_max_sigma(),
    );
    let (mut area_sum, mut crops, mut angle_sum) = (0.0f64, 0u64, 0.0f64);
    for s in 0..N {
        let p = policy.sample_hard(1, 0, s);
        let g = p.geometry;
        assert!(g.area >= s_min - 1e-6 && g.area <= 1.0, "{g:?}");
        assert!(
            g.aspect >= 0.75 - 1e-6 && g.aspect <= 4.0 / 3.0 + 1e-6,
            "{g:?}"
        );
        // the crop box lies inside the image
        let (cw, ch) = g.crop_size();
        assert!((g.center[0] as f64).abs() <= 1.0 - cw + 1e-6, "{g:?}");
        assert!((g.center[1] as f64).abs() <= 1.0 - ch + 1e-6, "{g:?}");
        assert!(g.angle.abs() <= max_deg.to_radians() + 1e-6, "{g:?}");
        assert!(p.flip == 0.0 || p.flip == 1.0);
        assert!(p.sigma >= 0.0 && p.sigma <= max_sigma, "{p:?}");
        if g.area != 1.0 || g.aspect != 1.0 {
            area_sum += g.area as f64;
            crops += 1;
        }
        angle_sum += g.angle as f64;
    }
    // area uniform on [s_min, 1]; angle symmetric about 0
    let mean_area = area_sum / crops as f64;
    assert!(
        (mean_area - (1.0 + s_min as f64) / 2.0).abs() < 0.01,
        "{mean_area}"
    );
    assert!((angle_sum / N as f64).abs() < 0.003, "{angle_sum}");
}

#[test]
fn none_never_augments_and_sampling_is_deterministic() {
    let none = Policy::none();
    for s in 0..1000 {
        assert_eq!(none.sample_hard(3, 1, s), SampleParams::IDENTITY);
    }
    let d = Policy::default_policy();
    assert_eq!(d.sample_hard(3, 1, 5), d.sample_hard(3, 1, 5));
    let differ = (0..50)
        .filter(|s| d.sample_hard(3, 1, *s) != d.sample_hard(3, 2, *s))
        .count();
    assert!(differ > 40);
}

#[test]
fn hard_params_follow_the_formulas() {
    let pol = Policy::default_policy();
    // all gates open (u_gate tiny), known magnitudes
    let mut u = [1e-4f32; 12];
    u[1] = 0.5;
    u[2] = 0.25;
    u[3] = 0.9;
    u[4] = 0.1;
    u[6] = 0.75;
    u[9] = 0.5;
    let p = pol.hard_params(&u);
    let area = 1.0 - 0.5 * (1.0 - pol.crop_min_area());
    assert_eq!(p.geometry.area, area);
    let aspect = ((0.75f64).ln() + 0.25 * (16.0f64 / 9.0).ln()).exp();
    assert!((p.geometry.aspect as f64 - aspect).abs() < 1e-6);
    let (cw, ch) = Geometry {
        area,
        aspect: p.geometry.aspect,
        ..Geometry::IDENTITY
    }
    .crop_size();
    assert!((p.geometry.center[0] as f64 - (1.0 - cw) * 0.8).abs() < 1e-6);
    assert!((p.geometry.center[1] as f64 + (1.0 - ch) * 0.8).abs() < 1e-6);
    assert!((p.geometry.angle - pol.rotate_max_degrees().to_radians() * 0.5).abs() < 1e-7);
    assert_eq!(p.flip, 1.0);
    assert_eq!(p.sigma, pol.noise_max_sigma() * 0.5);
    // all gates closed
    let p = pol.hard_params(&[0.9999; 12]);
    assert_eq!(p, SampleParams::IDENTITY);
}

#[test]
fn file_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    for pol in [
        Policy::default_policy(),
        Policy::none(),
        Policy {
            phi: [0.1, -2.0, 3.5, -7.25, f32::NEG_INFINITY, 1e-8, 4.0],
            tau: 0.123_456_79,
            family: Family::Independent,
        },
        Policy::trivial_augment(),
        Policy {
            phi: [0.7, -2.0, f32::NEG_INFINITY, -1.5, -0.25, 1.0, -3.0],
            tau: 0.25,
            family: Family::OneOp,
        },
    ] {
        let path = dir.path().join("p.safetensors");
        pol.save(&path).unwrap();
        let back = Policy::load(&path).unwrap();
        assert_eq!(back.tau.to_bits(), pol.tau.to_bits());
        for k in 0..N_PHI {
            assert_eq!(back.phi[k].to_bits(), pol.phi[k].to_bits());
        }
        assert_eq!(back.family, pol.family);
        assert_eq!(Policy::from_arg(path.to_str().unwrap()).unwrap(), pol);
        // independent policies keep version 1 files, byte for byte as before
        // families; a one-op file is version 2, refused by older readers
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let v1 = text.contains(r#""version":"1""#);
        assert_eq!(v1, pol.family == Family::Independent, "{text}");
        assert_eq!(text.contains("family"), !v1, "{text}");
    }
    assert_eq!(Policy::from_arg("none").unwrap(), Policy::none());
    assert_eq!(
        Policy::from_arg("default").unwrap(),
        Policy::default_policy()
    );
    let e = Policy::from_arg("/no/such/policy.safetensors").unwrap_err();
    assert!(e.to_string().contains("/no/such/policy.safetensors"), "{e}");
}

#[test]
fn describe_speaks_human_units() {
    let d = Policy::default_policy().describe();
    for want in ["p=0.800", "0.350", "15.00°", "p=0.300", "0.0500", "tau"] {
        assert!(d.contains(want), "{want:?} not in\n{d}");
    }
    assert!(Policy::none().describe().contains("p=0.000"));
}

/// A safetensors file with the given tensors and metadata.
fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], meta: &[(&str, &str)]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

fn phi_bytes(phi: &[f32]) -> Vec<u8> {
    phi.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn bad_files_are_rejected_with_a_reason() {
    let good_meta = [
        ("format", "metaug-policy"),
        ("version", "1"),
        ("ops", "crop,rotate,flip,noise"),
        ("tau", "0.5"),
    ];
    let good_phi = phi_bytes(&Policy::default_policy().phi);
    let phi = |b: Vec<u8>| vec![("phi", Dtype::F32, vec![7], b)];
    let with = |k: &str, v: &str| {
        let mut m: Vec<(&str, &str)> = good_meta.to_vec();
        m.retain(|(kk, _)| *kk != k);
        let (k, v) = (k.to_string().leak() as &str, v.to_string().leak() as &str);
        if !v.is_empty() {
            m.push((k, v));
        }
        m
    };
    let path = std::path::Path::new("test.safetensors");
    // sanity: the good file parses
    Policy::from_bytes(&file(&phi(good_phi.clone()), &good_meta), path).unwrap();
    let mut bad_phi = Policy::default_policy().phi;
    bad_phi[1] = f32::NEG_INFINITY; // a magnitude may not be -inf
    let mut nan_phi = Policy::default_policy().phi;
    nan_phi[3] = f32::NAN;
    let mut inf_logit = Policy::default_policy().phi;
    inf_logit[0] = f32::INFINITY;
    let shard = file(
        &[
            ("bytes", Dtype::U8, vec![3], vec![1, 2, 3]),
            ("labels", Dtype::I64, vec![1], vec![0; 8]),
        ],
        &[("format", "metaug-shard"), ("version", "1")],
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("shard", shard, "shard"),
        (
            "no format",
            file(&phi(good_phi.clone()), &with("format", "")),
            "format",
        ),
        (
            "other format",
            file(&phi(good_phi.clone()), &with("format", "pytorch")),
            "format",
        ),
        (
            "version",
            file(&phi(good_phi.clone()), &with("version", "2")),
            "version",
        ),
        (
            "version 3",
            file(&phi(good_phi.clone()), &with("version", "3")),
            "version",
        ),
        (
            "family in version 1",
            file(&phi(good_phi.clone()), &with("family", "one-op")),
            "family",
        ),
        (
            "unknown family",
            file(
                &phi(good_phi.clone()),
                &[
                    ("format", "metaug-policy"),
                    ("version", "2"),
                    ("family", "two-ops"),
                    ("ops", "crop,rotate,flip,noise"),
                    ("tau", "0.5"),
                ],
            ),
            "two-ops",
        ),
        (
            "ops",
            file(&phi(good_phi.clone()), &with("ops", "crop,flip")),
            "ops",
        ),
        (
            "no tau",
            file(&phi(good_phi.clone()), &with("tau", "")),
            "tau",
        ),
        (
            "tau text",
            file(&phi(good_phi.clone()), &with("tau", "warm")),
            "tau",
        ),
        (
            "tau zero",
            file(&phi(good_phi.clone()), &with("tau", "0")),
            "tau",
        ),
        (
            "tau nan",
            file(&phi(good_phi.clone()), &with("tau", "NaN")),
            "tau",
        ),
        (
            "tau inf",
            file(&phi(good_phi.clone()), &with("tau", "inf")),
            "tau",
        ),
        (
            "magnitude -inf",
            file(&phi(phi_bytes(&bad_phi)), &good_meta),
            "crop_raw_min_area",
        ),
        (
            "nan",
            file(&phi(phi_bytes(&nan_phi)), &good_meta),
            "rotate_raw_max_angle",
        ),
        (
            "+inf logit",
            file(&phi(phi_bytes(&inf_logit)), &good_meta),
            "crop_logit_p",
        ),
        (
            "f64",
            file(&[("phi", Dtype::F64, vec![7], vec![0; 56])], &good_meta),
            "F32",
        ),
        (
            "shape",
            file(&[("phi", Dtype::F32, vec![6], vec![0; 24])], &good_meta),
            "[7]",
        ),
        (
            "2d",
            file(&[("phi", Dtype::F32, vec![1, 7], vec![0; 28])], &good_meta),
            "[7]",
        ),
        (
            "extra tensor",
            file(
                &[
                    ("phi", Dtype::F32, vec![7], good_phi.clone()),
                    ("w", Dtype::F32, vec![1], vec![0; 4]),
                ],
                &good_meta,
            ),
            "exactly one tensor",
        ),
        (
            "renamed",
            file(
                &[("theta", Dtype::F32, vec![7], good_phi.clone())],
                &good_meta,
            ),
            "phi",
        ),
        (
            "garbage",
            b"definitely not safetensors".to_vec(),
            "safetensors",
        ),
        ("empty", vec![], "safetensors"),
    ];
    for (name, bytes, want) in cases {
        let e = Policy::from_bytes(&bytes, path).unwrap_err().to_string();
        assert!(e.contains("test.safetensors"), "{name}: {e}");
        assert!(e.contains(want), "{name}: {e:?} does not mention {want:?}");
    }
}

#[test]
fn oversized_file_is_rejected_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(10 << 20).unwrap();
    let e = Policy::load(&path).unwrap_err().to_string();
    assert!(e.contains("too large"), "{e}");
}

#[test]
fn mapping_functions_are_exposed() {
    assert_eq!(policy::sigmoid(f32::NEG_INFINITY), 0.0);
    assert_eq!(policy::sigmoid(0.0), 0.5);
    assert!((policy::softplus(policy::inverse_softplus(0.05)) - 0.05).abs() < 1e-7);
    assert!((policy::sigmoid(policy::logit(0.35)) - 0.35).abs() < 1e-7);
    assert_eq!(policy::crop_center(1.0, 1.0, 0.3, 0.9), [0.0, 0.0]);
    assert_eq!(policy::crop_aspect(0.0), 0.75);
}

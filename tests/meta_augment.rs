//! The augmentation node against CONTRACT.md's semantics, hard mode against
//! relaxed mode, and the library entry points on small inputs.

use metaug::decode::ImageView;
use metaug::harness::experiment::{load_fashion_mnist, phi_default};
use metaug::meta::augment::{
    affine_with_jacobian, augment_forward, params_row, AugmentShape, SampleKey,
};
use metaug::meta::relaxed::{
    draws, hard_params, physical, relaxed_gates, relaxed_params, sigmoid, Family,
};
use metaug::meta::rng::SplitMix;
use metaug::meta::{learn_policy, LearnConfig, Tensor};
use metaug::ops::geometry::{affine_matrix, affine_matrix_f64, SampleParams};
use metaug::ops::noise::MAX_NORMAL_ERROR;
use metaug::ops::philox::{PhiloxStream, STREAM_NOISE};
use metaug::ops::{augment_into, DType, Layout, OutputSpec, Size};

/// CONTRACT.md steps 1–4, written as plainly as possible (f32, pixels in [0, 1]).
fn contract_reference(
    img: &[f32],
    c: usize,
    src: Size,
    out: Size,
    p: &SampleParams,
    key: &SampleKey,
) -> Vec<f32> {
    let (h, w) = (src.height as i64, src.width as i64);
    let (ho, wo) = (out.height as usize, out.width as usize);
    let m = affine_matrix(&p.geometry, src, out);
    let s = |ch: usize, i: usize, j: usize| -> f32 {
        let x = m[0] * j as f32 + m[1] * i as f32 + m[2];
        let y = m[3] * j as f32 + m[4] * i as f32 + m[5];
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let px = |yy: i64, xx: i64| {
            if yy < 0 || xx < 0 || yy >= h || xx >= w {
                0.0
            } else {
                img[ch * (h * w) as usize + (yy * w + xx) as usize]
            }
        };
        let (x0, y0) = (x0 as i64, y0 as i64);
        let (p00, p01, p10, p11) = (
            px(y0, x0),
            px(y0, x0 + 1),
            px(y0 + 1, x0),
            px(y0 + 1, x0 + 1),
        );
        (1.0 - fy) * ((1.0 - fx) * p00 + fx * p01) + fy * ((1.0 - fx) * p10 + fx * p11)
    };
    let noise = PhiloxStream::new(key.seed, key.epoch, key.sample, STREAM_NOISE);
    let g = p.flip;
    let mut outv = vec![0f32; c * ho * wo];
    for ch in 0..c {
        for i in 0..ho {
            for j in 0..wo {
                let mut v = if g == 0.0 {
                    s(ch, i, j)
                } else if g == 1.0 {
                    s(ch, i, wo - 1 - j)
                } else {
                    (1.0 - g) * s(ch, i, j) + g * s(ch, i, wo - 1 - j)
                };
                let e = (ch * ho + i) * wo + j;
                if p.sigma > 0.0 {
                    v += p.sigma * noise.normals((e / 4) as u32)[e % 4];
                }
                outv[e] = v;
            }
        }
    }
    outv
}

#[test]
fn forward_matches_the_contract_bit_for_bit_in_hard_mode() {
    let mut rng = SplitMix::new(3);
    let (c, src, out) = (3, Size::new(13, 17), Size::new(9, 11));
    let b = 40;
    let images: Vec<f32> = (0..b * c * 13 * 17)
        .map(|_| (rng.below(256) as f32) / 255.0)
        .collect();
    let phi = phi_default().map(|v| v as f32);
    let keys: Vec<SampleKey> = (0..b as u64)
        .map(|s| SampleKey {
            seed: 9,
            epoch: 2,
            sample: 1000 + s,
        })
        .collect();
    let params: Vec<SampleParams> = keys
        .iter()
        .map(|k| hard_params(Family::Independent, &phi, &draws(k.seed, k.epoch, k.sample)))
        .collect();
    let rows: Vec<f32> = params.iter().flat_map(params_row).collect();
    let shape = AugmentShape {
        channels: c,
        src,
        out,
    };
    let y = augment_forward(
        &Tensor::new(&[b, c, 13, 17], images.clone()),
        &Tensor::new(&[b, 7], rows),
        &keys,
        &shape,
    );
    let plane_in = c * 13 * 17;
    let plane_out = c * 9 * 11;
    let mut noisy = 0;
    for (s, (p, k)) in params.iter().zip(&keys).enumerate() {
        let want = contract_reference(&images[s * plane_in..(s + 1) * plane_in], c, src, out, p, k);
        let got = &y.data()[s * plane_out..(s + 1) * plane_out];
        if p.sigma == 0.0 {
            assert_eq!(got, &want[..], "sample {s}: {p:?}");
        } else {
            // the noise is the loader's vectorised Box–Muller: within
            // MAX_NORMAL_ERROR of PhiloxStream::normals per draw
            noisy += 1;
            for (a, b) in got.iter().zip(&want) {
                let tol = p.sigma * MAX_NORMAL_ERROR + 2.0 * f32::EPSILON;
                assert!((a - b).abs() <= tol, "sample {s}: {a} vs {b}");
            }
        }
    }
    assert!(noisy > 0 && noisy < b, "{noisy} noisy samples");
}

#[test]
fn forward_is_the_loaders_augment_into_bit_for_bit() {
    // On images of bytes / 255, the node's forward is ops::augment_into
    // (f32 output, mean 0, std 1) exactly, noise included: one semantics.
    let mut rng = SplitMix::new(8);
    let (c, src, out) = (3, Size::new(13, 17), Size::new(9, 11));
    let b = 40;
    let bytes: Vec<u8> = (0..b * c * 13 * 17).map(|_| rng.below(256) as u8).collect();
    let plane_in = c * 13 * 17;
    // [B, C, H, W] f32 from per-sample HWC bytes
    let mut chw = vec![0f32; bytes.len()];
    for s in 0..b {
        for k in 0..13 * 17 {
            for ch in 0..c {
                chw[s * plane_in + ch * 13 * 17 + k] =
                    bytes[s * plane_in + k * c + ch] as f32 / 255.0;
            }
        }
    }
    let policy = metaug::policy::Policy::default_policy();
    let keys: Vec<SampleKey> = (0..b as u64)
        .map(|s| SampleKey {
            seed: 4,
            epoch: 7,
            sample: 50 + s,
        })
        .collect();
    let params: Vec<SampleParams> = keys
        .iter()
        .map(|k| policy.sample_hard(k.seed, k.epoch, k.sample))
        .collect();
    let rows: Vec<f32> = params.iter().flat_map(params_row).collect();
    let shape = AugmentShape {
        channels: c,
        src,
        out,
    };
    let y = augment_forward(
        &Tensor::new(&[b, c, 13, 17], chw),
        &Tensor::new(&[b, 7], rows),
        &keys,
        &shape,
    );
    let spec = OutputSpec {
        size: out,
        channels: c as u32,
        dtype: DType::F32,
        layout: Layout::Nchw,
        mean: vec![0.0; c],
        std: vec![1.0; c],
    };
    let mut buf = vec![0u8; spec.sample_bytes()];
    for (s, (p, k)) in params.iter().zip(&keys).enumerate() {
        let view = ImageView {
            height: 13,
            width: 17,
            channels: c as u32,
            data: &bytes[s * plane_in..(s + 1) * plane_in],
        };
        augment_into(view, p, k.noise(), &spec, &mut buf);
        let want: Vec<f32> = buf
            .chunks_exact(4)
            .map(|q| f32::from_le_bytes([q[0], q[1], q[2], q[3]]))
            .collect();
        let n = want.len();
        assert_eq!(
            &y.data()[s * n..(s + 1) * n],
            &want[..],
            "sample {s}: {p:?}"
        );
    }
}

#[test]
fn identity_parameters_return_the_image() {
    let img: Vec<f32> = (0..2 * 28 * 28).map(|i| (i % 251) as f32 / 255.0).collect();
    let shape = AugmentShape {
        channels: 2,
        src: Size::new(28, 28),
        out: Size::new(28, 28),
    };
    let keys = [SampleKey {
        seed: 0,
        epoch: 0,
        sample: 0,
    }];
    let p = Tensor::new(&[1, 7], params_row(&SampleParams::IDENTITY).to_vec());
    let y = augment_forward(
        &Tensor::new(&[1, 2, 28, 28], img.clone()),
        &p,
        &keys,
        &shape,
    );
    assert_eq!(y.data(), &img[..]);
}

#[test]
fn affine_coefficients_match_the_geometry_module() {
    let mut rng = SplitMix::new(5);
    for _ in 0..100 {
        let g = [
            rng.range(0.1, 1.0),
            rng.range(0.7, 1.4),
            rng.range(-0.5, 0.5),
            rng.range(-0.5, 0.5),
            rng.range(-3.0, 3.0),
        ]
        .map(|v| v as f32 as f64);
        let geo = metaug::ops::Geometry {
            area: g[0] as f32,
            aspect: g[1] as f32,
            center: [g[2] as f32, g[3] as f32],
            angle: g[4] as f32,
        };
        let (src, out) = (Size::new(31, 17), Size::new(8, 12));
        assert_eq!(
            affine_with_jacobian(g, src, out).0,
            affine_matrix_f64(&geo, src, out)
        );
    }
}

#[test]
fn relaxed_formulas_with_hard_gates_are_hard_mode() {
    // The relaxed parameter formulas with gates set to the hard decisions
    // (u < p, same draws) give the hard-mode parameters.
    let phi = phi_default();
    let phi32 = phi.map(|v| v as f32);
    for s in 0..500u64 {
        let u = draws(4, 1, s);
        let gates = [(0, 0), (2, 5), (4, 7), (5, 8)].map(|(k, d)| {
            if (u[d] as f64) < sigmoid(phi[k]) {
                1.0
            } else {
                0.0
            }
        });
        let hard = params_row(&hard_params(Family::Independent, &phi32, &u));
        let relaxed = physical(&phi, gates, &u);
        for (a, b) in hard.iter().zip(relaxed) {
            assert!(
                (*a as f64 - b).abs() < 1e-6,
                "sample {s}: hard {hard:?} relaxed {relaxed:?}"
            );
        }
    }
}

#[test]
fn relaxed_gates_snap_to_the_hard_test_u_below_p_as_tau_vanishes() {
    // The relaxed gate sigmoid((logit p + ln(1−u) − ln u)/τ) tends to [u < p],
    // so relaxed mode at τ → 0 applies an op on exactly the draws where hard
    // mode does.
    let phi = phi_default();
    for s in 0..500u64 {
        let u = draws(4, 1, s);
        let (gates, _) = relaxed_gates(Family::Independent, &phi, 1e-9, &u);
        for (g, (k, d)) in gates.iter().zip([(0, 0), (2, 5), (4, 7), (5, 8)]) {
            let p = sigmoid(phi[k]);
            if ((u[d] as f64) - p).abs() > 1e-6 {
                assert_eq!(*g, if (u[d] as f64) < p { 1.0 } else { 0.0 });
            }
        }
    }
}

/// In the one-op family, hard mode applies exactly one op or none, with
/// the softmax's frequencies, and relaxed mode at τ → 0 picks the same op
/// on the same draws and gives the hard parameters.
#[test]
fn one_op_family_picks_one_op_with_softmax_frequencies_in_both_modes() {
    let mut phi = metaug::harness::experiment::phi_trivial();
    // logits: crop 1, rotate −1, flip 0, noise 0.5 (identity 0)
    for (k, l) in [(0, 1.0), (2, -1.0), (4, 0.0), (5, 0.5)] {
        phi[k] = l;
    }
    let phi32 = phi.map(|v| v as f32);
    let want = metaug::policy::one_op_shares([1.0, -1.0, 0.0, 0.5]);
    let n = 20_000u64;
    let mut counts = [0usize; 5];
    for s in 0..n {
        let u = draws(3, 0, s);
        let hard = hard_params(Family::OneOp, &phi32, &u);
        let applied = [
            hard.geometry.area != 1.0 || hard.geometry.aspect != 1.0,
            hard.geometry.angle != 0.0,
            hard.flip != 0.0,
            hard.sigma != 0.0,
        ];
        let ops: Vec<usize> = (0..4).filter(|&k| applied[k]).collect();
        assert!(ops.len() <= 1, "sample {s}: {ops:?}");
        counts[ops.first().map_or(0, |k| k + 1)] += 1;
        // relaxed at τ → 0: one-hot on the same op, and the hard parameters
        let (gates, _) = relaxed_gates(Family::OneOp, &phi, 1e-6, &u);
        let chosen = metaug::policy::one_op_choice([1.0, -1.0, 0.0, 0.5], &u);
        for (k, g) in gates.iter().enumerate() {
            let one = chosen == Some(k);
            assert!(
                (g - if one { 1.0 } else { 0.0 }).abs() < 1e-6,
                "sample {s}: {gates:?}"
            );
        }
        let (relaxed, _) = relaxed_params(Family::OneOp, &phi, 1e-6, &u);
        for (a, b) in params_row(&hard).iter().zip(relaxed) {
            assert!((*a as f64 - b).abs() < 1e-5, "sample {s}");
        }
    }
    for (c, p) in counts.iter().zip(want) {
        let f = *c as f64 / n as f64;
        // 5 standard errors of a binomial share
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!((f - p).abs() < 5.0 * se, "{counts:?} against {want:?}");
    }
    // relaxed gates at τ = 0.5 are a sub-probability vector (the rest is
    // the identity's share)
    for s in 0..200 {
        let (g, _) = relaxed_gates(Family::OneOp, &phi, 0.5, &draws(3, 1, s));
        let sum: f64 = g.iter().sum();
        assert!(g.iter().all(|&v| v > 0.0) && sum < 1.0, "{g:?}");
    }
}

#[test]
fn learn_policy_rejects_bad_input_and_learns_on_a_tiny_set() {
    let cfg = LearnConfig::default();
    let images = Tensor::<f32>::zeros(&[4, 1, 8, 8]);
    assert!(learn_policy(&images, &[0, 1, 0], &cfg, &mut |_, _| {}).is_err());
    assert!(learn_policy(&images, &[0, 0, 0, 0], &cfg, &mut |_, _| {}).is_err());
    let mut rng = SplitMix::new(1);
    let n = 64;
    let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let data: Vec<f32> = (0..n * 64)
        .map(|i| {
            if (i / 64) % 2 == 0 {
                rng.uniform() as f32 * 0.5
            } else {
                0.5 + rng.uniform() as f32 * 0.5
            }
        })
        .collect();
    let mut cfg = LearnConfig::default();
    cfg.train.steps = 12;
    cfg.train.batch = 16;
    cfg.train.hidden = 16;
    cfg.meta.val_batch = 8;
    cfg.meta.every = 2;
    let mut calls = 0;
    let images = Tensor::new(&[n, 1, 8, 8], data);
    let out = learn_policy(&images, &labels, &cfg, &mut |_, _| calls += 1).expect("learns");
    assert_eq!(out.history.len(), calls);
    assert_eq!(calls, 6);
    assert!(out.phi.iter().all(|v| v.is_finite()));
    assert_eq!(out.policy().family, Family::Independent);
    // the one-op family: learned from TrivialAugment-style, moved by the
    // meta steps, and its policy keeps the family
    cfg.meta.family = Family::OneOp;
    cfg.meta.phi_init = metaug::harness::experiment::phi_trivial();
    let out = learn_policy(&images, &labels, &cfg, &mut |_, _| {}).expect("learns");
    let policy = out.policy();
    assert_eq!(policy.family, Family::OneOp);
    assert!(out.phi.iter().all(|v| v.is_finite()));
    let start = cfg.meta.phi_init.map(|v| v as f32);
    assert!(
        out.phi.iter().zip(start).any(|(a, b)| (a - b).abs() > 1e-4),
        "{:?}",
        out.phi
    );
    assert!(policy.describe().starts_with("one op per sample"));
}

#[test]
fn delayed_meta_learning_holds_phi_until_its_start_and_the_switch_control_is_a_fixed_schedule() {
    use metaug::harness::experiment::phi_none;
    use metaug::meta::train::{train, train_switch, MetaConfig, Method, ModelKind, TrainConfig};
    let set = two_class_set();
    let mlp = TrainConfig {
        steps: 12,
        batch: 16,
        hidden: 8,
        ..TrainConfig::default()
    };
    let cnn = TrainConfig {
        model: ModelKind::Cnn,
        ..mlp.clone()
    };
    for (cfg, method) in [
        (&mlp, Method::Maml),
        (&mlp, Method::Reptile),
        (&cnn, Method::Maml),
        (&cnn, Method::Reptile),
    ] {
        let meta = MetaConfig {
            method,
            every: 2,
            val_batch: 8,
            phi_init: phi_default(),
            meta_start: 0.5,
            ..MetaConfig::default()
        };
        let mut steps = Vec::new();
        let out = train(&set, &set, cfg, phi_none(), Some(&meta), &mut |s, _| {
            steps.push(s)
        });
        assert_eq!(steps, [6, 8, 10], "{:?} {method:?}", cfg.model);
        assert_eq!(out.history.len(), 3);
        assert_ne!(
            out.phi,
            phi_default(),
            "{:?} {method:?} learned nothing",
            cfg.model
        );
        assert!(out.phi.iter().all(|v| v.is_finite()));
        assert_eq!(out.knots, [out.phi], "one knot: φ is constant");
        let shapes: Vec<_> = out
            .model
            .params
            .iter()
            .map(|p| p.shape().to_vec())
            .collect();
        let want_weights = if cfg.model == ModelKind::Cnn {
            16 * 9
        } else {
            64 * 8
        };
        assert_eq!(shapes[0].iter().product::<usize>(), want_weights);
    }
    let cfg = mlp;
    // the schedule's two ends are the fixed policies
    let fixed = |phi| {
        train(&set, &set, &cfg, phi, None, &mut |_, _| {})
            .model
            .params
    };
    let d = phi_default();
    assert_eq!(
        train_switch(&set, &cfg, Family::Independent, d, 12, phi_none())
            .model
            .params,
        fixed(d)
    );
    assert_eq!(
        train_switch(&set, &cfg, Family::Independent, d, 0, phi_none())
            .model
            .params,
        fixed(phi_none())
    );
    assert_ne!(
        train_switch(&set, &cfg, Family::Independent, d, 6, phi_none())
            .model
            .params,
        fixed(d)
    );
}

/// 48 images 8×8 of two classes (bright and dark halves of the range).
fn two_class_set() -> metaug::meta::train::ImageSet {
    let mut rng = SplitMix::new(2);
    let n = 48;
    let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let data: Vec<f32> = (0..n * 64)
        .map(|i| ((i / 64) % 2) as f32 * 0.5 + rng.uniform() as f32 * 0.5)
        .collect();
    metaug::meta::train::ImageSet {
        images: Tensor::new(&[n, 1, 8, 8], data),
        labels,
        classes: 2,
    }
}

/// φ(t) with three knots (t = 0, ½, 1) and meta steps at t = ½, ⅔, ⅚:
/// the first knot never gets a gradient and stays at the start, the other
/// two move, and every step after the start reads φ(t) between them.
#[test]
fn learned_phi_schedule_moves_the_knots_around_its_meta_steps() {
    use metaug::harness::experiment::phi_none;
    use metaug::meta::train::{train, MetaConfig, Method, ModelKind, TrainConfig};
    let set = two_class_set();
    for (model, method) in [
        (ModelKind::Mlp, Method::Maml),
        (ModelKind::Cnn, Method::Reptile),
    ] {
        let cfg = TrainConfig {
            model,
            steps: 12,
            batch: 16,
            hidden: 8,
            ..TrainConfig::default()
        };
        let meta = MetaConfig {
            method,
            every: 2,
            val_batch: 8,
            phi_init: phi_default(),
            meta_start: 0.5,
            knots: 3,
            ..MetaConfig::default()
        };
        let mut seen = Vec::new();
        let out = train(&set, &set, &cfg, phi_none(), Some(&meta), &mut |s, phi| {
            seen.push((s, *phi))
        });
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [6, 8, 10]);
        assert_eq!(out.knots.len(), 3, "{method:?}");
        assert_eq!(out.knots[0], phi_default(), "{method:?}: no step at t < ½");
        for j in [1, 2] {
            assert_ne!(
                out.knots[j],
                phi_default(),
                "{method:?}: knot {j} learned nothing"
            );
            assert!(out.knots[j].iter().all(|v| v.is_finite()));
        }
        // the last step (11 of 12) read φ(t) of the final knots
        let f = 11.0 / 12.0 * 2.0 - 1.0;
        for k in 0..7 {
            let want = (1.0 - f) * out.knots[1][k] + f * out.knots[2][k];
            assert!((out.phi[k] - want).abs() < 1e-12, "{method:?} entry {k}");
        }
        // each meta step reported φ at its own t, not the end's
        assert_ne!(seen[2].1, out.phi);
    }
}

#[test]
fn fashion_mnist_loads_from_shared_data() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/fashion-mnist");
    if !std::path::Path::new(dir).exists() {
        eprintln!("skipped: {dir} not found");
        return;
    }
    let d = load_fashion_mnist(dir).expect("loads");
    assert_eq!(d.train.images.shape(), [60_000, 1, 28, 28]);
    assert_eq!(d.test.len(), 10_000);
    assert!(d.test.labels.iter().all(|&l| l < 10));
    assert!(load_fashion_mnist("/nonexistent").is_err());
}

#[test]
fn large_batches_spread_over_threads_give_the_per_sample_results() {
    use metaug::meta::augment::{augment_vjp, PARALLEL_MIN_ELEMENTS};
    let (c, side) = (3usize, 160u32);
    let b = 16;
    let plane = c * (side * side) as usize;
    assert!(b * plane >= PARALLEL_MIN_ELEMENTS);
    let mut rng = SplitMix::new(12);
    let images: Vec<f32> = (0..b * plane).map(|_| rng.uniform() as f32).collect();
    let policy = metaug::policy::Policy::default_policy();
    let keys: Vec<SampleKey> = (0..b as u64)
        .map(|s| SampleKey {
            seed: 2,
            epoch: 1,
            sample: s,
        })
        .collect();
    let rows: Vec<f32> = keys
        .iter()
        .flat_map(|k| params_row(&policy.sample_hard(k.seed, k.epoch, k.sample)))
        .collect();
    let shape = AugmentShape {
        channels: c,
        src: Size::new(side, side),
        out: Size::new(side, side),
    };
    let s = side as usize;
    let x = Tensor::new(&[b, c, s, s], images.clone());
    let p = Tensor::new(&[b, 7], rows.clone());
    let y = augment_forward(&x, &p, &keys, &shape);
    let gy = Tensor::new(
        &[b, c, s, s],
        (0..b * plane).map(|_| rng.uniform() as f32 - 0.5).collect(),
    );
    let (gi, gp) = augment_vjp(&x, &p, &keys, &shape, &gy, true, true);
    let (gi, gp) = (gi.expect("image gradient"), gp.expect("parameter gradient"));
    for k in 0..b {
        let one = |t: &[f32], n: usize| t[k * n..(k + 1) * n].to_vec();
        let xk = Tensor::new(&[1, c, s, s], one(&images, plane));
        let pk = Tensor::new(&[1, 7], one(&rows, 7));
        let yk = augment_forward(&xk, &pk, &keys[k..k + 1], &shape);
        assert_eq!(
            yk.data(),
            &y.data()[k * plane..(k + 1) * plane],
            "forward {k}"
        );
        let gyk = Tensor::new(&[1, c, s, s], one(gy.data(), plane));
        let (gik, gpk) = augment_vjp(&xk, &pk, &keys[k..k + 1], &shape, &gyk, true, true);
        assert_eq!(
            gik.expect("image").data(),
            &gi.data()[k * plane..(k + 1) * plane]
        );
        assert_eq!(gpk.expect("params").data(), &gp.data()[k * 7..(k + 1) * 7]);
    }
}

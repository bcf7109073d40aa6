//! `metaug gradcheck --export`: the file holds a problem whose hypergradient
//! can be recomputed from the file alone, and its documented conventions
//! are the ones metaug computes (checked here by an independent
//! implementation of the conventions text: the relaxed parameters and the
//! augmented images).

use std::rc::Rc;

use metaug::harness::export::{problem_bytes, read_tensor, FORMAT};
use metaug::meta::augment::{AugmentShape, SampleKey};
use metaug::meta::bilevel::{augmented_images, phi_tensor, Inner, TrainBatch, ValBatch};
use metaug::meta::model::cnn::CnnShape;
use metaug::meta::model::Arch;
use metaug::meta::relaxed::NUM_PHI;
use metaug::meta::{maml, Tape, Tensor};
use metaug::ops::Size;
use safetensors::SafeTensors;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The conventions' relaxed parameters of one sample.
fn relaxed(phi: &[f64], tau: f64, u: &[f64]) -> [f64; 7] {
    let gate = |k: usize, d: usize| sigmoid((phi[k] + (1.0 - u[d]).ln() - u[d].ln()) / tau);
    let (gc, gr, gf, gn) = (gate(0, 0), gate(2, 5), gate(4, 7), gate(5, 8));
    let area = 1.0 - gc * u[1] * (1.0 - sigmoid(phi[1]));
    let aspect = (gc * ((0.75f64).ln() + u[2] * (16.0f64 / 9.0).ln())).exp();
    let cw = (area * aspect).sqrt().min(1.0);
    let ch = (area / aspect).sqrt().min(1.0);
    let angle = gr * (180.0 * sigmoid(phi[3])).to_radians() * (2.0 * u[6] - 1.0);
    [
        area,
        aspect,
        (1.0 - cw) * (2.0 * u[3] - 1.0),
        (1.0 - ch) * (2.0 * u[4] - 1.0),
        angle,
        gf,
        gn * softplus(phi[6]) * u[9],
    ]
}

/// The conventions' augmentation of one image `[C, H, W]` to `[C, ho, wo]`.
fn augment(
    img: &[f64],
    c: usize,
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    p: &[f64; 7],
    eps: &[f64],
) -> Vec<f64> {
    let [area, aspect, cx, cy, angle, flip, sigma] = *p;
    let cw = (area * aspect).sqrt().min(1.0);
    let chh = (area / aspect).sqrt().min(1.0);
    let (s, co) = angle.sin_cos();
    let sample = |ch: usize, i: usize, j: usize| {
        let u = (2 * j + 1) as f64 / wo as f64 - 1.0;
        let v = (2 * i + 1) as f64 / ho as f64 - 1.0;
        let (a, b) = (cw * w as f64 / 2.0 * u, chh * h as f64 / 2.0 * v);
        let xc = (cx + 1.0) * w as f64 / 2.0 + co * a - s * b;
        let yc = (cy + 1.0) * h as f64 / 2.0 + s * a + co * b;
        let (x, y) = (xc - 0.5, yc - 0.5);
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let at = |yy: f64, xx: f64| {
            if yy < 0.0 || xx < 0.0 || yy >= h as f64 || xx >= w as f64 {
                0.0
            } else {
                img[(ch * h + yy as usize) * w + xx as usize]
            }
        };
        (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1.0))
            + fy * ((1.0 - fx) * at(y0 + 1.0, x0) + fx * at(y0 + 1.0, x0 + 1.0))
    };
    let mut out = Vec::with_capacity(c * ho * wo);
    for ch in 0..c {
        for i in 0..ho {
            for j in 0..wo {
                let v = (1.0 - flip) * sample(ch, i, j) + flip * sample(ch, i, wo - 1 - j);
                out.push(v + sigma * eps[(ch * ho + i) * wo + j]);
            }
        }
    }
    out
}

#[test]
fn the_exported_problem_recomputes_its_hypergradient_and_follows_its_conventions() {
    let bytes = problem_bytes(3).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["format"], FORMAT);
    assert!(meta["conventions"].contains("align_corners=False"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| read_tensor(&st, name).unwrap();
    let tensor = |name: &str| {
        let (s, v) = get(name);
        Tensor::new(&s, v)
    };
    let w: Vec<Tensor<f64>> = (0..6).map(|i| tensor(&format!("w.{i}"))).collect();
    let phi: [f64; NUM_PHI] = get("phi").1.try_into().unwrap();
    let (alpha, tau) = (get("alpha").1[0], get("tau").1[0]);
    let k = get("k").1[0] as usize;
    assert_eq!(k, 2);
    let (noise_shape, _) = get("train.0.noise");
    let (c, ho, wo) = (noise_shape[1], noise_shape[2], noise_shape[3]);
    let (img_shape, _) = get("train.0.images");
    let (h, wi) = (img_shape[2], img_shape[3]);
    let shape = CnnShape {
        height: ho,
        width: wo,
        channels: w[0].shape()[0] / 9,
        conv1: w[0].shape()[1],
        conv2: w[2].shape()[1],
        classes: w[4].shape()[1],
    };
    let inner = Inner {
        alpha,
        tau,
        family: metaug::meta::relaxed::Family::Independent,
        shape: AugmentShape {
            channels: c,
            src: Size::new(h as u32, wi as u32),
            out: Size::new(ho as u32, wo as u32),
        },
        model: Arch::Cnn(shape),
        neumann: 1,
    };
    let batches: Vec<TrainBatch<f64>> = (0..k)
        .map(|j| {
            let keys: Vec<SampleKey> = get(&format!("train.{j}.keys"))
                .1
                .chunks(3)
                .map(|r| SampleKey {
                    seed: r[0] as u64,
                    epoch: r[1] as u64,
                    sample: r[2] as u64,
                })
                .collect();
            let draws: Vec<[f32; 12]> = get(&format!("train.{j}.draws"))
                .1
                .chunks(12)
                .map(|r| std::array::from_fn(|q| r[q] as f32))
                .collect();
            TrainBatch {
                images: tensor(&format!("train.{j}.images")),
                labels: get(&format!("train.{j}.labels"))
                    .1
                    .iter()
                    .map(|&l| l as usize)
                    .collect(),
                keys: Rc::from(keys),
                draws: Rc::from(draws),
            }
        })
        .collect();
    let val = ValBatch {
        x: tensor("val.x"),
        labels: get("val.labels").1.iter().map(|&l| l as usize).collect(),
    };
    // the hypergradient, recomputed from the file's tensors
    let (loss, g) = maml::hypergradient(&w, &phi, &batches, &val, &inner);
    assert_eq!(loss, get("val_loss").1[0]);
    assert_eq!(g.to_vec(), get("hypergradient").1);
    let fd = get("hypergradient_fd").1;
    let scale = fd.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 1e-6, "a zero hypergradient");
    for q in 0..NUM_PHI {
        assert!(
            (g[q] - fd[q]).abs() < 1e-4 * scale,
            "φ[{q}]: {} vs {}",
            g[q],
            fd[q]
        );
    }
    // the conventions, implemented from their text, give metaug's numbers
    let plane = c * ho * wo;
    for (j, batch) in batches.iter().enumerate() {
        let draws = get(&format!("train.{j}.draws")).1;
        let params = get(&format!("train.{j}.params")).1;
        let noise = get(&format!("train.{j}.noise")).1;
        for (b, key) in batch.keys.iter().enumerate() {
            let want = metaug::meta::augment::noise::<f64>(key, plane);
            assert_eq!(
                &noise[b * plane..(b + 1) * plane],
                &want[..],
                "noise of sample {b}"
            );
        }
        let mut tape = Tape::new();
        let pv = tape.constant(phi_tensor(&phi));
        let x = augmented_images(&mut tape, pv, batch, &inner);
        let got = tape.value(x).data().to_vec();
        let per_image = c * h * wi;
        for b in 0..batch.labels.len() {
            let p = relaxed(&phi, tau, &draws[b * 12..(b + 1) * 12]);
            for q in 0..7 {
                let f = params[b * 7 + q];
                assert!(
                    (p[q] - f).abs() < 1e-12,
                    "batch {j} sample {b} param {q}: {} vs {f}",
                    p[q]
                );
            }
            let img = &batch.images.data()[b * per_image..(b + 1) * per_image];
            let want = augment(
                img,
                c,
                (h, wi),
                (ho, wo),
                &p,
                &noise[b * plane..(b + 1) * plane],
            );
            for (e, (a, z)) in got[b * plane..(b + 1) * plane]
                .iter()
                .zip(&want)
                .enumerate()
            {
                assert!(
                    (a - z).abs() < 1e-9,
                    "batch {j} sample {b} element {e}: {a} vs {z}"
                );
            }
        }
    }
}

//! Relaxed-mode kernels (`kernels/relaxed.cu`) against an f64 CPU reference
//! of the same formulas, and that reference against finite differences.
//! Kernel tests run on the CPU emulator of the CUDA execution model
//! (`emulated`) and on a GPU where one is found (`gpu`; it prints
//! `skipped: no CUDA device (...)` and passes without one).

mod cuda_common;

use cuda_common::*;
use metaug::cuda::{Backend, RelaxedGpu, RelaxedShape, PARAMS_PER_SAMPLE};
use metaug::ops::Size;
use rand::rngs::StdRng;
use rand::Rng;

const SEED: u64 = 0x0005_EED0_FA11;
const EPOCH: u64 = 3;

struct Case {
    shape: RelaxedShape,
    input: Vec<f32>,
    params: Vec<[f32; PARAMS_PER_SAMPLE]>,
    samples: Vec<u64>,
}

fn case(rng: &mut StdRng, b: usize, c: usize, (h, w): (u32, u32), (ho, wo): (u32, u32)) -> Case {
    let shape = RelaxedShape {
        batch: b,
        channels: c,
        input: Size::new(h, w),
        output: Size::new(ho, wo),
    };
    let input = (0..shape.input_len())
        .map(|_| rng.random::<f32>())
        .collect();
    let params = (0..b)
        .map(|_| random_relaxed_params(rng, h, w, ho, wo))
        .collect();
    let samples = (0..b).map(|_| rng.random::<u64>() >> 20).collect();
    Case {
        shape,
        input,
        params,
        samples,
    }
}

fn dims(s: &RelaxedShape) -> Dims {
    Dims {
        c: s.channels,
        h: s.input.height as usize,
        w: s.input.width as usize,
        ho: s.output.height as usize,
        wo: s.output.width as usize,
        f32_coords: true,
    }
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn row64(p: &[f32; PARAMS_PER_SAMPLE]) -> [f64; PARAMS_PER_SAMPLE] {
    p.map(|x| x as f64)
}

/// Sample `b`'s slice of a batch of `per`-element samples.
fn part<T>(v: &[T], b: usize, per: usize) -> &[T] {
    &v[b * per..(b + 1) * per]
}

#[test]
fn cpu_vjp_matches_finite_differences() {
    // Runs everywhere: checks the formulas the kernels implement.
    let mut rng = rng("cpu_vjp_matches_finite_differences");
    for _ in 0..4 {
        let d = Dims {
            c: rng.random_range(1..4),
            h: rng.random_range(3..14),
            w: rng.random_range(3..14),
            ho: rng.random_range(2..10),
            wo: rng.random_range(2..10),
            f32_coords: false,
        };
        let img: Vec<f64> = (0..d.c * d.h * d.w).map(|_| rng.random()).collect();
        let p = row64(&random_relaxed_params(
            &mut rng,
            d.h as u32,
            d.w as u32,
            d.ho as u32,
            d.wo as u32,
        ));
        let go: Vec<f64> = (0..d.c * d.ho * d.wo)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let sample = rng.random::<u32>() as u64;
        let noise = |e: usize| eps(SEED, EPOCH, sample, e);
        let loss = |p: &[f64; PARAMS_PER_SAMPLE], img: &[f64]| -> f64 {
            relaxed_forward(img, d, p, &noise)
                .iter()
                .zip(&go)
                .map(|(o, g)| o * g)
                .sum()
        };
        let (gp, gi) = relaxed_vjp(&img, d, &p, &noise, &go, false);
        let (scale, _) = relaxed_vjp(&img, d, &p, &noise, &go, true);
        for k in 0..PARAMS_PER_SAMPLE {
            // The map is piecewise bilinear: a step that crosses a cell edge
            // sees a kink, so take the best of a few step sizes. A point on
            // (or within 1e-7 of) an edge has a kink inside every step: the
            // central difference then averages the two slopes, while the
            // analytic gradient is one of them. That shows as one-sided
            // differences that disagree, and then the one on the analytic
            // side must match.
            let tol = 1e-6 * (1.0 + scale[k]);
            let err = [1e-5, 1e-6, 1e-7]
                .iter()
                .map(|&h| {
                    let (mut a, mut b) = (p, p);
                    a[k] += h;
                    b[k] -= h;
                    let (fa, f0, fb) = (loss(&a, &img), loss(&p, &img), loss(&b, &img));
                    let central = ((fa - fb) / (2.0 * h) - gp[k]).abs();
                    let (forward, backward) = ((fa - f0) / h, (f0 - fb) / h);
                    if (forward - backward).abs() > tol {
                        central
                            .min((forward - gp[k]).abs())
                            .min((backward - gp[k]).abs())
                    } else {
                        central
                    }
                })
                .fold(f64::INFINITY, f64::min);
            assert!(
                err <= tol,
                "{d:?} param {k}: analytic {} fd error {err}",
                gp[k]
            );
        }
        // The output is linear in the input: differences are exact up to rounding.
        for _ in 0..8 {
            let q = rng.random_range(0..img.len());
            let (mut a, mut b) = (img.clone(), img.clone());
            a[q] += 1e-3;
            b[q] -= 1e-3;
            let fd = (loss(&p, &a) - loss(&p, &b)) / 2e-3;
            assert!((fd - gi[q]).abs() <= 1e-9 * (1.0 + fd.abs()), "pixel {q}");
        }
    }
}

on_emulator_and_gpu!(
    forward_matches_cpu,
    vjp_matches_cpu_and_is_deterministic,
    vjp_matches_finite_differences_of_the_gpu_forward,
    wrong_lengths_are_errors_not_faults,
);

fn forward_matches_cpu<B: Backend>(dev: B, rng: &mut StdRng, _: Scale) {
    let gpu = RelaxedGpu::new(&dev).unwrap();
    for (b, c, src, out) in [
        (1, 1, (1, 1), (1, 1)),
        (1, 3, (17, 23), (9, 13)),
        (3, 3, (32, 32), (28, 28)),
        (5, 2, (7, 40), (31, 5)),
        (64, 1, (12, 12), (10, 10)),
        (2, 3, (300, 257), (224, 224)),
    ] {
        let k = case(rng, b, c, src, out);
        // Poisoned output: every element must be written.
        let st = gpu.stream();
        let x = dev.upload(st, &k.input).unwrap();
        let flat: Vec<f32> = k.params.iter().flatten().copied().collect();
        let p = dev.upload(st, &flat).unwrap();
        let idx: Vec<u32> = k.samples.iter().map(|&s| s as u32).collect();
        let s = dev.upload(st, &idx).unwrap();
        let mut o = dev
            .upload(st, &vec![f32::NAN; k.shape.output_len()])
            .unwrap();
        gpu.forward(k.shape, &x, &p, &s, SEED, EPOCH, &mut o)
            .unwrap();
        let mut got = vec![0f32; k.shape.output_len()];
        dev.download_into(st, &o, &mut got).unwrap();
        let d = dims(&k.shape);
        let per_in = d.c * d.h * d.w;
        let per_out = d.c * d.ho * d.wo;
        let mut worst = 0f64;
        for bi in 0..b {
            let sample = k.samples[bi];
            let want = relaxed_forward(
                &widen(part(&k.input, bi, per_in)),
                d,
                &row64(&k.params[bi]),
                &|e| eps(SEED, EPOCH, sample, e),
            );
            for (e, (g, w)) in part(&got, bi, per_out).iter().zip(&want).enumerate() {
                let diff = (*g as f64 - w).abs();
                assert!(
                    diff <= 1e-4,
                    "{:?} sample {bi} element {e}: gpu {g} cpu {w}",
                    k.shape
                );
                worst = worst.max(diff);
            }
        }
        case_checked();
        eprintln!("forward {:?}: max |gpu - cpu| = {worst:e}", k.shape);
    }
}

fn vjp_matches_cpu_and_is_deterministic<B: Backend>(dev: B, rng: &mut StdRng, scale: Scale) {
    let gpu = RelaxedGpu::new(&dev).unwrap();
    // On the emulator every shuffle is a barrier of 32 OS threads: smaller
    // large cases (still several blocks per sample, still one block per sample).
    let (large, many) = match scale {
        Scale::Emulated => ((1, 3, (96, 96), (80, 80)), (64, 1, (8, 8), (6, 6))),
        Scale::Gpu => ((1, 3, (256, 256), (224, 224)), (512, 1, (8, 8), (6, 6))),
    };
    for (b, c, src, out) in [
        (1, 1, (1, 1), (1, 1)),
        (1, 3, (19, 21), (11, 9)),
        (4, 3, (40, 33), (24, 24)),
        large,
        many,
    ] {
        let k = case(rng, b, c, src, out);
        let go: Vec<f32> = (0..k.shape.output_len())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let run = || {
            gpu.vjp_host(
                k.shape, &k.input, &k.params, &k.samples, SEED, EPOCH, &go, true,
            )
            .unwrap()
        };
        let r = run();
        let again = run();
        assert_eq!(
            r.params, again.params,
            "parameter gradients are deterministic"
        );
        let gi = r.input.as_ref().unwrap();
        let d = dims(&k.shape);
        let (per_in, per_out) = (d.c * d.h * d.w, d.c * d.ho * d.wo);
        for bi in 0..b {
            let sample = k.samples[bi];
            let noise = |e: usize| eps(SEED, EPOCH, sample, e);
            let img = widen(part(&k.input, bi, per_in));
            let g = widen(part(&go, bi, per_out));
            let p = row64(&k.params[bi]);
            let (want, want_in) = relaxed_vjp(&img, d, &p, &noise, &g, false);
            let (scale, scale_in) = relaxed_vjp(&img, d, &p, &noise, &g, true);
            for q in 0..PARAMS_PER_SAMPLE {
                let got = r.params[bi][q] as f64;
                assert!(
                    (got - want[q]).abs() <= 1e-4 * scale[q] + 1e-5,
                    "{:?} sample {bi} param {q}: gpu {got} cpu {} (scale {})",
                    k.shape,
                    want[q],
                    scale[q]
                );
            }
            for (e, (gv, wv)) in part(gi, bi, per_in).iter().zip(&want_in).enumerate() {
                assert!(
                    (*gv as f64 - wv).abs() <= 1e-5 * scale_in[e] + 1e-6,
                    "{:?} sample {bi} input grad {e}: gpu {gv} cpu {wv}",
                    k.shape
                );
            }
        }
        // Without the input gradient: the same parameter gradients.
        let p_only = gpu
            .vjp_host(
                k.shape, &k.input, &k.params, &k.samples, SEED, EPOCH, &go, false,
            )
            .unwrap();
        assert!(p_only.input.is_none());
        assert_eq!(p_only.params, r.params);
        case_checked();
        eprintln!("vjp {:?}: ok", k.shape);
    }
}

fn vjp_matches_finite_differences_of_the_gpu_forward<B: Backend>(
    dev: B,
    rng: &mut StdRng,
    _: Scale,
) {
    let gpu = RelaxedGpu::new(&dev).unwrap();
    let mut k = case(rng, 2, 3, (24, 30), (16, 20));
    // A smooth image: the bilinear sample's slope jumps at every pixel edge by
    // the second difference of the pixels, which for random pixels makes a
    // finite difference across edges miss by several per cent.
    let (h, w) = (24usize, 30usize);
    for (n, v) in k.input.iter_mut().enumerate() {
        let (plane, y, x) = (n / (h * w), (n / w) % h, n % w);
        *v = 0.5 + 0.4 * (0.31 * x as f32 + 0.17 * y as f32 + plane as f32).sin();
    }
    let go: Vec<f32> = (0..k.shape.output_len())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let loss = |params: &[[f32; PARAMS_PER_SAMPLE]]| -> f64 {
        gpu.forward_host(k.shape, &k.input, params, &k.samples, SEED, EPOCH)
            .unwrap()
            .iter()
            .zip(&go)
            .map(|(o, g)| *o as f64 * *g as f64)
            .sum()
    };
    let grads = gpu
        .vjp_host(
            k.shape, &k.input, &k.params, &k.samples, SEED, EPOCH, &go, false,
        )
        .unwrap();
    // A directional derivative along a random direction per sample, in f32:
    // loose (f32 forward, kinks), a sanity check of the plumbing.
    let dir: Vec<[f32; PARAMS_PER_SAMPLE]> = (0..k.shape.batch)
        .map(|_| {
            let mut v = [0f32; PARAMS_PER_SAMPLE];
            for (q, x) in v.iter_mut().enumerate() {
                // coordinates per pixel index are ~1/size as sensitive as offsets
                let s = if q == 0 || q == 1 || q == 3 || q == 4 {
                    0.02
                } else {
                    1.0
                };
                *x = rng.random_range(-1.0..1.0) * s;
            }
            v
        })
        .collect();
    let h = 2e-3f32;
    let shifted = |sign: f32| -> Vec<[f32; PARAMS_PER_SAMPLE]> {
        k.params
            .iter()
            .zip(&dir)
            .map(|(p, d)| std::array::from_fn(|q| p[q] + sign * h * d[q]))
            .collect()
    };
    let (plus, base, minus) = (loss(&shifted(1.0)), loss(&k.params), loss(&shifted(-1.0)));
    let an: f64 = grads
        .params
        .iter()
        .zip(&dir)
        .map(|(g, d)| {
            g.iter()
                .zip(d)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
        })
        .sum();
    let close = |a: f64, b: f64| (a - b).abs() <= 2e-2 * (1.0 + b.abs());
    let central = (plus - minus) / (2.0 * h as f64);
    let (forward, backward) = ((plus - base) / h as f64, (base - minus) / h as f64);
    // The loss is piecewise smooth: bilinear sampling's slope jumps where a
    // sample point crosses a pixel edge. A jump inside [-h, h] spoils the
    // central difference (about 2 % of random cases); it shows as one-sided
    // differences that disagree, and then the side without it must match.
    let kink = !close(forward, backward);
    assert!(
        close(central, an) || (kink && (close(forward, an) || close(backward, an))),
        "directional derivative: vjp {an}, finite differences central {central}, \
         forward {forward}, backward {backward}"
    );
    case_checked();
}

fn wrong_lengths_are_errors_not_faults<B: Backend>(dev: B, rng: &mut StdRng, _: Scale) {
    let gpu = RelaxedGpu::new(&dev).unwrap();
    let k = case(rng, 2, 3, (8, 8), (4, 4));
    assert!(gpu
        .forward_host(k.shape, &k.input[1..], &k.params, &k.samples, 1, 0)
        .is_err());
    assert!(gpu
        .forward_host(k.shape, &k.input, &k.params[1..], &k.samples, 1, 0)
        .is_err());
    let st = gpu.stream();
    let x = dev.upload(st, &k.input).unwrap();
    let p = dev.upload(st, &[0f32; 8]).unwrap(); // one row for two samples
    let s = dev.upload(st, &[0u32, 1]).unwrap();
    let mut o = dev.alloc_zeros::<f32>(st, k.shape.output_len()).unwrap();
    assert!(gpu.forward(k.shape, &x, &p, &s, 1, 0, &mut o).is_err());
    // A real launch after the errors, so the test is not only about checks.
    let good = dev.upload(st, &[0f32; 16]).unwrap();
    gpu.forward(k.shape, &x, &good, &s, 1, 0, &mut o).unwrap();
}

/// The parameter gradients are reduced without atomics (per-block partial
/// sums added in block order): their bits must not depend on the order in
/// which blocks and threads run. The input gradient is scattered with
/// atomicAdd, so only its value (not its bits) is schedule-independent.
#[test]
fn reductions_do_not_depend_on_the_thread_schedule() {
    let mut rng = rng("reductions_do_not_depend_on_the_thread_schedule");
    let schedules = [0u64, rng.random::<u64>() | 1, rng.random::<u64>() | 1];
    for (b, c, src, out) in [(1, 3, (40, 33), (24, 24)), (3, 2, (64, 64), (48, 40))] {
        let k = case(&mut rng, b, c, src, out);
        let go: Vec<f32> = (0..k.shape.output_len())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let runs: Vec<_> = schedules
            .iter()
            .map(|&s| {
                let emu = emulator(s);
                let g = RelaxedGpu::new(&emu).unwrap();
                g.vjp_host(
                    k.shape, &k.input, &k.params, &k.samples, SEED, EPOCH, &go, true,
                )
                .unwrap()
            })
            .collect();
        for (r, s) in runs.iter().zip(&schedules).skip(1) {
            let bits = |v: &[[f32; PARAMS_PER_SAMPLE]]| -> Vec<u32> {
                v.iter().flatten().map(|x| x.to_bits()).collect()
            };
            assert_eq!(
                bits(&r.params),
                bits(&runs[0].params),
                "{:?}: parameter gradients under schedule {s:#x} differ from in-order",
                k.shape
            );
            let (a, z) = (r.input.as_ref().unwrap(), runs[0].input.as_ref().unwrap());
            for (e, (x, y)) in a.iter().zip(z).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "input gradient {e}: {x} vs {y}"
                );
            }
            case_checked();
        }
        eprintln!(
            "{:?}: parameter gradients bit-identical under schedules {schedules:x?}",
            k.shape
        );
    }
}

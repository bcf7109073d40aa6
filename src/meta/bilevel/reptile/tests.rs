//! The hand-written passes against the tape, and the estimator against
//! its previous, tape-only implementation (two full gradient evaluations
//! at `w ± εv`), kept here as the reference.

use super::mlp::*;
use super::*;
use crate::harness::gradcheck::{random, MetaProblem};
use crate::meta::bilevel::lead::{gemm, Lead};
use crate::meta::mlp::Activation;
use crate::meta::rng::SplitMix;

/// The tape form with the MLP fast path's norm of `v` (exact but for
/// the first layer's estimate), so that both take the same `ε`.
fn reference<F: Float>(
    w0: &[Tensor<F>],
    phi: &[f64; NUM_PHI],
    batches: &[TrainBatch<F>],
    val: &ValBatch<F>,
    inner: &Inner,
    estimator: Estimator,
    radius: f64,
) -> FirstOrder<F> {
    let u = mean_direction(val.x.data(), w0[0].dims2().0);
    let norm_of = |v: &[Tensor<F>]| (lead_norm_sq(&v[0], &u) + norm(&v[1..]).powi(2)).sqrt();
    first_order_tape(w0, phi, batches, val, inner, estimator, radius, &norm_of)
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs() / scale))
}

#[test]
fn hand_written_pass_matches_the_tape() {
    let mut rng = SplitMix::new(3);
    let n = 7;
    let labels: Vec<usize> = (0..n).map(|_| rng.below(4)).collect();
    let x = random(&mut rng, &[n, 9], -1.0, 1.0);
    for act in [Activation::Relu, Activation::Tanh] {
        let w = crate::meta::mlp::Mlp::<f64>::new(&[9, 6, 5, 4], act, 11).params;
        let inner = Inner {
            alpha: 0.1,
            tau: 0.5,
            family: crate::meta::relaxed::Family::Independent,
            shape: crate::meta::augment::AugmentShape {
                channels: 1,
                src: crate::ops::Size::new(3, 3),
                out: crate::ops::Size::new(3, 3),
            },
            model: Arch::Mlp(act),
            neumann: 1,
        };
        // unfrozen: weight gradients and loss
        let (pass, g) = weight_grads(act, &w, x.data(), &labels);
        let (tg, _, masks) = model_grads(&w, &x, &labels, &inner, true, false, None);
        for (a, b) in g.iter().zip(tg.unwrap()) {
            assert_eq!(a.shape(), b.shape());
            assert!(max_rel(&a.cast::<f64>().into_data(), b.data()) < 1e-12);
        }
        let mut tape = Tape::new();
        let ws: Vec<Var> = w.iter().map(|t| tape.constant(t.clone())).collect();
        let xv = tape.constant(x.clone());
        let loss = Arch::Mlp(act).loss(&mut tape, &ws, xv, &labels);
        assert!((pass.loss(&labels) - tape.item(loss)).abs() < 1e-12);
        // frozen at w, evaluated at another point: tail gradients and
        // the first layer's pre-activation gradient, through xᵀδ and δW₀ᵀ
        let u: Vec<Tensor<f64>> = w
            .iter()
            .map(|t| random(&mut rng, t.shape(), -0.3, 0.3))
            .collect();
        let w2 = offset(&w, &u, 1.0);
        let z0 = affine(x.data(), n, &w2[0], &w2[1]);
        let frozen = (act == Activation::Relu).then_some(&pass.z[..]);
        let p2 = Pass::from_first(act, z0, n, &w2[2..], frozen);
        let (d0, tail) = p2.backward(act, &w2[2..], &labels, frozen, true);
        let fm = (act == Activation::Relu).then_some(&masks[..]);
        let (tg, tx, _) = model_grads(&w2, &x, &labels, &inner, true, true, fm);
        let tg = tg.unwrap();
        for (a, b) in tail.iter().zip(&tg[2..]) {
            assert!(max_rel(a.data(), b.data()) < 1e-12);
        }
        let mut gx = vec![0.0; n * 9];
        gemm(n, 6, 9, 1.0, &d0, false, w2[0].data(), true, 0.0, &mut gx);
        assert!(max_rel(&gx, tx.unwrap().data()) < 1e-12);
        let mut gw = vec![0.0; 9 * 6];
        gemm(9, n, 6, 1.0, x.data(), true, &d0, false, 0.0, &mut gw);
        assert!(max_rel(&gw, tg[0].data()) < 1e-12);
    }
}

#[test]
fn lead_norm_estimate_is_near_the_exact_norm_factored_or_dense() {
    // the bench's shapes: validation inputs in [0, 1], δ of a softmax
    // gradient through 256 ReLUs (signed, sparse-ish)
    let (n, d0, d1) = (128, 784, 256);
    let mut worst = 0f64;
    for seed in 0..4 {
        let mut rng = SplitMix::new(90 + seed);
        let x = random(&mut rng, &[n, d0], 0.0, 1.0);
        // δ = (g·W₁ᵀ) ⊙ relu′: rank 10 (the classes) before the mask
        let g = random(&mut rng, &[n, 10], -1e-2, 1e-2);
        let w1 = random(&mut rng, &[d1, 10], -0.1, 0.1);
        let mut delta = vec![0.0; n * d1];
        gemm(
            n,
            10,
            d1,
            1.0,
            g.data(),
            false,
            w1.data(),
            true,
            0.0,
            &mut delta,
        );
        for v in delta.iter_mut() {
            if rng.below(2) == 0 {
                *v = 0.0;
            }
        }
        let lead = Lead::Outer {
            x: x.data(),
            delta,
            n,
        };
        let u = mean_direction(x.data(), d0);
        let estimate = lead.norm_sq(&u, d0, d1);
        let dense = lead.into_dense(d0, d1);
        let exact = dense.norm_sq();
        let from_dense = lead_norm_sq(&dense, &u);
        assert!(((from_dense - estimate) / exact).abs() < 1e-4);
        worst = worst.max((estimate / exact).sqrt().ln().abs());
    }
    // ‖εv‖ within 5% of the radius asked for (measured: within 0.7%)
    assert!(
        worst < 0.05f64.ln_1p(),
        "norm off by a factor {}",
        worst.exp()
    );
}

#[test]
fn estimator_matches_its_tape_reference() {
    for k in 1..=3 {
        let p = MetaProblem::random(40 + k as u64, k);
        for est in [Estimator::Adjoint, Estimator::Greedy] {
            for radius in [1e-4, 1e-2] {
                let a = first_order_hypergradient(
                    &p.w0, &p.phi, &p.batches, &p.val, &p.inner, est, radius,
                );
                let b = reference(&p.w0, &p.phi, &p.batches, &p.val, &p.inner, est, radius);
                let err = max_rel(&a.grad, &b.grad);
                assert!(err < 1e-6, "k = {k}, {est:?}, radius {radius}: {err:e}");
                assert!((a.val_loss - b.val_loss).abs() < 1e-12);
                for (x, y) in a.adapted.iter().zip(&b.adapted) {
                    assert!(max_rel(x.data(), y.data()) < 1e-12);
                }
            }
        }
    }
}

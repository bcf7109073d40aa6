//! One sample's passes: the forward (steps 1–4) and the VJP to its image
//! and to its parameters (sampling again, or from what the forward saved),
//! each compiled three times (baseline, AVX2, AVX-512) and called through
//! the widest build the CPU runs: the same bits in all.

use super::jacobian::affine_with_jacobian;
use super::scratch::{reversed, tiles, Scratch};
use super::{out_len, AugmentShape, Param, SampleKey, NUM_PARAMS};
use crate::meta::float::Float;

fn coefficients<F: Float>(p: &[f64; NUM_PARAMS], shape: &AugmentShape) -> [F; 6] {
    // For f32 the parameters are f32 values, so this is `affine_matrix`:
    // coefficients in f64 from the f32 geometry, rounded once.
    let (m, _) = affine_with_jacobian([p[0], p[1], p[2], p[3], p[4]], shape.src, shape.out);
    m.map(F::from_f64)
}

/// Calls `$f(args)` through its widest build the CPU runs: `$f` +
/// `_avx512` (AVX-512F and VL), `_avx2`, or the baseline `$f`. The same
/// operations in all (Rust does not fuse a multiply and an add into an
/// FMA), so the same bits; only the vector width differs (measured on the
/// 128×28×28 batch, one thread: forward 176 → 158 µs, parameter VJP with
/// its noise 384 → 360 µs from the AVX2 build to the AVX-512 one).
macro_rules! dispatch {
    ($f:ident($($a:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                // SAFETY: the `_avx512` build requires AVX-512F and VL
                // (and the AVX2 they imply), which the CPU was just found
                // to support.
                unsafe { paste_build!($f, avx512)($($a),*) }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the `_avx2` build only requires AVX2, which the
                // CPU was just found to support.
                unsafe { paste_build!($f, avx2)($($a),*) }
            } else {
                $f($($a),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $f($($a),*)
        }
    }};
}

macro_rules! paste_build {
    (forward_sample, avx2) => {
        forward_sample_avx2
    };
    (vjp_sample, avx2) => {
        vjp_sample_avx2
    };
    (forward_sample, avx512) => {
        forward_sample_avx512
    };
    (vjp_sample, avx512) => {
        vjp_sample_avx512
    };
    (vjp_saved_sample, avx2) => {
        vjp_saved_sample_avx2
    };
    (vjp_saved_sample, avx512) => {
        vjp_saved_sample_avx512
    };
}

/// The `_avx2` and `_avx512` builds of [`forward_sample`] and
/// [`vjp_sample`]: the same generic code, compiled for those features
/// (without features: the baseline, as the tests compare it).
macro_rules! builds {
    ($forward:ident, $vjp:ident, $vjp_saved:ident $(, $features:literal)?) => {
        $(#[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)])?
        unsafe fn $forward<F: Float>(
            s: &mut Scratch<F>,
            img: &[F],
            pr: &[F],
            eps: &[F],
            shape: &AugmentShape,
            o: &mut [F],
            save: Option<&mut [F]>,
        ) {
            forward_sample(s, img, pr, eps, shape, o, save)
        }

        $(#[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)])?
        unsafe fn $vjp_saved<F: Float>(
            s: &mut Scratch<F>,
            p: &[f64; NUM_PARAMS],
            key: &SampleKey,
            eps: Option<&[F]>,
            shape: &AugmentShape,
            gyb: &[F],
            saved: &[F],
        ) -> [F; NUM_PARAMS] {
            vjp_saved_sample(s, p, key, eps, shape, gyb, saved)
        }

        $(#[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)])?
        #[allow(clippy::too_many_arguments)]
        unsafe fn $vjp<F: Float>(
            s: &mut Scratch<F>,
            img: &[F],
            p: &[f64; NUM_PARAMS],
            key: &SampleKey,
            eps: Option<&[F]>,
            shape: &AugmentShape,
            gyb: &[F],
            gi: Option<&mut [F]>,
            want_params: bool,
        ) -> [F; NUM_PARAMS] {
            vjp_sample(s, img, p, key, eps, shape, gyb, gi, want_params)
        }
    };
}

builds!(
    forward_sample_avx2,
    vjp_sample_avx2,
    vjp_saved_sample_avx2,
    "avx2"
);
builds!(
    forward_sample_avx512,
    vjp_sample_avx512,
    vjp_saved_sample_avx512,
    "avx512f,avx512vl"
);

/// [`forward_sample`] through the widest build the CPU runs.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward<F: Float>(
    s: &mut Scratch<F>,
    img: &[F],
    pr: &[F],
    eps: &[F],
    shape: &AugmentShape,
    o: &mut [F],
    save: Option<&mut [F]>,
) {
    dispatch!(forward_sample(s, img, pr, eps, shape, o, save))
}

/// [`vjp_sample`] through the widest build the CPU runs.
#[allow(clippy::too_many_arguments)]
pub(super) fn vjp<F: Float>(
    s: &mut Scratch<F>,
    img: &[F],
    p: &[f64; NUM_PARAMS],
    key: &SampleKey,
    eps: Option<&[F]>,
    shape: &AugmentShape,
    gyb: &[F],
    gi: Option<&mut [F]>,
    want_params: bool,
) -> [F; NUM_PARAMS] {
    dispatch!(vjp_sample(s, img, p, key, eps, shape, gyb, gi, want_params))
}

/// [`vjp_saved_sample`] through the widest build the CPU runs.
pub(super) fn vjp_saved<F: Float>(
    s: &mut Scratch<F>,
    p: &[f64; NUM_PARAMS],
    key: &SampleKey,
    eps: Option<&[F]>,
    shape: &AugmentShape,
    gyb: &[F],
    saved: &[F],
) -> [F; NUM_PARAMS] {
    dispatch!(vjp_saved_sample(s, p, key, eps, shape, gyb, saved))
}

/// One sample's forward (steps 1–4) into `o`, `[C, H_out, W_out]`; with
/// `save` (`3·C·H_out·W_out` long), also what the parameter VJP reads
/// ([`Saved`]): the unflipped view and its slopes.
#[inline(always)]
fn forward_sample<F: Float>(
    s: &mut Scratch<F>,
    img: &[F],
    pr: &[F],
    eps: &[F],
    shape: &AugmentShape,
    o: &mut [F],
    mut save: Option<&mut [F]>,
) {
    let (h, w) = (shape.src.height as usize, shape.src.width as usize);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let p: [f64; NUM_PARAMS] = std::array::from_fn(|q| pr[q].to_f64());
    let m = coefficients::<F>(&p, shape);
    let (g, sigma) = (pr[Param::Flip as usize], pr[Param::Sigma as usize]);
    s.pad_planes(img, h, w);
    for (i0, nr) in tiles(s.rows, ho) {
        let l = s.plan(&m, i0, nr, h, w);
        for c in 0..shape.channels {
            // the tile's rows of channel c are contiguous in the output
            let at = (c * ho + i0) * wo;
            let out = &mut o[at..at + l];
            s.gather(c, l);
            s.blend(out);
            if let Some(sv) = save.as_deref_mut() {
                let n = out_len(shape);
                let (view, slopes) = sv.split_at_mut(n);
                let (sx, sy) = slopes.split_at_mut(n);
                view[at..at + l].copy_from_slice(out);
                s.slopes_into(&mut sx[at..at + l], &mut sy[at..at + l]);
            }
            if g == F::ONE {
                for row in out.chunks_exact_mut(wo) {
                    row.reverse();
                }
            } else if g != F::ZERO {
                for row in out.chunks_exact_mut(wo) {
                    let rev = reversed(row, &mut s.rev);
                    for (v, &r) in row.iter_mut().zip(rev) {
                        *v = (F::ONE - g) * *v + g * r;
                    }
                }
            }
            if sigma > F::ZERO {
                for (r, &e) in out.iter_mut().zip(&eps[at..at + l]) {
                    *r += sigma * e;
                }
            }
        }
    }
}

/// The gradient of one sample: into `gi` (its image's gradient) when given,
/// and the parameters' gradient when `want_params`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn vjp_sample<F: Float>(
    s: &mut Scratch<F>,
    img: &[F],
    p: &[f64; NUM_PARAMS],
    key: &SampleKey,
    eps: Option<&[F]>,
    shape: &AugmentShape,
    gyb: &[F],
    gi: Option<&mut [F]>,
    want_params: bool,
) -> [F; NUM_PARAMS] {
    let (h, w) = (shape.src.height as usize, shape.src.width as usize);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let m = coefficients::<F>(p, shape);
    let g = F::from_f64(p[Param::Flip as usize]);
    // partial sums per tile position, reduced once per sample: the loops
    // stay elementwise over whole tiles (vectorised) instead of chains of
    // dependent additions or row-long loops
    s.clear_acc();
    s.pad_planes(img, h, w);
    if gi.is_some() {
        s.clear_grad();
    }
    for (i0, nr) in tiles(s.rows, ho) {
        let l = s.plan(&m, i0, nr, h, w);
        s.dx[..l].fill(F::ZERO);
        s.dy[..l].fill(F::ZERO);
        for c in 0..shape.channels {
            let at = (c * ho + i0) * wo;
            let gyt = &gyb[at..at + l];
            s.mirror_rows(gyt);
            // gradient with respect to the unflipped view S
            let (gs, rev) = (&mut s.gs[..l], &s.rev[..l]);
            for e in 0..l {
                gs[e] = (F::ONE - g) * gyt[e] + g * rev[e];
            }
            s.gather(c, l);
            if want_params {
                s.slopes(l);
                let mut view = std::mem::take(&mut s.view);
                let v = &mut view[..l];
                s.blend(v);
                // flip: ∂out/∂g = Σ gy(i, j)·(S(i, W−1−j) − S(i, j))
                //              = Σ S(i, j)·(gy(i, W−1−j) − gy(i, j))
                let (fl, rev) = (&mut s.acc[4][..l], &s.rev[..l]);
                for e in 0..l {
                    fl[e] += v[e] * (rev[e] - gyt[e]);
                }
                s.view = view;
            }
            if gi.is_some() {
                s.scatter(c, l);
            }
        }
        if want_params {
            s.close_tile(l);
        }
    }
    if let Some(gi) = gi {
        s.unpad_grad(gi, h, w);
    }
    if want_params {
        param_row(s, p, key, eps, shape, gyb)
    } else {
        [F::ZERO; NUM_PARAMS]
    }
}

/// The parameter gradient of one sample from what its forward pass saved
/// (`saved`, [`Saved`]'s layout): the same sums in the same order as
/// [`vjp_sample`], so the same bits.
#[inline(always)]
fn vjp_saved_sample<F: Float>(
    s: &mut Scratch<F>,
    p: &[f64; NUM_PARAMS],
    key: &SampleKey,
    eps: Option<&[F]>,
    shape: &AugmentShape,
    gyb: &[F],
    saved: &[F],
) -> [F; NUM_PARAMS] {
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let g = F::from_f64(p[Param::Flip as usize]);
    let n = out_len(shape);
    let (view, slopes) = saved.split_at(n);
    let (sxs, sys) = slopes.split_at(n);
    s.clear_acc();
    for (i0, nr) in tiles(s.rows, ho) {
        let l = nr * wo;
        s.fill_row_indices(i0, nr);
        s.dx[..l].fill(F::ZERO);
        s.dy[..l].fill(F::ZERO);
        for c in 0..shape.channels {
            let at = (c * ho + i0) * wo;
            let gyt = &gyb[at..at + l];
            s.mirror_rows(gyt);
            let (sx, sy, v) = (&sxs[at..at + l], &sys[at..at + l], &view[at..at + l]);
            let (dx, dy) = (&mut s.dx[..l], &mut s.dy[..l]);
            let (fl, rev) = (&mut s.acc[4][..l], &s.rev[..l]);
            for e in 0..l {
                let d = (F::ONE - g) * gyt[e] + g * rev[e];
                dx[e] += d * sx[e];
                dy[e] += d * sy[e];
                fl[e] += v[e] * (rev[e] - gyt[e]);
            }
        }
        s.close_tile(l);
    }
    param_row(s, p, key, eps, shape, gyb)
}

/// The parameter gradient of one sample from the per-tile-position sums in
/// `s.acc` and the noise (`eps`, or drawn again from `key`).
#[inline(always)]
fn param_row<F: Float>(
    s: &mut Scratch<F>,
    p: &[f64; NUM_PARAMS],
    key: &SampleKey,
    eps: Option<&[F]>,
    shape: &AugmentShape,
    gyb: &[F],
) -> [F; NUM_PARAMS] {
    let tile = s.rows * s.wo;
    let mut row = [F::ZERO; NUM_PARAMS];
    // dm[k] = Σ_{i,j} (∂x/∂m_k or ∂y/∂m_k)·slope: x = m0·j + m1·i + m2
    // sums in locals, over slices of one length (no bounds checks): the
    // same additions in the same order as an array of sums
    let (mut d0, mut d1, mut d2, mut d3, mut d4, mut d5) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    let mut dflip = 0f64;
    let [cx, cy, cxi, cyi, fl] = &s.acc;
    let (cols, cx, cy, cxi, cyi, fl) = (
        &s.cols[..tile],
        &cx[..tile],
        &cy[..tile],
        &cxi[..tile],
        &cyi[..tile],
        &fl[..tile],
    );
    for e in 0..tile {
        let fj = cols[e].to_f64();
        let (cx, cy) = (cx[e].to_f64(), cy[e].to_f64());
        d0 += cx * fj;
        d1 += cxi[e].to_f64();
        d2 += cx;
        d3 += cy * fj;
        d4 += cyi[e].to_f64();
        d5 += cy;
        dflip += fl[e].to_f64();
    }
    let dm = [d0, d1, d2, d3, d4, d5];
    let (_, jac) = affine_with_jacobian([p[0], p[1], p[2], p[3], p[4]], shape.src, shape.out);
    for q in 0..5 {
        row[q] = F::from_f64((0..6).map(|k| jac[k][q] * dm[k]).sum());
    }
    row[Param::Flip as usize] = F::from_f64(dflip);
    let eps = match eps {
        Some(e) => e,
        None => {
            s.draw(key, gyb.len());
            &s.eps
        }
    };
    // eight interleaved partial sums (vectorised)
    let mut acc = [F::ZERO; 8];
    let (ga, ea) = (gyb.chunks_exact(8), eps[..gyb.len()].chunks_exact(8));
    let mut dsigma: F = ga
        .remainder()
        .iter()
        .zip(ea.remainder())
        .map(|(&a, &e)| a * e)
        .sum();
    for (gc, ec) in ga.zip(ea) {
        for t in 0..8 {
            acc[t] += gc[t] * ec[t];
        }
    }
    dsigma += acc.iter().copied().sum::<F>();
    row[Param::Sigma as usize] = dsigma;
    row
}

#[cfg(test)]
mod tests {
    //! Every build of the per-sample passes (baseline, AVX2, AVX-512) gives
    //! the same bits: output, image gradient and parameter gradient.

    use super::*;
    use crate::meta::augment::noise;
    use crate::meta::rng::SplitMix;
    use crate::ops::geometry::Size;

    type Forward = unsafe fn(
        &mut Scratch<f32>,
        &[f32],
        &[f32],
        &[f32],
        &AugmentShape,
        &mut [f32],
        Option<&mut [f32]>,
    );
    type VjpSaved = unsafe fn(
        &mut Scratch<f32>,
        &[f64; NUM_PARAMS],
        &SampleKey,
        Option<&[f32]>,
        &AugmentShape,
        &[f32],
        &[f32],
    ) -> [f32; NUM_PARAMS];
    type Vjp = unsafe fn(
        &mut Scratch<f32>,
        &[f32],
        &[f64; NUM_PARAMS],
        &SampleKey,
        Option<&[f32]>,
        &AugmentShape,
        &[f32],
        Option<&mut [f32]>,
        bool,
    ) -> [f32; NUM_PARAMS];

    /// The builds this CPU runs, the baseline first.
    type Build = (&'static str, Forward, Vjp, VjpSaved);

    fn builds() -> Vec<Build> {
        builds!(forward_base, vjp_base, vjp_saved_base);
        #[allow(unused_mut)]
        let mut v: Vec<Build> = vec![("baseline", forward_base, vjp_base, vjp_saved_base)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push((
                    "avx2",
                    forward_sample_avx2,
                    vjp_sample_avx2,
                    vjp_saved_sample_avx2,
                ));
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                v.push((
                    "avx512",
                    forward_sample_avx512,
                    vjp_sample_avx512,
                    vjp_saved_sample_avx512,
                ));
            }
        }
        v
    }

    #[test]
    fn every_build_gives_the_same_bits() {
        let mut rng = SplitMix::new(7);
        let builds = builds();
        eprintln!(
            "builds compared: {:?}",
            builds.iter().map(|b| b.0).collect::<Vec<_>>()
        );
        for (c, h, w, ho, wo) in [(1, 28, 28, 28, 28), (3, 13, 9, 17, 31), (2, 5, 40, 3, 7)] {
            let shape = AugmentShape {
                channels: c,
                src: Size::new(h as u32, w as u32),
                out: Size::new(ho as u32, wo as u32),
            };
            let n_out = c * ho * wo;
            for trial in 0..8 {
                let img: Vec<f32> = (0..c * h * w).map(|_| rng.uniform() as f32).collect();
                let pr: [f32; NUM_PARAMS] = [
                    rng.range(0.2, 1.0) as f32,
                    rng.range(0.7, 1.4) as f32,
                    rng.range(-0.2, 1.2) as f32,
                    rng.range(-0.2, 1.2) as f32,
                    rng.range(-3.2, 3.2) as f32,
                    [0.0, 1.0, rng.uniform() as f32][trial % 3],
                    rng.range(0.0, 0.3) as f32,
                ];
                let p64 = pr.map(f64::from);
                let key = SampleKey {
                    seed: 3,
                    epoch: trial as u64,
                    sample: 11,
                };
                let eps: Vec<f32> = noise(&key, n_out);
                let gy: Vec<f32> = (0..n_out).map(|_| rng.range(-1.0, 1.0) as f32).collect();
                let mut results = Vec::new();
                for (name, forward, vjp, vjp_saved) in &builds {
                    let mut s = Scratch::new(&shape);
                    let mut out = vec![0f32; n_out];
                    let mut saved_out = vec![0f32; n_out];
                    let mut saved = vec![0f32; 3 * n_out];
                    let mut gi = vec![0f32; c * h * w];
                    // SAFETY: `builds` lists only the builds this CPU runs.
                    let (gp, gp_saved) = unsafe {
                        forward(&mut s, &img, &pr, &eps, &shape, &mut out, None);
                        forward(
                            &mut s,
                            &img,
                            &pr,
                            &eps,
                            &shape,
                            &mut saved_out,
                            Some(&mut saved),
                        );
                        let gp = vjp(
                            &mut s,
                            &img,
                            &p64,
                            &key,
                            Some(&eps),
                            &shape,
                            &gy,
                            Some(&mut gi),
                            true,
                        );
                        let gp_saved = vjp_saved(&mut s, &p64, &key, None, &shape, &gy, &saved);
                        (gp, gp_saved)
                    };
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    // saving changes neither the output nor the gradient
                    assert_eq!(bits(&saved_out), bits(&out), "{name}: output when saving");
                    assert_eq!(
                        bits(&gp_saved),
                        bits(&gp),
                        "{name}: parameter gradient from the saved values, shape {shape:?}"
                    );
                    results.push((name, bits(&out), bits(&gi), bits(&gp)));
                }
                for r in &results[1..] {
                    let base = &results[0];
                    assert_eq!(r.1, base.1, "{}: output, shape {shape:?}", r.0);
                    assert_eq!(r.2, base.2, "{}: image gradient, shape {shape:?}", r.0);
                    assert_eq!(r.3, base.3, "{}: parameter gradient, shape {shape:?}", r.0);
                }
            }
        }
    }
}

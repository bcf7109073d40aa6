//! The batch passes: every sample through [`super::sample`] on its own,
//! spread over rayon's threads for large batches (the result does not
//! depend on the threads), with the shapes checked and the noise drawn.

use rayon::prelude::*;

use super::sample;
use super::scratch::{Scratch, BORDER};
use super::{
    out_len, AugmentShape, BatchNoise, Param, SampleKey, Saved, NUM_PARAMS, PARALLEL_MIN_ELEMENTS,
};
use crate::meta::float::Float;
use crate::meta::tensor::Tensor;
use crate::ops::noise::fill_normals;

fn row_params<F: Float>(params: &Tensor<F>, b: usize) -> [f64; NUM_PARAMS] {
    let row = &params.data()[b * NUM_PARAMS..(b + 1) * NUM_PARAMS];
    std::array::from_fn(|q| row[q].to_f64())
}

/// Runs `f(state, b, chunk)` on every `len`-element chunk of `data`, each
/// chunk on its own (so the result does not depend on the threads), over
/// rayon's threads when `parallel`, with `init()` making a worker's state.
pub(crate) fn for_each_chunk<T: Send, S>(
    data: &mut [T],
    len: usize,
    parallel: bool,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    if len == 0 {
        return;
    }
    if parallel {
        data.par_chunks_mut(len)
            .enumerate()
            .with_min_len(4)
            .for_each_init(init, |s, (b, c)| f(s, b, c));
    } else {
        let mut s = init();
        for (b, c) in data.chunks_mut(len).enumerate() {
            f(&mut s, b, c);
        }
    }
}

/// [`for_each_chunk`] over two arrays in step: `f(state, b, a_b, c_b)`
/// with `a_b` the `b`-th `a_len`-element chunk of `a` and `c_b` the `b`-th
/// `c_len`-element chunk of `c`.
#[allow(clippy::too_many_arguments)]
fn for_each_chunk_pair<T: Send, U: Send, S>(
    a: &mut [T],
    a_len: usize,
    c: &mut [U],
    c_len: usize,
    parallel: bool,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T], &mut [U]) + Sync + Send,
) {
    if a_len == 0 || c_len == 0 {
        return;
    }
    if parallel {
        a.par_chunks_mut(a_len)
            .zip(c.par_chunks_mut(c_len))
            .enumerate()
            .with_min_len(4)
            .for_each_init(init, |s, (b, (x, y))| f(s, b, x, y));
    } else {
        let mut s = init();
        for (b, (x, y)) in a.chunks_mut(a_len).zip(c.chunks_mut(c_len)).enumerate() {
            f(&mut s, b, x, y);
        }
    }
}

/// Each sample's noise (`[B, C·H_out·W_out]`, zeros where not drawn),
/// drawn where `want(b)`, samples in parallel, and which were drawn.
pub(super) fn batch_noise<F: Float>(
    keys: &[SampleKey],
    len: usize,
    want: impl Fn(usize) -> bool + Sync,
) -> (Vec<F>, Vec<bool>) {
    let drawn: Vec<bool> = (0..keys.len()).map(&want).collect();
    let mut eps = vec![F::ZERO; keys.len() * len];
    let parallel = eps.len() >= PARALLEL_MIN_ELEMENTS;
    for_each_chunk(
        &mut eps,
        len,
        parallel,
        Vec::new,
        |z: &mut Vec<f32>, b, out| {
            if drawn[b] {
                z.resize(len, 0.0);
                fill_normals(&keys[b].noise(), 0, z);
                for (o, &v) in out.iter_mut().zip(z.iter()) {
                    *o = F::from_f32(v);
                }
            }
        },
    );
    (eps, drawn)
}

fn check_shapes<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
) -> usize {
    let s = images.shape();
    assert_eq!(s.len(), 4, "images must be [B, C, H, W]");
    assert_eq!(
        &s[1..],
        [
            shape.channels,
            shape.src.height as usize,
            shape.src.width as usize
        ],
        "image shape"
    );
    // flat pixel indices (of the padded planes) are computed exactly in f32
    let pad = 2 * BORDER as u64;
    assert!(
        (shape.src.height as u64 + pad) * (shape.src.width as u64 + pad) <= 1 << 24,
        "source image larger than 2^24 pixels (its border included)"
    );
    assert_eq!(params.shape(), [s[0], NUM_PARAMS], "params must be [B, 7]");
    assert_eq!(keys.len(), s[0], "one key per sample");
    s[0]
}

/// Forward: augments every sample of `images` (`[B, C, H, W]`) with its row
/// of `params` (`[B, 7]`) and the noise addressed by its key.
pub fn augment_forward<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
) -> Tensor<F> {
    let plane_out = shape.channels * shape.out.height as usize * shape.out.width as usize;
    let sigma = |b: usize| params.data()[b * NUM_PARAMS + Param::Sigma as usize];
    let (eps, _) = batch_noise::<F>(keys, plane_out, |b| sigma(b) > F::ZERO);
    forward_impl(images, params, keys, shape, &eps, false).0
}

/// The forward pass with each sample's noise given (`[B, C·H_out·W_out]`,
/// read where `sigma > 0`). Samples in parallel, each computed alone, so the
/// result does not depend on the number of threads.
pub(super) fn forward_impl<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
    eps: &[F],
    save: bool,
) -> (Tensor<F>, Option<Saved<F>>) {
    let batch = check_shapes(images, params, keys, shape);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let plane_out = out_len(shape);
    let plane_in = images.len() / batch.max(1);
    let mut out = vec![F::ZERO; batch * plane_out];
    let parallel = out.len() >= PARALLEL_MIN_ELEMENTS;
    let sample = |s: &mut Scratch<F>, b: usize, o: &mut [F], sv: Option<&mut [F]>| {
        let img = &images.data()[b * plane_in..(b + 1) * plane_in];
        let pr = &params.data()[b * NUM_PARAMS..(b + 1) * NUM_PARAMS];
        let eps = &eps[b * plane_out..(b + 1) * plane_out];
        sample::forward(s, img, pr, eps, shape, o, sv);
    };
    let saved = if save && plane_out > 0 {
        let mut data = vec![F::ZERO; 3 * out.len()];
        for_each_chunk_pair(
            &mut out,
            plane_out,
            &mut data,
            3 * plane_out,
            parallel,
            || Scratch::new(shape),
            |s, b, o, sv| sample(s, b, o, Some(sv)),
        );
        Some(Saved { data })
    } else {
        for_each_chunk(
            &mut out,
            plane_out,
            parallel,
            || Scratch::new(shape),
            |s, b, o| sample(s, b, o, None),
        );
        None
    };
    (Tensor::new(&[batch, shape.channels, ho, wo], out), saved)
}

/// Vector-Jacobian product of [`augment_forward`]: given the output gradient
/// `gy`, the gradient with respect to the images (if `want_images`) and to
/// the `[B, 7]` parameters (if `want_params`).
pub fn augment_vjp<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
    gy: &Tensor<F>,
    want_images: bool,
    want_params: bool,
) -> (Option<Tensor<F>>, Option<Tensor<F>>) {
    let plane_out = shape.channels * shape.out.height as usize * shape.out.width as usize;
    let (eps, drawn) = batch_noise::<F>(keys, plane_out, |_| want_params);
    let noise = BatchNoise { eps, drawn };
    vjp_impl(
        images,
        params,
        keys,
        shape,
        gy,
        want_images,
        want_params,
        &noise,
        None,
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn vjp_impl<F: Float>(
    images: &Tensor<F>,
    params: &Tensor<F>,
    keys: &[SampleKey],
    shape: &AugmentShape,
    gy: &Tensor<F>,
    want_images: bool,
    want_params: bool,
    noise: &BatchNoise<F>,
    saved: Option<&Saved<F>>,
) -> (Option<Tensor<F>>, Option<Tensor<F>>) {
    let batch = check_shapes(images, params, keys, shape);
    let (ho, wo) = (shape.out.height as usize, shape.out.width as usize);
    let plane_out = shape.channels * ho * wo;
    let plane_in = images.len() / batch.max(1);
    assert_eq!(gy.len(), batch * plane_out, "gradient shape");
    if !want_images && !want_params {
        return (None, None);
    }
    let sample = |s: &mut Scratch<F>, b: usize, gi: Option<&mut [F]>| {
        sample::vjp(
            s,
            &images.data()[b * plane_in..(b + 1) * plane_in],
            &row_params(params, b),
            &keys[b],
            noise.of(b, plane_out),
            shape,
            &gy.data()[b * plane_out..(b + 1) * plane_out],
            gi,
            want_params,
        )
    };
    let mut rows = vec![[F::ZERO; NUM_PARAMS]; batch];
    let parallel = batch * plane_out >= PARALLEL_MIN_ELEMENTS;
    if let Some(saved) = saved.filter(|_| want_params && !want_images) {
        assert_eq!(saved.data.len(), 3 * gy.len(), "saved forward values");
        for_each_chunk(
            &mut rows,
            1,
            parallel,
            || Scratch::new(shape),
            |s, b, r| {
                r[0] = sample::vjp_saved(
                    s,
                    &row_params(params, b),
                    &keys[b],
                    noise.of(b, plane_out),
                    shape,
                    &gy.data()[b * plane_out..(b + 1) * plane_out],
                    &saved.data[3 * b * plane_out..3 * (b + 1) * plane_out],
                )
            },
        );
        let g_par = Tensor::new(&[batch, NUM_PARAMS], rows.into_iter().flatten().collect());
        return (None, Some(g_par));
    }
    let mut g_img = want_images.then(|| Tensor::zeros(images.shape()));
    match g_img.as_mut() {
        Some(t) if plane_in > 0 => for_each_chunk_pair(
            t.data_mut(),
            plane_in,
            &mut rows,
            1,
            parallel,
            || Scratch::new(shape),
            |s, b, g, r| r[0] = sample(s, b, Some(g)),
        ),
        _ => for_each_chunk(
            &mut rows,
            1,
            parallel,
            || Scratch::new(shape),
            |s, b, r| r[0] = sample(s, b, None),
        ),
    }
    let g_par = want_params
        .then(|| Tensor::new(&[batch, NUM_PARAMS], rows.into_iter().flatten().collect()));
    (g_img, g_par)
}

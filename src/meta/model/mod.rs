//! Task models trained by the meta loop, written with the engine's tape
//! operations (so MAML can differentiate through their training): a
//! multilayer perceptron ([`mlp`]) and a small convolutional network
//! ([`cnn`]).

pub mod cnn;
pub mod mlp;

use crate::meta::engine::float::Float;
use crate::meta::engine::tape::{Tape, Var};
use crate::meta::engine::tensor::Tensor;

/// The forward pass of a model: logits of `x` with parameters `params`.
type Forward<'a, F> = dyn Fn(&mut Tape<F>, &[Var], Var) -> Var + 'a;

/// Mean cross-entropy of `forward` on `(x, labels)` at `params`, and its
/// gradient in every parameter.
pub(crate) fn loss_and_grads<F: Float>(
    params: &[Tensor<F>],
    x: &Tensor<F>,
    labels: &[usize],
    forward: &Forward<'_, F>,
) -> (F, Vec<Tensor<F>>) {
    let mut tape = Tape::new();
    let ps: Vec<Var> = params.iter().map(|p| tape.param(p.clone())).collect();
    let xv = tape.constant(x.clone());
    let logits = forward(&mut tape, &ps, xv);
    let loss = tape.cross_entropy(logits, labels);
    let grads = tape.grad(loss, &ps, false);
    (
        tape.item(loss),
        grads.iter().map(|g| tape.value(*g).clone()).collect(),
    )
}

/// Logits `[n, classes]` of `x: [n, d]` through `forward`, `chunk` rows at
/// a time (bounded memory).
pub(crate) fn logits_in_chunks<F: Float>(
    params: &[Tensor<F>],
    x: &Tensor<F>,
    classes: usize,
    chunk: usize,
    forward: &Forward<'_, F>,
) -> Tensor<F> {
    let (n, d) = x.dims2();
    let mut out = Vec::with_capacity(n * classes);
    for start in (0..n).step_by(chunk.max(1)) {
        let rows = (n - start).min(chunk.max(1));
        let part = Tensor::new(&[rows, d], x.data()[start * d..(start + rows) * d].to_vec());
        let mut tape = Tape::new();
        let ps: Vec<Var> = params.iter().map(|p| tape.constant(p.clone())).collect();
        let xv = tape.constant(part);
        let y = forward(&mut tape, &ps, xv);
        out.extend_from_slice(tape.value(y).data());
    }
    Tensor::new(&[n, classes], out)
}

/// Fraction of rows of `logits` whose arg-max is the label.
pub(crate) fn accuracy_of<F: Float>(logits: &Tensor<F>, labels: &[usize]) -> f64 {
    let classes = logits.shape()[1];
    let correct = logits
        .data()
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &y)| {
            let best = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            best == y
        })
        .count();
    correct as f64 / labels.len().max(1) as f64
}

//! Task models trained by the meta loop, written with the engine's tape
//! operations (so MAML can differentiate through their training): a
//! multilayer perceptron ([`mlp`]) and a small convolutional network
//! ([`cnn`]).

pub mod cnn;
pub mod mlp;

use std::rc::Rc;

use crate::meta::engine::float::Float;
use crate::meta::engine::tape::{Tape, Var};
use crate::meta::engine::tensor::Tensor;
use crate::meta::engine::IndexMap;

use cnn::{Cnn, CnnShape};
use mlp::{Activation, Mlp};

/// What the meta loop's task model computes from a parameter list: the
/// architecture without its weights. Inputs are the meta loop's rows,
/// `[n, C·H·W]` (each image's planes one after the other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// An MLP with this hidden nonlinearity (its widths are its
    /// parameters' shapes).
    Mlp(Activation),
    /// The CNN of this shape (ReLU; channels-last inside, the input rows
    /// are permuted to it when there is more than one channel).
    Cnn(CnnShape),
}

impl Arch {
    /// Logits `[n, classes]` of the rows `x` with parameters `params`.
    pub fn forward<F: Float>(&self, tape: &mut Tape<F>, params: &[Var], x: Var) -> Var {
        match self {
            Arch::Mlp(act) => Mlp::forward(*act, tape, params, x),
            Arch::Cnn(shape) => {
                let x = channels_last(tape, shape, x);
                Cnn::forward(shape, tape, params, x)
            }
        }
    }

    /// Mean cross-entropy of the logits of `x` against `labels`.
    pub fn loss<F: Float>(
        &self,
        tape: &mut Tape<F>,
        params: &[Var],
        x: Var,
        labels: &[usize],
    ) -> Var {
        let logits = self.forward(tape, params, x);
        tape.cross_entropy(logits, labels)
    }

    /// [`Arch::forward`] with the ReLU activation pattern recorded
    /// (`frozen = None`: the `1[z > 0]` masks are returned) or frozen to
    /// given masks, so that the output is polynomial in the weights: the
    /// function whose derivatives autodiff computes (ReLU'' = 0), which
    /// finite differences of gradients can then approximate.
    pub fn forward_frozen<F: Float>(
        &self,
        tape: &mut Tape<F>,
        params: &[Var],
        x: Var,
        frozen: Option<&[Tensor<F>]>,
    ) -> (Var, Vec<Tensor<F>>) {
        match self {
            Arch::Mlp(act) => Mlp::forward_frozen(*act, tape, params, x, frozen),
            Arch::Cnn(shape) => {
                let x = channels_last(tape, shape, x);
                Cnn::forward_frozen(shape, tape, params, x, frozen)
            }
        }
    }
}

/// The rows `[n, C·H·W]` as the CNN's channels-last `[n, H·W·C]` (the same
/// data when `C = 1`).
fn channels_last<F: Float>(tape: &mut Tape<F>, shape: &CnnShape, x: Var) -> Var {
    let c = shape.channels;
    if c == 1 {
        return x;
    }
    let n = tape.value(x).shape()[0];
    let map = Rc::new(IndexMap::chw_to_hwc(n, c, shape.height, shape.width));
    tape.gather(x, &map)
}

/// A task model: its architecture and its weights.
#[derive(Clone, Debug)]
pub struct Model<F: Float> {
    /// What the weights parameterise.
    pub arch: Arch,
    /// Weights and biases, in the architecture's order.
    pub params: Vec<Tensor<F>>,
}

impl<F: Float> Model<F> {
    /// An MLP `sizes[0] → … → classes` ([`Mlp::new`]'s initialisation).
    pub fn mlp(sizes: &[usize], activation: Activation, seed: u64) -> Self {
        Model {
            arch: Arch::Mlp(activation),
            params: Mlp::new(sizes, activation, seed).params,
        }
    }

    /// The CNN of `shape` ([`Cnn::new`]'s initialisation).
    pub fn cnn(shape: CnnShape, seed: u64) -> Self {
        Model {
            arch: Arch::Cnn(shape),
            params: Cnn::new(shape, seed).params,
        }
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(Tensor::len).sum()
    }

    /// The loss on `(x, labels)` and its gradient in every parameter.
    pub fn loss_and_grads(&self, x: &Tensor<F>, labels: &[usize]) -> (F, Vec<Tensor<F>>) {
        let arch = self.arch;
        loss_and_grads(&self.params, x, labels, &|t, p, x| arch.forward(t, p, x))
    }

    /// One SGD step `w ← w − lr·∇L` on `(x, labels)`; returns the loss.
    pub fn sgd_step(&mut self, x: &Tensor<F>, labels: &[usize], lr: F) -> F {
        let (loss, grads) = self.loss_and_grads(x, labels);
        for (p, g) in self.params.iter_mut().zip(&grads) {
            p.axpy(-lr, g);
        }
        loss
    }

    /// Logits of `x: [n, C·H·W]`, in chunks of 256 rows.
    pub fn logits(&self, x: &Tensor<F>) -> Tensor<F> {
        let arch = self.arch;
        let classes = self.params.last().map_or(0, Tensor::len);
        logits_in_chunks(&self.params, x, classes, 256, &|t, p, x| {
            arch.forward(t, p, x)
        })
    }

    /// Fraction of rows of `x` whose arg-max logit is the label.
    pub fn accuracy(&self, x: &Tensor<F>, labels: &[usize]) -> f64 {
        accuracy_of(&self.logits(x), labels)
    }
}

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

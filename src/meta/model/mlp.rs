//! The task model: a multilayer perceptron classifier, and a plain SGD step.

use crate::meta::engine::float::Float;
use crate::meta::engine::tape::{Tape, Var};
use crate::meta::engine::tensor::Tensor;
use crate::meta::rng::SplitMix;

/// The hidden layers' nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)` (smooth: used where exact second derivatives matter).
    Tanh,
}

/// An MLP `sizes[0] → sizes[1] → … → classes`; parameters are
/// `[w0, b0, w1, b1, …]` with `w_l: [sizes[l], sizes[l+1]]`.
#[derive(Clone, Debug)]
pub struct Mlp<F: Float> {
    /// Layer widths, input first, classes last.
    pub sizes: Vec<usize>,
    /// Hidden nonlinearity.
    pub activation: Activation,
    /// Weights and biases, alternating.
    pub params: Vec<Tensor<F>>,
}

impl<F: Float> Mlp<F> {
    /// He-uniform weights (`U(±√(6 / fan_in))`), zero biases.
    pub fn new(sizes: &[usize], activation: Activation, seed: u64) -> Self {
        assert!(sizes.len() >= 2, "an MLP needs an input and an output size");
        let mut rng = SplitMix::new(seed);
        let mut params = Vec::new();
        for l in 0..sizes.len() - 1 {
            let (i, o) = (sizes[l], sizes[l + 1]);
            let bound = (6.0 / i as f64).sqrt();
            let w = (0..i * o)
                .map(|_| F::from_f64(rng.range(-bound, bound)))
                .collect();
            params.push(Tensor::new(&[i, o], w));
            params.push(Tensor::zeros(&[o]));
        }
        Mlp {
            sizes: sizes.to_vec(),
            activation,
            params,
        }
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(Tensor::len).sum()
    }

    /// Logits `[n, classes]` of inputs `x: [n, sizes[0]]` with parameters
    /// `params` (vars on `tape`, in [`Mlp::params`] order).
    pub fn forward(activation: Activation, tape: &mut Tape<F>, params: &[Var], x: Var) -> Var {
        if params.len() < 2 {
            return x;
        }
        let z = tape.matmul(x, params[0]);
        let z0 = tape.add_bias(z, params[1]);
        Self::forward_from_first(activation, tape, &params[2..], z0)
    }

    /// The logits from the first layer's pre-activation `z0 = x·W₀ + b₀`:
    /// the layers after it, `tail` being `params[2..]` (`[W₁, b₁, …]`).
    pub fn forward_from_first(
        activation: Activation,
        tape: &mut Tape<F>,
        tail: &[Var],
        z0: Var,
    ) -> Var {
        let mut z = z0;
        for l in 0..tail.len() / 2 {
            let h = match activation {
                Activation::Relu => tape.relu(z),
                Activation::Tanh => tape.tanh(z),
            };
            let y = tape.matmul(h, tail[2 * l]);
            z = tape.add_bias(y, tail[2 * l + 1]);
        }
        z
    }

    /// [`Mlp::forward`] with the ReLU activation pattern either recorded
    /// (`frozen = None`; the `1[z > 0]` masks are returned) or frozen to
    /// given masks, so that the output is polynomial in the weights — the
    /// function whose derivatives autodiff computes (ReLU'' = 0).
    pub fn forward_frozen(
        activation: Activation,
        tape: &mut Tape<F>,
        params: &[Var],
        x: Var,
        frozen: Option<&[Tensor<F>]>,
    ) -> (Var, Vec<Tensor<F>>) {
        let layers = params.len() / 2;
        let mut h = x;
        let mut masks = Vec::new();
        for l in 0..layers {
            let z = tape.matmul(h, params[2 * l]);
            let z = tape.add_bias(z, params[2 * l + 1]);
            h = if l + 1 == layers {
                z
            } else {
                match (activation, frozen.and_then(|f| f.get(l))) {
                    (Activation::Relu, Some(mask)) => {
                        let m = tape.constant(mask.clone());
                        tape.mul(z, m)
                    }
                    (Activation::Relu, None) => {
                        masks.push(
                            tape.value(z)
                                .map(|v| if v > F::ZERO { F::ONE } else { F::ZERO }),
                        );
                        tape.relu(z)
                    }
                    (Activation::Tanh, _) => tape.tanh(z),
                }
            };
        }
        (h, masks)
    }
}

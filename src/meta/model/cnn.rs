//! A small convolutional classifier for the meta loop: conv 3×3 → ReLU →
//! 2×2 average pool, twice, then a linear layer.
//!
//! Convolutions are im2col ([`IndexMap::patches`] through
//! [`Tape::gather`]) times a weight matrix, and pooling is the 2×2 windows
//! times a constant averaging matrix. Every piece is a tape operation whose
//! backward is itself made of tape operations (gather ↔ scatter-add,
//! matmul), so the loss can be differentiated twice, as MAML's exact
//! hypergradient needs.
//!
//! Images are channels-last: a batch is `[n, h·w·c]`, each row the pixels
//! in row-major order with their `c` channels together (for one channel,
//! the same as the MLP's input).

use std::cell::RefCell;
use std::rc::Rc;

use crate::meta::engine::float::Float;
use crate::meta::engine::tape::{Tape, Var};
use crate::meta::engine::tensor::Tensor;
use crate::meta::engine::IndexMap;
use crate::meta::rng::SplitMix;

/// The sizes of a [`Cnn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CnnShape {
    /// Input height (a multiple of 4 keeps every pixel in a pool window).
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Input channels.
    pub channels: usize,
    /// Channels of the first convolution.
    pub conv1: usize,
    /// Channels of the second convolution.
    pub conv2: usize,
    /// Classes (outputs of the linear layer).
    pub classes: usize,
}

impl CnnShape {
    /// The default for 28×28 grey images and 10 classes: 16 and 32
    /// channels, 20,490 parameters.
    pub fn fashion_mnist() -> Self {
        CnnShape {
            height: 28,
            width: 28,
            channels: 1,
            conv1: 16,
            conv2: 32,
            classes: 10,
        }
    }

    /// Height and width after the two pools.
    fn pooled(&self) -> (usize, usize) {
        (self.height / 4, self.width / 4)
    }

    /// Shapes of the parameters, in [`Cnn::params`] order.
    pub fn param_shapes(&self) -> [Vec<usize>; 6] {
        let (ph, pw) = self.pooled();
        [
            vec![9 * self.channels, self.conv1],
            vec![self.conv1],
            vec![9 * self.conv1, self.conv2],
            vec![self.conv2],
            vec![ph * pw * self.conv2, self.classes],
            vec![self.classes],
        ]
    }
}

/// The model: its shape and `[w1, b1, w2, b2, w3, b3]` (see
/// [`CnnShape::param_shapes`]).
#[derive(Clone, Debug)]
pub struct Cnn<F: Float> {
    /// Sizes.
    pub shape: CnnShape,
    /// Weights and biases.
    pub params: Vec<Tensor<F>>,
}

/// `[4·c, c]` with `1/4` where the row's channel is the column: averages
/// the four pixels of each 2×2 window, channel by channel.
fn average_matrix<F: Float>(c: usize) -> Tensor<F> {
    let mut m = Tensor::zeros(&[4 * c, c]);
    let data = m.data_mut();
    for q in 0..4 {
        for ch in 0..c {
            data[(q * c + ch) * c + ch] = F::from_f64(0.25);
        }
    }
    m
}

impl<F: Float> Cnn<F> {
    /// He-uniform weights (`U(±√(6 / fan_in))`), zero biases.
    pub fn new(shape: CnnShape, seed: u64) -> Self {
        assert!(
            shape.height >= 4 && shape.width >= 4,
            "the CNN pools twice: inputs of at least 4×4"
        );
        let mut rng = SplitMix::new(seed);
        let params = shape
            .param_shapes()
            .iter()
            .map(|s| {
                if s.len() == 1 {
                    Tensor::zeros(s)
                } else {
                    let bound = (6.0 / s[0] as f64).sqrt();
                    let w = (0..s[0] * s[1])
                        .map(|_| F::from_f64(rng.range(-bound, bound)))
                        .collect();
                    Tensor::new(s, w)
                }
            })
            .collect();
        Cnn { shape, params }
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(Tensor::len).sum()
    }

    /// Logits `[n, classes]` of `x: [n, h·w·c]` (channels-last) with
    /// parameters `params` (vars on `tape`, in [`Cnn::params`] order).
    pub fn forward(shape: &CnnShape, tape: &mut Tape<F>, params: &[Var], x: Var) -> Var {
        Self::forward_with(shape, tape, params, x, &mut |t, _, z| t.relu(z))
    }

    /// [`Cnn::forward`] with the two ReLUs' activation patterns recorded
    /// (`frozen = None`: the `1[z > 0]` masks are returned) or frozen to
    /// given masks (`relu(z)` becomes `z ⊙ mask`), so that the output is
    /// polynomial in the weights, as [`super::Arch::forward_frozen`] says.
    pub fn forward_frozen(
        shape: &CnnShape,
        tape: &mut Tape<F>,
        params: &[Var],
        x: Var,
        frozen: Option<&[Tensor<F>]>,
    ) -> (Var, Vec<Tensor<F>>) {
        let mut masks = Vec::new();
        let y = Self::forward_with(shape, tape, params, x, &mut |t, layer, z| match frozen
            .and_then(|f| f.get(layer))
        {
            Some(mask) => {
                let m = t.constant(mask.clone());
                t.mul(z, m)
            }
            None => {
                masks.push(
                    t.value(z)
                        .map(|v| if v > F::ZERO { F::ONE } else { F::ZERO }),
                );
                t.relu(z)
            }
        });
        (y, masks)
    }

    /// The forward pass with `relu(tape, layer, z)` as each convolution's
    /// nonlinearity.
    fn forward_with(
        shape: &CnnShape,
        tape: &mut Tape<F>,
        params: &[Var],
        x: Var,
        relu: &mut dyn FnMut(&mut Tape<F>, usize, Var) -> Var,
    ) -> Var {
        let (h, w) = (shape.height, shape.width);
        let n = tape.value(x).shape()[0];
        let a = tape.reshape(x, &[n * h * w, shape.channels]);
        let z = conv(tape, a, n, (h, w, shape.channels), params[0], params[1]);
        let a = relu(tape, 0, z);
        let a = pool(tape, a, n, (h, w, shape.conv1));
        let (h, w) = (h / 2, w / 2);
        let z = conv(tape, a, n, (h, w, shape.conv1), params[2], params[3]);
        let a = relu(tape, 1, z);
        let a = pool(tape, a, n, (h, w, shape.conv2));
        let (ph, pw) = shape.pooled();
        let flat = tape.reshape(a, &[n, ph * pw * shape.conv2]);
        let z = tape.matmul(flat, params[4]);
        tape.add_bias(z, params[5])
    }
}

/// How many patch maps [`patches`] keeps per thread (a map of the second
/// convolution for 256 images is 29 MB).
const CACHED_MAPS: usize = 12;

type PatchKey = (usize, usize, usize, usize, usize, usize, usize);

thread_local! {
    /// The most recently used patch maps, newest last.
    static PATCH_MAPS: RefCell<Vec<(PatchKey, Rc<IndexMap>)>> = const { RefCell::new(Vec::new()) };
}

/// [`IndexMap::patches`], built once per geometry and thread (every
/// training step asks for the same few).
fn patches(
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Rc<IndexMap> {
    let key = (n, h, w, c, k, stride, pad);
    PATCH_MAPS.with(|maps| {
        let mut maps = maps.borrow_mut();
        if let Some(i) = maps.iter().position(|(kk, _)| *kk == key) {
            let entry = maps.remove(i);
            let map = entry.1.clone();
            maps.push(entry);
            return map;
        }
        let map = Rc::new(IndexMap::patches(n, h, w, c, k, stride, pad));
        if maps.len() >= CACHED_MAPS {
            maps.remove(0);
        }
        maps.push((key, map.clone()));
        map
    })
}

/// `conv3×3(a) + b` with zero padding 1: `a` is `[n·h·w, c]`, the result
/// `[n·h·w, c_out]`.
fn conv<F: Float>(
    tape: &mut Tape<F>,
    a: Var,
    n: usize,
    (h, w, c): (usize, usize, usize),
    weight: Var,
    bias: Var,
) -> Var {
    let map = patches(n, h, w, c, 3, 1, 1);
    let cols = tape.gather(a, &map);
    let z = tape.matmul(cols, weight);
    tape.add_bias(z, bias)
}

/// 2×2 average pooling at stride 2: `[n·h·w, c]` to `[n·(h/2)·(w/2), c]`.
fn pool<F: Float>(tape: &mut Tape<F>, a: Var, n: usize, (h, w, c): (usize, usize, usize)) -> Var {
    let map = patches(n, h, w, c, 2, 2, 0);
    let windows = tape.gather(a, &map);
    let avg = tape.constant(average_matrix(c));
    tape.matmul(windows, avg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct convolution (zero padding 1) + bias + ReLU, then a direct
    /// 2×2 average: the reference for the im2col form.
    fn naive(shape: &CnnShape, x: &[f64], n: usize, w1: &[f64], b1: &[f64]) -> Vec<f64> {
        let (h, w, c, co) = (shape.height, shape.width, shape.channels, shape.conv1);
        let mut conv = vec![0.0; n * h * w * co];
        for b in 0..n {
            for y in 0..h {
                for xx in 0..w {
                    for o in 0..co {
                        let mut s = b1[o];
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let (iy, ix) =
                                    (y as isize + dy as isize - 1, xx as isize + dx as isize - 1);
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                for ch in 0..c {
                                    let v = x[((b * h + iy as usize) * w + ix as usize) * c + ch];
                                    s += v * w1[((dy * 3 + dx) * c + ch) * co + o];
                                }
                            }
                        }
                        conv[((b * h + y) * w + xx) * co + o] = s.max(0.0);
                    }
                }
            }
        }
        let (ph, pw) = (h / 2, w / 2);
        let mut out = vec![0.0; n * ph * pw * co];
        for b in 0..n {
            for y in 0..ph {
                for xx in 0..pw {
                    for o in 0..co {
                        let at = |dy: usize, dx: usize| {
                            conv[((b * h + 2 * y + dy) * w + 2 * xx + dx) * co + o]
                        };
                        out[((b * ph + y) * pw + xx) * co + o] =
                            (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn im2col_conv_and_pool_match_a_direct_computation() {
        let shape = CnnShape {
            height: 6,
            width: 5,
            channels: 2,
            conv1: 3,
            conv2: 2,
            classes: 4,
        };
        let model = Cnn::<f64>::new(shape, 7);
        let mut rng = SplitMix::new(3);
        let n = 2;
        let x: Vec<f64> = (0..n * 6 * 5 * 2).map(|_| rng.range(-1.0, 1.0)).collect();
        let b1: Vec<f64> = (0..3).map(|_| rng.range(-0.3, 0.3)).collect();
        let mut tape = Tape::new();
        let xv = tape.constant(Tensor::new(&[n * 30, 2], x.clone()));
        let wv = tape.constant(model.params[0].clone());
        let bv = tape.constant(Tensor::new(&[3], b1.clone()));
        let z = conv(&mut tape, xv, n, (6, 5, 2), wv, bv);
        let a = tape.relu(z);
        let p = pool(&mut tape, a, n, (6, 5, 3));
        let want = naive(&shape, &x, n, model.params[0].data(), &b1);
        let got = tape.value(p).data();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
    }

    #[test]
    fn the_fashion_mnist_shape_has_tens_of_thousands_of_parameters() {
        let model = super::super::Model::<f32>::cnn(CnnShape::fashion_mnist(), 1);
        assert_eq!(model.num_params(), 160 + 4640 + 15690);
        let x = Tensor::zeros(&[3, 784]);
        assert_eq!(model.logits(&x).shape(), &[3, 10]);
    }
}

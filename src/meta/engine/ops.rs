//! The operations of the tape: for each, its forward value and its backward
//! rule. Backward rules are written with tape operations themselves, so that
//! with `create_graph` a gradient can be differentiated again.
//!
//! Shape mismatches are programming errors and panic with a message; none of
//! these functions sees untrusted input.

use std::rc::Rc;

use super::float::Float;
use super::index_map::IndexMap;
use super::tape::{CustomOp, Op, Tape, Var};
use super::tensor::Tensor;

impl<F: Float> Tape<F> {
    // ---------------------------------------------------------------- matmul

    /// Matrix product `a·b` of `[m, k]` and `[k, n]`.
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        self.matmul_t(a, b, false, false)
    }

    /// `op(a)·op(b)` where `op` transposes its matrix when `ta` / `tb` is set.
    pub fn matmul_t(&mut self, a: Var, b: Var, ta: bool, tb: bool) -> Var {
        let (ra, ca) = self.value(a).dims2();
        let (rb, cb) = self.value(b).dims2();
        let (m, k, rsa, csa) = if ta { (ca, ra, 1, ca) } else { (ra, ca, ca, 1) };
        let (k2, n, rsb, csb) = if tb { (cb, rb, 1, cb) } else { (rb, cb, cb, 1) };
        assert_eq!(k, k2, "matmul inner dimensions {k} and {k2}");
        let mut out = vec![F::ZERO; m * n];
        F::gemm(
            m,
            k,
            n,
            F::ONE,
            self.value(a).data(),
            rsa,
            csa,
            self.value(b).data(),
            rsb,
            csb,
            F::ZERO,
            &mut out,
        );
        self.push(Tensor::new(&[m, n], out), Op::MatMul { a, b, ta, tb })
    }

    // ------------------------------------------------------ elementwise binary

    fn binary(&mut self, a: Var, b: Var, op: Op<F>, f: impl Fn(F, F) -> F) -> Var {
        let value = self.value(a).zip(self.value(b), f);
        self.push(value, op)
    }

    /// `a + b` (same shapes).
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        self.binary(a, b, Op::Add(a, b), |x, y| x + y)
    }

    /// `a − b` (same shapes).
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        self.binary(a, b, Op::Sub(a, b), |x, y| x - y)
    }

    /// `a ⊙ b`, elementwise (same shapes).
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        self.binary(a, b, Op::Mul(a, b), |x, y| x * y)
    }

    // ------------------------------------------------------------ with scalars

    /// `scale·x + shift`, elementwise, with constants.
    pub fn scale_shift(&mut self, x: Var, scale: F, shift: F) -> Var {
        let value = self.value(x).map(|v| scale * v + shift);
        self.push(value, Op::ScaleShift { x, scale })
    }

    /// `c·x` for a constant `c`.
    pub fn scale(&mut self, x: Var, c: F) -> Var {
        self.scale_shift(x, c, F::ZERO)
    }

    /// `x · s` where `s` is a 0-dimensional node (differentiable in both).
    pub fn mul_scalar(&mut self, x: Var, s: Var) -> Var {
        assert!(
            self.value(s).shape().is_empty(),
            "mul_scalar: s must be 0-dimensional"
        );
        let c = self.item(s);
        let value = self.value(x).map(|v| v * c);
        self.push(value, Op::MulScalar { x, s })
    }

    /// `w − α·g`: one SGD step, differentiable in `w` and `g`.
    pub fn sgd_step(&mut self, w: Var, g: Var, alpha: F) -> Var {
        let step = self.scale(g, alpha);
        self.sub(w, step)
    }

    /// `⟨a, b⟩` as a 0-dimensional node.
    pub fn dot(&mut self, a: Var, b: Var) -> Var {
        let p = self.mul(a, b);
        self.sum(p)
    }

    // --------------------------------------------------------------- bias add

    /// `x + b` for `x: [n, m]` and `b: [m]`, `b` broadcast over the rows.
    pub fn add_bias(&mut self, x: Var, b: Var) -> Var {
        let (_, m) = self.value(x).dims2();
        assert_eq!(self.value(b).shape(), [m], "bias shape");
        let bias = self.value(b).data().to_vec();
        let mut value = self.value(x).clone();
        for row in value.data_mut().chunks_mut(m) {
            for (v, &c) in row.iter_mut().zip(&bias) {
                *v += c;
            }
        }
        self.push(value, Op::AddBias { x, b })
    }

    // ------------------------------------------------- reductions, broadcasts

    /// `[n, m] → [m]`: sum over rows.
    pub fn sum_rows(&mut self, x: Var) -> Var {
        let (_, m) = self.value(x).dims2();
        let mut out = vec![F::ZERO; m];
        for row in self.value(x).data().chunks(m) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        self.push(Tensor::new(&[m], out), Op::SumRows(x))
    }

    /// `[m] → [n, m]`: the row repeated `n` times.
    pub fn broadcast_rows(&mut self, x: Var, n: usize) -> Var {
        let row = self.value(x).data();
        assert_eq!(
            self.value(x).shape().len(),
            1,
            "broadcast_rows of a non-vector"
        );
        let m = row.len();
        let mut out = Vec::with_capacity(n * m);
        for _ in 0..n {
            out.extend_from_slice(row);
        }
        self.push(Tensor::new(&[n, m], out), Op::BroadcastRows(x))
    }

    /// `[n, m] → [n]`: sum over columns.
    pub fn sum_cols(&mut self, x: Var) -> Var {
        let (n, m) = self.value(x).dims2();
        let out = self
            .value(x)
            .data()
            .chunks(m)
            .map(|r| r.iter().copied().sum())
            .collect();
        self.push(Tensor::new(&[n], out), Op::SumCols(x))
    }

    /// `[n] → [n, m]`: each value repeated along its row.
    pub fn broadcast_cols(&mut self, x: Var, m: usize) -> Var {
        assert_eq!(
            self.value(x).shape().len(),
            1,
            "broadcast_cols of a non-vector"
        );
        let col = self.value(x).data();
        let n = col.len();
        let out = col
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, m))
            .collect();
        self.push(Tensor::new(&[n, m], out), Op::BroadcastCols(x))
    }

    /// Sum of all elements, as a 0-dimensional node.
    pub fn sum(&mut self, x: Var) -> Var {
        let s = self.value(x).data().iter().copied().sum();
        self.push(Tensor::scalar(s), Op::Sum(x))
    }

    /// Mean of all elements, as a 0-dimensional node.
    pub fn mean(&mut self, x: Var) -> Var {
        let n = self.value(x).len().max(1);
        let s = self.sum(x);
        self.scale(s, F::ONE / F::from_f64(n as f64))
    }

    /// A 0-dimensional node repeated to `shape`.
    pub fn expand(&mut self, x: Var, shape: &[usize]) -> Var {
        assert!(self.value(x).shape().is_empty(), "expand of a non-scalar");
        let value = Tensor::full(shape, self.item(x));
        self.push(value, Op::Expand(x))
    }

    // ------------------------------------------------------------ activations

    /// `max(x, 0)`, elementwise.
    pub fn relu(&mut self, x: Var) -> Var {
        let value = self.value(x).map(|v| v.max(F::ZERO));
        self.push(value, Op::Relu(x))
    }

    /// `tanh(x)`, elementwise.
    pub fn tanh(&mut self, x: Var) -> Var {
        let value = self.value(x).map(|v| v.tanh());
        self.push(value, Op::Tanh(x))
    }

    /// Row-wise softmax of `[n, k]` logits.
    pub fn softmax(&mut self, x: Var) -> Var {
        let value = softmax_rows(self.value(x));
        self.push(value, Op::Softmax(x))
    }

    // ----------------------------------------------------------- loss

    /// Mean over the batch of `−log softmax(logits)[label]`, logits `[n, k]`.
    ///
    /// # Panics
    /// If a label is not below `k` or the batch size differs (callers
    /// validate labels when they load them).
    pub fn cross_entropy(&mut self, logits: Var, labels: &[usize]) -> Var {
        let (n, k) = self.value(logits).dims2();
        assert_eq!(labels.len(), n, "one label per row");
        let loss = F::from_f64(mean_cross_entropy(self.value(logits).data(), n, k, labels));
        self.push(
            Tensor::scalar(loss),
            Op::CrossEntropy {
                logits,
                labels: Rc::from(labels),
            },
        )
    }

    // ---------------------------------------------------------- reshape

    /// The same elements under `shape` (same number of elements).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        let value = self.value(x).clone().reshape(shape);
        self.push(value, Op::Reshape(x))
    }

    // ---------------------------------------------------------- index maps

    /// `x` through the element-picking linear `map` (see [`IndexMap`]):
    /// a `map.out_shape` tensor.
    pub fn gather(&mut self, x: Var, map: &Rc<IndexMap>) -> Var {
        let xs = self.value(x);
        assert_eq!(xs.shape(), map.in_shape.as_slice(), "gather input shape");
        let data = xs.data();
        let out = map
            .index
            .iter()
            .map(|&j| {
                if j == IndexMap::ZERO {
                    F::ZERO
                } else {
                    data[j as usize]
                }
            })
            .collect();
        self.push(
            Tensor::new(&map.out_shape, out),
            Op::Gather {
                x,
                map: map.clone(),
            },
        )
    }

    /// The adjoint of [`Tape::gather`]: `y` (shaped `map.out_shape`) summed
    /// back into a `map.in_shape` tensor.
    pub fn scatter_add(&mut self, y: Var, map: &Rc<IndexMap>) -> Var {
        let ys = self.value(y);
        assert_eq!(ys.shape(), map.out_shape.as_slice(), "scatter input shape");
        let mut out = vec![F::ZERO; map.in_len()];
        for (&j, &v) in map.index.iter().zip(ys.data()) {
            if j != IndexMap::ZERO {
                out[j as usize] += v;
            }
        }
        self.push(
            Tensor::new(&map.in_shape, out),
            Op::ScatterAdd {
                x: y,
                map: map.clone(),
            },
        )
    }

    // ---------------------------------------------------------- custom

    /// Records a hand-written operation whose value is `value`.
    pub fn custom(&mut self, op: Rc<dyn CustomOp<F>>, value: Tensor<F>) -> Var {
        self.push(value, Op::Custom(op))
    }

    // ===================================================== backward rules

    /// Gradients of the inputs of node `out` (computed by `op`) given the
    /// output gradient `gy`, for inputs that are `needed`.
    pub(crate) fn backward_op(
        &mut self,
        op: &Op<F>,
        out: Var,
        gy: Var,
        needed: &[bool],
    ) -> Vec<(Var, Var)> {
        let want = |v: &Var| needed[v.0];
        let mut g = Vec::with_capacity(2);
        match *op {
            Op::Leaf => {}
            Op::MatMul { a, b, ta, tb } => {
                if want(&a) {
                    let ga = if ta {
                        self.matmul_t(b, gy, tb, true)
                    } else {
                        self.matmul_t(gy, b, false, !tb)
                    };
                    g.push((a, ga));
                }
                if want(&b) {
                    let gb = if tb {
                        self.matmul_t(gy, a, true, ta)
                    } else {
                        self.matmul_t(a, gy, !ta, false)
                    };
                    g.push((b, gb));
                }
            }
            Op::Add(a, b) => {
                if want(&a) {
                    g.push((a, gy));
                }
                if want(&b) {
                    g.push((b, gy));
                }
            }
            Op::Sub(a, b) => {
                if want(&a) {
                    g.push((a, gy));
                }
                if want(&b) {
                    let nb = self.scale(gy, -F::ONE);
                    g.push((b, nb));
                }
            }
            Op::Mul(a, b) => {
                if want(&a) {
                    let ga = self.mul(gy, b);
                    g.push((a, ga));
                }
                if want(&b) {
                    let gb = self.mul(gy, a);
                    g.push((b, gb));
                }
            }
            Op::ScaleShift { x, scale, .. } => {
                if want(&x) {
                    let gx = self.scale(gy, scale);
                    g.push((x, gx));
                }
            }
            Op::MulScalar { x, s } => {
                if want(&x) {
                    let gx = self.mul_scalar(gy, s);
                    g.push((x, gx));
                }
                if want(&s) {
                    let gs = self.dot(gy, x);
                    g.push((s, gs));
                }
            }
            Op::AddBias { x, b } => {
                if want(&x) {
                    g.push((x, gy));
                }
                if want(&b) {
                    let gb = self.sum_rows(gy);
                    g.push((b, gb));
                }
            }
            Op::SumRows(x) => {
                let n = self.value(x).shape()[0];
                g.push((x, self.broadcast_rows(gy, n)));
            }
            Op::BroadcastRows(x) => g.push((x, self.sum_rows(gy))),
            Op::SumCols(x) => {
                let m = self.value(x).shape()[1];
                g.push((x, self.broadcast_cols(gy, m)));
            }
            Op::BroadcastCols(x) => g.push((x, self.sum_cols(gy))),
            Op::Sum(x) => {
                let shape = self.value(x).shape().to_vec();
                g.push((x, self.expand(gy, &shape)));
            }
            Op::Expand(x) => g.push((x, self.sum(gy))),
            Op::Relu(x) => {
                // d relu = 1[x > 0]; its own derivative is 0 almost everywhere,
                // so the mask is a constant.
                let mask = self
                    .value(x)
                    .map(|v| if v > F::ZERO { F::ONE } else { F::ZERO });
                let mask = self.constant(mask);
                g.push((x, self.mul(gy, mask)));
            }
            Op::Tanh(x) => {
                // d tanh = 1 − y², written in y so that it is differentiable.
                let y2 = self.mul(out, out);
                let d = self.scale_shift(y2, -F::ONE, F::ONE);
                g.push((x, self.mul(gy, d)));
            }
            Op::Softmax(x) => {
                // dx = y ⊙ (gy − rowsum(gy ⊙ y))
                let k = self.value(x).shape()[1];
                let gyy = self.mul(gy, out);
                let s = self.sum_cols(gyy);
                let s = self.broadcast_cols(s, k);
                let centred = self.sub(gy, s);
                g.push((x, self.mul(out, centred)));
            }
            Op::CrossEntropy { logits, ref labels } => {
                // dz = (softmax(z) − onehot) · gy / n
                let (n, k) = self.value(logits).dims2();
                let mut onehot = Tensor::zeros(&[n, k]);
                for (row, &y) in onehot.data_mut().chunks_mut(k).zip(labels.iter()) {
                    row[y] = F::ONE;
                }
                let onehot = self.constant(onehot);
                let p = self.softmax(logits);
                let d = self.sub(p, onehot);
                let s = self.scale(gy, F::ONE / F::from_f64(n.max(1) as f64));
                g.push((logits, self.mul_scalar(d, s)));
            }
            Op::Reshape(x) => {
                let shape = self.value(x).shape().to_vec();
                g.push((x, self.reshape(gy, &shape)));
            }
            // Both linear, each the other's adjoint: differentiable again.
            Op::Gather { x, ref map } => g.push((x, self.scatter_add(gy, map))),
            Op::ScatterAdd { x, ref map } => g.push((x, self.gather(gy, map))),
            Op::Custom(ref op) => {
                let inputs = op.inputs().to_vec();
                let wanted: Vec<bool> = inputs.iter().map(|v| needed[v.0]).collect();
                let grads = {
                    let values: Vec<&Tensor<F>> = inputs.iter().map(|v| self.value(*v)).collect();
                    op.vjp(&values, self.value(out), self.value(gy), &wanted)
                };
                for ((v, w), gv) in inputs.iter().zip(&wanted).zip(grads) {
                    if let (true, Some(gv)) = (*w, gv) {
                        let c = self.constant(gv);
                        g.push((*v, c));
                    }
                }
            }
        }
        g
    }
}

/// The mean over `n` rows of `k` logits of `logsumexp(row) − row[label]`,
/// accumulated in f64 (the value of [`Tape::cross_entropy`]).
///
/// # Panics
/// If a label is not below `k`.
pub(crate) fn mean_cross_entropy<F: Float>(
    logits: &[F],
    n: usize,
    k: usize,
    labels: &[usize],
) -> f64 {
    let mut total = 0.0f64;
    for (row, &y) in logits.chunks(k).zip(labels) {
        assert!(y < k, "label {y} out of range for {k} classes");
        let max = row.iter().copied().fold(row[0], F::max);
        let lse = max.to_f64()
            + row
                .iter()
                .map(|&v| (v - max).to_f64().exp())
                .sum::<f64>()
                .ln();
        total += lse - row[y].to_f64();
    }
    total / n.max(1) as f64
}

/// Row-wise, numerically stable softmax of a `[n, k]` tensor.
pub fn softmax_rows<F: Float>(x: &Tensor<F>) -> Tensor<F> {
    let (_, k) = x.dims2();
    let mut out = x.clone();
    for row in out.data_mut().chunks_mut(k) {
        let max = row.iter().copied().fold(row[0], F::max);
        let mut total = F::ZERO;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            total += *v;
        }
        for v in row.iter_mut() {
            *v = *v / total;
        }
    }
    out
}

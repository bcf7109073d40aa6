//! The tape: a list of nodes in creation order, and reverse-mode `grad`.
//!
//! Every operation appends one node (its value and how it was computed) and
//! returns a [`Var`], the node's index. Because nodes only refer to earlier
//! nodes, creation order is a topological order, and [`Tape::grad`] walks it
//! backwards.
//!
//! The backward pass is itself written with tape operations (see
//! `ops.rs`). With `create_graph = true` those operations are recorded like
//! any other, so a gradient is a [`Var`] that can be differentiated again
//! (double backward: Hessian-vector products, MAML's hypergradient). With
//! `create_graph = false` the same operations run but their nodes are
//! constants, so nothing further is traced through them.

use std::rc::Rc;

use super::float::Float;
use super::index_map::IndexMap;
use super::tensor::Tensor;

/// A handle to a node of a [`Tape`]: its value and its place in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub(crate) usize);

impl Var {
    /// Position of the node in its tape.
    pub fn index(self) -> usize {
        self.0
    }
}

/// An operation whose backward pass is written by hand as a
/// vector-Jacobian product on tensors (the augmentation node, the relaxed
/// policy sampler).
///
/// Such an operation is differentiable **once**: the product it returns is
/// recorded as a constant, so a second differentiation treats its Jacobian as
/// fixed. That is all the bilevel problem needs: the hypergradient crosses the
/// augmentation once, after the recorded inner backward pass.
pub trait CustomOp<F: Float> {
    /// A short name for debugging.
    fn name(&self) -> &'static str;
    /// The inputs, in the order `vjp` reports gradients.
    fn inputs(&self) -> &[Var];
    /// Gradient with respect to each input whose `wanted` flag is set, given
    /// the input values, the output value and the output's gradient `gy`.
    fn vjp(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        gy: &Tensor<F>,
        wanted: &[bool],
    ) -> Vec<Option<Tensor<F>>>;
}

/// How a node was computed. Inputs are earlier nodes.
#[derive(Clone)]
pub(crate) enum Op<F: Float> {
    /// A parameter or a constant.
    Leaf,
    /// `op(a)·op(b)`, `op` transposing when its flag is set.
    MatMul { a: Var, b: Var, ta: bool, tb: bool },
    /// `a + b`.
    Add(Var, Var),
    /// `a − b`.
    Sub(Var, Var),
    /// `a ⊙ b`.
    Mul(Var, Var),
    /// `scale·x + shift`, elementwise, constants `scale` and `shift`.
    ScaleShift { x: Var, scale: F },
    /// `x · s`, `s` a one-element node.
    MulScalar { x: Var, s: Var },
    /// `x + b` with `x: [n, m]`, `b: [m]` broadcast over rows.
    AddBias { x: Var, b: Var },
    /// `[n, m] → [m]`, summing over rows.
    SumRows(Var),
    /// `[m] → [n, m]`, repeating the row.
    BroadcastRows(Var),
    /// `[n, m] → [n]`, summing over columns.
    SumCols(Var),
    /// `[n] → [n, m]`, repeating each value along its row.
    BroadcastCols(Var),
    /// Sum of all elements to a scalar.
    Sum(Var),
    /// A one-element node repeated to `shape`.
    Expand(Var),
    /// `max(x, 0)`.
    Relu(Var),
    /// `tanh(x)`.
    Tanh(Var),
    /// Row-wise softmax of `[n, k]`.
    Softmax(Var),
    /// Mean over rows of `−log softmax(z)[label]`.
    CrossEntropy { logits: Var, labels: Rc<[usize]> },
    /// The same elements under another shape.
    Reshape(Var),
    /// A hand-written first-order operation.
    Custom(Rc<dyn CustomOp<F>>),
    /// `out[i] = x[map.index[i]]` (0 where the index is
    /// [`IndexMap::ZERO`]).
    Gather { x: Var, map: Rc<IndexMap> },
    /// The adjoint of [`Op::Gather`]: `out[j] = Σ_{i: index[i] = j} x[i]`.
    ScatterAdd { x: Var, map: Rc<IndexMap> },
}

impl<F: Float> Op<F> {
    /// The inputs of the operation.
    pub(crate) fn inputs(&self) -> Vec<Var> {
        match self {
            Op::Leaf => Vec::new(),
            Op::MatMul { a, b, .. } => vec![*a, *b],
            Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) => vec![*a, *b],
            Op::MulScalar { x, s } => vec![*x, *s],
            Op::AddBias { x, b } => vec![*x, *b],
            Op::ScaleShift { x, .. } => vec![*x],
            Op::BroadcastRows(x)
            | Op::BroadcastCols(x)
            | Op::Expand(x)
            | Op::SumRows(x)
            | Op::SumCols(x)
            | Op::Sum(x)
            | Op::Relu(x)
            | Op::Tanh(x)
            | Op::Softmax(x)
            | Op::Reshape(x) => vec![*x],
            Op::CrossEntropy { logits, .. } => vec![*logits],
            Op::Gather { x, .. } | Op::ScatterAdd { x, .. } => vec![*x],
            Op::Custom(op) => op.inputs().to_vec(),
        }
    }
}

pub(crate) struct Node<F: Float> {
    pub(crate) value: Tensor<F>,
    pub(crate) op: Op<F>,
    pub(crate) requires_grad: bool,
}

/// A recording of computations, differentiable in reverse mode.
pub struct Tape<F: Float> {
    pub(crate) nodes: Vec<Node<F>>,
    /// False while a backward pass runs without `create_graph`: new nodes
    /// are then constants.
    pub(crate) recording: bool,
}

impl<F: Float> Default for Tape<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Float> Tape<F> {
    /// An empty tape.
    pub fn new() -> Self {
        Tape {
            nodes: Vec::new(),
            recording: true,
        }
    }

    /// Number of nodes recorded so far.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A leaf that gradients can be taken with respect to (a parameter).
    pub fn param(&mut self, value: Tensor<F>) -> Var {
        self.push_raw(value, Op::Leaf, true)
    }

    /// A leaf that is never differentiated (data, labels' one-hots, masks).
    pub fn constant(&mut self, value: Tensor<F>) -> Var {
        self.push_raw(value, Op::Leaf, false)
    }

    /// A leaf that is a [`param`](Self::param) when `differentiable`, else a
    /// [`constant`](Self::constant).
    pub fn leaf(&mut self, value: Tensor<F>, differentiable: bool) -> Var {
        self.push_raw(value, Op::Leaf, differentiable)
    }

    /// The value of a node.
    pub fn value(&self, v: Var) -> &Tensor<F> {
        &self.nodes[v.0].value
    }

    /// The value of a one-element node.
    pub fn item(&self, v: Var) -> F {
        self.nodes[v.0].value.item()
    }

    /// Whether gradients flow through `v` (it depends on a parameter and was
    /// recorded).
    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    /// Records a node computed from `op`'s inputs.
    pub(crate) fn push(&mut self, value: Tensor<F>, op: Op<F>) -> Var {
        let requires_grad =
            self.recording && op.inputs().iter().any(|v| self.nodes[v.0].requires_grad);
        self.push_raw(value, op, requires_grad)
    }

    fn push_raw(&mut self, value: Tensor<F>, op: Op<F>, requires_grad: bool) -> Var {
        self.nodes.push(Node {
            value,
            op,
            requires_grad,
        });
        Var(self.nodes.len() - 1)
    }

    /// Gradients of the one-element node `y` with respect to `xs`.
    ///
    /// A gradient is returned for every `x` (zeros where `y` does not depend
    /// on it). With `create_graph` the backward computations are recorded, so
    /// the returned vars can be differentiated again; otherwise they are
    /// constants.
    ///
    /// # Panics
    /// If `y` is not a one-element node (a programming error).
    pub fn grad(&mut self, y: Var, xs: &[Var], create_graph: bool) -> Vec<Var> {
        assert_eq!(self.value(y).len(), 1, "grad of a non-scalar node");
        let seed = Tensor::full(self.value(y).shape(), F::ONE);
        let seed = self.constant(seed);
        self.grad_seeded(y, seed, xs, create_graph)
    }

    /// Vector-Jacobian product: gradients of `<seed, y>` with respect to `xs`
    /// (`seed` has `y`'s shape). See [`Tape::grad`].
    pub fn grad_seeded(&mut self, y: Var, seed: Var, xs: &[Var], create_graph: bool) -> Vec<Var> {
        assert_eq!(
            self.value(y).shape(),
            self.value(seed).shape(),
            "seed shape"
        );
        let n = y.0 + 1;
        // needed[i]: node i lies on a path from some x to y, so its gradient
        // is wanted. Creation order is topological, one forward sweep does.
        let mut needed = vec![false; n];
        for x in xs {
            if x.0 < n {
                needed[x.0] = true;
            }
        }
        for i in 0..n {
            if !needed[i] && self.nodes[i].requires_grad {
                needed[i] = self.nodes[i].op.inputs().iter().any(|v| needed[v.0]);
            }
        }
        let mut grads: Vec<Option<Var>> = vec![None; n];
        grads[y.0] = Some(seed);
        let was_recording = self.recording;
        self.recording = create_graph;
        for i in (0..n).rev() {
            let Some(gy) = grads[i] else { continue };
            if !needed[i] || matches!(self.nodes[i].op, Op::Leaf) {
                continue;
            }
            let op = self.nodes[i].op.clone();
            for (input, g) in self.backward_op(&op, Var(i), gy, &needed) {
                grads[input.0] = Some(match grads[input.0] {
                    Some(acc) => self.add(acc, g),
                    None => g,
                });
            }
        }
        self.recording = was_recording;
        xs.iter()
            .map(|&x| match grads.get(x.0).copied().flatten() {
                Some(g) => g,
                None => {
                    let z = Tensor::zeros(self.value(x).shape());
                    self.constant(z)
                }
            })
            .collect()
    }
}

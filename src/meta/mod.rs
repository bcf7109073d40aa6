//! The meta-gradient engine: a small reverse-mode autodiff tape, the relaxed
//! augmentation as a differentiable node, an MLP, and MAML / Reptile policy
//! learning, online beside training.
//!
//! - [`engine`] ([`float`], [`tensor`], [`tape`] and the ops' forward and
//!   backward rules): [`Tape::grad`] with `create_graph` records the backward
//!   pass so it can be differentiated again (double backward);
//! - [`augment`]: CONTRACT.md's augmentation as a node, with its
//!   vector-Jacobian product to the images and to every sample's physical
//!   parameters (through the 6 affine coefficients);
//! - [`relaxed`]: φ and the Philox draws to per-sample parameters, hard and
//!   relaxed mode, with the relaxed map's Jacobian;
//! - [`model`]: the task models, [`mlp`] and [`cnn`];
//! - [`bilevel`]: the bilevel problem, Adam, and its two solvers:
//!   [`maml`] (the exact second-order hypergradient through k inner steps)
//!   and [`reptile`] (the first-order estimate);
//! - [`presets`]: `none`, `default` and the learners' starts as φ;
//! - [`schedule`]: φ as a function of training progress (knots);
//! - [`train`]: online training with a fixed or a learning policy;
//! - [`learn`], [`plot`]: [`learn_policy`] and the PNG of φ over the steps.
//!
//! The experiment, the finite-difference checks and the export that use all
//! of this live outside the core, in [`crate::harness`].
//!
//! ```
//! use metaug::meta::{Tape, Tensor};
//! let mut t = Tape::<f64>::new();
//! let x = t.param(Tensor::new(&[2], vec![1.0, 2.0]));
//! let y = t.dot(x, x); // |x|²
//! let g = t.grad(y, &[x], true); // 2x, itself differentiable
//! let s = t.sum(g[0]);
//! let h = t.grad(s, &[x], false); // ∇ Σ 2x = [2, 2]
//! assert_eq!(t.value(h[0]).data(), &[2.0, 2.0]);
//! ```

pub mod augment;
pub mod bilevel;
pub mod data;
pub mod engine;
mod gather;
pub mod learn;
pub mod model;
pub mod plot;
pub mod presets;
pub mod relaxed;
pub mod rng;
pub mod schedule;
pub mod train;

// The engine's, the models' and the solvers' modules at their former paths.
pub use bilevel::{maml, reptile};
pub use engine::{allocator, float, tape, tensor};
pub use model::{cnn, mlp};

pub use data::image_set;
pub use engine::softmax_rows;
pub use float::Float;
pub use learn::{learn_policy, LearnConfig, LearnedPolicy};
pub use tape::{CustomOp, Tape, Var};
pub use tensor::Tensor;

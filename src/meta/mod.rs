//! The meta-gradient engine: a small reverse-mode autodiff tape, the relaxed
//! augmentation as a differentiable node, an MLP, and MAML / Reptile policy
//! learning.
//!
//! - [`float`], [`tensor`], [`tape`], `ops`: the engine (`grad` with
//!   `create_graph` for double backward);
//! - [`augment`]: the augmentation of CONTRACT.md as a node, with its
//!   vector-Jacobian product to the image and to each sample's parameters;
//! - [`relaxed`]: φ and the Philox draws to per-sample parameters (relaxed
//!   and hard mode), with its Jacobian;
//! - [`gradcheck`]: finite-difference checks of all of the above.

pub mod augment;
pub mod bilevel;
pub mod experiment;
pub mod float;
pub mod gradcheck;
pub mod learn;
pub mod maml;
pub mod mlp;
mod ops;
pub mod plot;
pub mod relaxed;
pub mod reptile;
pub mod rng;
pub mod tape;
pub mod tensor;
pub mod train;

pub use float::Float;
pub use learn::{learn_policy, save_policy, LearnConfig, LearnedPolicy};
pub use ops::softmax_rows;
pub use tape::{CustomOp, Tape, Var};
pub use tensor::Tensor;

//! The autodiff engine: tensors of a [`Float`](float::Float) type, and a
//! reverse-mode [`Tape`](tape::Tape) whose backward rules are written with
//! tape operations, so that gradients can be differentiated again (double
//! backward). Models and the bilevel algorithms sit on top of it
//! ([`super::model`], [`super::maml`], [`super::reptile`]).

pub mod allocator;
pub mod float;
mod index_map;
mod ops;
pub mod tape;
pub mod tensor;

pub use index_map::IndexMap;
pub(crate) use ops::mean_cross_entropy;
pub use ops::softmax_rows;

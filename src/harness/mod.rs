//! What is built on the meta-gradient engine ([`crate::meta`]) rather than
//! part of it: the experiment that compares learned policies with the cheap
//! alternatives, the finite-difference checks of every gradient, and the
//! export of one hypergradient problem for checking elsewhere.
//!
//! - [`experiment`]: Fashion-MNIST (or any IDX set): no augmentation, the
//!   default, TrivialAugment-style, the grid, the schedule control, MAML and
//!   Reptile;
//! - [`gradcheck`]: finite-difference checks of the engine's ops, the
//!   augmentation, the models and both hypergradients;
//! - [`export`]: one MAML problem and its hypergradient as a safetensors file.

pub mod experiment;
pub mod export;
pub mod gradcheck;

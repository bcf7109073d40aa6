//! Augmentation semantics and the CPU reference implementation.
//!
//! [`geometry`] fixes the fused inverse affine map, [`philox`] the
//! counter-based randomness; the CUDA kernels in `kernels/` must agree with
//! the CPU code here.

pub mod geometry;
pub mod philox;

pub use geometry::{affine_matrix, Geometry, SampleParams, Size};

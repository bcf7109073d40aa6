//! Augmentation semantics and the CPU reference implementation.
//!
//! [`geometry`] fixes the fused inverse affine map, [`philox`] the
//! counter-based randomness, [`output`] the sample's shape, type and
//! normalisation, [`noise`] the Gaussian noise and [`warp`] the fused
//! augmentation itself. The CUDA kernels in `kernels/` must agree with the
//! CPU code here.

pub mod geometry;
pub mod noise;
pub mod output;
pub mod philox;
pub mod warp;

pub use geometry::{affine_matrix, footprint, Geometry, Rect, SampleParams, Size, SourceWindow};
pub use output::{sample_to_chw_f32, DType, Layout, OutputSpec, MAX_OUTPUT_SIDE};
pub use philox::PhiloxStream;
pub use warp::{augment_into, augment_reference, augment_window_into, augment_window_reference};

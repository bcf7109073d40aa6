//! Batches as tensors of training frameworks, each behind its own cargo
//! feature (off by default, so the default build does not compile them):
//!
//! - `candle` (feature `candle`): `candle_core::Tensor`s on the CPU, and
//!   (feature `candle-cuda`) CUDA tensors wrapping device batches without a copy.
//! - `burn` (feature `burn`): `burn` tensors, and a burn `DataLoader`.

#[cfg(feature = "candle")]
pub mod candle;

#[cfg(feature = "burn")]
pub mod burn;

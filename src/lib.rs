//! # metaug
//!
//! A training data loader that is fast on real data, with an augmentation
//! policy that learns itself.
//!
//! ```text
//! shards (mmap) ─► decode pool ─► batch assembly ─► augment (CUDA | CPU) ─► prefetch ─► training loop
//!                                                        ▲
//!                          policy φ ◄── meta-gradients (MAML 2nd order | Reptile 1st order)
//! ```
//!
//! The crate is a map of that pipeline, one module per stage:
//!
//! - [`shard`]: the on-disk format (safetensors shards + `index.json`), reader and writer;
//! - [`pack`]: turning IDX files and image folders into shards;
//! - [`decode`]: JPEG / PNG / raw records to pixels, with limits;
//! - [`ops`]: augmentation semantics and the CPU reference (Philox, fused affine warp, noise, output);
//! - [`policy`]: the learnable augmentation policy φ, hard and relaxed sampling;
//! - [`loader`]: the prefetching [`Loader`] a training loop iterates;
//! - [`cuda`]: device discovery, NVRTC kernels and the GPU augmentation path;
//! - [`meta`]: the hand-written autodiff engine and MAML / Reptile policy learning;
//! - [`precompute`]: augmented shards written offline;
//! - [`preview`]: a PNG grid of what a policy does;
//! - [`adapters`]: batches as tensors of training frameworks (cargo features).
#![deny(missing_docs)]

pub mod adapters;
pub mod bench;
pub mod cuda;
pub mod decode;
pub mod error;
pub mod harness;
pub mod loader;
pub mod meta;
pub mod ops;
pub mod pack;
pub mod policy;
pub mod precompute;
pub mod preview;
pub mod remote;
pub mod shard;

pub use error::{Error, Result};
pub use loader::Loader;

//! A [`Batch`] as `candle_core` tensors (feature `candle`).
//!
//! ```no_run
//! use metaug::adapters::candle::BatchExt;
//! # fn f(batch: metaug::loader::Batch) -> metaug::Result<()> {
//! let x = batch.images_tensor(&candle_core::Device::Cpu)?; // [n, C, H, W] (NCHW) or [n, H, W, C]
//! let y = batch.labels_tensor(&candle_core::Device::Cpu)?; // [n], i64
//! # Ok(()) }
//! ```
//!
//! The images keep the batch's element type (`u8` → `DType::U8`, `f16` →
//! `DType::F16`, `f32` → `DType::F32`) and layout. On the CPU the tensor is
//! a **copy** of the batch's host buffer: candle's CPU storage owns a
//! `Vec<T>` of its own, so handing it the loader's buffer (which goes back
//! to the loader's pool when the batch drops) is not possible without a
//! copy. The copy runs at memory speed (a 64 × 3 × 224 × 224 f32 batch,
//! 38.5 MB, in a few milliseconds), and the batch's buffer is free for the
//! loader again as soon as the batch is dropped.
//!
//! A batch made on a CUDA device is refused here with a clear error: with
//! the feature `candle-cuda`, [`cuda::into_cuda_tensors`] wraps its device
//! memory in a candle CUDA tensor without a copy (candle-core's `cuda`
//! feature, whose kernels need `nvcc` to build); without it, copy the batch
//! to the host with [`Batch::to_host_bytes`], or use its raw device pointer.

use candle_core::{DType as CDType, Device, Tensor};

#[cfg(feature = "candle-cuda")]
pub mod cuda;

use crate::loader::Batch;
use crate::ops::DType;
use crate::{Error, Result};

/// Tensors from a batch (see the [module docs](self)).
pub trait BatchExt {
    /// The images, shape [`Batch::shape`], the batch's dtype, on `device`.
    fn images_tensor(&self, device: &Device) -> Result<Tensor>;
    /// The labels, shape `[n]`, `i64`, on `device`.
    fn labels_tensor(&self, device: &Device) -> Result<Tensor>;
}

fn candle_error(what: &str, e: candle_core::Error) -> Error {
    Error::invalid("candle tensor", format!("{what}: {e}"))
}

/// The candle element type of a batch's dtype.
pub fn candle_dtype(dtype: DType) -> CDType {
    match dtype {
        DType::U8 => CDType::U8,
        DType::F16 => CDType::F16,
        DType::F32 => CDType::F32,
    }
}

impl BatchExt for Batch {
    fn images_tensor(&self, device: &Device) -> Result<Tensor> {
        if self.is_device() {
            return Err(Error::invalid(
                "candle tensor",
                "the batch is in CUDA device memory; the candle adapter takes host batches \
                 (copy it with Batch::to_host_bytes, or build the loader on the CPU)",
            ));
        }
        let shape = self.shape().to_vec();
        let t = match self.dtype() {
            DType::F32 => {
                Tensor::from_slice(self.images_f32().expect("host f32 batch"), shape, device)
            }
            DType::F16 => {
                Tensor::from_slice(self.images_f16().expect("host f16 batch"), shape, device)
            }
            DType::U8 => {
                Tensor::from_slice(self.images_u8().expect("host u8 batch"), shape, device)
            }
        };
        t.map_err(|e| candle_error("images", e))
    }

    fn labels_tensor(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_slice(self.labels(), self.len(), device).map_err(|e| candle_error("labels", e))
    }
}

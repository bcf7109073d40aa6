//! A batch made on a CUDA device as candle CUDA tensors **without a copy**
//! (feature `candle-cuda`).
//!
//! ```no_run
//! use metaug::adapters::candle::cuda::into_cuda_tensors;
//! # fn f(batch: metaug::loader::Batch) -> metaug::Result<()> {
//! // candle's device on the GPU the loader runs on (the same CUDA context)
//! let device = candle_core::CudaDevice::new_with_stream(0).map_err(|e| {
//!     metaug::Error::invalid("candle", e.to_string())
//! })?;
//! let (x, y) = into_cuda_tensors(batch, &device)?; // the images' memory, now x's
//! # Ok(()) }
//! ```
//!
//! What makes it safe:
//! - **Ownership moves.** The batch's device buffer leaves the augmenter's
//!   pool for good ([`DeviceBatch::into_buffer_for`]) and becomes the
//!   tensor's storage: no later batch is written into it, however long the
//!   tensor (or a view of it) lives. The augmenter allocates a fresh buffer
//!   for its next batch (stream-ordered, from the driver's pool). The
//!   memory is freed, on candle's stream, when candle drops the storage.
//! - **Stream order is explicit.** candle's stream waits for the batch's
//!   ready point (the augmentation kernel, and every reader declared with
//!   [`DeviceBatch::release_after`]) before anything candle queues on the
//!   tensor, its free included. Nothing blocks the host.
//! - **One context.** Both sides must be on the same CUDA context (cudarc
//!   and candle both use the device's primary context, so the same ordinal
//!   is enough); a mismatch is an error naming both devices.
//!
//! The labels are small and live on the host: they are copied into an
//! `i64` tensor on the same device.

use candle_core::cuda_backend::cudarc::driver::CudaStream;
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{Device, Storage, Tensor};

use super::candle_error;
use crate::cuda::DeviceBatch;
use crate::loader::Batch;
use crate::ops::DType;
use crate::{Error, Result};

/// The batch's images (shape [`Batch::shape`], its dtype, wrapping its
/// device memory) and labels (`[n]`, `i64`, copied) on `device`. A host
/// batch is an error (use [`super::BatchExt`]); see the module docs for the
/// rules.
pub fn into_cuda_tensors(batch: Batch, device: &CudaDevice) -> Result<(Tensor, Tensor)> {
    let labels = Tensor::from_slice(batch.labels(), batch.len(), &Device::Cuda(device.clone()))
        .map_err(|e| candle_error("labels", e))?;
    let (shape, dtype) = (batch.shape(), batch.dtype());
    let images = batch.into_device().map_err(|_| {
        Error::invalid(
            "candle CUDA tensor",
            "the batch is in host memory (build the loader on a CUDA device, or use \
             BatchExt::images_tensor for host batches)",
        )
    })?;
    let images = wrap(images, shape, dtype, device)?;
    Ok((images, labels))
}

/// Hands `batch`'s buffer to candle's stream and wraps it.
fn wrap(
    batch: DeviceBatch,
    shape: [usize; 4],
    dtype: DType,
    device: &CudaDevice,
) -> Result<Tensor> {
    let stream = device.cuda_stream();
    same_context(batch.stream(), &stream)?;
    let elements: usize = shape.iter().product();
    if elements * dtype.size() > batch.num_bytes() {
        return Err(Error::invalid(
            "candle CUDA tensor",
            format!(
                "shape {shape:?} of {dtype:?} needs {} bytes, the batch has {}",
                elements * dtype.size(),
                batch.num_bytes()
            ),
        ));
    }
    let buf = batch.into_buffer_for(&stream)?;
    // cudarc frees a slice on the stream it belongs to: the buffer is
    // re-owned by candle's stream, so its free is ordered after the waits
    // above and after candle's work on the tensor.
    let ptr = buf.leak();
    // SAFETY: `ptr` is a live allocation of at least `elements` elements of
    // the dtype (checked above against the batch's bytes; device
    // allocations are 256-byte aligned), made in the context of `stream`
    // (checked by `same_context`), and owned by nothing else: `leak` gave up
    // cudarc's ownership and the pool never saw it again. Its bytes are the
    // batch's elements (written by the kernel, which `stream` now waits
    // for), valid for every bit pattern of u8, f16 and f32.
    let storage = unsafe {
        match dtype {
            DType::U8 => CudaStorage::wrap_cuda_slice(
                stream.upgrade_device_ptr::<u8>(ptr, elements),
                device.clone(),
            ),
            DType::F16 => CudaStorage::wrap_cuda_slice(
                stream.upgrade_device_ptr::<half::f16>(ptr, elements),
                device.clone(),
            ),
            DType::F32 => CudaStorage::wrap_cuda_slice(
                stream.upgrade_device_ptr::<f32>(ptr, elements),
                device.clone(),
            ),
        }
    };
    Ok(Tensor::from_storage(
        Storage::Cuda(storage),
        shape.to_vec(),
        BackpropOp::none(),
        false,
    ))
}

/// Both streams on one CUDA context, or an error naming their devices.
fn same_context(batch: &CudaStream, candle: &CudaStream) -> Result<()> {
    let (a, b) = (batch.context(), candle.context());
    if a.cu_ctx() == b.cu_ctx() {
        return Ok(());
    }
    Err(Error::invalid(
        "candle CUDA tensor",
        format!(
            "the batch was made on CUDA device {} and candle's device is CUDA device {} \
             (another context): zero-copy needs the same device",
            a.ordinal(),
            b.ordinal()
        ),
    ))
}

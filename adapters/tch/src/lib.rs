//! metaug batches as `tch` (libtorch) tensors.
//!
//! ```no_run
//! use metaug_tch::BatchExt;
//! # fn f(batch: metaug::loader::Batch) -> metaug::Result<()> {
//! let x = batch.images_tensor(tch::Device::Cpu)?; // [n, C, H, W] (NCHW) or [n, H, W, C]
//! let y = batch.labels_tensor(tch::Device::Cpu)?; // [n], Int64
//! # Ok(()) }
//! ```
//!
//! The images keep the batch's element type (`u8` → `Kind::Uint8`, `f16` →
//! `Kind::Half`, `f32` → `Kind::Float`) and layout. The tensor is a **copy**
//! of the batch's host buffer, made by libtorch (`at::empty` + `memcpy`),
//! and then moved to `device` if that is not the CPU.
//!
//! Why a copy and not `Tensor::from_blob` over the loader's buffer: a
//! libtorch tensor made from a blob shares that memory with every view taken
//! from it (`view`, `narrow`, `shallow_clone`, the autograd graph's saved
//! inputs), and those views are plain `tch::Tensor`s with no lifetime. A
//! borrow of the batch cannot follow them, so a buffer handed back to the
//! loader's pool (and overwritten by the next batch) could still be read
//! through one: undefined behaviour that the type system cannot rule out.
//! The copy runs at memory speed (a 64 × 3 × 224 × 224 f32 batch, 38.5 MB,
//! in a few milliseconds), and the batch's buffer is free for the loader
//! again as soon as the batch is dropped.
//!
//! A batch made on a CUDA device is refused here with a clear error (copy it
//! to the host with [`Batch::to_host_bytes`], or use its raw device pointer).
//!
//! The crate builds `tch` 0.10, the binding of libtorch 1.13, against a
//! libtorch on the machine (it downloads nothing): on Debian 12,
//! `apt-get install libtorch-dev` and `LIBTORCH=/usr` (see the README).
//! It is a companion crate rather than a feature of metaug because cargo
//! allows one `links = "tch"` package per lock graph, and burn's optional
//! tch backend brings torch-sys 0.22 into metaug's (see `Cargo.toml`).

use tch::{Device, Kind, Tensor};

use metaug::loader::Batch;
use metaug::ops::DType;
use metaug::{Error, Result};

/// Tensors from a batch (see the [module docs](self)).
pub trait BatchExt {
    /// The images, shape [`Batch::shape`], the batch's dtype, on `device`.
    fn images_tensor(&self, device: Device) -> Result<Tensor>;
    /// The labels, shape `[n]`, `Int64`, on `device`.
    fn labels_tensor(&self, device: Device) -> Result<Tensor>;
}

fn tch_error(what: &str, e: tch::TchError) -> Error {
    Error::invalid("tch tensor", format!("{what}: {e}"))
}

/// The libtorch element kind of a batch's dtype.
pub fn tch_kind(dtype: DType) -> Kind {
    match dtype {
        DType::U8 => Kind::Uint8,
        DType::F16 => Kind::Half,
        DType::F32 => Kind::Float,
    }
}

fn on_device(t: Tensor, device: Device, what: &str) -> Result<Tensor> {
    if device == Device::Cpu {
        Ok(t)
    } else {
        t.f_to_device(device).map_err(|e| tch_error(what, e))
    }
}

impl BatchExt for Batch {
    fn images_tensor(&self, device: Device) -> Result<Tensor> {
        if self.is_device() {
            return Err(Error::invalid(
                "tch tensor",
                "the batch is in CUDA device memory; the tch adapter takes host batches \
                 (copy it with Batch::to_host_bytes, or build the loader on the CPU)",
            ));
        }
        let bytes = self.image_bytes();
        let shape = self.shape().map(|d| d as i64);
        let kind = tch_kind(self.dtype());
        let want = shape.iter().product::<i64>() as usize * kind.elt_size_in_bytes();
        // libtorch copies `want` bytes without checking the slice's length.
        if bytes.len() != want {
            return Err(Error::invalid(
                "tch tensor",
                format!(
                    "the batch holds {} image bytes, its shape {shape:?} of {kind:?} needs {want}",
                    bytes.len()
                ),
            ));
        }
        let t = Tensor::f_of_data_size(bytes, &shape, kind).map_err(|e| tch_error("images", e))?;
        on_device(t, device, "images")
    }

    fn labels_tensor(&self, device: Device) -> Result<Tensor> {
        let t = Tensor::f_of_slice(self.labels()).map_err(|e| tch_error("labels", e))?;
        on_device(t, device, "labels")
    }
}

//! CUDA: device discovery, NVRTC-compiled kernels, the GPU augmentation path.
//!
//! The CUDA path is always compiled (cudarc with dynamic loading) and decides
//! at run time: on a machine without a driver, [`Device::new`] returns
//! [`Error::Cuda`](crate::Error::Cuda) saying so, and nothing panics.
//!
//! - [`Device`]: a GPU, its context, and the kernels loaded into it;
//! - [`kernels`]: the CUDA C sources (`kernels/*.cu`), NVRTC options, the PTX
//!   disk cache, and the table of entry points with their parameter lists;
//! - [`GpuAugmenter`] → [`DeviceBatch`]: the fused forward augmentation of a
//!   batch (pinned staging, copy and compute streams, double buffering);
//! - [`RelaxedGpu`]: relaxed-mode forward and VJP for meta-learning;
//! - [`philox_draws`]: the device's Philox draws, for checks;
//! - [`Backend`]: what that host code needs from a device, implemented by
//!   [`Device`] (cudarc) and by [`Emulator`] (the kernels compiled for the
//!   host and run on CPU threads, for tests: `emu/`).
//!
//! `kernels/README.md` maps each kernel to the CPU reference and lists the
//! commands that verify them on a GPU machine.

mod augment;
pub mod backend;
mod device;
mod device_backend;
pub mod emulator;
pub mod kernels;
mod launch;
mod philox;
mod relaxed;
pub mod spec;

pub use augment::{
    pack_params, DeviceBatch, GpuAugmenter, MAX_BATCH, MAX_SOURCE_SIDE, PARAMS_PER_SAMPLE,
};
pub use backend::Backend;
pub use device::{device_count, driver_available, nvrtc_available, Device};
pub use emulator::{Emulator, KernelRunner};
pub use philox::philox_draws;
pub use relaxed::{RelaxedGpu, RelaxedGrads, RelaxedShape};
pub use spec::{DType, ImageView, Layout, OutputSpec};

//! What the host code needs from a device, as a trait with two
//! implementations: [`Device`](super::Device) (a real GPU through cudarc) and
//! [`Emulator`](super::Emulator) (the kernels compiled for the host and run on
//! CPU threads, for tests).
//!
//! Everything the host decides for a launch (the packing of the staging
//! buffer, the per-sample parameter rows, the argument lists, grid and block
//! sizes, the order of launches and the double-buffer slots) lives in
//! [`GpuAugmenter`](super::GpuAugmenter), [`RelaxedGpu`](super::RelaxedGpu) and
//! [`philox_draws`](super::philox_draws), generic over this trait, so the
//! emulated tests run exactly the code that feeds a GPU.

use std::ffi::c_void;
use std::sync::Arc;

use super::kernels::ModuleDef;
use crate::Result;

/// Grid and block dimensions of a launch (cudarc's `LaunchConfig`).
pub use cudarc::driver::LaunchConfig;

/// An element type that device buffers may hold.
pub trait Elem:
    cudarc::driver::DeviceRepr
    + cudarc::driver::ValidAsZeroBits
    + bytemuck::Pod
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
}

impl Elem for u8 {}
impl Elem for u32 {}
impl Elem for u64 {}
impl Elem for f32 {}
impl Elem for f64 {}

/// One pointer argument of a launch: the device address range the kernel
/// is given (`[start, start + bytes)`), for backends that check accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferArg {
    /// Device address of the first byte.
    pub start: u64,
    /// Bytes the kernel may touch from there.
    pub bytes: usize,
}

/// A device: streams, events, memory and kernel launches.
///
/// Streams are in-order queues; an event marks a point in a stream. Methods
/// that return data to the host (`dtoh`, `sync_*`) wait for the work before
/// them.
pub trait Backend: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// A stream (queue of work).
    type Stream: Send + Sync + 'static;
    /// An event recorded on a stream.
    type Event: Send + Sync + 'static;
    /// A device buffer of `T`.
    type Buf<T: Elem>: Send + Sync + 'static;
    /// Page-locked host memory for asynchronous uploads.
    type Pinned: Send + 'static;

    /// A new stream.
    fn new_stream(&self) -> Result<Arc<Self::Stream>>;
    /// Whether `stream` belongs to this device (context).
    fn owns(&self, stream: &Self::Stream) -> bool;
    /// A new event (not yet recorded: waiting on it completes at once).
    fn new_event(&self) -> Result<Self::Event>;
    /// Marks the current end of `stream` with `event`.
    fn record(&self, event: &Self::Event, stream: &Self::Stream) -> Result<()>;
    /// Makes later work on `stream` wait for `event`.
    fn wait(&self, stream: &Self::Stream, event: &Self::Event) -> Result<()>;
    /// Blocks the host until `event` completes.
    fn sync_event(&self, event: &Self::Event) -> Result<()>;
    /// Blocks the host until all work on `stream` completes.
    fn sync_stream(&self, stream: &Self::Stream) -> Result<()>;

    /// `n` elements of uninitialised device memory, ordered on `stream`.
    ///
    /// # Safety
    /// The contents are undefined until written; nothing may read them first.
    unsafe fn alloc<T: Elem>(&self, stream: &Arc<Self::Stream>, n: usize) -> Result<Self::Buf<T>>;
    /// `n` zeroed elements.
    fn alloc_zeros<T: Elem>(&self, stream: &Arc<Self::Stream>, n: usize) -> Result<Self::Buf<T>>;
    /// A new device buffer holding `src`.
    fn upload<T: Elem>(&self, stream: &Arc<Self::Stream>, src: &[T]) -> Result<Self::Buf<T>>;
    /// Copies the first `dst.len()` elements of `src` to the host, waiting for them.
    fn download_into<T: Elem>(
        &self,
        stream: &Arc<Self::Stream>,
        src: &Self::Buf<T>,
        dst: &mut [T],
    ) -> Result<()>;
    /// Elements in `buf`.
    fn len<T: Elem>(buf: &Self::Buf<T>) -> usize;
    /// Device address of `buf`'s first element.
    fn address<T: Elem>(&self, buf: &Self::Buf<T>) -> u64;
    /// Sets the first `bytes` bytes of `buf` to `byte`, queued on `stream`.
    fn memset<T: Elem>(
        &self,
        stream: &Self::Stream,
        buf: &mut Self::Buf<T>,
        byte: u8,
        bytes: usize,
    ) -> Result<()>;

    /// `n` bytes of uninitialised pinned host memory.
    ///
    /// # Safety
    /// As [`alloc`](Self::alloc): written before read.
    unsafe fn alloc_pinned(&self, n: usize) -> Result<Self::Pinned>;
    /// The pinned buffer's bytes. The caller makes sure no queued copy still
    /// reads them (the upload's event has completed).
    fn pinned_bytes<'a>(&self, pinned: &'a mut Self::Pinned) -> Result<&'a mut [u8]>;
    /// Bytes in a pinned buffer.
    fn pinned_len(pinned: &Self::Pinned) -> usize;
    /// Queues a copy of the first `bytes` bytes of `src` into `dst` on `stream`.
    fn upload_pinned(
        &self,
        stream: &Arc<Self::Stream>,
        src: &Self::Pinned,
        bytes: usize,
        dst: &mut Self::Buf<u8>,
    ) -> Result<()>;

    /// Compiles and loads `kernel` of `module` if that is not done yet.
    fn prepare(&self, module: &ModuleDef, kernel: &str) -> Result<()>;
    /// Queues `kernel` of `module` on `stream`.
    ///
    /// # Safety
    /// `params` is cuLaunchKernel's parameter array for this kernel (a pointer
    /// to each argument's value, each of the kernel's parameter type);
    /// `buffers` are its pointer arguments' ranges; every buffer is as large
    /// as the kernel indexes it for this `cfg`, and ordered with the work that
    /// writes or reads it on other streams.
    unsafe fn launch(
        &self,
        stream: &Self::Stream,
        module: &ModuleDef,
        kernel: &str,
        cfg: LaunchConfig,
        params: &mut [*mut c_void],
        buffers: &[BufferArg],
    ) -> Result<()>;
}

//! [`Backend`] for a real GPU: cudarc streams, events, buffers and
//! `cuLaunchKernel`, with kernels from the NVRTC registry of [`Device`].

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr, PinnedHostSlice};

use super::backend::{Backend, BufferArg, Elem, LaunchConfig};
use super::device::{cu, Device};
use super::kernels::ModuleDef;
use crate::{Error, Result};

impl Backend for Device {
    type Stream = CudaStream;
    type Event = CudaEvent;
    type Buf<T: Elem> = CudaSlice<T>;
    type Pinned = PinnedHostSlice<u8>;

    fn new_stream(&self) -> Result<Arc<CudaStream>> {
        Device::new_stream(self)
    }

    fn owns(&self, stream: &CudaStream) -> bool {
        Arc::ptr_eq(stream.context(), self.context())
    }

    fn new_event(&self) -> Result<CudaEvent> {
        self.context().new_event(None).map_err(cu("cuEventCreate"))
    }

    fn record(&self, event: &CudaEvent, stream: &CudaStream) -> Result<()> {
        event.record(stream).map_err(cu("cuEventRecord"))
    }

    fn wait(&self, stream: &CudaStream, event: &CudaEvent) -> Result<()> {
        stream.wait(event).map_err(cu("cuStreamWaitEvent"))
    }

    fn sync_event(&self, event: &CudaEvent) -> Result<()> {
        event.synchronize().map_err(cu("cuEventSynchronize"))
    }

    fn sync_stream(&self, stream: &CudaStream) -> Result<()> {
        stream.synchronize().map_err(cu("cuStreamSynchronize"))
    }

    unsafe fn alloc<T: Elem>(&self, stream: &Arc<CudaStream>, n: usize) -> Result<CudaSlice<T>> {
        // SAFETY: forwarded: the caller writes before reading.
        unsafe { stream.alloc::<T>(n.max(1)) }.map_err(cu("cuMemAlloc"))
    }

    fn alloc_zeros<T: Elem>(&self, stream: &Arc<CudaStream>, n: usize) -> Result<CudaSlice<T>> {
        stream.alloc_zeros::<T>(n.max(1)).map_err(cu("cuMemAlloc"))
    }

    fn upload<T: Elem>(&self, stream: &Arc<CudaStream>, src: &[T]) -> Result<CudaSlice<T>> {
        stream.clone_htod(src).map_err(cu("cuMemcpyHtoD"))
    }

    fn download_into<T: Elem>(
        &self,
        stream: &Arc<CudaStream>,
        src: &CudaSlice<T>,
        dst: &mut [T],
    ) -> Result<()> {
        if dst.len() > src.len() {
            return Err(Error::Cuda(format!(
                "copy of {} elements from a buffer of {}",
                dst.len(),
                src.len()
            )));
        }
        if dst.is_empty() {
            return Ok(());
        }
        let view = src.slice(..dst.len());
        stream
            .memcpy_dtoh(&view, dst)
            .map_err(cu("cuMemcpyDtoHAsync"))?;
        stream.synchronize().map_err(cu("cuStreamSynchronize"))
    }

    fn len<T: Elem>(buf: &CudaSlice<T>) -> usize {
        buf.len()
    }

    fn address<T: Elem>(&self, buf: &CudaSlice<T>) -> u64 {
        let stream = buf.stream().clone();
        let (p, _record) = buf.device_ptr(&stream);
        p
    }

    fn memset<T: Elem>(
        &self,
        stream: &CudaStream,
        buf: &mut CudaSlice<T>,
        byte: u8,
        bytes: usize,
    ) -> Result<()> {
        if bytes > buf.len() * std::mem::size_of::<T>() {
            return Err(Error::Cuda("memset past the end of a buffer".into()));
        }
        let (ptr, _record) = buf.device_ptr(stream);
        // SAFETY: `ptr` starts `buf`, which holds at least `bytes` bytes
        // (checked above); the memset is queued on `stream`.
        unsafe { cudarc::driver::result::memset_d8_async(ptr, byte, bytes, stream.cu_stream()) }
            .map_err(cu("cuMemsetD8Async"))
    }

    unsafe fn alloc_pinned(&self, n: usize) -> Result<PinnedHostSlice<u8>> {
        // SAFETY: forwarded: the caller writes before reading.
        unsafe { self.context().alloc_pinned::<u8>(n.max(1)) }.map_err(cu("cuMemHostAlloc"))
    }

    fn pinned_bytes<'a>(&self, pinned: &'a mut PinnedHostSlice<u8>) -> Result<&'a mut [u8]> {
        pinned.as_mut_slice().map_err(cu("pinned buffer"))
    }

    fn pinned_len(pinned: &PinnedHostSlice<u8>) -> usize {
        pinned.len()
    }

    fn upload_pinned(
        &self,
        stream: &Arc<CudaStream>,
        src: &PinnedHostSlice<u8>,
        bytes: usize,
        dst: &mut CudaSlice<u8>,
    ) -> Result<()> {
        if bytes > src.len() || bytes > dst.len() {
            return Err(Error::Cuda("upload larger than its buffers".into()));
        }
        let host = &src.as_slice().map_err(cu("pinned buffer"))?[..bytes];
        let mut view = dst.slice_mut(..bytes);
        stream
            .memcpy_htod(host, &mut view)
            .map_err(cu("cuMemcpyHtoDAsync"))
    }

    fn prepare(&self, module: &ModuleDef, kernel: &str) -> Result<()> {
        self.function(module, kernel).map(|_| ())
    }

    unsafe fn launch(
        &self,
        stream: &CudaStream,
        module: &ModuleDef,
        kernel: &str,
        cfg: LaunchConfig,
        params: &mut [*mut c_void],
        _buffers: &[BufferArg],
    ) -> Result<()> {
        let func = self.function(module, kernel)?;
        stream
            .context()
            .bind_to_thread()
            .map_err(cu("cuCtxSetCurrent"))?;
        // SAFETY: the caller's contract (the parameter array matches the
        // kernel, buffers are large enough and ordered); `func` belongs to
        // this context and stays alive across the call.
        unsafe {
            cudarc::driver::result::launch_kernel(
                func.cu_function(),
                cfg.grid_dim,
                cfg.block_dim,
                cfg.shared_mem_bytes,
                stream.cu_stream(),
                params,
            )
        }
        .map_err(cu("cuLaunchKernel"))
    }
}

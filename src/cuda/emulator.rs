//! [`Backend`] that runs the kernels on the CPU, for tests: device memory is
//! host memory with red zones, streams run their work at once and in order,
//! and launches go to a [`KernelRunner`], in practice the `metaug-cuda-emu`
//! crate (the `.cu` sources compiled for the host, run with CUDA's execution
//! model: one OS thread per CUDA thread of a block, real barriers).
//!
//! What it checks that a GPU would only show as a crash or garbage:
//! - every pointer argument lies inside a live buffer of this emulator;
//! - the argument sizes the host pushes match the compiled kernel's
//!   parameter sizes;
//! - after each launch, no byte of any live buffer's red zones changed (a
//!   write past either end of a buffer);
//! - the runner checks reads (`__ldg`) and atomics against the launch's
//!   buffer arguments;
//! - uninitialised allocations are filled with `0xCD`, so a kernel that
//!   skips an element leaves a recognisable value.

use std::alloc::Layout;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::backend::{Backend, BufferArg, Elem, LaunchConfig};
use super::kernels::ModuleDef;
use crate::{Error, Result};

/// Bytes of red zone on each side of an emulated allocation (also its alignment).
const RED_ZONE: usize = 256;
const RED_BYTE: u8 = 0xA5;
const UNINIT_BYTE: u8 = 0xCD;

/// Runs host-compiled kernels (implemented by `metaug-cuda-emu`'s
/// `HostKernels` in the tests).
pub trait KernelRunner: Send + Sync + 'static {
    /// Each kernel the runner has: its name and the byte size of each parameter.
    fn kernels(&self) -> Vec<(String, Vec<usize>)>;

    /// Runs `kernel` over `cfg`'s grid, to completion.
    ///
    /// # Safety
    /// As [`Backend::launch`]; pointer arguments are host addresses, and
    /// `buffers` their `[start, end)` ranges.
    unsafe fn run(
        &self,
        kernel: &str,
        cfg: LaunchConfig,
        params: &mut [*mut c_void],
        buffers: &[(usize, usize)],
    ) -> std::result::Result<(), String>;
}

/// A CPU emulation of a CUDA device. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

struct Inner {
    runner: Box<dyn KernelRunner>,
    signatures: Vec<(String, Vec<usize>)>,
    live: Mutex<Vec<Weak<Memory>>>,
    launches: AtomicU64,
    next_stream: AtomicU64,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("launches", &self.launches())
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// An emulated device whose kernels `runner` runs.
    pub fn new(runner: impl KernelRunner) -> Emulator {
        let signatures = runner.kernels();
        Emulator {
            inner: Arc::new(Inner {
                runner: Box::new(runner),
                signatures,
                live: Mutex::new(Vec::new()),
                launches: AtomicU64::new(0),
                next_stream: AtomicU64::new(0),
            }),
        }
    }

    /// Kernel launches run so far.
    pub fn launches(&self) -> u64 {
        self.inner.launches.load(Ordering::Relaxed)
    }

    /// Emulated device buffers alive now.
    pub fn live_buffers(&self) -> usize {
        let mut live = lock(&self.inner.live);
        live.retain(|w| w.strong_count() > 0);
        live.len()
    }

    fn register(&self, m: &Arc<Memory>) {
        let mut live = lock(&self.inner.live);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(m));
    }

    fn live_memory(&self) -> Vec<Arc<Memory>> {
        lock(&self.inner.live)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    fn new_buf<T: Elem>(&self, n: usize, fill: u8) -> Result<EmuBuf<T>> {
        let bytes = n
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::Cuda("allocation size overflows".into()))?;
        let mem = Arc::new(Memory::new(bytes, fill)?);
        self.register(&mem);
        Ok(EmuBuf {
            mem,
            len: n,
            _t: PhantomData,
        })
    }
}

/// One emulated allocation: `[red zone | bytes | red zone]`.
struct Memory {
    base: *mut u8,
    bytes: usize,
    layout: Layout,
}

// SAFETY: the allocation is plain memory owned by this value; concurrent
// access goes through raw pointers only, ordered by the emulator's streams
// (which run work at once on the calling thread) and the launch lock of the
// kernel runtime, as device memory is ordered by streams on a GPU.
unsafe impl Send for Memory {}
// SAFETY: as above.
unsafe impl Sync for Memory {}

impl Memory {
    fn new(bytes: usize, fill: u8) -> Result<Memory> {
        let total = bytes
            .checked_add(2 * RED_ZONE)
            .ok_or_else(|| Error::Cuda("allocation size overflows".into()))?;
        let layout = Layout::from_size_align(total, RED_ZONE)
            .map_err(|e| Error::Cuda(format!("allocation of {bytes} bytes: {e}")))?;
        // SAFETY: `layout` has a non-zero size (at least two red zones).
        let base = unsafe { std::alloc::alloc(layout) };
        if base.is_null() {
            return Err(Error::Cuda(format!(
                "out of emulated device memory ({bytes} bytes)"
            )));
        }
        // SAFETY: `base` points at `total` writable bytes just allocated.
        unsafe {
            std::ptr::write_bytes(base, RED_BYTE, RED_ZONE);
            std::ptr::write_bytes(base.add(RED_ZONE), fill, bytes);
            std::ptr::write_bytes(base.add(RED_ZONE + bytes), RED_BYTE, RED_ZONE);
        }
        Ok(Memory {
            base,
            bytes,
            layout,
        })
    }

    fn start(&self) -> usize {
        self.base as usize + RED_ZONE
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: inside the allocation (RED_ZONE < its size).
        unsafe { self.base.add(RED_ZONE) }
    }

    /// Offsets (relative to the data start) of red-zone bytes that changed.
    fn damaged(&self) -> Option<isize> {
        // SAFETY: both red zones are inside the allocation; bytes are read as
        // u8 through a shared slice while no kernel runs (launches are over).
        let (front, back) = unsafe {
            (
                std::slice::from_raw_parts(self.base, RED_ZONE),
                std::slice::from_raw_parts(self.base.add(RED_ZONE + self.bytes), RED_ZONE),
            )
        };
        if let Some(k) = back.iter().position(|&b| b != RED_BYTE) {
            return Some((self.bytes + k) as isize);
        }
        front
            .iter()
            .rposition(|&b| b != RED_BYTE)
            .map(|k| k as isize - RED_ZONE as isize)
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.base, self.layout) }
    }
}

/// An emulated device buffer of `T`.
pub struct EmuBuf<T> {
    mem: Arc<Memory>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for EmuBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EmuBuf({} elements at {:#x})",
            self.len,
            self.mem.start()
        )
    }
}

/// An emulated stream: work runs when it is queued, in order.
#[derive(Debug)]
pub struct EmuStream {
    owner: usize,
    id: u64,
}

impl EmuStream {
    /// The stream's number on its emulator.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// An emulated event: work is done when queued, so it is always complete.
#[derive(Debug, Default)]
pub struct EmuEvent {
    records: AtomicU64,
}

impl EmuEvent {
    /// How often the event was recorded.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backend for Emulator {
    type Stream = EmuStream;
    type Event = EmuEvent;
    type Buf<T: Elem> = EmuBuf<T>;
    type Pinned = Vec<u8>;

    fn new_stream(&self) -> Result<Arc<EmuStream>> {
        Ok(Arc::new(EmuStream {
            owner: Arc::as_ptr(&self.inner) as usize,
            id: self.inner.next_stream.fetch_add(1, Ordering::Relaxed),
        }))
    }

    fn owns(&self, stream: &EmuStream) -> bool {
        stream.owner == Arc::as_ptr(&self.inner) as usize
    }

    fn new_event(&self) -> Result<EmuEvent> {
        Ok(EmuEvent::default())
    }

    fn record(&self, event: &EmuEvent, _stream: &EmuStream) -> Result<()> {
        event.records.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn wait(&self, _stream: &EmuStream, _event: &EmuEvent) -> Result<()> {
        Ok(())
    }

    fn sync_event(&self, _event: &EmuEvent) -> Result<()> {
        Ok(())
    }

    fn sync_stream(&self, _stream: &EmuStream) -> Result<()> {
        Ok(())
    }

    unsafe fn alloc<T: Elem>(&self, _stream: &Arc<EmuStream>, n: usize) -> Result<EmuBuf<T>> {
        self.new_buf(n, UNINIT_BYTE)
    }

    fn alloc_zeros<T: Elem>(&self, _stream: &Arc<EmuStream>, n: usize) -> Result<EmuBuf<T>> {
        self.new_buf(n, 0)
    }

    fn upload<T: Elem>(&self, _stream: &Arc<EmuStream>, src: &[T]) -> Result<EmuBuf<T>> {
        let b = self.new_buf::<T>(src.len(), UNINIT_BYTE)?;
        let bytes: &[u8] = bytemuck::cast_slice(src);
        // SAFETY: the buffer holds exactly `bytes.len()` bytes; nothing else
        // refers to a buffer just made.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.mem.data(), bytes.len()) };
        Ok(b)
    }

    fn download_into<T: Elem>(
        &self,
        _stream: &Arc<EmuStream>,
        src: &EmuBuf<T>,
        dst: &mut [T],
    ) -> Result<()> {
        if dst.len() > src.len {
            return Err(Error::Cuda(format!(
                "copy of {} elements from a buffer of {}",
                dst.len(),
                src.len
            )));
        }
        let out: &mut [u8] = bytemuck::cast_slice_mut(dst);
        // SAFETY: `src` holds at least `out.len()` bytes; no kernel runs
        // (launches complete before returning) so nothing writes it now.
        unsafe { std::ptr::copy_nonoverlapping(src.mem.data(), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn len<T: Elem>(buf: &EmuBuf<T>) -> usize {
        buf.len
    }

    fn address<T: Elem>(&self, buf: &EmuBuf<T>) -> u64 {
        buf.mem.start() as u64
    }

    fn memset<T: Elem>(
        &self,
        _stream: &EmuStream,
        buf: &mut EmuBuf<T>,
        byte: u8,
        bytes: usize,
    ) -> Result<()> {
        if bytes > buf.mem.bytes {
            return Err(Error::Cuda("memset past the end of a buffer".into()));
        }
        // SAFETY: within the buffer (checked); `&mut` excludes other users.
        unsafe { std::ptr::write_bytes(buf.mem.data(), byte, bytes) };
        Ok(())
    }

    unsafe fn alloc_pinned(&self, n: usize) -> Result<Vec<u8>> {
        Ok(vec![UNINIT_BYTE; n])
    }

    fn pinned_bytes<'a>(&self, pinned: &'a mut Vec<u8>) -> Result<&'a mut [u8]> {
        Ok(pinned.as_mut_slice())
    }

    fn pinned_len(pinned: &Vec<u8>) -> usize {
        pinned.len()
    }

    fn upload_pinned(
        &self,
        _stream: &Arc<EmuStream>,
        src: &Vec<u8>,
        bytes: usize,
        dst: &mut EmuBuf<u8>,
    ) -> Result<()> {
        if bytes > src.len() || bytes > dst.len {
            return Err(Error::Cuda("upload larger than its buffers".into()));
        }
        // SAFETY: both hold at least `bytes` bytes; `&mut dst` excludes other users.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.mem.data(), bytes) };
        Ok(())
    }

    fn prepare(&self, module: &ModuleDef, kernel: &str) -> Result<()> {
        self.signature(module, kernel).map(|_| ())
    }

    unsafe fn launch(
        &self,
        stream: &EmuStream,
        module: &ModuleDef,
        kernel: &str,
        cfg: LaunchConfig,
        params: &mut [*mut c_void],
        buffers: &[BufferArg],
    ) -> Result<()> {
        if !self.owns(stream) {
            return Err(Error::Cuda(format!(
                "kernel {kernel}: launched on a stream of another device"
            )));
        }
        let sizes = self.signature(module, kernel)?;
        let declared = &module
            .kernels
            .iter()
            .find(|k| k.name == kernel)
            .ok_or_else(|| Error::Cuda(format!("module {} has no kernel {kernel}", module.key)))?
            .params;
        let host_sizes: Vec<usize> = declared.iter().map(|p| p.size()).collect();
        if host_sizes != sizes || params.len() != sizes.len() {
            return Err(Error::Cuda(format!(
                "kernel {kernel}: the host declares parameters of {host_sizes:?} bytes, the \
                 compiled kernel takes {sizes:?}"
            )));
        }
        let live = self.live_memory();
        let mut ranges = Vec::with_capacity(buffers.len());
        for (k, b) in buffers.iter().enumerate() {
            let (s, e) = (b.start as usize, b.start as usize + b.bytes);
            if !live
                .iter()
                .any(|m| s >= m.start() && e <= m.start() + m.bytes)
            {
                return Err(Error::Cuda(format!(
                    "kernel {kernel}: pointer argument {k} ({s:#x}, {} bytes) is not inside a \
                     live device buffer",
                    b.bytes
                )));
            }
            ranges.push((s, e));
        }
        self.inner.launches.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract; the pointer arguments were checked to
        // lie inside live buffers just above.
        unsafe { self.inner.runner.run(kernel, cfg, params, &ranges) }
            .map_err(|e| Error::Cuda(format!("emulated launch of {kernel}: {e}")))?;
        for m in &live {
            if let Some(at) = m.damaged() {
                return Err(Error::Cuda(format!(
                    "kernel {kernel} wrote outside a buffer: byte {at} of a {}-byte buffer at \
                     {:#x} (its red zone) changed",
                    m.bytes,
                    m.start()
                )));
            }
        }
        Ok(())
    }
}

impl Emulator {
    fn signature(&self, module: &ModuleDef, kernel: &str) -> Result<Vec<usize>> {
        self.inner
            .signatures
            .iter()
            .find(|(n, _)| n == kernel)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| {
                Error::Cuda(format!(
                    "the emulator has no kernel {kernel} (module {})",
                    module.key
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoKernels;
    impl KernelRunner for NoKernels {
        fn kernels(&self) -> Vec<(String, Vec<usize>)> {
            Vec::new()
        }
        unsafe fn run(
            &self,
            _: &str,
            _: LaunchConfig,
            _: &mut [*mut c_void],
            _: &[(usize, usize)],
        ) -> std::result::Result<(), String> {
            Err("no kernels".into())
        }
    }

    #[test]
    fn buffers_round_trip_and_red_zones_detect_overruns() {
        let emu = Emulator::new(NoKernels);
        let s = emu.new_stream().unwrap();
        let b = emu.upload(&s, &[1.0f32, 2.0, 3.0]).unwrap();
        let mut out = [0f32; 3];
        emu.download_into(&s, &b, &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0, 3.0]);
        assert_eq!(emu.address(&b) % RED_ZONE as u64, 0);
        assert_eq!(b.mem.damaged(), None);
        // SAFETY: one byte past the end lies in the back red zone of the allocation.
        unsafe { *b.mem.data().add(12) = 0 };
        assert_eq!(b.mem.damaged(), Some(12));
        // SAFETY: one byte before the start lies in the front red zone.
        unsafe { *b.mem.data().sub(1) = 0 };
        assert_eq!(b.mem.damaged(), Some(12));
        let z = emu.alloc_zeros::<u32>(&s, 5).unwrap();
        // SAFETY: as above, the front red zone.
        unsafe { *z.mem.data().sub(3) = 1 };
        assert_eq!(z.mem.damaged(), Some(-3));
        assert_eq!(emu.live_buffers(), 2);
        drop((b, z));
        assert_eq!(emu.live_buffers(), 0);
    }
}

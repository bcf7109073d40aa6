//! A checked kernel launch, the same on every [`Backend`]: arguments are
//! pushed with their kind, compared with the kernel's declared parameter list
//! before launching, and handed over as cuLaunchKernel's parameter array.
//! The declared lists are checked against the PTX by
//! `tests/cuda_kernels_compile.rs` and against the host-compiled kernels by
//! the emulator, so argument count, order and width are verified end to end
//! without a GPU; what remains for each call site's `// SAFETY:` comment is
//! sizes and bounds.

use std::ffi::c_void;

use super::backend::{Backend, BufferArg, Elem, LaunchConfig};
use super::kernels::{ModuleDef, Param};
use crate::{Error, Result};

/// One argument's value, kept until the launch.
enum Value {
    Ptr(u64),
    U32(u32),
    /// A struct by value, in 8-byte words so that its alignment holds.
    Bytes(Vec<u64>),
}

/// Arguments of one launch being assembled.
pub(crate) struct Launch<'a, B: Backend> {
    backend: &'a B,
    module: &'a ModuleDef,
    kernel: usize,
    values: Vec<Value>,
    pushed: Vec<Param>,
    buffers: Vec<BufferArg>,
    /// A range pushed past its buffer's end: the launch is refused.
    bad_range: Option<String>,
}

impl<'a, B: Backend> Launch<'a, B> {
    /// A launch of kernel number `kernel` of `module`.
    pub(crate) fn new(backend: &'a B, module: &'a ModuleDef, kernel: usize) -> Self {
        let n = module.kernels.get(kernel).map_or(0, |k| k.params.len());
        Launch {
            backend,
            module,
            kernel,
            values: Vec::with_capacity(n),
            pushed: Vec::with_capacity(n),
            buffers: Vec::new(),
            bad_range: None,
        }
    }

    /// A whole device buffer.
    pub(crate) fn buf<T: Elem>(&mut self, b: &B::Buf<T>) -> &mut Self {
        let bytes = B::len(b) * std::mem::size_of::<T>();
        self.range(b, 0, bytes)
    }

    /// Bytes `[offset, offset + bytes)` of a device buffer. A range past the
    /// buffer's end makes [`launch`](Self::launch) an error.
    pub(crate) fn range<T: Elem>(
        &mut self,
        b: &B::Buf<T>,
        offset: usize,
        bytes: usize,
    ) -> &mut Self {
        let total = B::len(b) * std::mem::size_of::<T>();
        if offset.checked_add(bytes).is_none_or(|end| end > total) && self.bad_range.is_none() {
            self.bad_range = Some(format!(
                "argument {}: bytes {offset}..+{bytes} of a {total}-byte buffer",
                self.values.len()
            ));
        }
        let offset = offset.min(total);
        let bytes = bytes.min(total - offset);
        let start = self.backend.address(b) + offset as u64;
        self.values.push(Value::Ptr(start));
        self.pushed.push(Param::Ptr);
        self.buffers.push(BufferArg { start, bytes });
        self
    }

    /// An `unsigned int`.
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.values.push(Value::U32(v));
        self.pushed.push(Param::U32);
        self
    }

    /// A plain struct by value (`repr(C)`, no padding: `Pod`).
    pub(crate) fn bytes<T: bytemuck::Pod>(&mut self, v: &T) -> &mut Self {
        let raw = bytemuck::bytes_of(v);
        let mut words = vec![0u64; raw.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..raw.len()].copy_from_slice(raw);
        self.values.push(Value::Bytes(words));
        self.pushed.push(Param::Bytes(raw.len()));
        self
    }

    /// Launches on `stream` after checking the pushed arguments against the
    /// kernel's signature.
    ///
    /// # Safety
    /// The caller guarantees what the signature cannot: every buffer is as
    /// large as the kernel will index it for this `cfg` and these scalars, and
    /// no buffer the kernel writes is read or written by other work that is not
    /// ordered with this stream.
    pub(crate) unsafe fn launch(&mut self, stream: &B::Stream, cfg: LaunchConfig) -> Result<()> {
        let sig = self.module.kernels.get(self.kernel).ok_or_else(|| {
            Error::Cuda(format!(
                "module {} has no kernel {}",
                self.module.key, self.kernel
            ))
        })?;
        if let Some(why) = &self.bad_range {
            return Err(Error::Cuda(format!("kernel {}: {why}", sig.name)));
        }
        if self.pushed != sig.params {
            return Err(Error::Cuda(format!(
                "kernel {}: host pushed {:?}, kernel takes {:?}",
                sig.name, self.pushed, sig.params
            )));
        }
        let mut params: Vec<*mut c_void> = self
            .values
            .iter_mut()
            .map(|v| match v {
                Value::Ptr(p) => p as *mut u64 as *mut c_void,
                Value::U32(x) => x as *mut u32 as *mut c_void,
                Value::Bytes(w) => w.as_mut_ptr() as *mut c_void,
            })
            .collect();
        // SAFETY: argument kinds match the kernel's parameter list (checked
        // just above, and that list against the compiled kernel by the compile
        // test and the emulator); each parameter pointer points at a value in
        // `self.values`, alive and unmoved across the call; sizes, bounds and
        // ordering are the caller's contract (see this function's docs).
        unsafe {
            self.backend.launch(
                stream,
                self.module,
                &sig.name,
                cfg,
                &mut params,
                &self.buffers,
            )
        }
    }
}

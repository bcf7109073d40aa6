//! A checked kernel launch: cudarc's `launch_builder`, plus a record of the
//! kind of every argument pushed, compared with the kernel's declared
//! parameter list before launching. The declared lists are checked against the
//! PTX itself by `tests/cuda_kernels_compile.rs`, so argument count, order and
//! width are verified end to end without a GPU; what remains for each call
//! site's `// SAFETY:` comment is sizes and bounds.

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, DeviceRepr, LaunchArgs, LaunchConfig,
    PushKernelArg,
};

use super::device::cu;
use super::kernels::{KernelSig, Param};
use crate::{Error, Result};

/// Arguments of one launch being assembled.
pub(crate) struct Launch<'a> {
    args: LaunchArgs<'a>,
    sig: &'a KernelSig,
    pushed: Vec<Param>,
}

impl<'a> Launch<'a> {
    pub(crate) fn new(stream: &'a CudaStream, func: &'a CudaFunction, sig: &'a KernelSig) -> Self {
        Launch {
            args: stream.launch_builder(func),
            sig,
            pushed: Vec::with_capacity(sig.params.len()),
        }
    }

    /// A device buffer the kernel reads.
    pub(crate) fn buf<T>(&mut self, s: &'a CudaSlice<T>) -> &mut Self {
        self.args.arg(s);
        self.pushed.push(Param::Ptr);
        self
    }

    /// A device buffer the kernel writes.
    pub(crate) fn buf_mut<T>(&mut self, s: &'a mut CudaSlice<T>) -> &mut Self {
        self.args.arg(s);
        self.pushed.push(Param::Ptr);
        self
    }

    /// A view of a device buffer the kernel reads.
    pub(crate) fn view<T>(&mut self, v: &'a CudaView<'_, T>) -> &mut Self {
        self.args.arg(v);
        self.pushed.push(Param::Ptr);
        self
    }

    /// An `unsigned int`.
    pub(crate) fn u32(&mut self, v: &'a u32) -> &mut Self {
        self.args.arg(v);
        self.pushed.push(Param::U32);
        self
    }

    /// A struct by value.
    pub(crate) fn bytes<T: DeviceRepr>(&mut self, v: &'a T) -> &mut Self {
        self.args.arg(v);
        self.pushed.push(Param::Bytes(std::mem::size_of::<T>()));
        self
    }

    /// Launches after checking the pushed arguments against the signature.
    ///
    /// # Safety
    /// The caller guarantees what the signature cannot: every buffer is as
    /// large as the kernel will index it for this `cfg` and these scalars, and
    /// no buffer the kernel writes is read or written by other work that is not
    /// ordered with this stream.
    pub(crate) unsafe fn launch(&mut self, cfg: LaunchConfig) -> Result<()> {
        if self.pushed != self.sig.params {
            return Err(Error::Cuda(format!(
                "kernel {}: host pushed {:?}, kernel takes {:?}",
                self.sig.name, self.pushed, self.sig.params
            )));
        }
        // SAFETY: argument kinds match the kernel's parameter list (checked
        // just above, and that list against the PTX by the compile test); sizes
        // and bounds are the caller's contract (see this function's docs).
        unsafe { self.args.launch(cfg) }
            .map(|_| ())
            .map_err(cu("cuLaunchKernel"))
    }
}

//! metaug's CUDA kernels (`kernels/*.cu`), compiled for the host and run on
//! CPU threads with CUDA's execution model. For tests: metaug's host code
//! launches them through `metaug::cuda::Emulator`, which takes a
//! [`HostKernels`] as its kernel runner.
//!
//! - The threads of a block run concurrently, one OS thread each; blocks run
//!   one after another. `__syncthreads` is a real barrier, warps of 32 threads
//!   exchange values through a barrier of their own (`__shfl_down_sync`).
//! - A schedule seed other than 0 shuffles the block order and the order in
//!   which threads start, and delays some threads: a result that depends on
//!   thread timing changes between schedules.
//! - `__ldg` and `atomicAdd` addresses are checked against the launch's
//!   buffers; an access outside them is an error naming the kernel, block,
//!   thread and address.
//!
//! See `include/metaug_cuda_emu.h` for the dialect and `src/runtime.cpp` for
//! the runtime.

use std::ffi::{c_char, c_void, CStr, CString};

extern "C" {
    fn metaug_emu_kernel_count() -> usize;
    fn metaug_emu_kernel_info(k: usize, nparams: *mut u32, sizes: *mut *const u32)
        -> *const c_char;
    fn metaug_emu_f32_to_f16(f: f32) -> u16;
    fn metaug_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        params: *mut *mut c_void,
        ranges: *const usize,
        nranges: usize,
        schedule: u64,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

/// A kernel the emulator can run: its `extern "C"` name and the byte size of
/// each parameter, as the C++ compiler sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// The entry point's name.
    pub name: String,
    /// `sizeof` of each parameter, in order.
    pub param_sizes: Vec<usize>,
}

/// Every kernel compiled into the emulator.
pub fn kernels() -> Vec<KernelInfo> {
    // SAFETY: the registry is built once from static tables; every index
    // below the count has a name (a static C string) and `nparams` sizes.
    unsafe {
        (0..metaug_emu_kernel_count())
            .map(|k| {
                let mut n = 0u32;
                let mut sizes = std::ptr::null();
                let name = metaug_emu_kernel_info(k, &mut n, &mut sizes);
                KernelInfo {
                    name: CStr::from_ptr(name).to_string_lossy().into_owned(),
                    param_sizes: std::slice::from_raw_parts(sizes, n as usize)
                        .iter()
                        .map(|&s| s as usize)
                        .collect(),
                }
            })
            .collect()
    }
}

/// The kernels' f32 → f16 conversion (round to nearest even) as compiled for
/// the host, for testing it against `half`.
pub fn f32_to_f16_bits(f: f32) -> u16 {
    // SAFETY: a pure function of its argument.
    unsafe { metaug_emu_f32_to_f16(f) }
}

/// Runs the host-compiled kernels.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostKernels {
    /// 0: blocks in order, threads started in index order; any other value:
    /// a shuffled block order, shuffled thread start order and delays,
    /// derived from it.
    pub schedule: u64,
}

impl HostKernels {
    /// Runs `kernel` over `grid` × `block` threads.
    ///
    /// # Safety
    /// `params` is cuLaunchKernel's parameter array for this kernel: one
    /// pointer to each argument's value, in order, each of the kernel's
    /// parameter type; pointer arguments hold host addresses of buffers large
    /// enough for what the kernel indexes. `buffers` lists the `[start, end)`
    /// address ranges the kernel may read through `__ldg` or update with
    /// `atomicAdd` (reads outside them are reported, not performed).
    pub unsafe fn launch(
        &self,
        kernel: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        params: &mut [*mut c_void],
        buffers: &[(usize, usize)],
    ) -> Result<(), String> {
        let info = kernels()
            .into_iter()
            .find(|k| k.name == kernel)
            .ok_or_else(|| format!("no kernel named {kernel} in the emulator"))?;
        if info.param_sizes.len() != params.len() {
            return Err(format!(
                "kernel {kernel} takes {} parameters, the launch passes {}",
                info.param_sizes.len(),
                params.len()
            ));
        }
        let name = CString::new(kernel).map_err(|_| "kernel name has a NUL byte".to_string())?;
        let g = [grid.0, grid.1, grid.2];
        let b = [block.0, block.1, block.2];
        let flat: Vec<usize> = buffers.iter().flat_map(|&(s, e)| [s, e]).collect();
        let mut err = vec![0 as c_char; 512];
        // SAFETY: the caller's contract covers the kernel's memory accesses;
        // the arrays passed here live across the call and have the lengths given.
        let rc = unsafe {
            metaug_emu_launch(
                name.as_ptr(),
                g.as_ptr(),
                b.as_ptr(),
                shared_bytes,
                params.as_mut_ptr(),
                flat.as_ptr(),
                buffers.len(),
                self.schedule,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            // SAFETY: the runtime writes a NUL-terminated message into `err`.
            Err(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_rounds_as_half_does() {
        let mut x = 0x1234_5678u64;
        let check = |f: f32| {
            let want = half::f16::from_f32(f).to_bits();
            let got = f32_to_f16_bits(f);
            if f.is_nan() {
                assert_eq!(got & 0x7C00, 0x7C00);
                assert_ne!(got & 0x03FF, 0);
            } else {
                assert_eq!(got, want, "{f:e} ({:#010x})", f.to_bits());
            }
        };
        for f in [
            0.0f32, -0.0, 1.0, 65504.0, 65520.0, 65519.99, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8,
        ] {
            check(f);
            check(-f);
        }
        check(f32::INFINITY);
        check(f32::NAN);
        // every f32 exponent, random mantissas, and the tie cases around every half
        for _ in 0..2_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(f32::from_bits(x as u32));
        }
        for h in 0u16..0x7C00 {
            let v = half::f16::from_bits(h).to_f32();
            let next = half::f16::from_bits(h + 1).to_f32();
            let mid = (v as f64 + next as f64) / 2.0;
            for m in [mid as f32, f32::from_bits((mid as f32).to_bits() + 1)] {
                check(m);
            }
        }
    }

    #[test]
    fn every_kernel_is_registered_once() {
        let ks = kernels();
        assert_eq!(ks.len(), 24 + 4 + 1);
        let mut names: Vec<_> = ks.iter().map(|k| k.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ks.len());
    }
}

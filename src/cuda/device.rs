//! Device discovery that never panics, and the per-context kernel table.
//!
//! cudarc is built with `fallback-dynamic-loading`: unless another crate in
//! the build (candle) asks for `dynamic-linking`, `libcuda` and `libnvrtc` are
//! opened on first use, and when they are missing its calls **panic**. Every
//! entry point here first probes the library with `dlopen` and turns its
//! absence into [`Error::Cuda`]; the calls themselves also run under
//! `catch_unwind` (a library that is present but too old to have a symbol
//! panics the same way).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};

use super::kernels::{self, ModuleDef};
use crate::{Error, Result};

/// Why CUDA cannot be used here, or `Ok` if the driver library can be loaded.
///
/// Cheap (it opens and closes the library); does not create a context.
pub fn driver_available() -> Result<()> {
    if library_present("cuda") {
        Ok(())
    } else {
        Err(Error::Cuda(
            "no CUDA driver found (libcuda.so could not be loaded; is an NVIDIA driver installed \
             and on the library path?)"
                .into(),
        ))
    }
}

/// `Ok` if NVRTC (the run-time CUDA C compiler, `libnvrtc.so.13`) can be loaded.
pub fn nvrtc_available() -> Result<()> {
    if library_present("nvrtc") {
        Ok(())
    } else {
        Err(Error::Cuda(
            "no NVRTC library found (libnvrtc.so.13 could not be loaded; install the CUDA 13 \
             toolkit or `pip install nvidia-cuda-nvrtc` and put its lib folder on \
             LD_LIBRARY_PATH, see .ci/nvrtc.sh)"
                .into(),
        ))
    }
}

/// Whether `lib<name>.so` can be loaded under one of the names cudarc's
/// dynamic loading tries (the plain name, then the CUDA 13 down to 9 and `.1`
/// sonames). Our own probe rather than cudarc's `is_culib_present`, which
/// exists only when cudarc loads dynamically: with candle in the same binary,
/// cudarc links CUDA at build time instead (its `dynamic-linking`).
fn library_present(name: &str) -> bool {
    let mut names = vec![format!("lib{name}.so")];
    names.extend(["13", "12", "11", "10", "9", "1"].map(|v| format!("lib{name}.so.{v}")));
    names.iter().any(|n| {
        let Ok(c) = std::ffi::CString::new(n.as_str()) else {
            return false;
        };
        // SAFETY: dlopen of a shared library by name with RTLD_LAZY runs its
        // initialisers only (CUDA's libraries have no harmful ones); the
        // handle is closed at once, so nothing of it is used.
        unsafe {
            let h = libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
            if h.is_null() {
                false
            } else {
                libc::dlclose(h);
                true
            }
        }
    })
}

/// Number of CUDA devices, or why there are none to count.
pub fn device_count() -> Result<usize> {
    driver_available()?;
    let n = guarded("count devices", || {
        CudaContext::device_count().map_err(cu("cuDeviceGetCount"))
    })?;
    Ok(n.max(0) as usize)
}

/// Runs `f`, turning a panic inside cudarc (a missing library or symbol) into
/// [`Error::Cuda`].
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(Error::Cuda(format!("{what}: {msg}")))
        }
    }
}

/// Maps a driver error to [`Error::Cuda`] naming the operation.
pub(crate) fn cu(what: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

/// One CUDA device: its context, and the kernels loaded into it.
///
/// Cheap to clone (a shared handle). Kernels are compiled with NVRTC on first
/// use (PTX cached on disk, see [`kernels`](super::kernels)) and loaded once
/// per context.
#[derive(Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<CudaContext>,
    name: String,
    cc: (i32, i32),
    modules: Mutex<HashMap<String, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("ordinal", &self.ordinal())
            .field("name", &self.inner.name)
            .field("compute_capability", &self.inner.cc)
            .finish()
    }
}

impl Device {
    /// Opens device `ordinal` (its primary context).
    ///
    /// Never panics: no driver, no device, or a bad ordinal is an
    /// [`Error::Cuda`] that says which.
    pub fn new(ordinal: usize) -> Result<Device> {
        driver_available()?;
        let count = device_count()?;
        if count == 0 {
            return Err(Error::Cuda(
                "no CUDA device found (the driver reports 0 devices)".into(),
            ));
        }
        if ordinal >= count {
            return Err(Error::Cuda(format!(
                "no CUDA device {ordinal} (the driver reports {count})"
            )));
        }
        guarded("open the CUDA device", || {
            let ctx = CudaContext::new(ordinal).map_err(cu("cuDevicePrimaryCtxRetain"))?;
            let name = ctx.name().map_err(cu("cuDeviceGetName"))?;
            let cc = ctx
                .compute_capability()
                .map_err(cu("cuDeviceGetAttribute"))?;
            Ok(Device {
                inner: Arc::new(Inner {
                    ctx,
                    name,
                    cc,
                    modules: Mutex::new(HashMap::new()),
                    functions: Mutex::new(HashMap::new()),
                }),
            })
        })
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.inner.ctx.ordinal()
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.inner.cc
    }

    /// The NVRTC virtual architecture kernels are compiled for, `compute_XY`.
    pub fn arch(&self) -> String {
        format!("compute_{}{}", self.inner.cc.0, self.inner.cc.1)
    }

    /// The cudarc context (for interop with other cudarc users).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// A new non-blocking stream on this device.
    pub fn new_stream(&self) -> Result<Arc<CudaStream>> {
        self.inner.ctx.new_stream().map_err(cu("cuStreamCreate"))
    }

    /// Waits for all work on the device.
    pub fn synchronize(&self) -> Result<()> {
        self.inner.ctx.synchronize().map_err(cu("cuCtxSynchronize"))
    }

    /// The kernel `name` of module `def`: compiled (or read from the PTX cache)
    /// and loaded on first use, then looked up (candle's `get_or_load_func`).
    pub(crate) fn function(&self, def: &ModuleDef, name: &str) -> Result<CudaFunction> {
        if let Some(f) = lock(&self.inner.functions).get(name) {
            return Ok(f.clone());
        }
        let module = self.module(def)?;
        let f = guarded("load kernel", || {
            module
                .load_function(name)
                .map_err(|e| Error::Cuda(format!("kernel {name} in module {}: {e}", def.key)))
        })?;
        lock(&self.inner.functions).insert(name.to_string(), f.clone());
        Ok(f)
    }

    fn module(&self, def: &ModuleDef) -> Result<Arc<CudaModule>> {
        // Held across the compile so two threads never compile the same module.
        let mut modules = lock(&self.inner.modules);
        if let Some(m) = modules.get(&def.key) {
            return Ok(m.clone());
        }
        let arch = self.arch();
        let load = |ptx: String| {
            guarded("load PTX", || {
                self.inner
                    .ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                    .map_err(|e| Error::Cuda(format!("load module {} ({arch}): {e}", def.key)))
            })
        };
        let (ptx, from_cache) = kernels::ptx_for(def, &arch)?;
        let module = match load(ptx) {
            Ok(m) => m,
            // A cached file that the driver rejects (truncated, or written by a
            // newer NVRTC than this driver accepts): compile afresh once.
            Err(_) if from_cache => load(kernels::compile_and_store(def, &arch)?)?,
            Err(e) => return Err(e),
        };
        modules.insert(def.key.clone(), module.clone());
        Ok(module)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the table leaves it consistent (inserts are
    // single calls), so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_never_panics() {
        // On a machine without CUDA these are errors that say so; with CUDA,
        // whatever they return, they return.
        let _ = driver_available();
        let _ = nvrtc_available();
        let _ = device_count();
        match Device::new(0) {
            Ok(d) => assert!(!d.name().is_empty()),
            Err(Error::Cuda(msg)) => assert!(!msg.is_empty()),
            Err(e) => panic!("unexpected error kind: {e}"),
        }
        assert!(matches!(Device::new(usize::MAX), Err(Error::Cuda(_))));
    }

    #[test]
    fn guarded_turns_panics_into_errors() {
        let r: Result<()> = guarded("test", || panic!("boom"));
        match r {
            Err(Error::Cuda(m)) => assert!(m.contains("boom"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

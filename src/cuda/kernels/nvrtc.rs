//! Compiling a module with NVRTC: the options (IEEE arithmetic, no FMA
//! contraction), NVRTC's version, and the compile itself (no cache).

use super::{expanded_source, ModuleDef};
use crate::cuda::device::{guarded, nvrtc_available};
use crate::{Error, Result};

/// The NVRTC options for `def` on `arch` (e.g. `compute_90`).
pub fn compile_options(def: &ModuleDef, arch: &str) -> Vec<String> {
    let mut o = vec![
        "--std=c++17".to_string(),
        format!("--gpu-architecture={arch}"),
        "--fmad=false".to_string(),
        "--prec-div=true".to_string(),
        "--prec-sqrt=true".to_string(),
        "--ftz=false".to_string(),
    ];
    o.extend(def.defines.iter().map(|d| format!("-D{d}")));
    o
}

/// NVRTC's version `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    nvrtc_available()?;
    guarded("nvrtcVersion", || {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints through valid pointers; the
        // library was found by `nvrtc_available`.
        let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        if r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
            Ok((major, minor))
        } else {
            Err(Error::Cuda(format!("nvrtcVersion: {r:?}")))
        }
    })
}

/// Compiles `def` for `arch` with NVRTC (no cache) and returns the PTX text.
pub fn compile(def: &ModuleDef, arch: &str) -> Result<String> {
    nvrtc_available()?;
    let src = expanded_source(def.file)?;
    let options = compile_options(def, arch);
    guarded("NVRTC", || {
        let opts = cudarc::nvrtc::CompileOptions {
            options,
            name: Some(def.file.to_string()),
            ..Default::default()
        };
        match cudarc::nvrtc::compile_ptx_with_opts(&src, opts) {
            Ok(ptx) => Ok(ptx.to_src()),
            Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => {
                Err(Error::Cuda(format!(
                    "NVRTC failed to compile module {} ({}) for {arch}:\n{}",
                    def.key,
                    def.file,
                    log.to_string_lossy()
                )))
            }
            Err(e) => Err(Error::Cuda(format!("NVRTC, module {}: {e}", def.key))),
        }
    })
}

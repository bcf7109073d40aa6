//! The kernel registry: CUDA C sources embedded in the binary, compiled to PTX
//! with NVRTC on first use, cached on disk, and described well enough
//! (entry points and parameter lists) that a test can check the PTX against
//! what the Rust side launches — without a GPU.
//!
//! - Sources: `kernels/*.cu` and the headers they include (`#include "x.cuh"`
//!   is expanded here, with `#line` markers, since NVRTC sees no files).
//! - Options: `--std=c++17 --gpu-architecture=compute_XY --fmad=false`, no
//!   `--use_fast_math`: IEEE division and square root, no contraction of
//!   `a*b + c` into an FMA, so each operation rounds as in the CPU reference.
//! - Modules: the fused forward is one module per variant (dtype × layout ×
//!   channels × vector path), chosen with `-DMETAUG_AUGMENT_VARIANT=...` so that
//!   a process compiles and JIT-loads only what it uses; the relaxed kernels
//!   are one module, the Philox check kernel another.
//! - Cache: `$METAUG_KERNEL_CACHE` (a folder, or `off`), else
//!   `$XDG_CACHE_HOME/metaug/kernels`, else `~/.cache/metaug/kernels`. A file is
//!   named by the module and a SHA-256 of (expanded source, options, arch,
//!   NVRTC version), written to a temporary name and renamed (atomic), and
//!   checked on read (PTX header and every expected entry point); a bad or
//!   unwritable cache only costs a compile.

mod cache;
mod modules;
mod nvrtc;
mod ptx;
mod sources;

pub use cache::{cache_dir, cache_file_name, compile_and_store, ptx_cached, ptx_for, write_atomic};
pub use modules::{
    all_modules, philox_module, relaxed_module, AugmentVariant, KernelSig, ModuleDef, Param,
    AUGMENT_PARAMS, NORM_BYTES, PHILOX_CHECK_PARAMS, RELAXED_FORWARD_PARAMS, RELAXED_REDUCE_PARAMS,
    RELAXED_VJP_INPUT_PARAMS, RELAXED_VJP_PARAMS,
};
pub use nvrtc::{compile, compile_options, nvrtc_version};
pub use ptx::{check_ptx, ptx_entries};
pub use sources::{expanded_source, SourceFile, SOURCES};

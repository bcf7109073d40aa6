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

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::device::{guarded, nvrtc_available};
use super::spec::{DType, Layout};
use crate::{Error, Result};

/// One embedded source file.
#[derive(Clone, Copy, Debug)]
pub struct SourceFile {
    /// File name under `kernels/`.
    pub name: &'static str,
    /// Its text.
    pub text: &'static str,
}

/// Every file under `kernels/` that kernels are built from.
pub const SOURCES: &[SourceFile] = &[
    SourceFile {
        name: "philox.cuh",
        text: include_str!("../../kernels/philox.cuh"),
    },
    SourceFile {
        name: "sample.cuh",
        text: include_str!("../../kernels/sample.cuh"),
    },
    SourceFile {
        name: "augment.cu",
        text: include_str!("../../kernels/augment.cu"),
    },
    SourceFile {
        name: "relaxed.cu",
        text: include_str!("../../kernels/relaxed.cu"),
    },
    SourceFile {
        name: "philox.cu",
        text: include_str!("../../kernels/philox.cu"),
    },
];

/// A kernel parameter as it appears in PTX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// A device pointer (`.u64`).
    Ptr,
    /// `unsigned int` (`.u32`).
    U32,
    /// A struct passed by value (`.b8 name[N]`), N bytes.
    Bytes(usize),
}

impl Param {
    /// The parameter's size in bytes (`sizeof` of its C type).
    pub fn size(self) -> usize {
        match self {
            Param::Ptr => 8,
            Param::U32 => 4,
            Param::Bytes(n) => n,
        }
    }
}

/// A kernel entry point and its parameter list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSig {
    /// The `extern "C"` name.
    pub name: String,
    /// Parameters in order.
    pub params: Vec<Param>,
}

/// One NVRTC compilation unit: a `.cu` file plus defines, and the kernels it provides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleDef {
    /// Unique id (also the cache file prefix).
    pub key: String,
    /// The `.cu` file under `kernels/`.
    pub file: &'static str,
    /// `-D` options.
    pub defines: Vec<String>,
    /// Entry points the Rust side launches from this module.
    pub kernels: Vec<KernelSig>,
}

/// Size of `struct Norm` in `augment.cu` (4 means, 4 stds).
pub const NORM_BYTES: usize = 32;

/// The parameter list of every fused forward variant (see `augment.cu`).
pub const AUGMENT_PARAMS: &[Param] = &[
    Param::Ptr,               // src
    Param::Ptr,               // src_off
    Param::Ptr,               // src_hw
    Param::Ptr,               // params
    Param::Ptr,               // samples
    Param::Bytes(NORM_BYTES), // norm
    Param::U32,               // seed_lo
    Param::U32,               // seed_hi
    Param::U32,               // epoch
    Param::U32,               // out_h
    Param::U32,               // out_w
    Param::Ptr,               // out
];

/// One variant of the fused forward kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AugmentVariant {
    /// Output element type.
    pub dtype: DType,
    /// Output layout.
    pub layout: Layout,
    /// Channels (1 or 3).
    pub channels: u32,
    /// The vector path (`W_out % 4 == 0`).
    pub vec4: bool,
}

impl AugmentVariant {
    /// Every variant, in a fixed order.
    pub fn all() -> Vec<AugmentVariant> {
        let mut v = Vec::new();
        for dtype in [DType::U8, DType::F16, DType::F32] {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                for channels in [1, 3] {
                    for vec4 in [false, true] {
                        v.push(AugmentVariant {
                            dtype,
                            layout,
                            channels,
                            vec4,
                        });
                    }
                }
            }
        }
        v
    }

    fn codes(self) -> (&'static str, u32, &'static str, u32) {
        let (dn, dc) = match self.dtype {
            DType::U8 => ("u8", 0),
            DType::F16 => ("f16", 1),
            DType::F32 => ("f32", 2),
        };
        let (ln, lc) = match self.layout {
            Layout::Nchw => ("nchw", 0),
            Layout::Nhwc => ("nhwc", 1),
        };
        (dn, dc, ln, lc)
    }

    /// The kernel's `extern "C"` name, e.g. `metaug_augment_f32_nchw_c3_v4`.
    pub fn kernel_name(self) -> String {
        let (dn, _, ln, _) = self.codes();
        let v = if self.vec4 { "_v4" } else { "" };
        format!("metaug_augment_{dn}_{ln}_c{}{v}", self.channels)
    }

    /// The module that holds only this variant.
    pub fn module(self) -> ModuleDef {
        let (_, dc, _, lc) = self.codes();
        let name = self.kernel_name();
        ModuleDef {
            key: name.clone(),
            file: "augment.cu",
            defines: vec![format!(
                "METAUG_AUGMENT_VARIANT=METAUG_AUGMENT_KERNEL({name},{dc},{lc},{},{})",
                self.channels, self.vec4
            )],
            kernels: vec![KernelSig {
                name,
                params: AUGMENT_PARAMS.to_vec(),
            }],
        }
    }
}

/// Relaxed forward: `x, params, samples, seed_lo, seed_hi, epoch, channels, in_h, in_w, out_h, out_w, out`.
pub const RELAXED_FORWARD_PARAMS: &[Param] = &[
    Param::Ptr,
    Param::Ptr,
    Param::Ptr,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::Ptr,
];

/// Relaxed VJP (parameters only): the forward's inputs, then `grad_out, partial`.
pub const RELAXED_VJP_PARAMS: &[Param] = &[
    Param::Ptr,
    Param::Ptr,
    Param::Ptr,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::Ptr,
    Param::Ptr,
];

/// Relaxed VJP with the input gradient: as [`RELAXED_VJP_PARAMS`], then `grad_x`.
pub const RELAXED_VJP_INPUT_PARAMS: &[Param] = &[
    Param::Ptr,
    Param::Ptr,
    Param::Ptr,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::Ptr,
    Param::Ptr,
    Param::Ptr,
];

/// `partial, blocks, grad_params`.
pub const RELAXED_REDUCE_PARAMS: &[Param] = &[Param::Ptr, Param::U32, Param::Ptr];

/// The relaxed-mode module (`relaxed.cu`).
pub fn relaxed_module() -> ModuleDef {
    let sig = |name: &str, params: &[Param]| KernelSig {
        name: name.to_string(),
        params: params.to_vec(),
    };
    ModuleDef {
        key: "relaxed".into(),
        file: "relaxed.cu",
        defines: Vec::new(),
        kernels: vec![
            sig("metaug_relaxed_forward", RELAXED_FORWARD_PARAMS),
            sig("metaug_relaxed_vjp_params", RELAXED_VJP_PARAMS),
            sig("metaug_relaxed_vjp_input", RELAXED_VJP_INPUT_PARAMS),
            sig("metaug_relaxed_reduce", RELAXED_REDUCE_PARAMS),
        ],
    }
}

/// `seed_lo, seed_hi, epoch, sample, stream, first_block, blocks, words, normals, normals_at`.
pub const PHILOX_CHECK_PARAMS: &[Param] = &[
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::Ptr,
    Param::Ptr,
    Param::Ptr,
];

/// The Philox check module (`philox.cu`), used by tests.
pub fn philox_module() -> ModuleDef {
    ModuleDef {
        key: "philox".into(),
        file: "philox.cu",
        defines: Vec::new(),
        kernels: vec![KernelSig {
            name: "metaug_philox_check".into(),
            params: PHILOX_CHECK_PARAMS.to_vec(),
        }],
    }
}

/// Every module the crate may load.
pub fn all_modules() -> Vec<ModuleDef> {
    let mut v: Vec<ModuleDef> = AugmentVariant::all()
        .into_iter()
        .map(AugmentVariant::module)
        .collect();
    v.push(relaxed_module());
    v.push(philox_module());
    v
}

fn source_text(name: &str) -> Result<&'static str> {
    SOURCES
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.text)
        .ok_or_else(|| Error::Cuda(format!("kernel source {name} is not embedded")))
}

/// The text of `kernels/<file>` with its `#include "x"` lines replaced by the
/// embedded files (recursively, each at most once, as `#pragma once` would).
pub fn expanded_source(file: &str) -> Result<String> {
    let mut out = String::new();
    let mut seen = Vec::new();
    expand_into(file, &mut out, &mut seen, 0)?;
    Ok(out)
}

fn expand_into(file: &str, out: &mut String, seen: &mut Vec<String>, depth: usize) -> Result<()> {
    if depth > 8 {
        return Err(Error::Cuda(format!("{file}: includes nested too deep")));
    }
    seen.push(file.to_string());
    out.push_str(&format!("#line 1 \"{file}\"\n"));
    for (n, line) in source_text(file)?.lines().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("#include") {
            let inc = rest.trim();
            let Some(name) = inc.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
                return Err(Error::Cuda(format!(
                    "{file}:{}: only #include \"...\" of embedded files is supported (NVRTC has \
                     no CUDA headers here): {t}",
                    n + 1
                )));
            };
            if !seen.iter().any(|s| s == name) {
                expand_into(name, out, seen, depth + 1)?;
            }
            out.push_str(&format!("#line {} \"{file}\"\n", n + 2));
        } else if t == "#pragma once" {
            out.push('\n');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(())
}

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

/// The cache folder, or `None` when caching is off or no home is known.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(v) = env("METAUG_KERNEL_CACHE") {
        let off = matches!(v.to_str(), Some("off" | "0" | "none"));
        return (!off).then(|| PathBuf::from(v));
    }
    if let Some(x) = env("XDG_CACHE_HOME") {
        return Some(PathBuf::from(x).join("metaug").join("kernels"));
    }
    env("HOME").map(|h| {
        PathBuf::from(h)
            .join(".cache")
            .join("metaug")
            .join("kernels")
    })
}

/// The cache file name of `def` on `arch`: `<key>-<sha256 prefix>.ptx`.
pub fn cache_file_name(def: &ModuleDef, arch: &str, nvrtc: (i32, i32)) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"metaug-ptx-v1\0");
    h.update(def.key.as_bytes());
    h.update(b"\0");
    h.update(expanded_source(def.file)?.as_bytes());
    for o in compile_options(def, arch) {
        h.update(b"\0");
        h.update(o.as_bytes());
    }
    h.update(format!("\0nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    let digest = hex::encode(h.finalize());
    Ok(format!("{}-{}.ptx", def.key, &digest[..24]))
}

/// The PTX of `def` for `arch`, from the disk cache ([`cache_dir`]) when a
/// good copy is there, else compiled (and stored). The flag says whether it
/// came from the cache.
pub fn ptx_for(def: &ModuleDef, arch: &str) -> Result<(String, bool)> {
    ptx_cached(def, arch, cache_dir().as_deref())
}

/// [`ptx_for`] with the cache in `dir` (`None`: no cache).
pub fn ptx_cached(def: &ModuleDef, arch: &str, dir: Option<&Path>) -> Result<(String, bool)> {
    if let Some(dir) = dir {
        let path = dir.join(cache_file_name(def, arch, nvrtc_version()?)?);
        if let Ok(text) = std::fs::read_to_string(&path) {
            if check_ptx(&text, def).is_ok() {
                return Ok((text, true));
            }
        }
    }
    Ok((compile_and_store_in(def, arch, dir)?, false))
}

/// Compiles `def` and writes it to the cache (best effort).
pub fn compile_and_store(def: &ModuleDef, arch: &str) -> Result<String> {
    compile_and_store_in(def, arch, cache_dir().as_deref())
}

fn compile_and_store_in(def: &ModuleDef, arch: &str, dir: Option<&Path>) -> Result<String> {
    let ptx = compile(def, arch)?;
    check_ptx(&ptx, def)?;
    if let Some(dir) = dir {
        if let Ok(name) = cache_file_name(def, arch, nvrtc_version()?) {
            let _ = write_atomic(dir, &name, ptx.as_bytes());
        }
    }
    Ok(ptx)
}

/// Writes `bytes` to `dir/name` through a temporary file in the same folder
/// and a rename, so a reader sees the old file, the new one, or none.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let r = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// The entry points of a PTX text and their parameter lists.
pub fn ptx_entries(ptx: &str) -> Vec<KernelSig> {
    let mut out = Vec::new();
    let mut rest = ptx;
    while let Some(at) = rest.find(".entry ") {
        rest = &rest[at + ".entry ".len()..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_string();
        let mut params = Vec::new();
        if let Some(open) = rest[name_end..].trim_start().strip_prefix('(') {
            let close = open.find(')').unwrap_or(open.len());
            for p in open[..close].split(',') {
                let p = p.trim();
                if p.is_empty() {
                    continue;
                }
                params.push(parse_param(p));
            }
        }
        out.push(KernelSig { name, params });
    }
    out
}

fn parse_param(p: &str) -> Param {
    // `.param .u64 .ptr .align 1 name`, `.param .u32 name`, `.param .f32 name`,
    // `.param .align 4 .b8 name[32]`
    let words: Vec<&str> = p.split_whitespace().collect();
    if words.contains(&".b8") {
        let n = p
            .rsplit_once('[')
            .and_then(|(_, r)| r.trim_end_matches(']').parse().ok())
            .unwrap_or(0);
        return Param::Bytes(n);
    }
    if words.contains(&".u64") || words.contains(&".b64") || words.contains(&".s64") {
        return Param::Ptr;
    }
    if words.contains(&".u32") || words.contains(&".b32") || words.contains(&".s32") {
        return Param::U32;
    }
    // f32 and anything else: report the raw text as a size we never use.
    Param::Bytes(usize::MAX)
}

/// Checks that `ptx` is PTX and has every kernel of `def` with the parameter
/// list the Rust side pushes.
pub fn check_ptx(ptx: &str, def: &ModuleDef) -> Result<()> {
    if !(ptx.contains(".version") && ptx.contains(".target")) {
        return Err(Error::Cuda(format!("module {}: not PTX", def.key)));
    }
    let entries = ptx_entries(ptx);
    for k in &def.kernels {
        match entries.iter().find(|e| e.name == k.name) {
            None => {
                return Err(Error::Cuda(format!(
                    "module {}: no entry point {} in the PTX",
                    def.key, k.name
                )))
            }
            Some(e) if e.params != k.params => {
                return Err(Error::Cuda(format!(
                    "module {}: kernel {} takes {:?} in the PTX but the host pushes {:?}",
                    def.key, k.name, e.params, k.params
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_unit_matches_division() {
        // sample.cuh: metaug_u8_unit relies on this being exact for all 256 inputs.
        let r = 1.0f32 / 255.0;
        for p in 0..=255u32 {
            let x = p as f32;
            let q0 = x * r;
            let q = (-q0).mul_add(255.0, x).mul_add(r, q0);
            assert_eq!(q.to_bits(), (x / 255.0).to_bits(), "p = {p}");
        }
    }

    #[test]
    fn includes_expand_once_with_line_markers() {
        let src = expanded_source("augment.cu").unwrap();
        assert!(!src.contains("#include"));
        assert!(!src.contains("#pragma once"));
        assert_eq!(src.matches("struct Philox4 {").count(), 1);
        assert!(src.contains("#line 1 \"philox.cuh\""));
        assert!(src.contains("#line 1 \"sample.cuh\""));
        let relaxed = expanded_source("relaxed.cu").unwrap();
        assert_eq!(relaxed.matches("struct Footprint {").count(), 1);
        assert!(expanded_source("nope.cu").is_err());
    }

    #[test]
    fn module_table_is_consistent() {
        let mods = all_modules();
        assert_eq!(mods.len(), 24 + 2);
        let mut names: Vec<_> = mods
            .iter()
            .flat_map(|m| m.kernels.iter().map(|k| k.name.clone()))
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "kernel names are unique");
        for m in &mods {
            // every kernel named on the host is defined in its file
            let src = source_text(m.file).unwrap();
            for k in &m.kernels {
                let stem = k.name.trim_start_matches("metaug_");
                assert!(
                    src.contains(&k.name) || m.file == "augment.cu" && stem.starts_with("augment_"),
                    "{} not in {}",
                    k.name,
                    m.file
                );
            }
        }
        let v = AugmentVariant {
            dtype: DType::F16,
            layout: Layout::Nhwc,
            channels: 3,
            vec4: true,
        };
        assert_eq!(v.kernel_name(), "metaug_augment_f16_nhwc_c3_v4");
        assert_eq!(
            v.module().defines,
            vec!["METAUG_AUGMENT_VARIANT=METAUG_AUGMENT_KERNEL(metaug_augment_f16_nhwc_c3_v4,1,1,3,true)"]
        );
    }

    #[test]
    fn ptx_parameter_lists_parse() {
        let ptx = "//\n.version 9.0\n.target sm_90\n\
            .visible .entry k1(\n\t.param .u64 .ptr .align 1 k1_param_0,\n\
            \t.param .align 4 .b8 k1_param_1[32],\n\t.param .u32 k1_param_2\n)\n{\n}\n\
            .visible .entry k2()\n{\n}\n";
        let e = ptx_entries(ptx);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "k1");
        assert_eq!(e[0].params, vec![Param::Ptr, Param::Bytes(32), Param::U32]);
        assert_eq!(e[1].params, vec![]);
        let def = ModuleDef {
            key: "t".into(),
            file: "x.cu",
            defines: vec![],
            kernels: vec![KernelSig {
                name: "k1".into(),
                params: vec![Param::Ptr, Param::Bytes(32), Param::U32],
            }],
        };
        assert!(check_ptx(ptx, &def).is_ok());
        let mut bad = def.clone();
        bad.kernels[0].params.pop();
        assert!(check_ptx(ptx, &bad).is_err());
        bad.kernels[0].name = "k3".into();
        assert!(check_ptx(ptx, &bad).is_err());
        assert!(check_ptx("garbage", &def).is_err());
    }

    #[test]
    fn cache_names_depend_on_everything() {
        let a = AugmentVariant::all()[0].module();
        let b = AugmentVariant::all()[1].module();
        let n = |d: &ModuleDef, arch, v| cache_file_name(d, arch, v).unwrap();
        assert_eq!(n(&a, "compute_90", (13, 0)), n(&a, "compute_90", (13, 0)));
        assert_ne!(n(&a, "compute_90", (13, 0)), n(&b, "compute_90", (13, 0)));
        assert_ne!(n(&a, "compute_90", (13, 0)), n(&a, "compute_80", (13, 0)));
        assert_ne!(n(&a, "compute_90", (13, 0)), n(&a, "compute_90", (13, 1)));
        assert!(n(&a, "compute_90", (13, 0)).starts_with(&a.key));
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a").join("b");
        write_atomic(&sub, "x.ptx", b"one").unwrap();
        write_atomic(&sub, "x.ptx", b"two").unwrap();
        assert_eq!(std::fs::read(sub.join("x.ptx")).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}

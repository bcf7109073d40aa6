//! Compiles every kernel module the crate launches to PTX with NVRTC (no GPU
//! needed) and checks each entry point's parameter list against what the host
//! pushes. Skips when libnvrtc cannot be loaded, unless
//! `METAUG_REQUIRE_NVRTC=1`, which makes that a failure (CI sets it after
//! `.ci/nvrtc.sh` installed NVRTC).
//!
//! The PTX is written to `$CARGO_TARGET_TMPDIR/ptx/` for inspection.

use std::path::PathBuf;

use metaug::cuda::kernels::{self, AugmentVariant, ModuleDef};
use metaug::cuda::nvrtc_available;

/// Whether NVRTC is usable; prints why not (or fails if it is required).
fn nvrtc() -> bool {
    match nvrtc_available() {
        Ok(()) => true,
        Err(e) => {
            if std::env::var("METAUG_REQUIRE_NVRTC").as_deref() == Ok("1") {
                panic!("METAUG_REQUIRE_NVRTC=1 but NVRTC is missing: {e}");
            }
            eprintln!("skipped: no NVRTC ({e})");
            false
        }
    }
}

fn ptx_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ptx");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn compile_checked(def: &ModuleDef, arch: &str) -> String {
    let ptx = kernels::compile(def, arch).unwrap_or_else(|e| panic!("{e}"));
    kernels::check_ptx(&ptx, def).unwrap_or_else(|e| panic!("{e}"));
    ptx
}

#[test]
fn every_launched_module_compiles_for_sm90_with_matching_signatures() {
    if !nvrtc() {
        return;
    }
    let (major, minor) = kernels::nvrtc_version().unwrap();
    let dir = ptx_dir();
    let mut total = 0;
    for def in kernels::all_modules() {
        let ptx = compile_checked(&def, "compute_90");
        assert!(ptx.contains(".target sm_90"), "{}: not sm_90 PTX", def.key);
        std::fs::write(dir.join(format!("{}.ptx", def.key)), &ptx).unwrap();
        total += ptx.len();
    }
    eprintln!(
        "NVRTC {major}.{minor}: {} modules compiled for compute_90, {total} bytes of PTX in {}",
        kernels::all_modules().len(),
        dir.display()
    );
}

#[test]
fn the_whole_augment_file_instantiates_every_variant() {
    if !nvrtc() {
        return;
    }
    // Without -DMETAUG_AUGMENT_VARIANT the file builds all 24 variants (what nvcc sees).
    let all = ModuleDef {
        key: "augment-all".into(),
        file: "augment.cu",
        defines: Vec::new(),
        kernels: AugmentVariant::all()
            .into_iter()
            .flat_map(|v| v.module().kernels)
            .collect(),
    };
    let ptx = compile_checked(&all, "compute_90");
    assert_eq!(kernels::ptx_entries(&ptx).len(), 24);
}

#[test]
fn kernels_compile_for_older_and_newer_architectures() {
    if !nvrtc() {
        return;
    }
    // Nothing Hopper-specific: the oldest arch CUDA 13 supports, and Blackwell.
    let some = [
        kernels::relaxed_module(),
        kernels::philox_module(),
        AugmentVariant::all()[5].module(),
    ];
    for arch in ["compute_75", "compute_100"] {
        for def in &some {
            compile_checked(def, arch);
        }
    }
}

#[test]
fn the_disk_cache_serves_checked_ptx_and_recovers_from_damage() {
    if !nvrtc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let def = kernels::relaxed_module();
    let (a, cached) = kernels::ptx_cached(&def, "compute_90", Some(dir.path())).unwrap();
    assert!(!cached);
    let name =
        kernels::cache_file_name(&def, "compute_90", kernels::nvrtc_version().unwrap()).unwrap();
    let file = dir.path().join(&name);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), a);
    let (b, cached) = kernels::ptx_cached(&def, "compute_90", Some(dir.path())).unwrap();
    assert!(cached);
    assert_eq!(a, b);
    // A truncated file fails the check and is replaced by a fresh compile.
    std::fs::write(&file, &a[..a.len() / 2]).unwrap();
    let (c, cached) = kernels::ptx_cached(&def, "compute_90", Some(dir.path())).unwrap();
    assert!(!cached);
    assert_eq!(a, c);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), a);
}

#[test]
fn a_compile_error_names_the_module_and_quotes_the_log() {
    if !nvrtc() {
        return;
    }
    let mut def = AugmentVariant::all()[0].module();
    // An identifier the kernels use becomes undeclared.
    def.defines.push("__ldg=metaug_no_such_function".into());
    match kernels::compile(&def, "compute_90") {
        Ok(_) => panic!("a broken kernel compiled"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains(&def.key), "{e}");
            assert!(e.contains("metaug_no_such_function"), "{e}");
        }
    }
}

/// The emulator has every kernel the host launches, with the parameter sizes
/// the host declares (the PTX check's counterpart for the host-compiled
/// kernels, which the emulated tests run).
#[test]
fn every_module_kernel_is_emulated_with_the_declared_parameters() {
    let emulated = metaug_cuda_emu::kernels();
    let mut n = 0;
    for m in metaug::cuda::kernels::all_modules() {
        for k in &m.kernels {
            let e = emulated
                .iter()
                .find(|e| e.name == k.name)
                .unwrap_or_else(|| panic!("kernel {} is not in the emulator", k.name));
            let declared: Vec<usize> = k.params.iter().map(|p| p.size()).collect();
            assert_eq!(declared, e.param_sizes, "kernel {}", k.name);
            n += 1;
        }
    }
    assert_eq!(
        n,
        emulated.len(),
        "the emulator has kernels no module declares"
    );
    eprintln!("{n} kernels: emulated with the declared parameter lists");
}

//! The on-disk PTX cache: its folder, the file name (a hash of everything
//! that goes into a compile), look-up with compile on a miss, and atomic
//! writes.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{check_ptx, compile, compile_options, expanded_source, nvrtc_version, ModuleDef};
use crate::Result;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::kernels::AugmentVariant;

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

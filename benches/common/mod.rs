//! Shared by the benches: the real data, packed once into `target/bench-data`
//! (packing is deterministic, so a packed copy is reused while its
//! `index.json` is there), a short criterion configuration, and page-cache
//! eviction of one file for cold reads.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::Criterion;
use metaug::bench::process_cpu_time;
use metaug::pack::{fashion_mnist_class_names, pack_folder, pack_idx, FolderOptions, IdxOptions};
use metaug::shard::Encoding;

/// `../shared/data` beside the repository, or `$METAUG_SHARED_DATA` (for a
/// bench binary run elsewhere, e.g. from `.gpu/` on the GPU machine).
pub fn shared_data() -> PathBuf {
    std::env::var_os("METAUG_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

/// The repository's bundled `data/`.
pub fn bundled_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// `$CARGO_TARGET_DIR/bench-data`, else `target/bench-data` in the
/// repository, else (a bench binary moved to another machine) the temporary
/// directory.
fn cache_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("bench-data");
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if manifest.is_dir() {
        manifest.join("target/bench-data")
    } else {
        std::env::temp_dir().join("metaug-bench-data")
    }
}

fn packed(name: &str, pack: impl FnOnce(&Path) -> metaug::Result<()>) -> Option<PathBuf> {
    let out = cache_dir().join(name);
    if out.join("index.json").is_file() {
        return Some(out);
    }
    match pack(&out) {
        Ok(()) => Some(out),
        Err(e) => {
            eprintln!("bench data {name}: cannot pack: {e}");
            None
        }
    }
}

/// The 300 ImageNet JPEG photos of `../shared/data/photos-jpeg`, packed
/// byte for byte from a tree of symbolic links `<wnid>/<file>` made from its
/// `labels.csv` (the folder itself also holds README.md and labels.csv).
pub fn photos_jpeg() -> Option<PathBuf> {
    photos_jpeg_packed(false)
}

/// The same photos packed with `restart_markers` (each JPEG rewritten
/// without loss with a restart marker after every MCU).
#[allow(dead_code)] // not every bench uses it
pub fn photos_jpeg_restart_markers() -> Option<PathBuf> {
    photos_jpeg_packed(true)
}

fn photos_jpeg_packed(restart_markers: bool) -> Option<PathBuf> {
    let src = shared_data().join("photos-jpeg");
    let labels = std::fs::read_to_string(src.join("labels.csv")).ok();
    let Some(labels) = labels else {
        eprintln!("bench data: {} is missing", src.display());
        return None;
    };
    let name = if restart_markers {
        "photos-jpeg-restart-markers"
    } else {
        "photos-jpeg"
    };
    packed(name, |out| {
        let tree = cache_dir().join(format!("{name}-tree"));
        let _ = std::fs::remove_dir_all(&tree);
        for line in labels.lines().skip(1) {
            let mut f = line.split(',');
            let (Some(file), Some(_), Some(wnid)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let class = tree.join(wnid);
            std::fs::create_dir_all(&class).map_err(|e| metaug::Error::io(&class, e))?;
            std::os::unix::fs::symlink(src.join(file), class.join(file))
                .map_err(|e| metaug::Error::io(class.join(file), e))?;
        }
        let opts = FolderOptions {
            overwrite: true,
            restart_markers,
            ..FolderOptions::default()
        };
        pack_folder(&tree, out, &opts).map(drop)
    })
}

/// The 13 PNG images of the bundled `data/photos-png`, one class.
pub fn photos_png() -> Option<PathBuf> {
    let src = bundled_data().join("photos-png");
    let src = if src.is_dir() {
        src
    } else {
        PathBuf::from("data/photos-png") // run from the repository root elsewhere
    };
    let src = if src.is_dir() {
        src
    } else {
        shared_data().join("photos-png")
    };
    packed("photos-png", |out| {
        let opts = FolderOptions {
            flat: true,
            overwrite: true,
            ..FolderOptions::default()
        };
        pack_folder(&src, out, &opts).map(drop)
    })
}

/// Fashion-MNIST train (60,000 × 28×28 grey) as raw shards, from
/// `../shared/data`, or the bundled 2,000-image subset when that is missing.
pub fn fashion_mnist(encoding: Encoding) -> Option<PathBuf> {
    let (dir, tag) = if shared_data().join("fashion-mnist").is_dir() {
        (shared_data().join("fashion-mnist"), "full")
    } else {
        (bundled_data().join("fashion-mnist-small"), "small")
    };
    let name = format!("fashion-mnist-{tag}-{}", encoding.as_str());
    packed(&name, |out| {
        let opts = IdxOptions {
            encoding,
            classes: Some(fashion_mnist_class_names()),
            overwrite: true,
            ..IdxOptions::default()
        };
        pack_idx(
            &dir.join("train-images-idx3-ubyte.gz"),
            &dir.join("train-labels-idx1-ubyte.gz"),
            out,
            &opts,
        )
        .map(drop)
    })
}

/// Criterion set for short runs: 1 s warm-up, `secs` of measurement, 10
/// samples; command-line flags still override.
pub fn short(secs: u64) -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(secs))
        .sample_size(10)
        .configure_from_args()
}

/// Asks the kernel to drop `path`'s pages from the page cache
/// (`posix_fadvise(DONTNEED)`): the next read comes from the disk, for this
/// file only. Pages still mapped by a live mmap stay; drop the map first.
pub fn evict(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole
    // file; the call only advises the kernel and touches no memory of ours.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Resident pages of `path` over its pages, via `mincore` on a fresh map
/// (to check that [`evict`] worked).
pub fn resident_fraction(path: &Path) -> std::io::Result<f64> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0.0);
    }
    // SAFETY: read-only map of a file nobody truncates during the call; it
    // is only passed to mincore, never read.
    let map = unsafe { memmap2::Mmap::map(&f)? };
    let page = 4096usize;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `len` bytes, page aligned; `vec`
    // has one byte per page as mincore requires.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(vec.iter().filter(|b| **b & 1 == 1).count() as f64 / pages as f64)
}

/// Wall and CPU time of `f`.
pub fn wall_and_cpu<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (t, c) = (std::time::Instant::now(), process_cpu_time());
    let out = f();
    (out, t.elapsed(), process_cpu_time().saturating_sub(c))
}

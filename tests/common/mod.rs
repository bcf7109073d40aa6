//! Fixtures shared by the integration tests: datasets packed from the
//! bundled real data in `data/`, and the larger sets in `../shared/data`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use metaug::loader::Batch;
use metaug::pack::{pack_folder, pack_idx, FolderOptions, IdxOptions};
use metaug::shard::{Dataset, Encoding};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data`, where the full real datasets live (CI has it too).
pub fn shared_data() -> PathBuf {
    repo().join("../shared/data")
}

/// The bundled Fashion-MNIST training subset (2,000 images), packed raw
/// into `dir` with small shards (several per dataset).
pub fn fmnist_small(dir: &Path) -> Dataset {
    fmnist_small_with(dir, Encoding::Raw, 256 << 10)
}

/// The bundled Fashion-MNIST subset packed with `encoding` and `shard_size`.
pub fn fmnist_small_with(dir: &Path, encoding: Encoding, shard_size: u64) -> Dataset {
    let src = repo().join("data/fashion-mnist-small");
    let options = IdxOptions {
        encoding,
        shard_size,
        ..IdxOptions::default()
    };
    pack_idx(
        &src.join("train-images-idx3-ubyte.gz"),
        &src.join("train-labels-idx1-ubyte.gz"),
        dir,
        &options,
    )
    .expect("pack the bundled Fashion-MNIST subset");
    Dataset::open(dir).expect("open the packed dataset")
}

/// The 13 bundled PNG photographs, one class.
pub fn photos_png(dir: &Path) -> Dataset {
    let options = FolderOptions {
        flat: true,
        shard_size: 1 << 20,
        ..FolderOptions::default()
    };
    pack_folder(&repo().join("data/photos-png"), dir, &options).expect("pack the bundled PNGs");
    Dataset::open(dir).expect("open the packed photos")
}

/// SHA-256 of a batch: its image bytes, labels and sample indices.
pub fn batch_digest(b: &Batch) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b.image_bytes());
    for l in b.labels() {
        h.update(l.to_le_bytes());
    }
    for i in b.indices() {
        h.update(i.to_le_bytes());
    }
    h.finalize().into()
}

/// A python that can run `import_line` (the repository's `.venv` first,
/// then `python3`), or `None` with a skip message. CI installs the packages
/// and sets `METAUG_REQUIRE_PYTHON=1`: there a missing one is a failure.
/// `what` names the packages in the messages, `pip` how to install them.
pub fn python_with(import_line: &str, what: &str, pip: &str) -> Option<String> {
    let venv = repo().join(".venv/bin/python");
    let found = [venv.to_str().unwrap(), "python3"].into_iter().find(|p| {
        std::process::Command::new(p)
            .args(["-c", import_line])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("METAUG_REQUIRE_PYTHON").is_none(),
            "METAUG_REQUIRE_PYTHON is set but no python has {what}"
        );
        eprintln!("skipping: no python with {what} ({pip})");
    }
    found.map(str::to_string)
}

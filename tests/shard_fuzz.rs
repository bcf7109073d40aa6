//! Random corruption of real shards: every mutated file must be opened, read
//! and verified without a panic, and every corruption that changes a byte
//! that matters must be reported as an error (no byte goes unchecked).

mod shard_util;

use std::path::Path;
use std::time::Instant;

use metaug::pack::{check_decodes, ImageLimits};
use metaug::shard::{Dataset, Encoding, OpenOptions, ReadMode, Shard};
use rand::{Rng, SeedableRng};

/// Opens the dataset, reads every record and decodes it, in mmap mode, and
/// checks that pread mode sees exactly the same (records and errors).
/// Returns the number of errors seen (0 means the corruption went unnoticed).
fn exercise(dir: &Path) -> usize {
    let pread = Dataset::open_with(
        dir,
        OpenOptions {
            read_mode: ReadMode::Pread,
            ..Default::default()
        },
    );
    let ds = match (Dataset::open(dir), pread) {
        (Ok(ds), Ok(pread)) => {
            let mut buf = Vec::new();
            for i in 0..ds.len() {
                let a = ds.record(i).map(|r| (r.bytes, r.label, r.shape));
                let b = pread
                    .read_record(i, &mut buf)
                    .map(|r| (r.bytes, r.label, r.shape));
                match (a, b) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "record {i}"),
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => panic!("the read modes disagree on record {i}: {a:?} vs {b:?}"),
                }
            }
            ds
        }
        (Err(e), Err(e2)) => {
            // Errors render without panicking, too.
            assert!(!e.to_string().is_empty());
            assert_eq!(e.to_string(), e2.to_string(), "the read modes disagree");
            return 1;
        }
        (a, b) => panic!(
            "the read modes disagree at open: {:?} vs {:?}",
            a.err(),
            b.err()
        ),
    };
    let _ = ds.summary();
    let mut errors = 0;
    for i in 0..ds.len() {
        if ds.record(i).is_err() {
            errors += 1;
        }
        let _ = (ds.label(i), ds.shape(i));
    }
    let report = ds.verify(|r| check_decodes(r, &ImageLimits::default()));
    errors + report.bad.len()
}

/// The header's padding: the spaces after the JSON text.
fn padding(bytes: &[u8]) -> std::ops::Range<usize> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let text = &bytes[8..8 + n];
    let end_of_json = text.iter().rposition(|&b| b != b' ').unwrap() + 1;
    8 + end_of_json..8 + n
}

fn fuzz_dataset(dir: &Path, iterations: usize, seed: u64) -> (usize, usize) {
    let shard = dir.join("shard-00000.safetensors");
    let original = std::fs::read(&shard).unwrap();
    let pad = padding(&original);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut detected, mut benign) = (0, 0);
    for _ in 0..iterations {
        let mut bytes = original.clone();
        let flips = rng.random_range(1..=4);
        for _ in 0..flips {
            // Half the flips land in the header and small arrays (the first
            // couple of kilobytes), where they are most interesting.
            let at = if rng.random_bool(0.5) {
                rng.random_range(0..bytes.len().min(2048))
            } else {
                rng.random_range(0..bytes.len())
            };
            bytes[at] ^= rng.random_range(1..=255u8);
        }
        if bytes == original {
            continue;
        }
        std::fs::write(&shard, &bytes).unwrap();
        let errors = exercise(dir);
        // The only harmless change: whitespace for whitespace in the padding.
        let harmless = bytes
            .iter()
            .zip(&original)
            .enumerate()
            .all(|(i, (a, b))| a == b || (pad.contains(&i) && b" \t\r\n".contains(a)));
        if harmless {
            benign += 1;
        } else {
            assert!(errors > 0, "a corruption went unnoticed (seed {seed})");
            detected += 1;
        }
    }
    std::fs::write(&shard, &original).unwrap();
    assert_eq!(exercise(dir), 0);
    (detected, benign)
}

#[test]
fn random_byte_flips_never_panic_and_are_detected() {
    let start = Instant::now();
    let raw = shard_util::memory_tempdir();
    shard_util::small_fashion(raw.path(), 40, Encoding::Raw, u64::MAX);
    let png = shard_util::memory_tempdir();
    shard_util::small_fashion(png.path(), 12, Encoding::Png, u64::MAX);

    let (d1, b1) = fuzz_dataset(raw.path(), 2500, 1);
    let (d2, b2) = fuzz_dataset(png.path(), 2500, 2);
    eprintln!(
        "raw: {d1} detected, {b1} harmless; png: {d2} detected, {b2} harmless; {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(d1 > 2000 && d2 > 2000);
}

#[test]
fn every_prefix_of_a_shard_is_an_error() {
    let dir = shard_util::memory_tempdir();
    shard_util::small_fashion(dir.path(), 3, Encoding::Png, u64::MAX);
    let bytes = std::fs::read(dir.path().join("shard-00000.safetensors")).unwrap();
    let path = dir.path().join("prefix.safetensors");
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = Shard::open(&path, 0).expect_err("a prefix must not open");
        assert!(err.to_string().contains("prefix.safetensors"), "{err}");
        let err2 = Shard::open_with(&path, 0, ReadMode::Pread).expect_err("nor in pread mode");
        assert_eq!(err.to_string(), err2.to_string());
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(Shard::open(&path, 0).unwrap().len(), 3);
}

#[test]
fn random_index_json_bytes_never_panic() {
    let dir = shard_util::memory_tempdir();
    shard_util::small_fashion(dir.path(), 20, Encoding::Raw, 5 * 784);
    let path = dir.path().join("index.json");
    let original = std::fs::read(&path).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..500 {
        let mut bytes = original.clone();
        let at = rng.random_range(0..bytes.len());
        bytes[at] ^= rng.random_range(1..=255u8);
        std::fs::write(&path, &bytes).unwrap();
        let _ = exercise(dir.path());
    }
}

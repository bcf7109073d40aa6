//! Every input a fuzzer ever crashed on, kept as a regression test, plus the
//! fuzz seed corpus. Each input goes through the very code its fuzz target
//! runs (`fuzz/src/lib.rs`, included below), so a crash found by
//! `cargo fuzz run TARGET` is fixed when it passes here.
//!
//! Crash inputs live in `tests/data/fuzz/TARGET/` (named after the bug);
//! seeds in `fuzz/corpus/TARGET/`. See `fuzz/README.md`.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

/// The files of `dir` (none if it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .collect();
    files.sort();
    files
}

/// Runs `run` on every crash input and seed of `target`; returns how many.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = inputs(&root.join("tests/data/fuzz").join(target));
    files.extend(inputs(&root.join("fuzz/corpus").join(target)));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target}: {} panics", file.display());
    }
    files.len()
}

#[test]
fn shard_inputs() {
    assert!(
        replay("shard", harness::shard) >= 4,
        "the seeds are missing"
    );
}

#[test]
fn index_json_inputs() {
    assert!(
        replay("index_json", harness::index_json) >= 2,
        "the seeds are missing"
    );
}

#[test]
fn policy_inputs() {
    assert!(
        replay("policy", harness::policy) >= 3,
        "the seeds are missing"
    );
}

#[test]
fn decode_inputs() {
    assert!(
        replay("decode", harness::decode) >= 3,
        "the seeds are missing"
    );
}

#[test]
fn fixing_the_table_checksums_of_a_real_shard_changes_nothing() {
    let seed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/shard/raw-2-records.safetensors");
    let bytes = std::fs::read(seed).unwrap();
    assert_eq!(harness::fix_table_checksums(&bytes), None);
    // A label changed: the fixed-up copy has the right checksum again.
    let mut bad = bytes.clone();
    let n = u64::from_le_bytes(bad[..8].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(&bad[8..8 + n]).unwrap().to_string();
    let labels = text.find("\"labels\"").unwrap();
    let begin: usize = text[labels..]
        .split("data_offsets\":[")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    bad[8 + n + begin] ^= 1;
    let fixed = harness::fix_table_checksums(&bad).expect("a checksum to fix");
    assert_ne!(fixed, bad);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.safetensors");
    std::fs::write(&path, &bad).unwrap();
    let err = metaug::shard::Shard::open(&path, 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("checksum mismatch in tensor \"labels\""),
        "{err}"
    );
    std::fs::write(&path, &fixed).unwrap();
    let shard = metaug::shard::Shard::open(&path, 0).expect("the fixed copy opens");
    assert_eq!(shard.label(0).unwrap(), (bytes[8 + n + begin] ^ 1) as i64);
    harness::shard(&bad);
}

#[test]
fn decode_seeds_are_valid_images() {
    use metaug::decode::{decode_bytes, Encoding};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    for (name, encoding) in [
        ("jpeg-iron", Encoding::Jpeg),
        ("jpeg-420-48x40-restart-every-mcu", Encoding::Jpeg),
        (
            "jpeg-422-from-progressive-restart-every-mcu",
            Encoding::Jpeg,
        ),
        ("jpeg-grey-48x40-restart-every-mcu", Encoding::Jpeg),
        ("png-fmnist", Encoding::Png),
        ("raw-fmnist", Encoding::Raw),
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let shape = [
            u32::from(u16::from_le_bytes([bytes[0], bytes[1]])),
            u32::from(u16::from_le_bytes([bytes[2], bytes[3]])),
            u32::from(bytes[4]),
        ];
        let pixels = decode_bytes(
            &bytes[5..],
            encoding,
            shape,
            3,
            &harness::FUZZ_DECODE_LIMITS,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(pixels.view().height, shape[0], "{name}");
        // The seeds cut at every MCU reach the virtual-JPEG path.
        let cut = metaug::decode::cuts_at_every_mcu(&bytes[5..], &harness::FUZZ_DECODE_LIMITS);
        assert_eq!(cut, name.contains("restart-every-mcu"), "{name}");
    }
}

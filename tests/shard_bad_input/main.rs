//! One test per kind of bad input: each is a distinct error naming the file
//! (and record), built from hand-made or mutated bytes. Never a panic.

#[path = "../shard_util/mod.rs"]
mod shard_util;

mod dataset;
mod images;
mod shard_file;

use std::path::{Path, PathBuf};

use metaug::pack::{check_decodes, FolderOptions, ImageLimits};
use metaug::shard::{
    Dataset, DatasetWriter, Encoding, OpenOptions, ReadMode, Shard, WriterOptions,
};
use metaug::Error;
use shard_util::{png_declaring, write_dataset, Parts};

/// Opens a dataset whose only shard is `parts`, expecting an error.
fn open_err(parts: &Parts, encoding: &str) -> (tempfile::TempDir, Error) {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), parts, encoding);
    let err = dataset_err(dir.path());
    (dir, err)
}

/// Opens the dataset in `dir` in both read modes, expecting the same error.
#[track_caller]
fn dataset_err(dir: &Path) -> Error {
    let err = Dataset::open(dir).expect_err("a bad dataset must not open");
    let pread = OpenOptions {
        read_mode: ReadMode::Pread,
        ..Default::default()
    };
    let err2 = Dataset::open_with(dir, pread).expect_err("nor in pread mode");
    assert_eq!(err.to_string(), err2.to_string(), "the read modes disagree");
    err
}

/// Opens the shard at `path` in both read modes, expecting the same error.
#[track_caller]
fn shard_err(path: &Path) -> Error {
    let err = Shard::open(path, 0).expect_err("a bad shard must not open");
    let err2 = Shard::open_with(path, 0, ReadMode::Pread).expect_err("nor in pread mode");
    assert_eq!(err.to_string(), err2.to_string(), "the read modes disagree");
    err
}

fn shard_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("shard-00000.safetensors")
}

/// Asserts a `Format` error on `path` whose message contains `needle`.
#[track_caller]
fn assert_format(err: &Error, path: &Path, needle: &str) {
    match err {
        Error::Format { path: p, what } => {
            assert_eq!(p, path, "error names the wrong file: {err}");
            assert!(what.contains(needle), "expected {needle:?} in: {err}");
        }
        other => panic!("expected a format error containing {needle:?}, got: {other}"),
    }
    assert!(err.to_string().contains(&path.display().to_string()));
}

/// Asserts a `Record` error on `path`, record `record`, containing `needle`.
#[track_caller]
fn assert_record(err: &Error, path: &Path, record: u64, needle: &str) {
    match err {
        Error::Record {
            path: p,
            record: r,
            what,
        } => {
            assert_eq!(p, path, "error names the wrong file: {err}");
            assert_eq!(*r, record, "error names the wrong record: {err}");
            assert!(what.contains(needle), "expected {needle:?} in: {err}");
        }
        other => panic!("expected a record error containing {needle:?}, got: {other}"),
    }
    assert!(err.to_string().contains(&format!("record {record}")));
}

#[test]
fn dataset_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Dataset>();
    check::<Shard>();
}

#[test]
fn valid_hand_made_shard_opens() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &Parts::raw(5), "raw");
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(ds.len(), 5);
    let r = ds.record(4).unwrap();
    assert_eq!(
        (r.bytes, r.label, r.shape),
        (&[4u8, 1, 2, 3][..], 1, [2, 2, 1])
    );
    assert_eq!((r.shard, r.index, r.encoding), (0, 4, Encoding::Raw));
}

//! One test per kind of bad input: each is a distinct error naming the file
//! (and record), built from hand-made or mutated bytes. Never a panic.

mod shard_util;

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

#[test]
fn truncated_file() {
    let bytes = Parts::raw(5).bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.safetensors");
    std::fs::write(&path, &bytes[..5]).unwrap();
    assert_format(&shard_err(&path), &path, "truncated: the file is 5 bytes");
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert_format(
        &shard_err(&path),
        &path,
        "truncated: tensor \"bytes\" ends at data byte",
    );
    std::fs::write(&path, b"").unwrap();
    assert_format(&shard_err(&path), &path, "truncated");
}

#[test]
fn header_claims_more_than_the_file_holds() {
    let mut bytes = Parts::raw(3).bytes();
    let claimed = bytes.len() as u64; // more than the bytes after the prefix
    bytes[..8].copy_from_slice(&claimed.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let err = shard_err(&path);
    assert_format(&err, &path, &format!("header claims {claimed} bytes"));

    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = shard_err(&path);
    assert_format(&err, &path, "exceeds the limit");
}

#[test]
fn header_is_not_json() {
    let mut bytes = Parts::raw(3).bytes();
    bytes[8] = b'[';
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    assert_format(&shard_err(&path), &path, "not a valid JSON object");
}

#[test]
fn duplicate_tensor_key_in_header() {
    let parts = Parts::raw(1);
    let mut bytes = parts.bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let text = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    // Rename "crc32c" to "labels": same length, so offsets stay put.
    let dup = text.replacen("\"crc32c\":{", "\"labels\":{", 1);
    assert_ne!(dup, text);
    bytes[8..8 + n].copy_from_slice(dup.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    assert_format(&shard_err(&path), &path, r#"duplicate key "labels""#);
}

#[test]
fn offsets_out_of_range() {
    let mut parts = Parts::from_arrays(
        "png",
        vec![1, 2, 3, 4, 5, 6, 7, 8],
        vec![0, 4, 100],
        vec![0, 1],
        vec![1, 1, 1, 1, 1, 1],
        vec![0, 0],
    );
    let (dir, err) = open_err(&parts, "png");
    assert_record(&err, &shard_path(&dir), 1, "offset 100 is out of range");

    parts = Parts::from_arrays(
        "png",
        vec![1; 8],
        vec![3, 4, 8],
        vec![0, 1],
        vec![1; 6],
        vec![0, 0],
    );
    let (dir, err) = open_err(&parts, "png");
    assert_format(&err, &shard_path(&dir), "offsets start at 3, expected 0");

    parts = Parts::from_arrays(
        "png",
        vec![1; 8],
        vec![0, 4, 6],
        vec![0, 1],
        vec![1; 6],
        vec![0, 0],
    );
    let (dir, err) = open_err(&parts, "png");
    assert_format(
        &err,
        &shard_path(&dir),
        "offsets end at 6 but tensor \"bytes\" holds 8",
    );
}

#[test]
fn offsets_decreasing() {
    let parts = Parts::from_arrays(
        "png",
        vec![9; 8],
        vec![0, 6, 2, 8],
        vec![0, 1, 2],
        vec![1; 9],
        vec![0; 3],
    );
    let (dir, err) = open_err(&parts, "png");
    assert_record(&err, &shard_path(&dir), 1, "offsets decrease");
}

#[test]
fn counts_disagree_between_tensors() {
    let mut parts = Parts::raw(3);
    let t = parts.tensor("crc32c");
    t.data.truncate(8);
    t.shape = vec![2];
    let (dir, err) = open_err(&parts, "raw");
    assert_format(
        &err,
        &shard_path(&dir),
        "count mismatch: tensor \"crc32c\" has 2 entries but \"labels\" has 3",
    );

    let mut parts = Parts::raw(3);
    let t = parts.tensor("offsets");
    t.data.truncate(24);
    t.shape = vec![3];
    let (dir, err) = open_err(&parts, "raw");
    assert_format(
        &err,
        &shard_path(&dir),
        "count mismatch: tensor \"offsets\" has 3 entries",
    );

    let mut parts = Parts::raw(3);
    let t = parts.tensor("shapes");
    t.data.truncate(24);
    t.shape = vec![2, 3];
    let (dir, err) = open_err(&parts, "raw");
    assert_format(
        &err,
        &shard_path(&dir),
        "count mismatch: tensor \"shapes\" has shape [2, 3]",
    );
}

#[test]
fn count_disagrees_with_metadata() {
    let mut parts = Parts::raw(3);
    parts.metadata.insert("count".into(), "4".into());
    let (dir, err) = open_err(&parts, "raw");
    assert_format(
        &err,
        &shard_path(&dir),
        "count mismatch: metadata count is 4 but the tensors hold 3",
    );
}

#[test]
fn count_disagrees_with_index_json() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &Parts::raw(3), "raw");
    let index_path = dir.path().join("index.json");
    let text = std::fs::read_to_string(&index_path).unwrap();
    let text = text
        .replace("\"records\":3", "\"records\":4")
        .replace("\"total_records\":3", "\"total_records\":4");
    std::fs::write(&index_path, text).unwrap();
    let err = dataset_err(dir.path());
    assert_format(
        &err,
        &shard_path(&dir),
        "count mismatch: the shard holds 3 records but",
    );
    assert!(err.to_string().contains("index.json says 4"), "{err}");
}

#[test]
fn index_json_totals_disagree() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &Parts::raw(3), "raw");
    let index_path = dir.path().join("index.json");
    let text = std::fs::read_to_string(&index_path).unwrap();
    std::fs::write(
        &index_path,
        text.replace("\"total_records\":3", "\"total_records\":7"),
    )
    .unwrap();
    let err = dataset_err(dir.path());
    assert_format(
        &err,
        &index_path,
        "count mismatch: total_records is 7 but the shards list 3",
    );
}

#[test]
fn index_json_missing_or_unsafe() {
    let dir = tempfile::tempdir().unwrap();
    let err = dataset_err(dir.path());
    assert_format(&err, &dir.path().join("index.json"), "missing index.json");

    write_dataset(dir.path(), &Parts::raw(3), "raw");
    let index_path = dir.path().join("index.json");
    let text = std::fs::read_to_string(&index_path).unwrap();
    std::fs::write(&index_path, text.replace("shard-00000", "../shard-00000")).unwrap();
    let err = dataset_err(dir.path());
    assert_format(&err, &index_path, "is not a plain *.safetensors name");
}

#[test]
fn wrong_dtype() {
    let mut parts = Parts::raw(3);
    parts.tensor("labels").dtype = "F64".into();
    let (dir, err) = open_err(&parts, "raw");
    assert_format(
        &err,
        &shard_path(&dir),
        "tensor \"labels\" has dtype F64, expected I64",
    );
}

#[test]
fn wrong_shape() {
    let mut parts = Parts::raw(2);
    // Same byte size, wrong layout: [3, 2] instead of [2, 3].
    parts.tensor("shapes").shape = vec![3, 2];
    let (dir, err) = open_err(&parts, "raw");
    assert_format(
        &err,
        &shard_path(&dir),
        "tensor \"shapes\" has shape [3, 2], expected [2, 3]",
    );

    let mut parts = Parts::raw(2);
    parts.tensor("labels").shape = vec![1, 2];
    let (dir, err) = open_err(&parts, "raw");
    assert_format(
        &err,
        &shard_path(&dir),
        "tensor \"labels\" has shape [1, 2], expected rank 1",
    );

    // Shape says more bytes than the tensor spans.
    let mut parts = Parts::raw(2);
    parts.tensor("bytes").shape = vec![9];
    let (dir, err) = open_err(&parts, "raw");
    assert_format(
        &err,
        &shard_path(&dir),
        "tensor \"bytes\" spans 8 bytes but its shape [9] needs 9",
    );
}

#[test]
fn missing_tensor() {
    let mut parts = Parts::raw(3);
    parts.tensors.retain(|t| t.name != "crc32c");
    parts
        .metadata
        .insert("crc32c_crc32c".into(), "00000000".into());
    let (dir, err) = open_err(&parts, "raw");
    assert_format(&err, &shard_path(&dir), "missing tensor \"crc32c\"");
}

#[test]
fn unexpected_tensor_and_trailing_bytes() {
    let mut parts = Parts::raw(1);
    parts.tensors.push(shard_util::Tensor {
        name: "extra".into(),
        dtype: "U8".into(),
        shape: vec![1],
        data: vec![0],
    });
    let (dir, err) = open_err(&parts, "raw");
    assert_format(&err, &shard_path(&dir), "unexpected tensor \"extra\"");

    let mut bytes = Parts::raw(1).bytes();
    bytes.push(0);
    let path = dir.path().join("t.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    assert_format(&shard_err(&path), &path, "(trailing bytes)");
}

#[test]
fn bad_metadata() {
    for (key, value, needle) in [
        ("format", "other", "metadata format is \"other\""),
        ("version", "2", "unsupported shard version \"2\""),
        ("encoding", "webp", "metadata encoding"),
        ("crc32c_labels", "ABCDEF01", "is not 8 lowercase hex digits"),
    ] {
        let mut parts = Parts::raw(2);
        parts.metadata.insert(key.into(), value.into());
        let (dir, err) = open_err(&parts, "raw");
        assert_format(&err, &shard_path(&dir), needle);
    }
    let mut parts = Parts::raw(2);
    parts.metadata.remove("count");
    let (dir, err) = open_err(&parts, "raw");
    assert_format(&err, &shard_path(&dir), "metadata has no \"count\"");
}

#[test]
fn encoding_disagrees_with_index_json() {
    let (dir, err) = open_err(&Parts::raw(2), "png");
    assert_format(&err, &shard_path(&dir), "encoding is raw but");
}

#[test]
fn missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    shard_util::small_fashion(dir.path(), 30, Encoding::Raw, 10 * 784);
    let gone = dir.path().join("shard-00001.safetensors");
    std::fs::remove_file(&gone).unwrap();
    let err = dataset_err(dir.path());
    assert_format(&err, &gone, "missing shard file");
}

#[test]
fn bad_record_checksum() {
    let dir = tempfile::tempdir().unwrap();
    shard_util::small_fashion(dir.path(), 30, Encoding::Raw, 10 * 784);
    let path = dir.path().join("shard-00002.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 784 * 2 + 100; // inside record 8 of that shard
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    assert!(ds.record(27).is_ok());
    let err = ds.record(28).unwrap_err();
    assert_record(&err, &path, 8, "checksum mismatch: stored crc32c");
    let pread = OpenOptions {
        read_mode: ReadMode::Pread,
        ..Default::default()
    };
    let ds2 = Dataset::open_with(dir.path(), pread).unwrap();
    let mut buf = Vec::new();
    assert!(ds2.read_record(27, &mut buf).is_ok());
    let err2 = ds2.read_record(28, &mut buf).unwrap_err();
    assert_eq!(err2.to_string(), err.to_string());

    let report = ds.verify(|_| Ok(()));
    assert_eq!(report.checked, 30);
    assert_eq!(report.bad.len(), 1);
    assert_record(&report.bad[0], &path, 8, "checksum mismatch");
}

#[test]
fn bad_metadata_checksum() {
    // The metadata keeps the checksum of the original labels; one label
    // changes (to another valid class), as a flipped bit would change it.
    let mut parts = Parts::raw(3);
    let stale = format!("{:08x}", crc32c::crc32c(&parts.tensor("labels").data));
    parts.metadata.insert("crc32c_labels".into(), stale.clone());
    parts.tensor("labels").data[0] = 2;
    let (dir, err) = open_err(&parts, "raw");
    assert_format(
        &err,
        &shard_path(&dir),
        &format!("checksum mismatch in tensor \"labels\": metadata says {stale}"),
    );
}

#[test]
fn label_outside_classes() {
    let mut parts = Parts::raw(3);
    parts.tensor("labels").data[16] = 3; // record 2 -> label 3, with 3 classes
    let (dir, err) = open_err(&parts, "raw");
    assert_record(
        &err,
        &shard_path(&dir),
        2,
        "label 3 is not one of the 3 classes",
    );
}

#[test]
fn raw_record_size_disagrees_with_shape() {
    let mut parts = Parts::raw(3);
    parts.tensor("shapes").data[12] = 3; // record 1 -> [3, 2, 1] = 6 bytes, holds 4
    let (dir, err) = open_err(&parts, "raw");
    assert_record(
        &err,
        &shard_path(&dir),
        1,
        "raw record holds 4 bytes but its shape [3, 2, 1] needs 6",
    );
}

#[test]
fn zero_dimension_shape() {
    let mut parts = Parts::raw(3);
    parts.tensor("shapes").data[0] = 0;
    let (dir, err) = open_err(&parts, "raw");
    assert_record(&err, &shard_path(&dir), 0, "has a zero dimension");
}

#[test]
fn record_index_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &Parts::raw(3), "raw");
    let ds = Dataset::open(dir.path()).unwrap();
    match ds.record(3).unwrap_err() {
        Error::Invalid { what, why } => {
            assert_eq!(what, "record index");
            assert!(why.contains("3 is out of range"), "{why}");
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn huge_image_rejected_when_packing() {
    let root = tempfile::tempdir().unwrap();
    let class = root.path().join("big");
    std::fs::create_dir(&class).unwrap();
    let file = class.join("huge.png");
    std::fs::write(&file, png_declaring(100_000, 100_000)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err =
        metaug::pack::pack_folder(root.path(), out.path(), &FolderOptions::default()).unwrap_err();
    assert_format(
        &err,
        &file,
        "image declares 100000x100000 pixels, above the limit of 16384x16384",
    );
    assert!(!out.path().join("index.json").exists());
}

#[test]
fn huge_image_rejected_when_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = DatasetWriter::create(
        dir.path(),
        WriterOptions::new(Encoding::Png, vec!["x".into()]),
    )
    .unwrap();
    let ok = metaug::pack::idx::encode_png_grey(&[1, 2, 3, 4], 2, 2).unwrap();
    w.push(&ok, 0, [2, 2, 1]).unwrap();
    w.push(&png_declaring(100_000, 100_000), 0, [100_000, 100_000, 1])
        .unwrap();
    w.finish().unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    let report = ds.verify(|r| check_decodes(r, &ImageLimits::default()));
    assert_eq!(report.bad.len(), 1, "{:?}", report.bad);
    let path = dir.path().join("shard-00000.safetensors");
    assert_record(
        &report.bad[0],
        &path,
        1,
        "image declares 100000x100000 pixels, above the limit",
    );

    // And through the CLI: reported by file and record, non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metaug"))
        .args(["inspect", "--verify"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("bad: {}: record 1: ", path.display())),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 records failed verification"));
}

#[test]
fn decoded_shape_disagrees_with_stored_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = DatasetWriter::create(
        dir.path(),
        WriterOptions::new(Encoding::Png, vec!["x".into()]),
    )
    .unwrap();
    let png = metaug::pack::idx::encode_png_grey(&[1, 2, 3, 4, 5, 6], 3, 2).unwrap();
    w.push(&png, 0, [3, 2, 1]).unwrap(); // really 2 high, 3 wide
    w.finish().unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    let report = ds.verify(|r| check_decodes(r, &ImageLimits::default()));
    let path = dir.path().join("shard-00000.safetensors");
    assert_record(
        &report.bad[0],
        &path,
        0,
        "image is 2x3x1 (h x w x c) but the shard says 3x2x1",
    );
}

#[test]
fn not_an_image_when_packing() {
    // A file named as an image that is not one is an error...
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("c")).unwrap();
    let file = root.path().join("c/photo.jpg");
    std::fs::write(&file, "hello").unwrap();
    let out = tempfile::tempdir().unwrap();
    let err =
        metaug::pack::pack_folder(root.path(), out.path(), &FolderOptions::default()).unwrap_err();
    assert_format(&err, &file, "not a PNG or JPEG file");
}

#[test]
fn files_that_are_not_named_as_images_are_left_out() {
    // ...while a README or a labels.csv beside the images is not packed.
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("README.md"), "notes").unwrap();
    std::fs::write(root.path().join("labels.csv"), "a,b").unwrap();
    let png = shard_util::bundled().join("photos-png/microaneurysms.png");
    std::fs::copy(&png, root.path().join("eye.PNG")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let options = FolderOptions {
        flat: true,
        ..FolderOptions::default()
    };
    let index = metaug::pack::pack_folder(root.path(), out.path(), &options).unwrap();
    assert_eq!(index.total_records, 1);
}

#[test]
fn truncated_idx_file() {
    let dir = tempfile::tempdir().unwrap();
    let fm = shard_util::bundled().join("fashion-mnist-small");
    let (_, body) = shard_util::read_idx_gz(&fm.join("t10k-images-idx3-ubyte.gz"));
    let mut idx = vec![0, 0, 8, 3];
    for d in [1000u32, 28, 28] {
        idx.extend_from_slice(&d.to_be_bytes());
    }
    idx.extend_from_slice(&body[..999 * 784 + 10]);
    let images = dir.path().join("images.idx");
    std::fs::write(&images, &idx).unwrap();
    let options = metaug::pack::IdxOptions::default();
    let out = dir.path().join("out");
    let err = metaug::pack::pack_idx(
        &images,
        &fm.join("t10k-labels-idx1-ubyte.gz"),
        &out,
        &options,
    )
    .unwrap_err();
    assert_format(
        &err,
        &images,
        "truncated: item 999 of 1000 ends after 10 of its 784 bytes",
    );
    assert!(
        !out.join("index.json").exists(),
        "a failed pack must not look complete"
    );
}

#[test]
fn idx_counts_disagree_between_images_and_labels() {
    let fm = shard_util::bundled().join("fashion-mnist-small");
    let out = tempfile::tempdir().unwrap();
    let images = fm.join("train-images-idx3-ubyte.gz");
    let err = metaug::pack::pack_idx(
        &images,
        &fm.join("t10k-labels-idx1-ubyte.gz"),
        &out.path().join("x"),
        &metaug::pack::IdxOptions::default(),
    )
    .unwrap_err();
    assert_format(&err, &images, "count mismatch: 2000 images but");
}

#[test]
fn idx_labels_outside_given_classes() {
    let fm = shard_util::bundled().join("fashion-mnist-small");
    let out = tempfile::tempdir().unwrap();
    let options = metaug::pack::IdxOptions {
        classes: Some(vec!["a".into(), "b".into()]),
        ..Default::default()
    };
    let err = metaug::pack::pack_idx(
        &fm.join("t10k-images-idx3-ubyte.gz"),
        &fm.join("t10k-labels-idx1-ubyte.gz"),
        &out.path().join("x"),
        &options,
    )
    .unwrap_err();
    match err {
        Error::Invalid { what, why } => {
            assert_eq!(what, "classes");
            assert!(
                why.contains("2 names given but") && why.contains("holds label 9"),
                "{why}"
            );
        }
        e => panic!("unexpected {e}"),
    }
}

#[cfg(not(feature = "s3"))]
#[test]
fn an_s3_url_in_a_build_without_the_s3_feature_names_the_feature() {
    let err = Dataset::open("s3://bucket/prefix").unwrap_err().to_string();
    assert!(err.contains("--features s3"), "{err}");
    let err = metaug::remote::OutputDir::new(
        std::path::Path::new("s3://bucket/out"),
        false,
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--features s3"), "{err}");
}

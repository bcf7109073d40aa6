//! A dataset's records against its index: encodings, missing shards,
//! checksums, labels, shapes and record numbers.

use super::*;

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

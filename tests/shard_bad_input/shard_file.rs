//! One shard file's structure: its size, header, tensors, tables and
//! metadata.

use super::*;

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

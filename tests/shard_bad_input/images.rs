//! Images that are too large, of another shape than stored, or not images,
//! when packing and when verifying.

use super::*;

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

//! Round trips on real data: pack, read back, compare bytes and labels;
//! determinism; the CLI; Python's safetensors opening a shard.

mod common;
mod shard_util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use metaug::pack::{
    check_decodes, fashion_mnist_class_names, FolderOptions, IdxOptions, ImageLimits,
};
use metaug::shard::{Dataset, DatasetWriter, Encoding, WriterOptions};
use shard_util::{bundled, read_idx_gz, shared_data};

fn metaug() -> Command {
    Command::new(env!("CARGO_BIN_EXE_metaug"))
}

/// Every file of a directory, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Checks that `ds` holds exactly the IDX images and labels, raw.
fn assert_raw_matches_idx(ds: &Dataset, images: &[u8], labels: &[u8]) {
    assert_eq!(ds.len(), labels.len() as u64);
    for (i, &label) in labels.iter().enumerate() {
        let r = ds.record(i as u64).unwrap();
        assert_eq!(r.bytes, &images[i * 784..(i + 1) * 784], "record {i}");
        assert_eq!(r.label, i64::from(label), "record {i}");
        assert_eq!(r.shape, [28, 28, 1]);
        assert_eq!(r.encoding, Encoding::Raw);
    }
}

#[test]
fn fashion_mnist_all_70000_raw() {
    let Some(data) = shared_data() else { return };
    let fm = data.join("fashion-mnist");
    let out = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 60_000u64), ("t10k", 10_000)] {
        let images = fm.join(format!("{split}-images-idx3-ubyte.gz"));
        let labels = fm.join(format!("{split}-labels-idx1-ubyte.gz"));
        let dir = out.path().join(split);
        let options = IdxOptions {
            classes: Some(fashion_mnist_class_names()),
            shard_size: 16 << 20,
            ..IdxOptions::default()
        };
        let index = metaug::pack::pack_idx(&images, &labels, &dir, &options).unwrap();
        assert_eq!(index.total_records, n);

        let ds = Dataset::open(&dir).unwrap();
        let (_, pixels) = read_idx_gz(&images);
        let (_, label_bytes) = read_idx_gz(&labels);
        assert_raw_matches_idx(&ds, &pixels, &label_bytes);

        // What `inspect` reports.
        let summary = ds.summary();
        assert_eq!(summary.records, n);
        assert_eq!(summary.encoding, Encoding::Raw);
        assert_eq!(summary.classes.len(), 10);
        assert_eq!(summary.classes[0].0, "T-shirt/top");
        assert!(summary.classes.iter().all(|(_, c)| *c == n / 10));
        assert_eq!(summary.min_size, Some([28, 28]));
        assert_eq!(summary.max_size, Some([28, 28]));
        assert_eq!(summary.channels, vec![1]);
        assert_eq!(summary.payload_bytes, n * 784);
        assert_eq!(
            summary.shards.len() as u64,
            (n * 784).div_ceil(16 << 20),
            "shards hold at most --shard-size payload bytes"
        );
        assert_eq!(summary.file_bytes, index.total_bytes);
    }

    // The CLI, once.
    let cli = metaug()
        .arg("inspect")
        .arg(out.path().join("t10k"))
        .output()
        .unwrap();
    assert!(cli.status.success());
    let stdout = String::from_utf8(cli.stdout).unwrap();
    assert!(stdout.contains("records:  10000"), "{stdout}");
    assert!(stdout.contains("1000  Ankle boot"), "{stdout}");
    assert!(
        stdout.contains("height 28..=28, width 28..=28, channels 1"),
        "{stdout}"
    );
}

#[test]
fn fashion_mnist_png_subset_decodes_to_the_same_pixels() {
    let fm = bundled().join("fashion-mnist-small");
    let images = fm.join("train-images-idx3-ubyte.gz");
    let labels = fm.join("train-labels-idx1-ubyte.gz");
    let out = tempfile::tempdir().unwrap();
    let options = IdxOptions {
        encoding: Encoding::Png,
        shard_size: 256 << 10,
        ..IdxOptions::default()
    };
    let a = out.path().join("a");
    let index = metaug::pack::pack_idx(&images, &labels, &a, &options).unwrap();
    assert_eq!(index.total_records, 2000);
    assert!(index.shards.len() > 1);
    assert_eq!(
        index.classes,
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );

    let ds = Dataset::open(&a).unwrap();
    let (_, pixels) = read_idx_gz(&images);
    let (_, label_bytes) = read_idx_gz(&labels);
    for i in 0..2000usize {
        let r = ds.record(i as u64).unwrap();
        assert_eq!(r.encoding, Encoding::Png);
        let img = image::load_from_memory_with_format(r.bytes, image::ImageFormat::Png)
            .unwrap()
            .to_luma8();
        assert_eq!(img.as_raw().as_slice(), &pixels[i * 784..(i + 1) * 784]);
        assert_eq!(r.label, i64::from(label_bytes[i]));
    }
    assert!(ds
        .verify(|r| check_decodes(r, &ImageLimits::default()))
        .ok());

    // Determinism: the same input gives the same bytes, index included.
    let b = out.path().join("b");
    metaug::pack::pack_idx(&images, &labels, &b, &options).unwrap();
    assert_eq!(files(&a), files(&b));
}

#[test]
fn bundled_fashion_mnist_raw_and_cli() {
    let fm = bundled().join("fashion-mnist-small");
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("test");
    let status = metaug()
        .args([
            "pack",
            "idx",
            "--classes",
            "fashion-mnist",
            "--shard-size",
            "100K",
            "--images",
        ])
        .arg(fm.join("t10k-images-idx3-ubyte.gz"))
        .arg("--labels")
        .arg(fm.join("t10k-labels-idx1-ubyte.gz"))
        .arg("-o")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let ds = Dataset::open(&dir).unwrap();
    let (_, pixels) = read_idx_gz(&fm.join("t10k-images-idx3-ubyte.gz"));
    let (_, labels) = read_idx_gz(&fm.join("t10k-labels-idx1-ubyte.gz"));
    assert_raw_matches_idx(&ds, &pixels, &labels);
    assert_eq!(ds.classes()[9], "Ankle boot");
    assert_eq!(ds.shards().len(), 8); // 1000 * 784 bytes in 100 KiB shards

    let cli = metaug()
        .args(["inspect", "--verify"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(cli.status.success());
    let stdout = String::from_utf8(cli.stdout).unwrap();
    assert!(stdout.contains("records:  1000"), "{stdout}");
    assert!(stdout.contains("verify:   all 1000 records OK"), "{stdout}");

    // Packing again into the same directory needs --force.
    let again = |force: bool| {
        let mut cmd = metaug();
        cmd.args(["pack", "idx", "--images"])
            .arg(fm.join("t10k-images-idx3-ubyte.gz"))
            .arg("--labels")
            .arg(fm.join("t10k-labels-idx1-ubyte.gz"))
            .arg("-o")
            .arg(&dir);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let refused = again(false);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("pass --force"));
    assert!(again(true).status.success());
    let ds = Dataset::open(&dir).unwrap();
    assert_eq!(ds.shards().len(), 1, "old shards are removed by --force");
    assert_eq!(files(&dir).len(), 2);
}

/// `root/<wnid>/<file>` symlinks to the 300 ImageNet sample JPEGs, from
/// `labels.csv`. Returns the root and each file with its wnid.
fn jpeg_tree(photos: &Path, root: &Path) -> Vec<(PathBuf, String)> {
    let csv = std::fs::read_to_string(photos.join("labels.csv")).unwrap();
    let mut out = Vec::new();
    for line in csv.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let (file, wnid) = (cols[0], cols[2]);
        let class = root.join(wnid);
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(photos.join(file), class.join(file)).unwrap();
        out.push((photos.join(file), wnid.to_string()));
    }
    out
}

#[test]
fn imagenet_jpeg_folder_round_trip() {
    let Some(data) = shared_data() else { return };
    let photos = data.join("photos-jpeg");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut expected = jpeg_tree(&photos, &root);
    assert_eq!(expected.len(), 300);
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    let out = tmp.path().join("out");
    let options = FolderOptions {
        shard_size: 4 << 20,
        ..FolderOptions::default()
    };
    let index = metaug::pack::pack_folder(&root, &out, &options).unwrap();
    assert_eq!(index.total_records, 300);
    assert_eq!(index.encoding, Encoding::Jpeg);
    assert!(index.shards.len() > 5);

    let ds = Dataset::open(&out).unwrap();
    let mut wnids: Vec<&str> = expected.iter().map(|e| e.1.as_str()).collect();
    wnids.dedup();
    assert_eq!(ds.classes(), wnids.as_slice());
    let mut grey = 0;
    for (i, (file, wnid)) in expected.iter().enumerate() {
        let r = ds.record(i as u64).unwrap();
        assert_eq!(
            r.bytes,
            std::fs::read(file).unwrap().as_slice(),
            "{}",
            file.display()
        );
        assert_eq!(ds.classes()[r.label as usize], *wnid);
        let (w, h) = image::ImageReader::open(file)
            .unwrap()
            .into_dimensions()
            .unwrap();
        assert_eq!(r.shape[..2], [h, w], "{}", file.display());
        grey += usize::from(r.shape[2] == 1);
    }
    assert_eq!(grey, 11, "the README counts 11 greyscale JPEGs");
    let summary = ds.summary();
    assert_eq!(summary.min_size, Some([97, 100]));
    assert_eq!(summary.max_size, Some([1600, 2400]));
    assert_eq!(summary.channels, vec![1, 3]);
    let report = ds.verify(|r| check_decodes(r, &ImageLimits::default()));
    assert!(report.ok(), "{:?}", report.bad);
}

/// `pack folder --restart-markers` from the command line: every JPEG is
/// stored rewritten (another byte string, the same shape), `inspect
/// --verify` counts them all as cut at every MCU, and each record decodes to
/// the original file's pixels.
#[test]
fn restart_markers_from_the_command_line() {
    let Some(data) = shared_data() else { return };
    let photos = data.join("photos-jpeg");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut expected = jpeg_tree(&photos, &root);
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    let out = tmp.path().join("out");
    let st = metaug()
        .args(["pack", "folder"])
        .arg(&root)
        .arg("-o")
        .arg(&out)
        .arg("--restart-markers")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let st = metaug()
        .arg("inspect")
        .arg(&out)
        .arg("--verify")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "{stdout}");
    assert!(
        stdout.contains("restart:  300 of 300 JPEG records have a restart marker after every MCU"),
        "{stdout}"
    );
    let ds = Dataset::open(&out).unwrap();
    let limits = metaug::decode::DecodeLimits::default();
    for (i, (file, _)) in expected.iter().enumerate().step_by(7) {
        let r = ds.record(i as u64).unwrap();
        let original = std::fs::read(file).unwrap();
        assert_ne!(r.bytes, original.as_slice(), "{}", file.display());
        let a =
            metaug::decode::decode_bytes(&original, Encoding::Jpeg, r.shape, 3, &limits).unwrap();
        let b = metaug::decode::decode(&r, 3, &limits).unwrap();
        assert!(a.view() == b.view(), "{}: pixels differ", file.display());
    }
}

/// JPEG fixtures encoded from the bundled PNGs, deterministically, into
/// `root/<grey|rgb>/<name>.jpg`.
fn jpeg_fixtures(root: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(bundled().join("photos-png")).unwrap() {
        let path = e.unwrap().path();
        let img = image::open(&path).unwrap();
        let class = if img.color().channel_count() == 1 {
            "grey"
        } else {
            "rgb"
        };
        std::fs::create_dir_all(root.join(class)).unwrap();
        let mut jpeg = Vec::new();
        img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut jpeg, 90,
        ))
        .unwrap();
        let name = path.file_stem().unwrap().to_str().unwrap();
        std::fs::write(root.join(class).join(format!("{name}.jpg")), jpeg).unwrap();
        n += 1;
    }
    n
}

#[test]
fn bundled_pngs_and_jpeg_fixtures_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    // The 13 bundled PNGs, as one class, through the CLI, twice: same bytes.
    for name in ["a", "b"] {
        let status = metaug()
            .args(["pack", "folder", "--flat"])
            .arg(bundled().join("photos-png"))
            .arg("-o")
            .arg(tmp.path().join(name))
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert_eq!(files(&tmp.path().join("a")), files(&tmp.path().join("b")));
    let ds = Dataset::open(tmp.path().join("a")).unwrap();
    assert_eq!(ds.len(), 13);
    assert_eq!(ds.classes(), ["photos-png"]);
    assert_eq!(
        ds.record(0).unwrap().bytes,
        std::fs::read(bundled().join("photos-png/astronaut.png")).unwrap()
    );
    assert_eq!(ds.record(0).unwrap().shape, [512, 512, 3]);
    assert!(ds
        .verify(|r| check_decodes(r, &ImageLimits::default()))
        .ok());

    // JPEG made from them: two classes, sorted, files sorted.
    let root = tmp.path().join("jpeg");
    assert_eq!(jpeg_fixtures(&root), 13);
    let out = tmp.path().join("jpeg-out");
    metaug::pack::pack_folder(&root, &out, &FolderOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.classes(), ["grey", "rgb"]);
    assert_eq!(ds.encoding(), Encoding::Jpeg);
    let first = ds.record(0).unwrap();
    assert_eq!(
        first.bytes,
        std::fs::read(root.join("grey/brick.jpg")).unwrap()
    );
    assert_eq!((first.label, first.shape), (0, [512, 512, 1]));
    let last = ds.record(12).unwrap();
    assert_eq!(last.bytes, std::fs::read(root.join("rgb/ihc.jpg")).unwrap());
    assert_eq!((last.label, last.shape), (1, [512, 512, 3]));
    assert!(ds
        .verify(|r| check_decodes(r, &ImageLimits::default()))
        .ok());
}

#[test]
fn mixed_encodings_are_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    jpeg_fixtures(&root);
    let png = root.join("rgb/zz.png");
    std::fs::copy(bundled().join("photos-png/coffee.png"), &png).unwrap();
    let out = tmp.path().join("out");
    let err = metaug::pack::pack_folder(&root, &out, &FolderOptions::default()).unwrap_err();
    match &err {
        metaug::Error::Format { path, what } => {
            assert_eq!(path, &png);
            assert!(
                what.contains("mixed encodings: this file is png but"),
                "{err}"
            );
            assert!(what.contains("brick.jpg is jpeg"), "{err}");
        }
        e => panic!("unexpected {e}"),
    }
    assert!(
        !out.exists(),
        "nothing is written when the input is refused"
    );
}

#[test]
fn a_killed_run_never_looks_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut options = WriterOptions::new(Encoding::Raw, vec!["x".into()]);
    options.shard_size = 8;
    let mut w = DatasetWriter::create(dir, options.clone()).unwrap();
    for i in 0..5u8 {
        w.push(&[i; 4], 0, [2, 2, 1]).unwrap();
    }
    drop(w); // as if killed before finish(): shards written, no index
    std::fs::write(dir.join(".shard-00002.safetensors.tmp"), b"partial").unwrap();
    assert!(dir.join("shard-00001.safetensors").exists());
    let err = Dataset::open(dir).unwrap_err();
    assert!(err.to_string().contains("missing index.json"), "{err}");

    // A new run refuses to mix with the leftovers unless told to replace them.
    let err = DatasetWriter::create(dir, options.clone()).err().unwrap();
    assert!(err.to_string().contains("already holds a dataset"), "{err}");
    options.overwrite = true;
    let mut w = DatasetWriter::create(dir, options).unwrap();
    w.push(&[9; 4], 0, [2, 2, 1]).unwrap();
    w.finish().unwrap();
    let names: Vec<String> = files(dir).into_keys().collect();
    assert_eq!(names, ["index.json", "shard-00000.safetensors"]);
    assert_eq!(Dataset::open(dir).unwrap().record(0).unwrap().bytes, [9; 4]);
}

#[test]
fn python_safetensors_opens_a_shard() {
    let Some(python) = common::python_with(
        "import safetensors.numpy, numpy",
        "safetensors and numpy",
        "pip install safetensors numpy",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    shard_util::small_fashion(tmp.path(), 50, Encoding::Raw, u64::MAX);
    let ds = Dataset::open(tmp.path()).unwrap();
    let r = ds.record(49).unwrap();
    let script = r#"
import sys
from safetensors import safe_open
from safetensors.numpy import load_file
path = sys.argv[1]
t = load_file(path)
assert sorted(t) == ["bytes", "crc32c", "labels", "offsets", "shapes"], sorted(t)
assert t["bytes"].dtype.name == "uint8" and t["offsets"].dtype.name == "uint64"
assert t["labels"].dtype.name == "int64" and t["shapes"].dtype.name == "uint32"
assert t["shapes"].shape == (50, 3) and t["offsets"].shape == (51,)
with safe_open(path, "np") as f:
    m = f.metadata()
assert m["format"] == "metaug-shard" and m["version"] == "1" and m["count"] == "50", m
o = t["offsets"]
print(int(t["labels"][49]), bytes(t["bytes"][o[49]:o[50]]).hex())
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(ds.shard_path(0))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let expected = format!("{} {}\n", r.label, hex::encode(r.bytes));
    assert_eq!(stdout, expected);
}

#[test]
fn safetensors_crate_reads_a_shard() {
    let tmp = tempfile::tempdir().unwrap();
    shard_util::small_fashion(tmp.path(), 7, Encoding::Png, u64::MAX);
    let bytes = std::fs::read(tmp.path().join("shard-00000.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("shapes").unwrap().shape(), [7, 3]);
    assert_eq!(
        st.tensor("labels").unwrap().dtype(),
        safetensors::Dtype::I64
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["encoding"], "png");
}

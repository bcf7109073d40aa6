//! The two read modes: they agree record for record on real data, and pread
//! mode turns a shard that shrank underneath into an error naming the shard
//! and record (mmap mode would die of SIGBUS there; see `tests/faults.rs`).

mod shard_util;

use std::path::Path;

use metaug::pack::{check_decodes, pack_folder, FolderOptions, ImageLimits};
use metaug::shard::{Dataset, Encoding, OpenOptions, ReadMode};
use metaug::Error;

fn open(dir: &Path, read_mode: ReadMode) -> Dataset {
    Dataset::open_with(
        dir,
        OpenOptions {
            read_mode,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Every record of `dir` reads the same in both modes; returns the count.
fn assert_modes_agree(dir: &Path) -> u64 {
    let mmap = open(dir, ReadMode::Mmap);
    let pread = open(dir, ReadMode::Pread);
    assert_eq!(
        (mmap.read_mode(), pread.read_mode()),
        (ReadMode::Mmap, ReadMode::Pread)
    );
    assert_eq!(mmap.len(), pread.len());
    assert_eq!(mmap.summary(), pread.summary());
    // One buffer for every record: records of different sizes reuse it.
    let (mut unused, mut buf) = (Vec::new(), Vec::new());
    for i in 0..mmap.len() {
        let a = mmap.read_record(i, &mut unused).unwrap();
        let b = pread.read_record(i, &mut buf).unwrap();
        assert_eq!(a.bytes, b.bytes, "record {i}");
        assert_eq!(
            (a.label, a.shape, a.encoding, a.shard, a.index),
            (b.label, b.shape, b.encoding, b.shard, b.index),
            "record {i}"
        );
        assert_eq!(a.bytes.as_ptr(), mmap.record(i).unwrap().bytes.as_ptr());
    }
    assert!(unused.is_empty(), "mmap mode leaves the buffer alone");
    let check = |r: &metaug::shard::Record<'_>| check_decodes(r, &ImageLimits::default());
    let (va, vb) = (mmap.verify(check), pread.verify(check));
    assert!(va.ok() && vb.ok());
    assert_eq!(va.checked, vb.checked);
    mmap.len()
}

#[test]
fn both_modes_read_the_same_records_from_real_data() {
    let raw = shard_util::memory_tempdir();
    shard_util::small_fashion(raw.path(), 300, Encoding::Raw, 40 * 784);
    assert_eq!(assert_modes_agree(raw.path()), 300);
    let png = shard_util::memory_tempdir();
    shard_util::small_fashion(png.path(), 100, Encoding::Png, 8 << 10);
    assert_eq!(assert_modes_agree(png.path()), 100);
    let photos = shard_util::memory_tempdir();
    let options = FolderOptions {
        flat: true,
        shard_size: 1 << 20,
        ..FolderOptions::default()
    };
    pack_folder(
        &shard_util::bundled().join("photos-png"),
        photos.path(),
        &options,
    )
    .unwrap();
    assert_eq!(assert_modes_agree(photos.path()), 13);
}

#[test]
fn record_is_a_clear_error_in_pread_mode() {
    let dir = shard_util::memory_tempdir();
    shard_util::small_fashion(dir.path(), 5, Encoding::Raw, u64::MAX);
    let ds = open(dir.path(), ReadMode::Pread);
    let err = ds.record(0).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { what, .. } if what == "read mode"),
        "{err}"
    );
    assert!(err.to_string().contains("read_record"), "{err}");
    // Labels and shapes come from the tables read at open.
    assert_eq!(ds.shape(4).unwrap(), [28, 28, 1]);
    assert!(ds.label(4).is_ok());
}

#[test]
fn pread_reports_a_shard_that_shrank_and_recovers_when_it_is_back() {
    let dir = shard_util::memory_tempdir();
    shard_util::small_fashion(dir.path(), 30, Encoding::Raw, 10 * 784);
    let ds = open(dir.path(), ReadMode::Pread);
    let victim = ds.shard_path(2).to_path_buf();
    let original = std::fs::read(&victim).unwrap();
    // Cut the file in place in the middle of its record 4 (payloads are
    // last in the file): records 0..4 of the shard stay readable.
    let cut = original.len() - 784 * 5 - 392;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    let mut buf = Vec::new();
    for i in 0..30u64 {
        let result = ds.read_record(i, &mut buf).map(|r| r.bytes.len());
        let (shard, index) = (i / 10, i % 10);
        if shard == 2 && index >= 4 {
            match result.unwrap_err() {
                Error::Record { path, record, what } => {
                    assert_eq!((path.as_path(), record), (victim.as_path(), index));
                    assert!(what.contains("short read"), "{what}");
                    assert!(what.contains(&format!("now {cut} bytes")), "{what}");
                }
                e => panic!("expected a record error, got {e}"),
            }
        } else {
            assert_eq!(result.unwrap(), 784, "record {i} is intact");
        }
    }
    // The same bytes written back in place: the open dataset reads again.
    std::fs::write(&victim, &original).unwrap();
    for i in 0..30u64 {
        ds.read_record(i, &mut buf).unwrap();
    }
}

#[test]
fn a_shard_replaced_by_rename_keeps_reading_the_file_that_was_opened() {
    let dir = shard_util::memory_tempdir();
    shard_util::small_fashion(dir.path(), 20, Encoding::Raw, u64::MAX);
    let other = shard_util::memory_tempdir();
    shard_util::small_fashion(other.path(), 3, Encoding::Raw, u64::MAX);
    let name = "shard-00000.safetensors";
    for mode in [ReadMode::Mmap, ReadMode::Pread] {
        let ds = open(dir.path(), mode);
        let mut buf = Vec::new();
        let before: Vec<Vec<u8>> = (0..20)
            .map(|i| ds.read_record(i, &mut buf).unwrap().bytes.to_vec())
            .collect();
        let tmp = dir.path().join("replacement.tmp");
        std::fs::copy(other.path().join(name), &tmp).unwrap();
        let saved = std::fs::read(dir.path().join(name)).unwrap();
        std::fs::rename(&tmp, dir.path().join(name)).unwrap();
        for (i, bytes) in before.iter().enumerate() {
            assert_eq!(ds.read_record(i as u64, &mut buf).unwrap().bytes, bytes);
        }
        std::fs::write(dir.path().join(name), saved).unwrap();
    }
}

/// The mode travels with the dataset: the loader, precompute and preview
/// give the same bytes whichever mode the dataset was opened in.
#[test]
fn loader_precompute_and_preview_agree_in_both_modes() {
    use metaug::loader::Loader;
    use metaug::ops::{DType, Layout, OutputSpec, Size};
    use metaug::policy::Policy;
    use metaug::precompute::{precompute, Part, PrecomputeConfig};
    use metaug::preview::{preview_grid, PreviewConfig};
    use std::sync::atomic::AtomicBool;

    let dir = shard_util::memory_tempdir();
    shard_util::small_fashion(dir.path(), 300, Encoding::Png, 16 << 10);
    let mut outputs = Vec::new();
    for mode in [ReadMode::Mmap, ReadMode::Pread] {
        let ds = std::sync::Arc::new(open(dir.path(), mode));
        let batches: Vec<(Vec<u8>, Vec<i64>)> = Loader::builder(ds.clone())
            .batch_size(64)
            .policy(Policy::default_policy())
            .threads(2)
            .seed(3)
            .epochs(2)
            .build()
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                (b.image_bytes().to_vec(), b.labels().to_vec())
            })
            .collect();
        let out = tempfile::tempdir().unwrap();
        let cfg = PrecomputeConfig {
            policy: Policy::default_policy(),
            copies: 2,
            spec: OutputSpec {
                size: Size::new(24, 24),
                channels: 1,
                dtype: DType::U8,
                layout: Layout::Nchw,
                mean: vec![0.0],
                std: vec![1.0],
            },
            seed: 9,
            shard_items: 256,
            part: Part::WHOLE,
            threads: 2,
        };
        precompute(&ds, out.path(), &cfg, &AtomicBool::new(false), &|_| {}).unwrap();
        let shards: Vec<Vec<u8>> = (0..3)
            .map(|s| std::fs::read(out.path().join(metaug::precompute::shard_name(s))).unwrap())
            .collect();
        let grid = preview_grid(&ds, &Policy::default_policy(), &PreviewConfig::default())
            .unwrap()
            .into_raw();
        outputs.push((batches, shards, grid));
    }
    assert_eq!(outputs[0].0.len(), 10);
    assert!(
        outputs[0].0 == outputs[1].0,
        "loader batches differ between modes"
    );
    assert!(
        outputs[0].1 == outputs[1].1,
        "precompute shards differ between modes"
    );
    assert!(
        outputs[0].2 == outputs[1].2,
        "preview grids differ between modes"
    );
}

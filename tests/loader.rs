//! The loader's contract: determinism, ranks, resume, shutdown, faults.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use metaug::loader::{BadRecords, Loader, Position};
use metaug::ops::DType;
use metaug::policy::Policy;
use metaug::shard::Dataset;
use metaug::Error;

/// One digest per batch: images, labels and indices.
fn digests(loader: Loader) -> Vec<[u8; 32]> {
    loader
        .map(|b| common::batch_digest(&b.expect("batch")))
        .collect()
}

fn fmnist() -> (tempfile::TempDir, Arc<Dataset>) {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(common::fmnist_small(dir.path()));
    (dir, ds)
}

#[test]
fn digest_is_independent_of_threads_and_prefetch_and_stable_across_runs() {
    let (_d, ds) = fmnist();
    let run = |threads: usize, prefetch: usize| {
        digests(
            Loader::builder(ds.clone())
                .batch_size(100)
                .policy(Policy::default_policy())
                .threads(threads)
                .prefetch(prefetch)
                .seed(11)
                .epochs(2)
                .build()
                .unwrap(),
        )
    };
    let reference = run(1, 1);
    assert_eq!(reference.len(), 40);
    for (t, p) in [(2, 1), (4, 8), (1, 8), (2, 2)] {
        assert_eq!(run(t, p), reference, "threads {t} prefetch {p}");
    }
    assert_eq!(run(2, 2), reference, "run to run");
}

#[test]
fn digest_changes_with_seed_and_epoch() {
    let (_d, ds) = fmnist();
    let run = |seed: u64, epoch: u64| {
        digests(
            Loader::builder(ds.clone())
                .batch_size(250)
                .policy(Policy::default_policy())
                .seed(seed)
                .epoch(epoch)
                .threads(2)
                .build()
                .unwrap(),
        )
    };
    let a = run(1, 0);
    let b = run(2, 0);
    let c = run(1, 1);
    for k in 0..a.len() {
        assert_ne!(a[k], b[k], "seed must change batch {k}");
        assert_ne!(a[k], c[k], "epoch must change batch {k}");
    }
}

#[test]
fn ranks_cover_each_epoch_exactly_once_with_equal_batch_counts() {
    let (_d, ds) = fmnist();
    for world in 1..=4usize {
        for batch in [64usize, 333] {
            let mut seen = vec![0u32; ds.len() as usize];
            let mut counts = Vec::new();
            for rank in 0..world {
                let loader = Loader::builder(ds.clone())
                    .batch_size(batch)
                    .rank(rank, world)
                    .seed(3)
                    .epoch(5)
                    .threads(2)
                    .dtype(DType::U8)
                    .build()
                    .unwrap();
                let mut n = 0;
                for b in loader {
                    let b = b.unwrap();
                    assert!(b.len() <= batch);
                    for &i in b.indices() {
                        seen[i as usize] += 1;
                    }
                    n += 1;
                }
                counts.push(n);
            }
            assert!(seen.iter().all(|&c| c == 1), "world {world} batch {batch}");
            assert!(
                counts.iter().all(|&c| c == counts[0]),
                "world {world} batch {batch}: {counts:?}"
            );
        }
    }
}

#[test]
fn resume_yields_exactly_the_remaining_batches() {
    let (_d, ds) = fmnist();
    let build = |resume: Option<Position>| {
        let mut b = Loader::builder(ds.clone())
            .batch_size(128)
            .policy(Policy::default_policy())
            .seed(9)
            .epochs(3)
            .threads(2);
        if let Some(p) = resume {
            b = b.resume(p);
        }
        b.build().unwrap()
    };
    let all = digests(build(None));
    for stop_after in [1usize, 15, 16, 17, 40] {
        let mut loader = build(None);
        for _ in 0..stop_after {
            loader.next().unwrap().unwrap();
        }
        let saved = loader.position();
        drop(loader);
        let rest = digests(build(Some(saved)));
        assert_eq!(rest, all[stop_after..], "stopped after {stop_after}");
    }
}

#[test]
fn dropping_mid_epoch_stops_every_thread_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let ds = common::photos_png(dir.path());
    let loader = Loader::builder(ds)
        .batch_size(4)
        .size(512, 512)
        .channels(3)
        .policy(Policy::default_policy())
        .threads(2)
        .prefetch(2)
        .epochs(1000)
        .build()
        .unwrap();
    let mut loader = loader;
    loader.next().unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    drop(loader);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        t.elapsed()
    );
}

#[test]
fn prefetch_one_thread_one_does_not_deadlock() {
    let (_d, ds) = fmnist();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let loader = Loader::builder(ds)
            .batch_size(7)
            .threads(1)
            .prefetch(1)
            .epochs(2)
            .build()
            .unwrap();
        let n = loader.map(|b| b.unwrap().len()).sum::<usize>();
        tx.send(n).unwrap();
    });
    let n = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("no deadlock");
    assert_eq!(n, 4000);
}

/// Copies a packed dataset and flips one payload byte of global record `victim`.
fn corrupt_copy(src: &Dataset, victim: u64) -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(src.dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let rec = src.record(victim).unwrap();
    let shard_path = dir
        .path()
        .join(src.shard_path(rec.shard).file_name().unwrap());
    let file = std::fs::read(src.shard_path(rec.shard)).unwrap();
    // Find the record's payload inside the shard file and flip its middle byte.
    let start = file
        .windows(rec.bytes.len())
        .position(|w| w == rec.bytes)
        .expect("payload in file");
    let mut bytes = file.clone();
    bytes[start + rec.bytes.len() / 2] ^= 0x5a;
    std::fs::write(&shard_path, bytes).unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    (dir, ds)
}

#[test]
fn a_corrupt_record_fails_naming_it_or_is_skipped_and_counted() {
    let (_d, ds) = fmnist();
    let victim = 1234;
    let (_c, bad) = corrupt_copy(&ds, victim);
    let bad = Arc::new(bad);
    let rec_shard = bad.locate(victim).unwrap();

    let mut loader = Loader::builder(bad.clone())
        .batch_size(100)
        .shuffle(false)
        .threads(2)
        .build()
        .unwrap();
    let mut ok = 0;
    let err = loop {
        match loader.next().expect("an error before the end") {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(ok, 12, "the batches before the bad record arrive intact");
    assert!(loader.next().is_none(), "nothing after the error");
    match &err {
        Error::Record { path, record, .. } => {
            assert_eq!(path, bad.shard_path(rec_shard.0));
            assert_eq!(*record, rec_shard.1);
        }
        other => panic!("expected a record error, got {other}"),
    }
    assert!(err.to_string().contains("crc"), "{err}");

    let loader = Loader::builder(bad.clone())
        .batch_size(100)
        .shuffle(false)
        .threads(2)
        .bad_records(BadRecords::Skip)
        .build()
        .unwrap();
    let good = Loader::builder(ds.clone())
        .batch_size(100)
        .shuffle(false)
        .threads(2)
        .build()
        .unwrap();
    let mut skipped = Vec::new();
    for (b, g) in loader.zip(good) {
        let (b, g) = (b.unwrap(), g.unwrap());
        skipped.extend_from_slice(b.skipped());
        // Every other sample is intact and in place.
        let keep: Vec<usize> = (0..g.len()).filter(|&k| g.indices()[k] != victim).collect();
        assert_eq!(b.len(), keep.len());
        let sb = g.image_bytes().len() / g.len();
        for (slot, &k) in keep.iter().enumerate() {
            assert_eq!(b.indices()[slot], g.indices()[k]);
            assert_eq!(b.labels()[slot], g.labels()[k]);
            assert_eq!(
                b.image_bytes()[slot * sb..(slot + 1) * sb],
                g.image_bytes()[k * sb..(k + 1) * sb]
            );
        }
    }
    assert_eq!(skipped, vec![victim]);
}

#[test]
fn invalid_options_are_clear_errors() {
    let (_d, ds) = fmnist();
    let err = |b: metaug::loader::LoaderBuilder| b.build().err().expect("error").to_string();
    assert!(err(Loader::builder(ds.clone()).batch_size(0)).contains("batch size"));
    assert!(err(Loader::builder(ds.clone()).rank(4, 4)).contains("rank"));
    assert!(err(Loader::builder(ds.clone()).size(0, 5)).contains("size"));
    assert!(err(Loader::builder(ds.clone()).prefetch(0)).contains("prefetch"));
    assert!(
        err(Loader::builder(ds.clone()).resume(Position { epoch: 3, batch: 0 })).contains("resume")
    );
}

#[test]
fn a_worker_that_panics_is_an_error_not_a_hang() {
    let (_d, ds) = fmnist();
    for threads in [1usize, 2] {
        let (tx, rx) = std::sync::mpsc::channel();
        let ds = ds.clone();
        std::thread::spawn(move || {
            let mut loader = Loader::builder(ds)
                .batch_size(100)
                .shuffle(false)
                .threads(threads)
                .prefetch(2)
                .panic_on_sample(1234)
                .build()
                .unwrap();
            let mut ok = 0;
            let err = loop {
                match loader.next() {
                    Some(Ok(b)) => {
                        assert_eq!(b.len(), 100);
                        ok += 1;
                    }
                    Some(Err(e)) => break e,
                    None => panic!("the epoch ended without reporting the panic"),
                }
            };
            let after = loader.next().is_none();
            tx.send((ok, err.to_string(), after)).unwrap();
        });
        let (ok, err, after) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no hang after a worker panic");
        assert_eq!(ok, 12, "the batches before the panic arrive intact");
        assert!(
            err.contains("panicked") && err.contains("sample 1234"),
            "{err}"
        );
        assert!(after, "nothing after the error");
    }
}

#[test]
fn a_shard_claiming_billions_of_channels_is_an_error_not_an_allocation() {
    use metaug::shard::{DatasetWriter, Encoding, WriterOptions};
    // A PNG record whose shape table lies about its channels: the loader's
    // default output takes its channels from the first record, and must
    // refuse it (channels are 1 or 3) before sizing anything by it.
    let png = std::fs::read(common::repo().join("data/photos-png/microaneurysms.png")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut w = DatasetWriter::create(
        dir.path(),
        WriterOptions::new(Encoding::Png, vec!["a".into()]),
    )
    .unwrap();
    w.push(&png, 0, [102, 102, u32::MAX]).unwrap();
    w.finish().unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    let err = Loader::builder(ds).build().err().expect("refused");
    assert!(err.to_string().contains("channels"), "{err}");
}

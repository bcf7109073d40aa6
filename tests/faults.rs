//! Faults of the filesystem under a running loader, one test each: an
//! unreadable shard, a shard deleted between epochs, a shard truncated
//! between epochs (pread: an error; mmap: caught at open, SIGBUS if it
//! happens underneath), a corrupt record read in pread mode. Each checks the
//! error (naming the shard), that nothing hangs (every run is under a
//! timeout), and that nothing else was lost: the batches before the fault,
//! and every good sample after it, equal a fault-free reference run.
//!
//! The bad-record error policy itself (fail or skip) on a corrupt record in
//! mmap mode is tested in `tests/loader.rs`.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use metaug::loader::{BadRecords, Loader, LoaderBuilder};
use metaug::policy::Policy;
use metaug::shard::{Dataset, OpenOptions, ReadMode, Shard};
use metaug::Error;

const BATCH: usize = 100;
const SEED: u64 = 5;

/// Runs `f` on another thread; fails the test if it takes over `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("hang: over {secs} s"),
        Err(e) => panic!("the test thread died: {e}"),
    }
}

use common::batch_digest as digest;

fn builder(ds: &Arc<Dataset>) -> LoaderBuilder {
    Loader::builder(ds.clone())
        .batch_size(BATCH)
        .policy(Policy::default_policy())
        .threads(2)
        .seed(SEED)
}

fn open(dir: &Path, read_mode: ReadMode) -> Arc<Dataset> {
    Arc::new(
        Dataset::open_with(
            dir,
            OpenOptions {
                read_mode,
                ..Default::default()
            },
        )
        .unwrap(),
    )
}

/// The bundled Fashion-MNIST subset (2000 records, 6 shards), packed.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::fmnist_small(dir.path());
    dir
}

/// Batch digests of `epochs` epochs from a fault-free copy of the data.
fn reference(dir: &Path, epochs: u64) -> Vec<[u8; 32]> {
    let ds = open(dir, ReadMode::Mmap);
    within(60, move || {
        builder(&ds)
            .epochs(epochs)
            .build()
            .unwrap()
            .map(|b| digest(&b.unwrap()))
            .collect()
    })
}

/// Per sample of one epoch: index -> (label, image bytes).
/// A 3-epoch loader of `ds` after its first epoch, and that epoch's batch
/// digests.
fn first_of_three_epochs(ds: &Arc<Dataset>) -> (Vec<[u8; 32]>, Loader) {
    let mut loader = builder(ds).epochs(3).build().unwrap();
    let per_epoch = loader.batches_per_epoch() as usize;
    let got = loader
        .by_ref()
        .take(per_epoch)
        .map(|b| digest(&b.unwrap()))
        .collect();
    (got, loader)
}

fn samples(ds: &Arc<Dataset>, epoch: u64, bad: BadRecords) -> (HashMap<u64, (i64, Vec<u8>)>, u64) {
    let ds = ds.clone();
    within(60, move || {
        let mut out = HashMap::new();
        let mut loader = builder(&ds).epoch(epoch).bad_records(bad).build().unwrap();
        for b in loader.by_ref() {
            let b = b.unwrap();
            let sb = b.image_bytes().len() / b.len().max(1);
            for (k, (&i, &l)) in b.indices().iter().zip(b.labels()).enumerate() {
                out.insert(i, (l, b.image_bytes()[k * sb..(k + 1) * sb].to_vec()));
            }
        }
        (out, loader.skipped())
    })
}

#[track_caller]
fn assert_names(err: &Error, path: &Path) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "the error must name {}: {text}",
        path.display()
    );
}

/// Root reads a file whatever its mode bits (CI runs as root), so the
/// shard is made unreadable for everyone by putting a directory in its
/// place: opening succeeds, reading gives EISDIR. The dataset must refuse
/// to open, naming the shard, in both modes; every other shard is intact,
/// and once the file is back the dataset streams exactly as before.
#[test]
fn an_unreadable_shard_is_an_error_naming_it() {
    let dir = fixture();
    let before = reference(dir.path(), 1);
    let victim = dir.path().join("shard-00003.safetensors");
    let saved = victim.with_extension("saved");
    std::fs::rename(&victim, &saved).unwrap();
    std::fs::create_dir(&victim).unwrap();
    for mode in [ReadMode::Mmap, ReadMode::Pread] {
        let err = Dataset::open_with(
            dir.path(),
            OpenOptions {
                read_mode: mode,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{mode}: {err}");
        assert!(
            err.to_string().contains("not a regular file"),
            "{mode}: {err}"
        );
        assert_names(&err, &victim);
        // Nothing else lost: every other shard opens and reads alone.
        for s in [0, 1, 2, 4, 5] {
            let path = dir.path().join(format!("shard-{s:05}.safetensors"));
            let shard = Shard::open_with(&path, s, mode).unwrap();
            let mut buf = Vec::new();
            for i in 0..shard.len() {
                shard.read_record(i, &mut buf).unwrap();
            }
        }
    }
    std::fs::remove_dir(&victim).unwrap();

    // Where mode bits do stop reads (not root), chmod 000 is an I/O error
    // naming the shard too.
    std::fs::rename(&saved, &victim).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&victim).is_err() {
        let err = Dataset::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert_names(&err, &victim);
    }
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        reference(dir.path(), 1),
        before,
        "restored, it streams as before"
    );
}

/// Unlinking a shard under an open dataset loses nothing: both modes hold
/// the file (a map, or an open descriptor) and the run finishes with every
/// batch intact. The next open names the missing shard.
#[test]
fn a_shard_deleted_between_epochs_loses_nothing_and_the_next_open_names_it() {
    let fixture = fixture();
    let reference = reference(fixture.path(), 3);
    for mode in [ReadMode::Mmap, ReadMode::Pread] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(fixture.path(), dir.path());
        let ds = open(dir.path(), mode);
        let victim = dir.path().join("shard-00002.safetensors");
        let (got, victim) = within(60, move || {
            let (mut got, loader) = first_of_three_epochs(&ds);
            std::fs::remove_file(&victim).unwrap();
            got.extend(loader.map(|b| digest(&b.unwrap())));
            (got, victim)
        });
        assert_eq!(
            got, reference,
            "{mode}: every batch of the 3 epochs is intact"
        );
        let err = Dataset::open_with(
            dir.path(),
            OpenOptions {
                read_mode: mode,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing shard file"), "{err}");
        assert_names(&err, &victim);
    }
}

/// pread mode: a shard truncated in place after epoch 0 gives a record
/// error naming it ("short read") in epoch 1; every batch before the error
/// equals the reference, and nothing comes after it. With
/// `BadRecords::Skip`, the lost records are skipped and counted and every
/// other sample of the epoch is intact.
#[test]
fn a_shard_truncated_between_epochs_is_an_error_in_pread_mode() {
    let dir = fixture();
    let reference = reference(dir.path(), 3);
    let ds = open(dir.path(), ReadMode::Pread);
    let (before, _) = samples(&ds, 1, BadRecords::Fail);
    let victim = ds.shard_path(4).to_path_buf();
    let shard_len = ds.shards()[4].len();
    let file_len = std::fs::metadata(&victim).unwrap().len();
    // Payloads are last in the file: cut the last 100 records and a half.
    let cut = file_len - 784 * 100 - 392;
    let lost = 101;

    let d = ds.clone();
    let v = victim.clone();
    let (got, err, after) = within(60, move || {
        let (mut got, mut loader) = first_of_three_epochs(&d);
        truncate(&v, cut);
        let err = loop {
            match loader.next().expect("an error before the end") {
                Ok(b) => got.push(digest(&b)),
                Err(e) => break e,
            }
        };
        (got, err, loader.next().is_none())
    });
    eprintln!("{} good batches, then: {err}", got.len());
    assert!(got.len() >= 20, "epoch 0 was whole: {} batches", got.len());
    assert!(got.len() < 40, "the error comes in epoch 1");
    assert_eq!(
        got[..],
        reference[..got.len()],
        "the batches before the error are intact"
    );
    assert!(after, "nothing after the error");
    match &err {
        Error::Record { path, record, what } => {
            assert_eq!(path, &victim);
            assert!(
                *record >= shard_len - lost,
                "record {record} lies past the cut"
            );
            assert!(what.contains("short read"), "{what}");
        }
        e => panic!("expected a record error naming the shard, got {e}"),
    }

    let (skipping, skipped) = samples(&ds, 1, BadRecords::Skip);
    assert_eq!(skipped, lost);
    assert_eq!(skipping.len() as u64, ds.len() - lost);
    for (i, sample) in &skipping {
        assert_eq!(sample, &before[i], "sample {i} is intact");
    }
}

/// mmap mode cannot survive a shard truncated underneath (SIGBUS, see the
/// next test), but a truncated shard is refused at open: the size is
/// checked against the header and `index.json`.
#[test]
fn a_truncated_shard_is_refused_at_open_in_mmap_mode() {
    let dir = fixture();
    let victim = dir.path().join("shard-00001.safetensors");
    let len = std::fs::metadata(&victim).unwrap().len();
    truncate(&victim, len - 1000);
    for mode in [ReadMode::Mmap, ReadMode::Pread] {
        let err = Dataset::open_with(
            dir.path(),
            OpenOptions {
                read_mode: mode,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert_names(&err, &victim);
    }
}

/// What the read-mode docs say of mmap mode, checked: a shard truncated
/// under an open mmap dataset kills the reading process with SIGBUS. The
/// child is this test binary running `child_reads_a_truncated_mapped_shard`.
#[test]
fn mmap_mode_dies_of_sigbus_when_a_shard_is_truncated_underneath() {
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let child_dir = dir.path().to_path_buf();
    // No core file: `ulimit -c 0` in a shell that then becomes the child.
    let status = within(60, move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -c 0; exec \"$0\" \"$@\"")
            .arg(exe)
            .args([
                "--exact",
                "child_reads_a_truncated_mapped_shard",
                "--ignored",
            ])
            .args(["--test-threads", "1", "--nocapture"])
            .env("METAUG_FAULTS_CHILD", child_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
    });
    assert_eq!(status.signal(), Some(7), "expected SIGBUS, got {status}");
}

/// Run by the test above in a child process (does nothing otherwise).
#[test]
#[ignore = "run as a child process by mmap_mode_dies_of_sigbus_when_a_shard_is_truncated_underneath"]
fn child_reads_a_truncated_mapped_shard() {
    // The directory is the parent's, which removes it.
    let Some(dir) = std::env::var_os("METAUG_FAULTS_CHILD") else {
        return;
    };
    let dir = Path::new(&dir);
    common::fmnist_small(dir);
    let ds = open(dir, ReadMode::Mmap);
    let victim = ds.shard_path(0).to_path_buf();
    truncate(&victim, 4096);
    let last = ds.shards()[0].len() - 1;
    // Touches a page past the new end of the file: SIGBUS.
    let _ = std::hint::black_box(ds.record(last).map(|r| r.bytes[0]));
    // Not reached when the kernel raises SIGBUS; exit 0 fails the parent.
}

/// A corrupt record read in pread mode: the same record error as in mmap
/// mode (naming shard, record and the checksum), the batches before it
/// intact.
#[test]
fn a_corrupt_record_in_pread_mode_fails_naming_it() {
    let dir = fixture();
    let unshuffled = {
        let ds = open(dir.path(), ReadMode::Mmap);
        within(60, move || {
            builder(&ds)
                .shuffle(false)
                .build()
                .unwrap()
                .map(|b| digest(&b.unwrap()))
                .collect::<Vec<_>>()
        })
    };
    let ds = open(dir.path(), ReadMode::Pread);
    let (shard, index) = ds.locate(1234).unwrap();
    let path = ds.shard_path(shard).to_path_buf();
    let len = std::fs::metadata(&path).unwrap().len();
    // Payloads are last in the file, 784 bytes each.
    let at = len - 784 * (ds.shards()[shard].len() - index) + 100;
    // Flipped in place, as a bad disk block would be: the open file sees it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x5a], at).unwrap();
    let (got, err, after) = within(60, move || {
        let mut loader = builder(&ds).shuffle(false).build().unwrap();
        let mut got = Vec::new();
        let err = loop {
            match loader.next().expect("an error before the end") {
                Ok(b) => got.push(digest(&b)),
                Err(e) => break e,
            }
        };
        (got, err, loader.next().is_none())
    });
    assert_eq!(
        got[..],
        unshuffled[..12],
        "the 12 batches before record 1234 are intact"
    );
    assert!(after, "nothing after the error");
    match &err {
        Error::Record {
            path: p,
            record,
            what,
        } => {
            assert_eq!((p, *record), (&path, index));
            assert!(what.contains("checksum mismatch"), "{what}");
        }
        e => panic!("expected a record error, got {e}"),
    }
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

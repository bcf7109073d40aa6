//! Soak: one loader streams the bundled dataset for many epochs. Anonymous
//! resident memory (`RssAnon`, /proc/self/status) must stay flat once warm,
//! and every epoch must equal a fresh loader's run of that epoch alone
//! (`.epoch(e)`), so nothing drifts with the number of epochs streamed.
//!
//! Its own test binary: resident memory is per process, and the tests here
//! take a lock so that they never run beside each other.
//!
//! `soak_200_epochs` is ignored by default (about 20 s in release):
//! `cargo test --release --test soak -- --ignored --nocapture`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use metaug::loader::Loader;
use metaug::policy::Policy;
use metaug::shard::{Dataset, OpenOptions, ReadMode};
use sha2::{Digest, Sha256};

/// One soak at a time in this process.
static ALONE: Mutex<()> = Mutex::new(());

const SEED: u64 = 21;
const BATCH: usize = 128;

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn loader(ds: &Arc<Dataset>, epoch: u64, epochs: u64) -> Loader {
    Loader::builder(ds.clone())
        .batch_size(BATCH)
        .policy(Policy::default_policy())
        .threads(2)
        .prefetch(2)
        .seed(SEED)
        .epoch(epoch)
        .epochs(epochs)
        .build()
        .unwrap()
}

/// What one soak saw.
struct Soak {
    /// Digest of each epoch (every batch's images, labels and indices).
    digests: Vec<[u8; 32]>,
    /// RssAnon in KiB at the end of each epoch.
    rss_kib: Vec<u64>,
    secs: f64,
}

/// Streams `epochs` epochs from one loader.
fn soak(ds: &Arc<Dataset>, epochs: u64) -> Soak {
    let start = Instant::now();
    let mut digests = Vec::new();
    let mut rss_kib = Vec::new();
    let mut hasher = Sha256::new();
    let mut loader = loader(ds, 0, epochs);
    let per_epoch = loader.batches_per_epoch();
    let mut images = 0u64;
    for batch in loader.by_ref() {
        let b = batch.unwrap();
        images += b.len() as u64;
        hasher.update(b.image_bytes());
        for l in b.labels() {
            hasher.update(l.to_le_bytes());
        }
        for i in b.indices() {
            hasher.update(i.to_le_bytes());
        }
        let pos = b.position();
        drop(b);
        if pos.batch + 1 == per_epoch {
            digests.push(std::mem::take(&mut hasher).finalize().into());
            rss_kib.push(rss_anon_kib());
        }
    }
    assert_eq!(loader.skipped(), 0);
    assert_eq!(images, epochs * ds.len());
    Soak {
        digests,
        rss_kib,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// The digest of epoch `epoch` from a fresh loader that streams it alone.
fn fresh_digest(ds: &Arc<Dataset>, epoch: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for b in loader(ds, epoch, 1) {
        let b = b.unwrap();
        hasher.update(b.image_bytes());
        for l in b.labels() {
            hasher.update(l.to_le_bytes());
        }
        for i in b.indices() {
            hasher.update(i.to_le_bytes());
        }
    }
    hasher.finalize().into()
}

/// Soaks `epochs` epochs in `mode`; checks memory from the end of epoch
/// `warm` (1-based) on and the digests of epochs `check` against fresh
/// runs. Returns (RssAnon at warm, at the end, peak) in KiB.
fn run(mode: ReadMode, epochs: u64, warm: usize, check: std::ops::Range<u64>) -> (u64, u64, u64) {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    common::fmnist_small(dir.path());
    let ds = Arc::new(
        Dataset::open_with(
            dir.path(),
            OpenOptions {
                read_mode: mode,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let s = soak(&ds, epochs);
    assert_eq!(s.digests.len() as u64, epochs);
    let at_warm = s.rss_kib[warm - 1];
    let end = *s.rss_kib.last().unwrap();
    let peak = *s.rss_kib[warm - 1..].iter().max().unwrap();
    eprintln!(
        "{mode}: {epochs} epochs of {} images in {:.1} s ({:.0} images/s); RssAnon after epoch \
         {warm}: {at_warm} KiB, after epoch {epochs}: {end} KiB, peak since: {peak} KiB",
        ds.len(),
        s.secs,
        (epochs * ds.len()) as f64 / s.secs
    );
    let quarters: Vec<String> = (1..=4)
        .map(|q| {
            let e = warm + (epochs as usize - warm) * q / 4;
            format!("{e}: {}", s.rss_kib[e - 1])
        })
        .collect();
    eprintln!("{mode}: RssAnon KiB by epoch: {}", quarters.join(", "));
    // Flat: no growth past warm-up beyond a few MiB (allocator noise).
    assert!(
        peak <= at_warm + 4 * 1024,
        "{mode}: RssAnon grew from {at_warm} KiB to {peak} KiB"
    );
    let start = Instant::now();
    for e in check.clone() {
        assert_eq!(
            s.digests[e as usize],
            fresh_digest(&ds, e),
            "{mode}: epoch {e} differs from a fresh run of it"
        );
    }
    eprintln!(
        "{mode}: epochs {check:?} equal fresh runs ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
    // Distinct epochs: the epoch keys the order and augmentation.
    assert_ne!(s.digests[0], s.digests[1]);
    (at_warm, end, peak)
}

/// The short soak, in CI's default pass: 12 epochs in each read mode,
/// memory flat from epoch 2 on, epochs 2..12 equal fresh runs.
#[test]
fn soak_12_epochs_both_read_modes() {
    for mode in [ReadMode::Mmap, ReadMode::Pread] {
        run(mode, 12, 2, 2..12);
    }
}

/// The full soak: 200 epochs in each read mode, memory flat from epoch 10
/// to 200, every epoch equal to a fresh run of it.
#[test]
#[ignore = "about 20 s: cargo test --release --test soak -- --ignored --nocapture"]
fn soak_200_epochs() {
    for mode in [ReadMode::Mmap, ReadMode::Pread] {
        run(mode, 200, 10, 0..200);
    }
}

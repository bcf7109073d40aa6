//! Bounded memory: streaming a dataset many times larger than
//! `prefetch × batch bytes` keeps the process's anonymous resident memory
//! under `2 × prefetch × batch bytes + 64 MiB`. (File-backed pages of the
//! memory-mapped shards are page cache, shared and reclaimable, so they are
//! not counted; see `RssAnon` in proc(5).) This file holds one test so that
//! no other test shares the process.

mod common;

use metaug::loader::Loader;
use metaug::policy::Policy;

fn rss_anon_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon line");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn resident_memory_stays_bounded_while_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let ds = common::fmnist_small(dir.path());
    let (batch, prefetch) = (32usize, 2usize);
    let batch_bytes = (batch * 3 * 64 * 64 * 4) as u64; // f32, 3 channels, 64x64
    let dataset_bytes = ds.len() * batch_bytes / batch as u64;
    assert!(
        dataset_bytes >= 10 * prefetch as u64 * batch_bytes,
        "the test needs a dataset 10x the prefetch volume"
    );
    let baseline = rss_anon_bytes();
    let loader = Loader::builder(ds)
        .batch_size(batch)
        .size(64, 64)
        .channels(3)
        .policy(Policy::default_policy())
        .threads(2)
        .prefetch(prefetch)
        .epochs(2)
        .build()
        .unwrap();
    let mut peak = 0;
    let mut seen = 0usize;
    for b in loader {
        let b = b.unwrap();
        seen += b.len();
        peak = peak.max(rss_anon_bytes());
    }
    assert_eq!(seen, 4000);
    let bound = 2 * prefetch as u64 * batch_bytes + (64 << 20);
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "baseline {} MiB, peak {} MiB, growth {} MiB, bound {} MiB",
        baseline >> 20,
        peak >> 20,
        grown >> 20,
        bound >> 20
    );
    assert!(peak < bound, "peak RssAnon {peak} over the bound {bound}");
}

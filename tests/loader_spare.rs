//! A finished loader's batch buffers go to the next loader of the process,
//! which then writes to memory already mapped instead of faulting in fresh
//! pages, and `release_spare_buffers` frees them. This file holds one test,
//! so that no other test's loader shares the process-wide pool or its page
//! faults.

mod common;

use std::sync::Arc;

use metaug::loader::{release_spare_buffers, Loader};
use metaug::policy::Policy;
use metaug::shard::Dataset;

/// Minor page faults of this process so far (`minflt`, proc(5)).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // fields after the parenthesised command name; minflt is field 10
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    rest.split_whitespace().nth(7).unwrap().parse().unwrap()
}

/// Batches of 56 samples of 224×224×3 f32: 33.7 MB, above glibc's largest
/// mmap threshold (32 MiB), so without the pool every buffer is a fresh
/// map, faulted in page by page.
const BATCH: usize = 56;
const BATCH_BYTES: u64 = (BATCH * 3 * 224 * 224 * 4) as u64;

/// Page faults while a loader runs 3 batches and is dropped mid-epoch.
fn faults_of_a_loader(ds: &Arc<Dataset>) -> u64 {
    let before = minor_faults();
    let loader = Loader::builder(ds.clone())
        .batch_size(BATCH)
        .size(224, 224)
        .channels(3)
        .policy(Policy::none())
        .threads(2)
        .prefetch(1)
        .build()
        .unwrap();
    for b in loader.take(3) {
        assert_eq!(b.unwrap().len(), BATCH);
    }
    minor_faults() - before
}

#[test]
fn a_new_loader_writes_to_the_last_loaders_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(common::fmnist_small(dir.path()));
    release_spare_buffers();
    let pages = BATCH_BYTES / 4096;
    let first = faults_of_a_loader(&ds);
    // How many buffers a loader has in flight at once (2 or 3 here) depends
    // on thread timing: a loader that needs one more than the last one left
    // maps that one afresh. Of two later loaders, at least one needs no
    // more than the pool holds by then (the pool keeps up to 4).
    let second = faults_of_a_loader(&ds);
    let third = faults_of_a_loader(&ds);
    eprintln!(
        "page faults: first loader {first}, second {second}, third {third}; one buffer is {pages} pages"
    );
    assert!(first >= pages, "the first loader maps fresh buffers");
    assert!(
        second.min(third) < pages / 4,
        "the later loaders faulted {second} and {third} pages: they did not reuse the buffers left to them"
    );
    let freed = release_spare_buffers() as u64;
    assert!(freed >= BATCH_BYTES, "freed {freed} bytes");
    assert_eq!(release_spare_buffers(), 0);
    // with the pool empty, a loader maps (and faults in) its own again
    let last = faults_of_a_loader(&ds);
    assert!(
        last >= pages,
        "a loader after the release faulted only {last} pages"
    );
}

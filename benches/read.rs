//! Shard read: every record of a dataset fetched from its memory-mapped
//! shards (`Dataset::record`: locate the payload, check its crc32c, which
//! touches every byte), on one thread.
//!
//! - `read_warm/*`: shards already in the page cache (memory speed);
//! - `read_cold/*`: the dataset dropped, its shard files evicted from the page
//!   cache with `posix_fadvise(DONTNEED)` (this file only; the machine's cache
//!   is left alone), then opened and read: what a first epoch from disk sees.
//!   On a VM the "disk" may itself be cached by the host.
//!
//! Each is reported in images/s (`read_*`) and bytes/s (`read_*_bytes`).
//! `cargo bench --bench read` (about 40 s).

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{SamplingMode, Throughput};
use metaug::shard::{Dataset, Encoding};

fn read_all(ds: &Dataset) -> u64 {
    (0..ds.len())
        .map(|i| ds.record(i).expect("record").bytes.len() as u64)
        .sum()
}

fn shard_files(ds: &Dataset) -> Vec<PathBuf> {
    (0..ds.shards().len())
        .map(|s| ds.shard_path(s).to_path_buf())
        .collect()
}

fn cold_pass(dir: &Path, files: &[PathBuf]) -> Duration {
    for f in files {
        common::evict(f).expect("posix_fadvise");
    }
    let t = Instant::now();
    let ds = Dataset::open(dir).expect("open");
    black_box(read_all(&ds));
    let took = t.elapsed();
    drop(ds);
    took
}

fn main() {
    let mut c = common::short(2);
    let sets = [
        ("photos_jpeg", common::photos_jpeg()),
        ("fmnist_raw", common::fashion_mnist(Encoding::Raw)),
    ];
    for (name, dir) in sets {
        let Some(dir) = dir else {
            println!("read/{name}: skipped: data missing");
            continue;
        };
        let ds = Dataset::open(&dir).expect("open");
        let n = ds.len();
        let bytes = read_all(&ds);
        let files = shard_files(&ds);
        let label = format!("{name}_{n}");

        for (group, throughput) in [
            ("read_warm", Throughput::Elements(n)),
            ("read_warm_bytes", Throughput::Bytes(bytes)),
        ] {
            let mut g = c.benchmark_group(group);
            g.throughput(throughput);
            g.bench_function(&label, |b| b.iter(|| black_box(read_all(&ds))));
            g.finish();
        }

        // Check once that eviction works here, and say so if not.
        drop(ds);
        for f in &files {
            common::evict(f).expect("posix_fadvise");
        }
        let resident: f64 = files
            .iter()
            .map(|f| common::resident_fraction(f).unwrap_or(1.0))
            .sum::<f64>()
            / files.len().max(1) as f64;
        println!(
            "read_cold/{label}: {:.0}% of the shard pages resident after eviction",
            resident * 100.0
        );
        for (group, throughput) in [
            ("read_cold", Throughput::Elements(n)),
            ("read_cold_bytes", Throughput::Bytes(bytes)),
        ] {
            let mut g = c.benchmark_group(group);
            g.throughput(throughput);
            g.sampling_mode(SamplingMode::Flat);
            g.bench_function(&label, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| cold_pass(&dir, &files)).sum())
            });
            g.finish();
        }
    }
    c.final_summary();
}

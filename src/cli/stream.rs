//! `metaug stream`: runs a dataset through the loader, reports images/s per
//! epoch and, with `--digest`, a SHA-256 of every batch.

use std::path::PathBuf;
use std::time::Instant;

use metaug::loader::{BadRecords, Device, Loader};
use metaug::ops::{DType, Layout};
use metaug::policy::Policy;
use metaug::shard::{Dataset, OpenOptions, ReadMode};
use metaug::{Error, Result};
use sha2::{Digest, Sha256};

use crate::cli::args::{parse_size, DTypeArg, LayoutArg};

/// Arguments of `metaug stream`.
#[derive(clap::Args)]
pub struct StreamArgs {
    /// Dataset directory (with index.json), or s3://bucket/prefix (feature s3).
    dir: PathBuf,
    /// Samples per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Output size HxW (default: the first record's size).
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    /// Output channels, 1 or 3 (default: the first record's).
    #[arg(long)]
    channels: Option<u32>,
    /// Output element type.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// Output layout.
    #[arg(long, value_enum, default_value_t = LayoutArg::Nchw)]
    layout: LayoutArg,
    /// Augmentation policy: none, default, trivial (TrivialAugment-style, one op per sample), or a policy file.
    #[arg(long, default_value = "default")]
    policy: String,
    /// Seed of the order, augmentation and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of epochs.
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    /// Decode/augment threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Ready batches kept ahead.
    #[arg(long, default_value_t = 2)]
    prefetch: usize,
    /// Keep dataset order instead of shuffling.
    #[arg(long)]
    no_shuffle: bool,
    /// Drop the last short batch of each epoch.
    #[arg(long)]
    drop_last: bool,
    /// This process's rank.
    #[arg(long, default_value_t = 0)]
    rank: usize,
    /// Number of ranks.
    #[arg(long, default_value_t = 1)]
    world_size: usize,
    /// Skip (and count) bad records instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// cpu, or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print a SHA-256 of each batch (images and labels), then of the run.
    #[arg(long)]
    digest: bool,
    /// How to read the shards: `mmap` (zero copy, fastest; a shard truncated
    /// underneath kills the process with SIGBUS) or `pread` (one copy per
    /// record; errors instead; use it on NFS, Lustre, GPFS).
    #[arg(long, default_value = "mmap", value_name = "mmap|pread")]
    read_mode: ReadMode,
    /// JPEG decode scale: full (exact) or auto (DCT-scaled by 1/2, 1/4 or
    /// 1/8 while the crop keeps the output's resolution; not bit-exact).
    #[arg(long, default_value = "full", value_parser = crate::cli::args::parse_decode_scale)]
    decode_scale: metaug::decode::DecodeScale,
    /// Decode whole JPEGs instead of only the region each sample reads
    /// (same batches, bit for bit; slower).
    #[arg(long)]
    no_roi: bool,
}

/// Runs the command.
pub fn run(args: StreamArgs) -> Result<()> {
    let options = OpenOptions {
        read_mode: args.read_mode,
        ..Default::default()
    };
    let dataset = Dataset::open_with(&args.dir, options)?;
    let policy = Policy::from_arg(&args.policy)?;
    let device: Device = args.device.parse()?;
    let mut builder = Loader::builder(dataset)
        .batch_size(args.batch)
        .dtype(DType::from(args.dtype))
        .layout(Layout::from(args.layout))
        .policy(policy)
        .device(device)
        .prefetch(args.prefetch)
        .seed(args.seed)
        .epochs(args.epochs)
        .shuffle(!args.no_shuffle)
        .drop_last(args.drop_last)
        .region_decode(metaug::decode::RegionDecode {
            crop: !args.no_roi,
            scale: args.decode_scale,
        })
        .rank(args.rank, args.world_size)
        .bad_records(if args.skip_bad {
            BadRecords::Skip
        } else {
            BadRecords::Fail
        });
    if let Some((h, w)) = args.size {
        builder = builder.size(h, w);
    }
    if let Some(c) = args.channels {
        builder = builder.channels(c);
    }
    if let Some(t) = args.threads {
        builder = builder.threads(t);
    }
    let loader = builder.build()?;
    let per_epoch = loader.batches_per_epoch();
    let bar = crate::cli::args::progress_bar(per_epoch * args.epochs, "batches");
    let mut run_digest = Sha256::new();
    let mut epoch_start = Instant::now();
    let (mut epoch_images, mut epoch_bytes) = (0u64, 0u64);
    let mut current_epoch = None;
    let mut skipped = 0u64;
    let report = |epoch: u64, images: u64, bytes: u64, secs: f64| {
        bar.suspend(|| {
            println!(
                "epoch {epoch}: {images} images in {secs:.2} s: {:.0} images/s, {:.1} MB/s",
                images as f64 / secs,
                bytes as f64 / secs / 1e6
            )
        });
    };
    for batch in loader {
        let batch = batch?;
        let pos = batch.position();
        if current_epoch != Some(pos.epoch) {
            if let Some(e) = current_epoch {
                report(
                    e,
                    epoch_images,
                    epoch_bytes,
                    epoch_start.elapsed().as_secs_f64(),
                );
            }
            current_epoch = Some(pos.epoch);
            epoch_start = Instant::now();
            epoch_images = 0;
            epoch_bytes = 0;
        }
        epoch_images += batch.len() as u64;
        epoch_bytes += (batch.len() * batch.spec().sample_bytes()) as u64;
        skipped += batch.skipped().len() as u64;
        if args.digest {
            let mut h = Sha256::new();
            // Device batches are copied back for the digest.
            h.update(&*batch.to_host_bytes()?);
            for l in batch.labels() {
                h.update(l.to_le_bytes());
            }
            let d = h.finalize();
            run_digest.update(d);
            bar.suspend(|| println!("{pos}: {} {}", batch.len(), hex::encode(d)));
        }
        bar.inc(1);
    }
    if let Some(e) = current_epoch {
        report(
            e,
            epoch_images,
            epoch_bytes,
            epoch_start.elapsed().as_secs_f64(),
        );
    }
    bar.finish_and_clear();
    if skipped > 0 {
        eprintln!("skipped {skipped} bad records");
    }
    if args.digest {
        println!("digest {}", hex::encode(run_digest.finalize()));
    }
    if current_epoch.is_none() {
        return Err(Error::invalid("dataset", "no batch was produced"));
    }
    Ok(())
}

//! `metaug precompute`: K augmented copies of every image, as shards.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use metaug::ops::{DType, Layout, OutputSpec, Size};
use metaug::policy::Policy;
use metaug::precompute::{precompute, Part, PrecomputeConfig};
use metaug::remote::{is_remote, OutputDir, RemoteOptions};
use metaug::shard::Dataset;
use metaug::Result;

use crate::cli::args::{parse_size, progress_bar, DTypeArg, LayoutArg};

/// Arguments of `metaug precompute`.
#[derive(clap::Args)]
pub struct PrecomputeArgs {
    /// Source dataset directory (with index.json), or s3://bucket/prefix (feature s3).
    dir: PathBuf,
    /// Augmentation policy: none, default, trivial (TrivialAugment-style, one op per sample), or a policy file.
    #[arg(long, default_value = "default")]
    policy: String,
    /// Augmented copies of each image.
    #[arg(long, default_value_t = 1)]
    copies: u64,
    /// Output size HxW.
    #[arg(long, value_parser = parse_size)]
    size: (u32, u32),
    /// Output channels, 1 or 3 (default: the first record's).
    #[arg(long)]
    channels: Option<u32>,
    /// Output element type.
    #[arg(long, value_enum, default_value_t = DTypeArg::U8)]
    dtype: DTypeArg,
    /// Output layout.
    #[arg(long, value_enum, default_value_t = LayoutArg::Nchw)]
    layout: LayoutArg,
    /// Output directory, or s3://bucket/prefix (feature s3: written locally, then uploaded
    /// with index.json last).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per output shard.
    #[arg(long, default_value_t = 4096)]
    shard_images: u64,
    /// Do only part i of n (1-based), e.g. 2/8 for an array job.
    #[arg(long, default_value = "1/1")]
    part: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs the command.
pub fn run(args: PrecomputeArgs) -> Result<()> {
    let part: Part = args.part.parse()?;
    let dataset = Dataset::open(&args.dir)?;
    let policy = Policy::from_arg(&args.policy)?;
    let channels = match args.channels {
        Some(c) => c,
        None if dataset.is_empty() => 3,
        None => dataset.shape(0)?[2],
    };
    let spec = OutputSpec::new(Size::new(args.size.0, args.size.1), channels)
        .with_dtype(DType::from(args.dtype))
        .with_layout(Layout::from(args.layout));
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cfg = PrecomputeConfig {
        policy,
        copies: args.copies,
        spec,
        seed: args.seed,
        shard_items: args.shard_images,
        part,
        threads,
    };
    if is_remote(&args.out) && part.count != 1 {
        return Err(metaug::Error::invalid(
            "--part",
            "an s3:// output is uploaded by the run that writes it whole: run the parts into a \
             shared directory instead",
        ));
    }
    let target = OutputDir::new(&args.out, false, &RemoteOptions::default())?;
    let total_mine = part_images(dataset.len(), &cfg);
    let bar = progress_bar(total_mine, "images");
    let start = Instant::now();
    let summary = precompute(
        &dataset,
        target.local(),
        &cfg,
        &AtomicBool::new(false),
        &|done| bar.set_position(done),
    )?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let out = target.finish(true)?;
    println!(
        "precompute part {}/{}: {} images, {:.1} MB written in {secs:.2} s ({:.0} images/s); \
         {} shards written, {} already complete, {} in the whole job{}",
        part.index,
        part.count,
        summary.images_written,
        summary.bytes_written as f64 / 1e6,
        summary.images_written as f64 / secs.max(1e-9),
        summary.shards_written,
        summary.shards_kept,
        summary.shards_total,
        if summary.complete {
            format!("; complete: {out}/index.json")
        } else {
            "; other parts still to run".into()
        }
    );
    Ok(())
}

fn part_images(n: u64, cfg: &PrecomputeConfig) -> u64 {
    let total = n.saturating_mul(cfg.copies);
    let shards = total.div_ceil(cfg.shard_items.max(1));
    (0..shards)
        .filter(|&s| cfg.part.owns(s))
        .map(|s| cfg.shard_items.min(total - s * cfg.shard_items))
        .sum()
}

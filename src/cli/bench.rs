//! `metaug bench`: each stage's ceiling on the user's dataset beside the
//! end-to-end loader rate, as a table with each stage's share.

use std::path::PathBuf;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use metaug::bench::{self, BenchConfig, Stage};
use metaug::loader::Device;
use metaug::ops::{DType, Layout, Size};
use metaug::policy::Policy;
use metaug::shard::Dataset;
use metaug::Result;

use crate::cli::args::{parse_decode_scale, parse_size, DTypeArg, LayoutArg};
use metaug::decode::{DecodeScale, RegionDecode};

/// Arguments of `metaug bench`.
#[derive(clap::Args)]
#[command(after_help = "\
Each stage runs alone on the worker threads for --seconds (read: locate + crc32c; decode; augment:
policy draws + fused warp into the output format; with --device cuda, upload and the GPU kernel
instead of augment), then the loader runs end to end. A stage's share is its part of the time one
image takes; the largest share is what limits the loader.

Examples:
  metaug bench photos-packed --size 224x224 --batch 64 --threads 2
  metaug bench fmnist-train --threads 2 --batch 256
  metaug bench photos-packed --size 224x224 --device cuda:0
  metaug bench photos-packed --size 224x224 --stages e2e --json")]
pub struct BenchArgs {
    /// Dataset directory (with index.json); memory-mapped (for pread or s3:// datasets, time
    /// the loader with `metaug stream`).
    dir: PathBuf,
    /// cpu, or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Output size HxW (default: the first record's size).
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    /// Samples per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
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
    /// Normalise with the ImageNet mean and std (3 channels) instead of none.
    #[arg(long)]
    imagenet_norm: bool,
    /// Seed of the draws and of the loader's order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seconds of measurement per stage.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Comma-separated stages to run: read, decode, augment, upload, gpu_augment, e2e.
    #[arg(long, default_value = "read,decode,augment,upload,gpu_augment,e2e")]
    stages: String,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// JPEG decode scale: full (exact) or auto (DCT-scaled by 1/2, 1/4 or
    /// 1/8 while the crop keeps the output's resolution; not bit-exact).
    #[arg(long, default_value = "full", value_parser = parse_decode_scale)]
    decode_scale: DecodeScale,
    /// Decode whole JPEGs instead of only the region each sample reads.
    #[arg(long)]
    no_roi: bool,
}

/// Runs the command.
pub fn run(args: BenchArgs) -> Result<()> {
    if metaug::remote::is_remote(&args.dir) {
        return Err(metaug::Error::invalid(
            "dataset",
            format!(
                "metaug bench times its stages on memory-mapped records; {} is in an object \
                 store: time its loader with `metaug stream`",
                args.dir.display()
            ),
        ));
    }
    let dataset = Arc::new(Dataset::open(&args.dir)?);
    let device: Device = args.device.parse()?;
    let stages = args
        .stages
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Stage::parse)
        .collect::<Result<Vec<_>>>()?;
    let normalize = args
        .imagenet_norm
        .then(|| (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]));
    let cfg = BenchConfig {
        batch: args.batch,
        threads: args.threads,
        size: args.size.map(|(h, w)| Size::new(h, w)),
        channels: args.channels,
        dtype: DType::from(args.dtype),
        layout: Layout::from(args.layout),
        normalize,
        policy: Policy::from_arg(&args.policy)?,
        seed: args.seed,
        device,
        seconds: args.seconds,
        stages: stages.clone(),
        region: RegionDecode {
            crop: !args.no_roi,
            scale: args.decode_scale,
        },
        ..BenchConfig::default()
    };
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg:<12} {wide_bar} {percent:>3}%")
    {
        bar.set_style(style);
    }
    let report = bench::run(dataset, &cfg, &|stage: Stage, done: f64| {
        bar.set_message(stage.name());
        bar.set_position((done * 1000.0) as u64);
    })?;
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report)
                .map_err(|e| metaug::Error::invalid("report", e.to_string()))?
        );
    } else {
        print!("{report}");
    }
    Ok(())
}

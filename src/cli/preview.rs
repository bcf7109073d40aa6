//! `metaug preview`: a PNG grid of original and augmented samples.

use std::path::PathBuf;

use metaug::ops::Size;
use metaug::policy::Policy;
use metaug::preview::{write_preview, PreviewConfig};
use metaug::shard::Dataset;
use metaug::Result;

use crate::cli::args::parse_size;

/// Arguments of `metaug preview`.
#[derive(clap::Args)]
pub struct PreviewArgs {
    /// Dataset directory (with index.json), or s3://bucket/prefix (feature s3).
    dir: PathBuf,
    /// Augmentation policy: none, default, trivial (TrivialAugment-style, one op per sample), or a policy file.
    #[arg(long, default_value = "default")]
    policy: String,
    /// Output PNG.
    #[arg(short, long)]
    out: PathBuf,
    /// Rows (samples).
    #[arg(long, default_value_t = 6)]
    samples: u32,
    /// Augmented copies per row.
    #[arg(long, default_value_t = 7)]
    copies: u32,
    /// Cell size HxW.
    #[arg(long, value_parser = parse_size, default_value = "96x96")]
    cell: (u32, u32),
    /// Seed of the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs the command.
pub fn run(args: PreviewArgs) -> Result<()> {
    let dataset = Dataset::open(&args.dir)?;
    let policy = Policy::from_arg(&args.policy)?;
    let cfg = PreviewConfig {
        samples: args.samples,
        copies: args.copies,
        cell: Size::new(args.cell.0, args.cell.1),
        seed: args.seed,
    };
    write_preview(&dataset, &policy, &cfg, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

//! `metaug pack`: IDX files or an image folder into a sharded dataset.

use std::path::PathBuf;

use metaug::pack::{self, fashion_mnist_class_names, FolderOptions, IdxOptions, ImageLimits};
use metaug::remote::{OutputDir, RemoteOptions};
use metaug::shard::Encoding;

/// Arguments of `metaug pack`.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  metaug pack idx --images train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz \\
      --classes fashion-mnist -o fmnist-train
  metaug pack idx --images X.gz --labels Y.gz --encoding png -o out --shard-size 16MiB
  metaug pack folder photos/ -o photos-packed
  metaug pack folder data/photos-png --flat -o photos-png-packed

The output directory gets shard-00000.safetensors, ... and index.json (written last, so a
directory without index.json is an unfinished run). Packing is deterministic: the same input
gives the same bytes.")]
pub struct PackArgs {
    #[command(subcommand)]
    source: Source,
}

#[derive(clap::Subcommand)]
enum Source {
    /// IDX images + labels files (MNIST, Fashion-MNIST), gzipped or not.
    Idx(IdxArgs),
    /// An image folder: ROOT/<class>/<image>, JPEG or PNG files, stored byte for byte.
    ///
    /// Classes are the sub-folders of ROOT sorted by name (label i = i-th class);
    /// only files named .jpg, .jpeg or .png (any case) are taken, so a README or a
    /// labels.csv beside the images is left out;
    /// files are taken in name order. Hidden names are skipped and files directly
    /// in ROOT ignored; all images must share one encoding (all JPEG or all PNG).
    Folder(FolderArgs),
}

#[derive(clap::Args)]
struct IdxArgs {
    /// IDX images file (idx3-ubyte, optionally .gz).
    #[arg(long)]
    images: PathBuf,
    /// IDX labels file (idx1-ubyte, optionally .gz).
    #[arg(long)]
    labels: PathBuf,
    /// How to store each image: raw pixels, or PNG (lossless, smaller).
    #[arg(long, default_value = "raw", value_parser = ["raw", "png"])]
    encoding: String,
    /// Class names in label order, comma-separated, or `fashion-mnist`.
    /// Default: "0", "1", ... up to the largest label.
    #[arg(long)]
    classes: Option<String>,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args)]
struct FolderArgs {
    /// The folder holding one sub-folder per class.
    root: PathBuf,
    /// Take the images directly in ROOT as one class named after ROOT
    /// (e.g. data/photos-png) instead of one class per sub-folder.
    #[arg(long)]
    flat: bool,
    /// Store each JPEG rewritten without loss (same pixels, checked) with a restart marker
    /// after every MCU: files grow by about 6-8 %, and the loader then decodes only the MCUs
    /// a sample's region covers instead of entropy-decoding the whole image. Pays when crops
    /// are small (ImageNet-style crops of 8-100 % of the area: decode 1.17-1.20x faster);
    /// costs about 8 % when a sample reads most of the image (see BENCHMARKS.md).
    #[arg(long)]
    restart_markers: bool,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args)]
struct Output {
    /// Output dataset directory (created if needed), or s3://bucket/prefix (feature s3:
    /// packed locally, then uploaded with index.json last).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Payload bytes per shard, e.g. 64MiB, 500K, 1GB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    shard_size: u64,
    /// Replace a dataset already in the output directory.
    #[arg(long)]
    force: bool,
    /// Largest image width and height accepted, in pixels.
    #[arg(long, default_value_t = ImageLimits::default().max_width)]
    max_side: u32,
}

fn parse_size(text: &str) -> Result<u64, String> {
    match pack::parse_size(text) {
        Ok(0) => Err("the shard size must be at least 1 byte".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn limits(output: &Output) -> ImageLimits {
    ImageLimits {
        max_width: output.max_side,
        max_height: output.max_side,
        ..ImageLimits::default()
    }
}

/// Runs the command.
pub fn run(args: PackArgs) -> metaug::Result<()> {
    let (out, index) = match args.source {
        Source::Idx(a) => {
            let encoding: Encoding = a.encoding.parse()?;
            let classes = a.classes.as_deref().map(|c| {
                if c == "fashion-mnist" {
                    fashion_mnist_class_names()
                } else {
                    c.split(',').map(|s| s.trim().to_string()).collect()
                }
            });
            let mut target =
                OutputDir::new(&a.output.out, a.output.force, &RemoteOptions::default())?;
            let options = IdxOptions {
                encoding,
                classes,
                shard_size: a.output.shard_size,
                overwrite: a.output.force,
                progress: true,
                limits: limits(&a.output),
                after_shard: target.shard_hook()?,
            };
            let index = pack::pack_idx(&a.images, &a.labels, target.local(), &options)?;
            (target.finish(true)?, index)
        }
        Source::Folder(a) => {
            let mut target =
                OutputDir::new(&a.output.out, a.output.force, &RemoteOptions::default())?;
            let options = FolderOptions {
                shard_size: a.output.shard_size,
                overwrite: a.output.force,
                progress: true,
                limits: limits(&a.output),
                flat: a.flat,
                after_shard: target.shard_hook()?,
                restart_markers: a.restart_markers,
                ..FolderOptions::default()
            };
            let index = pack::pack_folder(&a.root, target.local(), &options)?;
            (target.finish(true)?, index)
        }
    };
    eprintln!(
        "packed {} records (encoding {}, classes: {}) into {} shard(s) in {}",
        index.total_records,
        index.encoding,
        index.classes.len(),
        index.shards.len(),
        out
    );
    Ok(())
}

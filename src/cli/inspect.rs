//! `metaug inspect`: summarise a dataset; with `--verify`, check every record.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use metaug::decode::{cuts_at_every_mcu, DecodeLimits};
use metaug::pack::{check_decodes, ImageLimits};
use metaug::shard::{Dataset, Encoding, OpenOptions, ReadMode, Record};

/// Arguments of `metaug inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The dataset directory (holding index.json), or s3://bucket/prefix (feature s3).
    dir: PathBuf,
    /// Check every record's checksum and that it decodes; report each bad
    /// record by shard file and index, and exit non-zero if any.
    #[arg(long)]
    verify: bool,
    /// How to read the shards: `mmap` (zero copy, fastest; a shard truncated
    /// underneath kills the process with SIGBUS) or `pread` (one copy per
    /// record; errors instead; use it on NFS, Lustre, GPFS).
    #[arg(long, default_value = "mmap", value_name = "mmap|pread")]
    read_mode: ReadMode,
}

/// The decode check of `--verify`: the `image` crate with limits.
fn decode_check(record: &Record<'_>) -> metaug::Result<()> {
    check_decodes(record, &ImageLimits::default())
}

/// Runs the command.
pub fn run(args: InspectArgs) -> metaug::Result<()> {
    let options = OpenOptions {
        read_mode: args.read_mode,
        ..Default::default()
    };
    let dataset = Dataset::open_with(&args.dir, options)?;
    println!("dataset:  {}", args.dir.display());
    print!("{}", dataset.summary());
    if !args.verify {
        return Ok(());
    }
    // JPEG records whose regions the loader decodes through virtual JPEGs
    // (packed with --restart-markers).
    let cut = AtomicU64::new(0);
    let limits = DecodeLimits::default();
    let report = dataset.verify(|record| {
        decode_check(record)?;
        if record.encoding == Encoding::Jpeg && cuts_at_every_mcu(record.bytes, &limits) {
            cut.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    for e in &report.bad {
        println!("bad: {e}");
    }
    if dataset.index().encoding == Encoding::Jpeg {
        println!(
            "restart:  {} of {} JPEG records have a restart marker after every MCU (region decode reads only each sample's MCUs; see pack folder --restart-markers)",
            cut.load(Ordering::Relaxed),
            report.checked
        );
    }
    if report.ok() {
        println!("verify:   all {} records OK", report.checked);
        Ok(())
    } else {
        Err(metaug::Error::format(
            &args.dir,
            format!(
                "{} of {} records failed verification",
                report.bad.len(),
                report.checked
            ),
        ))
    }
}

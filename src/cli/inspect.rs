//! `metaug inspect`: summarise a dataset; with `--verify`, check every record.

use std::path::PathBuf;

use metaug::pack::{check_decodes, ImageLimits};
use metaug::shard::{Dataset, Record};

/// Arguments of `metaug inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The dataset directory (holding index.json).
    dir: PathBuf,
    /// Check every record's checksum and that it decodes; report each bad
    /// record by shard file and index, and exit non-zero if any.
    #[arg(long)]
    verify: bool,
}

/// The decode check of `--verify`: the `image` crate with limits.
fn decode_check(record: &Record<'_>) -> metaug::Result<()> {
    check_decodes(record, &ImageLimits::default())
}

/// Runs the command.
pub fn run(args: InspectArgs) -> metaug::Result<()> {
    let dataset = Dataset::open(&args.dir)?;
    println!("dataset:  {}", args.dir.display());
    print!("{}", dataset.summary());
    if !args.verify {
        return Ok(());
    }
    let report = dataset.verify(decode_check);
    for e in &report.bad {
        println!("bad: {e}");
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

//! `metaug precompute` (not built yet).

/// Arguments of `metaug precompute`.
#[derive(clap::Args)]
pub struct PrecomputeArgs {}

/// Runs the command.
pub fn run(_args: PrecomputeArgs) -> metaug::Result<()> {
    Err(metaug::Error::invalid(
        "command",
        "`precompute` is not available in this build yet",
    ))
}

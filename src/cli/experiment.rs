//! `metaug experiment` (not built yet).

/// Arguments of `metaug experiment`.
#[derive(clap::Args)]
pub struct ExperimentArgs {}

/// Runs the command.
pub fn run(_args: ExperimentArgs) -> metaug::Result<()> {
    Err(metaug::Error::invalid(
        "command",
        "`experiment` is not available in this build yet",
    ))
}

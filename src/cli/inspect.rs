//! `metaug inspect` (not built yet).

/// Arguments of `metaug inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {}

/// Runs the command.
pub fn run(_args: InspectArgs) -> metaug::Result<()> {
    Err(metaug::Error::invalid(
        "command",
        "`inspect` is not available in this build yet",
    ))
}

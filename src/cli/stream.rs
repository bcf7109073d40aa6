//! `metaug stream` (not built yet).

/// Arguments of `metaug stream`.
#[derive(clap::Args)]
pub struct StreamArgs {}

/// Runs the command.
pub fn run(_args: StreamArgs) -> metaug::Result<()> {
    Err(metaug::Error::invalid(
        "command",
        "`stream` is not available in this build yet",
    ))
}

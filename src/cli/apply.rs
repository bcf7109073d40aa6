//! `metaug apply` (not built yet).

/// Arguments of `metaug apply`.
#[derive(clap::Args)]
pub struct ApplyArgs {}

/// Runs the command.
pub fn run(_args: ApplyArgs) -> metaug::Result<()> {
    Err(metaug::Error::invalid(
        "command",
        "`apply` is not available in this build yet",
    ))
}

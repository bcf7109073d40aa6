//! `metaug pack` (not built yet).

/// Arguments of `metaug pack`.
#[derive(clap::Args)]
pub struct PackArgs {}

/// Runs the command.
pub fn run(_args: PackArgs) -> metaug::Result<()> {
    Err(metaug::Error::invalid(
        "command",
        "`pack` is not available in this build yet",
    ))
}

//! `metaug preview` (not built yet).

/// Arguments of `metaug preview`.
#[derive(clap::Args)]
pub struct PreviewArgs {}

/// Runs the command.
pub fn run(_args: PreviewArgs) -> metaug::Result<()> {
    Err(metaug::Error::invalid(
        "command",
        "`preview` is not available in this build yet",
    ))
}

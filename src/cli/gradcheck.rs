//! `metaug gradcheck` (not built yet).

/// Arguments of `metaug gradcheck`.
#[derive(clap::Args)]
pub struct GradcheckArgs {}

/// Runs the command.
pub fn run(_args: GradcheckArgs) -> metaug::Result<()> {
    Err(metaug::Error::invalid(
        "command",
        "`gradcheck` is not available in this build yet",
    ))
}

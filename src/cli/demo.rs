//! `metaug demo` (not built yet).

/// Arguments of `metaug demo`.
#[derive(clap::Args)]
pub struct DemoArgs {}

/// Runs the command.
pub fn run(_args: DemoArgs) -> metaug::Result<()> {
    Err(metaug::Error::invalid(
        "command",
        "`demo` is not available in this build yet",
    ))
}

//! `metaug learn-policy` (not built yet).

/// Arguments of `metaug learn-policy`.
#[derive(clap::Args)]
pub struct LearnPolicyArgs {}

/// Runs the command.
pub fn run(_args: LearnPolicyArgs) -> metaug::Result<()> {
    Err(metaug::Error::invalid(
        "command",
        "`learn-policy` is not available in this build yet",
    ))
}

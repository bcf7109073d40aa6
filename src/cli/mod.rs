//! One file per subcommand: clap arguments in, library calls out.

pub mod apply;
pub mod args;
pub mod bench;
pub mod demo;
pub mod experiment;
pub mod gradcheck;
pub mod inspect;
pub mod learn_policy;
pub mod pack;
pub mod precompute;
pub mod preview;
pub mod stream;

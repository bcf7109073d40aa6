//! The `metaug` command: pack datasets, inspect them, stream, learn a policy,
//! precompute augmented shards. Each subcommand lives in `cli/<name>.rs`,
//! turns its flags into the library's validated config and calls the library.

mod cli;

use clap::{Parser, Subcommand};

/// Fast data loading with learned augmentation.
#[derive(Parser)]
#[command(name = "metaug", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pack IDX files or an image folder into a sharded dataset.
    Pack(cli::pack::PackArgs),
    /// Summarise a dataset; with --verify, check every record.
    Inspect(cli::inspect::InspectArgs),
    /// Apply explicit augmentation parameters to one image.
    Apply(cli::apply::ApplyArgs),
    /// Stream a dataset through the loader and report images/s.
    Stream(cli::stream::StreamArgs),
    /// Check every gradient of the meta engine against finite differences.
    Gradcheck(cli::gradcheck::GradcheckArgs),
    /// Learn an augmentation policy with MAML or Reptile.
    LearnPolicy(cli::learn_policy::LearnPolicyArgs),
    /// Run a reproducible experiment (fashion-mnist).
    Experiment(cli::experiment::ExperimentArgs),
    /// Write K augmented copies of a dataset as safetensors shards.
    Precompute(cli::precompute::PrecomputeArgs),
    /// Write a PNG grid of original and augmented samples.
    Preview(cli::preview::PreviewArgs),
    /// Run the whole pipeline on the bundled data.
    Demo(cli::demo::DemoArgs),
    /// Measure each pipeline stage alone and the whole loader on a dataset.
    Bench(cli::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Meta steps free and reallocate their tensors every step; keep that
    // memory in the process instead of faulting it in again each time.
    metaug::meta::allocator::keep_freed_memory();
    let result = match cli.command {
        Command::Pack(a) => cli::pack::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Apply(a) => cli::apply::run(a),
        Command::Stream(a) => cli::stream::run(a),
        Command::Gradcheck(a) => cli::gradcheck::run(a),
        Command::LearnPolicy(a) => cli::learn_policy::run(a),
        Command::Experiment(a) => cli::experiment::run(a),
        Command::Precompute(a) => cli::precompute::run(a),
        Command::Preview(a) => cli::preview::run(a),
        Command::Demo(a) => cli::demo::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

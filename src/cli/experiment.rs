//! `metaug experiment fashion-mnist`: no augmentation vs the default policy
//! vs the best of a 16-policy grid vs policies learned by MAML and Reptile.

use std::path::PathBuf;

use metaug::meta::experiment::{
    load_fashion_mnist, markdown_table, run_experiment, write_section, ExperimentConfig,
};

/// Arguments of `metaug experiment`.
#[derive(clap::Args)]
pub struct ExperimentArgs {
    /// The experiment to run (only `fashion-mnist`).
    pub name: String,
    /// Directory of the Fashion-MNIST IDX `.gz` files.
    #[arg(long, default_value = "../shared/data/fashion-mnist")]
    pub data: PathBuf,
    /// SGD steps per training run (the budget).
    #[arg(long, default_value_t = 800)]
    pub steps: usize,
    /// Number of seeds (0, 1, …).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// One meta step every N training steps.
    #[arg(long, default_value_t = 4)]
    pub meta_every: usize,
    /// Inner steps k of a meta step.
    #[arg(long, default_value_t = 1)]
    pub inner_steps: usize,
    /// Adam step size on φ.
    #[arg(long, default_value_t = 0.05)]
    pub meta_lr: f64,
    /// Relaxation temperature τ.
    #[arg(long, default_value_t = 0.5)]
    pub tau: f64,
    /// SGD step size.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Skip the 16-policy grid.
    #[arg(long)]
    pub skip_grid: bool,
    /// Markdown file whose "Meta-learned policies" section is replaced.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub write: PathBuf,
}

/// Runs the command.
pub fn run(args: ExperimentArgs) -> metaug::Result<()> {
    if args.name != "fashion-mnist" {
        return Err(metaug::Error::invalid(
            "experiment",
            format!("unknown experiment `{}` (known: fashion-mnist)", args.name),
        ));
    }
    if args.steps == 0 || args.seeds == 0 || args.tau <= 0.0 || args.lr <= 0.0 {
        return Err(metaug::Error::invalid(
            "options",
            "steps, seeds, tau and lr must be positive",
        ));
    }
    let data = load_fashion_mnist(&args.data)?;
    let mut cfg = ExperimentConfig::default();
    cfg.train.steps = args.steps;
    cfg.train.lr = args.lr;
    cfg.seeds = (0..args.seeds).collect();
    cfg.meta.every = args.meta_every.max(1);
    cfg.meta.inner_steps = args.inner_steps.max(1);
    cfg.meta.meta_lr = args.meta_lr;
    cfg.meta.tau = args.tau;
    cfg.skip_grid = args.skip_grid;
    let results = run_experiment(&data, &cfg, &mut |line| eprintln!("{line}"))?;
    let table = markdown_table(&results);
    println!("{table}");
    let body = format!(
        "`metaug experiment fashion-mnist --steps {} --seeds {}` (MLP 784-{}-10, SGD lr {}, batch {}, \
         {} train / {} val images per class, full test set; meta step every {} steps, k = {}, τ = {}, Adam lr {}).\n\n{}",
        cfg.train.steps,
        args.seeds,
        cfg.train.hidden,
        cfg.train.lr,
        cfg.train.batch,
        cfg.per_class,
        cfg.per_class_val,
        cfg.meta.every,
        cfg.meta.inner_steps,
        cfg.meta.tau,
        cfg.meta.meta_lr,
        table
    );
    write_section(&args.write, "Meta-learned policies (Fashion-MNIST)", &body)?;
    eprintln!("wrote {}", args.write.display());
    Ok(())
}

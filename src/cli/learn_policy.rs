//! `metaug learn-policy`: learn an augmentation policy with MAML or Reptile
//! on a packed dataset, save it as a policy file and plot φ over the steps.

use std::path::PathBuf;

use metaug::meta::plot::plot_history;
use metaug::meta::train::Method;
use metaug::meta::{image_set, learn_policy, LearnConfig};
use metaug::ops::Size;
use metaug::shard::Dataset;
use metaug::{Error, Result};

use crate::cli::args::{
    count_in, parse_positive, parse_size, progress_bar, MAX_INNER_STEPS, MAX_STEPS,
};

/// Arguments of `metaug learn-policy`.
#[derive(clap::Args)]
pub struct LearnPolicyArgs {
    /// Dataset directory (with index.json), or s3://bucket/prefix (feature s3).
    pub dir: PathBuf,
    /// maml (exact second-order hypergradient) or reptile (first order).
    #[arg(long, default_value = "maml", value_parser = ["maml", "reptile"])]
    pub mode: String,
    /// Images used (spread evenly over the dataset); a fifth is held out
    /// as the validation set of the meta-objective.
    #[arg(long, default_value_t = 2000, value_parser = count_in(10, usize::MAX))]
    pub images: usize,
    /// Resize images to HxW (default: the first record's size).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Training steps of the task model.
    #[arg(long, default_value_t = 400, value_parser = count_in(1, MAX_STEPS))]
    pub steps: usize,
    /// One meta step every this many training steps.
    #[arg(long, default_value_t = 4, value_parser = count_in(1, usize::MAX))]
    pub meta_every: usize,
    /// Inner SGD steps unrolled per meta step.
    #[arg(long, default_value_t = 1, value_parser = count_in(1, MAX_INNER_STEPS))]
    pub inner_steps: usize,
    /// Fraction of the steps trained with φ held at its start before the
    /// first meta step (0: meta-learn from the first step).
    #[arg(long, default_value_t = 0.0)]
    pub meta_start: f64,
    /// Step size on φ.
    #[arg(long, default_value_t = 0.05, value_parser = parse_positive)]
    pub meta_lr: f64,
    /// Step size on φ's magnitudes (smallest crop area, largest angle,
    /// largest σ); without it, `--meta-lr`.
    #[arg(long, value_parser = parse_positive)]
    pub magnitude_lr: Option<f64>,
    /// The policy family: `independent` (each op with its own probability,
    /// starting at p ½) or `one-op` (one op per sample, TrivialAugment's
    /// structure, starting at TrivialAugment-style: uniform op choice,
    /// area 0.35–1, ±30°, σ ≤ 0.1).
    #[arg(long, default_value = "independent", value_parser = ["independent", "one-op"])]
    pub family: String,
    /// Temperature of the relaxed gates.
    #[arg(long, default_value_t = 0.5, value_parser = parse_positive)]
    pub tau: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output policy file.
    #[arg(short, long, default_value = "policy.safetensors")]
    pub out: PathBuf,
    /// PNG plot of φ over the meta steps.
    #[arg(long, default_value = "policy.png")]
    pub plot: PathBuf,
}

/// Runs the command.
pub fn run(args: LearnPolicyArgs) -> Result<()> {
    let method = if args.mode == "reptile" {
        Method::Reptile
    } else {
        Method::Maml
    };
    if !(0.0..1.0).contains(&args.meta_start) {
        return Err(Error::invalid("meta-start", "must be in [0, 1)"));
    }
    let dataset = Dataset::open(&args.dir)?;
    let set = image_set(
        &dataset,
        args.images,
        args.size.map(|(h, w)| Size::new(h, w)),
        None,
    )?;
    let mut cfg = LearnConfig::default();
    cfg.train.steps = args.steps;
    cfg.train.seed = args.seed;
    cfg.meta.method = method;
    cfg.meta.every = args.meta_every;
    cfg.meta.inner_steps = args.inner_steps;
    cfg.meta.meta_lr = args.meta_lr;
    cfg.meta.magnitude_lr = args.magnitude_lr;
    cfg.meta.meta_start = args.meta_start;
    cfg.meta.tau = args.tau;
    if let Some(family) = metaug::policy::Family::parse(&args.family) {
        cfg.meta.family = family;
    }
    if cfg.meta.family == metaug::policy::Family::OneOp {
        cfg.meta.phi_init = metaug::meta::presets::phi_trivial();
    }
    let bar = progress_bar(args.steps as u64, "steps");
    let learned = learn_policy(&set.images, &set.labels, &cfg, &mut |step, _| {
        bar.set_position(step as u64 + 1)
    })?;
    bar.finish_and_clear();
    let policy = learned.policy();
    println!(
        "learned with {} ({} meta steps on {} images): {}",
        args.mode,
        learned.history.len(),
        set.len(),
        policy.describe()
    );
    policy.save(&args.out)?;
    plot_history(&learned.history, learned.family, &args.plot)?;
    println!("wrote {} and {}", args.out.display(), args.plot.display());
    Ok(())
}

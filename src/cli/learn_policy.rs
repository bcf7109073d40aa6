//! `metaug learn-policy`: learn an augmentation policy with MAML or Reptile
//! on IDX data (for now; the dataset side is wired at merge), save it as a
//! policy file and plot φ over the meta steps.

use std::path::PathBuf;

use metaug::meta::experiment::{describe, load_fashion_mnist};
use metaug::meta::plot::plot_history;
use metaug::meta::train::Method;
use metaug::meta::{learn_policy, save_policy, LearnConfig};

/// Arguments of `metaug learn-policy`.
#[derive(clap::Args)]
pub struct LearnPolicyArgs {
    /// Directory with `train-images-idx3-ubyte.gz` and `train-labels-idx1-ubyte.gz`.
    #[arg(long, default_value = "../shared/data/fashion-mnist")]
    pub data_idx: PathBuf,
    /// Number of training images used (the first N).
    #[arg(long, default_value_t = 2000)]
    pub images: usize,
    /// `maml` (second order) or `reptile` (first order).
    #[arg(long, default_value = "maml")]
    pub method: String,
    /// SGD steps of the task model.
    #[arg(long, default_value_t = 400)]
    pub steps: usize,
    /// One meta step every N training steps.
    #[arg(long, default_value_t = 4)]
    pub meta_every: usize,
    /// Inner steps k.
    #[arg(long, default_value_t = 1)]
    pub inner_steps: usize,
    /// Adam step size on φ.
    #[arg(long, default_value_t = 0.05)]
    pub meta_lr: f64,
    /// Relaxation temperature τ.
    #[arg(long, default_value_t = 0.5)]
    pub tau: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Policy file to write (safetensors).
    #[arg(long, default_value = "policy.safetensors")]
    pub out: PathBuf,
    /// PNG plot of φ over the meta steps.
    #[arg(long, default_value = "policy.png")]
    pub plot: PathBuf,
}

/// Runs the command.
pub fn run(args: LearnPolicyArgs) -> metaug::Result<()> {
    let method = match args.method.as_str() {
        "maml" => Method::Maml,
        "reptile" => Method::Reptile,
        m => {
            return Err(metaug::Error::invalid(
                "method",
                format!("`{m}` (expected maml or reptile)"),
            ))
        }
    };
    if args.images < 10 || args.steps == 0 || args.meta_every == 0 || args.tau <= 0.0 {
        return Err(metaug::Error::invalid(
            "options",
            "need --images ≥ 10, --steps > 0, --meta-every > 0, --tau > 0",
        ));
    }
    let data = load_fashion_mnist(&args.data_idx)?;
    let n = args.images.min(data.train.len());
    let idx: Vec<usize> = (0..n).collect();
    let (images, labels) = data.train.gather(&idx);
    let mut cfg = LearnConfig::default();
    cfg.train.steps = args.steps;
    cfg.train.seed = args.seed;
    cfg.meta.method = method;
    cfg.meta.every = args.meta_every;
    cfg.meta.inner_steps = args.inner_steps.max(1);
    cfg.meta.meta_lr = args.meta_lr;
    cfg.meta.tau = args.tau;
    let bar = indicatif::ProgressBar::new(args.steps as u64);
    let learned = learn_policy(&images, &labels, &cfg, &mut |step, _| {
        bar.set_position(step as u64 + 1)
    })?;
    bar.finish_and_clear();
    let phi = learned.phi.map(|v| v as f64);
    println!(
        "learned ({method:?}, {} meta steps): {}",
        learned.history.len(),
        describe(&phi)
    );
    save_policy(&learned.phi, learned.tau, &args.out)?;
    plot_history(&learned.history, &args.plot)?;
    println!("wrote {} and {}", args.out.display(), args.plot.display());
    Ok(())
}

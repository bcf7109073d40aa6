//! `metaug gradcheck`: every gradient of the meta engine against finite
//! differences, on random problems; fails when a tolerance is missed.

use metaug::harness::gradcheck::{self, Criterion};

/// Arguments of `metaug gradcheck`.
#[derive(clap::Args)]
pub struct GradcheckArgs {
    /// Seed of the random problems.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write one small MAML problem (the CNN, k = 2) and metaug's
    /// hypergradient as a safetensors file here, for checking in another
    /// framework (conventions in the file's metadata and the README).
    #[arg(long)]
    pub export: Option<std::path::PathBuf>,
}

/// Runs the command.
pub fn run(args: GradcheckArgs) -> metaug::Result<()> {
    let checks = gradcheck::run_all(args.seed);
    println!(
        "{:<64} {:>12}  {:<14} result",
        "check (f64, central differences)", "value", "tolerance"
    );
    for c in &checks {
        let tol = match c.criterion {
            Criterion::AtMost(t) => format!("rel err ≤ {t:.0e}"),
            Criterion::AtLeast(t) => format!("cosine ≥ {t}"),
            Criterion::Info => "(reported)".to_string(),
        };
        let result = match (c.criterion, c.passed()) {
            (Criterion::Info, _) => "info",
            (_, true) => "ok",
            (_, false) => "FAILED",
        };
        let value = match c.criterion {
            Criterion::AtMost(_) => format!("{:.3e}", c.value),
            _ => format!("{:.6}", c.value),
        };
        println!("{:<64} {:>12}  {:<14} {result}", c.name, value, tol);
    }
    if let Some(path) = &args.export {
        let g = metaug::harness::export::export_problem(path, args.seed)?;
        println!(
            "wrote {}: dL_val/dφ = [{}]",
            path.display(),
            g.map(|v| format!("{v:.6e}")).join(", ")
        );
    }
    let failed = checks.iter().filter(|c| !c.passed()).count();
    println!("{} passed, {} failed", checks.len() - failed, failed);
    if failed > 0 {
        return Err(metaug::Error::invalid(
            "gradients",
            format!("{failed} check(s) missed their tolerance"),
        ));
    }
    Ok(())
}

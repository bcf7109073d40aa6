//! The Fashion-MNIST experiment: a task model (the CNN by default, or the
//! MLP) trained for the same budget with every cheap alternative — no
//! augmentation, the `default` policy, a TrivialAugment-style baseline,
//! the best of a 16-policy grid (chosen on validation), the schedule
//! control — and with policies learned online by MAML and Reptile.

use std::path::Path;
use std::time::Instant;

pub use crate::meta::presets::{phi_default, phi_init, phi_little, phi_none, phi_trivial};
use crate::meta::relaxed::Family;
use crate::meta::relaxed::NUM_PHI;
use crate::meta::rng::SplitMix;
use crate::meta::tensor::Tensor;
use crate::meta::train::{
    meta_start_step, train, train_switch, train_trivial_augment, ImageSet, LrSchedule, MetaConfig,
    Method, ModelKind, TrainConfig,
};
use crate::pack::idx::IdxFile;
use crate::{Error, Result};

/// Largest IDX payload accepted, bytes.
const MAX_IDX_BYTES: u64 = 512 << 20;

/// The four IDX files of Fashion-MNIST, decoded.
#[derive(Clone, Debug)]
pub struct FashionMnist {
    /// 60,000 training images.
    pub train: ImageSet,
    /// 10,000 test images.
    pub test: ImageSet,
}

/// Reads the whole payload of an IDX file (gzip or plain) through
/// [`IdxFile`], bounded by [`MAX_IDX_BYTES`].
fn read_idx(path: &Path, rank: u8) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut file = IdxFile::open(path, rank)?;
    let dims: Vec<usize> = file.dims.iter().map(|&d| d as usize).collect();
    let total = file
        .dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
        .filter(|&t| t <= MAX_IDX_BYTES)
        .ok_or_else(|| Error::format(path, format!("IDX payload over {MAX_IDX_BYTES} bytes")))?;
    let mut payload = Vec::new();
    file.read_item(&mut payload, total, 0)?;
    file.expect_end()?;
    Ok((dims, payload))
}

fn load_pair(dir: &Path, images: &str, labels: &str) -> Result<ImageSet> {
    let ip = dir.join(images);
    let lp = dir.join(labels);
    let (ishape, ipix) = read_idx(&ip, 3)?;
    let (lshape, lab) = read_idx(&lp, 1)?;
    if ishape[0] != lshape[0] {
        return Err(Error::format(
            &lp,
            format!("{} labels for {} images", lshape[0], ishape[0]),
        ));
    }
    if let Some(i) = lab.iter().position(|&l| l >= 10) {
        return Err(Error::record(
            &lp,
            i as u64,
            format!("label {} is not below 10", lab[i]),
        ));
    }
    let (n, h, w) = (ishape[0], ishape[1], ishape[2]);
    Ok(ImageSet {
        images: Tensor::new(
            &[n, 1, h, w],
            ipix.iter().map(|&p| p as f32 / 255.0).collect(),
        ),
        labels: lab.iter().map(|&l| l as usize).collect(),
        classes: 10,
    })
}

/// Loads Fashion-MNIST from the four `*-idx?-ubyte.gz` files in `dir`.
pub fn load_fashion_mnist(dir: impl AsRef<Path>) -> Result<FashionMnist> {
    let dir = dir.as_ref();
    Ok(FashionMnist {
        train: load_pair(
            dir,
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
        )?,
        test: load_pair(
            dir,
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        )?,
    })
}

/// A class-balanced split of `set`: `per_class` training images of each
/// class and `per_class_val` validation images from the rest, chosen with
/// a fixed seed (the same subset whatever the run's seed).
pub fn balanced_split(
    set: &ImageSet,
    per_class: usize,
    per_class_val: usize,
) -> Result<(ImageSet, ImageSet)> {
    let mut order: Vec<usize> = (0..set.len()).collect();
    SplitMix::new(0x5EED).shuffle(&mut order);
    let (mut tr, mut va) = (Vec::new(), Vec::new());
    let mut counts = vec![(0usize, 0usize); set.classes];
    for i in order {
        let c = &mut counts[set.labels[i]];
        if c.0 < per_class {
            c.0 += 1;
            tr.push(i);
        } else if c.1 < per_class_val {
            c.1 += 1;
            va.push(i);
        }
    }
    if counts
        .iter()
        .any(|c| c.0 < per_class || c.1 < per_class_val)
    {
        return Err(Error::invalid("split", "not enough images of every class"));
    }
    let pick = |idx: &[usize]| {
        let (images, labels) = set.gather(idx);
        ImageSet {
            images,
            labels,
            classes: set.classes,
        }
    };
    Ok((pick(&tr), pick(&va)))
}

/// The 16-policy grid: each of crop, rotate, flip, noise on (at the
/// default's probability and magnitude) or off.
pub fn policy_grid() -> Vec<(String, [f64; NUM_PHI])> {
    let d = phi_default();
    let names = ["crop", "rotate", "flip", "noise"];
    let gate = [0usize, 2, 4, 5];
    (0..16u32)
        .map(|mask| {
            let mut phi = d;
            let mut on = Vec::new();
            for (b, (&g, n)) in gate.iter().zip(names).enumerate() {
                if mask & (1 << b) != 0 {
                    on.push(n);
                } else {
                    phi[g] = f64::NEG_INFINITY;
                }
            }
            let name = if on.is_empty() {
                "none".into()
            } else {
                on.join("+")
            };
            (name, phi)
        })
        .collect()
}

/// Settings of the experiment.
#[derive(Clone, Debug)]
pub struct ExperimentConfig {
    /// Training settings (the seed is replaced per run).
    pub train: TrainConfig,
    /// Seeds, one run of every method each.
    pub seeds: Vec<u64>,
    /// Training images per class.
    pub per_class: usize,
    /// Validation images per class.
    pub per_class_val: usize,
    /// Meta-learning settings (the method is set per run).
    pub meta: MetaConfig,
    /// Skip the 16-policy grid (it costs 16 runs per seed).
    pub skip_grid: bool,
    /// Run only these rows (keys of [`ROW_KEYS`]); all when empty.
    pub only: Vec<String>,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            train: TrainConfig {
                model: ModelKind::Cnn,
                lr_schedule: LrSchedule::Cosine,
                ..TrainConfig::default()
            },
            seeds: vec![0, 1, 2],
            per_class: 100,
            per_class_val: 100,
            meta: MetaConfig {
                phi_init: phi_init(),
                ..MetaConfig::default()
            },
            skip_grid: false,
            only: Vec::new(),
        }
    }
}

/// The results of one method over the seeds.
#[derive(Clone, Debug)]
pub struct MethodResult {
    /// Method name.
    pub name: String,
    /// Test accuracy of each seed.
    pub test_acc: Vec<f64>,
    /// Validation accuracy of each seed (what settings are chosen on).
    pub val_acc: Vec<f64>,
    /// Wall time of each seed, seconds (all runs the method needed).
    pub seconds: Vec<f64>,
    /// The policy used or learned (last seed), human units.
    pub policy: String,
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

/// A policy of the independent family in human units.
pub fn describe(phi: &[f64; NUM_PHI]) -> String {
    describe_in(Family::Independent, phi)
}

/// A policy of `family` in human units.
pub fn describe_in(family: Family, phi: &[f64; NUM_PHI]) -> String {
    let h = crate::meta::relaxed::human_units(phi);
    match family {
        Family::Independent => format!(
            "crop p={:.2} min_area={:.2}; rotate p={:.2} max={:.1}°; flip p={:.2}; noise p={:.2} max_σ={:.3}",
            h[0], h[1], h[2], h[3], h[4], h[5], h[6]
        ),
        Family::OneOp => {
            let s = crate::policy::one_op_shares(crate::policy::LOGITS.map(|k| phi[k]));
            format!(
                "one op per sample: identity {:.2}, crop {:.2} (area {:.2}–1), rotate {:.2} (±{:.1}°), flip {:.2}, noise {:.2} (σ ≤ {:.3})",
                s[0], s[1], h[1], s[2], h[3], s[3], s[4], h[6]
            )
        }
    }
}

/// A learned φ(t) of `family` in human units: its one φ, or each knot at
/// its point of training progress.
pub fn describe_learned(family: Family, knots: &[[f64; NUM_PHI]]) -> String {
    let describe = |phi: &[f64; NUM_PHI]| describe_in(family, phi);
    match knots {
        [phi] => describe(phi),
        _ => {
            let last = knots.len().saturating_sub(1).max(1) as f64;
            let parts: Vec<String> = knots
                .iter()
                .enumerate()
                .map(|(j, phi)| format!("at {:.0} %: {}", 100.0 * j as f64 / last, describe(phi)))
                .collect();
            parts.join(" / ")
        }
    }
}

/// The rows of the experiment's table, in order.
const ROWS: [&str; 7] = [
    "no augmentation",
    "default policy",
    "TrivialAugment-style (one op, uniform magnitude)",
    "grid best (16, on val)",
    "schedule control: φ start, then none",
    "MAML (learned)",
    "Reptile (learned)",
];

/// Short names of the table's rows, in order, for choosing rows to run.
pub const ROW_KEYS: [&str; 7] = [
    "none", "default", "trivial", "grid", "control", "maml", "reptile",
];

/// Switch points the schedule control tries (fractions of the steps) when
/// the learners start at once and so impose none; the best on validation
/// is kept.
const CONTROL_SWITCHES: [f64; 3] = [0.25, 0.5, 0.75];

/// Runs every method on every seed; `log` receives progress lines.
pub fn run_experiment(
    data: &FashionMnist,
    cfg: &ExperimentConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<MethodResult>> {
    let (tr, va) = balanced_split(&data.train, cfg.per_class, cfg.per_class_val)?;
    let test_x = data.test.flat();
    let va_x = va.flat();
    let mut results: Vec<MethodResult> = ROWS
        .iter()
        .map(|n| MethodResult {
            name: n.to_string(),
            test_acc: Vec::new(),
            val_acc: Vec::new(),
            seconds: Vec::new(),
            policy: String::new(),
        })
        .collect();
    let want = |slot: usize| cfg.only.is_empty() || cfg.only.iter().any(|k| k == ROW_KEYS[slot]);
    for &seed in &cfg.seeds {
        let tc = TrainConfig {
            seed,
            ..cfg.train.clone()
        };
        // test and validation accuracy of a trained model
        let score = |m: &crate::meta::model::Model<f32>| {
            (
                m.accuracy(&test_x, &data.test.labels),
                m.accuracy(&va_x, &va.labels),
            )
        };
        let mut record = |slot: usize,
                          acc: f64,
                          v: f64,
                          secs: f64,
                          policy: String,
                          log: &mut dyn FnMut(&str)| {
            let r: &mut MethodResult = &mut results[slot];
            r.test_acc.push(acc);
            r.val_acc.push(v);
            r.seconds.push(secs);
            log(&format!(
                "seed {seed} {}: val {:.2}%, test {:.2}% in {secs:.1}s; {policy}",
                r.name,
                100.0 * v,
                100.0 * acc
            ));
            r.policy = policy;
        };
        let fixed = |phi: [f64; NUM_PHI]| {
            let t0 = Instant::now();
            let out = train(&tr, &va, &tc, phi, None, &mut |_, _| {});
            (out, t0.elapsed().as_secs_f64())
        };
        for (slot, phi) in [(0, phi_none()), (1, phi_default())] {
            if !want(slot) {
                continue;
            }
            let (out, secs) = fixed(phi);
            let (acc, v) = score(&out.model);
            record(slot, acc, v, secs, describe(&phi), log);
        }
        if want(2) {
            let t0 = Instant::now();
            let out = train_trivial_augment(&tr, &tc);
            let secs = t0.elapsed().as_secs_f64();
            let (acc, v) = score(&out.model);
            let policy = "per sample one of identity, crop (area 0.35–1), rotate (±30°), flip, noise (σ ≤ 0.1), uniformly".to_string();
            record(2, acc, v, secs, policy, log);
        }
        if !cfg.skip_grid && want(3) {
            let mut best: Option<(f64, f64, String, [f64; NUM_PHI])> = None;
            let mut secs = 0.0;
            for (name, phi) in policy_grid() {
                let (out, s) = fixed(phi);
                secs += s;
                let (acc, v) = score(&out.model);
                if best.as_ref().is_none_or(|b| v > b.0) {
                    best = Some((v, acc, name, phi));
                }
            }
            if let Some((v, acc, name, phi)) = best {
                record(3, acc, v, secs, format!("{name}: {}", describe(&phi)), log);
            }
        }
        if want(4) {
            // the schedule control: the learners' start policy, then no
            // augmentation at once instead of learning — at the learners'
            // switch point, or the best of CONTROL_SWITCHES on validation
            let start = meta_start_step(&cfg.meta, tc.steps);
            let candidates: Vec<usize> = if start > 0 {
                vec![start]
            } else {
                CONTROL_SWITCHES
                    .iter()
                    .map(|f| (f * tc.steps as f64) as usize)
                    .collect()
            };
            let t0 = Instant::now();
            let mut best: Option<(f64, f64, usize)> = None;
            for at in candidates {
                let out =
                    train_switch(&tr, &tc, cfg.meta.family, cfg.meta.phi_init, at, phi_none());
                let (acc, v) = score(&out.model);
                if best.is_none_or(|b| v > b.0) {
                    best = Some((v, acc, at));
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            if let Some((v, acc, at)) = best {
                let policy = format!(
                    "{} for {at} steps, then none",
                    describe_in(cfg.meta.family, &cfg.meta.phi_init)
                );
                record(4, acc, v, secs, policy, log);
            }
        }
        for (slot, method) in [(5, Method::Maml), (6, Method::Reptile)] {
            if !want(slot) {
                continue;
            }
            let mc = MetaConfig {
                method,
                ..cfg.meta.clone()
            };
            let t0 = Instant::now();
            let out = train(&tr, &va, &tc, phi_none(), Some(&mc), &mut |_, _| {});
            let secs = t0.elapsed().as_secs_f64();
            let (acc, v) = score(&out.model);
            record(
                slot,
                acc,
                v,
                secs,
                describe_learned(cfg.meta.family, &out.knots),
                log,
            );
        }
    }
    Ok(results)
}

/// The results as a Markdown table: test accuracy (mean ± std over seeds)
/// and wall time relative to one plain training run ("—" when the
/// no-augmentation row was not run).
pub fn markdown_table(results: &[MethodResult]) -> String {
    let plain = results
        .first()
        .filter(|r| !r.seconds.is_empty())
        .map(|r| mean_std(&r.seconds).0.max(1e-9));
    let mut s = String::from("| method | test accuracy (%) | validation accuracy (%) | time vs one plain run | policy (last seed) |\n|---|---|---|---|---|\n");
    for r in results.iter().filter(|r| !r.test_acc.is_empty()) {
        let (m, sd) = mean_std(&r.test_acc);
        let (vm, vsd) = mean_std(&r.val_acc);
        let (t, _) = mean_std(&r.seconds);
        s += &format!(
            "| {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {} | {} |\n",
            r.name,
            100.0 * m,
            100.0 * sd,
            100.0 * vm,
            100.0 * vsd,
            plain.map_or("—".to_string(), |p| format!("{:.2}×", t / p)),
            r.policy
        );
    }
    s
}

/// Replaces (or appends) the section titled `title` of the Markdown file
/// at `path` with `body`.
pub fn write_section(path: &Path, title: &str, body: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_string(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let head = format!("## {title}\n");
    let section = format!("{head}\n{}\n", body.trim_end());
    let new = match old.find(&head) {
        Some(start) => {
            let rest = &old[start + head.len()..];
            let end = rest
                .find("\n## ")
                .map_or(old.len(), |e| start + head.len() + e + 1);
            format!("{}{}\n{}", &old[..start], section, &old[end..])
        }
        None => format!("{}\n\n{section}", old.trim_end()),
    };
    std::fs::write(path, new.trim_end().to_string() + "\n").map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, acc: f64, secs: f64) -> MethodResult {
        MethodResult {
            name: name.to_string(),
            test_acc: vec![acc, acc],
            val_acc: vec![acc, acc],
            seconds: vec![secs, secs],
            policy: "p".to_string(),
        }
    }

    /// Times are relative to the no-augmentation row, and shown as "—"
    /// without one (not divided by zero).
    #[test]
    fn table_times_are_relative_to_the_plain_row_or_absent() {
        let mut rows = vec![row("none", 0.8, 10.0), row("maml", 0.81, 25.0)];
        let t = markdown_table(&rows);
        assert!(
            t.contains("| maml | 81.00 ± 0.00 | 81.00 ± 0.00 | 2.50× | p |"),
            "{t}"
        );
        rows[0].test_acc.clear();
        rows[0].val_acc.clear();
        rows[0].seconds.clear();
        let t = markdown_table(&rows);
        assert!(
            t.contains("| maml | 81.00 ± 0.00 | 81.00 ± 0.00 | — | p |"),
            "{t}"
        );
        assert!(!t.contains("| none |"), "{t}");
    }

    #[test]
    fn default_phi_has_the_contract_values() {
        let h = crate::meta::relaxed::human_units(&phi_default());
        let want = [0.8, 0.35, 0.5, 15.0, 0.5, 0.3, 0.05];
        for (a, b) in h.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{h:?}");
        }
        assert_eq!(policy_grid().len(), 16);
    }
}

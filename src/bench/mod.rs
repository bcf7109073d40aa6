//! Where the time goes: the throughput ceiling of each pipeline stage measured
//! alone on a dataset, beside the end-to-end loader rate (`metaug bench`).
//!
//! Stages, each run on its own on a pool of `threads` threads:
//!
//! | stage | work per sample | bytes counted |
//! | --- | --- | --- |
//! | read | [`Dataset::record`]: locate the record in the mmap, check its crc32c (touches every payload byte) | payload |
//! | decode | [`decode`](crate::decode::decode()) of a record already located | decoded pixels |
//! | augment | [`Policy::sample_hard`](crate::policy::Policy::sample_hard) + [`augment_into`](crate::ops::augment_into) of a decoded image into a batch buffer | output sample |
//! | upload (cuda) | pinned host → device copy of a batch of decoded sources | source pixels |
//! | gpu augment (cuda) | the fused kernel on a batch already on the device | sources read + output written |
//! | end-to-end | the [`Loader`](crate::loader::Loader) itself, batches consumed as they come | output |
//!
//! A CPU stage's rate is `images / (CPU seconds / min(threads, cores))`: each
//! worker measures the CPU time of the stage's own work on each sample (its
//! thread's CPU clock: not the preparation, not idling, and not the time
//! other processes hold the cores), so the figure is the rate the stage
//! would sustain on `threads` threads with the cores to itself, and it reads
//! the same on a busy machine. The end-to-end rate is wall-clock; beside it,
//! the cores the process kept busy meanwhile (process CPU time over wall
//! time) tell idle workers (or a machine shared with other work) from a
//! saturated pipeline. On the CPU path one thread does read,
//! decode and augment of a sample back to back, so the predicted loader rate
//! is `1 / Σ (1 / rate)` and each stage's share is its part of that sum. On
//! the CUDA path the threads read and decode while the device uploads and
//! augments: the prediction is the slowest of the three.
//!
//! The read stage sees the page cache as it finds it: the first pass over a
//! dataset not read recently measures the disk, later ones memory.

mod clock;
mod config;
mod device;
mod loader;
mod report;
mod stages;

use std::sync::Arc;
use std::time::Duration;

use crate::decode::{DecodeLimits, Pixels};
use crate::error::{Error, Result};
use crate::loader::Device;
use crate::ops::{DType, Layout, OutputSpec, Size};
use crate::shard::Dataset;

pub use clock::process_cpu_time;
pub use config::{BenchConfig, Stage};
pub use report::{BenchReport, StageRate, WorkerTime};

/// Progress: the stage being measured and how far it is, in `[0, 1]`.
pub type Progress<'a> = &'a (dyn Fn(Stage, f64) + Sync);

/// Measures each stage of `cfg.stages` alone on `dataset`, then the loader.
pub fn run(
    dataset: Arc<Dataset>,
    cfg: &BenchConfig,
    progress: Progress<'_>,
) -> Result<BenchReport> {
    if dataset.is_empty() {
        return Err(Error::invalid("dataset", "has no records"));
    }
    if cfg.batch == 0 {
        return Err(Error::invalid("batch", "must be at least 1"));
    }
    if !(cfg.seconds > 0.0 && cfg.seconds <= 3600.0) {
        return Err(Error::invalid("seconds", "must be in (0, 3600]"));
    }
    let threads = match cfg.threads {
        Some(0) => return Err(Error::invalid("threads", "must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let first = dataset.record(0)?.shape;
    let size = cfg.size.unwrap_or(Size::new(first[0], first[1]));
    let channels = cfg.channels.unwrap_or(first[2]);
    let mut spec = OutputSpec::new(size, channels)
        .with_dtype(cfg.dtype)
        .with_layout(cfg.layout);
    if let Some((mean, std)) = cfg.normalize.clone() {
        spec = spec.with_normalization(mean, std);
    }
    spec.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("metaug-bench-{i}"))
        .build()
        .map_err(|e| Error::Pipeline(format!("cannot start the bench threads: {e}")))?;
    let ctx = Ctx {
        dataset: &dataset,
        cfg,
        spec: &spec,
        pool: &pool,
        threads,
        budget: Duration::from_secs_f64(cfg.seconds),
        limits: DecodeLimits::default(),
        progress,
    };
    let cuda = matches!(cfg.device, Device::Cuda(_));
    let wanted = |s: Stage| cfg.stages.contains(&s) && (cuda || !s.on_device());
    let mut stages = Vec::new();
    let mut sources: Option<Vec<Pixels<'static>>> = None;
    let mut pixels: Option<(f64, f64)> = None;
    for stage in Stage::ALL {
        if !wanted(stage) {
            continue;
        }
        let rate = match stage {
            Stage::Read => ctx.read()?,
            Stage::Decode => {
                let (rate, px) = ctx.decode()?;
                pixels = Some(px);
                rate
            }
            Stage::Augment if cuda => continue, // the device augments instead
            Stage::Augment => {
                let src = sources.get_or_insert(ctx.decoded_sources()?);
                ctx.augment(src)?
            }
            Stage::Upload | Stage::GpuAugment => {
                let src = sources.get_or_insert(ctx.decoded_sources()?);
                ctx.device_stage(stage, src)
            }
            Stage::EndToEnd => ctx.end_to_end(),
        };
        stages.push(rate);
    }
    let rate_of = |s: Stage| {
        stages
            .iter()
            .find(|r| r.stage == s && r.ok())
            .map(|r| r.images_per_s)
    };
    let inv = |s: Stage| rate_of(s).map(|r| 1.0 / r);
    let (predicted, limit) = if cuda {
        // Threads (read + decode) and the device (upload, kernel) overlap.
        let host = match (inv(Stage::Read), inv(Stage::Decode)) {
            (Some(a), Some(b)) => Some(1.0 / (a + b)),
            _ => None,
        };
        let groups = [
            (Stage::Decode, host),
            (Stage::Upload, rate_of(Stage::Upload)),
            (Stage::GpuAugment, rate_of(Stage::GpuAugment)),
        ];
        let slowest = groups
            .iter()
            .filter_map(|(s, r)| r.map(|r| (*s, r)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let complete = groups.iter().all(|g| g.1.is_some());
        let limit = slowest.map(|(s, _)| {
            // Within the host group, the larger of read and decode.
            if s == Stage::Decode && inv(Stage::Read) > inv(Stage::Decode) {
                Stage::Read
            } else {
                s
            }
        });
        (slowest.filter(|_| complete).map(|(_, r)| r), limit)
    } else {
        let parts = [Stage::Read, Stage::Decode, Stage::Augment].map(inv);
        let predicted = parts
            .iter()
            .all(Option::is_some)
            .then(|| 1.0 / parts.iter().flatten().sum::<f64>());
        let limit = [Stage::Read, Stage::Decode, Stage::Augment]
            .into_iter()
            .filter_map(|s| inv(s).map(|t| (s, t)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(s, _)| s);
        (predicted, limit)
    };
    Ok(BenchReport {
        dataset: dataset.dir().display().to_string(),
        records: dataset.len(),
        encoding: dataset.encoding().as_str().to_string(),
        output: format!(
            "{}x{}x{} {} {}",
            size.height,
            size.width,
            channels,
            match cfg.dtype {
                DType::U8 => "u8",
                DType::F16 => "f16",
                DType::F32 => "f32",
            },
            match cfg.layout {
                Layout::Nchw => "nchw",
                Layout::Nhwc => "nhwc",
            }
        ),
        policy: cfg.policy.describe(),
        threads,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
        batch: cfg.batch,
        device: ctx.device_name(),
        stages,
        predicted_images_per_s: predicted,
        limit,
        decode_mode: match (cfg.region.crop, cfg.region.scale) {
            (false, crate::decode::DecodeScale::Full) => "whole images".into(),
            (true, crate::decode::DecodeScale::Full) => "region".into(),
            (false, crate::decode::DecodeScale::Auto) => "scale auto".into(),
            (true, crate::decode::DecodeScale::Auto) => "region, scale auto".into(),
        },
        decoded_pixels_per_image: pixels.map(|p| p.0),
        source_pixels_per_image: pixels.map(|p| p.1),
    })
}

struct Ctx<'a> {
    dataset: &'a Arc<Dataset>,
    cfg: &'a BenchConfig,
    spec: &'a OutputSpec,
    pool: &'a rayon::ThreadPool,
    threads: usize,
    budget: Duration,
    limits: DecodeLimits,
    progress: Progress<'a>,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::pack::{pack_idx, IdxOptions};

    /// The bundled Fashion-MNIST test subset (1,000 raw 28×28), packed.
    fn small_dataset() -> (tempfile::TempDir, Arc<Dataset>) {
        let data =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist-small");
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("fm");
        pack_idx(
            &data.join("t10k-images-idx3-ubyte.gz"),
            &data.join("t10k-labels-idx1-ubyte.gz"),
            &out,
            &IdxOptions::default(),
        )
        .unwrap();
        let ds = Arc::new(Dataset::open(&out).unwrap());
        (tmp, ds)
    }

    #[test]
    fn runs_every_cpu_stage_on_bundled_fashion_mnist() {
        let (_tmp, ds) = small_dataset();
        let cfg = BenchConfig {
            batch: 64,
            threads: Some(2),
            seconds: 0.2,
            ..BenchConfig::default()
        };
        let seen = Mutex::new(Vec::new());
        let report = run(ds, &cfg, &|s, _| seen.lock().unwrap().push(s)).unwrap();
        let stages: Vec<Stage> = report.stages.iter().map(|s| s.stage).collect();
        // No device stages on the CPU path.
        assert_eq!(
            stages,
            [Stage::Read, Stage::Decode, Stage::Augment, Stage::EndToEnd]
        );
        for s in &report.stages {
            assert!(s.skipped.is_none(), "{:?}: {:?}", s.stage, s.skipped);
            assert!(s.images > 0 && s.images_per_s > 0.0, "{s:?}");
        }
        let shares: f64 = report.shares().iter().map(|s| s.1).sum();
        assert!((shares - 1.0).abs() < 1e-9);
        assert!(report.predicted_images_per_s.unwrap() > 0.0);
        assert!(report.limit.is_some());
        assert_eq!(report.output, "28x28x1 f32 nchw");
        assert!(seen.lock().unwrap().contains(&Stage::EndToEnd));
        let table = report.to_string();
        assert!(
            table.contains("end_to_end") && table.contains("limit:"),
            "{table}"
        );
        assert!(serde_json::to_string(&report)
            .unwrap()
            .contains("\"stage\":\"decode\""));
    }

    #[test]
    fn bad_settings_are_errors() {
        let (_tmp, ds) = small_dataset();
        let quiet = |_: Stage, _: f64| {};
        for cfg in [
            BenchConfig {
                batch: 0,
                ..BenchConfig::default()
            },
            BenchConfig {
                threads: Some(0),
                ..BenchConfig::default()
            },
            BenchConfig {
                seconds: 0.0,
                ..BenchConfig::default()
            },
            BenchConfig {
                channels: Some(2),
                ..BenchConfig::default()
            },
        ] {
            assert!(run(ds.clone(), &cfg, &quiet).is_err());
        }
    }

    #[test]
    fn cuda_stages_report_why_they_were_skipped_without_a_gpu() {
        if crate::cuda::Device::new(0).is_ok() {
            return; // a GPU is there: the device stages run instead
        }
        let (_tmp, ds) = small_dataset();
        let cfg = BenchConfig {
            device: Device::Cuda(0),
            seconds: 0.1,
            threads: Some(1),
            stages: vec![Stage::Upload, Stage::GpuAugment, Stage::EndToEnd],
            ..BenchConfig::default()
        };
        let report = run(ds, &cfg, &|_, _| {}).unwrap();
        assert_eq!(report.stages.len(), 3);
        for s in &report.stages {
            assert!(s.skipped.is_some(), "{s:?}");
        }
        assert!(report.to_string().contains("skipped"));
    }
}

//! The results of a run: each stage's [`StageRate`], the decode workers'
//! [`WorkerTime`], and the [`BenchReport`] with its table (`Display`).

use std::fmt;

use serde::Serialize;

use super::config::Stage;

/// One stage's measurement.
#[derive(Clone, Debug, Serialize)]
pub struct StageRate {
    /// Which stage.
    pub stage: Stage,
    /// Samples processed while measuring.
    pub images: u64,
    /// Seconds the rate is computed from (busy seconds / threads for the
    /// CPU stages, device or wall seconds for the others).
    pub seconds: f64,
    /// Bytes processed (see the module docs for what each stage counts).
    pub bytes: u64,
    /// Samples per second.
    pub images_per_s: f64,
    /// Bytes per second.
    pub bytes_per_s: f64,
    /// End-to-end only: process CPU time over wall time while measuring,
    /// i.e. the cores kept busy on average.
    pub cores_busy: Option<f64>,
    /// End-to-end only, where the kernel tells (Linux): of the decode
    /// workers' wall time, the fractions running, waiting for a core held by
    /// other work, and idle (waiting for work: the pipeline's own stalls).
    pub workers: Option<WorkerTime>,
    /// Why the stage was not measured, when it was not.
    pub skipped: Option<String>,
}

impl StageRate {
    pub(super) fn measured(stage: Stage, images: u64, seconds: f64, bytes: u64) -> StageRate {
        let per = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        StageRate {
            stage,
            images,
            seconds,
            bytes,
            images_per_s: per(images),
            bytes_per_s: per(bytes),
            cores_busy: None,
            workers: None,
            skipped: None,
        }
    }

    pub(super) fn skipped(stage: Stage, why: impl Into<String>) -> StageRate {
        StageRate {
            stage,
            images: 0,
            seconds: 0.0,
            bytes: 0,
            images_per_s: 0.0,
            bytes_per_s: 0.0,
            cores_busy: None,
            workers: None,
            skipped: Some(why.into()),
        }
    }

    pub(super) fn ok(&self) -> bool {
        self.skipped.is_none() && self.images_per_s > 0.0
    }
}

/// How the loader's decode workers spent the measured wall time.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct WorkerTime {
    /// Fraction of the time on a core.
    pub running: f64,
    /// Fraction of the time runnable but waiting for a core (other threads
    /// or processes held them).
    pub waiting: f64,
    /// Fraction of the time with nothing to do.
    pub idle: f64,
}

/// The result of [`run`](super::run): each stage alone, the prediction they make, and
/// the loader's measured rate.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The dataset directory.
    pub dataset: String,
    /// Records in the dataset.
    pub records: u64,
    /// Its encoding (`raw`, `png`, `jpeg`).
    pub encoding: String,
    /// Output per sample, e.g. `224x224x3 f32 nchw`.
    pub output: String,
    /// Policy, in human units.
    pub policy: String,
    /// Worker threads.
    pub threads: usize,
    /// Cores of the machine (available parallelism).
    pub cores: usize,
    /// The machine's load average (1, 5, 15 min) when the run ended, where
    /// known: other work on the machine shows here.
    pub load_average: Option<String>,
    /// Samples per batch.
    pub batch: usize,
    /// `cpu` or `cuda:N (name)`.
    pub device: String,
    /// Each stage alone, in pipeline order (end-to-end last).
    pub stages: Vec<StageRate>,
    /// The loader rate the stages predict (see the module docs).
    pub predicted_images_per_s: Option<f64>,
    /// The stage with the largest share of the time, i.e. the limit.
    pub limit: Option<Stage>,
    /// How JPEGs were decoded: `whole images`, `region`, `region, scale auto`.
    pub decode_mode: String,
    /// Decode stage: pixels decoded per image (a region, maybe scaled).
    pub decoded_pixels_per_image: Option<f64>,
    /// Decode stage: pixels per image of the sources at full size.
    pub source_pixels_per_image: Option<f64>,
}

impl BenchReport {
    /// The measured end-to-end rate, if it ran.
    pub fn end_to_end(&self) -> Option<&StageRate> {
        self.stages
            .iter()
            .find(|s| s.stage == Stage::EndToEnd && s.ok())
    }

    /// Each measured stage's share of the per-image time, in `[0, 1]`
    /// (end-to-end excluded).
    pub fn shares(&self) -> Vec<(Stage, f64)> {
        let parts: Vec<(Stage, f64)> = self
            .stages
            .iter()
            .filter(|s| s.stage != Stage::EndToEnd && s.ok())
            .map(|s| (s.stage, 1.0 / s.images_per_s))
            .collect();
        let total: f64 = parts.iter().map(|p| p.1).sum();
        parts
            .into_iter()
            .map(|(s, t)| (s, if total > 0.0 { t / total } else { 0.0 }))
            .collect()
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dataset {} ({} records, {}) -> {}, batch {}, {} threads, {}",
            self.dataset,
            self.records,
            self.encoding,
            self.output,
            self.batch,
            self.threads,
            self.device
        )?;
        writeln!(f, "policy:")?;
        for line in self.policy.lines() {
            writeln!(f, "  {line}")?;
        }
        if let (Some(d), Some(s)) = (self.decoded_pixels_per_image, self.source_pixels_per_image) {
            writeln!(
                f,
                "decode ({}): {d:.0} pixels per image of {s:.0} ({:.1}% saved)",
                self.decode_mode,
                if s > 0.0 { 100.0 * (1.0 - d / s) } else { 0.0 }
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<13} {:>12} {:>11} {:>12} {:>7}",
            "stage", "images/s", "MB/s", "us/image", "share"
        )?;
        let shares = self.shares();
        for s in &self.stages {
            if let Some(why) = &s.skipped {
                writeln!(f, "{:<13} skipped: {why}", s.stage.name())?;
                continue;
            }
            let share = shares
                .iter()
                .find(|p| p.0 == s.stage)
                .map_or(String::new(), |p| format!("{:.0}%", p.1 * 100.0));
            let us = if s.images_per_s > 0.0 {
                1e6 / s.images_per_s
            } else {
                f64::INFINITY
            };
            if s.stage == Stage::EndToEnd {
                writeln!(f, "{}", "-".repeat(59))?;
                if let Some(p) = self.predicted_images_per_s {
                    writeln!(
                        f,
                        "{:<13} {:>12.0} {:>11} {:>12.1}",
                        "predicted",
                        p,
                        "",
                        1e6 / p
                    )?;
                }
            }
            writeln!(
                f,
                "{:<13} {:>12.0} {:>11.1} {:>12.1} {:>7}",
                s.stage.name(),
                s.images_per_s,
                s.bytes_per_s / 1e6,
                us,
                share
            )?;
        }
        if let Some(e) = self.end_to_end() {
            writeln!(f)?;
            if let Some(p) = self.predicted_images_per_s {
                writeln!(
                    f,
                    "end-to-end is {:.0}% of the rate the stages predict",
                    100.0 * e.images_per_s / p
                )?;
            }
            if let Some(c) = e.cores_busy {
                writeln!(
                    f,
                    "end-to-end kept {c:.2} cores busy ({} threads, {} cores{})",
                    self.threads,
                    self.cores,
                    self.load_average
                        .as_deref()
                        .map_or(String::new(), |l| format!(", load average {l}"))
                )?;
                let usable = self.threads.min(self.cores).max(1) as f64;
                if let (Some(p), true) = (self.predicted_images_per_s, self.device == "cpu") {
                    if c > 0.0 {
                        writeln!(
                            f,
                            "per busy core: end-to-end {:.0} images/s, stages predict {:.0} ({:.0}%): \
                             below 100% the pipeline itself loses time, a low share of busy cores \
                             with workers waiting for a core means other work holds the machine",
                            e.images_per_s / c,
                            p / usable,
                            100.0 * (e.images_per_s / c) / (p / usable)
                        )?;
                    }
                }
            }
            if let Some(w) = e.workers {
                writeln!(
                    f,
                    "decode workers: {:.0}% running, {:.0}% waiting for a core (other work), {:.0}% idle (waiting for work)",
                    w.running * 100.0,
                    w.waiting * 100.0,
                    w.idle * 100.0
                )?;
            }
        }
        if let Some(l) = self.limit {
            let what = match l {
                Stage::Read => "reading (disk or page cache, crc32c)",
                Stage::Decode => {
                    "decoding (more threads, smaller images, or raw/PNG instead of JPEG)"
                }
                Stage::Augment => {
                    "augmentation (a smaller output, u8/f16 output, or --device cuda)"
                }
                Stage::Upload => "the host-to-device copy (PCIe)",
                Stage::GpuAugment => "the augmentation kernel",
                Stage::EndToEnd => "the loader",
            };
            writeln!(f, "limit: {} — {what}", l.name())?;
        }
        Ok(())
    }
}

//! Where the time goes: the throughput ceiling of each pipeline stage measured
//! alone on a dataset, beside the end-to-end loader rate (`metaug bench`).
//!
//! Stages, each run on its own on a pool of `threads` threads:
//!
//! | stage | work per sample | bytes counted |
//! | --- | --- | --- |
//! | read | [`Dataset::record`]: locate the record in the mmap, check its crc32c (touches every payload byte) | payload |
//! | decode | [`decode`](crate::decode::decode()) of a record already located | decoded pixels |
//! | augment | [`Policy::sample_hard`] + [`augment_into`] of a decoded image into a batch buffer | output sample |
//! | upload (cuda) | pinned host → device copy of a batch of decoded sources | source pixels |
//! | gpu augment (cuda) | the fused kernel on a batch already on the device | sources read + output written |
//! | end-to-end | the [`Loader`] itself, batches consumed as they come | output |
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

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::decode::{decode, decode_region, DecodeLimits, Pixels, RegionDecode};
use crate::error::{Error, Result};
use crate::loader::{Device, Loader};
use crate::ops::philox::{PhiloxStream, STREAM_NOISE};
use crate::ops::{augment_into, DType, Layout, OutputSpec, Size};
use crate::policy::Policy;
use crate::shard::Dataset;

/// A stage of the pipeline, as `metaug bench` measures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Locating records in the memory-mapped shards and checking their crc32c.
    Read,
    /// Decoding records to pixels.
    Decode,
    /// The fused CPU augmentation into the output format.
    Augment,
    /// Pinned host to device copies of decoded sources (CUDA only).
    Upload,
    /// The fused augmentation kernel on the device (CUDA only).
    GpuAugment,
    /// The loader, all stages together.
    EndToEnd,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Read,
        Stage::Decode,
        Stage::Augment,
        Stage::Upload,
        Stage::GpuAugment,
        Stage::EndToEnd,
    ];

    /// Short name (`read`, `decode`, `augment`, `upload`, `gpu_augment`, `end_to_end`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Decode => "decode",
            Stage::Augment => "augment",
            Stage::Upload => "upload",
            Stage::GpuAugment => "gpu_augment",
            Stage::EndToEnd => "end_to_end",
        }
    }

    /// Parses a [`name`](Stage::name) (`e2e` is accepted for `end_to_end`).
    pub fn parse(s: &str) -> Result<Stage> {
        let s = s.trim();
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .or((s == "e2e").then_some(Stage::EndToEnd))
            .ok_or_else(|| {
                Error::invalid(
                    "stage",
                    format!("{s:?}: expected read, decode, augment, upload, gpu_augment or e2e"),
                )
            })
    }

    fn on_device(self) -> bool {
        matches!(self, Stage::Upload | Stage::GpuAugment)
    }
}

/// What to measure and how.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Samples per batch (the loader's, and the unit of the device stages).
    pub batch: usize,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Output size (default: the first record's).
    pub size: Option<Size>,
    /// Output channels (default: the first record's).
    pub channels: Option<u32>,
    /// Output element type.
    pub dtype: DType,
    /// Output layout.
    pub layout: Layout,
    /// Per-channel mean and std (default: none, i.e. 0 and 1).
    pub normalize: Option<(Vec<f32>, Vec<f32>)>,
    /// Augmentation policy.
    pub policy: Policy,
    /// Seed of the draws and the loader's order.
    pub seed: u64,
    /// CPU, or a CUDA device.
    pub device: Device,
    /// Measuring time per stage, after a short warm-up.
    pub seconds: f64,
    /// The stages to run (default: all that apply to the device).
    pub stages: Vec<Stage>,
    /// At most this many decoded bytes are kept for the augment and device
    /// stages (which cycle over them).
    pub max_decoded_bytes: u64,
    /// How much of each JPEG the decode stage and the loader decode.
    pub region: RegionDecode,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            batch: 256,
            threads: None,
            size: None,
            channels: None,
            dtype: DType::F32,
            layout: Layout::Nchw,
            normalize: None,
            policy: Policy::default_policy(),
            seed: 0,
            device: Device::Cpu,
            seconds: 3.0,
            stages: Stage::ALL.to_vec(),
            max_decoded_bytes: 256 << 20,
            region: RegionDecode::default(),
        }
    }
}

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
    fn measured(stage: Stage, images: u64, seconds: f64, bytes: u64) -> StageRate {
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

    fn skipped(stage: Stage, why: impl Into<String>) -> StageRate {
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

    fn ok(&self) -> bool {
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

/// The result of [`run`]: each stage alone, the prediction they make, and
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

/// CPU time consumed by the calling thread (`CLOCK_THREAD_CPUTIME_ID`):
/// unlike a wall clock, it does not count the time the thread waits while
/// other processes hold the cores, so a stage's cost reads the same on a
/// busy machine.
fn thread_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed by the whole process so far, all threads
/// (`CLOCK_PROCESS_CPUTIME_ID`): unlike wall time, it does not grow while
/// other processes hold the cores. Zero where the clock is unavailable.
pub fn process_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The CPU-time clock `id` (zero when it cannot be read).
fn cpu_clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both callers pass clock
    // ids every Linux and macOS kernel knows.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Time on a core and time waiting for one (runnable, queued behind other
/// work), summed over this process's threads whose name starts with
/// `prefix`, from `/proc/self/task/*/schedstat` (Linux; `None` elsewhere).
fn threads_schedstat(prefix: &str) -> Option<(Duration, Duration, usize)> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let (mut run, mut wait, mut n) = (0u64, 0u64, 0usize);
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        let mut f = stat
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        run += f.next().unwrap_or(0);
        wait += f.next().unwrap_or(0);
        n += 1;
    }
    (n > 0).then(|| (Duration::from_nanos(run), Duration::from_nanos(wait), n))
}

/// A stopwatch of the calling thread's CPU time.
struct CpuTimer(Duration);

impl CpuTimer {
    fn start() -> CpuTimer {
        CpuTimer(thread_cpu_time())
    }

    fn elapsed(&self) -> Duration {
        thread_cpu_time().saturating_sub(self.0)
    }
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

/// Samples per work item of a CPU stage.
const GROUP: u64 = 16;

/// Busy time and counts gathered by the workers of one CPU stage.
#[derive(Default)]
struct Tally {
    busy_ns: AtomicU64,
    images: AtomicU64,
    bytes: AtomicU64,
}

impl Ctx<'_> {
    /// Runs `work` on samples `0, 1, 2, ...` (cycling over the dataset) on
    /// the pool until the budget is spent: first a warm-up of one sample per
    /// thread, not counted. `work` returns the time of the stage's own part
    /// and the bytes it counts.
    fn cpu_stage<S: Send>(
        &self,
        stage: Stage,
        state: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, &[u64]) -> Result<(Duration, u64)> + Sync,
    ) -> Result<StageRate> {
        (self.progress)(stage, 0.0);
        let n = self.dataset.len();
        let states: Vec<Mutex<S>> = (0..self.threads).map(|_| Mutex::new(state())).collect();
        // Work items are groups of GROUP consecutive samples, timed as one:
        // the thread CPU clock is a system call, too slow to read around
        // each 28×28 sample.
        let run = |from: u64, groups: u64, tally: Option<&Tally>, deadline: Option<Instant>| {
            self.pool.install(|| {
                (from..from + groups).into_par_iter().try_for_each(|g| {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(());
                    }
                    let samples: Vec<u64> = (g * GROUP..(g + 1) * GROUP).map(|k| k % n).collect();
                    let slot = rayon::current_thread_index().unwrap_or(0) % states.len();
                    let mut s = states[slot].lock().unwrap_or_else(|p| p.into_inner());
                    let (t, bytes) = work(&mut s, &samples)?;
                    if let Some(tally) = tally {
                        tally
                            .busy_ns
                            .fetch_add(t.as_nanos() as u64, Ordering::Relaxed);
                        tally.images.fetch_add(GROUP, Ordering::Relaxed);
                        tally.bytes.fetch_add(bytes, Ordering::Relaxed);
                    }
                    Ok::<(), Error>(())
                })
            })
        };
        // Warm-up: one group per thread.
        run(0, self.threads as u64, None, None)?;
        let tally = Tally::default();
        let start = Instant::now();
        let deadline = start + self.budget;
        // Chunks of a few groups per thread; past the deadline the rest of a
        // chunk is skipped, so the overshoot is one group per thread.
        let chunk = (self.threads * 4) as u64;
        let mut next = self.threads as u64;
        while Instant::now() < deadline {
            run(next, chunk, Some(&tally), Some(deadline))?;
            next += chunk;
            (self.progress)(
                stage,
                (start.elapsed().as_secs_f64() / self.cfg.seconds).min(1.0),
            );
        }
        let busy = tally.busy_ns.load(Ordering::Relaxed) as f64 * 1e-9 / self.parallelism() as f64;
        Ok(StageRate::measured(
            stage,
            tally.images.load(Ordering::Relaxed),
            busy,
            tally.bytes.load(Ordering::Relaxed),
        ))
    }

    /// Threads that can run at once: `threads`, at most the cores.
    fn parallelism(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.threads.min(cores).max(1)
    }

    fn read(&self) -> Result<StageRate> {
        self.cpu_stage(
            Stage::Read,
            || (),
            |_, samples| {
                let t = CpuTimer::start();
                let mut bytes = 0;
                for &i in samples {
                    bytes += self.dataset.record(i)?.bytes.len() as u64;
                }
                Ok((t.elapsed(), bytes))
            },
        )
    }

    /// What the loader decodes of each record: the region its sample's map
    /// reads (the policy's draws come first, as in the loader). Also
    /// returns the pixels decoded and the sources' full pixels, per image.
    fn decode(&self) -> Result<(StageRate, (f64, f64))> {
        let channels = self.spec.channels;
        let (decoded, full, n) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let rate = self.cpu_stage(
            Stage::Decode,
            || (),
            |_, samples| {
                let records = samples
                    .iter()
                    .map(|&i| self.dataset.record(i))
                    .collect::<Result<Vec<_>>>()?;
                let t = CpuTimer::start();
                let mut bytes = 0;
                for (r, &i) in records.iter().zip(samples) {
                    let params = self.cfg.policy.sample_hard(self.cfg.seed, 0, i);
                    let (p, window) = decode_region(
                        r,
                        channels,
                        &self.limits,
                        &params.geometry,
                        self.spec.size,
                        self.cfg.region,
                    )
                    .map_err(|e| {
                        Error::record(self.dataset.shard_path(r.shard), r.index, e.to_string())
                    })?;
                    let v = p.view();
                    bytes += v.data.len() as u64;
                    decoded.fetch_add(v.height as u64 * v.width as u64, Ordering::Relaxed);
                    let f = window.full;
                    full.fetch_add(f.height as u64 * f.width as u64, Ordering::Relaxed);
                }
                n.fetch_add(records.len() as u64, Ordering::Relaxed);
                Ok((t.elapsed(), bytes))
            },
        )?;
        let n = n.into_inner().max(1) as f64;
        let px = (
            decoded.into_inner() as f64 / n,
            full.into_inner() as f64 / n,
        );
        Ok((rate, px))
    }

    /// Decoded copies of the first records, up to `max_decoded_bytes`, for
    /// the stages that start from pixels.
    fn decoded_sources(&self) -> Result<Vec<Pixels<'static>>> {
        let n = self.dataset.len();
        let channels = self.spec.channels;
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut next = 0u64;
        let step = (self.threads * 16) as u64;
        while next < n && total < self.cfg.max_decoded_bytes {
            let end = (next + step).min(n);
            let batch: Vec<Pixels<'static>> = self.pool.install(|| {
                (next..end)
                    .into_par_iter()
                    .map(|i| {
                        let r = self.dataset.record(i)?;
                        decode(&r, channels, &self.limits)
                            .map(Pixels::into_owned)
                            .map_err(|e| {
                                Error::record(
                                    self.dataset.shard_path(r.shard),
                                    r.index,
                                    e.to_string(),
                                )
                            })
                    })
                    .collect::<Result<_>>()
            })?;
            for p in batch {
                total += p.view().data.len() as u64;
                out.push(p);
                if total >= self.cfg.max_decoded_bytes {
                    break;
                }
            }
            next = end;
        }
        Ok(out)
    }

    fn augment(&self, sources: &[Pixels<'static>]) -> Result<StageRate> {
        let sample_bytes = self.spec.sample_bytes();
        // Each worker writes into its own ring of output slots, as large as
        // its share of a batch, so the stores go to memory as the loader's do.
        let slots = self.cfg.batch.div_ceil(self.threads).max(1);
        let (seed, policy, spec) = (self.cfg.seed, &self.cfg.policy, self.spec);
        self.cpu_stage(
            Stage::Augment,
            || (vec![0u8; slots * sample_bytes], 0usize),
            |(buf, at), samples| {
                let t = CpuTimer::start();
                for &i in samples {
                    let src = sources[(i % sources.len() as u64) as usize].view();
                    let out = &mut buf[*at * sample_bytes..(*at + 1) * sample_bytes];
                    *at = (*at + 1) % slots;
                    let params = policy.sample_hard(seed, 0, i);
                    let noise = PhiloxStream::new(seed, 0, i, STREAM_NOISE);
                    augment_into(src, &params, noise, spec, out);
                }
                Ok((t.elapsed(), samples.len() as u64 * sample_bytes as u64))
            },
        )
    }

    fn end_to_end(&self) -> StageRate {
        match self.loader_rate() {
            Ok(r) => r,
            Err(e) => StageRate::skipped(Stage::EndToEnd, e.to_string()),
        }
    }

    /// The loader over as many epochs as the budget needs: batches during a
    /// short warm-up (at least one, and a quarter of the budget at most
    /// 1 s) are not counted.
    fn loader_rate(&self) -> Result<StageRate> {
        (self.progress)(Stage::EndToEnd, 0.0);
        let spec = self.spec;
        let loader = Loader::builder(self.dataset.clone())
            .batch_size(self.cfg.batch)
            .size(spec.size.height, spec.size.width)
            .channels(spec.channels)
            .dtype(spec.dtype)
            .layout(spec.layout)
            .normalize(spec.mean.clone(), spec.std.clone())
            .policy(self.cfg.policy)
            .region_decode(self.cfg.region)
            .device(self.cfg.device)
            .threads(self.threads)
            .seed(self.cfg.seed)
            .epochs(1 << 30)
            .build()?;
        let warm = Duration::from_secs_f64((self.cfg.seconds / 4.0).min(1.0));
        let t0 = Instant::now();
        let mut start = None;
        let (mut images, mut bytes) = (0u64, 0u64);
        for batch in loader {
            let batch = batch?;
            match start {
                None if t0.elapsed() < warm => continue,
                None => {
                    start = Some((
                        Instant::now(),
                        process_cpu_time(),
                        threads_schedstat("metaug-decode"),
                    ))
                }
                Some((s, cpu0, sched0)) => {
                    if let Some(d) = batch.device() {
                        // Count a device batch once its kernel is done.
                        d.ready_event()
                            .synchronize()
                            .map_err(|e| Error::Cuda(format!("cuEventSynchronize: {e:?}")))?;
                    }
                    images += batch.len() as u64;
                    bytes += (batch.len() * spec.sample_bytes()) as u64;
                    let e = s.elapsed();
                    (self.progress)(
                        Stage::EndToEnd,
                        (e.as_secs_f64() / self.cfg.seconds).min(1.0),
                    );
                    if e >= self.budget {
                        let cpu = process_cpu_time().saturating_sub(cpu0);
                        let mut r =
                            StageRate::measured(Stage::EndToEnd, images, e.as_secs_f64(), bytes);
                        r.cores_busy = Some(cpu.as_secs_f64() / e.as_secs_f64());
                        if let (Some((r0, w0, _)), Some((r1, w1, n))) =
                            (sched0, threads_schedstat("metaug-decode"))
                        {
                            let total = e.as_secs_f64() * n as f64;
                            let running = (r1.saturating_sub(r0)).as_secs_f64() / total;
                            let waiting = (w1.saturating_sub(w0)).as_secs_f64() / total;
                            r.workers = Some(WorkerTime {
                                running,
                                waiting,
                                idle: (1.0 - running - waiting).max(0.0),
                            });
                        }
                        return Ok(r);
                    }
                }
            }
        }
        Err(Error::Pipeline("the loader ended early".into()))
    }

    fn device_name(&self) -> String {
        match self.cfg.device {
            Device::Cpu => "cpu".into(),
            Device::Cuda(n) => format!("cuda:{n}"),
        }
    }

    fn device_stage(&self, stage: Stage, sources: &[Pixels<'static>]) -> StageRate {
        (self.progress)(stage, 0.0);
        match self.try_device_stage(stage, sources) {
            Ok(r) => r,
            Err(e) => StageRate::skipped(stage, e.to_string()),
        }
    }

    /// Upload: one batch of decoded sources (the first `batch` of them) in
    /// pinned memory, copied to the device again and again. GPU augment: the
    /// fused kernel re-run on that batch already on the device. Both timed
    /// on the host clock around groups of 8 operations closed by a stream
    /// synchronise, after a warm-up (module load, NVRTC, first touch).
    fn try_device_stage(&self, stage: Stage, sources: &[Pixels<'static>]) -> Result<StageRate> {
        use crate::cuda::{GpuAugmenter, MAX_BATCH};
        let Device::Cuda(ordinal) = self.cfg.device else {
            return Err(Error::invalid("device", "not a CUDA device"));
        };
        if sources.is_empty() {
            return Err(Error::invalid("dataset", "no decoded source"));
        }
        let dev = crate::cuda::Device::new(ordinal)?;
        let cuda = |what: &'static str| {
            move |e: cudarc::driver::DriverError| Error::Cuda(format!("{what}: {e:?}"))
        };
        let b = self.cfg.batch.min(MAX_BATCH);
        let views: Vec<_> = (0..b).map(|k| sources[k % sources.len()].view()).collect();
        let src_bytes: usize = views.iter().map(|v| v.data.len()).sum();
        let timed = |op: &mut dyn FnMut() -> Result<()>,
                     sync: &dyn Fn() -> Result<()>|
         -> Result<(u64, f64)> {
            op()?;
            sync()?;
            let start = Instant::now();
            let mut ops = 0u64;
            while start.elapsed() < self.budget {
                for _ in 0..8 {
                    op()?;
                }
                sync()?;
                ops += 8;
                (self.progress)(
                    stage,
                    (start.elapsed().as_secs_f64() / self.cfg.seconds).min(1.0),
                );
            }
            Ok((ops, start.elapsed().as_secs_f64()))
        };
        match stage {
            Stage::Upload => {
                let stream = dev.new_stream()?;
                // SAFETY: uninitialised pinned memory, every byte written
                // below before it is read; u8 has no invalid values.
                let mut host = unsafe { dev.context().alloc_pinned::<u8>(src_bytes.max(1)) }
                    .map_err(cuda("cuMemHostAlloc"))?;
                {
                    let h = host.as_mut_slice().map_err(cuda("pinned buffer"))?;
                    let mut at = 0;
                    for v in &views {
                        h[at..at + v.data.len()].copy_from_slice(v.data);
                        at += v.data.len();
                    }
                }
                // SAFETY: device memory only written by the copies below.
                let mut dst =
                    unsafe { stream.alloc::<u8>(src_bytes.max(1)) }.map_err(cuda("cuMemAlloc"))?;
                let src = host.as_slice().map_err(cuda("pinned buffer"))?;
                let (ops, secs) = timed(
                    &mut || {
                        stream
                            .memcpy_htod(src, &mut dst)
                            .map_err(cuda("cuMemcpyHtoDAsync"))
                    },
                    &|| stream.synchronize().map_err(cuda("cuStreamSynchronize")),
                )?;
                Ok(StageRate::measured(
                    stage,
                    ops * b as u64,
                    secs,
                    ops * src_bytes as u64,
                ))
            }
            Stage::GpuAugment => {
                let spec = self.spec;
                let mut aug = GpuAugmenter::new(&dev)?;
                aug.warm_up(spec)?;
                let seed = self.cfg.seed;
                let params: Vec<_> = (0..b as u64)
                    .map(|i| self.cfg.policy.sample_hard(seed, 0, i))
                    .collect();
                let samples: Vec<u64> = (0..b as u64).collect();
                let mut out = aug.augment_batch(&views, &params, &samples, seed, 0, spec)?;
                let stream = aug.compute_stream().clone();
                let (ops, secs) = timed(&mut || aug.relaunch_last(&mut out), &|| {
                    stream.synchronize().map_err(cuda("cuStreamSynchronize"))
                })?;
                let moved = src_bytes + b * self.spec.sample_bytes();
                Ok(StageRate::measured(
                    stage,
                    ops * b as u64,
                    secs,
                    ops * moved as u64,
                ))
            }
            _ => Err(Error::invalid("stage", "not a device stage")),
        }
    }
}

#[cfg(test)]
mod tests {
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
    fn stage_names_parse() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.name()).unwrap(), s);
        }
        assert_eq!(Stage::parse(" e2e ").unwrap(), Stage::EndToEnd);
        assert!(Stage::parse("warp").is_err());
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

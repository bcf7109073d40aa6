//! `Loader::builder(dataset)…build()`: by-value setters, one validation.

use std::sync::Arc;

use crate::decode::{DecodeLimits, DecodeScale, RegionDecode};
use crate::error::{Error, Result};
use crate::loader::plan::{PlanConfig, Position};
use crate::loader::Loader;
use crate::ops::{DType, Layout, OutputSpec, Size};
use crate::policy::Policy;
use crate::shard::Dataset;

/// Where augmentation runs and batches live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// Host memory, CPU augmentation.
    #[default]
    Cpu,
    /// CUDA device with this ordinal: batches in device memory.
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = Error;

    /// Parses `cpu`, `cuda` (ordinal 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    Error::invalid("device", format!("{s:?}: expected cpu, cuda or cuda:N"))
                }),
        }
    }
}

/// What to do with a record that fails its checksum or does not decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BadRecords {
    /// Stop: the error reaches the caller, naming the shard and record.
    #[default]
    Fail,
    /// Leave the sample out of its batch and count it ([`crate::loader::Batch::skipped`]).
    Skip,
}

/// Everything a loader needs, validated.
#[derive(Clone, Debug)]
pub(crate) struct LoaderConfig {
    pub plan: PlanConfig,
    pub spec: OutputSpec,
    pub policy: Policy,
    pub device: Device,
    pub emulator: Option<crate::cuda::Emulator>,
    pub threads: usize,
    pub prefetch: usize,
    pub first_epoch: u64,
    pub end_epoch: u64,
    pub start: Position,
    pub bad_records: BadRecords,
    pub limits: DecodeLimits,
    pub region: RegionDecode,
    pub panic_on_sample: Option<u64>,
}

/// Builds a [`Loader`]. Start with [`Loader::builder`].
#[derive(Clone, Debug)]
pub struct LoaderBuilder {
    dataset: Arc<Dataset>,
    batch_size: usize,
    size: Option<Size>,
    channels: Option<u32>,
    dtype: DType,
    layout: Layout,
    normalize: Option<(Vec<f32>, Vec<f32>)>,
    policy: Policy,
    device: Device,
    emulator: Option<crate::cuda::Emulator>,
    threads: Option<usize>,
    prefetch: usize,
    seed: u64,
    epoch: u64,
    epochs: u64,
    shuffle: bool,
    drop_last: bool,
    rank: usize,
    world_size: usize,
    bad_records: BadRecords,
    resume: Option<Position>,
    limits: DecodeLimits,
    region: RegionDecode,
    panic_on_sample: Option<u64>,
}

impl LoaderBuilder {
    pub(crate) fn new(dataset: Arc<Dataset>) -> Self {
        LoaderBuilder {
            dataset,
            batch_size: 32,
            size: None,
            channels: None,
            dtype: DType::F32,
            layout: Layout::Nchw,
            normalize: None,
            policy: Policy::none(),
            device: Device::Cpu,
            emulator: None,
            threads: None,
            prefetch: 2,
            seed: 0,
            epoch: 0,
            epochs: 1,
            shuffle: true,
            drop_last: false,
            rank: 0,
            world_size: 1,
            bad_records: BadRecords::Fail,
            resume: None,
            limits: DecodeLimits::default(),
            region: RegionDecode::default(),
            panic_on_sample: None,
        }
    }

    /// Samples per batch (default 32).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Output image size (default: the first record's size).
    pub fn size(mut self, height: u32, width: u32) -> Self {
        self.size = Some(Size::new(height, width));
        self
    }

    /// Output channels, 1 or 3 (default: the first record's channels).
    pub fn channels(mut self, c: u32) -> Self {
        self.channels = Some(c);
        self
    }

    /// Output element type (default f32).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// Output layout (default NCHW).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Per-channel normalisation `(x − mean) / std`, with `x` in [0, 1]
    /// (default: mean 0, std 1).
    pub fn normalize(mut self, mean: Vec<f32>, std: Vec<f32>) -> Self {
        self.normalize = Some((mean, std));
        self
    }

    /// Augmentation policy, applied in hard mode (default: none).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// CPU or CUDA device (default CPU).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Runs the CUDA path (staging, launches, device batches) on the CPU
    /// [`Emulator`](crate::cuda::Emulator) instead of a GPU: for tests of
    /// the GPU path on machines without one. Overrides [`device`](Self::device);
    /// batches are device batches whose [`Batch::device`](crate::loader::Batch::device)
    /// is `None` (there is no CUDA buffer) but [`Batch::to_host_bytes`](crate::loader::Batch::to_host_bytes)
    /// works.
    pub fn emulated_device(mut self, emulator: crate::cuda::Emulator) -> Self {
        self.emulator = Some(emulator);
        self
    }

    /// Decode and augmentation threads (default: the machine's cores).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Ready batches kept waiting ahead of the consumer (default 2).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// Seed of every random choice: order, augmentation, noise (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// First epoch (default 0). The epoch keys the order and augmentation.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// Number of epochs to stream, from the first (default 1).
    pub fn epochs(mut self, n: u64) -> Self {
        self.epochs = n;
        self
    }

    /// Shuffle each epoch (default true).
    pub fn shuffle(mut self, on: bool) -> Self {
        self.shuffle = on;
        self
    }

    /// Drop the samples that would make a short batch (default false).
    pub fn drop_last(mut self, on: bool) -> Self {
        self.drop_last = on;
        self
    }

    /// This process's rank and the number of ranks (default 0 of 1).
    pub fn rank(mut self, rank: usize, world_size: usize) -> Self {
        self.rank = rank;
        self.world_size = world_size;
        self
    }

    /// What to do with bad records (default: fail).
    pub fn bad_records(mut self, policy: BadRecords) -> Self {
        self.bad_records = policy;
        self
    }

    /// Start at a saved [`Loader::position`] instead of the first epoch's
    /// first batch.
    pub fn resume(mut self, position: Position) -> Self {
        self.resume = Some(position);
        self
    }

    /// Limits on decoded image size (default: [`DecodeLimits::default`]).
    pub fn decode_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How much of each JPEG is decoded (default: only the region each
    /// sample's map reads, at full resolution, which gives bit for bit the
    /// batches of a whole-image decode; see
    /// [`decode::region`](crate::decode::decode_region)).
    /// [`RegionDecode::WHOLE`] decodes whole images. PNG and raw records are
    /// always decoded whole.
    pub fn region_decode(mut self, mode: RegionDecode) -> Self {
        self.region = mode;
        self
    }

    /// Shorthand for the scale of [`region_decode`](Self::region_decode):
    /// [`DecodeScale::Auto`] decodes each JPEG at the largest `1/2^k`
    /// (k ≤ 3) at which its crop keeps at least the output's resolution
    /// along both axes, in the DCT domain. Opt-in and **not bit-exact**:
    /// on the 300 ImageNet photos at 112×112 output it decodes about a fifth
    /// of the pixels, and the samples differ from a full decode's by a mean
    /// of about 4 levels of 255 (max 205 at sharp edges: the reduced IDCT
    /// filters where bilinear sampling of the full image aliases; see
    /// BENCHMARKS.md).
    pub fn decode_scale(mut self, scale: DecodeScale) -> Self {
        self.region.scale = scale;
        self
    }

    /// Fault injection for tests: the worker that decodes sample `index`
    /// panics. The panic must reach the caller as an error.
    #[doc(hidden)]
    pub fn panic_on_sample(mut self, index: u64) -> Self {
        self.panic_on_sample = Some(index);
        self
    }

    /// Validates every option and starts the pipeline.
    pub fn build(self) -> Result<Loader> {
        let cfg = self.validate()?;
        Loader::start(self.dataset, cfg)
    }

    /// Which samples go in which batch in `epoch` on this rank: what a
    /// loader built from this builder yields in that epoch (checks the
    /// options as [`build`](Self::build) does, starts nothing).
    pub fn epoch_plan(&self, epoch: u64) -> Result<super::plan::EpochPlan> {
        let cfg = self.validate()?;
        Ok(super::plan::EpochPlan::new(&cfg.plan, epoch))
    }

    /// The first epoch (see [`epoch`](Self::epoch)).
    pub fn first_epoch(&self) -> u64 {
        self.epoch
    }

    fn validate(&self) -> Result<LoaderConfig> {
        let positive = |what: &str, n: usize| {
            if n == 0 {
                Err(Error::invalid(what, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("batch size", self.batch_size)?;
        positive("prefetch depth", self.prefetch)?;
        positive("world size", self.world_size)?;
        if self.rank >= self.world_size {
            return Err(Error::invalid(
                "rank",
                format!(
                    "{} is not below the world size {}",
                    self.rank, self.world_size
                ),
            ));
        }
        let threads = match self.threads {
            Some(n) => {
                positive("threads", n)?;
                n
            }
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.epochs == 0 {
            return Err(Error::invalid("epochs", "must be at least 1"));
        }
        let end_epoch = self
            .epoch
            .checked_add(self.epochs)
            .ok_or_else(|| Error::invalid("epochs", "epoch + epochs overflows"))?;
        let len = self.dataset.len();
        if len < self.world_size as u64 {
            return Err(Error::invalid(
                "world size",
                format!("{} ranks for a dataset of {len} samples", self.world_size),
            ));
        }
        let first = if self.size.is_none() || self.channels.is_none() {
            Some(self.dataset.shape(0)?)
        } else {
            None
        };
        let size = self
            .size
            .unwrap_or_else(|| first.map_or(Size::new(1, 1), |s| Size::new(s[0], s[1])));
        let channels = self.channels.or(first.map(|s| s[2])).unwrap_or(3);
        let mut spec = OutputSpec::new(size, channels)
            .with_dtype(self.dtype)
            .with_layout(self.layout);
        if let Some((mean, std)) = self.normalize.clone() {
            spec = spec.with_normalization(mean, std);
        }
        spec.validate()?;
        let plan = PlanConfig {
            len,
            batch_size: self.batch_size as u64,
            shuffle: self.shuffle,
            drop_last: self.drop_last,
            rank: self.rank as u64,
            world_size: self.world_size as u64,
            seed: self.seed,
        };
        let start = self.resume.unwrap_or(Position {
            epoch: self.epoch,
            batch: 0,
        });
        if start.epoch < self.epoch || start.epoch >= end_epoch {
            return Err(Error::invalid(
                "resume position",
                format!("{start} is outside epochs {}..{end_epoch}", self.epoch),
            ));
        }
        Ok(LoaderConfig {
            plan,
            spec,
            policy: self.policy,
            device: self.device,
            emulator: self.emulator.clone(),
            threads,
            prefetch: self.prefetch,
            first_epoch: self.epoch,
            end_epoch,
            start,
            bad_records: self.bad_records,
            limits: self.limits,
            region: self.region,
            panic_on_sample: self.panic_on_sample,
        })
    }
}

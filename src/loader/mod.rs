//! The prefetching loader: a training loop iterates it and gets ready,
//! augmented batches.
//!
//! ```no_run
//! use metaug::{loader::Loader, policy::Policy, shard::Dataset};
//! # fn main() -> metaug::Result<()> {
//! let dataset = Dataset::open("data/fashion-mnist-shards")?;
//! let loader = Loader::builder(dataset)
//!     .batch_size(128)
//!     .size(28, 28)
//!     .policy(Policy::default_policy())
//!     .threads(2)
//!     .seed(7)
//!     .build()?;
//! for batch in loader {
//!     let batch = batch?;
//!     let _x: &[f32] = batch.images_f32().unwrap(); // [128, 1, 28, 28]
//!     let _y: &[i64] = batch.labels();
//! }
//! # Ok(()) }
//! ```
//!
//! Stages are joined by bounded channels: memory stays within about
//! `(prefetch + 2) × batch bytes` plus the decode buffers, whatever the
//! dataset size. A finished or dropped loader leaves some of its batch
//! buffers to the next loader of the process (see
//! [`release_spare_buffers`]). Every random choice is keyed by
//! `(seed, epoch, sample)`, so batches are identical whatever the number of
//! threads or the prefetch depth, and a run can stop and
//! [resume](LoaderBuilder::resume) at any batch.
//! Dropping the loader stops its threads promptly; a worker's panic or a bad
//! record reaches the caller as an error, never a hang.

mod batch;
mod builder;
mod pipeline;
pub mod plan;
mod schedule;
mod spare;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

pub use batch::{Batch, HostBuffer, HOST_ALIGN};
pub use builder::{BadRecords, Device, LoaderBuilder};
pub use plan::Position;
pub use spare::release_spare_buffers;

use crate::error::{Error, Result};
use crate::shard::Dataset;
use builder::LoaderConfig;
use pipeline::{GpuPath, Msg, Pipeline};

/// An iterator of augmented batches. Build one with [`Loader::builder`].
pub struct Loader {
    rx: Option<Receiver<Msg>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    next: Position,
    batches_per_epoch: u64,
    end_epoch: u64,
    skipped: u64,
    finished: bool,
}

impl Loader {
    /// Starts building a loader over `dataset`.
    pub fn builder(dataset: impl Into<Arc<Dataset>>) -> LoaderBuilder {
        LoaderBuilder::new(dataset.into())
    }

    pub(crate) fn start(dataset: Arc<Dataset>, cfg: LoaderConfig) -> Result<Loader> {
        let batches_per_epoch = plan::EpochPlan::new(&cfg.plan, cfg.first_epoch).batches();
        if cfg.start.batch > batches_per_epoch {
            return Err(Error::invalid(
                "resume position",
                format!(
                    "{} is past the epoch's {batches_per_epoch} batches",
                    cfg.start
                ),
            ));
        }
        // On a CUDA device the augmenter is made here, so that a machine
        // without CUDA gets a clear error from `build()`.
        let gpu = match (&cfg.emulator, cfg.device) {
            (Some(emu), _) => {
                let gpu = crate::cuda::GpuAugmenter::new(emu)?;
                gpu.warm_up(&cfg.spec)?;
                Some(GpuPath::Emulated(gpu))
            }
            (None, Device::Cpu) => None,
            (None, Device::Cuda(ordinal)) => {
                let device = crate::cuda::Device::new(ordinal)?;
                let gpu = crate::cuda::GpuAugmenter::new(&device)?;
                gpu.warm_up(&cfg.spec)?;
                Some(GpuPath::Cuda(gpu))
            }
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("metaug-decode-{i}"))
            .build()
            .map_err(|e| Error::Pipeline(format!("cannot start the decode threads: {e}")))?;
        let (tx, rx) = crossbeam_channel::bounded(cfg.prefetch);
        let (recycle_tx, recycle_rx) = crossbeam_channel::bounded(cfg.prefetch + 2);
        let stop = Arc::new(AtomicBool::new(false));
        let next = cfg.start;
        let end_epoch = cfg.end_epoch;
        let pipeline = Pipeline {
            dataset,
            cfg: Arc::new(cfg),
            pool,
            tx,
            recycle_tx,
            recycle_rx,
            stop: stop.clone(),
            gpu,
        };
        let thread = std::thread::Builder::new()
            .name("metaug-loader".into())
            .spawn(move || pipeline.run())
            .map_err(|e| Error::Pipeline(format!("cannot start the loader thread: {e}")))?;
        Ok(Loader {
            rx: Some(rx),
            stop,
            thread: Some(thread),
            next,
            batches_per_epoch,
            end_epoch,
            skipped: 0,
            finished: false,
        })
    }

    /// The position of the next batch this loader will yield: save it after
    /// consuming a batch and pass it to [`LoaderBuilder::resume`] to go on
    /// from there.
    pub fn position(&self) -> Position {
        self.next
    }

    /// Batches per epoch on this rank.
    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }

    /// Bad records skipped so far (with [`BadRecords::Skip`]).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn advance(&mut self, at: Position) {
        self.next = if at.batch + 1 >= self.batches_per_epoch {
            Position {
                epoch: at.epoch + 1,
                batch: 0,
            }
        } else {
            Position {
                epoch: at.epoch,
                batch: at.batch + 1,
            }
        };
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks a producer waiting to send.
        self.rx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.finished || self.next.epoch >= self.end_epoch {
            return None;
        }
        let msg = self.rx.as_ref()?.recv();
        match msg {
            Ok(Msg::Batch(Ok(batch))) => {
                self.advance(batch.position());
                self.skipped += batch.skipped().len() as u64;
                Some(Ok(batch))
            }
            Ok(Msg::Batch(Err(e))) => {
                self.finished = true;
                self.shutdown();
                Some(Err(e))
            }
            Ok(Msg::Done) => {
                self.finished = true;
                None
            }
            Err(_) => {
                self.finished = true;
                self.shutdown();
                Some(Err(Error::Pipeline(
                    "the loader thread ended without finishing the epoch".into(),
                )))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shutdown();
    }
}

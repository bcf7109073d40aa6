//! The producer side: one coordinating thread walks the epochs' plans and
//! builds each batch on a rayon pool (decode + augment per sample, written
//! straight into the batch buffer), then hands it over a bounded channel.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::cuda::{Backend, DeviceBatch, Emulator, GpuAugmenter, ImageView};
use crate::decode::{decode_bytes_region_into, decode_region, Pixels};
use crate::error::{Error, Result};
use crate::loader::batch::{Batch, HostBuffer, Images};
use crate::loader::builder::{BadRecords, LoaderConfig};
use crate::loader::plan::{EpochPlan, Position};
use crate::loader::schedule::largest_first;
use crate::loader::spare;
use crate::ops::philox::{PhiloxStream, STREAM_NOISE};
use crate::ops::{augment_window_into, SampleParams, SourceWindow};
use crate::shard::{Dataset, ReadMode, Record};

thread_local! {
    /// Each decode thread's payload buffer, reused for every record it
    /// reads in pread mode (untouched in mmap mode). Taken out while in use,
    /// so that a nested rayon job on the same thread gets one of its own.
    static RECORD_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    /// Each decode thread's pixel buffer on the CPU path (decoded pixels
    /// are augmented at once), reused from sample to sample: no allocation,
    /// no page faults and no zeroing per image once it has grown.
    static PIXEL_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// What the pipeline sends: a batch or an error, then `Done` at the end.
// One message per batch, moved once through the channel: boxing it would
// only add an allocation per batch.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Batch(Result<Batch>),
    Done,
}

pub(crate) struct Pipeline {
    pub dataset: Arc<Dataset>,
    pub cfg: Arc<LoaderConfig>,
    pub pool: rayon::ThreadPool,
    /// Declared (so dropped) before `tx`: batches still queued in `tx`
    /// when the pipeline goes find their recycle channel closed and leave
    /// their buffers to the next loader (see `spare`), instead of being
    /// sent into a channel about to be dropped with its contents.
    pub recycle_rx: Receiver<HostBuffer>,
    pub tx: Sender<Msg>,
    pub recycle_tx: Sender<HostBuffer>,
    pub stop: Arc<AtomicBool>,
    /// The GPU path's augmenter (its own pinned staging, copy and compute
    /// streams, double buffered); `None` on the CPU path.
    pub gpu: Option<GpuPath>,
}

/// The augmenter of the GPU path: on a CUDA device, or on the CPU emulator
/// (tests), with the same host code.
pub(crate) enum GpuPath {
    Cuda(GpuAugmenter<crate::cuda::Device>),
    Emulated(GpuAugmenter<Emulator>),
}

/// One fused launch for a decoded batch, on whichever backend.
#[allow(clippy::too_many_arguments)]
fn augment_on<B: Backend>(
    gpu: &mut GpuAugmenter<B>,
    views: &[ImageView<'_>],
    windows: &[SourceWindow],
    params: &[SampleParams],
    kept: &[u64],
    seed: u64,
    epoch: u64,
    spec: &crate::ops::OutputSpec,
) -> Result<DeviceBatch<B>> {
    gpu.augment_windows(views, windows, params, kept, seed, epoch, spec)
}

/// One decoded sample: its pixels (the window of the source that its map
/// reads), where they sit in the source, its label and parameters.
type Decoded<'a> = (Pixels<'a>, SourceWindow, i64, SampleParams);

/// Why one sample could not be produced.
enum SampleError {
    Stopped,
    Bad(Error),
}

impl Pipeline {
    /// Runs until every batch is sent, an error is sent, or the consumer
    /// goes away.
    pub fn run(mut self) {
        let mut gpu = self.gpu.take();
        let cfg = self.cfg.clone();
        for epoch in cfg.start.epoch..cfg.end_epoch {
            let plan = EpochPlan::new(&cfg.plan, epoch);
            let first = if epoch == cfg.start.epoch {
                cfg.start.batch
            } else {
                0
            };
            for b in first..plan.batches() {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let position = Position { epoch, batch: b };
                let indices = plan.batch(b).unwrap_or_default();
                let built = catch_unwind(AssertUnwindSafe(|| match gpu.as_mut() {
                    Some(gpu) => self.build_on_gpu(gpu, position, indices),
                    None => self.build(position, indices),
                }))
                .unwrap_or_else(|panic| Err(Error::Pipeline(panic_message(&panic))));
                let failed = built.is_err();
                if self.tx.send(Msg::Batch(built)).is_err() || failed {
                    return;
                }
            }
        }
        let _ = self.tx.send(Msg::Done);
    }

    fn build(&self, position: Position, indices: &[u64]) -> Result<Batch> {
        let cfg = &*self.cfg;
        let sample_bytes = cfg.spec.sample_bytes();
        let len = sample_bytes * indices.len();
        let mut images = self
            .recycle_rx
            .try_recv()
            .ok()
            .or_else(|| spare::take(len))
            .unwrap_or_default();
        images.resize(len);
        let jobs: Vec<(&mut [u8], u64)> = images
            .bytes_mut()
            .chunks_mut(sample_bytes.max(1))
            .zip(indices.iter().copied())
            .collect();
        let outcomes: Vec<std::result::Result<i64, SampleError>> = largest_first(
            &self.pool,
            jobs,
            |&(_, index)| self.decode_cost(index),
            |(out, index)| self.sample(position.epoch, index, out),
        );
        let mut labels = Vec::with_capacity(indices.len());
        let mut kept = Vec::with_capacity(indices.len());
        let mut skipped = Vec::new();
        for (slot, (outcome, &index)) in outcomes.into_iter().zip(indices).enumerate() {
            let failure = match outcome {
                Ok(label) => {
                    if kept.len() != slot {
                        // Close the gap left by skipped samples.
                        let to = kept.len() * sample_bytes;
                        images
                            .bytes_mut()
                            .copy_within(slot * sample_bytes..(slot + 1) * sample_bytes, to);
                    }
                    labels.push(label);
                    kept.push(index);
                    None
                }
                Err(SampleError::Stopped) => Some(Error::Pipeline("loader stopped".into())),
                Err(SampleError::Bad(e)) => match cfg.bad_records {
                    BadRecords::Fail => Some(e),
                    BadRecords::Skip => {
                        skipped.push(index);
                        None
                    }
                },
            };
            if let Some(e) = failure {
                // No batch: its buffer goes to a later one (see `spare`).
                spare::keep(images);
                return Err(e);
            }
        }
        images.resize(kept.len() * sample_bytes);
        Ok(Batch::new(
            Images::Host(images),
            labels,
            kept,
            cfg.spec.clone(),
            position,
            skipped,
            Some(self.recycle_tx.clone()),
        ))
    }

    /// The GPU path: decodes the batch's samples on the pool, then one fused
    /// kernel launch augments them all into device memory. The augmenter
    /// double-buffers its pinned staging, so this batch's upload overlaps the
    /// previous batch's kernel.
    fn build_on_gpu(
        &self,
        gpu: &mut GpuPath,
        position: Position,
        indices: &[u64],
    ) -> Result<Batch> {
        let cfg = &*self.cfg;
        let decoded: Vec<std::result::Result<Decoded<'_>, SampleError>> = largest_first(
            &self.pool,
            indices.to_vec(),
            |&index| self.decode_cost(index),
            |index| self.decode_sample(position.epoch, index),
        );
        let mut pixels = Vec::with_capacity(indices.len());
        let mut windows = Vec::with_capacity(indices.len());
        let mut params = Vec::with_capacity(indices.len());
        let mut labels = Vec::with_capacity(indices.len());
        let mut kept = Vec::with_capacity(indices.len());
        let mut skipped = Vec::new();
        for (outcome, &index) in decoded.into_iter().zip(indices) {
            match outcome {
                Ok((p, window, label, param)) => {
                    pixels.push(p);
                    windows.push(window);
                    params.push(param);
                    labels.push(label);
                    kept.push(index);
                }
                Err(SampleError::Stopped) => return Err(Error::Pipeline("loader stopped".into())),
                Err(SampleError::Bad(e)) => match cfg.bad_records {
                    BadRecords::Fail => return Err(e),
                    BadRecords::Skip => skipped.push(index),
                },
            }
        }
        let views: Vec<ImageView<'_>> = pixels.iter().map(|p| p.view()).collect();
        let images = if views.is_empty() {
            Images::Host(HostBuffer::default())
        } else {
            let (seed, epoch, spec) = (cfg.plan.seed, position.epoch, &cfg.spec);
            match gpu {
                GpuPath::Cuda(g) => Images::Device(augment_on(
                    g, &views, &windows, &params, &kept, seed, epoch, spec,
                )?),
                GpuPath::Emulated(g) => Images::Emulated(augment_on(
                    g, &views, &windows, &params, &kept, seed, epoch, spec,
                )?),
            }
        };
        Ok(Batch::new(
            images,
            labels,
            kept,
            cfg.spec.clone(),
            position,
            skipped,
            None,
        ))
    }

    /// A sample's decode cost, for the order in which threads take samples:
    /// its stored pixel count (0 when the index has none to give; the
    /// sample's own error comes when it is read).
    fn decode_cost(&self, index: u64) -> u64 {
        self.dataset
            .shape(index)
            .map_or(0, |[h, w, c]| h as u64 * w as u64 * c.max(1) as u64)
    }

    /// Draws the parameters of `record` (sample `index`), then decodes the
    /// part of it they read (see [`decode_region`]).
    fn decode_record<'r>(
        &self,
        record: &Record<'r>,
        epoch: u64,
        index: u64,
    ) -> std::result::Result<Decoded<'r>, SampleError> {
        let cfg = &*self.cfg;
        let params = self.draw(epoch, index);
        let (pixels, window) = decode_region(
            record,
            cfg.spec.channels,
            &cfg.limits,
            &params.geometry,
            cfg.spec.size,
            cfg.region,
        )
        .map_err(|e| self.bad_record(record, e))?;
        Ok((pixels, window, record.label, params))
    }

    /// Reads and decodes sample `index` and draws its parameters, for the
    /// GPU path, which keeps the whole batch's pixels: borrowed from the map
    /// in mmap mode, owned in pread mode (the read buffer is reused).
    fn decode_sample(
        &self,
        epoch: u64,
        index: u64,
    ) -> std::result::Result<Decoded<'_>, SampleError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(SampleError::Stopped);
        }
        if self.dataset.read_mode() == ReadMode::Mmap {
            let record = self.dataset.record(index).map_err(SampleError::Bad)?;
            return self.decode_record(&record, epoch, index);
        }
        let mut buf = RECORD_BUF.take();
        let decoded = self
            .dataset
            .read_record(index, &mut buf)
            .map_err(SampleError::Bad)
            .and_then(|record| self.decode_record(&record, epoch, index))
            .map(|(pixels, window, label, params)| (pixels.into_owned(), window, label, params));
        RECORD_BUF.set(buf);
        decoded
    }

    /// Decodes and augments sample `index` into `out`; returns its label.
    /// In pread mode the record is read into this thread's reused buffer;
    /// the pixels go to this thread's reused pixel buffer.
    fn sample(
        &self,
        epoch: u64,
        index: u64,
        out: &mut [u8],
    ) -> std::result::Result<i64, SampleError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(SampleError::Stopped);
        }
        let mut buf = RECORD_BUF.take();
        let mut pixels = PIXEL_BUF.take();
        let label = self
            .dataset
            .read_record(index, &mut buf)
            .map_err(SampleError::Bad)
            .and_then(|record| {
                let cfg = &*self.cfg;
                let params = self.draw(epoch, index);
                let (view, window) = decode_bytes_region_into(
                    record.bytes,
                    record.encoding,
                    record.shape,
                    cfg.spec.channels,
                    &cfg.limits,
                    &params.geometry,
                    cfg.spec.size,
                    cfg.region,
                    &mut pixels,
                )
                .map_err(|e| self.bad_record(&record, e))?;
                let noise = PhiloxStream::new(cfg.plan.seed, epoch, index, STREAM_NOISE);
                augment_window_into(view, &window, &params, noise, &cfg.spec, out);
                Ok(record.label)
            });
        PIXEL_BUF.set(pixels);
        RECORD_BUF.set(buf);
        label
    }

    /// Sample `index`'s parameters, drawn before its record is decoded
    /// (they say which region to decode); the fault injection of tests
    /// fires here.
    fn draw(&self, epoch: u64, index: u64) -> SampleParams {
        let cfg = &*self.cfg;
        if cfg.panic_on_sample == Some(index) {
            panic!("injected fault: decoding sample {index}");
        }
        cfg.policy.sample_hard(cfg.plan.seed, epoch, index)
    }

    /// A record's decode error, naming its shard and record.
    fn bad_record(&self, record: &Record<'_>, e: Error) -> SampleError {
        SampleError::Bad(Error::record(
            self.dataset.shard_path(record.shard),
            record.index,
            e.to_string(),
        ))
    }
}

impl Drop for Pipeline {
    /// The buffers waiting for reuse go to the next loader (see `spare`).
    fn drop(&mut self) {
        while let Ok(buf) = self.recycle_rx.try_recv() {
            spare::keep(buf);
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("a loader worker panicked: {what}")
}

//! metaug batches in `burn` (feature `burn`, burn 0.22): tensors from a
//! [`Batch`], and a [`BurnLoader`] that is a burn
//! [`DataLoader`](burn::data::dataloader::DataLoader), so a burn training loop
//! (its own, or burn-train's `Learner`) takes metaug's prefetched, augmented
//! batches the way it takes those of burn's own loaders.
//!
//! ```no_run
//! use burn::data::dataloader::DataLoader;
//! use burn::tensor::Device;
//! use metaug::adapters::burn::BurnLoader;
//! # fn f(dataset: metaug::shard::Dataset) -> metaug::Result<()> {
//! let device = Device::flex().autodiff();
//! let loader = BurnLoader::new(metaug::Loader::builder(dataset).batch_size(64), &device)?;
//! for epoch in 0..3 {
//!     for batch in loader.iter() {
//!         let batch = batch.expect("a batch"); // burn's DatasetError on a bad record
//!         let (x, y) = (batch.images, batch.targets); // Tensor<4> [n, C, H, W], Tensor<1, Int> [n]
//!         # let _ = (x, y, epoch);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! **Copies.** burn tensors own their data: the images are copied from the
//! batch's host buffer into a [`TensorData`] (at memory speed) and the batch
//! goes back to the loader's pool at once. A batch in CUDA device memory is
//! refused with a clear error: burn's CUDA backend cannot wrap a foreign
//! device pointer.
//!
//! **Types.** Images are a float `Tensor<4>` of the batch's shape (NCHW or
//! NHWC). `f32` batches become `f32` data and `f16` batches `f16` data; `u8`
//! batches become float tensors holding 0–255. burn casts the data to the
//! device's float type, as it does for its own `TensorData`. Labels are
//! `Tensor<1, Int>` (i64 values).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::loader::{Batch, Loader, LoaderBuilder, Position};
use crate::ops::DType;
use crate::{Error, Result};

/// Tensors from a batch (see the [module docs](self)).
pub trait BatchExt {
    /// The images, shape [`Batch::shape`], as a float tensor on `device`.
    fn images_tensor(&self, device: &Device) -> Result<Tensor<4>>;
    /// The labels, shape `[n]`, on `device`.
    fn labels_tensor(&self, device: &Device) -> Result<Tensor<1, Int>>;
}

impl BatchExt for Batch {
    fn images_tensor(&self, device: &Device) -> Result<Tensor<4>> {
        if self.is_device() {
            return Err(Error::invalid(
                "burn tensor",
                "the batch is in CUDA device memory; the burn adapter takes host batches \
                 (copy it with Batch::to_host_bytes, or build the loader on the CPU)",
            ));
        }
        let s = self.shape();
        let shape = [s[0], s[1], s[2], s[3]];
        let data = match self.dtype() {
            DType::F32 => TensorData::new(self.images_f32().unwrap_or_default().to_vec(), shape),
            DType::F16 => TensorData::new(self.images_f16().unwrap_or_default().to_vec(), shape),
            DType::U8 => {
                let bytes = self.images_u8().unwrap_or_default();
                TensorData::new(bytes.iter().map(|&b| f32::from(b)).collect(), shape)
            }
        };
        Ok(Tensor::from_data(data, device))
    }

    fn labels_tensor(&self, device: &Device) -> Result<Tensor<1, Int>> {
        let data = TensorData::new(self.labels().to_vec(), [self.len()]);
        Ok(Tensor::from_data(data, device))
    }
}

/// One batch as burn tensors: what a [`BurnLoader`] yields.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    /// The augmented images, `[n, C, H, W]` or `[n, H, W, C]` as the loader
    /// was built.
    pub images: Tensor<4>,
    /// The class labels, `[n]`.
    pub targets: Tensor<1, Int>,
}

/// A burn `DataLoader` over a metaug loader.
///
/// Each [`iter`](DataLoader::iter) is one epoch: the first call runs the
/// builder's epoch, each later one the next (so shuffles and augmentations
/// differ between epochs and a run is reproducible from its seed). A bad
/// record is an `Err(DatasetError)` item (metaug's error, which names the
/// shard and record); the epoch ends after it.
/// [`slice`](DataLoader::slice) (used by burn to split an epoch between
/// devices) keeps the batch size and order and works in whole batches: it
/// covers the batches that hold items `start..end`.
pub struct BurnLoader {
    builder: LoaderBuilder,
    device: Device,
    /// The next epoch `iter` runs; shared by the slices of one loader.
    next_epoch: Arc<AtomicU64>,
    /// Batches of each epoch: all, or those of a slice.
    batches: Range<u64>,
    /// `offsets[b]`: items in the batches before batch `b` (every epoch has
    /// the same batch sizes; only their samples differ).
    offsets: Arc<Vec<u64>>,
}

impl std::fmt::Debug for BurnLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurnLoader")
            .field("batches", &self.batches)
            .field("items", &self.items())
            .field("next_epoch", &self.next_epoch())
            .finish_non_exhaustive()
    }
}

impl BurnLoader {
    /// A burn data loader from `builder` (its batch size, output format,
    /// policy, seed and first epoch; its number of epochs is ignored),
    /// making tensors on `device`. The builder's options are checked here:
    /// a bad one is an error now, not at the first epoch.
    pub fn new(builder: LoaderBuilder, device: &Device) -> Result<BurnLoader> {
        let first = builder.first_epoch();
        let plan = builder.epoch_plan(first)?;
        let mut offsets = vec![0u64];
        for b in 0..plan.batches() {
            let n = plan.batch(b).map_or(0, |s| s.len() as u64);
            offsets.push(offsets[offsets.len() - 1] + n);
        }
        Ok(BurnLoader {
            builder,
            device: device.clone(),
            next_epoch: Arc::new(AtomicU64::new(first)),
            batches: 0..plan.batches(),
            offsets: Arc::new(offsets),
        })
    }

    /// The epoch the next [`iter`](DataLoader::iter) will run.
    pub fn next_epoch(&self) -> u64 {
        self.next_epoch.load(Ordering::SeqCst)
    }

    /// Items in this loader's batches of one epoch.
    fn items(&self) -> u64 {
        self.offsets[self.batches.end as usize] - self.offsets[self.batches.start as usize]
    }

    fn with(&self, device: &Device, batches: Range<u64>) -> BurnLoader {
        BurnLoader {
            builder: self.builder.clone(),
            device: device.clone(),
            next_epoch: self.next_epoch.clone(),
            batches,
            offsets: self.offsets.clone(),
        }
    }
}

/// One epoch of a [`BurnLoader`].
struct EpochIter {
    /// The error building the epoch's loader, yielded first (then nothing).
    failed: Option<DatasetError>,
    loader: Option<Loader>,
    device: Device,
    left: u64,
    processed: usize,
    total: usize,
}

impl Iterator for EpochIter {
    type Item = std::result::Result<ImageBatch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let batch = match self.loader.as_mut()?.next()? {
            Ok(b) => b,
            Err(e) => {
                self.loader = None;
                return Some(Err(DatasetError::new(e)));
            }
        };
        let tensors = batch
            .images_tensor(&self.device)
            .and_then(|images| Ok((images, batch.labels_tensor(&self.device)?)));
        self.processed += batch.len();
        Some(match tensors {
            Ok((images, targets)) => Ok(ImageBatch { images, targets }),
            Err(e) => {
                self.loader = None;
                Err(DatasetError::new(e))
            }
        })
    }
}

impl DataLoaderIterator<ImageBatch> for EpochIter {
    fn progress(&self) -> Progress {
        Progress::new(self.processed, self.total, Some("items".into()))
    }
}

impl DataLoader<ImageBatch> for BurnLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<ImageBatch> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        let left = self.batches.end - self.batches.start;
        let built = if left == 0 {
            Ok(None)
        } else {
            self.builder
                .clone()
                .epoch(epoch)
                .epochs(1)
                .resume(Position {
                    epoch,
                    batch: self.batches.start,
                })
                .build()
                .map(Some)
        };
        let (loader, failed) = match built {
            Ok(l) => (l, None),
            Err(e) => (None, Some(DatasetError::new(e))),
        };
        Box::new(EpochIter {
            failed,
            loader,
            device: self.device.clone(),
            left,
            processed: 0,
            total: self.items() as usize,
        })
    }

    fn num_items(&self) -> usize {
        self.items() as usize
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<ImageBatch>> {
        Arc::new(self.with(device, self.batches.clone()))
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<ImageBatch>> {
        // Items are counted from this loader's first batch.
        let base = self.offsets[self.batches.start as usize];
        let ends = &self.offsets[self.batches.start as usize + 1..=self.batches.end as usize];
        // The batch holding item `i`: the first whose end is past it.
        let holding = |i: u64| self.batches.start + ends.partition_point(|&e| e <= base + i) as u64;
        let first = holding(start as u64);
        let last = if end > start {
            (holding(end as u64 - 1) + 1).min(self.batches.end)
        } else {
            first
        };
        Arc::new(self.with(&self.device, first.min(last)..last))
    }
}

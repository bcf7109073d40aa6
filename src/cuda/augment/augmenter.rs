//! The host-side driver: [`GpuAugmenter`] checks a batch, packs it into one
//! of its two pinned staging slots, queues the upload on the copy stream and
//! the kernel on the compute stream, into an output buffer from the pool
//! (the pipelining is described in the `cuda::augment` module docs).

use std::sync::{Arc, Mutex};

use super::batch::{DeviceBatch, Pool, PooledBuffer};
use super::check::{check_batch, check_windows};
use super::params::{norm_of, Norm};
use super::staging::{StagingLayout, HW_PER_SAMPLE};
use super::PARAMS_PER_SAMPLE;
use crate::cuda::backend::{Backend, LaunchConfig};
use crate::cuda::device::Device;
use crate::cuda::kernels::AugmentVariant;
use crate::cuda::launch::Launch;
use crate::cuda::spec::{ImageView, OutputSpec};
use crate::ops::{SampleParams, Size, SourceWindow};
use crate::{Error, Result};

const BLOCK: u32 = 256;

struct Slot<B: Backend> {
    host: Option<B::Pinned>,
    dev: Option<B::Buf<u8>>,
    /// Recorded on the copy stream after the upload from this slot.
    uploaded: B::Event,
    /// Recorded on the compute stream after the last kernel reading this slot.
    consumed: B::Event,
}

/// What [`GpuAugmenter::relaunch_last`] needs.
#[derive(Clone, Copy, Debug)]
struct LastLaunch {
    slot: usize,
    layout: StagingLayout,
    batch: usize,
    variant: AugmentVariant,
    norm: Norm,
    seed: u64,
    epoch: u64,
    out: Size,
    bytes: usize,
}

/// Augments batches on one GPU (or on the CPU [`Emulator`](crate::cuda::Emulator),
/// which runs the same host code). See the module docs for the pipelining.
///
/// ```no_run
/// # fn main() -> metaug::Result<()> {
/// use metaug::cuda::{Device, GpuAugmenter, ImageView, OutputSpec, DType, Layout};
/// use metaug::ops::{SampleParams, Size};
/// let mut gpu = GpuAugmenter::new(&Device::new(0)?)?;
/// let pixels = vec![128u8; 32 * 48 * 3];
/// let img = ImageView { height: 32, width: 48, channels: 3, data: &pixels };
/// let spec = OutputSpec { size: Size::new(24, 24), channels: 3, dtype: DType::F32,
///     layout: Layout::Nchw, mean: vec![0.5; 3], std: vec![0.25; 3] };
/// let batch = gpu.augment_batch(&[img], &[SampleParams::IDENTITY], &[0], 7, 0, &spec)?;
/// let bytes = batch.to_host()?; // 1 × 3 × 24 × 24 f32
/// # Ok(()) }
/// ```
pub struct GpuAugmenter<B: Backend = Device> {
    device: B,
    copy: Arc<B::Stream>,
    compute: Arc<B::Stream>,
    slots: [Slot<B>; 2],
    next: usize,
    pool: Arc<Pool<B>>,
    poison: Option<u8>,
    last: Option<LastLaunch>,
}

impl<B: Backend> std::fmt::Debug for GpuAugmenter<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuAugmenter")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> GpuAugmenter<B> {
    /// A new augmenter with its own copy and compute streams on `device`.
    pub fn new(device: &B) -> Result<GpuAugmenter<B>> {
        let copy = device.new_stream()?;
        let compute = device.new_stream()?;
        let slot = || -> Result<Slot<B>> {
            Ok(Slot {
                host: None,
                dev: None,
                uploaded: device.new_event()?,
                consumed: device.new_event()?,
            })
        };
        Ok(GpuAugmenter {
            device: device.clone(),
            copy,
            compute,
            slots: [slot()?, slot()?],
            next: 0,
            pool: Arc::new(Mutex::new(Vec::new())),
            poison: None,
            last: None,
        })
    }

    /// The device.
    pub fn device(&self) -> &B {
        &self.device
    }

    /// The stream kernels run on (and [`DeviceBatch`]es belong to).
    pub fn compute_stream(&self) -> &Arc<B::Stream> {
        &self.compute
    }

    /// The stream uploads run on.
    pub fn copy_stream(&self) -> &Arc<B::Stream> {
        &self.copy
    }

    /// Debugging aid: fill every output buffer with `byte` before the kernel
    /// writes it, so that an element the kernel misses shows (0xFF is NaN in
    /// f16 and f32). `None` (the default) skips the fill.
    pub fn poison_outputs(&mut self, byte: Option<u8>) {
        self.poison = byte;
    }

    /// Compiles and loads the kernel variants `spec` needs, so that the first
    /// batch does not pay for it.
    pub fn warm_up(&self, spec: &OutputSpec) -> Result<()> {
        spec.validate()?;
        for vec4 in [false, true] {
            let v = variant(spec, vec4);
            self.device.prepare(&v.module(), &v.kernel_name())?;
        }
        Ok(())
    }

    /// Augments one batch: `images[k]` with `params[k]`, its noise keyed by
    /// `(seed, epoch, sample_indices[k])`, into a new [`DeviceBatch`] of
    /// `images.len()` samples laid out as `spec` says.
    ///
    /// Returns once the work is queued: the upload overlaps the previous
    /// batch's kernel, and the batch is ready when its
    /// [`ready_event`](DeviceBatch::ready_event) completes (work on its
    /// [`stream`](DeviceBatch::stream) is ordered after it already).
    ///
    /// Errors: lengths that disagree, an empty or too large batch, an image
    /// whose channels differ from `spec.channels` or whose data length is not
    /// `height × width × channels`, a side of 0 or ≥ 2^24, an invalid spec,
    /// and any CUDA failure.
    pub fn augment_batch(
        &mut self,
        images: &[ImageView<'_>],
        params: &[SampleParams],
        sample_indices: &[u64],
        seed: u64,
        epoch: u64,
        spec: &OutputSpec,
    ) -> Result<DeviceBatch<B>> {
        let windows: Vec<SourceWindow> = images
            .iter()
            .map(|img| SourceWindow::whole(Size::new(img.height, img.width)))
            .collect();
        self.augment_windows(images, &windows, params, sample_indices, seed, epoch, spec)
    }

    /// [`augment_batch`](Self::augment_batch) for images decoded as windows
    /// of their sources (region or scaled decode): `images[k]` is the
    /// window `windows[k]` describes, and only those pixels are uploaded.
    /// The result is the one [`augment_window_into`](crate::ops::augment_window_into)
    /// gives on the CPU. Errors as `augment_batch`, and for a window that
    /// does not lie inside its frame.
    #[allow(clippy::too_many_arguments)]
    pub fn augment_windows(
        &mut self,
        images: &[ImageView<'_>],
        windows: &[SourceWindow],
        params: &[SampleParams],
        sample_indices: &[u64],
        seed: u64,
        epoch: u64,
        spec: &OutputSpec,
    ) -> Result<DeviceBatch<B>> {
        let b = check_batch(images, params, sample_indices, spec)?;
        check_windows(images, windows)?;
        let mut pixel_bytes = 0usize;
        for img in images {
            pixel_bytes = pixel_bytes
                .checked_add(img.data.len())
                .ok_or_else(|| Error::invalid("batch", "total pixel bytes overflow usize"))?;
        }
        let layout = StagingLayout::new(pixel_bytes, b)?;
        let slot_ix = self.next;
        self.next ^= 1;
        self.upload(
            slot_ix,
            layout,
            images,
            windows,
            params,
            sample_indices,
            spec,
        )?;

        let launch = LastLaunch {
            slot: slot_ix,
            layout,
            batch: b,
            variant: variant(spec, spec.size.width.is_multiple_of(4)),
            norm: norm_of(spec),
            seed,
            epoch,
            out: spec.size,
            bytes: b * spec.sample_bytes(),
        };
        let mut out = self.output_buffer(launch.bytes)?;
        self.launch(&launch, &mut out.buf, &out.wait)?;
        out.wait.clear();
        self.last = Some(launch);
        let ready = self.device.new_event()?;
        self.device.record(&ready, &self.compute)?;
        Ok(DeviceBatch {
            device: self.device.clone(),
            buf: Some(out.buf),
            bytes: launch.bytes,
            batch: b,
            size: spec.size,
            channels: spec.channels,
            dtype: spec.dtype,
            layout: spec.layout,
            stream: self.compute.clone(),
            ready,
            release: Vec::new(),
            pool: Arc::downgrade(&self.pool),
        })
    }

    /// Runs the last batch's kernel again, on the inputs already on the
    /// device, into `batch` (which must have the same byte length). For
    /// benchmarks that time the kernel alone.
    pub fn relaunch_last(&mut self, batch: &mut DeviceBatch<B>) -> Result<()> {
        let last = self
            .last
            .ok_or_else(|| Error::invalid("relaunch", "no batch has been augmented yet"))?;
        if batch.bytes != last.bytes || !self.device.owns(&batch.stream) {
            return Err(Error::invalid(
                "relaunch",
                "the batch does not have the last batch's size or device",
            ));
        }
        let buf = batch
            .buf
            .as_mut()
            .ok_or_else(|| Error::invalid("relaunch", "batch has no buffer"))?;
        let release = std::mem::take(&mut batch.release);
        self.launch(&last, buf, &release)?;
        self.device.record(&batch.ready, &self.compute)
    }

    /// Packs the batch into pinned slot `ix` and queues its upload.
    #[allow(clippy::too_many_arguments)]
    fn upload(
        &mut self,
        ix: usize,
        layout: StagingLayout,
        images: &[ImageView<'_>],
        windows: &[SourceWindow],
        params: &[SampleParams],
        sample_indices: &[u64],
        spec: &OutputSpec,
    ) -> Result<()> {
        let dev = &self.device;
        let slot = &mut self.slots[ix];
        // The previous upload from this slot must be done before the host
        // overwrites (or frees) its pinned buffer.
        dev.sync_event(&slot.uploaded)?;
        let cap = slot.host.as_ref().map_or(0, |h| B::pinned_len(h));
        if cap < layout.total {
            let new_cap = layout.total.max(cap + cap / 2);
            slot.host = None;
            // The old device buffer is freed in the compute stream's order,
            // after the kernels that read it.
            slot.dev = None;
            // SAFETY: `alloc_pinned` returns uninitialised memory; every byte
            // the device reads (the first `layout.total`) is written below
            // before the upload, and u8 has no invalid bit patterns.
            slot.host = Some(unsafe { dev.alloc_pinned(new_cap) }?);
            // SAFETY: as above: the kernel reads only the uploaded prefix.
            slot.dev = Some(unsafe { dev.alloc::<u8>(&self.compute, new_cap) }?);
            // The upload (copy stream, after `consumed`) comes after the allocation.
            dev.record(&slot.consumed, &self.compute)?;
        }
        let (Some(host), Some(dbuf)) = (slot.host.as_mut(), slot.dev.as_mut()) else {
            return Err(Error::Cuda("staging buffers missing".into()));
        };
        layout.pack(
            dev.pinned_bytes(host)?,
            images,
            windows,
            params,
            sample_indices,
            spec.size,
        );
        // The previous kernel reading this slot's device buffer must be done.
        dev.wait(&self.copy, &slot.consumed)?;
        dev.upload_pinned(&self.copy, host, layout.total, dbuf)?;
        dev.record(&slot.uploaded, &self.copy)
    }

    /// A buffer of at least `bytes` bytes from the pool, or a new one.
    fn output_buffer(&mut self, bytes: usize) -> Result<PooledBuffer<B>> {
        let reuse = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let at = pool.iter().position(|p| {
                let n = B::len(&p.buf);
                n >= bytes && n <= bytes.saturating_mul(2)
            });
            at.map(|i| pool.swap_remove(i))
        };
        match reuse {
            Some(p) => Ok(p),
            None => Ok(PooledBuffer {
                // SAFETY: uninitialised device memory; the kernel writes every
                // one of the first `bytes` bytes (and only those are exposed).
                buf: unsafe { self.device.alloc::<u8>(&self.compute, bytes.max(1)) }?,
                wait: Vec::new(),
            }),
        }
    }

    fn launch(&self, l: &LastLaunch, out: &mut B::Buf<u8>, wait: &[B::Event]) -> Result<()> {
        let dev = &self.device;
        let slot = &self.slots[l.slot];
        let staged = slot
            .dev
            .as_ref()
            .ok_or_else(|| Error::Cuda("staging buffer missing".into()))?;
        // Inputs uploaded; the output's previous readers done.
        dev.wait(&self.compute, &slot.uploaded)?;
        for e in wait {
            dev.wait(&self.compute, e)?;
        }
        if let Some(byte) = self.poison {
            dev.memset(&self.compute, out, byte, l.bytes)?;
        }

        let module = l.variant.module();
        let lay = l.layout;
        let b = l.batch;
        let (seed_lo, seed_hi, epoch) = (l.seed as u32, (l.seed >> 32) as u32, l.epoch as u32);
        let (out_h, out_w) = (l.out.height, l.out.width);
        let quads = out_h * out_w.div_ceil(4);
        let cfg = LaunchConfig {
            grid_dim: (quads.div_ceil(BLOCK), b as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = Launch::new(dev, &module, 0);
        launch
            .range::<u8>(staged, 0, lay.pixels.max(1))
            .range::<u8>(staged, lay.offsets, b * 8)
            .range::<u8>(staged, lay.hw, b * HW_PER_SAMPLE * 4)
            .range::<u8>(staged, lay.params, b * PARAMS_PER_SAMPLE * 4)
            .range::<u8>(staged, lay.samples, b * 4)
            .bytes(&l.norm)
            .u32(seed_lo)
            .u32(seed_hi)
            .u32(epoch)
            .u32(out_h)
            .u32(out_w)
            .range::<u8>(out, 0, l.bytes);
        // SAFETY: argument kinds are checked against the kernel's signature by
        // `launch`. Sizes and bounds (augment.cu indexes only these):
        // - grid.y = b samples; per sample the kernel reads params[8b..8b+8],
        //   src_off[b], src_hw[4b..4b+4], samples[b]: the ranges hold exactly
        //   b rows of each (laid out by `StagingLayout`, uploaded by `upload`);
        // - source reads: image b's bytes are `pixels[off_b .. off_b + h_b*w_b*C]`
        //   (packed back to back by `StagingLayout::pack`, `check_batch`
        //   verified `data.len() == h*w*C` with C == spec.channels == the
        //   variant's C); the kernel dereferences a neighbour only when it lies
        //   inside `h_b × w_b`, and `check_batch` bounds `(h+1)(w+1)C < 2^31`
        //   so its int offsets do not overflow;
        // - writes: threads with quad index < out_h * ceil(out_w/4) write
        //   elements `[b*C*out_h*out_w, (b+1)*C*out_h*out_w)` of `out`, which
        //   holds at least `l.bytes = B * C*out_h*out_w * dtype.size()` bytes;
        //   the vec4 variant is chosen only when out_w % 4 == 0, which makes
        //   its 4/8/16-byte stores aligned (the buffer comes from cuMemAlloc);
        // - `out` is ordered after its previous readers by the waits above.
        unsafe { launch.launch(&self.compute, cfg) }?;
        dev.record(&slot.consumed, &self.compute)
    }
}

fn variant(spec: &OutputSpec, vec4: bool) -> AugmentVariant {
    AugmentVariant {
        dtype: spec.dtype,
        layout: spec.layout,
        channels: spec.channels,
        vec4,
    }
}

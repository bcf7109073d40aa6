//! The GPU augmentation path: a batch of decoded u8 images in, an augmented
//! batch in device memory out, with the upload of batch n+1 overlapping the
//! kernel of batch n.
//!
//! ```text
//!            host (caller's thread)          copy stream                 compute stream
//! batch n:   pack into pinned slot A ──► H2D A, record up[A] ──► wait up[A], kernel(A → out n), record done[A], ready n
//! batch n+1: pack into pinned slot B ──► H2D B, record up[B] ──► wait up[B], kernel(B → out n+1), ...
//! batch n+2: wait up[A] (host), pack A ─► wait done[A], H2D A ...
//! ```
//!
//! Two staging slots (pinned host buffer + device buffer each), allocated on
//! first use and grown when a batch needs more, never shrunk. A slot is never
//! overwritten while its consumer still reads it: the host waits for the
//! slot's previous upload (`up`) before packing into it, and the copy stream
//! waits for the slot's previous kernel (`done`) before uploading into it.
//! Output buffers come from a small pool: a dropped [`DeviceBatch`] returns
//! its buffer together with events the next kernel writing it waits for (its
//! own stream's, and any recorded with [`DeviceBatch::release_after`]), as in
//! FFCV's per-slot events.

use std::sync::{Arc, Mutex, Weak};

use cudarc::driver::CudaView;

use super::backend::{Backend, LaunchConfig};
use super::device::Device;
use super::kernels::AugmentVariant;
use super::launch::Launch;
use super::spec::{DType, ImageView, Layout, OutputSpec};
use crate::ops::{SampleParams, Size, SourceWindow};
use crate::{Error, Result};

/// Floats per sample in the parameter array the kernels read:
/// `m0..m5` (the inverse affine map), the flip gate, sigma.
pub const PARAMS_PER_SAMPLE: usize = 8;

/// Most samples in one batch (the kernel grid's y dimension).
pub const MAX_BATCH: usize = 65_535;

/// Largest source side the kernels accept (coordinates are compared as f32).
pub const MAX_SOURCE_SIDE: u32 = 1 << 24;

const BLOCK: u32 = 256;
const ALIGN: usize = 16;
const POOL_MAX: usize = 4;

/// The per-sample row the kernels read: `affine_matrix(geometry, src, out)`,
/// then `flip`, then `sigma`.
pub fn pack_params(p: &SampleParams, src: Size, out: Size) -> [f32; PARAMS_PER_SAMPLE] {
    pack_window_params(p, &SourceWindow::whole(src), out)
}

/// [`pack_params`] for a sample decoded as a window of its source image:
/// the map is the window's [`matrix`](SourceWindow::matrix) (the whole
/// image's, scaled when the decode was); the window's origin travels in
/// the size array (`[h, w, oy, ox]` per sample).
pub fn pack_window_params(
    p: &SampleParams,
    window: &SourceWindow,
    out: Size,
) -> [f32; PARAMS_PER_SAMPLE] {
    let m = window.matrix(&p.geometry, out);
    [m[0], m[1], m[2], m[3], m[4], m[5], p.flip, p.sigma]
}

/// u32s per sample in the size array: the window's height, width, and its
/// origin's row and column in the map's frame.
const HW_PER_SAMPLE: usize = 4;

/// `struct Norm` of `augment.cu` (32 bytes, align 4; the compile test checks
/// the PTX parameter is a 32-byte `.b8` array, the emulator that the host
/// compiler's `sizeof(Norm)` is 32).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Norm {
    mean: [f32; 4],
    std: [f32; 4],
}

/// Byte offsets of the regions of one staging buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StagingLayout {
    pixels: usize,
    params: usize,
    offsets: usize,
    hw: usize,
    samples: usize,
    total: usize,
}

impl StagingLayout {
    fn new(pixel_bytes: usize, batch: usize) -> Result<StagingLayout> {
        let overflow = || Error::invalid("batch", "staging size overflows usize");
        let up = |x: usize| x.checked_next_multiple_of(ALIGN).ok_or_else(overflow);
        let add = |a: usize, b: usize| a.checked_add(b).ok_or_else(overflow);
        let params = up(pixel_bytes)?;
        let offsets = up(add(params, batch * PARAMS_PER_SAMPLE * 4)?)?;
        let hw = up(add(offsets, batch * 8)?)?;
        let samples = up(add(hw, batch * HW_PER_SAMPLE * 4)?)?;
        let total = up(add(samples, batch * 4)?)?;
        Ok(StagingLayout {
            pixels: pixel_bytes,
            params,
            offsets,
            hw,
            samples,
            total,
        })
    }

    /// Writes the batch into `h` (at least `total` bytes): the images back to
    /// back, then the parameter rows, source offsets, window sizes and
    /// origins, and sample indices.
    fn pack(
        &self,
        h: &mut [u8],
        images: &[ImageView<'_>],
        windows: &[SourceWindow],
        params: &[SampleParams],
        sample_indices: &[u64],
        out: Size,
    ) {
        let h = &mut h[..self.total];
        let mut at = 0usize;
        let mut offsets = Vec::with_capacity(images.len());
        for img in images {
            h[at..at + img.data.len()].copy_from_slice(img.data);
            offsets.push(at as u64);
            at += img.data.len();
        }
        h[self.pixels..self.params].fill(0);
        for (k, ((p, img), window)) in params.iter().zip(images).zip(windows).enumerate() {
            let row = pack_window_params(p, window, out);
            let o = self.params + k * PARAMS_PER_SAMPLE * 4;
            for (d, v) in h[o..o + PARAMS_PER_SAMPLE * 4].chunks_exact_mut(4).zip(row) {
                d.copy_from_slice(&v.to_le_bytes());
            }
            let o = self.offsets + k * 8;
            h[o..o + 8].copy_from_slice(&offsets[k].to_le_bytes());
            let o = self.hw + k * HW_PER_SAMPLE * 4;
            let [ox, oy] = window.origin;
            for (d, v) in h[o..o + HW_PER_SAMPLE * 4]
                .chunks_exact_mut(4)
                .zip([img.height, img.width, oy, ox])
            {
                d.copy_from_slice(&v.to_le_bytes());
            }
            let o = self.samples + k * 4;
            // PhiloxStream::new truncates the sample index to 32 bits.
            h[o..o + 4].copy_from_slice(&(sample_indices[k] as u32).to_le_bytes());
        }
    }
}

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

struct PooledBuffer<B: Backend> {
    buf: B::Buf<u8>,
    wait: Vec<B::Event>,
}

type Pool<B> = Mutex<Vec<PooledBuffer<B>>>;

/// Augments batches on one GPU (or on the CPU [`Emulator`](super::Emulator),
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

fn norm_of(spec: &OutputSpec) -> Norm {
    let mut n = Norm {
        mean: [0.0; 4],
        std: [1.0; 4],
    };
    for (c, (m, s)) in spec.mean.iter().zip(&spec.std).take(4).enumerate() {
        n.mean[c] = *m;
        n.std[c] = *s;
    }
    n
}

/// Checks that there is one window per image and that each lies, with its
/// image's size, inside its frame (below 2^24 a side, as the kernels need).
fn check_windows(images: &[ImageView<'_>], windows: &[SourceWindow]) -> Result<()> {
    if windows.len() != images.len() {
        return Err(Error::invalid(
            "batch",
            format!("{} images and {} windows", images.len(), windows.len()),
        ));
    }
    for (k, (img, w)) in images.iter().zip(windows).enumerate() {
        w.check(Size::new(img.height, img.width))
            .map_err(|e| Error::invalid(format!("image {k} of the batch"), e))?;
    }
    Ok(())
}

/// Validates a batch; returns its size.
fn check_batch(
    images: &[ImageView<'_>],
    params: &[SampleParams],
    sample_indices: &[u64],
    spec: &OutputSpec,
) -> Result<usize> {
    spec.validate()?;
    let b = images.len();
    if params.len() != b || sample_indices.len() != b {
        return Err(Error::invalid(
            "batch",
            format!(
                "{b} images, {} parameter sets and {} sample indices; give one of each per image",
                params.len(),
                sample_indices.len()
            ),
        ));
    }
    if b == 0 || b > MAX_BATCH {
        return Err(Error::invalid(
            "batch",
            format!("{b} samples (expected 1..={MAX_BATCH})"),
        ));
    }
    let per_sample = spec.channels as u64 * spec.size.height as u64 * spec.size.width as u64;
    if per_sample > u32::MAX as u64 {
        return Err(Error::invalid(
            "output size",
            "channels × height × width must be below 2^32",
        ));
    }
    for (k, img) in images.iter().enumerate() {
        let what = || format!("image {k} of the batch");
        if img.channels != spec.channels {
            return Err(Error::invalid(
                what(),
                format!(
                    "{} channels, the output has {}",
                    img.channels, spec.channels
                ),
            ));
        }
        if img.height == 0
            || img.width == 0
            || img.height >= MAX_SOURCE_SIDE
            || img.width >= MAX_SOURCE_SIDE
        {
            return Err(Error::invalid(
                what(),
                format!(
                    "size {}x{} (each side must be in 1..{MAX_SOURCE_SIDE})",
                    img.height, img.width
                ),
            ));
        }
        let (h, w, c) = (img.height as u64, img.width as u64, img.channels as u64);
        if h * w * c != img.data.len() as u64 {
            return Err(Error::invalid(
                what(),
                format!(
                    "{} bytes of pixels for {h}x{w}x{c} (expected {})",
                    img.data.len(),
                    h * w * c
                ),
            ));
        }
        if (h + 1) * (w + 1) * c >= 1 << 31 {
            return Err(Error::invalid(
                what(),
                format!("{h}x{w}x{c} is too large for one image (2^31 bytes)"),
            ));
        }
    }
    Ok(b)
}

/// An augmented batch in device memory.
///
/// The batch is written by a kernel on [`stream`](Self::stream); work queued on
/// that stream after [`GpuAugmenter::augment_batch`] returned sees it complete.
/// Work on another stream must first [`wait_on`](Self::wait_on) it, and if it
/// reads the batch there, call [`release_after`](Self::release_after) before
/// dropping it: the buffer is reused for a later batch, and that batch's kernel
/// waits only for what those events cover.
pub struct DeviceBatch<B: Backend = Device> {
    device: B,
    buf: Option<B::Buf<u8>>,
    bytes: usize,
    batch: usize,
    size: Size,
    channels: u32,
    dtype: DType,
    layout: Layout,
    stream: Arc<B::Stream>,
    ready: B::Event,
    release: Vec<B::Event>,
    pool: Weak<Pool<B>>,
}

impl<B: Backend> std::fmt::Debug for DeviceBatch<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBatch")
            .field("shape", &self.shape())
            .field("dtype", &self.dtype)
            .field("layout", &self.layout)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl<B: Backend> DeviceBatch<B> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.batch
    }

    /// Whether the batch has no samples (never, for batches from
    /// [`GpuAugmenter::augment_batch`]).
    pub fn is_empty(&self) -> bool {
        self.batch == 0
    }

    /// Bytes of the batch (`len × sample bytes`).
    pub fn num_bytes(&self) -> usize {
        self.bytes
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// `[B, C, H, W]` for NCHW, `[B, H, W, C]` for NHWC.
    pub fn shape(&self) -> [usize; 4] {
        let (b, c, h, w) = (
            self.batch,
            self.channels as usize,
            self.size.height as usize,
            self.size.width as usize,
        );
        match self.layout {
            Layout::Nchw => [b, c, h, w],
            Layout::Nhwc => [b, h, w, c],
        }
    }

    /// The stream the batch is written on.
    pub fn stream(&self) -> &Arc<B::Stream> {
        &self.stream
    }

    /// Completes when the batch is written.
    pub fn ready_event(&self) -> &B::Event {
        &self.ready
    }

    /// Makes `stream` wait until the batch is written.
    pub fn wait_on(&self, stream: &B::Stream) -> Result<()> {
        self.device.wait(stream, &self.ready)
    }

    /// Declares that work queued on `stream` so far reads the batch: its
    /// buffer is not rewritten before that work completes.
    pub fn release_after(&mut self, stream: &B::Stream) -> Result<()> {
        let e = self.device.new_event()?;
        self.device.record(&e, stream)?;
        self.release.push(e);
        Ok(())
    }

    /// The raw device address of the first byte, for other libraries
    /// (DLPack, a framework's `from_blob`). Valid while `self` lives; see the
    /// type's docs for ordering.
    pub fn device_ptr(&self) -> u64 {
        self.buf.as_ref().map_or(0, |b| self.device.address(b))
    }

    /// Copies the batch to the host (waits for it): little-endian elements in
    /// the batch's layout, `num_bytes()` bytes.
    pub fn to_host(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.bytes];
        if let Some(b) = &self.buf {
            self.device.download_into(&self.stream, b, &mut out)?;
        }
        Ok(out)
    }
}

impl DeviceBatch<Device> {
    /// The batch's bytes as a cudarc view.
    pub fn view(&self) -> Option<CudaView<'_, u8>> {
        self.buf.as_ref().map(|b| b.slice(..self.bytes))
    }
}

impl<B: Backend> Drop for DeviceBatch<B> {
    fn drop(&mut self) {
        let Some(buf) = self.buf.take() else { return };
        let mut wait = std::mem::take(&mut self.release);
        // Work already queued on the batch's own stream is covered by this event.
        let own = self
            .device
            .new_event()
            .and_then(|e| self.device.record(&e, &self.stream).map(|()| e));
        let pool = self.pool.upgrade();
        if let (Ok(e), Some(pool)) = (own, pool) {
            wait.push(e);
            let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < POOL_MAX {
                pool.push(PooledBuffer { buf, wait });
                return;
            }
        }
        // Freed: in the batch stream's order, after the readers on other streams.
        for e in &wait {
            let _ = self.device.wait(&self.stream, e);
        }
        drop(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Geometry;

    fn spec(c: u32) -> OutputSpec {
        OutputSpec {
            size: Size::new(8, 12),
            channels: c,
            dtype: DType::F32,
            layout: Layout::Nchw,
            mean: vec![0.0; c as usize],
            std: vec![1.0; c as usize],
        }
    }

    #[test]
    fn staging_layout_is_aligned_and_disjoint() {
        for (px, b) in [(0, 1), (1, 1), (147, 3), (150_528 * 256, 256)] {
            let l = StagingLayout::new(px, b).unwrap();
            for o in [l.params, l.offsets, l.hw, l.samples, l.total] {
                assert_eq!(o % ALIGN, 0);
            }
            assert!(l.pixels <= l.params);
            assert!(l.params + b * 32 <= l.offsets);
            assert!(l.offsets + b * 8 <= l.hw);
            assert!(l.hw + b * 8 <= l.samples);
            assert!(l.samples + b * 4 <= l.total);
        }
        assert!(StagingLayout::new(usize::MAX - 3, 1).is_err());
    }

    #[test]
    fn pack_params_is_the_affine_map_then_gates() {
        let p = SampleParams {
            geometry: Geometry {
                angle: 0.3,
                ..Geometry::IDENTITY
            },
            flip: 0.25,
            sigma: 0.05,
        };
        let (src, out) = (Size::new(20, 30), Size::new(8, 12));
        let row = pack_params(&p, src, out);
        assert_eq!(&row[..6], &crate::ops::affine_matrix(&p.geometry, src, out));
        assert_eq!(row[6], 0.25);
        assert_eq!(row[7], 0.05);
    }

    #[test]
    fn batches_are_checked_before_any_cuda_call() {
        let px = vec![0u8; 4 * 5 * 3];
        let img = ImageView {
            height: 4,
            width: 5,
            channels: 3,
            data: &px,
        };
        let p = [SampleParams::IDENTITY];
        assert_eq!(check_batch(&[img], &p, &[0], &spec(3)).unwrap(), 1);
        // lengths disagree
        assert!(check_batch(&[img], &p, &[0, 1], &spec(3)).is_err());
        assert!(check_batch(&[], &[], &[], &spec(3)).is_err());
        // channels differ from the spec
        assert!(check_batch(&[img], &p, &[0], &spec(1)).is_err());
        // data length lies
        let short = ImageView {
            data: &px[1..],
            ..img
        };
        assert!(check_batch(&[short], &p, &[0], &spec(3)).is_err());
        let empty = ImageView {
            height: 0,
            data: &[],
            ..img
        };
        assert!(check_batch(&[empty], &p, &[0], &spec(3)).is_err());
        let huge = ImageView {
            height: MAX_SOURCE_SIDE,
            ..img
        };
        assert!(check_batch(&[huge], &p, &[0], &spec(3)).is_err());
        // invalid spec
        let mut bad = spec(3);
        bad.std[1] = 0.0;
        assert!(check_batch(&[img], &p, &[0], &bad).is_err());
    }

    #[test]
    fn handles_can_move_to_loader_threads() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<GpuAugmenter>();
        send::<DeviceBatch>();
        sync::<DeviceBatch>();
        send::<super::super::RelaxedGpu>();
        sync::<super::super::Device>();
        send::<super::super::Device>();
    }

    #[test]
    fn norm_pads_unused_channels() {
        let mut s = spec(1);
        s.mean = vec![0.5];
        s.std = vec![0.25];
        let n = norm_of(&s);
        assert_eq!(n.mean, [0.5, 0.0, 0.0, 0.0]);
        assert_eq!(n.std, [0.25, 1.0, 1.0, 1.0]);
        assert_eq!(
            std::mem::size_of::<Norm>(),
            super::super::kernels::NORM_BYTES
        );
    }
}

//! Relaxed-mode augmentation on the GPU, for meta-learning: the forward on
//! f32 CHW images in `[0, 1]` and its vector-Jacobian product with respect to
//! each sample's 8 parameters ([`PARAMS_PER_SAMPLE`]: `m0..m5`, flip gate,
//! sigma) and to the input images. The formulas are in `kernels/relaxed.cu`.
//!
//! Parameter gradients are reduced deterministically (per-block f64 partial
//! sums added in block order; the block count depends only on the shape). The
//! input gradient is scattered with `atomicAdd`, so its low bits may vary
//! between runs.

use std::sync::Arc;

use super::augment::PARAMS_PER_SAMPLE;
use super::backend::{Backend, Elem, LaunchConfig};
use super::device::Device;
use super::kernels::relaxed_module;
use super::launch::Launch;
use crate::ops::Size;
use crate::{Error, Result};

const BLOCK: u32 = 256;

/// Shape of a relaxed-mode batch: input `[batch, channels, input]`, output
/// `[batch, channels, output]`, f32, CHW per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelaxedShape {
    /// Samples.
    pub batch: usize,
    /// Channels (any number ≥ 1).
    pub channels: usize,
    /// Input height × width.
    pub input: Size,
    /// Output height × width.
    pub output: Size,
}

impl RelaxedShape {
    /// Elements of the input batch.
    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.input.height as usize * self.input.width as usize
    }

    /// Elements of the output batch.
    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.output.height as usize * self.output.width as usize
    }

    fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::invalid("relaxed shape", why));
        if self.batch == 0 || self.batch > super::augment::MAX_BATCH {
            return bad(format!("batch {} outside 1..=65535", self.batch));
        }
        if self.channels == 0 {
            return bad("0 channels".into());
        }
        for (what, s) in [("input", self.input), ("output", self.output)] {
            if s.height == 0 || s.width == 0 || s.height >= 1 << 24 || s.width >= 1 << 24 {
                return bad(format!("{what} size {}x{}", s.height, s.width));
            }
        }
        let c = self.channels as u64;
        let (h, w) = (self.input.height as u64, self.input.width as u64);
        let (ho, wo) = (self.output.height as u64, self.output.width as u64);
        if (h + 1) * (w + 1) >= 1 << 31 || c * ho * wo > u32::MAX as u64 {
            return bad("an image is too large for 32-bit indexing".into());
        }
        let total = (self.batch as u64).checked_mul(c * (h * w).max(ho * wo));
        if total.is_none_or(|t| t > isize::MAX as u64 / 4) {
            return bad("the batch is too large".into());
        }
        Ok(())
    }

    /// Blocks per sample of the VJP: enough for ~512 blocks in all, at most
    /// one per 256 output pixels. Depends on the shape only, so the parameter
    /// gradients are reproducible on any GPU.
    fn vjp_blocks(&self) -> u32 {
        let pixels = self.output.height * self.output.width;
        let want = 512usize.div_ceil(self.batch) as u32;
        want.clamp(1, pixels.div_ceil(BLOCK))
    }
}

/// The gradients [`RelaxedGpu::vjp_host`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct RelaxedGrads {
    /// `dL/d params`, one row of 8 per sample.
    pub params: Vec<[f32; PARAMS_PER_SAMPLE]>,
    /// `dL/d input`, `[batch, channels, input]`, if asked for.
    pub input: Option<Vec<f32>>,
}

/// Launches the relaxed-mode kernels on one stream of a device (or of the
/// CPU [`Emulator`](super::Emulator), which runs the same host code).
pub struct RelaxedGpu<B: Backend = Device> {
    device: B,
    stream: Arc<B::Stream>,
}

impl<B: Backend> std::fmt::Debug for RelaxedGpu<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaxedGpu")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn need<B: Backend, T: Elem>(what: &str, s: &B::Buf<T>, n: usize) -> Result<()> {
    let len = B::len(s);
    if len < n {
        return Err(Error::invalid(
            what,
            format!("{len} elements on the device, the shape needs {n}"),
        ));
    }
    Ok(())
}

impl<B: Backend> RelaxedGpu<B> {
    /// Kernels on a new stream of `device` (compiled and loaded now).
    pub fn new(device: &B) -> Result<RelaxedGpu<B>> {
        let stream = device.new_stream()?;
        let m = relaxed_module();
        for k in &m.kernels {
            device.prepare(&m, &k.name)?;
        }
        Ok(RelaxedGpu {
            device: device.clone(),
            stream,
        })
    }

    /// The stream everything is queued on.
    pub fn stream(&self) -> &Arc<B::Stream> {
        &self.stream
    }

    /// Forward on device buffers: `out = A(input; params)`.
    ///
    /// `params` holds `batch × 8` floats, `samples` the low 32 bits of each
    /// sample's global index (the Philox noise key, as `PhiloxStream::new`
    /// truncates it). Buffers too short for `shape` are an error.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        shape: RelaxedShape,
        input: &B::Buf<f32>,
        params: &B::Buf<f32>,
        samples: &B::Buf<u32>,
        seed: u64,
        epoch: u64,
        out: &mut B::Buf<f32>,
    ) -> Result<()> {
        shape.validate()?;
        need::<B, _>("input", input, shape.input_len())?;
        need::<B, _>("params", params, shape.batch * PARAMS_PER_SAMPLE)?;
        need::<B, _>("samples", samples, shape.batch)?;
        need::<B, _>("output", out, shape.output_len())?;
        let m = relaxed_module();
        let s = Scalars::new(shape, seed, epoch);
        let pixels = shape.output.height * shape.output.width;
        let cfg = LaunchConfig {
            grid_dim: (pixels.div_ceil(BLOCK), shape.batch as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = Launch::new(&self.device, &m, 0);
        l.buf::<f32>(input).buf::<f32>(params).buf::<u32>(samples);
        s.push(&mut l);
        l.buf::<f32>(out);
        // SAFETY: kinds checked by `launch`. Bounds: grid.y = batch and
        // threads with pixel index < out_h*out_w do work; sample b reads
        // params[8b..8b+8], samples[b], input planes [(b*C + c)*H*W, +H*W) at
        // in-bounds neighbours only, and writes out[(b*C + c)*Ho*Wo + i*Wo + j]:
        // all inside the lengths checked by `need` above; `validate` keeps
        // every 32-bit index below 2^31 / 2^32.
        unsafe { l.launch(&self.stream, cfg) }
    }

    /// VJP on device buffers: `grad_params = (d out / d params)^T grad_out`
    /// (`batch × 8`, overwritten) and, if given, `grad_input` (overwritten).
    #[allow(clippy::too_many_arguments)]
    pub fn vjp(
        &self,
        shape: RelaxedShape,
        input: &B::Buf<f32>,
        params: &B::Buf<f32>,
        samples: &B::Buf<u32>,
        seed: u64,
        epoch: u64,
        grad_out: &B::Buf<f32>,
        grad_params: &mut B::Buf<f32>,
        grad_input: Option<&mut B::Buf<f32>>,
    ) -> Result<()> {
        shape.validate()?;
        need::<B, _>("input", input, shape.input_len())?;
        need::<B, _>("params", params, shape.batch * PARAMS_PER_SAMPLE)?;
        need::<B, _>("samples", samples, shape.batch)?;
        need::<B, _>("grad_out", grad_out, shape.output_len())?;
        need::<B, _>("grad_params", grad_params, shape.batch * PARAMS_PER_SAMPLE)?;
        let m = relaxed_module();
        let nb = shape.vjp_blocks();
        let partial = self
            .device
            .alloc_zeros::<f64>(&self.stream, shape.batch * nb as usize * PARAMS_PER_SAMPLE)?;
        let s = Scalars::new(shape, seed, epoch);
        let cfg = LaunchConfig {
            grid_dim: (nb, shape.batch as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        match grad_input {
            None => {
                let mut l = Launch::new(&self.device, &m, 1);
                l.buf::<f32>(input).buf::<f32>(params).buf::<u32>(samples);
                s.push(&mut l);
                l.buf::<f32>(grad_out).buf::<f64>(&partial);
                // SAFETY: as `forward` for the reads; grad_out is read at the
                // output indices (length checked); partial holds
                // batch * nb * 8 f64 and block (blk, b) writes row b*nb + blk.
                unsafe { l.launch(&self.stream, cfg) }?;
            }
            Some(gi) => {
                need::<B, _>("grad_input", gi, shape.input_len())?;
                let n = B::len(gi) * 4;
                self.device.memset(&self.stream, gi, 0, n)?;
                let mut l = Launch::new(&self.device, &m, 2);
                l.buf::<f32>(input).buf::<f32>(params).buf::<u32>(samples);
                s.push(&mut l);
                l.buf::<f32>(grad_out).buf::<f64>(&partial).buf::<f32>(gi);
                // SAFETY: as the parameters-only case; grad_input (zeroed just
                // above on this stream) receives atomicAdds at in-bounds
                // neighbours of the input planes only (length checked).
                unsafe { l.launch(&self.stream, cfg) }?;
            }
        }
        let cfg = LaunchConfig {
            grid_dim: (shape.batch as u32, 1, 1),
            block_dim: (PARAMS_PER_SAMPLE as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = Launch::new(&self.device, &m, 3);
        l.buf::<f64>(&partial).u32(nb).buf::<f32>(grad_params);
        // SAFETY: block b, thread k < 8 reads partial[(b*nb + blk)*8 + k] for
        // blk < nb (batch*nb*8 f64 allocated above) and writes
        // grad_params[b*8 + k] (length checked).
        unsafe { l.launch(&self.stream, cfg) }
    }

    /// [`forward`](Self::forward) from and to host memory.
    pub fn forward_host(
        &self,
        shape: RelaxedShape,
        input: &[f32],
        params: &[[f32; PARAMS_PER_SAMPLE]],
        samples: &[u64],
        seed: u64,
        epoch: u64,
    ) -> Result<Vec<f32>> {
        let (x, p, s) = self.upload(shape, input, params, samples)?;
        // SAFETY: uninitialised f32 device memory; the kernel writes every
        // element of the output shape before it is read back.
        let mut out = unsafe { self.device.alloc::<f32>(&self.stream, shape.output_len()) }?;
        self.forward(shape, &x, &p, &s, seed, epoch, &mut out)?;
        self.download(&out)
    }

    /// [`vjp`](Self::vjp) from and to host memory.
    #[allow(clippy::too_many_arguments)]
    pub fn vjp_host(
        &self,
        shape: RelaxedShape,
        input: &[f32],
        params: &[[f32; PARAMS_PER_SAMPLE]],
        samples: &[u64],
        seed: u64,
        epoch: u64,
        grad_out: &[f32],
        input_grad: bool,
    ) -> Result<RelaxedGrads> {
        if grad_out.len() != shape.output_len() {
            return Err(Error::invalid(
                "grad_out",
                format!(
                    "{} elements, the shape has {}",
                    grad_out.len(),
                    shape.output_len()
                ),
            ));
        }
        let (x, p, s) = self.upload(shape, input, params, samples)?;
        let g = self.device.upload(&self.stream, grad_out)?;
        let mut gp = self
            .device
            .alloc_zeros::<f32>(&self.stream, shape.batch * PARAMS_PER_SAMPLE)?;
        let mut gi = if input_grad {
            Some(
                self.device
                    .alloc_zeros::<f32>(&self.stream, shape.input_len())?,
            )
        } else {
            None
        };
        self.vjp(shape, &x, &p, &s, seed, epoch, &g, &mut gp, gi.as_mut())?;
        let flat = self.download(&gp)?;
        let params = flat
            .chunks_exact(PARAMS_PER_SAMPLE)
            .map(|r| {
                let mut a = [0.0; PARAMS_PER_SAMPLE];
                a.copy_from_slice(r);
                a
            })
            .collect();
        let input = match gi {
            Some(gi) => Some(self.download(&gi)?),
            None => None,
        };
        Ok(RelaxedGrads { params, input })
    }

    #[allow(clippy::type_complexity)]
    fn upload(
        &self,
        shape: RelaxedShape,
        input: &[f32],
        params: &[[f32; PARAMS_PER_SAMPLE]],
        samples: &[u64],
    ) -> Result<(B::Buf<f32>, B::Buf<f32>, B::Buf<u32>)> {
        shape.validate()?;
        if input.len() != shape.input_len()
            || params.len() != shape.batch
            || samples.len() != shape.batch
        {
            return Err(Error::invalid(
                "relaxed batch",
                format!(
                    "{} input elements, {} parameter rows, {} sample indices for shape {shape:?}",
                    input.len(),
                    params.len(),
                    samples.len()
                ),
            ));
        }
        let flat: Vec<f32> = params.iter().flatten().copied().collect();
        let idx: Vec<u32> = samples.iter().map(|&s| s as u32).collect();
        let (d, st) = (&self.device, &self.stream);
        Ok((
            d.upload(st, input)?,
            d.upload(st, &flat)?,
            d.upload(st, &idx)?,
        ))
    }

    fn download(&self, s: &B::Buf<f32>) -> Result<Vec<f32>> {
        let mut v = vec![0f32; B::len(s)];
        self.device.download_into(&self.stream, s, &mut v)?;
        Ok(v)
    }
}

/// The scalar kernel arguments shared by the relaxed kernels, in order.
struct Scalars {
    v: [u32; 8],
}

impl Scalars {
    fn new(shape: RelaxedShape, seed: u64, epoch: u64) -> Scalars {
        Scalars {
            v: [
                seed as u32,
                (seed >> 32) as u32,
                epoch as u32,
                shape.channels as u32,
                shape.input.height,
                shape.input.width,
                shape.output.height,
                shape.output.width,
            ],
        }
    }

    fn push<B: Backend>(&self, l: &mut Launch<'_, B>) {
        for &v in &self.v {
            l.u32(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_validated() {
        let ok = RelaxedShape {
            batch: 2,
            channels: 3,
            input: Size::new(5, 7),
            output: Size::new(4, 4),
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.input_len(), 2 * 3 * 35);
        assert_eq!(ok.output_len(), 2 * 3 * 16);
        for bad in [
            RelaxedShape { batch: 0, ..ok },
            RelaxedShape { channels: 0, ..ok },
            RelaxedShape {
                input: Size::new(0, 3),
                ..ok
            },
            RelaxedShape {
                output: Size::new(1 << 24, 1),
                ..ok
            },
            RelaxedShape {
                input: Size::new(60_000, 60_000),
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vjp_blocks_depend_on_shape_only() {
        let s = |b, h, w| RelaxedShape {
            batch: b,
            channels: 1,
            input: Size::new(8, 8),
            output: Size::new(h, w),
        };
        assert_eq!(s(1, 1, 1).vjp_blocks(), 1);
        assert_eq!(s(1, 224, 224).vjp_blocks(), 196);
        assert_eq!(s(1, 1024, 1024).vjp_blocks(), 512);
        assert_eq!(s(512, 224, 224).vjp_blocks(), 1);
        assert_eq!(s(3, 224, 224).vjp_blocks(), 171);
    }
}

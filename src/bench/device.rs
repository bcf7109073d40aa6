//! The CUDA stages: pinned host → device upload of decoded sources, and
//! the fused augmentation kernel on a batch already on the device.

use std::time::Instant;

use super::{Ctx, Stage, StageRate};
use crate::decode::Pixels;
use crate::error::{Error, Result};
use crate::loader::Device;

impl Ctx<'_> {
    pub(super) fn device_name(&self) -> String {
        match self.cfg.device {
            Device::Cpu => "cpu".into(),
            Device::Cuda(n) => format!("cuda:{n}"),
        }
    }

    pub(super) fn device_stage(&self, stage: Stage, sources: &[Pixels<'static>]) -> StageRate {
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

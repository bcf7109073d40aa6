//! The end-to-end stage: the [`Loader`] itself, batches consumed as they
//! come, with the cores it kept busy and how its decode workers spent the
//! time.

use std::time::{Duration, Instant};

use super::clock::{process_cpu_time, threads_schedstat};
use super::{Ctx, Stage, StageRate, WorkerTime};
use crate::error::{Error, Result};
use crate::loader::Loader;

impl Ctx<'_> {
    pub(super) fn end_to_end(&self) -> StageRate {
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
}

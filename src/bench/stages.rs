//! The CPU stages, each measured alone on the bench pool: read, decode
//! and augment, and the decoded sources the augment and device stages
//! cycle over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::clock::CpuTimer;
use super::{Ctx, Stage, StageRate};
use crate::decode::{decode, decode_region, Pixels};
use crate::error::{Error, Result};
use crate::ops::augment_into;
use crate::ops::philox::{PhiloxStream, STREAM_NOISE};

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

    pub(super) fn read(&self) -> Result<StageRate> {
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
    pub(super) fn decode(&self) -> Result<(StageRate, (f64, f64))> {
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
    pub(super) fn decoded_sources(&self) -> Result<Vec<Pixels<'static>>> {
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

    pub(super) fn augment(&self, sources: &[Pixels<'static>]) -> Result<StageRate> {
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
}

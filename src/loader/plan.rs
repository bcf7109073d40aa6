//! Which samples go in which batch: the epoch's order (a Philox-keyed
//! shuffle), the rank's share of it, and the batch boundaries.
//!
//! Everything here is a pure function of `(dataset length, seed, epoch,
//! rank, world size, batch size, drop_last)`, so any rank can compute its
//! batches alone and a run can resume at any batch.

use crate::ops::philox::{PhiloxStream, STREAM_SHUFFLE};

/// Where a loader is in its stream of batches: the epoch, and the index of
/// the next batch inside that epoch (for this rank).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Epoch number (the value that keys the epoch's randomness).
    pub epoch: u64,
    /// Index of the next batch in the epoch, counted on this rank.
    pub batch: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} batch {}", self.epoch, self.batch)
    }
}

/// The sampling setup shared by every epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    /// Samples in the dataset.
    pub len: u64,
    /// Samples per batch.
    pub batch_size: u64,
    /// Shuffle each epoch (otherwise dataset order).
    pub shuffle: bool,
    /// Drop samples that would make batches smaller than `batch_size`.
    pub drop_last: bool,
    /// This process's rank, `< world_size`.
    pub rank: u64,
    /// Number of ranks sharing each epoch.
    pub world_size: u64,
    /// Seed of all randomness.
    pub seed: u64,
}

/// One epoch's batches for one rank.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    samples: Vec<u64>,
    /// Start of each batch in `samples`, plus the end.
    bounds: Vec<usize>,
}

impl EpochPlan {
    /// Computes the plan of `epoch` for the rank in `cfg`.
    pub fn new(cfg: &PlanConfig, epoch: u64) -> EpochPlan {
        let order = epoch_order(cfg.len, cfg.shuffle, cfg.seed, epoch);
        let world = cfg.world_size.max(1);
        let batch = cfg.batch_size.max(1);
        let (samples, bounds) = if cfg.drop_last {
            // Every rank gets the same number of full batches; the remainder
            // of the epoch is dropped.
            let per_rank = cfg.len / world / batch * batch;
            let start = (cfg.rank * per_rank) as usize;
            let mine = order[start..start + per_rank as usize].to_vec();
            let bounds = (0..=per_rank / batch)
                .map(|k| (k * batch) as usize)
                .collect();
            (mine, bounds)
        } else {
            // Balanced contiguous shares (sizes differ by at most one); every
            // rank gets the same number of batches (so that collective
            // operations stay in step), full ones first, the tail spread so
            // that no batch is empty. The one case where that cannot hold,
            // batch size 1 with an uneven split, gives the shorter ranks an
            // empty last batch rather than a duplicated sample.
            let base = cfg.len / world;
            let extra = cfg.len % world;
            let share = |r: u64| base + u64::from(r < extra);
            let start: u64 = (0..cfg.rank).map(share).sum();
            let count = share(cfg.rank);
            let mine = order[start as usize..(start + count) as usize].to_vec();
            let batches = share(0).div_ceil(batch);
            (mine, tail_spread_bounds(count, batches, batch))
        };
        EpochPlan { samples, bounds }
    }

    /// Number of batches in the epoch.
    pub fn batches(&self) -> u64 {
        (self.bounds.len() - 1) as u64
    }

    /// The global sample indices of batch `b`, or `None` past the end.
    pub fn batch(&self, b: u64) -> Option<&[u64]> {
        let b = usize::try_from(b).ok()?;
        let (lo, hi) = (*self.bounds.get(b)?, *self.bounds.get(b + 1)?);
        Some(&self.samples[lo..hi])
    }

    /// All samples of this rank in the epoch, in batch order.
    pub fn samples(&self) -> &[u64] {
        &self.samples
    }
}

/// Batch boundaries for `count` samples in exactly `batches` batches of at
/// most `batch` samples, each non-empty when `count >= batches`: full batches
/// first, then the tail spread one by one.
fn tail_spread_bounds(count: u64, batches: u64, batch: u64) -> Vec<usize> {
    let mut bounds = Vec::with_capacity(batches as usize + 1);
    let mut at = 0u64;
    bounds.push(0);
    for k in 0..batches {
        let later = batches - k - 1;
        let size = batch.min(count.saturating_sub(at).saturating_sub(later));
        at += size;
        bounds.push(at as usize);
    }
    bounds
}

/// The order of the whole dataset in `epoch`: identity, or a Fisher–Yates
/// shuffle driven by Philox keyed `(seed, epoch, STREAM_SHUFFLE)`.
pub fn epoch_order(len: u64, shuffle: bool, seed: u64, epoch: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..len).collect();
    if shuffle && len > 1 {
        // Sample index 0 of the stream is free for shuffling: each block
        // gives one swap partner per step.
        let rng = PhiloxStream::new(seed, epoch, 0, STREAM_SHUFFLE);
        for i in (1..len as usize).rev() {
            let w = rng.block(i as u32);
            // 64-bit draw, multiply-shift to [0, i]: bias < 2^-32 · len.
            let x = (u64::from(w[0]) << 32) | u64::from(w[1]);
            let j = ((x as u128 * (i as u128 + 1)) >> 64) as usize;
            order.swap(i, j);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(len: u64, batch: u64, drop_last: bool, rank: u64, world: u64) -> PlanConfig {
        PlanConfig {
            len,
            batch_size: batch,
            shuffle: true,
            drop_last,
            rank,
            world_size: world,
            seed: 5,
        }
    }

    #[test]
    fn shuffle_is_a_permutation_that_depends_on_seed_and_epoch() {
        let a = epoch_order(1000, true, 1, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, epoch_order(1000, true, 1, 1));
        assert_ne!(a, epoch_order(1000, true, 2, 0));
        assert_eq!(a, epoch_order(1000, true, 1, 0));
        assert_eq!(epoch_order(5, false, 1, 0), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn every_sample_once_across_ranks_with_equal_batch_counts() {
        for len in [1u64, 7, 10, 99, 100, 1000, 1001] {
            for world in 1..=4u64 {
                for batch in [1u64, 2, 3, 32] {
                    if len < world {
                        continue;
                    }
                    let plans: Vec<_> = (0..world)
                        .map(|r| EpochPlan::new(&cfg(len, batch, false, r, world), 3))
                        .collect();
                    let mut all: Vec<u64> =
                        plans.iter().flat_map(|p| p.samples().to_vec()).collect();
                    all.sort_unstable();
                    assert_eq!(all, (0..len).collect::<Vec<_>>(), "{len} {world} {batch}");
                    let n = plans[0].batches();
                    for p in &plans {
                        assert_eq!(p.batches(), n, "{len} {world} {batch}");
                        for b in 0..n {
                            let s = p.batch(b).unwrap();
                            assert!(s.len() as u64 <= batch);
                            let uneven_singletons = batch == 1 && len % world != 0;
                            assert!(!s.is_empty() || uneven_singletons);
                        }
                        assert!(p.batch(n).is_none());
                    }
                }
            }
        }
    }

    #[test]
    fn drop_last_gives_full_equal_batches_and_disjoint_ranks() {
        let plans: Vec<_> = (0..3)
            .map(|r| EpochPlan::new(&cfg(100, 8, true, r, 3), 0))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for p in &plans {
            assert_eq!(p.batches(), 4);
            for b in 0..4 {
                assert_eq!(p.batch(b).unwrap().len(), 8);
            }
            for &s in p.samples() {
                assert!(seen.insert(s));
            }
        }
    }

    #[test]
    fn full_batches_come_first() {
        let p = EpochPlan::new(&cfg(10, 4, false, 0, 1), 0);
        let sizes: Vec<_> = (0..p.batches())
            .map(|b| p.batch(b).unwrap().len())
            .collect();
        assert_eq!(sizes, vec![4, 4, 2]);
    }
}

//! How a batch's samples are spread over the decode threads: largest first.
//!
//! A batch ends when its last sample does, so a thread that picks up a big
//! image late keeps the others idle until it is done. Real photo sets mix
//! sizes widely (the bundled ImageNet photos range from 0.03 to 3.8
//! megapixels, and the largest decodes about 20 times slower than the
//! median), and rayon's halving of the index range can leave such an image
//! for the end of a batch. Here every thread takes the next sample from one
//! list sorted by estimated cost, largest first (longest-processing-time
//! list scheduling), so the batch ends on small samples and no thread waits
//! for more than about one of them.
//!
//! The order only decides which thread computes a sample and when: every
//! sample is written to its own slot from its own random stream, so batches
//! are bit for bit the same as in any other order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `work` on every item on `pool`, items of larger `cost` first, each
/// thread taking the next item as soon as it finishes one; returns the
/// results in the items' order. Ties keep the items' order.
///
/// A panic in `work` reaches the caller once the other threads have run
/// the items left.
pub(crate) fn largest_first<T, R>(
    pool: &rayon::ThreadPool,
    items: Vec<T>,
    cost: impl Fn(&T) -> u64,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R>
where
    T: Send,
    R: Send,
{
    let n = items.len();
    let mut order: Vec<(usize, u64, T)> = items
        .into_iter()
        .enumerate()
        .map(|(k, t)| (k, cost(&t), t))
        .collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // One lock per item, each taken exactly once (by whichever thread drew
    // its position), so none is ever contended.
    let jobs: Vec<Mutex<Option<(usize, T)>>> = order
        .into_iter()
        .map(|(k, _, t)| Mutex::new(Some((k, t))))
        .collect();
    let next = AtomicUsize::new(0);
    let per_thread: Vec<Vec<(usize, R)>> = pool.broadcast(|_| {
        let mut done = Vec::new();
        loop {
            let at = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = jobs.get(at) else { break };
            let job = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((k, item)) = job {
                done.push((k, work(item)));
            }
        }
        done
    });
    let mut results: Vec<Option<R>> = (0..n).map(|_| None).collect();
    for (k, r) in per_thread.into_iter().flatten() {
        results[k] = Some(r);
    }
    // Every position below n was drawn by exactly one thread, which ran it.
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn results_come_back_in_item_order_whatever_the_costs() {
        for threads in [1, 2, 4] {
            let items: Vec<u64> = (0..200).map(|k| (k * 7919) % 101).collect();
            let out = largest_first(&pool(threads), items.clone(), |&c| c, |x| x * 3 + 1);
            assert_eq!(out, items.iter().map(|x| x * 3 + 1).collect::<Vec<_>>());
        }
        let empty: Vec<u64> = largest_first(&pool(2), Vec::<u64>::new(), |_| 0, |x| x);
        assert!(empty.is_empty());
    }

    #[test]
    fn one_thread_runs_items_largest_first_ties_in_order() {
        let started = AtomicU64::new(0);
        let seen = Mutex::new(Vec::new());
        let items = vec![(0, 5u64), (1, 9), (2, 5), (3, 1), (4, 9)];
        largest_first(
            &pool(1),
            items,
            |&(_, c)| c,
            |(k, _)| {
                started.fetch_add(1, Ordering::Relaxed);
                seen.lock().unwrap().push(k);
            },
        );
        assert_eq!(*seen.lock().unwrap(), vec![1, 4, 0, 2, 3]);
        assert_eq!(started.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| {
            largest_first(
                &pool(2),
                (0..10u64).collect(),
                |&c| c,
                |c| assert!(c != 3, "item {c}"),
            )
        });
        assert!(r.is_err());
    }
}

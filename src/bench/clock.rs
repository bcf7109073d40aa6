//! The clocks the stages are timed with: thread and process CPU time, the
//! scheduler's per-thread run and wait times, and the [`CpuTimer`] stopwatch.

use std::time::Duration;

/// CPU time consumed by the calling thread (`CLOCK_THREAD_CPUTIME_ID`):
/// unlike a wall clock, it does not count the time the thread waits while
/// other processes hold the cores, so a stage's cost reads the same on a
/// busy machine.
fn thread_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed by the whole process so far, all threads
/// (`CLOCK_PROCESS_CPUTIME_ID`): unlike wall time, it does not grow while
/// other processes hold the cores. Zero where the clock is unavailable.
pub fn process_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The CPU-time clock `id` (zero when it cannot be read).
fn cpu_clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both callers pass clock
    // ids every Linux and macOS kernel knows.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Time on a core and time waiting for one (runnable, queued behind other
/// work), summed over this process's threads whose name starts with
/// `prefix`, from `/proc/self/task/*/schedstat` (Linux; `None` elsewhere).
pub(super) fn threads_schedstat(prefix: &str) -> Option<(Duration, Duration, usize)> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let (mut run, mut wait, mut n) = (0u64, 0u64, 0usize);
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        let mut f = stat
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        run += f.next().unwrap_or(0);
        wait += f.next().unwrap_or(0);
        n += 1;
    }
    (n > 0).then(|| (Duration::from_nanos(run), Duration::from_nanos(wait), n))
}

/// A stopwatch of the calling thread's CPU time.
pub(super) struct CpuTimer(Duration);

impl CpuTimer {
    pub(super) fn start() -> CpuTimer {
        CpuTimer(thread_cpu_time())
    }

    pub(super) fn elapsed(&self) -> Duration {
        thread_cpu_time().saturating_sub(self.0)
    }
}

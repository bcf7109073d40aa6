//! Keeping freed tensor memory in the process (glibc only).
//!
//! A meta step allocates and frees dozens of tensors of 0.1–1 MB (the
//! tape's values and gradients, the inner step's weights). glibc's `malloc`
//! serves blocks above its mmap threshold with fresh mappings and gives the
//! top of its heap back to the kernel once more than its trim threshold is
//! free, so every step faults the same memory in again, zeroed by the
//! kernel: in a profile of the MAML step on this project's machine, ~14 % of
//! the time was page faults, `clear_page` and unmapping, and the step's time
//! varied between processes (3.9–4.5 ms in some, 6–7.9 ms in others).
//!
//! [`keep_freed_memory`] raises both thresholds once for the process. It
//! is opt-in, because the allocator is the program's to configure: the
//! `metaug` command and the `meta` benchmark call it; a training binary
//! that runs meta steps can call it too (or use another allocator).

/// Tells glibc's `malloc` to serve blocks up to 32 MiB from its heap and
/// to keep up to 256 MiB of freed memory instead of returning it to the
/// kernel. Returns whether the settings took (false on other C libraries,
/// where it does nothing).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes malloc's tunables; both
        // parameters are documented for glibc and the values are in range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_settings_take_on_glibc() {
        let took = super::keep_freed_memory();
        assert_eq!(took, cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}

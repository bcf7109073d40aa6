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

mod augmenter;
mod batch;
mod check;
mod params;
mod staging;

pub use augmenter::GpuAugmenter;
pub use batch::DeviceBatch;
pub use check::{MAX_BATCH, MAX_SOURCE_SIDE};
pub use params::{pack_params, pack_window_params, PARAMS_PER_SAMPLE};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::spec::{DType, Layout, OutputSpec};
    use crate::ops::Size;

    /// An 8×12 f32 NCHW spec of `c` channels, mean 0 and std 1 (shared by
    /// the submodules' tests).
    pub(super) fn spec(c: u32) -> OutputSpec {
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
}

//! The per-thread scratch buffers of the fast path, grown to the largest
//! row seen and reused from sample to sample.

use std::cell::RefCell;

/// Per-thread buffers, grown to the largest row seen and then reused.
#[derive(Default)]
pub(super) struct Scratch {
    /// The row being built, C planes of `W_out`.
    pub(super) rows: Vec<f32>,
    /// Unflipped samples, for a blended flip.
    pub(super) sampled: Vec<f32>,
    /// One channel's noise.
    pub(super) eps: Vec<f32>,
    /// Per output column: `fx`, `fy`.
    pub(super) fx: Vec<f32>,
    pub(super) fy: Vec<f32>,
    /// Per output column: the corner `x0`, `y0` (saturated at ±2^30).
    pub(super) x0: Vec<i32>,
    pub(super) y0: Vec<i32>,
    /// Per output column: the byte offset of the top-left neighbour when all
    /// four neighbours are inside (with [`GATHER_MARGIN`] bytes to spare
    /// after the bottom-right one), else -1.
    pub(super) off: Vec<i32>,
}

/// Bytes that may be read past the bottom-right neighbour's last channel by
/// a 4-byte load at the neighbour's offset.
pub(super) const GATHER_MARGIN: usize = 4;

impl Scratch {
    pub(super) fn reserve(&mut self, c: usize, w: usize) {
        fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
            if v.len() < n {
                v.resize(n, T::default());
            }
        }
        grow(&mut self.rows, c * w);
        grow(&mut self.sampled, c * w);
        grow(&mut self.eps, w);
        grow(&mut self.fx, w);
        grow(&mut self.fy, w);
        grow(&mut self.x0, w);
        grow(&mut self.y0, w);
        grow(&mut self.off, w);
    }
}

thread_local! {
    pub(super) static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

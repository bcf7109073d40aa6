//! The scalar type of the engine: `f32` for training, `f64` for gradient checks.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point scalar the tape can compute with.
///
/// Implemented for `f32` and `f64`; the few transcendental functions and the
/// matrix product are all the engine needs.
pub trait Float:
    Copy
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Converts from `f64` (rounding for `f32`).
    fn from_f64(x: f64) -> Self;
    /// Converts from `f32` (exact).
    fn from_f32(x: f32) -> Self;
    /// Converts to `f64` (exact).
    fn to_f64(self) -> f64;
    /// `e^x`.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Largest integer not above `self`.
    fn floor(self) -> Self;
    /// `floor(self)` as an integer, saturating (NaN → 0), without a libm call.
    fn floor_i64(self) -> i64;
    /// `self` as an array index: exact for integral values in
    /// `[0, 2^30]`, clamped into that range otherwise (NaN → 0). Branch-free,
    /// so that a loop of it vectorises.
    fn to_index(self) -> u32;
    /// The larger of two values.
    fn max(self, other: Self) -> Self;
    /// The smaller of two values.
    fn min(self, other: Self) -> Self;
    /// Sine and cosine.
    fn sin_cos(self) -> (Self, Self);
    /// The four corners `plane[k]`, `plane[k + 1]`, `plane[k + row]`,
    /// `plane[k + row + 1]` of every top-left index `k` of `idx`, into
    /// `out[0..4]` (by vector gathers where the CPU has them; the same
    /// values either way).
    ///
    /// # Safety
    /// Every `out[c]` is at least `idx.len()` long, and for every index
    /// `k`, `0 ≤ k` and `k + row + 1 < plane.len()`.
    unsafe fn gather_corners(plane: &[Self], idx: &[i32], row: usize, out: &mut [Vec<Self>; 4]);
    /// `C ← α·A·B + β·C` on row-major or strided matrices: `A` is `m×k`
    /// with row stride `rsa` and column stride `csa`, `B` is `k×n`, `C` is
    /// `m×n` row-major. Transposes are expressed through the strides.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: &[Self],
        rsa: usize,
        csa: usize,
        b: &[Self],
        rsb: usize,
        csb: usize,
        beta: Self,
        c: &mut [Self],
    );
}

/// The largest index a strided `rows×cols` matrix touches, plus one.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

macro_rules! impl_float {
    ($t:ty, $gemm:path, $gather:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn from_f32(x: f32) -> Self {
                x as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            #[inline]
            fn floor_i64(self) -> i64 {
                let t = self as i64;
                if (t as $t) > self {
                    t - 1
                } else {
                    t
                }
            }
            #[inline(always)]
            fn to_index(self) -> u32 {
                // `max` turns NaN into 0
                #[allow(clippy::manual_clamp)]
                let c = self.max(0.0).min(1_073_741_824.0);
                // SAFETY: c is in [0, 2^30], within i32's range.
                unsafe { c.to_int_unchecked::<i32>() as u32 }
            }
            #[inline]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline]
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            #[inline]
            fn sin_cos(self) -> (Self, Self) {
                <$t>::sin_cos(self)
            }
            #[inline]
            unsafe fn gather_corners(
                plane: &[Self],
                idx: &[i32],
                row: usize,
                out: &mut [Vec<Self>; 4],
            ) {
                // SAFETY: the caller's contract is the callee's.
                #[allow(unused_unsafe)]
                unsafe {
                    $gather(plane, idx, row, out)
                }
            }
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: &[Self],
                rsa: usize,
                csa: usize,
                b: &[Self],
                rsb: usize,
                csb: usize,
                beta: Self,
                c: &mut [Self],
            ) {
                assert!(a.len() >= extent(m, k, rsa, csa), "gemm: A too short");
                assert!(b.len() >= extent(k, n, rsb, csb), "gemm: B too short");
                assert!(c.len() >= m * n, "gemm: C too short");
                if m == 0 || n == 0 {
                    return;
                }
                // SAFETY: the asserts above prove that every index the
                // product reads in `a` and `b` (strided m×k and k×n) and
                // writes in `c` (row-major m×n) is in bounds; the slices do
                // not alias (`c` is a unique borrow). Strides fit in isize
                // because they index allocated slices.
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        alpha,
                        a.as_ptr(),
                        rsa as isize,
                        csa as isize,
                        b.as_ptr(),
                        rsb as isize,
                        csb as isize,
                        beta,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            }
        }
    };
}

impl_float!(
    f32,
    matrixmultiply::sgemm,
    crate::meta::gather::gather_corners_f32
);
impl_float!(
    f64,
    matrixmultiply::dgemm,
    crate::meta::gather::gather_corners::<f64>
);

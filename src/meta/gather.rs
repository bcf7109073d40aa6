//! The loads of the augmentation node's bilinear sample: the four corners
//! `plane[k]`, `plane[k + 1]`, `plane[k + row]`, `plane[k + row + 1]` of
//! each top-left index `k`, with AVX-512 gathers for `f32` where the CPU
//! has them (the compiler does not turn the indexed loop into gathers
//! itself). Loads only, so every build gives the same bits.

/// The portable form, for any element type (indices checked).
pub(super) fn gather_corners<F: Copy>(plane: &[F], idx: &[i32], row: usize, out: &mut [Vec<F>; 4]) {
    let n = idx.len();
    let [p0, p1, p2, p3] = out;
    let (p0, p1, p2, p3) = (&mut p0[..n], &mut p1[..n], &mut p2[..n], &mut p3[..n]);
    for e in 0..n {
        let k = idx[e] as usize;
        p0[e] = plane[k];
        p1[e] = plane[k + 1];
        p2[e] = plane[k + row];
        p3[e] = plane[k + row + 1];
    }
}

/// [`gather_corners`] for `f32`, by AVX-512 gathers where available.
///
/// # Safety
/// Every `out[c]` is at least `idx.len()` long, and for every index `k`,
/// `0 ≤ k` and `k + row + 1 < plane.len()`.
pub(super) unsafe fn gather_corners_f32(
    plane: &[f32],
    idx: &[i32],
    row: usize,
    out: &mut [Vec<f32>; 4],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was just detected; the rest is the caller's
        // contract.
        unsafe { gather_corners_avx512(plane, idx, row, out) };
        return;
    }
    gather_corners(plane, idx, row, out);
}

/// # Safety
/// The CPU has AVX-512F, and the contract of [`gather_corners_f32`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_corners_avx512(plane: &[f32], idx: &[i32], row: usize, out: &mut [Vec<f32>; 4]) {
    use std::arch::x86_64::*;
    let n = idx.len();
    let base = plane.as_ptr();
    let [p0, p1, p2, p3] = out;
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let mut e = 0;
    while e < n {
        let lanes: __mmask16 = if n - e >= 16 {
            0xffff
        } else {
            (1u16 << (n - e)) - 1
        };
        // SAFETY: lanes `e..e + count(lanes)` of `idx` and of every `out[c]`
        // are in bounds (all at least `n` long); the masked-off lanes are
        // neither read nor written. Every gathered element `k + o`, `o` in
        // `{0, 1, row, row + 1}`, is inside `plane` (the caller's contract),
        // so the offset base pointers stay inside it too, and each 8-byte
        // pair read at `k + o` (`o` in `{0, row}`) ends inside it.
        unsafe {
            let k = _mm512_maskz_loadu_epi32(lanes, idx.as_ptr().add(e));
            let (lo, hi) = (_mm512_castsi512_si256(k), _mm512_extracti64x4_epi64::<1>(k));
            let z = _mm512_setzero_si512();
            for (first, second, o) in [(&mut *p0, &mut *p1, 0), (&mut *p2, &mut *p3, row)] {
                // pairs (plane[k + o], plane[k + o + 1]), 8 per gather
                let b = base.add(o) as *const i64;
                let a = _mm512_mask_i32gather_epi64::<4>(z, lanes as __mmask8, lo, b);
                let c = _mm512_mask_i32gather_epi64::<4>(z, (lanes >> 8) as __mmask8, hi, b);
                let (a, c) = (_mm512_castsi512_ps(a), _mm512_castsi512_ps(c));
                let even = _mm512_permutex2var_ps(a, evens, c);
                let odd = _mm512_permutex2var_ps(a, odds, c);
                _mm512_mask_storeu_ps(first.as_mut_ptr().add(e), lanes, even);
                _mm512_mask_storeu_ps(second.as_mut_ptr().add(e), lanes, odd);
            }
        }
        e += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_gathers_match_the_portable_loop_at_every_length() {
        let plane: Vec<f32> = (0..97).map(|i| (i as f32).sin() * 3.0).collect();
        let row = 9;
        for n in 0..40 {
            let idx: Vec<i32> = (0..n).map(|e| ((e * 37 + 11) % 87) as i32).collect();
            let mut a: [Vec<f32>; 4] = std::array::from_fn(|_| vec![-1.0; n]);
            let mut b: [Vec<f32>; 4] = std::array::from_fn(|_| vec![-2.0; n]);
            // SAFETY: indices below 87, so k + row + 1 < 97, the plane's length.
            unsafe { gather_corners_f32(&plane, &idx, row, &mut a) };
            gather_corners(&plane, &idx, row, &mut b);
            assert_eq!(a, b, "n = {n}");
        }
    }
}

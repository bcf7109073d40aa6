//! Eight columns at once with AVX2 gathers.

use std::arch::x86_64::*;

/// Eight bytes (in i32 lanes) to `v as f32 / 255.0`: the contract's
/// division itself, eight at a time (faster here than the table look-up
/// of the scalar path, and than a product in f64).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn unit8(v: __m256i) -> __m256 {
    _mm256_div_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(255.0))
}

/// Byte `k` (0..4) of each i32 lane, as [`unit8`].
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn byte(v: __m256i, k: usize) -> __m256 {
    let shifted = _mm256_srlv_epi32(v, _mm256_set1_epi32(8 * k as i32));
    unit8(_mm256_and_si256(shifted, _mm256_set1_epi32(0xff)))
}

/// Four bytes at `base + o[l] + delta` for the 8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn gather(base: *const u8, o: __m256i, delta: usize) -> __m256i {
    let idx = _mm256_add_epi32(o, _mm256_set1_epi32(delta as i32));
    _mm256_i32gather_epi32::<1>(base as *const i32, idx)
}

/// Columns `j..j + 8` of a row: neighbours gathered, converted and
/// blended with the contract's formula, written to `dst[c·w_out + j..]`.
///
/// # Safety
/// AVX2 must be available; `j + 8 <= w_out` with `off`, `fx`, `fy` at
/// least `w_out` long and `dst` at least `C·w_out`; every `off[j..j+8]`
/// is >= 0 with `off + stride + C + 4 <= data.len()`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn blend8<const C: usize>(
    data: &[u8],
    stride: usize,
    off: &[i32],
    fx: &[f32],
    fy: &[f32],
    dst: &mut [f32],
    w_out: usize,
    j: usize,
) {
    debug_assert!(j + 8 <= w_out && off.len() >= w_out && dst.len() >= C * w_out);
    let base = data.as_ptr();
    let o = _mm256_loadu_si256(off.as_ptr().add(j) as *const __m256i);
    // Lane bytes: top0 = p00 channels (+ next), top1 = p01 channels.
    let top0 = gather(base, o, 0);
    let top1 = gather(base, o, C);
    let bot0 = gather(base, o, stride);
    let bot1 = gather(base, o, stride + C);
    let fx = _mm256_loadu_ps(fx.as_ptr().add(j));
    let fy = _mm256_loadu_ps(fy.as_ptr().add(j));
    let one = _mm256_set1_ps(1.0);
    let (gx, gy) = (_mm256_sub_ps(one, fx), _mm256_sub_ps(one, fy));
    for c in 0..C {
        let (p00, p01) = (byte(top0, c), byte(top1, c));
        let (p10, p11) = (byte(bot0, c), byte(bot1, c));
        // (1-fy)*((1-fx)*p00 + fx*p01) + fy*((1-fx)*p10 + fx*p11)
        let t = _mm256_add_ps(_mm256_mul_ps(gx, p00), _mm256_mul_ps(fx, p01));
        let b = _mm256_add_ps(_mm256_mul_ps(gx, p10), _mm256_mul_ps(fx, p11));
        let v = _mm256_add_ps(_mm256_mul_ps(gy, t), _mm256_mul_ps(fy, b));
        _mm256_storeu_ps(dst.as_mut_ptr().add(c * w_out + j), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit8_is_the_division_for_every_byte() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: skipped");
            return;
        }
        for v0 in (0..256).step_by(8) {
            let lanes: [i32; 8] = std::array::from_fn(|l| (v0 + l) as i32);
            let mut got = [0f32; 8];
            // SAFETY: AVX2 checked above; 8 lanes read and written.
            unsafe {
                let v = _mm256_loadu_si256(lanes.as_ptr() as *const __m256i);
                _mm256_storeu_ps(got.as_mut_ptr(), unit8(v));
            }
            for l in 0..8 {
                assert_eq!(got[l], lanes[l] as f32 / 255.0, "{}", lanes[l]);
            }
        }
    }
}

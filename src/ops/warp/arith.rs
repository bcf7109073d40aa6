//! The scalar arithmetic every build shares: a source byte to [0, 1] (the
//! table), `floor` without libm, an integral corner to i32 (saturated) and
//! the contract's bilinear blend.

/// `UNIT[v] = v as f32 / 255.0`: a source byte in [0, 1], bit for bit the
/// contract's division (a table look-up instead of four divisions a tap).
static UNIT: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut v = 0;
    while v < 256 {
        t[v] = v as f32 / 255.0;
        v += 1;
    }
    t
};

/// A source byte in [0, 1]: `v as f32 / 255.0`.
#[inline(always)]
pub(super) fn unit(v: u8) -> f32 {
    UNIT[v as usize]
}

/// `x.floor()`, bit for bit (signed zero, infinities and NaN included),
/// without the libm call that `floor` is on baseline x86-64, and in a form
/// the compiler vectorises (selects, no saturating casts).
#[inline(always)]
pub(crate) fn floor(x: f32) -> f32 {
    // From 2^23 on every f32 is an integer (and NaN fails the test).
    let small = x.abs() < 8_388_608.0;
    let xc = if small { x } else { 0.0 };
    // SAFETY: |xc| < 2^23, so it is finite and in i32's range.
    let t = unsafe { xc.to_int_unchecked::<i32>() } as f32;
    let t = if t > xc { t - 1.0 } else { t.copysign(xc) };
    if small {
        t
    } else {
        x
    }
}

/// An integral `xf` (a [`floor`] result) as i32, saturated to ±2^30; NaN
/// gives -2^30. Either way such a corner is far outside any image.
#[inline(always)]
pub(super) fn corner(xf: f32) -> i32 {
    const LIM: f32 = 1_073_741_824.0;
    // Not `clamp`: `clamp` keeps NaN, `max` turns it into -LIM.
    #[allow(clippy::manual_clamp)]
    let c = xf.max(-LIM).min(LIM);
    // SAFETY: `max`/`min` return the non-NaN operand, so c is in [-2^30, 2^30].
    unsafe { c.to_int_unchecked::<i32>() }
}

/// The contract's bilinear blend of four neighbours.
#[inline(always)]
pub(super) fn bilinear(fx: f32, fy: f32, p00: f32, p01: f32, p10: f32, p11: f32) -> f32 {
    (1.0 - fy) * ((1.0 - fx) * p00 + fx * p01) + fy * ((1.0 - fx) * p10 + fx * p11)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_matches_std() {
        let specials = [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            8_388_607.5,
            -8_388_607.5,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
        ];
        for x in specials {
            assert_eq!(floor(x).to_bits(), x.floor().to_bits(), "{x}");
        }
        assert!(floor(f32::NAN).is_nan());
        let mut bits = 0u32;
        while let Some(b) = bits.checked_add(7919) {
            let x = f32::from_bits(b);
            if !x.is_nan() {
                assert_eq!(floor(x).to_bits(), x.floor().to_bits(), "{x}");
            }
            bits = b;
        }
    }
}

//! Additive Gaussian noise: element `e` of a sample (counted in CHW order,
//! whatever the output layout) is `eps[e] = noise.normals(e / 4)[e % 4]`, with
//! `noise = PhiloxStream::new(seed, epoch, sample, STREAM_NOISE)`.
//!
//! [`PhiloxStream::normals`] calls libm's `ln`, `sin` and `cos` once per pair,
//! about 40 ns a block: 1.5 ms for the noise of one 224×224×3 sample. The fast
//! path here, [`fill_normals`], computes the same Box–Muller transform eight
//! blocks at a time in f32 arithmetic that the compiler vectorises:
//!
//! - Philox4x32-10 itself is integer arithmetic, bit for bit the same;
//! - the uniforms are the same ([`uniform_from_u32`]), and so is
//!   `t = TAU * u1` and the square root;
//! - `ln` and `sin`/`cos` are the Cephes single-precision polynomials (`logf`,
//!   `sinf`/`cosf` with a three-part π/4 reduction), each within about 1 ulp,
//!   evaluated with fused multiply-adds (`f32::mul_add`: one rounding per
//!   step, a third fewer operations than a multiply and an add).
//!
//! So `fill_normals` differs from `PhiloxStream::normals` only by the
//! last-bit rounding of `ln`, `sin` and `cos`: at most [`MAX_NORMAL_ERROR`]
//! absolute on a value (tested on millions of draws), far below the 1e-4
//! tolerance between the CPU reference and the CUDA kernels, whose `logf`,
//! `sinf` and `cosf` are themselves not libm's. The fast path gives the same
//! bits on every platform: a fused multiply-add is exactly rounded by IEEE
//! 754 whether the CPU has the instruction (the AVX2 build requires FMA,
//! every AVX-512 CPU has it) or not (then `mul_add` is libm's exact `fmaf`:
//! slow, but only the portable build on CPUs older than AVX2 takes it).

#[cfg(target_arch = "x86_64")]
mod avx512;

use crate::ops::philox::{uniform_from_u32, PhiloxStream};

/// Bound on `|fill_normals − PhiloxStream::normals|` for any element.
pub const MAX_NORMAL_ERROR: f32 = 1e-6;

/// Blocks generated together.
const LANES: usize = 8;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32-10 on `LANES` consecutive blocks starting at `block`, in
/// structure-of-arrays form: `words[k][l]` is word `k` of block `block + l`.
#[inline(always)]
fn philox_lanes(stream: &PhiloxStream, block: u32) -> [[u32; LANES]; 4] {
    let [_, s, n, e] = stream.counter(0);
    let mut c0: [u32; LANES] = std::array::from_fn(|l| block.wrapping_add(l as u32));
    let mut c1 = [s; LANES];
    let mut c2 = [n; LANES];
    let mut c3 = [e; LANES];
    let [mut k0, mut k1] = stream.key();
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        for l in 0..LANES {
            let p0 = M0 as u64 * c0[l] as u64;
            let p1 = M1 as u64 * c2[l] as u64;
            let n0 = (p1 >> 32) as u32 ^ c1[l] ^ k0;
            let n2 = (p0 >> 32) as u32 ^ c3[l] ^ k1;
            c0[l] = n0;
            c1[l] = p1 as u32;
            c2[l] = n2;
            c3[l] = p0 as u32;
        }
    }
    [c0, c1, c2, c3]
}

/// Natural logarithm of a positive normal f32 (Cephes `logf`).
#[inline(always)]
fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // [0.5, 1)
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    e -= small as i32;
    m = if small { m + m - 1.0 } else { m - 1.0 };
    let ef = e as f32;
    let z = m * m;
    let mut y: f32 = 7.037_683_6e-2;
    y = y.mul_add(m, -1.151_461_1e-1);
    y = y.mul_add(m, 1.167_699_9e-1);
    y = y.mul_add(m, -1.242_014_1e-1);
    y = y.mul_add(m, 1.424_932_3e-1);
    y = y.mul_add(m, -1.666_805_8e-1);
    y = y.mul_add(m, 2.000_071_4e-1);
    y = y.mul_add(m, -2.499_999_4e-1);
    y = y.mul_add(m, 3.333_333e-1);
    y = y * m * z;
    y = (-2.121_944_4e-4f32).mul_add(ef, y);
    y = (-0.5f32).mul_add(z, y);
    let r = m + y;
    0.693_359_4f32.mul_add(ef, r)
}

/// `(sin t, cos t)` for `0 <= t < 8` (Cephes `sinf`/`cosf`).
#[inline(always)]
fn sin_cos(t: f32) -> (f32, f32) {
    const FOPI: f32 = 1.273_239_5; // 4/π
    const DP1: f32 = 0.785_156_25;
    const DP2: f32 = 2.418_756_5e-4;
    const DP3: f32 = 3.774_895e-8;
    debug_assert!((0.0..8.0).contains(&t));
    // SAFETY: t is in [0, 8), so t·4/π is in [0, 11) (no saturating cast,
    // which would not vectorise).
    let mut j = unsafe { (t * FOPI).to_int_unchecked::<i32>() };
    j += j & 1; // to an even octant: t = j·π/4 + r, |r| <= π/4
    let y = j as f32;
    let r = (-y).mul_add(DP3, (-y).mul_add(DP2, (-y).mul_add(DP1, t)));
    let z = r * r;
    let mut s: f32 = -1.951_529_6e-4;
    s = s.mul_add(z, 8.332_161e-3);
    s = s.mul_add(z, -1.666_665_5e-1);
    let s = (s * z).mul_add(r, r);
    let mut c: f32 = 2.443_315_7e-5;
    c = c.mul_add(z, -1.388_731_6e-3);
    c = c.mul_add(z, 4.166_664_6e-2);
    let c = (c * z).mul_add(z, (-0.5f32).mul_add(z, 1.0));
    // quadrant q = j/2: (sin, cos) = (s, c), (c, -s), (-s, -c), (-c, s)
    let q = (j >> 1) & 3;
    let (sn, cs) = if q & 1 == 0 { (s, c) } else { (c, s) };
    let sin = if q >= 2 { -sn } else { sn };
    let cos = if q == 1 || q == 2 { -cs } else { cs };
    (sin, cos)
}

/// The normals of `LANES` consecutive blocks from `block`, in element order
/// (`out[4·l + k]` is `normals(block + l)[k]`, up to the last-bit rounding
/// described in the module docs).
#[inline(always)]
fn normals_lanes(stream: &PhiloxStream, block: u32) -> [f32; 4 * LANES] {
    let w = philox_lanes(stream, block);
    // One operation over all lanes per loop, so that each loop vectorises.
    let mut radius = [[0.0f32; LANES]; 2];
    let mut sin = [[0.0f32; LANES]; 2];
    let mut cos = [[0.0f32; LANES]; 2];
    for pair in 0..2 {
        for l in 0..LANES {
            radius[pair][l] = (-2.0 * ln(uniform_from_u32(w[2 * pair][l]))).sqrt();
        }
        for l in 0..LANES {
            let (s, c) = sin_cos(std::f32::consts::TAU * uniform_from_u32(w[2 * pair + 1][l]));
            sin[pair][l] = s;
            cos[pair][l] = c;
        }
    }
    // normals(b) = [r0·cos t0, r0·sin t0, r1·cos t1, r1·sin t1]
    let mut out = [0.0f32; 4 * LANES];
    for (l, o) in out.chunks_exact_mut(4).enumerate() {
        o[0] = radius[0][l] * cos[0][l];
        o[1] = radius[0][l] * sin[0][l];
        o[2] = radius[1][l] * cos[1][l];
        o[3] = radius[1][l] * sin[1][l];
    }
    out
}

/// Writes `eps[first + k]` into `out[k]` for every `k`, where `eps[e]` is
/// element `e % 4` of block `e / 4` of `stream`'s normals, computed by the
/// vectorised Box–Muller described in the module docs (within
/// [`MAX_NORMAL_ERROR`] of [`PhiloxStream::normals`]). The value of an
/// element does not depend on `first` or on `out.len()`, nor on the CPU (an
/// AVX2 build of the same code is picked at run time where available).
///
/// # Panics
/// If the last element's block index does not fit in 32 bits (more than
/// 2^34 elements in one sample, far beyond any valid output).
pub fn fill_normals(stream: &PhiloxStream, first: u64, out: &mut [f32]) {
    if out.is_empty() {
        return;
    }
    let last = first + out.len() as u64 - 1;
    assert!(
        last / 4 <= u32::MAX as u64,
        "noise element index out of range"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: `fill_avx512` only requires AVX-512F, which the CPU
            // supports.
            unsafe { avx512::fill(stream, first, out) };
            return;
        }
        if avx2_fma() {
            // SAFETY: `fill_avx2` only requires AVX2 and FMA, which the CPU
            // supports.
            unsafe { fill_avx2(stream, first, out) };
            return;
        }
    }
    fill_portable(stream, first, out);
}

/// [`fill_normals`] through its AVX2 build, `None` on CPUs without AVX2 and FMA, so
/// that tests can compare it with the others on a CPU that would pick
/// AVX-512.
#[doc(hidden)]
pub fn fill_avx2_if_available(stream: &PhiloxStream, first: u64, out: &mut [f32]) -> Option<()> {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: `fill_avx2` only requires AVX2 and FMA, which the CPU
        // supports.
        unsafe { fill_avx2(stream, first, out) };
        return Some(());
    }
    let _ = (stream, first, out);
    None
}

/// Whether this CPU has what [`fill_avx2`] is built for.
#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn fill_avx2(stream: &PhiloxStream, first: u64, out: &mut [f32]) {
    fill_body(stream, first, out)
}

/// [`fill_normals`] without the AVX2 build, so that tests can compare them.
#[doc(hidden)]
#[inline(never)]
pub fn fill_portable(stream: &PhiloxStream, first: u64, out: &mut [f32]) {
    fill_body(stream, first, out)
}

#[inline(always)]
fn fill_body(stream: &PhiloxStream, first: u64, out: &mut [f32]) {
    let mut e = first;
    let mut k = 0;
    while k < out.len() {
        let z = normals_lanes(stream, (e / 4) as u32);
        let skip = (e % 4) as usize;
        let n = (4 * LANES - skip).min(out.len() - k);
        out[k..k + n].copy_from_slice(&z[skip..skip + n]);
        k += n;
        e += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::philox::{box_muller, STREAM_NOISE};

    #[test]
    fn philox_lanes_is_bit_exact() {
        let s = PhiloxStream::new(0xDEAD_BEEF_0123, 5, 1234, STREAM_NOISE);
        for b0 in [0u32, 7, u32::MAX - 3] {
            let w = philox_lanes(&s, b0);
            for (l, want) in (0..LANES as u32)
                .map(|l| s.block(b0.wrapping_add(l)))
                .enumerate()
            {
                assert_eq!([w[0][l], w[1][l], w[2][l], w[3][l]], want);
            }
        }
    }

    #[test]
    fn ln_and_sin_cos_are_within_an_ulp() {
        // every uniform the generator can produce, strided
        let mut worst = (0f32, 0f32, 0f32);
        for k in (0..1u32 << 23).step_by(7) {
            let u = (k as f32 + 0.5) * (1.0 / 8_388_608.0);
            let ul = |v: f32| f32::from_bits(v.abs().to_bits() & 0x7f80_0000) * f32::EPSILON;
            let l = (ln(u) - u.ln()).abs() / ul(u.ln());
            let t = std::f32::consts::TAU * u;
            let (s, c) = sin_cos(t);
            let es = (s - t.sin()).abs() / ul(1.0).max(ul(t.sin()));
            let ec = (c - t.cos()).abs() / ul(1.0).max(ul(t.cos()));
            worst = (worst.0.max(l), worst.1.max(es), worst.2.max(ec));
        }
        assert!(
            worst.0 <= 1.0 && worst.1 <= 1.0 && worst.2 <= 1.0,
            "{worst:?} ulps"
        );
    }

    #[test]
    fn fast_normals_match_the_definition() {
        let s = PhiloxStream::new(3, 1, 77, STREAM_NOISE);
        let mut out = vec![0.0; 1 << 18];
        fill_normals(&s, 0, &mut out);
        let mut worst = 0f32;
        for (e, v) in out.iter().enumerate() {
            let want = s.normals((e / 4) as u32)[e % 4];
            worst = worst.max((v - want).abs());
        }
        assert!(worst <= MAX_NORMAL_ERROR, "worst {worst}");
        // and the definition itself is Box–Muller on the block's uniforms
        let u = s.uniforms(9);
        assert_eq!(box_muller(u[0], u[1]).0, s.normals(9)[0]);
    }

    #[test]
    fn portable_and_dispatched_builds_agree() {
        for (seed, first, len) in [(5u64, 3u64, 1000usize), (6, 0, 4096), (7, 61, 333)] {
            let s = PhiloxStream::new(seed, 2, 9, STREAM_NOISE);
            let (mut a, mut b, mut c) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
            fill_normals(&s, first, &mut a); // AVX-512 on CPUs that have it
            fill_portable(&s, first, &mut b);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b));
            if fill_avx2_if_available(&s, first, &mut c).is_some() {
                assert_eq!(bits(&c), bits(&b));
            }
        }
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F on this CPU: its build was not compared");
        }
    }

    #[test]
    fn any_alignment_gives_the_same_values() {
        let s = PhiloxStream::new(3, 1, 77, STREAM_NOISE);
        let mut all = vec![0.0; 120];
        fill_normals(&s, 0, &mut all);
        for first in 0..40u64 {
            for len in 0..70usize {
                let mut out = vec![0.0; len];
                fill_normals(&s, first, &mut out);
                assert_eq!(out[..], all[first as usize..first as usize + len]);
            }
        }
    }
}

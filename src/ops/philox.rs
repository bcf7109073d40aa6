//! Philox4x32-10, the counter-based generator shared bit for bit by the CPU
//! reference and the CUDA kernels (`kernels/philox.cuh` mirrors this file).
//!
//! A draw is addressed by `(seed, epoch, sample, stream, block)`: the key is
//! the 64-bit seed, the 128-bit counter is `[block, stream, sample, epoch]`.
//! Any sample's randomness can be regenerated alone, on any thread or device.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Stream of per-sample augmentation parameters (drawn on the host).
pub const STREAM_PARAMS: u32 = 0;
/// Stream of per-element Gaussian noise (drawn where the noise is added).
pub const STREAM_NOISE: u32 = 1;
/// Stream used to shuffle the sample order of an epoch.
pub const STREAM_SHUFFLE: u32 = 2;

#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// The raw Philox4x32-10 bijection: 10 rounds over `counter` with `key`.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The key and the fixed part of the counter for one sample's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhiloxStream {
    key: [u32; 2],
    stream: u32,
    sample: u32,
    epoch: u32,
}

impl PhiloxStream {
    /// The stream `stream` of sample `sample` in epoch `epoch` under `seed`.
    ///
    /// `sample` is the global index of the sample in the dataset (not its
    /// position in a batch), truncated to 32 bits.
    pub fn new(seed: u64, epoch: u64, sample: u64, stream: u32) -> Self {
        PhiloxStream {
            key: [seed as u32, (seed >> 32) as u32],
            stream,
            sample: sample as u32,
            epoch: epoch as u32,
        }
    }

    /// The key, `[seed low word, seed high word]` (for vectorised generators
    /// that run several blocks at once).
    #[inline]
    pub fn key(&self) -> [u32; 2] {
        self.key
    }

    /// The counter of block `block`: `[block, stream, sample, epoch]`.
    #[inline]
    pub fn counter(&self, block: u32) -> [u32; 4] {
        [block, self.stream, self.sample, self.epoch]
    }

    /// Four raw 32-bit words of block `block`.
    #[inline]
    pub fn block(&self, block: u32) -> [u32; 4] {
        philox4x32_10([block, self.stream, self.sample, self.epoch], self.key)
    }

    /// Four uniforms in the open interval (0, 1) from block `block`.
    #[inline]
    pub fn uniforms(&self, block: u32) -> [f32; 4] {
        self.block(block).map(uniform_from_u32)
    }

    /// Four standard normals from block `block` (Box–Muller on word pairs
    /// (0, 1) and (2, 3)). Noise element `e` of a sample, counted in CHW
    /// order whatever the output layout, is `normals(e / 4)[e % 4]`.
    #[inline]
    pub fn normals(&self, block: u32) -> [f32; 4] {
        let u = self.uniforms(block);
        let (z0, z1) = box_muller(u[0], u[1]);
        let (z2, z3) = box_muller(u[2], u[3]);
        [z0, z1, z2, z3]
    }
}

/// Maps a 32-bit word to a uniform in (0, 1): the top 23 bits, centred in
/// their cell, so that 0 and 1 never occur and the value is exact in f32.
#[inline]
pub fn uniform_from_u32(x: u32) -> f32 {
    ((x >> 9) as f32 + 0.5) * (1.0 / 8_388_608.0)
}

/// Box–Muller: two uniforms in (0, 1) to two independent standard normals.
/// Computed in f32 with the same formula as the CUDA kernels.
#[inline]
pub fn box_muller(u0: f32, u1: f32) -> (f32, f32) {
    let r = (-2.0 * u0.ln()).sqrt();
    let t = std::f32::consts::TAU * u1;
    (r * t.cos(), r * t.sin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_random123_known_answers() {
        // Known-answer vectors from Random123's kat_vectors for philox4x32_10.
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniforms_are_open_interval_and_distinct_per_address() {
        assert!(uniform_from_u32(0) > 0.0);
        assert!(uniform_from_u32(u32::MAX) < 1.0);
        let a = PhiloxStream::new(7, 0, 3, STREAM_PARAMS).uniforms(0);
        let b = PhiloxStream::new(7, 1, 3, STREAM_PARAMS).uniforms(0);
        let c = PhiloxStream::new(7, 0, 4, STREAM_PARAMS).uniforms(0);
        let d = PhiloxStream::new(8, 0, 3, STREAM_PARAMS).uniforms(0);
        let e = PhiloxStream::new(7, 0, 3, STREAM_NOISE).uniforms(0);
        for other in [b, c, d, e] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn normals_have_unit_moments() {
        let s = PhiloxStream::new(42, 1, 9, STREAM_NOISE);
        let n = 40_000u32;
        let (mut sum, mut sq) = (0f64, 0f64);
        for b in 0..n {
            for z in s.normals(b) {
                sum += z as f64;
                sq += (z as f64) * (z as f64);
            }
        }
        let count = (4 * n) as f64;
        let mean = sum / count;
        let var = sq / count - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }
}

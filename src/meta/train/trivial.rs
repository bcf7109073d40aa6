//! The TrivialAugment-style baseline: one op per sample, chosen uniformly,
//! at a uniformly random magnitude (no search).

use super::hard::{augment_hard, augment_hard_bytes, never_applies};
use super::ImageSet;
use crate::meta::augment::{AugmentShape, SampleKey};
use crate::meta::relaxed::{Family, NUM_PHI};
use crate::meta::rng::SplitMix;
use crate::meta::tensor::Tensor;

/// TrivialAugment's five choices as one-op policies (op probability 1,
/// the others 0); hard mode then draws the magnitude uniformly: crop area
/// in `[0.35, 1]` (the `default` policy's strongest), rotation in ±30°,
/// flip, noise σ in `[0, 0.1]`. The first is the identity.
pub fn trivial_augment_phis() -> [[f64; NUM_PHI]; 5] {
    let off = f64::NEG_INFINITY;
    let on = f64::INFINITY;
    // magnitudes: min area 0.35, 30°, σ ≤ 0.1
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let base = [
        off,
        logit(0.35),
        off,
        logit(30.0 / 180.0),
        off,
        off,
        0.1f64.exp_m1().ln(),
    ];
    std::array::from_fn(|op| {
        let mut phi = base;
        if let Some(&gate) = [0usize, 2, 4, 5].get(op.wrapping_sub(1)) {
            phi[gate] = on;
        }
        phi
    })
}

/// Which of [`trivial_augment_phis`] sample `k` gets: uniform over the
/// five, from a hash of its Philox address (independent of its draws).
fn trivial_choice(k: &SampleKey) -> usize {
    let mut h = SplitMix::new(
        k.seed ^ k.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.sample.rotate_left(29) ^ 0x7A,
    );
    h.below(5)
}

/// The TrivialAugment-style batch: rows grouped by their op, each group
/// augmented in hard mode with its one-op policy, put back in order.
pub(super) fn trivial_augment_batch(
    train: &ImageSet,
    bytes: Option<&[u8]>,
    idx: &[usize],
    ks: &[SampleKey],
    shape: &AugmentShape,
) -> Tensor<f32> {
    let phis = trivial_augment_phis();
    let n = idx.len();
    let mut out: Option<Vec<f32>> = None;
    let mut d_out = 0;
    for (op, phi) in phis.iter().enumerate() {
        let members: Vec<usize> = (0..n).filter(|&b| trivial_choice(&ks[b]) == op).collect();
        if members.is_empty() {
            continue;
        }
        let rows: Vec<usize> = members.iter().map(|&b| idx[b]).collect();
        let keys: Vec<SampleKey> = members.iter().map(|&b| ks[b]).collect();
        let x = match bytes {
            Some(b) if !never_applies(phi) => {
                augment_hard_bytes(b, &rows, &keys, phi, Family::Independent, shape)
            }
            _ => augment_hard(
                &train.gather(&rows).0,
                &keys,
                phi,
                Family::Independent,
                shape,
            ),
        };
        d_out = x.len() / members.len();
        let buf = out.get_or_insert_with(|| vec![0.0; n * d_out]);
        for (r, &b) in members.iter().enumerate() {
            buf[b * d_out..(b + 1) * d_out].copy_from_slice(&x.data()[r * d_out..(r + 1) * d_out]);
        }
    }
    Tensor::new(&[n, d_out], out.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::train::hard::image_bytes;
    use crate::meta::train::keys;

    /// Every sample of a TrivialAugment-style batch is its one-op policy's
    /// hard augmentation, and every op is chosen.
    #[test]
    fn trivial_augment_gives_each_sample_one_op() {
        let mut rng = SplitMix::new(5);
        let n = 200;
        let set = ImageSet {
            images: Tensor::new(
                &[n, 1, 8, 8],
                (0..n * 64).map(|_| rng.below(256) as f32 / 255.0).collect(),
            ),
            labels: vec![0; n],
            classes: 1,
        };
        let shape = AugmentShape {
            channels: 1,
            src: crate::ops::Size::new(8, 8),
            out: crate::ops::Size::new(8, 8),
        };
        let idx: Vec<usize> = (0..n).collect();
        let ks = keys(9, 3, &idx);
        let bytes = image_bytes(&set.images).unwrap();
        let out = trivial_augment_batch(&set, Some(&bytes), &idx, &ks, &shape);
        let phis = trivial_augment_phis();
        let mut counts = [0usize; 5];
        for b in 0..n {
            let op = trivial_choice(&ks[b]);
            counts[op] += 1;
            let want = augment_hard_bytes(
                &bytes,
                &[b],
                &ks[b..=b],
                &phis[op],
                Family::Independent,
                &shape,
            );
            assert_eq!(
                &out.data()[b * 64..(b + 1) * 64],
                want.data(),
                "sample {b}, op {op}"
            );
        }
        // 200 uniform draws over 5: each near 40
        assert!(counts.iter().all(|&c| (20..=60).contains(&c)), "{counts:?}");
        // the identity choice leaves the image as it is (normalised as the
        // loader does: not the raw pixels, but the same for every op-free row)
        let none = augment_hard_bytes(
            &bytes,
            &[0],
            &ks[..1],
            &phis[0],
            Family::Independent,
            &shape,
        );
        let plain = augment_hard(
            &set.gather(&[0]).0,
            &ks[..1],
            &phis[0],
            Family::Independent,
            &shape,
        );
        assert_eq!(none.data(), plain.data());
    }
}

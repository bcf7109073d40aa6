//! Named points in φ: no augmentation, CONTRACT.md's `default` policy, and
//! the starts the learners are given.

use super::relaxed::NUM_PHI;

pub(crate) fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

pub(crate) fn softplus_inv(y: f64) -> f64 {
    y.exp_m1().ln()
}

/// φ of the `none` policy (no op ever applies).
pub fn phi_none() -> [f64; NUM_PHI] {
    let ninf = f64::NEG_INFINITY;
    [ninf, 0.0, ninf, 0.0, ninf, ninf, 0.0]
}

/// φ of CONTRACT.md's `default` policy: crop p .8 min area .35; rotate p .5
/// max 15°; flip p .5; noise p .3 max σ .05.
///
/// Computed in f64 (the policy module's `Policy::default_policy` holds the
/// same values rounded to f32) so that checks can hold it to 1e-12.
pub fn phi_default() -> [f64; NUM_PHI] {
    [
        logit(0.8),
        logit(0.35),
        logit(0.5),
        logit(15.0 / 180.0),
        logit(0.5),
        logit(0.3),
        softplus_inv(0.05),
    ]
}

/// Where learned policies start: every op at probability ½ with medium
/// magnitudes (min area ½, 30°, σ ≤ 0.1) — neither `none` nor `default`.
pub fn phi_init() -> [f64; NUM_PHI] {
    [
        0.0,
        0.0,
        0.0,
        logit(30.0 / 180.0),
        0.0,
        0.0,
        softplus_inv(0.1),
    ]
}

/// TrivialAugment-style magnitudes with every logit 0 (min area 0.35,
/// 30°, σ ≤ 0.1): in the one-op family, TrivialAugment's uniform choice
/// of identity and the four ops; in the independent family, every op at
/// probability ½.
pub fn phi_trivial() -> [f64; NUM_PHI] {
    [
        0.0,
        logit(0.35),
        0.0,
        logit(30.0 / 180.0),
        0.0,
        0.0,
        softplus_inv(0.1),
    ]
}

/// A "little augmentation" start: every op at probability 0.1 with the
/// default policy's magnitudes.
pub fn phi_little() -> [f64; NUM_PHI] {
    let mut phi = phi_default();
    for k in [0, 2, 4, 5] {
        phi[k] = logit(0.1);
    }
    phi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_inv_inverts_softplus() {
        for y in [0.01, 0.05, 0.1, 1.0, 3.0] {
            assert!((super::super::relaxed::softplus(softplus_inv(y)) - y).abs() < 1e-12);
        }
        assert!((logit(0.8) - (4.0f64).ln()).abs() < 1e-12);
    }
}

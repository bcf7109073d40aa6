//! φ as a function of training progress: `φ(t)`, `t ∈ [0, 1]`, piecewise
//! linear between `K` knots at `t = j / (K − 1)` (one knot: a constant φ).
//!
//! With a learned schedule "augment early, less later" (or the reverse) is
//! something the hypergradient can find instead of something the protocol
//! imposes. The chain rule is all there is to it: `φ(t) = Σ_j w_j(t) φ_j`
//! with hat weights `w_j(t) ≥ 0` summing to 1, so a hypergradient `g` with
//! respect to `φ(t)` is `w_j(t) · g` with respect to knot `j`. The knots move
//! by Adam on their concatenation (every knot's moments advance at every meta
//! step, those of knots with weight 0 on a zero gradient), which for one knot
//! is exactly Adam on φ.

use super::bilevel::Adam;
use super::relaxed::NUM_PHI;

/// Most knots a schedule takes.
pub const MAX_KNOTS: usize = 64;

/// A learned φ(t): its knots and their optimiser.
#[derive(Clone, Debug)]
pub struct PhiSchedule {
    knots: Vec<[f64; NUM_PHI]>,
    adams: Vec<Adam>,
}

impl PhiSchedule {
    /// `knots` knots (clamped to `1..=MAX_KNOTS`), each at `phi`, each moved
    /// by its own copy of `adam` (its step sizes; pass a new one, as its
    /// moments are copied too).
    pub fn new(phi: [f64; NUM_PHI], knots: usize, adam: Adam) -> Self {
        let k = knots.clamp(1, MAX_KNOTS);
        PhiSchedule {
            knots: vec![phi; k],
            adams: vec![adam; k],
        }
    }

    /// The knots, `t = 0` first.
    pub fn knots(&self) -> &[[f64; NUM_PHI]] {
        &self.knots
    }

    /// The knots that `φ(t)` mixes, with their weights: one knot (weight 1)
    /// or two neighbours. `t` is clamped to `[0, 1]`.
    pub fn weights(&self, t: f64) -> [(usize, f64); 2] {
        let last = self.knots.len() - 1;
        if last == 0 {
            return [(0, 1.0), (0, 0.0)];
        }
        let x = t.clamp(0.0, 1.0) * last as f64;
        let j = (x.floor() as usize).min(last - 1);
        let f = x - j as f64;
        [(j, 1.0 - f), (j + 1, f)]
    }

    /// `φ(t)`. A knot with weight 1 is returned as it is (bit for bit, and
    /// infinite entries survive); weight 0 drops a knot.
    pub fn at(&self, t: f64) -> [f64; NUM_PHI] {
        let [(a, wa), (b, wb)] = self.weights(t);
        if wb == 0.0 {
            return self.knots[a];
        }
        if wa == 0.0 {
            return self.knots[b];
        }
        std::array::from_fn(|k| wa * self.knots[a][k] + wb * self.knots[b][k])
    }

    /// One Adam step of every knot for the hypergradient `g` with respect to
    /// `φ(t)`, the displacement scaled by `scale` (1 for MAML; Reptile's β).
    /// A non-finite `g` moves nothing (as [`Adam::delta`]).
    pub fn step(&mut self, t: f64, g: &[f64; NUM_PHI], scale: f64) {
        let mut per_knot = vec![0.0; self.knots.len()];
        for (j, w) in self.weights(t) {
            per_knot[j] += w;
        }
        for ((knot, adam), w) in self.knots.iter_mut().zip(&mut self.adams).zip(per_knot) {
            let d = adam.delta(&g.map(|v| w * v));
            for k in 0..NUM_PHI {
                knot[k] += scale * d[k];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::rng::SplitMix;

    fn random_phi(rng: &mut SplitMix) -> [f64; NUM_PHI] {
        std::array::from_fn(|_| rng.below(2001) as f64 / 1000.0 - 1.0)
    }

    /// φ(t) passes through the knots, is linear between them, and the
    /// weights are a partition of unity.
    #[test]
    fn schedule_interpolates_its_knots() {
        let mut rng = SplitMix::new(3);
        let mut s = PhiSchedule::new([0.0; NUM_PHI], 4, Adam::new(0.1));
        for knot in &mut s.knots {
            *knot = random_phi(&mut rng);
        }
        for j in 0..4 {
            assert_eq!(s.at(j as f64 / 3.0), s.knots[j], "knot {j}");
        }
        for _ in 0..100 {
            let t = rng.below(10_001) as f64 / 10_000.0;
            let [(a, wa), (b, wb)] = s.weights(t);
            assert!((wa + wb - 1.0).abs() < 1e-12 && wa >= 0.0 && wb >= 0.0);
            assert!(b == a + 1 && (a as f64 / 3.0..=b as f64 / 3.0).contains(&t));
            let phi = s.at(t);
            let f = t * 3.0 - a as f64;
            for (k, p) in phi.iter().enumerate() {
                let want = s.knots[a][k] + f * (s.knots[b][k] - s.knots[a][k]);
                assert!((p - want).abs() < 1e-12, "t {t} entry {k}");
            }
        }
        assert_eq!(s.at(-1.0), s.knots[0]);
        assert_eq!(s.at(2.0), s.knots[3]);
    }

    /// The knots' gradient is the chain rule through φ(t): for a loss
    /// `L(φ(t))` the step direction per knot matches finite differences of
    /// `L` in that knot (Adam's first step has the size `lr` whatever the
    /// gradient's, so its sign is compared; knots away from `t` stay put).
    #[test]
    fn knot_steps_follow_the_chain_rule() {
        let mut rng = SplitMix::new(11);
        let target = random_phi(&mut rng);
        let loss = |phi: &[f64; NUM_PHI]| -> f64 {
            phi.iter()
                .zip(&target)
                .map(|(p, q)| (p - q).powi(3) + p * q)
                .sum()
        };
        for _ in 0..20 {
            let mut s = PhiSchedule::new([0.0; NUM_PHI], 5, Adam::new(0.01));
            for knot in &mut s.knots {
                *knot = random_phi(&mut rng);
            }
            let t = rng.below(1001) as f64 / 1000.0;
            let phi = s.at(t);
            let g: [f64; NUM_PHI] =
                std::array::from_fn(|k| 3.0 * (phi[k] - target[k]).powi(2) + target[k]);
            let before = s.knots.clone();
            s.step(t, &g, 1.0);
            let weights = s.weights(t);
            for j in 0..5 {
                let w: f64 = weights.iter().filter(|p| p.0 == j).map(|p| p.1).sum();
                for k in 0..NUM_PHI {
                    let moved = s.knots[j][k] - before[j][k];
                    // finite difference of L(φ(t)) in knot j, entry k
                    let h = 1e-6;
                    let mut probe = s.clone();
                    probe.knots = before.clone();
                    probe.knots[j][k] += h;
                    let up = loss(&probe.at(t));
                    probe.knots[j][k] -= 2.0 * h;
                    let down = loss(&probe.at(t));
                    let fd = (up - down) / (2.0 * h);
                    assert!((fd - w * g[k]).abs() < 1e-5 * (1.0 + fd.abs()), "knot {j}");
                    if w * g[k] == 0.0 {
                        assert_eq!(moved, 0.0, "knot {j} entry {k} has no gradient");
                    } else {
                        assert!(moved * fd < 0.0, "knot {j} entry {k} moves downhill");
                        // Adam's first step: lr · |wg| / (|wg| + ε)
                        let wg = (w * g[k]).abs();
                        assert!((moved.abs() - 0.01 * wg / (wg + 1e-8)).abs() < 1e-9);
                    }
                }
            }
        }
    }

    /// One knot is Adam on φ itself, bit for bit.
    #[test]
    fn one_knot_is_adam_on_phi() {
        let mut rng = SplitMix::new(7);
        let start = random_phi(&mut rng);
        let mut s = PhiSchedule::new(start, 1, Adam::new(0.05));
        let mut phi = start;
        let mut adam = Adam::new(0.05);
        for i in 0..50 {
            let g = random_phi(&mut rng);
            let t = i as f64 / 49.0;
            s.step(t, &g, 1.0);
            adam.step(&mut phi, &g);
            assert_eq!(s.at(t), phi, "step {i}");
        }
    }
}

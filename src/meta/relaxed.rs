//! φ and the Philox draws to per-sample physical parameters (CONTRACT.md,
//! "Policy"): hard mode (gates in {0, 1}, as the loader samples) and relaxed
//! mode (gates differentiable in φ: relaxed Bernoulli samples in the
//! independent family, a Gumbel-softmax sample over identity and the four
//! ops in the one-op family), with the Jacobian of the relaxed map written
//! by hand, and the map as a tape node.

use std::f64::consts::PI;
use std::rc::Rc;

use super::augment::NUM_PARAMS;
use super::float::Float;
use super::tape::{CustomOp, Tape, Var};
use super::tensor::Tensor;
use crate::ops::geometry::{Geometry, SampleParams};
pub use crate::policy::Family;
use crate::policy::{gumbel, GATE_DRAWS, IDENTITY_DRAW};

/// Number of policy parameters φ (the policy module's).
pub use crate::policy::N_PHI as NUM_PHI;
/// φ's entry names and the twelve Philox draws of a sample: the same as
/// hard mode's, from the policy module.
pub use crate::policy::{draws, PHI_NAMES};
/// Number of uniforms drawn per sample (blocks 0..3 of `STREAM_PARAMS`).
pub const NUM_DRAWS: usize = 12;

/// `1 / (1 + e^−x)`, finite at ±∞.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^x)`, stable, 0 at −∞.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `ln(1 − u) − ln u`: the logistic noise of a relaxed Bernoulli gate.
///
/// The sign is chosen so that the gate `sigmoid((logit p + this) / τ)`
/// tends to `[u < p]` as τ → 0, the hard mode's test on the same draw (the
/// design's `ln u − ln(1 − u)` has the same distribution but tends to
/// `[u > 1 − p]`, so relaxed and hard mode would pick different samples).
fn logistic(u: f32) -> f64 {
    let u = u as f64;
    (1.0 - u).ln() - u.ln()
}

/// φ's probability logits, `[crop, rotate, flip, noise]`.
const LOGITS: [usize; 4] = crate::policy::LOGITS;

/// The policy's human-unit values: `[p_crop, min_area, p_rotate,
/// max_angle_degrees, p_flip, p_noise, max_sigma]`.
pub fn human_units(phi: &[f64; NUM_PHI]) -> [f64; NUM_PHI] {
    [
        sigmoid(phi[0]),
        sigmoid(phi[1]),
        sigmoid(phi[2]),
        180.0 * sigmoid(phi[3]),
        sigmoid(phi[4]),
        sigmoid(phi[5]),
        softplus(phi[6]),
    ]
}

/// [`human_units`] of a policy of `family`: in the one-op family the four
/// probabilities are the ops' shares `softmax(0, logits)` (the identity
/// has the rest).
pub fn human_units_in(family: Family, phi: &[f64; NUM_PHI]) -> [f64; NUM_PHI] {
    let mut h = human_units(phi);
    if family == Family::OneOp {
        let shares = crate::policy::one_op_shares(LOGITS.map(|k| phi[k]));
        for (j, &k) in LOGITS.iter().enumerate() {
            h[k] = shares[j + 1];
        }
    }
    h
}

/// The physical parameters `[area, aspect, cx, cy, angle, flip, sigma]` for
/// gates `[crop, rotate, flip, noise]`, φ's magnitudes and the draws (the
/// formulas of both modes; hard mode has gates in {0, 1}).
pub fn physical(phi: &[f64; NUM_PHI], gates: [f64; 4], u: &[f32; NUM_DRAWS]) -> [f64; NUM_PARAMS] {
    let u = u.map(|v| v as f64);
    let [gc, gr, gf, gn] = gates;
    let s_min = sigmoid(phi[1]);
    let area = 1.0 - gc * (u[1] * (1.0 - s_min));
    let aspect = (gc * ((0.75f64).ln() + u[2] * (16.0f64 / 9.0).ln())).exp();
    let g = Geometry {
        area: area as f32,
        aspect: aspect as f32,
        center: [0.0, 0.0],
        angle: 0.0,
    };
    let (cw, ch) = g.crop_size();
    let cx = (1.0 - cw) * (2.0 * u[3] - 1.0);
    let cy = (1.0 - ch) * (2.0 * u[4] - 1.0);
    let max_deg = 180.0 * sigmoid(phi[3]);
    let angle = gr * max_deg.to_radians() * (2.0 * u[6] - 1.0);
    let sigma = gn * softplus(phi[6]) * u[9];
    [area, aspect, cx, cy, angle, gf, sigma]
}

/// Hard mode (loader semantics): op k applies when `u_gate < sigmoid(logit)`;
/// the loader's own [`Policy::hard_params`](crate::policy::Policy::hard_params).
pub fn hard_params(family: Family, phi: &[f32; NUM_PHI], u: &[f32; NUM_DRAWS]) -> SampleParams {
    crate::policy::Policy {
        phi: *phi,
        tau: crate::policy::DEFAULT_TAU,
        family,
    }
    .hard_params(u)
}

/// Relaxed gates for crop, rotate, flip and noise, and their Jacobian
/// `dg[i][j] = ∂gate_i/∂logit_j` (logits in [`crate::policy::LOGITS`]'
/// order):
/// - independent: `sigmoid((logit + ln(1 − u) − ln u) / τ)`, each on its
///   gate draw (diagonal Jacobian);
/// - one-op: components 1–4 of `softmax((ℓ + gumbel(u)) / τ)` over
///   identity (ℓ = 0, draw `u10`) and the four ops, the relaxation of the
///   hard mode's Gumbel-max choice on the same draws (so the sample is the
///   same as τ → 0); `∂p_i/∂ℓ_j = p_i(δ_ij − p_j)/τ`.
pub fn relaxed_gates(
    family: Family,
    phi: &[f64; NUM_PHI],
    tau: f64,
    u: &[f32; NUM_DRAWS],
) -> ([f64; 4], [[f64; 4]; 4]) {
    let mut dg = [[0.0; 4]; 4];
    match family {
        Family::Independent => {
            let g: [f64; 4] = std::array::from_fn(|k| {
                sigmoid((phi[LOGITS[k]] + logistic(u[GATE_DRAWS[k]])) / tau)
            });
            for k in 0..4 {
                dg[k][k] = g[k] * (1.0 - g[k]) / tau;
            }
            (g, dg)
        }
        Family::OneOp => {
            let z: [f64; 5] = std::array::from_fn(|i| match i {
                0 => gumbel(u[IDENTITY_DRAW]) / tau,
                k => (phi[LOGITS[k - 1]] + gumbel(u[GATE_DRAWS[k - 1]])) / tau,
            });
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e = z.map(|v| (v - m).exp());
            let sum: f64 = e.iter().sum();
            let g: [f64; 4] = std::array::from_fn(|k| e[k + 1] / sum);
            for i in 0..4 {
                for j in 0..4 {
                    let delta = if i == j { g[i] } else { 0.0 };
                    dg[i][j] = (delta - g[i] * g[j]) / tau;
                }
            }
            (g, dg)
        }
    }
}

/// Relaxed mode: the physical parameters and their Jacobian
/// `jac[q][k] = ∂param[q]/∂φ[k]`, for any τ > 0, in `family`.
///
/// The crop size's clamp at 1 makes the centre non-differentiable where
/// `area·aspect` or `area/aspect` crosses 1 (derivative taken as 0 beyond).
pub fn relaxed_params(
    family: Family,
    phi: &[f64; NUM_PHI],
    tau: f64,
    u: &[f32; NUM_DRAWS],
) -> ([f64; NUM_PARAMS], [[f64; NUM_PHI]; NUM_PARAMS]) {
    let (gates, dg) = relaxed_gates(family, phi, tau, u);
    let [gc, gr, _, gn] = gates;
    let uf = u.map(|v| v as f64);
    // values, unrounded (the tape works in F; f32 rounding happens there)
    let s_min = sigmoid(phi[1]);
    let area = 1.0 - gc * (uf[1] * (1.0 - s_min));
    let ell = (0.75f64).ln() + uf[2] * (16.0f64 / 9.0).ln();
    let aspect = (gc * ell).exp();
    let (cw_raw, ch_raw) = ((area * aspect).sqrt(), (area / aspect).sqrt());
    let (cw, ch) = (cw_raw.min(1.0), ch_raw.min(1.0));
    let (kx, ky) = (2.0 * uf[3] - 1.0, 2.0 * uf[4] - 1.0);
    let s3 = sigmoid(phi[3]);
    let max_rad = (180.0 * s3).to_radians();
    let ka = 2.0 * uf[6] - 1.0;
    let sp = softplus(phi[6]);
    let values = [
        area,
        aspect,
        (1.0 - cw) * kx,
        (1.0 - ch) * ky,
        gr * max_rad * ka,
        gates[2],
        gn * sp * uf[9],
    ];
    let mut jac = [[0.0; NUM_PHI]; NUM_PARAMS];
    // area and aspect: through the crop gate (every logit it depends on)
    // and the minimum area
    for (j, &k) in LOGITS.iter().enumerate() {
        jac[0][k] = -dg[0][j] * uf[1] * (1.0 - s_min);
        jac[1][k] = aspect * ell * dg[0][j];
    }
    jac[0][1] = gc * uf[1] * s_min * (1.0 - s_min);
    // centre through the crop size
    #[allow(clippy::needless_range_loop)]
    for k in 0..NUM_PHI {
        let (da, dr) = (jac[0][k], jac[1][k]);
        if cw_raw < 1.0 {
            jac[2][k] = -kx * cw / 2.0 * (da / area + dr / aspect);
        }
        if ch_raw < 1.0 {
            jac[3][k] = -ky * ch / 2.0 * (da / area - dr / aspect);
        }
    }
    // angle, flip and sigma through their gates
    for (j, &k) in LOGITS.iter().enumerate() {
        jac[4][k] = dg[1][j] * max_rad * ka;
        jac[5][k] = dg[2][j];
        jac[6][k] = dg[3][j] * sp * uf[9];
    }
    jac[4][3] = gr * PI * s3 * (1.0 - s3) * ka;
    jac[6][6] = gn * sigmoid(phi[6]) * uf[9];
    (values, jac)
}

/// The relaxed sampler as a tape node: φ `[7]` → parameters `[B, 7]`.
struct RelaxedOp {
    inputs: [Var; 1],
    family: Family,
    tau: f64,
    draws: Rc<[[f32; NUM_DRAWS]]>,
}

impl<F: Float> CustomOp<F> for RelaxedOp {
    fn name(&self) -> &'static str {
        "relaxed_params"
    }
    fn inputs(&self) -> &[Var] {
        &self.inputs
    }
    fn vjp(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        gy: &Tensor<F>,
        _: &[bool],
    ) -> Vec<Option<Tensor<F>>> {
        let phi = phi_array(inputs[0]);
        let mut g = [0f64; NUM_PHI];
        for (u, gp) in self.draws.iter().zip(gy.data().chunks(NUM_PARAMS)) {
            let (_, jac) = relaxed_params(self.family, &phi, self.tau, u);
            for (q, row) in jac.iter().enumerate() {
                let d = gp[q].to_f64();
                for k in 0..NUM_PHI {
                    g[k] += row[k] * d;
                }
            }
        }
        vec![Some(Tensor::new(
            &[NUM_PHI],
            g.iter().map(|&v| F::from_f64(v)).collect(),
        ))]
    }
}

fn phi_array<F: Float>(t: &Tensor<F>) -> [f64; NUM_PHI] {
    assert_eq!(t.shape(), [NUM_PHI], "phi must be [7]");
    std::array::from_fn(|k| t.data()[k].to_f64())
}

impl<F: Float> Tape<F> {
    /// Records relaxed sampling in `family`: `phi` (`[7]`) and each
    /// sample's draws to a `[B, 7]` parameter tensor for [`Tape::augment`].
    pub fn relaxed_params(
        &mut self,
        family: Family,
        phi: Var,
        tau: f64,
        draws: Rc<[[f32; NUM_DRAWS]]>,
    ) -> Var {
        let p = phi_array(self.value(phi));
        let mut out = Vec::with_capacity(draws.len() * NUM_PARAMS);
        for u in draws.iter() {
            out.extend(relaxed_params(family, &p, tau, u).0.map(F::from_f64));
        }
        let value = Tensor::new(&[draws.len(), NUM_PARAMS], out);
        let op = RelaxedOp {
            inputs: [phi],
            family,
            tau,
            draws,
        };
        self.custom(Rc::new(op), value)
    }
}

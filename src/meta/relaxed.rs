//! φ and the Philox draws to per-sample physical parameters (CONTRACT.md,
//! "Policy"): hard mode (gates in {0, 1}, as the loader samples) and relaxed
//! mode (gates are relaxed Bernoulli samples, differentiable in φ), with the
//! Jacobian of the relaxed map written by hand, and the map as a tape node.

use std::f64::consts::PI;
use std::rc::Rc;

use super::augment::NUM_PARAMS;
use super::float::Float;
use super::tape::{CustomOp, Tape, Var};
use super::tensor::Tensor;
use crate::ops::geometry::{Geometry, SampleParams};

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

const GATES: [(usize, usize); 4] = [(0, 0), (2, 5), (4, 7), (5, 8)]; // (φ index, draw index)

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
pub fn hard_params(phi: &[f32; NUM_PHI], u: &[f32; NUM_DRAWS]) -> SampleParams {
    crate::policy::Policy {
        phi: *phi,
        tau: crate::policy::DEFAULT_TAU,
    }
    .hard_params(u)
}

/// Relaxed gates `sigmoid((logit + ln(1 − u) − ln u) / τ)` for crop, rotate,
/// flip and noise.
pub fn relaxed_gates(phi: &[f64; NUM_PHI], tau: f64, u: &[f32; NUM_DRAWS]) -> [f64; 4] {
    GATES.map(|(k, d)| sigmoid((phi[k] + logistic(u[d])) / tau))
}

/// Relaxed mode: the physical parameters and their Jacobian
/// `jac[q][k] = ∂param[q]/∂φ[k]`, for any τ > 0.
///
/// The crop size's clamp at 1 makes the centre non-differentiable where
/// `area·aspect` or `area/aspect` crosses 1 (derivative taken as 0 beyond).
pub fn relaxed_params(
    phi: &[f64; NUM_PHI],
    tau: f64,
    u: &[f32; NUM_DRAWS],
) -> ([f64; NUM_PARAMS], [[f64; NUM_PHI]; NUM_PARAMS]) {
    let gates = relaxed_gates(phi, tau, u);
    let dg = gates.map(|g| g * (1.0 - g) / tau);
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
    // area
    jac[0][0] = -dg[0] * uf[1] * (1.0 - s_min);
    jac[0][1] = gc * uf[1] * s_min * (1.0 - s_min);
    // aspect
    jac[1][0] = aspect * ell * dg[0];
    // centre through the crop size
    #[allow(clippy::needless_range_loop)]
    for k in 0..2 {
        let (da, dr) = (jac[0][k], jac[1][k]);
        if cw_raw < 1.0 {
            jac[2][k] = -kx * cw / 2.0 * (da / area + dr / aspect);
        }
        if ch_raw < 1.0 {
            jac[3][k] = -ky * ch / 2.0 * (da / area - dr / aspect);
        }
    }
    // angle
    jac[4][2] = dg[1] * max_rad * ka;
    jac[4][3] = gr * PI * s3 * (1.0 - s3) * ka;
    // flip
    jac[5][4] = dg[2];
    // sigma
    jac[6][5] = dg[3] * sp * uf[9];
    jac[6][6] = gn * sigmoid(phi[6]) * uf[9];
    (values, jac)
}

/// The relaxed sampler as a tape node: φ `[7]` → parameters `[B, 7]`.
struct RelaxedOp {
    inputs: [Var; 1],
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
            let (_, jac) = relaxed_params(&phi, self.tau, u);
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
    /// Records relaxed sampling: `phi` (`[7]`) and each sample's draws to a
    /// `[B, 7]` parameter tensor for [`Tape::augment`].
    pub fn relaxed_params(&mut self, phi: Var, tau: f64, draws: Rc<[[f32; NUM_DRAWS]]>) -> Var {
        let p = phi_array(self.value(phi));
        let mut out = Vec::with_capacity(draws.len() * NUM_PARAMS);
        for u in draws.iter() {
            out.extend(relaxed_params(&p, tau, u).0.map(F::from_f64));
        }
        let value = Tensor::new(&[draws.len(), NUM_PARAMS], out);
        let op = RelaxedOp {
            inputs: [phi],
            tau,
            draws,
        };
        self.custom(Rc::new(op), value)
    }
}

//! Finite-difference checks of every gradient of the engine, in f64 with
//! central differences: each op's gradient and double backward, a
//! Hessian-vector product, the CNN, the augmentation node, the relaxed sampler, the
//! whole φ → image chain, the MAML hypergradient and the Reptile estimate.
//!
//! Errors are norm-wise: `‖a − b‖₂ / max(‖a‖₂, ‖b‖₂)` over all the entries
//! of a gradient, `0` when both are zero.

mod augment;
mod bilevel;
mod finite_diff;
mod model;
mod ops;

pub use augment::{check_augment, AugmentProblem};
pub use bilevel::{check_hypergradient, check_reptile, check_reptile_f32, MetaProblem};
pub use finite_diff::{
    analytic_grad, cosine, directional, eval, grad_error, numeric_grad, random, rel_err, Scalar,
};
pub use model::{check_cnn, check_hvp};
pub use ops::check_ops;

/// Finite-difference step of the op checks.
pub const EPS: f64 = 1e-6;
/// Tolerance on relative errors.
pub const REL_TOL: f64 = 1e-4;
/// Lower bound on the cosine between the Reptile estimate and the exact
/// hypergradient.
pub const COS_TOL: f64 = 0.99;

/// How a check's value is judged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Criterion {
    /// Passes when the value is at most the bound (a relative error).
    AtMost(f64),
    /// Passes when the value is at least the bound (a cosine).
    AtLeast(f64),
    /// Reported only.
    Info,
}

/// The outcome of one check.
#[derive(Clone, Debug)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// The measured relative error or cosine.
    pub value: f64,
    /// How the value is judged.
    pub criterion: Criterion,
}

impl Check {
    /// A relative-error check with tolerance [`REL_TOL`].
    pub fn rel(name: impl Into<String>, value: f64) -> Self {
        Check {
            name: name.into(),
            value,
            criterion: Criterion::AtMost(REL_TOL),
        }
    }

    /// Whether the check passes (NaN never does).
    pub fn passed(&self) -> bool {
        match self.criterion {
            Criterion::AtMost(t) => self.value <= t,
            Criterion::AtLeast(t) => self.value >= t,
            Criterion::Info => true,
        }
    }
}

/// Every check, in the order `metaug gradcheck` prints them.
pub fn run_all(seed: u64) -> Vec<Check> {
    let mut out = check_ops(seed);
    out.extend(check_hvp(seed));
    out.extend(check_cnn(seed));
    out.extend(check_augment(seed));
    out.extend(check_hypergradient(seed));
    out.extend(check_reptile(seed));
    out.push(check_reptile_f32(seed));
    out
}

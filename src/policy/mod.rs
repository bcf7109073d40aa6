//! The learnable augmentation policy φ and its hard sampling.
//!
//! φ is 7 unconstrained reals, in this order ([`PHI_NAMES`]):
//! `[crop_logit_p, crop_raw_min_area, rotate_logit_p, rotate_raw_max_angle,
//! flip_logit_p, noise_logit_p, noise_raw_max_sigma]`, plus a temperature τ
//! for the relaxed (meta-learning) mode. The maps to human units are
//! [`sigmoid`] (probabilities, crop minimum area, rotation `180·sigmoid`
//! degrees) and [`softplus`] (noise σ in `[0, 1]` pixel units).
//!
//! A policy's [`Family`] says how the four logits choose a sample's ops:
//! each op on its own (`Independent`, the design's policy: op `k` applies
//! when `u_gate < sigmoid(logit_k)`), or exactly one op per sample
//! (`OneOp`, TrivialAugment's structure: the op is drawn with probabilities
//! `softmax(0, crop, rotate, flip, noise logits)`, the 0 being the
//! identity's). The magnitudes mean the same in both.
//!
//! Per sample, twelve uniforms [`draws`] come from Philox stream
//! [`STREAM_PARAMS`], blocks 0, 1, 2: `u0` crop gate, `u1` crop area, `u2`
//! crop aspect, `u3`/`u4` crop centre, `u5` rotate gate, `u6` angle, `u7` flip
//! gate, `u8` noise gate, `u9` noise σ, `u10` the identity's gate (one-op
//! family only; `u11` unused). [`Policy::sample_hard`] turns them into
//! [`SampleParams`]; the meta engine reuses [`draws`] and the maps for its
//! relaxed mode.
//!
//! A policy is saved as a small safetensors file (the `file` module: tensor
//! `phi` F32 `[7]` and metadata `format=metaug-policy`, `version`, `ops`,
//! `tau`, and `family` for one-op policies).

mod file;

use crate::ops::geometry::{Geometry, SampleParams};
use crate::ops::philox::{PhiloxStream, STREAM_PARAMS};
use crate::{Error, Result};

/// Number of policy parameters.
pub const N_PHI: usize = 7;
/// Names of the entries of φ, in order.
pub const PHI_NAMES: [&str; N_PHI] = [
    "crop_logit_p",
    "crop_raw_min_area",
    "rotate_logit_p",
    "rotate_raw_max_angle",
    "flip_logit_p",
    "noise_logit_p",
    "noise_raw_max_sigma",
];
/// Index of the crop probability logit in φ.
pub const CROP_LOGIT_P: usize = 0;
/// Index of the raw crop minimum area (`sigmoid` → area fraction).
pub const CROP_RAW_MIN_AREA: usize = 1;
/// Index of the rotation probability logit.
pub const ROTATE_LOGIT_P: usize = 2;
/// Index of the raw maximum angle (`180·sigmoid` → degrees).
pub const ROTATE_RAW_MAX_ANGLE: usize = 3;
/// Index of the flip probability logit.
pub const FLIP_LOGIT_P: usize = 4;
/// Index of the noise probability logit.
pub const NOISE_LOGIT_P: usize = 5;
/// Index of the raw maximum noise σ (`softplus` → pixel units).
pub const NOISE_RAW_MAX_SIGMA: usize = 6;
/// Indices of the four probability logits (the entries that may be `-inf`).
pub const LOGITS: [usize; 4] = [CROP_LOGIT_P, ROTATE_LOGIT_P, FLIP_LOGIT_P, NOISE_LOGIT_P];
/// Indices of the magnitudes in φ: the smallest crop area, the largest
/// angle, the largest noise σ (the entries that are not in [`LOGITS`]).
pub const MAGNITUDES: [usize; 3] = [CROP_RAW_MIN_AREA, ROTATE_RAW_MAX_ANGLE, NOISE_RAW_MAX_SIGMA];
/// The ops of a policy, in order, as written in the file's `ops` metadata.
pub const OPS: &str = "crop,rotate,flip,noise";
/// Default relaxation temperature τ.
pub const DEFAULT_TAU: f32 = 0.5;
/// `ln(3/4)`: the log of the smallest crop aspect ratio.
pub const LN_ASPECT_MIN: f32 = -0.287_682_1;
/// `ln(16/9)`: the width of the log-aspect range (3/4 to 4/3).
pub const LN_ASPECT_RANGE: f32 = 0.575_364_2;

/// Index of the draw that is each op's gate, in [`LOGITS`]' order.
pub const GATE_DRAWS: [usize; 4] = [0, 5, 7, 8];
/// Index of the identity's gate draw in the one-op family.
pub const IDENTITY_DRAW: usize = 10;

/// How a policy's four probability logits choose the ops of a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Family {
    /// Each op applies on its own, op `k` with probability
    /// `sigmoid(logit_k)` (the design's policy; any subset of the ops).
    #[default]
    Independent,
    /// TrivialAugment's structure: every sample gets exactly one of
    /// identity, crop, rotate, flip, noise, op `k` with probability
    /// `softmax(0, logit_crop, logit_rotate, logit_flip, logit_noise)_k`,
    /// drawn by Gumbel-max on the gate draws (`u10` for the identity), at
    /// the policy's magnitudes. All logits 0 is TrivialAugment's uniform
    /// choice; a `-inf` logit never chooses its op.
    OneOp,
}

impl Family {
    /// The family's name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Family::Independent => "independent",
            Family::OneOp => "one-op",
        }
    }

    /// The family named `name` ([`Family::name`]), if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "independent" => Some(Family::Independent),
            "one-op" => Some(Family::OneOp),
            _ => None,
        }
    }
}

/// The Gumbel noise `−ln(−ln u)` of a uniform `u` in (0, 1), in f64.
#[inline]
pub fn gumbel(u: f32) -> f64 {
    -(-(u as f64).ln()).ln()
}

/// The one-op family's choice for logits `[crop, rotate, flip, noise]` and
/// a sample's draws: `None` for the identity, else the op's index in
/// [`LOGITS`]' order. Gumbel-max: the largest `logit + gumbel(u_gate)`
/// wins (the identity's logit is 0), so op `k` is chosen with probability
/// `softmax(0, logits)_k`; ties go to the first.
pub fn one_op_choice(logits: [f64; 4], u: &[f32; 12]) -> Option<usize> {
    let mut best = (gumbel(u[IDENTITY_DRAW]), None);
    for (k, (&l, &d)) in logits.iter().zip(&GATE_DRAWS).enumerate() {
        let score = l + gumbel(u[d]);
        if score > best.0 {
            best = (score, Some(k));
        }
    }
    best.1
}

/// The one-op family's probabilities `softmax(0, logits)`: identity first,
/// then crop, rotate, flip, noise.
pub fn one_op_shares(logits: [f64; 4]) -> [f64; 5] {
    let z = [0.0, logits[0], logits[1], logits[2], logits[3]];
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e = z.map(|v| (v - m).exp());
    let sum: f64 = e.iter().sum();
    e.map(|v| v / sum)
}

/// `1 / (1 + exp(-x))` in f32 (`-inf` → 0, `+inf` → 1).
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln(1 + exp(x))` in f32, computed stably as `max(x, 0) + ln_1p(exp(-|x|))`.
#[inline]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The inverse of [`sigmoid`] for `p` in (0, 1), computed in f64.
pub fn logit(p: f64) -> f32 {
    (p / (1.0 - p)).ln() as f32
}

/// The inverse of [`softplus`] for `y > 0`, computed in f64.
pub fn inverse_softplus(y: f64) -> f32 {
    y.exp_m1().ln() as f32
}

/// The twelve uniforms of one sample: Philox stream [`STREAM_PARAMS`]
/// of `(seed, epoch, sample)`, blocks 0, 1, 2 in order.
pub fn draws(seed: u64, epoch: u64, sample: u64) -> [f32; 12] {
    let s = PhiloxStream::new(seed, epoch, sample, STREAM_PARAMS);
    let mut u = [0.0; 12];
    for b in 0..3 {
        u[4 * b..4 * b + 4].copy_from_slice(&s.uniforms(b as u32));
    }
    u
}

/// The crop aspect ratio for draw `u2`: `exp(ln(3/4) + u2·ln(16/9))` (f32).
#[inline]
pub fn crop_aspect(u2: f32) -> f32 {
    (LN_ASPECT_MIN + u2 * LN_ASPECT_RANGE).exp()
}

/// The crop centre for a crop of `area`/`aspect` and draws `u3`, `u4`:
/// `((1 - cw)·(2·u3 - 1), (1 - ch)·(2·u4 - 1))` with `(cw, ch)` from
/// [`Geometry::crop_size`], computed in f64 and rounded once to f32. The crop
/// box always lies inside the image; without a crop (`cw = ch = 1`) it is 0.
pub fn crop_center(area: f32, aspect: f32, u3: f32, u4: f32) -> [f32; 2] {
    let g = Geometry {
        area,
        aspect,
        ..Geometry::IDENTITY
    };
    let (cw, ch) = g.crop_size();
    [
        ((1.0 - cw) * (2.0 * u3 as f64 - 1.0)) as f32,
        ((1.0 - ch) * (2.0 * u4 as f64 - 1.0)) as f32,
    ]
}

/// An augmentation policy: φ and the relaxation temperature τ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// The 7 unconstrained parameters, in the order of [`PHI_NAMES`].
    pub phi: [f32; N_PHI],
    /// Temperature of the relaxed gates (> 0).
    pub tau: f32,
    /// How the logits choose a sample's ops.
    pub family: Family,
}

impl Default for Policy {
    /// [`Policy::default_policy`].
    fn default() -> Self {
        Policy::default_policy()
    }
}

impl Policy {
    /// A policy from human units: probabilities in (0, 1) (0 and 1 allowed:
    /// logits `-inf` / `+inf` are clamped to ±30 for p = 1 so the file stays
    /// finite), crop minimum area in (0, 1), maximum angle in (0, 180)
    /// degrees, maximum σ > 0. Returns an error for out-of-range values.
    pub fn from_values(
        crop: (f64, f64),
        rotate: (f64, f64),
        flip_p: f64,
        noise: (f64, f64),
        tau: f32,
    ) -> Result<Self> {
        let prob = |name: &str, p: f64| -> Result<f32> {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::invalid(
                    name,
                    format!("probability {p} is outside [0, 1]"),
                ));
            }
            Ok(if p == 0.0 {
                f32::NEG_INFINITY
            } else {
                logit(p).min(30.0)
            })
        };
        let open = |name: &str, v: f64, hi: f64| -> Result<f64> {
            if !(v > 0.0 && v < hi) {
                return Err(Error::invalid(name, format!("{v} is outside (0, {hi})")));
            }
            Ok(v)
        };
        let p = Policy {
            phi: [
                prob("crop probability", crop.0)?,
                logit(open("crop minimum area", crop.1, 1.0)?),
                prob("rotate probability", rotate.0)?,
                logit(open("rotate maximum angle", rotate.1, 180.0)? / 180.0),
                prob("flip probability", flip_p)?,
                prob("noise probability", noise.0)?,
                inverse_softplus(open("noise maximum sigma", noise.1, f64::INFINITY)?),
            ],
            tau,
            family: Family::Independent,
        };
        p.validate()?;
        Ok(p)
    }

    /// No augmentation: every probability logit is `-inf` (magnitudes as in
    /// the default policy).
    pub fn none() -> Self {
        let mut p = Policy::default_policy();
        for k in LOGITS {
            p.phi[k] = f32::NEG_INFINITY;
        }
        p
    }

    /// The default policy: crop p 0.8 with minimum area 0.35; rotate p 0.5 up
    /// to 15°; flip p 0.5; noise p 0.3 up to σ 0.05; τ 0.5.
    pub fn default_policy() -> Self {
        Policy {
            phi: [
                logit(0.8),
                logit(0.35),
                logit(0.5),
                logit(15.0 / 180.0),
                logit(0.5),
                logit(0.3),
                inverse_softplus(0.05),
            ],
            tau: DEFAULT_TAU,
            family: Family::Independent,
        }
    }

    /// TrivialAugment-style as a policy of the one-op family: each sample
    /// gets one of identity, crop (area 0.35–1), rotate (±30°), flip, noise
    /// (σ ≤ 0.1), uniformly (every logit 0), at a uniform magnitude; τ 0.5.
    pub fn trivial_augment() -> Self {
        Policy {
            phi: [
                0.0,
                logit(0.35),
                0.0,
                logit(30.0 / 180.0),
                0.0,
                0.0,
                inverse_softplus(0.1),
            ],
            tau: DEFAULT_TAU,
            family: Family::OneOp,
        }
    }

    /// Parses a `--policy` argument: `none`, `default`, `trivial`
    /// ([`Policy::trivial_augment`]) or the path of a policy file (write
    /// `./none` for a file named `none`).
    pub fn from_arg(arg: &str) -> Result<Self> {
        match arg {
            "none" => Ok(Policy::none()),
            "default" => Ok(Policy::default_policy()),
            "trivial" => Ok(Policy::trivial_augment()),
            "" => Err(Error::invalid(
                "policy",
                "empty (expected none, default, trivial or a policy file)",
            )),
            path => Policy::load(path),
        }
    }

    /// Checks φ and τ: logits finite or `-inf`, magnitudes finite, τ finite
    /// and > 0.
    pub fn validate(&self) -> Result<()> {
        for (k, v) in self.phi.iter().enumerate() {
            let ok = v.is_finite() || (LOGITS.contains(&k) && *v == f32::NEG_INFINITY);
            if !ok {
                return Err(Error::invalid(
                    "policy",
                    format!(
                        "{} = {v} (must be finite{})",
                        PHI_NAMES[k],
                        if LOGITS.contains(&k) { " or -inf" } else { "" }
                    ),
                ));
            }
        }
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return Err(Error::invalid(
                "policy",
                format!("tau = {} (must be finite and > 0)", self.tau),
            ));
        }
        Ok(())
    }

    /// Probability that op `k` (in [`LOGITS`]' order) applies to a sample:
    /// `sigmoid(logit_k)` in the independent family, its share
    /// [`one_op_shares`] in the one-op family.
    pub fn op_probability(&self, k: usize) -> f32 {
        match self.family {
            Family::Independent => sigmoid(self.phi[LOGITS[k]]),
            Family::OneOp => one_op_shares(self.logits())[k + 1] as f32,
        }
    }

    /// The four probability logits, in [`LOGITS`]' order, in f64.
    pub fn logits(&self) -> [f64; 4] {
        LOGITS.map(|k| self.phi[k] as f64)
    }

    /// Which ops apply to a sample with draws `u`: `[crop, rotate, flip,
    /// noise]` (at most one in the one-op family).
    pub fn hard_gates(&self, u: &[f32; 12]) -> [bool; 4] {
        match self.family {
            Family::Independent => {
                std::array::from_fn(|k| u[GATE_DRAWS[k]] < self.op_probability(k))
            }
            Family::OneOp => {
                let chosen = one_op_choice(self.logits(), u);
                std::array::from_fn(|k| chosen == Some(k))
            }
        }
    }

    /// Probability of the crop.
    pub fn crop_p(&self) -> f32 {
        self.op_probability(0)
    }
    /// Smallest crop area, as a fraction of the image.
    pub fn crop_min_area(&self) -> f32 {
        sigmoid(self.phi[CROP_RAW_MIN_AREA])
    }
    /// Probability of the rotation.
    pub fn rotate_p(&self) -> f32 {
        self.op_probability(1)
    }
    /// Largest rotation angle, in degrees (`180·sigmoid(raw)`).
    pub fn rotate_max_degrees(&self) -> f32 {
        180.0 * sigmoid(self.phi[ROTATE_RAW_MAX_ANGLE])
    }
    /// Probability of the horizontal flip.
    pub fn flip_p(&self) -> f32 {
        self.op_probability(2)
    }
    /// Probability of the noise.
    pub fn noise_p(&self) -> f32 {
        self.op_probability(3)
    }
    /// Largest noise σ, in `[0, 1]` pixel units (`softplus(raw)`).
    pub fn noise_max_sigma(&self) -> f32 {
        softplus(self.phi[NOISE_RAW_MAX_SIGMA])
    }

    /// The hard-mode parameters of sample `sample` of epoch `epoch`.
    pub fn sample_hard(&self, seed: u64, epoch: u64, sample: u64) -> SampleParams {
        self.hard_params(&draws(seed, epoch, sample))
    }

    /// Hard mode from given [`draws`]: the ops [`Policy::hard_gates`]
    /// chooses apply, at magnitudes drawn as follows.
    /// - crop: `area = 1 - u1·(1 - s_min)`, `aspect = `[`crop_aspect`]`(u2)`,
    ///   else both 1; centre [`crop_center`] (0 without a crop);
    /// - rotate: `angle = radians(max_deg)·(2·u6 - 1)`, else 0;
    /// - flip: 1, else 0;
    /// - noise: `sigma = max_sigma·u9`, else 0.
    pub fn hard_params(&self, u: &[f32; 12]) -> SampleParams {
        let [crop, rotate, flip, noise] = self.hard_gates(u);
        let (area, aspect) = if crop {
            (1.0 - u[1] * (1.0 - self.crop_min_area()), crop_aspect(u[2]))
        } else {
            (1.0, 1.0)
        };
        let angle = if rotate {
            self.rotate_max_degrees().to_radians() * (2.0 * u[6] - 1.0)
        } else {
            0.0
        };
        let flip = if flip { 1.0 } else { 0.0 };
        let sigma = if noise {
            self.noise_max_sigma() * u[9]
        } else {
            0.0
        };
        SampleParams {
            geometry: Geometry {
                area,
                aspect,
                center: crop_center(area, aspect, u[3], u[4]),
                angle,
            },
            flip,
            sigma,
        }
    }

    /// The policy in human units, one op per line.
    pub fn describe(&self) -> String {
        let p = |v: f32| format!("p={v:.3}");
        let head = match self.family {
            Family::Independent => String::new(),
            Family::OneOp => format!(
                "one op per sample (family one-op); identity {}\n",
                p(one_op_shares(self.logits())[0] as f32)
            ),
        };
        format!(
            "{head}crop    {}  area {:.3}..1 of the image, aspect 3/4..4/3\n\
             rotate  {}  angle within ±{:.2}°\n\
             flip    {}\n\
             noise   {}  σ up to {:.4} (pixel range 0..1)\n\
             tau     {}",
            p(self.crop_p()),
            self.crop_min_area(),
            p(self.rotate_p()),
            self.rotate_max_degrees(),
            p(self.flip_p()),
            p(self.noise_p()),
            self.noise_max_sigma(),
            self.tau
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_their_definitions() {
        assert_eq!(LN_ASPECT_MIN, (0.75f64).ln() as f32);
        assert_eq!(LN_ASPECT_RANGE, (16.0f64 / 9.0).ln() as f32);
    }

    #[test]
    fn default_policy_in_human_units() {
        let p = Policy::default_policy();
        assert!((p.crop_p() - 0.8).abs() < 1e-6);
        assert!((p.crop_min_area() - 0.35).abs() < 1e-6);
        assert!((p.rotate_p() - 0.5).abs() < 1e-6);
        assert!((p.rotate_max_degrees() - 15.0).abs() < 1e-4);
        assert!((p.flip_p() - 0.5).abs() < 1e-6);
        assert!((p.noise_p() - 0.3).abs() < 1e-6);
        assert!((p.noise_max_sigma() - 0.05).abs() < 1e-6);
        let n = Policy::none();
        assert_eq!(
            [n.crop_p(), n.rotate_p(), n.flip_p(), n.noise_p()],
            [0.0; 4]
        );
    }

    /// `--policy trivial` is TrivialAugment-style: five equal shares, the
    /// magnitudes of the baseline, described as one op per sample.
    #[test]
    fn trivial_policy_is_five_equal_shares() {
        let p = Policy::from_arg("trivial").unwrap();
        assert_eq!(p.family, Family::OneOp);
        for k in 0..4 {
            assert!((p.op_probability(k) - 0.2).abs() < 1e-6);
        }
        assert!((p.crop_min_area() - 0.35).abs() < 1e-6);
        assert!((p.rotate_max_degrees() - 30.0).abs() < 1e-4);
        assert!((p.noise_max_sigma() - 0.1).abs() < 1e-6);
        assert!(
            p.describe().starts_with("one op per sample"),
            "{}",
            p.describe()
        );
        // a -inf logit is never chosen; all -inf leaves the identity
        let mut q = p;
        q.phi[ROTATE_LOGIT_P] = f32::NEG_INFINITY;
        assert_eq!(q.op_probability(1), 0.0);
        for k in LOGITS {
            q.phi[k] = f32::NEG_INFINITY;
        }
        let u = draws(1, 2, 3);
        assert_eq!(q.hard_gates(&u), [false; 4]);
    }

    #[test]
    fn softplus_is_stable() {
        assert_eq!(softplus(100.0), 100.0);
        assert!(softplus(-100.0) > 0.0);
        assert!((softplus(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
    }
}

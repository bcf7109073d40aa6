//! The learnable augmentation policy φ and its hard sampling.
//!
//! φ is 7 unconstrained reals, in this order ([`PHI_NAMES`]):
//! `[crop_logit_p, crop_raw_min_area, rotate_logit_p, rotate_raw_max_angle,
//! flip_logit_p, noise_logit_p, noise_raw_max_sigma]`, plus a temperature τ
//! for the relaxed (meta-learning) mode. The maps to human units are
//! [`sigmoid`] (probabilities, crop minimum area, rotation `180·sigmoid`
//! degrees) and [`softplus`] (noise σ in `[0, 1]` pixel units).
//!
//! Per sample, twelve uniforms [`draws`] come from Philox stream
//! [`STREAM_PARAMS`], blocks 0, 1, 2: `u0` crop gate, `u1` crop area, `u2`
//! crop aspect, `u3`/`u4` crop centre, `u5` rotate gate, `u6` angle, `u7` flip
//! gate, `u8` noise gate, `u9` noise σ (`u10`, `u11` unused).
//! [`Policy::sample_hard`] turns them into [`SampleParams`] (op `k` applies
//! when `u_gate < p_k`); the meta engine reuses [`draws`] and the maps for its
//! relaxed mode.
//!
//! A policy is saved as a small safetensors file: tensor `phi` F32 `[7]` and
//! metadata `format=metaug-policy`, `version=1`, `ops=crop,rotate,flip,noise`,
//! `tau=...`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

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
/// The ops of a policy, in order, as written in the file's `ops` metadata.
pub const OPS: &str = "crop,rotate,flip,noise";
/// Default relaxation temperature τ.
pub const DEFAULT_TAU: f32 = 0.5;
/// `ln(3/4)`: the log of the smallest crop aspect ratio.
pub const LN_ASPECT_MIN: f32 = -0.287_682_1;
/// `ln(16/9)`: the width of the log-aspect range (3/4 to 4/3).
pub const LN_ASPECT_RANGE: f32 = 0.575_364_2;

const FORMAT: &str = "metaug-policy";
const VERSION: &str = "1";
/// A policy file is a few hundred bytes; anything above this is not one.
const MAX_FILE_BYTES: u64 = 1 << 20;

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
    /// Temperature of the relaxed Bernoulli gates (> 0).
    pub tau: f32,
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
        }
    }

    /// Parses a `--policy` argument: `none`, `default`, or the path of a
    /// policy file (write `./none` for a file named `none`).
    pub fn from_arg(arg: &str) -> Result<Self> {
        match arg {
            "none" => Ok(Policy::none()),
            "default" => Ok(Policy::default_policy()),
            "" => Err(Error::invalid(
                "policy",
                "empty (expected none, default or a policy file)",
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

    /// Probability of the crop.
    pub fn crop_p(&self) -> f32 {
        sigmoid(self.phi[CROP_LOGIT_P])
    }
    /// Smallest crop area, as a fraction of the image.
    pub fn crop_min_area(&self) -> f32 {
        sigmoid(self.phi[CROP_RAW_MIN_AREA])
    }
    /// Probability of the rotation.
    pub fn rotate_p(&self) -> f32 {
        sigmoid(self.phi[ROTATE_LOGIT_P])
    }
    /// Largest rotation angle, in degrees (`180·sigmoid(raw)`).
    pub fn rotate_max_degrees(&self) -> f32 {
        180.0 * sigmoid(self.phi[ROTATE_RAW_MAX_ANGLE])
    }
    /// Probability of the horizontal flip.
    pub fn flip_p(&self) -> f32 {
        sigmoid(self.phi[FLIP_LOGIT_P])
    }
    /// Probability of the noise.
    pub fn noise_p(&self) -> f32 {
        sigmoid(self.phi[NOISE_LOGIT_P])
    }
    /// Largest noise σ, in `[0, 1]` pixel units (`softplus(raw)`).
    pub fn noise_max_sigma(&self) -> f32 {
        softplus(self.phi[NOISE_RAW_MAX_SIGMA])
    }

    /// The hard-mode parameters of sample `sample` of epoch `epoch`.
    pub fn sample_hard(&self, seed: u64, epoch: u64, sample: u64) -> SampleParams {
        self.hard_params(&draws(seed, epoch, sample))
    }

    /// Hard mode from given [`draws`]: op `k` applies when `u_gate < p_k`.
    /// - crop: `area = 1 - u1·(1 - s_min)`, `aspect = `[`crop_aspect`]`(u2)`,
    ///   else both 1; centre [`crop_center`] (0 without a crop);
    /// - rotate: `angle = radians(max_deg)·(2·u6 - 1)`, else 0;
    /// - flip: 1, else 0;
    /// - noise: `sigma = max_sigma·u9`, else 0.
    pub fn hard_params(&self, u: &[f32; 12]) -> SampleParams {
        let (area, aspect) = if u[0] < self.crop_p() {
            (1.0 - u[1] * (1.0 - self.crop_min_area()), crop_aspect(u[2]))
        } else {
            (1.0, 1.0)
        };
        let angle = if u[5] < self.rotate_p() {
            self.rotate_max_degrees().to_radians() * (2.0 * u[6] - 1.0)
        } else {
            0.0
        };
        let flip = if u[7] < self.flip_p() { 1.0 } else { 0.0 };
        let sigma = if u[8] < self.noise_p() {
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
        format!(
            "crop    {}  area {:.3}..1 of the image, aspect 3/4..4/3\n\
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

    /// The policy file's bytes (safetensors).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let data: Vec<u8> = self.phi.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![N_PHI], &data)
            .map_err(|e| Error::invalid("policy", e.to_string()))?;
        let meta: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION.to_string()),
            ("ops", OPS.to_string()),
            ("tau", self.tau.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::serialize([("phi", view)], Some(meta))
            .map_err(|e| Error::invalid("policy", e.to_string()))
    }

    /// Parses a policy file's bytes; `path` names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |what: String| Error::format(path, what);
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let empty = HashMap::new();
        let meta = meta.metadata().as_ref().unwrap_or(&empty);
        match meta.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            Some("metaug-shard") => {
                return Err(bad("this is a metaug shard, not a policy file".to_string()))
            }
            Some(other) => {
                return Err(bad(format!(
                    "format is {other:?}, not a metaug policy file ({FORMAT:?})"
                )))
            }
            None => {
                return Err(bad(
                    "no `format` metadata: not a metaug policy file".to_string()
                ))
            }
        }
        if meta.get("version").map(String::as_str) != Some(VERSION) {
            return Err(bad(format!(
                "policy version {:?} is not supported (expected {VERSION})",
                meta.get("version")
            )));
        }
        if meta.get("ops").map(String::as_str) != Some(OPS) {
            return Err(bad(format!(
                "policy ops {:?} (expected {OPS:?})",
                meta.get("ops")
            )));
        }
        let tau: f32 = meta
            .get("tau")
            .ok_or_else(|| bad("no `tau` metadata".to_string()))?
            .parse()
            .map_err(|_| bad(format!("tau {:?} is not a number", meta["tau"])))?;
        let names = st.names();
        if names != ["phi"] {
            return Err(bad(format!(
                "expected exactly one tensor `phi`, found {names:?}"
            )));
        }
        let t = st
            .tensor("phi")
            .map_err(|e| bad(format!("tensor phi: {e}")))?;
        if t.dtype() != Dtype::F32 || t.shape() != [N_PHI] {
            return Err(bad(format!(
                "tensor phi is {:?} {:?} (expected F32 [{N_PHI}])",
                t.dtype(),
                t.shape()
            )));
        }
        let mut phi = [0.0f32; N_PHI];
        for (v, b) in phi.iter_mut().zip(t.data().chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let policy = Policy { phi, tau };
        policy.validate().map_err(|e| bad(e.to_string()))?;
        Ok(policy)
    }

    /// Reads and validates a policy file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > MAX_FILE_BYTES {
            return Err(Error::format(
                path,
                format!("{len} bytes is too large for a policy file"),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Policy::from_bytes(&bytes, path)
    }

    /// Writes the policy file: to a temporary name beside it, synced, then
    /// renamed, so that a reader never sees half a file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        use std::io::Write;
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        write().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
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

    #[test]
    fn softplus_is_stable() {
        assert_eq!(softplus(100.0), 100.0);
        assert!(softplus(-100.0) > 0.0);
        assert!((softplus(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
    }
}

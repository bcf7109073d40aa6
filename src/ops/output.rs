//! What one augmented sample looks like in memory: size, channels, element
//! type, layout and the per-channel normalisation applied before conversion.
//!
//! Conversion of a normalised value `y` (contract step 6):
//! - [`DType::F32`]: `y` as is;
//! - [`DType::F16`]: `half::f16::from_f32(y)` (round to nearest even);
//! - [`DType::U8`]: `(y * 255.0).round().clamp(0.0, 255.0) as u8` (`round` is
//!   half away from zero, the same as CUDA's `roundf`).
//!
//! Multi-byte elements are written little-endian (the byte order of
//! safetensors and of every target metaug runs on).

use crate::ops::geometry::Size;
use crate::{Error, Result};

/// The largest output side accepted by [`OutputSpec::validate`].
pub const MAX_OUTPUT_SIDE: u32 = 16_384;

/// Element type of an augmented sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 8-bit unsigned, `round(y * 255)` clamped to `[0, 255]`.
    U8,
    /// IEEE half precision.
    F16,
    /// IEEE single precision.
    F32,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::F16 => 2,
            DType::F32 => 4,
        }
    }

    /// The lowercase name (`u8`, `f16`, `f32`), as on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::F16 => "f16",
            DType::F32 => "f32",
        }
    }

    /// Parses `u8`, `f16` or `f32`.
    pub fn parse(s: &str) -> Result<DType> {
        match s {
            "u8" => Ok(DType::U8),
            "f16" => Ok(DType::F16),
            "f32" => Ok(DType::F32),
            _ => Err(Error::invalid(
                "dtype",
                format!("{s:?} (expected u8, f16 or f32)"),
            )),
        }
    }
}

/// Memory layout of one sample (and of a batch of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Channels, then rows, then columns (PyTorch's default).
    Nchw,
    /// Rows, then columns, then channels (interleaved pixels).
    Nhwc,
}

impl Layout {
    /// Parses `nchw` or `nhwc` (case-insensitive).
    pub fn parse(s: &str) -> Result<Layout> {
        match s.to_ascii_lowercase().as_str() {
            "nchw" => Ok(Layout::Nchw),
            "nhwc" => Ok(Layout::Nhwc),
            _ => Err(Error::invalid(
                "layout",
                format!("{s:?} (expected nchw or nhwc)"),
            )),
        }
    }

    /// Offset, in elements, of channel `c` of pixel `(i, j)` inside one
    /// sample of `channels × size`.
    #[inline]
    pub fn offset(self, size: Size, channels: u32, c: u32, i: u32, j: u32) -> usize {
        let (h, w, ch) = (size.height as usize, size.width as usize, channels as usize);
        let (c, i, j) = (c as usize, i as usize, j as usize);
        match self {
            Layout::Nchw => (c * h + i) * w + j,
            Layout::Nhwc => (i * w + j) * ch + c,
        }
    }
}

/// The shape, type and normalisation of one augmented sample.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSpec {
    /// Output height and width.
    pub size: Size,
    /// Channels, 1 (grey) or 3 (RGB); the source must have as many.
    pub channels: u32,
    /// Element type.
    pub dtype: DType,
    /// NCHW or NHWC.
    pub layout: Layout,
    /// Per-channel mean, in `[0, 1]` pixel units, subtracted before dividing.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, in `[0, 1]` pixel units (> 0).
    pub std: Vec<f32>,
}

impl OutputSpec {
    /// `channels × size`, f32, NCHW, no normalisation (mean 0, std 1).
    pub fn new(size: Size, channels: u32) -> Self {
        let n = channels as usize;
        OutputSpec {
            size,
            channels,
            dtype: DType::F32,
            layout: Layout::Nchw,
            mean: vec![0.0; n.min(3)],
            std: vec![1.0; n.min(3)],
        }
    }

    /// The same spec with another element type.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The same spec with another layout.
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// The same spec with another normalisation (one value per channel).
    pub fn with_normalization(mut self, mean: Vec<f32>, std: Vec<f32>) -> Self {
        self.mean = mean;
        self.std = std;
        self
    }

    /// Elements of one sample, `channels × height × width` (saturating, so
    /// that an unvalidated spec cannot overflow).
    pub fn sample_elements(&self) -> usize {
        (self.channels as usize)
            .saturating_mul(self.size.height as usize)
            .saturating_mul(self.size.width as usize)
    }

    /// Bytes of one sample: [`sample_elements`](Self::sample_elements) times
    /// the element size.
    pub fn sample_bytes(&self) -> usize {
        self.sample_elements().saturating_mul(self.dtype.size())
    }

    /// Checks the spec: each side in `1..=`[`MAX_OUTPUT_SIDE`], 1 or 3
    /// channels, one finite mean and one finite positive std per channel.
    pub fn validate(&self) -> Result<()> {
        let Size { height, width } = self.size;
        for (name, side) in [("height", height), ("width", width)] {
            if side == 0 || side > MAX_OUTPUT_SIDE {
                return Err(Error::invalid(
                    "output size",
                    format!("{name} {side} is outside 1..={MAX_OUTPUT_SIDE}"),
                ));
            }
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::invalid(
                "output channels",
                format!("{} (expected 1 or 3)", self.channels),
            ));
        }
        let n = self.channels as usize;
        if self.mean.len() != n || self.std.len() != n {
            return Err(Error::invalid(
                "normalisation",
                format!(
                    "{} mean and {} std values for {n} channel(s); give one per channel",
                    self.mean.len(),
                    self.std.len()
                ),
            ));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::invalid(
                "normalisation",
                format!("mean {m} is not finite"),
            ));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::invalid(
                "normalisation",
                format!("std {s} must be finite and > 0"),
            ));
        }
        Ok(())
    }
}

/// Converts one normalised value to u8 (contract step 6):
/// `(y * 255.0).round().clamp(0.0, 255.0) as u8`, bit for bit, computed
/// without a libm call (`round` is not an instruction on baseline x86-64):
/// clamping first gives the same result, and for `z` in `[0, 255]` the
/// fraction `z - trunc(z)` is exact, so comparing it with 0.5 rounds half
/// away from zero.
#[inline(always)]
pub fn to_u8(y: f32) -> u8 {
    // Not `clamp`: `max` also turns NaN into 0 (the contract's NaN -> 0).
    #[allow(clippy::manual_clamp)]
    let z = (y * 255.0).max(0.0).min(255.0);
    // SAFETY: z is in [0, 255], so the conversion is exact truncation (and,
    // unlike a saturating `as`, vectorises).
    let t = unsafe { z.to_int_unchecked::<i32>() };
    (t + (z - t as f32 >= 0.5) as i32) as u8
}

/// Writes normalised values `ys` (one channel's run of consecutive elements,
/// or any run) as `dtype` into `out`, element `k` at byte
/// `k * stride * dtype.size()`. `stride` is 1 for NCHW rows and `channels`
/// for NHWC rows.
#[inline(always)]
pub(crate) fn write_run(ys: &[f32], dtype: DType, stride: usize, out: &mut [u8]) {
    match dtype {
        DType::F32 => {
            if stride == 1 {
                for (o, y) in out.chunks_exact_mut(4).zip(ys) {
                    o.copy_from_slice(&y.to_le_bytes());
                }
            } else {
                for (o, y) in out.chunks_mut(4 * stride).zip(ys) {
                    o[..4].copy_from_slice(&y.to_le_bytes());
                }
            }
        }
        DType::F16 => {
            // `half`'s slice conversion uses F16C where the CPU has it; both
            // it and `f16::from_f32` round to nearest even.
            use half::slice::HalfFloatSliceExt;
            let mut tmp = [half::f16::ZERO; 64];
            for (ys, out) in ys.chunks(64).zip(out.chunks_mut(64 * 2 * stride)) {
                let tmp = &mut tmp[..ys.len()];
                tmp.convert_from_f32_slice(ys);
                for (o, h) in out.chunks_mut(2 * stride).zip(tmp.iter()) {
                    o[..2].copy_from_slice(&h.to_le_bytes());
                }
            }
        }
        DType::U8 => {
            if stride == 1 {
                for (o, y) in out.iter_mut().zip(ys) {
                    *o = to_u8(*y);
                }
            } else {
                for (o, y) in out.iter_mut().step_by(stride).zip(ys) {
                    *o = to_u8(*y);
                }
            }
        }
    }
}

/// Reads one sample written under `spec` back as f32 values in CHW order:
/// f32 as is, f16 widened, u8 as `v / 255` (the value before rounding, up to
/// half a step). For tests, previews and cross-checks.
///
/// # Panics
/// If `sample.len() != spec.sample_bytes()`.
pub fn sample_to_chw_f32(sample: &[u8], spec: &OutputSpec) -> Vec<f32> {
    assert_eq!(sample.len(), spec.sample_bytes(), "sample size");
    let (h, w, c) = (spec.size.height, spec.size.width, spec.channels);
    let mut out = Vec::with_capacity(spec.sample_elements());
    for ch in 0..c {
        for i in 0..h {
            for j in 0..w {
                let k = spec.layout.offset(spec.size, c, ch, i, j) * spec.dtype.size();
                out.push(match spec.dtype {
                    DType::U8 => sample[k] as f32 / 255.0,
                    DType::F16 => half::f16::from_le_bytes([sample[k], sample[k + 1]]).to_f32(),
                    DType::F32 => {
                        f32::from_le_bytes([sample[k], sample[k + 1], sample[k + 2], sample[k + 3]])
                    }
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_bad_specs() {
        let ok = OutputSpec::new(Size::new(28, 28), 1);
        assert!(ok.validate().is_ok());
        assert_eq!(ok.sample_bytes(), 28 * 28 * 4);
        let bad = [
            OutputSpec::new(Size::new(0, 28), 1),
            OutputSpec::new(Size::new(28, MAX_OUTPUT_SIDE + 1), 1),
            OutputSpec::new(Size::new(28, 28), 2),
            OutputSpec::new(Size::new(28, 28), 3).with_normalization(vec![0.5], vec![0.5]),
            OutputSpec::new(Size::new(28, 28), 1).with_normalization(vec![0.5], vec![0.0]),
            OutputSpec::new(Size::new(28, 28), 1).with_normalization(vec![0.5], vec![f32::NAN]),
            OutputSpec::new(Size::new(28, 28), 1).with_normalization(vec![f32::INFINITY], vec![1.]),
        ];
        for spec in bad {
            assert!(spec.validate().is_err(), "{spec:?}");
        }
    }

    #[test]
    fn u8_conversion_rounds_half_away_and_clamps() {
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(2.0), 255);
        assert_eq!(to_u8(0.5 / 255.0), 1);
        assert_eq!(to_u8(f32::NAN), 0);
        for v in 0..=255u8 {
            assert_eq!(to_u8(v as f32 / 255.0), v);
        }
        // Against the contract's formula on a dense sweep and around every
        // rounding boundary.
        let contract = |y: f32| (y * 255.0).round().clamp(0.0, 255.0) as u8;
        for sign in [0u32, 0x8000_0000] {
            // every 37th f32 in [0, 1.01] and in [-1.01, -0]
            let mut bits = 0u32;
            while f32::from_bits(bits) < 1.01 {
                let y = f32::from_bits(bits | sign);
                assert_eq!(to_u8(y), contract(y), "{y}");
                bits += 37;
            }
        }
        for k in 0..256 {
            let z = k as f32 + 0.5;
            for b in -4i32..=4 {
                let z = f32::from_bits((z.to_bits() as i32 + b) as u32);
                let y = z / 255.0;
                assert_eq!(to_u8(y), contract(y), "{y}");
            }
        }
    }

    #[test]
    fn runs_convert_like_the_contract() {
        let ys: Vec<f32> = (0..1000)
            .map(|k| (k as f32 - 300.0) * 0.00731)
            .chain([f32::NAN, f32::INFINITY, -0.0, 65504.0, 1e-8, 70000.0])
            .collect();
        for stride in [1usize, 3] {
            let n = ys.len();
            let mut f16 = vec![0u8; ((n - 1) * stride + 1) * 2];
            write_run(&ys, DType::F16, stride, &mut f16);
            let mut u8s = vec![0u8; (n - 1) * stride + 1];
            write_run(&ys, DType::U8, stride, &mut u8s);
            let mut f32s = vec![0u8; ((n - 1) * stride + 1) * 4];
            write_run(&ys, DType::F32, stride, &mut f32s);
            for (k, y) in ys.iter().enumerate() {
                let h = half::f16::from_le_bytes([f16[2 * k * stride], f16[2 * k * stride + 1]]);
                assert_eq!(h.to_bits(), half::f16::from_f32(*y).to_bits(), "{y}");
                assert_eq!(
                    u8s[k * stride],
                    (y * 255.0).round().clamp(0.0, 255.0) as u8,
                    "{y}"
                );
                let f = &f32s[4 * k * stride..4 * k * stride + 4];
                assert_eq!(
                    f32::from_le_bytes(f.try_into().unwrap()).to_bits(),
                    y.to_bits()
                );
            }
        }
    }

    #[test]
    fn parse_names() {
        assert_eq!(DType::parse("f16").unwrap(), DType::F16);
        assert!(DType::parse("f64").is_err());
        assert_eq!(Layout::parse("NHWC").unwrap(), Layout::Nhwc);
        assert!(Layout::parse("hwc").is_err());
    }
}

//! The output description and the host image view the GPU path takes.
//!
//! provisional: replaced by ops::OutputSpec at merge. `OutputSpec`, `DType`
//! and `Layout` belong to `ops` (CONTRACT.md "Augmentation and output") and
//! `ImageView` to `decode` (CONTRACT.md "Decode API"); both are being written
//! on other branches. These mirrors carry the same field names and only the
//! methods the CUDA code uses (`DType::size`, `OutputSpec::sample_bytes`,
//! `OutputSpec::validate`), so that at merge this file becomes
//! `pub use crate::ops::{DType, Layout, OutputSpec}; pub use crate::decode::ImageView;`.

use crate::ops::Size;
use crate::{Error, Result};

/// Element type of an augmented sample.
// provisional: replaced by ops::DType at merge
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
}

/// Memory layout of one sample.
// provisional: replaced by ops::Layout at merge
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Channels, rows, columns.
    Nchw,
    /// Rows, columns, channels.
    Nhwc,
}

/// The shape, type and normalisation of one augmented sample.
// provisional: replaced by ops::OutputSpec at merge
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSpec {
    /// Output height and width.
    pub size: Size,
    /// Channels, 1 or 3; the source images must have as many.
    pub channels: u32,
    /// Element type.
    pub dtype: DType,
    /// NCHW or NHWC.
    pub layout: Layout,
    /// Per-channel mean, in `[0, 1]` pixel units.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, in `[0, 1]` pixel units (> 0).
    pub std: Vec<f32>,
}

impl OutputSpec {
    /// Bytes of one sample (saturating).
    pub fn sample_bytes(&self) -> usize {
        (self.channels as usize)
            .saturating_mul(self.size.height as usize)
            .saturating_mul(self.size.width as usize)
            .saturating_mul(self.dtype.size())
    }

    /// Sides in `1..=16384`, 1 or 3 channels, one finite mean and one finite
    /// positive std per channel.
    pub fn validate(&self) -> Result<()> {
        let Size { height, width } = self.size;
        if !(1..=16_384).contains(&height) || !(1..=16_384).contains(&width) {
            return Err(Error::invalid(
                "output size",
                format!("{height}x{width} is outside 1..=16384"),
            ));
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
                    "{} mean / {} std values for {n} channel(s)",
                    self.mean.len(),
                    self.std.len()
                ),
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite())
            || self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(Error::invalid(
                "normalisation",
                "mean must be finite, std finite and > 0",
            ));
        }
        Ok(())
    }
}

/// A decoded image: `height × width × channels` u8, HWC, row-major.
// provisional: replaced by decode::ImageView at merge
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageView<'a> {
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// Channels per pixel.
    pub channels: u32,
    /// `height * width * channels` bytes.
    pub data: &'a [u8],
}

//! Argument types and helpers shared by several subcommands.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use metaug::ops::{DType, Layout};

/// `--decode-scale`: `full` or `auto`.
pub fn parse_decode_scale(s: &str) -> Result<metaug::decode::DecodeScale, String> {
    metaug::decode::DecodeScale::parse(s).map_err(|e| e.to_string())
}

/// Parses `HxW` (e.g. `224x224`) into `(height, width)`, both at least 1.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?}: expected HxW, e.g. 224x224"))?;
    let parse = |v: &str| -> Result<u32, String> {
        match v.trim().parse::<u32>() {
            Ok(0) => Err(format!("{s:?}: a size of 0 is not allowed")),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("{s:?}: {v:?} is not a whole number")),
        }
    };
    Ok((parse(h)?, parse(w)?))
}

/// Parses a finite number above 0 (a step size, a temperature).
pub fn parse_positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err(format!("{s:?}: must be a finite number above 0")),
        Err(_) => Err(format!("{s:?}: not a number")),
    }
}

/// Most training steps of a run (φ's history keeps one row a meta step).
pub const MAX_STEPS: usize = 10_000_000;
/// Most inner steps of a meta step (each keeps a batch and its tape).
pub const MAX_INNER_STEPS: usize = 64;

/// A `value_parser` for whole numbers from `min` to `max` (`usize::MAX`:
/// no upper bound); clap's error names the option.
pub fn count_in(
    min: usize,
    max: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s| match s.trim().parse::<usize>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        Ok(v) if max == usize::MAX => Err(format!("{v} is below {min}")),
        Ok(v) => Err(format!("{v} is not in {min}..={max}")),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// `--dtype` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DTypeArg {
    /// 8-bit unsigned, rounded and clamped.
    U8,
    /// IEEE half precision.
    F16,
    /// IEEE single precision.
    F32,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> DType {
        match d {
            DTypeArg::U8 => DType::U8,
            DTypeArg::F16 => DType::F16,
            DTypeArg::F32 => DType::F32,
        }
    }
}

/// `--layout` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LayoutArg {
    /// Channels first.
    Nchw,
    /// Channels last.
    Nhwc,
}

impl From<LayoutArg> for Layout {
    fn from(l: LayoutArg) -> Layout {
        match l {
            LayoutArg::Nchw => Layout::Nchw,
            LayoutArg::Nhwc => Layout::Nhwc,
        }
    }
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
pub fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_reject_zero() {
        assert_eq!(parse_size("224x200"), Ok((224, 200)));
        assert!(parse_size("0x5").unwrap_err().contains("0"));
        assert!(parse_size("12").is_err());
        assert!(parse_size("ax3").is_err());
    }
}

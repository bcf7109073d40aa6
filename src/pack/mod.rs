//! Packing datasets into shards: IDX (MNIST / Fashion-MNIST) and image folders.
//!
//! - [`idx::pack_idx`]: an IDX images file and labels file (gzipped or not),
//!   stored as raw pixels or as PNG encoded deterministically;
//! - [`folder::pack_folder`]: `root/<class>/<image>` with JPEG or PNG files,
//!   stored byte for byte (only their headers are read, for the shape).
//!
//! Both stream their input: memory stays bounded by the shard size.

pub mod folder;
pub mod idx;
pub mod probe;

pub use folder::{pack_folder, FolderOptions};
pub use idx::{fashion_mnist_class_names, pack_idx, IdxOptions, FASHION_MNIST_CLASSES};
pub use probe::{check_decodes, probe, ImageLimits};

use crate::{Error, Result};

/// Parses a byte size: a whole number with an optional unit, `B`, `K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB` (powers of 1024) or `KB`, `MB`, `GB` (powers of
/// 1000), case-insensitive: `64MiB`, `500k`, `1GB`, `4096`.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(
            "size",
            format!("{text:?} is not a size like 4096, 500K, 64MiB or 1GB"),
        )
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(scale).ok_or_else(bad)
}

/// A progress bar on stderr (hidden when stderr is not a terminal), or a
/// hidden one.
pub(crate) fn progress_bar(show: bool, len: Option<u64>, what: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if !show {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if len.is_some() {
        "{msg} [{bar:40}] {pos}/{len} ({eta})"
    } else {
        "{msg} {pos}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("500k").unwrap(), 500 << 10);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("2 m").unwrap(), 2 << 20);
        for bad in ["", "MiB", "1.5M", "-1", "12XB", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}

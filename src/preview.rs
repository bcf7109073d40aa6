//! A picture of what a policy does: a PNG grid, one row per sample, the
//! original first, then augmented copies (copy `k` = epoch `k`, as the
//! loader would yield them).

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::decode::{decode, DecodeLimits};
use crate::error::{Error, Result};
use crate::ops::philox::{PhiloxStream, STREAM_NOISE};
use crate::ops::{augment_into, DType, Layout, OutputSpec, SampleParams, Size};
use crate::policy::Policy;
use crate::shard::Dataset;

/// How the grid is laid out.
#[derive(Clone, Debug)]
pub struct PreviewConfig {
    /// Rows: samples taken evenly across the dataset.
    pub samples: u32,
    /// Augmented copies per row (the original comes first).
    pub copies: u32,
    /// Size of each cell in pixels.
    pub cell: Size,
    /// Seed of the augmentation.
    pub seed: u64,
}

impl Default for PreviewConfig {
    fn default() -> Self {
        PreviewConfig {
            samples: 6,
            copies: 7,
            cell: Size::new(96, 96),
            seed: 0,
        }
    }
}

const GAP: u32 = 4;

/// Renders the grid.
pub fn preview_grid(dataset: &Dataset, policy: &Policy, cfg: &PreviewConfig) -> Result<RgbImage> {
    if cfg.samples == 0 || cfg.cell.height == 0 || cfg.cell.width == 0 {
        return Err(Error::invalid(
            "preview",
            "samples and cell size must be at least 1",
        ));
    }
    if cfg.cell.height > 1024 || cfg.cell.width > 1024 || cfg.samples > 64 || cfg.copies > 64 {
        return Err(Error::invalid(
            "preview",
            "at most 64 samples, 64 copies and 1024-pixel cells",
        ));
    }
    let n = dataset.len();
    if n == 0 {
        return Err(Error::invalid("dataset", "is empty"));
    }
    let spec = OutputSpec::new(cfg.cell, 3)
        .with_dtype(DType::U8)
        .with_layout(Layout::Nhwc);
    let cols = cfg.copies + 1;
    let (cw, ch) = (cfg.cell.width, cfg.cell.height);
    let mut grid = RgbImage::from_pixel(
        cols * (cw + GAP) + GAP,
        cfg.samples * (ch + GAP) + GAP,
        Rgb([255, 255, 255]),
    );
    let mut cell = vec![0u8; spec.sample_bytes()];
    // The payload buffer of pread mode, reused for every row.
    let mut buf = Vec::new();
    for row in 0..cfg.samples {
        let index = u64::from(row) * n / u64::from(cfg.samples);
        let record = dataset.read_record(index, &mut buf)?;
        let pixels = decode(&record, 3, &DecodeLimits::default())?;
        for col in 0..cols {
            let (params, epoch) = if col == 0 {
                (SampleParams::IDENTITY, 0)
            } else {
                let epoch = u64::from(col - 1);
                (policy.sample_hard(cfg.seed, epoch, index), epoch)
            };
            let noise = PhiloxStream::new(cfg.seed, epoch, index, STREAM_NOISE);
            augment_into(pixels.view(), &params, noise, &spec, &mut cell);
            let (x0, y0) = (GAP + col * (cw + GAP), GAP + row * (ch + GAP));
            for (k, px) in cell.chunks_exact(3).enumerate() {
                let (x, y) = (k as u32 % cw, k as u32 / cw);
                grid.put_pixel(x0 + x, y0 + y, Rgb([px[0], px[1], px[2]]));
            }
        }
    }
    Ok(grid)
}

/// Renders the grid and writes it as a PNG.
pub fn write_preview(
    dataset: &Dataset,
    policy: &Policy,
    cfg: &PreviewConfig,
    path: &Path,
) -> Result<()> {
    let grid = preview_grid(dataset, policy, cfg)?;
    grid.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| match e {
            image::ImageError::IoError(io) => Error::io(path, io),
            other => Error::invalid("preview", format!("{}: {other}", path.display())),
        })
}

//! A dataset of shards as an in-memory image set for policy learning.

use crate::decode::{decode, DecodeLimits};
use crate::error::{Error, Result};
use crate::meta::tensor::Tensor;
use crate::meta::train::ImageSet;
use crate::ops::philox::{PhiloxStream, STREAM_NOISE};
use crate::ops::{augment_into, OutputSpec, SampleParams, Size};
use crate::shard::Dataset;

/// Most images loaded into memory for policy learning.
pub const MAX_IMAGES: usize = 200_000;

/// Decodes up to `max_images` records, spread evenly over the dataset so
/// that every class is represented, into `[N, C, H, W]` f32 in `[0, 1]`
/// (resized to `size` when given, else the first record's size; `channels`
/// likewise).
pub fn image_set(
    dataset: &Dataset,
    max_images: usize,
    size: Option<Size>,
    channels: Option<u32>,
) -> Result<ImageSet> {
    let n_all = dataset.len();
    if n_all == 0 {
        return Err(Error::invalid(
            "dataset",
            format!("{}: is empty", dataset.dir().display()),
        ));
    }
    let n = (max_images.min(MAX_IMAGES) as u64).min(n_all) as usize;
    if n == 0 {
        return Err(Error::invalid("images", "must be at least 1"));
    }
    let first = dataset.shape(0)?;
    let size = size.unwrap_or(Size::new(first[0], first[1]));
    let channels = channels.unwrap_or(first[2].min(3));
    let spec = OutputSpec::new(size, channels);
    spec.validate()?;
    let classes = dataset.classes().len();
    let per = spec.sample_bytes();
    let mut bytes = vec![0u8; per * n];
    let mut labels = Vec::with_capacity(n);
    // The payload buffer of pread mode, reused for every record.
    let mut buf = Vec::new();
    for (k, out) in bytes.chunks_exact_mut(per).enumerate() {
        let index = k as u64 * n_all / n as u64;
        let record = dataset.read_record(index, &mut buf)?;
        let pixels = decode(&record, channels, &DecodeLimits::default()).map_err(|e| {
            Error::record(
                dataset.shard_path(record.shard),
                record.index,
                e.to_string(),
            )
        })?;
        let noise = PhiloxStream::new(0, 0, index, STREAM_NOISE);
        augment_into(pixels.view(), &SampleParams::IDENTITY, noise, &spec, out);
        let label = usize::try_from(record.label)
            .ok()
            .filter(|&l| l < classes)
            .ok_or_else(|| {
                Error::record(
                    dataset.shard_path(record.shard),
                    record.index,
                    format!("label {} is not a class index", record.label),
                )
            })?;
        labels.push(label);
    }
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (c, h, w) = (channels as usize, size.height as usize, size.width as usize);
    Ok(ImageSet {
        images: Tensor::new(&[n, c, h, w], data),
        labels,
        classes,
    })
}

//! Image headers and decode checks through the `image` crate, with limits.
//!
//! [`probe`] reads only the header (for the shape, at pack time);
//! [`check_decodes`] decodes a whole record (for `inspect --verify`). Both
//! refuse images larger than [`ImageLimits`] before any pixel buffer is
//! allocated. `check_decodes` is the one place to swap for `decode::decode`.

use std::io::Cursor;

use image::{ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::shard::{Encoding, Record};
use crate::{Error, Result};

/// Largest image accepted when packing or verifying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest width in pixels.
    pub max_width: u32,
    /// Largest height in pixels.
    pub max_height: u32,
    /// Largest decoded size in bytes (and bound on the decoder's allocations).
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    /// 16384 x 16384 pixels, 1 GiB.
    fn default() -> Self {
        ImageLimits {
            max_width: 16384,
            max_height: 16384,
            max_alloc: 1 << 30,
        }
    }
}

impl ImageLimits {
    /// The `image` crate's limits: allocations bounded; dimensions left to
    /// [`ImageLimits::check`], called as soon as the header is read.
    fn image_limits(&self) -> Limits {
        let mut limits = Limits::default();
        limits.max_alloc = Some(self.max_alloc);
        limits
    }

    /// Checks declared dimensions and decoded size against the limits.
    pub fn check(
        &self,
        width: u32,
        height: u32,
        decoded_bytes: u64,
    ) -> std::result::Result<(), String> {
        if width > self.max_width || height > self.max_height {
            return Err(format!(
                "image declares {width}x{height} pixels, above the limit of {}x{}",
                self.max_width, self.max_height
            ));
        }
        if decoded_bytes > self.max_alloc {
            return Err(format!(
                "image declares {width}x{height} pixels, {decoded_bytes} bytes decoded, above the limit of {} bytes",
                self.max_alloc
            ));
        }
        Ok(())
    }
}

fn image_format(encoding: Encoding) -> Option<ImageFormat> {
    match encoding {
        Encoding::Png => Some(ImageFormat::Png),
        Encoding::Jpeg => Some(ImageFormat::Jpeg),
        Encoding::Raw => None,
    }
}

/// Reads the header of a PNG or JPEG file (detected by its magic bytes) and
/// returns its encoding and `[height, width, channels]`, after checking the
/// dimensions against `limits`. The pixels are not decoded. Errors are
/// messages for the caller to attach to a file name.
pub fn probe(
    bytes: &[u8],
    limits: &ImageLimits,
) -> std::result::Result<(Encoding, [u32; 3]), String> {
    let encoding = Encoding::sniff(bytes).ok_or("not a PNG or JPEG file (by its first bytes)")?;
    let format = image_format(encoding).expect("sniff gives png or jpeg");
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Dimensions are checked by hand below, for a message that says them.
    reader.limits(limits.image_limits());
    let decoder = reader
        .into_decoder()
        .map_err(|e| format!("unreadable {encoding} header: {e}"))?;
    let (width, height) = decoder.dimensions();
    limits.check(width, height, decoder.total_bytes())?;
    if width == 0 || height == 0 {
        return Err(format!("image declares {width}x{height} pixels"));
    }
    let channels = u32::from(decoder.color_type().channel_count());
    Ok((encoding, [height, width, channels]))
}

/// Decodes `record` fully with the `image` crate under `limits` and checks
/// that the result has the record's stored shape. Raw records need no
/// decoding: their length was checked against the shape when the shard was
/// opened. Errors name the record's shard file and index only through
/// [`Dataset::verify`](crate::shard::Dataset::verify), which wraps them.
pub fn check_decodes(record: &Record<'_>, limits: &ImageLimits) -> Result<()> {
    let [h, w, c] = record.shape;
    let Some(format) = image_format(record.encoding) else {
        let need = u64::from(h) * u64::from(w) * u64::from(c);
        if need != record.bytes.len() as u64 {
            return Err(Error::Decode(format!(
                "raw record holds {} bytes but its shape {:?} needs {need}",
                record.bytes.len(),
                record.shape
            )));
        }
        return Ok(());
    };
    if Encoding::sniff(record.bytes) != Some(record.encoding) {
        return Err(Error::Decode(format!(
            "payload is not a {} file (by its first bytes)",
            record.encoding
        )));
    }
    let mut reader = ImageReader::with_format(Cursor::new(record.bytes), format);
    // Dimensions are checked by hand right after the header is read (for a
    // message that says them), before any pixel buffer exists.
    reader.limits(limits.image_limits());
    let decoder = reader
        .into_decoder()
        .map_err(|e| Error::Decode(format!("unreadable {} header: {e}", record.encoding)))?;
    let (dw, dh) = decoder.dimensions();
    limits
        .check(dw, dh, decoder.total_bytes())
        .map_err(Error::Decode)?;
    let channels = u32::from(decoder.color_type().channel_count());
    if [dh, dw, channels] != record.shape {
        return Err(Error::Decode(format!(
            "image is {dh}x{dw}x{channels} (h x w x c) but the shard says {h}x{w}x{c}"
        )));
    }
    image::DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::Decode(format!("{} does not decode: {e}", record.encoding)))?;
    Ok(())
}

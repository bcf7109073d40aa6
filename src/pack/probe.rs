//! Image headers and decode checks, with limits: JPEG through the loader's
//! own decoder (libjpeg-turbo, [`crate::decode`]), so that what packs and
//! verifies is what the loader decodes (a CMYK, 12-bit or lossless JPEG is
//! refused at pack time, not at training time); PNG through the `image`
//! crate, as the loader does.
//!
//! [`probe`] reads only the header (for the shape, at pack time);
//! [`check_decodes`] decodes a whole record (for `inspect --verify`). Both
//! refuse images larger than [`ImageLimits`] before any pixel buffer is
//! allocated.

use std::io::Cursor;

use image::{ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::decode::{self, DecodeLimits};
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

    /// The loader decoder's limits: these dimensions and allocation, for a
    /// header already checked by [`ImageLimits::check`].
    pub(crate) fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_width: self.max_width,
            max_height: self.max_height,
            max_alloc: self.max_alloc,
        }
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

/// A JPEG's `[height, width, channels]` from its header, any size (the
/// caller checks it against [`ImageLimits`], for a message that says them).
fn jpeg_header(bytes: &[u8]) -> std::result::Result<[u32; 3], String> {
    let any = DecodeLimits {
        max_width: u32::MAX,
        max_height: u32::MAX,
        max_alloc: u64::MAX,
    };
    decode::probe_bytes(bytes, Encoding::Jpeg, &any)
        .map_err(|e| format!("unreadable jpeg header: {e}"))
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
    if encoding == Encoding::Jpeg {
        let [h, w, c] = jpeg_header(bytes)?;
        limits.check(w, h, u64::from(h) * u64::from(w) * u64::from(c))?;
        return Ok((encoding, [h, w, c]));
    }
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
    if record.encoding == Encoding::Jpeg {
        let c_out = if c == 1 { 1 } else { 3 };
        let [dh, dw, dc] = jpeg_header(record.bytes).map_err(Error::Decode)?;
        limits
            .check(dw, dh, u64::from(dh) * u64::from(dw) * u64::from(dc))
            .map_err(Error::Decode)?;
        decode::decode_bytes(
            record.bytes,
            Encoding::Jpeg,
            record.shape,
            c_out,
            &limits.decode_limits(),
        )
        .map_err(|e| Error::Decode(format!("jpeg does not decode: {e}")))?;
        return Ok(());
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

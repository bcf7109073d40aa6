//! Records to pixels: JPEG through libjpeg-turbo (whole, a
//! region, or DCT-scaled), PNG through the `image` crate, both with limits;
//! raw pixels borrowed without a copy; grey ↔ RGB conversion.
//!
//! [`decode_region`] decodes only the part of a JPEG that an augmentation
//! reads (see [`region`]).
//!
//! Every image is untrusted: its header is read and checked against
//! [`DecodeLimits`] and against the shape the record declares *before* any
//! pixel buffer is allocated, so an image that declares 100000 × 100000
//! pixels is a clear error, not an allocation.
//!
//! Pixels come out as HWC `u8` with 1 (grey) or 3 (RGB) channels:
//! - 16-bit PNG samples are reduced to 8 bits as `(v + 128) / 257` (as `image` does);
//! - an alpha channel is dropped (not composited);
//! - grey → RGB replicates the value;
//! - RGB → grey is ITU-R BT.601 luma, `L = 0.299·R + 0.587·G + 0.114·B`,
//!   computed exactly as PIL's `convert("L")` does (so as torchvision's
//!   datasets see it): `(19595·R + 38470·G + 7471·B + 32768) >> 16`. (`image`
//!   itself is no reference here: 0.25 converts with BT.709 luminance
//!   weights in floating point, and the result depends on its version.)
//!
//! [`decode_into`] writes into a caller-owned `Vec<u8>` that can be reused
//! from record to record; conversions happen in place in that buffer, so a
//! decode thread allocates nothing once its buffer has grown.

mod convert;
mod pixels;
pub mod region;
pub mod restart;
mod turbo;

use std::io::Cursor;

use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::{ColorType, ImageDecoder};

use crate::{Error, Result};

pub use crate::shard::Encoding;
use crate::shard::Record;
pub use region::{
    decode_bytes_region, decode_bytes_region_into, decode_region, DecodeScale, RegionDecode,
};
pub use restart::{cuts_at_every_mcu, with_restart_markers};

use convert::convert_in_place;
pub use convert::luma;
pub use pixels::{ImageView, Pixels};

/// Bounds on what a decoder may accept and allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width, in pixels.
    pub max_width: u32,
    /// Largest accepted height, in pixels.
    pub max_height: u32,
    /// Largest pixel buffer a decode may allocate, in bytes.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    /// 16384 × 16384 pixels and 512 MiB per image.
    fn default() -> Self {
        DecodeLimits {
            max_width: 16_384,
            max_height: 16_384,
            max_alloc: 512 << 20,
        }
    }
}

impl DecodeLimits {
    fn check_dimensions(&self, height: u32, width: u32) -> Result<()> {
        if width > self.max_width || height > self.max_height {
            return Err(Error::Decode(format!(
                "image declares {height}x{width} pixels (height x width), over the limit of {}x{}",
                self.max_height, self.max_width
            )));
        }
        Ok(())
    }

    fn check_alloc(&self, bytes: u64) -> Result<()> {
        if bytes > self.max_alloc {
            return Err(Error::Decode(format!(
                "image needs {bytes} bytes of pixels, over the limit of {} bytes",
                self.max_alloc
            )));
        }
        Ok(())
    }

    fn to_image(self) -> image::Limits {
        let mut l = image::Limits::no_limits();
        l.max_image_width = Some(self.max_width);
        l.max_image_height = Some(self.max_height);
        l.max_alloc = Some(self.max_alloc);
        l
    }
}

/// Guesses the encoding of a file from its first bytes (PNG or JPEG
/// signature); `None` for anything else.
pub fn sniff(bytes: &[u8]) -> Option<Encoding> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Encoding::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Encoding::Jpeg)
    } else {
        None
    }
}

/// Reads only the header of a PNG or JPEG: `[height, width, channels]`,
/// where `channels` counts colour channels (1 grey, 3 RGB; alpha excluded).
/// Dimensions are checked against `limits`. Raw payloads have no header.
pub fn probe_bytes(bytes: &[u8], encoding: Encoding, limits: &DecodeLimits) -> Result<[u32; 3]> {
    let header = match encoding {
        Encoding::Raw => {
            return Err(Error::Decode(
                "a raw payload has no header to probe".to_string(),
            ))
        }
        Encoding::Png => Header::of(&png_decoder(bytes, limits)?)?,
        Encoding::Jpeg => Header::of_jpeg(&turbo::header(bytes, limits)?),
    };
    Ok([header.height, header.width, header.color_channels])
}

/// Decodes one shard record to `channels` (1 or 3) channels: raw records
/// whose channels match are borrowed from the shard (no copy). Errors name
/// what is wrong with the payload; the caller adds the shard and record.
pub fn decode<'a>(record: &Record<'a>, channels: u32, limits: &DecodeLimits) -> Result<Pixels<'a>> {
    decode_bytes(
        record.bytes,
        record.encoding,
        record.shape,
        channels,
        limits,
    )
}

/// Decodes one payload to `channels` (1 or 3) channels, checking that the
/// image is `shape = [height, width, channels]` as the record declares.
///
/// Raw payloads whose declared channels equal `channels` are borrowed (no
/// copy); everything else is decoded or converted into a new buffer (see
/// [`decode_into`] to reuse one).
pub fn decode_bytes<'a>(
    bytes: &'a [u8],
    encoding: Encoding,
    shape: [u32; 3],
    channels: u32,
    limits: &DecodeLimits,
) -> Result<Pixels<'a>> {
    if encoding == Encoding::Raw && shape[2] == channels {
        return Ok(Pixels::Borrowed(raw_view(bytes, shape, channels, limits)?));
    }
    let mut data = Vec::new();
    let v = decode_into(bytes, encoding, shape, channels, limits, &mut data)?;
    let (height, width, channels) = (v.height, v.width, v.channels);
    Ok(Pixels::Owned {
        height,
        width,
        channels,
        data,
    })
}

/// Like [`decode_bytes`], decoding into `buf` (resized as needed, its
/// allocation never shrunk) and returning a view of the pixels: of `bytes` itself for a
/// raw payload with matching channels, else of `buf`.
///
/// The declared `shape` is `[height, width, channels]`; for PNG and JPEG the
/// channels may count the alpha channel or not (it is dropped either way).
pub fn decode_into<'a>(
    bytes: &'a [u8],
    encoding: Encoding,
    shape: [u32; 3],
    channels: u32,
    limits: &DecodeLimits,
    buf: &'a mut Vec<u8>,
) -> Result<ImageView<'a>> {
    check_channels(channels)?;
    let [height, width, declared] = shape;
    let (header, decoder) = match encoding {
        Encoding::Raw => {
            let v = raw_view(bytes, shape, declared, limits)?;
            if declared == channels {
                return Ok(v);
            }
            let header = Header {
                height,
                width,
                color_channels: declared,
                samples: declared,
                bytes_per_sample: 1,
            };
            (header, Source::Raw(v.data))
        }
        Encoding::Png => {
            let d = png_decoder(bytes, limits)?;
            (Header::of(&d)?, Source::Png(d))
        }
        Encoding::Jpeg => return region::jpeg_whole_into(bytes, shape, channels, limits, buf),
    };
    header.check_declared(shape)?;
    let native = header.bytes()?;
    let wanted = pixel_bytes(height, width, channels)?;
    size_buffer(buf, native, wanted, limits)?;
    let native = native as usize;
    match decoder {
        Source::Raw(data) => buf[..native].copy_from_slice(data),
        Source::Png(d) => d
            .read_image(&mut buf[..native])
            .map_err(|e| Error::Decode(format!("png: {e}")))?,
    }
    convert_in_place(buf, &header, channels);
    buf.truncate(wanted as usize);
    Ok(ImageView {
        height,
        width,
        channels,
        data: buf,
    })
}

// One per decode call, on the stack: boxing the decoders would allocate.
#[allow(clippy::large_enum_variant)]
enum Source<'a> {
    Raw(&'a [u8]),
    Png(PngDecoder<Cursor<&'a [u8]>>),
}

/// What the header says about the pixels the decoder will produce.
struct Header {
    height: u32,
    width: u32,
    /// 1 (grey) or 3 (RGB).
    color_channels: u32,
    /// Samples per pixel, alpha included.
    samples: u32,
    /// 1 or 2 (16-bit, native-endian after `read_image`).
    bytes_per_sample: u32,
}

impl Header {
    /// 8-bit grey or RGB, as libjpeg-turbo decodes it.
    fn of_jpeg(h: &turbo::JpegHeader) -> Header {
        Header {
            height: h.height,
            width: h.width,
            color_channels: h.color_channels,
            samples: h.color_channels,
            bytes_per_sample: 1,
        }
    }

    /// Checks the image against the record's declared `[height, width,
    /// channels]` (channels may count alpha or not).
    fn check_declared(&self, [height, width, declared]: [u32; 3]) -> Result<()> {
        if self.height != height
            || self.width != width
            || (declared != self.color_channels && declared != self.samples)
        {
            return Err(Error::Decode(format!(
                "image is {}x{}x{} (height x width x channels) but the record declares {height}x{width}x{declared}",
                self.height, self.width, self.color_channels
            )));
        }
        Ok(())
    }

    fn of(d: &impl ImageDecoder) -> Result<Header> {
        let (width, height) = d.dimensions();
        let (color_channels, samples, bytes_per_sample) = match d.color_type() {
            ColorType::L8 => (1, 1, 1),
            ColorType::La8 => (1, 2, 1),
            ColorType::Rgb8 => (3, 3, 1),
            ColorType::Rgba8 => (3, 4, 1),
            ColorType::L16 => (1, 1, 2),
            ColorType::La16 => (1, 2, 2),
            ColorType::Rgb16 => (3, 3, 2),
            ColorType::Rgba16 => (3, 4, 2),
            other => return Err(Error::Decode(format!("unsupported colour type {other:?}"))),
        };
        Ok(Header {
            height,
            width,
            color_channels,
            samples,
            bytes_per_sample,
        })
    }

    fn bytes(&self) -> Result<u64> {
        pixel_bytes(self.height, self.width, self.samples)?
            .checked_mul(self.bytes_per_sample as u64)
            .ok_or_else(|| Error::Decode("image size overflows".to_string()))
    }
}

/// Sizes `buf` to `max(native, wanted)` bytes (the decoder's samples, and
/// the converted output, which share the buffer), after checking that size
/// against `limits`. Decoders overwrite every byte they are given, so a
/// buffer that is already long enough is not zeroed, and its allocation is
/// never shrunk.
fn size_buffer(buf: &mut Vec<u8>, native: u64, wanted: u64, limits: &DecodeLimits) -> Result<()> {
    limits.check_alloc(native.max(wanted))?;
    let len = usize::try_from(native.max(wanted))
        .map_err(|_| Error::Decode("image too large for this machine".to_string()))?;
    if buf.len() < len {
        buf.resize(len, 0);
    } else {
        buf.truncate(len);
    }
    Ok(())
}

fn pixel_bytes(height: u32, width: u32, channels: u32) -> Result<u64> {
    (height as u64)
        .checked_mul(width as u64)
        .and_then(|n| n.checked_mul(channels as u64))
        .ok_or_else(|| Error::Decode("image size overflows".to_string()))
}

fn check_channels(channels: u32) -> Result<()> {
    if channels != 1 && channels != 3 {
        return Err(Error::invalid(
            "channels",
            format!("{channels} (expected 1 or 3)"),
        ));
    }
    Ok(())
}

fn raw_view<'a>(
    bytes: &'a [u8],
    shape: [u32; 3],
    channels: u32,
    limits: &DecodeLimits,
) -> Result<ImageView<'a>> {
    check_channels(channels)?;
    let [height, width, declared] = shape;
    if declared != 1 && declared != 3 {
        return Err(Error::Decode(format!(
            "raw record declares {declared} channels (expected 1 or 3)"
        )));
    }
    limits.check_dimensions(height, width)?;
    let need = pixel_bytes(height, width, declared)?;
    if bytes.len() as u64 != need {
        return Err(Error::Decode(format!(
            "raw record has {} bytes but its shape {height}x{width}x{declared} needs {need}",
            bytes.len()
        )));
    }
    Ok(ImageView {
        height,
        width,
        channels: declared,
        data: bytes,
    })
}

fn png_decoder<'a>(bytes: &'a [u8], limits: &DecodeLimits) -> Result<PngDecoder<Cursor<&'a [u8]>>> {
    // `with_limits` checks the dimensions from IHDR before anything is
    // allocated, and bounds the png crate's own buffers by `max_alloc`.
    PngDecoder::with_limits(Cursor::new(bytes), limits.to_image())
        .map_err(|e| Error::Decode(format!("png: {e}")))
}

/// The JPEG decoder metaug used before libjpeg-turbo (the `image` crate's,
/// zune-jpeg): `bytes` to HWC `u8` RGB pixels. Kept for the benchmarks'
/// comparison of the two decoders; not used by the loader.
#[doc(hidden)]
pub fn decode_jpeg_image_rs(bytes: &[u8], limits: &DecodeLimits) -> Result<Vec<u8>> {
    let d = jpeg_decoder(bytes, limits)?;
    let header = Header::of(&d)?;
    let native = header.bytes()?;
    limits.check_alloc(native.max(pixel_bytes(header.height, header.width, 3)?))?;
    let mut buf = vec![0u8; native.max(pixel_bytes(header.height, header.width, 3)?) as usize];
    d.read_image(&mut buf[..native as usize])
        .map_err(|e| Error::Decode(format!("jpeg: {e}")))?;
    convert_in_place(&mut buf, &header, 3);
    buf.truncate(pixel_bytes(header.height, header.width, 3)? as usize);
    Ok(buf)
}

fn jpeg_decoder<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<JpegDecoder<Cursor<&'a [u8]>>> {
    let mut d =
        JpegDecoder::new(Cursor::new(bytes)).map_err(|e| Error::Decode(format!("jpeg: {e}")))?;
    let (width, height) = d.dimensions();
    limits.check_dimensions(height, width)?;
    d.set_limits(limits.to_image())
        .map_err(|e| Error::Decode(format!("jpeg: {e}")))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_is_borrowed_when_channels_match() {
        let data: Vec<u8> = (0..12).collect();
        let p = decode_bytes(&data, Encoding::Raw, [2, 2, 3], 3, &DecodeLimits::default()).unwrap();
        assert!(p.is_borrowed());
        assert_eq!(p.view().data.as_ptr(), data.as_ptr());
        let g = decode_bytes(&data, Encoding::Raw, [2, 2, 3], 1, &DecodeLimits::default()).unwrap();
        assert!(!g.is_borrowed());
        assert_eq!(
            g.view().data,
            &[luma(0, 1, 2), luma(3, 4, 5), luma(6, 7, 8), luma(9, 10, 11)]
        );
        let rgb = decode_bytes(
            &data[..4],
            Encoding::Raw,
            [2, 2, 1],
            3,
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(rgb.view().data, &[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
    }

    #[test]
    fn raw_length_and_shape_are_checked() {
        let l = DecodeLimits::default();
        let data = [0u8; 12];
        assert!(decode_bytes(&data, Encoding::Raw, [2, 2, 1], 1, &l).is_err());
        assert!(decode_bytes(&data, Encoding::Raw, [2, 3, 2], 1, &l).is_err());
        assert!(decode_bytes(&data, Encoding::Raw, [u32::MAX, u32::MAX, 3], 3, &l).is_err());
        assert!(decode_bytes(&data, Encoding::Raw, [2, 2, 3], 2, &l).is_err());
    }
}

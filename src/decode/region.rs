//! Decoding only the pixels an augmentation reads.
//!
//! A sample's geometry (crop, rotation, resize) is drawn before its record
//! is decoded, so its inverse affine map, and with it the source rectangle
//! its bilinear taps can read ([`footprint`]), is known in advance. For a
//! JPEG, [`decode_region`] asks libjpeg-turbo for that rectangle only:
//!
//! - **exact** (the default, [`RegionDecode::default`]): the rectangle is
//!   widened by a few pixels of context on every side where chroma is
//!   subsampled (so that upsampling at the region's edges sees the same
//!   neighbours as in a full decode; none for 4:4:4 and greyscale, whose
//!   8×8 blocks decode independently), then its left edge down to a whole
//!   iMCU column (TurboJPEG's cropping unit). Progressive JPEGs are decoded
//!   whole: libjpeg-turbo smooths their blocks across neighbours when
//!   coefficients are missing (found by the fuzzer). The pixels read are
//!   then bit for bit those of the full decode, and so is the sample
//!   (tested on every photo of `shared/data/photos-jpeg`: 4:4:4, 4:2:0,
//!   4:2:2, 4:4:0 and greyscale). What is saved:
//!   the IDCT, upsampling and colour conversion of every iMCU outside the
//!   region, and all decoding below it (rows above are entropy-decoded,
//!   then skipped). A JPEG with a restart marker after every MCU (packed
//!   with `--restart-markers`) is cut instead: only the region's MCUs,
//!   widened to whole MCUs, are read at all ([`super::restart`]), with the
//!   same bits.
//! - **scaled** ([`DecodeScale::Auto`], opt-in, not exact): the image is
//!   decoded at the largest scale `1/2^k` (k ≤ 3) at which the crop still
//!   has at least the output's resolution along both axes, by
//!   libjpeg-turbo's reduced-size IDCT (the DCT domain: 1/2 keeps 4×4 of
//!   each 8×8 block's coefficients). The map is scaled to match (see
//!   [`SourceWindow`]). The pixels differ from a full decode's by the
//!   reduced IDCT's filtering; BENCHMARKS.md gives the mean and max
//!   difference on the photos.
//!
//! PNG and raw records are decoded whole, as by [`decode`](super::decode)
//! (a raw record is borrowed in place).

use super::{check_channels, convert_in_place, decode_bytes, decode_into, pixel_bytes};
use super::{restart, turbo};
use super::{DecodeLimits, Header, ImageView, Pixels};
use crate::ops::{footprint, Geometry, Rect, Size, SourceWindow};
use crate::shard::{Encoding, Record};
use crate::{Error, Result};

/// Whether JPEGs may be decoded at a reduced scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DecodeScale {
    /// Full resolution: samples are bit for bit those of a full decode.
    #[default]
    Full,
    /// The largest `1/2^k` scale (k ≤ 3) at which the crop keeps at least
    /// the output's resolution along both axes (DCT-domain scaling; not bit
    /// exact, see the [module docs](self)).
    Auto,
}

impl DecodeScale {
    /// Parses `full` or `auto`.
    pub fn parse(s: &str) -> Result<DecodeScale> {
        match s {
            "full" | "1" => Ok(DecodeScale::Full),
            "auto" => Ok(DecodeScale::Auto),
            other => Err(Error::invalid(
                "decode scale",
                format!("{other:?} (expected full or auto)"),
            )),
        }
    }
}

/// How much of each JPEG the loader decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionDecode {
    /// Decode only the region the sample's map reads (exact); `false`
    /// decodes the whole image.
    pub crop: bool,
    /// Decode scale.
    pub scale: DecodeScale,
}

impl Default for RegionDecode {
    /// Region decode at full resolution: exact, and the fastest exact mode.
    fn default() -> Self {
        RegionDecode {
            crop: true,
            scale: DecodeScale::Full,
        }
    }
}

impl RegionDecode {
    /// Whole images at full resolution (what the loader did before region
    /// decoding, with the same decoder).
    pub const WHOLE: RegionDecode = RegionDecode {
        crop: false,
        scale: DecodeScale::Full,
    };
}

/// Decodes the part of `record` that a sample with `geometry`, resized to
/// `out`, reads (see the [module docs](self)), as `channels` (1 or 3)
/// channels: the pixels and where they sit in the source image.
pub fn decode_region<'a>(
    record: &Record<'a>,
    channels: u32,
    limits: &DecodeLimits,
    geometry: &Geometry,
    out: Size,
    mode: RegionDecode,
) -> Result<(Pixels<'a>, SourceWindow)> {
    decode_bytes_region(
        record.bytes,
        record.encoding,
        record.shape,
        channels,
        limits,
        geometry,
        out,
        mode,
    )
}

/// [`decode_region`] of a payload that declares `shape = [height, width,
/// channels]`.
#[allow(clippy::too_many_arguments)]
pub fn decode_bytes_region<'a>(
    bytes: &'a [u8],
    encoding: Encoding,
    shape: [u32; 3],
    channels: u32,
    limits: &DecodeLimits,
    geometry: &Geometry,
    out: Size,
    mode: RegionDecode,
) -> Result<(Pixels<'a>, SourceWindow)> {
    if encoding != Encoding::Jpeg || mode == RegionDecode::WHOLE {
        let p = decode_bytes(bytes, encoding, shape, channels, limits)?;
        let full = p.view().size();
        return Ok((p, SourceWindow::whole(full)));
    }
    let mut data = Vec::new();
    let (size, window) = jpeg_into(bytes, shape, channels, limits, &mut data, |h| {
        plan(h, geometry, out, mode)
    })?;
    let pixels = Pixels::Owned {
        height: size.height,
        width: size.width,
        channels,
        data,
    };
    Ok((pixels, window))
}

/// [`decode_bytes_region`] into `buf` (grown as needed, never shrunk, not
/// zeroed when long enough), returning a view of the pixels: of `bytes`
/// itself for a raw payload with matching channels, else of `buf`. A decode
/// thread that reuses its buffer allocates nothing once it has grown.
#[allow(clippy::too_many_arguments)]
pub fn decode_bytes_region_into<'a>(
    bytes: &'a [u8],
    encoding: Encoding,
    shape: [u32; 3],
    channels: u32,
    limits: &DecodeLimits,
    geometry: &Geometry,
    out: Size,
    mode: RegionDecode,
    buf: &'a mut Vec<u8>,
) -> Result<(ImageView<'a>, SourceWindow)> {
    if encoding != Encoding::Jpeg || mode == RegionDecode::WHOLE {
        let v = decode_into(bytes, encoding, shape, channels, limits, buf)?;
        let full = v.size();
        return Ok((v, SourceWindow::whole(full)));
    }
    let (size, window) = jpeg_into(bytes, shape, channels, limits, buf, |h| {
        plan(h, geometry, out, mode)
    })?;
    Ok((view_of(buf, size, channels), window))
}

/// The whole JPEG `bytes` into `buf` as `channels` channels (what
/// [`decode_into`] does for a JPEG).
pub(super) fn jpeg_whole_into<'a>(
    bytes: &[u8],
    shape: [u32; 3],
    channels: u32,
    limits: &DecodeLimits,
    buf: &'a mut Vec<u8>,
) -> Result<ImageView<'a>> {
    let (size, _) = jpeg_into(bytes, shape, channels, limits, buf, |_| (0, None))?;
    Ok(view_of(buf, size, channels))
}

/// The decoded pixels at the start of `buf`.
fn view_of(buf: &[u8], size: Size, channels: u32) -> ImageView<'_> {
    ImageView {
        height: size.height,
        width: size.width,
        channels,
        data: buf,
    }
}

/// Decodes a JPEG into `data` as `channels` channels, at the scale and in
/// the crop that `plan` picks from its header, on one decompressor (the
/// header is parsed once here, and once more inside TurboJPEG's
/// decompress). Returns the decoded size and the window it is; `data` holds
/// exactly its pixels.
fn jpeg_into(
    bytes: &[u8],
    shape: [u32; 3],
    channels: u32,
    limits: &DecodeLimits,
    data: &mut Vec<u8>,
    plan: impl FnOnce(&turbo::JpegHeader) -> (u8, Option<Rect>),
) -> Result<(Size, SourceWindow)> {
    check_channels(channels)?;
    let (decoded, window) = turbo::open(bytes, limits, |o| {
        let header = &o.header;
        let h = Header::of_jpeg(header);
        h.check_declared(shape)?;
        let (shrink, crop) = plan(header);
        let window = SourceWindow {
            full: Size::new(header.height, header.width),
            shrink,
            origin: [0, 0],
        };
        let cut = match crop {
            Some(c) => restart::decode_region(o, limits, shrink, c, channels, data)?,
            None => None,
        };
        let rect = match cut {
            Some(rect) => rect,
            None => {
                o.decode_sized(shrink, crop, channels, limits, data)?;
                crop.unwrap_or(Rect::whole(window.frame()))
            }
        };
        let decoded = Header {
            height: rect.height,
            width: rect.width,
            ..h
        };
        let origin = [rect.x, rect.y];
        Ok((decoded, SourceWindow { origin, ..window }))
    })?;
    convert_in_place(data, &decoded, channels);
    data.truncate(pixel_bytes(decoded.height, decoded.width, channels)? as usize);
    Ok((Size::new(decoded.height, decoded.width), window))
}

/// What to decode of a JPEG with `header` for a sample with `geometry`
/// resized to `out`: the scale `1/2^shrink`, and the crop of the scaled
/// frame (`None`: the whole frame).
fn plan(
    header: &turbo::JpegHeader,
    geometry: &Geometry,
    out: Size,
    mode: RegionDecode,
) -> (u8, Option<Rect>) {
    let full = Size::new(header.height, header.width);
    let shrink = match mode.scale {
        DecodeScale::Full => 0,
        DecodeScale::Auto => auto_shrink(geometry, full, out),
    };
    let scaled = SourceWindow {
        full,
        shrink,
        origin: [0, 0],
    };
    let frame = scaled.frame();
    // Progressive images are decoded whole in exact mode: libjpeg-turbo
    // smooths the blocks of a progressive image whose coefficients are
    // incomplete using neighbouring blocks, a reach no fixed context covers
    // (a fuzzed 4:2:2 image differed with a whole iMCU of it).
    let exact_whole = header.progressive && shrink == 0;
    if !mode.crop || exact_whole {
        return (shrink, None);
    }
    let m = scaled.matrix(geometry, out);
    let wanted = footprint(&m, out, frame).unwrap_or(Rect {
        x: 0,
        y: 0,
        width: 1,
        height: 1,
    });
    let crop = header
        .imcu(shrink)
        .map(|imcu| {
            let context = if header.progressive {
                imcu // scaled (not exact) only
            } else if header.subsampled() {
                (SUBSAMPLED_CONTEXT, SUBSAMPLED_CONTEXT)
            } else {
                (0, 0)
            };
            decode_rect(wanted, imcu.0, context, frame)
        })
        .filter(|r| *r != Rect::whole(frame));
    (shrink, crop)
}

/// Pixels of context on each side of the wanted rectangle when chroma is
/// subsampled: fancy upsampling reads one chroma sample (two pixels at
/// 2:1) beyond the pixel it makes; twice that, to spare.
const SUBSAMPLED_CONTEXT: u32 = 4;

/// The rectangle to ask TurboJPEG for so that `wanted` comes out exact:
/// `context` more pixels (x, y) on every side, its left edge down to a
/// multiple of the iMCU width `iw`, clamped to the `frame`.
fn decode_rect(wanted: Rect, iw: u32, (cx, cy): (u32, u32), frame: Size) -> Rect {
    let x0 = wanted.x.saturating_sub(cx) / iw * iw;
    let y0 = wanted.y.saturating_sub(cy);
    let x1 = (wanted.x as u64 + wanted.width as u64 + cx as u64).min(frame.width as u64) as u32;
    let y1 = (wanted.y as u64 + wanted.height as u64 + cy as u64).min(frame.height as u64) as u32;
    Rect {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    }
}

/// The largest `k ≤ 3` such that the crop, scaled by `1/2^k`, still spans
/// at least the output's size along both axes (0 when even full resolution
/// is below it).
fn auto_shrink(geometry: &Geometry, full: Size, out: Size) -> u8 {
    let (cw, ch) = geometry.crop_size();
    let (crop_w, crop_h) = (cw * full.width as f64, ch * full.height as f64);
    (1..=3u8)
        .rev()
        .find(|&k| {
            let s = (1u32 << k) as f64;
            crop_w / s >= out.width as f64 && crop_h / s >= out.height as f64
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rect_aligns_and_pads() {
        let frame = Size::new(375, 500);
        let r = decode_rect(
            Rect {
                x: 37,
                y: 50,
                width: 100,
                height: 80,
            },
            16,
            (16, 16),
            frame,
        );
        assert_eq!(r.x, 16);
        assert_eq!(r.y, 34);
        assert_eq!(r.x + r.width, 153);
        assert_eq!(r.y + r.height, 146);
        let tight = decode_rect(
            Rect {
                x: 37,
                y: 50,
                width: 100,
                height: 80,
            },
            8,
            (0, 0),
            frame,
        );
        assert_eq!(
            (tight.x, tight.y, tight.width, tight.height),
            (32, 50, 105, 80)
        );
        let edge = decode_rect(
            Rect {
                x: 490,
                y: 370,
                width: 10,
                height: 5,
            },
            8,
            (8, 8),
            frame,
        );
        assert_eq!((edge.x, edge.y), (480, 362));
        assert_eq!((edge.x + edge.width, edge.y + edge.height), (500, 375));
    }

    #[test]
    fn auto_shrink_keeps_the_output_resolution() {
        let whole = Geometry::IDENTITY;
        let out = Size::new(224, 224);
        assert_eq!(auto_shrink(&whole, Size::new(375, 500), out), 0);
        assert_eq!(auto_shrink(&whole, Size::new(448, 448), out), 1);
        assert_eq!(auto_shrink(&whole, Size::new(1000, 2000), out), 2);
        assert_eq!(auto_shrink(&whole, Size::new(4000, 4000), out), 3);
        let small = Geometry {
            area: 0.25,
            ..Geometry::IDENTITY
        };
        assert_eq!(auto_shrink(&small, Size::new(1000, 2000), out), 1);
    }
}

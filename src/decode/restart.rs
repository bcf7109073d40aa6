//! Restart markers: a region of a JPEG decoded without entropy-decoding the
//! rest of it.
//!
//! Region decode ([`super::region`]) asks libjpeg-turbo for a crop, which
//! saves the IDCT, upsampling and colour conversion outside it and every row
//! below it; but a baseline scan can only be read from its start, so every
//! block above and beside the region is still Huffman-decoded, and that is
//! most of a decode's time. A JPEG with a **restart marker after every MCU**
//! can be cut instead: each MCU's entropy-coded bytes stand alone (the DC
//! predictors restart at each marker), so the JPEG made of the header, with
//! the frame resized to the region, and the intervals of the region's MCUs,
//! renumbered, decodes to the region's pixels and reads nothing else (a
//! *virtual JPEG*). The decoded pixels are the full decode's bit for bit
//! wherever the region's context margin covers the upsampling (the same
//! margin the crop path keeps, widened to whole MCUs).
//!
//! [`with_restart_markers`] makes such a file from any JPEG without loss
//! (a lossless transform: every DCT coefficient is kept, the pixels are
//! checked to be the same), for `metaug pack folder --restart-markers`.
//! Files are 6–8 % larger; the virtual JPEG pays for regions below about
//! 60 % of the image and costs about 8 % on whole images (BENCHMARKS.md,
//! `cargo bench --bench restart_markers`). Most of that cost is not the
//! markers: libjpeg-turbo turns its fast Huffman decoder off for any file
//! with a restart interval, of whatever length, so an interval of one MCU
//! (the finest cuts) costs only about 3 % more than one per MCU row. The
//! loader takes this path by itself for any baseline JPEG whose header asks
//! for a restart interval of one MCU; everything else, and any file whose
//! markers are not what the header promises, takes the crop path, which
//! reports damage as before.

use std::cell::RefCell;

use super::turbo::{self, Opened};
use super::{decode_bytes, DecodeLimits};
use crate::ops::Rect;
use crate::shard::Encoding;
use crate::Result;

/// What the markers before the scan of a JPEG with a restart marker after
/// every MCU say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScanLayout {
    /// Offset of the frame header's height field (the width follows).
    size_at: usize,
    /// End of the SOS segment, where the entropy-coded data starts.
    scan_at: usize,
    /// The MCU's width and height in pixels.
    mcu: (u32, u32),
    /// MCUs per row.
    cols: u32,
}

/// A rectangle of whole MCUs: columns `c0..c1`, rows `r0..r1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct McuRect {
    c0: u32,
    c1: u32,
    r0: u32,
    r1: u32,
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]) as u32)
}

/// Reads the markers of `b` up to its first scan. `Some` only for a
/// sequential Huffman-coded frame (SOF0 or SOF1) of `width × height` pixels
/// with a restart interval of one MCU and one scan holding every component;
/// anything else, malformed input included, is `None`.
fn scan_layout(b: &[u8], width: u32, height: u32) -> Option<ScanLayout> {
    if b.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    let (mut frame, mut interval) = (None, None);
    loop {
        while *b.get(i)? == 0xFF && *b.get(i + 1)? == 0xFF {
            i += 1; // fill bytes
        }
        if *b.get(i)? != 0xFF {
            return None;
        }
        let marker = *b.get(i + 1)?;
        let len = be16(b, i + 2)? as usize;
        let body = b.get(i + 4..(i + 2).checked_add(len)?)?;
        match marker {
            0xC0 | 0xC1 if frame.is_none() && body.len() >= 6 => {
                let comps = body[5] as usize;
                let factors = body.get(6..6 + 3 * comps)?.chunks(3).map(|c| c[1]);
                let h = factors.clone().map(|f| f >> 4).max()? as u32;
                let v = factors.map(|f| f & 15).max()? as u32;
                let mcu = if comps == 1 { (8, 8) } else { (8 * h, 8 * v) };
                let size = (be16(body, 1)?, be16(body, 3)?);
                if mcu.0 == 0 || mcu.1 == 0 || size != (height, width) {
                    return None;
                }
                frame = Some((i + 5, comps, mcu));
            }
            // Any other frame type (progressive, lossless, arithmetic), a
            // second frame, or a standalone marker where segments go.
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
            0x01 | 0xD0..=0xD9 => return None,
            0xDD => interval = Some(be16(body, 0)?),
            0xDA => {
                let (size_at, comps, mcu) = frame?;
                if interval != Some(1) || *body.first()? as usize != comps {
                    return None;
                }
                return Some(ScanLayout {
                    size_at,
                    scan_at: i + 2 + len,
                    mcu,
                    cols: width.div_ceil(mcu.0),
                });
            }
            _ => {}
        }
        i += 2 + len;
    }
}

/// Writes into `out` the virtual JPEG of `rect`'s MCUs of `b` (laid out as
/// `l`, `width × height` pixels) and returns its size in pixels, or `None`
/// when the scan's markers are not one restart marker after every MCU, in
/// sequence, up to the region's last MCU. The entropy-coded data is read
/// only up to that MCU; `out` never holds more than `b`.
fn region_jpeg(
    b: &[u8],
    l: &ScanLayout,
    (width, height): (u32, u32),
    rect: McuRect,
    out: &mut Vec<u8>,
) -> Option<(u32, u32)> {
    let vw = (rect.c1 * l.mcu.0).min(width) - rect.c0 * l.mcu.0;
    let vh = (rect.r1 * l.mcu.1).min(height) - rect.r0 * l.mcu.1;
    out.clear();
    out.extend_from_slice(b.get(..l.scan_at)?);
    out[l.size_at..l.size_at + 2].copy_from_slice(&(vh as u16).to_be_bytes());
    out[l.size_at + 2..l.size_at + 4].copy_from_slice(&(vw as u16).to_be_bytes());
    let last = (rect.r1 as u64 - 1) * l.cols as u64 + rect.c1 as u64 - 1;
    let (mut mcu, mut begin, mut j, mut kept) = (0u64, l.scan_at, l.scan_at, 0u32);
    loop {
        let k = j + memchr::memchr(0xFF, b.get(j..)?)?;
        let end_of_scan = match *b.get(k + 1)? {
            0x00 => {
                j = k + 2; // a stuffed 0xFF data byte
                continue;
            }
            0xFF => {
                j = k + 1; // a fill byte before a marker
                continue;
            }
            m @ 0xD0..=0xD7 if (m - 0xD0) as u64 == mcu % 8 => false,
            0xD9 => true,
            _ => return None,
        };
        let (row, col) = (mcu / l.cols as u64, mcu % l.cols as u64);
        let inside = (rect.r0 as u64..rect.r1 as u64).contains(&row)
            && (rect.c0 as u64..rect.c1 as u64).contains(&col);
        if inside {
            if kept > 0 {
                out.extend_from_slice(&[0xFF, 0xD0 + ((kept - 1) % 8) as u8]);
            }
            out.extend_from_slice(&b[begin..k]);
            kept += 1;
        }
        if mcu == last {
            break;
        }
        if end_of_scan {
            return None; // fewer MCUs than the frame has
        }
        mcu += 1;
        j = k + 2;
        begin = j;
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    Some((vw, vh))
}

thread_local! {
    /// This thread's virtual JPEG, reused from image to image.
    static VIRTUAL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Decodes the region `crop` (of the frame scaled by `1/2^shrink`, as the
/// crop path would ask TurboJPEG for it) of the opened JPEG through its
/// virtual JPEG, widened to whole MCUs, into `data` (sized for `channels`
/// output channels within `limits`). Returns the rectangle of the scaled
/// frame decoded, or `None` when the JPEG has no restart marker after every
/// MCU (then nothing was decoded).
pub(super) fn decode_region(
    o: &Opened<'_>,
    limits: &DecodeLimits,
    shrink: u8,
    crop: Rect,
    channels: u32,
    data: &mut Vec<u8>,
) -> Result<Option<Rect>> {
    let h = &o.header;
    let Some(l) = scan_layout(o.bytes(), h.width, h.height) else {
        return Ok(None);
    };
    let (mw, mh) = l.mcu;
    let full = |v: u32, edge: u32| ((v as u64) << shrink).min(edge as u64) as u32;
    let rect = McuRect {
        c0: full(crop.x, h.width) / mw,
        r0: full(crop.y, h.height) / mh,
        c1: full(crop.x + crop.width, h.width).div_ceil(mw),
        r1: full(crop.y + crop.height, h.height).div_ceil(mh),
    };
    if rect.c0 >= rect.c1 || rect.r0 >= rect.r1 {
        return Ok(None);
    }
    VIRTUAL.with(|cell| {
        let Ok(mut v) = cell.try_borrow_mut() else {
            return Ok(None);
        };
        let Some((vw, vh)) = region_jpeg(o.bytes(), &l, (h.width, h.height), rect, &mut v) else {
            return Ok(None);
        };
        let region = o.reopen(&v, limits)?;
        debug_assert_eq!((region.header.width, region.header.height), (vw, vh));
        let (dh, dw) = region.decode_sized(shrink, None, channels, limits, data)?;
        Ok(Some(Rect {
            x: (rect.c0 * mw) >> shrink,
            y: (rect.r0 * mh) >> shrink,
            width: dw,
            height: dh,
        }))
    })
}

/// Whether the loader decodes regions of `jpeg` through virtual JPEGs: a
/// sequential JPEG with a restart marker after every MCU (as
/// [`with_restart_markers`] writes).
pub fn cuts_at_every_mcu(jpeg: &[u8], limits: &DecodeLimits) -> bool {
    turbo::header(jpeg, limits)
        .ok()
        .and_then(|h| scan_layout(jpeg, h.width, h.height))
        .is_some()
}

/// `jpeg` rewritten without loss with a restart marker after every MCU (see
/// the [module docs](self)), or `None` when that does not keep its pixels
/// (checked: both are decoded whole and compared) or the transform fails
/// on it. Metadata (EXIF, ICC) is kept; the entropy coding becomes
/// sequential with optimised Huffman tables, so a progressive JPEG comes
/// out baseline. An error only when `jpeg` itself does not decode.
pub fn with_restart_markers(jpeg: &[u8], limits: &DecodeLimits) -> Result<Option<Vec<u8>>> {
    let shape = super::probe_bytes(jpeg, Encoding::Jpeg, limits)?;
    let before = decode_bytes(jpeg, Encoding::Jpeg, shape, 3, limits)?;
    let Ok(rewritten) = turbo::with_restart_markers(jpeg, limits) else {
        return Ok(None);
    };
    let same = decode_bytes(&rewritten, Encoding::Jpeg, shape, 3, limits)
        .is_ok_and(|after| after.view().data == before.view().data);
    Ok(same.then_some(rewritten))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4:2:0 colour JPEG of `h × w` with a smooth pattern, and the same
    /// with a restart marker after every MCU.
    fn pair(h: u32, w: u32) -> (Vec<u8>, Vec<u8>) {
        let mut img = image::RgbImage::new(w, h);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 7 + y) as u8, (y * 5) as u8, (x ^ y) as u8]);
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .unwrap();
        let rst = with_restart_markers(&jpeg, &DecodeLimits::default())
            .unwrap()
            .expect("rewritten");
        (jpeg, rst)
    }

    #[test]
    fn the_layout_is_read_only_from_a_file_cut_at_every_mcu() {
        let (plain, rst) = pair(40, 70);
        let limits = DecodeLimits::default();
        assert!(!cuts_at_every_mcu(&plain, &limits));
        assert!(cuts_at_every_mcu(&rst, &limits));
        let l = scan_layout(&rst, 70, 40).unwrap();
        assert_eq!(l.cols, 70u32.div_ceil(l.mcu.0));
        // a frame size other than the header's, or a cut file, is refused
        assert_eq!(scan_layout(&rst, 71, 40), None);
        for end in 0..l.scan_at {
            assert_eq!(scan_layout(&rst[..end], 70, 40), None, "prefix {end}");
        }
    }

    #[test]
    fn a_virtual_jpeg_holds_the_region_and_no_more_than_the_file() {
        let (_, rst) = pair(48, 80);
        let l = scan_layout(&rst, 80, 48).unwrap();
        let mut out = Vec::new();
        let whole = McuRect {
            c0: 0,
            c1: l.cols,
            r0: 0,
            r1: 48u32.div_ceil(l.mcu.1),
        };
        assert_eq!(
            region_jpeg(&rst, &l, (80, 48), whole, &mut out),
            Some((80, 48))
        );
        assert_eq!(out, rst, "the whole image's virtual JPEG is the file");
        let one = McuRect {
            c0: 1,
            c1: 2,
            r0: 1,
            r1: 2,
        };
        let size = region_jpeg(&rst, &l, (80, 48), one, &mut out);
        assert_eq!(size, Some(l.mcu));
        assert!(out.len() < rst.len());
        // a scan that ends early, or a marker out of sequence, is refused
        let eoi = rst.len() - 2;
        let mut cut = rst[..eoi - 40].to_vec();
        cut.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(region_jpeg(&cut, &l, (80, 48), whole, &mut out), None);
        let mut swapped = rst.clone();
        let first = memchr::memmem::find(&swapped[l.scan_at..], &[0xFF, 0xD0]).unwrap();
        swapped[l.scan_at + first + 1] = 0xD3;
        assert_eq!(region_jpeg(&swapped, &l, (80, 48), whole, &mut out), None);
    }

    /// Damaged files cut at every MCU (bytes changed at random in the
    /// markers and the scan): region decode returns an error or a window
    /// inside the frame, never a panic.
    #[test]
    fn damaged_files_cut_at_every_mcu_are_errors_or_windows() {
        use super::super::{decode_bytes_region, RegionDecode};
        use crate::ops::{Geometry, Size};
        let (_, rst) = pair(64, 96);
        let limits = DecodeLimits::default();
        let geometry = Geometry {
            area: 0.3,
            aspect: 1.0,
            center: [0.2, -0.3],
            angle: 0.2,
        };
        let region = |b: &[u8]| -> Result<(Size, crate::ops::SourceWindow)> {
            let (p, w) = decode_bytes_region(
                b,
                Encoding::Jpeg,
                [64, 96, 3],
                3,
                &limits,
                &geometry,
                Size::new(16, 16),
                RegionDecode::default(),
            )?;
            let v = p.view();
            Ok((Size::new(v.height, v.width), w))
        };
        let (size, window) = region(&rst).unwrap();
        assert!(size.width < 96, "a region, not the whole image");
        assert_eq!(window.full, Size::new(64, 96));
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..3000 {
            let mut b = rst.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % b.len() as u64) as usize;
                b[at] = next() as u8;
            }
            match region(&b) {
                Ok((size, w)) => {
                    assert!(w.origin[0] + size.width <= 96 && w.origin[1] + size.height <= 64);
                    ok += 1;
                }
                Err(_) => failed += 1,
            }
        }
        assert!(ok > 0 && failed > 0, "{ok} decoded, {failed} refused");
        // A file cut below the region decodes as the crop path decodes the
        // original cut there: what the region needs is present (the
        // record's CRC-32C is what catches damage outside it).
        let (plain, _) = pair(64, 96);
        let cut = region(&rst[..rst.len() * 3 / 4]).map(|r| r.1.origin);
        let cut_plain = region(&plain[..plain.len() * 3 / 4]).map(|r| r.1.origin);
        assert_eq!(cut.ok(), cut_plain.ok());
    }
}

//! JPEG through libjpeg-turbo's TurboJPEG 3 API (`turbojpeg-sys`, built from
//! its vendored libjpeg-turbo 3.1 with SIMD): whole images, a cropped region
//! of one, and DCT-domain scaling by 1/2, 1/4 or 1/8.
//!
//! Why libjpeg-turbo: it is the decoder the field standardises on (PIL,
//! torchvision, DALI's CPU fallback and OpenCV all use it, so metaug's pixels
//! are now theirs bit for bit), it is maintained, and its TurboJPEG 3 API
//! decodes a cropping region (`tj3SetCroppingRegion`: whole iMCU columns,
//! rows skipped without the IDCT) and scales in the DCT domain
//! (`tj3SetScalingFactor`). Errors come back as return codes (no `setjmp`
//! across Rust frames), which is why this wraps TurboJPEG rather than the
//! libjpeg API.
//!
//! One handle per thread, reused from image to image. Every call first
//! parses the header and checks it against [`DecodeLimits`] before a pixel
//! buffer is sized; the library's own allocations are bounded by
//! `TJPARAM_MAXPIXELS` and `TJPARAM_MAXMEMORY` (progressive coefficient
//! buffers), and progressive scans by `TJPARAM_SCANLIMIT`. Warnings (a
//! truncated or corrupt entropy stream, which libjpeg would pad with grey)
//! are errors (`TJPARAM_STOPONWARNING`): a damaged record is reported, not
//! silently trained on.
//!
//! CMYK and YCCK JPEGs (Adobe's, e.g. 22 files of ImageNet's training set)
//! come out as RGB the way Pillow converts them: libjpeg's CMYK samples
//! (Adobe-inverted, so `255 − C`), then `R = (255 − C)·(255 − K) / 255`
//! rounded (Pillow's `MULDIV255`, the same for G and B).

use std::cell::RefCell;
use std::ffi::CStr;
use std::ptr::NonNull;

use turbojpeg_sys as tj;

use super::DecodeLimits;
use crate::ops::Rect;
use crate::{Error, Result};

/// Largest number of progressive scans accepted (libjpeg-turbo's own tools
/// suggest 500 as a guard against scan-bomb images).
const SCAN_LIMIT: i32 = 500;

/// iMCU width and height per `TJSAMP_*` (444, 422, 420, GRAY, 440, 411,
/// 441): turbojpeg.h's `tjMCUWidth` / `tjMCUHeight`, which are header
/// constants, not exported symbols.
const IMCU: [(u32, u32); 7] = [(8, 8), (16, 8), (16, 16), (8, 8), (8, 16), (32, 8), (8, 32)];

/// The JPEG header: what the frame declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JpegHeader {
    pub height: u32,
    pub width: u32,
    /// 1 (greyscale) or 3 (YCbCr, RGB, or CMYK / YCCK converted to RGB).
    pub color_channels: u32,
    /// CMYK or YCCK: decoded as 4 samples, then converted to RGB.
    cmyk: bool,
    /// Chrominance subsampling (`TJSAMP_*`), `None` when TurboJPEG does not
    /// know it (then no cropping is possible).
    subsamp: Option<usize>,
    /// Progressive entropy coding (several scans).
    pub progressive: bool,
}

impl JpegHeader {
    /// The iMCU's width and height in pixels at scale `1 / 2^shrink`
    /// (cropping regions start on a multiple of this width).
    pub fn imcu(&self, shrink: u8) -> Option<(u32, u32)> {
        let (w, h) = IMCU[self.subsamp?];
        Some((scaled(w, shrink), scaled(h, shrink)))
    }

    /// Samples per pixel the decoder writes before any conversion (4 for
    /// CMYK): buffers for [`Opened::decode`] hold this many per pixel.
    pub fn native_channels(&self) -> u32 {
        if self.cmyk {
            4
        } else {
            self.color_channels
        }
    }

    /// Whether chroma is subsampled (then upsampling reads neighbouring
    /// chroma samples); `true` when unknown.
    pub fn subsampled(&self) -> bool {
        !matches!(self.subsamp, Some(0) | Some(3)) // 4:4:4, greyscale
    }

    /// The image's size at scale `1 / 2^shrink`: TurboJPEG's `TJSCALED`,
    /// `ceil(dim / 2^shrink)`.
    pub fn scaled_size(&self, shrink: u8) -> (u32, u32) {
        (scaled(self.height, shrink), scaled(self.width, shrink))
    }
}

/// `ceil(dim / 2^shrink)`.
pub(crate) fn scaled(dim: u32, shrink: u8) -> u32 {
    let d = 1u64 << shrink;
    (dim as u64).div_ceil(d) as u32
}

/// A TurboJPEG instance: a decompressor, or a transformer.
struct Handle(NonNull<libc::c_void>);

impl Handle {
    fn new() -> Result<Handle> {
        Handle::init(tj::TJINIT_TJINIT_DECOMPRESS, "decompressor")
    }

    fn init(kind: tj::TJINIT, what: &str) -> Result<Handle> {
        // SAFETY: tj3Init has no preconditions; it returns NULL on failure.
        let raw = unsafe { tj::tj3Init(kind as libc::c_int) };
        NonNull::new(raw)
            .map(Handle)
            .ok_or_else(|| Error::Decode(format!("jpeg: libjpeg-turbo could not start a {what}")))
    }

    fn ptr(&self) -> tj::tjhandle {
        self.0.as_ptr()
    }

    /// The handle's last error, as an [`Error::Decode`].
    fn error(&self) -> Error {
        // SAFETY: the handle is live; tj3GetErrorStr returns a pointer to a
        // NUL-terminated string owned by the handle (or a static one), valid
        // until the next call on it, and copied out at once.
        let msg = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.ptr())) };
        Error::Decode(format!("jpeg: {}", msg.to_string_lossy().trim()))
    }

    fn check(&self, rc: libc::c_int) -> Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    fn set(&self, param: tj::TJPARAM, value: i32) -> Result<()> {
        // SAFETY: live handle; tj3Set validates the parameter and value.
        self.check(unsafe { tj::tj3Set(self.ptr(), param as libc::c_int, value) })
    }

    /// The library's own bounds from `limits`: pixels, memory in MiB (at
    /// least 1; 0 would mean no limit) and progressive scans; and warnings
    /// (a truncated or corrupt entropy stream) as errors.
    fn bound(&self, limits: &DecodeLimits) -> Result<()> {
        let max_pixels = (limits.max_width as u64 * limits.max_height as u64).min(i32::MAX as u64);
        self.set(tj::TJPARAM_TJPARAM_MAXPIXELS, max_pixels as i32)?;
        let mib = (limits.max_alloc >> 20).clamp(1, i32::MAX as u64);
        self.set(tj::TJPARAM_TJPARAM_MAXMEMORY, mib as i32)?;
        self.set(tj::TJPARAM_TJPARAM_SCANLIMIT, SCAN_LIMIT)?;
        self.set(tj::TJPARAM_TJPARAM_STOPONWARNING, 1)
    }

    fn get(&self, param: tj::TJPARAM) -> i32 {
        // SAFETY: live handle; tj3Get returns -1 for an unknown parameter.
        unsafe { tj::tj3Get(self.ptr(), param as libc::c_int) }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.ptr()) }
    }
}

thread_local! {
    /// This thread's decompressor, made on first use.
    static HANDLE: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's decompressor.
fn with_handle<T>(f: impl FnOnce(&Handle) -> Result<T>) -> Result<T> {
    HANDLE.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| Error::Decode("jpeg: decompressor re-entered on one thread".into()))?;
        if slot.is_none() {
            *slot = Some(Handle::new()?);
        }
        let result = f(slot.as_ref().expect("set above"));
        if result.is_err() {
            // A failed call can leave the decompressor inside a header or a
            // scan (the next image then fails with "two SOI markers"): the
            // next call gets a fresh instance.
            *slot = None;
        }
        result
    })
}

/// Parses the header of `bytes` into `h` and checks it (8-bit lossy JPEG,
/// grey or colour, dimensions within `limits`), setting the limits on `h`.
fn read_header(h: &Handle, bytes: &[u8], limits: &DecodeLimits) -> Result<JpegHeader> {
    // SAFETY: live handle; `bytes` is a valid slice of `bytes.len()` bytes,
    // only read.
    h.check(unsafe {
        tj::tj3DecompressHeader(h.ptr(), bytes.as_ptr(), bytes.len() as tj::size_t)
    })?;
    let width = h.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
    let height = h.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
    if width <= 0 || height <= 0 {
        return Err(Error::Decode(format!(
            "jpeg: header declares {height}x{width} pixels"
        )));
    }
    let (width, height) = (width as u32, height as u32);
    limits.check_dimensions(height, width)?;
    if h.get(tj::TJPARAM_TJPARAM_LOSSLESS) == 1 {
        return Err(Error::Decode("jpeg: lossless JPEG is not supported".into()));
    }
    let precision = h.get(tj::TJPARAM_TJPARAM_PRECISION);
    if precision != 8 {
        return Err(Error::Decode(format!(
            "jpeg: {precision}-bit samples are not supported (8-bit only)"
        )));
    }
    let (color_channels, cmyk) = match h.get(tj::TJPARAM_TJPARAM_COLORSPACE) as u32 {
        tj::TJCS_TJCS_GRAY => (1, false),
        tj::TJCS_TJCS_YCbCr | tj::TJCS_TJCS_RGB => (3, false),
        tj::TJCS_TJCS_CMYK | tj::TJCS_TJCS_YCCK => (3, true),
        other => return Err(Error::Decode(format!("jpeg: unknown colour space {other}"))),
    };
    let subsamp = match h.get(tj::TJPARAM_TJPARAM_SUBSAMP) {
        s @ 0..=6 => Some(s as usize),
        _ => None,
    };
    h.bound(limits)?;
    Ok(JpegHeader {
        height,
        width,
        color_channels,
        cmyk,
        subsamp,
        progressive: h.get(tj::TJPARAM_TJPARAM_PROGRESSIVE) == 1,
    })
}

/// Reads and checks the header of a JPEG.
pub(crate) fn header(bytes: &[u8], limits: &DecodeLimits) -> Result<JpegHeader> {
    with_handle(|h| read_header(h, bytes, limits))
}

/// A JPEG whose header this thread's decompressor has just read and
/// checked (see [`open`]).
pub(crate) struct Opened<'a> {
    h: &'a Handle,
    bytes: &'a [u8],
    /// What the header declares.
    pub header: JpegHeader,
}

/// Reads and checks the header of `bytes` (as [`header`]), then runs `f`
/// with it, on this thread's decompressor: a decode from `f` does not parse
/// the header again.
pub(crate) fn open<T>(
    bytes: &[u8],
    limits: &DecodeLimits,
    f: impl FnOnce(&Opened<'_>) -> Result<T>,
) -> Result<T> {
    with_handle(|h| {
        let header = read_header(h, bytes, limits)?;
        f(&Opened { h, bytes, header })
    })
}

impl<'a> Opened<'a> {
    /// The JPEG's bytes.
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Reads and checks the header of another JPEG, `other`, on the same
    /// decompressor (for a JPEG derived from this one, such as a region's
    /// [virtual JPEG](super::restart)).
    pub(crate) fn reopen<'b>(&self, other: &'b [u8], limits: &DecodeLimits) -> Result<Opened<'b>>
    where
        'a: 'b,
    {
        let header = read_header(self.h, other, limits)?;
        Ok(Opened {
            h: self.h,
            bytes: other,
            header,
        })
    }

    /// [`decode`](Self::decode) into `data`, first sized (within `limits`)
    /// for the region's pixels at the decoder's native samples and at
    /// `channels` output channels, whichever is larger.
    pub(crate) fn decode_sized(
        &self,
        shrink: u8,
        crop: Option<Rect>,
        channels: u32,
        limits: &DecodeLimits,
        data: &mut Vec<u8>,
    ) -> Result<(u32, u32)> {
        let (height, width) = match crop {
            Some(r) => (r.height, r.width),
            None => self.header.scaled_size(shrink),
        };
        let native = super::pixel_bytes(height, width, self.header.native_channels())?;
        let wanted = super::pixel_bytes(height, width, channels)?;
        super::size_buffer(data, native, wanted, limits)?;
        self.decode(shrink, crop, data)
    }

    /// Decodes the JPEG (once per [`open`]) at scale `1 / 2^shrink` (0 to 3),
    /// the region `crop` of the scaled image (whole when `None`), into `out`
    /// as HWC `u8` with the header's colour channels (1 or 3). `crop.x` must
    /// be a multiple of the scaled iMCU width and the crop inside the scaled
    /// image (checked: an error, not UB).
    /// `out` must hold at least the region's pixels at
    /// [`native_channels`](JpegHeader::native_channels) bytes each (checked);
    /// the decoded pixels, `color_channels` bytes each, start it.
    pub(crate) fn decode(
        &self,
        shrink: u8,
        crop: Option<Rect>,
        out: &mut [u8],
    ) -> Result<(u32, u32)> {
        let (header, bytes, h) = (&self.header, self.bytes, self.h);
        if shrink > 3 {
            return Err(Error::invalid(
                "jpeg scale",
                format!("1/{} (at most 1/8)", 1u32 << shrink),
            ));
        }
        let (sh, sw) = header.scaled_size(shrink);
        let region = crop.unwrap_or(Rect {
            x: 0,
            y: 0,
            width: sw,
            height: sh,
        });
        let inside = region.width > 0
            && region.height > 0
            && region.x as u64 + region.width as u64 <= sw as u64
            && region.y as u64 + region.height as u64 <= sh as u64;
        if !inside {
            return Err(Error::Decode(format!(
                "jpeg: region {}x{} at ({}, {}) is not inside the {sh}x{sw} image",
                region.height, region.width, region.x, region.y
            )));
        }
        let c = header.native_channels();
        let len = region.height as u64 * region.width as u64 * c as u64;
        if (out.len() as u64) < len {
            return Err(Error::Decode(format!(
                "jpeg: a buffer of {} bytes for {len} bytes of pixels",
                out.len()
            )));
        }
        let format = match c {
            1 => tj::TJPF_TJPF_GRAY,
            3 => tj::TJPF_TJPF_RGB,
            _ => tj::TJPF_TJPF_CMYK,
        };
        let factor = tj::tjscalingfactor {
            num: 1,
            denom: 1 << shrink,
        };
        // SAFETY: live handle; the factor is one of 1/1, 1/2, 1/4, 1/8,
        // which libjpeg-turbo supports (it validates anyway).
        h.check(unsafe { tj::tj3SetScalingFactor(h.ptr(), factor) })?;
        let tjr = match crop {
            Some(r) => tj::tjregion {
                x: r.x as i32,
                y: r.y as i32,
                w: r.width as i32,
                h: r.height as i32,
            },
            // TJUNCROPPED: {0, 0, 0, 0}
            None => tj::tjregion {
                x: 0,
                y: 0,
                w: 0,
                h: 0,
            },
        };
        // SAFETY: live handle whose header was just read (required before
        // a cropping region); TurboJPEG validates the region's alignment
        // and bounds against the scaled image.
        h.check(unsafe { tj::tj3SetCroppingRegion(h.ptr(), tjr) })?;
        let pitch = (region.width * c) as i32;
        // SAFETY: `out` holds `region.height` rows of `pitch` bytes, which is
        // exactly what TurboJPEG writes for this scale and cropping region
        // (the region was checked inside the scaled image above, and the
        // library writes `destinationHeight` rows of `pitch` bytes); `bytes`
        // is only read.
        let rc = unsafe {
            tj::tj3Decompress8(
                h.ptr(),
                bytes.as_ptr(),
                bytes.len() as tj::size_t,
                out.as_mut_ptr(),
                pitch,
                format as libc::c_int,
            )
        };
        h.check(rc)?;
        if header.cmyk {
            cmyk_to_rgb(&mut out[..len as usize]);
        }
        Ok((region.height, region.width))
    }
}

/// `jpeg` losslessly transformed (every DCT coefficient kept, so the pixels
/// are the same) into a baseline JPEG with a restart marker after every MCU
/// and optimised Huffman tables, its other markers (EXIF, ICC) copied:
/// what [`super::restart`] needs to decode a region without
/// entropy-decoding the rest. The image must be within `limits` (checked
/// from its header before the transform allocates).
pub(crate) fn with_restart_markers(jpeg: &[u8], limits: &DecodeLimits) -> Result<Vec<u8>> {
    header(jpeg, limits)?;
    let t = Handle::init(tj::TJINIT_TJINIT_TRANSFORM, "transformer")?;
    t.bound(limits)?;
    t.set(tj::TJPARAM_TJPARAM_RESTARTBLOCKS, 1)?;
    t.set(tj::TJPARAM_TJPARAM_OPTIMIZE, 1)?;
    // SAFETY: tjtransform is a plain C struct; all zeros is "the whole
    // image, no operation, no options, no callback".
    let mut xf: tj::tjtransform = unsafe { std::mem::zeroed() };
    xf.op = tj::TJXOP_TJXOP_NONE as libc::c_int;
    let mut dst: *mut u8 = std::ptr::null_mut();
    let mut len: tj::size_t = 0;
    // SAFETY: live transformer; `jpeg` is only read; one transform, with
    // one destination pointer and size, which TurboJPEG allocates because
    // `dst` is NULL (TJPARAM_NOREALLOC is off).
    let rc = unsafe {
        tj::tj3Transform(
            t.ptr(),
            jpeg.as_ptr(),
            jpeg.len() as tj::size_t,
            1,
            &mut dst,
            &mut len,
            &xf,
        )
    };
    let result = t.check(rc).map(|()| {
        // SAFETY: on success `dst` points at `len` bytes that TurboJPEG
        // wrote; they are copied out before `dst` is freed below.
        unsafe { std::slice::from_raw_parts(dst, len as usize) }.to_vec()
    });
    if !dst.is_null() {
        // SAFETY: `dst` came from TurboJPEG's allocator (tj3Transform may
        // leave one behind on failure too) and is not used after this.
        unsafe { tj::tj3Free(dst.cast()) };
    }
    result
}

/// libjpeg's (Adobe-inverted) CMYK pixels at the start of `buf` to RGB at
/// its start, in place: `R = MULDIV255(C', K')` with `C' = 255 − C` as
/// libjpeg returns it, Pillow's conversion bit for bit.
fn cmyk_to_rgb(buf: &mut [u8]) {
    let muldiv255 = |a: u8, b: u8| {
        let t = a as u32 * b as u32 + 128;
        ((t + (t >> 8)) >> 8) as u8
    };
    // pixel p's 3 bytes land at 3p, before its 4 bytes at 4p are read
    for p in 0..buf.len() / 4 {
        let [c, m, y, k] = [buf[4 * p], buf[4 * p + 1], buf[4 * p + 2], buf[4 * p + 3]];
        buf[3 * p] = muldiv255(c, k);
        buf[3 * p + 1] = muldiv255(m, k);
        buf[3 * p + 2] = muldiv255(y, k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_is_ceiling() {
        assert_eq!(scaled(500, 0), 500);
        assert_eq!(scaled(375, 1), 188);
        assert_eq!(scaled(375, 3), 47);
        assert_eq!(scaled(1, 3), 1);
    }

    #[test]
    fn an_error_does_not_poison_the_next_image() {
        let l = DecodeLimits::default();
        // a valid 16x8 baseline JPEG made by libjpeg-turbo itself
        let good = tiny_jpeg();
        let mut bad = good.clone();
        bad.truncate(bad.len() / 2);
        for _ in 0..3 {
            let h = header(&good, &l).unwrap();
            let mut out = vec![0u8; (h.width * h.height * 3) as usize];
            assert!(open(&bad, &l, |o| o.decode(0, None, &mut out)).is_err());
            assert!(header(&bad[..20], &l).is_err());
            open(&good, &l, |o| o.decode(0, None, &mut out)).unwrap();
        }
    }

    #[test]
    fn cmyk_decodes_to_rgb_and_packs() {
        let cmyk = encode(tj::TJPF_TJPF_CMYK, 4);
        let h = header(&cmyk, &DecodeLimits::default()).unwrap();
        assert_eq!((h.color_channels, h.native_channels()), (3, 4));
        let mut out = vec![0u8; 16 * 8 * 4];
        let l = DecodeLimits::default();
        open(&cmyk, &l, |o| o.decode(0, None, &mut out)).unwrap();
        let probed = crate::pack::probe(&cmyk, &crate::pack::ImageLimits::default()).unwrap();
        assert_eq!(probed.1, [8, 16, 3]);
    }

    #[test]
    fn cmyk_to_rgb_is_pillows_muldiv255() {
        let mut buf = vec![255, 0, 128, 255, 10, 20, 30, 0, 200, 100, 50, 128];
        cmyk_to_rgb(&mut buf);
        let want = |a: u32, b: u32| ((a * b) as f64 / 255.0).round() as u8;
        assert_eq!(
            &buf[..9],
            &[
                255,
                0,
                128,
                0,
                0,
                0,
                want(200, 128),
                want(100, 128),
                want(50, 128)
            ]
        );
    }

    /// A 16x8 RGB JPEG encoded with TurboJPEG.
    fn tiny_jpeg() -> Vec<u8> {
        encode(tj::TJPF_TJPF_RGB, 3)
    }

    /// A 16x8 JPEG of pixel format `format` (`bytes` per pixel).
    fn encode(format: tj::TJPF, bytes: usize) -> Vec<u8> {
        let pixels: Vec<u8> = (0..16 * 8 * bytes).map(|i| (i * 7 % 251) as u8).collect();
        // SAFETY: a fresh compressor; the source buffer holds 8 rows of
        // 16 RGB pixels; TurboJPEG allocates the output (freed below).
        unsafe {
            let h = tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as libc::c_int);
            assert!(!h.is_null());
            assert_eq!(tj::tj3Set(h, tj::TJPARAM_TJPARAM_QUALITY as i32, 90), 0);
            assert_eq!(
                tj::tj3Set(h, tj::TJPARAM_TJPARAM_SUBSAMP as i32, tj::TJSAMP_TJSAMP_420),
                0
            );
            let mut buf: *mut u8 = std::ptr::null_mut();
            let mut size: tj::size_t = 0;
            let rc = tj::tj3Compress8(
                h,
                pixels.as_ptr(),
                16,
                0,
                8,
                format as libc::c_int,
                &mut buf,
                &mut size,
            );
            assert_eq!(rc, 0);
            let out = std::slice::from_raw_parts(buf, size as usize).to_vec();
            tj::tj3Free(buf as *mut libc::c_void);
            tj::tj3Destroy(h);
            out
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let l = DecodeLimits::default();
        assert!(header(b"not a jpeg", &l).is_err());
        assert!(header(&[0xFF, 0xD8, 0xFF], &l).is_err());
        assert!(header(&[], &l).is_err());
    }
}

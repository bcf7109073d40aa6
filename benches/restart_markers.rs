//! Would restart markers let region decode skip entropy decoding? (issue 20)
//!
//! Region decode (`decode::region`) saves the IDCT, upsampling and colour
//! conversion outside the region, and every row below it, but libjpeg-turbo
//! still Huffman-decodes every block of the rows above and beside it: a
//! baseline scan without restart markers can only be read from its start.
//! The lever left was to add restart markers losslessly at pack time (a
//! lossless transform keeps every DCT coefficient, so the pixels stay the
//! same) and to decode a *virtual JPEG* made of the header, with the frame
//! resized to the region, and only the restart intervals inside the region.
//! This bench measures that lever on the 300 photos before any of it goes
//! into the loader.
//!
//! Each photo is transformed twice by `tj3Transform` (no crop, Huffman
//! tables optimised, metadata dropped): a restart marker after **every
//! MCU** (`TJPARAM_RESTARTBLOCKS = 1`, so any MCU rectangle is a set of
//! intervals) and after **every MCU row** (`TJPARAM_RESTARTROWS = 1`, rows
//! above skipped, columns still cropped by TurboJPEG). Before the clock
//! starts, it checks that both decode to the original's pixels, and that the
//! virtual JPEG of a region decodes to the full decode's pixels inside the
//! region (one MCU of context on each side, as region decode keeps).
//!
//! The region of each photo is a centred rectangle of the given share of its
//! area, widened by one MCU on every side and aligned to MCUs: 80 % is what
//! the loader's exact region decode reads on these photos with the default
//! policy (`metaug bench` prints it), 62 % at scale 1/2 is what
//! `--decode-scale auto` reads, 50 % is a smaller crop. Per region, one
//! group with four functions over all photos, each decoding to RGB:
//!
//! - `whole_original`: the original file, whole (the reference time);
//! - `crop_original`: the original, with TurboJPEG's cropping region (what
//!   region decode does today);
//! - `rows_rst_crop`: the every-row file, a virtual JPEG of the region's MCU
//!   rows, then TurboJPEG's cropping region for the columns;
//! - `mcu_rst_virtual`: the every-MCU file, a virtual JPEG of the region
//!   alone (building it, a copy of its intervals, is inside the clock).
//!
//! `cargo bench --bench restart_markers` (about a minute). The figures are
//! in BENCHMARKS.md, issue 20's section.

mod common;

use std::ffi::CStr;
use std::hint::black_box;
use std::ptr::NonNull;

use criterion::Throughput;
use turbojpeg_sys as tj;

/// A TurboJPEG instance (decompressor or transformer).
struct Handle(NonNull<libc::c_void>);

impl Handle {
    fn new(kind: tj::TJINIT) -> Handle {
        // SAFETY: tj3Init has no preconditions; it returns NULL on failure.
        let raw = unsafe { tj::tj3Init(kind as libc::c_int) };
        Handle(NonNull::new(raw).expect("tj3Init"))
    }

    fn ptr(&self) -> tj::tjhandle {
        self.0.as_ptr()
    }

    /// Panics with the handle's error message unless `rc` is 0.
    fn check(&self, rc: libc::c_int, what: &str) {
        if rc != 0 {
            // SAFETY: live handle; the string is NUL-terminated and copied
            // out before the next call on the handle.
            let msg = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.ptr())) };
            panic!("{what}: {}", msg.to_string_lossy());
        }
    }

    fn set(&self, param: tj::TJPARAM, value: i32) {
        // SAFETY: live handle; tj3Set validates the parameter and value.
        let rc = unsafe { tj::tj3Set(self.ptr(), param as libc::c_int, value) };
        self.check(rc, "tj3Set");
    }

    fn get(&self, param: tj::TJPARAM) -> u32 {
        // SAFETY: live handle; tj3Get returns -1 for an unknown parameter.
        let v = unsafe { tj::tj3Get(self.ptr(), param as libc::c_int) };
        u32::try_from(v).expect("parameter")
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.ptr()) }
    }
}

/// Where restart markers go in a transformed file.
#[derive(Clone, Copy)]
enum Restarts {
    EveryMcu,
    EveryRow,
}

/// `jpeg` losslessly transformed to baseline with optimised Huffman tables
/// and the given restart markers, metadata dropped.
fn with_restarts(t: &Handle, jpeg: &[u8], restarts: Restarts) -> Vec<u8> {
    match restarts {
        Restarts::EveryMcu => t.set(tj::TJPARAM_TJPARAM_RESTARTBLOCKS, 1),
        Restarts::EveryRow => t.set(tj::TJPARAM_TJPARAM_RESTARTROWS, 1),
    }
    t.set(tj::TJPARAM_TJPARAM_OPTIMIZE, 1);
    // SAFETY: tjtransform is a plain C struct; all-zero is "no crop, no
    // operation, no callback".
    let mut xf: tj::tjtransform = unsafe { std::mem::zeroed() };
    xf.op = tj::TJXOP_TJXOP_NONE as libc::c_int;
    xf.options = tj::TJXOPT_COPYNONE as libc::c_int;
    let mut dst: *mut u8 = std::ptr::null_mut();
    let mut len: tj::size_t = 0;
    // SAFETY: live transformer; `jpeg` is only read; one transform, one
    // destination pointer and size, which TurboJPEG allocates (dst is NULL).
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
    t.check(rc, "tj3Transform");
    // SAFETY: on success `dst` points at `len` bytes TurboJPEG allocated;
    // they are copied out, then freed once with tj3Free.
    let out = unsafe { std::slice::from_raw_parts(dst, len as usize).to_vec() };
    // SAFETY: `dst` came from TurboJPEG's allocator and is not used again.
    unsafe { tj::tj3Free(dst.cast()) };
    out
}

/// A transformed file's layout: where its frame size sits and where each
/// restart interval's entropy-coded bytes are.
struct Layout {
    /// Offset of the SOF segment's height field (the width follows).
    size_at: usize,
    height: u32,
    width: u32,
    mcu: (u32, u32),
    /// End of the SOS segment: everything before it is the header.
    header_end: usize,
    /// Each restart interval's bytes, markers excluded, in scan order.
    intervals: Vec<(usize, usize)>,
}

impl Layout {
    fn mcu_cols(&self) -> u32 {
        self.width.div_ceil(self.mcu.0)
    }

    fn mcu_rows(&self) -> u32 {
        self.height.div_ceil(self.mcu.1)
    }
}

/// Reads the markers of a single-scan JPEG made by [`with_restarts`]
/// (trusted input: a malformed file panics).
fn layout(b: &[u8]) -> Layout {
    let be16 = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let mut i = 2;
    let (mut size_at, mut mcu) = (0, (8, 8));
    loop {
        assert_eq!(b[i], 0xFF, "marker at {i}");
        let marker = b[i + 1];
        let body = i + 4;
        if matches!(marker, 0xC0 | 0xC1) {
            size_at = body + 1;
            let comps = b[body + 5] as usize;
            if comps > 1 {
                let factors = (0..comps).map(|c| b[body + 6 + 3 * c + 1]);
                let h = factors.clone().map(|s| s >> 4).max().unwrap_or(1);
                let v = factors.map(|s| s & 15).max().unwrap_or(1);
                mcu = (8 * h as u32, 8 * v as u32);
            }
        }
        assert!(marker != 0xC2, "the transform writes baseline files");
        i += 2 + be16(i + 2) as usize;
        if marker == 0xDA {
            break;
        }
    }
    let header_end = i;
    let (mut intervals, mut start, mut j) = (Vec::new(), i, i);
    loop {
        if b[j] != 0xFF {
            j += 1;
            continue;
        }
        match b[j + 1] {
            0x00 => j += 2,
            0xFF => j += 1,
            0xD0..=0xD7 => {
                intervals.push((start, j));
                j += 2;
                start = j;
            }
            0xD9 => {
                intervals.push((start, j));
                break;
            }
            other => panic!("marker {other:#x} inside the scan"),
        }
    }
    Layout {
        size_at,
        height: be16(size_at) as u32,
        width: be16(size_at + 2) as u32,
        mcu,
        header_end,
        intervals,
    }
}

/// A region in MCUs: columns `c0..c1`, rows `r0..r1`.
#[derive(Clone, Copy)]
struct McuRect {
    c0: u32,
    c1: u32,
    r0: u32,
    r1: u32,
}

impl McuRect {
    /// The centred rectangle of `share` of the image's area, widened by one
    /// MCU on every side (the context region decode keeps) and aligned.
    fn centred(l: &Layout, share: f64) -> McuRect {
        let (w, h) = (l.width as f64, l.height as f64);
        let s = share.sqrt();
        let (x0, y0) = (w * (1.0 - s) / 2.0, h * (1.0 - s) / 2.0);
        let (mw, mh) = (l.mcu.0 as f64, l.mcu.1 as f64);
        McuRect {
            c0: ((x0 / mw) as u32).saturating_sub(1),
            r0: ((y0 / mh) as u32).saturating_sub(1),
            c1: (((x0 + w * s) / mw).ceil() as u32 + 1).min(l.mcu_cols()),
            r1: (((y0 + h * s) / mh).ceil() as u32 + 1).min(l.mcu_rows()),
        }
    }

    /// Its size in pixels (the image's own edge where it reaches it).
    fn pixels(&self, l: &Layout) -> (u32, u32) {
        let w = (self.c1 * l.mcu.0).min(l.width) - self.c0 * l.mcu.0;
        let h = (self.r1 * l.mcu.1).min(l.height) - self.r0 * l.mcu.1;
        (w, h)
    }
}

/// Writes into `out` a JPEG of `jpeg`'s intervals `picked` (in order),
/// with the frame resized to `width × height` and the restart markers
/// renumbered.
fn virtual_jpeg(
    jpeg: &[u8],
    l: &Layout,
    picked: impl Iterator<Item = usize>,
    (width, height): (u32, u32),
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&jpeg[..l.header_end]);
    out[l.size_at..l.size_at + 2].copy_from_slice(&(height as u16).to_be_bytes());
    out[l.size_at + 2..l.size_at + 4].copy_from_slice(&(width as u16).to_be_bytes());
    let mut n = 0u8;
    for (k, i) in picked.enumerate() {
        if k > 0 {
            out.extend_from_slice(&[0xFF, 0xD0 + n]);
            n = (n + 1) & 7;
        }
        let (s, e) = l.intervals[i];
        out.extend_from_slice(&jpeg[s..e]);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
}

/// The virtual JPEG of region `r` of an every-MCU file.
fn region_of_mcu_file(jpeg: &[u8], l: &Layout, r: McuRect, out: &mut Vec<u8>) {
    let cols = l.mcu_cols() as usize;
    let picked =
        (r.r0..r.r1).flat_map(|y| (r.c0..r.c1).map(move |x| y as usize * cols + x as usize));
    virtual_jpeg(jpeg, l, picked, r.pixels(l), out);
}

/// The virtual JPEG of region `r`'s MCU rows (whole width) of an every-row
/// file.
fn rows_of_row_file(jpeg: &[u8], l: &Layout, r: McuRect, out: &mut Vec<u8>) {
    let h = (r.r1 * l.mcu.1).min(l.height) - r.r0 * l.mcu.1;
    virtual_jpeg(jpeg, l, r.r0 as usize..r.r1 as usize, (l.width, h), out);
}

/// Decodes `jpeg` at scale `1/2^shrink` to RGB in `out`, the columns
/// `cols` (pixels at full scale, the left edge on an MCU) or the whole
/// width; returns the decoded width and height.
fn decode(
    d: &Handle,
    jpeg: &[u8],
    shrink: u8,
    cols: Option<(u32, u32)>,
    out: &mut Vec<u8>,
) -> (u32, u32) {
    // SAFETY: live decompressor; `jpeg` is only read.
    let rc = unsafe { tj::tj3DecompressHeader(d.ptr(), jpeg.as_ptr(), jpeg.len() as tj::size_t) };
    d.check(rc, "tj3DecompressHeader");
    let scale = |v: u32| v.div_ceil(1 << shrink);
    let factor = tj::tjscalingfactor {
        num: 1,
        denom: 1 << shrink,
    };
    // SAFETY: live decompressor; 1/1, 1/2, 1/4 and 1/8 are supported.
    d.check(unsafe { tj::tj3SetScalingFactor(d.ptr(), factor) }, "scale");
    let height = scale(d.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT));
    let (x, width) = match cols {
        Some((x0, x1)) => (scale(x0), scale(x1) - scale(x0)),
        None => (0, scale(d.get(tj::TJPARAM_TJPARAM_JPEGWIDTH))),
    };
    let region = tj::tjregion {
        x: x as i32,
        y: 0,
        w: if cols.is_some() { width as i32 } else { 0 },
        h: if cols.is_some() { height as i32 } else { 0 },
    };
    // SAFETY: live decompressor with its header read; TurboJPEG checks the
    // region against the scaled image.
    d.check(unsafe { tj::tj3SetCroppingRegion(d.ptr(), region) }, "crop");
    out.resize((width * height * 3) as usize, 0);
    // SAFETY: `out` holds `height` rows of `width * 3` bytes, what TurboJPEG
    // writes for this scale and region; `jpeg` is only read.
    let rc = unsafe {
        tj::tj3Decompress8(
            d.ptr(),
            jpeg.as_ptr(),
            jpeg.len() as tj::size_t,
            out.as_mut_ptr(),
            (width * 3) as i32,
            tj::TJPF_TJPF_RGB as libc::c_int,
        )
    };
    d.check(rc, "tj3Decompress8");
    (width, height)
}

/// One photo: the original and its two transformed files.
struct Photo {
    original: Vec<u8>,
    every_mcu: Vec<u8>,
    mcu_layout: Layout,
    every_row: Vec<u8>,
    row_layout: Layout,
}

/// Checks, on full-scale decodes, that the transformed files keep the
/// pixels and that a region's virtual JPEG holds the full decode's pixels
/// away from its context margin.
fn check(d: &Handle, p: &Photo, share: f64) {
    let (mut full, mut other) = (Vec::new(), Vec::new());
    let (w, _) = decode(d, &p.original, 0, None, &mut full);
    decode(d, &p.every_mcu, 0, None, &mut other);
    assert!(full == other, "every-MCU restarts changed the pixels");
    decode(d, &p.every_row, 0, None, &mut other);
    assert!(full == other, "every-row restarts changed the pixels");
    let l = &p.mcu_layout;
    let r = McuRect::centred(l, share);
    let mut v = Vec::new();
    region_of_mcu_file(&p.every_mcu, l, r, &mut v);
    let (vw, vh) = decode(d, &v, 0, None, &mut other);
    assert_eq!((vw, vh), r.pixels(l));
    let (mw, mh) = l.mcu;
    let x0 = if r.c0 == 0 { 0 } else { mw };
    let y0 = if r.r0 == 0 { 0 } else { mh };
    let x1 = if r.c1 == l.mcu_cols() { vw } else { vw - mw };
    let y1 = if r.r1 == l.mcu_rows() { vh } else { vh - mh };
    for y in y0..y1 {
        let (gx, gy) = (r.c0 * mw + x0, r.r0 * mh + y);
        let got = &other[((y * vw + x0) * 3) as usize..((y * vw + x1) * 3) as usize];
        let want = &full[((gy * w + gx) * 3) as usize..((gy * w + gx + x1 - x0) * 3) as usize];
        assert!(
            got == want,
            "virtual JPEG row {y} differs from the full decode"
        );
    }
}

fn main() {
    let mut c = common::short(3);
    let dir = common::shared_data().join("photos-jpeg");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("restart_markers: skipped: {} is missing", dir.display());
        return;
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("jpeg"))
        })
        .collect();
    files.sort();
    let t = Handle::new(tj::TJINIT_TJINIT_TRANSFORM);
    let d = Handle::new(tj::TJINIT_TJINIT_DECOMPRESS);
    let photos: Vec<Photo> = files
        .iter()
        .map(|f| {
            let original = std::fs::read(f).expect("read photo");
            let every_mcu = with_restarts(&t, &original, Restarts::EveryMcu);
            let every_row = with_restarts(&t, &original, Restarts::EveryRow);
            Photo {
                mcu_layout: layout(&every_mcu),
                row_layout: layout(&every_row),
                original,
                every_mcu,
                every_row,
            }
        })
        .collect();
    let bytes = |f: fn(&Photo) -> &Vec<u8>| photos.iter().map(|p| f(p).len()).sum::<usize>() as f64;
    let original = bytes(|p| &p.original);
    println!(
        "restart_markers: {} photos; file size against the original: every MCU {:.3}, every row {:.3}",
        photos.len(),
        bytes(|p| &p.every_mcu) / original,
        bytes(|p| &p.every_row) / original,
    );
    for (share, shrink) in [(0.68, 0u8), (0.5, 1), (0.3, 0)] {
        for p in &photos {
            check(&d, p, share);
        }
        let rects: Vec<McuRect> = photos
            .iter()
            .map(|p| McuRect::centred(&p.mcu_layout, share))
            .collect();
        let area: f64 = photos
            .iter()
            .zip(&rects)
            .map(|(p, r)| {
                let (w, h) = r.pixels(&p.mcu_layout);
                (w * h) as f64 / (p.mcu_layout.width * p.mcu_layout.height) as f64
            })
            .sum::<f64>()
            / photos.len() as f64;
        println!(
            "restart_markers/area_{share}_scale_1_{}: regions hold {:.3} of the pixels with their context",
            1 << shrink,
            area
        );
        let mut g = c.benchmark_group(format!(
            "restart_markers/area_{share}_scale_1_{}",
            1 << shrink
        ));
        g.throughput(Throughput::Elements(photos.len() as u64));
        let (mut out, mut v) = (Vec::new(), Vec::new());
        g.bench_function("whole_original", |b| {
            b.iter(|| {
                for p in &photos {
                    black_box(decode(&d, &p.original, shrink, None, &mut out));
                }
            })
        });
        let cols = |p: &Photo, r: &McuRect| {
            let l = &p.mcu_layout;
            (r.c0 * l.mcu.0, (r.c1 * l.mcu.0).min(l.width))
        };
        g.bench_function("crop_original", |b| {
            b.iter(|| {
                for (p, r) in photos.iter().zip(&rects) {
                    // Rows too, as region decode asks: TurboJPEG skips the
                    // rows above (entropy-decoded) and stops below.
                    rows_of_original(&d, p, r, shrink, cols(p, r), &mut out);
                }
            })
        });
        g.bench_function("rows_rst_crop", |b| {
            b.iter(|| {
                for (p, r) in photos.iter().zip(&rects) {
                    rows_of_row_file(&p.every_row, &p.row_layout, *r, &mut v);
                    black_box(decode(&d, &v, shrink, Some(cols(p, r)), &mut out));
                }
            })
        });
        g.bench_function("mcu_rst_virtual", |b| {
            b.iter(|| {
                for (p, r) in photos.iter().zip(&rects) {
                    region_of_mcu_file(&p.every_mcu, &p.mcu_layout, *r, &mut v);
                    black_box(decode(&d, &v, shrink, None, &mut out));
                }
            })
        });
        g.finish();
    }
    c.final_summary();
}

/// The original file's region `r` through TurboJPEG's cropping region
/// (columns `x0..x1` and the region's rows), what region decode does.
fn rows_of_original(
    d: &Handle,
    p: &Photo,
    r: &McuRect,
    shrink: u8,
    (x0, x1): (u32, u32),
    out: &mut Vec<u8>,
) {
    let l = &p.mcu_layout;
    let jpeg = &p.original;
    // SAFETY: live decompressor; `jpeg` is only read.
    let rc = unsafe { tj::tj3DecompressHeader(d.ptr(), jpeg.as_ptr(), jpeg.len() as tj::size_t) };
    d.check(rc, "tj3DecompressHeader");
    let scale = |v: u32| v.div_ceil(1 << shrink);
    let factor = tj::tjscalingfactor {
        num: 1,
        denom: 1 << shrink,
    };
    // SAFETY: live decompressor; 1/2^shrink is a supported factor.
    d.check(unsafe { tj::tj3SetScalingFactor(d.ptr(), factor) }, "scale");
    let (y0, y1) = (r.r0 * l.mcu.1, (r.r1 * l.mcu.1).min(l.height));
    let (x, y) = (scale(x0), scale(y0));
    let (w, h) = (scale(x1) - x, scale(y1) - y);
    let region = tj::tjregion {
        x: x as i32,
        y: y as i32,
        w: w as i32,
        h: h as i32,
    };
    // SAFETY: live decompressor with its header read; TurboJPEG checks the
    // region against the scaled image.
    d.check(unsafe { tj::tj3SetCroppingRegion(d.ptr(), region) }, "crop");
    out.resize((w * h * 3) as usize, 0);
    // SAFETY: `out` holds `h` rows of `w * 3` bytes, what TurboJPEG writes
    // for this region; `jpeg` is only read.
    let rc = unsafe {
        tj::tj3Decompress8(
            d.ptr(),
            jpeg.as_ptr(),
            jpeg.len() as tj::size_t,
            out.as_mut_ptr(),
            (w * 3) as i32,
            tj::TJPF_TJPF_RGB as libc::c_int,
        )
    };
    d.check(rc, "tj3Decompress8");
    black_box(&out);
}

//! `metaug::decode` on real PNG and JPEG files, on synthetic colour types,
//! and on hostile inputs (huge declared sizes, lying shapes, truncation).

mod common;

use std::path::PathBuf;

use image::ImageEncoder;
use metaug::decode::{
    decode_bytes, decode_into, probe_bytes, sniff, DecodeLimits, Encoding, Pixels,
};

fn data(dir: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(dir);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("{} not found: skipped", p.display());
        None
    }
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let Some(d) = data(dir) else { return vec![] };
    let mut v: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// BT.601 luma as PIL computes it (`Image.convert("L")`).
fn pil_luma(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            let l = 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
            let fixed =
                (19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 32768) >> 16;
            assert!((fixed as f64 - l).abs() <= 0.51, "{p:?}");
            fixed as u8
        })
        .collect()
}

/// Decodes `bytes` to 1 and 3 channels and compares with `image`'s own
/// decode and conversion: `to_rgb8` for RGB (16-bit reduction, alpha
/// dropped, grey replicated), `to_luma8` for grey sources, and BT.601 luma
/// of `to_rgb8` for colour sources.
fn check_against_image(bytes: &[u8], enc: Encoding, name: &str) {
    let l = DecodeLimits::default();
    let reference = image::load_from_memory(bytes).unwrap();
    let [h, w, c] = probe_bytes(bytes, enc, &l).unwrap();
    assert_eq!((w, h), (reference.width(), reference.height()), "{name}");
    let color = reference.color();
    assert_eq!(c, if color.has_color() { 3 } else { 1 }, "{name}");
    let declared = [h, w, color.channel_count() as u32];
    let rgb = reference.to_rgb8().into_raw();
    let grey = if color.has_color() {
        pil_luma(&rgb)
    } else {
        reference.to_luma8().into_raw()
    };
    for (channels, want) in [(1, grey), (3, rgb)] {
        for shape in [[h, w, c], declared] {
            let p = decode_bytes(bytes, enc, shape, channels, &l).unwrap();
            let v = p.view();
            assert_eq!((v.height, v.width, v.channels), (h, w, channels), "{name}");
            assert!(
                v.data == want.as_slice(),
                "{name}: {channels} channel(s) differ from image's"
            );
        }
    }
}

#[test]
fn real_pngs_match_image_crate() {
    for p in files("photos-png", "png") {
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(sniff(&bytes), Some(Encoding::Png));
        check_against_image(&bytes, Encoding::Png, &p.display().to_string());
    }
}

/// JPEGs are decoded by libjpeg-turbo, the `image` crate by zune-jpeg: two
/// IDCTs and chroma upsamplers, so the pixels agree closely, not exactly
/// (the Pillow test below checks them bit for bit against libjpeg-turbo).
/// Grey output is exactly PIL's luma of metaug's own RGB output.
#[test]
fn real_jpegs_are_close_to_the_image_crate() {
    let all = files("photos-jpeg", "JPEG");
    let l = DecodeLimits::default();
    let (mut sum, mut n, mut max) = (0u64, 0u64, 0u8);
    for p in &all {
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(sniff(&bytes), Some(Encoding::Jpeg));
        let name = p.display().to_string();
        let reference = image::load_from_memory(&bytes).unwrap();
        let [h, w, c] = probe_bytes(&bytes, Encoding::Jpeg, &l).unwrap();
        assert_eq!((w, h), (reference.width(), reference.height()), "{name}");
        assert_eq!(
            c,
            if reference.color().has_color() { 3 } else { 1 },
            "{name}"
        );
        let rgb = decode_bytes(&bytes, Encoding::Jpeg, [h, w, c], 3, &l).unwrap();
        let want = reference.to_rgb8().into_raw();
        assert_eq!(rgb.view().data.len(), want.len(), "{name}");
        for (a, b) in rgb.view().data.iter().zip(&want) {
            let d = a.abs_diff(*b);
            sum += d as u64;
            max = max.max(d);
            n += 1;
        }
        let grey = decode_bytes(&bytes, Encoding::Jpeg, [h, w, c], 1, &l).unwrap();
        let luma = if c == 3 {
            pil_luma(rgb.view().data)
        } else {
            rgb.view().data.iter().step_by(3).copied().collect()
        };
        assert!(
            grey.view().data == luma.as_slice(),
            "{name}: grey is not the luma of RGB"
        );
    }
    if n > 0 {
        let mean = sum as f64 / n as f64;
        eprintln!(
            "libjpeg-turbo vs zune-jpeg on {} photos: mean |diff| {mean:.3}, max {max}",
            all.len()
        );
        assert!(mean < 1.0 && max <= 64, "mean {mean}, max {max}");
    }
}

/// Bit for bit what Pillow (libjpeg-turbo, PIL's default decode) gives, on
/// every photo and on a CMYK JPEG: metaug's pixels are torchvision's. Needs a python with
/// Pillow and numpy (CI installs them and sets METAUG_REQUIRE_PYTHON=1,
/// where a skip is a failure).
#[test]
fn real_jpegs_match_pillow() {
    let all = files("photos-jpeg", "JPEG");
    if all.is_empty() {
        return;
    }
    let Some(python) = common::python_with(
        "import PIL.Image, numpy",
        "Pillow and numpy",
        "pip install pillow numpy",
    ) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let script = r#"
import sys, os, hashlib
from PIL import Image
import numpy as np
# a CMYK JPEG (Adobe, as Pillow writes it) with K set: checks the conversion
rng = np.random.default_rng(0)
cmyk = os.path.join(sys.argv[1], "cmyk.jpg")
Image.fromarray(rng.integers(0, 256, (37, 53, 4), dtype=np.uint8), "CMYK").save(cmyk, quality=92)
for path in sys.argv[2:] + [cmyk]:
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
    print(os.path.basename(path), hashlib.sha256(a.tobytes()).hexdigest(), Image.__version__)
"#;
    let mut cmd = std::process::Command::new(python);
    cmd.args(["-c", script, out.path().to_str().unwrap()]);
    cmd.args(&all);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let l = DecodeLimits::default();
    let mut checked = 0;
    let files: Vec<PathBuf> = all
        .iter()
        .cloned()
        .chain([out.path().join("cmyk.jpg")])
        .collect();
    for (line, p) in text.lines().zip(&files) {
        use sha2::Digest;
        let bytes = std::fs::read(p).unwrap();
        let shape = probe_bytes(&bytes, Encoding::Jpeg, &l).unwrap();
        let rgb = decode_bytes(&bytes, Encoding::Jpeg, shape, 3, &l).unwrap();
        let ours = hex::encode(sha2::Sha256::digest(rgb.view().data));
        let mut f = line.split_whitespace();
        assert_eq!(f.next(), p.file_name().unwrap().to_str());
        assert_eq!(
            Some(ours.as_str()),
            f.next(),
            "{}: pixels differ from Pillow's",
            p.display()
        );
        checked += 1;
    }
    assert_eq!(checked, all.len() + 1);
}

fn png(w: u32, h: u32, color: image::ExtendedColorType, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(pixels, w, h, color)
        .unwrap();
    out
}

#[test]
fn every_png_colour_type_converts_like_image() {
    use image::ExtendedColorType as C;
    let (w, h) = (7u32, 5u32);
    for (color, bytes_per_px) in [
        (C::L8, 1),
        (C::La8, 2),
        (C::Rgb8, 3),
        (C::Rgba8, 4),
        (C::L16, 2),
        (C::La16, 4),
        (C::Rgb16, 6),
        (C::Rgba16, 8),
    ] {
        let pixels: Vec<u8> = (0..w * h * bytes_per_px)
            .map(|k| (k * 97 % 256) as u8)
            .collect();
        let file = png(w, h, color, &pixels);
        check_against_image(&file, Encoding::Png, &format!("{color:?}"));
    }
}

/// A PNG whose IHDR declares `w × h` RGB pixels, with no pixel data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let chunk = |f: &mut Vec<u8>, kind: &[u8], body: &[u8]| {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(body);
        f.extend((body.len() as u32).to_be_bytes());
        f.extend(kind);
        f.extend(body);
        f.extend(crc.sum().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut f, b"IHDR", &ihdr);
    chunk(
        &mut f,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut f, b"IEND", &[]);
    f
}

#[test]
fn huge_declared_png_is_an_error_not_an_allocation() {
    let l = DecodeLimits::default();
    let f = png_header(100_000, 100_000);
    let e = probe_bytes(&f, Encoding::Png, &l).unwrap_err().to_string();
    assert!(e.contains("limit") || e.contains("Limit"), "{e}");
    let e = decode_bytes(&f, Encoding::Png, [100_000, 100_000, 3], 3, &l)
        .unwrap_err()
        .to_string();
    assert!(e.contains("limit") || e.contains("Limit"), "{e}");
    // within the side limits, but 16000 x 16000 x 3 bytes is over max_alloc
    let l = DecodeLimits {
        max_alloc: 64 << 20,
        ..DecodeLimits::default()
    };
    let f = png_header(16_000, 16_000);
    let e = decode_bytes(&f, Encoding::Png, [16_000, 16_000, 3], 3, &l).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
}

#[test]
fn huge_declared_jpeg_is_an_error() {
    let Some(p) = files("photos-jpeg", "JPEG").into_iter().next() else {
        return;
    };
    let mut bytes = std::fs::read(p).unwrap();
    // patch the frame header (SOF0, FF C0): length, precision, height, width
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG");
    bytes[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    let l = DecodeLimits::default();
    let e = probe_bytes(&bytes, Encoding::Jpeg, &l)
        .unwrap_err()
        .to_string();
    // libjpeg-turbo refuses sides above 65500 itself; ours is the limit below
    assert!(e.contains("jpeg") && e.contains("dimension"), "{e}");
    assert!(decode_bytes(&bytes, Encoding::Jpeg, [65535, 65535, 3], 3, &l).is_err());
    bytes[sof + 5..sof + 9].copy_from_slice(&[0x4E, 0x20, 0x4E, 0x20]); // 20000 x 20000
    let e = probe_bytes(&bytes, Encoding::Jpeg, &l)
        .unwrap_err()
        .to_string();
    assert!(e.contains("20000x20000") && e.contains("limit"), "{e}");
}

#[test]
fn small_limits_reject_real_images() {
    let Some(p) = files("photos-png", "png").into_iter().next() else {
        return;
    };
    let bytes = std::fs::read(p).unwrap();
    let l = DecodeLimits {
        max_width: 100,
        max_height: 100,
        max_alloc: 1 << 30,
    };
    assert!(probe_bytes(&bytes, Encoding::Png, &l).is_err());
}

#[test]
fn declared_shape_must_match() {
    let Some(p) = files("photos-jpeg", "JPEG").into_iter().next() else {
        return;
    };
    let bytes = std::fs::read(p).unwrap();
    let l = DecodeLimits::default();
    let [h, w, c] = probe_bytes(&bytes, Encoding::Jpeg, &l).unwrap();
    for bad in [[h + 1, w, c], [h, w - 1, c], [h, w, 1], [w, h, c]] {
        if bad == [h, w, c] {
            continue;
        }
        let e = decode_bytes(&bytes, Encoding::Jpeg, bad, 3, &l)
            .unwrap_err()
            .to_string();
        assert!(e.contains("declares"), "{e}");
    }
    // a PNG declared as a JPEG is a decode error too
    let png = png(2, 2, image::ExtendedColorType::L8, &[1, 2, 3, 4]);
    assert!(decode_bytes(&png, Encoding::Jpeg, [2, 2, 1], 1, &l).is_err());
}

#[test]
fn truncated_and_garbage_inputs_never_panic() {
    let l = DecodeLimits::default();
    let mut inputs = Vec::new();
    if let Some(p) = files("photos-png", "png")
        .into_iter()
        .find(|p| p.ends_with("microaneurysms.png"))
    {
        inputs.push((Encoding::Png, std::fs::read(p).unwrap()));
    }
    if let Some(p) = files("photos-jpeg", "JPEG").into_iter().next() {
        inputs.push((Encoding::Jpeg, std::fs::read(p).unwrap()));
    }
    for (enc, bytes) in inputs {
        let shape = probe_bytes(&bytes, enc, &l).unwrap();
        let step = (bytes.len() / 150).max(1);
        for n in (0..bytes.len()).step_by(step) {
            // errors are fine (JPEG may even decode a prefix); panics are not
            let _ = decode_bytes(&bytes[..n], enc, shape, 3, &l);
            let _ = probe_bytes(&bytes[..n], enc, &l);
        }
    }
    for garbage in [
        &b""[..],
        b"\x89PNG\r\n\x1a\n",
        b"\xFF\xD8\xFF",
        b"hello world",
    ] {
        for enc in [Encoding::Png, Encoding::Jpeg] {
            assert!(decode_bytes(garbage, enc, [1, 1, 1], 1, &l).is_err());
        }
    }
}

#[test]
fn raw_records_are_borrowed_and_checked() {
    let l = DecodeLimits::default();
    let img: Vec<u8> = (0..28 * 28).map(|k| k as u8).collect();
    let p = decode_bytes(&img, Encoding::Raw, [28, 28, 1], 1, &l).unwrap();
    assert!(matches!(p, Pixels::Borrowed(_)));
    assert!(std::ptr::eq(p.view().data, img.as_slice()));
    let rgb = decode_bytes(&img, Encoding::Raw, [28, 28, 1], 3, &l).unwrap();
    assert_eq!(rgb.view().data.len(), 28 * 28 * 3);
    assert!(decode_bytes(&img[1..], Encoding::Raw, [28, 28, 1], 1, &l).is_err());
    assert!(decode_bytes(&img, Encoding::Raw, [28, 28, 2], 1, &l).is_err());
    let e = decode_bytes(&img, Encoding::Raw, [100_000, 100_000, 1], 1, &l).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
}

#[test]
fn decode_into_reuses_its_buffer() {
    let pngs = files("photos-png", "png");
    if pngs.is_empty() {
        return;
    }
    let l = DecodeLimits::default();
    let mut buf = Vec::new();
    let mut cap = 0;
    for p in pngs.iter().chain(pngs.iter()) {
        let bytes = std::fs::read(p).unwrap();
        let shape = probe_bytes(&bytes, Encoding::Png, &l).unwrap();
        let v = decode_into(&bytes, Encoding::Png, shape, 3, &l, &mut buf).unwrap();
        assert_eq!(v.data.len(), (shape[0] * shape[1] * 3) as usize);
        cap = cap.max(buf.capacity());
    }
    // the second pass allocated nothing new
    assert_eq!(buf.capacity(), cap);
}

//! `metaug apply` end to end: the binary on real image files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_metaug"))
}

fn png_file(dir: &Path, name: &str, w: u32, h: u32, rgb: bool) -> (PathBuf, Vec<u8>) {
    let c = if rgb { 3 } else { 1 };
    let pixels: Vec<u8> = (0..w * h * c).map(|k| (k * 89 % 251) as u8).collect();
    let path = dir.join(name);
    let color = if rgb {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    image::save_buffer(&path, &pixels, w, h, color).unwrap();
    (path, pixels)
}

fn apply(args: &[&str]) -> (bool, String) {
    let out = bin().arg("apply").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn crop_box_gives_its_pixels_and_keeps_channels() {
    let dir = tempfile::tempdir().unwrap();
    for rgb in [false, true] {
        let (src, pixels) = png_file(dir.path(), "in.png", 20, 16, rgb);
        let out = dir.path().join("out.png");
        let (ok, err) = apply(&[
            src.to_str().unwrap(),
            "--crop",
            "5,3,8,10",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let img = image::open(&out).unwrap();
        assert_eq!((img.width(), img.height()), (8, 10));
        assert_eq!(img.color().has_color(), rgb);
        let got = img.into_bytes();
        let c = if rgb { 3 } else { 1 };
        for i in 0..10 {
            for j in 0..8 {
                for k in 0..c {
                    let want = pixels[(((3 + i) * 20 + 5 + j) * c + k) as usize];
                    assert_eq!(got[((i * 8 + j) * c + k) as usize], want);
                }
            }
        }
    }
}

#[test]
fn flip_twice_and_four_quarter_turns_are_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (src, pixels) = png_file(dir.path(), "in.png", 12, 12, true);
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    assert!(apply(&[src.to_str().unwrap(), "--flip", "-o", a.to_str().unwrap()]).0);
    assert_ne!(image::open(&a).unwrap().into_bytes(), pixels);
    assert!(apply(&[a.to_str().unwrap(), "--flip", "-o", b.to_str().unwrap()]).0);
    assert_eq!(image::open(&b).unwrap().into_bytes(), pixels);
    let mut cur = src.clone();
    for k in 0..4 {
        let next = dir.path().join(format!("r{k}.png"));
        let (ok, err) = apply(&[
            cur.to_str().unwrap(),
            "--rotate",
            "90",
            "-o",
            next.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        cur = next;
    }
    assert_eq!(image::open(&cur).unwrap().into_bytes(), pixels);
    // negative angles parse
    assert!(
        apply(&[
            src.to_str().unwrap(),
            "--rotate",
            "-15",
            "-o",
            a.to_str().unwrap()
        ])
        .0
    );
}

#[test]
fn size_and_noise_on_a_real_photo() {
    let photo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/photos-jpeg/n01440764_tench.JPEG");
    if !photo.exists() {
        eprintln!("{} not found: skipped", photo.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let (ok, err) = apply(&[
        photo.to_str().unwrap(),
        "--crop",
        "100,50,200,150",
        "--rotate",
        "15",
        "--flip",
        "--noise",
        "0.05",
        "--size",
        "64x96",
        "--seed",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (96, 64));
    // the same seed gives the same file, another seed another
    let again = dir.path().join("again.png");
    let other = dir.path().join("other.png");
    let base = [
        photo.to_str().unwrap(),
        "--noise",
        "0.05",
        "--size",
        "32x32",
    ];
    assert!(apply(&[&base[..], &["--seed", "1", "-o", out.to_str().unwrap()]].concat()).0);
    assert!(apply(&[&base[..], &["--seed", "1", "-o", again.to_str().unwrap()]].concat()).0);
    assert!(apply(&[&base[..], &["--seed", "2", "-o", other.to_str().unwrap()]].concat()).0);
    let read = |p: &Path| image::open(p).unwrap().into_bytes();
    assert_eq!(read(&out), read(&again));
    assert_ne!(read(&out), read(&other));
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = png_file(dir.path(), "in.png", 20, 16, true);
    let src = src.to_str().unwrap();
    let out = dir.path().join("out.png");
    let out = out.to_str().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![src, "--crop", "15,0,10,10", "-o", out], "does not fit"),
        (vec![src, "--crop", "0,0,0,10", "-o", out], "at least 1"),
        (vec![src, "--crop", "1,2,3", "-o", out], "X,Y,W,H"),
        (vec![src, "--size", "0x10", "-o", out], "height 0"),
        (vec![src, "--size", "big", "-o", out], "HxW"),
        (vec![src, "--noise", "-0.5", "-o", out], "--noise"),
        (vec!["/no/such/image.png", "-o", out], "/no/such/image.png"),
        (vec![text.to_str().unwrap(), "-o", out], "not a PNG or JPEG"),
        (
            vec![src, "-o", "/no/such/dir/out.png"],
            "/no/such/dir/out.png",
        ),
    ];
    for (args, want) in cases {
        let (ok, err) = apply(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(
            err.contains(want),
            "{args:?}: {err:?} does not mention {want:?}"
        );
    }
}

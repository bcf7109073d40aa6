//! Region decode of JPEGs with and without restart markers (issue 20), by
//! the size of the crop.
//!
//! Region decode asks libjpeg-turbo for a crop of the original file: the
//! IDCT, upsampling and colour conversion outside it are skipped, and every
//! row below it, but every block above and beside it is still
//! Huffman-decoded. A file packed with `--restart-markers` has a restart
//! marker after every MCU, and region decode cuts a virtual JPEG of the
//! region's MCUs out of it instead (`decode::restart`): nothing outside is
//! read. This bench measures both on the 300 photos, one thread, through
//! the library's own `decode_bytes_region` (exact mode), for a centred,
//! unrotated crop of a given share of each photo's area, resized to 224×224
//! (the decoded region is the crop's bilinear footprint plus its context,
//! widened to whole MCUs on the restart-marker path):
//!
//! - `restart_markers/area_A/original`: the original files;
//! - `restart_markers/area_A/restart_markers`: the same photos rewritten by
//!   `decode::with_restart_markers` (pixels checked equal before the clock).
//!
//! Area 1 is the whole image on both paths: there the markers cost what
//! they cost. `cargo bench --bench restart_markers` (about a minute). The
//! figures are in BENCHMARKS.md, issue 20's section.

mod common;

use std::hint::black_box;

use criterion::Throughput;
use metaug::decode::{cuts_at_every_mcu, decode_bytes_region, with_restart_markers};
use metaug::decode::{DecodeLimits, Encoding, RegionDecode};
use metaug::ops::{Geometry, Size};

/// One photo: its declared shape, the original file and the rewritten one.
struct Photo {
    shape: [u32; 3],
    original: Vec<u8>,
    cut: Vec<u8>,
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
    let limits = DecodeLimits::default();
    let photos: Vec<Photo> = files
        .iter()
        .map(|f| {
            let original = std::fs::read(f).expect("read photo");
            let shape = metaug::decode::probe_bytes(&original, Encoding::Jpeg, &limits)
                .expect("probe photo");
            let cut = with_restart_markers(&original, &limits)
                .expect("decode photo")
                .unwrap_or_else(|| panic!("{}: restart markers change its pixels", f.display()));
            assert!(cuts_at_every_mcu(&cut, &limits));
            Photo {
                shape,
                original,
                cut,
            }
        })
        .collect();
    let bytes = |f: fn(&Photo) -> usize| photos.iter().map(f).sum::<usize>() as f64;
    println!(
        "restart_markers: {} photos; files with restart markers are {:.3}x the originals' bytes",
        photos.len(),
        bytes(|p| p.cut.len()) / bytes(|p| p.original.len()),
    );
    let out = Size::new(224, 224);
    let decode = |bytes: &[u8], shape: [u32; 3], geometry: &Geometry| {
        let (pixels, _) = decode_bytes_region(
            bytes,
            Encoding::Jpeg,
            shape,
            3,
            &limits,
            geometry,
            out,
            RegionDecode::default(),
        )
        .expect("region decode");
        let v = pixels.view();
        (v.height * v.width) as u64
    };
    for area in [1.0f32, 0.7, 0.5, 0.3, 0.1] {
        let geometry = Geometry {
            area,
            ..Geometry::IDENTITY
        };
        let share = |f: fn(&Photo) -> &Vec<u8>| {
            let decoded: u64 = photos
                .iter()
                .map(|p| decode(f(p), p.shape, &geometry))
                .sum();
            let all: u64 = photos
                .iter()
                .map(|p| (p.shape[0] * p.shape[1]) as u64)
                .sum();
            decoded as f64 / all as f64
        };
        println!(
            "restart_markers/area_{area}: pixels decoded, share of the photos': original {:.3}, restart markers {:.3}",
            share(|p| &p.original),
            share(|p| &p.cut),
        );
        let mut g = c.benchmark_group(format!("restart_markers/area_{area}"));
        g.throughput(Throughput::Elements(photos.len() as u64));
        g.bench_function("original", |b| {
            b.iter(|| {
                for p in &photos {
                    black_box(decode(&p.original, p.shape, &geometry));
                }
            })
        });
        g.bench_function("restart_markers", |b| {
            b.iter(|| {
                for p in &photos {
                    black_box(decode(&p.cut, p.shape, &geometry));
                }
            })
        });
        g.finish();
    }
    c.final_summary();
}

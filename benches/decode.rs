//! Decode, one thread, records as the loader gets them (borrowed from the
//! memory-mapped shards, crc32c checked before the clock starts):
//!
//! - `decode/jpeg_photos_30`: 30 of the 300 ImageNet photos (every 10th:
//!   97 to 2400 px per side, like the whole set), to RGB;
//! - `decode/png_photos_13`: the 13 bundled PNG images (RGB and grey), to RGB;
//! - `decode/raw_fmnist_1024`: 1,024 raw 28×28 grey records, to 1 channel
//!   (borrowed, no copy: what is left is the view's checks).
//!
//! The JPEG decoders on the same 30 photos (issue 20):
//!
//! - `decode_jpeg/zune_jpeg_whole`: the `image` crate's decoder, which
//!   metaug used before libjpeg-turbo;
//! - `decode_jpeg/turbo_whole_1_N` for N = 1, 2, 4, 8: libjpeg-turbo, the
//!   whole image at scale 1/N (DCT-domain scaling). What scaling cannot
//!   save, entropy decoding, shows as the 1/8 rate.
//!
//! Throughput in images/s; each line also prints the input and output bytes
//! per image so MB/s follow. `cargo bench --bench decode` (about 40 s).

mod common;

use std::hint::black_box;

use criterion::Throughput;
use metaug::decode::{decode, decode_bytes_region, decode_jpeg_image_rs, DecodeLimits};
use metaug::decode::{DecodeScale, RegionDecode};
use metaug::ops::{Geometry, Size};
use metaug::shard::{Dataset, Encoding, Record};

fn main() {
    let mut c = common::short(3);
    let limits = DecodeLimits::default();
    let sets = [
        ("jpeg_photos", common::photos_jpeg(), 3u32, 10u64, 30usize),
        ("png_photos", common::photos_png(), 3, 1, 13),
        (
            "raw_fmnist",
            common::fashion_mnist(Encoding::Raw),
            1,
            1,
            1024,
        ),
    ];
    let mut g = c.benchmark_group("decode");
    for (name, dir, channels, stride, count) in sets {
        let Some(dir) = dir else {
            println!("decode/{name}: skipped: data missing");
            continue;
        };
        let ds = Dataset::open(&dir).expect("open");
        let records: Vec<Record<'_>> = (0..ds.len())
            .step_by(stride as usize)
            .take(count)
            .map(|i| ds.record(i).expect("record"))
            .collect();
        let n = records.len();
        let input: usize = records.iter().map(|r| r.bytes.len()).sum();
        let output: usize = records
            .iter()
            .map(|r| {
                decode(r, channels, &limits)
                    .expect("decode")
                    .view()
                    .data
                    .len()
            })
            .sum();
        println!(
            "decode/{name}_{n}: {:.0} bytes in, {:.0} bytes out per image",
            input as f64 / n as f64,
            output as f64 / n as f64
        );
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{name}_{n}"), |b| {
            b.iter(|| {
                for r in &records {
                    black_box(decode(r, channels, &limits).expect("decode"));
                }
            })
        });
    }
    g.finish();
    if let Some(dir) = common::photos_jpeg() {
        let ds = Dataset::open(&dir).expect("open");
        let records: Vec<Record<'_>> = (0..ds.len())
            .step_by(10)
            .map(|i| ds.record(i).expect("record"))
            .collect();
        let mut g = c.benchmark_group("decode_jpeg");
        g.throughput(Throughput::Elements(records.len() as u64));
        g.bench_function("zune_jpeg_whole", |b| {
            b.iter(|| {
                for r in &records {
                    black_box(decode_jpeg_image_rs(r.bytes, &limits).expect("decode"));
                }
            })
        });
        // The whole image at 1/N: an output size N times below the image
        // along both axes makes `Auto` pick exactly 1/N.
        for n in [1u32, 2, 4, 8] {
            let auto = RegionDecode {
                crop: false,
                scale: DecodeScale::Auto,
            };
            g.bench_function(format!("turbo_whole_1_{n}"), |b| {
                b.iter(|| {
                    for r in &records {
                        let [h, w, _] = r.shape;
                        let out = Size::new((h / n).max(1), (w / n).max(1));
                        black_box(
                            decode_bytes_region(
                                r.bytes,
                                r.encoding,
                                r.shape,
                                3,
                                &limits,
                                &Geometry::IDENTITY,
                                out,
                                auto,
                            )
                            .expect("decode"),
                        );
                    }
                })
            });
        }
        g.finish();
    }
    c.final_summary();
}

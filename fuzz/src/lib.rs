//! What each fuzz target does with its input. Kept apart from the targets
//! (three lines each, in `fuzz_targets/`) so that `tests/fuzz_regressions.rs`
//! runs exactly this code on the checked-in crash inputs and seeds
//! (it includes this file with `#[path]`): only `std`, `metaug`, `crc32c`
//! and `serde_json` may be used here.
//!
//! Every function ignores the parser's `Result` and panics only when an
//! invariant that must hold for every input breaks (the two read modes
//! disagree, a round trip changes a value): a panic is a bug found.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use metaug::decode::{
    decode_bytes, decode_bytes_region, probe_bytes, DecodeLimits, DecodeScale, RegionDecode,
};
use metaug::ops::philox::{PhiloxStream, STREAM_NOISE};
use metaug::ops::{augment_into, augment_window_into, DType, Geometry, OutputSpec, Size};
use metaug::policy::Policy;
use metaug::shard::{Dataset, DatasetIndex, Encoding, OpenOptions, ReadMode, Shard};

/// A scratch directory for this thread, removed when the thread ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// This thread's scratch directory (in `/dev/shm` when there is one, so
/// that writing each input costs no disk I/O).
fn scratch() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    SCRATCH.with_borrow_mut(|s| {
        s.get_or_insert_with(|| {
            let base = if Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            };
            let dir = base.join(format!(
                "metaug-fuzz-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create the fuzz scratch directory");
            Scratch(dir)
        })
        .0
        .clone()
    })
}

const SHARD_NAME: &str = "shard-00000.safetensors";

/// The shard reader on arbitrary bytes: `data` is written as a shard file
/// and opened in both read modes, then every record is read in both; the
/// modes must agree on every value and every error. The same is done with
/// the table checksums in the metadata recomputed (so that the fuzzer gets
/// past them to the offsets, shapes and labels checks), and with the shard
/// inside a dataset (`index.json` written to match it).
pub fn shard(data: &[u8]) {
    let dir = scratch();
    shard_once(&dir, data);
    if let Some(fixed) = fix_table_checksums(data) {
        shard_once(&dir, &fixed);
    }
}

fn shard_once(dir: &Path, data: &[u8]) {
    let path = dir.join(SHARD_NAME);
    std::fs::write(&path, data).expect("write the input");
    let mmap = Shard::open(&path, 0);
    let pread = Shard::open_with(&path, 0, ReadMode::Pread);
    let (mmap, pread) = match (mmap, pread) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(a), Err(b)) => {
            assert_eq!(
                a.to_string(),
                b.to_string(),
                "the read modes disagree at open"
            );
            return;
        }
        (a, b) => panic!(
            "the read modes disagree at open: {:?} vs {:?}",
            a.err(),
            b.err()
        ),
    };
    assert_eq!(mmap.len(), pread.len());
    assert_eq!(mmap.file_bytes(), data.len() as u64);
    let mut buf = Vec::new();
    // The tables lie in the file, so the count is bounded by its size.
    for i in 0..mmap.len() {
        let a = mmap.record(i).map(|r| (r.bytes, r.label, r.shape));
        let b = pread
            .read_record(i, &mut buf)
            .map(|r| (r.bytes, r.label, r.shape));
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "record {i}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "record {i}"),
            (a, b) => panic!("the read modes disagree on record {i}: {a:?} vs {b:?}"),
        }
    }
    // The dataset level: counts, sizes and labels against an index.
    let index = serde_json::json!({
        "format": "metaug-dataset", "version": 1, "encoding": mmap.encoding(),
        "classes": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        "total_records": mmap.len(), "total_bytes": data.len(),
        "shards": [{"file": SHARD_NAME, "records": mmap.len(), "bytes": data.len()}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("write index.json");
    let pread = OpenOptions {
        read_mode: ReadMode::Pread,
        ..Default::default()
    };
    if let (Ok(a), Ok(b)) = (Dataset::open(dir), Dataset::open_with(dir, pread)) {
        assert_eq!(a.summary(), b.summary());
        for i in 0..a.len() {
            let _ = a.record(i);
            let _ = b.read_record(i, &mut buf);
        }
    }
}

/// `data` with the metadata's `crc32c_offsets`, `crc32c_labels`,
/// `crc32c_shapes` and `crc32c_crc32c` values replaced by the checksums of
/// the tensors' bytes as the header places them, or `None` when the header
/// is not that far readable.
pub fn fix_table_checksums(data: &[u8]) -> Option<Vec<u8>> {
    let n = usize::try_from(u64::from_le_bytes(data.get(..8)?.try_into().ok()?)).ok()?;
    let start = n.checked_add(8)?;
    let text = std::str::from_utf8(data.get(8..start)?).ok()?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let mut out = data.to_vec();
    let mut changed = false;
    for name in ["offsets", "labels", "shapes", "crc32c"] {
        let span = header.get(name)?.get("data_offsets")?.as_array()?;
        let begin = usize::try_from(span.first()?.as_u64()?).ok()?;
        let end = usize::try_from(span.get(1)?.as_u64()?).ok()?;
        let bytes = data.get(start.checked_add(begin)?..start.checked_add(end)?)?;
        let crc = format!("{:08x}", crc32c::crc32c(bytes));
        let key = format!("\"crc32c_{name}\":\"");
        let at = 8 + text.find(&key)? + key.len();
        let slot = out.get_mut(at..at + 8)?;
        if slot != crc.as_bytes() {
            slot.copy_from_slice(crc.as_bytes());
            changed = true;
        }
    }
    changed.then_some(out)
}

/// `index.json` parsing and validation: anything accepted must survive a
/// round trip through the writer's JSON unchanged.
pub fn index_json(data: &[u8]) {
    let path = Path::new("index.json");
    if let Ok(index) = DatasetIndex::parse(path, data) {
        let text = index.to_json();
        let again = DatasetIndex::parse(path, text.as_bytes()).expect("the index we write parses");
        assert_eq!(again, index, "index.json round trip");
    }
}

/// Policy files: `Policy::from_bytes`; a policy that loads must save and
/// load back to the same φ and τ (bit for bit), and describe and sample.
pub fn policy(data: &[u8]) {
    let path = Path::new("policy.safetensors");
    if let Ok(p) = Policy::from_bytes(data, path) {
        let bytes = p.to_bytes().expect("a policy that loaded saves");
        let again = Policy::from_bytes(&bytes, path).expect("a saved policy loads");
        assert_eq!(again.phi.map(f32::to_bits), p.phi.map(f32::to_bits));
        assert_eq!(again.tau.to_bits(), p.tau.to_bits());
        let _ = p.describe();
        let _ = p.sample_hard(1, 2, 3);
    }
}

/// Limits of the decode target: small, so that an input declaring a huge
/// image is refused quickly (the checks are the same whatever the limits).
pub const FUZZ_DECODE_LIMITS: DecodeLimits = DecodeLimits {
    max_width: 2048,
    max_height: 2048,
    max_alloc: 16 << 20,
};

/// Record decoding: the input is a declared shape (height and width as
/// little-endian u16, then channels as one byte) followed by the payload,
/// decoded as PNG, JPEG and raw to 1 and 3 channels. Whatever decodes must
/// have the declared height and width and exactly `h * w * channels` bytes,
/// and a PNG or JPEG that decodes must probe to the same size.
pub fn decode(data: &[u8]) {
    let Some((head, payload)) = data.split_first_chunk::<5>() else {
        return;
    };
    let height = u32::from(u16::from_le_bytes([head[0], head[1]]));
    let width = u32::from(u16::from_le_bytes([head[2], head[3]]));
    let shape = [height, width, u32::from(head[4])];
    for encoding in [Encoding::Png, Encoding::Jpeg, Encoding::Raw] {
        for channels in [1, 3] {
            let Ok(pixels) = decode_bytes(payload, encoding, shape, channels, &FUZZ_DECODE_LIMITS)
            else {
                continue;
            };
            let v = pixels.view();
            assert_eq!((v.height, v.width, v.channels), (height, width, channels));
            assert_eq!(
                v.data.len() as u64,
                u64::from(height) * u64::from(width) * u64::from(channels)
            );
            if encoding != Encoding::Raw {
                let probed = probe_bytes(payload, encoding, &FUZZ_DECODE_LIMITS)
                    .expect("an image that decodes probes");
                assert_eq!(probed[..2], [height, width]);
            }
            if encoding == Encoding::Jpeg {
                region(payload, shape, channels, v);
            }
        }
    }
}

/// Region decode of a JPEG that decodes whole (`full`): with a geometry
/// taken from the payload's bytes, the exact region must give the same
/// sample bits as the whole image, and the scaled one a window inside its
/// frame.
fn region(payload: &[u8], shape: [u32; 3], channels: u32, full: metaug::decode::ImageView<'_>) {
    let h = payload
        .iter()
        .fold(0x9E37_79B9u32, |h, &b| h.rotate_left(5) ^ u32::from(b));
    let unit = |k: u32| ((h.rotate_left(k) & 0xFF) as f32 + 0.5) / 256.0;
    let g = Geometry {
        area: 0.05 + 0.95 * unit(0),
        aspect: 0.5 + 1.5 * unit(8),
        center: [2.0 * unit(16) - 1.0, 2.0 * unit(24) - 1.0],
        angle: 6.0 * unit(4) - 3.0,
    };
    let spec = OutputSpec::new(Size::new(9, 7), channels).with_dtype(DType::U8);
    let params = metaug::ops::SampleParams {
        geometry: g,
        flip: 0.0,
        sigma: 0.0,
    };
    let noise = PhiloxStream::new(0, 0, 0, STREAM_NOISE);
    let mut whole = vec![0u8; spec.sample_bytes()];
    augment_into(full, &params, noise, &spec, &mut whole);
    for scale in [DecodeScale::Full, DecodeScale::Auto] {
        let mode = RegionDecode { crop: true, scale };
        let decoded = decode_bytes_region(
            payload,
            Encoding::Jpeg,
            shape,
            channels,
            &FUZZ_DECODE_LIMITS,
            &g,
            spec.size,
            mode,
        );
        let (pixels, window) = match decoded {
            Ok(d) => d,
            // the exact region of a JPEG that decodes whole must decode
            Err(e) if scale == DecodeScale::Full => panic!("region decode failed: {e}"),
            // a reduced scale may meet what the full one did not (a
            // different IDCT path); an error is fine there
            Err(_) => continue,
        };
        let v = pixels.view();
        let frame = window.frame();
        assert!(window.origin[0] + v.width <= frame.width);
        assert!(window.origin[1] + v.height <= frame.height);
        let mut out = vec![0u8; spec.sample_bytes()];
        augment_window_into(v, &window, &params, noise, &spec, &mut out);
        if scale == DecodeScale::Full {
            assert!(out == whole, "region decode differs from the whole image");
        }
    }
}

//! Helpers shared by the shard and pack tests: hand-made shard bytes, data
//! paths, small real datasets.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use metaug::shard::{DatasetWriter, Encoding, WriterOptions};

/// `../shared/data` beside the repository (absent on some machines).
pub fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: {} not found", dir.display());
        None
    }
}

/// The bundled data folder of the repository.
pub fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// Decompresses a gzipped IDX file and returns (dims, body).
pub fn read_idx_gz(path: &Path) -> (Vec<u32>, Vec<u8>) {
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut data)
        .unwrap();
    let rank = data[3] as usize;
    let dims = (0..rank)
        .map(|i| u32::from_be_bytes(data[4 + 4 * i..8 + 4 * i].try_into().unwrap()))
        .collect();
    (dims, data[4 + 4 * rank..].to_vec())
}

/// One tensor of a hand-made safetensors file.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// The parts of a hand-made shard: tensors (in file order) and metadata.
/// `crc` metadata entries are filled in from the tensors by [`Parts::bytes`]
/// unless already present.
#[derive(Clone, Debug)]
pub struct Parts {
    pub tensors: Vec<Tensor>,
    pub metadata: BTreeMap<String, String>,
}

fn le<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

impl Parts {
    /// A valid shard of `records` (payload, label, shape) with `encoding`.
    pub fn new(encoding: &str, records: &[(&[u8], i64, [u32; 3])]) -> Parts {
        let mut bytes = Vec::new();
        let mut offsets = vec![0u64];
        for (p, _, _) in records {
            bytes.extend_from_slice(p);
            offsets.push(bytes.len() as u64);
        }
        let labels: Vec<i64> = records.iter().map(|r| r.1).collect();
        let shapes: Vec<u32> = records.iter().flat_map(|r| r.2).collect();
        let crcs: Vec<u32> = records.iter().map(|r| crc32c::crc32c(r.0)).collect();
        Parts::from_arrays(encoding, bytes, offsets, labels, shapes, crcs)
    }

    /// A shard from arrays given as is (possibly inconsistent).
    pub fn from_arrays(
        encoding: &str,
        bytes: Vec<u8>,
        offsets: Vec<u64>,
        labels: Vec<i64>,
        shapes: Vec<u32>,
        crcs: Vec<u32>,
    ) -> Parts {
        let n = labels.len() as u64;
        let t = |name: &str, dtype: &str, shape: Vec<u64>, data: Vec<u8>| Tensor {
            name: name.into(),
            dtype: dtype.into(),
            shape,
            data,
        };
        let tensors = vec![
            t(
                "offsets",
                "U64",
                vec![offsets.len() as u64],
                le(&offsets, u64::to_le_bytes),
            ),
            t("labels", "I64", vec![n], le(&labels, i64::to_le_bytes)),
            t(
                "shapes",
                "U32",
                vec![shapes.len() as u64 / 3, 3],
                le(&shapes, u32::to_le_bytes),
            ),
            t(
                "crc32c",
                "U32",
                vec![crcs.len() as u64],
                le(&crcs, u32::to_le_bytes),
            ),
            t("bytes", "U8", vec![bytes.len() as u64], bytes),
        ];
        let mut metadata = BTreeMap::new();
        metadata.insert("format".into(), "metaug-shard".into());
        metadata.insert("version".into(), "1".into());
        metadata.insert("encoding".into(), encoding.into());
        metadata.insert("count".into(), n.to_string());
        Parts { tensors, metadata }
    }

    /// A valid raw shard of `n` 2x2x1 records with labels `i % 3`.
    pub fn raw(n: usize) -> Parts {
        let payloads: Vec<[u8; 4]> = (0..n).map(|i| [i as u8, 1, 2, 3]).collect();
        let records: Vec<(&[u8], i64, [u32; 3])> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (&p[..], (i % 3) as i64, [2, 2, 1]))
            .collect();
        Parts::new("raw", &records)
    }

    pub fn tensor(&mut self, name: &str) -> &mut Tensor {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap()
    }

    /// The file bytes: header with sequential data offsets, padded to 8.
    pub fn bytes(&self) -> Vec<u8> {
        let mut metadata = self.metadata.clone();
        for t in &self.tensors {
            if t.name != "bytes" {
                metadata
                    .entry(format!("crc32c_{}", t.name))
                    .or_insert_with(|| format!("{:08x}", crc32c::crc32c(&t.data)));
            }
        }
        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(&metadata).unwrap(),
        );
        let mut at = 0u64;
        for t in &self.tensors {
            let end = at + t.data.len() as u64;
            header.insert(
                t.name.clone(),
                serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [at, end]}),
            );
            at = end;
        }
        let mut text = serde_json::to_vec(&header).unwrap();
        while !text.len().is_multiple_of(8) {
            text.push(b' ');
        }
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&text);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
        }
        out
    }

    /// Writes the shard to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

/// Writes `parts` as the single shard of a dataset in `dir` with a matching
/// `index.json` (classes "a", "b", "c"), so that only the shard is at fault.
pub fn write_dataset(dir: &Path, parts: &Parts, encoding: &str) {
    let bytes = parts.bytes();
    std::fs::write(dir.join("shard-00000.safetensors"), &bytes).unwrap();
    let n = parts
        .tensors
        .iter()
        .find(|t| t.name == "labels")
        .map_or(0, |t| t.data.len() as u64 / 8);
    let index = serde_json::json!({
        "format": "metaug-dataset", "version": 1, "encoding": encoding,
        "classes": ["a", "b", "c"], "total_records": n, "total_bytes": bytes.len(),
        "shards": [{"file": "shard-00000.safetensors", "records": n, "bytes": bytes.len()}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

/// Packs the first `n` images of the bundled Fashion-MNIST training set
/// into `dir` (raw or PNG) through the writer, in shards of `shard_size`.
pub fn small_fashion(dir: &Path, n: usize, encoding: Encoding, shard_size: u64) {
    let fm = bundled().join("fashion-mnist-small");
    let (_, images) = read_idx_gz(&fm.join("train-images-idx3-ubyte.gz"));
    let (_, labels) = read_idx_gz(&fm.join("train-labels-idx1-ubyte.gz"));
    let classes = (0..10).map(|i| i.to_string()).collect();
    let mut options = WriterOptions::new(encoding, classes);
    options.shard_size = shard_size;
    let mut w = DatasetWriter::create(dir, options).unwrap();
    for i in 0..n {
        let px = &images[i * 784..(i + 1) * 784];
        let payload = match encoding {
            Encoding::Raw => px.to_vec(),
            _ => metaug::pack::idx::encode_png_grey(px, 28, 28).unwrap(),
        };
        w.push(&payload, labels[i] as i64, [28, 28, 1]).unwrap();
    }
    w.finish().unwrap();
}

/// A PNG (grey, 1x1, encoded by the image crate) whose IHDR is patched to
/// declare `width` x `height` pixels, with a valid chunk CRC.
pub fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = metaug::pack::idx::encode_png_grey(&[7], 1, 1).unwrap();
    // Signature (8), IHDR length (4), "IHDR" (4), then width, height.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png
}

/// A temporary directory in memory (`/dev/shm`) where there is one, for
/// tests that rewrite files thousands of times (disk writeback under a busy
/// machine makes them slow); else in the default temporary directory.
pub fn memory_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new().prefix("metaug-").tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

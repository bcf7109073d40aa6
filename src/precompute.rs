//! Offline precompute: `K` augmented copies of every image, written as
//! safetensors shards (`images` `[n, C, H, W]` or `[n, H, W, C]`, `labels`
//! `[n]`, metadata naming the policy, seed and source).
//!
//! Copy `k` of sample `i` is exactly what the loader yields for sample `i`
//! in epoch `k` with the same seed and policy. Items are numbered
//! `k · N + i` and cut into shards of a fixed number of items, so the job is
//! a list of independent shards:
//!
//! - **atomic**: each shard is written to a temporary name, fsynced and
//!   renamed; a file with the final name is complete;
//! - **resumable**: a rerun skips the shards that exist (after checking
//!   their header) and redoes the rest, giving the same bytes;
//! - **splittable**: `--part i/n` takes shards `s` with `s mod n == i − 1`;
//!   the union of the parts is the whole job, byte for byte.
//!
//! `job.json` (written first, identical for every part) fixes the job; a
//! rerun with other settings in the same directory is refused. `index.json`
//! is written by the run that finds every shard present.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::decode::{decode_bytes_region_into, DecodeLimits, RegionDecode};
use crate::error::{Error, Result};
use crate::ops::philox::{PhiloxStream, STREAM_NOISE};
use crate::ops::{augment_window_into, DType, Layout, OutputSpec};
use crate::policy::Policy;
use crate::shard::Dataset;

/// Value of the `format` metadata key of an augmented shard.
pub const FORMAT: &str = "metaug-augmented";

/// Which share of the job a run does: part `index` (1-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// 1-based index of this part.
    pub index: u32,
    /// Number of parts.
    pub count: u32,
}

impl Part {
    /// The whole job.
    pub const WHOLE: Part = Part { index: 1, count: 1 };

    /// Whether shard `s` belongs to this part.
    pub fn owns(&self, s: u64) -> bool {
        s % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl std::str::FromStr for Part {
    type Err = Error;

    /// Parses `i/n` with `1 <= i <= n`.
    fn from_str(s: &str) -> Result<Part> {
        let bad = |why: &str| Error::invalid("part", format!("{s:?}: {why}"));
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected i/n, e.g. 2/4"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| bad("i is not a whole number"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad("n is not a whole number"))?;
        if count == 0 || index == 0 || index > count {
            return Err(bad("need 1 <= i <= n"));
        }
        Ok(Part { index, count })
    }
}

/// A precompute job.
#[derive(Clone, Debug)]
pub struct PrecomputeConfig {
    /// Augmentation policy (hard mode).
    pub policy: Policy,
    /// Copies of each image.
    pub copies: u64,
    /// Output format of each image.
    pub spec: OutputSpec,
    /// Seed of the augmentation.
    pub seed: u64,
    /// Items per output shard.
    pub shard_items: u64,
    /// Which part of the job this run does.
    pub part: Part,
    /// Worker threads.
    pub threads: usize,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrecomputeSummary {
    /// Shards in the whole job.
    pub shards_total: u64,
    /// Shards this run wrote.
    pub shards_written: u64,
    /// Shards of this part found complete and kept.
    pub shards_kept: u64,
    /// Images this run wrote.
    pub images_written: u64,
    /// Bytes this run wrote.
    pub bytes_written: u64,
    /// Whether the whole job is now complete (`index.json` written).
    pub complete: bool,
}

/// The job's identity, stored as `job.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Job {
    format: String,
    version: u32,
    source: String,
    source_records: u64,
    policy_phi: Vec<f32>,
    policy_tau: f32,
    seed: u64,
    copies: u64,
    height: u32,
    width: u32,
    channels: u32,
    dtype: String,
    layout: String,
    mean: Vec<f32>,
    std: Vec<f32>,
    shard_items: u64,
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::U8 => "U8",
        DType::F16 => "F16",
        DType::F32 => "F32",
    }
}

fn layout_name(l: Layout) -> &'static str {
    match l {
        Layout::Nchw => "nchw",
        Layout::Nhwc => "nhwc",
    }
}

/// Name of output shard `s`.
pub fn shard_name(s: u64) -> String {
    format!("aug-{s:06}.safetensors")
}

/// Runs (this part of) a precompute job from `dataset` into `out`.
/// `progress` is called with the number of images done after each shard.
pub fn precompute(
    dataset: &Dataset,
    out: &Path,
    cfg: &PrecomputeConfig,
    stop: &AtomicBool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PrecomputeSummary> {
    cfg.spec.validate()?;
    if cfg.copies == 0 {
        return Err(Error::invalid("copies", "must be at least 1"));
    }
    if cfg.shard_items == 0 {
        return Err(Error::invalid("shard size", "must be at least 1 image"));
    }
    let n = dataset.len();
    let total = n
        .checked_mul(cfg.copies)
        .ok_or_else(|| Error::invalid("copies", "copies × records overflows"))?;
    let job = Job {
        format: FORMAT.into(),
        version: 1,
        source: dataset.dir().display().to_string(),
        source_records: n,
        policy_phi: cfg.policy.phi.to_vec(),
        policy_tau: cfg.policy.tau,
        seed: cfg.seed,
        copies: cfg.copies,
        height: cfg.spec.size.height,
        width: cfg.spec.size.width,
        channels: cfg.spec.channels,
        dtype: dtype_name(cfg.spec.dtype).into(),
        layout: layout_name(cfg.spec.layout).into(),
        mean: cfg.spec.mean.clone(),
        std: cfg.spec.std.clone(),
        shard_items: cfg.shard_items,
    };
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    claim_job(out, &job)?;
    let shards = total.div_ceil(cfg.shard_items);
    let mut summary = PrecomputeSummary {
        shards_total: shards,
        ..Default::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.max(1))
        .build()
        .map_err(|e| Error::Pipeline(format!("cannot start worker threads: {e}")))?;
    remove_stale_temporaries(out, cfg.part)?;
    let mut done_images = 0u64;
    for s in (0..shards).filter(|&s| cfg.part.owns(s)) {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Pipeline("precompute interrupted".into()));
        }
        let first = s * cfg.shard_items;
        let count = cfg.shard_items.min(total - first);
        let path = out.join(shard_name(s));
        if path.exists() && check_shard(&path, &job, first, count).is_ok() {
            summary.shards_kept += 1;
        } else {
            let bytes = pool.install(|| write_shard(dataset, &path, &job, cfg, first, count))?;
            summary.shards_written += 1;
            summary.images_written += count;
            summary.bytes_written += bytes;
        }
        done_images += count;
        progress(done_images);
    }
    summary.complete = finish_if_complete(out, &job, shards, total)?;
    Ok(summary)
}

/// Writes `job.json` if absent; otherwise checks that it describes this job.
fn claim_job(out: &Path, job: &Job) -> Result<()> {
    let path = out.join("job.json");
    match fs::read(&path) {
        Ok(bytes) => {
            let existing: Job = serde_json::from_slice(&bytes)
                .map_err(|e| Error::format(&path, format!("not a precompute job file: {e}")))?;
            if &existing != job {
                return Err(Error::invalid(
                    "output directory",
                    format!(
                        "{} holds a different precompute job (other source, policy, seed, copies or \
                         output format); use a new directory",
                        out.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = serde_json::to_vec_pretty(job)
                .map_err(|e| Error::Pipeline(format!("cannot encode job.json: {e}")))?;
            write_atomic(&path, &text)
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Metadata of shard with items `first..first+count`.
fn shard_metadata(job: &Job, first: u64, count: u64) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), FORMAT.into());
    m.insert("version".into(), "1".into());
    m.insert("source".into(), job.source.clone());
    m.insert(
        "policy".into(),
        serde_json::json!({"phi": job.policy_phi, "tau": job.policy_tau}).to_string(),
    );
    m.insert("seed".into(), job.seed.to_string());
    m.insert("copies".into(), job.copies.to_string());
    m.insert("first_item".into(), first.to_string());
    m.insert("count".into(), count.to_string());
    m.insert("source_records".into(), job.source_records.to_string());
    m.insert("layout".into(), job.layout.clone());
    m
}

fn image_shape(job: &Job, n: u64) -> [u64; 4] {
    let (c, h, w) = (
        u64::from(job.channels),
        u64::from(job.height),
        u64::from(job.width),
    );
    if job.layout == "nhwc" {
        [n, h, w, c]
    } else {
        [n, c, h, w]
    }
}

/// The safetensors header for a shard of `count` items, padded to 8 bytes.
fn shard_header(job: &Job, first: u64, count: u64, image_bytes: u64) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(shard_metadata(job, first, count))
            .map_err(|e| Error::Pipeline(e.to_string()))?,
    );
    header.insert(
        "images".into(),
        serde_json::json!({
            "dtype": job.dtype,
            "shape": image_shape(job, count),
            "data_offsets": [0, image_bytes],
        }),
    );
    header.insert(
        "labels".into(),
        serde_json::json!({
            "dtype": "I64",
            "shape": [count],
            "data_offsets": [image_bytes, image_bytes + 8 * count],
        }),
    );
    // serde_json's Map is sorted (BTreeMap), so the header is deterministic.
    let mut bytes = serde_json::to_vec(&header).map_err(|e| Error::Pipeline(e.to_string()))?;
    while bytes.len() % 8 != 0 {
        bytes.push(b' ');
    }
    Ok(bytes)
}

fn write_shard(
    dataset: &Dataset,
    path: &Path,
    job: &Job,
    cfg: &PrecomputeConfig,
    first: u64,
    count: u64,
) -> Result<u64> {
    let n = dataset.len();
    let sample_bytes = cfg.spec.sample_bytes();
    let mut images = vec![0u8; sample_bytes * count as usize];
    let labels: Vec<i64> = images
        .par_chunks_mut(sample_bytes)
        .enumerate()
        // One payload buffer (for pread mode) and one pixel buffer per worker.
        .map_init(
            || (Vec::new(), Vec::new()),
            |(buf, pixels), (k, out)| -> Result<i64> {
                let item = first + k as u64;
                let (copy, index) = (item / n, item % n);
                let record = dataset.read_record(index, buf)?;
                let params = cfg.policy.sample_hard(cfg.seed, copy, index);
                // Only the region the sample reads (exact: the same bits as a
                // whole-image decode).
                let (view, window) = decode_bytes_region_into(
                    record.bytes,
                    record.encoding,
                    record.shape,
                    cfg.spec.channels,
                    &DecodeLimits::default(),
                    &params.geometry,
                    cfg.spec.size,
                    RegionDecode::default(),
                    pixels,
                )
                .map_err(|e| {
                    Error::record(
                        dataset.shard_path(record.shard),
                        record.index,
                        e.to_string(),
                    )
                })?;
                let noise = PhiloxStream::new(cfg.seed, copy, index, STREAM_NOISE);
                augment_window_into(view, &window, &params, noise, &cfg.spec, out);
                Ok(record.label)
            },
        )
        .collect::<Result<_>>()?;
    let header = shard_header(job, first, count, images.len() as u64)?;
    let tmp = tmp_path(path);
    let write = || -> std::io::Result<()> {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        w.write_all(&images)?;
        for l in &labels {
            w.write_all(&l.to_le_bytes())?;
        }
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(path)?;
    Ok(8 + header.len() as u64 + images.len() as u64 + 8 * count)
}

/// Checks that an existing shard is the one this job would write (its
/// header and size); the payload was fsynced before the rename.
fn check_shard(path: &Path, job: &Job, first: u64, count: u64) -> Result<()> {
    let image_bytes = count * job_sample_bytes(job);
    let header = shard_header(job, first, count, image_bytes)?;
    let expected_len = 8 + header.len() as u64 + image_bytes + 8 * count;
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() != expected_len {
        return Err(Error::format(path, "size differs from the job's"));
    }
    let mut prefix = vec![0u8; 8 + header.len()];
    use std::io::Read;
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut prefix))
        .map_err(|e| Error::io(path, e))?;
    if prefix[..8] != (header.len() as u64).to_le_bytes() || prefix[8..] != header[..] {
        return Err(Error::format(path, "header differs from the job's"));
    }
    Ok(())
}

fn job_sample_bytes(job: &Job) -> u64 {
    let elem = match job.dtype.as_str() {
        "U8" => 1,
        "F16" => 2,
        _ => 4,
    };
    u64::from(job.channels) * u64::from(job.height) * u64::from(job.width) * elem
}

/// Writes `index.json` when every shard of the job is present.
fn finish_if_complete(out: &Path, job: &Job, shards: u64, total: u64) -> Result<bool> {
    let mut files = Vec::new();
    for s in 0..shards {
        let first = s * job.shard_items;
        let count = job.shard_items.min(total - first);
        let path = out.join(shard_name(s));
        if check_shard(&path, job, first, count).is_err() {
            return Ok(false);
        }
        files.push(serde_json::json!({"file": shard_name(s), "count": count}));
    }
    let index = serde_json::json!({
        "format": FORMAT,
        "version": 1,
        "total": total,
        "copies": job.copies,
        "source_records": job.source_records,
        "shards": files,
    });
    let text = serde_json::to_vec_pretty(&index).map_err(|e| Error::Pipeline(e.to_string()))?;
    write_atomic(&out.join("index.json"), &text)?;
    Ok(true)
}

/// Removes temporary files left by killed runs of this part (never another
/// part's, which may be running beside this one).
fn remove_stale_temporaries(out: &Path, part: Part) -> Result<()> {
    let entries = fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(out, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let shard = name
            .strip_prefix("aug-")
            .and_then(|rest| rest.split_once(".safetensors."))
            .filter(|(_, tail)| tail.ends_with(".tmp"))
            .and_then(|(num, _)| num.parse::<u64>().ok());
        if shard.is_some_and(|s| part.owns(s)) {
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename,
/// fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

//! IDX files (MNIST, Fashion-MNIST), gzipped or not.
//!
//! IDX: a 4-byte magic `0, 0, type, rank` (type `0x08` = unsigned byte),
//! `rank` big-endian u32 dimensions, then the data. Images are rank 3
//! (`count, rows, columns`), labels rank 1 (`count`). Gzip is detected by
//! its magic bytes. Images are read one at a time; nothing is allocated from
//! a count or dimension read from the file beyond what the file delivers:
//! memory use is constant (plus the writer's one shard).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

use super::probe::ImageLimits;
use crate::shard::{
    DatasetIndex, DatasetWriter, Encoding, ShardHook, WriterOptions, DEFAULT_SHARD_SIZE,
};
use crate::{Error, Result};

/// The Fashion-MNIST class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// [`FASHION_MNIST_CLASSES`] as owned names, for [`IdxOptions::classes`].
pub fn fashion_mnist_class_names() -> Vec<String> {
    FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Options of [`pack_idx`].
#[derive(Clone, Debug)]
pub struct IdxOptions {
    /// [`Encoding::Raw`] (pixels as is) or [`Encoding::Png`] (each image
    /// encoded as an 8-bit grey PNG, deterministically).
    pub encoding: Encoding,
    /// Class names; `None`: `"0"`, `"1"`, ... up to the largest label.
    pub classes: Option<Vec<String>>,
    /// Payload bytes per shard.
    pub shard_size: u64,
    /// Replace a dataset already in the output directory.
    pub overwrite: bool,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Largest image accepted.
    pub limits: ImageLimits,
    /// Called after each shard is written (see [`ShardHook`]).
    pub after_shard: Option<ShardHook>,
}

impl Default for IdxOptions {
    fn default() -> Self {
        IdxOptions {
            encoding: Encoding::Raw,
            classes: None,
            shard_size: DEFAULT_SHARD_SIZE,
            overwrite: false,
            progress: false,
            limits: ImageLimits::default(),
            after_shard: None,
        }
    }
}

/// An IDX file opened for streaming: its header, and a reader positioned at
/// the first item.
pub struct IdxFile {
    path: PathBuf,
    reader: Box<dyn Read>,
    /// Dimensions from the header (the first is the item count).
    pub dims: Vec<u32>,
}

impl IdxFile {
    /// Opens `path` (gzip or plain), reads and checks the header: unsigned
    /// byte data of the given `rank`.
    pub fn open(path: &Path, rank: u8) -> Result<IdxFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut buffered = BufReader::new(file);
        let start = buffered.fill_buf().map_err(|e| Error::io(path, e))?;
        let mut reader: Box<dyn Read> = if start.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        let mut magic = [0u8; 4];
        read_exact(&mut reader, &mut magic)
            .map_err(|e| idx_read_error(path, e, "the IDX header"))?;
        if magic[..2] != [0, 0] || magic[2] != 0x08 {
            return Err(Error::format(
                path,
                format!("not an unsigned-byte IDX file (magic {magic:02x?})"),
            ));
        }
        if magic[3] != rank {
            return Err(Error::format(
                path,
                format!(
                    "IDX file has {} dimensions, expected {rank} ({})",
                    magic[3],
                    if rank == 3 { "images" } else { "labels" }
                ),
            ));
        }
        let mut dims = Vec::with_capacity(rank as usize);
        for _ in 0..rank {
            let mut d = [0u8; 4];
            read_exact(&mut reader, &mut d)
                .map_err(|e| idx_read_error(path, e, "the IDX header"))?;
            dims.push(u32::from_be_bytes(d));
        }
        Ok(IdxFile {
            path: path.to_path_buf(),
            reader,
            dims,
        })
    }

    /// Number of items the header declares.
    pub fn count(&self) -> u64 {
        u64::from(self.dims[0])
    }

    /// Reads the next item of `size` bytes into `buf` (replacing its
    /// content); `item` is its index, for errors. The buffer grows only as
    /// data arrives, so a lying header cannot make it large.
    pub fn read_item(&mut self, buf: &mut Vec<u8>, size: u64, item: u64) -> Result<()> {
        buf.clear();
        (&mut self.reader)
            .take(size)
            .read_to_end(buf)
            .map_err(|e| Error::io(&self.path, e))?;
        if (buf.len() as u64) < size {
            return Err(Error::format(
                &self.path,
                format!(
                    "truncated: item {item} of {} ends after {} of its {size} bytes",
                    self.count(),
                    buf.len()
                ),
            ));
        }
        Ok(())
    }

    /// Checks that nothing follows the last item.
    pub fn expect_end(&mut self) -> Result<()> {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(Error::format(
                &self.path,
                format!(
                    "trailing data after the {} items the header declares",
                    self.count()
                ),
            )),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }
}

fn read_exact(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<()> {
    reader.read_exact(buf)
}

fn idx_read_error(path: &Path, e: std::io::Error, what: &str) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::format(path, format!("truncated: the file ends inside {what}"))
    } else {
        Error::io(path, e)
    }
}

/// Streams an IDX labels file (rank 1) once: checks that it holds exactly
/// the labels its header declares, and returns the largest label (`None`
/// when empty). Memory use is constant whatever the file claims.
pub fn scan_labels(path: &Path) -> Result<Option<u8>> {
    let mut file = IdxFile::open(path, 1)?;
    let count = file.count();
    let mut max = None;
    let mut chunk = Vec::with_capacity(1 << 16);
    let mut done = 0u64;
    while done < count {
        let size = (count - done).min(1 << 16);
        file.read_item(&mut chunk, size, done).map_err(|_| {
            Error::format(
                path,
                format!("truncated: the header declares {count} labels but the file holds fewer"),
            )
        })?;
        max = chunk.iter().copied().max().max(max);
        done += size;
    }
    file.expect_end()?;
    Ok(max)
}

/// Encodes a grey image as PNG, deterministically (fixed compression and
/// filter settings, no metadata chunks).
pub fn encode_png_grey(pixels: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive)
        .write_image(pixels, width, height, ExtendedColorType::L8)
        .map_err(|e| Error::Decode(format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

/// Packs an IDX images file and its labels file into a dataset at `out`.
/// Image `i` gets label `i`; records keep the file order.
pub fn pack_idx(
    images: &Path,
    labels: &Path,
    out: &Path,
    options: &IdxOptions,
) -> Result<DatasetIndex> {
    if options.encoding == Encoding::Jpeg {
        return Err(Error::invalid(
            "encoding",
            "IDX images can be stored raw or as PNG, not JPEG (lossy)",
        ));
    }
    let max_label = scan_labels(labels)?;
    let mut label_source = IdxFile::open(labels, 1)?;
    let mut source = IdxFile::open(images, 3)?;
    let (count, rows, cols) = (source.count(), source.dims[1], source.dims[2]);
    if count != label_source.count() {
        return Err(Error::format(
            images,
            format!(
                "count mismatch: {count} images but {} holds {} labels",
                labels.display(),
                label_source.count()
            ),
        ));
    }
    if rows == 0 || cols == 0 {
        return Err(Error::format(
            images,
            format!("images are {rows}x{cols} pixels"),
        ));
    }
    let size = u64::from(rows) * u64::from(cols);
    options
        .limits
        .check(cols, rows, size)
        .map_err(|e| Error::format(images, e))?;

    let classes = match &options.classes {
        Some(c) => {
            if let Some(m) = max_label.filter(|&m| usize::from(m) >= c.len()) {
                return Err(Error::invalid(
                    "classes",
                    format!(
                        "{} names given but {} holds label {m}",
                        c.len(),
                        labels.display()
                    ),
                ));
            }
            c.clone()
        }
        None => (0..=max_label.unwrap_or(0))
            .map(|l| l.to_string())
            .collect(),
    };

    let mut writer = DatasetWriter::create(
        out,
        WriterOptions {
            encoding: options.encoding,
            classes,
            shard_size: options.shard_size,
            overwrite: options.overwrite,
            after_shard: options.after_shard.clone(),
        },
    )?;
    let bar = super::progress_bar(options.progress, Some(count), "packing IDX");
    let mut pixels = Vec::new();
    let mut label_buf = Vec::with_capacity(1);
    for i in 0..count {
        source.read_item(&mut pixels, size, i)?;
        label_source.read_item(&mut label_buf, 1, i)?;
        let label = i64::from(label_buf[0]);
        let shape = [rows, cols, 1];
        match options.encoding {
            Encoding::Png => {
                let png = encode_png_grey(&pixels, cols, rows)?;
                writer.push(&png, label, shape)?;
            }
            _ => writer.push(&pixels, label, shape)?,
        }
        bar.inc(1);
    }
    source.expect_end()?;
    label_source.expect_end()?;
    bar.finish_and_clear();
    writer.finish()
}

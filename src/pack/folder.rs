//! Image folders: `root/<class>/<image>`, JPEG or PNG files.
//!
//! Classes are the sub-directories of `root`, sorted by name (bytes); label
//! `i` is the `i`-th class. Inside each class, files are sorted by name.
//! Names starting with `.` are skipped; files directly in `root` are
//! ignored (a `README` or `labels.csv` may sit there); anything else that is
//! not a JPEG or PNG file (by its magic bytes) is an error, as is a
//! directory inside a class. Symbolic links are followed. With
//! [`FolderOptions::flat`], the images directly in `root` form one class.
//!
//! Each file is stored byte for byte (no re-encoding): only its header is
//! read, with [`ImageLimits`], for the shape. The one exception is opt-in:
//! with [`FolderOptions::restart_markers`], a JPEG is stored rewritten
//! without loss with a restart marker after every MCU (same DCT
//! coefficients, same pixels, checked), so that the loader decodes a
//! sample's region without entropy-decoding the rest of the image (see
//! [`crate::decode::restart`]). A dataset has one encoding, so
//! a folder that mixes JPEG and PNG files is refused with an error naming
//! the first file that differs.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::probe::{probe, ImageLimits};
use crate::decode;
use crate::shard::{
    DatasetIndex, DatasetWriter, Encoding, ShardHook, WriterOptions, DEFAULT_SHARD_SIZE,
};
use crate::{Error, Result};

/// Options of [`pack_folder`].
#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// Payload bytes per shard.
    pub shard_size: u64,
    /// Replace a dataset already in the output directory.
    pub overwrite: bool,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Largest image accepted (checked from each file's header).
    pub limits: ImageLimits,
    /// Largest file accepted, in bytes.
    pub max_file_bytes: u64,
    /// Take the images directly in `root` as one class, named after `root`
    /// (for a flat folder such as `data/photos-png`), instead of one class
    /// per sub-folder.
    pub flat: bool,
    /// Called after each shard is written (see [`ShardHook`]).
    pub after_shard: Option<ShardHook>,
    /// Store each JPEG rewritten without loss with a restart marker after
    /// every MCU ([`crate::decode::with_restart_markers`]): about 6–8 %
    /// more bytes, and region decode reads only the region's MCUs, which
    /// pays for regions below about 60 % of the image and costs about 8 %
    /// for whole images (BENCHMARKS.md). A JPEG
    /// whose pixels the rewrite would change is stored as it is (none of
    /// the 300 photos of `shared/data/photos-jpeg` is).
    pub restart_markers: bool,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            shard_size: DEFAULT_SHARD_SIZE,
            overwrite: false,
            progress: false,
            limits: ImageLimits::default(),
            max_file_bytes: 256 << 20,
            flat: false,
            after_shard: None,
            restart_markers: false,
        }
    }
}

/// The classes of an image folder and its files with their labels, in
/// packing order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderListing {
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// `(file, label)` in order: by class, then by file name.
    pub files: Vec<(PathBuf, i64)>,
}

fn hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// File name extensions taken as images (case-insensitive). Other files
/// (a README, a labels.csv) are left out of the listing, as torchvision's
/// `ImageFolder` does; a file with one of these extensions that is not a
/// PNG or JPEG is still an error.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Entries of `dir` (name order, hidden ones left out), with whether each is
/// a directory (following links).
fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let is_dir = fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .is_dir();
        out.push((path, is_dir));
    }
    out.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()));
    Ok(out)
}

/// Lists the images directly in `root` as one class named after `root`
/// (sub-folders are ignored).
pub fn list_flat_folder(root: &Path) -> Result<FolderListing> {
    let name = fs::canonicalize(root)
        .map_err(|e| Error::io(root, e))?
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("images")
        .to_string();
    let files: Vec<(PathBuf, i64)> = sorted_entries(root)?
        .into_iter()
        .filter(|(p, is_dir)| !is_dir && is_image_name(p))
        .map(|(p, _)| (p, 0))
        .collect();
    Ok(FolderListing {
        classes: vec![name],
        files,
    })
}

/// Lists the classes and files of the image folder `root`.
pub fn list_folder(root: &Path) -> Result<FolderListing> {
    let mut classes = Vec::new();
    let mut files = Vec::new();
    for (class_dir, is_dir) in sorted_entries(root)? {
        if !is_dir {
            continue;
        }
        let name = class_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::format(&class_dir, "class folder name is not UTF-8"))?
            .to_string();
        let label = classes.len() as i64;
        classes.push(name);
        for (file, is_dir) in sorted_entries(&class_dir)? {
            if is_dir {
                return Err(Error::format(
                    &file,
                    "a folder inside a class folder (expected root/<class>/<image>)",
                ));
            }
            if is_image_name(&file) {
                files.push((file, label));
            }
        }
    }
    if classes.is_empty() {
        return Err(Error::format(
            root,
            "no class folders (expected root/<class>/<image>)",
        ));
    }
    Ok(FolderListing { classes, files })
}

/// Reads a whole file of at most `max` bytes.
fn read_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut data = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(path, e))?;
    if data.len() as u64 > max {
        return Err(Error::format(
            path,
            format!("file is larger than the limit of {max} bytes"),
        ));
    }
    Ok(data)
}

/// Detects the encoding of every file from its first bytes, before
/// anything is written: a non-image file or mixed encodings fail early.
fn folder_encoding(files: &[(PathBuf, i64)]) -> Result<Option<Encoding>> {
    let mut first: Option<(Encoding, &Path)> = None;
    for (path, _) in files {
        let mut magic = Vec::with_capacity(8);
        fs::File::open(path)
            .and_then(|f| f.take(8).read_to_end(&mut magic))
            .map_err(|e| Error::io(path, e))?;
        let encoding = Encoding::sniff(&magic)
            .ok_or_else(|| Error::format(path, "not a PNG or JPEG file (by its first bytes)"))?;
        match first {
            None => first = Some((encoding, path)),
            Some((enc, first_path)) if enc != encoding => {
                return Err(Error::format(
                    path,
                    format!(
                        "mixed encodings: this file is {encoding} but {} is {enc}; a dataset has one encoding (convert the files first)",
                        first_path.display()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(first.map(|f| f.0))
}

/// Packs the image folder `root` into a dataset at `out`.
pub fn pack_folder(root: &Path, out: &Path, options: &FolderOptions) -> Result<DatasetIndex> {
    let listing = if options.flat {
        list_flat_folder(root)?
    } else {
        list_folder(root)?
    };
    let encoding = folder_encoding(&listing.files)?
        .ok_or_else(|| Error::format(root, "no image files in the class folders"))?;
    let mut writer = DatasetWriter::create(
        out,
        WriterOptions {
            encoding,
            classes: listing.classes.clone(),
            shard_size: options.shard_size,
            overwrite: options.overwrite,
            after_shard: options.after_shard.clone(),
        },
    )?;
    let bar = super::progress_bar(
        options.progress,
        Some(listing.files.len() as u64),
        "packing images",
    );
    for (path, label) in &listing.files {
        let data = read_file(path, options.max_file_bytes)?;
        let (file_encoding, shape) =
            probe(&data, &options.limits).map_err(|e| Error::format(path, e))?;
        if file_encoding != encoding {
            return Err(Error::format(path, "file changed while packing"));
        }
        let data = if options.restart_markers && encoding == Encoding::Jpeg {
            let limits = options.limits.decode_limits();
            decode::with_restart_markers(&data, &limits)
                .map_err(|e| Error::format(path, e.to_string()))?
                .unwrap_or(data)
        } else {
            data
        };
        writer.push(&data, *label, shape)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    writer.finish()
}

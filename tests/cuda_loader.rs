//! The loader on a CUDA device: batches in device memory equal the CPU
//! loader's batches (within the contract's tolerances), with the same labels
//! and indices; without CUDA, `build()` says so clearly. On JPEG photos the
//! GPU path uploads only each sample's decoded region (and, with
//! `DecodeScale::Auto`, its DCT-scaled region), with its origin.

mod common;
mod cuda_common;

use std::sync::Arc;

use metaug::decode::{DecodeScale, RegionDecode};
use metaug::loader::{Device, Loader};
use metaug::ops::{DType, Layout};
use metaug::policy::Policy;
use metaug::shard::Dataset;
use metaug::Error;

#[test]
fn without_cuda_build_fails_with_a_clear_error() {
    if metaug::cuda::Device::new(0).is_ok() {
        eprintln!("a CUDA device is present: nothing to check here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ds = common::fmnist_small(dir.path());
    match Loader::builder(ds).device(Device::Cuda(0)).build() {
        Err(Error::Cuda(msg)) => assert!(!msg.is_empty()),
        Err(e) => panic!("expected a CUDA error, got {e}"),
        Ok(_) => panic!("a CUDA loader was built without CUDA"),
    }
}

#[test]
fn gpu_batches_match_the_cpu_loader() {
    if cuda_common::gpu("gpu_batches_match_the_cpu_loader").is_some() {
        batches_match_the_cpu_loader(None);
    }
}

/// The loader's CUDA path (decode pool, staging, the fused launch per batch,
/// device batches) on the CPU emulator, against the CPU loader.
#[test]
fn emulated_gpu_batches_match_the_cpu_loader() {
    let emu = cuda_common::emulator(0x5EED);
    batches_match_the_cpu_loader(Some(emu.clone()));
    cuda_common::report(&format!(
        "emulated_gpu_batches_match_the_cpu_loader: {} kernel launches on the emulator",
        emu.launches()
    ));
    assert!(emu.launches() >= 18);
}

/// The first `n` JPEG photos of `../shared/data`, packed flat into `dir`
/// (`None` when the data is not there).
fn jpeg_photos(dir: &std::path::Path, n: usize) -> Option<Dataset> {
    let src = common::shared_data().join("photos-jpeg");
    let mut files: Vec<_> = std::fs::read_dir(&src)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "JPEG"))
        .collect();
    files.sort();
    let flat = dir.join("in");
    std::fs::create_dir_all(&flat).unwrap();
    for f in files.iter().take(n) {
        std::fs::copy(f, flat.join(f.file_name().unwrap())).unwrap();
    }
    let options = metaug::pack::FolderOptions {
        flat: true,
        ..metaug::pack::FolderOptions::default()
    };
    metaug::pack::pack_folder(&flat, &dir.join("packed"), &options).unwrap();
    Some(Dataset::open(dir.join("packed")).unwrap())
}

#[test]
fn emulated_gpu_jpeg_regions_match_the_cpu_loader() {
    let dir = tempfile::tempdir().unwrap();
    let Some(ds) = jpeg_photos(dir.path(), 10) else {
        eprintln!("../shared/data/photos-jpeg not found: skipped");
        return;
    };
    let photos = Arc::new(ds);
    let emu = cuda_common::emulator(0xC0FFEE);
    for scale in [DecodeScale::Full, DecodeScale::Auto] {
        let mode = RegionDecode { crop: true, scale };
        batches_match(&photos, mode, Some(emu.clone()), 4);
    }
    assert!(emu.launches() >= 24);
}

#[test]
fn gpu_jpeg_regions_match_the_cpu_loader() {
    if cuda_common::gpu("gpu_jpeg_regions_match_the_cpu_loader").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(ds) = jpeg_photos(dir.path(), 40) else {
        eprintln!("../shared/data/photos-jpeg not found: skipped");
        return;
    };
    let photos = Arc::new(ds);
    for scale in [DecodeScale::Full, DecodeScale::Auto] {
        batches_match(&photos, RegionDecode { crop: true, scale }, None, 16);
    }
}

fn batches_match_the_cpu_loader(emulator: Option<metaug::cuda::Emulator>) {
    let dir = tempfile::tempdir().unwrap();
    let photos = Arc::new(common::photos_png(dir.path()));
    batches_match(&photos, RegionDecode::default(), emulator, 6);
}

fn batches_match(
    photos: &Arc<Dataset>,
    region: RegionDecode,
    emulator: Option<metaug::cuda::Emulator>,
    expect_batches: usize,
) {
    for (dtype, layout, size) in [
        (DType::F32, Layout::Nchw, (224, 224)),
        (DType::U8, Layout::Nhwc, (97, 131)),
        (DType::F16, Layout::Nchw, (64, 64)),
    ] {
        let build = |device: Device| {
            let builder = Loader::builder(photos.clone());
            let builder = match (&emulator, device) {
                (Some(emu), Device::Cuda(_)) => builder.emulated_device(emu.clone()),
                _ => builder,
            };
            builder
                .device(device)
                .batch_size(5)
                .size(size.0, size.1)
                .channels(3)
                .dtype(dtype)
                .layout(layout)
                .normalize(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
                .policy(Policy::default_policy())
                .region_decode(region)
                .seed(3)
                .epochs(2)
                .threads(4)
                .build()
                .unwrap()
        };
        let mut batches = 0;
        for (g, c) in build(Device::Cuda(0)).zip(build(Device::Cpu)) {
            let (g, c) = (g.unwrap(), c.unwrap());
            assert!(g.is_device() && !c.is_device());
            assert_eq!(g.labels(), c.labels());
            assert_eq!(g.indices(), c.indices());
            assert_eq!(g.shape(), c.shape());
            if emulator.is_none() {
                let dev = g.device().unwrap();
                assert_ne!(dev.device_ptr(), 0);
            }
            let host = g.to_host_bytes().unwrap();
            // Normalised range: (1 - 0) / 0.224 at most.
            cuda_common::assert_close(
                &format!("{dtype:?} {layout:?} batch {batches}"),
                &host,
                c.image_bytes(),
                dtype,
                1.0 / 0.224,
            );
            batches += 1;
        }
        assert_eq!(batches, expect_batches);
    }
}

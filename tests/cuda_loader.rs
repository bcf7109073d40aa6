//! The loader on a CUDA device: batches in device memory equal the CPU
//! loader's batches (within the contract's tolerances), with the same labels
//! and indices; without CUDA, `build()` says so clearly.

mod common;
mod cuda_common;

use std::sync::Arc;

use metaug::loader::{Device, Loader};
use metaug::ops::{DType, Layout};
use metaug::policy::Policy;
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
    eprintln!(
        "emulated_gpu_batches_match_the_cpu_loader: {} kernel launches on the emulator",
        emu.launches()
    );
    assert!(emu.launches() >= 18);
}

fn batches_match_the_cpu_loader(emulator: Option<metaug::cuda::Emulator>) {
    let dir = tempfile::tempdir().unwrap();
    let photos = Arc::new(common::photos_png(dir.path()));
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
        assert_eq!(batches, 6);
    }
}

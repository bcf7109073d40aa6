//! Batches as tch (libtorch) tensors: every dtype and layout
//! gives a tensor of the batch's shape whose elements are the batch's (read
//! back through libtorch), labels as Int64, a tensor that outlives its batch
//! and the loader's later batches unchanged, and a device batch refused with
//! a clear error.

#[path = "../../../tests/cuda_common/mod.rs"]
mod cuda_common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use metaug::loader::Loader;
use metaug::ops::{DType, Layout};
use metaug::pack::{pack_folder, pack_idx, FolderOptions, IdxOptions};
use metaug::policy::Policy;
use metaug::shard::Dataset;
use metaug_tch::BatchExt;
use tch::{Device, Kind};

/// metaug's repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The 13 bundled PNG photographs, packed into `dir`.
fn photos_png(dir: &Path) -> Dataset {
    let options = FolderOptions {
        flat: true,
        shard_size: 1 << 20,
        ..FolderOptions::default()
    };
    pack_folder(&repo().join("data/photos-png"), dir, &options).expect("pack the bundled PNGs");
    Dataset::open(dir).expect("open the packed photos")
}

/// The bundled Fashion-MNIST training subset, packed into `dir`.
fn fmnist_small(dir: &Path) -> Dataset {
    let src = repo().join("data/fashion-mnist-small");
    pack_idx(
        &src.join("train-images-idx3-ubyte.gz"),
        &src.join("train-labels-idx1-ubyte.gz"),
        dir,
        &IdxOptions::default(),
    )
    .expect("pack the bundled Fashion-MNIST subset");
    Dataset::open(dir).expect("open the packed dataset")
}

fn loader(ds: Arc<metaug::shard::Dataset>, dtype: DType, layout: Layout) -> Loader {
    Loader::builder(ds)
        .batch_size(4)
        .size(24, 40)
        .channels(3)
        .dtype(dtype)
        .layout(layout)
        .policy(Policy::default_policy())
        .seed(5)
        .build()
        .unwrap()
}

/// The tensor's elements as bytes in the batch's dtype, read by libtorch.
fn tensor_bytes(x: &tch::Tensor, dtype: DType) -> Vec<u8> {
    let flat = x.flatten(0, -1);
    let n = flat.numel();
    match dtype {
        DType::U8 => {
            let mut v = vec![0u8; n];
            flat.copy_data_u8(&mut v, n);
            v
        }
        // libtorch widens f16 to f32 exactly; narrow it back to compare bits
        DType::F16 => {
            let mut v = vec![0f32; n];
            flat.to_kind(Kind::Float).copy_data(&mut v, n);
            let h: Vec<half::f16> = v.iter().map(|&f| half::f16::from_f32(f)).collect();
            bytemuck::cast_slice(&h).to_vec()
        }
        DType::F32 => {
            let mut v = vec![0f32; n];
            flat.copy_data(&mut v, n);
            bytemuck::cast_slice(&v).to_vec()
        }
    }
}

#[test]
fn every_dtype_and_layout_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let photos = Arc::new(photos_png(dir.path()));
    for dtype in [DType::U8, DType::F16, DType::F32] {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let batch = loader(photos.clone(), dtype, layout)
                .next()
                .unwrap()
                .unwrap();
            let x = batch.images_tensor(Device::Cpu).unwrap();
            let shape: Vec<i64> = batch.shape().iter().map(|&d| d as i64).collect();
            assert_eq!(x.size(), shape, "{dtype:?} {layout:?}");
            assert_eq!(x.kind(), metaug_tch::tch_kind(dtype));
            assert!(
                tensor_bytes(&x, dtype) == batch.image_bytes(),
                "{dtype:?} {layout:?}: elements differ"
            );
            // one element by index, through libtorch's own indexing
            let [_, a, b, c] = batch.shape();
            let idx = [shape[0] - 1, a as i64 / 2, b as i64 - 1, c as i64 / 3];
            let at = ((idx[0] as usize * a + idx[1] as usize) * b + idx[2] as usize) * c
                + idx[3] as usize;
            let want = match dtype {
                DType::U8 => batch.images_u8().unwrap()[at] as f64,
                DType::F16 => batch.images_f16().unwrap()[at].to_f64(),
                DType::F32 => batch.images_f32().unwrap()[at] as f64,
            };
            assert_eq!(x.double_value(&idx), want, "{dtype:?} {layout:?}");
            let y = batch.labels_tensor(Device::Cpu).unwrap();
            assert_eq!(y.kind(), Kind::Int64);
            assert_eq!(Vec::<i64>::from(&y), batch.labels());
        }
    }
}

#[test]
fn a_tensor_outlives_its_batch_unchanged() {
    // The tensor is libtorch's own copy: dropping the batch hands its buffer
    // back to the loader, whose next batches overwrite it, and the tensor
    // still holds the first batch's elements.
    let dir = tempfile::tempdir().unwrap();
    let photos = Arc::new(photos_png(dir.path()));
    let mut batches = loader(photos, DType::F32, Layout::Nchw);
    let first = batches.next().unwrap().unwrap();
    let kept = first.image_bytes().to_vec();
    let x = first.images_tensor(Device::Cpu).unwrap();
    drop(first);
    for later in batches.by_ref().take(6) {
        drop(later.unwrap());
    }
    assert!(tensor_bytes(&x, DType::F32) == kept);
}

#[test]
fn an_emulated_device_batch_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(fmnist_small(dir.path()));
    let emu = cuda_common::emulator(0);
    let batch = Loader::builder(ds)
        .batch_size(8)
        .emulated_device(emu)
        .device(metaug::loader::Device::Cuda(0))
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert!(batch.is_device());
    let e = batch.images_tensor(Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("device memory"), "{e}");
}

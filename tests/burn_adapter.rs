//! Batches in burn (feature `burn`): tensors of every dtype and layout hold
//! the batch's values; `BurnLoader` is a burn `DataLoader` whose epochs are
//! the metaug loader's epochs batch for batch, whose slices split an epoch
//! without gaps or overlaps, and whose errors arrive as burn's
//! `DatasetError` items; a device batch is refused with a clear error.

mod common;
mod cuda_common;

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::tensor::Device;
use metaug::adapters::burn::{BatchExt, BurnLoader};
use metaug::loader::{Batch, Loader};
use metaug::ops::{DType, Layout};
use metaug::policy::Policy;

/// The batch's images as f32, whatever its dtype.
fn batch_values(batch: &Batch) -> Vec<f32> {
    match batch.dtype() {
        DType::U8 => batch
            .images_u8()
            .unwrap()
            .iter()
            .map(|&b| b as f32)
            .collect(),
        DType::F16 => batch
            .images_f16()
            .unwrap()
            .iter()
            .map(|h| h.to_f32())
            .collect(),
        DType::F32 => batch.images_f32().unwrap().to_vec(),
    }
}

/// Every batch of the loader `builder` builds, as values and labels.
fn loader_values(builder: metaug::loader::LoaderBuilder) -> Vec<(Vec<f32>, Vec<i64>)> {
    builder
        .build()
        .unwrap()
        .map(|b| {
            let b = b.unwrap();
            (batch_values(&b), b.labels().to_vec())
        })
        .collect()
}

fn tensor_values<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[test]
fn every_dtype_and_layout_gives_the_batch_values() {
    let dir = tempfile::tempdir().unwrap();
    let photos = Arc::new(common::photos_png(dir.path()));
    let device = Device::flex();
    for dtype in [DType::U8, DType::F16, DType::F32] {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let batch = Loader::builder(photos.clone())
                .batch_size(4)
                .size(24, 40)
                .channels(3)
                .dtype(dtype)
                .layout(layout)
                .policy(Policy::default_policy())
                .seed(5)
                .build()
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            let x = batch.images_tensor(&device).unwrap();
            assert_eq!(x.dims(), batch.shape(), "{dtype:?} {layout:?}");
            assert!(
                tensor_values(x) == batch_values(&batch),
                "{dtype:?} {layout:?}: elements differ"
            );
            let y = batch.labels_tensor(&device).unwrap();
            let labels = y.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
            assert_eq!(labels, batch.labels());
        }
    }
}

#[test]
fn epochs_and_slices_are_the_loaders_batches() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(common::fmnist_small(dir.path()));
    let builder = Loader::builder(ds.clone())
        .batch_size(300)
        .policy(Policy::default_policy())
        .threads(2)
        .seed(9)
        .epoch(3);
    let device = Device::flex();
    let burn = BurnLoader::new(builder.clone(), &device).unwrap();
    assert_eq!(burn.num_items(), 2000);
    assert_eq!(burn.next_epoch(), 3);
    // The metaug loader's epochs 3 and 4, as values and labels.
    let expected = loader_values(builder.clone().epochs(2));
    let per_epoch = expected.len() / 2;
    assert_eq!(per_epoch, 7);
    let as_values = |loader: &dyn DataLoader<metaug::adapters::burn::ImageBatch>| {
        let mut iter = loader.iter();
        let mut out = Vec::new();
        for batch in iter.by_ref() {
            let batch = batch.unwrap();
            let labels = batch
                .targets
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .unwrap();
            out.push((tensor_values(batch.images), labels));
        }
        let progress = iter.progress();
        assert!(progress.is_completed(), "{progress:?}");
        out
    };
    assert!(as_values(&burn) == expected[..per_epoch], "epoch 3");
    // Slices of the next epoch (4): items 0..1000 and 1000..2000 are whole
    // batches 0..4 and 3..7 (batch 3 holds items 900..1200), so they
    // overlap by one batch; 0..900 and 900..2000 split it exactly.
    let (a, b) = (burn.slice(0, 900), burn.slice(900, 2000));
    assert_eq!((a.num_items(), b.num_items()), (900, 1100));
    let (va, vb) = (as_values(a.as_ref()), as_values(b.as_ref()));
    assert_eq!(burn.next_epoch(), 6, "slices share the epoch counter");
    // a ran epoch 4 and b epoch 5: compare b with a fresh loader's epoch 5.
    assert!(
        va == expected[per_epoch..per_epoch + 3],
        "slice 0..900 of epoch 4"
    );
    let epoch5 = loader_values(builder.epoch(5));
    assert!(vb == epoch5[3..], "slice 900..2000 of epoch 5");
    assert_eq!(burn.slice(950, 1000).num_items(), 300, "inside one batch");
    assert_eq!(burn.slice(10, 10).num_items(), 0);
}

#[test]
fn a_bad_record_is_a_dataset_error_item_and_ends_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let ds = common::fmnist_small(dir.path());
    // Corrupt one payload byte of the first shard (the crc32c catches it).
    let shard = ds.shard_path(0).to_path_buf();
    drop(ds);
    let mut bytes = std::fs::read(&shard).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    let ds = Arc::new(metaug::shard::Dataset::open(dir.path()).unwrap());
    let burn = BurnLoader::new(
        Loader::builder(ds).batch_size(100).threads(2),
        &Device::flex(),
    )
    .unwrap();
    let items: Vec<_> = burn.iter().collect();
    let err = items
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("an error item")
        .to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains("shard-00000"),
        "{err}"
    );
    assert!(items.last().unwrap().is_err(), "nothing after the error");
}

#[test]
fn an_emulated_device_batch_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(common::fmnist_small(dir.path()));
    let batch = Loader::builder(ds)
        .batch_size(8)
        .emulated_device(cuda_common::emulator(0))
        .device(metaug::loader::Device::Cuda(0))
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let e = batch
        .images_tensor(&Device::flex())
        .unwrap_err()
        .to_string();
    assert!(e.contains("device memory"), "{e}");
}

//! Batches as candle tensors (feature `candle`): every dtype and layout
//! gives a tensor of the batch's shape whose elements are the batch's, and
//! labels as i64; a device batch is refused with a clear error.

mod common;
mod cuda_common;

use std::sync::Arc;

use candle_core::{DType as CDType, Device};
use metaug::adapters::candle::BatchExt;
use metaug::loader::Loader;
use metaug::ops::{DType, Layout};
use metaug::policy::Policy;

#[test]
fn every_dtype_and_layout_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let photos = Arc::new(common::photos_png(dir.path()));
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
            let x = batch.images_tensor(&Device::Cpu).unwrap();
            assert_eq!(x.dims(), batch.shape().as_slice(), "{dtype:?} {layout:?}");
            let bytes: Vec<u8> = match dtype {
                DType::U8 => {
                    assert_eq!(x.dtype(), CDType::U8);
                    x.flatten_all().unwrap().to_vec1::<u8>().unwrap()
                }
                DType::F16 => {
                    assert_eq!(x.dtype(), CDType::F16);
                    let v = x.flatten_all().unwrap().to_vec1::<half::f16>().unwrap();
                    bytemuck::cast_slice(&v).to_vec()
                }
                DType::F32 => {
                    assert_eq!(x.dtype(), CDType::F32);
                    let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    bytemuck::cast_slice(&v).to_vec()
                }
            };
            assert!(
                bytes == batch.image_bytes(),
                "{dtype:?} {layout:?}: elements differ"
            );
            // one element by index, through candle's own indexing
            let [n, a, b, c] = batch.shape();
            let (i0, i1, i2, i3) = (n - 1, a / 2, b - 1, c / 3);
            let at = ((i0 * a + i1) * b + i2) * c + i3;
            let e = x
                .get(i0)
                .unwrap()
                .get(i1)
                .unwrap()
                .get(i2)
                .unwrap()
                .get(i3)
                .unwrap();
            let want = match dtype {
                DType::U8 => batch.images_u8().unwrap()[at] as f64,
                DType::F16 => batch.images_f16().unwrap()[at].to_f64(),
                DType::F32 => batch.images_f32().unwrap()[at] as f64,
            };
            let got = e.to_dtype(CDType::F64).unwrap().to_scalar::<f64>().unwrap();
            assert_eq!(got, want);
            let y = batch.labels_tensor(&Device::Cpu).unwrap();
            assert_eq!(y.dtype(), CDType::I64);
            assert_eq!(y.to_vec1::<i64>().unwrap(), batch.labels());
        }
    }
}

#[test]
fn an_emulated_device_batch_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(common::fmnist_small(dir.path()));
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
    let e = batch.images_tensor(&Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("device memory"), "{e}");
}

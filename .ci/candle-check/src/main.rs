//! Both crates in one binary: metaug's CUDA probe and candle's CPU tensor.
fn main() {
    let t = candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &candle_core::Device::Cpu)
        .expect("tensor");
    println!(
        "candle tensor {:?}; metaug sees CUDA: {:?}",
        t.shape(),
        metaug::cuda::driver_available().is_ok()
    );
}

//! Training with candle on metaug batches (feature `candle`): a 784-128-10
//! MLP in `candle_core` (its autograd, plain SGD) learns the bundled
//! Fashion-MNIST from the prefetching loader's augmented batches, which
//! arrive as `candle_core::Tensor`s through `metaug::adapters::candle`.
//! Prints the loss every 50 steps and the test accuracy at the end; exits
//! non-zero if the loss did not fall.
//!
//! ```sh
//! cargo run --release --features candle --example candle_train          # 300 steps
//! cargo run --release --features candle --example candle_train -- 1000  # steps
//! ```

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var, D};
use metaug::adapters::candle::BatchExt;
use metaug::loader::Loader;
use metaug::pack::{fashion_mnist_class_names, pack_idx, IdxOptions};
use metaug::policy::Policy;
use metaug::shard::Dataset;

fn pack(dir: &std::path::Path, split: &str) -> metaug::Result<Dataset> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist-small");
    let out = dir.join(split);
    pack_idx(
        &src.join(format!("{split}-images-idx3-ubyte.gz")),
        &src.join(format!("{split}-labels-idx1-ubyte.gz")),
        &out,
        &IdxOptions {
            classes: Some(fashion_mnist_class_names()),
            overwrite: true,
            ..IdxOptions::default()
        },
    )?;
    Dataset::open(&out)
}

/// Mean cross-entropy of `logits` `[n, 10]` against `labels` `[n]` (i64),
/// through a numerically stable log-softmax.
fn cross_entropy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_p = shifted.broadcast_sub(&log_z)?;
    let picked = log_p.gather(&labels.unsqueeze(1)?, 1)?;
    picked.mean_all()?.neg()
}

struct Mlp {
    w1: Var,
    b1: Var,
    w2: Var,
    b2: Var,
}

impl Mlp {
    /// Glorot-uniform weights from a fixed xorshift stream (candle's CPU
    /// generator cannot be seeded), so that a run is reproducible.
    fn new(dev: &Device) -> candle_core::Result<Mlp> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut init = |rows: usize, cols: usize| {
            let bound = (6.0 / (rows + cols) as f64).sqrt();
            let values: Vec<f32> = (0..rows * cols)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                    ((2.0 * u - 1.0) * bound) as f32
                })
                .collect();
            Var::from_tensor(&Tensor::from_vec(values, (rows, cols), dev)?)
        };
        Ok(Mlp {
            w1: init(784, 128)?,
            b1: Var::zeros(128, DType::F32, dev)?,
            w2: init(128, 10)?,
            b2: Var::zeros(10, DType::F32, dev)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = x.matmul(&self.w1)?.broadcast_add(&self.b1)?.relu()?;
        h.matmul(&self.w2)?.broadcast_add(&self.b2)
    }

    fn vars(&self) -> [&Var; 4] {
        [&self.w1, &self.b1, &self.w2, &self.b2]
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("steps: a whole number"))
        .unwrap_or(300);
    let dev = Device::Cpu;
    let dir = std::env::temp_dir().join(format!("metaug-candle-{}", std::process::id()));
    let train = Arc::new(pack(&dir, "train")?);
    let test = Arc::new(pack(&dir, "t10k")?);
    let model = Mlp::new(&dev)?;
    let loader = Loader::builder(train.clone())
        .batch_size(64)
        .normalize(vec![0.286], vec![0.353])
        .policy(Policy::default_policy())
        .threads(2)
        .seed(1)
        .epochs(u64::MAX / 2)
        .build()?;
    println!(
        "candle: training a 784-128-10 MLP on {} augmented Fashion-MNIST images, {steps} steps",
        train.len()
    );
    let (mut window, mut first, mut last) = (Vec::new(), None, 0.0f32);
    for (step, batch) in loader.take(steps).enumerate() {
        let batch = batch?;
        // [64, 1, 28, 28] f32 and [64] i64, straight from the batch
        let x = batch.images_tensor(&dev)?.flatten_from(1)?;
        let y = batch.labels_tensor(&dev)?;
        drop(batch); // its buffer goes back to the loader now
        let loss = cross_entropy(&model.forward(&x)?, &y)?;
        let grads = loss.backward()?;
        for v in model.vars() {
            let g = grads.get(v).expect("a gradient for every parameter");
            v.set(&v.as_tensor().sub(&(g * 0.1)?)?)?;
        }
        window.push(loss.to_scalar::<f32>()?);
        if window.len() == 50 || step + 1 == steps {
            let mean = window.iter().sum::<f32>() / window.len() as f32;
            println!("step {:>4}: mean loss {mean:.4}", step + 1);
            first.get_or_insert(mean);
            last = mean;
            window.clear();
        }
    }
    let test_batch = Loader::builder(test.clone())
        .batch_size(test.len() as usize)
        .normalize(vec![0.286], vec![0.353])
        .shuffle(false)
        .build()?
        .next()
        .expect("one batch")?;
    let x = test_batch.images_tensor(&dev)?.flatten_from(1)?;
    let y = test_batch.labels_tensor(&dev)?;
    let predicted = model.forward(&x)?.argmax(D::Minus1)?.to_dtype(DType::I64)?;
    let correct = predicted
        .eq(&y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    println!(
        "test accuracy {:.2}% on {} images",
        100.0 * correct / test.len() as f32,
        test.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    let first = first.unwrap_or(f32::NAN);
    if first.is_nan() || last.is_nan() || last >= first {
        return Err(format!("the loss did not fall: {first} -> {last}").into());
    }
    println!("loss fell from {first:.4} to {last:.4}");
    Ok(())
}

//! Training with tch (libtorch) on metaug batches (the companion crate `metaug-tch`): a
//! 784-128-10 MLP in `tch::nn` (libtorch's autograd, plain SGD) learns the
//! bundled Fashion-MNIST from the prefetching loader's augmented batches,
//! which arrive as `tch::Tensor`s through `metaug_tch`. Prints
//! the loss every 50 steps and the test accuracy at the end; exits non-zero
//! if the loss did not fall.
//!
//! ```sh
//! # libtorch 1.13 on the machine, e.g. Debian 12: apt-get install libtorch-dev
//! cd adapters/tch
//! LIBTORCH=/usr cargo run --release --example tch_train          # 300 steps
//! LIBTORCH=/usr cargo run --release --example tch_train -- 1000  # steps
//! ```

use std::sync::Arc;

use metaug::loader::Loader;
use metaug::pack::{fashion_mnist_class_names, pack_idx, IdxOptions};
use metaug::policy::Policy;
use metaug::shard::Dataset;
use metaug_tch::BatchExt;
use tch::nn::{self, Module, OptimizerConfig};
use tch::Device;

fn pack(dir: &std::path::Path, split: &str) -> metaug::Result<Dataset> {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fashion-mnist-small");
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("steps: a whole number"))
        .unwrap_or(300);
    // The loader's two decode threads do the augmentation; libtorch's own
    // pool is kept to one thread so the two do not fight over the cores.
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let dev = Device::Cpu;
    let dir = std::env::temp_dir().join(format!("metaug-tch-{}", std::process::id()));
    let train = Arc::new(pack(&dir, "train")?);
    let test = Arc::new(pack(&dir, "t10k")?);
    let vs = nn::VarStore::new(dev);
    let root = vs.root();
    let model = nn::seq()
        .add(nn::linear(&root / "fc1", 784, 128, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "fc2", 128, 10, Default::default()));
    let mut sgd = nn::Sgd::default().build(&vs, 0.1)?;
    let loader = Loader::builder(train.clone())
        .batch_size(64)
        .normalize(vec![0.286], vec![0.353])
        .policy(Policy::default_policy())
        .threads(2)
        .seed(1)
        .epochs(u64::MAX / 2)
        .build()?;
    println!(
        "tch: training a 784-128-10 MLP on {} augmented Fashion-MNIST images, {steps} steps",
        train.len()
    );
    let (mut window, mut first, mut last) = (Vec::new(), None, 0.0f64);
    for (step, batch) in loader.take(steps).enumerate() {
        let batch = batch?;
        // [64, 1, 28, 28] Float and [64] Int64, from the batch
        let x = batch.images_tensor(dev)?.flatten(1, -1);
        let y = batch.labels_tensor(dev)?;
        drop(batch); // its buffer goes back to the loader now
        let loss = model.forward(&x).cross_entropy_for_logits(&y);
        sgd.backward_step(&loss);
        window.push(loss.double_value(&[]));
        if window.len() == 50 || step + 1 == steps {
            let mean = window.iter().sum::<f64>() / window.len() as f64;
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
    let x = test_batch.images_tensor(dev)?.flatten(1, -1);
    let y = test_batch.labels_tensor(dev)?;
    let accuracy = tch::no_grad(|| model.forward(&x).accuracy_for_logits(&y));
    println!(
        "test accuracy {:.2}% on {} images",
        100.0 * accuracy.double_value(&[]),
        test.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    let first = first.unwrap_or(f64::NAN);
    if first.is_nan() || last.is_nan() || last >= first {
        return Err(format!("the loss did not fall: {first} -> {last}").into());
    }
    println!("loss fell from {first:.4} to {last:.4}");
    Ok(())
}

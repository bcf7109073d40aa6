//! Training with burn on metaug batches (feature `burn`): a 784-128-10 MLP
//! (burn's `Linear` layers, its autodiff and Adam, on the Flex CPU backend)
//! learns the bundled Fashion-MNIST from metaug's prefetching loader, which
//! it reads as a burn `DataLoader` (`metaug::adapters::burn::BurnLoader`):
//! one `iter()` per epoch, like burn's own loaders. Prints the loss every 50
//! steps and the test accuracy at the end; exits non-zero if the loss did
//! not fall.
//!
//! ```sh
//! cargo run --release --features burn --example burn_train          # 300 steps
//! cargo run --release --features burn --example burn_train -- 1000  # steps
//! ```

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use metaug::adapters::burn::{BatchExt, BurnLoader};
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

#[derive(Module, Debug)]
struct Mlp {
    hidden: Linear,
    activation: Relu,
    output: Linear,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Mlp {
            hidden: LinearConfig::new(784, 128).init(device),
            activation: Relu::new(),
            output: LinearConfig::new(128, 10).init(device),
        }
    }

    /// `[n, 1, 28, 28]` images to `[n, 10]` logits.
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = images.flatten::<2>(1, 3);
        self.output
            .forward(self.activation.forward(self.hidden.forward(x)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("steps: a whole number"))
        .unwrap_or(300);
    let device = Device::flex().autodiff();
    device.seed(1);
    let dir = std::env::temp_dir().join(format!("metaug-burn-{}", std::process::id()));
    let train = Arc::new(pack(&dir, "train")?);
    let test = Arc::new(pack(&dir, "t10k")?);
    let loader = BurnLoader::new(
        Loader::builder(train.clone())
            .batch_size(64)
            .normalize(vec![0.286], vec![0.353])
            .policy(Policy::default_policy())
            .threads(2)
            .seed(1),
        &device,
    )?;
    let mut model = Mlp::new(&device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    println!(
        "burn: training a 784-128-10 MLP on {} augmented Fashion-MNIST images, {steps} steps",
        loader.num_items()
    );
    let (mut step, mut window, mut first, mut last) = (0, Vec::new(), None, 0.0f32);
    'epochs: loop {
        for batch in loader.iter() {
            let batch = batch?;
            let logits = model.forward(batch.images);
            let loss = loss_fn.forward(logits, batch.targets);
            window.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
            step += 1;
            if window.len() == 50 || step == steps {
                let mean = window.iter().sum::<f32>() / window.len() as f32;
                println!("step {step:>4}: mean loss {mean:.4}");
                first.get_or_insert(mean);
                last = mean;
                window.clear();
            }
            if step == steps {
                break 'epochs;
            }
        }
    }
    let test_batch = Loader::builder(test.clone())
        .batch_size(test.len() as usize)
        .normalize(vec![0.286], vec![0.353])
        .shuffle(false)
        .build()?
        .next()
        .expect("one batch")?;
    let predicted = model
        .forward(test_batch.images_tensor(&device)?)
        .argmax(1)
        .squeeze_dim::<1>(1);
    let correct = predicted
        .equal(test_batch.labels_tensor(&device)?)
        .int()
        .sum()
        .into_scalar::<i64>();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "test accuracy: {:.1} % of {} held-out images",
        100.0 * correct as f64 / test.len() as f64,
        test.len()
    );
    let first = first.unwrap_or(last);
    if last >= first {
        return Err(format!("the loss did not fall: {first:.4} -> {last:.4}").into());
    }
    println!("loss fell from {first:.4} to {last:.4}");
    Ok(())
}

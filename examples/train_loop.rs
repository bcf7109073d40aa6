//! A real training loop on the prefetching `Loader`: an MLP (the meta
//! engine's, trained with plain SGD) learns Fashion-MNIST from augmented
//! batches, with test accuracy after every epoch.
//!
//! ```sh
//! cargo run --release --example train_loop            # bundled data (2,000 / 1,000 images)
//! cargo run --release --example train_loop -- 5       # epochs
//! ```

use std::sync::Arc;
use std::time::Instant;

use metaug::loader::Loader;
use metaug::meta::mlp::Activation;
use metaug::meta::model::Model;
use metaug::meta::tensor::Tensor;
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

/// Flattens a batch to `[n, 784]` and its labels.
fn as_tensor(batch: &metaug::loader::Batch) -> (Tensor<f32>, Vec<usize>) {
    let x = batch.images_f32().expect("f32 batch").to_vec();
    let n = batch.len();
    let labels = batch.labels().iter().map(|&l| l as usize).collect();
    (Tensor::new(&[n, x.len() / n.max(1)], x), labels)
}

fn main() -> metaug::Result<()> {
    let epochs: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("epochs: a whole number"))
        .unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("metaug-train-loop-{}", std::process::id()));
    let train = Arc::new(pack(&dir, "train")?);
    let test = Arc::new(pack(&dir, "t10k")?);

    // The whole test set as one f32 batch, no augmentation.
    let test_batch = Loader::builder(test.clone())
        .batch_size(test.len() as usize)
        .shuffle(false)
        .build()?
        .next()
        .expect("one batch")?;
    let (x_test, y_test) = as_tensor(&test_batch);

    let mut model = Model::<f32>::mlp(&[784, 256, 10], Activation::Relu, 0);
    let loader = Loader::builder(train.clone())
        .batch_size(64)
        .policy(Policy::default_policy())
        .threads(2)
        .prefetch(4)
        .seed(1)
        .epochs(epochs)
        .build()?;
    println!(
        "training a 784-256-10 MLP on {} augmented Fashion-MNIST images, {} epochs",
        train.len(),
        epochs
    );
    let mut epoch = None;
    let (mut loss_sum, mut steps) = (0.0f64, 0u32);
    let mut t = Instant::now();
    let report = |e: u64, loss: f64, secs: f64, model: &Model<f32>| {
        println!(
            "epoch {e}: train loss {loss:.4}, test accuracy {:.2}% ({secs:.2} s)",
            100.0 * model.accuracy(&x_test, &y_test)
        );
    };
    for batch in loader {
        let batch = batch?;
        let e = batch.position().epoch;
        if epoch.is_some_and(|prev| prev != e) {
            report(
                e - 1,
                loss_sum / f64::from(steps),
                t.elapsed().as_secs_f64(),
                &model,
            );
            (loss_sum, steps, t) = (0.0, 0, Instant::now());
        }
        epoch = Some(e);
        let (x, y) = as_tensor(&batch);
        loss_sum += f64::from(model.sgd_step(&x, &y, 0.05));
        steps += 1;
    }
    if let Some(e) = epoch {
        report(
            e,
            loss_sum / f64::from(steps),
            t.elapsed().as_secs_f64(),
            &model,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

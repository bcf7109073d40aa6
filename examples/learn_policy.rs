//! Learning an augmentation policy from Rust: MAML (exact second-order
//! hypergradient) and Reptile (first order) on the bundled Fashion-MNIST
//! subset, each printing the policy it learned; the MAML one is saved.
//!
//! ```sh
//! cargo run --release --example learn_policy
//! ```

use metaug::meta::train::Method;
use metaug::meta::{image_set, learn_policy, LearnConfig};
use metaug::pack::{pack_idx, IdxOptions};
use metaug::shard::Dataset;

fn main() -> metaug::Result<()> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist-small");
    let dir = std::env::temp_dir().join(format!("metaug-learn-policy-{}", std::process::id()));
    pack_idx(
        &src.join("train-images-idx3-ubyte.gz"),
        &src.join("train-labels-idx1-ubyte.gz"),
        &dir,
        &IdxOptions {
            overwrite: true,
            ..IdxOptions::default()
        },
    )?;
    let dataset = Dataset::open(&dir)?;
    let set = image_set(&dataset, 2000, None, None)?;
    for method in [Method::Maml, Method::Reptile] {
        let mut cfg = LearnConfig::default();
        cfg.train.steps = 400;
        cfg.meta.method = method;
        let learned = learn_policy(&set.images, &set.labels, &cfg, &mut |_, _| {})?;
        println!(
            "{method:?}: {} meta steps\n{}",
            learned.history.len(),
            learned.policy().describe()
        );
        if method == Method::Maml {
            let path = std::env::temp_dir().join("metaug-example-policy.safetensors");
            learned.policy().save(&path)?;
            println!("saved to {} (use it with --policy)", path.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

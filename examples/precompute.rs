//! Precomputing augmented copies from Rust, in two parts as two array-job
//! tasks would, then reading one output shard back with the `safetensors`
//! crate.
//!
//! ```sh
//! cargo run --release --example precompute
//! ```

use std::sync::atomic::AtomicBool;

use metaug::ops::{DType, Layout, OutputSpec, Size};
use metaug::pack::{pack_folder, FolderOptions};
use metaug::policy::Policy;
use metaug::precompute::{precompute, shard_name, Part, PrecomputeConfig};
use metaug::shard::Dataset;

fn main() -> metaug::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("metaug-precompute-{}", std::process::id()));
    let packed = work.join("photos");
    pack_folder(
        &root.join("data/photos-png"),
        &packed,
        &FolderOptions {
            flat: true,
            overwrite: true,
            ..FolderOptions::default()
        },
    )?;
    let dataset = Dataset::open(&packed)?;
    let out = work.join("augmented");
    for index in 1..=2 {
        let cfg = PrecomputeConfig {
            policy: Policy::default_policy(),
            copies: 4,
            spec: OutputSpec {
                size: Size::new(128, 128),
                channels: 3,
                dtype: DType::U8,
                layout: Layout::Nhwc,
                mean: vec![0.0; 3],
                std: vec![1.0; 3],
            },
            seed: 7,
            shard_items: 16,
            part: Part { index, count: 2 },
            threads: 2,
        };
        let s = precompute(&dataset, &out, &cfg, &AtomicBool::new(false), &|_| {})?;
        println!(
            "part {index}/2: {} images in {} shards; whole job complete: {}",
            s.images_written, s.shards_written, s.complete
        );
    }
    let bytes = std::fs::read(out.join(shard_name(0))).map_err(|e| metaug::Error::io(&out, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| metaug::Error::format(&out, e.to_string()))?;
    let images = st.tensor("images").expect("images tensor");
    let labels = st.tensor("labels").expect("labels tensor");
    println!(
        "{}: images {:?} {:?}, labels {:?}",
        shard_name(0),
        images.dtype(),
        images.shape(),
        labels.shape()
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

//! `metaug demo`: the whole pipeline on the bundled data, step by step —
//! pack → learn a policy → stream → precompute → preview.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use metaug::loader::Loader;
use metaug::meta::plot::plot_history;
use metaug::meta::{image_set, learn_policy, LearnConfig};
use metaug::ops::{DType, OutputSpec, Size};
use metaug::pack::{fashion_mnist_class_names, pack_folder, pack_idx, FolderOptions, IdxOptions};
use metaug::policy::Policy;
use metaug::precompute::{precompute, Part, PrecomputeConfig};
use metaug::preview::{write_preview, PreviewConfig};
use metaug::shard::Dataset;
use metaug::{Error, Result};

use crate::cli::args::progress_bar;

/// Arguments of `metaug demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo writes its datasets, policy and pictures.
    #[arg(long, default_value = "metaug-demo")]
    out: PathBuf,
    /// The bundled data folder (fashion-mnist-small/, photos-png/).
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Decode/augment threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Training steps while the policy is learned.
    #[arg(long, default_value_t = 800)]
    steps: usize,
}

fn step(n: u32, title: &str) {
    println!("\n[{n}/5] {title}");
}

/// Runs the command.
pub fn run(args: DemoArgs) -> Result<()> {
    let start = Instant::now();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let fm_src = args.data.join("fashion-mnist-small");
    let photos_src = args.data.join("photos-png");
    if !fm_src.is_dir() || !photos_src.is_dir() {
        return Err(Error::invalid(
            "data",
            format!(
                "{} must hold fashion-mnist-small/ and photos-png/ (the bundled data): run the demo \
                 from the repository root or pass --data",
                args.data.display()
            ),
        ));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    println!(
        "metaug demo: the whole pipeline on the bundled data, written to {}/",
        args.out.display()
    );

    step(1, "pack: real images into safetensors shards");
    let fm_dir = args.out.join("fashion-mnist");
    pack_idx(
        &fm_src.join("train-images-idx3-ubyte.gz"),
        &fm_src.join("train-labels-idx1-ubyte.gz"),
        &fm_dir,
        &IdxOptions {
            classes: Some(fashion_mnist_class_names()),
            overwrite: true,
            ..IdxOptions::default()
        },
    )?;
    let photos_dir = args.out.join("photos");
    pack_folder(
        &photos_src,
        &photos_dir,
        &FolderOptions {
            flat: true,
            overwrite: true,
            ..FolderOptions::default()
        },
    )?;
    let fm = Arc::new(Dataset::open(&fm_dir)?);
    let photos = Arc::new(Dataset::open(&photos_dir)?);
    println!(
        "      {} Fashion-MNIST images (28x28 grey, {} classes, raw) -> {}",
        fm.len(),
        fm.classes().len(),
        fm_dir.display()
    );
    println!(
        "      {} photographs (PNG bytes kept as they are) -> {}",
        photos.len(),
        photos_dir.display()
    );

    step(
        2,
        "learn an augmentation policy with MAML while an MLP trains",
    );
    let set = image_set(&fm, 2000, None, None)?;
    let mut cfg = LearnConfig::default();
    cfg.train.steps = args.steps;
    let bar = progress_bar(args.steps as u64, "steps");
    let t = Instant::now();
    let learned = learn_policy(&set.images, &set.labels, &cfg, &mut |s, _| {
        bar.set_position(s as u64 + 1)
    })?;
    bar.finish_and_clear();
    let policy = learned.policy();
    let policy_path = args.out.join("policy.safetensors");
    let plot_path = args.out.join("policy.png");
    policy.save(&policy_path)?;
    plot_history(&learned.history, learned.family, &plot_path)?;
    println!(
        "      {} meta steps in {:.1} s; learned policy (started from p = 0.5 for every op):",
        learned.history.len(),
        t.elapsed().as_secs_f64()
    );
    for line in policy.describe().lines() {
        println!("        {line}");
    }
    println!(
        "      -> {} (load it with --policy), plot of φ over the steps -> {}",
        policy_path.display(),
        plot_path.display()
    );

    step(
        3,
        "stream: the prefetching loader, as a training loop sees it",
    );
    stream(
        &fm,
        &policy,
        threads,
        Size::new(28, 28),
        256,
        3,
        "Fashion-MNIST, learned policy",
    )?;
    stream(
        &photos,
        &Policy::default_policy(),
        threads,
        Size::new(224, 224),
        13,
        3,
        "photos, default policy",
    )?;

    step(
        4,
        "precompute: augmented copies written once, as safetensors",
    );
    let pre_dir = args.out.join("precomputed");
    let spec = OutputSpec::new(Size::new(28, 28), 1).with_dtype(DType::U8);
    let pcfg = PrecomputeConfig {
        policy,
        copies: 2,
        spec,
        seed: 0,
        shard_items: 2048,
        part: Part::WHOLE,
        threads,
    };
    if pre_dir.exists() {
        std::fs::remove_dir_all(&pre_dir).map_err(|e| Error::io(&pre_dir, e))?;
    }
    let t = Instant::now();
    let summary = precompute(&fm, &pre_dir, &pcfg, &AtomicBool::new(false), &|_| {})?;
    println!(
        "      {} images ({} copies x {}) in {} shards, {:.1} MB, {:.0} images/s -> {}",
        summary.images_written,
        pcfg.copies,
        fm.len(),
        summary.shards_written,
        summary.bytes_written as f64 / 1e6,
        summary.images_written as f64 / t.elapsed().as_secs_f64(),
        pre_dir.display()
    );
    println!(
        "      (open them in Python: safetensors.numpy.load_file(\"{}/aug-000000.safetensors\"))",
        pre_dir.display()
    );

    step(5, "preview: what the policies do, as pictures");
    let photo_grid = args.out.join("preview-photos.png");
    write_preview(
        &photos,
        &Policy::default_policy(),
        &PreviewConfig::default(),
        &photo_grid,
    )?;
    let fm_grid = args.out.join("preview-fashion-mnist.png");
    write_preview(
        &fm,
        &policy,
        &PreviewConfig {
            samples: 8,
            copies: 9,
            cell: Size::new(84, 84),
            seed: 0,
        },
        &fm_grid,
    )?;
    println!("      each row: the original, then augmented copies (copy k = epoch k)");
    println!("      -> {}", photo_grid.display());
    println!("      -> {}", fm_grid.display());

    println!(
        "\ndone in {:.1} s. Next: `metaug stream {} --policy {}` or see README.md.",
        start.elapsed().as_secs_f64(),
        fm_dir.display(),
        policy_path.display()
    );
    Ok(())
}

fn stream(
    dataset: &Arc<Dataset>,
    policy: &Policy,
    threads: usize,
    size: Size,
    batch: usize,
    epochs: u64,
    what: &str,
) -> Result<()> {
    let loader = Loader::builder(dataset.clone())
        .batch_size(batch)
        .size(size.height, size.width)
        .policy(*policy)
        .threads(threads)
        .epochs(epochs)
        .build()?;
    let t = Instant::now();
    let mut images = 0usize;
    let mut shape = [0; 4];
    for b in loader {
        let b = b?;
        images += b.len();
        if images == b.len() {
            shape = b.shape();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "      {what}: {images} images in {epochs} epochs, batches of f32 {shape:?} (NCHW), \
         {threads} threads: {:.0} images/s",
        images as f64 / secs
    );
    Ok(())
}

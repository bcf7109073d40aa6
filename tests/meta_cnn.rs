//! The meta engine's CNN learns real data: plain SGD on 1,500 bundled
//! Fashion-MNIST training images, checked on 500 others.

mod common;

use metaug::meta::cnn::CnnShape;
use metaug::meta::image_set;
use metaug::meta::model::Model;
use metaug::meta::rng::SplitMix;
use metaug::meta::tensor::Tensor;

#[test]
fn the_cnn_learns_fashion_mnist_with_sgd() {
    let dir = tempfile::tempdir().unwrap();
    let ds = common::fmnist_small(dir.path());
    let set = image_set(&ds, 2000, None, None).unwrap();
    let n = set.len();
    // One channel: [n, 1, 28, 28] is also the CNN's channels-last layout.
    let x = set.images.data();
    let rows = |ids: &[usize]| {
        let data = ids
            .iter()
            .flat_map(|&i| x[i * 784..(i + 1) * 784].iter().copied())
            .collect();
        Tensor::new(&[ids.len(), 784], data)
    };
    let (train, test): (Vec<usize>, Vec<usize>) = (0..n).partition(|i| i % 4 != 3);
    let test_x = rows(&test);
    let test_y: Vec<usize> = test.iter().map(|&i| set.labels[i]).collect();
    let mut model = Model::<f32>::cnn(CnnShape::fashion_mnist(), 1);
    let before = model.accuracy(&test_x, &test_y);
    let mut rng = SplitMix::new(2);
    let (mut first, mut last) = (0.0, 0.0);
    for step in 0..300 {
        let batch: Vec<usize> = (0..32).map(|_| train[rng.below(train.len())]).collect();
        let labels: Vec<usize> = batch.iter().map(|&i| set.labels[i]).collect();
        let loss = model.sgd_step(&rows(&batch), &labels, 0.05);
        if step < 20 {
            first += loss / 20.0;
        } else if step >= 280 {
            last += loss / 20.0;
        }
    }
    let after = model.accuracy(&test_x, &test_y);
    eprintln!("CNN: loss {first:.3} -> {last:.3}, held-out accuracy {before:.3} -> {after:.3}");
    assert!(last < first * 0.6, "loss {first} -> {last}");
    assert!(after > 0.70, "held-out accuracy {after}");
}

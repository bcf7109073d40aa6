//! The gradient checks of `metaug gradcheck`, as tests.

use metaug::meta::gradcheck::{self, Check};

fn assert_all(checks: &[Check]) {
    for c in checks {
        eprintln!("{:<48} {:.3e}", c.name, c.value);
    }
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed()).collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
}

#[test]
fn every_op_gradient_and_double_backward_match_finite_differences() {
    assert_all(&gradcheck::check_ops(7));
}

#[test]
fn augmentation_node_and_relaxed_sampler_match_finite_differences() {
    assert_all(&gradcheck::check_augment(11));
    assert_all(&gradcheck::check_augment(12));
}

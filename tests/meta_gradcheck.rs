//! The gradient checks of `metaug gradcheck`, as tests.

use metaug::harness::gradcheck::{self, Check};

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

#[test]
fn double_backward_hessian_vector_product_matches_finite_differences() {
    assert_all(&gradcheck::check_hvp(3));
}

#[test]
fn cnn_gradient_and_double_backward_match_finite_differences() {
    assert_all(&gradcheck::check_cnn(3));
    assert_all(&gradcheck::check_cnn(4));
}

#[test]
fn maml_hypergradient_matches_finite_differences_of_the_validation_loss() {
    assert_all(&gradcheck::check_hypergradient(5));
}

#[test]
fn reptile_first_order_estimate_aligns_with_the_exact_hypergradient() {
    assert_all(&gradcheck::check_reptile(5));
}

#[test]
fn reptile_estimate_in_f32_at_the_training_radius_aligns_with_the_exact_one() {
    assert_all(&[gradcheck::check_reptile_f32(2)]);
}

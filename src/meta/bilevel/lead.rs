//! What MAML's and Reptile's backward passes share about the first layer:
//! its weights' part `V₀` of a weight-space direction, kept as the product
//! `xᵀδ` while it is one ([`Lead`]), and the row-major product they are
//! written with ([`gemm`]).

use crate::meta::float::Float;
use crate::meta::tensor::Tensor;

/// `c ← alpha·op(a)·op(b) + beta·c` on row-major matrices: `op(a)` is
/// `[m, k]` (`a` is stored `[k, m]` when `ta`), `op(b)` is `[k, n]` (`b` is
/// stored `[n, k]` when `tb`), `c` is `[m, n]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    alpha: F,
    a: &[F],
    ta: bool,
    b: &[F],
    tb: bool,
    beta: F,
    c: &mut [F],
) {
    let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
    let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
    F::gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c);
}

/// The first layer's weights `V₀` (`[d₀, d₁]`) of the direction `v`.
///
/// Where `v` is a gradient of the loss on `n` inputs `x` (`[n, d₀]`), `V₀ =
/// xᵀδ` is kept as that product: with `n ≤ d₁` every use of it is cheaper
/// through `x` and `δ` than through `V₀` (for `n = 128`, `d₀ = 784`,
/// `d₁ = 256`: `y·V₀ = (y·xᵀ)·δ` and `b·V₀ᵀ = (b·δᵀ)·x` cost `(d₀ + d₁)n /
/// d₀d₁ = 0.66` of the dense product, `‖V₀‖² = ⟨x·xᵀ, δ·δᵀ⟩` as much, and
/// forming `V₀` one dense product is saved). The adjoint's update makes it
/// dense.
pub(super) enum Lead<'a, F> {
    /// `V₀` itself.
    Dense(Tensor<F>),
    /// `V₀ = xᵀδ`, `x: [n, d₀]`, `δ: [n, d₁]`.
    Outer { x: &'a [F], delta: Vec<F>, n: usize },
}

impl<F: Float> Lead<'_, F> {
    /// `V₀` as a tensor.
    pub(super) fn into_dense(self, d0: usize, d1: usize) -> Tensor<F> {
        match self {
            Lead::Dense(t) => t,
            Lead::Outer { x, delta, n } => {
                let mut v = vec![F::ZERO; d0 * d1];
                gemm(d0, n, d1, F::ONE, x, true, &delta, false, F::ZERO, &mut v);
                Tensor::new(&[d0, d1], v)
            }
        }
    }
}

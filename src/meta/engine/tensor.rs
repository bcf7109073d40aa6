//! A dense, row-major, owned n-dimensional array.

use super::float::Float;

/// A dense row-major tensor: a shape and its elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<F> {
    shape: Vec<usize>,
    data: Vec<F>,
}

impl<F: Float> Tensor<F> {
    /// A tensor from its shape and row-major elements.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape` (a programming error).
    pub fn new(shape: &[usize], data: Vec<F>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor shape {shape:?} does not match {} elements",
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, F::ZERO)
    }

    /// A tensor with every element `value`.
    pub fn full(shape: &[usize], value: F) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![value; shape.iter().product()],
        }
    }

    /// A 0-dimensional tensor holding `value`.
    pub fn scalar(value: F) -> Self {
        Tensor {
            shape: Vec::new(),
            data: vec![value],
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[F] {
        &self.data
    }

    /// The elements, mutable.
    pub fn data_mut(&mut self) -> &mut [F] {
        &mut self.data
    }

    /// Consumes the tensor, returning its elements.
    pub fn into_data(self) -> Vec<F> {
        self.data
    }

    /// The single element of a one-element tensor.
    ///
    /// # Panics
    /// If the tensor does not hold exactly one element.
    pub fn item(&self) -> F {
        assert_eq!(
            self.data.len(),
            1,
            "item() of a tensor of shape {:?}",
            self.shape
        );
        self.data[0]
    }

    /// `(rows, cols)` of a 2-D tensor.
    ///
    /// # Panics
    /// If the tensor is not 2-D.
    pub fn dims2(&self) -> (usize, usize) {
        assert_eq!(
            self.shape.len(),
            2,
            "expected a matrix, got {:?}",
            self.shape
        );
        (self.shape[0], self.shape[1])
    }

    /// The same elements under another shape of equal size.
    pub fn reshape(mut self, shape: &[usize]) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.data.len(),
            "reshape {:?} -> {shape:?}",
            self.shape
        );
        self.shape = shape.to_vec();
        self
    }

    /// Elementwise map.
    pub fn map(&self, f: impl Fn(F) -> F) -> Self {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&x| f(x)).collect(),
        }
    }

    /// Elementwise combination of two tensors of the same shape.
    pub fn zip(&self, other: &Self, f: impl Fn(F, F) -> F) -> Self {
        assert_eq!(self.shape, other.shape, "shape mismatch");
        Tensor {
            shape: self.shape.clone(),
            data: self
                .data
                .iter()
                .zip(&other.data)
                .map(|(&a, &b)| f(a, b))
                .collect(),
        }
    }

    /// Converts every element to another float type.
    pub fn cast<G: Float>(&self) -> Tensor<G> {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(|x| G::from_f64(x.to_f64())).collect(),
        }
    }

    /// Sum of squares, in f64 (eight interleaved partial sums, so that the
    /// loop vectorises instead of waiting on one addition chain).
    pub fn norm_sq(&self) -> f64 {
        let mut acc = [0f64; 8];
        let chunks = self.data.chunks_exact(8);
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|x| x.to_f64() * x.to_f64())
            .sum();
        for c in chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += x.to_f64() * x.to_f64();
            }
        }
        acc.iter().sum::<f64>() + tail
    }

    /// Dot product with a tensor of the same size, in f64.
    pub fn dot(&self, other: &Self) -> f64 {
        assert_eq!(self.data.len(), other.data.len(), "dot of different sizes");
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| a.to_f64() * b.to_f64())
            .sum()
    }

    /// `self += alpha · other`, in place.
    pub fn axpy(&mut self, alpha: F, other: &Self) {
        assert_eq!(self.data.len(), other.data.len(), "axpy of different sizes");
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a += alpha * b;
        }
    }
}

//! [`IndexMap`]: the element-picking linear map behind gather and
//! scatter-add on the tape (im2col for convolutions, pooling windows, the
//! channels-last permutation).

/// A linear map that picks elements: `out[i] = x[index[i]]`, or 0 where
/// `index[i]` is [`IndexMap::ZERO`]. Its adjoint scatters and adds. With
/// [`IndexMap::patches`] it is im2col (the patches of a convolution, with
/// zero padding) and the windows of a pooling layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexMap {
    /// For each output element, the input element it copies.
    pub index: Vec<u32>,
    /// Shape of the output.
    pub out_shape: Vec<usize>,
    /// Shape of the input.
    pub in_shape: Vec<usize>,
}

impl IndexMap {
    /// The index of an output element that is 0 (padding).
    pub const ZERO: u32 = u32::MAX;

    /// Elements of the input.
    pub fn in_len(&self) -> usize {
        self.in_shape.iter().product()
    }

    /// The permutation of `n` images from planes (`[n, c·h·w]`, channel
    /// major) to channels-last (`[n, h·w·c]`).
    pub fn chw_to_hwc(n: usize, c: usize, h: usize, w: usize) -> IndexMap {
        assert!(
            n * c * h * w < IndexMap::ZERO as usize,
            "input too large to index"
        );
        let plane = h * w;
        let mut index = Vec::with_capacity(n * c * plane);
        for b in 0..n {
            for p in 0..plane {
                for ch in 0..c {
                    index.push(((b * c + ch) * plane + p) as u32);
                }
            }
        }
        IndexMap {
            index,
            out_shape: vec![n, plane * c],
            in_shape: vec![n, c * plane],
        }
    }

    /// The `k × k` patches, at `stride`, with `pad` zeros around, of `n`
    /// images `h × w` with `c` channels stored channels-last as a
    /// `[n·h·w, c]` matrix: an `[n·oh·ow, k·k·c]` matrix whose row is an
    /// output pixel and whose column is `(dy·k + dx)·c + channel`, with
    /// `oh = (h + 2·pad − k) / stride + 1` (and `ow` likewise). A
    /// convolution is then this matrix times a `[k·k·c, c_out]` weight.
    ///
    /// # Panics
    /// If the patch does not fit (`h + 2·pad < k`), the stride is 0, or the
    /// input has 2³² elements or more (programming errors).
    pub fn patches(
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> IndexMap {
        assert!(
            stride > 0 && h + 2 * pad >= k && w + 2 * pad >= k,
            "patch geometry"
        );
        assert!(
            (n * h * w * c) < IndexMap::ZERO as usize,
            "input too large to index"
        );
        let (oh, ow) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let mut index = Vec::with_capacity(n * oh * ow * k * k * c);
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for dy in 0..k {
                        for dx in 0..k {
                            let iy = (oy * stride + dy) as isize - pad as isize;
                            let ix = (ox * stride + dx) as isize - pad as isize;
                            let inside =
                                (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                            for ch in 0..c {
                                index.push(if inside {
                                    (((b * h + iy as usize) * w + ix as usize) * c + ch) as u32
                                } else {
                                    IndexMap::ZERO
                                });
                            }
                        }
                    }
                }
            }
        }
        IndexMap {
            index,
            out_shape: vec![n * oh * ow, k * k * c],
            in_shape: vec![n * h * w, c],
        }
    }
}

//! Per-sample augmentation parameters and the fused inverse affine map.
//!
//! Conventions are PyTorch's `affine_grid` + `grid_sample` with
//! `align_corners=False`: pixel `j` of a row covers `[j, j+1)` and its centre
//! is at `j + 0.5`; normalised coordinates run over `[-1, 1]` edge to edge.
//!
//! For output pixel `(i, j)` of an `H_out × W_out` image, with
//! `u = (2j+1)/W_out − 1` and `v = (2i+1)/H_out − 1`, the source point is
//!
//! ```text
//! [x_c]   [cx_p]          [a·u]       a = crop_w · W_in / 2,  cx_p = (cx + 1) · W_in / 2
//! [y_c] = [cy_p] + R(θ) · [b·v],      b = crop_h · H_in / 2,  cy_p = (cy + 1) · H_in / 2
//! ```
//!
//! in continuous pixel coordinates, sampled bilinearly at index
//! `(x_c − 0.5, y_c − 0.5)` with zeros outside. The flip is a gate `g`:
//! `out(i, j) = (1−g)·S(i, j) + g·S(i, W_out−1−j)` — the horizontal mirror of
//! the cropped, rotated view. Crop size: `crop_w = min(1, sqrt(area·aspect))`,
//! `crop_h = min(1, sqrt(area/aspect))`.
//!
//! The map is returned as 6 coefficients in index space
//! (`x = m[0]·j + m[1]·i + m[2]`, `y = m[3]·j + m[4]·i + m[5]`), computed in
//! f64 and rounded once to f32, so the CPU and the GPU start from the same
//! numbers and the identity map is exact.

/// Geometric parameters of one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    /// Crop area as a fraction of the image area, in (0, 1].
    pub area: f32,
    /// Crop aspect ratio (width / height, relative to the image's own).
    pub aspect: f32,
    /// Crop centre in normalised coordinates `[-1, 1]` (x, y).
    pub center: [f32; 2],
    /// Rotation about the crop centre, radians, counter-clockwise on screen
    /// when `y` points down (positive angle turns `+x` towards `+y`).
    pub angle: f32,
}

impl Geometry {
    /// The whole image, unrotated.
    pub const IDENTITY: Geometry = Geometry {
        area: 1.0,
        aspect: 1.0,
        center: [0.0, 0.0],
        angle: 0.0,
    };

    /// Crop width and height as fractions of the image's width and height.
    pub fn crop_size(&self) -> (f64, f64) {
        let s = self.area as f64;
        let r = self.aspect as f64;
        ((s * r).sqrt().min(1.0), (s / r).sqrt().min(1.0))
    }
}

/// Every parameter one sample's augmentation needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    /// Crop, rotation (and, through the output size, the resize).
    pub geometry: Geometry,
    /// Flip gate in [0, 1]: 0 keeps the view, 1 mirrors it, between blends.
    pub flip: f32,
    /// Standard deviation of the additive Gaussian noise, in units of the
    /// [0, 1] pixel range (already multiplied by its gate).
    pub sigma: f32,
}

impl SampleParams {
    /// No augmentation: the whole image resized to the output, no noise.
    pub const IDENTITY: SampleParams = SampleParams {
        geometry: Geometry::IDENTITY,
        flip: 0.0,
        sigma: 0.0,
    };
}

/// An image size, height then width, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Size {
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
}

impl Size {
    /// `height × width`.
    pub const fn new(height: u32, width: u32) -> Self {
        Size { height, width }
    }
}

/// The inverse affine map from output index `(j, i)` to source index `(x, y)`,
/// as 6 coefficients (see the module docs).
pub fn affine_matrix(g: &Geometry, src: Size, out: Size) -> [f32; 6] {
    affine_matrix_f64(g, src, out).map(|m| m as f32)
}

/// [`affine_matrix`] before rounding to f32 (used by gradient checks).
pub fn affine_matrix_f64(g: &Geometry, src: Size, out: Size) -> [f64; 6] {
    let (wi, hi) = (src.width as f64, src.height as f64);
    let (wo, ho) = (out.width as f64, out.height as f64);
    let (cw, ch) = g.crop_size();
    let a = cw * wi / 2.0;
    let b = ch * hi / 2.0;
    let cxp = (g.center[0] as f64 + 1.0) * wi / 2.0;
    let cyp = (g.center[1] as f64 + 1.0) * hi / 2.0;
    let (sin, cos) = (g.angle as f64).sin_cos();
    // u = su·j + tu, v = sv·i + tv
    let (su, tu) = (2.0 / wo, 1.0 / wo - 1.0);
    let (sv, tv) = (2.0 / ho, 1.0 / ho - 1.0);
    [
        cos * a * su,
        -sin * b * sv,
        cxp - 0.5 + cos * a * tu - sin * b * tv,
        sin * a * su,
        cos * b * sv,
        cyp - 0.5 + sin * a * tu + cos * b * tv,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_at_equal_size_is_exact() {
        for (h, w) in [(1, 1), (28, 28), (17, 31), (224, 224)] {
            let m = affine_matrix(&Geometry::IDENTITY, Size::new(h, w), Size::new(h, w));
            assert_eq!(m, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "{h}x{w}");
        }
    }

    #[test]
    fn quarter_turn_of_a_square_permutes_pixels() {
        let g = Geometry {
            angle: std::f32::consts::FRAC_PI_2,
            ..Geometry::IDENTITY
        };
        let n = 8;
        let m = affine_matrix_f64(&g, Size::new(n, n), Size::new(n, n));
        for i in 0..n {
            for j in 0..n {
                let x = m[0] * j as f64 + m[1] * i as f64 + m[2];
                let y = m[3] * j as f64 + m[4] * i as f64 + m[5];
                // output (i, j) reads source (row j, column n-1-i); the f32
                // angle is not exactly pi/2, hence the tolerance
                assert!((x - (n - 1 - i) as f64).abs() < 1e-5);
                assert!((y - j as f64).abs() < 1e-5);
            }
        }
    }
}

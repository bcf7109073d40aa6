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

/// A rectangle of pixels: columns `x..x + width`, rows `y..y + height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rect {
    /// First column.
    pub x: u32,
    /// First row.
    pub y: u32,
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
}

impl Rect {
    /// The whole of an image of `size`.
    pub const fn whole(size: Size) -> Rect {
        Rect {
            x: 0,
            y: 0,
            width: size.width,
            height: size.height,
        }
    }

    /// Pixels covered.
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

/// Which part of a source image a sample's decoded pixels are, and at what
/// scale: the augmentation's map is computed for the whole image (`full`,
/// the frame the policy's normalised coordinates refer to), then read from
/// the decoded window.
///
/// - `shrink = 0` (exact): the map is [`affine_matrix`] of the full image,
///   bit for bit; a window only moves where its taps are read from
///   (`x0 − origin`), so a sample from a window that holds every pixel the
///   map reads is bit for bit the sample from the whole image.
/// - `shrink = k > 0` (DCT-domain scaled decode, not exact): the decoded
///   frame is `ceil(full / 2^k)` and the map is the full image's map in
///   continuous coordinates scaled by `2^-k` (computed in f64, rounded once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceWindow {
    /// The whole source image, at full resolution.
    pub full: Size,
    /// The decode scale is `1 / 2^shrink` (0 to 3).
    pub shrink: u8,
    /// Column and row, in the scaled frame, of the decoded pixels' top-left.
    pub origin: [u32; 2],
}

impl SourceWindow {
    /// The whole image at full resolution (no window).
    pub const fn whole(full: Size) -> SourceWindow {
        SourceWindow {
            full,
            shrink: 0,
            origin: [0, 0],
        }
    }

    /// The scaled frame: `ceil(full / 2^shrink)` (libjpeg-turbo's scaled size).
    pub fn frame(&self) -> Size {
        let d = 1u64 << self.shrink;
        let s = |v: u32| (v as u64).div_ceil(d) as u32;
        Size::new(s(self.full.height), s(self.full.width))
    }

    /// Checks that a window of `pixels` lies at `origin` inside the frame,
    /// that the scale is one of 1/1 to 1/8, and that the frame's sides are
    /// below 2^24 (so every coordinate is exact in f32); the error says
    /// which window and frame.
    pub fn check(&self, pixels: Size) -> std::result::Result<(), String> {
        let frame = self.frame();
        let [ox, oy] = self.origin;
        let inside = self.shrink <= 3
            && frame.width < 1 << 24
            && frame.height < 1 << 24
            && ox as u64 + pixels.width as u64 <= frame.width as u64
            && oy as u64 + pixels.height as u64 <= frame.height as u64;
        if inside {
            Ok(())
        } else {
            Err(format!(
                "window {}x{} at ({ox}, {oy}) is not inside its {}x{} frame",
                pixels.height, pixels.width, frame.height, frame.width
            ))
        }
    }

    /// The inverse affine map from output index to index in the scaled
    /// frame (see the type's docs).
    pub fn matrix(&self, g: &Geometry, out: Size) -> [f32; 6] {
        if self.shrink == 0 {
            return affine_matrix(g, self.full, out);
        }
        let m = affine_matrix_f64(g, self.full, out);
        // continuous x' = s·x_c with x_c = x + 0.5: x' − 0.5 = s·(x + 0.5) − 0.5
        let s = 1.0 / (1u64 << self.shrink) as f64;
        [
            s * m[0],
            s * m[1],
            s * (m[2] + 0.5) - 0.5,
            s * m[3],
            s * m[4],
            s * (m[5] + 0.5) - 0.5,
        ]
        .map(|v| v as f32)
    }
}

/// The pixels of a `frame`-sized image that the bilinear taps of map `m`
/// over an `out`-sized output can read, clamped to the image; `None` when
/// no tap falls inside it.
///
/// Conservative: the map is affine, so its extremes are at the output's
/// corners; they are evaluated in f64 and widened by one pixel on each side,
/// far more than the f32 evaluation's rounding (a few ulps of coordinates
/// below 2^24), and then by the tap to the right and below. A coordinate
/// that is not finite gives the whole image.
pub fn footprint(m: &[f32; 6], out: Size, frame: Size) -> Option<Rect> {
    if out.width == 0 || out.height == 0 || frame.width == 0 || frame.height == 0 {
        return None;
    }
    let (jl, il) = ((out.width - 1) as f64, (out.height - 1) as f64);
    let m = m.map(|v| v as f64);
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (j, i) in [(0.0, 0.0), (jl, 0.0), (0.0, il), (jl, il)] {
        let x = m[0] * j + m[1] * i + m[2];
        let y = m[3] * j + m[4] * i + m[5];
        if !x.is_finite() || !y.is_finite() {
            return Some(Rect::whole(frame));
        }
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(y);
        y_hi = y_hi.max(y);
    }
    // Taps: columns floor(x) and floor(x) + 1 for x in [lo, hi].
    let span = |lo: f64, hi: f64, n: u32| -> Option<(u32, u32)> {
        let first = (lo - 1.0).floor().max(0.0);
        let last = ((hi + 1.0).floor() + 1.0).min(n as f64 - 1.0);
        (first <= last).then_some((first as u32, last as u32))
    };
    let (x0, x1) = span(x_lo, x_hi, frame.width)?;
    let (y0, y1) = span(y_lo, y_hi, frame.height)?;
    Some(Rect {
        x: x0,
        y: y0,
        width: x1 - x0 + 1,
        height: y1 - y0 + 1,
    })
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

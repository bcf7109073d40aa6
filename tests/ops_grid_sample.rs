//! The fused CPU augmentation against an independent, slow re-implementation
//! of PyTorch's `affine_grid` + `grid_sample` (bilinear, zeros padding,
//! `align_corners=False`), in f64 and in normalised coordinates.
//!
//! The 2×3 `theta` is derived here from the meaning of the parameters, not
//! from `ops::geometry`: a crop box of `cw × ch` (fractions of the image,
//! `cw = min(1, sqrt(area·aspect))`, `ch = min(1, sqrt(area/aspect))`) centred
//! at `(cx, cy)` (normalised), rotated by `angle` about its centre *in pixel
//! space*, resized to the output. An output point with normalised
//! coordinates `(u, v)` lands, in input pixels, at
//! `P = c_p + R(angle)·(u·cw·W/2, v·ch·H/2)` with `c_p = ((cx+1)·W/2, (cy+1)·H/2)`;
//! normalising `P` (`x_n = 2·P_x/W − 1`, `y_n = 2·P_y/H − 1`) gives
//!
//! ```text
//! theta = [[ cos·cw,        −sin·ch·H/W,  cx ],
//!          [ sin·cw·W/H,     cos·ch,      cy ]]
//! ```
//!
//! (the aspect factors appear because the rotation is in pixels, not in
//! normalised units). A horizontal flip of the output negates `u`: the first
//! column of `theta`.

use metaug::decode::ImageView;
use metaug::ops::philox::{PhiloxStream, STREAM_NOISE};
use metaug::ops::{augment_into, sample_to_chw_f32, Geometry, OutputSpec, SampleParams, Size};
use rand::{Rng, SeedableRng};

type Theta = [[f64; 3]; 2];

fn theta_for(g: &Geometry, src: Size) -> Theta {
    let (w, h) = (src.width as f64, src.height as f64);
    let (area, aspect) = (g.area as f64, g.aspect as f64);
    let cw = (area * aspect).sqrt().min(1.0);
    let ch = (area / aspect).sqrt().min(1.0);
    let (sin, cos) = (g.angle as f64).sin_cos();
    [
        [cos * cw, -sin * ch * h / w, g.center[0] as f64],
        [sin * cw * w / h, cos * ch, g.center[1] as f64],
    ]
}

/// `torch.nn.functional.affine_grid(theta, (1, C, H_out, W_out), align_corners=False)`.
fn affine_grid(theta: &Theta, out: Size) -> Vec<(f64, f64)> {
    let (ho, wo) = (out.height as usize, out.width as usize);
    let mut grid = Vec::with_capacity(ho * wo);
    for i in 0..ho {
        for j in 0..wo {
            let u = (2 * j + 1) as f64 / wo as f64 - 1.0;
            let v = (2 * i + 1) as f64 / ho as f64 - 1.0;
            grid.push((
                theta[0][0] * u + theta[0][1] * v + theta[0][2],
                theta[1][0] * u + theta[1][1] * v + theta[1][2],
            ));
        }
    }
    grid
}

/// `torch.nn.functional.grid_sample(img, grid, mode="bilinear",
/// padding_mode="zeros", align_corners=False)` for one channel, with the
/// image as HWC u8 scaled to [0, 1].
fn grid_sample(
    img: &[u8],
    h: usize,
    w: usize,
    c_n: usize,
    c: usize,
    grid: &[(f64, f64)],
) -> Vec<f64> {
    let at = |y: i64, x: i64| -> f64 {
        if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
            0.0
        } else {
            img[(y as usize * w + x as usize) * c_n + c] as f64 / 255.0
        }
    };
    grid.iter()
        .map(|&(gx, gy)| {
            // unnormalise (align_corners=False)
            let ix = ((gx + 1.0) * w as f64 - 1.0) / 2.0;
            let iy = ((gy + 1.0) * h as f64 - 1.0) / 2.0;
            let (ix_nw, iy_nw) = (ix.floor(), iy.floor());
            let (ix_ne, iy_ne) = (ix_nw + 1.0, iy_nw);
            let (ix_sw, iy_sw) = (ix_nw, iy_nw + 1.0);
            let (ix_se, iy_se) = (ix_nw + 1.0, iy_nw + 1.0);
            let nw = (ix_se - ix) * (iy_se - iy);
            let ne = (ix - ix_sw) * (iy_sw - iy);
            let sw = (ix_ne - ix) * (iy - iy_ne);
            let se = (ix - ix_nw) * (iy - iy_nw);
            let p = |x: f64, y: f64| at(y as i64, x as i64);
            p(ix_nw, iy_nw) * nw
                + p(ix_ne, iy_ne) * ne
                + p(ix_sw, iy_sw) * sw
                + p(ix_se, iy_se) * se
        })
        .collect()
}

/// The whole expected sample, CHW, f64, before conversion.
#[allow(clippy::too_many_arguments)]
fn expected(
    img: &[u8],
    src: Size,
    c_n: usize,
    p: &SampleParams,
    out: Size,
    mean: &[f32],
    std: &[f32],
    noise: &PhiloxStream,
) -> Vec<f64> {
    let theta = theta_for(&p.geometry, src);
    let mut flipped = theta;
    flipped[0][0] = -theta[0][0];
    flipped[1][0] = -theta[1][0];
    let (g0, g1) = (affine_grid(&theta, out), affine_grid(&flipped, out));
    let (h, w) = (src.height as usize, src.width as usize);
    let g = p.flip as f64;
    let mut all = Vec::new();
    for c in 0..c_n {
        let a = grid_sample(img, h, w, c_n, c, &g0);
        let b = grid_sample(img, h, w, c_n, c, &g1);
        let plane = a.len();
        for (k, (a, b)) in a.iter().zip(&b).enumerate() {
            let e = c * plane + k; // CHW element index
            let mut s = (1.0 - g) * a + g * b;
            if p.sigma > 0.0 {
                s += p.sigma as f64 * noise.normals((e / 4) as u32)[e % 4] as f64;
            }
            all.push((s - mean[c] as f64) / std[c] as f64);
        }
    }
    all
}

#[test]
fn augment_matches_affine_grid_and_grid_sample() {
    let mut r = rand::rngs::StdRng::seed_from_u64(2024);
    let mut worst = 0f64;
    for case in 0..200u64 {
        let c_n = if case % 2 == 0 { 1 } else { 3 };
        let src = Size::new(r.random_range(2..40), r.random_range(2..40));
        let out = Size::new(r.random_range(1..40), r.random_range(1..40));
        let img: Vec<u8> = (0..src.height * src.width * c_n)
            .map(|_| r.random())
            .collect();
        let flip = match case % 4 {
            0 => 0.0,
            1 => 1.0,
            _ => r.random_range(0.0..1.0),
        };
        let p = SampleParams {
            geometry: Geometry {
                area: r.random_range(0.05..1.0),
                aspect: r.random_range(0.4..2.5),
                center: [r.random_range(-1.0..1.0), r.random_range(-1.0..1.0)],
                angle: r.random_range(-std::f32::consts::PI..std::f32::consts::PI),
            },
            flip,
            sigma: if case % 3 == 0 {
                r.random_range(0.0..0.1)
            } else {
                0.0
            },
        };
        let mean: Vec<f32> = (0..c_n).map(|_| r.random_range(0.0..1.0)).collect();
        let std: Vec<f32> = (0..c_n).map(|_| r.random_range(0.5..2.0)).collect();
        let spec = OutputSpec::new(out, c_n).with_normalization(mean.clone(), std.clone());
        let noise = PhiloxStream::new(9, 1, case, STREAM_NOISE);
        let view = ImageView::new(src.height, src.width, c_n, &img).unwrap();
        let mut bytes = vec![0; spec.sample_bytes()];
        augment_into(view, &p, noise, &spec, &mut bytes);
        let got = sample_to_chw_f32(&bytes, &spec);
        let want = expected(&img, src, c_n as usize, &p, out, &mean, &std, &noise);
        assert_eq!(got.len(), want.len());
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            let err = (*a as f64 - b).abs();
            worst = worst.max(err);
            assert!(
                err <= 1e-5,
                "case {case} element {k}: {a} vs {b} ({p:?}, {src:?} -> {out:?})"
            );
        }
    }
    eprintln!("worst |augment - grid_sample| = {worst:.2e}");
}

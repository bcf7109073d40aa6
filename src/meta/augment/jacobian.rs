//! The affine map's 6 coefficients as functions of a sample's geometric
//! parameters, with their Jacobian (the chain from `∂out/∂m` to the
//! parameters in the augmentation's VJP).

use crate::ops::geometry::Size;

/// The 6 affine coefficients of `affine_matrix_f64` for geometric parameters
/// `g = [area, aspect, cx, cy, angle]` (in f64), and their Jacobian
/// `jac[r][q] = ∂m[r]/∂g[q]` (zero through a clamped crop size).
pub fn affine_with_jacobian(g: [f64; 5], src: Size, out: Size) -> ([f64; 6], [[f64; 5]; 6]) {
    let [s, r, cx, cy, theta] = g;
    let (wi, hi) = (src.width as f64, src.height as f64);
    let (wo, ho) = (out.width as f64, out.height as f64);
    // crop size, as Geometry::crop_size
    let (cw_raw, ch_raw) = ((s * r).sqrt(), (s / r).sqrt());
    let (cw, ch) = (cw_raw.min(1.0), ch_raw.min(1.0));
    let (dcw_ds, dcw_dr) = if cw_raw < 1.0 {
        (cw / (2.0 * s), cw / (2.0 * r))
    } else {
        (0.0, 0.0)
    };
    let (dch_ds, dch_dr) = if ch_raw < 1.0 {
        (ch / (2.0 * s), -ch / (2.0 * r))
    } else {
        (0.0, 0.0)
    };
    let a = cw * wi / 2.0;
    let b = ch * hi / 2.0;
    let cxp = (cx + 1.0) * wi / 2.0;
    let cyp = (cy + 1.0) * hi / 2.0;
    let (sin, cos) = theta.sin_cos();
    let (su, tu) = (2.0 / wo, 1.0 / wo - 1.0);
    let (sv, tv) = (2.0 / ho, 1.0 / ho - 1.0);
    let m = [
        cos * a * su,
        -sin * b * sv,
        cxp - 0.5 + cos * a * tu - sin * b * tv,
        sin * a * su,
        cos * b * sv,
        cyp - 0.5 + sin * a * tu + cos * b * tv,
    ];
    let dm_da = [cos * su, 0.0, cos * tu, sin * su, 0.0, sin * tu];
    let dm_db = [0.0, -sin * sv, -sin * tv, 0.0, cos * sv, cos * tv];
    let dm_dt = [
        -sin * a * su,
        -cos * b * sv,
        -sin * a * tu - cos * b * tv,
        cos * a * su,
        -sin * b * sv,
        cos * a * tu - sin * b * tv,
    ];
    let (da_ds, da_dr) = (dcw_ds * wi / 2.0, dcw_dr * wi / 2.0);
    let (db_ds, db_dr) = (dch_ds * hi / 2.0, dch_dr * hi / 2.0);
    let mut jac = [[0.0; 5]; 6];
    for k in 0..6 {
        jac[k][0] = dm_da[k] * da_ds + dm_db[k] * db_ds;
        jac[k][1] = dm_da[k] * da_dr + dm_db[k] * db_dr;
        jac[k][4] = dm_dt[k];
    }
    jac[2][2] = wi / 2.0;
    jac[5][3] = hi / 2.0;
    (m, jac)
}

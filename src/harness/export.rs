//! `metaug gradcheck --export FILE`: one small MAML problem and metaug's
//! exact hypergradient `dL_val/dφ` (f64) as a safetensors file, with every
//! random number the relaxed augmentation used, so that another framework
//! can recompute the same number from the file alone.
//!
//! The problem is [`MetaProblem::random_cnn`] (the experiment's model, two
//! inner steps). The tensors and the conventions are listed in the file's
//! metadata (`tensors`, `conventions`) and in the README
//! ("Checking the hypergradient elsewhere").

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::gradcheck::MetaProblem;
use crate::meta::augment::noise;
use crate::meta::model::Arch;
use crate::meta::relaxed::{relaxed_params, NUM_PHI};
use crate::{Error, Result};

/// The `format` entry of the file's metadata.
pub const FORMAT: &str = "metaug-hypergradient-problem";
/// The layout's version.
pub const VERSION: &str = "1";
/// Inner steps of the exported problem.
pub const INNER_STEPS: usize = 2;

/// What each tensor of the file holds.
const TENSORS: &str = "\
w.0..w.5 (f64): the CNN's weights, [9·C, c1], [c1], [9·c1, c2], [c2], [(H/4)·(W/4)·c2, classes], [classes]; \
phi (f64, [7]): φ = [logit p_crop, logit min_area, logit p_rotate, logit(max_deg/180), logit p_flip, logit p_noise, softplus⁻¹ max_sigma]; \
alpha, tau (f64, []): inner SGD step size and relaxation temperature; k (i64, []): inner steps; \
train.J.images (f64, [B, C, H_in, W_in]) in [0, 1]; train.J.labels (i64, [B]); \
train.J.draws (f32, [B, 12]): each sample's twelve uniforms u; \
train.J.noise (f32, [B, C, H_out, W_out]): each sample's standard normals ε; \
train.J.keys (u64, [B, 3]): (seed, epoch, sample), the Philox address both came from (informative); \
train.J.params (f64, [B, 7]): the relaxed physical parameters at phi (area, aspect, cx, cy, angle, flip, sigma), to check one's relaxed map; \
val.x (f64, [N, C·H_out·W_out]), val.labels (i64, [N]); \
val_loss (f64, []): L_val(w_k); hypergradient (f64, [7]): dL_val(w_k)/dφ, metaug's exact reverse mode; \
hypergradient_fd (f64, [7]): central finite differences of L_val(w_k(φ)), median over steps 1e-4..3e-7";

/// The mathematics, as one text (also the README's).
const CONVENTIONS: &str = "\
Inner loop: w_0 = w; w_{j+1} = w_j − alpha·∇_w L_train(w_j; A(x_j; φ, u_j, ε_j)) for j = 0..k−1 (batch j = train.J); \
L = mean cross-entropy of softmax(logits); the hypergradient is d L_val(w_k)/dφ on val (no augmentation), through all k steps (second order). \
Model: rows x [n, C·H·W] (each image's planes one after the other) permuted to channels-last [n·H·W, C]; \
conv 3×3, zero padding 1: im2col patch column (dy·3 + dx)·C + c times w.0, plus w.1; ReLU; \
2×2 average pool, stride 2; the same with w.2, w.3; ReLU; pool; flatten channels-last ((y·W' + x)·c2 + c) times w.4, plus w.5. \
Relaxed parameters per sample, from φ, tau and its draws u (u[0..12]): \
gates g_op = sigmoid((φ_gate + ln(1 − u_d) − ln u_d) / tau) for (crop: φ[0], u[0]), (rotate: φ[2], u[5]), (flip: φ[4], u[7]), (noise: φ[5], u[8]); \
area = 1 − g_crop·u[1]·(1 − sigmoid(φ[1])); aspect = exp(g_crop·(ln 3/4 + u[2]·ln 16/9)); \
crop_w = min(1, sqrt(area·aspect)), crop_h = min(1, sqrt(area/aspect)); cx = (1 − crop_w)(2u[3] − 1), cy = (1 − crop_h)(2u[4] − 1); \
angle = g_rotate·radians(180·sigmoid(φ[3]))·(2u[6] − 1); flip = g_flip; sigma = g_noise·softplus(φ[6])·u[9]. \
Augmentation (PyTorch affine_grid + grid_sample, bilinear, zeros outside, align_corners=False): output pixel (row i, column j) of H_out×W_out, \
u' = (2j+1)/W_out − 1, v' = (2i+1)/H_out − 1; source point (x_c, y_c) = ((cx+1)·W_in/2, (cy+1)·H_in/2) + R(angle)·(crop_w·W_in/2·u', crop_h·H_in/2·v'), \
R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]]; S(i, j) = bilinear sample at index (x_c − 0.5, y_c − 0.5); \
out(i, j) = (1 − flip)·S(i, j) + flip·S(i, W_out − 1 − j), then out += sigma·ε (ε = train.J.noise); no normalisation. \
Finite differences of this function agree with the hypergradient to about 1e-8 (hypergradient_fd).";

/// Writes the exported problem (seed `seed`) to `path`; returns metaug's
/// hypergradient.
pub fn export_problem(path: &Path, seed: u64) -> Result<[f64; NUM_PHI]> {
    let bytes = problem_bytes(seed)?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))?;
    Ok(MetaProblem::random_cnn(seed, INNER_STEPS).exact())
}

fn le_bytes<T: Copy, const N: usize>(
    v: impl IntoIterator<Item = T>,
    f: fn(T) -> [u8; N],
) -> Vec<u8> {
    v.into_iter().flat_map(f).collect()
}

/// The file's bytes.
pub fn problem_bytes(seed: u64) -> Result<Vec<u8>> {
    let p = MetaProblem::random_cnn(seed, INNER_STEPS);
    let Arch::Cnn(shape) = p.inner.model else {
        return Err(Error::invalid(
            "export",
            "the exported problem is the CNN's",
        ));
    };
    let (val_loss, grad) =
        crate::meta::maml::hypergradient(&p.w0, &p.phi, &p.batches, &p.val, &p.inner);
    let fd = p.finite_difference();
    // (name, dtype, shape, bytes)
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let f64s = |v: &[f64]| le_bytes(v.iter().copied(), f64::to_le_bytes);
    for (i, w) in p.w0.iter().enumerate() {
        out.push((
            format!("w.{i}"),
            Dtype::F64,
            w.shape().to_vec(),
            f64s(w.data()),
        ));
    }
    out.push(("phi".into(), Dtype::F64, vec![NUM_PHI], f64s(&p.phi)));
    out.push(("alpha".into(), Dtype::F64, vec![], f64s(&[p.inner.alpha])));
    out.push(("tau".into(), Dtype::F64, vec![], f64s(&[p.inner.tau])));
    let k = p.batches.len() as i64;
    out.push(("k".into(), Dtype::I64, vec![], k.to_le_bytes().to_vec()));
    let out_shape = p.inner.shape.out;
    let plane_out = shape.channels * out_shape.height as usize * out_shape.width as usize;
    for (j, b) in p.batches.iter().enumerate() {
        let n = b.labels.len();
        out.push((
            format!("train.{j}.images"),
            Dtype::F64,
            b.images.shape().to_vec(),
            f64s(b.images.data()),
        ));
        let labels = le_bytes(b.labels.iter().map(|&l| l as i64), i64::to_le_bytes);
        out.push((format!("train.{j}.labels"), Dtype::I64, vec![n], labels));
        let draws = le_bytes(b.draws.iter().flatten().copied(), f32::to_le_bytes);
        out.push((
            format!("train.{j}.draws"),
            Dtype::F32,
            vec![n, b.draws.first().map_or(0, |d| d.len())],
            draws,
        ));
        let eps = le_bytes(
            b.keys.iter().flat_map(|key| noise::<f32>(key, plane_out)),
            f32::to_le_bytes,
        );
        let noise_shape = vec![
            n,
            shape.channels,
            out_shape.height as usize,
            out_shape.width as usize,
        ];
        out.push((format!("train.{j}.noise"), Dtype::F32, noise_shape, eps));
        let keys = le_bytes(
            b.keys
                .iter()
                .flat_map(|key| [key.seed, key.epoch, key.sample]),
            u64::to_le_bytes,
        );
        out.push((format!("train.{j}.keys"), Dtype::U64, vec![n, 3], keys));
        let params: Vec<f64> = b
            .draws
            .iter()
            .flat_map(|u| relaxed_params(p.inner.family, &p.phi, p.inner.tau, u).0)
            .collect();
        out.push((
            format!("train.{j}.params"),
            Dtype::F64,
            vec![n, 7],
            f64s(&params),
        ));
    }
    out.push((
        "val.x".into(),
        Dtype::F64,
        p.val.x.shape().to_vec(),
        f64s(p.val.x.data()),
    ));
    let vl = le_bytes(p.val.labels.iter().map(|&l| l as i64), i64::to_le_bytes);
    out.push((
        "val.labels".into(),
        Dtype::I64,
        vec![p.val.labels.len()],
        vl,
    ));
    out.push(("val_loss".into(), Dtype::F64, vec![], f64s(&[val_loss])));
    out.push((
        "hypergradient".into(),
        Dtype::F64,
        vec![NUM_PHI],
        f64s(&grad),
    ));
    out.push((
        "hypergradient_fd".into(),
        Dtype::F64,
        vec![NUM_PHI],
        f64s(&fd),
    ));
    let views = out
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::invalid("export", format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("version", VERSION.to_string()),
        ("seed", seed.to_string()),
        (
            "model",
            format!(
                "cnn {}x{}x{} conv {} conv {} classes {}",
                shape.height, shape.width, shape.channels, shape.conv1, shape.conv2, shape.classes
            ),
        ),
        ("tensors", TENSORS.to_string()),
        ("conventions", CONVENTIONS.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::invalid("export", e.to_string()))
}

/// Reads tensor `name` of an exported file as f64 values (f64, f32, i64
/// and u64 tensors), with its shape.
pub fn read_tensor(st: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
    let t = st
        .tensor(name)
        .map_err(|e| Error::invalid("export", format!("tensor {name}: {e}")))?;
    let d = t.data();
    let values = match t.dtype() {
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
            .collect(),
        Dtype::U64 => d
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
            .collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
            .collect(),
        other => {
            return Err(Error::invalid(
                "export",
                format!("tensor {name}: dtype {other:?}"),
            ))
        }
    };
    Ok((t.shape().to_vec(), values))
}

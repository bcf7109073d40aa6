//! Hard-mode augmentation in training: the loader's own semantics (its
//! policy sampling and its `augment_into`) on the training batches.

use crate::decode::ImageView;
use crate::meta::augment::{augment_forward, params_row, AugmentShape, SampleKey, NUM_PARAMS};
use crate::meta::relaxed::{Family, NUM_PHI};
use crate::meta::tensor::Tensor;
use crate::ops::{augment_into, OutputSpec};
use crate::policy::Policy;

/// True when φ can never apply any op (the `none` policy): augmentation
/// is then the identity and is skipped.
pub(super) fn never_applies(phi: &[f64; NUM_PHI]) -> bool {
    [0, 2, 4, 5].iter().all(|&k| phi[k] == f64::NEG_INFINITY)
}

/// The loader's policy for φ in `family` (hard mode does not use τ).
fn hard_policy(phi: &[f64; NUM_PHI], family: Family) -> Policy {
    Policy {
        phi: phi.map(|v| v as f32),
        tau: crate::policy::DEFAULT_TAU,
        family,
    }
}

/// Images `[N, C, H, W]` whose every value is a byte / 255 (as loaded
/// images are), as the loader's sources: `[N, H, W, C]` bytes. `None` when
/// some value is not on that grid.
pub fn image_bytes(images: &Tensor<f32>) -> Option<Vec<u8>> {
    let s = images.shape();
    if s.len() != 4 {
        return None;
    }
    let (c, hw) = (s[1], s[2] * s[3]);
    let mut out = vec![0u8; images.len()];
    for (src, dst) in images.data().chunks(c * hw).zip(out.chunks_mut(c * hw)) {
        for (ch, plane) in src.chunks(hw).enumerate() {
            for (k, &v) in plane.iter().enumerate() {
                let q = (v * 255.0).round();
                if !(0.0..=255.0).contains(&q) || q as u8 as f32 / 255.0 != v {
                    return None;
                }
                dst[k * c + ch] = q as u8;
            }
        }
    }
    Some(out)
}

/// Hard-mode augmentation of a batch (loader semantics) to `[n, D]`.
///
/// One source of truth with the loader: parameters from
/// [`Policy::hard_params`](crate::policy::Policy::hard_params) on the
/// sample's draws and, for images of bytes / 255, the loader's own
/// [`augment_into`] (f32 output, mean 0, std 1); large batches spread
/// over threads (see [`PARALLEL_MIN_ELEMENTS`](crate::meta::augment::PARALLEL_MIN_ELEMENTS)).
/// Other images go through the meta node's forward, the same formulas on
/// f32 pixels.
pub fn augment_hard(
    images: &Tensor<f32>,
    keys: &[SampleKey],
    phi: &[f64; NUM_PHI],
    family: Family,
    shape: &AugmentShape,
) -> Tensor<f32> {
    let n = keys.len();
    let d = images.len() / n.max(1);
    if never_applies(phi) {
        return images.clone().reshape(&[n, d]);
    }
    match image_bytes(images) {
        Some(bytes) => {
            let rows: Vec<usize> = (0..n).collect();
            augment_hard_bytes(&bytes, &rows, keys, phi, family, shape)
        }
        None => {
            let policy = hard_policy(phi, family);
            let params: Vec<f32> = keys
                .iter()
                .flat_map(|k| params_row(&policy.sample_hard(k.seed, k.epoch, k.sample)))
                .collect();
            let params = Tensor::new(&[n, NUM_PARAMS], params);
            let out = augment_forward(images, &params, keys, shape);
            let d_out = out.len() / n.max(1);
            out.reshape(&[n, d_out])
        }
    }
}

/// [`augment_hard`] of rows `rows` of the `[N, H, W, C]` source bytes
/// (from [`image_bytes`]), with the loader's [`augment_into`].
pub fn augment_hard_bytes(
    bytes: &[u8],
    rows: &[usize],
    keys: &[SampleKey],
    phi: &[f64; NUM_PHI],
    family: Family,
    shape: &AugmentShape,
) -> Tensor<f32> {
    assert_eq!(rows.len(), keys.len(), "one key per row");
    let (c, src) = (shape.channels, shape.src);
    let plane_in = c * src.height as usize * src.width as usize;
    let spec = OutputSpec::new(shape.out, c as u32);
    let d_out = spec.sample_elements();
    let n = rows.len();
    let mut out = vec![0f32; n * d_out];
    let policy = hard_policy(phi, family);
    let parallel = out.len() >= crate::meta::augment::PARALLEL_MIN_ELEMENTS;
    crate::meta::augment::for_each_chunk(
        &mut out,
        d_out,
        parallel,
        || (),
        |_, b, o| {
            let (r, k) = (rows[b], &keys[b]);
            let view = ImageView {
                height: src.height,
                width: src.width,
                channels: c as u32,
                data: &bytes[r * plane_in..(r + 1) * plane_in],
            };
            let params = policy.sample_hard(k.seed, k.epoch, k.sample);
            augment_into(view, &params, k.noise(), &spec, bytemuck::cast_slice_mut(o));
            // augment_into writes little-endian f32
            for v in o.iter_mut() {
                *v = f32::from_bits(u32::from_le(v.to_bits()));
            }
        },
    );
    Tensor::new(&[n, d_out], out)
}

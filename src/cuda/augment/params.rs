//! The per-sample parameter row the kernels read (the inverse affine map,
//! the flip gate, sigma) and the normalisation constants passed to them by
//! value.

use crate::cuda::spec::OutputSpec;
use crate::ops::{SampleParams, Size, SourceWindow};

/// Floats per sample in the parameter array the kernels read:
/// `m0..m5` (the inverse affine map), the flip gate, sigma.
pub const PARAMS_PER_SAMPLE: usize = 8;

/// The per-sample row the kernels read: `affine_matrix(geometry, src, out)`,
/// then `flip`, then `sigma`.
pub fn pack_params(p: &SampleParams, src: Size, out: Size) -> [f32; PARAMS_PER_SAMPLE] {
    pack_window_params(p, &SourceWindow::whole(src), out)
}

/// [`pack_params`] for a sample decoded as a window of its source image:
/// the map is the window's [`matrix`](SourceWindow::matrix) (the whole
/// image's, scaled when the decode was); the window's origin travels in
/// the size array (`[h, w, oy, ox]` per sample).
pub fn pack_window_params(
    p: &SampleParams,
    window: &SourceWindow,
    out: Size,
) -> [f32; PARAMS_PER_SAMPLE] {
    let m = window.matrix(&p.geometry, out);
    [m[0], m[1], m[2], m[3], m[4], m[5], p.flip, p.sigma]
}

/// `struct Norm` of `augment.cu` (32 bytes, align 4; the compile test checks
/// the PTX parameter is a 32-byte `.b8` array, the emulator that the host
/// compiler's `sizeof(Norm)` is 32).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Norm {
    mean: [f32; 4],
    std: [f32; 4],
}

pub(super) fn norm_of(spec: &OutputSpec) -> Norm {
    let mut n = Norm {
        mean: [0.0; 4],
        std: [1.0; 4],
    };
    for (c, (m, s)) in spec.mean.iter().zip(&spec.std).take(4).enumerate() {
        n.mean[c] = *m;
        n.std[c] = *s;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::*;
    use crate::ops::Geometry;

    #[test]
    fn pack_params_is_the_affine_map_then_gates() {
        let p = SampleParams {
            geometry: Geometry {
                angle: 0.3,
                ..Geometry::IDENTITY
            },
            flip: 0.25,
            sigma: 0.05,
        };
        let (src, out) = (Size::new(20, 30), Size::new(8, 12));
        let row = pack_params(&p, src, out);
        assert_eq!(&row[..6], &crate::ops::affine_matrix(&p.geometry, src, out));
        assert_eq!(row[6], 0.25);
        assert_eq!(row[7], 0.05);
    }

    #[test]
    fn norm_pads_unused_channels() {
        let mut s = spec(1);
        s.mean = vec![0.5];
        s.std = vec![0.25];
        let n = norm_of(&s);
        assert_eq!(n.mean, [0.5, 0.0, 0.0, 0.0]);
        assert_eq!(n.std, [0.25, 1.0, 1.0, 1.0]);
        assert_eq!(
            std::mem::size_of::<Norm>(),
            crate::cuda::kernels::NORM_BYTES
        );
    }
}

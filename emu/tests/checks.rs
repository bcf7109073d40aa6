//! The emulator's own checks, on real kernels with hand-made arguments: an
//! out-of-bounds read is an error naming the kernel and thread, a bad launch
//! configuration is refused, and a correct launch computes what it should.

use std::ffi::c_void;

use metaug_cuda_emu::{kernels, HostKernels};

/// Arguments of `metaug_relaxed_forward` for one 1-channel sample of `h x w`
/// read into `ho x wo`, with `x` as the input buffer (whatever its length).
fn forward(x: &[f32], (h, w): (u32, u32), (ho, wo): (u32, u32)) -> Result<Vec<f32>, String> {
    // identity map, no flip, no noise
    let params = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    let samples = [0u32];
    let mut out = vec![f32::NAN; (ho * wo) as usize];
    let (mut px, mut pp, mut ps, mut po) = (
        x.as_ptr() as u64,
        params.as_ptr() as u64,
        samples.as_ptr() as u64,
        out.as_mut_ptr() as u64,
    );
    let mut scalars = [1u32, 2, 3, 1, h, w, ho, wo];
    let mut p: Vec<*mut c_void> = vec![
        &mut px as *mut u64 as *mut c_void,
        &mut pp as *mut u64 as *mut c_void,
        &mut ps as *mut u64 as *mut c_void,
    ];
    p.extend(scalars.iter_mut().map(|v| v as *mut u32 as *mut c_void));
    p.push(&mut po as *mut u64 as *mut c_void);
    let range = |a: u64, bytes: usize| (a as usize, a as usize + bytes);
    let buffers = [
        range(px, x.len() * 4),
        range(pp, 32),
        range(ps, 4),
        range(po, out.len() * 4),
    ];
    let blocks = (ho * wo).div_ceil(256);
    // SAFETY: the parameter array matches metaug_relaxed_forward's list; the
    // kernel reads x only through __ldg, which the emulator checks against
    // `buffers`, and writes out[0 .. ho*wo).
    unsafe {
        HostKernels { schedule: 7 }.launch(
            "metaug_relaxed_forward",
            (blocks, 1, 1),
            (256, 1, 1),
            0,
            &mut p,
            &buffers,
        )
    }?;
    Ok(out)
}

#[test]
fn a_correct_launch_copies_under_the_identity_map() {
    let x: Vec<f32> = (0..35).map(|k| k as f32 / 35.0).collect();
    let out = forward(&x, (5, 7), (5, 7)).unwrap();
    assert_eq!(out, x);
}

#[test]
fn a_read_outside_the_launch_buffers_is_an_error() {
    // The host says 5 x 7 but hands over only 20 pixels.
    let x = vec![0.5f32; 20];
    let err = forward(&x, (5, 7), (5, 7)).unwrap_err();
    assert!(err.contains("metaug_relaxed_forward"), "{err}");
    assert!(err.contains("outside every buffer"), "{err}");
    assert!(err.contains("thread ("), "{err}");
}

#[test]
fn bad_launch_configurations_are_refused() {
    let mut none: Vec<*mut c_void> = Vec::new();
    for (grid, block) in [
        ((1, 1, 1), (1025, 1, 1)),
        ((1, 1, 1), (0, 1, 1)),
        ((1, 65_536, 1), (32, 1, 1)),
    ] {
        // SAFETY: refused before any argument is read.
        let r = unsafe {
            HostKernels::default().launch("metaug_relaxed_reduce", grid, block, 0, &mut none, &[])
        };
        assert!(r.is_err(), "{grid:?} {block:?}");
    }
    // SAFETY: refused before any argument is read.
    let r = unsafe {
        HostKernels::default().launch("no_such_kernel", (1, 1, 1), (1, 1, 1), 0, &mut none, &[])
    };
    assert!(r.unwrap_err().contains("no kernel named"));
}

#[test]
fn parameter_sizes_are_what_the_host_compiler_sees() {
    let ks = kernels();
    let fwd = ks
        .iter()
        .find(|k| k.name == "metaug_augment_f32_nchw_c3_v4")
        .unwrap();
    // 5 pointers, Norm (32 bytes), 5 unsigned ints, the output pointer
    assert_eq!(fwd.param_sizes, [8, 8, 8, 8, 8, 32, 4, 4, 4, 4, 4, 8]);
}

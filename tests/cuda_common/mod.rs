//! Shared by the `tests/cuda_*.rs` binaries: the device (or a skip message),
//! fresh seeded randomness, output decoding and comparison, and an f64 CPU
//! reference of the relaxed-mode forward and VJP (the contract gives relaxed
//! mode no CPU API to test against; the hard-mode forward is checked against
//! `ops::augment_into` instead, in `cuda_augment.rs`).
#![allow(dead_code)]

use std::cell::Cell;
use std::ffi::c_void;

use metaug::cuda::backend::LaunchConfig;
use metaug::cuda::{DType, Device, Emulator, KernelRunner, Layout, PARAMS_PER_SAMPLE};
use metaug::ops::philox::{PhiloxStream, STREAM_NOISE};
use metaug::ops::{Geometry, SampleParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Device 0, or `None` after printing `skipped: no CUDA device (reason)`.
/// With `METAUG_REQUIRE_GPU` set (the prepared device check), no device is a
/// failure instead.
pub fn gpu(test: &str) -> Option<Device> {
    match Device::new(0) {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("METAUG_REQUIRE_GPU").is_some() => {
            panic!("{test}: METAUG_REQUIRE_GPU is set and there is no CUDA device ({e})")
        }
        Err(e) => {
            eprintln!("{test}: skipped: no CUDA device ({e})");
            None
        }
    }
}

/// The kernels compiled for the host (`metaug-cuda-emu`), as the emulator's runner.
pub struct HostRunner(pub metaug_cuda_emu::HostKernels);

impl KernelRunner for HostRunner {
    fn kernels(&self) -> Vec<(String, Vec<usize>)> {
        metaug_cuda_emu::kernels()
            .into_iter()
            .map(|k| (k.name, k.param_sizes))
            .collect()
    }

    unsafe fn run(
        &self,
        kernel: &str,
        cfg: LaunchConfig,
        params: &mut [*mut c_void],
        buffers: &[(usize, usize)],
    ) -> Result<(), String> {
        // SAFETY: forwarded from `Backend::launch`, whose contract is the same.
        unsafe {
            self.0.launch(
                kernel,
                cfg.grid_dim,
                cfg.block_dim,
                cfg.shared_mem_bytes,
                params,
                buffers,
            )
        }
    }
}

/// An emulated device whose thread schedule is `schedule` (0: in order).
pub fn emulator(schedule: u64) -> Emulator {
    Emulator::new(HostRunner(metaug_cuda_emu::HostKernels { schedule }))
}

/// Where a test body runs: the sizes it picks may depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// On the CPU emulator (every CUDA thread an OS thread: keep grids small).
    Emulated,
    /// On a GPU.
    Gpu,
}

thread_local! {
    /// Comparisons of a kernel's output with a reference on this test's
    /// thread, counted for the report.
    static CASES: Cell<u64> = const { Cell::new(0) };
}

/// Counts one checked kernel case (a launch's output compared with a reference).
pub fn case_checked() {
    CASES.with(|c| c.set(c.get() + 1));
}

/// Prints an emulated test's report line, and appends it to the file named by
/// `METAUG_EMULATED_REPORT` when that is set (CI sums the launches and cases
/// from it without running the tests a second time to see their output).
pub fn report(line: &str) {
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("METAUG_EMULATED_REPORT") {
        use std::io::Write;
        // One short write per line, in append mode: lines from parallel
        // tests do not interleave.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("METAUG_EMULATED_REPORT {path:?}: {e}"));
        file.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("METAUG_EMULATED_REPORT {path:?}: {e}"));
    }
}

/// Runs `body` on a fresh emulator with a random (printed) schedule, and
/// reports how many launches it ran.
pub fn run_emulated(test: &str, body: impl FnOnce(Emulator, &mut StdRng)) {
    let mut rng = rng(test);
    let schedule = rng.random::<u64>() | 1;
    let emu = emulator(schedule);
    let before = CASES.with(Cell::get);
    body(emu.clone(), &mut rng);
    report(&format!(
        "{test} (emulated, schedule {schedule:#x}): {} kernel launches, {} checked cases",
        emu.launches(),
        CASES.with(Cell::get) - before
    ));
    assert!(emu.launches() > 0, "{test}: no kernel ran on the emulator");
}

/// Defines, for each generic test body `fn name<B: Backend>(dev: B, rng, scale)`,
/// a module `name` with two tests: `emulated` (always runs) and `gpu`
/// (skips with a message when no CUDA device is found).
#[macro_export]
macro_rules! on_emulator_and_gpu {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn emulated() {
                $crate::cuda_common::run_emulated(
                    concat!(stringify!($name), "::emulated"),
                    |dev, rng| super::$name(dev, rng, $crate::cuda_common::Scale::Emulated),
                );
            }

            #[test]
            fn gpu() {
                let test = concat!(stringify!($name), "::gpu");
                if let Some(dev) = $crate::cuda_common::gpu(test) {
                    let mut rng = $crate::cuda_common::rng(test);
                    super::$name(dev, &mut rng, $crate::cuda_common::Scale::Gpu);
                }
            }
        }
    )*};
}

/// A fresh RNG per run (seed printed; `METAUG_TEST_SEED` replays one).
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("METAUG_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    eprintln!("{test}: METAUG_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Random HWC u8 pixels.
pub fn random_pixels(rng: &mut StdRng, h: u32, w: u32, c: u32) -> Vec<u8> {
    (0..h as usize * w as usize * c as usize)
        .map(|_| rng.random())
        .collect()
}

/// Which parts of the augmentation a random parameter set exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ops {
    Identity,
    Crop,
    Rotate,
    FlipFull,
    FlipBlend,
    Noise,
    All,
}

pub const EACH_OP: [Ops; 7] = [
    Ops::Identity,
    Ops::Crop,
    Ops::Rotate,
    Ops::FlipFull,
    Ops::FlipBlend,
    Ops::Noise,
    Ops::All,
];

/// Random parameters exercising `ops`.
pub fn random_params(rng: &mut StdRng, ops: Ops) -> SampleParams {
    let mut p = SampleParams::IDENTITY;
    let crop = |rng: &mut StdRng, g: &mut Geometry| {
        g.area = rng.random_range(0.08..1.0);
        g.aspect = rng.random_range(0.5..2.0);
        g.center = [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)];
    };
    match ops {
        Ops::Identity => {}
        Ops::Crop => crop(rng, &mut p.geometry),
        Ops::Rotate => p.geometry.angle = rng.random_range(-3.2..3.2),
        Ops::FlipFull => p.flip = 1.0,
        Ops::FlipBlend => p.flip = rng.random_range(0.01..0.99),
        Ops::Noise => p.sigma = rng.random_range(0.001..0.3),
        Ops::All => {
            crop(rng, &mut p.geometry);
            p.geometry.angle = rng.random_range(-3.2..3.2);
            p.flip = [0.0, 1.0, rng.random_range(0.0..1.0)][rng.random_range(0..3)];
            p.sigma = [0.0, rng.random_range(0.0..0.3)][rng.random_range(0..2)];
        }
    }
    p
}

/// Decodes one output buffer (little-endian elements) to f32 values.
pub fn to_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::U8 => bytes.iter().map(|&b| b as f32).collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

/// Compares GPU and CPU outputs under the contract's tolerances: u8 within 1,
/// f32 within `1e-4 × range`, f16 within that plus one f16 ulp of the value.
/// NaN never passes. Returns the largest difference seen.
pub fn assert_close(what: &str, gpu: &[u8], cpu: &[u8], dtype: DType, range: f32) -> f32 {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let (g, c) = (to_f32(gpu, dtype), to_f32(cpu, dtype));
    let mut worst = 0f32;
    let mut exact = 0usize;
    for (k, (a, b)) in g.iter().zip(&c).enumerate() {
        let d = (a - b).abs();
        let tol = match dtype {
            DType::U8 => 1.0,
            DType::F32 => 1e-4 * range,
            DType::F16 => 1e-4 * range + ulp_f16(*b),
        };
        assert!(
            d <= tol,
            "{what}: element {k}: gpu {a} cpu {b} (|diff| {d} > {tol})"
        );
        worst = worst.max(d);
        exact += (a.to_bits() == b.to_bits()) as usize;
    }
    eprintln!(
        "{what}: max |gpu - cpu| = {worst:e}, {exact}/{} bit-identical",
        g.len()
    );
    worst
}

fn ulp_f16(v: f32) -> f32 {
    let h = half::f16::from_f32(v.abs());
    (half::f16::from_bits(h.to_bits() + 1).to_f32() - h.to_f32()).abs()
}

/// Output element offset (layout order) of channel `c` of pixel `(i, j)`.
pub fn offset(
    layout: Layout,
    c: usize,
    i: usize,
    j: usize,
    ch: usize,
    h: usize,
    w: usize,
) -> usize {
    match layout {
        Layout::Nchw => (c * h + i) * w + j,
        Layout::Nhwc => (i * w + j) * ch + c,
    }
}

// ---------------------------------------------------------------------------
// Relaxed mode, CPU reference in f64 (the formulas of kernels/relaxed.cu).

/// Shape of one relaxed-mode sample: `c × h × w` in, `c × ho × wo` out.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
    /// Evaluate the map `x = m0*j + m1*i + m2` in f32, as the contract (and
    /// the kernels) do, instead of f64: for comparing with kernels at sizes
    /// where an f32 coordinate is off by ~1e-5 px (the weights move with it).
    /// Off for finite differences of the reference itself.
    pub f32_coords: bool,
}

struct Foot {
    fx: f64,
    fy: f64,
    x0: i64,
    y0: i64,
}

fn foot(x: f64, y: f64) -> Foot {
    let (x0, y0) = (x.floor(), y.floor());
    Foot {
        fx: x - x0,
        fy: y - y0,
        x0: x0 as i64,
        y0: y0 as i64,
    }
}

fn px(img: &[f64], d: Dims, c: usize, y: i64, x: i64) -> f64 {
    if y < 0 || x < 0 || y >= d.h as i64 || x >= d.w as i64 {
        0.0
    } else {
        img[(c * d.h + y as usize) * d.w + x as usize]
    }
}

/// S, dS/dx, dS/dy of channel `c` at `(x, y)`.
fn sample(img: &[f64], d: Dims, c: usize, x: f64, y: f64) -> (f64, f64, f64) {
    let f = foot(x, y);
    let p00 = px(img, d, c, f.y0, f.x0);
    let p01 = px(img, d, c, f.y0, f.x0 + 1);
    let p10 = px(img, d, c, f.y0 + 1, f.x0);
    let p11 = px(img, d, c, f.y0 + 1, f.x0 + 1);
    let (gx, gy) = (1.0 - f.fx, 1.0 - f.fy);
    let v = gy * (gx * p00 + f.fx * p01) + f.fy * (gx * p10 + f.fx * p11);
    let dx = gy * (p01 - p00) + f.fy * (p11 - p10);
    let dy = gx * (p10 - p00) + f.fx * (p11 - p01);
    (v, dx, dy)
}

fn map(d: Dims, p: &[f64; PARAMS_PER_SAMPLE], j: f64, i: f64) -> (f64, f64) {
    if d.f32_coords {
        let q = p.map(|v| v as f32);
        let (j, i) = (j as f32, i as f32);
        return (
            (q[0] * j + q[1] * i + q[2]) as f64,
            (q[3] * j + q[4] * i + q[5]) as f64,
        );
    }
    (p[0] * j + p[1] * i + p[2], p[3] * j + p[4] * i + p[5])
}

/// The noise of element `e` (f32 Philox normal, widened).
pub fn eps(seed: u64, epoch: u64, sample: u64, e: usize) -> f64 {
    PhiloxStream::new(seed, epoch, sample, STREAM_NOISE).normals((e / 4) as u32)[e % 4] as f64
}

/// Relaxed forward of one sample.
pub fn relaxed_forward(
    img: &[f64],
    d: Dims,
    p: &[f64; PARAMS_PER_SAMPLE],
    noise: &dyn Fn(usize) -> f64,
) -> Vec<f64> {
    let mut out = vec![0.0; d.c * d.ho * d.wo];
    let (g, sigma) = (p[6], p[7]);
    for c in 0..d.c {
        for i in 0..d.ho {
            for j in 0..d.wo {
                let jm = d.wo - 1 - j;
                let (xa, ya) = map(d, p, j as f64, i as f64);
                let (xb, yb) = map(d, p, jm as f64, i as f64);
                let a = sample(img, d, c, xa, ya).0;
                let b = sample(img, d, c, xb, yb).0;
                let e = (c * d.ho + i) * d.wo + j;
                out[e] = (1.0 - g) * a + g * b + sigma * noise(e);
            }
        }
    }
    out
}

/// Relaxed VJP of one sample: `(dL/dparams, dL/dinput)` for upstream `go`.
/// With `abs`, every term is added as its absolute value instead (the scale
/// that f32 rounding errors are relative to, whatever cancels in the sum).
pub fn relaxed_vjp(
    img: &[f64],
    d: Dims,
    p: &[f64; PARAMS_PER_SAMPLE],
    noise: &dyn Fn(usize) -> f64,
    go: &[f64],
    abs: bool,
) -> ([f64; PARAMS_PER_SAMPLE], Vec<f64>) {
    let t = |v: f64| if abs { v.abs() } else { v };
    let mut gp = [0.0; PARAMS_PER_SAMPLE];
    let mut gi = vec![0.0; img.len()];
    let g = p[6];
    let mut scatter = |c: usize, x: f64, y: f64, wgt: f64| {
        let f = foot(x, y);
        for (dy, dx, w) in [
            (0, 0, (1.0 - f.fy) * (1.0 - f.fx)),
            (0, 1, (1.0 - f.fy) * f.fx),
            (1, 0, f.fy * (1.0 - f.fx)),
            (1, 1, f.fy * f.fx),
        ] {
            let (yy, xx) = (f.y0 + dy, f.x0 + dx);
            if yy >= 0 && xx >= 0 && (yy as usize) < d.h && (xx as usize) < d.w {
                gi[(c * d.h + yy as usize) * d.w + xx as usize] += t(wgt * w);
            }
        }
    };
    for c in 0..d.c {
        for i in 0..d.ho {
            for j in 0..d.wo {
                let jm = d.wo - 1 - j;
                let e = (c * d.ho + i) * d.wo + j;
                let gout = go[e];
                let (xa, ya) = map(d, p, j as f64, i as f64);
                let (xb, yb) = map(d, p, jm as f64, i as f64);
                let (sa, dxa, dya) = sample(img, d, c, xa, ya);
                let (sb, dxb, dyb) = sample(img, d, c, xb, yb);
                let (ua, ub) = (1.0 - g, g);
                let (fi, fj, fjm) = (i as f64, j as f64, jm as f64);
                gp[0] += t(gout * (ua * dxa * fj + ub * dxb * fjm));
                gp[1] += t(gout * (ua * dxa + ub * dxb) * fi);
                gp[2] += t(gout * (ua * dxa + ub * dxb));
                gp[3] += t(gout * (ua * dya * fj + ub * dyb * fjm));
                gp[4] += t(gout * (ua * dya + ub * dyb) * fi);
                gp[5] += t(gout * (ua * dya + ub * dyb));
                gp[6] += t(gout * (sb - sa));
                gp[7] += t(gout * noise(e));
                scatter(c, xa, ya, gout * ua);
                scatter(c, xb, yb, gout * ub);
            }
        }
    }
    (gp, gi)
}

/// A random relaxed-mode parameter row for a `h × w` source and `ho × wo`
/// output: a random crop/rotation through `affine_matrix`, a gate strictly
/// inside (0, 1), a noise level.
pub fn random_relaxed_params(
    rng: &mut StdRng,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
) -> [f32; PARAMS_PER_SAMPLE] {
    let mut p = random_params(rng, Ops::Crop);
    p.geometry.angle = rng.random_range(-1.0..1.0);
    p.flip = rng.random_range(0.05..0.95);
    p.sigma = rng.random_range(0.0..0.2);
    metaug::cuda::pack_params(
        &p,
        metaug::ops::Size::new(h, w),
        metaug::ops::Size::new(ho, wo),
    )
}

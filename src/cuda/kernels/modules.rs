//! Module definitions: the PTX parameter types, each kernel's parameter list
//! as the Rust side pushes it, and the NVRTC compilation units (the fused
//! forward's variants, the relaxed kernels, the Philox check).

use crate::cuda::spec::{DType, Layout};

/// A kernel parameter as it appears in PTX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// A device pointer (`.u64`).
    Ptr,
    /// `unsigned int` (`.u32`).
    U32,
    /// A struct passed by value (`.b8 name[N]`), N bytes.
    Bytes(usize),
}

impl Param {
    /// The parameter's size in bytes (`sizeof` of its C type).
    pub fn size(self) -> usize {
        match self {
            Param::Ptr => 8,
            Param::U32 => 4,
            Param::Bytes(n) => n,
        }
    }
}

/// A kernel entry point and its parameter list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSig {
    /// The `extern "C"` name.
    pub name: String,
    /// Parameters in order.
    pub params: Vec<Param>,
}

/// One NVRTC compilation unit: a `.cu` file plus defines, and the kernels it provides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleDef {
    /// Unique id (also the cache file prefix).
    pub key: String,
    /// The `.cu` file under `kernels/`.
    pub file: &'static str,
    /// `-D` options.
    pub defines: Vec<String>,
    /// Entry points the Rust side launches from this module.
    pub kernels: Vec<KernelSig>,
}

/// Size of `struct Norm` in `augment.cu` (4 means, 4 stds).
pub const NORM_BYTES: usize = 32;

/// The parameter list of every fused forward variant (see `augment.cu`).
pub const AUGMENT_PARAMS: &[Param] = &[
    Param::Ptr,               // src
    Param::Ptr,               // src_off
    Param::Ptr,               // src_hw
    Param::Ptr,               // params
    Param::Ptr,               // samples
    Param::Bytes(NORM_BYTES), // norm
    Param::U32,               // seed_lo
    Param::U32,               // seed_hi
    Param::U32,               // epoch
    Param::U32,               // out_h
    Param::U32,               // out_w
    Param::Ptr,               // out
];

/// One variant of the fused forward kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AugmentVariant {
    /// Output element type.
    pub dtype: DType,
    /// Output layout.
    pub layout: Layout,
    /// Channels (1 or 3).
    pub channels: u32,
    /// The vector path (`W_out % 4 == 0`).
    pub vec4: bool,
}

impl AugmentVariant {
    /// Every variant, in a fixed order.
    pub fn all() -> Vec<AugmentVariant> {
        let mut v = Vec::new();
        for dtype in [DType::U8, DType::F16, DType::F32] {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                for channels in [1, 3] {
                    for vec4 in [false, true] {
                        v.push(AugmentVariant {
                            dtype,
                            layout,
                            channels,
                            vec4,
                        });
                    }
                }
            }
        }
        v
    }

    fn codes(self) -> (&'static str, u32, &'static str, u32) {
        let (dn, dc) = match self.dtype {
            DType::U8 => ("u8", 0),
            DType::F16 => ("f16", 1),
            DType::F32 => ("f32", 2),
        };
        let (ln, lc) = match self.layout {
            Layout::Nchw => ("nchw", 0),
            Layout::Nhwc => ("nhwc", 1),
        };
        (dn, dc, ln, lc)
    }

    /// The kernel's `extern "C"` name, e.g. `metaug_augment_f32_nchw_c3_v4`.
    pub fn kernel_name(self) -> String {
        let (dn, _, ln, _) = self.codes();
        let v = if self.vec4 { "_v4" } else { "" };
        format!("metaug_augment_{dn}_{ln}_c{}{v}", self.channels)
    }

    /// The module that holds only this variant.
    pub fn module(self) -> ModuleDef {
        let (_, dc, _, lc) = self.codes();
        let name = self.kernel_name();
        ModuleDef {
            key: name.clone(),
            file: "augment.cu",
            defines: vec![format!(
                "METAUG_AUGMENT_VARIANT=METAUG_AUGMENT_KERNEL({name},{dc},{lc},{},{})",
                self.channels, self.vec4
            )],
            kernels: vec![KernelSig {
                name,
                params: AUGMENT_PARAMS.to_vec(),
            }],
        }
    }
}

/// Relaxed forward: `x, params, samples, seed_lo, seed_hi, epoch, channels, in_h, in_w, out_h, out_w, out`.
pub const RELAXED_FORWARD_PARAMS: &[Param] = &[
    Param::Ptr,
    Param::Ptr,
    Param::Ptr,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::Ptr,
];

/// Relaxed VJP (parameters only): the forward's inputs, then `grad_out, partial`.
pub const RELAXED_VJP_PARAMS: &[Param] = &[
    Param::Ptr,
    Param::Ptr,
    Param::Ptr,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::Ptr,
    Param::Ptr,
];

/// Relaxed VJP with the input gradient: as [`RELAXED_VJP_PARAMS`], then `grad_x`.
pub const RELAXED_VJP_INPUT_PARAMS: &[Param] = &[
    Param::Ptr,
    Param::Ptr,
    Param::Ptr,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::Ptr,
    Param::Ptr,
    Param::Ptr,
];

/// `partial, blocks, grad_params`.
pub const RELAXED_REDUCE_PARAMS: &[Param] = &[Param::Ptr, Param::U32, Param::Ptr];

/// The relaxed-mode module (`relaxed.cu`).
pub fn relaxed_module() -> ModuleDef {
    let sig = |name: &str, params: &[Param]| KernelSig {
        name: name.to_string(),
        params: params.to_vec(),
    };
    ModuleDef {
        key: "relaxed".into(),
        file: "relaxed.cu",
        defines: Vec::new(),
        kernels: vec![
            sig("metaug_relaxed_forward", RELAXED_FORWARD_PARAMS),
            sig("metaug_relaxed_vjp_params", RELAXED_VJP_PARAMS),
            sig("metaug_relaxed_vjp_input", RELAXED_VJP_INPUT_PARAMS),
            sig("metaug_relaxed_reduce", RELAXED_REDUCE_PARAMS),
        ],
    }
}

/// `seed_lo, seed_hi, epoch, sample, stream, first_block, blocks, words, normals, normals_at`.
pub const PHILOX_CHECK_PARAMS: &[Param] = &[
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::U32,
    Param::Ptr,
    Param::Ptr,
    Param::Ptr,
];

/// The Philox check module (`philox.cu`), used by tests.
pub fn philox_module() -> ModuleDef {
    ModuleDef {
        key: "philox".into(),
        file: "philox.cu",
        defines: Vec::new(),
        kernels: vec![KernelSig {
            name: "metaug_philox_check".into(),
            params: PHILOX_CHECK_PARAMS.to_vec(),
        }],
    }
}

/// Every module the crate may load.
pub fn all_modules() -> Vec<ModuleDef> {
    let mut v: Vec<ModuleDef> = AugmentVariant::all()
        .into_iter()
        .map(AugmentVariant::module)
        .collect();
    v.push(relaxed_module());
    v.push(philox_module());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::kernels::sources::source_text;

    #[test]
    fn module_table_is_consistent() {
        let mods = all_modules();
        assert_eq!(mods.len(), 24 + 2);
        let mut names: Vec<_> = mods
            .iter()
            .flat_map(|m| m.kernels.iter().map(|k| k.name.clone()))
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "kernel names are unique");
        for m in &mods {
            // every kernel named on the host is defined in its file
            let src = source_text(m.file).unwrap();
            for k in &m.kernels {
                let stem = k.name.trim_start_matches("metaug_");
                assert!(
                    src.contains(&k.name) || m.file == "augment.cu" && stem.starts_with("augment_"),
                    "{} not in {}",
                    k.name,
                    m.file
                );
            }
        }
        let v = AugmentVariant {
            dtype: DType::F16,
            layout: Layout::Nhwc,
            channels: 3,
            vec4: true,
        };
        assert_eq!(v.kernel_name(), "metaug_augment_f16_nhwc_c3_v4");
        assert_eq!(
            v.module().defines,
            vec!["METAUG_AUGMENT_VARIANT=METAUG_AUGMENT_KERNEL(metaug_augment_f16_nhwc_c3_v4,1,1,3,true)"]
        );
    }
}

//! What `metaug bench` measures: the pipeline [`Stage`]s and the
//! [`BenchConfig`] of a run.

use serde::Serialize;

use crate::decode::RegionDecode;
use crate::error::{Error, Result};
use crate::loader::Device;
use crate::ops::{DType, Layout, Size};
use crate::policy::Policy;

/// A stage of the pipeline, as `metaug bench` measures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Locating records in the memory-mapped shards and checking their crc32c.
    Read,
    /// Decoding records to pixels.
    Decode,
    /// The fused CPU augmentation into the output format.
    Augment,
    /// Pinned host to device copies of decoded sources (CUDA only).
    Upload,
    /// The fused augmentation kernel on the device (CUDA only).
    GpuAugment,
    /// The loader, all stages together.
    EndToEnd,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Read,
        Stage::Decode,
        Stage::Augment,
        Stage::Upload,
        Stage::GpuAugment,
        Stage::EndToEnd,
    ];

    /// Short name (`read`, `decode`, `augment`, `upload`, `gpu_augment`, `end_to_end`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Decode => "decode",
            Stage::Augment => "augment",
            Stage::Upload => "upload",
            Stage::GpuAugment => "gpu_augment",
            Stage::EndToEnd => "end_to_end",
        }
    }

    /// Parses a [`name`](Stage::name) (`e2e` is accepted for `end_to_end`).
    pub fn parse(s: &str) -> Result<Stage> {
        let s = s.trim();
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .or((s == "e2e").then_some(Stage::EndToEnd))
            .ok_or_else(|| {
                Error::invalid(
                    "stage",
                    format!("{s:?}: expected read, decode, augment, upload, gpu_augment or e2e"),
                )
            })
    }

    pub(super) fn on_device(self) -> bool {
        matches!(self, Stage::Upload | Stage::GpuAugment)
    }
}

/// What to measure and how.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Samples per batch (the loader's, and the unit of the device stages).
    pub batch: usize,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Output size (default: the first record's).
    pub size: Option<Size>,
    /// Output channels (default: the first record's).
    pub channels: Option<u32>,
    /// Output element type.
    pub dtype: DType,
    /// Output layout.
    pub layout: Layout,
    /// Per-channel mean and std (default: none, i.e. 0 and 1).
    pub normalize: Option<(Vec<f32>, Vec<f32>)>,
    /// Augmentation policy.
    pub policy: Policy,
    /// Seed of the draws and the loader's order.
    pub seed: u64,
    /// CPU, or a CUDA device.
    pub device: Device,
    /// Measuring time per stage, after a short warm-up.
    pub seconds: f64,
    /// The stages to run (default: all that apply to the device).
    pub stages: Vec<Stage>,
    /// At most this many decoded bytes are kept for the augment and device
    /// stages (which cycle over them).
    pub max_decoded_bytes: u64,
    /// How much of each JPEG the decode stage and the loader decode.
    pub region: RegionDecode,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            batch: 256,
            threads: None,
            size: None,
            channels: None,
            dtype: DType::F32,
            layout: Layout::Nchw,
            normalize: None,
            policy: Policy::default_policy(),
            seed: 0,
            device: Device::Cpu,
            seconds: 3.0,
            stages: Stage::ALL.to_vec(),
            max_decoded_bytes: 256 << 20,
            region: RegionDecode::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_parse() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.name()).unwrap(), s);
        }
        assert_eq!(Stage::parse(" e2e ").unwrap(), Stage::EndToEnd);
        assert!(Stage::parse("warp").is_err());
    }
}

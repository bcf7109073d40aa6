//! The output description and host image view the GPU path takes: the
//! same types as the CPU path, so one `OutputSpec` drives both.

pub use crate::decode::ImageView;
pub use crate::ops::{DType, Layout, OutputSpec};

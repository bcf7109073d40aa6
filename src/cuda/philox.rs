//! The device's Philox draws, for checking `kernels/philox.cuh` against
//! [`ops::philox`](crate::ops::philox) bit for bit.

use super::backend::{Backend, LaunchConfig};
use super::launch::Launch;
use crate::Result;

const BLOCK: u32 = 256;

/// The device's Philox draws for one sample's stream: `blocks` blocks from
/// `first_block`, as raw words, as normals, and as normals drawn one element
/// at a time. For checking `kernels/philox.cuh` against `ops::philox`.
#[allow(clippy::type_complexity)]
pub fn philox_draws<B: Backend>(
    device: &B,
    seed: u64,
    epoch: u64,
    sample: u64,
    stream_id: u32,
    first_block: u32,
    blocks: u32,
) -> Result<(Vec<u32>, Vec<f32>, Vec<f32>)> {
    let m = super::kernels::philox_module();
    let stream = device.new_stream()?;
    let n = blocks as usize * 4;
    let words = device.upload(&stream, &vec![0xABAB_ABABu32; n])?;
    let normals = device.upload(&stream, &vec![f32::NAN; n])?;
    let normals_at = device.upload(&stream, &vec![f32::NAN; n])?;
    let a = [
        seed as u32,
        (seed >> 32) as u32,
        epoch as u32,
        sample as u32,
        stream_id,
        first_block,
        blocks,
    ];
    let mut l = Launch::new(device, &m, 0);
    for &v in &a {
        l.u32(v);
    }
    l.buf::<u32>(&words)
        .buf::<f32>(&normals)
        .buf::<f32>(&normals_at);
    let cfg = LaunchConfig {
        grid_dim: (blocks.div_ceil(BLOCK).clamp(1, 1024), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the grid-stride loop covers t < blocks and writes elements
    // [4t, 4t+4) of each of the three buffers, which hold 4*blocks elements.
    unsafe { l.launch(&stream, cfg) }?;
    let mut w = vec![0u32; n];
    let mut z = vec![0f32; n];
    let mut za = vec![0f32; n];
    device.download_into(&stream, &words, &mut w)?;
    device.download_into(&stream, &normals, &mut z)?;
    device.download_into(&stream, &normals_at, &mut za)?;
    Ok((w, z, za))
}

//! The device's Philox draws, for checking `kernels/philox.cuh` against
//! [`ops::philox`](crate::ops::philox) bit for bit.

use cudarc::driver::LaunchConfig;

use super::device::{cu, Device};
use super::launch::Launch;
use crate::Result;

const BLOCK: u32 = 256;

/// The device's Philox draws for one sample's stream: `blocks` blocks from
/// `first_block`, as raw words, as normals, and as normals drawn one element
/// at a time. For checking `kernels/philox.cuh` against `ops::philox`.
#[allow(clippy::type_complexity)]
pub fn philox_draws(
    device: &Device,
    seed: u64,
    epoch: u64,
    sample: u64,
    stream_id: u32,
    first_block: u32,
    blocks: u32,
) -> Result<(Vec<u32>, Vec<f32>, Vec<f32>)> {
    let m = super::kernels::philox_module();
    let sig = &m.kernels[0];
    let func = device.function(&m, &sig.name)?;
    let stream = device.new_stream()?;
    let n = blocks as usize * 4;
    let mut words = stream
        .clone_htod(&vec![0xABAB_ABABu32; n])
        .map_err(cu("cuMemcpyHtoD"))?;
    let mut normals = stream
        .clone_htod(&vec![f32::NAN; n])
        .map_err(cu("cuMemcpyHtoD"))?;
    let mut normals_at = stream
        .clone_htod(&vec![f32::NAN; n])
        .map_err(cu("cuMemcpyHtoD"))?;
    let a = [
        seed as u32,
        (seed >> 32) as u32,
        epoch as u32,
        sample as u32,
        stream_id,
        first_block,
        blocks,
    ];
    let mut l = Launch::new(&stream, &func, sig);
    for v in &a {
        l.u32(v);
    }
    l.buf_mut(&mut words)
        .buf_mut(&mut normals)
        .buf_mut(&mut normals_at);
    let cfg = LaunchConfig {
        grid_dim: (blocks.div_ceil(BLOCK).clamp(1, 1024), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the grid-stride loop covers t < blocks and writes elements
    // [4t, 4t+4) of each of the three buffers, which hold 4*blocks elements.
    unsafe { l.launch(cfg) }?;
    let w = stream.clone_dtoh(&words).map_err(cu("cuMemcpyDtoH"))?;
    let z = stream.clone_dtoh(&normals).map_err(cu("cuMemcpyDtoH"))?;
    let za = stream.clone_dtoh(&normals_at).map_err(cu("cuMemcpyDtoH"))?;
    stream.synchronize().map_err(cu("cuStreamSynchronize"))?;
    Ok((w, z, za))
}

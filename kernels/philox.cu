// Philox check kernels: the raw words and the normals of one sample's stream, so
// that tests can compare kernels/philox.cuh with src/ops/philox.rs directly.
// Grid-stride over `blocks` Philox blocks; thread t writes block t's 4 words,
// its 4 normals (metaug_normals), and the same 4 normals again one element at a
// time (metaug_normal_at), which the augmentation kernels also use.
#include "philox.cuh"

extern "C" __global__ void metaug_philox_check(unsigned int seed_lo, unsigned int seed_hi,
                                               unsigned int epoch, unsigned int sample,
                                               unsigned int stream, unsigned int first_block,
                                               unsigned int blocks, unsigned int* __restrict__ words,
                                               float* __restrict__ normals,
                                               float* __restrict__ normals_at) {
  const PhiloxStream st = metaug_stream(seed_lo, seed_hi, epoch, sample, stream);
  for (unsigned int t = blockIdx.x * blockDim.x + threadIdx.x; t < blocks;
       t += gridDim.x * blockDim.x) {
    const unsigned int block = first_block + t;
    const Philox4 w = metaug_block(st, block);
    float z[4];
    metaug_normals(st, block, z);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      words[4ull * t + k] = w.v[k];
      normals[4ull * t + k] = z[k];
      normals_at[4ull * t + k] = metaug_normal_at(st, 4u * block + (unsigned int)k);
    }
  }
}

// Philox4x32-10 and the draws built on it, bit for bit as `src/ops/philox.rs`.
//
// A draw is addressed by (seed, epoch, sample, stream, block): the key is the
// 64-bit seed split (lo, hi), the 128-bit counter is [block, stream, sample,
// epoch]. Only the arithmetic below may change the numbers; keep the two files
// in step.
//
// This header uses no CUDA headers (NVRTC without a CUDA toolkit has none):
// plain `unsigned int`, `__umulhi`, and the device math built-ins.
#pragma once

#define METAUG_PHILOX_M0 0xD2511F53u
#define METAUG_PHILOX_M1 0xCD9E8D57u
#define METAUG_PHILOX_W0 0x9E3779B9u
#define METAUG_PHILOX_W1 0xBB67AE85u

// Stream ids (ops::philox::STREAM_*).
#define METAUG_STREAM_PARAMS 0u
#define METAUG_STREAM_NOISE 1u
#define METAUG_STREAM_SHUFFLE 2u

struct Philox4 {
  unsigned int v[4];
};

// The raw Philox4x32-10 bijection: 10 rounds over `counter` with `key`.
__device__ __forceinline__ Philox4 metaug_philox4x32_10(unsigned int c0, unsigned int c1,
                                                        unsigned int c2, unsigned int c3,
                                                        unsigned int k0, unsigned int k1) {
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += METAUG_PHILOX_W0;
      k1 += METAUG_PHILOX_W1;
    }
    const unsigned int hi0 = __umulhi(METAUG_PHILOX_M0, c0);
    const unsigned int lo0 = METAUG_PHILOX_M0 * c0;
    const unsigned int hi1 = __umulhi(METAUG_PHILOX_M1, c2);
    const unsigned int lo1 = METAUG_PHILOX_M1 * c2;
    const unsigned int n0 = hi1 ^ c1 ^ k0;
    const unsigned int n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  Philox4 r;
  r.v[0] = c0;
  r.v[1] = c1;
  r.v[2] = c2;
  r.v[3] = c3;
  return r;
}

// One sample's stream: key and the fixed part of the counter
// (ops::philox::PhiloxStream::new: seed lo/hi, sample and epoch truncated to 32 bits).
struct PhiloxStream {
  unsigned int k0, k1, stream, sample, epoch;
};

__device__ __forceinline__ PhiloxStream metaug_stream(unsigned int seed_lo, unsigned int seed_hi,
                                                      unsigned int epoch, unsigned int sample,
                                                      unsigned int stream) {
  PhiloxStream s;
  s.k0 = seed_lo;
  s.k1 = seed_hi;
  s.stream = stream;
  s.sample = sample;
  s.epoch = epoch;
  return s;
}

__device__ __forceinline__ Philox4 metaug_block(const PhiloxStream& s, unsigned int block) {
  return metaug_philox4x32_10(block, s.stream, s.sample, s.epoch, s.k0, s.k1);
}

// The top 23 bits, centred in their cell: a uniform in the open interval (0, 1),
// exact in f32 (every step below is exact).
__device__ __forceinline__ float metaug_uniform_from_u32(unsigned int x) {
  return ((float)(x >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

// Box-Muller in f32, the same formula as ops::philox::box_muller:
// r = sqrt(-2 ln u0), t = TAU * u1, (r cos t, r sin t).
// Without --use_fast_math: logf (1 ulp), sqrtf (correctly rounded), sincosf (<= 2 ulp, fast
// path: t is in (0, 2*pi)).
__device__ __forceinline__ void metaug_box_muller(float u0, float u1, float* z0, float* z1) {
  const float r = sqrtf(-2.0f * logf(u0));
  const float t = 6.28318530717958647692f * u1;  // f32 TAU, as std::f32::consts::TAU
  float s, c;
  sincosf(t, &s, &c);
  *z0 = r * c;
  *z1 = r * s;
}

// Four standard normals from block `block` (PhiloxStream::normals).
// Noise element e of a sample (CHW order) is normals(e / 4)[e % 4].
__device__ __forceinline__ void metaug_normals(const PhiloxStream& s, unsigned int block,
                                               float z[4]) {
  const Philox4 w = metaug_block(s, block);
  metaug_box_muller(metaug_uniform_from_u32(w.v[0]), metaug_uniform_from_u32(w.v[1]), &z[0],
                    &z[1]);
  metaug_box_muller(metaug_uniform_from_u32(w.v[2]), metaug_uniform_from_u32(w.v[3]), &z[2],
                    &z[3]);
}

// The single normal of noise element `e`: only the Box-Muller pair that holds it is computed.
__device__ __forceinline__ float metaug_normal_at(const PhiloxStream& s, unsigned int e) {
  const Philox4 w = metaug_block(s, e >> 2);
  const unsigned int lane = e & 3u;
  const unsigned int a = (lane < 2u) ? w.v[0] : w.v[2];
  const unsigned int b = (lane < 2u) ? w.v[1] : w.v[3];
  float z0, z1;
  metaug_box_muller(metaug_uniform_from_u32(a), metaug_uniform_from_u32(b), &z0, &z1);
  return (lane & 1u) ? z1 : z0;
}

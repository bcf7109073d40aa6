// The fused forward augmentation: variable-sized u8 HWC images in, one batch of
// `B x C x H_out x W_out` (u8 | f16 | f32, NCHW | NHWC) out, in one pass:
// inverse affine map + bilinear (zeros outside) + flip blend + Philox noise +
// per-channel normalisation + conversion. The arithmetic is CONTRACT.md
// "Augmentation and output", step for step, in f32 (see kernels/README.md).
//
// Work split: one thread per QUAD of 4 horizontally adjacent output pixels,
// all channels. Grid (ceil(H_out * ceil(W_out/4) / 256), B): a block never
// spans two samples, so the per-sample branches (flip gate 0/1/blend, noise
// on/off) are uniform. Consecutive threads take consecutive quads of a row:
// a warp writes 128 contiguous pixels per channel plane (NCHW) or 128*C
// contiguous elements (NHWC).
//
// VEC variants (W_out % 4 == 0): every quad is full and starts at an element
// index that is a multiple of 4, so a quad's noise is exactly one Philox block
// per channel and each channel run (NCHW) or each C-th chunk of the pixel run
// (NHWC) is one 4-element vector store (u8: 4 B, f16: 8 B, f32: 16 B). The
// other variants handle any width with scalar stores.
#include "philox.cuh"
#include "sample.cuh"

#define METAUG_DT_U8 0
#define METAUG_DT_F16 1
#define METAUG_DT_F32 2
#define METAUG_NCHW 0
#define METAUG_NHWC 1
#define METAUG_PARAMS 8  // per sample: m0..m5, flip gate, sigma
#define METAUG_BLOCK 256

// Per-channel normalisation, by value (C <= 4).
struct Norm {
  float mean[4];
  float std[4];
};

// S(i, j) for all C channels: bilinear sample of a u8 HWC image at the mapped point.
template <int C>
__device__ __forceinline__ void metaug_sample_u8(const unsigned char* __restrict__ img, int h,
                                                 int w, int ox, int oy, const float m[6],
                                                 float fj, float fi, float v[C]) {
  float x, y;
  metaug_map(m, fj, fi, &x, &y);
  const Footprint f = metaug_footprint_at(x, y, h, w, ox, oy);
  const int o00 = f.o00 * C;
  const int o01 = o00 + C;
  const int o10 = o00 + w * C;
  const int o11 = o10 + C;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const float p00 = f.in00 ? metaug_u8_unit(__ldg(img + o00 + c)) : 0.0f;
    const float p01 = f.in01 ? metaug_u8_unit(__ldg(img + o01 + c)) : 0.0f;
    const float p10 = f.in10 ? metaug_u8_unit(__ldg(img + o10 + c)) : 0.0f;
    const float p11 = f.in11 ? metaug_u8_unit(__ldg(img + o11 + c)) : 0.0f;
    v[c] = metaug_bilerp(f, p00, p01, p10, p11);
  }
}

// Converts and stores 4 consecutive elements at element index `e` (a multiple of 4).
template <int DT>
__device__ __forceinline__ void metaug_store4(unsigned char* __restrict__ out, unsigned long long e,
                                              float a, float b, float c, float d) {
  if (DT == METAUG_DT_F32) {
    float4 v;
    v.x = a;
    v.y = b;
    v.z = c;
    v.w = d;
    reinterpret_cast<float4*>(out)[e >> 2] = v;
  } else if (DT == METAUG_DT_F16) {
    uint2 v;
    v.x = (unsigned int)metaug_f32_to_f16_rn(a) | ((unsigned int)metaug_f32_to_f16_rn(b) << 16);
    v.y = (unsigned int)metaug_f32_to_f16_rn(c) | ((unsigned int)metaug_f32_to_f16_rn(d) << 16);
    reinterpret_cast<uint2*>(out)[e >> 2] = v;
  } else {
    const unsigned int v = metaug_to_u8(a) | (metaug_to_u8(b) << 8) | (metaug_to_u8(c) << 16) |
                           (metaug_to_u8(d) << 24);
    reinterpret_cast<unsigned int*>(out)[e >> 2] = v;
  }
}

// Converts and stores one element at element index `e`.
template <int DT>
__device__ __forceinline__ void metaug_store1(unsigned char* __restrict__ out, unsigned long long e,
                                              float y) {
  if (DT == METAUG_DT_F32) {
    reinterpret_cast<float*>(out)[e] = y;
  } else if (DT == METAUG_DT_F16) {
    reinterpret_cast<unsigned short*>(out)[e] = metaug_f32_to_f16_rn(y);
  } else {
    out[e] = (unsigned char)metaug_to_u8(y);
  }
}

// z[idx] for a run-time idx in [0, 4) without indexing a register array.
__device__ __forceinline__ float metaug_pick4(const float z[4], unsigned int idx) {
  return idx == 0u ? z[0] : idx == 1u ? z[1] : idx == 2u ? z[2] : z[3];
}

template <int DT, int LAYOUT, int C, bool VEC>
__device__ __forceinline__ void metaug_augment(
    const unsigned char* __restrict__ src, const unsigned long long* __restrict__ src_off,
    const unsigned int* __restrict__ src_hw, const float* __restrict__ params,
    const unsigned int* __restrict__ samples, const Norm& norm, unsigned int seed_lo,
    unsigned int seed_hi, unsigned int epoch, unsigned int out_h, unsigned int out_w,
    unsigned char* __restrict__ out) {
  const unsigned int b = blockIdx.y;
  const unsigned int nq = (out_w + 3u) >> 2;
  const unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= out_h * nq) return;
  const unsigned int i = t / nq;
  const unsigned int j0 = (t - i * nq) << 2;

  // Per-sample descriptors: the same address for the whole block (broadcast loads).
  const float* p = params + (unsigned long long)b * METAUG_PARAMS;
  float m[6];
#pragma unroll
  for (int k = 0; k < 6; ++k) m[k] = __ldg(p + k);
  const float g = __ldg(p + 6);
  const float sigma = __ldg(p + 7);
  const unsigned char* img = src + __ldg(src_off + b);
  // The decoded window: its size and its origin in the map's frame.
  const int h = (int)__ldg(src_hw + 4 * b);
  const int w = (int)__ldg(src_hw + 4 * b + 1);
  const int oy = (int)__ldg(src_hw + 4 * b + 2);
  const int ox = (int)__ldg(src_hw + 4 * b + 3);

  // Steps 1-3: S for the (up to) 4 pixels of the quad, flip blend.
  float s[4][C];
  const float fi = (float)i;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const unsigned int j = j0 + k;
    if (!VEC && j >= out_w) {
#pragma unroll
      for (int c = 0; c < C; ++c) s[k][c] = 0.0f;
      continue;
    }
    const float fj = (float)j;
    const float fjm = (float)(out_w - 1u - j);
    if (g == 0.0f) {
      metaug_sample_u8<C>(img, h, w, ox, oy, m, fj, fi, s[k]);
    } else if (g == 1.0f) {
      metaug_sample_u8<C>(img, h, w, ox, oy, m, fjm, fi, s[k]);
    } else {
      float a[C], bb[C];
      metaug_sample_u8<C>(img, h, w, ox, oy, m, fj, fi, a);
      metaug_sample_u8<C>(img, h, w, ox, oy, m, fjm, fi, bb);
#pragma unroll
      for (int c = 0; c < C; ++c) s[k][c] = (1.0f - g) * a[c] + g * bb[c];
    }
  }

  // Step 4: noise, element e = (c*H_out + i)*W_out + j in CHW order whatever the layout.
  if (sigma > 0.0f) {
    const PhiloxStream st = metaug_stream(seed_lo, seed_hi, epoch, __ldg(samples + b),
                                          METAUG_STREAM_NOISE);
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const unsigned int e0 = ((unsigned int)c * out_h + i) * out_w + j0;
      float za[4];
      metaug_normals(st, e0 >> 2, za);
      if (VEC) {
        // e0 % 4 == 0: the quad is exactly one Philox block.
#pragma unroll
        for (int k = 0; k < 4; ++k) s[k][c] += sigma * za[k];
      } else {
        const unsigned int off = e0 & 3u;
        const unsigned int valid = min(4u, out_w - j0);
        float zb[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (off + valid > 4u) metaug_normals(st, (e0 >> 2) + 1u, zb);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const unsigned int idx = off + (unsigned int)k;
          const float z = idx < 4u ? metaug_pick4(za, idx) : metaug_pick4(zb, idx - 4u);
          if ((unsigned int)k < valid) s[k][c] += sigma * z;
        }
      }
    }
  }

  // Step 5: normalise, (s - mean) / std (an IEEE division: --prec-div is on).
#pragma unroll
  for (int c = 0; c < C; ++c) {
#pragma unroll
    for (int k = 0; k < 4; ++k) s[k][c] = (s[k][c] - norm.mean[c]) / norm.std[c];
  }

  // Step 6: convert and store.
  const unsigned long long plane = (unsigned long long)out_h * out_w;
  const unsigned long long base = (unsigned long long)b * C * plane;
  if (VEC) {
    if (LAYOUT == METAUG_NCHW) {
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const unsigned long long e = base + c * plane + (unsigned long long)i * out_w + j0;
        metaug_store4<DT>(out, e, s[0][c], s[1][c], s[2][c], s[3][c]);
      }
    } else {
      // The quad's 4*C elements are contiguous, pixel-major: chunk q holds flat
      // elements 4q..4q+3, flat element t being channel t % C of pixel t / C.
      const unsigned long long e = base + ((unsigned long long)i * out_w + j0) * C;
#pragma unroll
      for (int q = 0; q < C; ++q) {
        metaug_store4<DT>(out, e + 4 * q, s[(4 * q) / C][(4 * q) % C],
                          s[(4 * q + 1) / C][(4 * q + 1) % C], s[(4 * q + 2) / C][(4 * q + 2) % C],
                          s[(4 * q + 3) / C][(4 * q + 3) % C]);
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const unsigned int j = j0 + k;
      if (j >= out_w) break;
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const unsigned long long e =
            LAYOUT == METAUG_NCHW ? base + c * plane + (unsigned long long)i * out_w + j
                                  : base + ((unsigned long long)i * out_w + j) * C + c;
        metaug_store1<DT>(out, e, s[k][c]);
      }
    }
  }
}

// One extern "C" entry point per (dtype, layout, channels, vector) variant; the
// Rust side (src/cuda/augment.rs) names them with the same pattern and checks the
// parameter list against the PTX (tests/cuda_kernels_compile.rs).
#define METAUG_AUGMENT_KERNEL(NAME, DT, LAYOUT, C, VEC)                                          \
  extern "C" __global__ void __launch_bounds__(METAUG_BLOCK)                                     \
      NAME(const unsigned char* __restrict__ src, const unsigned long long* __restrict__ src_off, \
           const unsigned int* __restrict__ src_hw, const float* __restrict__ params,            \
           const unsigned int* __restrict__ samples, Norm norm, unsigned int seed_lo,            \
           unsigned int seed_hi, unsigned int epoch, unsigned int out_h, unsigned int out_w,     \
           unsigned char* __restrict__ out) {                                                    \
    metaug_augment<DT, LAYOUT, C, VEC>(src, src_off, src_hw, params, samples, norm, seed_lo,     \
                                       seed_hi, epoch, out_h, out_w, out);                       \
  }

#define METAUG_AUGMENT_CHANNELS(DTN, DT, LN, LAYOUT)                                   \
  METAUG_AUGMENT_KERNEL(metaug_augment_##DTN##_##LN##_c1, DT, LAYOUT, 1, false)        \
  METAUG_AUGMENT_KERNEL(metaug_augment_##DTN##_##LN##_c1_v4, DT, LAYOUT, 1, true)      \
  METAUG_AUGMENT_KERNEL(metaug_augment_##DTN##_##LN##_c3, DT, LAYOUT, 3, false)        \
  METAUG_AUGMENT_KERNEL(metaug_augment_##DTN##_##LN##_c3_v4, DT, LAYOUT, 3, true)

// Every variant, as METAUG_AUGMENT_KERNEL(...) expansions (the emulator's
// registry, emu/src/kernels_augment.cpp, expands the same list).
#define METAUG_AUGMENT_ALL_VARIANTS                            \
  METAUG_AUGMENT_CHANNELS(u8, METAUG_DT_U8, nchw, METAUG_NCHW)   \
  METAUG_AUGMENT_CHANNELS(u8, METAUG_DT_U8, nhwc, METAUG_NHWC)   \
  METAUG_AUGMENT_CHANNELS(f16, METAUG_DT_F16, nchw, METAUG_NCHW) \
  METAUG_AUGMENT_CHANNELS(f16, METAUG_DT_F16, nhwc, METAUG_NHWC) \
  METAUG_AUGMENT_CHANNELS(f32, METAUG_DT_F32, nchw, METAUG_NCHW) \
  METAUG_AUGMENT_CHANNELS(f32, METAUG_DT_F32, nhwc, METAUG_NHWC)

// The host compiles one module per variant with
// -DMETAUG_AUGMENT_VARIANT=METAUG_AUGMENT_KERNEL(name, dtype, layout, channels, vec4)
// (src/cuda/kernels.rs); without it (nvcc, a full compile check) every variant is built.
#ifdef METAUG_AUGMENT_VARIANT
METAUG_AUGMENT_VARIANT
#else
METAUG_AUGMENT_ALL_VARIANTS
#endif

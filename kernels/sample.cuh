// Shared pieces of the augmentation kernels: the inverse affine map, the
// bilinear footprint with zero padding, exact u8 -> [0, 1], and f16 rounding.
// Mirrors CONTRACT.md "Augmentation and output" steps 1-2 and 6.
//
// Compiled WITHOUT --use_fast_math and with --fmad=false (see src/cuda/kernels.rs):
// every +, -, *, / below rounds once, as in the Rust reference, so a product is
// never fused into an add behind our back. Where an FMA is wanted it is written
// out (__fmaf_rn), and then only where the result is provably the same.
#pragma once

// Step 1: x = m0*j + m1*i + m2, y = m3*j + m4*i + m5 (left to right, f32).
__device__ __forceinline__ void metaug_map(const float m[6], float fj, float fi, float* x,
                                           float* y) {
  *x = m[0] * fj + m[1] * fi + m[2];
  *y = m[3] * fj + m[4] * fi + m[5];
}

// Step 2: the bilinear footprint of (x, y) in a `h x w` image.
// Validity is decided on the floats, so a huge, infinite or NaN coordinate never
// reaches an int conversion (NaN fails every comparison: all four neighbours are
// outside, and the NaN fractions still propagate to the value as on the CPU).
struct Footprint {
  float fx, fy;        // fractions x - floor(x), y - floor(y)
  float gx, gy;        // 1 - fx, 1 - fy
  bool in00, in01, in10, in11;  // neighbour (row, col) inside the image
  int o00;             // pixel index (y0 * w + x0) of the top-left neighbour, when any is inside
};

// `h x w` is a window of the image whose top-left is (ox, oy) in the map's frame
// (region decode): the fractions are the map's own, the corners move by the
// origin (exact in f32: integers below 2^24; and monotonic, so a corner outside
// the frame stays outside the window), and taps outside the window read zero.
__device__ __forceinline__ Footprint metaug_footprint_at(float x, float y, int h, int w, int ox,
                                                         int oy) {
  Footprint f;
  const float xf = floorf(x);
  const float yf = floorf(y);
  f.fx = x - xf;
  f.fy = y - yf;
  f.gx = 1.0f - f.fx;
  f.gy = 1.0f - f.fy;
  const float x0 = xf - (float)ox;
  const float y0 = yf - (float)oy;
  // h, w < 2^24 (checked on the host), so (float)h and (float)w are exact.
  const bool c0 = x0 >= 0.0f && x0 < (float)w;            // column x0 inside
  const bool c1 = x0 >= -1.0f && x0 < (float)(w - 1);     // column x0 + 1 inside
  const bool r0 = y0 >= 0.0f && y0 < (float)h;            // row y0 inside
  const bool r1 = y0 >= -1.0f && y0 < (float)(h - 1);     // row y0 + 1 inside
  f.in00 = r0 && c0;
  f.in01 = r0 && c1;
  f.in10 = r1 && c0;
  f.in11 = r1 && c1;
  // x0 in [-1, w), y0 in [-1, h) whenever a neighbour is inside; h * w * C < 2^31 on the host.
  const int ix = (c0 || c1) ? (int)x0 : 0;
  const int iy = (r0 || r1) ? (int)y0 : 0;
  f.o00 = iy * w + ix;
  return f;
}

// The footprint in a whole `h x w` image.
__device__ __forceinline__ Footprint metaug_footprint(float x, float y, int h, int w) {
  return metaug_footprint_at(x, y, h, w, 0, 0);
}

// v = (1-fy)*((1-fx)*p00 + fx*p01) + fy*((1-fx)*p10 + fx*p11)
__device__ __forceinline__ float metaug_bilerp(const Footprint& f, float p00, float p01, float p10,
                                               float p11) {
  return f.gy * (f.gx * p00 + f.fx * p01) + f.fy * (f.gx * p10 + f.fx * p11);
}

// u8 / 255.0f, correctly rounded, in three FP operations instead of a division:
// q0 = RN(x * RN(1/255)) is off by one ulp for about half of the 256 inputs; one
// Markstein correction with exact FMA residuals gives the IEEE quotient for all of
// them (checked exhaustively: src/cuda/kernels.rs, test `u8_unit_matches_division`).
__device__ __forceinline__ float metaug_u8_unit(unsigned int p) {
  const float xf = (float)p;
  const float r = 1.0f / 255.0f;
  const float q0 = xf * r;
  const float res = __fmaf_rn(-q0, 255.0f, xf);
  return __fmaf_rn(res, r, q0);
}

// f32 -> IEEE half, round to nearest even: the instruction cuda_fp16.h's
// __float2half_rn emits (that header is not available to NVRTC without a toolkit).
__device__ __forceinline__ unsigned short metaug_f32_to_f16_rn(float f) {
#ifdef METAUG_EMULATION
  return metaug_emu_f32_to_f16_rn(f);  // the host emulation (emu/include/metaug_cuda_emu.h)
#else
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
#endif
}

// Step 6, u8: (y * 255).round().clamp(0, 255) as u8. roundf is half away from
// zero like Rust's f32::round; NaN -> fmaxf gives 0, as `NaN as u8` does.
__device__ __forceinline__ unsigned int metaug_to_u8(float y) {
  const float r = roundf(y * 255.0f);
  return (unsigned int)fminf(fmaxf(r, 0.0f), 255.0f);
}

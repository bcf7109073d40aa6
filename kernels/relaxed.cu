// Relaxed-mode augmentation for meta-learning: forward and vector-Jacobian
// product on f32 CHW images in [0, 1], no normalisation.
//
//   input  x  [B, C, H, W]        f32
//   params    [B, 8]              f32: m0..m5 (inverse affine map), g (flip gate), sigma
//   output    [B, C, H_out, W_out] f32
//
//   out(c,i,j) = (1-g) * S_c(i, j) + g * S_c(i, j') + sigma * eps(e),
//   j' = W_out-1-j, e = (c*H_out + i)*W_out + j, eps from Philox (STREAM_NOISE),
//   S_c the bilinear sample (zeros outside) of channel c at (x, y) = m . (j, i, 1).
//
// The forward skips the sigma term when sigma == 0 (the value is the same) and
// evaluates one S when g is exactly 0 or 1 (likewise); the VJP always evaluates both.
//
// VJP, for an upstream gradient G = dL/d out:
//   dL/dm0 = sum G * ((1-g) dS/dx(j) * j + g dS/dx(j') * j'),  dL/dm1 = ... * i,  dL/dm2 = ... * 1
//   dL/dm3..m5: the same with dS/dy
//     dS/dx = (1-fy)(p01-p00) + fy(p11-p10),  dS/dy = (1-fx)(p10-p00) + fx(p11-p01)
//   dL/dg = sum G * (S(j') - S(j)),  dL/dsigma = sum G * eps
//   dL/dx[c, y, x] = sum over the outputs whose bilinear footprint holds (y, x) of
//                    G * (gate weight) * (bilinear weight)
//
// Determinism: the 8 parameter gradients are reduced without atomics: each
// block writes its per-block sums (f64) to `partial[b, blk, 8]`, and
// metaug_relaxed_reduce adds them in block order, so for a given batch shape
// they are bit-for-bit reproducible. The input gradient is SCATTERED with
// atomicAdd (f32): correct, but the order of the additions is not fixed, so its
// low bits may differ between runs.
#include "philox.cuh"
#include "sample.cuh"

#define METAUG_PARAMS 8
#define METAUG_RELAXED_BLOCK 256

// S for all channels at one point is a loop over channel planes; the footprint
// (fractions, validity, offsets) is shared by the channels.
__device__ __forceinline__ float metaug_plane_sample(const float* __restrict__ plane,
                                                     const Footprint& f, int w, float* dx,
                                                     float* dy) {
  const float p00 = f.in00 ? __ldg(plane + f.o00) : 0.0f;
  const float p01 = f.in01 ? __ldg(plane + f.o00 + 1) : 0.0f;
  const float p10 = f.in10 ? __ldg(plane + f.o00 + w) : 0.0f;
  const float p11 = f.in11 ? __ldg(plane + f.o00 + w + 1) : 0.0f;
  if (dx != nullptr) {
    *dx = f.gy * (p01 - p00) + f.fy * (p11 - p10);
    *dy = f.gx * (p10 - p00) + f.fx * (p11 - p01);
  }
  return metaug_bilerp(f, p00, p01, p10, p11);
}

// Adds `gw` times the bilinear weights of footprint `f` into one gradient plane.
__device__ __forceinline__ void metaug_scatter(float* __restrict__ plane, const Footprint& f,
                                               int w, float gw) {
  if (f.in00) atomicAdd(plane + f.o00, gw * (f.gy * f.gx));
  if (f.in01) atomicAdd(plane + f.o00 + 1, gw * (f.gy * f.fx));
  if (f.in10) atomicAdd(plane + f.o00 + w, gw * (f.fy * f.gx));
  if (f.in11) atomicAdd(plane + f.o00 + w + 1, gw * (f.fy * f.fx));
}

extern "C" __global__ void __launch_bounds__(METAUG_RELAXED_BLOCK)
    metaug_relaxed_forward(const float* __restrict__ x, const float* __restrict__ params,
                           const unsigned int* __restrict__ samples, unsigned int seed_lo,
                           unsigned int seed_hi, unsigned int epoch, unsigned int channels,
                           unsigned int in_h, unsigned int in_w, unsigned int out_h,
                           unsigned int out_w, float* __restrict__ out) {
  const unsigned int b = blockIdx.y;
  const unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= out_h * out_w) return;
  const unsigned int i = t / out_w;
  const unsigned int j = t - i * out_w;

  const float* p = params + (unsigned long long)b * METAUG_PARAMS;
  float m[6];
#pragma unroll
  for (int k = 0; k < 6; ++k) m[k] = __ldg(p + k);
  const float g = __ldg(p + 6);
  const float sigma = __ldg(p + 7);
  const int h = (int)in_h, w = (int)in_w;

  float xa, ya, xb, yb;
  metaug_map(m, (float)j, (float)i, &xa, &ya);
  metaug_map(m, (float)(out_w - 1u - j), (float)i, &xb, &yb);
  const Footprint fa = metaug_footprint(xa, ya, h, w);
  const Footprint fb = metaug_footprint(xb, yb, h, w);
  const PhiloxStream st =
      metaug_stream(seed_lo, seed_hi, epoch, __ldg(samples + b), METAUG_STREAM_NOISE);

  const unsigned long long in_plane = (unsigned long long)in_h * in_w;
  const unsigned long long out_plane = (unsigned long long)out_h * out_w;
  for (unsigned int c = 0; c < channels; ++c) {
    const float* plane = x + ((unsigned long long)b * channels + c) * in_plane;
    float s;
    if (g == 0.0f) {
      s = metaug_plane_sample(plane, fa, w, nullptr, nullptr);
    } else if (g == 1.0f) {
      s = metaug_plane_sample(plane, fb, w, nullptr, nullptr);
    } else {
      const float a = metaug_plane_sample(plane, fa, w, nullptr, nullptr);
      const float bb = metaug_plane_sample(plane, fb, w, nullptr, nullptr);
      s = (1.0f - g) * a + g * bb;
    }
    const unsigned int e = (c * out_h + i) * out_w + j;
    if (sigma != 0.0f) s += sigma * metaug_normal_at(st, e);
    out[((unsigned long long)b * channels + c) * out_plane + (unsigned long long)i * out_w + j] = s;
  }
}

// Per-sample sums of the 8 parameter gradients, one block of partial sums per
// (block, sample); optionally the input gradient (INPUT_GRAD), scattered.
template <bool INPUT_GRAD>
__device__ __forceinline__ void metaug_relaxed_vjp(
    const float* __restrict__ x, const float* __restrict__ params,
    const unsigned int* __restrict__ samples, unsigned int seed_lo, unsigned int seed_hi,
    unsigned int epoch, unsigned int channels, unsigned int in_h, unsigned int in_w,
    unsigned int out_h, unsigned int out_w, const float* __restrict__ grad_out,
    double* __restrict__ partial, float* __restrict__ grad_x) {
  const unsigned int b = blockIdx.y;
  const float* p = params + (unsigned long long)b * METAUG_PARAMS;
  float m[6];
#pragma unroll
  for (int k = 0; k < 6; ++k) m[k] = __ldg(p + k);
  const float g = __ldg(p + 6);
  const int h = (int)in_h, w = (int)in_w;
  const PhiloxStream st =
      metaug_stream(seed_lo, seed_hi, epoch, __ldg(samples + b), METAUG_STREAM_NOISE);
  const unsigned long long in_plane = (unsigned long long)in_h * in_w;
  const unsigned long long out_plane = (unsigned long long)out_h * out_w;

  double acc[METAUG_PARAMS];
#pragma unroll
  for (int k = 0; k < METAUG_PARAMS; ++k) acc[k] = 0.0;

  const unsigned int n = out_h * out_w;
  for (unsigned int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += gridDim.x * blockDim.x) {
    const unsigned int i = t / out_w;
    const unsigned int j = t - i * out_w;
    const unsigned int jm = out_w - 1u - j;
    const float fi = (float)i, fj = (float)j, fjm = (float)jm;
    float xa, ya, xb, yb;
    metaug_map(m, fj, fi, &xa, &ya);
    metaug_map(m, fjm, fi, &xb, &yb);
    const Footprint fa = metaug_footprint(xa, ya, h, w);
    const Footprint fb = metaug_footprint(xb, yb, h, w);
    // Summed over channels first (f32), then into the f64 accumulators.
    float gxa = 0.0f, gya = 0.0f, gxb = 0.0f, gyb = 0.0f, gg = 0.0f, gs = 0.0f;
    for (unsigned int c = 0; c < channels; ++c) {
      const unsigned long long bc = (unsigned long long)b * channels + c;
      const float go = __ldg(grad_out + bc * out_plane + (unsigned long long)i * out_w + j);
      const float* plane = x + bc * in_plane;
      float dxa, dya, dxb, dyb;
      const float sa = metaug_plane_sample(plane, fa, w, &dxa, &dya);
      const float sb = metaug_plane_sample(plane, fb, w, &dxb, &dyb);
      gxa += go * dxa;
      gya += go * dya;
      gxb += go * dxb;
      gyb += go * dyb;
      gg += go * (sb - sa);
      gs += go * metaug_normal_at(st, (c * out_h + i) * out_w + j);
      if (INPUT_GRAD) {
        float* gplane = grad_x + bc * in_plane;
        metaug_scatter(gplane, fa, w, go * (1.0f - g));
        metaug_scatter(gplane, fb, w, go * g);
      }
    }
    // d out / d m through both samples, gate-weighted.
    const double ua = (double)(1.0f - g), ub = (double)g;
    const double dx_j = ua * gxa * fj + ub * gxb * fjm;
    const double dx_1 = ua * gxa + ub * gxb;
    const double dy_j = ua * gya * fj + ub * gyb * fjm;
    const double dy_1 = ua * gya + ub * gyb;
    acc[0] += dx_j;
    acc[1] += dx_1 * fi;
    acc[2] += dx_1;
    acc[3] += dy_j;
    acc[4] += dy_1 * fi;
    acc[5] += dy_1;
    acc[6] += gg;
    acc[7] += gs;
  }

  // Block reduction: warp shuffles, then one value per warp through shared memory.
  __shared__ double warp_sums[METAUG_RELAXED_BLOCK / 32][METAUG_PARAMS];
  const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < METAUG_PARAMS; ++k) {
    double v = acc[k];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) warp_sums[warp][k] = v;
  }
  __syncthreads();
  if (threadIdx.x < METAUG_PARAMS) {
    double v = 0.0;
    for (unsigned int wi = 0; wi < blockDim.x / 32u; ++wi) v += warp_sums[wi][threadIdx.x];
    partial[((unsigned long long)b * gridDim.x + blockIdx.x) * METAUG_PARAMS + threadIdx.x] = v;
  }
}

extern "C" __global__ void __launch_bounds__(METAUG_RELAXED_BLOCK)
    metaug_relaxed_vjp_params(const float* __restrict__ x, const float* __restrict__ params,
                              const unsigned int* __restrict__ samples, unsigned int seed_lo,
                              unsigned int seed_hi, unsigned int epoch, unsigned int channels,
                              unsigned int in_h, unsigned int in_w, unsigned int out_h,
                              unsigned int out_w, const float* __restrict__ grad_out,
                              double* __restrict__ partial) {
  metaug_relaxed_vjp<false>(x, params, samples, seed_lo, seed_hi, epoch, channels, in_h, in_w,
                            out_h, out_w, grad_out, partial, nullptr);
}

extern "C" __global__ void __launch_bounds__(METAUG_RELAXED_BLOCK)
    metaug_relaxed_vjp_input(const float* __restrict__ x, const float* __restrict__ params,
                             const unsigned int* __restrict__ samples, unsigned int seed_lo,
                             unsigned int seed_hi, unsigned int epoch, unsigned int channels,
                             unsigned int in_h, unsigned int in_w, unsigned int out_h,
                             unsigned int out_w, const float* __restrict__ grad_out,
                             double* __restrict__ partial, float* __restrict__ grad_x) {
  metaug_relaxed_vjp<true>(x, params, samples, seed_lo, seed_hi, epoch, channels, in_h, in_w,
                           out_h, out_w, grad_out, partial, grad_x);
}

// grad_params[b, k] = sum over blk of partial[b, blk, k], in block order (deterministic).
// Grid (B), block (8).
extern "C" __global__ void metaug_relaxed_reduce(const double* __restrict__ partial,
                                                 unsigned int blocks,
                                                 float* __restrict__ grad_params) {
  const unsigned int b = blockIdx.x;
  const unsigned int k = threadIdx.x;
  if (k >= METAUG_PARAMS) return;
  double v = 0.0;
  for (unsigned int blk = 0; blk < blocks; ++blk)
    v += partial[((unsigned long long)b * blocks + blk) * METAUG_PARAMS + k];
  grad_params[(unsigned long long)b * METAUG_PARAMS + k] = (float)v;
}

// The CUDA dialect our kernels use, for the host: included before a `.cu` file
// so that the same source compiles with g++ and runs on CPU threads.
//
// Execution model (emu/src/runtime.cpp): a launch runs its blocks one after
// another (in a shuffled order when the schedule seed is not 0); the threads of
// a block run concurrently, one OS thread each, so `__syncthreads` is a real
// barrier and a missing one is a real race. Warps are groups of 32 threads
// with a barrier of their own: `__shfl_*_sync` exchanges values through it.
// A thread that returns drops out of its block's and warp's barriers, as an
// exited CUDA thread does.
//
// Checks that the GPU would only give as a crash or garbage:
// - `__ldg` and `atomicAdd` addresses must lie inside a buffer passed to the
//   launch (the host tells the runtime each pointer argument's allocation);
//   a miss is a launch error naming the kernel, the thread and the address;
// - a shuffle whose mask names an exited lane is an error;
// - writes past a buffer's end land in the allocation's red zones, which the
//   Rust side checks after every launch.
//
// `__shared__` variables are function statics: only one block of one launch
// runs at a time in the process (launches hold a global lock), so a static is
// exactly one block's shared memory. It keeps the previous block's values,
// which is as good as garbage for a read that misses its write.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define METAUG_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned int x, y;
};

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

namespace metaug_emu {
// Runtime hooks (runtime.cpp).
void sync_block();
// Exchanges `bytes` bytes (at most 8) with lane `src` of this thread's warp;
// `mask` must name only live lanes, this one included.
void shfl(unsigned mask, const void* mine, void* out, unsigned bytes, int src_lane);
unsigned lane_id();
// Whether [p, p + bytes) lies inside a buffer of the current launch; records
// an error naming `what` if not.
bool check_access(const void* p, std::size_t bytes, const char* what);
}  // namespace metaug_emu

__forceinline__ void __syncthreads() { metaug_emu::sync_block(); }

template <class T>
__forceinline__ T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a large type");
  const unsigned lane = metaug_emu::lane_id();
  const unsigned seg = lane & ~(unsigned)(width - 1);
  const unsigned src = lane + delta;
  T out = v;
  // Every lane takes part in the exchange, also those whose source is out of range.
  metaug_emu::shfl(mask, &v, &out, sizeof(T), (src < seg + (unsigned)width) ? (int)src : -1);
  return out;
}

template <class T>
__forceinline__ T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a large type");
  const unsigned lane = metaug_emu::lane_id();
  const unsigned src = lane ^ (unsigned)lane_mask;
  T out = v;
  metaug_emu::shfl(mask, &v, &out, sizeof(T),
                   ((src & ~(unsigned)(width - 1)) == (lane & ~(unsigned)(width - 1))) ? (int)src : -1);
  return out;
}

template <class T>
__forceinline__ T __ldg(const T* p) {
  if (!metaug_emu::check_access(p, sizeof(T), "__ldg")) return T{};
  return *p;
}

__forceinline__ float atomicAdd(float* p, float v) {
  if (!metaug_emu::check_access(p, sizeof(float), "atomicAdd")) return 0.0f;
  unsigned int* w = reinterpret_cast<unsigned int*>(p);
  unsigned int old = __atomic_load_n(w, __ATOMIC_RELAXED);
  for (;;) {
    float f;
    std::memcpy(&f, &old, 4);
    const float n = f + v;
    unsigned int nb;
    std::memcpy(&nb, &n, 4);
    if (__atomic_compare_exchange_n(w, &old, nb, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return f;
  }
}

__forceinline__ double atomicAdd(double* p, double v) {
  if (!metaug_emu::check_access(p, sizeof(double), "atomicAdd")) return 0.0;
  unsigned long long* w = reinterpret_cast<unsigned long long*>(p);
  unsigned long long old = __atomic_load_n(w, __ATOMIC_RELAXED);
  for (;;) {
    double f;
    std::memcpy(&f, &old, 8);
    const double n = f + v;
    unsigned long long nb;
    std::memcpy(&nb, &n, 8);
    if (__atomic_compare_exchange_n(w, &old, nb, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return f;
  }
}

__forceinline__ unsigned int __umulhi(unsigned int a, unsigned int b) {
  return (unsigned int)(((unsigned long long)a * b) >> 32);
}
// Correctly rounded fused multiply-add, as the device's.
__forceinline__ float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }

__forceinline__ unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
__forceinline__ unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
__forceinline__ int min(int a, int b) { return a < b ? a : b; }
__forceinline__ int max(int a, int b) { return a > b ? a : b; }

// f32 -> IEEE binary16, round to nearest even (what `cvt.rn.f16.f32` does),
// overflow to infinity, NaN kept quiet with its top payload bits.
__forceinline__ unsigned short metaug_emu_f32_to_f16_rn(float f) {
  unsigned int x;
  std::memcpy(&x, &f, 4);
  const unsigned int sign = (x >> 16) & 0x8000u;
  const unsigned int exp = (x >> 23) & 0xFFu;
  unsigned int man = x & 0x7FFFFFu;
  if (exp == 0xFFu) {  // inf or NaN
    return (unsigned short)(sign | 0x7C00u | (man ? (0x200u | (man >> 13)) : 0u));
  }
  const int e = (int)exp - 127 + 15;
  if (e >= 31) return (unsigned short)(sign | 0x7C00u);  // overflow
  if (e <= 0) {
    // Subnormal half (or zero): value = man_with_implicit * 2^(e - 1 - 10) in half units.
    if (e < -10) return (unsigned short)sign;  // below half the smallest subnormal
    man |= 0x800000u;
    const unsigned int shift = (unsigned int)(14 - e);  // 24-bit mantissa -> 10-bit field
    unsigned int h = man >> shift;
    const unsigned int rem = man & ((1u << shift) - 1u);
    const unsigned int half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return (unsigned short)(sign | h);
  }
  unsigned int h = ((unsigned int)e << 10) | (man >> 13);
  const unsigned int rem = man & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: correct
  return (unsigned short)(sign | h);
}

// Kernel registration: a kernel is called with cuLaunchKernel's parameter
// array (one pointer to each argument's value).
namespace metaug_emu {
struct KernelEntry {
  const char* name;
  void (*call)(void** params);
  unsigned nparams;
  const unsigned* param_sizes;
};

template <class... A, std::size_t... I>
inline void invoke(void (*k)(A...), void** p, std::index_sequence<I...>) {
  k(*static_cast<std::remove_cv_t<A>*>(p[I])...);
}

template <class... A>
inline void call(void (*k)(A...), void** p) {
  invoke(k, p, std::index_sequence_for<A...>{});
}

template <class... A>
struct Sizes {
  static constexpr unsigned n = sizeof...(A);
  static constexpr unsigned v[sizeof...(A) + 1] = {(unsigned)sizeof(A)..., 0u};
};

template <class... A>
constexpr const unsigned* sizes_of(void (*)(A...)) {
  return Sizes<A...>::v;
}
template <class... A>
constexpr unsigned arity_of(void (*)(A...)) {
  return (unsigned)sizeof...(A);
}
}  // namespace metaug_emu

#define METAUG_EMU_ENTRY(NAME)                                                        \
  metaug_emu::KernelEntry {                                                           \
    #NAME, [](void** p) { metaug_emu::call(&NAME, p); }, metaug_emu::arity_of(&NAME), \
        metaug_emu::sizes_of(&NAME)                                                   \
  }

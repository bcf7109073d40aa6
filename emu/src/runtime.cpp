// The host runtime of the CUDA emulation: a pool of worker threads, one per
// thread of the running block, block and warp barriers, shuffles, the access
// checks, and the launch entry point the Rust side calls.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <sched.h>
#include <string>
#include <thread>
#include <vector>

#include "metaug_cuda_emu.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace metaug_emu {
namespace {

struct Range {
  std::uintptr_t start, end;
};

struct Warp {
  explicit Warp(unsigned n) : bar((std::ptrdiff_t)n), size(n), alive(n == 32 ? 0xFFFFFFFFu : ((1u << n) - 1u)) {}
  std::barrier<> bar;
  unsigned size;
  std::atomic<unsigned> alive;
  alignas(8) unsigned char slots[32][8];
};

struct Block {
  explicit Block(unsigned n) : bar((std::ptrdiff_t)n) {
    for (unsigned w = 0; w < (n + 31) / 32; ++w) warps.emplace_back(new Warp(std::min(32u, n - 32 * w)));
  }
  std::barrier<> bar;
  std::vector<std::unique_ptr<Warp>> warps;
};

// What the running launch is: set by `launch` before any worker starts.
struct Launch {
  const char* kernel = "";
  const std::vector<Range>* ranges = nullptr;
  std::mutex err_mu;
  std::string error;
  std::atomic<bool> failed{false};

  void fail(const std::string& msg) {
    std::lock_guard<std::mutex> g(err_mu);
    if (error.empty()) error = msg;
    failed.store(true);
  }
};

Launch* g_launch = nullptr;
thread_local Block* t_block = nullptr;
thread_local unsigned t_linear = 0;

std::string where() {
  char b[160];
  std::snprintf(b, sizeof b, "block (%u,%u,%u) thread (%u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z,
                threadIdx.x, threadIdx.y, threadIdx.z);
  return b;
}

// Workers created once and reused: worker w runs job(w) for each generation
// that asks for at least w + 1 workers.
class Pool {
 public:
  void run(unsigned n, const std::function<void(unsigned)>& job) {
    while (threads_.size() < n) {
      const unsigned w = (unsigned)threads_.size();
      threads_.emplace_back([this, w] { loop(w); });
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      job_ = &job;
      want_ = n;
      finished_ = 0;
      ++gen_;
    }
    start_.notify_all();
    std::unique_lock<std::mutex> g(mu_);
    done_.wait(g, [&] { return finished_ == want_; });
    job_ = nullptr;
  }

 private:
  void loop(unsigned w) {
    unsigned long long seen = 0;
    {
      std::lock_guard<std::mutex> g(mu_);
      seen = gen_;
      // A worker created for this generation takes part in it.
      if (job_ != nullptr && w < want_) seen = gen_ - 1;
    }
    for (;;) {
      const std::function<void(unsigned)>* job;
      {
        std::unique_lock<std::mutex> g(mu_);
        start_.wait(g, [&] { return gen_ != seen && job_ != nullptr; });
        seen = gen_;
        if (w >= want_) continue;
        job = job_;
      }
      (*job)(w);
      std::lock_guard<std::mutex> g(mu_);
      if (++finished_ == want_) done_.notify_one();
    }
  }

  std::vector<std::thread> threads_;  // never joined: the pool lives as long as the process
  std::mutex mu_;
  std::condition_variable start_, done_;
  unsigned long long gen_ = 0;
  unsigned want_ = 0, finished_ = 0;
  const std::function<void(unsigned)>* job_ = nullptr;
};

Pool& pool() {
  static Pool* p = new Pool();  // leaked on purpose: workers outlive static destructors
  return *p;
}

std::mutex& launch_lock() {
  static std::mutex m;
  return m;
}

// SplitMix64: the schedule's randomness (thread order, start delays, block order).
std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

void sync_block() { t_block->bar.arrive_and_wait(); }

unsigned lane_id() { return t_linear & 31u; }

void shfl(unsigned mask, const void* mine, void* out, unsigned bytes, int src_lane) {
  Warp& w = *t_block->warps[t_linear / 32];
  const unsigned lane = t_linear & 31u;
  const unsigned alive = w.alive.load();
  if ((mask & ~alive) != 0u || (mask & (1u << lane)) == 0u) {
    char b[200];
    std::snprintf(b, sizeof b, "kernel %s, %s: shuffle mask %#x names lanes that exited or this lane is not in it (live lanes %#x)",
                  g_launch->kernel, where().c_str(), mask, alive);
    g_launch->fail(b);
  }
  std::memcpy(w.slots[lane], mine, bytes);
  w.bar.arrive_and_wait();
  if (src_lane >= 0 && (unsigned)src_lane < w.size) std::memcpy(out, w.slots[src_lane], bytes);
  w.bar.arrive_and_wait();
}

bool check_access(const void* p, std::size_t bytes, const char* what) {
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p);
  for (const Range& r : *g_launch->ranges) {
    if (a >= r.start && a + bytes <= r.end && a + bytes >= a) return true;
  }
  char b[240];
  std::snprintf(b, sizeof b, "kernel %s, %s: %s of %zu bytes at %#zx is outside every buffer of the launch",
                g_launch->kernel, where().c_str(), what, bytes, (std::size_t)a);
  g_launch->fail(b);
  return false;
}

}  // namespace metaug_emu

extern "C" const metaug_emu::KernelEntry* metaug_emu_augment_kernels(std::size_t* n);
extern "C" const metaug_emu::KernelEntry* metaug_emu_relaxed_kernels(std::size_t* n);
extern "C" const metaug_emu::KernelEntry* metaug_emu_philox_kernels(std::size_t* n);

namespace {
std::vector<const metaug_emu::KernelEntry*>& registry() {
  static std::vector<const metaug_emu::KernelEntry*> all = [] {
    std::vector<const metaug_emu::KernelEntry*> v;
    for (auto f : {metaug_emu_augment_kernels, metaug_emu_relaxed_kernels, metaug_emu_philox_kernels}) {
      std::size_t n = 0;
      const metaug_emu::KernelEntry* t = f(&n);
      for (std::size_t k = 0; k < n; ++k) v.push_back(t + k);
    }
    return v;
  }();
  return all;
}

void set_err(char* err, std::size_t len, const std::string& msg) {
  if (len == 0) return;
  std::snprintf(err, len, "%s", msg.c_str());
}
}  // namespace

extern "C" {

std::size_t metaug_emu_kernel_count() { return registry().size(); }

// Entry k of the registry: its name, parameter count and sizes.
const char* metaug_emu_kernel_info(std::size_t k, unsigned* nparams, const unsigned** sizes) {
  const auto& r = registry();
  if (k >= r.size()) return nullptr;
  *nparams = r[k]->nparams;
  *sizes = r[k]->param_sizes;
  return r[k]->name;
}

unsigned short metaug_emu_f32_to_f16(float f) { return metaug_emu_f32_to_f16_rn(f); }

// Runs kernel `name` over `grid` x `block` with cuLaunchKernel's parameter
// array. `ranges` holds [start, end) pairs of the buffers the launch may read.
// `schedule` 0 runs blocks in order and starts threads in index order; any
// other value shuffles the block order, the order threads are handed to
// workers, and delays some threads' start. Returns 0, or 1 with `err` filled.
int metaug_emu_launch(const char* name, const unsigned grid[3], const unsigned block[3], unsigned shared_bytes,
                      void** params, const std::uintptr_t* ranges, std::size_t nranges, std::uint64_t schedule,
                      char* err, std::size_t err_len) {
  const metaug_emu::KernelEntry* entry = nullptr;
  for (const auto* e : registry())
    if (std::strcmp(e->name, name) == 0) entry = e;
  if (entry == nullptr) {
    set_err(err, err_len, std::string("no kernel named ") + name + " in the emulator");
    return 1;
  }
  const unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
  if (threads == 0 || threads > 1024 || block[0] > 1024 || block[1] > 1024 || block[2] > 64) {
    set_err(err, err_len, std::string("kernel ") + name + ": invalid block size (CUDA allows at most 1024 threads, 1024 x 1024 x 64)");
    return 1;
  }
  if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[0] > 0x7FFFFFFFu || grid[1] > 65535 || grid[2] > 65535) {
    set_err(err, err_len, std::string("kernel ") + name + ": invalid grid size (x in 1..2^31-1, y and z in 1..65535)");
    return 1;
  }
  if (shared_bytes != 0) {
    set_err(err, err_len, std::string("kernel ") + name + ": dynamic shared memory is not emulated");
    return 1;
  }
  std::lock_guard<std::mutex> serial(metaug_emu::launch_lock());
  std::vector<metaug_emu::Range> rs;
  for (std::size_t k = 0; k < nranges; ++k) rs.push_back({ranges[2 * k], ranges[2 * k + 1]});
  metaug_emu::Launch launch;
  launch.kernel = entry->name;
  launch.ranges = &rs;
  metaug_emu::g_launch = &launch;

  const unsigned n = (unsigned)threads;
  const unsigned long long nblocks = (unsigned long long)grid[0] * grid[1] * grid[2];
  std::vector<unsigned> perm(n);
  for (unsigned k = 0; k < n; ++k) perm[k] = k;
  std::uint64_t rng = schedule;
  // Block order: shuffled under a schedule (CUDA promises no order), unless the grid is too
  // large to list, then in order.
  std::vector<unsigned long long> order;
  if (schedule != 0 && nblocks <= (1ull << 22)) {
    order.resize(nblocks);
    for (unsigned long long k = 0; k < nblocks; ++k) order[k] = k;
    for (unsigned long long k = nblocks; k > 1; --k) {
      rng = metaug_emu::mix(rng);
      std::swap(order[k - 1], order[rng % k]);
    }
  }
  for (unsigned long long bi = 0; bi < nblocks; ++bi) {
    const unsigned long long b = order.empty() ? bi : order[bi];
    if (schedule != 0) {
      for (unsigned k = n; k > 1; --k) {  // Fisher-Yates: which worker runs which thread
        rng = metaug_emu::mix(rng);
        std::swap(perm[k - 1], perm[rng % k]);
      }
    }
    const uint3 bid{(unsigned)(b % grid[0]), (unsigned)((b / grid[0]) % grid[1]), (unsigned)(b / ((unsigned long long)grid[0] * grid[1]))};
    metaug_emu::Block blk(n);
    const std::uint64_t delay_seed = rng;
    std::function<void(unsigned)> job = [&](unsigned worker) {
      const unsigned t = perm[worker];
      metaug_emu::t_block = &blk;
      metaug_emu::t_linear = t;
      threadIdx = uint3{t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
      blockIdx = bid;
      blockDim = dim3{block[0], block[1], block[2]};
      gridDim = dim3{grid[0], grid[1], grid[2]};
      if (schedule != 0) {
        const unsigned yields = (unsigned)(metaug_emu::mix(delay_seed ^ t) % 8u);
        for (unsigned k = 0; k < yields; ++k) sched_yield();
      }
      entry->call(params);
      // An exited thread leaves its warp and block barriers.
      metaug_emu::Warp& w = *blk.warps[t / 32];
      w.alive.fetch_and(~(1u << (t & 31u)));
      w.bar.arrive_and_drop();
      blk.bar.arrive_and_drop();
    };
    metaug_emu::pool().run(n, job);
    if (launch.failed.load()) break;
  }
  metaug_emu::g_launch = nullptr;
  if (launch.failed.load()) {
    set_err(err, err_len, launch.error);
    return 1;
  }
  return 0;
}
}

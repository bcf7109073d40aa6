#!/usr/bin/env bash
# The prepared device check: every GPU test, compute-sanitizer on them, the
# fused-kernel bench against device-to-device copy bandwidth and the GPU
# loader bench, in one call of a few minutes. Logs under $OUT (or ./gpu-logs).
#
# Here (with a Rust toolchain), from the repo root:
#   bash .ci/gpu-bundle.sh               # the binaries this runs, into .gpu/ (~50 MB)
# Then on the GPU machine, from a copy of the tree, carrying .gpu:
#   bash .ci/gpu-check.sh
#
# Budget: under 8 minutes of device time whatever happens. Each step has a
# time cap, and the sanitizer steps (the slow ones) are skipped once 4.5
# minutes have gone, so that the benches still run. Not yet measured on a
# GPU: none has been lent so far.
# Every step's exit status is in $OUT/summary.txt; the script exits non-zero
# if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -d .gpu/bin ] || { echo "no .gpu/bin: run ../shared/tools/gpu-bundle first" >&2; exit 2; }
out="${OUT:-$PWD/gpu-logs}"
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
for d in /usr/local/cuda/lib64 /usr/local/nvidia/lib64 \
  $(python3 -c 'import nvidia,os;p=nvidia.__path__[0];print(" ".join(os.path.join(p,x,"lib") for x in os.listdir(p)))' 2>/dev/null); do
  [ -d "$d" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
# NVRTC newer than the driver makes PTX the driver refuses: CUDA's own first.
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH="/usr/local/cuda/lib64:$LD_LIBRARY_PATH"
export METAUG_KERNEL_CACHE="$out/ptx-cache"
# A GPU test that finds no device fails here instead of skipping.
export METAUG_REQUIRE_GPU=1
[ -d .gpu/shared-data ] && export METAUG_SHARED_DATA="$PWD/.gpu/shared-data"
status=0
begin=$(date +%s)
elapsed() { echo $(( $(date +%s) - begin )); }
step() { # step NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  printf '%-28s rc=%-3s %4ss  %s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$*" | tee -a "$summary"
  [ $rc -eq 0 ] || status=1
}

step nvidia-smi 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
# Every CUDA test on the GPU (the emulated halves run too: same binaries), ignored (heavy) ones included.
for t in cuda_device cuda_augment cuda_relaxed cuda_loader cuda_kernels_compile; do
  step "test-$t" 60 ".gpu/bin/test-$t" --include-ignored --test-threads 1
done
# Sanitizers on the GPU halves only (filter "gpu"), skipping the heavy ignored tests.
if command -v compute-sanitizer > /dev/null; then
  for t in cuda_relaxed cuda_device cuda_augment; do
    for tool in memcheck racecheck; do
      if [ "$(elapsed)" -ge 270 ]; then
        echo "$tool-$t: skipped, past the sanitizer budget" | tee -a "$summary"; status=1; continue
      fi
      step "$tool-$t" 60 compute-sanitizer --tool $tool --error-exitcode 9 ".gpu/bin/test-$t" gpu --test-threads 1
    done
  done
  [ "$(elapsed)" -lt 270 ] && step "synccheck-cuda_relaxed" 45 compute-sanitizer --tool synccheck --error-exitcode 9 .gpu/bin/test-cuda_relaxed gpu --test-threads 1
else
  echo "compute-sanitizer not found" | tee -a "$summary"
fi
# Fused kernel vs device-to-device copy (prints the ratio last), then the loader benches.
step bench-gpu 60 .gpu/bin/bench-gpu --bench
grep -q "skipped" "$out/bench-gpu.log" && { echo "bench-gpu skipped (no device)" | tee -a "$summary"; status=1; }
step bench-loader-cuda 60 .gpu/bin/bench-loader --bench loader_cuda
command -v nvcc > /dev/null && step nvcc-resource-usage 30 sh -c \
  'nvcc -arch=sm_90 --resource-usage -I.gpu/kernels -c -o /dev/null .gpu/kernels/augment.cu && nvcc -arch=sm_90 --resource-usage -I.gpu/kernels -c -o /dev/null .gpu/kernels/relaxed.cu'
echo "--- last lines of the benches"
tail -n 5 "$out/bench-gpu.log" "$out/bench-loader-cuda.log" 2>/dev/null
echo "--- summary ($(elapsed) s)"
cat "$summary"
exit $status

#!/usr/bin/env bash
# Builds the GPU check's binaries into .gpu/ (../shared/tools/gpu-bundle) and
# keeps only what .ci/gpu-check.sh runs, so that .gpu stays under the 64 MiB a
# device call can carry. Then: device run with carry [".gpu"] of
#   bash .ci/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
../shared/tools/gpu-bundle "$@"
keep="test-cuda_device test-cuda_augment test-cuda_relaxed test-cuda_loader test-cuda_kernels_compile bench-gpu bench-loader"
for f in .gpu/bin/*; do
  case " $keep " in *" $(basename "$f") "*) ;; *) rm -f "$f" ;; esac
done
# The JPEG photos for the GPU loader bench (32 MB; the device machine has no
# ../shared). The benches find them through METAUG_SHARED_DATA (gpu-check.sh).
if [ -d ../shared/data/photos-jpeg ]; then
  mkdir -p .gpu/shared-data && cp -r ../shared/data/photos-jpeg .gpu/shared-data/
fi
du -sh .gpu

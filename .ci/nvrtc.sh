#!/usr/bin/env bash
# NVRTC without a GPU: installs NVIDIA's NVRTC wheel into a virtual environment
# in the repo (.venv-nvrtc, git-ignored) so that the CUDA kernels can be
# compiled to PTX on a machine with no CUDA toolkit and no GPU.
#
#   eval "$(bash .ci/nvrtc.sh)"                 # exports LD_LIBRARY_PATH for this shell
#   bash .ci/nvrtc.sh CMD ARGS...               # runs CMD with it set, e.g.
#   bash .ci/nvrtc.sh cargo test --release --test cuda_kernels_compile
#
# With a command, METAUG_REQUIRE_NVRTC=1 is set too, so the compile test fails
# (instead of skipping) if libnvrtc still cannot be loaded.
#
# The version is pinned to CUDA 13.0: the GPU machines' driver is CUDA 13.0
# (580), and PTX from a newer NVRTC (a newer PTX ISA) would be rejected there.
set -euo pipefail
NVRTC_VERSION="${METAUG_NVRTC_VERSION:-13.0.88}"
top=$(cd "$(dirname "$0")/.." && pwd)
venv="$top/.venv-nvrtc"
py="${PYTHON:-python3}"

libdir() {
  "$venv/bin/python" - <<'PY'
import os, sysconfig
d = os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cu13", "lib")
print(d if os.path.exists(os.path.join(d, "libnvrtc.so.13")) else "")
PY
}

lib=""
if [ -x "$venv/bin/python" ]; then
  lib=$(libdir)
  have=$("$venv/bin/python" -m pip show nvidia-cuda-nvrtc 2>/dev/null | sed -n 's/^Version: //p')
  [ "$have" = "$NVRTC_VERSION" ] || lib=""
fi
if [ -z "$lib" ]; then
  echo "nvrtc.sh: installing nvidia-cuda-nvrtc==$NVRTC_VERSION into $venv" >&2
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvrtc==$NVRTC_VERSION" >&2
  lib=$(libdir)
fi
if [ -z "$lib" ]; then
  echo "nvrtc.sh: libnvrtc.so.13 not found under $venv after installing" >&2
  exit 1
fi
echo "nvrtc.sh: libnvrtc at $lib" >&2

export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ $# -eq 0 ]; then
  printf 'export LD_LIBRARY_PATH=%q\n' "$LD_LIBRARY_PATH"
else
  export METAUG_REQUIRE_NVRTC=1
  exec "$@"
fi

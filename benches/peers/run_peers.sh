#!/usr/bin/env bash
# metaug's CPU loader vs PyTorch's DataLoader on the same 300 JPEG photos, same
# output (224x224x3 float32 NCHW, ImageNet normalisation), same augmentation
# (metaug's `default` policy; torchvision v2 set to the same ops and odds),
# same batch, same number of threads/workers, one after the other in one run.
#
#   bash benches/peers/run_peers.sh [--workers N] [--batch B] [--passes P] [--seconds S]
#                                   [--backend pil|tensor] [--device cpu|cuda:0] [--photos DIR]
#
# --device cuda:0 runs metaug's GPU loader (decode on N threads, fused kernel on the GPU;
# batches counted when their kernel is done) against the same CPU PyTorch DataLoader.
# METAUG=path uses that metaug binary instead of building one (the GPU machine has no cargo).
#
# Needs: cargo, and a Python with torch + torchvision + pillow (PYTHON, default
# .venv-peers/bin/python; see benches/peers/README.md). The photos are packed
# once into target/peers/photos-jpeg (a JPEG dataset, records byte for byte).
# Rates: PyTorch, images of passes 2..P over their wall time (pass 1 warms up
# the worker processes and the page cache); metaug, S seconds of batches after
# a 1 s warm-up. Prints both results as JSON lines, then the ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."

workers=2 batch=64 passes=5 backend=pil seconds=8 device=cpu photos=../shared/data/photos-jpeg
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --passes) passes=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --photos) photos=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-.venv-peers/bin/python}
packed=target/peers/photos-jpeg

"$py" -c 'import torch, torchvision, PIL' 2>/dev/null || {
  echo "run_peers: $py has no torch/torchvision/pillow (see benches/peers/README.md)" >&2; exit 1; }
if [ -n "${METAUG:-}" ]; then
  metaug=$METAUG   # e.g. .gpu/bin/bin-metaug on the GPU machine (no cargo there)
else
  cargo build --release --quiet --bin metaug
  metaug=target/release/metaug
fi
if [ ! -f "$packed/index.json" ]; then
  # photos-jpeg also holds README.md and labels.csv: pack a tree of links <wnid>/<file>.
  tree=target/peers/photos-jpeg-tree
  rm -rf "$tree"
  tail -n +2 "$photos/labels.csv" | while IFS=, read -r file _ wnid _; do
    mkdir -p "$tree/$wnid" && ln -s "$(realpath "$photos/$file")" "$tree/$wnid/$file"
  done
  "$metaug" pack folder "$tree" -o "$packed" --force >/dev/null
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"

# metaug: the loader end to end (`metaug bench --stages e2e`: the Loader as `metaug stream`
# runs it, timed after a warm-up, printed as JSON).
mout=$("$metaug" bench "$packed" --stages e2e --device "$device" --threads "$workers" --batch "$batch" \
  --size 224x224 --channels 3 --policy default --imagenet-norm --seconds "$seconds" --json)
echo "$mout"
pout=$("$py" benches/peers/pytorch_loader.py --dir "$photos" --workers "$workers" --batch "$batch" \
  --passes "$passes" --backend "$backend")
echo "$pout"
python3 - "$mout" "$pout" "$workers" <<'PY'
import json, sys
m, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
e = m["stages"][-1]
if e.get("skipped"):
    sys.exit(f"metaug end-to-end skipped: {e['skipped']}")
r = e["images_per_s"] / p["images_per_s"]
w = e.get("workers") or {}
print(f"metaug loader: {e['images_per_s']:.1f} images/s ({e['images']} images in {e['seconds']:.1f} s, "
      f"{e.get('cores_busy', 0):.2f} cores busy; workers {100 * w.get('running', 0):.0f}% running, "
      f"{100 * w.get('waiting', 0):.0f}% waiting for a core, {100 * w.get('idle', 0):.0f}% idle)")
print(f"PyTorch DataLoader ({p['backend']}): {p['images_per_s']:.1f} images/s "
      f"(passes 2..{p['passes']} of {p['images_per_pass']} images; warm-up pass {p['warmup_pass_images_per_s']:.1f})")
goal = "3x" if m["device"] != "cpu" else "1.5x"
print(f"ratio metaug ({m['device']}) / PyTorch at {sys.argv[3]} workers: {r:.2f}x (goal >= {goal})")
m_cpu = e["images_per_s"] / e["cores_busy"] if e.get("cores_busy") else float("nan")
print(f"images per CPU-second: metaug {m_cpu:.1f}, PyTorch {p['images_per_cpu_s']:.1f} "
      f"({p['cores_busy']:.2f} cores busy): {m_cpu / p['images_per_cpu_s']:.2f}x")
PY

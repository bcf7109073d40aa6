#!/usr/bin/env bash
# The loader reading an s3:// dataset from a local S3 server (moto_server)
# against the same dataset on local disk: `metaug stream` images/s, one epoch
# per run, rounds interleaved (local, s3 warm cache, s3 cold cache, s3 with no
# disk cache), medians and ratios at the end.
#
#   bash benches/s3_stream.sh            # 5 rounds, the photos 8 times over
#   ROUNDS=3 COPIES=4 bash benches/s3_stream.sh
#
# Needs .venv with moto[server] (`.ci/run` installs it) and ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
copies=${COPIES:-8}
cargo build --release --features s3 --bin metaug 2>&1 | tail -1
metaug=$PWD/target/release/metaug

work=$(mktemp -d)
moto_pid=
cleanup() {
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The dataset: the 300 JPEG photos, $copies times over (distinct records).
mkdir -p "$work/src"
for c in $(seq "$copies"); do
  for f in ../shared/data/photos-jpeg/*.JPEG; do
    cp "$f" "$work/src/c$c-$(basename "$f")"
  done
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
.venv/bin/python - "$AWS_ENDPOINT_URL" <<'PY'
import sys, time, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
for attempt in range(100):
    try:
        s3.create_bucket(Bucket="bench")
        break
    except Exception:
        time.sleep(0.2)
PY
url=s3://bench/photos
METAUG_CACHE_DIR="$work/stage" "$metaug" pack folder "$work/src" --flat -o "$work/local" 2>&1 | tail -1
METAUG_CACHE_DIR="$work/stage" "$metaug" pack folder "$work/src" --flat -o "$url" 2>&1 | tail -1

# images/s of epoch 0 of `metaug stream DIR`, with the environment given.
rate() {
  env "$@" "$metaug" stream "$dir" --batch 64 --size 224x224 --threads 2 --epochs 1 \
    | sed -n 's/^epoch 0: .* \([0-9][0-9]*\) images\/s.*/\1/p'
}
dir=$url rate METAUG_CACHE_DIR="$work/warm" >/dev/null # fills the warm cache

echo "round local s3-warm s3-cold s3-nocache"
results=$work/results
for r in $(seq "$rounds"); do
  rm -rf "$work/cold"
  local_rate=$(dir=$work/local rate X=1)
  warm=$(dir=$url rate METAUG_CACHE_DIR="$work/warm")
  cold=$(dir=$url rate METAUG_CACHE_DIR="$work/cold")
  nocache=$(dir=$url rate METAUG_CACHE_DIR="$work/none" METAUG_CACHE_LIMIT=0)
  echo "$r $local_rate $warm $cold $nocache" | tee -a "$results"
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1])]
names = ["local", "s3-warm", "s3-cold", "s3-nocache"]
med = [statistics.median(col) for col in zip(*rows)]
for n, m in zip(names, med):
    print(f"median {n}: {m:.0f} images/s")
for i, n in enumerate(names[1:], 1):
    ratios = [r[i] / r[0] for r in rows]
    print(f"{n} / local: median of paired ratios {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
PY

#!/usr/bin/env bash
# Lints (cargo clippy: type and borrow checks, build scripts run) metaug's
# `candle-cuda` feature on a machine without a CUDA toolkit: the zero-copy
# path of src/adapters/candle/cuda.rs against candle-core's real CUDA
# backend, and cudarc in one build with candle's cudarc features (candle asks
# for `dynamic-linking`, metaug for `fallback-dynamic-loading`; cudarc's
# build script refuses a conflict, and it runs here). No machine code is
# generated: a codegen build of candle-core's CUDA backend took 2m48s of CI,
# for the errors only code generation finds (post-monomorphisation), which
# this adapter's plain code is unlikely to raise.
#
# candle-core's `cuda` feature depends on candle-kernels, whose build script
# compiles candle's own kernels with nvcc (PTX, and a static library of
# mixture-of-experts and GGUF kernels). None of those kernels is metaug's or
# is used by the zero-copy path, and nvcc is not on this machine. So the
# check builds against a copy of candle-kernels, taken from the cargo
# registry at the version in Cargo.lock, whose build script writes empty
# PTX constants and compiles nothing; it is patched in with `--config` for
# these commands, and Cargo.lock is restored afterwards. Nothing is
# compiled to machine code, so the missing kernels cannot leak into a binary.
#
# Run from anywhere: bash .ci/candle-cuda-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(awk '/^name = "candle-kernels"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$version" ] || { echo "candle-kernels is not in Cargo.lock"; exit 1; }
cargo fetch --locked --quiet
registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
src=$(ls -d "$registry"/*/"candle-kernels-$version" | head -1)
[ -d "$src" ] || { echo "candle-kernels $version not found under $registry"; exit 1; }

stub="$PWD/target/candle-kernels-$version-nvcc-free"
rm -rf "$stub"
cp -r "$src" "$stub"
chmod -R u+w "$stub"
python3 - "$stub" <<'PY'
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
# The modules upstream compiles to PTX: every src/*.cu but the statically
# built ones (the exclusions of its build.rs).
static = re.compile(r"^(moe_.*|mmvq_gguf|mmq_.*)\.cu$")
names = sorted(p.stem.upper() for p in (root / "src").glob("*.cu") if not static.match(p.name))
if not names:
    sys.exit("no .cu sources in candle-kernels")
consts = "".join(f'pub const {n}: &str = "";\n' for n in names)
(root / "build.rs").write_text(
    "// nvcc-free: empty PTX, no static library (metaug's .ci/candle-cuda-check.sh)\n"
    "fn main() {\n"
    '    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());\n'
    f'    std::fs::write(out.join("ptx.rs"), r#"{consts}"#).unwrap();\n'
    "}\n"
)
manifest = root / "Cargo.toml"
text = manifest.read_text()
# its build dependency (the nvcc driver) is not needed any more
text = re.sub(r"\n\[build-dependencies\.[^\]]+\]\n(?:[^\[\n][^\n]*\n)*", "\n", text)
manifest.write_text(text)
print(f"candle-kernels nvcc-free copy: {len(names)} PTX modules left empty ({', '.join(names)})")
PY

lock_backup=$(mktemp)
cp Cargo.lock "$lock_backup"
trap 'cp "$lock_backup" Cargo.lock; rm -f "$lock_backup"' EXIT
patch=(--config "patch.crates-io.candle-kernels.path=\"$stub\"")
cargo clippy --release --offline --features candle-cuda --lib "${patch[@]}" -- -D warnings
echo "candle-cuda: the zero-copy path type-checks and lints against candle-core's CUDA backend"

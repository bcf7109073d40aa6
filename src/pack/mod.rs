//! Packing datasets into shards: IDX (MNIST / Fashion-MNIST) and image folders.

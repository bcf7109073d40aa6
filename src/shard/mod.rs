//! The on-disk shard format: safetensors shards and the dataset `index.json`.

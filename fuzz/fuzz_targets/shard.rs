#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| metaug_fuzz::shard(data));

//! The prefetching loader.

/// Placeholder until the loader lands.
pub struct Loader;

//! precompute (under construction).

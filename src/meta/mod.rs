//! The meta-gradient engine: reverse-mode autodiff tape, MLP, MAML and Reptile.

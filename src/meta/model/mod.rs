//! Task models trained by the meta loop, written with the engine's tape
//! operations (so MAML can differentiate through their training): a
//! multilayer perceptron ([`mlp`]) and a small convolutional network
//! ([`cnn`]).

pub mod cnn;
pub mod mlp;

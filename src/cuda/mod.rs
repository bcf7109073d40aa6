//! CUDA: device discovery, NVRTC-compiled kernels, the GPU augmentation path.

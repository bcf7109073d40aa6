//! Compiles the kernels (`../kernels/*.cu`) and the runtime for the host.
//! A C++20 compiler is required: without one the build fails (the emulated
//! kernel tests must fail, not skip, when the emulation cannot be built).

fn main() {
    let kernels = std::path::Path::new("../kernels");
    for f in [
        "augment.cu",
        "relaxed.cu",
        "philox.cu",
        "philox.cuh",
        "sample.cuh",
    ] {
        println!("cargo:rerun-if-changed=../kernels/{f}");
    }
    for f in [
        "include/metaug_cuda_emu.h",
        "src/runtime.cpp",
        "src/kernels_augment.cpp",
        "src/kernels_relaxed.cpp",
        "src/kernels_philox.cpp",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .include("include")
        .include(kernels)
        .files([
            "src/runtime.cpp",
            "src/kernels_augment.cpp",
            "src/kernels_relaxed.cpp",
            "src/kernels_philox.cpp",
        ])
        // The kernels' numerics: every + - * / rounds once (NVRTC's --fmad=false), no fast math.
        .flag("-ffp-contract=off")
        .flag("-fno-fast-math")
        .flag("-Wno-unknown-pragmas")
        .flag("-Wno-unused-parameter")
        .flag("-pthread")
        .compile("metaug_cuda_emu");
    println!("cargo:rustc-link-lib=pthread");
}

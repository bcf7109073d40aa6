// kernels/augment.cu for the host: every one of its 24 entry points.
#include "metaug_cuda_emu.h"
#include "augment.cu"

// The same variant list as augment.cu's, as registry entries.
#undef METAUG_AUGMENT_KERNEL
#define METAUG_AUGMENT_KERNEL(NAME, DT, LAYOUT, C, VEC) METAUG_EMU_ENTRY(NAME),
static const metaug_emu::KernelEntry kAugment[] = {
    METAUG_AUGMENT_CHANNELS(u8, METAUG_DT_U8, nchw, METAUG_NCHW)
    METAUG_AUGMENT_CHANNELS(u8, METAUG_DT_U8, nhwc, METAUG_NHWC)
    METAUG_AUGMENT_CHANNELS(f16, METAUG_DT_F16, nchw, METAUG_NCHW)
    METAUG_AUGMENT_CHANNELS(f16, METAUG_DT_F16, nhwc, METAUG_NHWC)
    METAUG_AUGMENT_CHANNELS(f32, METAUG_DT_F32, nchw, METAUG_NCHW)
    METAUG_AUGMENT_CHANNELS(f32, METAUG_DT_F32, nhwc, METAUG_NHWC)
};

extern "C" const metaug_emu::KernelEntry* metaug_emu_augment_kernels(std::size_t* n) {
  *n = sizeof kAugment / sizeof kAugment[0];
  return kAugment;
}

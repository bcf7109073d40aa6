// kernels/augment.cu for the host: every one of its 24 entry points.
#include "metaug_cuda_emu.h"
#include "augment.cu"

// augment.cu's own variant list, as registry entries.
#undef METAUG_AUGMENT_KERNEL
#define METAUG_AUGMENT_KERNEL(NAME, DT, LAYOUT, C, VEC) METAUG_EMU_ENTRY(NAME),
static const metaug_emu::KernelEntry kAugment[] = {METAUG_AUGMENT_ALL_VARIANTS};

extern "C" const metaug_emu::KernelEntry* metaug_emu_augment_kernels(std::size_t* n) {
  *n = sizeof kAugment / sizeof kAugment[0];
  return kAugment;
}

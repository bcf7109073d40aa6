// kernels/relaxed.cu for the host.
#include "metaug_cuda_emu.h"
#include "relaxed.cu"

static const metaug_emu::KernelEntry kRelaxed[] = {
    METAUG_EMU_ENTRY(metaug_relaxed_forward),
    METAUG_EMU_ENTRY(metaug_relaxed_vjp_params),
    METAUG_EMU_ENTRY(metaug_relaxed_vjp_input),
    METAUG_EMU_ENTRY(metaug_relaxed_reduce),
};

extern "C" const metaug_emu::KernelEntry* metaug_emu_relaxed_kernels(std::size_t* n) {
  *n = sizeof kRelaxed / sizeof kRelaxed[0];
  return kRelaxed;
}

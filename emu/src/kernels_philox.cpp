// kernels/philox.cu for the host.
#include "metaug_cuda_emu.h"
#include "philox.cu"

static const metaug_emu::KernelEntry kPhilox[] = {
    METAUG_EMU_ENTRY(metaug_philox_check),
};

extern "C" const metaug_emu::KernelEntry* metaug_emu_philox_kernels(std::size_t* n) {
  *n = sizeof kPhilox / sizeof kPhilox[0];
  return kPhilox;
}

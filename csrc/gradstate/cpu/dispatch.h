// The CPU kernels of the level chosen for this process: GRADSTATE_CPU_ISA when set, else the best level
// this CPU supports that this binary contains. Compiled without any ISA flag.
#pragma once

#include <vector>

#include "gradstate/cpu/cpu_features.h"
#include "gradstate/cpu/kernels/kernels.h"

namespace gradstate::cpu {

const CpuKernels& cpu_kernels();
Isa chosen_isa();
// Levels this binary contains that this CPU runs, baseline first.
std::vector<Isa> usable_isas();

}  // namespace gradstate::cpu

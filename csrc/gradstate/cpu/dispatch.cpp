#include "gradstate/cpu/dispatch.h"

#include <cstdlib>
#include <string>

#include "gradstate/core/errors.h"

namespace gradstate::cpu {
namespace {

// The table of a level, or null when this binary does not contain it.
const CpuKernels* table_of(Isa isa) {
  switch (isa) {
#ifdef GRADSTATE_HAVE_ISA_SCALAR
    case Isa::scalar:
      return &kernels_scalar();
#endif
#ifdef GRADSTATE_HAVE_ISA_X86_V3
    case Isa::x86_v3:
      return &kernels_x86_v3();
#endif
#ifdef GRADSTATE_HAVE_ISA_X86_V4
    case Isa::x86_v4:
      return &kernels_x86_v4();
#endif
#ifdef GRADSTATE_HAVE_ISA_NEON
    case Isa::neon:
      return &kernels_neon();
#endif
    default:
      return nullptr;
  }
}

Isa choose() {
  const std::vector<Isa> usable = usable_isas();
  const char* forced = std::getenv("GRADSTATE_CPU_ISA");
  if (forced == nullptr || *forced == '\0') return usable.back();
  std::string names;
  for (Isa isa : usable) {
    if (forced == std::string(isa_name(isa))) return isa;
    names += (names.empty() ? "" : ", ") + std::string(isa_name(isa));
  }
  throw ValueError(concat("GRADSTATE_CPU_ISA: expected one of the levels this CPU runs (", names, "), got '",
                          forced, "'"));
}

}  // namespace

std::vector<Isa> usable_isas() {
  std::vector<Isa> usable;
  for (Isa isa : {Isa::scalar, Isa::neon, Isa::x86_v3, Isa::x86_v4}) {
    if (table_of(isa) != nullptr && isa_supported(isa)) usable.push_back(isa);
  }
  return usable;
}

Isa chosen_isa() {
  static const Isa isa = choose();
  return isa;
}

const CpuKernels& cpu_kernels() {
  static const CpuKernels& kernels = *table_of(chosen_isa());
  return kernels;
}

}  // namespace gradstate::cpu

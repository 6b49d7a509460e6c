#include "gradstate/cpu/cpu_features.h"

#include <initializer_list>

namespace gradstate::cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return "scalar";
    case Isa::x86_v3:
      return "x86_v3";
    case Isa::x86_v4:
      return "x86_v4";
    case Isa::neon:
      return "neon";
  }
  return "?";
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return true;
#if defined(__x86_64__) || defined(_M_X64)
    // __builtin_cpu_supports also checks that the operating system saves the wide registers (XGETBV).
    case Isa::x86_v3:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Isa::x86_v4:
#ifdef GRADSTATE_X86_V4_ON_AVX2
      return isa_supported(Isa::x86_v3);  // this test build compiled the level for AVX2
#else
      return isa_supported(Isa::x86_v3) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
#endif
#endif
#if defined(__aarch64__)
    case Isa::neon:
      return true;  // part of every arm64 CPU
#endif
    default:
      return false;
  }
}

Isa detected_isa() {
  for (Isa isa : {Isa::x86_v4, Isa::x86_v3, Isa::neon}) {
    if (isa_supported(isa)) return isa;
  }
  return Isa::scalar;
}

}  // namespace gradstate::cpu

// Which instruction-set levels this CPU runs. Compiled without any ISA flag, so that it runs everywhere.
#pragma once

namespace gradstate::cpu {

// The levels each kernel is compiled for. x86_v3 is AVX2 + FMA; x86_v4 adds AVX-512 F/BW/VL/DQ; neon is
// arm64's; scalar is the architecture's baseline.
enum class Isa { scalar, x86_v3, x86_v4, neon };

const char* isa_name(Isa isa);
// The best level this CPU (and its operating system) supports.
Isa detected_isa();
bool isa_supported(Isa isa);

}  // namespace gradstate::cpu

// The sums of the weight-gradient kernels' partial results, shared by convolution_weights.cpp and
// convolution_weights_in_place.cpp.
#pragma once

#include <cstdint>

#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// dw and db from per-part partial sums laid out [part][dw then db], added in part order (a fixed order, so
// the result does not depend on the thread count); added to the existing values when accumulate.
inline void sum_partials(const float* partials, std::int64_t parts, std::int64_t dw_size,
                         std::int64_t db_size, float* dw, float* db, bool accumulate) {
  const std::int64_t part = dw_size + db_size;
  constexpr std::int64_t chunk = 4096;
  parallel_for(ceil_div(part, chunk), [&](std::int64_t c) {
    for (std::int64_t e = c * chunk; e < min_of(part, (c + 1) * chunk); ++e) {
      float* out = e < dw_size ? dw + e : db + (e - dw_size);
      float sum = accumulate ? *out : 0.0f;
      for (std::int64_t s = 0; s < parts; ++s) sum += partials[s * part + e];
      *out = sum;
    }
  });
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

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
  // out[i] (+)= the parts' values at offset `first` + i, for i < count: whole vectors, then the rest.
  const auto sum = [&](std::int64_t first, std::int64_t count, float* out) {
    std::int64_t i = 0;
    for (; i + lanes <= count; i += lanes) {
      Vec total = accumulate ? load(out + i) : Vec{};
      for (std::int64_t s = 0; s < parts; ++s) total += load(partials + s * part + first + i);
      store(out + i, total);
    }
    for (; i < count; ++i) {
      float total = accumulate ? out[i] : 0.0f;
      for (std::int64_t s = 0; s < parts; ++s) total += partials[s * part + first + i];
      out[i] = total;
    }
  };
  parallel_for(ceil_div(part, chunk), [&](std::int64_t c) {
    const std::int64_t begin = c * chunk, end = min_of(part, begin + chunk);
    if (begin < dw_size) sum(begin, min_of(end, dw_size) - begin, dw + begin);
    if (end > dw_size) {
      const std::int64_t first = max_of(begin, dw_size);
      sum(first, end - first, db + (first - dw_size));
    }
  });
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

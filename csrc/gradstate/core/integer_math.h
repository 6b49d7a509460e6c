// Integer rounding for the backends' blocking, dispatch and allocation arithmetic.
#pragma once

#include <type_traits>

namespace gradstate {

// a / b rounded up, for a >= 0 and b > 0, in the common type of a and b.
template <typename A, typename B>
constexpr std::common_type_t<A, B> ceil_div(A a, B b) {
  using T = std::common_type_t<A, B>;
  return (static_cast<T>(a) + static_cast<T>(b) - 1) / static_cast<T>(b);
}

// a rounded up to a multiple of b, for a >= 0 and b > 0.
template <typename A, typename B>
constexpr std::common_type_t<A, B> round_up(A a, B b) {
  return ceil_div(a, b) * b;
}

}  // namespace gradstate

#include "gradstate/ops/padding.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "gradstate/core/errors.h"
#include "gradstate/core/integer_math.h"

namespace gradstate {
namespace {

// (before, after) padding of one axis under a policy.
std::pair<std::int64_t, std::int64_t> policy_axis(Padding::Kind kind, std::int64_t input, std::int64_t kernel,
                                                  std::int64_t stride, std::int64_t dilation) {
  const std::int64_t span = (kernel - 1) * dilation + 1;
  if (kind == Padding::Kind::full) return {span - 1, span - 1};
  if (kind == Padding::Kind::same) {
    const std::int64_t outputs = ceil_div(input, stride);
    const std::int64_t total = std::max<std::int64_t>((outputs - 1) * stride + span - input, 0);
    return {(total + 1) / 2, total / 2};
  }
  return {0, 0};
}

}  // namespace

Padding Padding::sizes(std::int64_t top, std::int64_t bottom, std::int64_t left, std::int64_t right) {
  const std::int64_t limit = std::numeric_limits<std::int32_t>::max();
  if (std::min({top, bottom, left, right}) < 0 || std::max({top, bottom, left, right}) > limit) {
    throw ValueError(concat("padding: expected sizes from 0 to 2**31 - 1, got (top, bottom, left, right) = (",
                            top, ", ", bottom, ", ", left, ", ", right, ")"));
  }
  return Padding(Kind::explicit_sizes, {top, bottom, left, right});
}

Pads Padding::resolve(Pair input, Pair kernel, Pair stride, Pair dilation) const {
  if (kind_ == Kind::explicit_sizes) return pads_;
  const auto [top, bottom] = policy_axis(kind_, input[0], kernel[0], stride[0], dilation[0]);
  const auto [left, right] = policy_axis(kind_, input[1], kernel[1], stride[1], dilation[1]);
  return {top, bottom, left, right};
}

}  // namespace gradstate

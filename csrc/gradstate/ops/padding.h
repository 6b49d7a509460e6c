// Padding rules of a convolution (see the API documentation, "Padding").
#pragma once

#include <array>
#include <cstdint>

namespace gradstate {

// (vertical, horizontal) pair of sizes, strides or dilations.
using Pair = std::array<std::int64_t, 2>;

// Zero padding added on each side of the input.
struct Pads {
  std::int64_t top, bottom, left, right;
};

class Padding {
 public:
  enum class Kind { explicit_sizes, valid, same, full };

  // Explicit sizes; ValueError naming padding for a negative one.
  static Padding sizes(std::int64_t top, std::int64_t bottom, std::int64_t left, std::int64_t right);
  static Padding policy(Kind kind) { return Padding(kind, {0, 0, 0, 0}); }

  Kind kind() const { return kind_; }
  // The sizes given to sizes(); zero for a policy.
  const Pads& explicit_pads() const { return pads_; }

  // The padding for an input of `input` (height, width) pixels. "same" follows MPS's default policy:
  // ceil(input / stride) outputs, the odd remainder of the total padding at the top and left.
  Pads resolve(Pair input, Pair kernel, Pair stride, Pair dilation) const;

 private:
  Padding(Kind kind, Pads pads) : kind_(kind), pads_(pads) {}

  Kind kind_;
  Pads pads_;
};

}  // namespace gradstate

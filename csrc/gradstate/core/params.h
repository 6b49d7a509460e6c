// Plain parameter structs passed to every backend's kernels. They hold only 32-bit fields so that one
// layout serves the C++ host code and, later, the Metal kernels that read them through setBytes.
#pragma once

#include <cstdint>

namespace gradstate {

// Activation layout. Weights and weight gradients are OHWI whatever this is.
enum class Layout : std::int32_t { NHWC = 0, NCHW = 1 };

// Geometry of one convolution call: input x (batch, in_h, in_w, in_c), output y (batch, out_h, out_w, out_c),
// weights (out_c, kernel_h, kernel_w, in_c / groups). Input row of output row oh and tap kh:
// oh * stride_y - pad_top + kh * dilation_y (reads outside the image are zero).
struct ConvParams {
  std::int32_t batch;
  std::int32_t in_h, in_w, in_c;
  std::int32_t out_h, out_w, out_c;
  std::int32_t kernel_h, kernel_w;
  std::int32_t stride_y, stride_x;
  std::int32_t dilation_y, dilation_x;
  std::int32_t pad_top, pad_left;
  std::int32_t groups;
  Layout layout;
};

// Geometry of one instance-normalization call over x (batch, height, width, channels).
struct NormParams {
  std::int32_t batch, channels, height, width;
  Layout layout;
  float epsilon;
};

}  // namespace gradstate

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

// Regularization added to an optimizer's gradient (MPSNNRegularizationType): L1 adds scale * sign(value),
// L2 adds scale * value.
enum class Regularization : std::int32_t { none = 0, l1 = 1, l2 = 2 };

// One optimizer update of a vector of values from their gradient (MPSNNOptimizerDescriptor and the fields of
// MPSNNOptimizerStochasticGradientDescent, ...RMSProp and ...Adam; each kernel reads its own). The gradient
// is first clipped to [gradient_clip_min, gradient_clip_max] when apply_gradient_clipping, then multiplied
// by gradient_rescale, then the regularization gradient of the value is added.
struct OptimizerParams {
  float learning_rate;
  float gradient_rescale;
  std::int32_t apply_gradient_clipping;
  float gradient_clip_min, gradient_clip_max;
  Regularization regularization;
  float regularization_scale;
  // SGD
  float momentum_scale;
  std::int32_t use_nesterov_momentum;
  // RMSProp; 1 - decay is computed in double, so that it keeps its precision for a decay close to 1.
  float decay, one_minus_decay;
  // RMSProp and Adam
  float epsilon;
  // Adam; step_size is learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t) for the time step t.
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float step_size;
};

}  // namespace gradstate

// Plain parameter structs passed to every backend's kernels. They hold only 32-bit fields so that one
// layout serves the C++ host code and the Metal kernels, which include this header and read the structs
// through setBytes.
#pragma once

#if !defined(__METAL_VERSION__)
#include <cstdint>
#endif

namespace gradstate {

#if defined(__METAL_VERSION__)
typedef int int32;
#else
typedef std::int32_t int32;
#endif

// Activation layout. Weights and weight gradients are OHWI whatever this is.
enum class Layout : int32 { NHWC = 0, NCHW = 1 };

// Geometry of one convolution call: input x (batch, in_h, in_w, in_c), output y (batch, out_h, out_w, out_c),
// weights (out_c, kernel_h, kernel_w, in_c / groups). Input row of output row oh and tap kh:
// oh * stride_y - pad_top + kh * dilation_y (reads outside the image are zero).
struct ConvParams {
  int32 batch;
  int32 in_h, in_w, in_c;
  int32 out_h, out_w, out_c;
  int32 kernel_h, kernel_w;
  int32 stride_y, stride_x;
  int32 dilation_y, dilation_x;
  int32 pad_top, pad_left;
  int32 groups;
  Layout layout;
};

// Geometry of one instance-normalization call over x (batch, height, width, channels).
struct NormParams {
  int32 batch, channels, height, width;
  Layout layout;
  float epsilon;
};

// Regularization added to an optimizer's gradient (MPSNNRegularizationType): L1 adds scale * sign(value),
// L2 adds scale * value.
enum class Regularization : int32 { none = 0, l1 = 1, l2 = 2 };

// One optimizer update of a vector of values from their gradient (MPSNNOptimizerDescriptor and the fields of
// MPSNNOptimizerStochasticGradientDescent, ...RMSProp and ...Adam; each kernel reads its own). The gradient
// is first clipped to [gradient_clip_min, gradient_clip_max] when apply_gradient_clipping, then multiplied
// by gradient_rescale, then the regularization gradient of the value is added.
struct OptimizerParams {
  float learning_rate;
  float gradient_rescale;
  int32 apply_gradient_clipping;
  float gradient_clip_min, gradient_clip_max;
  Regularization regularization;
  float regularization_scale;
  // SGD
  float momentum_scale;
  int32 use_nesterov_momentum;
  // RMSProp; 1 - decay is computed in double, so that it keeps its precision for a decay close to 1.
  float decay, one_minus_decay;
  // RMSProp and Adam
  float epsilon;
  // Adam; step_size is learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t) for the time step t.
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float step_size;
};

// What a Metal convolution dispatch needs beside the geometry.
struct ConvDispatch {
  int32 has_bias;    // forward: bias is bound and added
  int32 accumulate;  // weights gradient: add to the gradient instead of overwriting it
  int32 splits;      // weights gradient: partial sums over pixel ranges, added in order at the end
  int32 pixels_per_split;
};

// What a Metal instance-normalization dispatch needs beside the geometry.
struct NormDispatch {
  int32 has_gamma;   // gamma is bound (else 1)
  int32 has_beta;    // beta is bound (else 0)
  int32 accumulate;  // backward: add to dgamma and dbeta instead of overwriting them
  int32 unused;      // keeps the size a multiple of 16 bytes
};

}  // namespace gradstate

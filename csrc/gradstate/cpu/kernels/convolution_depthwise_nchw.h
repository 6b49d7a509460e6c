// The depthwise forward pass and weight gradient in NCHW (see convolution_depthwise_nchw.cpp).
#pragma once

#include "gradstate/core/params.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// Kernels of at most max_vector_taps taps (conv_geometry.h), with long output rows, or at stride 1 on inputs
// the caches cannot hold; other NCHW layers run the NHWC kernel on copies of blocks of their channels
// (depthwise_nchw_blocks.h).
bool depthwise_nchw_forward_applies(const ConvParams& p);

void depthwise_forward_nchw(const ConvParams& p, const float* x, const float* w, const float* b, float* y);

// The weight gradient of depthwise NCHW layers at stride 1 with long output rows, kernels of at most
// max_vector_taps taps and 7 columns: dw and db summed over the batch, added to them when accumulate. (Those
// that the NHWC sweeps take on blocks of channels, depthwise_weights_gradient_from_nchw, go there first.)
bool depthwise_nchw_weights_gradient_applies(const ConvParams& p);

void depthwise_weights_gradient_nchw(const ConvParams& p, const float* dy, const float* x, float* dw,
                                     float* db, bool accumulate);

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

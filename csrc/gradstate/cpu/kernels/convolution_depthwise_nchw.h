// The depthwise forward pass in NCHW (see convolution_depthwise_nchw.cpp).
#pragma once

#include "gradstate/core/params.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// Kernels of at most max_vector_taps taps (conv_geometry.h).
bool depthwise_nchw_forward_applies(const ConvParams& p);

void depthwise_forward_nchw(const ConvParams& p, const float* x, const float* w, const float* b, float* y);

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

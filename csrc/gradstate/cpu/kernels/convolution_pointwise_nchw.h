// The forward pass of 1x1 layers in NCHW as one GEMM per image (see convolution_pointwise_nchw.cpp).
#pragma once

#include "gradstate/core/params.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// NCHW, 1x1, stride 1, no padding, one group: what the GEMM per image covers. The data gradient of such a
// layer with at least 8 input channels is the forward pass of one (dy with the transposed weights), so it
// takes this path too.
bool pointwise_nchw_forward_applies(const ConvParams& p);

void pointwise_forward_nchw(const ConvParams& p, const float* x, const float* w, const float* b, float* y);

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

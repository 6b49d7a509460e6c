// The forward pass and weight gradient of 1x1 layers in NCHW as GEMMs on the tensors as they lie (see
// convolution_pointwise_nchw.cpp).
#pragma once

#include "gradstate/core/params.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// NCHW, 1x1, stride 1, no padding, one group: what the GEMM per image covers. The data gradient of such a
// layer with at least 8 input channels is the forward pass of one (dy with the transposed weights), so it
// takes this path too.
bool pointwise_nchw_forward_applies(const ConvParams& p);

void pointwise_forward_nchw(const ConvParams& p, const float* x, const float* w, const float* b, float* y);

// The weight gradient of those layers with planes of at least 256 pixels: dw and db summed over the batch,
// added to them when accumulate.
bool pointwise_nchw_weights_gradient_applies(const ConvParams& p);

void pointwise_weights_gradient_nchw(const ConvParams& p, const float* dy, const float* x, float* dw,
                                     float* db, bool accumulate);

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

// Forward pass of dense 3x3 stride-1 layers (any dilation) by Winograd's minimal filtering, NHWC (see
// convolution_winograd.cpp).
#pragma once

#include "gradstate/core/params.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// Whether the layer is one this algorithm computes: groups of 1, a 3x3 kernel, stride 1, and
// enough channels for its GEMMs.
bool winograd_forward_applies(const ConvParams& p);

void winograd_forward_nhwc(const ConvParams& p, const float* x, const float* w, const float* b, float* y);

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

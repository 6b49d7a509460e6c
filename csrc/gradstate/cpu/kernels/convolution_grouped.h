// Forward pass and data gradient of layers with small groups, NHWC (see convolution_grouped.cpp).
#pragma once

#include "gradstate/core/params.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// Whether the layer has small groups whose lanes' sources fit the shuffles of this level.
bool grouped_forward_applies(const ConvParams& p);
bool grouped_data_gradient_applies(const ConvParams& p);

void grouped_forward_nhwc(const ConvParams& p, const float* x, const float* w, const float* b, float* y);
// dx is overwritten.
void grouped_data_gradient_nhwc(const ConvParams& p, const float* dy, const float* w, float* dx);

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

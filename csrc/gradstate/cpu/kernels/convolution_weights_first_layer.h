// The weight gradient of layers with few input channels, such as a network's first layer, NHWC (see
// convolution_weights_first_layer.cpp).
#pragma once

#include "gradstate/core/params.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// Whether the layer is one this path computes: NHWC, one group, no dilation across, and at most 4 input
// channels (gray, RGB or RGBA images).
bool first_layer_weights_gradient_applies(const ConvParams& p);

// dw and db summed over the batch; overwritten unless accumulate.
void first_layer_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                                  bool accumulate);

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

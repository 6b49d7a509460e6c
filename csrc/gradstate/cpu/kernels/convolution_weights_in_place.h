// The weight gradient of layers whose kernel rows are few values (a network's first layer) or that have a
// 1x1 kernel, with x read in place, NHWC (see convolution_weights_in_place.cpp).
#pragma once

#include "gradstate/core/params.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// Whether the layer is one this path computes: NHWC, one group, no dilation across, and either at most 4
// input channels (gray, RGB or RGBA images) or a 1x1 kernel with output rows of at least 32 pixels.
bool in_place_weights_gradient_applies(const ConvParams& p);

// dw and db summed over the batch; overwritten unless accumulate.
void in_place_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                               bool accumulate);

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

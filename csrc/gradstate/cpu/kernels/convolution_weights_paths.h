// The weight gradient's dedicated paths besides Winograd's (convolution_winograd.h), each in its own file;
// convolution_weights.cpp picks the path of a layer. Each computes dw and db summed over the batch, and
// overwrites them unless accumulate.
#pragma once

#include "gradstate/core/params.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// convolution_weights_in_place.cpp: NHWC, one group, no dilation across, at most 1 MiB of accumulators (dW
// padded to whole tiles; 512 KiB for 1x1 kernels), and either at most 4 input channels (gray, RGB or RGBA
// images) or output rows of at least 28 pixels and 4 (image, band of rows) pairs (or, 1x1 kernels, output
// rows of at least 32 pixels).
bool in_place_weights_gradient_applies(const ConvParams& p);
void in_place_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                               bool accumulate);

// convolution_weights_depthwise.cpp: NHWC, at least two vectors of channels, and depthwise, or (AVX2 and
// AVX-512) 3x3 at stride 1 or 2 without dilation with 2 or 4 channels in and out per group.
bool depthwise_weights_gradient_applies(const ConvParams& p);
void depthwise_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                                bool accumulate);
// The same sweeps for NCHW depthwise layers those apply to when in NHWC, where blocks of 2 or more vectors
// of channels make enough tasks: a task copies one image's block of channels of x and dy into NHWC
// (depthwise_nchw_blocks.h) and sweeps all its rows there.
bool depthwise_weights_gradient_from_nchw_applies(const ConvParams& p);
void depthwise_weights_gradient_from_nchw(const ConvParams& p, const float* dy, const float* x, float* dw,
                                          float* db, bool accumulate);

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

// Forward pass of dense 3x3 layers at stride 1 (any dilation) or 2, data gradient at stride 1 (a forward
// pass) or 2, and weight gradient at stride 1, by Winograd's minimal filtering, NHWC (see
// convolution_winograd.cpp and convolution_weights_winograd.cpp).
#pragma once

#include "gradstate/core/params.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// Whether the layer is one this algorithm computes: groups of 1, a 3x3 kernel, stride 1 (any dilation) or 2
// (no dilation), and enough channels for its GEMMs.
bool winograd_forward_applies(const ConvParams& p);

// Returns false where an output may be NaN or Inf: the caller then computes them again by direct sums, since
// the transforms mix the pixels of a tile (see convolution_winograd.cpp). So do the data gradients below.
bool winograd_forward_nhwc(const ConvParams& p, const float* x, const float* w, const float* b, float* y);

// The same for the forward pass over dy that gives a stride-1 layer's dx (see convolution_data_gradient),
// with that layer's own OHWI weights w: the pass's kernels are its kernels flipped, input and output
// channels exchanged, transformed straight from w with no flipped copy. b (null for dx) keeps the forward
// passes' signature.
bool winograd_data_gradient_pass_nhwc(const ConvParams& pass, const float* dy, const float* w, const float* b,
                                      float* dx);

// Whether the layer's data gradient is one the stride-2 scheme computes (StrideTwoData in winograd.h):
// groups of 1, a 3x3 kernel, stride 2 without dilation, odd padding both ways, enough channels.
bool winograd_stride_two_data_gradient_applies(const ConvParams& p);

// dx of such a layer from dy and its OHWI weights w. `pass` is the forward pass over dy that gives dx (its
// input dy, its output dx, input and output channels exchanged) with the layer's padding, which places the
// scheme's tiles; b (null) keeps the forward passes' signature.
bool winograd_stride_two_data_gradient_nhwc(const ConvParams& pass, const float* dy, const float* w,
                                            const float* b, float* dx);

// Whether the layer is such a layer at stride 1, in NHWC, whose weight gradient's transforms stay within
// their memory bounds: dU (convolution_weights_winograd.cpp), or else the transformed tiles
// (convolution_weights_winograd_few_tiles.cpp).
bool winograd_weights_gradient_applies(const ConvParams& p);

// dw and db summed over the batch, overwritten. The caller checks for NaN and Inf, which the transforms
// spread (see winograd_weights_gradient_if_finite in convolution_weights.cpp).
void winograd_weights_gradient_nhwc(const ConvParams& p, const float* dy, const float* x, float* dw,
                                    float* db);

// The scheme of convolution_weights_winograd_few_tiles.cpp, for such layers: whether its transformed tiles
// fit their memory bound, and the weight gradient as above.
bool few_tiles_weights_gradient_fits(const ConvParams& p);
void few_tiles_weights_gradient_nhwc(const ConvParams& p, const float* dy, const float* x, float* dw,
                                     float* db);

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE

// The Metal backend. Each op's launchers live in the file named after the op (convolution.cpp,
// instance_norm.cpp), their kernels in kernels/<op>.metal, as in every backend.
#pragma once

#include "gradstate/core/backend.h"
#include "gradstate/metal/device.h"

namespace gradstate::metal {

// The launchers: encode an op's kernels for `device` and run them to completion.
void convolution_forward(Device& device, const ConvParams& p, const Buffer& x, const Buffer& weights,
                         const Buffer* bias, Buffer& y);
void convolution_data_gradient(Device& device, const ConvParams& p, const Buffer& dy, const Buffer& weights,
                               Buffer& dx);
void convolution_weights_gradient(Device& device, const ConvParams& p, const Buffer& dy, const Buffer& x,
                                  Buffer& dweights, Buffer& dbias, bool accumulate);
void instance_norm_forward(Device& device, const NormParams& p, const Buffer& x, const Buffer* gamma,
                           const Buffer* beta, Buffer& y, Buffer& mean, Buffer& inv_std);
void instance_norm_backward(Device& device, const NormParams& p, const Buffer& dy, const Buffer& x,
                            const Buffer* gamma, const Buffer& mean, const Buffer& inv_std, Buffer& dx,
                            Buffer& dgamma, Buffer& dbeta, bool accumulate);

}  // namespace gradstate::metal

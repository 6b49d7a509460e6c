// The CPU backend. Each op's kernels live in the file named after the op (convolution.cpp,
// instance_norm.cpp, optimizer.cpp), as they do in every backend.
#pragma once

#include "gradstate/core/backend.h"

namespace gradstate {

class CpuBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::cpu; }
  std::string device_name() const override;
  bool available() const override { return true; }
  std::string unavailable_reason() const override { return {}; }

  void convolution_forward(const ConvParams& p, const Buffer& x, const Buffer& weights, const Buffer* bias,
                           Buffer& y) override;
  void convolution_data_gradient(const ConvParams& p, const Buffer& dy, const Buffer& weights,
                                 Buffer& dx) override;
  void convolution_weights_gradient(const ConvParams& p, const Buffer& dy, const Buffer& x, Buffer& dweights,
                                    Buffer& dbias, bool accumulate) override;
  void instance_norm_forward(const NormParams& p, const Buffer& x, const Buffer* gamma, const Buffer* beta,
                             Buffer& y, Buffer& mean, Buffer& inv_std) override;
  void instance_norm_backward(const NormParams& p, const Buffer& dy, const Buffer& x, const Buffer* gamma,
                              const Buffer& mean, const Buffer& inv_std, Buffer& dx, Buffer& dgamma,
                              Buffer& dbeta, bool accumulate) override;
  void sgd_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                  Buffer* momentum) override;
  void rmsprop_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                      Buffer& sum_of_squares) override;
  void adam_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values, Buffer& momentum,
                   Buffer& velocity, Buffer* maximum_velocity) override;
};

}  // namespace gradstate

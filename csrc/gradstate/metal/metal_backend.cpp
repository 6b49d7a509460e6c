// The Metal backend: convolution and instance normalization run as Metal kernels. Its buffers are
// shared-storage MTLBuffers, which the CPU sees too, so the optimizers' element-wise updates run on the
// CPU backend over the same memory: every launcher has waited for its command buffer when it returns.
#include "gradstate/metal/metal_backend.h"

#include "gradstate/cpu/cpu_backend.h"

namespace gradstate {
namespace {

class MetalBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::metal; }
  std::string device_name() const override { return available() ? device().name() : "metal"; }
  bool available() const override { return metal::Device::system_default() != nullptr; }
  std::string unavailable_reason() const override { return available() ? "" : "no Metal device found"; }

  DeviceMemory allocate_memory(std::size_t nbytes) override { return device().allocate(nbytes); }

  void convolution_forward(const ConvParams& p, const Buffer& x, const Buffer& weights, const Buffer* bias,
                           Buffer& y) override {
    metal::convolution_forward(device(), p, x, weights, bias, y);
  }
  void convolution_data_gradient(const ConvParams& p, const Buffer& dy, const Buffer& weights,
                                 Buffer& dx) override {
    metal::convolution_data_gradient(device(), p, dy, weights, dx);
  }
  void convolution_weights_gradient(const ConvParams& p, const Buffer& dy, const Buffer& x, Buffer& dweights,
                                    Buffer& dbias, bool accumulate) override {
    metal::convolution_weights_gradient(device(), p, dy, x, dweights, dbias, accumulate);
  }
  void instance_norm_forward(const NormParams& p, const Buffer& x, const Buffer* gamma, const Buffer* beta,
                             Buffer& y, Buffer& mean, Buffer& inv_std) override {
    metal::instance_norm_forward(device(), p, x, gamma, beta, y, mean, inv_std);
  }
  void instance_norm_backward(const NormParams& p, const Buffer& dy, const Buffer& x, const Buffer* gamma,
                              const Buffer& mean, const Buffer& inv_std, Buffer& dx, Buffer& dgamma,
                              Buffer& dbeta, bool accumulate) override {
    metal::instance_norm_backward(device(), p, dy, x, gamma, mean, inv_std, dx, dgamma, dbeta, accumulate);
  }
  void sgd_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                  Buffer* momentum) override {
    cpu_backend().sgd_update(p, gradient, values, momentum);
  }
  void rmsprop_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                      Buffer& sum_of_squares) override {
    cpu_backend().rmsprop_update(p, gradient, values, sum_of_squares);
  }
  void adam_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values, Buffer& momentum,
                   Buffer& velocity, Buffer* maximum_velocity) override {
    cpu_backend().adam_update(p, gradient, values, momentum, velocity, maximum_velocity);
  }

 private:
  static metal::Device& device() { return *metal::Device::system_default(); }
};

}  // namespace

Backend& metal_backend() {
  static MetalBackend backend;
  return backend;
}

}  // namespace gradstate

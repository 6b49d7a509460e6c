// The backend interface: one implementation per device kind, each providing every kernel.
//
// A backend that is not built into this binary is still present as a stub whose available() is false and
// whose unavailable_reason() says why, so the rest of the library always links and can report it.
#pragma once

#include <string>

#include "gradstate/core/buffer.h"
#include "gradstate/core/device.h"
#include "gradstate/core/params.h"

namespace gradstate {

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind kind() const = 0;
  virtual std::string device_name() const = 0;
  virtual bool available() const = 0;
  // Why the backend cannot run here; empty when it is available.
  virtual std::string unavailable_reason() const = 0;

  // Zero-filled memory of the backend's own for a Buffer of `nbytes`; all null when its buffers live in
  // ordinary host memory.
  virtual DeviceMemory allocate_memory(std::size_t /*nbytes*/) { return DeviceMemory{}; }

  // y = conv(x, weights) + bias; bias may be null.
  virtual void convolution_forward(const ConvParams& p, const Buffer& x, const Buffer& weights,
                                   const Buffer* bias, Buffer& y) = 0;
  // dx = the transposed convolution of dy with weights; dx is overwritten.
  virtual void convolution_data_gradient(const ConvParams& p, const Buffer& dy, const Buffer& weights,
                                         Buffer& dx) = 0;
  // dweights (OHWI) and dbias, summed over the batch and every pixel; overwritten unless accumulate.
  virtual void convolution_weights_gradient(const ConvParams& p, const Buffer& dy, const Buffer& x,
                                            Buffer& dweights, Buffer& dbias, bool accumulate) = 0;

  // y = gamma * (x - mean) * inv_std + beta per (image, channel); gamma and beta may be null (1 and 0).
  // mean and inv_std, shaped (batch, channels), are saved for the backward pass.
  virtual void instance_norm_forward(const NormParams& p, const Buffer& x, const Buffer* gamma,
                                     const Buffer* beta, Buffer& y, Buffer& mean, Buffer& inv_std) = 0;
  // dx (overwritten), and dgamma and dbeta summed over the batch (overwritten unless accumulate).
  virtual void instance_norm_backward(const NormParams& p, const Buffer& dy, const Buffer& x,
                                      const Buffer* gamma, const Buffer& mean, const Buffer& inv_std,
                                      Buffer& dx, Buffer& dgamma, Buffer& dbeta, bool accumulate) = 0;

  // One optimizer update of values, in place, from gradient (same shape), with the rules of
  // ops/optimizer.h. The optimizer's vectors are updated too; momentum and maximum_velocity are null when
  // the options use none (SGD without momentum, Adam without AMSGrad).
  virtual void sgd_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                          Buffer* momentum) = 0;
  virtual void rmsprop_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                              Buffer& sum_of_squares) = 0;
  virtual void adam_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values, Buffer& momentum,
                           Buffer& velocity, Buffer* maximum_velocity) = 0;
};

// The backend of each device kind, defined by that backend's own sources (cpu/, metal/).
Backend& cpu_backend();
Backend& metal_backend();

Backend& backend_for(DeviceKind kind);

// The device used when none is given: GRADSTATE_DEFAULT_DEVICE ('cpu' or 'metal') when set, else Metal where
// it is available, else the CPU. A bad or unavailable choice is a ValueError naming the variable.
DeviceKind default_device_kind();

// "device: expected an available device, got metal (unavailable: <reason>)".
std::string unavailable_message(const Backend& backend);

// The backend for a device the caller asked for; ValueError naming `device` when it cannot run here.
Backend& available_backend(DeviceKind kind);

}  // namespace gradstate

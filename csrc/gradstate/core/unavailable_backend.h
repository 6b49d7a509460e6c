// A backend that is not built into this binary: it reports why and refuses every kernel.
#pragma once

#include <string>
#include <utility>

#include "gradstate/core/backend.h"

namespace gradstate {

class UnavailableBackend final : public Backend {
 public:
  UnavailableBackend(DeviceKind kind, std::string reason) : kind_(kind), reason_(std::move(reason)) {}

  DeviceKind kind() const override { return kind_; }
  std::string device_name() const override { return device_kind_name(kind_); }
  bool available() const override { return false; }
  std::string unavailable_reason() const override { return reason_; }

  void convolution_forward(const ConvParams&, const Buffer&, const Buffer&, const Buffer*, Buffer&) override;
  void convolution_data_gradient(const ConvParams&, const Buffer&, const Buffer&, Buffer&) override;
  void convolution_weights_gradient(const ConvParams&, const Buffer&, const Buffer&, Buffer&, Buffer&,
                                    bool) override;
  void instance_norm_forward(const NormParams&, const Buffer&, const Buffer*, const Buffer*, Buffer&, Buffer&,
                             Buffer&) override;
  void instance_norm_backward(const NormParams&, const Buffer&, const Buffer&, const Buffer*, const Buffer&,
                              const Buffer&, Buffer&, Buffer&, Buffer&, bool) override;
  void sgd_update(const OptimizerParams&, const Buffer&, Buffer&, Buffer*) override;
  void rmsprop_update(const OptimizerParams&, const Buffer&, Buffer&, Buffer&) override;
  void adam_update(const OptimizerParams&, const Buffer&, Buffer&, Buffer&, Buffer&, Buffer*) override;

 private:
  [[noreturn]] void refuse() const;

  DeviceKind kind_;
  std::string reason_;
};

}  // namespace gradstate

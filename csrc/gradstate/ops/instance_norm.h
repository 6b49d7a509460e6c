// Instance normalization, its gradient kernel and its gradient state (MPSCNNInstanceNormalization,
// MPSCNNInstanceNormalizationGradient, MPSCNNInstanceNormalizationGradientState).
#pragma once

#include <memory>
#include <utility>

#include "gradstate/core/backend.h"
#include "gradstate/core/buffer.h"
#include "gradstate/ops/gradient_state.h"

namespace gradstate {

class InstanceNormalizationGradientState;
class NormalizationGammaAndBetaState;

class InstanceNormalization : public std::enable_shared_from_this<InstanceNormalization> {
 public:
  // gamma and beta, (num_channels,) or null, are copied. The layer always holds both, ones and zeros for
  // those not given, so an optimizer can train them; the output is the same as without them.
  InstanceNormalization(std::int64_t num_channels, const Buffer* gamma, const Buffer* beta, double epsilon,
                        DeviceKind device);

  // y in the layout of x, and a new state holding the per-(image, channel) mean and 1/std.
  std::pair<std::shared_ptr<Buffer>, std::shared_ptr<InstanceNormalizationGradientState>> forward(
      const Buffer& x, Layout layout, bool temporary_state);

  std::int64_t num_channels() const { return num_channels_; }
  // The parameters the next forward pass reads. The buffers are the layer's own: whoever writes into them
  // (an optimizer, a numpy view of them) changes the layer from its next forward pass on.
  const std::shared_ptr<Buffer>& gamma() const { return gamma_; }
  const std::shared_ptr<Buffer>& beta() const { return beta_; }

  // A state holding copies of the current gamma and beta.
  std::shared_ptr<NormalizationGammaAndBetaState> export_gamma_and_beta() const;
  // Copies the state's gamma and beta into the layer's buffers (reloadGammaAndBetaWithCommandBuffer:
  // gammaAndBetaState:); ValueError naming state unless they have num_channels values.
  void reload_gamma_and_beta(const NormalizationGammaAndBetaState& state);
  float epsilon() const { return epsilon_; }
  DeviceKind device() const { return device_; }

 private:
  std::int64_t num_channels_;
  std::shared_ptr<Buffer> gamma_, beta_;
  float epsilon_;
  DeviceKind device_;
};

// Gamma and beta of a normalization layer (MPSCNNNormalizationGammaAndBetaState).
class NormalizationGammaAndBetaState {
 public:
  // gamma and beta, (C,) each, held (not copied); ValueError naming gamma or beta for other shapes.
  NormalizationGammaAndBetaState(std::shared_ptr<Buffer> gamma, std::shared_ptr<Buffer> beta);

  const std::shared_ptr<Buffer>& gamma() const { return gamma_; }
  const std::shared_ptr<Buffer>& beta() const { return beta_; }

 private:
  std::shared_ptr<Buffer> gamma_, beta_;
};

class InstanceNormalizationGradientState : public GradientState {
 public:
  InstanceNormalizationGradientState(std::shared_ptr<InstanceNormalization> layer, const NormParams& params,
                                     std::shared_ptr<Buffer> gamma, std::shared_ptr<Buffer> beta,
                                     bool temporary);

  const std::shared_ptr<InstanceNormalization>& instance_normalization() const { return layer_; }
  const NormParams& params() const { return params_; }
  // Copies of the gamma and beta the forward pass used.
  const std::shared_ptr<Buffer>& gamma() const { return gamma_; }
  const std::shared_ptr<Buffer>& beta() const { return beta_; }
  const std::shared_ptr<Buffer>& mean() const { return mean_; }
  const std::shared_ptr<Buffer>& inv_std() const { return inv_std_; }
  const std::shared_ptr<Buffer>& gradient_for_gamma() const { return gradient_for_gamma_; }
  const std::shared_ptr<Buffer>& gradient_for_beta() const { return gradient_for_beta_; }

 private:
  std::shared_ptr<InstanceNormalization> layer_;
  NormParams params_;
  std::shared_ptr<Buffer> gamma_, beta_, mean_, inv_std_, gradient_for_gamma_, gradient_for_beta_;
};

class InstanceNormalizationGradient {
 public:
  explicit InstanceNormalizationGradient(std::shared_ptr<InstanceNormalization> layer)
      : layer_(std::move(layer)) {}

  // dx; fills the state's gamma and beta gradients (adding to them when accumulate). `layout`, when not
  // null, must be the state's.
  std::shared_ptr<Buffer> backward(const Buffer& dy, const Buffer& x,
                                   InstanceNormalizationGradientState& state, bool accumulate,
                                   const Layout* layout);

  const std::shared_ptr<InstanceNormalization>& instance_normalization() const { return layer_; }

 private:
  std::shared_ptr<InstanceNormalization> layer_;
};

}  // namespace gradstate

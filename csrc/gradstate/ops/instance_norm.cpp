#include "gradstate/ops/instance_norm.h"

#include <cmath>
#include <limits>

#include "gradstate/core/errors.h"
#include "gradstate/core/layout.h"
#include "gradstate/ops/checks.h"

namespace gradstate {

InstanceNormalization::InstanceNormalization(std::int64_t num_channels, const Buffer* gamma,
                                             const Buffer* beta, double epsilon, DeviceKind device)
    : num_channels_(num_channels), epsilon_(static_cast<float>(epsilon)), device_(device) {
  if (num_channels < 1 || num_channels > std::numeric_limits<std::int32_t>::max()) {
    throw ValueError(concat("num_channels: expected a count from 1 to 2**31 - 1, got ", num_channels));
  }
  // NaN fails every comparison, so test for the valid range rather than against it.
  if (!(epsilon >= 0.0 && epsilon <= std::numeric_limits<float>::max())) {
    throw ValueError(concat("epsilon: expected a finite value of at least 0, got ", epsilon));
  }
  if (gamma != nullptr) check_shape("gamma", gamma->shape(), {num_channels}, "one value per channel");
  if (beta != nullptr) check_shape("beta", beta->shape(), {num_channels}, "one value per channel");
  available_backend(device);
  gamma_ = gamma != nullptr ? copy_of(*gamma) : filled({num_channels}, 1.0f, device);
  beta_ = beta != nullptr ? copy_of(*beta) : filled({num_channels}, 0.0f, device);
}

std::shared_ptr<NormalizationGammaAndBetaState> InstanceNormalization::export_gamma_and_beta() const {
  return std::make_shared<NormalizationGammaAndBetaState>(copy_of(*gamma_), copy_of(*beta_));
}

void InstanceNormalization::reload_gamma_and_beta(const NormalizationGammaAndBetaState& state) {
  if (state.gamma()->shape() != gamma_->shape()) {
    throw ValueError(concat("state: expected gamma and beta of shape ", shape_string(gamma_->shape()),
                            " (num_channels), got ", shape_string(state.gamma()->shape())));
  }
  copy_into(*gamma_, *state.gamma());
  copy_into(*beta_, *state.beta());
}

NormalizationGammaAndBetaState::NormalizationGammaAndBetaState(std::shared_ptr<Buffer> gamma,
                                                               std::shared_ptr<Buffer> beta)
    : gamma_(std::move(gamma)), beta_(std::move(beta)) {
  const Shape& shape = gamma_->shape();
  if (shape.size() != 1 || shape[0] < 1) {
    throw ValueError(concat("gamma: expected shape (C,) with C >= 1, got ", shape_string(shape)));
  }
  check_shape("beta", beta_->shape(), shape, "the shape of gamma");
}

std::pair<std::shared_ptr<Buffer>, std::shared_ptr<InstanceNormalizationGradientState>>
InstanceNormalization::forward(const Buffer& x, Layout layout, bool temporary_state) {
  const ActivationDims dims = activation_dims("x", x.shape(), layout);
  if (dims.c != num_channels_) {
    throw ValueError(concat("x: expected ", num_channels_, " channels (num_channels), got ", dims.c,
                            " (shape ", shape_string(x.shape()), ", layout '", layout_name(layout), "')"));
  }
  const NormParams p{static_cast<std::int32_t>(dims.n),
                     static_cast<std::int32_t>(dims.c),
                     static_cast<std::int32_t>(dims.h),
                     static_cast<std::int32_t>(dims.w),
                     layout,
                     epsilon_};
  // The state keeps the gamma and beta this pass used, so a later change of the layer's values does not
  // change the gradient of this pass.
  auto state = std::make_shared<InstanceNormalizationGradientState>(shared_from_this(), p, copy_of(*gamma_),
                                                                    copy_of(*beta_), temporary_state);
  auto y = Buffer::allocate(DType::float32, x.shape(), device_, Buffer::Fill::none);
  backend_for(device_).instance_norm_forward(p, x, state->gamma().get(), state->beta().get(), *y,
                                             *state->mean(), *state->inv_std());
  return {y, state};
}

InstanceNormalizationGradientState::InstanceNormalizationGradientState(
    std::shared_ptr<InstanceNormalization> layer, const NormParams& params, std::shared_ptr<Buffer> gamma,
    std::shared_ptr<Buffer> beta, bool temporary)
    : GradientState(temporary, params.layout),
      layer_(std::move(layer)),
      params_(params),
      gamma_(std::move(gamma)),
      beta_(std::move(beta)),
      mean_(Buffer::allocate(DType::float32, {params.batch, params.channels}, layer_->device())),
      inv_std_(Buffer::allocate(DType::float32, {params.batch, params.channels}, layer_->device())),
      gradient_for_gamma_(Buffer::allocate(DType::float32, {params.channels}, layer_->device())),
      gradient_for_beta_(Buffer::allocate(DType::float32, {params.channels}, layer_->device())) {}

std::shared_ptr<Buffer> InstanceNormalizationGradient::backward(const Buffer& dy, const Buffer& x,
                                                                InstanceNormalizationGradientState& state,
                                                                bool accumulate, const Layout* layout) {
  if (state.instance_normalization() != layer_) {
    throw ValueError(
        "state: expected a state made by this gradient's instance normalization, got one made by another "
        "InstanceNormalization");
  }
  state.check_layout(layout);
  const NormParams& p = state.params();
  const Shape shape = activation_shape(p.layout, {p.batch, p.channels, p.height, p.width});
  check_shape("x", x.shape(), shape, "the input of the forward pass that made state");
  check_shape("dy", dy.shape(), shape, "the output of the forward pass that made state");
  state.consume_read();

  auto dx = Buffer::allocate(DType::float32, shape, layer_->device(), Buffer::Fill::none);
  backend_for(layer_->device())
      .instance_norm_backward(p, dy, x, state.gamma().get(), *state.mean(), *state.inv_std(), *dx,
                              *state.gradient_for_gamma(), *state.gradient_for_beta(), accumulate);
  return dx;
}

}  // namespace gradstate

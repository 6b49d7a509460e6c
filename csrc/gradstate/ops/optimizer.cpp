#include "gradstate/ops/optimizer.h"

#include <cmath>
#include <limits>

#include "gradstate/core/errors.h"

namespace gradstate {
namespace {

constexpr double float_max = std::numeric_limits<float>::max();

// ValueError "<argument>: expected <what>, got <value>" unless low <= value <= high (NaN never is).
void check_range(const char* argument, double value, double low, double high, const char* what) {
  if (!(value >= low && value <= high))
    throw ValueError(concat(argument, ": expected ", what, ", got ", value));
}

void check_non_negative(const char* argument, double value) {
  check_range(argument, value, 0.0, float_max, "a finite value of at least 0");
}

// A zeroed buffer shaped like each parameter.
std::vector<std::shared_ptr<Buffer>> zeros_like(const std::vector<const Buffer*>& values) {
  std::vector<std::shared_ptr<Buffer>> buffers;
  for (const Buffer* v : values) buffers.push_back(Buffer::allocate(DType::float32, v->shape(), v->device()));
  return buffers;
}

}  // namespace

void OptimizerState::set_time_step(std::int64_t time_step) {
  if (time_step < 0 || time_step > max_time_step) {
    throw ValueError(concat("time_step: expected a count from 0 to 2**62, got ", time_step));
  }
  time_step_ = time_step;
}

Optimizer::Optimizer(const OptimizerDescriptor& descriptor) : descriptor_(descriptor) {
  check_non_negative("learning_rate", descriptor.learning_rate);
  check_range("gradient_rescale", descriptor.gradient_rescale, -float_max, float_max, "a finite value");
  if (descriptor.apply_gradient_clipping) {
    const double low = descriptor.gradient_clip_min, high = descriptor.gradient_clip_max;
    // Infinite bounds are allowed: (-inf, 1) clips from above only.
    if (std::isnan(low) || std::isnan(high) || low > high) {
      throw ValueError(
          concat("gradient_clip: expected (min, max) with min <= max, got (", low, ", ", high, ")"));
    }
  }
  check_non_negative("regularization_scale", descriptor.regularization_scale);
}

void Optimizer::set_learning_rate(double learning_rate) {
  check_non_negative("learning_rate", learning_rate);
  std::lock_guard<std::mutex> lock(mutex_);
  descriptor_.learning_rate = learning_rate;
}

std::shared_ptr<OptimizerState> Optimizer::state_locked(const std::shared_ptr<const void>& layer,
                                                        const std::vector<const Buffer*>& values) {
  // Forget the layers that are gone, so that a new layer at the same address starts afresh.
  for (auto it = states_.begin(); it != states_.end();)
    it = it->second.layer.expired() ? states_.erase(it) : ++it;
  Entry& entry = states_[layer.get()];
  if (!entry.state) {
    entry.layer = layer;
    entry.state = std::make_shared<OptimizerState>();
    const Vectors v = vectors();
    if (v.momentum) entry.state->momentum_ = zeros_like(values);
    if (v.velocity) entry.state->velocity_ = zeros_like(values);
    if (v.maximum_velocity) entry.state->maximum_velocity_ = zeros_like(values);
    if (v.sum_of_squares) entry.state->sum_of_squares_ = zeros_like(values);
  }
  return entry.state;
}

std::shared_ptr<OptimizerState> Optimizer::state(const std::shared_ptr<Convolution>& layer) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<const Buffer*> values{layer->weights_buffer().get()};
  if (layer->bias()) values.push_back(layer->bias());
  return state_locked(layer, values);
}

std::shared_ptr<OptimizerState> Optimizer::state(const std::shared_ptr<InstanceNormalization>& layer) {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_locked(layer, {layer->gamma().get(), layer->beta().get()});
}

void Optimizer::run(const std::shared_ptr<const void>& layer, DeviceKind device,
                    const std::vector<Buffer*>& values, const std::vector<const Buffer*>& gradients,
                    GradientState& read) {
  Backend& backend = backend_for(device);
  std::lock_guard<std::mutex> lock(mutex_);
  const std::shared_ptr<OptimizerState> state =
      state_locked(layer, std::vector<const Buffer*>(values.begin(), values.end()));
  OptimizerParams p{};
  p.learning_rate = static_cast<float>(descriptor_.learning_rate);
  p.gradient_rescale = static_cast<float>(descriptor_.gradient_rescale);
  p.apply_gradient_clipping = descriptor_.apply_gradient_clipping ? 1 : 0;
  p.gradient_clip_min = static_cast<float>(descriptor_.gradient_clip_min);
  p.gradient_clip_max = static_cast<float>(descriptor_.gradient_clip_max);
  p.regularization = descriptor_.regularization;
  p.regularization_scale = static_cast<float>(descriptor_.regularization_scale);
  if (state->time_step_ >= OptimizerState::max_time_step) {
    throw ValueError(
        concat("time_step: expected a count below 2**62 before a step, got ", state->time_step_));
  }
  read.consume_read();
  fill(p, ++state->time_step_);
  for (std::size_t i = 0; i < values.size(); ++i) update(backend, p, *gradients[i], *values[i], *state, i);
}

void Optimizer::step(const std::shared_ptr<Convolution>& layer, ConvolutionGradientState& state) {
  if (state.convolution() != layer) {
    throw ValueError(
        "state: expected a state made by this layer's forward pass, got one made by another Convolution");
  }
  std::vector<Buffer*> values{layer->weights_buffer().get()};
  std::vector<const Buffer*> gradients{state.gradient_for_weights().get()};
  if (layer->bias()) {
    values.push_back(layer->bias_buffer().get());
    gradients.push_back(state.gradient_for_biases().get());
  }
  run(layer, layer->device(), values, gradients, state);
}

void Optimizer::step(const std::shared_ptr<InstanceNormalization>& layer,
                     InstanceNormalizationGradientState& state) {
  if (state.instance_normalization() != layer) {
    throw ValueError(
        "state: expected a state made by this layer's forward pass, got one made by another "
        "InstanceNormalization");
  }
  run(layer, layer->device(), {layer->gamma().get(), layer->beta().get()},
      {state.gradient_for_gamma().get(), state.gradient_for_beta().get()}, state);
}

// ---- SGD
// ----------------------------------------------------------------------------------------------------

SGD::SGD(const OptimizerDescriptor& descriptor, double momentum_scale, bool use_nesterov_momentum)
    : Optimizer(descriptor), momentum_scale_(momentum_scale), use_nesterov_momentum_(use_nesterov_momentum) {
  check_non_negative("momentum_scale", momentum_scale);
}

// Without momentum both rules reduce to w -= learning_rate * g, MPS's rule for a nil momentum vector.
Optimizer::Vectors SGD::vectors() const {
  Vectors v;
  v.momentum = momentum_scale_ != 0.0;
  return v;
}

void SGD::fill(OptimizerParams& p, std::int64_t) const {
  p.momentum_scale = static_cast<float>(momentum_scale_);
  p.use_nesterov_momentum = use_nesterov_momentum_ ? 1 : 0;
}

void SGD::update(Backend& backend, const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                 OptimizerState& state, std::size_t index) const {
  backend.sgd_update(p, gradient, values, state.momentum().empty() ? nullptr : state.momentum()[index].get());
}

// ---- RMSProp
// ------------------------------------------------------------------------------------------------

RMSProp::RMSProp(const OptimizerDescriptor& descriptor, double decay, double epsilon)
    : Optimizer(descriptor), decay_(decay), epsilon_(epsilon) {
  check_range("decay", decay, 0.0, 1.0, "a value from 0 to 1");
  check_non_negative("epsilon", epsilon);
}

Optimizer::Vectors RMSProp::vectors() const {
  Vectors v;
  v.sum_of_squares = true;
  return v;
}

void RMSProp::fill(OptimizerParams& p, std::int64_t) const {
  p.decay = static_cast<float>(decay_);
  p.one_minus_decay = static_cast<float>(1.0 - decay_);
  p.epsilon = static_cast<float>(epsilon_);
}

void RMSProp::update(Backend& backend, const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                     OptimizerState& state, std::size_t index) const {
  backend.rmsprop_update(p, gradient, values, *state.sum_of_squares()[index]);
}

// ---- Adam
// ---------------------------------------------------------------------------------------------------

Adam::Adam(const OptimizerDescriptor& descriptor, double beta1, double beta2, double epsilon, bool amsgrad)
    : Optimizer(descriptor), beta1_(beta1), beta2_(beta2), epsilon_(epsilon), amsgrad_(amsgrad) {
  // beta = 1 would make the first step divide by 1 - beta^1 = 0.
  if (!(beta1 >= 0.0 && beta1 < 1.0))
    throw ValueError(concat("beta1: expected a value in [0, 1), got ", beta1));
  if (!(beta2 >= 0.0 && beta2 < 1.0))
    throw ValueError(concat("beta2: expected a value in [0, 1), got ", beta2));
  check_non_negative("epsilon", epsilon);
}

Optimizer::Vectors Adam::vectors() const {
  Vectors v;
  v.momentum = v.velocity = true;
  v.maximum_velocity = amsgrad_;
  return v;
}

void Adam::fill(OptimizerParams& p, std::int64_t time_step) const {
  const double t = static_cast<double>(time_step);
  p.beta1 = static_cast<float>(beta1_);
  p.one_minus_beta1 = static_cast<float>(1.0 - beta1_);
  p.beta2 = static_cast<float>(beta2_);
  p.one_minus_beta2 = static_cast<float>(1.0 - beta2_);
  p.epsilon = static_cast<float>(epsilon_);
  p.step_size = static_cast<float>(descriptor().learning_rate * std::sqrt(1.0 - std::pow(beta2_, t)) /
                                   (1.0 - std::pow(beta1_, t)));
}

void Adam::update(Backend& backend, const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                  OptimizerState& state, std::size_t index) const {
  backend.adam_update(p, gradient, values, *state.momentum()[index], *state.velocity()[index],
                      amsgrad_ ? state.maximum_velocity()[index].get() : nullptr);
}

}  // namespace gradstate

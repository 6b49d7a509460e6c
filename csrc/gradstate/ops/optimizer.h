// Optimizers (MPSNNOptimizerStochasticGradientDescent, MPSNNOptimizerRMSProp, MPSNNOptimizerAdam): they
// update a Convolution's weights and bias from a ConvolutionGradientState, and an InstanceNormalization's
// gamma and beta from its gradient state, in place, with MPS's rules:
//
//   g = clip(g, min, max) when clipping; g = g * gradient_rescale; g = g + regularization gradient of w
//       (L1: regularization_scale * sign(w), L2: regularization_scale * w)
//   SGD      m = momentum_scale * m + learning_rate * g; w -= m  (no momentum: w -= learning_rate * g)
//   Nesterov m = momentum_scale * m + g; w -= learning_rate * (g + momentum_scale * m)
//   RMSProp  s = decay * s + (1 - decay) * g^2; w -= learning_rate * g / (sqrt(s) + epsilon)
//   Adam     t = t + 1; step = learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t);
//            m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g^2;
//            w -= step * m / (sqrt(v) + epsilon)   (AMSGrad: v_max = max(v_max, v) in place of v)
//
// The vectors m, s, v, v_max and Adam's time step t belong to one parameter set — one layer's weights and
// biases, or gamma and beta. MPS leaves them to the caller; here each optimizer keeps one OptimizerState
// per layer it has updated, made zeroed (t = 0) on first use and found again by the layer. The optimizer
// does not keep the layer alive: the state of a layer that is gone is dropped.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "gradstate/core/backend.h"
#include "gradstate/core/buffer.h"
#include "gradstate/ops/convolution.h"
#include "gradstate/ops/instance_norm.h"

namespace gradstate {

// What every optimizer shares (MPSNNOptimizerDescriptor). The defaults are MPS's.
struct OptimizerDescriptor {
  double learning_rate = 1e-3;
  double gradient_rescale = 1.0;
  bool apply_gradient_clipping = false;
  double gradient_clip_min = 0.0, gradient_clip_max = 0.0;
  Regularization regularization = Regularization::none;
  double regularization_scale = 0.0;
};

// The optimizer's vectors for one parameter set, one buffer per parameter (index 0 the weights or gamma,
// index 1 the biases or beta, as in MPS's vector arrays), shaped like it; empty when the optimizer's options
// use no such vector. The buffers are updated in place by each step.
class OptimizerState {
 public:
  static constexpr std::int64_t max_time_step = std::int64_t{1} << 62;

  std::int64_t time_step() const { return time_step_; }
  // ValueError naming time_step for a negative count.
  void set_time_step(std::int64_t time_step);

  const std::vector<std::shared_ptr<Buffer>>& momentum() const { return momentum_; }
  const std::vector<std::shared_ptr<Buffer>>& velocity() const { return velocity_; }
  const std::vector<std::shared_ptr<Buffer>>& maximum_velocity() const { return maximum_velocity_; }
  const std::vector<std::shared_ptr<Buffer>>& sum_of_squares() const { return sum_of_squares_; }

 private:
  friend class Optimizer;

  std::int64_t time_step_ = 0;
  std::vector<std::shared_ptr<Buffer>> momentum_, velocity_, maximum_velocity_, sum_of_squares_;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Updates the layer's weights and bias (when it has one) from state's gradients. ValueError naming state
  // when another layer made it, or when it is temporary and has no reads left (a step reads the state once,
  // as the gradient call does).
  void step(const std::shared_ptr<Convolution>& layer, ConvolutionGradientState& state);
  // Updates the layer's gamma and beta from state's gradients; the same errors.
  void step(const std::shared_ptr<InstanceNormalization>& layer, InstanceNormalizationGradientState& state);

  // The state this optimizer keeps for the layer's parameters, made on first use.
  std::shared_ptr<OptimizerState> state(const std::shared_ptr<Convolution>& layer);
  std::shared_ptr<OptimizerState> state(const std::shared_ptr<InstanceNormalization>& layer);

  const OptimizerDescriptor& descriptor() const { return descriptor_; }
  // ValueError naming learning_rate unless it is finite and at least 0 (MPS's setLearningRate:).
  void set_learning_rate(double learning_rate);

 protected:
  // ValueError naming the offending field unless the descriptor holds finite values in range.
  explicit Optimizer(const OptimizerDescriptor& descriptor);

  // Whether states hold each kind of vector.
  struct Vectors {
    bool momentum = false, velocity = false, maximum_velocity = false, sum_of_squares = false;
  };
  virtual Vectors vectors() const = 0;
  // The kernel parameters of one step with the state's time step (already advanced), from the common ones.
  virtual void fill(OptimizerParams& p, std::int64_t time_step) const = 0;
  // One update of the parameter `index` of a parameter set.
  virtual void update(Backend& backend, const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                      OptimizerState& state, std::size_t index) const = 0;

 private:
  struct Entry {
    std::weak_ptr<const void> layer;
    std::shared_ptr<OptimizerState> state;
  };

  // The state of the layer whose parameters are `values`, made on first use; the caller holds mutex_.
  std::shared_ptr<OptimizerState> state_locked(const std::shared_ptr<const void>& layer,
                                               const std::vector<const Buffer*>& values);
  // One step over the parameters `values` of the layer with their gradients, which `read` holds: it reads
  // `read` (see GradientState::consume_read) once its other checks have passed, so that a step that fails
  // leaves a temporary state's read_count as it was.
  void run(const std::shared_ptr<const void>& layer, DeviceKind device, const std::vector<Buffer*>& values,
           const std::vector<const Buffer*>& gradients, GradientState& read);

  OptimizerDescriptor descriptor_;
  std::mutex mutex_;  // guards states_, the states' contents and the layers' parameters during a step
  std::map<const void*, Entry> states_;
};

// MPSNNOptimizerStochasticGradientDescent.
class SGD final : public Optimizer {
 public:
  // ValueError naming momentum_scale unless it is finite and at least 0.
  SGD(const OptimizerDescriptor& descriptor, double momentum_scale, bool use_nesterov_momentum);

  double momentum_scale() const { return momentum_scale_; }
  bool use_nesterov_momentum() const { return use_nesterov_momentum_; }

 private:
  Vectors vectors() const override;
  void fill(OptimizerParams& p, std::int64_t time_step) const override;
  void update(Backend& backend, const OptimizerParams& p, const Buffer& gradient, Buffer& values,
              OptimizerState& state, std::size_t index) const override;

  double momentum_scale_;
  bool use_nesterov_momentum_;
};

// MPSNNOptimizerRMSProp.
class RMSProp final : public Optimizer {
 public:
  // ValueError naming decay unless it is in [0, 1], epsilon unless it is finite and at least 0.
  RMSProp(const OptimizerDescriptor& descriptor, double decay, double epsilon);

  double decay() const { return decay_; }
  double epsilon() const { return epsilon_; }

 private:
  Vectors vectors() const override;
  void fill(OptimizerParams& p, std::int64_t time_step) const override;
  void update(Backend& backend, const OptimizerParams& p, const Buffer& gradient, Buffer& values,
              OptimizerState& state, std::size_t index) const override;

  double decay_, epsilon_;
};

// MPSNNOptimizerAdam; amsgrad keeps the maximum velocity (MPS's maximumVelocityVectors).
class Adam final : public Optimizer {
 public:
  // ValueError naming beta1 or beta2 unless it is in [0, 1), epsilon unless it is finite and at least 0.
  Adam(const OptimizerDescriptor& descriptor, double beta1, double beta2, double epsilon, bool amsgrad);

  double beta1() const { return beta1_; }
  double beta2() const { return beta2_; }
  double epsilon() const { return epsilon_; }
  bool amsgrad() const { return amsgrad_; }

 private:
  Vectors vectors() const override;
  void fill(OptimizerParams& p, std::int64_t time_step) const override;
  void update(Backend& backend, const OptimizerParams& p, const Buffer& gradient, Buffer& values,
              OptimizerState& state, std::size_t index) const override;

  double beta1_, beta2_, epsilon_;
  bool amsgrad_;
};

}  // namespace gradstate

// Convolution, its gradient kernel and its gradient state (MPSCNNConvolution, MPSCNNConvolutionGradient,
// MPSCNNConvolutionGradientState): argument checks, output allocation, and the call into the backend.
#pragma once

#include <memory>
#include <utility>

#include "gradstate/core/backend.h"
#include "gradstate/core/buffer.h"
#include "gradstate/ops/gradient_state.h"
#include "gradstate/ops/padding.h"

namespace gradstate {

class ConvolutionGradientState;
class ConvolutionWeightsAndBiasesState;

// Which gradients a ConvolutionGradient computes (MPSCNNConvolutionGradientOption).
enum class GradientOption { data = 1, weights_and_bias = 2, all = 3 };

// Layout of the weight-gradient buffer (MPSCNNConvolutionWeightsLayout); OHWI is the only one.
enum class WeightsLayout { OHWI = 0 };

class Convolution : public std::enable_shared_from_this<Convolution> {
 public:
  // weights (O, KH, KW, I / groups) and bias (O,) or null are copied.
  Convolution(const Buffer& weights, const Buffer* bias, Pair stride, Pair dilation, std::int64_t groups,
              Padding padding, DeviceKind device);

  // y in the layout of x, and a new state for the gradient pass.
  std::pair<std::shared_ptr<Buffer>, std::shared_ptr<ConvolutionGradientState>> forward(const Buffer& x,
                                                                                        Layout layout,
                                                                                        bool temporary_state);

  // The parameters the next pass reads. The buffers are the layer's own: whoever writes into them (an
  // optimizer, a numpy view of them) changes the layer from its next forward pass on.
  const Buffer& weights() const { return *weights_; }
  const Buffer* bias() const { return bias_.get(); }
  const std::shared_ptr<Buffer>& weights_buffer() const { return weights_; }
  const std::shared_ptr<Buffer>& bias_buffer() const { return bias_; }

  // A state holding copies of the current weights and biases (exportWeightsAndBiasesWithCommandBuffer:).
  std::shared_ptr<ConvolutionWeightsAndBiasesState> export_weights_and_biases() const;
  // Copies the state's weights and biases into the layer's buffers (reloadWeightsAndBiasesWithCommandBuffer:
  // state:); ValueError naming state unless they have the layer's shapes, biases included exactly when the
  // layer has a bias.
  void reload_weights_and_biases(const ConvolutionWeightsAndBiasesState& state);

  std::int64_t output_channels() const { return weights_->shape()[0]; }
  std::int64_t kernel_height() const { return weights_->shape()[1]; }
  std::int64_t kernel_width() const { return weights_->shape()[2]; }
  std::int64_t input_channels() const { return weights_->shape()[3] * groups_; }
  std::int64_t groups() const { return groups_; }
  Pair stride() const { return stride_; }
  Pair dilation() const { return dilation_; }
  const Padding& padding() const { return padding_; }
  DeviceKind device() const { return device_; }

 private:
  // The geometry of a forward pass over x; ValueError naming x when x does not fit this convolution.
  ConvParams params_for(const Shape& x_shape, Layout layout) const;

  std::shared_ptr<Buffer> weights_, bias_;
  Pair stride_, dilation_;
  std::int64_t groups_;
  Padding padding_;
  DeviceKind device_;
};

// Weights (OHWI) and biases of a convolution (MPSCNNConvolutionWeightsAndBiasesState).
class ConvolutionWeightsAndBiasesState {
 public:
  // weights (O, KH, KW, I / groups) and biases (O,) or null, held (not copied); ValueError naming weights or
  // biases for other shapes.
  ConvolutionWeightsAndBiasesState(std::shared_ptr<Buffer> weights, std::shared_ptr<Buffer> biases);

  const std::shared_ptr<Buffer>& weights() const { return weights_; }
  const std::shared_ptr<Buffer>& biases() const { return biases_; }

 private:
  std::shared_ptr<Buffer> weights_, biases_;
};

class ConvolutionGradientState : public GradientState {
 public:
  ConvolutionGradientState(std::shared_ptr<Convolution> convolution, const ConvParams& params,
                           bool temporary);

  const std::shared_ptr<Convolution>& convolution() const { return convolution_; }
  const ConvParams& params() const { return params_; }
  const std::shared_ptr<Buffer>& gradient_for_weights() const { return gradient_for_weights_; }
  const std::shared_ptr<Buffer>& gradient_for_biases() const { return gradient_for_biases_; }

 private:
  std::shared_ptr<Convolution> convolution_;
  ConvParams params_;
  std::shared_ptr<Buffer> gradient_for_weights_, gradient_for_biases_;
};

class ConvolutionGradient {
 public:
  ConvolutionGradient(std::shared_ptr<Convolution> convolution, GradientOption option);

  // dx (null unless the option includes data); fills the state's gradients when the option includes
  // weights and bias, adding to them when accumulate. `layout`, when not null, must be the state's.
  std::shared_ptr<Buffer> backward(const Buffer& dy, const Buffer& x, ConvolutionGradientState& state,
                                   bool accumulate, const Layout* layout);

  const std::shared_ptr<Convolution>& convolution() const { return convolution_; }
  GradientOption option() const { return option_; }
  void set_option(GradientOption option) { option_ = option; }

 private:
  std::shared_ptr<Convolution> convolution_;
  GradientOption option_;
};

}  // namespace gradstate

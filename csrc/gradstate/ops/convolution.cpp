#include "gradstate/ops/convolution.h"

#include <limits>

#include "gradstate/core/errors.h"
#include "gradstate/core/layout.h"
#include "gradstate/ops/checks.h"

namespace gradstate {
namespace {

constexpr std::int64_t int32_limit = std::numeric_limits<std::int32_t>::max();

void check_positive_pair(const char* argument, Pair value) {
  if (value[0] < 1 || value[1] < 1 || value[0] > int32_limit || value[1] > int32_limit) {
    throw ValueError(
        concat(argument, ": expected values from 1 to 2**31 - 1, got (", value[0], ", ", value[1], ")"));
  }
}

// Output extent of one axis; ValueError naming x when the dilated kernel does not fit the padded input.
std::int64_t output_extent(const char* axis, std::int64_t input, std::int64_t before, std::int64_t after,
                           std::int64_t kernel, std::int64_t stride, std::int64_t dilation) {
  const std::int64_t padded = input + before + after;
  const std::int64_t span = (kernel - 1) * dilation + 1;
  // Kernels index within a padded row or column with 32-bit parameters (see params.h).
  if (padded > int32_limit || span > int32_limit) {
    throw ValueError(concat("x: expected a padded ", axis, " and a dilated kernel ", axis,
                            " below 2**31, got ", padded, " and ", span));
  }
  if (padded < span) {
    throw ValueError(concat("x: expected a padded ", axis, " of at least ", span, " (the dilated kernel ",
                            axis, "), got ", padded, " (", axis, " ", input, " + padding ", before, " + ",
                            after, ")"));
  }
  const std::int64_t output = (padded - span) / stride + 1;
  // Kernel parameters hold 32-bit extents (see params.h).
  if (output > int32_limit) {
    throw ValueError(concat("padding: expected an output ", axis, " below 2**31, got ", output));
  }
  return output;
}

// ValueError naming weights unless the shape is (O, KH, KW, I // groups) with no empty dimension.
void check_weights_shape(const Shape& shape) {
  if (shape.size() != 4) {
    throw ValueError(concat("weights: expected 4 dimensions (O, KH, KW, I // groups), got ", shape.size(),
                            " (shape ", shape_string(shape), ")"));
  }
  for (std::int64_t extent : shape) {
    if (extent < 1) {
      throw ValueError(
          concat("weights: expected every dimension to be at least 1, got shape ", shape_string(shape)));
    }
    // Kernel parameters hold 32-bit extents (see params.h).
    if (extent > int32_limit) {
      throw ValueError(
          concat("weights: expected every dimension to be below 2**31, got shape ", shape_string(shape)));
    }
  }
}

}  // namespace

Convolution::Convolution(const Buffer& weights, const Buffer* bias, Pair stride, Pair dilation,
                         std::int64_t groups, Padding padding, DeviceKind device)
    : stride_(stride), dilation_(dilation), groups_(groups), padding_(padding), device_(device) {
  const Shape& shape = weights.shape();
  check_weights_shape(shape);
  if (groups < 1 || shape[0] % groups != 0) {
    throw ValueError(concat("groups: expected a positive divisor of the ", shape[0],
                            " output channels (weights.shape[0]), got ", groups));
  }
  if (bias != nullptr) check_shape("bias", bias->shape(), {shape[0]}, "one value per output channel");
  check_positive_pair("stride", stride);
  check_positive_pair("dilation", dilation);
  available_backend(device);
  weights_ = copy_of(weights);
  if (bias != nullptr) bias_ = copy_of(*bias);
}

ConvParams Convolution::params_for(const Shape& x_shape, Layout layout) const {
  const ActivationDims dims = activation_dims("x", x_shape, layout);
  if (dims.c != input_channels()) {
    throw ValueError(concat("x: expected ", input_channels(), " channels (groups ", groups_, " x ",
                            weights_->shape()[3], " per group, from weights), got ", dims.c, " (shape ",
                            shape_string(x_shape), ", layout '", layout_name(layout), "')"));
  }
  const Pads pads = padding_.resolve({dims.h, dims.w}, {kernel_height(), kernel_width()}, stride_, dilation_);
  const std::int64_t out_h =
      output_extent("height", dims.h, pads.top, pads.bottom, kernel_height(), stride_[0], dilation_[0]);
  const std::int64_t out_w =
      output_extent("width", dims.w, pads.left, pads.right, kernel_width(), stride_[1], dilation_[1]);
  auto i32 = [](std::int64_t v) { return static_cast<std::int32_t>(v); };
  return ConvParams{i32(dims.n),
                    i32(dims.h),
                    i32(dims.w),
                    i32(dims.c),
                    i32(out_h),
                    i32(out_w),
                    i32(output_channels()),
                    i32(kernel_height()),
                    i32(kernel_width()),
                    i32(stride_[0]),
                    i32(stride_[1]),
                    i32(dilation_[0]),
                    i32(dilation_[1]),
                    i32(pads.top),
                    i32(pads.left),
                    i32(groups_),
                    layout};
}

std::pair<std::shared_ptr<Buffer>, std::shared_ptr<ConvolutionGradientState>> Convolution::forward(
    const Buffer& x, Layout layout, bool temporary_state) {
  const ConvParams p = params_for(x.shape(), layout);
  auto y = Buffer::allocate(DType::float32, activation_shape(layout, {p.batch, p.out_c, p.out_h, p.out_w}),
                            device_, Buffer::Fill::none);
  backend_for(device_).convolution_forward(p, x, *weights_, bias_.get(), *y);
  return {y, std::make_shared<ConvolutionGradientState>(shared_from_this(), p, temporary_state)};
}

std::shared_ptr<ConvolutionWeightsAndBiasesState> Convolution::export_weights_and_biases() const {
  return std::make_shared<ConvolutionWeightsAndBiasesState>(copy_of(*weights_),
                                                            bias_ ? copy_of(*bias_) : nullptr);
}

void Convolution::reload_weights_and_biases(const ConvolutionWeightsAndBiasesState& state) {
  if (state.weights()->shape() != weights_->shape()) {
    throw ValueError(concat("state: expected weights of shape ", shape_string(weights_->shape()),
                            " (this convolution's), got ", shape_string(state.weights()->shape())));
  }
  if (bias_ && !state.biases()) {
    throw ValueError(concat("state: expected biases of shape ", shape_string(bias_->shape()),
                            " (this convolution has a bias), got None"));
  }
  if (!bias_ && state.biases()) {
    throw ValueError(concat("state: expected no biases (this convolution has no bias), got biases of shape ",
                            shape_string(state.biases()->shape())));
  }
  copy_into(*weights_, *state.weights());
  if (bias_) copy_into(*bias_, *state.biases());
}

ConvolutionWeightsAndBiasesState::ConvolutionWeightsAndBiasesState(std::shared_ptr<Buffer> weights,
                                                                   std::shared_ptr<Buffer> biases)
    : weights_(std::move(weights)), biases_(std::move(biases)) {
  check_weights_shape(weights_->shape());
  if (biases_) {
    check_shape("biases", biases_->shape(), {weights_->shape()[0]}, "one value per output channel");
  }
}

ConvolutionGradientState::ConvolutionGradientState(std::shared_ptr<Convolution> convolution,
                                                   const ConvParams& params, bool temporary)
    : GradientState(temporary, params.layout),
      convolution_(std::move(convolution)),
      params_(params),
      gradient_for_weights_(
          Buffer::allocate(DType::float32, convolution_->weights().shape(), convolution_->device())),
      gradient_for_biases_(Buffer::allocate(DType::float32, {params.out_c}, convolution_->device())) {}

ConvolutionGradient::ConvolutionGradient(std::shared_ptr<Convolution> convolution, GradientOption option)
    : convolution_(std::move(convolution)), option_(option) {}

std::shared_ptr<Buffer> ConvolutionGradient::backward(const Buffer& dy, const Buffer& x,
                                                      ConvolutionGradientState& state, bool accumulate,
                                                      const Layout* layout) {
  if (state.convolution() != convolution_) {
    throw ValueError(
        "state: expected a state made by this gradient's convolution, got one made by another Convolution");
  }
  state.check_layout(layout);
  const ConvParams& p = state.params();
  check_shape("x", x.shape(), activation_shape(p.layout, {p.batch, p.in_c, p.in_h, p.in_w}),
              "the input of the forward pass that made state");
  check_shape("dy", dy.shape(), activation_shape(p.layout, {p.batch, p.out_c, p.out_h, p.out_w}),
              "the output of the forward pass that made state");
  state.consume_read();

  Backend& backend = backend_for(convolution_->device());
  const int option = static_cast<int>(option_);
  if (option & static_cast<int>(GradientOption::weights_and_bias)) {
    backend.convolution_weights_gradient(p, dy, x, *state.gradient_for_weights(),
                                         *state.gradient_for_biases(), accumulate);
  }
  if (!(option & static_cast<int>(GradientOption::data))) return nullptr;
  auto dx = Buffer::allocate(DType::float32, x.shape(), convolution_->device(), Buffer::Fill::none);
  backend.convolution_data_gradient(p, dy, convolution_->weights(), *dx);
  return dx;
}

}  // namespace gradstate

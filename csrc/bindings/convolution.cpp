#include "gradstate/ops/convolution.h"

#include <pybind11/native_enum.h>

#include "arguments.h"
#include "arrays.h"
#include "bindings.h"
#include "device.h"
#include "gradstate/ops/checks.h"
#include "guarded_class.h"
#include "layer_calls.h"

namespace gradstate::bindings {

namespace py = pybind11;

namespace {

std::shared_ptr<Convolution> make_convolution(py::handle weights, py::handle bias, py::handle stride,
                                              py::handle dilation, py::handle groups, py::handle padding,
                                              py::handle device) {
  const FloatArray w = as_float32("weights", weights);
  const std::optional<FloatArray> b = as_optional_float32("bias", bias);
  const Buffer w_buffer = borrow(w);
  const std::optional<Buffer> b_buffer = b ? std::optional<Buffer>(borrow(*b)) : std::nullopt;
  return std::make_shared<Convolution>(w_buffer, b_buffer ? &*b_buffer : nullptr, as_pair("stride", stride),
                                       as_pair("dilation", dilation), as_int("groups", groups),
                                       as_padding(padding), as_device(device));
}

std::shared_ptr<ConvolutionWeightsAndBiasesState> make_weights_state(py::handle weights, py::handle biases) {
  const FloatArray w = as_float32("weights", weights);
  const std::optional<FloatArray> b = as_optional_float32("biases", biases);
  return std::make_shared<ConvolutionWeightsAndBiasesState>(copy_of(borrow(w)),
                                                            b ? copy_of(borrow(*b)) : nullptr);
}

// A gradstate.GradientOption; TypeError naming option otherwise (plain ints are not options).
GradientOption as_option(py::handle value) {
  try {
    return value.cast<GradientOption>();
  } catch (const py::cast_error&) {
    throw TypeError(concat("option: expected a gradstate.GradientOption, got ", repr_of(value), " (",
                           type_name(value), ")"));
  }
}

py::tuple pair_tuple(Pair pair) { return py::make_tuple(pair[0], pair[1]); }

py::object padding_of(const Convolution& conv) {
  switch (conv.padding().kind()) {
    case Padding::Kind::valid:
      return py::str("valid");
    case Padding::Kind::same:
      return py::str("same");
    case Padding::Kind::full:
      return py::str("full");
    case Padding::Kind::explicit_sizes:
      break;
  }
  const Pads& p = conv.padding().explicit_pads();
  return py::make_tuple(p.top, p.bottom, p.left, p.right);
}

}  // namespace

void bind_convolution(py::module_& m) {
  py::native_enum<GradientOption>(m, "GradientOption", "enum.IntEnum",
                                  "Which gradients a ConvolutionGradient computes "
                                  "(MPSCNNConvolutionGradientOption).")
      .value("DATA", GradientOption::data, "Only dx.")
      .value("WEIGHTS_AND_BIAS", GradientOption::weights_and_bias,
             "Only the state's weight and bias gradients.")
      .value("ALL", GradientOption::all, "Both.")
      .finalize();
  py::native_enum<WeightsLayout>(m, "WeightsLayout", "enum.IntEnum",
                                 "Layout of weights and weight gradients (MPSCNNConvolutionWeightsLayout).")
      .value("OHWI", WeightsLayout::OHWI,
             "(output channels, kernel height, kernel width, input channels / groups)")
      .finalize();

  guarded_class<Convolution, std::shared_ptr<Convolution>>(
      m, "Convolution",
      "A 2-D convolution (MPSCNNConvolution). weights are OHWI: (O, KH, KW, I // groups); bias is (O,) or "
      "None.")
      .def(py::init(&make_convolution), py::arg("weights"), py::arg("bias") = py::none(),
           py::arg("stride") = 1, py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("padding") = 0,
           py::arg("device") = py::none())
      .def("forward", &layer_forward<Convolution>, py::arg("x"), py::arg("layout") = "NHWC", py::kw_only(),
           py::arg("temporary_state") = false,
           "Returns (y, state): y in the layout of x, and the state a ConvolutionGradient needs.")
      .def_property_readonly("kernel_height", &Convolution::kernel_height)
      .def_property_readonly("kernel_width", &Convolution::kernel_width)
      .def_property_readonly("input_feature_channels", &Convolution::input_channels)
      .def_property_readonly("output_feature_channels", &Convolution::output_channels)
      .def_property_readonly("groups", &Convolution::groups)
      .def_property_readonly(
          "stride", [](const Convolution& c) { return pair_tuple(c.stride()); }, "(vertical, horizontal)")
      .def_property_readonly(
          "dilation", [](const Convolution& c) { return pair_tuple(c.dilation()); }, "(vertical, horizontal)")
      .def_property_readonly("padding", &padding_of, "'valid', 'same', 'full' or (top, bottom, left, right)")
      .def_property_readonly("has_bias", [](const Convolution& c) { return c.bias() != nullptr; })
      .def_property_readonly(
          "weights", [](const Convolution& c) { return to_numpy(c.weights_buffer()); },
          "The weights (O, KH, KW, I // groups): a writable float32 view of the layer's own buffer (no "
          "copy). Writes through it, and optimizer steps, take effect from the next forward pass on.")
      .def_property_readonly(
          "bias",
          [](const Convolution& c) { return c.bias() ? py::object(to_numpy(c.bias_buffer())) : py::none(); },
          "The bias (O,) as a writable view like weights, or None for a convolution without bias.")
      .def("export_weights_and_biases", &Convolution::export_weights_and_biases,
           "A ConvolutionWeightsAndBiasesState holding copies of the current weights and bias.")
      .def(
          "reload_weights_and_biases",
          [](Convolution& c, py::handle state) {
            c.reload_weights_and_biases(
                as_state<ConvolutionWeightsAndBiasesState>(state, "ConvolutionWeightsAndBiasesState"));
          },
          py::arg("state"),
          "Copies the state's weights and biases into the layer (shapes must match; biases exactly when the "
          "layer has a bias).")
      .def_property_readonly("device", [](const Convolution& c) { return Device{c.device()}; });

  guarded_class<ConvolutionWeightsAndBiasesState, std::shared_ptr<ConvolutionWeightsAndBiasesState>>(
      m, "ConvolutionWeightsAndBiasesState",
      "The weights (OHWI) and biases of a convolution (MPSCNNConvolutionWeightsAndBiasesState), as "
      "Convolution.export_weights_and_biases() returns them and reload_weights_and_biases() reads them. The "
      "constructor copies its arguments.")
      .def(py::init(&make_weights_state), py::arg("weights"), py::arg("biases") = py::none())
      .def_property_readonly("weights", &ConvolutionWeightsAndBiasesState::weights,
                             "A float32 Buffer (O, KH, KW, I // groups).")
      .def_property_readonly("biases", &ConvolutionWeightsAndBiasesState::biases,
                             "A float32 Buffer (O,), or None.");

  guarded_class<ConvolutionGradientState, GradientState, std::shared_ptr<ConvolutionGradientState>>(
      m, "ConvolutionGradientState",
      "The state of one forward convolution pass; a ConvolutionGradient writes the weight and bias gradients "
      "into it (MPSCNNConvolutionGradientState).")
      .def_property_readonly("gradient_for_weights", &ConvolutionGradientState::gradient_for_weights,
                             "dL/dW summed over the batch: a float32 Buffer (O, KH, KW, I // groups).")
      .def_property_readonly("gradient_for_biases", &ConvolutionGradientState::gradient_for_biases,
                             "dL/db summed over the batch: a float32 Buffer (O,).")
      .def_property_readonly("gradient_for_weights_layout",
                             [](const ConvolutionGradientState&) { return WeightsLayout::OHWI; })
      .def_property_readonly("convolution", &ConvolutionGradientState::convolution,
                             "The Convolution that made the state.")
      .def_property_readonly(
          "source_width", [](const ConvolutionGradientState& s) { return s.params().in_w; },
          "Width of the forward input.")
      .def_property_readonly(
          "source_height", [](const ConvolutionGradientState& s) { return s.params().in_h; },
          "Height of the forward input.");

  guarded_class<ConvolutionGradient>(m, "ConvolutionGradient",
                                     "The gradient kernel of a Convolution (MPSCNNConvolutionGradient).")
      .def(py::init([](py::handle convolution, py::handle option) {
             return ConvolutionGradient(
                 as_instance<Convolution>("convolution", convolution, "a Convolution").shared_from_this(),
                 as_option(option));
           }),
           py::arg("convolution"), py::arg("option") = GradientOption::all)
      .def(
          "backward",
          [](ConvolutionGradient& g, py::handle dy, py::handle x, py::handle state, py::handle accumulate,
             py::handle layout) {
            return layer_backward<ConvolutionGradientState>(g, dy, x, state, accumulate, layout,
                                                            "ConvolutionGradientState");
          },
          py::arg("dy"), py::arg("x"), py::arg("state"), py::kw_only(), py::arg("accumulate") = false,
          py::arg("layout") = py::none(),
          "Returns dx (None when option is WEIGHTS_AND_BIAS) and writes the weight and bias gradients into "
          "state (unless option is DATA), adding to them when accumulate is true.")
      .def_property_readonly("convolution", &ConvolutionGradient::convolution)
      .def_property("option", &ConvolutionGradient::option,
                    [](ConvolutionGradient& g, py::handle option) { g.set_option(as_option(option)); });
}

}  // namespace gradstate::bindings

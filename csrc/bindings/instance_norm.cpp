#include "gradstate/ops/instance_norm.h"

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

std::shared_ptr<InstanceNormalization> make_instance_norm(py::handle num_channels, py::handle gamma,
                                                          py::handle beta, py::handle epsilon,
                                                          py::handle device) {
  const std::optional<FloatArray> g = as_optional_float32("gamma", gamma);
  const std::optional<FloatArray> b = as_optional_float32("beta", beta);
  const std::optional<Buffer> g_buffer = g ? std::optional<Buffer>(borrow(*g)) : std::nullopt;
  const std::optional<Buffer> b_buffer = b ? std::optional<Buffer>(borrow(*b)) : std::nullopt;
  return std::make_shared<InstanceNormalization>(
      as_int("num_channels", num_channels), g_buffer ? &*g_buffer : nullptr, b_buffer ? &*b_buffer : nullptr,
      as_real("epsilon", epsilon), as_device(device));
}

std::shared_ptr<NormalizationGammaAndBetaState> make_gamma_beta_state(py::handle gamma, py::handle beta) {
  const FloatArray g = as_float32("gamma", gamma);
  const FloatArray b = as_float32("beta", beta);
  return std::make_shared<NormalizationGammaAndBetaState>(copy_of(borrow(g)), copy_of(borrow(b)));
}

}  // namespace

void bind_instance_norm(py::module_& m) {
  guarded_class<InstanceNormalization, std::shared_ptr<InstanceNormalization>>(
      m, "InstanceNormalization",
      "Instance normalization (MPSCNNInstanceNormalization): each (image, channel) plane is normalized to "
      "zero mean and unit variance, then scaled by gamma[c] and shifted by beta[c]. The layer always holds "
      "gamma and beta, ones and zeros for those not given, so that an optimizer can train them.")
      .def(py::init(&make_instance_norm), py::arg("num_channels"), py::arg("gamma") = py::none(),
           py::arg("beta") = py::none(), py::arg("epsilon") = 1e-5, py::arg("device") = py::none())
      .def("forward", &layer_forward<InstanceNormalization>, py::arg("x"), py::arg("layout") = "NHWC",
           py::kw_only(), py::arg("temporary_state") = false,
           "Returns (y, state): y in the layout of x, and the state an InstanceNormalizationGradient needs.")
      .def_property_readonly("num_channels", &InstanceNormalization::num_channels)
      .def_property_readonly("epsilon", &InstanceNormalization::epsilon)
      .def_property_readonly(
          "gamma", [](const InstanceNormalization& n) { return to_numpy(n.gamma()); },
          "gamma (C,): a writable float32 view of the layer's own buffer, without a copy. Writes through it "
          "(and optimizer steps) take effect from the next forward pass on.")
      .def_property_readonly(
          "beta", [](const InstanceNormalization& n) { return to_numpy(n.beta()); },
          "beta (C,): a writable view like gamma.")
      .def("export_gamma_and_beta", &InstanceNormalization::export_gamma_and_beta,
           "A NormalizationGammaAndBetaState holding copies of the current gamma and beta.")
      .def(
          "reload_gamma_and_beta",
          [](InstanceNormalization& n, py::handle state) {
            n.reload_gamma_and_beta(
                as_state<NormalizationGammaAndBetaState>(state, "NormalizationGammaAndBetaState"));
          },
          py::arg("state"), "Copies the state's gamma and beta (num_channels values each) into the layer.")
      .def_property_readonly("device", [](const InstanceNormalization& n) { return Device{n.device()}; });

  guarded_class<NormalizationGammaAndBetaState, std::shared_ptr<NormalizationGammaAndBetaState>>(
      m, "NormalizationGammaAndBetaState",
      "The gamma and beta of a normalization layer (MPSCNNNormalizationGammaAndBetaState), as "
      "InstanceNormalization.export_gamma_and_beta() returns them and reload_gamma_and_beta() reads them. "
      "The constructor copies its arguments.")
      .def(py::init(&make_gamma_beta_state), py::arg("gamma"), py::arg("beta"))
      .def_property_readonly("gamma", &NormalizationGammaAndBetaState::gamma, "A float32 Buffer (C,).")
      .def_property_readonly("beta", &NormalizationGammaAndBetaState::beta, "A float32 Buffer (C,).");

  guarded_class<InstanceNormalizationGradientState, GradientState,
                std::shared_ptr<InstanceNormalizationGradientState>>(
      m, "InstanceNormalizationGradientState",
      "The state of one forward instance-normalization pass; the gradient kernel writes the gamma and beta "
      "gradients into it (MPSCNNInstanceNormalizationGradientState).")
      .def_property_readonly("gradient_for_gamma", &InstanceNormalizationGradientState::gradient_for_gamma,
                             "dL/dgamma summed over the batch: a float32 Buffer (C,).")
      .def_property_readonly("gradient_for_beta", &InstanceNormalizationGradientState::gradient_for_beta,
                             "dL/dbeta summed over the batch: a float32 Buffer (C,).")
      .def_property_readonly("gamma", &InstanceNormalizationGradientState::gamma,
                             "The gamma the forward pass used: a float32 Buffer (C,), a copy.")
      .def_property_readonly("beta", &InstanceNormalizationGradientState::beta,
                             "The beta the forward pass used: a float32 Buffer (C,), a copy.")
      .def_property_readonly("mean", &InstanceNormalizationGradientState::mean,
                             "Per-(image, channel) mean: a float32 Buffer (N, C).")
      .def_property_readonly("inv_std", &InstanceNormalizationGradientState::inv_std,
                             "Per-(image, channel) 1 / sqrt(variance + epsilon): a float32 Buffer (N, C).")
      .def_property_readonly("instance_normalization",
                             &InstanceNormalizationGradientState::instance_normalization,
                             "The InstanceNormalization that made the state.");

  guarded_class<InstanceNormalizationGradient>(
      m, "InstanceNormalizationGradient",
      "The gradient kernel of an InstanceNormalization (MPSCNNInstanceNormalizationGradient).")
      .def(py::init([](py::handle layer) {
             return InstanceNormalizationGradient(std::shared_ptr<InstanceNormalization>(
                 as_instance<InstanceNormalization>("instance_normalization", layer,
                                                    "an InstanceNormalization")
                     .shared_from_this()));
           }),
           py::arg("instance_normalization"))
      .def(
          "backward",
          [](InstanceNormalizationGradient& g, py::handle dy, py::handle x, py::handle state,
             py::handle accumulate, py::handle layout) {
            return layer_backward<InstanceNormalizationGradientState>(g, dy, x, state, accumulate, layout,
                                                                      "InstanceNormalizationGradientState");
          },
          py::arg("dy"), py::arg("x"), py::arg("state"), py::kw_only(), py::arg("accumulate") = false,
          py::arg("layout") = py::none(),
          "Returns dx and writes the gamma and beta gradients into state, adding to them when accumulate is "
          "true.")
      .def_property_readonly("instance_normalization",
                             &InstanceNormalizationGradient::instance_normalization);
}

}  // namespace gradstate::bindings

#include "gradstate/ops/optimizer.h"

#include <pybind11/stl.h>

#include <cmath>
#include <string>

#include "arguments.h"
#include "bindings.h"
#include "guarded_class.h"

namespace gradstate::bindings {

namespace py = pybind11;

namespace {

// The hyper-parameters every optimizer takes (MPSNNOptimizerDescriptor), from their Python forms:
// gradient_clip None or (min, max), regularization None, "l1" or "l2".
OptimizerDescriptor as_descriptor(py::handle learning_rate, py::handle gradient_rescale,
                                  py::handle gradient_clip, py::handle regularization,
                                  py::handle regularization_scale) {
  OptimizerDescriptor d;
  d.learning_rate = as_real("learning_rate", learning_rate);
  d.gradient_rescale = as_real("gradient_rescale", gradient_rescale);
  if (!gradient_clip.is_none()) {
    if (!(py::isinstance<py::tuple>(gradient_clip) || py::isinstance<py::list>(gradient_clip)) ||
        py::len(gradient_clip) != 2) {
      throw TypeError(concat("gradient_clip: expected None or a (min, max) pair of numbers, got ",
                             repr_of(gradient_clip), " (", type_name(gradient_clip), ")"));
    }
    py::sequence pair = py::reinterpret_borrow<py::sequence>(gradient_clip);
    d.apply_gradient_clipping = true;
    d.gradient_clip_min = as_real("gradient_clip", pair[0]);
    d.gradient_clip_max = as_real("gradient_clip", pair[1]);
  }
  if (!regularization.is_none()) {
    if (!py::isinstance<py::str>(regularization)) {
      throw TypeError(concat("regularization: expected None, 'l1' or 'l2', got ", repr_of(regularization),
                             " (", type_name(regularization), ")"));
    }
    const std::string name = regularization.cast<std::string>();
    if (name == "l1") {
      d.regularization = Regularization::l1;
    } else if (name == "l2") {
      d.regularization = Regularization::l2;
    } else {
      throw ValueError(concat("regularization: expected None, 'l1' or 'l2', got ", repr_of(regularization)));
    }
  }
  d.regularization_scale = as_real("regularization_scale", regularization_scale);
  return d;
}

void step(Optimizer& self, py::handle layer, py::handle state) {
  if (py::isinstance<Convolution>(layer)) {
    auto conv = layer.cast<std::shared_ptr<Convolution>>();
    auto& s =
        as_state<ConvolutionGradientState>(state, "ConvolutionGradientState (the layer is a Convolution)");
    py::gil_scoped_release release;
    self.step(conv, s);
  } else if (py::isinstance<InstanceNormalization>(layer)) {
    auto norm = layer.cast<std::shared_ptr<InstanceNormalization>>();
    auto& s = as_state<InstanceNormalizationGradientState>(
        state, "InstanceNormalizationGradientState (the layer is an InstanceNormalization)");
    py::gil_scoped_release release;
    self.step(norm, s);
  } else {
    throw TypeError(
        concat("layer: expected a Convolution or an InstanceNormalization, got ", type_name(layer)));
  }
}

std::shared_ptr<OptimizerState> state_of(Optimizer& self, py::handle layer) {
  if (py::isinstance<Convolution>(layer)) return self.state(layer.cast<std::shared_ptr<Convolution>>());
  if (py::isinstance<InstanceNormalization>(layer)) {
    return self.state(layer.cast<std::shared_ptr<InstanceNormalization>>());
  }
  throw TypeError(
      concat("layer: expected a Convolution or an InstanceNormalization, got ", type_name(layer)));
}

py::object gradient_clip_of(const Optimizer& self) {
  const OptimizerDescriptor& d = self.descriptor();
  if (!d.apply_gradient_clipping) return py::none();
  return py::make_tuple(d.gradient_clip_min, d.gradient_clip_max);
}

py::object regularization_of(const Optimizer& self) {
  switch (self.descriptor().regularization) {
    case Regularization::l1:
      return py::str("l1");
    case Regularization::l2:
      return py::str("l2");
    case Regularization::none:
      break;
  }
  return py::none();
}

// The keyword arguments every optimizer takes after its own.
#define GRADSTATE_COMMON_ARGUMENTS                                          \
  py::arg("gradient_rescale") = 1.0, py::arg("gradient_clip") = py::none(), \
  py::arg("regularization") = py::none(), py::arg("regularization_scale") = 0.0

const char* common_doc =
    "Every gradient is first clipped to gradient_clip = (min, max) unless that is None, then multiplied by "
    "gradient_rescale, then regularization_scale * sign(w) ('l1') or regularization_scale * w ('l2') is "
    "added.";

}  // namespace

void bind_optimizer(py::module_& m) {
  guarded_class<OptimizerState, std::shared_ptr<OptimizerState>>(
      m, "OptimizerState",
      "An optimizer's vectors and time step for one layer's parameters. Each vector list has one float32 "
      "Buffer per parameter, shaped like it: index 0 the weights or gamma, index 1 the bias or beta (as in "
      "MPS's vector arrays). A list is empty when the optimizer's options use no such vector. Made zeroed "
      "by Optimizer.state(layer) or the first step, and updated in place by every step.")
      .def_property(
          "time_step", &OptimizerState::time_step,
          [](OptimizerState& s, py::handle step) { s.set_time_step(as_int("time_step", step)); },
          "Steps applied to this parameter set (Adam's t).")
      .def_property_readonly("momentum_vectors", &OptimizerState::momentum, "SGD with momentum; Adam's m.")
      .def_property_readonly("velocity_vectors", &OptimizerState::velocity, "Adam's v.")
      .def_property_readonly("maximum_velocity_vectors", &OptimizerState::maximum_velocity,
                             "Adam with AMSGrad: the largest v so far.")
      .def_property_readonly("sum_of_squares_vectors", &OptimizerState::sum_of_squares, "RMSProp's s.");

  guarded_class<Optimizer, std::shared_ptr<Optimizer>>(
      m, "Optimizer",
      "The base of SGD, RMSProp and Adam (MPSNNOptimizer). An optimizer keeps one OptimizerState per layer "
      "it updates, without keeping the layer alive.")
      .def("step", &step, py::arg("layer"), py::arg("state"),
           "Updates the layer's parameters in place from the gradients in state: a Convolution's weights and "
           "bias from its ConvolutionGradientState, an InstanceNormalization's gamma and beta from its "
           "InstanceNormalizationGradientState. Reads a temporary state once, as a gradient call does.")
      .def("state", &state_of, py::arg("layer"),
           "The OptimizerState this optimizer keeps for the layer (made zeroed, time_step 0, on first use).")
      .def_property(
          "learning_rate", [](const Optimizer& o) { return o.descriptor().learning_rate; },
          [](Optimizer& o, py::handle value) { o.set_learning_rate(as_real("learning_rate", value)); },
          "The step size; may be changed between steps (a schedule).")
      .def_property_readonly("gradient_rescale",
                             [](const Optimizer& o) { return o.descriptor().gradient_rescale; })
      .def_property_readonly("gradient_clip", &gradient_clip_of, "(min, max), or None for no clipping.")
      .def_property_readonly("regularization", &regularization_of, "None, 'l1' or 'l2'.")
      .def_property_readonly("regularization_scale",
                             [](const Optimizer& o) { return o.descriptor().regularization_scale; });

  guarded_class<SGD, Optimizer, std::shared_ptr<SGD>>(
      m, "SGD",
      (std::string("Stochastic gradient descent (MPSNNOptimizerStochasticGradientDescent): "
                   "m = momentum_scale * m + learning_rate * g; w -= m, or with Nesterov momentum "
                   "m = momentum_scale * m + g; w -= learning_rate * (g + momentum_scale * m). ") +
       common_doc)
          .c_str())
      .def(py::init([](py::handle learning_rate, py::handle momentum_scale, py::handle use_nesterov_momentum,
                       py::handle gradient_rescale, py::handle gradient_clip, py::handle regularization,
                       py::handle regularization_scale) {
             return std::make_shared<SGD>(as_descriptor(learning_rate, gradient_rescale, gradient_clip,
                                                        regularization, regularization_scale),
                                          as_real("momentum_scale", momentum_scale),
                                          as_bool("use_nesterov_momentum", use_nesterov_momentum));
           }),
           py::arg("learning_rate") = 1e-3, py::kw_only(), py::arg("momentum_scale") = 0.0,
           py::arg("use_nesterov_momentum") = false, GRADSTATE_COMMON_ARGUMENTS)
      .def_property_readonly("momentum_scale", &SGD::momentum_scale)
      .def_property_readonly("use_nesterov_momentum", &SGD::use_nesterov_momentum);

  guarded_class<RMSProp, Optimizer, std::shared_ptr<RMSProp>>(
      m, "RMSProp",
      (std::string("RMSProp (MPSNNOptimizerRMSProp): s = decay * s + (1 - decay) * g^2; "
                   "w -= learning_rate * g / (sqrt(s) + epsilon). ") +
       common_doc)
          .c_str())
      .def(py::init([](py::handle learning_rate, py::handle decay, py::handle epsilon,
                       py::handle gradient_rescale, py::handle gradient_clip, py::handle regularization,
                       py::handle regularization_scale) {
             return std::make_shared<RMSProp>(as_descriptor(learning_rate, gradient_rescale, gradient_clip,
                                                            regularization, regularization_scale),
                                              as_real("decay", decay), as_real("epsilon", epsilon));
           }),
           py::arg("learning_rate") = 1e-3, py::kw_only(), py::arg("decay") = 0.9, py::arg("epsilon") = 1e-8,
           GRADSTATE_COMMON_ARGUMENTS)
      .def_property_readonly("decay", &RMSProp::decay)
      .def_property_readonly("epsilon", &RMSProp::epsilon);

  guarded_class<Adam, Optimizer, std::shared_ptr<Adam>>(
      m, "Adam",
      (std::string("Adam (MPSNNOptimizerAdam): t += 1; m = beta1 * m + (1 - beta1) * g; "
                   "v = beta2 * v + (1 - beta2) * g^2; "
                   "w -= learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + epsilon), with "
                   "max(v) over the steps in place of v when amsgrad. t counts the steps of each layer. ") +
       common_doc)
          .c_str())
      .def(py::init([](py::handle learning_rate, py::handle beta1, py::handle beta2, py::handle epsilon,
                       py::handle amsgrad, py::handle gradient_rescale, py::handle gradient_clip,
                       py::handle regularization, py::handle regularization_scale) {
             return std::make_shared<Adam>(as_descriptor(learning_rate, gradient_rescale, gradient_clip,
                                                         regularization, regularization_scale),
                                           as_real("beta1", beta1), as_real("beta2", beta2),
                                           as_real("epsilon", epsilon), as_bool("amsgrad", amsgrad));
           }),
           py::arg("learning_rate") = 1e-3, py::kw_only(), py::arg("beta1") = 0.9, py::arg("beta2") = 0.999,
           py::arg("epsilon") = 1e-8, py::arg("amsgrad") = false, GRADSTATE_COMMON_ARGUMENTS)
      .def_property_readonly("beta1", &Adam::beta1)
      .def_property_readonly("beta2", &Adam::beta2)
      .def_property_readonly("epsilon", &Adam::epsilon)
      .def_property_readonly("amsgrad", &Adam::amsgrad);
}

}  // namespace gradstate::bindings

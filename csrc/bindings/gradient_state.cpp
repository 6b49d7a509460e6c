#include "gradstate/ops/gradient_state.h"

#include <string>

#include "arguments.h"
#include "bindings.h"
#include "gradstate/core/layout.h"
#include "guarded_class.h"

namespace gradstate::bindings {

namespace py = pybind11;

void bind_gradient_state(py::module_& m) {
  guarded_class<GradientState, std::shared_ptr<GradientState>>(
      m, "GradientState",
      "What a forward pass records for its gradient pass (MPSNNGradientState). Made by forward(), never "
      "directly.")
      .def_property(
          "read_count", &GradientState::read_count,
          [](GradientState& s, py::handle count) { s.set_read_count(as_int("read_count", count)); },
          "Reads left before a temporary state's contents become undefined (0 for ordinary states).")
      .def_property_readonly("is_temporary", &GradientState::is_temporary,
                             "Whether the state was made with temporary_state=True.")
      .def_property_readonly(
          "layout", [](const GradientState& s) { return std::string(layout_name(s.layout())); },
          "The activation layout of the forward pass that made the state.");
}

}  // namespace gradstate::bindings

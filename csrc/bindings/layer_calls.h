// The forward and backward calls of the layers' Python classes: convert the arrays, check the state's type,
// release the GIL while the kernels run, and return numpy arrays over the results.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <optional>
#include <utility>

#include "arguments.h"
#include "arrays.h"

namespace gradstate::bindings {

// layer.forward(x, layout, temporary_state=...) -> (y, state).
template <typename Layer>
py::tuple layer_forward(Layer& layer, py::handle x, py::handle layout, py::handle temporary_state) {
  const FloatArray x_array = as_float32("x", x);
  const Layout x_layout = as_layout(layout);
  const bool temporary = as_bool("temporary_state", temporary_state);
  const Buffer x_buffer = borrow(x_array);
  decltype(layer.forward(x_buffer, x_layout, temporary)) result;
  {
    py::gil_scoped_release release;
    result = layer.forward(x_buffer, x_layout, temporary);
  }
  return py::make_tuple(to_numpy(result.first), result.second);
}

// gradient.backward(dy, x, state, accumulate=..., layout=...) -> dx, or None when the kernel computes none.
template <typename State, typename Gradient>
py::object layer_backward(Gradient& gradient, py::handle dy, py::handle x, py::handle state,
                          py::handle accumulate, py::handle layout, const char* state_class) {
  const FloatArray dy_array = as_float32("dy", dy);
  const FloatArray x_array = as_float32("x", x);
  State& s = as_state<State>(state, state_class);
  const bool add = as_bool("accumulate", accumulate);
  const std::optional<Layout> requested = as_optional_layout(layout);
  const Buffer dy_buffer = borrow(dy_array), x_buffer = borrow(x_array);
  std::shared_ptr<Buffer> dx;
  {
    py::gil_scoped_release release;
    dx = gradient.backward(dy_buffer, x_buffer, s, add, requested ? &*requested : nullptr);
  }
  return dx ? py::object(to_numpy(dx)) : py::none();
}

}  // namespace gradstate::bindings

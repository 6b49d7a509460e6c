// One function per part of the gradstate._core module, each defined in the file named after it.
#pragma once

#include <pybind11/pybind11.h>

namespace gradstate::bindings {

void bind_buffer(pybind11::module_& m);
void bind_gradient_state(pybind11::module_& m);
void bind_convolution(pybind11::module_& m);
void bind_cpu(pybind11::module_& m);
void bind_instance_norm(pybind11::module_& m);
void bind_optimizer(pybind11::module_& m);

}  // namespace gradstate::bindings

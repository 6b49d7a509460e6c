// gradstate._core: the native module. The public names are re-exported by the gradstate package.
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "device.h"
#include "gradstate/core/errors.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "gradstate's native core: buffers, devices, kernels and gradient states.";

  // Registered after pybind11's own translators, so it is tried first: the core's TypeError derives from
  // std::invalid_argument, which pybind11 alone would turn into ValueError.
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const gradstate::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const gradstate::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const gradstate::MemoryError& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  gradstate::bindings::bind_device(m);
  gradstate::bindings::bind_buffer(m);
  gradstate::bindings::bind_gradient_state(m);
  gradstate::bindings::bind_convolution(m);
  gradstate::bindings::bind_cpu(m);
  gradstate::bindings::bind_instance_norm(m);
  gradstate::bindings::bind_optimizer(m);
}

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "device.h"
#include "gradstate/core/buffer.h"
#include "gradstate/core/host_memory.h"
#include "guarded_class.h"

namespace gradstate::bindings {

namespace py = pybind11;

void bind_buffer(py::module_& m) {
  guarded_class<Buffer, std::shared_ptr<Buffer>>(
      m, "Buffer", py::buffer_protocol(),
      "A typed, shaped, reference-counted block of device-visible "
      "memory (the counterpart of an MTLBuffer).\n\n"
      "np.asarray(buffer) is a writable zero-copy view that keeps the "
      "buffer alive.")
      .def_buffer([](Buffer& buffer) {
        std::vector<py::ssize_t> shape(buffer.shape().begin(), buffer.shape().end());
        std::vector<py::ssize_t> strides(shape.size());
        py::ssize_t stride = static_cast<py::ssize_t>(itemsize(buffer.dtype()));
        for (std::size_t i = shape.size(); i-- > 0;) {
          strides[i] = stride;
          stride *= shape[i];
        }
        return py::buffer_info(buffer.data(), static_cast<py::ssize_t>(itemsize(buffer.dtype())),
                               py::format_descriptor<float>::format(), static_cast<py::ssize_t>(shape.size()),
                               shape, strides, /*readonly=*/false);
      })
      .def_property_readonly("nbytes", &Buffer::nbytes, "Size of the data in bytes.")
      .def_property_readonly(
          "dtype", [](const Buffer&) { return py::dtype::of<float>(); }, "The numpy dtype of the elements.")
      .def_property_readonly(
          "shape",
          [](const Buffer& b) {
            py::tuple shape(b.shape().size());
            for (std::size_t i = 0; i < b.shape().size(); ++i) shape[i] = b.shape()[i];
            return shape;
          },
          "The shape, as a tuple.")
      .def_property_readonly(
          "device", [](const Buffer& b) { return Device{b.device()}; }, "The device whose memory this is.")
      .def("__repr__", [](const Buffer& b) {
        return "Buffer(shape=" + shape_string(b.shape()) + ", dtype=" + dtype_name(b.dtype()) + ", device='" +
               device_kind_name(b.device()) + "')";
      });
  m.def("live_native_bytes", &live_native_bytes,
        "Bytes held by all gradstate Buffers alive now (for finding leaks).");
  m.def("_cached_host_bytes", &cached_host_bytes,
        "Bytes of freed host memory blocks (buffers' and kernels') kept for reuse.");
  m.def("_release_cached_host_blocks", &release_cached_host_blocks,
        "Returns the host memory blocks kept for reuse to the operating system (for the memory benchmark).");
}

}  // namespace gradstate::bindings
